//! The capability-checked resolution every transport uses before it opens a socket: the
//! endpoint is checked, its host name resolved by the host, and every address re-checked,
//! so a name cannot be used to reach another address. One implementation, so TCP and UDP
//! cannot drift apart on the rule that matters most.

use std::net::SocketAddr;

use tokio::time::{Instant, timeout_at};

use crate::capability::{self, Decision, Endpoint, Grant, Request};

/// Why an attempt to open a socket failed.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) reason: String,
    /// The capability check (or the kernel's broadcast rule, for UDP) refused it.
    pub(super) denied: bool,
}

/// The outcome of resolving an endpoint.
pub(super) enum Resolved {
    /// The endpoint itself is refused; permanent.
    Denied(String),
    /// The name could not be resolved in time.
    Failed(Failure),
    /// The addresses the grant allows, in the resolver's order, each in its canonical
    /// spelling (IPv4-mapped IPv6 as IPv4, as `decide` compared it), and the reason the
    /// last refused address was refused, if any was.
    Allowed {
        addresses: Vec<SocketAddr>,
        denial: Option<String>,
    },
}

/// Check `endpoint`, resolve it before `deadline`, and re-check every address.
pub(super) async fn resolve_allowed(
    endpoint: &Endpoint,
    grant: &Grant,
    deadline: Instant,
) -> Resolved {
    if let Decision::Deny(reason) = capability::decide(grant, Request::Connect(endpoint)) {
        return Resolved::Denied(reason);
    }
    // Counted only for an endpoint that is allowed at all; not permanent, so the caller
    // backs off and tries again.
    if let Decision::Deny(reason) = capability::decide(grant, Request::OpenConnection) {
        return Resolved::Failed(Failure {
            reason,
            denied: true,
        });
    }
    let lookup = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port));
    let resolved: Vec<SocketAddr> = match timeout_at(deadline, lookup).await {
        Ok(Ok(addresses)) => addresses.collect(),
        Ok(Err(error)) => {
            return Resolved::Failed(Failure {
                reason: format!("cannot resolve {}: {error}", endpoint.host),
                denied: false,
            });
        }
        Err(_) => {
            return Resolved::Failed(Failure {
                reason: format!("resolving {} timed out", endpoint.host),
                denied: false,
            });
        }
    };
    let mut addresses = Vec::new();
    let mut denial = None;
    for address in resolved {
        match capability::decide(grant, Request::ConnectResolved(endpoint, address)) {
            Decision::Allow => addresses.push(SocketAddr::new(
                capability::canonical_ip(address.ip()),
                address.port(),
            )),
            Decision::Deny(reason) => denial = Some(reason),
        }
    }
    Resolved::Allowed { addresses, denial }
}

/// The failure of an attempt in which no allowed address could be used: the last
/// socket error if there was one, else the last denial, else an empty resolution.
pub(super) fn no_usable_address(
    endpoint: &Endpoint,
    failure: Option<String>,
    denial: Option<String>,
) -> Failure {
    match (failure, denial) {
        (Some(reason), _) => Failure {
            reason,
            denied: false,
        },
        (None, Some(reason)) => Failure {
            reason,
            denied: true,
        },
        (None, None) => Failure {
            reason: format!("{} resolved to no addresses", endpoint.host),
            denied: false,
        },
    }
}
