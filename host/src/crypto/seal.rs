//! Sealing and opening one record.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::keys::{KeyId, KeyRing};

/// The record layout this code writes.
pub const FORMAT_VERSION: u8 = 1;

const HEADER: usize = 1 + 4;
const NONCE: usize = 12;
const TAG: usize = 16;

/// Where a sealed record lives. Every part is authenticated: a record opens only where it
/// was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The table, such as `settings`.
    pub table: &'a str,
    /// The row's id.
    pub row: &'a str,
    /// The field, such as `value` or `password`.
    pub field: &'a str,
    /// The settings level (`none`, `support`, `admin`, `never_displayed`), or `""` for
    /// a field without one.
    pub level: &'a str,
}

impl Binding<'_> {
    /// The associated data: a domain label, then each part length-prefixed (so no two
    /// bindings encode alike), then the record's header.
    fn associated_data(&self, version: u8, key: KeyId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64);
        aad.extend_from_slice(b"warden:seal");
        for part in [self.table, self.row, self.field, self.level] {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad.push(version);
        aad.extend_from_slice(&key.0.to_be_bytes());
        aad
    }
}

impl std::fmt::Display for Binding<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.table, self.row, self.field)?;
        if !self.level.is_empty() {
            write!(f, "@{}", self.level)?;
        }
        Ok(())
    }
}

/// Why a record could not be sealed or opened. Each names the record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Shorter than a header, a nonce and a tag.
    #[error("sealed record {0} is truncated")]
    Truncated(String),
    /// A layout this host does not know.
    #[error("sealed record {record} has unknown format version {version}")]
    UnknownVersion {
        /// The record.
        record: String,
        /// Its version byte.
        version: u8,
    },
    /// Sealed under a key the ring does not hold (retired, or from another installation).
    #[error("sealed record {record} needs master key {key}, which is not loaded")]
    UnknownKey {
        /// The record.
        record: String,
        /// The key id it names.
        key: KeyId,
    },
    /// The tag did not verify: the wrong key, or a record altered or moved from where it
    /// was sealed.
    #[error(
        "sealed record {0} failed authentication: it was altered, moved from another row, \
         field or level, or sealed under another key"
    )]
    Forged(String),
    /// The cipher refused to seal (never expected).
    #[error("sealing {0} failed")]
    Seal(String),
}

