//! One host-owned TCP connection to a module's device.
//!
//! A driver never holds a socket: it asks the host to send bytes and is handed whole
//! messages. Each [`Connection`] is a handle to one Tokio task that owns the read side of
//! the socket, reconnects with back-off, splits what it reads with the driver's
//! [`Tokenizer`] and reports [`TransportEvent`]s on a bounded channel. Writes are made by
//! the caller of [`Connection::send`] on the shared write half, so a device that stops
//! reading stalls only the caller (until its deadline), never the reader.
//!
//! Every connection attempt asks [`capability::decide`] first with [`Request::Connect`]
//! and then with [`Request::ConnectResolved`] for each address the name resolved to, and
//! connects only to addresses it allows. A refused endpoint is permanent (a module's
//! grant does not change while it runs): the task stops and every `send` returns
//! [`TransportError::Denied`].
//!
//! Back-off: after a failed attempt, or after a connection that ended before it proved
//! useful, the next attempt waits `backoff_min`, doubling up to `backoff_max`, each delay
//! varied by ±20 % so that many modules whose device went down together do not reconnect
//! in lockstep. A connection proves useful when it delivers a message or stays up for
//! [`STABLE_AFTER`]; then the back-off starts again from `backoff_min`. Measuring usefulness
//! rather than success is what stops a device that accepts and at once closes from being
//! hammered in a tight loop. In make-break mode a closed connection is the normal case,
//! so only failed attempts back off.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::TransportError;
use super::resolve::{Failure, Resolved, no_usable_address, resolve_allowed};
use super::stream::DeviceStream;
use super::tls::DeviceTls;
use super::tokenizer::{Splitter, Tokenizer};
use crate::capability::{self, Decision, Endpoint, Grant, Request};

/// How long a connection must stay up, without delivering a message, before its end is
/// no longer held against the device when choosing the next back-off delay.
pub const STABLE_AFTER: Duration = Duration::from_secs(5);

/// The shortest back-off used whatever the options say: a zero delay would turn a
/// refusing device into a busy loop.
const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// Bytes read from the socket at a time. Independent of the message limit: the splitter
/// reassembles messages across reads.
const READ_CHUNK: usize = 16 * 1024;

/// How a [`Connection`] behaves. The defaults suit a device that expects a permanent
/// control connection.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Connect for each command and close after `idle_close` without traffic, instead of
    /// staying connected; for devices that accept one client at a time or drop idle
    /// connections themselves.
    pub make_break: bool,
    /// How long resolving and connecting may take, per attempt.
    pub connect_timeout: Duration,
    /// Make-break only: close the connection after this long without bytes either way.
    pub idle_close: Duration,
    /// TCP keep-alive idle time, so a device that vanished (power cut, cable pulled) is
    /// noticed without waiting for a write; `None` leaves keep-alive off.
    pub keepalive: Option<Duration>,
    /// The first reconnect delay after a failure (at least 10 ms).
    pub backoff_min: Duration,
    /// The longest reconnect delay, before jitter.
    pub backoff_max: Duration,
    /// The largest message accepted from the device; larger ones close the connection,
    /// so a faulty or hostile device cannot grow host memory.
    pub max_message: usize,
    /// Wrap the connection in TLS with this configuration (TLS drivers); `None` for
    /// plain TCP. The runtime builds it from the module's settings.
    pub tls: Option<DeviceTls>,
    /// Allow the limited broadcast address (UDP only) when the endpoint is it.
    pub allow_broadcast: bool,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            make_break: false,
            connect_timeout: Duration::from_secs(5),
            idle_close: Duration::from_secs(2),
            keepalive: Some(Duration::from_secs(30)),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_message: 1024 * 1024,
            tls: None,
            allow_broadcast: false,
        }
    }
}

/// What a connection reports to the runtime, in order: `Connected` comes before any
/// `Message` of that connection, and `Disconnected` only after a `Connected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEvent {
    /// A connection to the device is open and writable.
    Connected,
    /// Something about the connection the module's log must show (sent before the
    /// `Connected` it concerns), such as TLS verification being off.
    Warning(String),
    /// One whole message from the device, split by the current tokenizer.
    Message(Vec<u8>),
    /// The connection closed; `reason` says why, for the module's log.
    Disconnected {
        /// Why: the device closed it, a read failed, idle close, a request, or a message
        /// over the limit.
        reason: String,
    },
}

/// Where a connection is in its life, as shown to operators and used by `send` to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Make-break: nothing open, waiting to be asked.
    Idle,
    /// Resolving and connecting.
    Connecting,
    /// Open.
    Connected,
    /// Waiting to retry after a failure or a closed connection.
    Backoff,
    /// The task has stopped (endpoint denied, or the event receiver dropped); nothing
    /// will connect again.
    Stopped,
}

/// A handle to one device connection. Dropping it stops the connection task and closes
/// the socket.
pub struct Connection {
    endpoint: Endpoint,
    make_break: bool,
    max_message: usize,
    shared: Arc<Shared>,
    state: watch::Receiver<LinkState>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("make_break", &self.make_break)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The task owns the read half and shares the write half with this handle; once
        // it is gone and this handle's `Arc` drops, both halves are closed.
        self.task.abort();
    }
}

