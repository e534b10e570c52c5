//! A running module: the task that owns its sandbox, serialises every call into it,
//! restarts it with back-off when it crashes, and the handle others use to reach it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{DriverWorld, WitError};
use super::device::{self, DeviceLink};
use super::engine::EPOCH_TICK;
use super::queue::{CommandQueue, OfflinePolicy, QueuedExec};
use super::sandbox::{CallClock, GuestEvent, SandboxState};
use super::status::{StatusChange, StatusMap};
use super::stdio::{Admit, LogBudget, emit_log};
use super::{
    Driver, DriverError, ExecError, ExecOptions, LogLevel, ModuleConfig, ModuleLimits,
    RuntimeEvent, RuntimeInner, merge_settings,
};
use crate::component::TransportKind;
use crate::transport::TransportEvent;

/// Time a driver gets, after its own deadline passed, to return the `timeout` error its
/// host calls gave it before the sandbox is killed.
const KILL_GRACE: Duration = Duration::from_millis(250);
/// A module that ran this long since its last start has its restart back-off reset.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Time a stop waits for the call in progress before aborting the module's task.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Where a module is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleState {
    /// Instantiating and initialising.
    Starting,
    /// Serving calls.
    Running,
    /// Crashed; restarts after a back-off.
    Restarting {
        /// Crashes so far.
        restarts: u32,
        /// Why it last crashed.
        reason: String,
    },
    /// Stopped for good.
    Stopped,
}

enum Control {
    Settings(Value, oneshot::Sender<Result<(), DriverError>>),
    Upgrade(Upgrade),
    Stop(oneshot::Sender<()>),
}

/// A request to move the module to another component of its driver.
struct Upgrade {
    driver: Arc<Driver>,
    settings: Value,
    ack: oneshot::Sender<Result<(), String>>,
}

/// What every part of the runtime may know about a module.
pub(crate) struct ModuleShared {
    id: String,
    name: String,
    system: Option<String>,
    limits: ModuleLimits,
    /// The component it runs; replaced by a live upgrade.
    driver: Mutex<Arc<Driver>>,
    status: StatusMap,
    queue: CommandQueue,
    state: watch::Sender<ModuleState>,
    /// What the driver's last `init` refused, if it did.
    init_error: Mutex<Option<DriverError>>,
    log_budget: Mutex<LogBudget>,
    /// Requests the capability decision refused, over every sandbox of the module.
    denials: Arc<AtomicU64>,
}

impl ModuleShared {
    fn current_driver(&self) -> Arc<Driver> {
        Arc::clone(&self.driver.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    pub(crate) fn limits(&self) -> &ModuleLimits {
        &self.limits
    }

    pub(crate) fn status(&self) -> &StatusMap {
        &self.status
    }

    /// Log a line written by the driver (through `log` or stdio), within its budget.
    pub(crate) fn driver_log(&self, runtime: &RuntimeInner, level: LogLevel, message: &str) {
        let admit = self
            .log_budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now());
        if let Admit::Write { dropped_before } = admit {
            if dropped_before > 0 {
                emit_log(
                    runtime,
                    &self.id,
                    LogLevel::Warn,
                    &format!("{dropped_before} log lines of this module were dropped (rate limit)"),
                );
            }
            emit_log(runtime, &self.id, level, message);
        }
    }

    fn set_connected(&self, runtime: &RuntimeInner, connected: bool) {
        let changed = self
            .status
            .set("connected", Value::Bool(connected), 5)
            .unwrap_or(false);
        if changed {
            runtime.emit(RuntimeEvent::Connection {
                module: self.id.clone(),
                connected,
            });
            if !connected {
                let failed = self
                    .queue
                    .fail_offline("the connection to the device was lost");
                if failed > 0 {
                    emit_log(
                        runtime,
                        &self.id,
                        LogLevel::Info,
                        &format!("{failed} queued command(s) failed: the device went offline"),
                    );
                }
            }
        }
    }

    /// Whether the device is known to be offline (`connected` is `false`, not merely
    /// unset, as for an HTTP module that has not made a request yet).
    fn offline(&self) -> bool {
        self.status.get("connected") == Some(Value::Bool(false))
    }
}

/// A handle on a running module. Cheap to clone.
#[derive(Clone)]
pub struct ModuleHandle {
    shared: Arc<ModuleShared>,
    control: mpsc::Sender<Control>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for ModuleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleHandle")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl ModuleHandle {
    /// The module's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// How many of the module's requests the capability decision refused since it
    /// started (restarts included).
    pub fn denials(&self) -> u64 {
        self.shared.denials.load(Ordering::Relaxed)
    }

