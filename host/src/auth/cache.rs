//! Recently checked credentials, so that a request's token check is a hash and a map
//! lookup rather than a database query.
//!
//! An entry is trusted for at most [`CACHE_TTL_MS`]; expiry is checked on every use
//! whatever the cache says. Revocations made by this host (sign-out, token revocation,
//! deactivation, role changes) remove the affected entries at once; a revocation made by
//! another host of a cluster reaches this one within the TTL.

use std::collections::HashMap;
use std::sync::RwLock;

use super::Caller;

/// How long a checked credential is trusted without asking the store again.
pub const CACHE_TTL_MS: i64 = 10_000;
/// Entries kept at most; beyond, the cache starts over.
const MAX_ENTRIES: usize = 50_000;

#[derive(Debug, Clone)]
struct Entry {
    caller: Caller,
    checked_at: i64,
}

/// Checked credentials by the hash of their secret.
#[derive(Debug, Default)]
pub struct CredentialCache {
    entries: RwLock<HashMap<String, Entry>>,
}

impl CredentialCache {
    /// The caller for `hash`, if checked within the TTL and not expired at `now`.
    pub fn get(&self, hash: &str, now: i64) -> Option<Caller> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(hash)?;
        let fresh = now - entry.checked_at < CACHE_TTL_MS && now >= entry.checked_at;
        let live = entry.caller.expires_at.is_none_or(|at| at > now);
        (fresh && live).then(|| entry.caller.clone())
    }

    /// Remember `caller` for `hash`, checked at `now`.
    pub fn put(&self, hash: String, caller: Caller, now: i64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            hash,
            Entry {
                caller,
                checked_at: now,
            },
        );
    }

    /// Forget every entry `matches` picks.
    pub fn forget(&self, matches: impl Fn(&Caller) -> bool) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, entry| !matches(&entry.caller));
    }
}
