//! `/drivers`: registered components. An administrator uploads a component
//! (`application/wasm`, up to 64 MiB); its metadata is read from it and it starts
//! `pending` review. Approving a digest is the reviewer's step (a `reviewer` or an
//! administrator); the approval is signed by the host (`GET /drivers/{id}/attestation`,
//! checked with the keys of `GET /signing_keys`). `POST /drivers/{id}/upgrade` moves a
//! driver's modules to another approved version while they run. `GET /drivers/{id}/review`
//! is the reviewer's page; `GET /drivers/{id}/component` the exact bytes, for
//! `warden driver verify`; `GET /drivers/{id}/updates` whether its repository moved on.

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
use crate::attestation::Envelope;
use crate::control::{DriverReview, DriverUpdates, UpgradeReport};
use crate::search::Kind;
use crate::store::{Approval, DriverRecord, SigningKeyInfo};

/// The largest component accepted.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
        .routes(routes!(show, remove))
        .routes(routes!(approval))
        .routes(routes!(attestation))
        .routes(routes!(upgrade))
        .routes(routes!(review))
        .routes(routes!(updates))
        .routes(routes!(component))
        .routes(routes!(signing_keys))
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

/// Approve a driver's digest (the host signs an attestation of it), or withdraw the
/// approval: a revocation applies to every driver with that digest and stops the modules
/// running it.
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
        .set_approval(&caller.actor(), &id, change.approval, change.note)
        .await?;
    Ok(axum::Json(driver))
}

/// The driver's signed approval: a DSSE envelope whose payload is the statement (digest,
/// source, reviewer, time), signed with the host's Ed25519 key. Check it offline with
/// `warden driver verify-attestation`.
#[utoipa::path(
    get,
    path = "/drivers/{id}/attestation",
    tag = "drivers",
    params(("id" = String, Path, description = "The driver")),
    responses(
        (status = 200, description = "The attestation", body = Envelope),
        (status = 404, description = "The driver is not approved", body = super::error::ErrorBody),
    ),
)]
async fn attestation(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<Envelope>, ApiError> {
    let driver = state.control.store().driver(&id).await?;
    match (driver.approval, driver.attestation) {
        (Approval::Approved, Some(envelope)) => Ok(axum::Json(envelope)),
        _ => Err(ApiError::not_found(format!(
            "driver {id} has no approval to attest"
        ))),
    }
}

/// Which driver to upgrade to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct UpgradeRequest {
    /// The approved driver (another version) the modules move to.
    to: String,
}

/// Move every module of this driver to another approved version, live, one module at a
/// time. A module whose new version fails to start stays on this one, and the upgrade
/// stops there; the report says what happened to each module.
#[utoipa::path(
    post,
    path = "/drivers/{id}/upgrade",
    tag = "drivers",
    params(("id" = String, Path, description = "The driver whose modules move")),
    request_body = UpgradeRequest,
    responses((status = 200, description = "What happened to each module", body = UpgradeReport)),
)]
async fn upgrade(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
    Json(request): Json<UpgradeRequest>,
) -> Result<axum::Json<UpgradeReport>, ApiError> {
    let report = state
        .control
        .upgrade_driver(&caller.actor(), &id, &request.to)
        .await?;
    state.control.reindex(Kind::Driver, &id).await;
    state.control.reindex(Kind::Driver, &request.to).await;
    Ok(axum::Json(report))
}

/// The host's approval signing keys (public halves), newest first; retired keys stay
/// listed so the attestations they signed can still be checked.
#[utoipa::path(
    get,
    path = "/signing_keys",
    tag = "drivers",
    responses((status = 200, description = "The keys", body = [SigningKeyInfo])),
)]
async fn signing_keys(
    State(state): State<ApiState>,
    _caller: Principal,
) -> Result<axum::Json<Vec<SigningKeyInfo>>, ApiError> {
    Ok(axum::Json(state.control.store().signing_keys().await?))
}

/// The reviewer's view of a driver version: source and commit (as registered and as the
/// component embeds them), digest, approval and whether its attestation verifies, transport
/// and capabilities, imported host interfaces, functions with access levels and schemas,
/// settings with the secret ones marked, and what changed since the version approved
/// before it.
#[utoipa::path(
    get,
    path = "/drivers/{id}/review",
    tag = "drivers",
    params(("id" = String, Path, description = "The driver")),
    responses((status = 200, description = "The review", body = DriverReview)),
)]
async fn review(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DriverReview>, ApiError> {
    Ok(axum::Json(state.control.review(&id).await?))
}

/// Whether the driver's repository has commits newer than the one it was built from
/// (fetches the repository; drivers not built from a registered repository answer 409).
#[utoipa::path(
    get,
    path = "/drivers/{id}/updates",
    tag = "drivers",
    params(("id" = String, Path, description = "The driver")),
    responses(
        (status = 200, description = "The comparison", body = DriverUpdates),
        (status = 409, description = "Nothing to compare, or the repository cannot be reached", body = super::error::ErrorBody),
    ),
)]
async fn updates(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<DriverUpdates>, ApiError> {
    Ok(axum::Json(state.control.driver_updates(&id).await?))
}

/// The driver's component, byte for byte (`application/wasm`), to inspect or rebuild and
/// compare offline.
#[utoipa::path(
    get,
    path = "/drivers/{id}/component",
    tag = "drivers",
    params(("id" = String, Path, description = "The driver")),
    responses((status = 200, description = "The component", content_type = "application/wasm", body = Vec<u8>)),
)]
async fn component(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.control.store();
    let driver = store.driver(&id).await?;
    let bytes = store.component(&driver.digest).await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}
