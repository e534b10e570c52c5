//! `/systems`: rooms with their zones and modules in order. Anyone signed in reads;
//! administrators change. Every change is applied to the running modules at once.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
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
        .route("/systems/{id}/functions/{module_slug}", get(functions))
        .route("/systems/{id}/{module_slug}", get(module_state))
        .route("/systems/{id}/{module_slug}/{method}", post(module_exec))
}

/// The module called `slug` (`Display_1`, or `Display` for the first) in system `id`.
async fn resolve(state: &ApiState, id: &str, slug: &str) -> Result<String, ApiError> {
    state
        .control
        .system_module(id, slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("system {id} has no module {slug}")))
}

async fn module_state(
    State(state): State<ApiState>,
    _caller: Principal,
    Path((id, slug)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let module = resolve(&state, &id, &slug).await?;
    let handle = state.control.runtime().module(&module).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "module_stopped",
            format!("{slug} of system {id} is not running"),
        )
    })?;
    Ok(axum::Json(Value::Object(
        handle.status_snapshot().into_iter().collect(),
    )))
}

async fn module_exec(
    State(state): State<ApiState>,
    caller: Principal,
    Path((id, slug, method)): Path<(String, String, String)>,
    Json(args): Json<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    if !matches!(args, Value::Array(_) | Value::Object(_)) {
        return Err(ApiError::invalid(
            "args",
            "send a JSON array or object of arguments",
        ));
    }
    let module = resolve(&state, &id, &slug).await?;
    Ok(axum::Json(
        super::modules::call(&state, &caller, &module, &method, args).await?,
    ))
}

/// The functions of the module called `slug` that the caller may call, with their
/// JSON Schemas.
async fn functions(
    State(state): State<ApiState>,
    caller: Principal,
    Path((id, slug)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let module = resolve(&state, &id, &slug).await?;
    let record = state.control.store().module(&module).await?;
    let driver = state.control.store().driver(&record.driver_id).await?;
    let metadata: crate::component::DriverMetadata = serde_json::from_value(driver.metadata)
        .map_err(|error| ApiError::internal(&format!("driver {} metadata: {error}", driver.id)))?;
    let visible: serde_json::Map<String, Value> = metadata
        .functions
        .iter()
        .filter(|f| caller.may_call(f.level))
        .map(|f| {
            (
                f.name.clone(),
                json!({
                    "description": f.description,
                    "level": f.level,
                    "params": f.params,
                    "returns": f.returns,
                    "order": f.param_names(),
                }),
            )
        })
        .collect();
    Ok(axum::Json(Value::Object(visible)))
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
