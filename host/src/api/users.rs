//! `/users`: the people who sign in. Everyone reads and changes their own password
//! (`/users/current`); administrators manage the rest. A role change or a deactivation
//! takes effect on the next request: the user's cached credentials are dropped, and a
//! deactivation revokes every token, session and API key they hold. The last active
//! administrator cannot be removed, demoted or deactivated, so an installation never
//! falls back to needing its setup token.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::auth::LOCAL_SOURCE;
use crate::store::{NewUser, User, UserPatch};

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/current", get(current))
        .route("/users/current/password", post(change_own_password))
        .route(
            "/users/{id}",
            get(show).patch(update).put(update).delete(remove),
        )
        .route("/users/{id}/password", post(set_password))
}

async fn list(
    State(state): State<ApiState>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    Ok(page(
        state.control.store().list_users(&params.query()?).await?,
    ))
}

async fn current(
    State(state): State<ApiState>,
    caller: Principal,
) -> Result<axum::Json<User>, ApiError> {
    if caller.credential == crate::auth::Credential::Development {
        return Err(ApiError::not_found(
            "--danger-no-auth has no user record: every request is an anonymous administrator",
        ));
    }
    Ok(axum::Json(
        state.control.store().user(&caller.user_id).await?,
    ))
}

async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    Ok(axum::Json(state.control.store().user(&id).await?))
}

/// A new user: a local account when a password is given, else one that signs in through
/// the identity source named in `auth_source`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    email: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    auth_source: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(body): Json<CreateUser>,
) -> Result<Response, ApiError> {
    let new = NewUser {
        email: body.email,
        username: body.username,
        first_name: body.first_name,
        last_name: body.last_name,
        roles: body.roles,
        auth_source: body.auth_source.unwrap_or_else(|| LOCAL_SOURCE.to_string()),
    };
    let user = match body.password {
        Some(password) => {
            if new.auth_source != LOCAL_SOURCE {
                return Err(ApiError::invalid(
                    "password",
                    "only a local account has a password here",
                ));
            }
            state
                .auth
                .create_local_user(&caller.actor(), &new, Zeroizing::new(password))
                .await?
        }
        None => {
            state
                .control
                .store()
                .create_user(&caller.actor(), &new)
                .await?
        }
    };
    Ok((StatusCode::CREATED, axum::Json(user)).into_response())
}

/// Refuse a change that leaves no active administrator.
async fn keep_an_admin(
    state: &ApiState,
    user: &User,
    after: Option<&User>,
) -> Result<(), ApiError> {
    let is_admin = |u: &User| u.active && u.roles.iter().any(|r| r == "admin");
    if !is_admin(user) || after.is_some_and(is_admin) {
        return Ok(());
    }
    if state
        .control
        .store()
        .active_admins_besides(&user.id)
        .await?
        == 0
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_admin",
            "this is the last active administrator; make another one first",
        ));
    }
    Ok(())
}

async fn update(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
    Json(patch): Json<UserPatch>,
) -> Result<axum::Json<User>, ApiError> {
    let store = state.control.store();
    let before = store.user(&id).await?;
    let mut after = before.clone();
    if let Some(roles) = &patch.roles {
        after.roles = roles.clone();
    }
    if let Some(active) = patch.active {
        after.active = active;
    }
    keep_an_admin(&state, &before, Some(&after)).await?;
    let user = store.update_user(&caller.actor(), &id, &patch).await?;
    state.auth.forget_user(&id);
    Ok(axum::Json(user))
}

async fn remove(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = state.control.store().user(&id).await?;
    keep_an_admin(&state, &user, None).await?;
    state
        .control
        .store()
        .delete_user(&caller.actor(), &id)
        .await?;
    state.auth.forget_user(&id);
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

async fn set_password(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
    Json(body): Json<NewPassword>,
) -> Result<StatusCode, ApiError> {
    let user = state.control.store().user(&id).await?;
    state
        .auth
        .set_password(&caller.actor(), &user, Zeroizing::new(body.password))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange(<redacted>)")
    }
}

async fn change_own_password(
    State(state): State<ApiState>,
    caller: Principal,
    Json(body): Json<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let user = state.control.store().user(&caller.user_id).await?;
    state
        .auth
        .verify_password(&user, Zeroizing::new(body.current_password))
        .await
        .map_err(|_| ApiError::invalid("current_password", "is not the current password"))?;
    state
        .auth
        .set_password(&caller.actor(), &user, Zeroizing::new(body.password))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
