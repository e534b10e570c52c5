//! `/api_keys`: keys for scripts and integrations, sent as `X-API-Key` (as PlaceOS).
//! Administrators create one for a user with scopes and an optional expiry; the key is in
//! the creation response (`x_api_key`, PlaceOS's field) and nowhere else, ever: the host
//! keeps only its hash. Revoking one takes effect on the next request.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::store::{ApiKeyRecord, NewApiKey};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// A new key's record, with the key: the only time it is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CreatedApiKey {
    #[serde(flatten)]
    record: ApiKeyRecord,
    /// The key, for `X-API-Key` (PlaceOS's field name).
    x_api_key: String,
}

#[derive(Debug, Deserialize)]
struct KeyListParams {
    #[serde(flatten)]
    list: ListParams,
    /// Only the keys of this user.
    user_id: Option<String>,
}

/// List API keys (never the keys themselves).
#[utoipa::path(
    get,
    path = "/api_keys",
    tag = "api_keys",
    params(
        ListParams,
        ("user_id" = Option<String>, Query, description = "Only the keys of this user"),
    ),
    responses((status = 200, description = "A page of key records", body = [ApiKeyRecord], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    Query(params): Query<KeyListParams>,
) -> Result<Response, ApiError> {
    let keys = state
        .control
        .store()
        .list_api_keys(params.user_id.as_deref(), &params.list.query()?)
        .await?;
    Ok(page(keys))
}

/// Create an API key for a user; the response holds the key, once.
#[utoipa::path(
    post,
    path = "/api_keys",
    tag = "api_keys",
    request_body = NewApiKey,
    responses((status = 201, description = "The key's record and the key", body = CreatedApiKey)),
)]
async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewApiKey>,
) -> Result<Response, ApiError> {
    let (record, key) = state.auth.create_api_key(&caller.actor(), &new).await?;
    let body = CreatedApiKey {
        record,
        x_api_key: key.expose().to_string(),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(
    delete,
    path = "/api_keys/{id}",
    tag = "api_keys",
    params(("id" = String, Path, description = "The key's record")),
    responses((status = 200, description = "The revoked key's record", body = ApiKeyRecord)),
)]
async fn revoke(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ApiKeyRecord>, ApiError> {
    Ok(axum::Json(
        state.auth.revoke_api_key(&caller.actor(), &id).await?,
    ))
}
