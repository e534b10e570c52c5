//! The module's published state. Only changed values reach subscribers, so publishing the
//! same value again costs almost nothing.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Publish `value` under `key`.
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<()> {
    let json = serde_json::to_string(value)
        .map_err(|e| Error::InvalidArguments(format!("status `{key}`: {e}")))?;
    crate::wit::status::set(key, &json).map_err(Into::into)
}

/// The current value of `key`, if set and of type `T`.
pub fn get<T: DeserializeOwned>(key: &str) -> Option<T> {
    crate::wit::status::get(key).and_then(|json| serde_json::from_str(&json).ok())
}

/// Remove `key`; subscribers see `null`.
pub fn clear(key: &str) {
    crate::wit::status::clear(key);
}
