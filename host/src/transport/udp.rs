//! One host-owned UDP socket aimed at a module's device.
//!
//! The UDP counterpart of [`Connection`](super::Connection), with the same surface so the
//! sandbox does not care which one it holds. UDP has no connection, so "connected" here
//! means the host holds a socket bound to an ephemeral port and `connect()`ed to the one
//! address the grant allows: the kernel then drops datagrams from any other source, and
//! `send` cannot reach anything else.
//!
//! The endpoint's name is resolved with [`tokio::net::lookup_host`]; [`capability::decide`]
//! is asked about the endpoint ([`Request::Connect`]) and about each resolved address
//! ([`Request::ConnectResolved`]), and the first allowed address is used. A refused
//! endpoint is permanent: the task stops and every `send` returns
//! [`TransportError::Denied`]. `SO_BROADCAST` is never set, so the kernel also refuses a
//! subnet-directed broadcast address (`EACCES` on `connect`) that `decide` cannot know
//! about; that is reported as a denial too.
//!
//! Every received datagram is one [`TransportEvent::Message`]: datagrams are already
//! framed, so only [`Tokenizer::Raw`] applies. A datagram larger than `max_message` is
//! dropped and logged, never truncated into a message that looks whole. An ICMP "port
//! unreachable" surfaces as `ConnectionRefused` on the next receive or send; it means one
//! exchange failed (the device is not listening right now), not that the socket is
//! broken, so the socket is kept.
//!
//! Make-break mode has no meaning for datagrams and is ignored: the socket costs nothing
//! while idle. `disconnect` closes the socket; a new one is bound after `backoff_min`.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::resolve::{Failure, Resolved, no_usable_address, resolve_allowed};
use super::tcp::{Backoff, STABLE_AFTER};
use super::tokenizer::Tokenizer;
use super::{ConnectionOptions, LinkState, TransportError, TransportEvent};
use crate::capability::{self, Decision, Endpoint, Grant, Request};

/// The largest receive buffer needed: no UDP payload exceeds 65 535 bytes, so a
/// `max_message` above that never drops anything and needs no bigger buffer.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Why datagram framing refuses every tokenizer but raw.
const ONLY_RAW: &str = "UDP messages are datagrams; only the raw tokenizer applies";

/// A handle to one device socket. Dropping it stops the task and closes the socket.
pub struct UdpLink {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    state: watch::Receiver<LinkState>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for UdpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpLink")
            .field("endpoint", &self.endpoint)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Drop for UdpLink {
    fn drop(&mut self) {
        // The task and this handle share the socket; once the task is gone and this
        // handle's `Arc` drops, the socket is closed.
        self.task.abort();
    }
}

impl UdpLink {
    /// Start the task that binds the socket for `endpoint` (at once) and receives on it.
    ///
    /// `events` should be bounded: while it is full the task does not receive, and the
    /// kernel drops datagrams instead of the host queueing them. When the receiver is
    /// dropped the task stops.
    ///
    /// Must be called within a Tokio runtime.
    pub fn spawn(
        endpoint: Endpoint,
        grant: Arc<Grant>,
        options: ConnectionOptions,
        events: mpsc::Sender<TransportEvent>,
    ) -> UdpLink {
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            endpoint: endpoint.clone(),
            grant,
            max_message: options.max_message.max(1),
            backoff: Backoff::new(options.backoff_min, options.backoff_max),
            options,
            events,
            shared: Arc::clone(&shared),
            state: state_tx,
        };
        let task = tokio::spawn(worker.run());
        UdpLink {
            endpoint,
            shared,
            state: state_rx,
            task,
        }
    }