    /// Its name in a system before numbering: custom name or the driver's generic name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The driver it runs now.
    pub fn driver(&self) -> Arc<Driver> {
        self.shared.current_driver()
    }

    /// Where it is in its life.
    pub fn state(&self) -> ModuleState {
        self.shared.state.borrow().clone()
    }

    /// Watch its life-cycle state.
    pub fn watch_state(&self) -> watch::Receiver<ModuleState> {
        self.shared.state.subscribe()
    }

    /// One status value.
    pub fn status(&self, key: &str) -> Option<Value> {
        self.shared.status.get(key)
    }

    /// The whole status map.
    pub fn status_snapshot(&self) -> BTreeMap<String, Value> {
        self.shared.status.snapshot()
    }

    /// Every later status change.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.shared.status.subscribe()
    }

    /// The error of the driver's last `init`, when it refused its settings. The module
    /// runs on without them, as the WIT contract says.
    pub fn init_error(&self) -> Option<DriverError> {
        self.shared
            .init_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Commands waiting in the queue.
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }

    /// Run `function` with `args` (a JSON array, object or null) through the module's
    /// queue and return its result.
    pub async fn exec(
        &self,
        function: &str,
        args: Value,
        options: ExecOptions,
    ) -> Result<Value, ExecError> {
        if self
            .shared
            .current_driver()
            .metadata()
            .function(function)
            .is_none()
        {
            return Err(ExecError::UnknownFunction(function.to_string()));
        }
        if !matches!(args, Value::Array(_) | Value::Object(_) | Value::Null) {
            return Err(ExecError::InvalidArguments(
                "arguments must be a JSON array or object".to_string(),
            ));
        }
        if options.offline == OfflinePolicy::Fail && self.shared.offline() {
            return Err(ExecError::Offline(
                "the device is not connected".to_string(),
            ));
        }
        let timeout = options.timeout.unwrap_or(self.shared.limits.exec_timeout);
        let deadline = Instant::now() + timeout;
        let (reply, result) = oneshot::channel();
        let exec = QueuedExec {
            function: function.to_string(),
            args: args.to_string(),
            options: ExecOptions {
                timeout: Some(timeout),
                ..options
            },
            deadline,
            attempts: 0,
            reply,
        };
        self.shared.queue.push(exec)?;
        match tokio::time::timeout_at(deadline + KILL_GRACE * 2, result).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ExecError::Stopped),
            Err(_) => Err(ExecError::Timeout(timeout)),
        }
    }

    /// Give the module new settings; its `init` runs with them without a restart.
    pub async fn update_settings(&self, settings: Value) -> Result<(), ExecError> {
        let (ack, done) = oneshot::channel();
        self.control
            .send(Control::Settings(settings, ack))
            .await
            .map_err(|_| ExecError::Stopped)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(driver)) => Err(ExecError::Driver(driver)),
            Err(_) => Err(ExecError::Stopped),
        }
    }

    /// Move the module to `driver` (another component of its driver) with `settings`,
    /// live: the new component is instantiated and initialised beside the running one,
    /// and only when that succeeded does it take over. Status and queued commands carry
    /// over (a queued command for a function the new component lacks gets its
    /// `unknown-function` error); the command in progress finishes on the old one. When
    /// the new component fails to start, the module goes on running the old one
    /// untouched and the error says why.
    pub async fn upgrade(&self, driver: Arc<Driver>, settings: Value) -> Result<(), String> {
        let current = self.shared.current_driver();
        if driver.metadata().transport != current.metadata().transport {
            return Err(format!(
                "the new component's transport ({:?}) is not the running one's ({:?})",
                driver.metadata().transport,
                current.metadata().transport
            ));
        }
        let (ack, done) = oneshot::channel();
        self.control
            .send(Control::Upgrade(Upgrade {
                driver,
                settings,
                ack,
            }))
            .await
            .map_err(|_| "the module is stopped".to_string())?;
        done.await
            .unwrap_or_else(|_| Err("the module stopped during the upgrade".to_string()))
    }

    /// Stop the module: its connection closes, timers end and queued commands fail.
    pub async fn stop(&self) {
        let (ack, done) = oneshot::channel();
        if self.control.send(Control::Stop(ack)).await.is_ok() {
            let _ = tokio::time::timeout(STOP_WAIT, done).await;
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.shared.queue.close(ExecError::Stopped);
        self.shared.state.send_replace(ModuleState::Stopped);
    }
}

