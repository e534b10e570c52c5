//! `/systems`: rooms with their zones and modules in order. Anyone signed in reads;
//! administrators change. Every change is applied to the running modules at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use super::list::{ListParams, page, searched};
use super::{ApiError, ApiState, Principal};
use crate::search::Kind;
use crate::store::{NewSystem, System, SystemPatch};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(add_module, remove_module))
        .routes(routes!(functions))
        .routes(routes!(module_state))
        .routes(routes!(module_exec))
}

/// The module called `slug` (`Display_1`, or `Display` for the first) in system `id`.
async fn resolve(state: &ApiState, id: &str, slug: &str) -> Result<String, ApiError> {
    state
        .control
        .system_module(id, slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("system {id} has no module {slug}")))
}

/// The status of the module called `module_slug` in the system.
#[utoipa::path(
    get,
    path = "/systems/{id}/{module_slug}",
    tag = "systems",
    params(("id" = String, Path, description = "The system"), ("module_slug" = String, Path, description = "The module's name in the system: `Display_1`, or `Display` for the first")),
    responses((status = 200, description = "Every status key with its value", body = Object)),
)]
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

/// Call a function of the module called `module_slug` in the system, with a JSON array
/// (positional) or object (named) of arguments. A driver's refusal is `driver_error`
/// (422), distinct from the host failing to run the call.
#[utoipa::path(
    post,
    path = "/systems/{id}/{module_slug}/{method}",
    tag = "systems",
    params(("id" = String, Path, description = "The system"), ("module_slug" = String, Path, description = "The module's name in the system: `Display_1`, or `Display` for the first"), ("method" = String, Path, description = "The function")),
    request_body(content = Value, description = "The arguments: a JSON array or object"),
    responses((status = 200, description = "What the function returned", body = Value)),
)]
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
#[utoipa::path(
    get,
    path = "/systems/{id}/functions/{module_slug}",
    tag = "systems",
    params(("id" = String, Path, description = "The system"), ("module_slug" = String, Path, description = "The module's name in the system: `Display_1`, or `Display` for the first")),
    responses((status = 200, description = "Function name to its description, level, parameter and result JSON Schemas, and parameter order", body = Object)),
)]
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

/// List systems.
#[utoipa::path(
    get,
    path = "/systems",
    tag = "systems",
    params(
        ListParams,
        ("zone_id" = Option<String>, Query, description = "Only systems in this zone"),
    ),
    responses((status = 200, description = "A page of systems", body = [System], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<SystemListParams>,
) -> Result<Response, ApiError> {
    let query = params.list.query()?;
    let store = state.control.store();
    if let Some(found) = searched(
        &state,
        Kind::System,
        &query,
        params.zone_id.clone(),
        |id| async move { store.system(&id).await },
    )
    .await?
    {
        return Ok(page(found));
    }
    let systems = store
        .list_systems(&query, params.zone_id.as_deref())
        .await?;
    Ok(page(systems))
}

/// Create a system.
#[utoipa::path(
    post,
    path = "/systems",
    tag = "systems",
    request_body = NewSystem,
    responses((status = 201, description = "The new system", body = System)),
)]
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
    reindex(&state, &system.id, &homes).await;
    refresh(&state, &system, homes).await?;
    Ok((StatusCode::CREATED, axum::Json(system)).into_response())
}

/// A system.
#[utoipa::path(
    get,
    path = "/systems/{id}",
    tag = "systems",
    params(("id" = String, Path, description = "The system")),
    responses((status = 200, description = "The system", body = System)),
)]
async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<System>, ApiError> {
    Ok(axum::Json(state.control.store().system(&id).await?))
}

/// Change a system: each field given replaces that field; the running modules follow.
#[utoipa::path(
    method(patch, put),
    path = "/systems/{id}",
    tag = "systems",
    params(("id" = String, Path, description = "The system")),
    request_body = SystemPatch,
    responses((status = 200, description = "The system as changed", body = System)),
)]
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
    reindex(&state, &system.id, &homes).await;
    refresh(&state, &system, homes).await?;
    Ok(axum::Json(system))
}

/// Delete a system.
#[utoipa::path(
    delete,
    path = "/systems/{id}",
    tag = "systems",
    params(("id" = String, Path, description = "The system")),
    responses((status = 202, description = "Deleted")),
)]
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
    let homes: Vec<(String, Option<String>)> =
        system.modules.iter().map(|m| (m.clone(), None)).collect();
    reindex(&state, &id, &homes).await;
    state.control.refresh_system(&id).await?;
    for module in &system.modules {
        state.control.refresh_module(module).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// Add a module at the end of the system's modules.
#[utoipa::path(
    put,
    path = "/systems/{id}/module/{module_id}",
    tag = "systems",
    params(("id" = String, Path, description = "The system"), ("module_id" = String, Path, description = "The module")),
    responses((status = 200, description = "The system as changed", body = System)),
)]
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
    reindex(&state, &system.id, &homes).await;
    refresh(&state, &system, homes).await?;
    Ok(axum::Json(system))
}

/// Take a module out of the system.
#[utoipa::path(
    delete,
    path = "/systems/{id}/module/{module_id}",
    tag = "systems",
    params(("id" = String, Path, description = "The system"), ("module_id" = String, Path, description = "The module")),
    responses((status = 200, description = "The system as changed", body = System)),
)]
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
    reindex(&state, &system.id, &homes).await;
    refresh(&state, &system, homes).await?;
    Ok(axum::Json(system))
}

/// Update the search index for the system `id` (and its modules), and for the modules
/// in `homes` (whose home system may have changed).
async fn reindex(state: &ApiState, id: &str, homes: &[(String, Option<String>)]) {
    state.control.reindex(Kind::System, id).await;
    for (module, _) in homes {
        state.control.reindex(Kind::Module, module).await;
    }
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
