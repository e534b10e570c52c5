//! One module's sandbox: the store's data, the host functions a driver imports (each
//! scoped to the calling module), and the linker that offers exactly those plus the
//! capability-free WASI slice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wasmtime::component::{HasData, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::WasiCliView as _;
use wasmtime_wasi::clocks::WasiClocksView as _;
use wasmtime_wasi::filesystem::WasiFilesystemView as _;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::warden::driver::{
    http, log, settings, status, system, timers, transport, types,
};
use super::bindings::{DriverWorld, WitError};
use super::module::ModuleShared;
use super::stdio::LogPipe;
use super::{ExecError, ExecOptions, LogLevel, RuntimeInner, systems};
use crate::capability::{self, Decision, Grant, Request};
use crate::transport::http::HttpRequest;
use crate::transport::{HttpLink, Link, Tokenizer, TransportError, TransportEvent};

/// Most timers one module may have running.
pub const MAX_TIMERS: usize = 64;
/// Shortest timer period or delay.
pub const MIN_TIMER: Duration = Duration::from_millis(10);
/// Most status subscriptions one module may hold.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Something that calls into the driver later: a timer firing or a watched value changing.
#[derive(Debug)]
pub(crate) enum GuestEvent {
    /// A timer fired.
    Timer { id: u64, tag: String, once: bool },
    /// A watched status value changed.
    Notify { subscription: u64, value: String },
}

/// Aborts a spawned task when dropped, so a module's timers and subscriptions end with
/// its sandbox.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Time accounting of the call in progress, for the CPU deadline: time spent in host
/// calls (any import, WASI included, measured by the store's call hook) does not count
/// against the driver. Host and guest frames nest (a host function returning a list calls
/// the guest's allocator), so the hook keeps a small stack of which side each frame is on
/// and charges time to the side on top.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallClock {
    pub(crate) started: Instant,
    pub(crate) host_wait: Duration,
    /// When the host frame now on top of the stack was entered, if the top is the host's.
    in_host_since: Option<Instant>,
    /// One bit per frame, 1 for the host's, least significant on top.
    frames: u64,
    depth: u32,
    /// Host calls clamp their own waits to this, so the driver sees a `timeout` error
    /// rather than being killed by the wall-clock limit.
    pub(crate) deadline: Instant,
}

impl CallClock {
    pub(crate) fn new(started: Instant, deadline: Instant) -> Self {
        CallClock {
            started,
            host_wait: Duration::ZERO,
            in_host_since: None,
            frames: 0,
            depth: 0,
            deadline,
        }
    }

    /// Guest time used by the call so far: wall time minus time spent in the host.
    pub(crate) fn guest_time(&self) -> Duration {
        let in_host_now = self
            .in_host_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        self.started
            .elapsed()
            .saturating_sub(self.host_wait + in_host_now)
    }

    /// The store's call hook.
    pub(crate) fn hook(&mut self, hook: wasmtime::CallHook) {
        let now = Instant::now();
        if let Some(since) = self.in_host_since.take() {
            self.host_wait += now.saturating_duration_since(since);
        }
        match hook {
            wasmtime::CallHook::CallingHost => self.push(true),
            wasmtime::CallHook::CallingWasm => self.push(false),
            wasmtime::CallHook::ReturningFromHost | wasmtime::CallHook::ReturningFromWasm => {
                self.frames >>= 1;
                self.depth = self.depth.saturating_sub(1);
            }
        }
        if self.depth > 0 && self.frames & 1 == 1 {
            self.in_host_since = Some(now);
        }
    }

    fn push(&mut self, host: bool) {
        // Deeper than 64 frames the oldest are forgotten; the top is what counts.
        self.frames = (self.frames << 1) | u64::from(host);
        self.depth = self.depth.saturating_add(1);
    }
}