/// Start the task of a new module.
pub(crate) fn spawn(runtime: Arc<RuntimeInner>, config: ModuleConfig) -> ModuleHandle {
    let metadata = config.driver.metadata();
    let name = config
        .custom_name
        .clone()
        .unwrap_or_else(|| metadata.generic_name.clone());
    let shared = Arc::new(ModuleShared {
        id: config.id.clone(),
        name,
        system: config.system.clone(),
        limits: config.limits.clone(),
        driver: Mutex::new(config.driver.clone()),
        status: StatusMap::new(config.id.clone()),
        queue: CommandQueue::new(config.limits.queue_capacity),
        state: watch::Sender::new(ModuleState::Starting),
        init_error: Mutex::new(None),
        log_budget: Mutex::new(LogBudget::new()),
        denials: Arc::new(AtomicU64::new(0)),
    });
    let (control, control_rx) = mpsc::channel(16);
    let task = tokio::spawn(supervise(runtime, shared.clone(), config, control_rx));
    ModuleHandle {
        shared,
        control,
        task: Arc::new(Mutex::new(Some(task))),
    }
}

enum Outcome {
    Stopped(Option<oneshot::Sender<()>>),
    Crashed(String),
}

/// Run the module's sandbox, restarting it with capped exponential back-off after every
/// crash, until it is stopped.
async fn supervise(
    runtime: Arc<RuntimeInner>,
    shared: Arc<ModuleShared>,
    mut config: ModuleConfig,
    mut control: mpsc::Receiver<Control>,
) {
    let mut restarts = 0u32;
    let mut backoff = config.limits.restart_min;
    // A sandbox an upgrade started while the module waited to restart.
    let mut ready: Option<Sandbox> = None;
    let stopped_by = loop {
        let started = Instant::now();
        shared.state.send_replace(ModuleState::Starting);
        let sandbox = match ready.take() {
            Some(sandbox) => Ok(sandbox),
            None => Sandbox::start(&runtime, &shared, &config, Start::Fresh).await,
        };
        let outcome = match sandbox {
            Ok(mut sandbox) => {
                shared.state.send_replace(ModuleState::Running);
                runtime.emit(RuntimeEvent::Started {
                    module: shared.id.clone(),
                    restarts,
                });
                sandbox
                    .serve(&runtime, &shared, &mut config, &mut control)
                    .await
            }
            Err(reason) => Outcome::Crashed(reason),
        };
        let reason = match outcome {
            Outcome::Stopped(ack) => break ack,
            Outcome::Crashed(reason) => reason,
        };
        shared.set_connected(&runtime, false);
        if started.elapsed() >= STABLE_AFTER {
            backoff = config.limits.restart_min;
        }
        let delay = jitter(backoff);
        restarts += 1;
        emit_log(
            &runtime,
            &shared.id,
            LogLevel::Error,
            &format!(
                "module crashed: {reason}; restarting in {} ms",
                delay.as_millis()
            ),
        );
        runtime.emit(RuntimeEvent::Crashed {
            module: shared.id.clone(),
            reason: reason.clone(),
            restart_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        });
        shared
            .state
            .send_replace(ModuleState::Restarting { restarts, reason });
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        let stop = loop {
            tokio::select! {
                _ = &mut wake => break None,
                control = control.recv() => match control {
                    None => break Some(None),
                    Some(Control::Stop(ack)) => break Some(Some(ack)),
                    Some(Control::Upgrade(upgrade)) => {
                        // The crashed component is not running: start the new one now.
                        match upgraded(&runtime, &shared, &config, &upgrade).await {
                            Ok((sandbox, next)) => {
                                config = next;
                                ready = Some(sandbox);
                                let _ = upgrade.ack.send(Ok(()));
                                break None;
                            }
                            Err(reason) => {
                                let _ = upgrade.ack.send(Err(reason));
                            }
                        }
                    }
                    Some(Control::Settings(settings, ack)) => {
                        // Taken up by `init` when the module is back; link settings are
                        // checked now so a bad value is refused rather than kept.
                        let defaults = &config.driver.metadata().default_settings;
                        let merged = merge_settings(defaults, &settings);
                        match device::check(&config, &merged) {
                            Ok(()) => {
                                config.settings = settings;
                                let _ = ack.send(Ok(()));
                            }
                            Err(message) => {
                                let _ = ack.send(Err(DriverError {
                                    kind: "invalid-arguments",
                                    message,
                                }));
                            }
                        }
                    }
                },
            }
        };
        if let Some(ack) = stop {
            break ack;
        }
        backoff = (backoff * 2).min(config.limits.restart_max);
    };
    shared.queue.close(ExecError::Stopped);
    shared.set_connected(&runtime, false);
    shared.state.send_replace(ModuleState::Stopped);
    runtime.emit(RuntimeEvent::Stopped {
        module: shared.id.clone(),
    });
    if let Some(ack) = stopped_by {
        let _ = ack.send(());
    }
}

