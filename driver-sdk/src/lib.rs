//! Write Warden device drivers in Rust.
//!
//! A driver is a type that implements [`Driver`] (lifecycle hooks, all optional), has an
//! `impl` block marked [`functions`] (the functions a front end can run), and is exported
//! once with [`export_driver!`]. Build it with `cargo build --release --target
//! wasm32-wasip2`; the result is a WebAssembly component that carries its own metadata.
//!
//! ```no_run
//! use warden_driver_sdk::prelude::*;
//!
//! /// Settings of the example lamp.
//! #[derive(Debug, Default, Deserialize, Schema)]
//! struct LampSettings {
//!     /// Brightness used by `on`, in percent.
//!     #[serde(default)]
//!     level: Option<u8>,
//! }
//!
//! #[derive(Default)]
//! struct Lamp {
//!     level: u8,
//! }
//!
//! impl Driver for Lamp {
//!     type Settings = LampSettings;
//!     const INFO: DriverInfo = DriverInfo {
//!         name: "Example lamp",
//!         generic_name: "Lamp",
//!         description: "A lamp that answers `ON <level>` with `OK`.",
//!         version: env!("CARGO_PKG_VERSION"),
//!         transport: TransportKind::Tcp,
//!         default_port: Some(7000),
//!         default_settings: r#"{"level":80}"#,
//!     };
//!
//!     fn init(&mut self, settings: LampSettings) -> Result<()> {
//!         self.level = settings.level.unwrap_or(80);
//!         transport::set_tokenizer(Tokenizer::Delimiter(b"\r\n".to_vec()))
//!     }
//! }
//!
//! #[functions]
//! impl Lamp {
//!     /// Switch the lamp on at the configured level.
//!     pub fn on(&mut self) -> Result<bool> {
//!         let reply = transport::request(format!("ON {}\r\n", self.level), Duration::from_secs(2))?;
//!         let on = reply == b"OK";
//!         status::set("power", &on)?;
//!         Ok(on)
//!     }
//! }
//!
//! export_driver!(Lamp);
//! ```
#![deny(missing_docs)]

extern crate self as warden_driver_sdk;

mod error;
mod export;
mod metadata;
pub mod schema;

pub mod http;
pub mod log;
pub mod settings;
pub mod status;
pub mod system;
pub mod timers;
pub mod transport;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use export::{Driver, Functions};
pub use metadata::{DriverInfo, TransportKind};
pub use schema::Schema;
pub use settings::NoSettings;
pub use warden_driver_sdk_macros::{Schema, functions};

/// The version of the `warden:driver` WIT package this SDK builds drivers against.
pub const WIT_VERSION: &str = "0.1.1";

/// The version of this SDK, as embedded in a driver's metadata and provenance.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of the custom section that carries a driver's metadata.
pub const METADATA_SECTION: &str = "warden:driver/metadata";

/// The name of the custom section that carries a driver's provenance: its package,
/// version, repository, source commit and the SDK and WIT versions it was built with.
pub const PROVENANCE_SECTION: &str = "warden:driver/provenance";

/// A driver's metadata document as JSON text, exactly as `export_driver!` embeds it — for
/// a driver's own tests (`cargo test` on the host).
pub fn metadata_json<D: Driver + Functions>() -> String {
    schema::render(&<D as metadata::Metadata>::METADATA).unwrap_or_default()
}

/// Everything a driver usually needs, in one `use`.
pub mod prelude {
    pub use crate::system::Subscription;
    pub use crate::transport::Tokenizer;
    pub use crate::{
        Driver, DriverInfo, Error, NoSettings, Result, Schema, TransportKind, export_driver,
        functions, http, log, settings, status, system, timers, transport,
    };
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{Value, json};
    pub use std::time::Duration;
}

/// Names the generated code refers to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    /// The generated bindings of the `warden:driver` world, private to the SDK.
    #[allow(missing_docs, clippy::all, unsafe_code, missing_debug_implementations)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "driver-world",
            path: "../wit/0.1.1",
            pub_export_macro: true,
            export_macro_name: "__export_driver_world_impl",
            default_bindings_module: "::warden_driver_sdk::__private::bindings",
            runtime_path: "::warden_driver_sdk::__private::rt",
        });
    }

    pub use crate::export::{glue, parse_args, result_json, source_commit, take_arg};
    pub use crate::metadata::Metadata;
    pub use bindings::exports::warden::driver::driver::Guest;
    pub use wit_bindgen::rt;
}

/// The imported interfaces, for the curated modules of this crate.
pub(crate) use __private::bindings::warden::driver as wit;
