//! The other modules of this module's system, named as in PlaceOS (`Display_1`). For
//! logic drivers.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Result};

/// A status subscription; [`crate::Driver::notify`] receives it with each new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscription(u64);

impl Subscription {
    pub(crate) fn from_raw(id: u64) -> Self {
        Subscription(id)
    }
}

/// The names of the system's modules, in order.
pub fn modules() -> Result<Vec<String>> {
    crate::wit::system::modules().map_err(Into::into)
}

/// The value of `key` in the state of `module`, if set.
pub fn status(module: &str, key: &str) -> Result<Option<Value>> {
    match crate::wit::system::status(module, key)? {
        Some(json) => Ok(Some(serde_json::from_str(&json)?)),
        None => Ok(None),
    }
}

/// Watch `key` in the state of `module`.
pub fn subscribe(module: &str, key: &str) -> Result<Subscription> {
    crate::wit::system::subscribe(module, key)
        .map(Subscription)
        .map_err(Into::into)
}

/// Stop watching.
pub fn unsubscribe(subscription: Subscription) {
    crate::wit::system::unsubscribe(subscription.0);
}

/// Run `function` on `module` with positional `args` and return its result as a `T`.
pub fn exec<A: Serialize, T: DeserializeOwned>(module: &str, function: &str, args: A) -> Result<T> {
    let args = serde_json::to_string(&args)
        .map_err(|e| Error::InvalidArguments(format!("arguments: {e}")))?;
    let result = crate::wit::system::exec(module, function, &args)?;
    serde_json::from_str(&result)
        .map_err(|e| Error::Failed(format!("result of {module}.{function}: {e}")))
}
