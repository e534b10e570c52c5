//! Host-owned device connections.
//!
//! Drivers never open sockets. The runtime gives each module with a TCP endpoint one
//! [`Connection`], which connects only where the module's capability grant allows,
//! reconnects on its own, and hands the driver whole messages split by the tokenizer the
//! driver chose. Keeping every byte to and from a device in the host is what lets the
//! host enforce the grant, bound memory per device and log connection trouble in one
//! place.

pub mod tcp;
pub mod tokenizer;

pub use tcp::{Connection, ConnectionOptions, LinkState, TransportEvent};
pub use tokenizer::{Splitter, Tokenizer, TokenizerError};

/// Why a transport request failed, as reported to the runtime (and from there to the
/// driver as a typed error, never a trap).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The capability grant refuses the endpoint or every address it resolved to.
    #[error("denied: {0}")]
    Denied(String),
    /// No connection could be made before the deadline.
    #[error("not connected: {0}")]
    NotConnected(String),
    /// The device did not take the bytes before the deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The driver asked for a tokenizer that cannot work.
    #[error("invalid tokenizer: {0}")]
    InvalidTokenizer(String),
    /// The connection task has stopped and will not connect again.
    #[error("transport closed")]
    Closed,
}
