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

/// The settings of a driver that has none: accepts any JSON object and ignores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoSettings;

impl<'de> serde::Deserialize<'de> for NoSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(NoSettings)
    }
}

impl crate::Schema for NoSettings {
    const SCHEMA: crate::schema::Node = crate::schema::Node::Raw(r#"{"type":"object"}"#);
}
