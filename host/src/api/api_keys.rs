//! `/api_keys`: keys for scripts and integrations, sent as `X-API-Key` (as PlaceOS).
//! Administrators create one for a user with scopes and an optional expiry; the key is in
//! the creation response (`x_api_key`, PlaceOS's field) and nowhere else, ever: the host
//! keeps only its hash. Revoking one takes effect on the next request.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::store::{ApiKeyRecord, NewApiKey};

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/api_keys", get(list).post(create))
        .route("/api_keys/{id}", delete(revoke))
}

#[derive(Debug, Deserialize)]
struct KeyListParams {
    #[serde(flatten)]
    list: ListParams,
    /// Only the keys of this user.
    user_id: Option<String>,
}

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

async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewApiKey>,
) -> Result<Response, ApiError> {
    let (record, key) = state.auth.create_api_key(&caller.actor(), &new).await?;
    let mut body = serde_json::to_value(&record).map_err(|e| ApiError::internal(&e))?;
    if let Some(object) = body.as_object_mut() {
        object.insert("x_api_key".to_string(), json!(key.expose()));
    }
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn revoke(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ApiKeyRecord>, ApiError> {
    Ok(axum::Json(
        state.auth.revoke_api_key(&caller.actor(), &id).await?,
    ))
}
