//! `/modules`: device instances. Anyone signed in reads and calls the functions their
//! role allows; support starts and stops; administrators create, change and delete.

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
use crate::runtime::ExecOptions;
use crate::search::Kind;
use crate::settings::Audience;
use crate::store::{
    HistoryReport, ModuleFilter, ModulePatch, ModuleRecord, NewAuditEntry, NewModule,
};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(state))
        .routes(routes!(state_key))
        .routes(routes!(exec))
        .routes(routes!(settings))
        .routes(routes!(history))
}

#[derive(Debug, Deserialize)]
struct ModuleListParams {
    #[serde(flatten)]
    list: ListParams,
    driver_id: Option<String>,
    system_id: Option<String>,
    running: Option<String>,
}

/// List modules.
#[utoipa::path(
    get,
    path = "/modules",
    tag = "modules",
    params(
        ListParams,
        ("driver_id" = Option<String>, Query, description = "Only modules of this driver"),
        ("system_id" = Option<String>, Query, description = "Only modules in this system"),
        ("running" = Option<bool>, Query, description = "Only modules that should (true) or should not (false) run"),
    ),
    responses((status = 200, description = "A page of modules", body = [ModuleRecord], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<ModuleListParams>,
) -> Result<Response, ApiError> {
    let running = match params.running.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::invalid("running", "must be true or false")),
    };
    let query = params.list.query()?;
    if params.driver_id.is_none() && params.system_id.is_none() && running.is_none() {
        let store = state.control.store();
        if let Some(found) = searched(&state, Kind::Module, &query, None, |id| async move {
            store.module(&id).await
        })
        .await?
        {
            return Ok(page(found));
        }
    }
    let modules = state
        .control
        .store()
        .list_modules(
            &query,
            &ModuleFilter {
                driver_id: params.driver_id,
                system_id: params.system_id,
                running,
            },
        )
        .await?;
    Ok(page(modules))
}

/// Create a module (started at once with `running: true`).
#[utoipa::path(
    post,
    path = "/modules",
    tag = "modules",
    request_body = NewModule,
    responses((status = 201, description = "The new module", body = ModuleRecord)),
)]
async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewModule>,
) -> Result<Response, ApiError> {
    let module = state
        .control
        .store()
        .create_module(&caller.actor(), &new)
        .await?;
    state.control.reindex(Kind::Module, &module.id).await;
    if module.running {
        state.control.refresh_module(&module.id).await?;
    }
    Ok((StatusCode::CREATED, axum::Json(module)).into_response())
}

/// A module.
#[utoipa::path(
    get,
    path = "/modules/{id}",
    tag = "modules",
    params(("id" = String, Path, description = "The module")),
    responses((status = 200, description = "The module", body = ModuleRecord)),
)]
async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ModuleRecord>, ApiError> {
    Ok(axum::Json(state.control.store().module(&id).await?))
}

/// Change a module: each field given replaces that field (`null` clears an optional
/// one); a running module restarts on its new configuration.
#[utoipa::path(
    method(patch, put),
    path = "/modules/{id}",
    tag = "modules",
    params(("id" = String, Path, description = "The module")),
    request_body = ModulePatch,
    responses((status = 200, description = "The module as changed", body = ModuleRecord)),
)]
async fn update(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
    Json(patch): Json<ModulePatch>,
) -> Result<axum::Json<ModuleRecord>, ApiError> {
    let module = state
        .control
        .store()
        .update_module(&caller.actor(), &id, &patch)
        .await?;
    state.control.reindex(Kind::Module, &id).await;
    state.control.refresh_module(&id).await?;
    Ok(axum::Json(module))
}

/// Delete a module (stopped first).
#[utoipa::path(
    delete,
    path = "/modules/{id}",
    tag = "modules",
    params(("id" = String, Path, description = "The module")),
    responses((status = 202, description = "Deleted")),
)]
async fn remove(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let systems = state.control.store().systems_of_module(&id).await?;
    state
        .control
        .store()
        .delete_module(&caller.actor(), &id)
        .await?;
    state.control.reindex(Kind::Module, &id).await;
    state.control.refresh_module(&id).await?;
    for system in systems {
        state.control.refresh_system(&system).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// Start a module, and keep it running across restarts of the host.
#[utoipa::path(
    post,
    path = "/modules/{id}/start",
    tag = "modules",
    params(("id" = String, Path, description = "The module")),
    responses((status = 200, description = "Started")),
)]
async fn start(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.start_module(&caller.actor(), &id).await?;
    Ok(StatusCode::OK)
}

/// Stop a module.
#[utoipa::path(
    post,
    path = "/modules/{id}/stop",
    tag = "modules",
    params(("id" = String, Path, description = "The module")),
    responses((status = 200, description = "Stopped")),
)]
async fn stop(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.stop_module(&caller.actor(), &id).await?;
    Ok(StatusCode::OK)
}

