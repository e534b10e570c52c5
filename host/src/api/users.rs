//! `/users`: the people who sign in. Everyone reads and changes their own password
//! (`/users/current`); administrators manage the rest. A role change or a deactivation
//! takes effect on the next request: the user's cached credentials are dropped, and a
//! deactivation revokes every token, session and API key they hold. The last active
//! administrator cannot be removed, demoted or deactivated, so an installation never
//! falls back to needing its setup token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::auth::LOCAL_SOURCE;
use crate::store::{NewUser, User, UserPatch};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(current))
        .routes(routes!(change_own_password))
        .routes(routes!(show, update, remove))
        .routes(routes!(set_password))
}

/// List users.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    params(ListParams),
    responses((status = 200, description = "A page of users", body = [User], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    Ok(page(
        state.control.store().list_users(&params.query()?).await?,
    ))
}

/// The caller.
#[utoipa::path(
    get,
    path = "/users/current",
    tag = "users",
    responses((status = 200, description = "The signed-in user", body = User)),
)]
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

/// A user.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The user")),
    responses((status = 200, description = "The user", body = User)),
)]
async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    Ok(axum::Json(state.control.store().user(&id).await?))
}

/// A new user: a local account when a password is given, else one that signs in through
/// the identity source named in `auth_source`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    /// Email (the login name).
    email: String,
    /// Username (default: the email).
    #[serde(default)]
    username: Option<String>,
    /// First name.
    #[serde(default)]
    first_name: String,
    /// Last name.
    #[serde(default)]
    last_name: String,
    /// Roles: `admin`, `support`, `user`, `reviewer`.
    #[serde(default)]
    roles: Vec<String>,
    /// `local` (the default) or an identity source's id.
    #[serde(default)]
    auth_source: Option<String>,
    /// A local account's password (at least 12 characters).
    #[serde(default)]
    #[schema(format = Password)]
    password: Option<String>,
}

#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    request_body = CreateUser,
    responses((status = 201, description = "The new user", body = User)),
)]
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

/// Change a user: each field given replaces that field. Deactivating revokes every
/// token, session and API key of theirs; the last active administrator stays one.
#[utoipa::path(
    method(patch, put),
    path = "/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The user")),
    request_body = UserPatch,
    responses((status = 200, description = "The user as changed", body = User)),
)]
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

/// Delete a user (not the last active administrator).
#[utoipa::path(
    delete,
    path = "/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The user")),
    responses((status = 202, description = "Deleted")),
)]
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

/// A new password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    /// At least 12 characters, at most 1 KiB.
    #[schema(format = Password)]
    password: String,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

/// Set a local account's password.
#[utoipa::path(
    post,
    path = "/users/{id}/password",
    tag = "users",
    params(("id" = String, Path, description = "The user")),
    request_body = NewPassword,
    responses((status = 204, description = "Set")),
)]
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

/// A change of one's own password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    /// The password now.
    #[schema(format = Password)]
    current_password: String,
    /// The new one.
    #[schema(format = Password)]
    password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange(<redacted>)")
    }
}

/// Change the caller's own password.
#[utoipa::path(
    post,
    path = "/users/current/password",
    tag = "users",
    request_body = PasswordChange,
    responses((status = 204, description = "Changed")),
)]
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
