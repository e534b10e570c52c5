//! The single allow/deny decision for everything a driver reaches.
//!
//! Every connection, datagram socket, HTTP request, redirect, settings read and
//! cross-module call a driver causes goes through [`decide`]. The order of checks, first
//! match wins:
//!
//! 1. A module may always read its own settings and publish its own status.
//! 2. A new connection or socket is refused when the module has opened more than
//!    [`CONNECTION_BURST`] in a burst or more than [`CONNECTIONS_PER_SECOND`] per second
//!    on average, so that a driver cannot flood its device or exhaust the host's sockets.
//! 3. A connection is allowed only to the endpoint the deployer configured for the module
//!    (same host name or address and port); anything else is denied. The stream and
//!    datagram transport is usable only by a module with such an endpoint (not an HTTP or
//!    logic module).
//! 4. A resolved address is allowed only when it came from resolving that endpoint and is
//!    not an unspecified address (`0.0.0.0`, `::`). A loopback or link-local address
//!    (`127.0.0.0/8`, `::1`, `169.254.0.0/16` — where cloud metadata services live —
//!    `fe80::/10`) is allowed only when the deployer wrote it as the endpoint's address or
//!    wrote `localhost`: a device's DNS name that resolves there is refused, so DNS cannot
//!    turn a device endpoint into the host's own services. IPv4-mapped IPv6 addresses are
//!    compared as the IPv4 address they carry, so the two spellings cannot diverge.
//! 5. A broadcast or multicast address is refused unless the module's configuration allows
//!    broadcast explicitly, and then only the limited broadcast `255.255.255.255` (never
//!    multicast). A subnet-directed broadcast depends on the interfaces; the kernel refuses
//!    it because the host sets `SO_BROADCAST` only for a module allowed to broadcast. A
//!    device behind one endpoint must not become every device on the segment.
//! 6. An HTTP request, and every redirect it is sent, is allowed only to the origin
//!    (scheme, host and port) of the module's configured base URI; a module without a base
//!    URI makes no HTTP requests at all.
//! 7. A cross-module call (status read, subscription, exec) is allowed only to another
//!    module of the caller's own system, never to the caller itself (that would deadlock
//!    its queue); a module that belongs to no system reaches no module at all.
//! 8. Everything else is denied.
//!
//! Denials are counted per module, logged with the rule that refused them, and reach the
//! driver as a typed `denied` error, never a trap.

mod uri;

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

pub use uri::{BaseUri, Origin, Scheme, UriError};

/// New connections (or sockets) a module may open at once before the rate applies.
pub const CONNECTION_BURST: u32 = 50;
/// New connections (or sockets) per second a module may open on average.
pub const CONNECTIONS_PER_SECOND: u32 = 20;

