//! Warden's end-to-end tests: one binary, the drivers and fixtures built once by build.rs.

mod drivers;
mod runtime;
mod sandbox;
mod support;
