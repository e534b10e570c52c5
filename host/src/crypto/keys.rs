//! Master keys: generating them, the key file and the environment variable they are
//! loaded from, and the ring that rotation grows and retirement shrinks.
//!
//! The key file (and the `WARDEN_MASTER_KEYS` variable, with `;` allowed between lines)
//! holds one `key ID BASE64` line per key and one `active ID` line naming the key that
//! seals; the others only open records sealed before a rotation:
//!
//! ```text
//! # Warden master keys. Keep secret: mode 0600, never in the database or its backups.
//! active 2
//! key 1 q5Vb0r...=
//! key 2 Zt1m8H...=
//! ```
//!
//! The file is created with mode 0600 and refused when its group or others have any
//! access to it. It is rewritten atomically (a new 0600 file renamed over it).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use base64::Engine as _;
use zeroize::Zeroizing;

/// The environment variable that may hold the keys instead of a file.
pub const KEYS_VARIABLE: &str = "WARDEN_MASTER_KEYS";

/// A master key's id, recorded in every record it seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One AES-256 master key. Zeroized when dropped; never printed.
pub struct MasterKey {
    id: KeyId,
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn generate(id: KeyId) -> MasterKey {
        let mut bytes = Zeroizing::new([0_u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        MasterKey { id, bytes }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// Why keys could not be loaded, saved or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key file where one was expected.
    #[error("the master key file {0} does not exist")]
    Missing(PathBuf),
    /// The key file exists where a new one was to be created.
    #[error("the master key file {0} already exists")]
    Exists(PathBuf),
    /// Reading or writing the key file failed.
    #[error("master key file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// Group or others may access the key file.
    #[error(
        "the master key file {path} has mode {mode:o}: others can read it; refusing to use \
         it (chmod 600 it, and consider the key compromised)"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line that is not `active ID` or `key ID BASE64`, or a key that is not 32 bytes.
    #[error("master keys in {source_name}, line {line}: {why}")]
    Malformed {
        /// The file or variable.
        source_name: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong (never the key material).
        why: String,
    },
    /// No `active` line, or it names a key that is not there.
    #[error("master keys in {0}: no active key")]
    NoActive(String),
    /// Two keys with one id.
    #[error("master keys: key {0} appears twice")]
    Duplicate(KeyId),
    /// The active key cannot be retired.
    #[error("key {0} is the active key: rotate first, then retire it")]
    RetireActive(KeyId),
    /// No such key.
    #[error("there is no key {0}")]
    Unknown(KeyId),
    /// Rotating or retiring needs a key file; the keys came from the environment.
    #[error(
        "the master keys come from WARDEN_MASTER_KEYS: rotate them there (add a key, make it \
         active), then reseal"
    )]
    NotAFile,
}

/// The keys this host holds: one active (it seals), others that only open.
pub struct KeyRing {
    active: MasterKey,
    others: BTreeMap<KeyId, MasterKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active.id)
            .field("keys", &self.ids())
            .finish()
    }
}

impl KeyRing {
    /// A ring of `keys` in which `active` seals.
    pub fn new(keys: Vec<MasterKey>, active: KeyId) -> Result<KeyRing, KeyError> {
        let mut map = BTreeMap::new();
        for key in keys {
            let id = key.id;
            if map.insert(id, key).is_some() {
                return Err(KeyError::Duplicate(id));
            }
        }
        let active = map
            .remove(&active)
            .ok_or_else(|| KeyError::NoActive("the key ring".to_string()))?;
        Ok(KeyRing {
            active,
            others: map,
        })
    }

    /// The key that seals.
    pub fn active(&self) -> &MasterKey {
        &self.active
    }

    /// The key with `id`, if held.
    pub fn key(&self, id: KeyId) -> Option<&MasterKey> {
        if id == self.active.id {
            Some(&self.active)
        } else {
            self.others.get(&id)
        }
    }

    /// The ids of every key held, oldest first.
    pub fn ids(&self) -> Vec<KeyId> {
        let mut ids: Vec<KeyId> = self.others.keys().copied().collect();
        ids.push(self.active.id);
        ids.sort();
        ids
    }

    /// Hold `key` too, for opening (it does not become active). A key with the active
    /// key's id is ignored.
    pub fn add(&mut self, key: MasterKey) {
        if key.id != self.active.id {
            self.others.insert(key.id, key);
        }
    }