/// A `host:port` a module is configured to reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP or UDP port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why an endpoint string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    /// No `:port` part.
    #[error("endpoint `{0}` has no port: write it as host:port")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("endpoint `{0}` has an invalid port")]
    InvalidPort(String),
    /// The host part is empty or contains characters no host name has.
    #[error("endpoint `{0}` has an invalid host")]
    InvalidHost(String),
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| EndpointError::InvalidHost(text.to_string()))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| EndpointError::MissingPort(text.to_string()))?;
            (host, port)
        } else {
            text.rsplit_once(':')
                .ok_or_else(|| EndpointError::MissingPort(text.to_string()))?
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| EndpointError::InvalidPort(text.to_string()))?;
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !valid_host || (host.contains(':') && host.parse::<IpAddr>().is_err()) {
            return Err(EndpointError::InvalidHost(text.to_string()));
        }
        Ok(Endpoint {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// What one module may reach: its grant, fixed when the module starts.
#[derive(Debug, Default)]
pub struct Grant {
    /// The module's own id.
    pub module: String,
    /// The device endpoint configured by the deployer, if the driver has a transport.
    pub endpoint: Option<Endpoint>,
    /// The base URI configured by the deployer, for HTTP drivers.
    pub base_uri: Option<BaseUri>,
    /// Whether the deployer allowed the limited broadcast address for this module.
    pub allow_broadcast: bool,
    /// Whether the module belongs to a system (logic drivers reach others through it).
    pub in_a_system: bool,
    /// The modules of the module's system, by id; systems change at run time.
    system_modules: RwLock<BTreeSet<String>>,
    connections: Mutex<ConnectionBudget>,
    /// Shared with the module, so the count survives the sandbox's restarts.
    denials: Arc<AtomicU64>,
}

/// A token bucket of new connections: [`CONNECTION_BURST`] tokens, refilled at
/// [`CONNECTIONS_PER_SECOND`].
#[derive(Debug)]
struct ConnectionBudget {
    tokens: f64,
    refilled: Instant,
}

impl Default for ConnectionBudget {
    fn default() -> Self {
        ConnectionBudget {
            tokens: f64::from(CONNECTION_BURST),
            refilled: Instant::now(),
        }
    }
}

impl ConnectionBudget {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned =
            now.duration_since(self.refilled).as_secs_f64() * f64::from(CONNECTIONS_PER_SECOND);
        self.tokens = (self.tokens + earned).min(f64::from(CONNECTION_BURST));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Something a driver asks to reach.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// Read the module's own settings.
    OwnSettings,
    /// Use the stream/datagram transport at all.
    UseStream,
    /// Use the system interface at all.
    UseSystem,
    /// Open a new connection or socket (counted against the module's connection rate).
    OpenConnection,
    /// Open a connection to `endpoint`.
    Connect(&'a Endpoint),
    /// Connect to an address that `endpoint` resolved to.
    ConnectResolved(&'a Endpoint, SocketAddr),
    /// Make HTTP requests at all.
    UseHttp,
    /// Send an HTTP request to `origin`.
    HttpRequest(&'a Origin),
    /// Follow a redirect to `origin`.
    HttpRedirect(&'a Origin),
    /// Read, watch or exec on another module, by id.
    Module(&'a str),
}

/// The answer of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with the reason shown to the driver and in the module's log.
    Deny(String),
}

impl Grant {
    /// A grant for `module`.
    pub fn new(
        module: impl Into<String>,
        endpoint: Option<Endpoint>,
        system_modules: BTreeSet<String>,
    ) -> Self {
        Grant {
            module: module.into(),
            endpoint,
            base_uri: None,
            allow_broadcast: false,
            in_a_system: false,
            system_modules: RwLock::new(system_modules),
            connections: Mutex::new(ConnectionBudget::default()),
            denials: Arc::new(AtomicU64::new(0)),
        }
    }

    /// This grant, counting its denials in `counter` (the module's, kept across
    /// restarts) instead of a counter of its own.
    pub fn counting_denials_in(mut self, counter: Arc<AtomicU64>) -> Self {
        self.denials = counter;
        self
    }

    /// This grant for an HTTP driver whose requests go to `base_uri`: its endpoint
    /// becomes the base URI's host and port.
    pub fn with_base_uri(mut self, base_uri: BaseUri) -> Self {
        self.endpoint = Some(base_uri.origin.endpoint.clone());
        self.base_uri = Some(base_uri);
        self
    }

    /// This grant for a module that belongs to a system.
    pub fn in_a_system(mut self, member: bool) -> Self {
        self.in_a_system = member;
        self
    }

    /// This grant, allowing the limited broadcast address when the endpoint is it.
    pub fn with_broadcast(mut self, allow: bool) -> Self {
        self.allow_broadcast = allow;
        self
    }

    /// Replace the membership of the module's system.
    pub fn set_system_modules(&self, modules: BTreeSet<String>) {
        *self
            .system_modules
            .write()
            .unwrap_or_else(|e| e.into_inner()) = modules;
    }

    fn in_system(&self, module: &str) -> bool {
        self.system_modules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(module)
    }

    /// How many requests of this module were denied.
    pub fn denials(&self) -> u64 {
        self.denials.load(Ordering::Relaxed)
    }
}

/// Decide whether the module holding `grant` may make `request`. See the module docs for
/// the order of checks.
pub fn decide(grant: &Grant, request: Request<'_>) -> Decision {
    let decision = match request {
        Request::OwnSettings => Decision::Allow,
        Request::UseStream => match (&grant.endpoint, &grant.base_uri) {
            (Some(_), None) => Decision::Allow,
            _ => Decision::Deny(
                "endpoint rule: this module has no stream or datagram connection to a device"
                    .into(),
            ),
        },
        Request::UseSystem if grant.in_a_system => Decision::Allow,
        Request::UseSystem => {
            Decision::Deny("system rule: this module belongs to no system".to_string())
        }
        Request::OpenConnection => {
            let mut budget = grant.connections.lock().unwrap_or_else(|e| e.into_inner());
            if budget.take() {
                Decision::Allow
            } else {
                Decision::Deny(format!(
                    "connection rate limit: at most {CONNECTION_BURST} new connections at once \
                     and {CONNECTIONS_PER_SECOND} per second"
                ))
            }
        }
        Request::Connect(endpoint) => match &grant.endpoint {
            Some(allowed) if allowed == endpoint => Decision::Allow,
            Some(_) => Decision::Deny(format!(
                "endpoint rule: {endpoint} is not this module's configured endpoint"
            )),
            None => Decision::Deny("endpoint rule: this module has no endpoint configured".into()),
        },
        Request::ConnectResolved(endpoint, addr) => {
            let ip = canonical_ip(addr.ip());
            match &grant.endpoint {
                Some(allowed) if allowed == endpoint && addr.port() == allowed.port => {
                    if ip.is_unspecified() {
                        Decision::Deny(format!(
                            "address rule: {endpoint} resolved to the unspecified address {ip}"
                        ))
                    } else if is_loopback_or_link_local(ip) && !names_host_itself(&endpoint.host) {
                        Decision::Deny(format!(
                            "address rule: the name {} resolved to {ip}, a loopback or \
                             link-local address, which is reachable only when configured as \
                             the endpoint's address",
                            endpoint.host
                        ))
                    } else if is_multicast(ip) {
                        Decision::Deny(format!(
                            "broadcast rule: {endpoint} resolved to the multicast address {ip}"
                        ))
                    } else if is_limited_broadcast(ip) && !grant.allow_broadcast {
                        Decision::Deny(format!(
                            "broadcast rule: {endpoint} resolved to the broadcast address {ip}, \
                             and this module is not configured to allow broadcast"
                        ))
                    } else {
                        Decision::Allow
                    }
                }
                _ => Decision::Deny(format!(
                    "address rule: {addr} is not an address of this module's configured endpoint"
                )),
            }
        }
        Request::UseHttp => match &grant.base_uri {
            Some(_) => Decision::Allow,
            None => Decision::Deny("origin rule: this module has no base URI configured".into()),
        },
        Request::HttpRequest(origin) => match &grant.base_uri {
            Some(base) if base.origin == *origin => Decision::Allow,
            Some(base) => Decision::Deny(format!(
                "origin rule: {origin} is not this module's origin {}",
                base.origin
            )),
            None => Decision::Deny("origin rule: this module has no base URI configured".into()),
        },
        Request::HttpRedirect(origin) => match &grant.base_uri {
            Some(base) if base.origin == *origin => Decision::Allow,
            Some(base) => Decision::Deny(format!(
                "origin rule: a redirect to {origin} leaves this module's origin {}",
                base.origin
            )),
            None => Decision::Deny("origin rule: this module has no base URI configured".into()),
        },
        Request::Module(id) if id == grant.module => Decision::Deny(
            "system rule: a module cannot call itself through its system".to_string(),
        ),
        Request::Module(id) if grant.in_system(id) => Decision::Allow,
        Request::Module(_) => {
            Decision::Deny("system rule: that module is not in this module's system".to_string())
        }
    };
    if let Decision::Deny(reason) = &decision {
        grant.denials.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(module = %grant.module, %reason, "capability denied");
    }
    decision
}

/// Whether `ip` is a loopback or link-local address. Expects a [`canonical_ip`].
fn is_loopback_or_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local(),
    }
}

/// Whether the endpoint's host names a loopback or link-local address explicitly: an IP
/// literal, or `localhost`.
fn names_host_itself(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok() || host == "localhost"
}

/// Whether `ip` is a multicast address. Expects a [`canonical_ip`].
fn is_multicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// Whether `ip` is the limited IPv4 broadcast. Expects a [`canonical_ip`].
fn is_limited_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries; others unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant::new(
            "mod-a",
            Some("projector.local:4352".parse().unwrap()),
            ["mod-b".to_string()].into(),
        )
    }

    #[test]
    fn endpoints_parse_and_refuse_garbage() {
        let e: Endpoint = "Projector.Local:4352".parse().unwrap();
        assert_eq!(e.host, "projector.local");
        assert_eq!(e.port, 4352);
        let v6: Endpoint = "[::1]:502".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:502");
        assert!(matches!(
            "host".parse::<Endpoint>(),
            Err(EndpointError::MissingPort(_))
        ));
        assert!(matches!(
            "host:0".parse::<Endpoint>(),
            Err(EndpointError::InvalidPort(_))
        ));
        assert!(matches!(
            "host:99999".parse::<Endpoint>(),
            Err(EndpointError::InvalidPort(_))
        ));
        assert!(matches!(
            "a b:80".parse::<Endpoint>(),
            Err(EndpointError::InvalidHost(_))
        ));
        assert!(matches!(
            ":80".parse::<Endpoint>(),
            Err(EndpointError::InvalidHost(_))
        ));
    }

    #[test]
    fn only_the_configured_endpoint_is_reachable() {
        let grant = grant();
        let own: Endpoint = "projector.local:4352".parse().unwrap();
        let other: Endpoint = "projector.local:22".parse().unwrap();
        assert_eq!(decide(&grant, Request::Connect(&own)), Decision::Allow);
        assert!(matches!(
            decide(&grant, Request::Connect(&other)),
            Decision::Deny(_)
        ));
        let no_endpoint = Grant::new("m", None, BTreeSet::new());
        assert!(matches!(
            decide(&no_endpoint, Request::Connect(&own)),
            Decision::Deny(_)
        ));
        assert_eq!(grant.denials(), 1);
    }

    #[test]
    fn resolved_addresses_are_rechecked() {
        let grant = grant();
        let own: Endpoint = "projector.local:4352".parse().unwrap();
        let ok: SocketAddr = "10.1.2.3:4352".parse().unwrap();
        let wrong_port: SocketAddr = "10.1.2.3:22".parse().unwrap();
        let unspecified: SocketAddr = "[::ffff:0.0.0.0]:4352".parse().unwrap();
        assert_eq!(
            decide(&grant, Request::ConnectResolved(&own, ok)),
            Decision::Allow
        );
        assert!(matches!(
            decide(&grant, Request::ConnectResolved(&own, wrong_port)),
            Decision::Deny(_)
        ));
        assert!(matches!(
            decide(&grant, Request::ConnectResolved(&own, unspecified)),
            Decision::Deny(_)
        ));
        assert_eq!(
            canonical_ip("::ffff:127.0.0.1".parse().unwrap()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn names_cannot_resolve_to_loopback_or_link_local() {
        let grant = grant();
        let own: Endpoint = "projector.local:4352".parse().unwrap();
        for addr in [
            "127.0.0.1:4352",
            "127.9.9.9:4352",
            "[::1]:4352",
            "[::ffff:127.0.0.1]:4352",
            "169.254.169.254:4352",
            "[fe80::1]:4352",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            match decide(&grant, Request::ConnectResolved(&own, addr)) {
                Decision::Deny(reason) => assert!(reason.contains("address rule"), "{reason}"),
                Decision::Allow => panic!("{addr} was allowed for a name"),
            }
        }
        // Configured explicitly, as an address or as `localhost`, they are allowed.
        for (endpoint, addr) in [
            ("127.0.0.1:80", "127.0.0.1:80"),
            ("169.254.1.2:80", "169.254.1.2:80"),
            ("localhost:80", "[::1]:80"),
        ] {
            let endpoint: Endpoint = endpoint.parse().unwrap();
            let grant = Grant::new("m", Some(endpoint.clone()), BTreeSet::new());
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(
                decide(&grant, Request::ConnectResolved(&endpoint, addr)),
                Decision::Allow
            );
        }
    }

    #[test]
    fn the_connection_rate_is_bounded() {
        let grant = grant();
        let allowed = (0..CONNECTION_BURST * 2)
            .filter(|_| decide(&grant, Request::OpenConnection) == Decision::Allow)
            .count();
        // The burst, plus at most what refills while the loop runs.
        assert!(
            (CONNECTION_BURST as usize..CONNECTION_BURST as usize + 3).contains(&allowed),
            "{allowed}"
        );
        match decide(&grant, Request::OpenConnection) {
            Decision::Deny(reason) => assert!(reason.contains("connection rate limit")),
            Decision::Allow => panic!("the burst was exceeded"),
        }
    }

    #[test]
    fn http_only_to_the_base_uri_origin() {
        let base: BaseUri = "https://display.example:8443/api".parse().unwrap();
        let grant = Grant::new("m", None, BTreeSet::new()).with_base_uri(base.clone());
        assert_eq!(decide(&grant, Request::UseHttp), Decision::Allow);
        assert_eq!(
            decide(&grant, Request::HttpRequest(&base.origin)),
            Decision::Allow
        );
        let other = Origin::of(&"https://display.example:9443/".parse().unwrap()).unwrap();
        assert!(matches!(
            decide(&grant, Request::HttpRedirect(&other)),
            Decision::Deny(reason) if reason.contains("origin rule")
        ));
        let plain = Origin::of(&"http://display.example:8443/".parse().unwrap()).unwrap();
        assert!(matches!(
            decide(&grant, Request::HttpRequest(&plain)),
            Decision::Deny(_)
        ));
        let none = Grant::new("m", None, BTreeSet::new());
        assert!(matches!(decide(&none, Request::UseHttp), Decision::Deny(_)));
        // An HTTP module has no stream transport, even though its origin has a port.
        assert!(matches!(
            decide(&grant, Request::UseStream),
            Decision::Deny(reason) if reason.contains("endpoint rule")
        ));
    }

    #[test]
    fn interfaces_without_a_grant_are_refused() {
        let tcp = grant();
        assert_eq!(decide(&tcp, Request::UseStream), Decision::Allow);
        assert!(matches!(
            decide(&tcp, Request::UseSystem),
            Decision::Deny(_)
        ));
        let logic = Grant::new("logic", None, ["b".to_string()].into()).in_a_system(true);
        assert_eq!(decide(&logic, Request::UseSystem), Decision::Allow);
        assert!(matches!(
            decide(&logic, Request::UseStream),
            Decision::Deny(_)
        ));
        assert_eq!(logic.denials(), 1);
    }

    #[test]
    fn broadcast_only_when_allowed_and_never_multicast() {
        let broadcast: Endpoint = "255.255.255.255:47808".parse().unwrap();
        let grant = Grant::new("m", Some(broadcast.clone()), BTreeSet::new()).with_broadcast(true);
        let limited: SocketAddr = "255.255.255.255:47808".parse().unwrap();
        assert_eq!(
            decide(&grant, Request::ConnectResolved(&broadcast, limited)),
            Decision::Allow
        );
        let multicast: SocketAddr = "224.0.0.1:47808".parse().unwrap();
        assert!(matches!(
            decide(&grant, Request::ConnectResolved(&broadcast, multicast)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn broadcast_and_multicast_addresses_are_refused() {
        let broadcast: Endpoint = "255.255.255.255:4352".parse().unwrap();
        let grant = Grant::new("m", Some(broadcast.clone()), BTreeSet::new());
        for addr in [
            "255.255.255.255:4352",
            "[::ffff:255.255.255.255]:4352",
            "224.0.0.1:4352",
            "239.255.255.250:4352",
            "[ff02::1]:4352",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            match decide(&grant, Request::ConnectResolved(&broadcast, addr)) {
                Decision::Deny(reason) => assert!(reason.contains("broadcast"), "{reason}"),
                Decision::Allow => panic!("{addr} was allowed"),
            }
        }
        assert_eq!(grant.denials(), 5);
        // A unicast address of the same endpoint is still allowed.
        let unicast: SocketAddr = "10.1.2.255:4352".parse().unwrap();
        assert_eq!(
            decide(&grant, Request::ConnectResolved(&broadcast, unicast)),
            Decision::Allow
        );
    }

    #[test]
    fn modules_only_within_the_system_and_never_self() {
        let grant = grant();
        assert_eq!(decide(&grant, Request::Module("mod-b")), Decision::Allow);
        assert!(matches!(
            decide(&grant, Request::Module("mod-a")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            decide(&grant, Request::Module("mod-c")),
            Decision::Deny(_)
        ));
        assert_eq!(decide(&grant, Request::OwnSettings), Decision::Allow);
    }
}
