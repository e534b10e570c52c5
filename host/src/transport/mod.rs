//! Host-owned device connections.
//!
//! Drivers never open sockets. The runtime gives each module with an endpoint one
//! [`Link`]: a TCP [`Connection`], which connects only where the module's capability
//! grant allows, reconnects on its own, and hands the driver whole messages split by the
//! tokenizer the driver chose; or a [`UdpLink`], a socket aimed at the one allowed address
//! that hands the driver each datagram as a message. Keeping every byte to and from a
//! device in the host is what lets the host enforce the grant, bound memory per device
//! and log connection trouble in one place.

pub mod http;
mod resolve;
mod stream;
pub mod tcp;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod tokenizer;
pub mod udp;

pub use http::{HttpLink, HttpOptions};
pub use stream::DeviceStream;
pub use tcp::{Connection, ConnectionOptions, LinkState, TransportEvent};
pub use tls::DeviceTls;
pub use tokenizer::{Splitter, Tokenizer, TokenizerError};
pub use udp::UdpLink;

use tokio::time::Instant;

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
    /// The driver's request is malformed or asks for something the host owns.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A limit of the module was reached (a response body over the limit).
    #[error("limit: {0}")]
    Limit(String),
    /// The device answered with something that is not a valid answer.
    #[error("device: {0}")]
    Device(String),
}

/// A module's device link, of the kind its driver declares. The sandbox holds one of
/// these so that it needs no code per transport; each method delegates to the inner link
/// (see [`Connection`] and [`UdpLink`] for what it means there).
#[derive(Debug)]
pub enum Link {
    /// A TCP stream.
    Tcp(Connection),
    /// A UDP socket.
    Udp(UdpLink),
}

impl Link {
    /// Send `bytes` to the device before `deadline`.
    pub async fn send(&self, bytes: Vec<u8>, deadline: Instant) -> Result<(), TransportError> {
        match self {
            Link::Tcp(link) => link.send(bytes, deadline).await,
            Link::Udp(link) => link.send(bytes, deadline).await,
        }
    }

    /// Split what the device sends with `tokenizer`, if the link can.
    pub fn set_tokenizer(&self, tokenizer: Tokenizer) -> Result<(), TransportError> {
        match self {
            Link::Tcp(link) => link.set_tokenizer(tokenizer),
            Link::Udp(link) => link.set_tokenizer(tokenizer),
        }
    }

    /// Whether the link is up.
    pub fn is_connected(&self) -> bool {
        match self {
            Link::Tcp(link) => link.is_connected(),
            Link::Udp(link) => link.is_connected(),
        }
    }

    /// Open the link now if it waits to be asked (TCP make-break).
    pub fn open(&self) {
        match self {
            Link::Tcp(link) => link.open(),
            Link::Udp(link) => link.open(),
        }
    }

    /// Close the link; it comes back as its kind does.
    pub fn disconnect(&self) {
        match self {
            Link::Tcp(link) => link.disconnect(),
            Link::Udp(link) => link.disconnect(),
        }
    }

    /// Where the link is in its life.
    pub fn state(&self) -> LinkState {
        match self {
            Link::Tcp(link) => link.state(),
            Link::Udp(link) => link.state(),
        }
    }

    /// Wait until the link is up or `deadline`, returning whether it is.
    pub async fn wait_connected(&self, deadline: Instant) -> bool {
        match self {
            Link::Tcp(link) => link.wait_connected(deadline).await,
            Link::Udp(link) => link.wait_connected(deadline).await,
        }
    }
}
