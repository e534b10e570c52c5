//! A module's published state: a map of JSON values whose changes fan out to subscribers.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;
use tokio::sync::broadcast;

/// Most keys one module may publish; a driver that goes past it gets a `limit` error.
pub const MAX_KEYS: usize = 1024;
/// Largest value of one key, in bytes of JSON.
pub const MAX_VALUE_BYTES: usize = 256 << 10;
/// Changes buffered per subscriber before it is told it lagged.
const CHANNEL_CAPACITY: usize = 256;

/// One changed key of one module. A cleared key has the value `null`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// The module's id.
    pub module: String,
    /// The key.
    pub key: String,
    /// The new value.
    pub value: Value,
}

/// Why a value was not published.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatusError {
    /// Empty key.
    #[error("status keys must not be empty")]
    EmptyKey,
    /// Too many keys.
    #[error("a module may publish at most {MAX_KEYS} status keys")]
    TooManyKeys,
    /// Value too large.
    #[error("status values are limited to {MAX_VALUE_BYTES} bytes of JSON")]
    TooLarge,
}

/// The state of one module.
#[derive(Debug)]
pub struct StatusMap {
    module: String,
    values: Mutex<BTreeMap<String, Value>>,
    // Created on the first subscription: idle modules nobody watches pay nothing.
    changes: OnceLock<broadcast::Sender<StatusChange>>,
}

impl StatusMap {
    /// An empty state for `module`.
    pub fn new(module: impl Into<String>) -> Self {
        StatusMap {
            module: module.into(),
            values: Mutex::new(BTreeMap::new()),
            changes: OnceLock::new(),
        }
    }

    fn values(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        // A poisoned lock only means another thread panicked mid-update of a map of
        // plain values; the map itself is still consistent.
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set `key`; returns whether the value changed (and was sent to subscribers).
    pub fn set(&self, key: &str, value: Value, value_len: usize) -> Result<bool, StatusError> {
        if key.is_empty() {
            return Err(StatusError::EmptyKey);
        }
        if value_len > MAX_VALUE_BYTES {
            return Err(StatusError::TooLarge);
        }
        {
            let mut values = self.values();
            match values.get_mut(key) {
                Some(old) if *old == value => return Ok(false),
                Some(old) => *old = value.clone(),
                None => {
                    if values.len() >= MAX_KEYS {
                        return Err(StatusError::TooManyKeys);
                    }
                    values.insert(key.to_string(), value.clone());
                }
            }
        }
        self.publish(key, value);
        Ok(true)
    }

    /// Remove `key`; subscribers see `null`.
    pub fn clear(&self, key: &str) {
        let removed = self.values().remove(key).is_some();
        if removed {
            self.publish(key, Value::Null);
        }
    }

    fn publish(&self, key: &str, value: Value) {
        if let Some(sender) = self.changes.get() {
            // No receivers is fine: nobody is watching right now.
            let _ = sender.send(StatusChange {
                module: self.module.clone(),
                key: key.to_string(),
                value,
            });
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.values().get(key).cloned()
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        self.values().clone()
    }

    /// Receive every later change.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.changes
            .get_or_init(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_changes_fan_out() {
        let map = StatusMap::new("m1");
        let mut changes = map.subscribe();
        assert!(map.set("power", json!(true), 4).unwrap());
        assert!(!map.set("power", json!(true), 4).unwrap());
        assert!(map.set("power", json!(false), 5).unwrap());
        map.clear("power");
        map.clear("power");
        let seen: Vec<Value> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.value)
            .collect();
        assert_eq!(seen, vec![json!(true), json!(false), Value::Null]);
    }

    #[test]
    fn limits_are_errors() {
        let map = StatusMap::new("m1");
        assert_eq!(map.set("", json!(1), 1), Err(StatusError::EmptyKey));
        assert_eq!(
            map.set("k", json!(1), MAX_VALUE_BYTES + 1),
            Err(StatusError::TooLarge)
        );
        for i in 0..MAX_KEYS {
            map.set(&format!("k{i}"), json!(i), 1).unwrap();
        }
        assert_eq!(
            map.set("one-more", json!(1), 1),
            Err(StatusError::TooManyKeys)
        );
        assert!(map.set("k0", json!("replaced"), 10).unwrap());
    }
}
