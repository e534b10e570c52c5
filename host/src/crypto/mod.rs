//! Encryption at rest: AES-256-GCM sealing of settings and credentials, bound to where
//! each record lives, under a ring of master keys that can be rotated.
//!
//! A sealed record is `version (1 byte) | key id (4 bytes, big-endian) | nonce (12 bytes)
//! | ciphertext and tag (16 bytes)`. Each seal draws a fresh random 96-bit nonce from the
//! operating system. The associated data ([`Binding`]) names the record's table, row id,
//! field and settings level, and covers the version and key id too, so a ciphertext copied
//! to another row, field or level — or given another header — fails to open, and the tag
//! is always checked before a byte of plaintext is returned.
//!
//! Master keys live in a key file created with mode 0600 (refused when group or others
//! may read it) or in an environment variable (see [`keys`]); never in the database.
//! Keys are zeroized when dropped and never printed: their `Debug` shows the id only.

pub mod keys;
mod seal;

pub use keys::{KeyError, KeyId, KeyRing, MasterKey};
pub use seal::{Binding, CryptoError, FORMAT_VERSION};
