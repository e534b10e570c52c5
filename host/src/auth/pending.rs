//! Single sign-ons in progress: what a host keeps between sending a person to an
//! identity provider and the provider's answer (SAML2's request id, OpenID Connect's PKCE
//! verifier and nonce), by the hash of a random key, taken out once, for a few minutes.
//!
//! Unauthenticated requests create these entries, so the map is bounded twice: at most
//! [`MAX_PENDING`] in all, and at most [`MAX_PER_ADDRESS`] for one client address (an IPv6
//! address counts by its /64, which one party usually holds whole). Without the second
//! bound one client could fill the map and keep everyone from signing in until its
//! entries expired; with it, that takes over 1,500 addresses. 64 per address leaves room
//! for an office behind one NAT address where dozens sign in at the same minute (an
//! entry lives until its answer comes back, or 10 minutes when the person gives up).
//! Expired entries are dropped whenever the map is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The most sign-ins in progress on one host.
pub const MAX_PENDING: usize = 100_000;
/// The most sign-ins in progress from one client address (or IPv6 /64).
pub const MAX_PER_ADDRESS: usize = 64;

/// Why a sign-in could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This client has too many sign-ins in progress.
    Address,
    /// The host has too many sign-ins in progress.
    Host,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    client: Option<IpAddr>,
    expires_at: i64,
}

/// Sign-ins in progress, of any protocol's kind `T`.
#[derive(Debug)]
pub struct PendingSignIns<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T> Default for PendingSignIns<T> {
    fn default() -> Self {
        PendingSignIns {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// The part of `address` that one party holds: the address itself, or an IPv6 /64.
fn client_of(address: Option<IpAddr>) -> Option<IpAddr> {
    match address? {
        IpAddr::V4(v4) => Some(IpAddr::V4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => {
                let mut segments = v6.segments();
                for segment in segments.iter_mut().skip(4) {
                    *segment = 0;
                }
                Some(IpAddr::V6(segments.into()))
            }
        },
    }
}

impl<T> PendingSignIns<T> {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep `value` under `key` (a hash of the random value the browser or the provider
    /// brings back) until `expires_at`, for a request from `address`.
    pub fn insert(
        &self,
        key: String,
        value: T,
        address: Option<IpAddr>,
        expires_at: i64,
        now: i64,
    ) -> Result<(), Full> {
        let client = client_of(address);
        let mut entries = self.entries();
        let from_client = |entries: &HashMap<String, Entry<T>>| {
            client.map_or(0, |client| {
                entries
                    .values()
                    .filter(|e| e.client == Some(client) && e.expires_at > now)
                    .count()
            })
        };
        if from_client(&entries) >= MAX_PER_ADDRESS {
            return Err(Full::Address);
        }
        if entries.len() >= MAX_PENDING {
            entries.retain(|_, e| e.expires_at > now);
            if entries.len() >= MAX_PENDING {
                return Err(Full::Host);
            }
        }
        entries.insert(
            key,
            Entry {
                value,
                client,
                expires_at,
            },
        );
        Ok(())
    }

    /// Take the entry under `key` out, whatever happens next (a sign-in's answer is
    /// accepted once); `None` when there is none or it expired.
    pub fn take(&self, key: &str, now: i64) -> Option<T> {
        let entry = self.entries().remove(key)?;
        (entry.expires_at > now).then_some(entry.value)
    }

    /// How many are kept (expired ones included until the map next fills).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn one_client_cannot_fill_the_map() {
        let pending = PendingSignIns::default();
        for i in 0..MAX_PER_ADDRESS {
            pending
                .insert(format!("k{i}"), i, ip("203.0.113.7"), 100, 0)
                .unwrap();
        }
        assert_eq!(
            pending.insert("more".into(), 0, ip("203.0.113.7"), 100, 0),
            Err(Full::Address)
        );
        // The same address written as IPv4-mapped IPv6 is the same client; another is not.
        assert_eq!(
            pending.insert("mapped".into(), 0, ip("::ffff:203.0.113.7"), 100, 0),
            Err(Full::Address)
        );
        assert_eq!(
            pending.insert("other".into(), 0, ip("203.0.113.8"), 100, 0),
            Ok(())
        );
        // Once its entries expire, the client may start again.
        assert_eq!(
            pending.insert("later".into(), 0, ip("203.0.113.7"), 300, 200),
            Ok(())
        );
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let pending = PendingSignIns::default();
        for i in 0..MAX_PER_ADDRESS {
            let address = ip(&format!("2001:db8:1:2::{:x}", i + 1));
            pending.insert(format!("k{i}"), i, address, 100, 0).unwrap();
        }
        assert_eq!(
            pending.insert("more".into(), 0, ip("2001:db8:1:2:ffff::1"), 100, 0),
            Err(Full::Address)
        );
        assert_eq!(
            pending.insert("next /64".into(), 0, ip("2001:db8:1:3::1"), 100, 0),
            Ok(())
        );
    }

    #[test]
    fn an_entry_is_taken_once_and_not_after_it_expires() {
        let pending = PendingSignIns::default();
        pending.insert("a".into(), "x", None, 100, 0).unwrap();
        pending.insert("b".into(), "y", None, 100, 0).unwrap();
        assert_eq!(pending.take("a", 50), Some("x"));
        assert_eq!(pending.take("a", 50), None);
        assert_eq!(pending.take("b", 100), None);
        assert!(pending.is_empty());
    }
}
