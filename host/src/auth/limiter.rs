//! Sign-in rate limiting, per account and per client address, with back-off.
//!
//! Each key (a login name, lower-cased, and a client address) counts failed sign-ins.
//! The first [`FREE_ACCOUNT_FAILURES`] for an account (and [`FREE_ADDRESS_FAILURES`] for an
//! address) cost nothing; after that the key is locked for `2^(failures - free - 1)` seconds
//! from its last failure, capped at [`MAX_LOCK_MS`]. While a key is locked a sign-in is
//! refused with 429 before any password is checked, so the limiter also bounds how much
//! hashing an attacker can make the host do. A key forgets its failures
//! [`FORGET_AFTER_MS`] after the last one; a successful sign-in clears the account's.
//! Counting an unknown login name like a known one keeps the limiter from telling them
//! apart. The state is in memory: each host of a cluster limits on its own.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures an account may have before it is slowed down.
pub const FREE_ACCOUNT_FAILURES: u32 = 5;
/// Failures a client address may have before it is slowed down.
pub const FREE_ADDRESS_FAILURES: u32 = 20;
/// The longest lock.
pub const MAX_LOCK_MS: i64 = 15 * 60 * 1000;
/// Failures are forgotten this long after the last one.
pub const FORGET_AFTER_MS: i64 = 60 * 60 * 1000;
/// Keys kept before the forgotten ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: i64,
}

impl Failures {
    fn locked_until(&self, free: u32) -> Option<i64> {
        let over = self.count.checked_sub(free.saturating_add(1))?;
        let seconds = 1i64.checked_shl(over.min(20)).unwrap_or(i64::MAX);
        Some(
            self.last
                .saturating_add(seconds.saturating_mul(1000).min(MAX_LOCK_MS)),
        )
    }
}

#[derive(Debug)]
struct Counter<K> {
    free: u32,
    keys: Mutex<HashMap<K, Failures>>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn new(free: u32) -> Self {
        Counter {
            free,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn locked_until(&self, key: &K, now: i64) -> Option<i64> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let failures = keys.get(key)?;
        if now - failures.last > FORGET_AFTER_MS {
            return None;
        }
        failures
            .locked_until(self.free)
            .filter(|until| *until > now)
    }

    fn fail(&self, key: &K, now: i64) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= SWEEP_AT {
            keys.retain(|_, f| now - f.last <= FORGET_AFTER_MS);
        }
        let entry = keys.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now - entry.last > FORGET_AFTER_MS {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }

    fn clear(&self, key: &K) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Counts failed sign-ins and says when to refuse.
#[derive(Debug)]
pub struct LoginLimiter {
    accounts: Counter<String>,
    addresses: Counter<IpAddr>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter {
            accounts: Counter::new(FREE_ACCOUNT_FAILURES),
            addresses: Counter::new(FREE_ADDRESS_FAILURES),
        }
    }
}

fn account_key(login: &str) -> String {
    login.trim().to_lowercase()
}

impl LoginLimiter {
    /// `Err(ms)` to wait when the account or the address is locked at `now`.
    pub fn check(&self, login: &str, address: Option<IpAddr>, now: i64) -> Result<(), i64> {
        let account = self.accounts.locked_until(&account_key(login), now);
        let address = address.and_then(|a| self.addresses.locked_until(&a, now));
        match account.into_iter().chain(address).max() {
            Some(until) => Err(until - now),
            None => Ok(()),
        }
    }

    /// Count a failed sign-in.
    pub fn failed(&self, login: &str, address: Option<IpAddr>, now: i64) {
        self.accounts.fail(&account_key(login), now);
        if let Some(address) = address {
            self.addresses.fail(&address, now);
        }
    }

    /// A sign-in succeeded: the account starts over (the address keeps its count, so one
    /// good account does not unlock guessing at others).
    pub fn succeeded(&self, login: &str) {
        self.accounts.clear(&account_key(login));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_slowed_down_after_its_free_failures_and_forgiven_later() {
        let limiter = LoginLimiter::default();
        let address: Option<IpAddr> = "192.0.2.1".parse().ok();
        let mut now = 1_000_000;
        for _ in 0..FREE_ACCOUNT_FAILURES {
            assert!(limiter.check("Ann@Example.org", address, now).is_ok());
            limiter.failed("ann@example.org", address, now);
            now += 10;
        }
        // One over: locked for 2^0 = 1 s from the last failure (10 ms ago).
        limiter.failed("ann@example.org", address, now);
        assert_eq!(limiter.check("ANN@example.org", address, now), Err(1000));
        assert!(
            limiter
                .check("ann@example.org", address, now + 1000)
                .is_ok()
        );
        // Each further failure doubles the wait.
        limiter.failed("ann@example.org", address, now + 1000);
        assert_eq!(
            limiter.check("ann@example.org", None, now + 1000),
            Err(2000)
        );
        // Another account from another address is not affected.
        assert!(
            limiter
                .check("bob@example.org", "192.0.2.2".parse().ok(), now)
                .is_ok()
        );
        // Forgotten after an hour; a success clears the account at once.
        assert!(
            limiter
                .check("ann@example.org", None, now + FORGET_AFTER_MS + 2000)
                .is_ok()
        );
        limiter.succeeded("ann@example.org");
        assert!(limiter.check("ann@example.org", None, now + 1000).is_ok());
    }

    #[test]
    fn an_address_guessing_many_accounts_is_slowed_down() {
        let limiter = LoginLimiter::default();
        let address: Option<IpAddr> = "198.51.100.7".parse().ok();
        for i in 0..=FREE_ADDRESS_FAILURES {
            limiter.failed(&format!("user{i}@example.org"), address, 5_000);
        }
        assert_eq!(
            limiter.check("fresh@example.org", address, 5_000),
            Err(1000)
        );
        assert!(limiter.check("fresh@example.org", None, 5_000).is_ok());
        // The lock is capped.
        for _ in 0..40 {
            limiter.failed("x", address, 5_000);
        }
        assert_eq!(limiter.check("y", address, 5_000), Err(MAX_LOCK_MS));
    }
}
