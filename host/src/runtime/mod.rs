//! The driver runtime: one wasmtime engine, compiled components cached on disk, and one
//! sandbox per module with its own limits, command queue, connection, timers and state.
//!
//! The runtime knows nothing of HTTP or the database. It takes a module's configuration
//! and reports what happens through [`RuntimeEvent`]s and per-module status subscriptions.

mod bindings;
mod cache;
mod device;
mod engine;
mod module;
pub mod offer;
mod queue;
mod sandbox;
mod status;
mod stdio;
mod systems;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::capability::{BaseUri, Endpoint};
use crate::component::{self, DriverMetadata, Inspection, TransportKind};
use crate::transport::{ConnectionOptions, HttpOptions};

pub use cache::{CacheOutcome, ComponentCache};
pub use module::{ModuleHandle, ModuleState};
pub use queue::{ExecOptions, OfflinePolicy};
pub use status::{StatusChange, StatusMap};

use bindings::DriverWorldPre;
use sandbox::SandboxState;

/// Limits of one module's sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLimits {
    /// Most linear memory the driver may use, in bytes. Default 64 MiB. A module's limit
    /// cannot exceed the runtime's (`RuntimeConfig::limits`), which sizes the pooled
    /// memory slots.
    pub memory_bytes: usize,
    /// Most CPU time one call into the driver may use (time blocked in host calls does
    /// not count). Default 1 s.
    pub cpu_per_call: Duration,
    /// Most wall-clock time one exec may take, queueing excluded. Default 30 s.
    pub exec_timeout: Duration,
    /// Most wall-clock time a lifecycle hook (`init`, `received`, `timer`, …) may take.
    /// Default 10 s.
    pub hook_timeout: Duration,
    /// First delay before restarting a crashed module; doubles up to `restart_max`.
    pub restart_min: Duration,
    /// Longest delay between restarts.
    pub restart_max: Duration,
    /// Commands that may wait in the queue.
    pub queue_capacity: usize,
}

impl Default for ModuleLimits {
    fn default() -> Self {
        ModuleLimits {
            memory_bytes: 64 << 20,
            cpu_per_call: Duration::from_secs(1),
            exec_timeout: Duration::from_secs(30),
            hook_timeout: Duration::from_secs(10),
            restart_min: Duration::from_millis(250),
            restart_max: Duration::from_secs(60),
            queue_capacity: 512,
        }
    }
}

/// Settings of the runtime as a whole.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where precompiled components are cached.
    pub cache_dir: PathBuf,
    /// Most modules alive at once (sizes the pooling allocator). Default 10,000.
    pub max_modules: u32,
    /// Default limits of every module.
    pub limits: ModuleLimits,
}

impl RuntimeConfig {
    /// Defaults with the cache in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            cache_dir: cache_dir.into(),
            max_modules: 10_000,
            limits: ModuleLimits::default(),
        }
    }
}

/// A driver loaded into the runtime: its component, compiled and linked, and what it is.
pub struct Driver {
    /// Digest, imports, exports and metadata.
    pub inspection: Inspection,
    /// Whether the compiled form came from the cache.
    pub cache: CacheOutcome,
    pre: DriverWorldPre<SandboxState>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("digest", &self.inspection.digest)
            .field("name", &self.inspection.metadata.name)
            .field("cache", &self.cache)
            .finish()
    }
}

impl Driver {
    /// The driver's metadata.
    pub fn metadata(&self) -> &DriverMetadata {
        &self.inspection.metadata
    }

    /// `sha256:<hex>` of the component.
    pub fn digest(&self) -> &str {
        &self.inspection.digest
    }
}

/// Why a driver could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a driver component.
    #[error(transparent)]
    Component(#[from] component::ComponentError),
    /// It imports interfaces the host does not offer.
    #[error("the component imports what Warden does not offer a driver: {}", .0.join(", "))]
    RefusedImports(Vec<String>),
    /// Compiling or linking failed.
    #[error("{0:#}")]
    Compile(anyhow::Error),
}

/// Everything needed to start one module.
#[derive(Debug, Clone)]
pub struct ModuleConfig {
    /// Unique id of the module.
    pub id: String,
    /// The driver it runs.
    pub driver: Arc<Driver>,
    /// The device it talks to (`host:port`), for TCP, TLS and UDP drivers.
    pub endpoint: Option<Endpoint>,
    /// The base URI its requests go to (`https://host:port/path`), for HTTP drivers.
    pub base_uri: Option<BaseUri>,
    /// Custom name, used instead of the driver's generic name in its system.
    pub custom_name: Option<String>,
    /// The system whose other modules it may reach (logic drivers).
    pub system: Option<String>,
    /// Merged settings (a JSON object); the driver's defaults are merged under them.
    pub settings: Value,
    /// Sandbox limits.
    pub limits: ModuleLimits,
    /// How the connection to the device behaves.
    pub connection: ConnectionOptions,
    /// How HTTP requests behave (HTTP drivers).
    pub http: HttpOptions,
}