impl KeyRing {
    /// Seal `plaintext` for `binding` under the active key.
    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.active();
        let cipher = Aes256Gcm::new(key.bytes().into());
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = binding.associated_data(FORMAT_VERSION, key.id());
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Seal(binding.to_string()))?;
        let mut record = Vec::with_capacity(HEADER + NONCE + sealed.len());
        record.push(FORMAT_VERSION);
        record.extend_from_slice(&key.id().0.to_be_bytes());
        record.extend_from_slice(&nonce);
        record.extend_from_slice(&sealed);
        Ok(record)
    }

    /// Open `record`, sealed for `binding`. The plaintext is zeroized when dropped.
    pub fn open(
        &self,
        binding: &Binding<'_>,
        record: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let name = || binding.to_string();
        if record.len() < HEADER + NONCE + TAG {
            return Err(CryptoError::Truncated(name()));
        }
        let (header, rest) = record.split_at(HEADER);
        let (nonce, sealed) = rest.split_at(NONCE);
        let version = header.first().copied().unwrap_or_default();
        if version != FORMAT_VERSION {
            return Err(CryptoError::UnknownVersion {
                record: name(),
                version,
            });
        }
        let id = KeyId(u32::from_be_bytes(
            header
                .get(1..HEADER)
                .and_then(|bytes| bytes.try_into().ok())
                .unwrap_or_default(),
        ));
        let key = self.key(id).ok_or_else(|| CryptoError::UnknownKey {
            record: name(),
            key: id,
        })?;
        let cipher = Aes256Gcm::new(key.bytes().into());
        let aad = binding.associated_data(version, id);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Forged(name()))
    }

    /// The key id `record` was sealed under, if it has a header this host knows.
    pub fn sealed_with(record: &[u8]) -> Option<KeyId> {
        match record {
            [FORMAT_VERSION, a, b, c, d, ..] if record.len() >= HEADER + NONCE + TAG => {
                Some(KeyId(u32::from_be_bytes([*a, *b, *c, *d])))
            }
            _ => None,
        }
    }

    /// Whether `record` should be sealed again under the active key (rotation).
    pub fn needs_reseal(&self, record: &[u8]) -> bool {
        KeyRing::sealed_with(record) != Some(self.active().id())
    }

    /// Open `record` and seal it again under the active key, for the same binding.
    pub fn reseal(&self, binding: &Binding<'_>, record: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let plaintext = self.open(binding, record)?;
        self.seal(binding, &plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::MasterKey;

    fn binding(row: &str) -> Binding<'_> {
        Binding {
            table: "settings",
            row,
            field: "value",
            level: "admin",
        }
    }

    fn ring() -> KeyRing {
        KeyRing::new(vec![MasterKey::generate(KeyId(1))], KeyId(1)).unwrap()
    }

    #[test]
    fn a_record_opens_where_it_was_sealed_and_nowhere_else() {
        let ring = ring();
        let here = binding("42");
        let record = ring.seal(&here, b"{\"password\":\"hunter2\"}").unwrap();
        assert_eq!(record.len(), HEADER + NONCE + 22 + TAG);
        assert!(!record.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            &ring.open(&here, &record).unwrap()[..],
            b"{\"password\":\"hunter2\"}"
        );
        let elsewhere = [
            Binding { row: "43", ..here },
            Binding {
                table: "credentials",
                ..here
            },
            Binding {
                field: "notes",
                ..here
            },
            Binding {
                level: "support",
                ..here
            },
            Binding { level: "", ..here },
        ];
        for other in elsewhere {
            assert_eq!(
                ring.open(&other, &record),
                Err(CryptoError::Forged(other.to_string())),
                "{other}"
            );
        }
    }

    #[test]
    fn nonces_are_fresh_for_every_seal() {
        let ring = ring();
        let a = ring.seal(&binding("1"), b"same").unwrap();
        let b = ring.seal(&binding("1"), b"same").unwrap();
        assert_ne!(a.get(HEADER..HEADER + NONCE), b.get(HEADER..HEADER + NONCE));
        assert_ne!(a, b);
    }

    #[test]
    fn damaged_records_fail_with_an_error_naming_them() {
        let ring = ring();
        let here = binding("7");
        let record = ring.seal(&here, b"secret").unwrap();
        for index in [HEADER, HEADER + NONCE, record.len() - 1] {
            let mut flipped = record.clone();
            flipped[index] ^= 0x01;
            assert_eq!(
                ring.open(&here, &flipped),
                Err(CryptoError::Forged("settings/7/value@admin".into()))
            );
        }
        assert_eq!(
            ring.open(&here, &record[..HEADER + NONCE + TAG - 1]),
            Err(CryptoError::Truncated("settings/7/value@admin".into()))
        );
        let mut future = record.clone();
        future[0] = 9;
        assert!(matches!(
            ring.open(&here, &future),
            Err(CryptoError::UnknownVersion { version: 9, .. })
        ));
        let mut other_key = record.clone();
        other_key[4] = 2;
        assert!(matches!(
            ring.open(&here, &other_key),
            Err(CryptoError::UnknownKey { key: KeyId(2), .. })
        ));
        // Another installation's key cannot open it either.
        let stranger = KeyRing::new(vec![MasterKey::generate(KeyId(1))], KeyId(1)).unwrap();
        assert!(matches!(
            stranger.open(&here, &record),
            Err(CryptoError::Forged(_))
        ));
    }

    #[test]
    fn the_header_is_authenticated_too() {
        // Two keys in the ring: relabelling a record with the other key's id fails the
        // tag even though that key is present.
        let mut ring = ring();
        ring.add(MasterKey::generate(KeyId(2)));
        let here = binding("9");
        let mut record = ring.seal(&here, b"secret").unwrap();
        record[4] = 2;
        assert!(matches!(
            ring.open(&here, &record),
            Err(CryptoError::Forged(_))
        ));
    }
}
