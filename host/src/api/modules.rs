//! `/modules`: device instances. Anyone signed in reads and calls the functions their
//! role allows; support starts and stops; administrators create, change and delete.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::runtime::ExecOptions;
use crate::settings::Audience;
use crate::store::{
    HistoryReport, ModuleFilter, ModulePatch, ModuleRecord, NewAuditEntry, NewModule,
};

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/modules", get(list).post(create))
        .route(
            "/modules/{id}",
            get(show).patch(update).put(update).delete(remove),
        )
        .route("/modules/{id}/start", post(start))
        .route("/modules/{id}/stop", post(stop))
        .route("/modules/{id}/state", get(state))
        .route("/modules/{id}/state/{key}", get(state_key))
        .route("/modules/{id}/exec/{method}", post(exec))
        .route("/modules/{id}/settings", get(settings))
        .route("/modules/{id}/history", get(history))
}

#[derive(Debug, Deserialize)]
struct ModuleListParams {
    #[serde(flatten)]
    list: ListParams,
    driver_id: Option<String>,
    system_id: Option<String>,
    running: Option<String>,
}

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
    let modules = state
        .control
        .store()
        .list_modules(
            &params.list.query()?,
            &ModuleFilter {
                driver_id: params.driver_id,
                system_id: params.system_id,
                running,
            },
        )
        .await?;
    Ok(page(modules))
}

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
    if module.running {
        state.control.refresh_module(&module.id).await?;
    }
    Ok((StatusCode::CREATED, axum::Json(module)).into_response())
}

async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ModuleRecord>, ApiError> {
    Ok(axum::Json(state.control.store().module(&id).await?))
}

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
    state.control.refresh_module(&id).await?;
    Ok(axum::Json(module))
}

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
    state.control.refresh_module(&id).await?;
    for system in systems {
        state.control.refresh_system(&system).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

async fn start(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.start_module(&caller.actor(), &id).await?;
    Ok(StatusCode::OK)
}

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

async fn state(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let handle = running(&state, &id).await?;
    let snapshot = handle.status_snapshot();
    Ok(axum::Json(Value::Object(snapshot.into_iter().collect())))
}

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
    let function = handle.driver().metadata().function(method).ok_or_else(|| {
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

#[derive(Debug, Deserialize)]
struct HistoryParams {
    /// Unix milliseconds; default a week before `to`.
    from: Option<String>,
    /// Unix milliseconds; default now.
    to: Option<String>,
}

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
