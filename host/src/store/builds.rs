//! Build jobs: a driver asked for at a commit of a registered repository, built one at a
//! time in the background. The row carries the job's progress (state and stage), the
//! compiler output (its tail) and, once built, the build record and the driver
//! registered from it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{NewAuditEntry, append};
use super::model::{Actor, ListQuery, Page};
use super::{Result, Store, StoreError, new_id};
use crate::build::{Commit, PackagePath};

const COLUMNS: &str = "id, repository_id, commit_sha, package_path, state, stage, record, \
                       output, error, driver_id, requested_by, created_at, started_at, finished_at";

/// The most compiler output kept per build (its tail).
pub const MAX_BUILD_OUTPUT: usize = 256 << 10;

/// Where a build job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    /// Waiting for the builds before it.
    Queued,
    /// Building now.
    Running,
    /// Built; its driver is registered.
    Succeeded,
    /// Failed; `error` and `output` say why.
    Failed,
    /// Cancelled by an administrator (`error` says who).
    Cancelled,
}

impl BuildState {
    fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<BuildState> {
        match text {
            "queued" => Some(BuildState::Queued),
            "running" => Some(BuildState::Running),
            "succeeded" => Some(BuildState::Succeeded),
            "failed" => Some(BuildState::Failed),
            "cancelled" => Some(BuildState::Cancelled),
            _ => None,
        }
    }
}

/// A build job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildJob {
    /// `build-…`.
    pub id: String,
    /// The repository built from.
    pub repository_id: String,
    /// The exact commit (40 hex digits).
    pub commit: String,
    /// The driver's package inside the repository (`drivers/pjlink`).
    pub path: String,
    /// Where it is.
    pub state: BuildState,
    /// What it is doing now, while running.
    pub stage: String,
    /// The build record (command, toolchain, digest), once built.
    pub record: Option<Value>,
    /// The compiler's output (the last 256 KiB).
    pub output: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The driver registered from it.
    pub driver_id: Option<String>,
    /// Who asked for it.
    pub requested_by: String,
    /// Asked for, Unix ms.
    pub created_at: i64,
    /// Started, Unix ms.
    pub started_at: Option<i64>,
    /// Finished, Unix ms.
    pub finished_at: Option<i64>,
}

/// How a build ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildOutcome {
    /// Built, and registered as `driver_id`.
    Succeeded {
        /// The build record.
        record: Value,
        /// The driver registered from it.
        driver_id: String,
    },
    /// Failed.
    Failed {
        /// Why.
        error: String,
    },
    /// Stopped by a cancellation.
    Cancelled {
        /// Who cancelled it.
        by: String,
    },
}

/// The last `MAX_BUILD_OUTPUT` bytes of `output`, cut at a character boundary.
pub fn output_tail(output: &str) -> &str {
    if output.len() <= MAX_BUILD_OUTPUT {
        return output;
    }
    let mut start = output.len() - MAX_BUILD_OUTPUT;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    output.get(start..).unwrap_or("")
}

fn build_from(row: &AnyRow) -> Result<BuildJob> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let record: Option<String> = row.try_get("record")?;
    let corrupt = |why: String| StoreError::Corrupt {
        record: format!("builds/{id}"),
        why,
    };
    Ok(BuildJob {
        state: BuildState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown state {state:?}")))?,
        record: record
            .map(|text| serde_json::from_str(&text).map_err(|e| corrupt(e.to_string())))
            .transpose()?,
        repository_id: row.try_get("repository_id")?,
        commit: row.try_get("commit_sha")?,
        path: row.try_get("package_path")?,
        stage: row.try_get("stage")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        driver_id: row.try_get("driver_id")?,
        requested_by: row.try_get("requested_by")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        id,
    })
}

async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Option<BuildJob>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM builds WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(build_from).transpose()
}

/// A full commit id (see [`Commit`]), lower-cased.
pub fn checked_commit(commit: &str) -> Result<String> {
    commit
        .trim()
        .parse::<Commit>()
        .map(String::from)
        .map_err(|e| StoreError::invalid("commit", e.to_string()))
}

/// A relative path inside a repository (see [`PackagePath`]).
pub(crate) fn checked_package_path(path: &str) -> Result<String> {
    path.trim()
        .parse::<PackagePath>()
        .map(String::from)
        .map_err(|e| StoreError::invalid("path", e.to_string()))
}