/// The data of one module's store.
pub(crate) struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) runtime: Arc<RuntimeInner>,
    pub(crate) shared: Arc<ModuleShared>,
    pub(crate) grant: Arc<Grant>,
    pub(crate) settings_json: String,
    /// The device link (TCP, TLS or UDP); opened after the first `init`.
    pub(crate) connection: Option<Link>,
    /// The HTTP client (HTTP drivers); ready before the first `init`.
    pub(crate) http: Option<Arc<HttpLink>>,
    /// Where links report their events; kept so a link can be rebuilt.
    pub(crate) transport_tx: Option<mpsc::Sender<TransportEvent>>,
    /// Whether the module has a device endpoint (its connection may not be open yet).
    has_endpoint: bool,
    /// A tokenizer chosen before the connection opened.
    pending_tokenizer: Option<Tokenizer>,
    /// The tokenizer the driver chose last, carried over when the link is rebuilt.
    tokenizer: Option<Tokenizer>,
    max_message: usize,
    pub(crate) transport_events: mpsc::Receiver<TransportEvent>,
    /// Transport events that arrived while a call was waiting for something else; they are
    /// delivered (in order) before newer ones.
    pub(crate) deferred: VecDeque<TransportEvent>,
    pub(crate) guest_events: mpsc::Sender<GuestEvent>,
    timers: HashMap<u64, AbortOnDrop>,
    subscriptions: HashMap<u64, AbortOnDrop>,
    next_id: u64,
    pub(crate) clock: CallClock,
    pub(crate) cpu_limit: Duration,
}

