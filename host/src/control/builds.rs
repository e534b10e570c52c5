//! Driver builds in the background: a queue in the store, worked one build at a time by a
//! builder task; each success registers the component as a driver (`pending` review) with
//! its repository, commit, package and build; progress and the compiler's output are
//! written to the build's row while it runs, so the API shows them live.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::build::{self, BuildRequest, GitCredentials, OutputTail, Progress};
use crate::store::{Actor, BuildJob, BuildOutcome, NewAuditEntry, RepositoryRecord};

use super::{Control, ControlError, DriverSource, Inner};

/// How often a running build's output is written to the store.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How often the builder looks at the queue without being woken (a build queued by
/// another host process sharing the database).
const POLL_EVERY: Duration = Duration::from_secs(30);

/// Whether a driver's repository has commits its pinned commit does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DriverUpdates {
    /// The driver.
    pub driver_id: String,
    /// Its repository.
    pub repository_id: String,
    /// The branch looked at (the repository's, or the remote's default).
    pub branch: String,
    /// The commit the driver was built from.
    pub pinned: String,
    /// The branch's newest commit.
    pub latest: String,
    /// Commits on the branch that the pinned commit does not contain.
    pub newer_commits: u64,
    /// `newer_commits > 0`.
    pub update_available: bool,
}

impl Control {
    /// Queue a build of the package `path` of repository `repository_id` at `commit`.
    pub async fn request_build(
        &self,
        actor: &Actor,
        repository_id: &str,
        commit: &str,
        path: &str,
    ) -> Result<BuildJob, ControlError> {
        if self.inner.config.build_dir.is_none() {
            return Err(ControlError::Build(
                "this host does not build drivers (no build directory is configured)".into(),
            ));
        }
        let job = self
            .store()
            .create_build(actor, repository_id, commit, path)
            .await?;
        self.inner.build_queued.notify_one();
        Ok(job)
    }