impl Store {
    /// Queue a build of the package at `path` of repository `repository_id` at `commit`.
    pub async fn create_build(
        &self,
        actor: &Actor,
        repository_id: &str,
        commit: &str,
        path: &str,
    ) -> Result<BuildJob> {
        let commit = checked_commit(commit)?;
        let path = checked_package_path(path)?;
        let id = new_id("build");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        if super::repositories::fetch(tx.conn(), repository_id)
            .await?
            .is_none()
        {
            return Err(StoreError::invalid(
                "repository_id",
                format!("no repository {repository_id}"),
            ));
        }
        sqlx::query(
            "INSERT INTO builds (id, repository_id, commit_sha, package_path, state, \
             requested_by, created_at) VALUES ($1, $2, $3, $4, 'queued', $5, $6)",
        )
        .bind(&id)
        .bind(repository_id)
        .bind(&commit)
        .bind(&path)
        .bind(&actor.0)
        .bind(now)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "build.request", "build", &id).details(json!({
                "repository_id": repository_id, "commit": commit, "path": path,
            })),
        )
        .await?;
        let build = fetch(tx.conn(), &id)
            .await?
            .ok_or_else(|| StoreError::not_found("build", &id))?;
        tx.commit().await?;
        Ok(build)
    }

    /// The build `id`.
    pub async fn build(&self, id: &str) -> Result<BuildJob> {
        let mut conn = self.pool().acquire().await?;
        fetch(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("build", id))
    }

    /// Builds, newest first; `q` matches the package path.
    pub async fn list_builds(&self, query: &ListQuery) -> Result<Page<BuildJob>> {
        self.list_matching(
            &super::Listing {
                table: "builds",
                columns: COLUMNS,
                matched: "package_path",
                order: "created_at DESC, id DESC",
                from_row: build_from,
            },
            query,
        )
        .await
    }

    /// Take the oldest queued build and mark it running; `None` when none waits.
    pub async fn start_next_build(&self) -> Result<Option<BuildJob>> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT id FROM builds WHERE state = 'queued' ORDER BY created_at, id LIMIT 1",
        )
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let taken = sqlx::query(
            "UPDATE builds SET state = 'running', stage = 'starting', started_at = $2 \
             WHERE id = $1 AND state = 'queued'",
        )
        .bind(&id)
        .bind(now)
        .execute(tx.conn())
        .await?;
        if taken.rows_affected() == 0 {
            return Ok(None);
        }
        let build = fetch(tx.conn(), &id).await?;
        tx.commit().await?;
        Ok(build)
    }

    /// Record a running build's progress.
    pub async fn set_build_progress(&self, id: &str, stage: &str, output: &str) -> Result<()> {
        sqlx::query(
            "UPDATE builds SET stage = $2, output = $3 WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .bind(stage)
        .bind(output_tail(output))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Record how a build ended.
    pub async fn finish_build(
        &self,
        id: &str,
        outcome: &BuildOutcome,
        output: &str,
    ) -> Result<BuildJob> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let (state, record, error, driver_id) = match outcome {
            BuildOutcome::Succeeded { record, driver_id } => (
                BuildState::Succeeded,
                Some(record.to_string()),
                None,
                Some(driver_id.clone()),
            ),
            BuildOutcome::Failed { error } => (BuildState::Failed, None, Some(error.clone()), None),
            BuildOutcome::Cancelled { by } => (
                BuildState::Cancelled,
                None,
                Some(format!("cancelled by {by}")),
                None,
            ),
        };
        let finished = sqlx::query(
            "UPDATE builds SET state = $2, stage = '', record = $3, error = $4, driver_id = $5, \
             output = $6, finished_at = $7 WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(record)
        .bind(error.clone())
        .bind(driver_id.clone())
        .bind(output_tail(output))
        .bind(now)
        .execute(tx.conn())
        .await?;
        // A build no longer running (failed as interrupted meanwhile) keeps its end.
        if finished.rows_affected() == 1 {
            append(
                tx.conn(),
                now,
                &NewAuditEntry::new(&Actor::host(), "build.finish", "build", id).details(json!({
                    "state": state.as_str(), "error": error, "driver_id": driver_id,
                })),
            )
            .await?;
        }
        let build = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("build", id))?;
        tx.commit().await?;
        Ok(build)
    }

    /// Cancel build `id` if it is still queued: `Ok(Some(job))` then; `Ok(None)` when it
    /// is running (the builder must stop it); an error when it has finished.
    pub async fn cancel_queued_build(&self, actor: &Actor, id: &str) -> Result<Option<BuildJob>> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let job = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("build", id))?;
        match job.state {
            BuildState::Queued => {}
            BuildState::Running => return Ok(None),
            _ => {
                return Err(StoreError::Conflict(format!(
                    "build {id} has already ended ({})",
                    job.state.as_str()
                )));
            }
        }
        sqlx::query(
            "UPDATE builds SET state = 'cancelled', error = $2, finished_at = $3 \
             WHERE id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(format!("cancelled by {}", actor.0))
        .bind(now)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "build.cancel", "build", id),
        )
        .await?;
        let job = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("build", id))?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Builds left running by a host that stopped: failed, so they do not hang forever.
    pub async fn fail_interrupted_builds(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE builds SET state = 'failed', stage = '', \
             error = 'interrupted: the host stopped during the build', finished_at = $1 \
             WHERE state = 'running'",
        )
        .bind(self.now())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_paths_are_exact() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(checked_commit(&sha.to_uppercase()).unwrap(), sha);
        assert!(checked_commit("main").is_err());
        assert!(checked_commit("0123456").is_err());
        assert!(checked_commit(&format!("{sha}x")).is_err());
        assert_eq!(
            checked_package_path("drivers/pjlink/").unwrap(),
            "drivers/pjlink"
        );
        for bad in ["", "/etc", "../x", "drivers/../..", "./a"] {
            assert!(checked_package_path(bad).is_err(), "{bad}");
        }
        let long = "é".repeat(MAX_BUILD_OUTPUT);
        assert!(output_tail(&long).len() <= MAX_BUILD_OUTPUT);
        assert!(output_tail(&long).ends_with('é'));
    }
}