impl Connection {
    /// Start the connection task for `endpoint`. In persistent mode it connects at once
    /// and keeps reconnecting; in make-break mode it stays [`LinkState::Idle`] until a
    /// `send`, `open` or `wait_connected` needs it.
    ///
    /// `events` should be bounded: the task waits for room before reading more, which
    /// pushes a flooding device back through TCP flow control instead of queueing its
    /// bytes in host memory. When the receiver is dropped the task stops.
    ///
    /// Must be called within a Tokio runtime.
    pub fn spawn(
        endpoint: Endpoint,
        grant: Arc<Grant>,
        options: ConnectionOptions,
        events: mpsc::Sender<TransportEvent>,
    ) -> Connection {
        let initial = if options.make_break {
            LinkState::Idle
        } else {
            LinkState::Connecting
        };
        let (state_tx, state_rx) = watch::channel(initial);
        let shared = Arc::new(Shared::default());
        let max_message = options.max_message.max(1);
        let worker = Worker {
            endpoint: endpoint.clone(),
            grant,
            splitter: Splitter::new(Tokenizer::Raw, max_message),
            backoff: Backoff::new(options.backoff_min, options.backoff_max),
            options,
            events,
            shared: Arc::clone(&shared),
            state: state_tx,
            generation: 0,
        };
        let make_break = worker.options.make_break;
        let task = tokio::spawn(worker.run());
        Connection {
            endpoint,
            make_break,
            max_message,
            shared,
            state: state_rx,
            task,
        }
    }

    /// Write `bytes` to the device. Waits for a connection until `deadline` (in
    /// make-break mode it opens one). Returns [`TransportError::NotConnected`] if there is
    /// none by then, [`TransportError::Timeout`] if the device does not take the bytes in
    /// time, [`TransportError::Denied`] if the endpoint is refused. A write that fails or
    /// times out closes the connection, since the device may have received part of the
    /// message and the stream is no longer in step.
    pub async fn send(&self, bytes: Vec<u8>, deadline: Instant) -> Result<(), TransportError> {
        let mut state = self.state.clone();
        loop {
            // Mark the current state seen before looking for a writer: the task installs
            // the writer before announcing `Connected`, so no connection can slip between
            // the check and the wait below.
            let current = *state.borrow_and_update();
            if self.try_write(&bytes, deadline).await? {
                return Ok(());
            }
            if let Some(error) = self.terminal_error(current) {
                return Err(error);
            }
            self.request_open();
            match timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(self
                        .terminal_error(LinkState::Stopped)
                        .unwrap_or(TransportError::Closed));
                }
                Err(_) => return Err(self.not_connected_error()),
            }
        }
    }

    /// Make-break: open the connection now if it is closed, for example to read a
    /// greeting the device sends on connect. No-op in persistent mode, which is always
    /// connecting anyway.
    pub fn open(&self) {
        self.request_open();
    }

    /// Use `tokenizer` for bytes not yet split (buffered ones are re-split with it).
    /// Refused with [`TransportError::InvalidTokenizer`] if it cannot work within the
    /// message limit. The task applies it before it reads again, so a reply to a `send`
    /// made after this call is split with it.
    pub fn set_tokenizer(&self, tokenizer: Tokenizer) -> Result<(), TransportError> {
        tokenizer
            .validate(self.max_message)
            .map_err(|error| TransportError::InvalidTokenizer(error.to_string()))?;
        self.shared
            .update(|control| control.tokenizer = Some(tokenizer));
        Ok(())
    }

    /// Close the current connection (or abandon the attempt in progress). Persistent
    /// mode reconnects after back-off; make-break stays idle until next needed.
    pub fn disconnect(&self) {
        self.shared.update(|control| {
            control.disconnect = true;
            control.open = false;
        });
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.state() == LinkState::Connected
    }

    /// Wait until connected or `deadline`, returning whether connected. In make-break
    /// mode this opens the connection.
    pub async fn wait_connected(&self, deadline: Instant) -> bool {
        let mut state = self.state.clone();
        loop {
            match *state.borrow_and_update() {
                LinkState::Connected => return true,
                LinkState::Stopped => return false,
                LinkState::Idle | LinkState::Connecting | LinkState::Backoff => {}
            }
            self.request_open();
            if !matches!(timeout_at(deadline, state.changed()).await, Ok(Ok(()))) {
                return self.is_connected();
            }
        }
    }

    fn request_open(&self) {
        if self.make_break {
            self.shared.update(|control| control.open = true);
        }
    }

    /// Write on the current connection if there is one; `Ok(false)` if there is none.
    async fn try_write(&self, bytes: &[u8], deadline: Instant) -> Result<bool, TransportError> {
        let mut writer = timeout_at(deadline, self.shared.writer.lock())
            .await
            .map_err(|_| {
                TransportError::Timeout(format!(
                    "an earlier write to {} was still pending",
                    self.endpoint
                ))
            })?;
        let Some(link) = writer.as_mut() else {
            return Ok(false);
        };
        let generation = link.generation;
        let (reason, error) = match timeout_at(deadline, link.half.write_all(bytes)).await {
            Ok(Ok(())) => {
                // Recorded while the writer is still locked, so an idle close that
                // waits for the lock sees it.
                self.shared.control().last_write = Some(Instant::now());
                tracing::trace!(endpoint = %self.endpoint, len = bytes.len(), "sent");
                return Ok(true);
            }
            Ok(Err(error)) => {
                let reason = format!("write failed: {error}");
                (reason.clone(), TransportError::NotConnected(reason))
            }
            Err(_) => {
                let reason = "write timed out: the device is not reading".to_string();
                (reason.clone(), TransportError::Timeout(reason))
            }
        };
        writer.take();
        drop(writer);
        self.shared
            .update(|control| control.broken = Some((generation, reason)));
        Err(error)
    }

    /// The error for a task that will never connect again, if it has stopped.
    fn terminal_error(&self, state: LinkState) -> Option<TransportError> {
        if state != LinkState::Stopped {
            return None;
        }
        Some(match &self.shared.control().failure {
            Some(failure) if failure.denied => TransportError::Denied(failure.reason.clone()),
            _ => TransportError::Closed,
        })
    }

    fn not_connected_error(&self) -> TransportError {
        match &self.shared.control().failure {
            Some(failure) if failure.denied => TransportError::Denied(failure.reason.clone()),
            Some(failure) => {
                TransportError::NotConnected(format!("{}: {}", self.endpoint, failure.reason))
            }
            None => TransportError::NotConnected(format!(
                "no connection to {} before the deadline",
                self.endpoint
            )),
        }
    }
}

