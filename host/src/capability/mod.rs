//! The single allow/deny decision for everything a driver reaches.
//!
//! Every connection, settings read and cross-module call a driver causes goes through
//! [`decide`]. The order of checks, first match wins:
//!
//! 1. A module may always read its own settings and publish its own status.
//! 2. A connection is allowed only to the endpoint the deployer configured for the module
//!    (same host name or address and port); anything else is denied.
//! 3. A resolved address is allowed only when it came from resolving that endpoint and is
//!    not an unspecified address (`0.0.0.0`, `::`). IPv4-mapped IPv6 addresses are compared
//!    as the IPv4 address they carry, so the two spellings cannot diverge.
//! 4. A broadcast or multicast address is refused unless the module's configuration allows
//!    it explicitly (not yet configurable: always refused). Broadcast here is the limited
//!    broadcast `255.255.255.255`; a subnet-directed broadcast depends on the interfaces, and
//!    the kernel refuses it because the host never sets `SO_BROADCAST`. A device behind one
//!    endpoint must not become every device on the segment.
//! 5. A cross-module call (status read, subscription, exec) is allowed only to another
//!    module of the caller's own system, never to the caller itself (that would deadlock
//!    its queue).
//! 6. Everything else is denied.
//!
//! Denials are counted per module and reach the driver as a typed `denied` error, never a
//! trap.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The modules of the module's system, by id; systems change at run time.
    system_modules: RwLock<BTreeSet<String>>,
    denials: AtomicU64,
}

/// Something a driver asks to reach.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// Read the module's own settings.
    OwnSettings,
    /// Open a connection to `endpoint`.
    Connect(&'a Endpoint),
    /// Connect to an address that `endpoint` resolved to.
    ConnectResolved(&'a Endpoint, SocketAddr),
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
            system_modules: RwLock::new(system_modules),
            denials: AtomicU64::new(0),
        }
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
        Request::Connect(endpoint) => match &grant.endpoint {
            Some(allowed) if allowed == endpoint => Decision::Allow,
            Some(_) => Decision::Deny(format!(
                "{endpoint} is not this module's configured endpoint"
            )),
            None => Decision::Deny("this module has no endpoint configured".to_string()),
        },
        Request::ConnectResolved(endpoint, addr) => {
            let ip = canonical_ip(addr.ip());
            match &grant.endpoint {
                Some(allowed) if allowed == endpoint && addr.port() == allowed.port => {
                    if ip.is_unspecified() {
                        Decision::Deny(format!(
                            "{endpoint} resolved to the unspecified address {ip}"
                        ))
                    } else if is_broadcast_or_multicast(ip) {
                        Decision::Deny(format!(
                            "{endpoint} resolved to the broadcast or multicast address {ip}"
                        ))
                    } else {
                        Decision::Allow
                    }
                }
                _ => Decision::Deny(format!(
                    "{addr} is not an address of this module's configured endpoint"
                )),
            }
        }
        Request::Module(id) if id == grant.module => {
            Decision::Deny("a module cannot call itself through its system".to_string())
        }
        Request::Module(id) if grant.in_system(id) => Decision::Allow,
        Request::Module(_) => {
            Decision::Deny("that module is not in this module's system".to_string())
        }
    };
    if let Decision::Deny(reason) = &decision {
        grant.denials.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(module = %grant.module, %reason, "capability denied");
    }
    decision
}

/// Whether `ip` reaches a group of hosts rather than one: the limited IPv4 broadcast or
/// any multicast address. Expects a [`canonical_ip`].
fn is_broadcast_or_multicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
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
