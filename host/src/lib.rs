//! Warden: a host for building-automation device drivers compiled to sandboxed
//! WebAssembly components.
//!
//! Layers, top to bottom (each uses only those below it): [`cli`] and [`client`] (which
//! talks to a running host over HTTPS only); [`control`] (runs what
//! the store describes); [`store`] (the building model, sealed settings, device history and
//! the audit log, on SQLite or PostgreSQL) and [`runtime`] (engine, component cache, one
//! sandbox per module); [`transport`] (host-owned device connections); [`capability`] (the
//! single allow/deny decision); [`component`] (reading a driver without running it);
//! [`crypto`] (sealing at rest), [`attestation`] (signed approvals) and [`settings`]
//! (levels and merging).

pub mod api;
pub mod attestation;
pub mod auth;
pub mod build;
pub mod capability;
pub mod cli;
pub mod client;
pub mod component;
pub mod control;
pub mod crypto;
pub mod data_dir;
pub mod html;
pub mod runtime;
pub mod search;
pub mod serve;
pub mod settings;
pub mod slug;
pub mod store;
pub mod transport;