    /// Generate a new key and make it the active one; older keys still open what they
    /// sealed until every record has been sealed again and they are retired.
    pub fn rotate(&mut self) -> KeyId {
        let newest = self.ids().last().map_or(0, |id| id.0);
        let id = KeyId(newest.saturating_add(1));
        let previous = std::mem::replace(&mut self.active, MasterKey::generate(id));
        self.others.insert(previous.id, previous);
        id
    }

    /// Drop key `id`; records still sealed under it will no longer open.
    pub fn retire(&mut self, id: KeyId) -> Result<(), KeyError> {
        if id == self.active.id {
            return Err(KeyError::RetireActive(id));
        }
        self.others
            .remove(&id)
            .map(drop)
            .ok_or(KeyError::Unknown(id))
    }

    /// Parse keys from `text` (the file's format), naming `source_name` in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<KeyRing, KeyError> {
        let malformed = |line: usize, why: &str| KeyError::Malformed {
            source_name: source_name.to_string(),
            line,
            why: why.to_string(),
        };
        let mut keys = Vec::new();
        let mut active = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let id = |word: Option<&&str>| {
                word.and_then(|w| w.parse::<u32>().ok())
                    .filter(|id| *id > 0)
                    .map(KeyId)
                    .ok_or_else(|| malformed(number, "a key id is a number from 1"))
            };
            match words.first().copied() {
                Some("active") if words.len() == 2 => active = Some(id(words.get(1))?),
                Some("key") if words.len() == 3 => {
                    let id = id(words.get(1))?;
                    let decoded = Zeroizing::new(
                        base64::engine::general_purpose::STANDARD
                            .decode(words.get(2).copied().unwrap_or_default())
                            .map_err(|_| malformed(number, "the key is not base64"))?,
                    );
                    let mut bytes = Zeroizing::new([0_u8; 32]);
                    if decoded.len() != 32 {
                        return Err(malformed(
                            number,
                            "a key is 32 bytes (44 base64 characters)",
                        ));
                    }
                    bytes.copy_from_slice(&decoded);
                    keys.push(MasterKey { id, bytes });
                }
                _ => return Err(malformed(number, "expected `active ID` or `key ID BASE64`")),
            }
        }
        let active = active.ok_or_else(|| KeyError::NoActive(source_name.to_string()))?;
        KeyRing::new(keys, active).map_err(|error| match error {
            KeyError::NoActive(_) => KeyError::NoActive(source_name.to_string()),
            other => other,
        })
    }

    /// The keys in the file's format. Secret: write it only to a 0600 file.
    fn render(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::from(
            "# Warden master keys. Keep secret: mode 0600, never in the database or its \
             backups.\n# `active` seals; the other keys only open records sealed before a \
             rotation.\n",
        ));
        text.push_str(&format!("active {}\n", self.active.id.0));
        for key in self.others.values().chain(std::iter::once(&self.active)) {
            let encoded =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.bytes()));
            text.push_str(&format!("key {} {}\n", key.id.0, encoded.as_str()));
        }
        text
    }

    /// Load the keys from the file at `path`, refusing a file others can read.
    pub fn load_file(path: &Path) -> Result<KeyRing, KeyError> {
        let io = |error: std::io::Error| KeyError::Io {
            path: path.to_path_buf(),
            error,
        };
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing(path.to_path_buf()));
            }
            Err(error) => return Err(io(error)),
        };
        let mode = metadata.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        KeyRing::parse(&text, &path.display().to_string())
    }

    /// Create a key file at `path` (mode 0600, refused if it exists) holding one new key.
    pub fn create_file(path: &Path) -> Result<KeyRing, KeyError> {
        let ring = KeyRing::new(vec![MasterKey::generate(KeyId(1))], KeyId(1))?;
        write_new(path, &ring.render())?;
        Ok(ring)
    }

    /// The keys from [`KEYS_VARIABLE`] if it is set, else from the file at `path`,
    /// created with a new key when `create` is true and there is none.
    pub fn load(path: &Path, create: bool) -> Result<KeyRing, KeyError> {
        if let Some(text) = std::env::var_os(KEYS_VARIABLE) {
            // One line is easier to set in an environment: `;` separates lines there.
            let text = Zeroizing::new(text.to_string_lossy().replace(';', "\n"));
            return KeyRing::parse(&text, KEYS_VARIABLE);
        }
        match KeyRing::load_file(path) {
            Err(KeyError::Missing(_)) if create => KeyRing::create_file(path),
            other => other,
        }
    }

    /// Write the keys to `path`, replacing it atomically with a new 0600 file.
    pub fn save_file(&self, path: &Path) -> Result<(), KeyError> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".new-{}", std::process::id()));
        let temporary = PathBuf::from(temporary);
        let _ = std::fs::remove_file(&temporary);
        write_new(&temporary, &self.render())?;
        std::fs::rename(&temporary, path).map_err(|error| KeyError::Io {
            path: path.to_path_buf(),
            error,
        })
    }
}