/// Requests from the handle to the task. Coalesced rather than queued, so a driver
/// calling `set_tokenizer` or `disconnect` in a loop cannot grow host memory; the task
/// handles them before it reads further.
#[derive(Debug, Default)]
struct Control {
    /// A tokenizer to switch to.
    tokenizer: Option<Tokenizer>,
    /// Make-break: open a connection. Cleared by `disconnect`, so of the two the later
    /// call wins.
    open: bool,
    /// Close the connection (or the attempt) in progress.
    disconnect: bool,
    /// A write on connection `.0` failed; close it with reason `.1`.
    broken: Option<(u64, String)>,
    /// When the last write on the current connection finished (make-break idle timer).
    last_write: Option<Instant>,
    /// Why the last attempt failed, for `send`'s error; cleared on connect.
    failure: Option<Failure>,
}

/// The write half of the open connection, with a number telling connections apart so a
/// failure reported late cannot close a newer connection.
#[derive(Debug)]
struct Writer {
    half: WriteHalf<DeviceStream>,
    generation: u64,
}

#[derive(Debug, Default)]
struct Shared {
    control: Mutex<Control>,
    wake: Notify,
    writer: tokio::sync::Mutex<Option<Writer>>,
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, Control> {
        // Nothing panics while holding the lock, and the data stays consistent if
        // something did; never propagate poisoning.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Control)) {
        change(&mut self.control());
        self.wake.notify_one();
    }
}

/// Capped exponential back-off with ±20 % jitter.
#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(MIN_BACKOFF);
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
        }
    }

    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.max);
        let factor = 0.8 + 0.4 * fastrand::f64();
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }
}

/// Why a connection closed; a fault is logged as a warning, a normal close as
/// information.
struct Closed {
    reason: String,
    fault: bool,
}

impl Closed {
    fn normal(reason: impl Into<String>) -> Self {
        Closed {
            reason: reason.into(),
            fault: false,
        }
    }

    fn fault(reason: impl Into<String>) -> Self {
        Closed {
            reason: reason.into(),
            fault: true,
        }
    }
}

/// The event receiver is gone: nobody is listening, so the task ends.
struct Stop;

enum Attempt {
    Connected(DeviceStream, SocketAddr),
    /// The endpoint itself is refused; permanent.
    Denied(String),
    /// No connection this time; try again after back-off.
    Failed(Failure),
    /// `disconnect()` was called while connecting.
    Cancelled,
}

/// The task that owns one connection.
struct Worker {
    endpoint: Endpoint,
    grant: Arc<Grant>,
    options: ConnectionOptions,
    events: mpsc::Sender<TransportEvent>,
    shared: Arc<Shared>,
    state: watch::Sender<LinkState>,
    splitter: Splitter,
    backoff: Backoff,
    generation: u64,
}

impl Worker {
    async fn run(mut self) {
        let _ = self.run_until_stopped().await;
        self.shared.writer.lock().await.take();
        self.set_state(LinkState::Stopped);
    }

    async fn run_until_stopped(&mut self) -> Result<(), Stop> {
        if let Decision::Deny(reason) =
            capability::decide(&self.grant, Request::Connect(&self.endpoint))
        {
            self.refuse(reason);
            return Ok(());
        }
        loop {
            if self.options.make_break {
                self.set_state(LinkState::Idle);
                self.wait_for_open().await?;
            }
            self.set_state(LinkState::Connecting);
            let back_off = match self.attempt().await? {
                Attempt::Connected(stream, peer) => {
                    let healthy = self.serve(stream, peer).await?;
                    if healthy || self.options.make_break {
                        self.backoff.reset();
                    }
                    !self.options.make_break
                }
                Attempt::Denied(reason) => {
                    self.refuse(reason);
                    return Ok(());
                }
                Attempt::Failed(failure) => {
                    tracing::warn!(
                        module = %self.grant.module,
                        endpoint = %self.endpoint,
                        reason = %failure.reason,
                        "connect failed"
                    );
                    self.shared.control().failure = Some(failure);
                    true
                }
                Attempt::Cancelled => !self.options.make_break,
            };
            if back_off {
                let delay = self.backoff.next_delay();
                self.back_off(delay).await?;
            }
        }
    }

