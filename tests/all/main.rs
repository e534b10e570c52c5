//! Warden's end-to-end tests: one binary, the drivers and fixtures built once by build.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[macro_use]
mod support;
mod admin_cli;
mod api;
mod builds;
mod client_cli;
mod clients;
mod control;
mod drivers;
mod network;
mod oidc;
mod openapi;
mod runtime;
mod saml;
mod sandbox;
mod search;
mod serve;
mod sign_in;
mod store;
mod store_crash;
mod upgrade;
mod websocket;