    /// Send `bytes` as one datagram. Waits for the socket until `deadline`. Returns
    /// [`TransportError::NotConnected`] if there is none by then or the kernel refuses the
    /// datagram, [`TransportError::Timeout`] if the socket buffer stays full,
    /// [`TransportError::Denied`] if the endpoint is refused.
    pub async fn send(&self, bytes: Vec<u8>, deadline: Instant) -> Result<(), TransportError> {
        let mut state = self.state.clone();
        loop {
            // Mark the state seen before looking for the socket: the task installs it
            // before announcing `Connected`, so none can slip between check and wait.
            let current = *state.borrow_and_update();
            let socket = self.shared.control().socket.clone();
            if let Some(socket) = socket {
                return self.send_on(&socket, &bytes, deadline).await;
            }
            if let Some(error) = self.terminal_error(current) {
                return Err(error);
            }
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

    /// Send on `socket`. A `ConnectionRefused` here is the ICMP answer to an earlier
    /// datagram, not to this one (which was not sent), so it is retried once.
    async fn send_on(
        &self,
        socket: &UdpSocket,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let mut refused_before = false;
        loop {
            match timeout_at(deadline, socket.send(bytes)).await {
                Ok(Ok(_)) => {
                    tracing::trace!(endpoint = %self.endpoint, len = bytes.len(), "sent");
                    return Ok(());
                }
                Ok(Err(error)) if error.kind() == ErrorKind::ConnectionRefused => {
                    tracing::debug!(
                        endpoint = %self.endpoint,
                        "the device's port was unreachable for an earlier datagram"
                    );
                    if refused_before {
                        return Err(TransportError::NotConnected(format!(
                            "{}: the device's port is unreachable",
                            self.endpoint
                        )));
                    }
                    refused_before = true;
                }
                Ok(Err(error)) => {
                    return Err(TransportError::NotConnected(format!(
                        "{}: send failed: {error}",
                        self.endpoint
                    )));
                }
                Err(_) => {
                    return Err(TransportError::Timeout(format!(
                        "{}: the socket did not take the datagram in time",
                        self.endpoint
                    )));
                }
            }
        }
    }

    /// No-op: a UDP socket is always open while the link runs. Present so the sandbox
    /// can treat both links alike.
    pub fn open(&self) {}

    /// Accept [`Tokenizer::Raw`], the only framing that fits datagrams; refuse the others
    /// with [`TransportError::InvalidTokenizer`].
    pub fn set_tokenizer(&self, tokenizer: Tokenizer) -> Result<(), TransportError> {
        match tokenizer {
            Tokenizer::Raw => Ok(()),
            Tokenizer::Delimiter(_) | Tokenizer::LengthPrefixed { .. } | Tokenizer::Fixed(_) => {
                Err(TransportError::InvalidTokenizer(ONLY_RAW.to_string()))
            }
        }
    }

    /// Close the socket; a new one is bound after back-off.
    pub fn disconnect(&self) {
        self.shared.control().disconnect = true;
        self.shared.wake.notify_one();
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Whether a socket aimed at the device is held.
    pub fn is_connected(&self) -> bool {
        self.state() == LinkState::Connected
    }

    /// Wait until the socket is bound or `deadline`, returning whether it is.
    pub async fn wait_connected(&self, deadline: Instant) -> bool {
        let mut state = self.state.clone();
        loop {
            match *state.borrow_and_update() {
                LinkState::Connected => return true,
                LinkState::Stopped => return false,
                LinkState::Idle | LinkState::Connecting | LinkState::Backoff => {}
            }
            if !matches!(timeout_at(deadline, state.changed()).await, Ok(Ok(()))) {
                return self.is_connected();
            }
        }
    }

    /// The error for a task that will never bind again, if it has stopped.
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
                "no socket for {} before the deadline",
                self.endpoint
            )),
        }
    }
}