impl ModuleConfig {
    /// A module of `driver` with default limits, no endpoint and empty settings.
    pub fn new(id: impl Into<String>, driver: Arc<Driver>) -> Self {
        ModuleConfig {
            id: id.into(),
            driver,
            endpoint: None,
            base_uri: None,
            custom_name: None,
            system: None,
            settings: Value::Object(Default::default()),
            limits: ModuleLimits::default(),
            connection: ConnectionOptions::default(),
            http: HttpOptions::default(),
        }
    }
}

/// Why a module could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another module has this id.
    #[error("a module with id `{0}` is already running")]
    DuplicateId(String),
    /// The driver talks to a device but no endpoint was configured.
    #[error("driver `{0}` needs an endpoint (host:port) for its device")]
    MissingEndpoint(String),
    /// Settings must be a JSON object.
    #[error("module settings must be a JSON object")]
    SettingsNotObject,
    /// The driver makes HTTP requests but no base URI was configured.
    #[error("driver `{0}` needs a base URI (https://host:port/path) for its device")]
    MissingBaseUri(String),
    /// The settings that configure the device link (TLS trust, HTTP authentication)
    /// are invalid or do not fit the driver's transport.
    #[error("{0}")]
    InvalidSettings(String),
    /// No room for another module.
    #[error("the runtime already runs its maximum of {0} modules")]
    Full(u32),
}

/// The severity of a module log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Tracing detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Recovered problem.
    Warn,
    /// Failure.
    Error,
}

/// Something that happened to a module.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RuntimeEvent {
    /// A log line from the driver (or its stdout/stderr) or from the host about it.
    Log {
        /// The module.
        module: String,
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// The module's sandbox started (`restarts` counts earlier crashes).
    Started {
        /// The module.
        module: String,
        /// How many times it was restarted.
        restarts: u32,
    },
    /// The module's sandbox was killed: a trap, a timeout or a memory overrun.
    Crashed {
        /// The module.
        module: String,
        /// What happened.
        reason: String,
        /// Delay before the restart.
        restart_in_ms: u64,
    },
    /// The module went online or offline (its `connected` status changed).
    Connection {
        /// The module.
        module: String,
        /// Whether it is connected now.
        connected: bool,
    },
    /// The module was stopped.
    Stopped {
        /// The module.
        module: String,
    },
}

/// What went wrong with an exec.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ExecError {
    /// The driver returned an error; see [`DriverError`].
    #[error("{0}")]
    Driver(DriverError),
    /// The function is not in the driver's metadata.
    #[error("the driver has no function `{0}`")]
    UnknownFunction(String),
    /// The arguments are not a JSON array or object.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// No result in time (queueing included).
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// Too many commands queued.
    #[error("the module's queue is full ({0} commands)")]
    QueueFull(usize),
    /// A newer command with the same name took its place.
    #[error("replaced by a newer command named `{0}`")]
    Replaced(String),
    /// The module stopped.
    #[error("the module is stopped")]
    Stopped,
    /// The sandbox was killed while running it.
    #[error("the module crashed: {0}")]
    Crashed(String),
    /// The device is offline and the command asked to fail rather than wait
    /// ([`OfflinePolicy::Fail`]).
    #[error("the device is offline: {0}")]
    Offline(String),
}

/// An error the driver itself returned, by WIT error case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{kind}: {message}")]
pub struct DriverError {
    /// The WIT `error` case: `device`, `timeout`, `invalid-arguments`, …
    pub kind: &'static str,
    /// The driver's message.
    pub message: String,
}

impl ExecError {
    /// Whether a retry may succeed: timeouts, lost connections and crashes.
    pub fn is_transient(&self) -> bool {
        match self {
            ExecError::Timeout(_) | ExecError::Crashed(_) => true,
            ExecError::Driver(e) => matches!(e.kind, "timeout" | "not-connected"),
            _ => false,
        }
    }
}

/// The shared part of the runtime that sandboxes reach back into.
pub(crate) struct RuntimeInner {
    engine: Engine,
    linker: Linker<SandboxState>,
    cache: ComponentCache,
    config: RuntimeConfig,
    modules: RwLock<HashMap<String, ModuleHandle>>,
    systems: systems::Systems,
    events: broadcast::Sender<RuntimeEvent>,
    _ticker: engine::EpochTicker,
}

impl RuntimeInner {
    pub(crate) fn emit(&self, event: RuntimeEvent) {
        let _ = self.events.send(event);
    }

    pub(crate) fn module(&self, id: &str) -> Option<ModuleHandle> {
        self.modules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// The driver runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.inner.cache.dir())
            .finish()
    }
}

