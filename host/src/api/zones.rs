//! `/zones`: the tree of places. Anyone signed in reads; administrators change.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::store::{NewZone, Zone, ZonePatch};

pub(super) fn router() -> Router<ApiState> {
    Router::new().route("/zones", get(list).post(create)).route(
        "/zones/{id}",
        get(show).patch(update).put(update).delete(remove),
    )
}

#[derive(Debug, Deserialize)]
struct ZoneListParams {
    #[serde(flatten)]
    list: ListParams,
    /// Only the children of this zone.
    parent_id: Option<String>,
}

async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<ZoneListParams>,
) -> Result<Response, ApiError> {
    let zones = state
        .control
        .store()
        .list_zones(&params.list.query()?, params.parent_id.as_deref())
        .await?;
    Ok(page(zones))
}

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
    Ok((StatusCode::CREATED, axum::Json(zone)).into_response())
}

async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Zone>, ApiError> {
    Ok(axum::Json(state.control.store().zone(&id).await?))
}

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
    Ok(axum::Json(zone))
}

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
    for system in systems {
        state.control.refresh_system(&system).await?;
    }
    Ok(StatusCode::ACCEPTED)
}
