//! The control layer: runs what the store describes. Modules start from their stored
//! configuration (component by digest, endpoint or base URI, custom name, home system and
//! merged, decrypted settings); settings changes reach running modules' `init` without a
//! restart; systems' module names follow the store; every online/offline transition is
//! recorded in the device history, which is pruned on a timer; every exec is audited.
//!
//! The API layer and the command line change the building through the store and then tell
//! the control layer what changed ([`Control::refresh_module`], [`Control::refresh_system`],
//! [`Control::apply_settings`]), or use the methods here that do both.

mod approval;
mod builds;
mod exec_audit;
mod history;
mod review;
mod search;
mod upgrade;

pub use builds::DriverUpdates;
pub use review::{DriverReview, ReviewApproval, ReviewChanges, ReviewSource};
pub use upgrade::{ModuleUpgrade, UpgradeOutcome, UpgradeReport};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::capability::{BaseUri, Endpoint};
use crate::component;
use crate::runtime::{
    Driver, ExecError, ExecOptions, LoadError, ModuleConfig, ModuleHandle, ModuleLimits, Runtime,
    StartError, offer,
};
use crate::search::{Search, SearchError};
use crate::settings::{Audience, Level, ParentKind};
use crate::store::{
    Actor, Approval, DEFAULT_HISTORY_RETENTION, DriverRecord, ListQuery, ModuleFilter, ModulePatch,
    ModuleRecord, NewAuditEntry, NewDriver, SettingsRecord, Store, StoreError,
};

/// How the control layer runs modules.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Sandbox limits of every module.
    pub limits: ModuleLimits,
    /// How long device history is kept.
    pub history_retention: Duration,
    /// How often history older than that is pruned.
    pub prune_every: Duration,
    /// Start modules of drivers no reviewer approved. For development only; every such
    /// start is logged as a warning.
    pub danger_allow_unapproved: bool,
    /// Where driver builds run (each in its own directory, removed afterwards); `None`:
    /// this host does not build drivers, and build requests are refused.
    pub build_dir: Option<std::path::PathBuf>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            limits: ModuleLimits::default(),
            history_retention: DEFAULT_HISTORY_RETENTION,
            prune_every: Duration::from_secs(60 * 60),
            danger_allow_unapproved: false,
            build_dir: None,
        }
    }
}

/// Why the control layer could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The driver component is unusable (not a component, bad metadata, imports the host
    /// does not offer).
    #[error("component: {0}")]
    Invalid(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The driver's component could not be loaded.
    #[error("driver {driver}: {error}")]
    Load {
        /// The driver's id.
        driver: String,
        /// Why.
        error: LoadError,
    },
    /// The module's driver is not approved.
    #[error(
        "driver {driver} ({digest}) is {state}: a reviewer must approve it before its modules \
         can start"
    )]
    NotApproved {
        /// The driver's id.
        driver: String,
        /// Its component's digest.
        digest: String,
        /// Its review state.
        state: &'static str,
    },
    /// The stored endpoint or base URI does not parse (written by something else).
    #[error("module {module}: {message}")]
    BadTarget {
        /// The module.
        module: String,
        /// What is wrong.
        message: String,
    },
    /// The runtime refused to start the module.
    #[error("module {module}: {error}")]
    Start {
        /// The module.
        module: String,
        /// Why.
        error: StartError,
    },
    /// The module is not running here.
    #[error("module {0} is not running")]
    NotRunning(String),
    /// The exec failed: the driver's error or the host's (see [`ExecError`]).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The search index failed.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// An upgrade that cannot be made as asked.
    #[error("upgrade: {0}")]
    Upgrade(String),
    /// A build or update check that cannot be made as asked.
    #[error("build: {0}")]
    Build(String),
    /// The host failed (a task that stopped, a stored component that no longer reads).
    #[error("{0}")]
    Internal(String),
}

/// Where a registered component came from.
#[derive(Debug, Clone, Default)]
struct DriverSource {
    repository: Option<String>,
    commit: Option<String>,
    repository_id: Option<String>,
    package_path: Option<String>,
    build_id: Option<String>,
}

