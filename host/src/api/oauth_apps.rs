//! `/oauth_apps`: the applications the authorization server knows (client id, redirect
//! URIs matched exactly, scopes, grant types). A confidential application's secret is in
//! the creation response (`client_secret`) and in the response of
//! `POST /oauth_apps/:id/secret`, which replaces it and revokes what the old one was
//! granted; the host keeps only hashes.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::store::{NewOAuthClient, OAuthClient, OAuthClientPatch};

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/oauth_apps", get(list).post(create))
        .route(
            "/oauth_apps/{id}",
            get(show).patch(update).put(update).delete(remove),
        )
        .route("/oauth_apps/{id}/secret", post(replace_secret))
}

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

async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewOAuthClient>,
) -> Result<Response, ApiError> {
    let (client, secret) = state.auth.create_client(&caller.actor(), &new).await?;
    let mut body = serde_json::to_value(&client).map_err(|e| ApiError::internal(&e))?;
    if let (Some(secret), Some(object)) = (secret, body.as_object_mut()) {
        object.insert("client_secret".to_string(), json!(secret.expose()));
    }
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::Json<OAuthClient>, ApiError> {
    Ok(axum::Json(state.control.store().oauth_client(&id).await?))
}

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

async fn remove(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.delete_client(&caller.actor(), &id).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn replace_secret(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let secret = state
        .auth
        .replace_client_secret(&caller.actor(), &id)
        .await?;
    Ok(axum::Json(
        json!({"id": id, "client_secret": secret.expose()}),
    ))
}