    /// Record a permanent denial; the caller then stops.
    fn refuse(&mut self, reason: String) {
        tracing::warn!(
            module = %self.grant.module,
            endpoint = %self.endpoint,
            %reason,
            "connection denied; not connecting"
        );
        self.shared.control().failure = Some(Failure {
            reason,
            denied: true,
        });
    }

    fn set_state(&self, new: LinkState) {
        self.state.send_if_modified(|state| {
            let changed = *state != new;
            *state = new;
            changed
        });
    }

    async fn emit(&self, event: TransportEvent) -> Result<(), Stop> {
        self.events.send(event).await.map_err(|_| Stop)
    }

    async fn deliver(&self, messages: Vec<Vec<u8>>) -> Result<(), Stop> {
        for message in messages {
            tracing::trace!(endpoint = %self.endpoint, len = message.len(), "received");
            self.emit(TransportEvent::Message(message)).await?;
        }
        Ok(())
    }

    /// Switch the splitter to a tokenizer the handle asked for. `Connection::set_tokenizer`
    /// validated it already, so a refusal here means the limit differs and is only logged.
    fn apply_tokenizer(&mut self, tokenizer: Tokenizer) -> Result<Vec<Vec<u8>>, String> {
        self.splitter
            .set_tokenizer(tokenizer)
            .map_err(|error| error.to_string())
    }

    /// Make-break: wait in `Idle` until a connection is asked for.
    async fn wait_for_open(&mut self) -> Result<(), Stop> {
        loop {
            let (tokenizer, open) = {
                let mut control = self.shared.control();
                // Nothing is open, so there is nothing to disconnect or mark broken.
                control.disconnect = false;
                control.broken = None;
                (control.tokenizer.take(), std::mem::take(&mut control.open))
            };
            if let Some(tokenizer) = tokenizer {
                self.apply_tokenizer_logged(tokenizer);
            }
            if open {
                return Ok(());
            }
            tokio::select! {
                () = self.events.closed() => return Err(Stop),
                () = self.shared.wake.notified() => {}
            }
        }
    }

    /// Wait `delay` in `Backoff`, still taking tokenizer changes. A make-break open
    /// request made meanwhile is kept and served once the delay is over.
    async fn back_off(&mut self, delay: Duration) -> Result<(), Stop> {
        self.set_state(LinkState::Backoff);
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                biased;
                () = self.events.closed() => return Err(Stop),
                () = self.shared.wake.notified() => {
                    let tokenizer = {
                        let mut control = self.shared.control();
                        control.disconnect = false;
                        control.broken = None;
                        control.tokenizer.take()
                    };
                    if let Some(tokenizer) = tokenizer {
                        self.apply_tokenizer_logged(tokenizer);
                    }
                }
                () = sleep_until(until) => return Ok(()),
            }
        }
    }

    fn apply_tokenizer_logged(&mut self, tokenizer: Tokenizer) {
        // Nothing is buffered between connections, so no messages can come out.
        if let Err(reason) = self.apply_tokenizer(tokenizer) {
            tracing::warn!(endpoint = %self.endpoint, %reason, "tokenizer refused");
        }
    }

    /// One connection attempt, abandoned if `disconnect()` is called meanwhile.
    async fn attempt(&mut self) -> Result<Attempt, Stop> {
        let deadline = Instant::now() + self.options.connect_timeout;
        let connect = connect(
            self.endpoint.clone(),
            Arc::clone(&self.grant),
            self.options.keepalive,
            self.options.tls.clone(),
            deadline,
        );
        tokio::pin!(connect);
        loop {
            tokio::select! {
                biased;
                () = self.events.closed() => return Err(Stop),
                () = self.shared.wake.notified() => {
                    let (tokenizer, disconnect) = {
                        let mut control = self.shared.control();
                        control.open = false;
                        control.broken = None;
                        (control.tokenizer.take(), std::mem::take(&mut control.disconnect))
                    };
                    if let Some(tokenizer) = tokenizer {
                        self.apply_tokenizer_logged(tokenizer);
                    }
                    if disconnect {
                        return Ok(Attempt::Cancelled);
                    }
                }
                attempt = &mut connect => return Ok(attempt),
            }
        }
    }

    /// Run one open connection until it closes; returns whether it proved useful.
    async fn serve(&mut self, stream: DeviceStream, peer: SocketAddr) -> Result<bool, Stop> {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        if let Some(warning) = self
            .options
            .tls
            .as_ref()
            .and_then(|tls| tls.danger_warning(&self.grant.module, &self.endpoint))
        {
            self.emit(TransportEvent::Warning(warning)).await?;
        }
        let (mut reader, writer) = tokio::io::split(stream);
        {
            let mut control = self.shared.control();
            control.failure = None;
            control.last_write = None;
            control.broken = None;
            control.open = false;
        }
        *self.shared.writer.lock().await = Some(Writer {
            half: writer,
            generation,
        });
        self.splitter.clear();
        self.set_state(LinkState::Connected);
        tracing::info!(
            module = %self.grant.module,
            endpoint = %self.endpoint,
            %peer,
            "connected"
        );
        let connected_at = Instant::now();
        let mut last_read = connected_at;
        let mut delivered = false;
        let mut buffer = vec![0_u8; READ_CHUNK];
        let outcome = match self.emit(TransportEvent::Connected).await {
            Err(Stop) => Err(Stop),
            Ok(()) => loop {
                let idle_deadline = self.options.make_break.then(|| {
                    let last_write = self.shared.control().last_write.unwrap_or(connected_at);
                    last_read.max(last_write) + self.options.idle_close
                });
                tokio::select! {
                    biased;
                    () = self.events.closed() => break Err(Stop),
                    () = self.shared.wake.notified() => {
                        let (tokenizer, disconnect, broken) = {
                            let mut control = self.shared.control();
                            control.open = false;
                            (
                                control.tokenizer.take(),
                                std::mem::take(&mut control.disconnect),
                                control.broken.take(),
                            )
                        };
                        if let Some(tokenizer) = tokenizer {
                            match self.apply_tokenizer(tokenizer) {
                                Ok(messages) => {
                                    delivered |= !messages.is_empty();
                                    if self.deliver(messages).await.is_err() {
                                        break Err(Stop);
                                    }
                                }
                                Err(reason) => break Ok(Closed::fault(reason)),
                            }
                        }
                        if disconnect {
                            break Ok(Closed::normal("disconnect requested"));
                        }
                        if let Some((failed, reason)) = broken
                            && failed == generation
                        {
                            break Ok(Closed::fault(reason));
                        }
                    }
                    read = reader.read(&mut buffer) => match read {
                        Ok(0) => break Ok(Closed::normal("closed by the device")),
                        Ok(count) => {
                            last_read = Instant::now();
                            let bytes = buffer.get(..count).unwrap_or_default();
                            match self.splitter.push(bytes) {
                                Ok(messages) => {
                                    delivered |= !messages.is_empty();
                                    if self.deliver(messages).await.is_err() {
                                        break Err(Stop);
                                    }
                                }
                                Err(error) => break Ok(Closed::fault(error.to_string())),
                            }
                        }
                        Err(error) => break Ok(Closed::fault(format!("read failed: {error}"))),
                    },
                    () = sleep_until(idle_deadline.unwrap_or(connected_at)), if idle_deadline.is_some() => {
                        // A send may have written since the deadline was computed; it
                        // records the time while holding the writer, so check under it.
                        let mut writer = self.shared.writer.lock().await;
                        let last_write = self.shared.control().last_write.unwrap_or(connected_at);
                        if last_read.max(last_write) + self.options.idle_close <= Instant::now() {
                            writer.take();
                            break Ok(Closed::normal(format!(
                                "idle for {} ms",
                                self.options.idle_close.as_millis()
                            )));
                        }
                    }
                }
            },
        };
        // Dropping the write half sends FIN; the read half goes when this returns.
        self.shared.writer.lock().await.take();
        drop(reader);
        self.splitter.clear();
        let Closed { reason, fault } = outcome?;
        // A request made while connected was met by this connection; one made from
        // now on sees the state change below and asks again.
        self.shared.control().open = false;
        self.set_state(if self.options.make_break {
            LinkState::Idle
        } else {
            LinkState::Backoff
        });
        if fault {
            tracing::warn!(
                module = %self.grant.module,
                endpoint = %self.endpoint,
                %reason,
                "disconnected"
            );
        } else {
            tracing::info!(
                module = %self.grant.module,
                endpoint = %self.endpoint,
                %reason,
                "disconnected"
            );
        }
        self.emit(TransportEvent::Disconnected { reason }).await?;
        Ok(delivered || connected_at.elapsed() >= STABLE_AFTER)
    }
}