/// What the handle and the task share.
#[derive(Debug, Default)]
struct Shared {
    control: Mutex<Control>,
    wake: Notify,
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, Control> {
        // Nothing panics while holding the lock; never propagate poisoning.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct Control {
    /// The bound and connected socket, while there is one. Senders clone the `Arc` and
    /// release the lock before they wait on the socket.
    socket: Option<Arc<UdpSocket>>,
    /// Close the socket.
    disconnect: bool,
    /// Why the last attempt failed, for `send`'s error; cleared once bound.
    failure: Option<Failure>,
}

/// The event receiver is gone: nobody is listening, so the task ends.
struct Stop;

enum Attempt {
    Bound(UdpSocket, SocketAddr),
    /// The endpoint itself is refused; permanent.
    Denied(String),
    /// No socket this time; try again after back-off.
    Failed(Failure),
}

/// The task that owns the socket's receive side.
struct Worker {
    endpoint: Endpoint,
    grant: Arc<Grant>,
    options: ConnectionOptions,
    max_message: usize,
    events: mpsc::Sender<TransportEvent>,
    shared: Arc<Shared>,
    state: watch::Sender<LinkState>,
    backoff: Backoff,
}

impl Worker {
    async fn run(mut self) {
        let _ = self.run_until_stopped().await;
        self.shared.control().socket = None;
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
            self.set_state(LinkState::Connecting);
            let deadline = Instant::now() + self.options.connect_timeout;
            let attempt = tokio::select! {
                biased;
                () = self.events.closed() => return Err(Stop),
                attempt = bind(&self.endpoint, &self.grant, deadline) => attempt,
            };
            match attempt {
                Attempt::Bound(socket, peer) => {
                    if self.serve(socket, peer).await? {
                        self.backoff.reset();
                    }
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
                        "UDP socket not bound"
                    );
                    self.shared.control().failure = Some(failure);
                }
            }
            let delay = self.backoff.next_delay();
            self.back_off(delay).await?;
        }
    }

    /// Record a permanent denial; the caller then stops.
    fn refuse(&mut self, reason: String) {
        tracing::warn!(
            module = %self.grant.module,
            endpoint = %self.endpoint,
            %reason,
            "UDP endpoint denied; not binding"
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

    /// Wait `delay` in `Backoff`; a `disconnect` meanwhile has nothing to close.
    async fn back_off(&mut self, delay: Duration) -> Result<(), Stop> {
        self.set_state(LinkState::Backoff);
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                biased;
                () = self.events.closed() => return Err(Stop),
                () = self.shared.wake.notified() => self.shared.control().disconnect = false,
                () = sleep_until(until) => return Ok(()),
            }
        }
    }

    /// Receive on `socket` until it is disconnected or fails; returns whether it proved
    /// useful (delivered a datagram or lasted [`STABLE_AFTER`]), for the back-off.
    async fn serve(&mut self, socket: UdpSocket, peer: SocketAddr) -> Result<bool, Stop> {
        let socket = Arc::new(socket);
        {
            let mut control = self.shared.control();
            control.failure = None;
            // A disconnect asked for while binding had nothing to close.
            control.disconnect = false;
            control.socket = Some(Arc::clone(&socket));
        }
        self.set_state(LinkState::Connected);
        tracing::info!(
            module = %self.grant.module,
            endpoint = %self.endpoint,
            %peer,
            local = ?socket.local_addr().ok(),
            "UDP socket bound"
        );
        let bound_at = Instant::now();
        let mut delivered = false;
        let mut buffer = vec![0_u8; self.max_message.saturating_add(1).min(MAX_DATAGRAM)];
        let outcome = match self.emit(TransportEvent::Connected).await {
            Err(Stop) => Err(Stop),
            Ok(()) => loop {
                tokio::select! {
                    biased;
                    () = self.events.closed() => break Err(Stop),
                    () = self.shared.wake.notified() => {
                        if std::mem::take(&mut self.shared.control().disconnect) {
                            break Ok(("disconnect requested".to_string(), false));
                        }
                    }
                    received = socket.recv(&mut buffer) => match received {
                        Ok(count) if count > self.max_message => {
                            // Truncated by the buffer or over the limit: either way not
                            // a whole message the driver could trust.
                            tracing::warn!(
                                module = %self.grant.module,
                                endpoint = %self.endpoint,
                                limit = self.max_message,
                                "datagram larger than the message limit dropped"
                            );
                        }
                        Ok(count) => {
                            let message = buffer.get(..count).unwrap_or_default().to_vec();
                            tracing::trace!(endpoint = %self.endpoint, len = count, "received");
                            delivered = true;
                            if self.emit(TransportEvent::Message(message)).await.is_err() {
                                break Err(Stop);
                            }
                        }
                        Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                            tracing::debug!(
                                module = %self.grant.module,
                                endpoint = %self.endpoint,
                                "the device's port is unreachable; that exchange failed"
                            );
                        }
                        Err(error) => break Ok((format!("receive failed: {error}"), true)),
                    },
                }
            },
        };
        self.shared.control().socket = None;
        drop(socket);
        let (reason, fault) = outcome?;
        self.set_state(LinkState::Backoff);
        if fault {
            tracing::warn!(module = %self.grant.module, endpoint = %self.endpoint, %reason, "UDP socket closed");
        } else {
            tracing::info!(module = %self.grant.module, endpoint = %self.endpoint, %reason, "UDP socket closed");
        }
        self.emit(TransportEvent::Disconnected { reason }).await?;
        Ok(delivered || bound_at.elapsed() >= STABLE_AFTER)
    }
}