    /// Whether driver `id`'s repository has commits newer than the one it was built from.
    pub async fn driver_updates(&self, id: &str) -> Result<DriverUpdates, ControlError> {
        let driver = self.store().driver(id).await?;
        let (Some(repository_id), Some(pinned)) = (driver.repository_id, driver.source_commit)
        else {
            return Err(ControlError::Build(format!(
                "driver {id} was not built from a registered repository, so there is nothing \
                 to compare"
            )));
        };
        let Some(build_dir) = self.inner.config.build_dir.clone() else {
            return Err(ControlError::Build(
                "this host does not build drivers (no build directory is configured)".into(),
            ));
        };
        let repository = self.store().repository(&repository_id).await?;
        let credentials = self.git_credentials(&repository).await?;
        let mirror = build_dir.join("mirrors").join(&repository.id);
        let branch = repository.branch.clone();
        let location = repository.url.clone();
        let _mirrors = self.inner.mirrors.lock().await;
        let newer = tokio::task::spawn_blocking(move || {
            let location = location
                .parse::<build::Repository>()
                .map_err(|e| e.to_string())?;
            build::newer_commits(
                &location,
                credentials.as_ref(),
                &mirror,
                &pinned,
                branch.as_deref(),
            )
            .map(|newer| (pinned, newer))
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ControlError::Build(format!("the update check stopped: {e}")))?
        .map_err(ControlError::Build)?;
        let (pinned, newer) = newer;
        Ok(DriverUpdates {
            driver_id: driver.id,
            repository_id,
            branch: newer.branch,
            pinned,
            latest: newer.latest,
            newer_commits: newer.count,
            update_available: newer.count > 0,
        })
    }

    async fn git_credentials(
        &self,
        repository: &RepositoryRecord,
    ) -> Result<Option<GitCredentials>, ControlError> {
        Ok(self
            .store()
            .repository_credentials(&repository.id)
            .await?
            .map(|credentials| GitCredentials::Basic {
                username: credentials.username.clone(),
                password: Zeroizing::new(credentials.password.clone()),
            }))
    }

    /// Start the builder task (when this host builds drivers): builds a stopped host left
    /// running are marked failed, and their working directories removed, first. One host
    /// process builds for a database: another one's running builds would be failed too.
    pub(super) fn start_builder(&self) {
        let Some(build_dir) = self.inner.config.build_dir.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            let work = build_dir.join("work");
            let _ = tokio::task::spawn_blocking(move || {
                for entry in std::fs::read_dir(&work).into_iter().flatten().flatten() {
                    build::remove_tree(&entry.path());
                }
            })
            .await;
            if let Some(control) = upgrade(&weak) {
                match control.store().fail_interrupted_builds().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!("{n} builds were interrupted by a stop of the host"),
                    Err(error) => tracing::error!("builds: {error}"),
                }
            }
            loop {
                let Some(control) = upgrade(&weak) else {
                    return;
                };
                loop {
                    match control.store().start_next_build().await {
                        Ok(Some(job)) => control.run_build(job).await,
                        Ok(None) => break,
                        Err(error) => {
                            tracing::error!("builds: cannot read the queue: {error}");
                            break;
                        }
                    }
                }
                let queued = async { control.inner.build_queued.notified().await };
                let _ = tokio::time::timeout(POLL_EVERY, queued).await;
            }
        });
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Cancel build `id`: a queued one at once; a running one is stopped (with everything
    /// its current step started) and recorded `cancelled` when it has stopped.
    pub async fn cancel_build(&self, actor: &Actor, id: &str) -> Result<BuildJob, ControlError> {
        let store = self.store();
        if let Some(job) = store.cancel_queued_build(actor, id).await? {
            return Ok(job);
        }
        let signalled = {
            let mut running = self
                .inner
                .running_build
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match running.as_mut() {
                Some(build) if build.id == id => {
                    build.cancelled_by = Some(actor.0.clone());
                    build.cancel.store(true, Ordering::Relaxed);
                    true
                }
                _ => false,
            }
        };
        if !signalled {
            return Err(ControlError::Build(format!(
                "build {id} is running on another host process; cancel it there"
            )));
        }
        store
            .audit(&NewAuditEntry::new(actor, "build.cancel", "build", id))
            .await?;
        Ok(store.build(id).await?)
    }

    /// Run one taken build to its end and record how it ended.
    async fn run_build(&self, job: BuildJob) {
        tracing::info!(build = %job.id, commit = %job.commit, path = %job.path, "build started");
        let cancel = Arc::new(AtomicBool::new(false));
        *self
            .inner
            .running_build
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(RunningBuild {
            id: job.id.clone(),
            cancel: cancel.clone(),
            cancelled_by: None,
        });
        let result = self.build_and_register(&job, cancel).await;
        let cancelled_by = self
            .inner
            .running_build
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .and_then(|build| build.cancelled_by);
        let (outcome, output) = match (result, cancelled_by) {
            (Ok((record, driver_id, output)), _) => {
                (BuildOutcome::Succeeded { record, driver_id }, output)
            }
            (Err((_, output)), Some(by)) => (BuildOutcome::Cancelled { by }, output),
            (Err((error, output)), None) => (BuildOutcome::Failed { error }, output),
        };
        match &outcome {
            BuildOutcome::Succeeded { driver_id, .. } => {
                tracing::info!(build = %job.id, driver = %driver_id, "build succeeded")
            }
            BuildOutcome::Failed { error } => {
                tracing::warn!(build = %job.id, "build failed: {error}")
            }
            BuildOutcome::Cancelled { by } => {
                tracing::info!(build = %job.id, "build cancelled by {by}")
            }
        }
        if let Err(error) = self.store().finish_build(&job.id, &outcome, &output).await {
            tracing::error!(build = %job.id, "cannot record the build's end: {error}");
        }
    }

    async fn build_and_register(
        &self,
        job: &BuildJob,
        cancel: Arc<AtomicBool>,
    ) -> Result<(serde_json::Value, String, String), (String, String)> {
        let fail = |error: String| (error, String::new());
        let build_dir = self
            .inner
            .config
            .build_dir
            .clone()
            .ok_or_else(|| fail("this host does not build drivers".into()))?;
        let repository = self
            .store()
            .repository(&job.repository_id)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let credentials = self
            .git_credentials(&repository)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let request = BuildRequest {
            repository: repository.url.parse().map_err(|e| fail(format!("{e}")))?,
            credentials,
            commit: job.commit.parse().map_err(|e| fail(format!("{e}")))?,
            path: job.path.parse().map_err(|e| fail(format!("{e}")))?,
            work_dir: build_dir.join("work"),
            cargo_home: build_dir.join("cargo-home"),
            cancel,
        };

        // The build reports into `live`; a ticker copies it to the store.
        let live = Arc::new(Mutex::new(("starting", OutputTail::default())));
        let reporter = live.clone();
        let building = tokio::task::spawn_blocking(move || {
            build::build(&request, &mut |progress| {
                let mut live = reporter.lock().unwrap_or_else(|e| e.into_inner());
                match progress {
                    Progress::Stage(stage) => live.0 = stage,
                    Progress::Line(line) => live.1.push(line),
                }
            })
        });
        tokio::pin!(building);
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        let result = loop {
            tokio::select! {
                result = &mut building => break result,
                _ = ticker.tick() => {
                    let (stage, output) = {
                        let live = live.lock().unwrap_or_else(|e| e.into_inner());
                        (live.0, live.1.text())
                    };
                    if let Err(error) = self.store().set_build_progress(&job.id, stage, &output).await {
                        tracing::warn!(build = %job.id, "cannot record progress: {error}");
                    }
                }
            }
        };
        let built = match result {
            Ok(Ok(built)) => built,
            Ok(Err(failed)) => return Err((failed.error.to_string(), failed.output)),
            Err(error) => return Err(fail(format!("the build task stopped: {error}"))),
        };
        let record = serde_json::to_value(&built.record).map_err(|e| fail(e.to_string()))?;
        let requester = Actor(job.requested_by.clone());
        let driver = self
            .register_component(
                &requester,
                built.component,
                DriverSource {
                    repository: Some(built.record.repository.clone()),
                    commit: Some(built.record.commit.clone()),
                    repository_id: Some(repository.id.clone()),
                    package_path: Some(built.record.path.clone()),
                    build_id: Some(job.id.clone()),
                },
            )
            .await
            .map_err(|e| {
                (
                    format!("the built component was refused: {e}"),
                    built.output.clone(),
                )
            })?;
        Ok((record, driver.id, built.output))
    }
}

/// The build this host process is running, and how to stop it.
#[derive(Debug)]
pub(super) struct RunningBuild {
    id: String,
    cancel: Arc<AtomicBool>,
    cancelled_by: Option<String>,
}

fn upgrade(weak: &Weak<Inner>) -> Option<Control> {
    weak.upgrade().map(|inner| Control { inner })
}
