//! `/drivers`: registered components. An administrator uploads a component
//! (`application/wasm`, up to 64 MiB); its metadata is read from it and it starts
//! `pending` review. Approving a digest is the reviewer's step (a `reviewer` or an
//! administrator; issue 8 adds signed attestations).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::settings::ParentKind;
use crate::store::{Approval, DriverRecord};

/// The largest component accepted.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route(
            "/drivers",
            get(list)
                .post(register)
                .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES)),
        )
        .route("/drivers/{id}", get(show).delete(remove))
        .route("/drivers/{id}/approval", post(approval))
}

async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    Ok(page(
        state.control.store().list_drivers(&params.query()?).await?,
    ))
}

#[derive(Debug, Deserialize)]
struct RegisterParams {
    source_repo: Option<String>,
    source_commit: Option<String>,
}

async fn register(
    State(state): State<ApiState>,
    caller: Principal,
    headers: HeaderMap,
    Query(params): Query<RegisterParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !matches!(
        content_type,
        "application/wasm" | "application/octet-stream"
    ) {
        return Err(ApiError::invalid(
            "content-type",
            "send the component's bytes as application/wasm",
        ));
    }
    let driver = state
        .control
        .register_driver(
            &caller.actor(),
            body.to_vec(),
            params.source_repo,
            params.source_commit,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(driver)).into_response())
}

async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DriverRecord>, ApiError> {
    Ok(axum::Json(state.control.store().driver(&id).await?))
}

async fn remove(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .control
        .store()
        .delete_driver(&caller.actor(), &id)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
struct ApprovalChange {
    approval: Approval,
    #[serde(default)]
    note: Option<String>,
}

async fn approval(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
    Json(change): Json<ApprovalChange>,
) -> Result<axum::Json<DriverRecord>, ApiError> {
    let driver = state
        .control
        .store()
        .set_driver_approval(
            &caller.actor(),
            &id,
            change.approval,
            change.note.as_deref(),
        )
        .await?;
    if change.approval != Approval::Approved {
        // Its running modules stop: what is not approved does not run.
        for module in state
            .control
            .store()
            .modules_under(ParentKind::Driver, &id)
            .await?
        {
            state.control.runtime().stop_module(&module).await;
        }
    }
    Ok(axum::Json(driver))
}
