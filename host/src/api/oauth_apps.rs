//! `/oauth_apps`: the applications the authorization server knows (client id, redirect
//! URIs matched exactly, scopes, grant types). A confidential application's secret is in
//! the creation response (`client_secret`) and in the response of
//! `POST /oauth_apps/:id/secret`, which replaces it and revokes what the old one was
//! granted; the host keeps only hashes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::store::{NewOAuthClient, OAuthClient, OAuthClientPatch};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(replace_secret))
}

/// A new application, with its secret when it is confidential: the only time the
/// secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CreatedOAuthClient {
    #[serde(flatten)]
    client: OAuthClient,
    /// A confidential application's secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

/// An application's new secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NewClientSecret {
    /// The application.
    id: String,
    /// Its new secret; the old one no longer works.
    client_secret: String,
}

/// List OAuth applications.
#[utoipa::path(
    get,
    path = "/oauth_apps",
    tag = "oauth_apps",
    params(ListParams),
    responses((status = 200, description = "A page of applications", body = [OAuthClient], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let clients = state
        .control
        .store()
        .list_oauth_clients(&params.query()?)
        .await?;
    Ok(page(clients))
}

/// Register an OAuth application.
#[utoipa::path(
    post,
    path = "/oauth_apps",
    tag = "oauth_apps",
    request_body = NewOAuthClient,
    responses((status = 201, description = "The application, with its secret if confidential", body = CreatedOAuthClient)),
)]
async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewOAuthClient>,
) -> Result<Response, ApiError> {
    let (client, secret) = state.auth.create_client(&caller.actor(), &new).await?;
    let body = CreatedOAuthClient {
        client,
        client_secret: secret.map(|secret| secret.expose().to_string()),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// An OAuth application.
#[utoipa::path(
    get,
    path = "/oauth_apps/{id}",
    tag = "oauth_apps",
    params(("id" = String, Path, description = "The application (its client id)")),
    responses((status = 200, description = "The application", body = OAuthClient)),
)]
async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<OAuthClient>, ApiError> {
    Ok(axum::Json(state.control.store().oauth_client(&id).await?))
}

/// Change an OAuth application.
#[utoipa::path(
    method(patch, put),
    path = "/oauth_apps/{id}",
    tag = "oauth_apps",
    params(("id" = String, Path, description = "The application (its client id)")),
    request_body = OAuthClientPatch,
    responses((status = 200, description = "The application as changed", body = OAuthClient)),
)]
async fn update(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
    Json(patch): Json<OAuthClientPatch>,
) -> Result<axum::Json<OAuthClient>, ApiError> {
    let client = state
        .control
        .store()
        .update_oauth_client(&caller.actor(), &id, &patch)
        .await?;
    Ok(axum::Json(client))
}

/// Delete an OAuth application and revoke what it was granted.
#[utoipa::path(
    delete,
    path = "/oauth_apps/{id}",
    tag = "oauth_apps",
    params(("id" = String, Path, description = "The application (its client id)")),
    responses((status = 202, description = "Deleted")),
)]
async fn remove(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.delete_client(&caller.actor(), &id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Replace a confidential application's secret; what the old one was granted is revoked.
#[utoipa::path(
    post,
    path = "/oauth_apps/{id}/secret",
    tag = "oauth_apps",
    params(("id" = String, Path, description = "The application (its client id)")),
    responses((status = 200, description = "The new secret", body = NewClientSecret)),
)]
async fn replace_secret(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<NewClientSecret>, ApiError> {
    let secret = state
        .auth
        .replace_client_secret(&caller.actor(), &id)
        .await?;
    Ok(axum::Json(NewClientSecret {
        id,
        client_secret: secret.expose().to_string(),
    }))
}
