//! `/systems`: rooms with their zones and modules in order. Anyone signed in reads;
//! administrators change. Every change is applied to the running modules at once.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::settings::Role;
use crate::store::{NewSystem, System, SystemPatch};

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/systems", get(list).post(create))
        .route(
            "/systems/{id}",
            get(show).patch(update).put(update).delete(remove),
        )
        .route(
            "/systems/{id}/module/{module_id}",
            put(add_module).delete(remove_module),
        )
}

#[derive(Debug, Deserialize)]
struct SystemListParams {
    #[serde(flatten)]
    list: ListParams,
    /// Only systems in this zone.
    zone_id: Option<String>,
}

async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<SystemListParams>,
) -> Result<Response, ApiError> {
    let systems = state
        .control
        .store()
        .list_systems(&params.list.query()?, params.zone_id.as_deref())
        .await?;
    Ok(page(systems))
}

async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewSystem>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let homes = homes(&state, &new.modules).await?;
    let system = state
        .control
        .store()
        .create_system(&caller.actor(), &new)
        .await?;
    refresh(&state, &system, homes).await?;
    Ok((StatusCode::CREATED, axum::Json(system)).into_response())
}

async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<System>, ApiError> {
    Ok(axum::Json(state.control.store().system(&id).await?))
}

async fn update(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
    Json(patch): Json<SystemPatch>,
) -> Result<axum::Json<System>, ApiError> {
    caller.require(Role::Admin)?;
    let mut members = state.control.store().system(&id).await?.modules;
    members.extend(patch.modules.iter().flatten().cloned());
    let homes = homes(&state, &members).await?;
    let system = state
        .control
        .store()
        .update_system(&caller.actor(), &id, &patch)
        .await?;
    refresh(&state, &system, homes).await?;
    Ok(axum::Json(system))
}

async fn remove(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let system = state.control.store().system(&id).await?;
    state
        .control
        .store()
        .delete_system(&caller.actor(), &id)
        .await?;
    state.control.refresh_system(&id).await?;
    for module in &system.modules {
        state.control.refresh_module(module).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

async fn add_module(
    State(state): State<ApiState>,
    caller: Principal,
    Path((id, module)): Path<(String, String)>,
) -> Result<axum::Json<System>, ApiError> {
    caller.require(Role::Admin)?;
    let homes = homes(&state, std::slice::from_ref(&module)).await?;
    let system = state
        .control
        .store()
        .add_system_module(&caller.actor(), &id, &module)
        .await?;
    refresh(&state, &system, homes).await?;
    Ok(axum::Json(system))
}

async fn remove_module(
    State(state): State<ApiState>,
    caller: Principal,
    Path((id, module)): Path<(String, String)>,
) -> Result<axum::Json<System>, ApiError> {
    caller.require(Role::Admin)?;
    let homes = homes(&state, std::slice::from_ref(&module)).await?;
    let system = state
        .control
        .store()
        .remove_system_module(&caller.actor(), &id, &module)
        .await?;
    refresh(&state, &system, homes).await?;
    Ok(axum::Json(system))
}

/// The home system of each of `modules` that exists.
async fn homes(
    state: &ApiState,
    modules: &[String],
) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let mut homes = Vec::new();
    for module in modules {
        match state.control.store().module(module).await {
            Ok(record) => homes.push((record.id, record.system_id)),
            Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(homes)
}

/// Bring the runtime in line with `system`: its names and its modules' settings, and
/// restart each module whose home system changed (it reaches other modules through it).
async fn refresh(
    state: &ApiState,
    system: &System,
    homes_before: Vec<(String, Option<String>)>,
) -> Result<(), ApiError> {
    state.control.refresh_system(&system.id).await?;
    let modules: Vec<String> = homes_before.iter().map(|(id, _)| id.clone()).collect();
    for ((id, before), (_, after)) in homes_before.iter().zip(homes(state, &modules).await?) {
        if *before != after {
            state.control.refresh_module(id).await?;
        }
    }
    Ok(())
}