/// The running module `id`, or why there is none.
async fn running(state: &ApiState, id: &str) -> Result<crate::runtime::ModuleHandle, ApiError> {
    if let Some(handle) = state.control.runtime().module(id) {
        return Ok(handle);
    }
    state.control.store().module(id).await?;
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "module_stopped",
        format!("module {id} is not running"),
    ))
}

/// A running module's status.
#[utoipa::path(
    get,
    path = "/modules/{id}/state",
    tag = "modules",
    params(("id" = String, Path, description = "The module")),
    responses((status = 200, description = "Every status key with its value", body = Object)),
)]
async fn state(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let handle = running(&state, &id).await?;
    let snapshot = handle.status_snapshot();
    Ok(axum::Json(Value::Object(snapshot.into_iter().collect())))
}

/// One status value of a running module.
#[utoipa::path(
    get,
    path = "/modules/{id}/state/{key}",
    tag = "modules",
    params(("id" = String, Path, description = "The module"), ("key" = String, Path, description = "The status key")),
    responses((status = 200, description = "The value", body = Value)),
)]
async fn state_key(
    State(state): State<ApiState>,
    _caller: Principal,
    Path((id, key)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let handle = running(&state, &id).await?;
    handle
        .status(&key)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("module {id} has no status {key}")))
}

/// Run `method` of the running module `id` for `caller`, checking the function's level.
pub(super) async fn call(
    state: &ApiState,
    caller: &Principal,
    id: &str,
    method: &str,
    args: Value,
) -> Result<Value, ApiError> {
    let handle = running(state, id).await?;
    let driver = handle.driver();
    let function = driver.metadata().function(method).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_function",
            format!("the driver has no function {method}"),
        )
    })?;
    if caller.read_only() {
        return Err(ApiError::forbidden(
            "this credential may only read (scope read): it calls no function",
        ));
    }
    if !caller.may_call(function.level) {
        // A refused call is recorded like a made one: who tried what.
        state
            .control
            .store()
            .audit(
                &NewAuditEntry::new(&caller.actor(), "module.exec_refused", "module", id)
                    .details(json!({"method": method, "reason": "role"})),
            )
            .await?;
        return Err(ApiError::forbidden(format!(
            "{method} needs a higher role than yours"
        )));
    }
    Ok(state
        .control
        .exec(&caller.actor(), id, method, args, ExecOptions::default())
        .await?)
}

/// Call a function of a running module, with a JSON array (positional) or object
/// (named) of arguments. A driver's refusal is `driver_error` (422).
#[utoipa::path(
    post,
    path = "/modules/{id}/exec/{method}",
    tag = "modules",
    params(("id" = String, Path, description = "The module"), ("method" = String, Path, description = "The function")),
    request_body(content = Value, description = "The arguments: a JSON array or object"),
    responses((status = 200, description = "What the function returned", body = Value)),
)]
async fn exec(
    State(state): State<ApiState>,
    caller: Principal,
    Path((id, method)): Path<(String, String)>,
    Json(args): Json<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    if !matches!(args, Value::Array(_) | Value::Object(_)) {
        return Err(ApiError::invalid(
            "args",
            "send a JSON array or object of arguments",
        ));
    }
    Ok(axum::Json(call(&state, &caller, &id, &method, args).await?))
}

/// A module's merged settings as the caller's role sees them.
#[utoipa::path(
    get,
    path = "/modules/{id}/settings",
    tag = "modules",
    params(("id" = String, Path, description = "The module")),
    responses((status = 200, description = "The merged settings, levels above the caller's role left out", body = Value)),
)]
async fn settings(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let merged = state
        .control
        .store()
        .module_settings(&id, Audience::Person(caller.role()))
        .await?;
    Ok(axum::Json(merged))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryParams {
    /// Unix milliseconds; default a week before `to`.
    #[param(value_type = Option<i64>)]
    from: Option<String>,
    /// Unix milliseconds; default now.
    #[param(value_type = Option<i64>)]
    to: Option<String>,
}

/// A module's online/offline history and uptime over a time range.
#[utoipa::path(
    get,
    path = "/modules/{id}/history",
    tag = "modules",
    params(("id" = String, Path, description = "The module"), HistoryParams),
    responses((status = 200, description = "Transitions and uptime", body = HistoryReport)),
)]
async fn history(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Result<axum::Json<HistoryReport>, ApiError> {
    let store = state.control.store();
    store.module(&id).await?;
    let millis = |field: &str, text: &Option<String>| -> Result<Option<i64>, ApiError> {
        text.as_deref()
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|_| ApiError::invalid(field, "must be Unix milliseconds"))
            })
            .transpose()
    };
    let to = millis("to", &params.to)?.unwrap_or_else(|| store.now());
    let from = millis("from", &params.from)?.unwrap_or(to - 7 * 24 * 60 * 60 * 1000);
    if from > to {
        return Err(ApiError::invalid("from", "must not be after to"));
    }
    Ok(axum::Json(store.module_history(&id, from, to).await?))
}