/// Check, resolve, re-check, connect and (for TLS) handshake, all before `deadline`.
async fn connect(
    endpoint: Endpoint,
    grant: Arc<Grant>,
    keepalive: Option<Duration>,
    tls: Option<DeviceTls>,
    deadline: Instant,
) -> Attempt {
    match open_stream(&endpoint, &grant, keepalive, tls.as_ref(), deadline).await {
        Ok((stream, address)) => Attempt::Connected(stream, address),
        Err(Opened::Denied(reason)) => Attempt::Denied(reason),
        Err(Opened::Failed(failure)) => Attempt::Failed(failure),
    }
}

/// Why [`open_stream`] did not open a stream.
pub(super) enum Opened {
    /// The endpoint itself is refused; permanent.
    Denied(String),
    /// No stream this time (a socket error, a refused address, the connection rate
    /// limit, a failed handshake).
    Failed(Failure),
}

/// Check, resolve, re-check, connect to the first allowed address that answers and, with
/// `tls`, run the handshake, all before `deadline`. Shared by the TCP transport and the
/// HTTP client so that both reach devices the same way.
pub(super) async fn open_stream(
    endpoint: &Endpoint,
    grant: &Grant,
    keepalive: Option<Duration>,
    tls: Option<&DeviceTls>,
    deadline: Instant,
) -> Result<(DeviceStream, SocketAddr), Opened> {
    let (addresses, denial) = match resolve_allowed(endpoint, grant, deadline).await {
        Resolved::Denied(reason) => return Err(Opened::Denied(reason)),
        Resolved::Failed(failure) => return Err(Opened::Failed(failure)),
        Resolved::Allowed { addresses, denial } => (addresses, denial),
    };
    let mut failure = None;
    for address in addresses {
        match timeout_at(deadline, open_socket(address, keepalive)).await {
            Ok(Ok(stream)) => {
                let Some(tls) = tls else {
                    return Ok((DeviceStream::Plain(stream), address));
                };
                return match timeout_at(deadline, tls.handshake(stream)).await {
                    Ok(Ok(stream)) => Ok((DeviceStream::Tls(Box::new(stream)), address)),
                    Ok(Err(error)) => Err(Opened::Failed(Failure {
                        reason: format!("TLS handshake with {address} failed: {error}"),
                        denied: false,
                    })),
                    Err(_) => Err(Opened::Failed(Failure {
                        reason: format!("TLS handshake with {address} timed out"),
                        denied: false,
                    })),
                };
            }
            Ok(Err(error)) => failure = Some(format!("{address}: {error}")),
            Err(_) => {
                failure = Some(format!("{address}: connect timed out"));
                break;
            }
        }
    }
    Err(Opened::Failed(no_usable_address(endpoint, failure, denial)))
}

