//! `/settings`: one sealed JSON object per parent (driver, zone, system, module) and level.
//! A person reads the levels their role reads (see [`crate::settings`]); a
//! `never_displayed` record shows that it exists, never its value. Writing at a level
//! needs that level's role (support for `none` and `support`, admin above); a change
//! reaches the running modules it concerns at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use super::{ApiError, ApiState, Principal};
use crate::settings::{Audience, Level, ParentKind, Role};
use crate::store::{SettingsRecord, SettingsVersion};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, set))
        .routes(routes!(show, remove))
        .routes(routes!(history))
}

/// A record as a person sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Visible {
    #[serde(flatten)]
    record: SettingsRecord,
    /// The value, when the caller's role reads this level.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
}

fn kind(text: &str) -> Result<ParentKind, ApiError> {
    ParentKind::parse(text)
        .ok_or_else(|| ApiError::invalid("parent_kind", "one of driver, zone, system, module"))
}

fn level(text: &str) -> Result<Level, ApiError> {
    Level::parse(text)
        .ok_or_else(|| ApiError::invalid("level", "one of none, support, admin, never_displayed"))
}

/// Refuse `caller` writing at `level`.
fn may_write(caller: &Principal, level: Level) -> Result<(), ApiError> {
    caller.require(match level {
        Level::None | Level::Support => Role::Support,
        Level::Admin | Level::NeverDisplayed => Role::Admin,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// `driver`, `zone`, `system` or `module`.
    #[param(value_type = ParentKind)]
    parent_kind: String,
    /// The parent's id.
    parent_id: String,
}

/// The settings records of a parent, each with its value when the caller's role reads
/// its level.
#[utoipa::path(
    get,
    path = "/settings",
    tag = "settings",
    params(ListParams),
    responses((status = 200, description = "The parent's records, one per level", body = [Visible])),
)]
async fn list(
    State(state): State<ApiState>,
    caller: Principal,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<Vec<Visible>>, ApiError> {
    let kind = kind(&params.parent_kind)?;
    let audience = Audience::Person(caller.role());
    let store = state.control.store();
    let mut visible = Vec::new();
    for record in store.settings_records(kind, &params.parent_id).await? {
        let value = if audience.reads(record.level) {
            store
                .settings(kind, &params.parent_id, record.level)
                .await?
                .map(|(_, value)| value)
        } else {
            None
        };
        visible.push(Visible { record, value });
    }
    Ok(axum::Json(visible))
}

/// A settings record's new value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct NewSettings {
    /// What it belongs to.
    #[schema(value_type = ParentKind)]
    parent_kind: String,
    /// The parent's id.
    parent_id: String,
    /// Who may read it back.
    #[schema(value_type = Level)]
    level: String,
    /// The settings: a JSON object.
    value: Value,
}

/// Write the settings of a parent at a level (a new version of its record); the running
/// modules it concerns receive the change.
#[utoipa::path(
    post,
    path = "/settings",
    tag = "settings",
    request_body = NewSettings,
    responses((status = 200, description = "The record (without its value)", body = SettingsRecord)),
)]
async fn set(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewSettings>,
) -> Result<Response, ApiError> {
    let kind = kind(&new.parent_kind)?;
    let level = level(&new.level)?;
    may_write(&caller, level)?;
    let record = state
        .control
        .set_settings(&caller.actor(), kind, &new.parent_id, level, &new.value)
        .await?;
    Ok((StatusCode::OK, axum::Json(record)).into_response())
}

/// A settings record, with its value when the caller's role reads its level.
#[utoipa::path(
    get,
    path = "/settings/{id}",
    tag = "settings",
    params(("id" = String, Path, description = "The settings record")),
    responses((status = 200, description = "The record", body = Visible)),
)]
async fn show(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Visible>, ApiError> {
    let store = state.control.store();
    let record = store.settings_record(&id).await?;
    let value = if Audience::Person(caller.role()).reads(record.level) {
        store
            .settings(record.parent_kind, &record.parent_id, record.level)
            .await?
            .map(|(_, value)| value)
    } else {
        None
    };
    Ok(axum::Json(Visible { record, value }))
}

/// A settings record's earlier versions (at least the last 20).
#[utoipa::path(
    get,
    path = "/settings/{id}/history",
    tag = "settings",
    params(("id" = String, Path, description = "The settings record")),
    responses((status = 200, description = "Versions, newest first", body = [SettingsVersion])),
)]
async fn history(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Vec<SettingsVersion>>, ApiError> {
    let store = state.control.store();
    let record = store.settings_record(&id).await?;
    if !Audience::Person(caller.role()).reads(record.level) {
        return Err(ApiError::forbidden(
            "your role does not read this level of settings",
        ));
    }
    Ok(axum::Json(store.settings_history(&id).await?))
}

/// Delete a settings record and its versions.
#[utoipa::path(
    delete,
    path = "/settings/{id}",
    tag = "settings",
    params(("id" = String, Path, description = "The settings record")),
    responses((status = 202, description = "Deleted")),
)]
async fn remove(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = state.control.store().settings_record(&id).await?;
    may_write(&caller, record.level)?;
    state
        .control
        .delete_settings(
            &caller.actor(),
            record.parent_kind,
            &record.parent_id,
            record.level,
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}
