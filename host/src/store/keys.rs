//! Where the store's master keys come from, and key rotation without downtime.
//!
//! A file-backed [`KeySource`] notices when the key file changes (another process rotated
//! or retired a key) and reloads it before the next seal, and when a record names a key it
//! does not hold: a running host keeps reading and writing while `warden keys rotate`
//! works, and starts sealing under the new key as soon as the file names it. A file that
//! becomes unreadable or readable by others is refused, not ignored: sealing fails closed.
//!
//! Rotation adds a key, makes it active, then re-encrypts every sealed record still under
//! an older key in batches of one short transaction each, skipping (and revisiting) a
//! record that changed in between. A key can be retired only when no record uses it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use sqlx::Row;
use zeroize::Zeroizing;

use super::{Result, Store, StoreError};
use crate::crypto::{Binding, CryptoError, KeyError, KeyId, KeyRing};
use crate::settings::Level;

/// What identifies one version of the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: i64,
    modified_nanos: i64,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp {
        inode: m.ino(),
        modified: m.mtime(),
        modified_nanos: m.mtime_nsec(),
        len: m.len(),
    })
}

/// The master keys, fixed or from a key file that is watched for changes.
#[derive(Debug)]
pub struct KeySource {
    ring: RwLock<Arc<KeyRing>>,
    file: Option<(PathBuf, Mutex<Option<Stamp>>)>,
}

impl KeySource {
    /// Keys given directly (tests, or keys from the environment).
    pub fn fixed(ring: KeyRing) -> KeySource {
        KeySource {
            ring: RwLock::new(Arc::new(ring)),
            file: None,
        }
    }

    /// Keys from `WARDEN_MASTER_KEYS` when it is set (fixed), else from the key file at
    /// `path` (watched), created with a new key when `create` is true and there is none.
    pub fn load(path: &Path, create: bool) -> Result<KeySource, KeyError> {
        if std::env::var_os(crate::crypto::keys::KEYS_VARIABLE).is_some() {
            return Ok(KeySource::fixed(KeyRing::load(path, false)?));
        }
        KeySource::file(path, create)
    }

    /// Keys from the key file at `path` only (watched).
    pub fn file(path: &Path, create: bool) -> Result<KeySource, KeyError> {
        let ring = match KeyRing::load_file(path) {
            Err(KeyError::Missing(_)) if create => KeyRing::create_file(path)?,
            other => other?,
        };
        Ok(KeySource {
            ring: RwLock::new(Arc::new(ring)),
            file: Some((path.to_path_buf(), Mutex::new(stamp(path)))),
        })
    }

