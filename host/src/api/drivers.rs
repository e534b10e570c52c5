//! `/drivers`: registered components. An administrator uploads a component
//! (`application/wasm`, up to 64 MiB); its metadata is read from it and it starts
//! `pending` review. Approving a digest is the reviewer's step (a `reviewer` or an
//! administrator; issue 8 adds signed attestations).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use super::list::{ListParams, page, searched};
use super::{ApiError, ApiState, Principal};
use crate::search::Kind;
use crate::settings::ParentKind;
use crate::store::{Approval, DriverRecord};

/// The largest component accepted.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
        .routes(routes!(show, remove))
        .routes(routes!(approval))
}

/// List registered drivers.
#[utoipa::path(
    get,
    path = "/drivers",
    tag = "drivers",
    params(ListParams),
    responses((status = 200, description = "A page of drivers", body = [DriverRecord], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let query = params.query()?;
    let store = state.control.store();
    if let Some(found) = searched(&state, Kind::Driver, &query, None, |id| async move {
        store.driver(&id).await
    })
    .await?
    {
        return Ok(page(found));
    }
    Ok(page(store.list_drivers(&query).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RegisterParams {
    /// Where the component's source lives.
    source_repo: Option<String>,
    /// The commit it was built from.
    source_commit: Option<String>,
}

/// Register a driver: upload its component (`application/wasm`, at most 64 MiB). Its
/// metadata is read from it; it starts `pending` review.
#[utoipa::path(
    post,
    path = "/drivers",
    tag = "drivers",
    params(RegisterParams),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component's bytes"),
    responses((status = 201, description = "The registered driver", body = DriverRecord)),
)]
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

/// A driver.
#[utoipa::path(
    get,
    path = "/drivers/{id}",
    tag = "drivers",
    params(("id" = String, Path, description = "The driver")),
    responses((status = 200, description = "The driver", body = DriverRecord)),
)]
async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DriverRecord>, ApiError> {
    Ok(axum::Json(state.control.store().driver(&id).await?))
}

/// Delete a driver no module uses.
#[utoipa::path(
    delete,
    path = "/drivers/{id}",
    tag = "drivers",
    params(("id" = String, Path, description = "The driver")),
    responses((status = 202, description = "Deleted")),
)]
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
    state.control.reindex(Kind::Driver, &id).await;
    Ok(StatusCode::ACCEPTED)
}

/// A reviewer's decision on a driver.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ApprovalChange {
    /// `approved`, or `revoked` (its running modules stop), or `pending`.
    approval: Approval,
    /// Why.
    #[serde(default)]
    note: Option<String>,
}

/// Approve a driver's digest, or withdraw the approval (its running modules stop).
#[utoipa::path(
    post,
    path = "/drivers/{id}/approval",
    tag = "drivers",
    params(("id" = String, Path, description = "The driver")),
    request_body = ApprovalChange,
    responses((status = 200, description = "The driver as changed", body = DriverRecord)),
)]
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
