//! Warden host.