/// Create `path` (refused if it exists) with mode 0600 and write `text`, synced to disk.
fn write_new(path: &Path, text: &str) -> Result<(), KeyError> {
    let io = |error: std::io::Error| KeyError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_path_buf())
            } else {
                io(error)
            }
        })?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::crypto::Binding;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "warden-keys-{name}-{}-{}",
            std::process::id(),
            OsRng.next_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_key_file_is_private_and_loads_back() {
        let dir = temp_dir("new");
        let path = dir.join("master.keys");
        let created = KeyRing::create_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = KeyRing::load_file(&path).unwrap();
        assert_eq!(loaded.ids(), vec![KeyId(1)]);
        assert_eq!(loaded.active().bytes(), created.active().bytes());
        assert!(matches!(
            KeyRing::create_file(&path),
            Err(KeyError::Exists(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = temp_dir("exposed");
        let path = dir.join("master.keys");
        KeyRing::create_file(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match KeyRing::load_file(&path) {
                Err(KeyError::Exposed { mode: seen, .. }) => assert_eq!(seen, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        assert!(matches!(
            KeyRing::load_file(&dir.join("absent")),
            Err(KeyError::Missing(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        let key = base64::engine::general_purpose::STANDARD.encode([7_u8; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([7_u8; 16]);
        let cases = [
            format!("key 1 {key}"),
            format!("active 2\nkey 1 {key}"),
            format!("active 1\nkey 1 {short}"),
            "active 1\nkey 1 not-base64!".to_string(),
            format!("active 1\nkey 0 {key}"),
            format!("active 1\nkey 1 {key}\nkey 1 {key}"),
            "active 1\nunexpected words here".to_string(),
        ];
        for text in cases {
            let error = KeyRing::parse(&text, "test").unwrap_err();
            let message = error.to_string();
            assert!(
                !message.contains(&key) && !message.contains(&short),
                "{message}"
            );
        }
        let ring = KeyRing::parse(&format!("# comment\nactive 1\n key 1 {key} "), "test").unwrap();
        assert_eq!(ring.active().id(), KeyId(1));
        assert!(!format!("{ring:?} {:?}", ring.active()).contains(&key));
    }

    #[test]
    fn rotation_seals_with_the_new_key_and_old_records_still_open() {
        let dir = temp_dir("rotate");
        let path = dir.join("master.keys");
        let mut ring = KeyRing::create_file(&path).unwrap();
        let here = Binding {
            table: "settings",
            row: "1",
            field: "value",
            level: "none",
        };
        let old = ring.seal(&here, b"before").unwrap();
        assert_eq!(ring.rotate(), KeyId(2));
        ring.save_file(&path).unwrap();
        let ring = KeyRing::load_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(ring.ids(), vec![KeyId(1), KeyId(2)]);
        assert_eq!(&ring.open(&here, &old).unwrap()[..], b"before");
        assert!(ring.needs_reseal(&old));
        let resealed = ring.reseal(&here, &old).unwrap();
        assert_eq!(KeyRing::sealed_with(&resealed), Some(KeyId(2)));
        assert!(!ring.needs_reseal(&resealed));

        let mut ring = ring;
        assert!(matches!(
            ring.retire(KeyId(2)),
            Err(KeyError::RetireActive(_))
        ));
        ring.retire(KeyId(1)).unwrap();
        assert_eq!(&ring.open(&here, &resealed).unwrap()[..], b"before");
        assert!(matches!(
            ring.open(&here, &old),
            Err(crate::crypto::CryptoError::UnknownKey { key: KeyId(1), .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