    fn cached(&self) -> Arc<KeyRing> {
        Arc::clone(&self.ring.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn install(&self, ring: KeyRing) -> Arc<KeyRing> {
        let ring = Arc::new(ring);
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&ring);
        ring
    }

    /// The keys now: reloaded first when the key file changed since it was last read.
    pub fn current(&self) -> Result<Arc<KeyRing>, KeyError> {
        let Some((path, seen)) = &self.file else {
            return Ok(self.cached());
        };
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(path);
        if now.is_some() && now == *seen {
            return Ok(self.cached());
        }
        let ring = KeyRing::load_file(path)?;
        *seen = now;
        Ok(self.install(ring))
    }

    /// Open `record` for `binding`; when it names a key not held, reload the key file once
    /// and try again.
    pub fn open(
        &self,
        binding: &Binding<'_>,
        record: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        match self.cached().open(binding, record) {
            Err(CryptoError::UnknownKey { .. }) if self.file.is_some() => {
                Ok(self.current()?.open(binding, record)?)
            }
            other => Ok(other?),
        }
    }

    /// Add a new key to the key file and make it active; returns its id.
    pub fn rotate(&self) -> Result<KeyId, KeyError> {
        let (path, seen) = self.file.as_ref().ok_or(KeyError::NotAFile)?;
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut ring = KeyRing::load_file(path)?;
        let id = ring.rotate();
        ring.save_file(path)?;
        *seen = stamp(path);
        self.install(ring);
        Ok(id)
    }

    fn retire(&self, id: KeyId) -> Result<(), KeyError> {
        let (path, seen) = self.file.as_ref().ok_or(KeyError::NotAFile)?;
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut ring = KeyRing::load_file(path)?;
        ring.retire(id)?;
        ring.save_file(path)?;
        *seen = stamp(path);
        self.install(ring);
        Ok(())
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationReport {
    /// The active key now.
    pub active: u32,
    /// Records sealed again under it.
    pub resealed: u64,
    /// Records sealed under each key, after the rotation.
    pub records_by_key: Vec<(u32, i64)>,
}

/// Rows re-encrypted per transaction.
pub const RESEAL_BATCH: i64 = 200;

impl Store {
    /// Records sealed under each key id, smallest id first.
    pub async fn records_by_key(&self) -> Result<Vec<(u32, i64)>> {
        let rows = sqlx::query(
            "SELECT key_id, COUNT(*) AS n FROM \
             (SELECT key_id FROM settings UNION ALL SELECT key_id FROM settings_history \
             UNION ALL SELECT key_id FROM user_passwords UNION ALL SELECT key_id FROM signing_keys \
             UNION ALL SELECT key_id FROM repositories WHERE credentials IS NOT NULL) AS sealed \
             GROUP BY key_id ORDER BY key_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get("key_id")?;
                Ok((u32::try_from(id).unwrap_or_default(), row.try_get("n")?))
            })
            .collect()
    }

    /// Re-encrypt every record not sealed under the active key, `batch` rows per
    /// transaction; returns how many were sealed again.
    pub async fn reseal_all(&self, batch: i64) -> Result<u64> {
        let batch = batch.clamp(1, 10_000);
        let mut resealed = 0;
        loop {
            let ring = self.keys().current()?;
            let active = i64::from(ring.active().id().0);
            let done = self.reseal_batch(&ring, active, batch).await?;
            if done == 0 {
                break;
            }
            resealed += done;
        }
        Ok(resealed)
    }

    async fn reseal_batch(&self, ring: &KeyRing, active: i64, batch: i64) -> Result<u64> {
        let mut done = 0;
        let mut tx = self.begin_write().await?;
        let current = sqlx::query(
            "SELECT id, level, value, revision FROM settings WHERE key_id <> $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(active)
        .bind(batch)
        .fetch_all(tx.conn())
        .await?;
        for row in &current {
            let id: String = row.try_get("id")?;
            let level = stored_level(row, &format!("settings/{id}"))?;
            let sealed: Vec<u8> = row.try_get("value")?;
            let binding = Binding {
                table: "settings",
                row: &id,
                field: "value",
                level: level.as_str(),
            };
            let fresh = ring.reseal(&binding, &sealed)?;
            let revision: i64 = row.try_get("revision")?;
            let updated = sqlx::query(
                "UPDATE settings SET value = $2, key_id = $3 WHERE id = $1 AND revision = $4",
            )
            .bind(&id)
            .bind(fresh)
            .bind(active)
            .bind(revision)
            .execute(tx.conn())
            .await?;
            done += updated.rows_affected();
        }
        let versions = sqlx::query(
            "SELECT settings_id, revision, level, value FROM settings_history \
             WHERE key_id <> $1 ORDER BY settings_id, revision LIMIT $2",
        )
        .bind(active)
        .bind(batch)
        .fetch_all(tx.conn())
        .await?;
        for row in &versions {
            let id: String = row.try_get("settings_id")?;
            let revision: i64 = row.try_get("revision")?;
            let name = format!("{id}@{revision}");
            let level = stored_level(row, &format!("settings_history/{name}"))?;
            let sealed: Vec<u8> = row.try_get("value")?;
            let binding = Binding {
                table: "settings_history",
                row: &name,
                field: "value",
                level: level.as_str(),
            };
            let fresh = ring.reseal(&binding, &sealed)?;
            let updated = sqlx::query(
                "UPDATE settings_history SET value = $3, key_id = $4 \
                 WHERE settings_id = $1 AND revision = $2",
            )
            .bind(&id)
            .bind(revision)
            .bind(fresh)
            .bind(active)
            .execute(tx.conn())
            .await?;
            done += updated.rows_affected();
        }
        for column in SIMPLE_SEALED {
            done += reseal_column(tx.conn(), ring, active, batch, column).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Rotate: a new active key in the key file, then every record sealed again under it.
    pub async fn rotate_keys(&self) -> Result<RotationReport> {
        let active = self.keys().rotate()?;
        let resealed = self.reseal_all(RESEAL_BATCH).await?;
        Ok(RotationReport {
            active: active.0,
            resealed,
            records_by_key: self.records_by_key().await?,
        })
    }

    /// Retire key `id`: refused while any record is still sealed under it.
    pub async fn retire_key(&self, id: KeyId) -> Result<()> {
        if self.keys().current()?.active().id() == id {
            return Err(KeyError::RetireActive(id).into());
        }
        let still = self
            .records_by_key()
            .await?
            .into_iter()
            .find(|(key, _)| *key == id.0)
            .map_or(0, |(_, n)| n);
        if still > 0 {
            return Err(StoreError::Conflict(format!(
                "{still} records are still sealed under key {}; run `warden keys rotate` \
                 (or reseal) first",
                id.0
            )));
        }
        Ok(self.keys().retire(id)?)
    }
}

/// A sealed field without a level, in a table whose rows are guarded against concurrent
/// change by a column that every write of the field changes.
struct SealedColumn {
    table: &'static str,
    id: &'static str,
    field: &'static str,
    guard: &'static str,
}

/// The sealed fields besides settings (which have levels and versions).
const SIMPLE_SEALED: &[SealedColumn] = &[
    SealedColumn {
        table: "user_passwords",
        id: "user_id",
        field: "phc",
        guard: "updated_at",
    },
    SealedColumn {
        table: "signing_keys",
        id: "id",
        field: "private_key",
        guard: "created_at",
    },
    SealedColumn {
        table: "repositories",
        id: "id",
        field: "credentials",
        guard: "updated_at",
    },
];

/// Re-encrypt up to `batch` records of `column` not sealed under `active`.
async fn reseal_column(
    conn: &mut sqlx::AnyConnection,
    ring: &KeyRing,
    active: i64,
    batch: i64,
    column: &SealedColumn,
) -> Result<u64> {
    let SealedColumn {
        table,
        id,
        field,
        guard,
    } = column;
    let rows = sqlx::query(&format!(
        "SELECT {id} AS id, {field} AS sealed, {guard} AS guard FROM {table} \
         WHERE key_id <> $1 AND {field} IS NOT NULL ORDER BY {id} LIMIT $2"
    ))
    .bind(active)
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let mut done = 0;
    for row in &rows {
        let row_id: String = row.try_get("id")?;
        let sealed: Vec<u8> = row.try_get("sealed")?;
        let binding = Binding {
            table,
            row: &row_id,
            field,
            level: "",
        };
        let fresh = ring.reseal(&binding, &sealed)?;
        let guard_value: i64 = row.try_get("guard")?;
        let updated = sqlx::query(&format!(
            "UPDATE {table} SET {field} = $2, key_id = $3 WHERE {id} = $1 AND {guard} = $4"
        ))
        .bind(&row_id)
        .bind(fresh)
        .bind(active)
        .bind(guard_value)
        .execute(&mut *conn)
        .await?;
        done += updated.rows_affected();
    }
    Ok(done)
}

fn stored_level(row: &sqlx::any::AnyRow, record: &str) -> Result<Level> {
    let name: String = row.try_get("level")?;
    Level::parse(&name).ok_or_else(|| StoreError::Corrupt {
        record: record.to_string(),
        why: format!("unknown level {name:?}"),
    })
}
