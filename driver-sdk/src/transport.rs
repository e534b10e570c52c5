//! The host-owned connection to the module's device.
//!
//! The driver never names an address: the host connects to the endpoint the deployer
//! configured, reconnects when it drops, and splits the bytes into messages with the
//! [`Tokenizer`] the driver chose.

use std::time::Duration;

use crate::Result;
use crate::wit::transport as wit;

/// How received bytes are split into messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tokenizer {
    /// Every read is one message.
    Raw,
    /// Messages end with this byte sequence, which is removed.
    Delimiter(Vec<u8>),
    /// Messages carry their own length.
    LengthPrefixed {
        /// Bytes before the length field.
        offset: u32,
        /// Width of the length field: 1, 2 or 4 bytes.
        width: u8,
        /// Big-endian (network order) field.
        big_endian: bool,
        /// Added to the field's value to give the bytes after the field.
        adjust: i32,
    },
    /// Every message is exactly this many bytes.
    Fixed(u32),
}

/// Choose how received bytes become messages.
pub fn set_tokenizer(tokenizer: Tokenizer) -> Result<()> {
    let tokenizer = match tokenizer {
        Tokenizer::Raw => wit::Tokenizer::Raw,
        Tokenizer::Delimiter(bytes) => wit::Tokenizer::Delimiter(bytes),
        Tokenizer::LengthPrefixed {
            offset,
            width,
            big_endian,
            adjust,
        } => wit::Tokenizer::LengthPrefixed(wit::LengthPrefix {
            offset,
            width,
            big_endian,
            adjust,
        }),
        Tokenizer::Fixed(size) => wit::Tokenizer::Fixed(size),
    };
    wit::set_tokenizer(&tokenizer).map_err(Into::into)
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// True while the host holds an open connection to the device.
pub fn is_connected() -> bool {
    wit::is_connected()
}

/// Send bytes to the device.
pub fn send(data: impl AsRef<[u8]>) -> Result<()> {
    wit::send(data.as_ref()).map_err(Into::into)
}

/// Send bytes and wait up to `timeout` for the device's next message.
pub fn request(data: impl AsRef<[u8]>, timeout: Duration) -> Result<Vec<u8>> {
    wit::request(data.as_ref(), millis(timeout)).map_err(Into::into)
}

/// Wait up to `timeout` for the next message without sending.
pub fn receive(timeout: Duration) -> Result<Vec<u8>> {
    wit::receive(millis(timeout)).map_err(Into::into)
}

/// Close the connection; the host reconnects according to the module's policy.
pub fn disconnect() {
    wit::disconnect();
}
