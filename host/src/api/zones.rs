//! `/zones`: the tree of places. Anyone signed in reads; administrators change.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use super::list::{ListParams, page, searched};
use super::{ApiError, ApiState, Principal};
use crate::search::Kind;
use crate::store::{NewZone, Zone, ZonePatch};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
}

#[derive(Debug, Deserialize)]
struct ZoneListParams {
    #[serde(flatten)]
    list: ListParams,
    /// Only the children of this zone.
    parent_id: Option<String>,
}

/// List zones.
#[utoipa::path(
    get,
    path = "/zones",
    tag = "zones",
    params(
        ListParams,
        ("parent_id" = Option<String>, Query, description = "Only the children of this zone"),
    ),
    responses((status = 200, description = "A page of zones", body = [Zone], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<ZoneListParams>,
) -> Result<Response, ApiError> {
    let query = params.list.query()?;
    if params.parent_id.is_none() {
        let store = state.control.store();
        if let Some(found) = searched(&state, Kind::Zone, &query, None, |id| async move {
            store.zone(&id).await
        })
        .await?
        {
            return Ok(page(found));
        }
    }
    let zones = state
        .control
        .store()
        .list_zones(&query, params.parent_id.as_deref())
        .await?;
    Ok(page(zones))
}

/// Create a zone.
#[utoipa::path(
    post,
    path = "/zones",
    tag = "zones",
    request_body = NewZone,
    responses((status = 201, description = "The new zone", body = Zone)),
)]
async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewZone>,
) -> Result<Response, ApiError> {
    let zone = state
        .control
        .store()
        .create_zone(&caller.actor(), &new)
        .await?;
    state.control.reindex(Kind::Zone, &zone.id).await;
    Ok((StatusCode::CREATED, axum::Json(zone)).into_response())
}

/// A zone.
#[utoipa::path(
    get,
    path = "/zones/{id}",
    tag = "zones",
    params(("id" = String, Path, description = "The zone")),
    responses((status = 200, description = "The zone", body = Zone)),
)]
async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Zone>, ApiError> {
    Ok(axum::Json(state.control.store().zone(&id).await?))
}

/// Change a zone: each field given replaces that field (`parent_id: null` makes it a
/// root).
#[utoipa::path(
    method(patch, put),
    path = "/zones/{id}",
    tag = "zones",
    params(("id" = String, Path, description = "The zone")),
    request_body = ZonePatch,
    responses((status = 200, description = "The zone as changed", body = Zone)),
)]
async fn update(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
    Json(patch): Json<ZonePatch>,
) -> Result<axum::Json<Zone>, ApiError> {
    let zone = state
        .control
        .store()
        .update_zone(&caller.actor(), &id, &patch)
        .await?;
    state.control.reindex(Kind::Zone, &id).await;
    Ok(axum::Json(zone))
}

/// Delete a zone; the systems it was in lose its settings layer.
#[utoipa::path(
    delete,
    path = "/zones/{id}",
    tag = "zones",
    params(("id" = String, Path, description = "The zone")),
    responses((status = 202, description = "Deleted")),
)]
async fn remove(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // The systems it is in: their modules' settings lose its layer.
    let systems = state.control.store().systems_in_zone(&id).await?;
    state
        .control
        .store()
        .delete_zone(&caller.actor(), &id)
        .await?;
    state.control.reindex(Kind::Zone, &id).await;
    for system in systems {
        state.control.refresh_system(&system).await?;
    }
    Ok(StatusCode::ACCEPTED)
}