impl SandboxState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        runtime: Arc<RuntimeInner>,
        shared: Arc<ModuleShared>,
        grant: Arc<Grant>,
        settings_json: String,
        has_endpoint: bool,
        max_message: usize,
        transport_events: mpsc::Receiver<TransportEvent>,
        guest_events: mpsc::Sender<GuestEvent>,
    ) -> Self {
        // No preopened directories, no environment, no arguments, no network; stdin is
        // empty and stdout/stderr become log lines.
        let mut builder = WasiCtx::builder();
        builder
            .stdout(LogPipe::new(
                runtime.clone(),
                shared.clone(),
                LogLevel::Info,
            ))
            .stderr(LogPipe::new(
                runtime.clone(),
                shared.clone(),
                LogLevel::Warn,
            ))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let limits = shared.limits();
        let now = Instant::now();
        SandboxState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(64)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            cpu_limit: limits.cpu_per_call,
            runtime,
            shared,
            grant,
            settings_json,
            connection: None,
            http: None,
            transport_tx: None,
            has_endpoint,
            pending_tokenizer: None,
            tokenizer: None,
            max_message,
            transport_events,
            deferred: VecDeque::new(),
            guest_events,
            timers: HashMap::new(),
            subscriptions: HashMap::new(),
            next_id: 1,
            clock: CallClock::new(now, now),
        }
    }

    /// Log a line the driver caused (its own, or a denial of its request), within the
    /// module's log budget.
    fn log(&self, level: LogLevel, message: &str) {
        self.shared.driver_log(&self.runtime, level, message);
    }

    /// Ask the capability decision about a request the caller expects to be refused
    /// (it has nothing to grant it with), returning the typed error. Should the decision
    /// allow it after all, the host has nothing to serve it with: `failed`.
    fn refuse(&self, request: Request<'_>) -> WitError {
        match capability::decide(&self.grant, request) {
            Decision::Deny(reason) => self.deny(reason),
            Decision::Allow => WitError::Failed("the module has nothing to serve this with".into()),
        }
    }

    fn deny(&self, reason: String) -> WitError {
        self.log(LogLevel::Warn, &format!("denied: {reason}"));
        WitError::Denied(reason)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The deadline of a host wait of `ms` milliseconds within the current call.
    fn wait_deadline(&self, ms: u32) -> Instant {
        let wanted = Instant::now() + Duration::from_millis(u64::from(ms));
        wanted.min(self.clock.deadline)
    }

    fn connection(&self) -> Result<&Link, WitError> {
        match &self.connection {
            Some(connection) => Ok(connection),
            None if self.has_endpoint => Err(WitError::NotConnected(
                "the connection opens after init; talk to the device from `connected`".to_string(),
            )),
            None => Err(self.refuse(Request::UseStream)),
        }
    }

    /// Take over the device connection once `init` has run, applying the tokenizer the
    /// driver chose before it opened (or, for a rebuilt link, the one it chose last).
    pub(crate) fn attach(&mut self, connection: Link) {
        if self.connection.is_some() && self.pending_tokenizer.is_none() {
            self.pending_tokenizer = self.tokenizer.clone();
        }
        if let Some(tokenizer) = self.pending_tokenizer.take()
            && let Err(error) = connection.set_tokenizer(tokenizer)
        {
            // Validated against the message limit when the driver chose it; a link kind
            // that cannot split at all (UDP) refuses it only now.
            super::stdio::emit_log(
                &self.runtime,
                &self.grant.module,
                LogLevel::Warn,
                &format!("the tokenizer chosen in init was refused: {error}"),
            );
        }
        self.connection = Some(connection);
    }

    /// Wait for the next message before `deadline`. With `waiting_first` (for `receive`),
    /// a message that was already waiting is taken first; without it (for `request`, whose
    /// reply must come after what it sent), only new messages count. Connection events
    /// seen meanwhile are kept for the driver's hooks; a disconnect ends the wait.
    async fn wait_message(
        &mut self,
        deadline: Instant,
        waiting_first: bool,
    ) -> Result<Vec<u8>, WitError> {
        if waiting_first
            && let Some(position) = self
                .deferred
                .iter()
                .position(|event| matches!(event, TransportEvent::Message(_)))
            && let Some(TransportEvent::Message(message)) = self.deferred.remove(position)
        {
            return Ok(message);
        }
        loop {
            match tokio::time::timeout_at(deadline, self.transport_events.recv()).await {
                Err(_) => return Err(WitError::Timeout("no reply from the device".into())),
                Ok(None) => return Err(WitError::NotConnected("the connection is closed".into())),
                Ok(Some(TransportEvent::Message(message))) => return Ok(message),
                Ok(Some(event @ (TransportEvent::Connected | TransportEvent::Warning(_)))) => {
                    self.deferred.push_back(event)
                }
                Ok(Some(event @ TransportEvent::Disconnected { .. })) => {
                    let reason = match &event {
                        TransportEvent::Disconnected { reason } => reason.clone(),
                        _ => String::new(),
                    };
                    self.deferred.push_back(event);
                    // A disconnect already followed by a newer connection does not end the
                    // wait: only the current state of the link counts.
                    loop {
                        match self.transport_events.try_recv() {
                            Ok(TransportEvent::Message(message)) => return Ok(message),
                            Ok(TransportEvent::Connected) => {
                                self.deferred.push_back(TransportEvent::Connected);
                                break;
                            }
                            Ok(again) => self.deferred.push_back(again),
                            Err(_) => {
                                return Err(WitError::NotConnected(format!(
                                    "the connection closed before a reply: {reason}"
                                )));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Move every transport event already received into the deferred queue, so that a
    /// request's reply is the first message after it was sent.
    fn defer_pending(&mut self) {
        while let Ok(event) = self.transport_events.try_recv() {
            self.deferred.push_back(event);
        }
    }

    /// A one-shot timer fired: forget it.
    pub(crate) fn timer_fired(&mut self, id: u64) {
        self.timers.remove(&id);
    }

    fn start_timer(&mut self, tag: String, ms: u32, once: bool) -> Result<u64, WitError> {
        let period = Duration::from_millis(u64::from(ms));
        if period < MIN_TIMER {
            return Err(WitError::InvalidArguments(format!(
                "timers must be at least {} ms",
                MIN_TIMER.as_millis()
            )));
        }
        if self.timers.len() >= MAX_TIMERS {
            return Err(WitError::Limit(format!(
                "a module may run at most {MAX_TIMERS} timers"
            )));
        }
        let id = self.next_id();
        let events = self.guest_events.clone();
        let task = tokio::spawn(async move {
            let mut next = Instant::now() + period;
            loop {
                tokio::time::sleep_until(next).await;
                // A driver that cannot keep up loses ticks rather than growing a backlog.
                let _ = events.try_send(GuestEvent::Timer {
                    id,
                    tag: tag.clone(),
                    once,
                });
                if once {
                    break;
                }
                next += period;
                let now = Instant::now();
                if next < now {
                    next = now + period;
                }
            }
        });
        self.timers.insert(id, AbortOnDrop(task));
        Ok(id)
    }

    /// Resolve a module name of this module's system to its id, through the capability
    /// decision.
    fn system_module(&self, name: &str) -> Result<String, WitError> {
        let Some(system) = self.shared.system() else {
            return Err(self.refuse(Request::UseSystem));
        };
        self.grant
            .set_system_modules(self.runtime.systems.module_set(system));
        // A name that is not a module name of the system is decided as a module id: an id
        // of the system is as good as its name, anything else is outside the system.
        let id = systems::resolve(&self.runtime, system, name).unwrap_or_else(|| name.to_string());
        match capability::decide(&self.grant, Request::Module(&id)) {
            Decision::Allow => Ok(id),
            Decision::Deny(reason) => Err(self.deny(format!("`{name}`: {reason}"))),
        }
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for SandboxState {}

impl log::Host for SandboxState {
    fn write(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.log(level, &message);
    }
}

impl status::Host for SandboxState {
    fn set(&mut self, key: String, value: String) -> Result<(), WitError> {
        let parsed: Value = serde_json::from_str(&value)
            .map_err(|e| WitError::InvalidArguments(format!("status `{key}` is not JSON: {e}")))?;
        if key == "connected" {
            return Err(WitError::InvalidArguments(
                "`connected` is maintained by the host".to_string(),
            ));
        }
        self.shared
            .status()
            .set(&key, parsed, value.len())
            .map(|_| ())
            .map_err(|e| match e {
                super::status::StatusError::EmptyKey => WitError::InvalidArguments(e.to_string()),
                _ => WitError::Limit(e.to_string()),
            })
    }

    fn get(&mut self, key: String) -> Option<String> {
        self.shared
            .status()
            .get(&key)
            .map(|value| value.to_string())
    }

    fn clear(&mut self, key: String) {
        if key != "connected" {
            self.shared.status().clear(&key);
        }
    }
}

impl settings::Host for SandboxState {
    fn get(&mut self) -> String {
        match capability::decide(&self.grant, Request::OwnSettings) {
            Decision::Allow => self.settings_json.clone(),
            Decision::Deny(_) => "{}".to_string(),
        }
    }
}

impl timers::Host for SandboxState {
    fn after(&mut self, tag: String, delay_ms: u32) -> Result<u64, WitError> {
        self.start_timer(tag, delay_ms, true)
    }

    fn every(&mut self, tag: String, period_ms: u32) -> Result<u64, WitError> {
        self.start_timer(tag, period_ms, false)
    }

    fn cancel(&mut self, id: u64) {
        self.timers.remove(&id);
    }
}

impl SandboxState {
    /// The typed error for a failed transport or HTTP request; a denial is also written
    /// to the module's log.
    fn transport_error(&self, error: TransportError) -> WitError {
        match error {
            TransportError::Denied(reason) => self.deny(reason),
            other => wit_error_of(other),
        }
    }
}

/// The WIT error for a transport error (a denial is not logged here).
fn wit_error_of(error: TransportError) -> WitError {
    match error {
        TransportError::Denied(reason) => WitError::Denied(reason),
        TransportError::NotConnected(reason) => WitError::NotConnected(reason),
        TransportError::Timeout(reason) => WitError::Timeout(reason),
        TransportError::InvalidTokenizer(reason) => WitError::InvalidArguments(reason),
        TransportError::InvalidRequest(reason) => WitError::InvalidArguments(reason),
        TransportError::Limit(reason) => WitError::Limit(reason),
        TransportError::Device(reason) => WitError::Device(reason),
        TransportError::Closed => WitError::NotConnected("the connection is closed".to_string()),
    }
}

impl transport::Host for SandboxState {
    async fn set_tokenizer(&mut self, tokenizer: transport::Tokenizer) -> Result<(), WitError> {
        let tokenizer = match tokenizer {
            transport::Tokenizer::Raw => Tokenizer::Raw,
            transport::Tokenizer::Delimiter(bytes) => Tokenizer::Delimiter(bytes),
            transport::Tokenizer::LengthPrefixed(prefix) => Tokenizer::LengthPrefixed {
                offset: prefix.offset,
                width: prefix.width,
                big_endian: prefix.big_endian,
                adjust: prefix.adjust,
            },
            transport::Tokenizer::Fixed(size) => Tokenizer::Fixed(size),
        };
        let result = match &self.connection {
            Some(connection) => connection
                .set_tokenizer(tokenizer.clone())
                .map_err(|e| self.transport_error(e)),
            None if self.has_endpoint => {
                tokenizer
                    .validate(self.max_message)
                    .map_err(|e| WitError::InvalidArguments(e.to_string()))?;
                self.pending_tokenizer = Some(tokenizer.clone());
                Ok(())
            }
            None => Err(self.refuse(Request::UseStream)),
        };
        if result.is_ok() {
            self.tokenizer = Some(tokenizer);
        }
        result
    }

    async fn is_connected(&mut self) -> bool {
        self.connection.as_ref().is_some_and(Link::is_connected)
    }

    async fn send(&mut self, data: Vec<u8>) -> Result<(), WitError> {
        let deadline = self.clock.deadline;
        let result = self.connection()?.send(data, deadline).await;
        result.map_err(|e| self.transport_error(e))
    }

    async fn request(&mut self, data: Vec<u8>, timeout_ms: u32) -> Result<Vec<u8>, WitError> {
        let deadline = self.wait_deadline(timeout_ms);
        self.connection()?;
        self.defer_pending();
        let sent = match &self.connection {
            Some(connection) => connection.send(data, deadline).await,
            None => Err(TransportError::Closed),
        };
        match sent {
            Ok(()) => self.wait_message(deadline, false).await,
            Err(error) => Err(self.transport_error(error)),
        }
    }

    async fn receive(&mut self, timeout_ms: u32) -> Result<Vec<u8>, WitError> {
        let deadline = self.wait_deadline(timeout_ms);
        self.connection()?.open();
        self.wait_message(deadline, true).await
    }

    async fn disconnect(&mut self) {
        if let Some(connection) = &self.connection {
            connection.disconnect();
        }
    }
}

fn exec_error(error: ExecError) -> WitError {
    match error {
        ExecError::Driver(driver) => {
            let message = driver.message;
            match driver.kind {
                "unknown-function" => WitError::UnknownFunction(message),
                "invalid-arguments" => WitError::InvalidArguments(message),
                "denied" => WitError::Denied(message),
                "timeout" => WitError::Timeout(message),
                "not-connected" => WitError::NotConnected(message),
                "device" => WitError::Device(message),
                "limit" => WitError::Limit(message),
                _ => WitError::Failed(message),
            }
        }
        ExecError::UnknownFunction(name) => WitError::UnknownFunction(name),
        ExecError::InvalidArguments(message) => WitError::InvalidArguments(message),
        ExecError::Timeout(after) => WitError::Timeout(format!("no result within {after:?}")),
        ExecError::QueueFull(_) => WitError::Limit(error.to_string()),
        ExecError::Offline(message) => WitError::NotConnected(message),
        other => WitError::Failed(other.to_string()),
    }
}

impl system::Host for SandboxState {
    async fn modules(&mut self) -> Result<Vec<String>, WitError> {
        let Some(system) = self.shared.system() else {
            return Err(self.refuse(Request::UseSystem));
        };
        Ok(systems::slugs(&self.runtime, system)
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    async fn status(&mut self, module: String, key: String) -> Result<Option<String>, WitError> {
        let id = self.system_module(&module)?;
        Ok(self
            .runtime
            .module(&id)
            .and_then(|target| target.status(&key))
            .map(|value| value.to_string()))
    }

    async fn subscribe(&mut self, module: String, key: String) -> Result<u64, WitError> {
        let id = self.system_module(&module)?;
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(WitError::Limit(format!(
                "a module may hold at most {MAX_SUBSCRIPTIONS} subscriptions"
            )));
        }
        let Some(target) = self.runtime.module(&id) else {
            return Err(WitError::NotConnected(format!(
                "module `{module}` is not running"
            )));
        };
        let subscription = self.next_id();
        let events = self.guest_events.clone();
        let mut changes = target.subscribe();
        let current = target.status(&key);
        let task = tokio::spawn(async move {
            if let Some(value) = current {
                let _ = events
                    .send(GuestEvent::Notify {
                        subscription,
                        value: value.to_string(),
                    })
                    .await;
            }
            loop {
                match changes.recv().await {
                    Ok(change) if change.key == key => {
                        if events
                            .send(GuestEvent::Notify {
                                subscription,
                                value: change.value.to_string(),
                            })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed changes: send the current value instead.
                        let value = target.status(&key).unwrap_or(Value::Null);
                        let _ = events
                            .send(GuestEvent::Notify {
                                subscription,
                                value: value.to_string(),
                            })
                            .await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        self.subscriptions.insert(subscription, AbortOnDrop(task));
        Ok(subscription)
    }

    async fn unsubscribe(&mut self, id: u64) {
        self.subscriptions.remove(&id);
    }

    async fn exec(
        &mut self,
        module: String,
        function: String,
        args: String,
    ) -> Result<String, WitError> {
        let id = self.system_module(&module)?;
        let Some(target) = self.runtime.module(&id) else {
            return Err(WitError::NotConnected(format!(
                "module `{module}` is not running"
            )));
        };
        let args: Value = serde_json::from_str(&args)
            .map_err(|e| WitError::InvalidArguments(format!("arguments are not JSON: {e}")))?;
        let remaining = self
            .clock
            .deadline
            .saturating_duration_since(Instant::now());
        let options = ExecOptions {
            timeout: Some(remaining),
            ..ExecOptions::default()
        };
        let result = target.exec(&function, args, options).await;
        result.map(|value| value.to_string()).map_err(exec_error)
    }
}

/// `HasData` for the WASI I/O interfaces, which need only the resource table.
struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// A linker offering exactly the host's offer (see [`super::offer`]).
impl http::Host for SandboxState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, WitError> {
        let Some(link) = self.http.clone() else {
            return Err(self.refuse(Request::UseHttp));
        };
        let deadline = if request.timeout_ms == 0 {
            link.default_deadline()
        } else {
            Instant::now() + Duration::from_millis(u64::from(request.timeout_ms))
        }
        .min(self.clock.deadline);
        let method = match request.method {
            http::Method::Get => ::http::Method::GET,
            http::Method::Head => ::http::Method::HEAD,
            http::Method::Post => ::http::Method::POST,
            http::Method::Put => ::http::Method::PUT,
            http::Method::Patch => ::http::Method::PATCH,
            http::Method::Delete => ::http::Method::DELETE,
            http::Method::Options => ::http::Method::OPTIONS,
        };
        let request = HttpRequest {
            method,
            path: request.path,
            headers: request.headers,
            body: request.body,
        };
        match link.send(request, deadline).await {
            Ok(response) => Ok(http::Response {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(error) => Err(self.transport_error(error)),
        }
    }
}

pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<SandboxState>> {
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::clocks::WasiClocks;
    use wasmtime_wasi::filesystem::WasiFilesystem;
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi_io::bindings::wasi::io;

    let mut linker = Linker::new(engine);
    let l = &mut linker;
    io::error::add_to_linker::<SandboxState, HasIo>(l, |t| &mut t.table)?;
    io::poll::add_to_linker::<SandboxState, HasIo>(l, |t| &mut t.table)?;
    io::streams::add_to_linker::<SandboxState, HasIo>(l, |t| &mut t.table)?;
    clocks::wall_clock::add_to_linker::<SandboxState, WasiClocks>(l, SandboxState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<SandboxState, WasiClocks>(l, SandboxState::clocks)?;
    random::random::add_to_linker::<SandboxState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<SandboxState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<SandboxState, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::environment::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::stdin::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::stdout::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::stderr::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::terminal_input::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::terminal_output::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::terminal_stdin::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::terminal_stdout::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    cli::terminal_stderr::add_to_linker::<SandboxState, WasiCli>(l, SandboxState::cli)?;
    filesystem::types::add_to_linker::<SandboxState, WasiFilesystem>(l, SandboxState::filesystem)?;
    filesystem::preopens::add_to_linker::<SandboxState, WasiFilesystem>(
        l,
        SandboxState::filesystem,
    )?;
    DriverWorld::add_to_linker::<SandboxState, HasSelf<SandboxState>>(l, |state| state)?;
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CallHook;

    #[tokio::test(start_paused = true)]
    async fn host_time_is_not_guest_time_even_when_frames_nest() {
        let start = Instant::now();
        let mut clock = CallClock::new(start, start + Duration::from_secs(60));
        clock.hook(CallHook::CallingWasm);
        tokio::time::advance(Duration::from_millis(10)).await; // guest
        clock.hook(CallHook::CallingHost);
        tokio::time::advance(Duration::from_millis(500)).await; // host waits
        clock.hook(CallHook::CallingWasm); // the host calls the guest's allocator…
        tokio::time::advance(Duration::from_millis(5)).await; // guest
        clock.hook(CallHook::CallingHost); // …which calls the host
        tokio::time::advance(Duration::from_millis(100)).await; // host
        clock.hook(CallHook::ReturningFromHost);
        clock.hook(CallHook::ReturningFromWasm);
        tokio::time::advance(Duration::from_millis(200)).await; // host again
        assert_eq!(clock.guest_time(), Duration::from_millis(15));
        clock.hook(CallHook::ReturningFromHost);
        tokio::time::advance(Duration::from_millis(20)).await; // guest
        clock.hook(CallHook::ReturningFromWasm);
        assert_eq!(clock.guest_time(), Duration::from_millis(35));
        assert_eq!(clock.host_wait, Duration::from_millis(800));
    }
}