/// Connect with Nagle off (commands are small and latency matters more than packet
/// count) and keep-alive on, set before connecting so they hold from the first byte.
async fn open_socket(
    address: SocketAddr,
    keepalive: Option<Duration>,
) -> std::io::Result<TcpStream> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let options = socket2::SockRef::from(&socket);
    options.set_tcp_nodelay(true)?;
    if let Some(idle) = keepalive {
        options.set_tcp_keepalive(&keepalive_params(idle))?;
    }
    socket.connect(address).await
}

/// Keep-alive probes after `idle` without traffic; where the platform allows, three
/// probes a third of `idle` apart, so a dead device is noticed within about twice `idle`
/// rather than the kernel default of over ten minutes.
fn keepalive_params(idle: Duration) -> socket2::TcpKeepalive {
    // The kernel counts in whole seconds and refuses zero.
    let idle = idle.max(Duration::from_secs(1));
    let params = socket2::TcpKeepalive::new().with_time(idle);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let params = params
        .with_interval((idle / 3).max(Duration::from_secs(1)))
        .with_retries(3);
    params
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::time::timeout;

    use super::*;

    const WAIT: Duration = Duration::from_secs(3);

    async fn listener() -> (TcpListener, Endpoint) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (
            listener,
            Endpoint {
                host: "127.0.0.1".to_string(),
                port,
            },
        )
    }

    fn grant_for(endpoint: &Endpoint) -> Arc<Grant> {
        Arc::new(Grant::new(
            "test-module",
            Some(endpoint.clone()),
            BTreeSet::new(),
        ))
    }

    fn fast() -> ConnectionOptions {
        ConnectionOptions {
            connect_timeout: Duration::from_secs(1),
            idle_close: Duration::from_millis(200),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            ..ConnectionOptions::default()
        }
    }

    fn start(
        endpoint: &Endpoint,
        options: ConnectionOptions,
    ) -> (Connection, mpsc::Receiver<TransportEvent>) {
        let (events_tx, events) = mpsc::channel(16);
        let connection =
            Connection::spawn(endpoint.clone(), grant_for(endpoint), options, events_tx);
        (connection, events)
    }

    async fn next(events: &mut mpsc::Receiver<TransportEvent>) -> TransportEvent {
        timeout(WAIT, events.recv())
            .await
            .expect("no event in time")
            .expect("event channel closed")
    }

    async fn accept(listener: &TcpListener) -> TcpStream {
        timeout(WAIT, listener.accept())
            .await
            .expect("no connection in time")
            .unwrap()
            .0
    }

    async fn read_until_eof(stream: &mut TcpStream) -> Vec<u8> {
        let mut received = Vec::new();
        timeout(WAIT, stream.read_to_end(&mut received))
            .await
            .expect("no EOF in time")
            .unwrap();
        received
    }

    fn soon() -> Instant {
        Instant::now() + WAIT
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connects_and_reports_connected() {
        let (listener, endpoint) = listener().await;
        let (connection, mut events) = start(&endpoint, fast());
        let _peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        assert!(connection.is_connected());
        assert_eq!(connection.state(), LinkState::Connected);
        assert!(connection.wait_connected(soon()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connects_by_host_name() {
        // `localhost` may resolve to ::1 as well, where nothing listens: every allowed
        // address is tried in turn.
        let (listener, endpoint) = listener().await;
        let by_name = Endpoint {
            host: "localhost".to_string(),
            port: endpoint.port,
        };
        let (connection, mut events) = start(&by_name, fast());
        let _peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        assert!(connection.is_connected());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receives_delimited_messages() {
        let (listener, endpoint) = listener().await;
        let (connection, mut events) = start(&endpoint, fast());
        connection
            .set_tokenizer(Tokenizer::Delimiter(b"\r\n".to_vec()))
            .unwrap();
        let mut peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        peer.write_all(b"POWR=1\r\nINPT").await.unwrap();
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"POWR=1".to_vec())
        );
        peer.write_all(b"=31\r\n").await.unwrap();
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"INPT=31".to_vec())
        );
        // A tokenizer change re-splits what is buffered.
        peer.write_all(b"abcdef").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        connection.set_tokenizer(Tokenizer::Fixed(3)).unwrap();
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"abc".to_vec())
        );
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"def".to_vec())
        );
        assert!(matches!(
            connection.set_tokenizer(Tokenizer::Delimiter(Vec::new())),
            Err(TransportError::InvalidTokenizer(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn send_reaches_the_device() {
        let (listener, endpoint) = listener().await;
        let (connection, mut events) = start(&endpoint, fast());
        // Sent before the connection is up: waits for it.
        let send = connection.send(b"%1POWR ?\r".to_vec(), soon());
        let (sent, mut peer) = tokio::join!(send, accept(&listener));
        sent.unwrap();
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        connection.send(b"second".to_vec(), soon()).await.unwrap();
        drop(connection);
        assert_eq!(read_until_eof(&mut peer).await, b"%1POWR ?\rsecond");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_closing_is_reported_and_reconnected() {
        let (listener, endpoint) = listener().await;
        let (connection, mut events) = start(&endpoint, fast());
        let mut peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        peer.write_all(b"hello").await.unwrap();
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"hello".to_vec())
        );
        drop(peer);
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Disconnected {
                reason: "closed by the device".to_string()
            }
        );
        let _peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        assert!(connection.is_connected());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_that_closes_at_once_is_backed_off_not_hammered() {
        let (listener, endpoint) = listener().await;
        let (connection, mut events) = start(&endpoint, fast());
        // Accept and close at once for a while, counting attempts.
        let mut count = 0_u32;
        let _ = timeout(Duration::from_millis(1500), async {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                drop(stream);
                count += 1;
            }
        })
        .await;
        // 50, 100, 200, 400, 400 ms … ≈ 5 in 1.5 s; a tight loop would make thousands.
        assert!((2..=12).contains(&count), "{count} connections in 1.5 s");
        // Events pair up: every Disconnected follows a Connected.
        let mut open = false;
        while let Ok(event) = events.try_recv() {
            match event {
                TransportEvent::Connected => {
                    assert!(!open);
                    open = true;
                }
                TransportEvent::Disconnected { .. } => {
                    assert!(open);
                    open = false;
                }
                TransportEvent::Message(_) => panic!("no message was sent"),
                TransportEvent::Warning(warning) => panic!("unexpected warning: {warning}"),
            }
        }
        assert_ne!(connection.state(), LinkState::Stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disconnect_closes_and_persistent_mode_reconnects() {
        let (listener, endpoint) = listener().await;
        let (connection, mut events) = start(&endpoint, fast());
        let mut peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        connection.disconnect();
        assert_eq!(read_until_eof(&mut peer).await, b"");
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Disconnected {
                reason: "disconnect requested".to_string()
            }
        );
        let _peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn make_break_opens_on_send_and_closes_when_idle() {
        let (listener, endpoint) = listener().await;
        let options = ConnectionOptions {
            make_break: true,
            ..fast()
        };
        let (connection, mut events) = start(&endpoint, options);
        assert_eq!(connection.state(), LinkState::Idle);
        // Nothing connects until asked.
        assert!(
            timeout(Duration::from_millis(200), listener.accept())
                .await
                .is_err()
        );
        for round in 0..2 {
            let send = connection.send(format!("cmd{round}").into_bytes(), soon());
            let (sent, mut peer) = tokio::join!(send, accept(&listener));
            sent.unwrap();
            assert_eq!(next(&mut events).await, TransportEvent::Connected);
            // Closed after idle_close without traffic; the device sees EOF.
            assert_eq!(
                read_until_eof(&mut peer).await,
                format!("cmd{round}").as_bytes()
            );
            match next(&mut events).await {
                TransportEvent::Disconnected { reason } => {
                    assert!(reason.contains("idle"), "{reason}")
                }
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(connection.state(), LinkState::Idle);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn make_break_open_reads_a_greeting() {
        let (listener, endpoint) = listener().await;
        let options = ConnectionOptions {
            make_break: true,
            ..fast()
        };
        let (connection, mut events) = start(&endpoint, options);
        connection
            .set_tokenizer(Tokenizer::Delimiter(b"\r".to_vec()))
            .unwrap();
        connection.open();
        let mut peer = accept(&listener).await;
        peer.write_all(b"PJLINK 0\r").await.unwrap();
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"PJLINK 0".to_vec())
        );
        assert!(connection.wait_connected(soon()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn make_break_wait_connected_opens() {
        let (listener, endpoint) = listener().await;
        let options = ConnectionOptions {
            make_break: true,
            ..fast()
        };
        let (connection, mut events) = start(&endpoint, options);
        let (connected, _peer) = tokio::join!(connection.wait_connected(soon()), accept(&listener));
        assert!(connected);
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_endpoint_outside_the_grant_is_never_connected() {
        let (listener, endpoint) = listener().await;
        let other = Endpoint {
            host: "127.0.0.1".to_string(),
            port: endpoint.port.wrapping_add(1).max(1),
        };
        let grant = grant_for(&other);
        let (events_tx, mut events) = mpsc::channel(16);
        let connection = Connection::spawn(endpoint.clone(), Arc::clone(&grant), fast(), events_tx);
        let sent = connection.send(b"x".to_vec(), soon()).await;
        assert!(matches!(sent, Err(TransportError::Denied(_))), "{sent:?}");
        assert_eq!(connection.state(), LinkState::Stopped);
        assert!(!connection.wait_connected(soon()).await);
        assert!(
            timeout(Duration::from_millis(200), listener.accept())
                .await
                .is_err()
        );
        assert!(grant.denials() >= 1);
        // No event at all: nothing ever connected. The sender is dropped with the task.
        assert_eq!(timeout(WAIT, events.recv()).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resolved_address_the_grant_refuses_is_never_connected() {
        // The endpoint matches the grant, but resolves to the unspecified address, which
        // `decide` refuses (on Linux, connecting to 0.0.0.0 would reach this listener).
        let (listener, endpoint) = listener().await;
        let unspecified = Endpoint {
            host: "0.0.0.0".to_string(),
            port: endpoint.port,
        };
        let (connection, _events) = start(&unspecified, fast());
        let sent = connection
            .send(b"x".to_vec(), Instant::now() + Duration::from_millis(300))
            .await;
        match sent {
            Err(TransportError::Denied(reason)) => {
                assert!(reason.contains("unspecified"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            timeout(Duration::from_millis(200), listener.accept())
                .await
                .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_listening_means_not_connected_at_the_deadline() {
        let (listener, endpoint) = listener().await;
        drop(listener);
        let (connection, mut events) = start(&endpoint, fast());
        let sent = connection
            .send(b"x".to_vec(), Instant::now() + Duration::from_millis(300))
            .await;
        assert!(
            matches!(sent, Err(TransportError::NotConnected(_))),
            "{sent:?}"
        );
        assert!(
            !connection
                .wait_connected(Instant::now() + Duration::from_millis(100))
                .await
        );
        assert!(matches!(
            connection.state(),
            LinkState::Backoff | LinkState::Connecting
        ));
        assert!(events.try_recv().is_err(), "no event without a connection");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_connection_closes_the_socket() {
        let (listener, endpoint) = listener().await;
        let (connection, mut events) = start(&endpoint, fast());
        let mut peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        drop(connection);
        assert_eq!(read_until_eof(&mut peer).await, b"");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_message_closes_the_connection() {
        let (listener, endpoint) = listener().await;
        let options = ConnectionOptions {
            max_message: 16,
            ..fast()
        };
        let (connection, mut events) = start(&endpoint, options);
        connection
            .set_tokenizer(Tokenizer::Delimiter(b"\n".to_vec()))
            .unwrap();
        let mut peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        peer.write_all(&[b'x'; 100]).await.unwrap();
        match next(&mut events).await {
            TransportEvent::Disconnected { reason } => {
                assert!(reason.contains("larger"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(read_until_eof(&mut peer).await, b"");
        assert!(matches!(
            connection.set_tokenizer(Tokenizer::Fixed(17)),
            Err(TransportError::InvalidTokenizer(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_that_does_not_read_times_the_write_out() {
        let (listener, endpoint) = listener().await;
        let (connection, mut events) = start(&endpoint, fast());
        let _peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        let sent = connection
            .send(
                vec![0; 64 << 20],
                Instant::now() + Duration::from_millis(300),
            )
            .await;
        assert!(matches!(sent, Err(TransportError::Timeout(_))), "{sent:?}");
        // The half-written stream is closed rather than reused.
        match next(&mut events).await {
            TransportEvent::Disconnected { reason } => {
                assert!(reason.contains("timed out"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_consumer_pushes_back_on_a_flooding_device() {
        let (listener, endpoint) = listener().await;
        let (events_tx, mut events) = mpsc::channel(1);
        let _connection =
            Connection::spawn(endpoint.clone(), grant_for(&endpoint), fast(), events_tx);
        let mut peer = accept(&listener).await;
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        // Nobody takes events, so the host stops reading and the device's writes stall
        // instead of the host buffering 64 MiB.
        let flood = vec![0_u8; 64 << 20];
        assert!(
            timeout(Duration::from_millis(500), peer.write_all(&flood))
                .await
                .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_task_stops_when_events_are_no_longer_wanted() {
        let (listener, endpoint) = listener().await;
        let (connection, events) = start(&endpoint, fast());
        let mut peer = accept(&listener).await;
        drop(events);
        assert_eq!(read_until_eof(&mut peer).await, b"");
        assert_eq!(
            connection.send(b"x".to_vec(), soon()).await,
            Err(TransportError::Closed)
        );
        assert_eq!(connection.state(), LinkState::Stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sockets_have_nodelay_and_keepalive() {
        let (listener, endpoint) = listener().await;
        let address = SocketAddr::new(endpoint.host.parse().unwrap(), endpoint.port);
        let stream = open_socket(address, Some(Duration::from_secs(7)))
            .await
            .unwrap();
        let _peer = accept(&listener).await;
        let options = socket2::SockRef::from(&stream);
        assert!(options.tcp_nodelay().unwrap());
        assert!(options.keepalive().unwrap());
        assert_eq!(
            options.tcp_keepalive_time().unwrap(),
            Duration::from_secs(7)
        );
        let stream = open_socket(address, None).await.unwrap();
        assert!(!socket2::SockRef::from(&stream).keepalive().unwrap());
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let bases = [100, 200, 400, 800, 800, 800];
        for base in bases {
            let delay = backoff.next_delay().as_secs_f64() * 1000.0;
            let base = f64::from(base);
            assert!(
                delay >= base * 0.8 - 0.001 && delay <= base * 1.2 + 0.001,
                "{delay} vs {base}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(120));
        // A zero minimum is raised so a refusing device cannot cause a busy loop.
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(zero.next_delay() >= MIN_BACKOFF.mul_f64(0.8));
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let options = ConnectionOptions::default();
        assert!(!options.make_break);
        assert_eq!(options.connect_timeout, Duration::from_secs(5));
        assert_eq!(options.idle_close, Duration::from_secs(2));
        assert_eq!(options.keepalive, Some(Duration::from_secs(30)));
        assert_eq!(options.backoff_min, Duration::from_millis(500));
        assert_eq!(options.backoff_max, Duration::from_secs(30));
        assert_eq!(options.max_message, 1 << 20);
    }
}