/// Start a sandbox on the upgrade's component beside the running one (which keeps the
/// device link and status until this one takes over); on success, the module's shared
/// state names the new component and the configuration to run it with is returned.
async fn upgraded(
    runtime: &Arc<RuntimeInner>,
    shared: &Arc<ModuleShared>,
    config: &ModuleConfig,
    upgrade: &Upgrade,
) -> Result<(Sandbox, ModuleConfig), String> {
    let mut next = config.clone();
    next.driver = Arc::clone(&upgrade.driver);
    next.settings = upgrade.settings.clone();
    let defaults = &next.driver.metadata().default_settings;
    device::check(&next, &merge_settings(defaults, &next.settings))?;
    let init_error = |value: Option<DriverError>| {
        std::mem::replace(
            &mut *shared.init_error.lock().unwrap_or_else(|e| e.into_inner()),
            value,
        )
    };
    // The new component's `init` records its outcome; the old one's is put back if the
    // new one does not take over.
    let previous = init_error(None);
    let sandbox = match Sandbox::start(runtime, shared, &next, Start::Upgrade).await {
        Ok(sandbox) => sandbox,
        Err(reason) => {
            init_error(previous);
            return Err(reason);
        }
    };
    if let Some(error) = init_error(previous.clone()) {
        return Err(format!("the new component's init failed: {error}"));
    }
    init_error(None);
    *shared.driver.lock().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&next.driver);
    emit_log(
        runtime,
        &shared.id,
        LogLevel::Info,
        &format!("upgraded to {}", next.driver.digest()),
    );
    Ok((sandbox, next))
}

