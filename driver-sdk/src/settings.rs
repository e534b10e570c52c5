//! The module's merged settings.

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// The merged settings as JSON text, as the last `init` received them.
pub fn json() -> String {
    crate::wit::settings::get()
}

/// The merged settings as a typed value.
pub fn get<T: DeserializeOwned>() -> Result<T> {
    serde_json::from_str(&json()).map_err(|e| Error::InvalidArguments(format!("settings: {e}")))
}