/// The control layer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    runtime: Runtime,
    config: ControlConfig,
    /// Loaded drivers by component digest, so modules of one driver share one compile.
    drivers: Mutex<HashMap<String, Arc<Driver>>>,
    /// Starts and stops are serialised, so two requests cannot start one module twice.
    lifecycle: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The exec audit queue (taken at shutdown to close it) and its writer.
    exec_audit: Mutex<Option<tokio::sync::mpsc::Sender<exec_audit::Item>>>,
    exec_audit_writer: Mutex<Option<JoinHandle<()>>>,
    /// The search index (none if even an in-memory one could not be made).
    search: Option<Arc<Search>>,
    /// Held by every index update from its read of the store to its commit, and by a
    /// rebuild throughout (see [`search`]).
    index_lock: tokio::sync::Mutex<()>,
    /// Wakes the builder when a build is queued.
    build_queued: tokio::sync::Notify,
    /// Held by an update check while it uses the repositories' mirrors.
    mirrors: tokio::sync::Mutex<()>,
    /// The build running now, to cancel it.
    running_build: Mutex<Option<builds::RunningBuild>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Control {
    /// The control layer over `store` and `runtime`, with a search index in memory that is
    /// built from the store in the background. Starts the history recorder and the pruning
    /// timer; call [`Control::start_running`] to start the stored modules.
    pub fn new(store: Store, runtime: Runtime, config: ControlConfig) -> Control {
        let search = Search::in_memory()
            .map_err(|error| tracing::error!("no search index: {error}"))
            .ok();
        Control::with_search(store, runtime, config, search)
    }

    /// The control layer with the search index `search` (for example one on disk from
    /// [`Search::open`]); a stale index is rebuilt from the store in the background
    /// ([`Control::ensure_search`] waits for that).
    pub fn with_search(
        store: Store,
        runtime: Runtime,
        config: ControlConfig,
        search: Option<Search>,
    ) -> Control {
        let recorder = history::spawn_recorder(store.clone(), runtime.clone());
        let (exec_queue, exec_writer) = exec_audit::spawn_writer(store.clone());
        let pruner =
            history::spawn_pruner(store.clone(), config.history_retention, config.prune_every);
        let control = Control {
            inner: Arc::new(Inner {
                store,
                runtime,
                config,
                drivers: Mutex::new(HashMap::new()),
                lifecycle: tokio::sync::Mutex::new(()),
                tasks: Mutex::new(vec![recorder, pruner]),
                exec_audit: Mutex::new(Some(exec_queue)),
                exec_audit_writer: Mutex::new(Some(exec_writer)),
                search: search.map(Arc::new),
                index_lock: tokio::sync::Mutex::new(()),
                build_queued: tokio::sync::Notify::new(),
                mirrors: tokio::sync::Mutex::new(()),
                running_build: Mutex::new(None),
            }),
        };
        control.start_builder();
        let rebuild = control.clone();
        tokio::spawn(async move { rebuild.ensure_search().await });
        control
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Register the driver component `bytes`: its metadata is read from it, and a
    /// component that imports what the host does not offer is refused before it is stored.
    /// The driver starts `pending` review.
    pub async fn register_driver(
        &self,
        actor: &Actor,
        bytes: Vec<u8>,
        source_repo: Option<String>,
        source_commit: Option<String>,
    ) -> Result<DriverRecord, ControlError> {
        // What an uploader says about the source goes into records, the audit log and
        // signed approvals: an exact commit, and a URL without credentials.
        let checked = |field: &'static str, result: Result<String, StoreError>| {
            result.map_err(|error| {
                ControlError::Store(StoreError::invalid(
                    field,
                    match error {
                        StoreError::Invalid { message, .. } => message,
                        other => other.to_string(),
                    },
                ))
            })
        };
        let source = DriverSource {
            repository: source_repo
                .map(|url| checked("source_repo", crate::store::checked_url(&url)))
                .transpose()?,
            commit: source_commit
                .map(|sha| checked("source_commit", crate::store::checked_commit(&sha)))
                .transpose()?,
            ..DriverSource::default()
        };
        self.register_component(actor, bytes, source).await
    }

    /// [`Control::register_driver`] with everything known about where the component came
    /// from (a build of a registered repository knows all of it).
    async fn register_component(
        &self,
        actor: &Actor,
        bytes: Vec<u8>,
        source: DriverSource,
    ) -> Result<DriverRecord, ControlError> {
        let (bytes, inspection) = tokio::task::spawn_blocking(move || {
            let inspection = component::inspect(&bytes);
            (bytes, inspection)
        })
        .await
        .map_err(|error| {
            ControlError::Invalid(format!("inspecting the component failed: {error}"))
        })?;
        let inspection = inspection.map_err(|error| ControlError::Invalid(error.to_string()))?;
        let refused = offer::refused_imports(&inspection.imports);
        if !refused.is_empty() {
            return Err(ControlError::Invalid(format!(
                "the component imports what the host does not offer: {}",
                refused.join(", ")
            )));
        }
        let metadata = serde_json::to_value(&inspection.metadata)
            .map_err(|error| ControlError::Invalid(format!("driver metadata: {error}")))?;
        let driver = self
            .inner
            .store
            .create_driver(
                actor,
                &NewDriver {
                    name: inspection.metadata.name.clone(),
                    component: bytes,
                    metadata,
                    source_repo: source.repository,
                    source_commit: source.commit,
                    repository_id: source.repository_id,
                    package_path: source.package_path,
                    build_id: source.build_id,
                },
            )
            .await?;
        self.reindex(crate::search::Kind::Driver, &driver.id).await;
        Ok(driver)
    }

    /// Define every stored system in the runtime and start every module stored as
    /// running. A module that fails to start does not stop the others: each failure is
    /// logged and returned with the module's id.
    pub async fn start_running(&self) -> Result<Vec<(String, ControlError)>, ControlError> {
        let store = &self.inner.store;
        let mut offset = 0;
        loop {
            let page = store
                .list_systems(
                    &ListQuery {
                        q: None,
                        limit: ListQuery::MAX_LIMIT,
                        offset,
                    },
                    None,
                )
                .await?;
            for system in &page.items {
                self.define_system(&system.id).await?;
            }
            offset += ListQuery::MAX_LIMIT;
            if offset >= page.total {
                break;
            }
        }
        let mut failures = Vec::new();
        let mut offset = 0;
        loop {
            let page = store
                .list_modules(
                    &ListQuery {
                        q: None,
                        limit: ListQuery::MAX_LIMIT,
                        offset,
                    },
                    &ModuleFilter {
                        running: Some(true),
                        ..ModuleFilter::default()
                    },
                )
                .await?;
            for module in &page.items {
                let _guard = self.inner.lifecycle.lock().await;
                if let Err(error) = self.launch(module).await {
                    tracing::error!(module = %module.id, "not started: {error}");
                    failures.push((module.id.clone(), error));
                }
            }
            offset += ListQuery::MAX_LIMIT;
            if offset >= page.total {
                break;
            }
        }
        Ok(failures)
    }

    /// Mark module `id` as running in the store and start it.
    pub async fn start_module(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<ModuleHandle, ControlError> {
        let _guard = self.inner.lifecycle.lock().await;
        if let Some(handle) = self.inner.runtime.module(id) {
            return Ok(handle);
        }
        let record = self.inner.store.module(id).await?;
        let handle = self.launch(&record).await?;
        if !record.running {
            self.set_running(actor, id, true).await?;
        }
        Ok(handle)
    }

    /// Mark module `id` as stopped in the store and stop it.
    pub async fn stop_module(&self, actor: &Actor, id: &str) -> Result<(), ControlError> {
        let _guard = self.inner.lifecycle.lock().await;
        let record = self.inner.store.module(id).await?;
        if record.running {
            self.set_running(actor, id, false).await?;
        }
        self.inner.runtime.stop_module(id).await;
        Ok(())
    }

    /// After module `id` changed in the store (endpoint, driver, name, systems): restart
    /// it with its new configuration if it runs, start or stop it to match its running
    /// flag, and redefine its systems. A deleted module is stopped.
    pub async fn refresh_module(&self, id: &str) -> Result<(), ControlError> {
        let _guard = self.inner.lifecycle.lock().await;
        self.inner.runtime.stop_module(id).await;
        let record = match self.inner.store.module(id).await {
            Ok(record) => record,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        for system in self.inner.store.systems_of_module(id).await? {
            self.define_system(&system).await?;
        }
        if record.running {
            self.launch(&record).await?;
        }
        Ok(())
    }

    /// After system `id` changed in the store: redefine its module names, and give its
    /// running modules their settings again (its zones or settings may have changed). A
    /// deleted system is removed.
    pub async fn refresh_system(&self, id: &str) -> Result<(), ControlError> {
        match self.define_system(id).await {
            Err(ControlError::Store(StoreError::NotFound { .. })) => {
                self.inner.runtime.remove_system(id);
                Ok(())
            }
            Err(error) => Err(error),
            Ok(()) => self.apply_settings(ParentKind::System, id).await,
        }
    }

    /// Give every running module whose settings include `parent`'s its merged settings
    /// again; each module's `init` runs with them. A driver that rejects its new settings
    /// keeps running and the rejection is logged.
    pub async fn apply_settings(&self, kind: ParentKind, parent: &str) -> Result<(), ControlError> {
        for module in self.inner.store.modules_under(kind, parent).await? {
            let Some(handle) = self.inner.runtime.module(&module) else {
                continue;
            };
            let settings = self
                .inner
                .store
                .module_settings(&module, Audience::Driver)
                .await?;
            if let Err(error) = handle.update_settings(settings).await {
                tracing::warn!(module = %module, "new settings not taken: {error}");
            }
        }
        Ok(())
    }

    /// Store settings and hand them to the running modules they reach.
    pub async fn set_settings(
        &self,
        actor: &Actor,
        kind: ParentKind,
        parent: &str,
        level: Level,
        value: &Value,
    ) -> Result<SettingsRecord, ControlError> {
        let record = self
            .inner
            .store
            .set_settings(actor, kind, parent, level, value)
            .await?;
        self.apply_settings(kind, parent).await?;
        Ok(record)
    }

    /// Delete settings and hand the result to the running modules they reached.
    pub async fn delete_settings(
        &self,
        actor: &Actor,
        kind: ParentKind,
        parent: &str,
        level: Level,
    ) -> Result<(), ControlError> {
        self.inner
            .store
            .delete_settings(actor, kind, parent, level)
            .await?;
        self.apply_settings(kind, parent).await
    }

    /// Run `method` on module `id` on behalf of `actor`. The audit log records who called
    /// which method of which module, with the argument names or count but not their
    /// values (they may be credentials), stamped before the call is made and written in a
    /// group commit (`control/exec_audit.rs`).
    pub async fn exec(
        &self,
        actor: &Actor,
        id: &str,
        method: &str,
        args: Value,
        options: ExecOptions,
    ) -> Result<Value, ControlError> {
        let handle = self
            .inner
            .runtime
            .module(id)
            .ok_or_else(|| ControlError::NotRunning(id.to_string()))?;
        let shape = match &args {
            Value::Object(named) => json!({"names": named.keys().collect::<Vec<_>>()}),
            Value::Array(positional) => json!({"count": positional.len()}),
            _ => json!({}),
        };
        let entry = NewAuditEntry::new(actor, "module.exec", "module", id)
            .details(json!({"method": method, "args": shape}));
        let queue = self
            .inner
            .exec_audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let queued = match queue {
            Some(queue) => queue
                .send(exec_audit::Item::Entry(
                    self.inner.store.now(),
                    entry.clone(),
                ))
                .await
                .is_ok(),
            None => false,
        };
        if !queued {
            // Stopping: write it directly.
            self.inner.store.audit(&entry).await?;
        }
        Ok(handle.exec(method, args, options).await?)
    }

    /// The id of the module called `name` (`Display_1`, or `Display` for the first) in
    /// system `system`: from the runtime's view of the system (kept in line with the store
    /// by `refresh_system`, no database query), else from the store, which also tells a
    /// missing system (`StoreError::NotFound`) from a missing module (`None`).
    pub async fn system_module(
        &self,
        system: &str,
        name: &str,
    ) -> Result<Option<String>, ControlError> {
        let wanted = crate::slug::with_index(name);
        let found = |names: Vec<(String, String)>| {
            names
                .into_iter()
                .find(|(slug, _)| *slug == wanted)
                .map(|(_, module)| module)
        };
        if let Some(module) = found(self.inner.runtime.system_modules(system)) {
            return Ok(Some(module));
        }
        Ok(found(self.inner.store.system_module_names(system).await?))
    }

    /// Wait until every exec audit entry queued so far is written.
    pub async fn flush_audit(&self) {
        let queue = self
            .inner
            .exec_audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(queue) = queue {
            let (done, written) = tokio::sync::oneshot::channel();
            if queue.send(exec_audit::Item::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        }
    }

    /// Stop every module (they stay marked running, to start again next time) and the
    /// background tasks, after recording the modules' last transitions.
    pub async fn shutdown(&self) {
        self.inner.runtime.shutdown().await;
        // Close the exec audit queue and let its writer finish what is queued.
        drop(
            self.inner
                .exec_audit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let writer = self
            .inner
            .exec_audit_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        self.close_search().await;
        // Let the recorder write the transitions the stops caused.
        tokio::time::sleep(history::FLUSH_WAIT).await;
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    async fn set_running(
        &self,
        actor: &Actor,
        id: &str,
        running: bool,
    ) -> Result<(), ControlError> {
        self.inner
            .store
            .update_module(
                actor,
                id,
                &ModulePatch {
                    running: Some(running),
                    ..ModulePatch::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Tell the runtime system `id`'s modules in order with their names.
    async fn define_system(&self, id: &str) -> Result<(), ControlError> {
        let names = self.inner.store.system_member_names(id).await?;
        self.inner.runtime.set_system_named(id, names);
        Ok(())
    }

    /// The loaded driver for `digest`, from the cache or the store.
    async fn driver(&self, driver_id: &str, digest: &str) -> Result<Arc<Driver>, ControlError> {
        if let Some(driver) = self
            .inner
            .drivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            return Ok(Arc::clone(driver));
        }
        let bytes = self.inner.store.component(digest).await?;
        let runtime = self.inner.runtime.clone();
        // Compiling takes CPU time: off the async threads.
        let loaded = tokio::task::spawn_blocking(move || runtime.load_driver(&bytes))
            .await
            .map_err(|error| ControlError::Load {
                driver: driver_id.to_string(),
                error: LoadError::Compile(anyhow::anyhow!("the compile task failed: {error}")),
            })?
            .map_err(|error| ControlError::Load {
                driver: driver_id.to_string(),
                error,
            })?;
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.to_string(), Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Refuse a driver no reviewer approved, unless `danger_allow_unapproved` (then
    /// `doing`, such as "starting module mod-…", is logged as a warning every time).
    fn check_runnable(&self, driver: &DriverRecord, doing: &str) -> Result<(), ControlError> {
        if driver.approval == Approval::Approved {
            return Ok(());
        }
        if !self.inner.config.danger_allow_unapproved {
            return Err(ControlError::NotApproved {
                driver: driver.id.clone(),
                digest: driver.digest.clone(),
                state: match driver.approval {
                    Approval::Revoked => "revoked",
                    _ => "pending review",
                },
            });
        }
        tracing::warn!(
            driver = %driver.id,
            digest = %driver.digest,
            "danger_allow_unapproved: {doing}: the driver is not approved by a reviewer"
        );
        Ok(())
    }

    /// Start `record` in the runtime from its stored configuration (the caller holds the
    /// lifecycle lock).
    async fn launch(&self, record: &ModuleRecord) -> Result<ModuleHandle, ControlError> {
        if let Some(handle) = self.inner.runtime.module(&record.id) {
            return Ok(handle);
        }
        let store = &self.inner.store;
        let driver_record = store.driver(&record.driver_id).await?;
        self.check_runnable(&driver_record, &format!("starting module {}", record.id))?;
        let driver = self
            .driver(&driver_record.id, &driver_record.digest)
            .await?;
        let bad_target = |message: String| ControlError::BadTarget {
            module: record.id.clone(),
            message,
        };
        let endpoint = record
            .endpoint
            .as_deref()
            .map(|text| text.parse::<Endpoint>())
            .transpose()
            .map_err(|error| bad_target(error.to_string()))?;
        let base_uri = record
            .uri
            .as_deref()
            .map(|text| text.parse::<BaseUri>())
            .transpose()
            .map_err(|error| bad_target(error.to_string()))?;
        let settings = store.module_settings(&record.id, Audience::Driver).await?;
        let mut config = ModuleConfig::new(record.id.clone(), driver);
        config.endpoint = endpoint;
        config.base_uri = base_uri;
        config.custom_name = record.custom_name.clone();
        config.system = record.system_id.clone();
        config.settings = settings;
        config.limits = self.inner.config.limits.clone();
        self.inner
            .runtime
            .start_module(config)
            .map_err(|error| ControlError::Start {
                module: record.id.clone(),
                error,
            })
    }
}