/// Why a sandbox starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The module starts or restarts: it is offline until its link connects.
    Fresh,
    /// An upgrade: the running sandbox still holds the device, so `connected` keeps
    /// its value until the switch (see [`Sandbox::serve`]).
    Upgrade,
}

/// `delay` ± 20 %.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// Marks a call stopped by the CPU deadline.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit of {0:?} per call exceeded")]
struct CpuDeadline(Duration);

fn epoch_ticks(duration: Duration) -> u64 {
    (duration.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64
}

/// A live sandbox: the store and the instantiated driver.
struct Sandbox {
    store: Store<SandboxState>,
    world: DriverWorld,
    guest_events: mpsc::Receiver<GuestEvent>,
}

/// Run one call into the guest with the CPU deadline armed and a wall-clock limit. A trap,
/// a deadline or the limit becomes `Err(reason)`: the sandbox must then be dropped.
macro_rules! guest_call {
    ($sandbox:expr, $timeout:expr, |$guest:ident, $store:ident| $call:expr) => {{
        let sandbox: &mut Sandbox = $sandbox;
        let timeout: Duration = $timeout;
        sandbox.arm(timeout);
        let $guest = sandbox.world.warden_driver_driver();
        let $store = &mut sandbox.store;
        match tokio::time::timeout(timeout + KILL_GRACE, $call).await {
            Err(_) => Err(format!(
                "a call did not return within its wall-clock limit of {timeout:?}"
            )),
            Ok(Err(error)) => Err(describe_trap(&error, &sandbox.store)),
            Ok(Ok(value)) => Ok(value),
        }
    }};
}

fn describe_trap(error: &wasmtime::Error, store: &Store<SandboxState>) -> String {
    if let Some(cpu) = error.downcast_ref::<CpuDeadline>() {
        return cpu.to_string();
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") {
        return format!(
            "memory limit of {} MiB exceeded",
            store.data().shared.limits().memory_bytes >> 20
        );
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("driver trapped: {trap}"),
        None => format!("driver failed: {text}"),
    }
}

fn driver_error(error: WitError) -> DriverError {
    let (kind, message) = match error {
        WitError::UnknownFunction(m) => ("unknown-function", m),
        WitError::InvalidArguments(m) => ("invalid-arguments", m),
        WitError::Denied(m) => ("denied", m),
        WitError::Timeout(m) => ("timeout", m),
        WitError::NotConnected(m) => ("not-connected", m),
        WitError::Device(m) => ("device", m),
        WitError::Limit(m) => ("limit", m),
        WitError::Failed(m) => ("failed", m),
    };
    DriverError { kind, message }
}

enum Work {
    Transport(TransportEvent),
    Guest(GuestEvent),
    Exec(QueuedExec),
    Settings(Value, oneshot::Sender<Result<(), DriverError>>),
    Upgrade(Upgrade),
}

impl Sandbox {
    async fn start(
        runtime: &Arc<RuntimeInner>,
        shared: &Arc<ModuleShared>,
        config: &ModuleConfig,
        start: Start,
    ) -> Result<Sandbox, String> {
        let members = shared
            .system
            .as_deref()
            .map(|system| runtime.systems.module_set(system))
            .unwrap_or_default();
        let grant = Arc::new(
            device::grant(&shared.id, config, members)
                .counting_denials_in(Arc::clone(&shared.denials)),
        );
        let (transport_tx, transport_rx) = mpsc::channel(256);
        // The connection opens after `init`, so the tokenizer the driver chooses there
        // splits the very first bytes the device sends.
        let endpoint = match (
            &config.endpoint,
            config.driver.metadata().transport.needs_endpoint(),
        ) {
            (Some(endpoint), true) => Some(endpoint.clone()),
            _ => None,
        };
        let has_endpoint = endpoint.is_some();
        let (guest_tx, guest_rx) = mpsc::channel(256);
        let settings = merge_settings(&config.driver.metadata().default_settings, &config.settings);
        let settings_json = settings.to_string();
        let mut state = SandboxState::new(
            runtime.clone(),
            shared.clone(),
            grant.clone(),
            settings_json.clone(),
            has_endpoint,
            config.connection.max_message,
            transport_rx,
            guest_tx,
        );
        // An HTTP client needs no connection up front, so drivers may use it from `init`.
        let http = config.driver.metadata().transport == TransportKind::Http;
        if http {
            match device::open(config, &grant, &settings, transport_tx.clone())? {
                Some(DeviceLink::Http(link)) => state.http = Some(link),
                Some(DeviceLink::Stream(_)) | None => {}
            }
        }
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|state| &mut state.limits);
        store.call_hook(|mut context, hook| {
            context.data_mut().clock.hook(hook);
            Ok(())
        });
        store.epoch_deadline_callback(|context| {
            let state = context.data();
            let used = state.clock.guest_time();
            if used >= state.cpu_limit {
                Err(CpuDeadline(state.cpu_limit).into())
            } else {
                Ok(UpdateDeadline::Continue(epoch_ticks(
                    state.cpu_limit - used,
                )))
            }
        });
        let hook_timeout = shared.limits.hook_timeout;
        let cpu = shared.limits.cpu_per_call;
        store.data_mut().clock = CallClock::new(Instant::now(), Instant::now() + hook_timeout);
        store.set_epoch_deadline(epoch_ticks(cpu));
        let world = match tokio::time::timeout(
            hook_timeout,
            config.driver.pre.instantiate_async(&mut store),
        )
        .await
        {
            Err(_) => return Err("instantiation did not finish in time".to_string()),
            Ok(Err(error)) => return Err(describe_trap(&error, &store)),
            Ok(Ok(world)) => world,
        };
        let mut sandbox = Sandbox {
            store,
            world,
            guest_events: guest_rx,
        };
        // A failed `init` is logged and leaves the module running, as the WIT says.
        let _init = sandbox.init(runtime, shared, &settings_json).await?;
        sandbox.store.data_mut().transport_tx = Some(transport_tx.clone());
        match endpoint {
            Some(_) => {
                // Offline until the link says otherwise.
                if start == Start::Fresh {
                    shared.set_connected(runtime, false);
                }
                if let Some(DeviceLink::Stream(link)) =
                    device::open(config, &grant, &settings, transport_tx)?
                {
                    sandbox.store.data_mut().attach(link);
                }
            }
            // An HTTP module is online once its device answers.
            None if http => {}
            // A logic module is online while it runs.
            None => shared.set_connected(runtime, true),
        }
        Ok(sandbox)
    }

    /// Rebuild the device link after settings that configure it changed (TLS trust,
    /// HTTP authentication). The driver's tokenizer carries over; a stream link
    /// reconnects.
    fn relink(
        &mut self,
        runtime: &RuntimeInner,
        shared: &ModuleShared,
        config: &ModuleConfig,
        merged: &Value,
    ) -> Result<(), String> {
        let Some(events) = self.store.data().transport_tx.clone() else {
            return Ok(());
        };
        let grant = Arc::clone(&self.store.data().grant);
        match device::open(config, &grant, merged, events)? {
            Some(DeviceLink::Http(link)) => self.store.data_mut().http = Some(link),
            Some(DeviceLink::Stream(link)) => {
                if self.store.data().connection.is_none() {
                    // Not attached yet (the first `init` has not returned); it will be.
                    return Ok(());
                }
                shared.set_connected(runtime, false);
                self.store.data_mut().attach(link);
            }
            None => return Ok(()),
        }
        emit_log(
            runtime,
            &shared.id,
            LogLevel::Info,
            "device link rebuilt for the new settings",
        );
        Ok(())
    }

    /// Arm the clocks for a call of at most `timeout`.
    fn arm(&mut self, timeout: Duration) {
        let now = Instant::now();
        let cpu = self.store.data().cpu_limit;
        self.store.data_mut().clock = CallClock::new(now, now + timeout);
        self.store.set_epoch_deadline(epoch_ticks(cpu));
    }

    async fn init(
        &mut self,
        runtime: &RuntimeInner,
        shared: &ModuleShared,
        settings_json: &str,
    ) -> Result<Result<(), DriverError>, String> {
        let settings_json = settings_json.to_string();
        let timeout = shared.limits.hook_timeout;
        let result = guest_call!(self, timeout, |guest, store| guest
            .call_init(store, &settings_json))?;
        let result = result.map_err(|error| {
            let error = driver_error(error);
            emit_log(
                runtime,
                &shared.id,
                LogLevel::Warn,
                &format!("init failed: {error}"),
            );
            error
        });
        *shared.init_error.lock().unwrap_or_else(|e| e.into_inner()) = result.clone().err();
        Ok(result)
    }

    /// Serve the module until it is stopped or crashes.
    async fn serve(
        &mut self,
        runtime: &Arc<RuntimeInner>,
        shared: &Arc<ModuleShared>,
        config: &mut ModuleConfig,
        control: &mut mpsc::Receiver<Control>,
    ) -> Outcome {
        let mut has_transport =
            self.store.data().connection.is_some() || self.store.data().http.is_some();
        loop {
            let work = match self.store.data_mut().deferred.pop_front() {
                Some(event) => Work::Transport(event),
                None => {
                    let Sandbox {
                        store,
                        guest_events,
                        ..
                    } = self;
                    tokio::select! {
                        biased;
                        message = control.recv() => match message {
                            None => return Outcome::Stopped(None),
                            Some(Control::Stop(ack)) => return Outcome::Stopped(Some(ack)),
                            Some(Control::Settings(settings, ack)) => Work::Settings(settings, ack),
                            Some(Control::Upgrade(upgrade)) => Work::Upgrade(upgrade),
                        },
                        event = store.data_mut().transport_events.recv(), if has_transport => match event {
                            Some(event) => Work::Transport(event),
                            None => {
                                has_transport = false;
                                continue;
                            }
                        },
                        Some(event) = guest_events.recv() => Work::Guest(event),
                        exec = shared.queue.next() => Work::Exec(exec),
                    }
                }
            };
            if let Work::Upgrade(upgrade) = work {
                match upgraded(runtime, shared, config, &upgrade).await {
                    Ok((sandbox, next)) => {
                        // The old sandbox (and its device link) goes here. The device
                        // stays online only if the new link is open already; otherwise it
                        // is offline until the new link reports.
                        *self = sandbox;
                        *config = next;
                        if self
                            .store
                            .data()
                            .connection
                            .as_ref()
                            .is_some_and(|link| !link.is_connected())
                        {
                            shared.set_connected(runtime, false);
                        }
                        has_transport = self.store.data().connection.is_some()
                            || self.store.data().http.is_some();
                        let _ = upgrade.ack.send(Ok(()));
                    }
                    Err(reason) => {
                        emit_log(
                            runtime,
                            &shared.id,
                            LogLevel::Warn,
                            &format!("upgrade to {} refused: {reason}", upgrade.driver.digest()),
                        );
                        let _ = upgrade.ack.send(Err(reason));
                    }
                }
                continue;
            }
            if let Err(reason) = self.handle(runtime, shared, config, work).await {
                return Outcome::Crashed(reason);
            }
        }
    }

    async fn handle(
        &mut self,
        runtime: &Arc<RuntimeInner>,
        shared: &Arc<ModuleShared>,
        config: &mut ModuleConfig,
        work: Work,
    ) -> Result<(), String> {
        let hook = shared.limits.hook_timeout;
        match work {
            Work::Transport(TransportEvent::Connected) => {
                shared.set_connected(runtime, true);
                guest_call!(self, hook, |guest, store| guest.call_connected(store))
            }
            Work::Transport(TransportEvent::Disconnected { reason }) => {
                emit_log(
                    runtime,
                    &shared.id,
                    LogLevel::Info,
                    &format!("disconnected: {reason}"),
                );
                shared.set_connected(runtime, false);
                guest_call!(self, hook, |guest, store| guest.call_disconnected(store))
            }
            Work::Transport(TransportEvent::Warning(warning)) => {
                emit_log(runtime, &shared.id, LogLevel::Warn, &warning);
                Ok(())
            }
            Work::Transport(TransportEvent::Message(message)) => {
                guest_call!(self, hook, |guest, store| guest
                    .call_received(store, &message))
            }
            Work::Guest(GuestEvent::Timer { id, tag, once }) => {
                if once {
                    self.store.data_mut().timer_fired(id);
                }
                guest_call!(self, hook, |guest, store| guest.call_timer(store, id, &tag))
            }
            Work::Guest(GuestEvent::Notify {
                subscription,
                value,
            }) => guest_call!(self, hook, |guest, store| guest.call_notify(
                store,
                subscription,
                &value
            )),
            Work::Settings(settings, ack) => {
                let defaults = &config.driver.metadata().default_settings;
                let old = merge_settings(defaults, &config.settings);
                let new = merge_settings(defaults, &settings);
                if let Err(reason) = device::check(config, &new) {
                    // Refused before anything changes: the module keeps its settings.
                    let _ = ack.send(Err(DriverError {
                        kind: "invalid-arguments",
                        message: reason,
                    }));
                    return Ok(());
                }
                config.settings = settings;
                if device::link_settings(&old) != device::link_settings(&new) {
                    self.relink(runtime, shared, config, &new)?;
                }
                let merged = new.to_string();
                self.store.data_mut().settings_json = merged.clone();
                let result = self.init(runtime, shared, &merged).await;
                match result {
                    Ok(outcome) => {
                        let _ = ack.send(outcome);
                        Ok(())
                    }
                    Err(reason) => {
                        let _ = ack.send(Err(DriverError {
                            kind: "failed",
                            message: format!("the module crashed: {reason}"),
                        }));
                        Err(reason)
                    }
                }
            }
            Work::Exec(exec) => self.exec(shared, exec).await,
            // `serve` takes upgrades itself: they replace the sandbox.
            Work::Upgrade(upgrade) => {
                let _ = upgrade
                    .ack
                    .send(Err("an upgrade cannot run from here".to_string()));
                Ok(())
            }
        }
    }

    async fn exec(
        &mut self,
        shared: &Arc<ModuleShared>,
        mut exec: QueuedExec,
    ) -> Result<(), String> {
        let remaining = exec.deadline.saturating_duration_since(Instant::now());
        let timeout = remaining.min(shared.limits.exec_timeout);
        exec.attempts += 1;
        let call = guest_call!(self, timeout, |guest, store| guest.call_exec(
            store,
            &exec.function,
            &exec.args
        ));
        let (result, crash) = match call {
            Ok(Ok(json)) => (
                serde_json::from_str::<Value>(&json).map_err(|e| {
                    ExecError::Driver(DriverError {
                        kind: "failed",
                        message: format!("the driver returned invalid JSON: {e}"),
                    })
                }),
                None,
            ),
            Ok(Err(error)) => (Err(ExecError::Driver(driver_error(error))), None),
            Err(reason) => (Err(ExecError::Crashed(reason.clone())), Some(reason)),
        };
        match result {
            Err(error)
                if error.is_transient()
                    && exec.attempts <= exec.options.retries
                    && exec.deadline > Instant::now() =>
            {
                shared.queue.retry(exec);
            }
            result => {
                let _ = exec.reply.send(result);
            }
        }
        match crash {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}