/// Check, resolve and re-check the endpoint, then bind and aim a socket at the first
/// allowed address, resolving before `deadline`.
async fn bind(endpoint: &Endpoint, grant: &Grant, deadline: Instant) -> Attempt {
    let (addresses, mut denial) = match resolve_allowed(endpoint, grant, deadline).await {
        Resolved::Denied(reason) => return Attempt::Denied(reason),
        Resolved::Failed(failure) => return Attempt::Failed(failure),
        Resolved::Allowed { addresses, denial } => (addresses, denial),
    };
    let mut failure = None;
    for address in addresses {
        match open_socket(address, grant.allow_broadcast).await {
            Ok(socket) => return Attempt::Bound(socket, address),
            // Without SO_BROADCAST the kernel refuses a broadcast destination it knows
            // from the interface configuration: the same rule as `decide`'s.
            Err(error) if error.kind() == ErrorKind::PermissionDenied => {
                denial = Some(format!(
                    "{address} is a broadcast address, which is refused: {error}"
                ));
            }
            Err(error) => failure = Some(format!("{address}: {error}")),
        }
    }
    Attempt::Failed(no_usable_address(endpoint, failure, denial))
}

/// Bind an ephemeral port on the unspecified address of `address`'s family and connect
/// to `address`, so the kernel delivers only datagrams from it. `SO_BROADCAST` stays off
/// unless the module is allowed to broadcast and `address` is the limited broadcast
/// (send-only, as for Wake-on-LAN: answers come from unicast addresses, which the
/// connected socket does not deliver).
async fn open_socket(address: SocketAddr, allow_broadcast: bool) -> std::io::Result<UdpSocket> {
    let local = if address.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(local).await?;
    if allow_broadcast && matches!(address, SocketAddr::V4(v4) if v4.ip().is_broadcast()) {
        socket.set_broadcast(true)?;
    }
    socket.connect(address).await?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tokio::time::timeout;

    use super::*;

    const WAIT: Duration = Duration::from_secs(3);

    async fn peer() -> (UdpSocket, Endpoint) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        (
            socket,
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
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            ..ConnectionOptions::default()
        }
    }

    fn start(
        endpoint: &Endpoint,
        options: ConnectionOptions,
    ) -> (UdpLink, mpsc::Receiver<TransportEvent>) {
        let (events_tx, events) = mpsc::channel(16);
        let link = UdpLink::spawn(endpoint.clone(), grant_for(endpoint), options, events_tx);
        (link, events)
    }

    async fn next(events: &mut mpsc::Receiver<TransportEvent>) -> TransportEvent {
        timeout(WAIT, events.recv())
            .await
            .expect("no event in time")
            .expect("event channel closed")
    }

    async fn receive(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buffer = vec![0_u8; 70_000];
        let (count, from) = timeout(WAIT, peer.recv_from(&mut buffer))
            .await
            .expect("no datagram in time")
            .unwrap();
        buffer.truncate(count);
        (buffer, from)
    }

    fn soon() -> Instant {
        Instant::now() + WAIT
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datagrams_go_both_ways_one_message_each() {
        let (peer, endpoint) = peer().await;
        let (link, mut events) = start(&endpoint, fast());
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        assert!(link.is_connected());
        assert!(link.wait_connected(soon()).await);
        link.send(b"%1POWR ?".to_vec(), soon()).await.unwrap();
        link.send(b"second".to_vec(), soon()).await.unwrap();
        let (first, from) = receive(&peer).await;
        assert_eq!(first, b"%1POWR ?");
        assert_eq!(receive(&peer).await.0, b"second");
        // Two datagrams sent back to back stay two messages.
        peer.send_to(b"one", from).await.unwrap();
        peer.send_to(b"two", from).await.unwrap();
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"one".to_vec())
        );
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"two".to_vec())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datagrams_from_another_source_are_not_delivered() {
        let (peer, endpoint) = peer().await;
        let (link, mut events) = start(&endpoint, fast());
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        link.send(b"hi".to_vec(), soon()).await.unwrap();
        let (_, local) = receive(&peer).await;
        let (stranger, _) = self::peer().await;
        stranger.send_to(b"spoof", local).await.unwrap();
        peer.send_to(b"real", local).await.unwrap();
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(b"real".to_vec())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_denied_endpoint_never_sends() {
        let (peer, endpoint) = peer().await;
        let other = Endpoint {
            host: "127.0.0.1".to_string(),
            port: endpoint.port.wrapping_add(1).max(1),
        };
        let grant = grant_for(&other);
        let (events_tx, mut events) = mpsc::channel(16);
        let link = UdpLink::spawn(endpoint.clone(), Arc::clone(&grant), fast(), events_tx);
        let sent = link.send(b"x".to_vec(), soon()).await;
        assert!(matches!(sent, Err(TransportError::Denied(_))), "{sent:?}");
        assert_eq!(link.state(), LinkState::Stopped);
        assert!(!link.wait_connected(soon()).await);
        let mut buffer = [0_u8; 16];
        assert!(
            timeout(Duration::from_millis(200), peer.recv_from(&mut buffer))
                .await
                .is_err()
        );
        assert!(grant.denials() >= 1);
        assert_eq!(timeout(WAIT, events.recv()).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broadcast_destinations_are_refused() {
        let (_peer, endpoint) = peer().await;
        // Refused by `decide`; and 127.255.255.255, the broadcast address of `lo`, by the
        // kernel because SO_BROADCAST is never set.
        for host in ["255.255.255.255", "127.255.255.255", "224.0.0.1"] {
            let broadcast = Endpoint {
                host: host.to_string(),
                port: endpoint.port,
            };
            let (link, _events) = start(&broadcast, fast());
            let sent = link
                .send(b"x".to_vec(), Instant::now() + Duration::from_millis(300))
                .await;
            assert!(
                matches!(sent, Err(TransportError::Denied(_))),
                "{host}: {sent:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_raw_tokenizer_is_accepted() {
        let (_peer, endpoint) = peer().await;
        let (link, _events) = start(&endpoint, fast());
        assert_eq!(link.set_tokenizer(Tokenizer::Raw), Ok(()));
        for tokenizer in [
            Tokenizer::Delimiter(b"\r".to_vec()),
            Tokenizer::Fixed(4),
            Tokenizer::LengthPrefixed {
                offset: 0,
                width: 2,
                big_endian: true,
                adjust: 0,
            },
        ] {
            assert_eq!(
                link.set_tokenizer(tokenizer),
                Err(TransportError::InvalidTokenizer(ONLY_RAW.to_string()))
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_datagram_is_dropped() {
        let (peer, endpoint) = peer().await;
        let options = ConnectionOptions {
            max_message: 16,
            ..fast()
        };
        let (link, mut events) = start(&endpoint, options);
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        link.send(b"hi".to_vec(), soon()).await.unwrap();
        let (_, local) = receive(&peer).await;
        peer.send_to(&[b'x'; 17], local).await.unwrap();
        peer.send_to(&[b'y'; 100], local).await.unwrap();
        peer.send_to(&[b'z'; 16], local).await.unwrap();
        // The two over the limit are dropped; the socket stays.
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Message(vec![b'z'; 16])
        );
        assert!(link.is_connected());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_port_fails_the_exchange_not_the_socket() {
        let (peer, endpoint) = peer().await;
        drop(peer);
        let (link, mut events) = start(&endpoint, fast());
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        for _ in 0..3 {
            link.send(b"anyone?".to_vec(), soon()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(link.is_connected());
        assert!(
            events.try_recv().is_err(),
            "no event for a refused datagram"
        );
        // The device comes back on the same port and is reached on the same socket.
        let Ok(peer) = UdpSocket::bind(("127.0.0.1", endpoint.port)).await else {
            return; // The port was taken meanwhile; nothing more to check.
        };
        link.send(b"back".to_vec(), soon()).await.unwrap();
        assert_eq!(receive(&peer).await.0, b"back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disconnect_closes_and_a_new_socket_is_bound() {
        let (peer, endpoint) = peer().await;
        let (link, mut events) = start(&endpoint, fast());
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        link.disconnect();
        assert_eq!(
            next(&mut events).await,
            TransportEvent::Disconnected {
                reason: "disconnect requested".to_string()
            }
        );
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        link.send(b"again".to_vec(), soon()).await.unwrap();
        assert_eq!(receive(&peer).await.0, b"again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_link_closes_the_socket() {
        let (peer, endpoint) = peer().await;
        let (link, mut events) = start(&endpoint, fast());
        assert_eq!(next(&mut events).await, TransportEvent::Connected);
        link.send(b"hi".to_vec(), soon()).await.unwrap();
        let (_, local) = receive(&peer).await;
        drop(link);
        // The task ends (its event sender goes) and the port is free again.
        assert_eq!(timeout(WAIT, events.recv()).await.unwrap(), None);
        let rebound = timeout(WAIT, async {
            loop {
                if let Ok(socket) = UdpSocket::bind(local).await {
                    return socket;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(rebound.is_ok(), "the link's port {local} was never freed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_task_stops_when_events_are_no_longer_wanted() {
        let (_peer, endpoint) = peer().await;
        let (link, events) = start(&endpoint, fast());
        drop(events);
        timeout(WAIT, async {
            while link.state() != LinkState::Stopped {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the task did not stop");
        assert!(!link.wait_connected(soon()).await);
        assert_eq!(
            link.send(b"x".to_vec(), soon()).await,
            Err(TransportError::Closed)
        );
    }
}
