//! `/repositories`: the git repositories drivers are built from. Administrators register
//! them (with credentials, which are stored sealed and never shown again); reviewers and
//! administrators read them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Query};
use super::list::{ListParams, page};
use super::{ApiError, ApiState, Principal};
use crate::store::{NewRepository, RepositoryRecord};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, remove))
}

/// List repositories.
#[utoipa::path(
    get,
    path = "/repositories",
    tag = "builds",
    params(ListParams),
    responses((status = 200, description = "A page of repositories", body = [RepositoryRecord], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn list(
    State(state): State<ApiState>,
    _caller: Principal,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let query = params.query()?;
    Ok(page(state.control.store().list_repositories(&query).await?))
}

/// Register a repository: a git URL (`https://`, `ssh://`, `git://`, `user@host:path`) or
/// a path on the host. Credentials for HTTPS go in `credentials`, never in the URL.
#[utoipa::path(
    post,
    path = "/repositories",
    tag = "builds",
    request_body = NewRepository,
    responses((status = 201, description = "The repository", body = RepositoryRecord)),
)]
async fn create(
    State(state): State<ApiState>,
    caller: Principal,
    Json(new): Json<NewRepository>,
) -> Result<Response, ApiError> {
    let repository = state
        .control
        .store()
        .create_repository(&caller.actor(), &new)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(repository)).into_response())
}

/// A repository.
#[utoipa::path(
    get,
    path = "/repositories/{id}",
    tag = "builds",
    params(("id" = String, Path, description = "The repository")),
    responses((status = 200, description = "The repository", body = RepositoryRecord)),
)]
async fn show(
    State(state): State<ApiState>,
    _caller: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<RepositoryRecord>, ApiError> {
    Ok(axum::Json(state.control.store().repository(&id).await?))
}

/// Delete a repository and its builds (refused while one is queued or running). Drivers
/// built from it keep their recorded source.
#[utoipa::path(
    delete,
    path = "/repositories/{id}",
    tag = "builds",
    params(("id" = String, Path, description = "The repository")),
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
        .delete_repository(&caller.actor(), &id)
        .await?;
    Ok(StatusCode::ACCEPTED)
}
