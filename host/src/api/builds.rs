//! `/builds`: drivers built by the host from a registered repository at an exact commit.
//! An administrator queues a build (`202 Accepted`); builds run one at a time in the
//! background; while one runs its `stage` and `output` (the compiler's messages) change,
//! and when it ends it names the driver registered from it (`pending` review) or says why
//! it failed. An administrator can cancel a queued or running build.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::store::BuildJob;

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, request))
        .routes(routes!(show))
        .routes(routes!(cancel))
}

/// A build to queue.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BuildRequestBody {
    /// The registered repository.
    repository_id: String,
    /// The exact commit: 40 (or 64) hex digits; branches and tags are refused.
    commit: String,
    /// The driver package's directory in the repository, such as `drivers/pjlink`.
    path: String,
}

/// List builds, newest first (`q` matches the package path).
#[utoipa::path(
    get,
    path = "/builds",
    tag = "builds",
    params(ListParams),
    responses((status = 200, description = "A page of builds", body = [BuildJob], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let query = params.query()?;
    Ok(page(state.control.store().list_builds(&query).await?))
}

/// Queue a build of a driver package at a commit.
#[utoipa::path(
    post,
    path = "/builds",
    tag = "builds",
    request_body = BuildRequestBody,
    responses(
        (status = 202, description = "Queued", body = BuildJob),
        (status = 409, description = "This host does not build drivers", body = super::error::ErrorBody),
    ),
)]
async fn request(
    State(state): State<ApiState>,
    caller: Principal,
    Json(body): Json<BuildRequestBody>,
) -> Result<Response, ApiError> {
    let job = state
        .control
        .request_build(
            &caller.actor(),
            &body.repository_id,
            &body.commit,
            &body.path,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(job)).into_response())
}

/// Cancel a build: a queued one at once; a running one is stopped with everything its
/// current step started, and shows `cancelled` once it has stopped.
#[utoipa::path(
    post,
    path = "/builds/{id}/cancel",
    tag = "builds",
    params(("id" = String, Path, description = "The build")),
    responses(
        (status = 200, description = "The build as it is now", body = BuildJob),
        (status = 409, description = "The build has already ended", body = super::error::ErrorBody),
    ),
)]
async fn cancel(
    State(state): State<ApiState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<BuildJob>, ApiError> {
    Ok(axum::Json(
        state.control.cancel_build(&caller.actor(), &id).await?,
    ))
}

/// A build: its state, stage, output and, once built, its record and driver.
#[utoipa::path(
    get,
    path = "/builds/{id}",
    tag = "builds",
    params(("id" = String, Path, description = "The build")),
    responses((status = 200, description = "The build", body = BuildJob)),
)]
async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<BuildJob>, ApiError> {
    Ok(axum::Json(state.control.store().build(&id).await?))
}