impl Runtime {
    /// Build the engine, link the host's offer and start the epoch ticker. Must be called
    /// inside a tokio runtime.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = engine::build(&config)?;
        let linker = sandbox::linker(&engine)?;
        let ticker = engine::EpochTicker::start(&engine)?;
        let (events, _) = broadcast::channel(4096);
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                cache: ComponentCache::new(&config.cache_dir),
                engine,
                linker,
                config,
                modules: RwLock::new(HashMap::new()),
                systems: systems::Systems::default(),
                events,
                _ticker: ticker,
            }),
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Every later runtime event.
    pub fn events(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.inner.events.subscribe()
    }

    /// Load a driver from a file.
    pub fn load_driver_file(&self, path: &Path) -> Result<Arc<Driver>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_driver(&bytes)
    }

    /// Load a driver from its component bytes: inspect it, refuse imports the host does
    /// not offer, compile it (or take it from the cache) and link it.
    pub fn load_driver(&self, bytes: &[u8]) -> Result<Arc<Driver>, LoadError> {
        let inspection = component::inspect(bytes)?;
        let refused = offer::refused_imports(&inspection.imports);
        if !refused.is_empty() {
            return Err(LoadError::RefusedImports(refused));
        }
        let (component, cache): (Component, CacheOutcome) = self
            .inner
            .cache
            .load(&self.inner.engine, &inspection.digest, bytes)
            .map_err(LoadError::Compile)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .and_then(DriverWorldPre::new)
            .map_err(|e| {
                LoadError::Compile(anyhow::Error::from(e).context("linking the component"))
            })?;
        Ok(Arc::new(Driver {
            inspection,
            cache,
            pre,
        }))
    }

    /// Define (or redefine) system `id` with its modules in order. Module names such as
    /// `Display_1` follow this order; only modules running here are counted (see
    /// [`Runtime::set_system_named`] for a system whose names are fixed by the store).
    pub fn set_system(&self, id: &str, modules: Vec<String>) {
        self.inner
            .systems
            .set(id, modules.into_iter().map(|m| (m, None)).collect());
    }

    /// Define system `id` with its modules in order, each with the name it has in the
    /// system (custom or generic): stopped modules keep their place, so `Display_2` stays
    /// `Display_2` while `Display_1` is stopped.
    pub fn set_system_named(&self, id: &str, modules: Vec<(String, String)>) {
        self.inner.systems.set(
            id,
            modules
                .into_iter()
                .map(|(module, name)| (module, Some(name)))
                .collect(),
        );
    }

    /// Remove a system definition.
    pub fn remove_system(&self, id: &str) {
        self.inner.systems.remove(id);
    }

    /// The module names of system `id` (`Display_1`, …) with the module ids they name.
    pub fn system_modules(&self, id: &str) -> Vec<(String, String)> {
        systems::slugs(&self.inner, id)
    }

    /// Start a module. It runs until [`ModuleHandle::stop`]; crashes restart it.
    pub fn start_module(&self, config: ModuleConfig) -> Result<ModuleHandle, StartError> {
        let metadata = config.driver.metadata();
        if metadata.transport == TransportKind::Http {
            if config.base_uri.is_none() {
                return Err(StartError::MissingBaseUri(metadata.name.clone()));
            }
        } else if metadata.transport.needs_endpoint() && config.endpoint.is_none() {
            return Err(StartError::MissingEndpoint(metadata.name.clone()));
        }
        if !config.settings.is_object() {
            return Err(StartError::SettingsNotObject);
        }
        let merged = merge_settings(&metadata.default_settings, &config.settings);
        device::check(&config, &merged).map_err(StartError::InvalidSettings)?;
        let mut modules = self
            .inner
            .modules
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if modules.contains_key(&config.id) {
            return Err(StartError::DuplicateId(config.id));
        }
        let max = self.inner.config.max_modules;
        if modules.len() >= max as usize {
            return Err(StartError::Full(max));
        }
        let handle = module::spawn(self.inner.clone(), config);
        modules.insert(handle.id().to_string(), handle.clone());
        Ok(handle)
    }

    /// The running module `id`.
    pub fn module(&self, id: &str) -> Option<ModuleHandle> {
        self.inner.module(id)
    }

    /// Ids of every module.
    pub fn module_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .modules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Stop module `id` and forget it. Returns whether it existed.
    pub async fn stop_module(&self, id: &str) -> bool {
        let handle = self
            .inner
            .modules
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        match handle {
            Some(handle) => {
                handle.stop().await;
                true
            }
            None => false,
        }
    }

    /// Stop every module.
    pub async fn shutdown(&self) {
        for id in self.module_ids() {
            self.stop_module(&id).await;
        }
    }
}

/// Settings the driver receives: its defaults with the module's settings merged over them
/// (objects merged deeply, other values replaced).
pub fn merge_settings(defaults: &Value, overrides: &Value) -> Value {
    crate::settings::merge(defaults, overrides)
}
