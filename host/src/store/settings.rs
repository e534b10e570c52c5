//! Settings records: one sealed JSON object per parent and level, every version kept in
//! `settings_history` (the newest [`SETTINGS_VERSIONS_KEPT`](super::SETTINGS_VERSIONS_KEPT)),
//! and the merge a module's driver receives.
//!
//! The current value is sealed for `settings/<id>/value@<level>`, each version for
//! `settings_history/<id>@<revision>/value@<level>`, so no ciphertext opens anywhere but
//! where it was written.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{NewAuditEntry, append};
use super::model::Actor;
use super::{Result, SETTINGS_VERSIONS_KEPT, Store, StoreError, new_id};
use crate::crypto::Binding;
use crate::settings::{Audience, Level, ParentKind, ParentSettings, merge_layers};

/// The largest settings object accepted, as JSON text.
pub const MAX_SETTINGS_BYTES: usize = 1 << 20;

/// A settings record, without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SettingsRecord {
    /// `setting-…`.
    pub id: String,
    /// What it belongs to.
    pub parent_kind: ParentKind,
    /// The parent's id.
    pub parent_id: String,
    /// Its level.
    pub level: Level,
    /// Version number, from 1.
    pub revision: i64,
    /// Last written, Unix ms.
    pub updated_at: i64,
    /// By whom.
    pub updated_by: String,
}

/// One version of a settings record, opened.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SettingsVersion {
    /// Version number.
    pub revision: i64,
    /// The value then.
    pub value: Value,
    /// Written, Unix ms.
    pub updated_at: i64,
    /// By whom.
    pub updated_by: String,
}

impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl serde::Serialize for ParentKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

const COLUMNS: &str = "id, parent_kind, parent_id, level, revision, updated_at, updated_by";

fn record_from(row: &AnyRow) -> Result<SettingsRecord> {
    let id: String = row.try_get("id")?;
    let corrupt = |why: String| StoreError::Corrupt {
        record: format!("settings/{id}"),
        why,
    };
    let kind: String = row.try_get("parent_kind")?;
    let level: String = row.try_get("level")?;
    Ok(SettingsRecord {
        parent_kind: ParentKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown parent kind {kind:?}")))?,
        level: Level::parse(&level).ok_or_else(|| corrupt(format!("unknown level {level:?}")))?,
        parent_id: row.try_get("parent_id")?,
        revision: row.try_get("revision")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
        id,
    })
}

fn current_binding<'a>(id: &'a str, level: Level) -> Binding<'a> {
    Binding {
        table: "settings",
        row: id,
        field: "value",
        level: level.as_str(),
    }
}

fn version_row(id: &str, revision: i64) -> String {
    format!("{id}@{revision}")
}

fn version_binding<'a>(row: &'a str, level: Level) -> Binding<'a> {
    Binding {
        table: "settings_history",
        row,
        field: "value",
        level: level.as_str(),
    }
}

/// The opened JSON object, or an error naming the record.
fn parse_value(binding: &Binding<'_>, plaintext: &[u8]) -> Result<Value> {
    let value: Value = serde_json::from_slice(plaintext).map_err(|_| StoreError::Corrupt {
        record: binding.to_string(),
        why: "opened, but not the JSON this host seals".to_string(),
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(StoreError::Corrupt {
            record: binding.to_string(),
            why: "opened, but not a JSON object".to_string(),
        })
    }
}

fn parent_table(kind: ParentKind) -> &'static str {
    match kind {
        ParentKind::Driver => "drivers",
        ParentKind::Zone => "zones",
        ParentKind::System => "systems",
        ParentKind::Module => "modules",
    }
}

/// Remove every settings record of a parent, and their versions (inside its deletion).
pub(crate) async fn delete_parent_settings(
    conn: &mut AnyConnection,
    kind: ParentKind,
    id: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM settings_history WHERE settings_id IN \
         (SELECT id FROM settings WHERE parent_kind = $1 AND parent_id = $2)",
    )
    .bind(kind.as_str())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM settings WHERE parent_kind = $1 AND parent_id = $2")
        .bind(kind.as_str())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The top-level keys that differ between two objects (for the audit log: names, never
/// values).
fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|key| old.get(*key) != new.get(*key))
        .cloned()
        .collect()
}

impl Store {
    fn open_value(&self, binding: &Binding<'_>, record: &[u8]) -> Result<Value> {
        let plaintext = self.keys().open(binding, record)?;
        parse_value(binding, &plaintext)
    }

    async fn current_record(
        &self,
        conn: &mut AnyConnection,
        kind: ParentKind,
        parent: &str,
        level: Level,
    ) -> Result<Option<(SettingsRecord, Vec<u8>)>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, value FROM settings \
             WHERE parent_kind = $1 AND parent_id = $2 AND level = $3"
        ))
        .bind(kind.as_str())
        .bind(parent)
        .bind(level.as_str())
        .fetch_optional(conn)
        .await?;
        match row {
            Some(row) => Ok(Some((record_from(&row)?, row.try_get("value")?))),
            None => Ok(None),
        }
    }

    /// Replace the settings of `parent` at `level` with `value` (a JSON object), keeping
    /// the previous version.
    pub async fn set_settings(
        &self,
        actor: &Actor,
        kind: ParentKind,
        parent: &str,
        level: Level,
        value: &Value,
    ) -> Result<SettingsRecord> {
        if !value.is_object() {
            return Err(StoreError::invalid("settings", "must be a JSON object"));
        }
        let text = value.to_string();
        if text.len() > MAX_SETTINGS_BYTES {
            return Err(StoreError::invalid(
                "settings",
                format!("larger than {MAX_SETTINGS_BYTES} bytes"),
            ));
        }
        let ring = self.keys().current()?;
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query(&format!(
            "SELECT id FROM {} WHERE id = $1",
            parent_table(kind)
        ))
        .bind(parent)
        .fetch_optional(tx.conn())
        .await?;
        if exists.is_none() {
            return Err(StoreError::invalid(
                "parent_id",
                format!("no {kind} {parent}"),
            ));
        }
        let previous = self.current_record(tx.conn(), kind, parent, level).await?;
        let (id, revision, old_value) = match &previous {
            Some((record, sealed)) => {
                let old = self.open_value(&current_binding(&record.id, level), sealed)?;
                (record.id.clone(), record.revision + 1, old)
            }
            None => (new_id("setting"), 1, json!({})),
        };
        let sealed = ring.seal(&current_binding(&id, level), text.as_bytes())?;
        let key_id = i64::from(ring.active().id().0);
        if previous.is_some() {
            sqlx::query(
                "UPDATE settings SET value = $2, key_id = $3, revision = $4, updated_at = $5, \
                 updated_by = $6 WHERE id = $1",
            )
            .bind(&id)
            .bind(sealed)
            .bind(key_id)
            .bind(revision)
            .bind(now)
            .bind(&actor.0)
            .execute(tx.conn())
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO settings (id, parent_kind, parent_id, level, value, key_id, \
                 revision, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&id)
            .bind(kind.as_str())
            .bind(parent)
            .bind(level.as_str())
            .bind(sealed)
            .bind(key_id)
            .bind(revision)
            .bind(now)
            .bind(&actor.0)
            .execute(tx.conn())
            .await?;
        }
        let row = version_row(&id, revision);
        let version = ring.seal(&version_binding(&row, level), text.as_bytes())?;
        sqlx::query(
            "INSERT INTO settings_history (settings_id, revision, level, value, key_id, \
             updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(revision)
        .bind(level.as_str())
        .bind(version)
        .bind(key_id)
        .bind(now)
        .bind(&actor.0)
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM settings_history WHERE settings_id = $1 AND revision <= $2")
            .bind(&id)
            .bind(revision - SETTINGS_VERSIONS_KEPT)
            .execute(tx.conn())
            .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "settings.set", kind.as_str(), parent).details(json!({
                "settings_id": id, "level": level.as_str(), "revision": revision,
                "changed_keys": changed_keys(&old_value, value),
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(SettingsRecord {
            id,
            parent_kind: kind,
            parent_id: parent.to_string(),
            level,
            revision,
            updated_at: now,
            updated_by: actor.0.clone(),
        })
    }

    /// The settings of `parent` at `level`, opened; `None` when there are none.
    pub async fn settings(
        &self,
        kind: ParentKind,
        parent: &str,
        level: Level,
    ) -> Result<Option<(SettingsRecord, Value)>> {
        let mut conn = self.pool().acquire().await?;
        match self.current_record(&mut conn, kind, parent, level).await? {
            Some((record, sealed)) => {
                let value = self.open_value(&current_binding(&record.id, level), &sealed)?;
                Ok(Some((record, value)))
            }
            None => Ok(None),
        }
    }

    /// The settings record `id`, without its value.
    pub async fn settings_record(&self, id: &str) -> Result<SettingsRecord> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM settings WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("settings", id))?;
        record_from(&row)
    }

    /// Every settings record of `parent`, without values.
    pub async fn settings_records(
        &self,
        kind: ParentKind,
        parent: &str,
    ) -> Result<Vec<SettingsRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM settings WHERE parent_kind = $1 AND parent_id = $2"
        ))
        .bind(kind.as_str())
        .bind(parent)
        .fetch_all(self.pool())
        .await?;
        let mut records = rows.iter().map(record_from).collect::<Result<Vec<_>>>()?;
        records.sort_by_key(|record| record.level);
        Ok(records)
    }

    /// Remove the settings of `parent` at `level` and their versions.
    pub async fn delete_settings(
        &self,
        actor: &Actor,
        kind: ParentKind,
        parent: &str,
        level: Level,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let Some((record, _)) = self.current_record(tx.conn(), kind, parent, level).await? else {
            return Err(StoreError::not_found(
                "settings",
                &format!("{kind} {parent} at level {level}"),
            ));
        };
        sqlx::query("DELETE FROM settings_history WHERE settings_id = $1")
            .bind(&record.id)
            .execute(tx.conn())
            .await?;
        sqlx::query("DELETE FROM settings WHERE id = $1")
            .bind(&record.id)
            .execute(tx.conn())
            .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "settings.delete", kind.as_str(), parent)
                .details(json!({"settings_id": record.id, "level": level.as_str()})),
        )
        .await?;
        tx.commit().await
    }

    /// The versions of settings record `id`, newest first, opened.
    pub async fn settings_history(&self, id: &str) -> Result<Vec<SettingsVersion>> {
        let record = self.settings_record(id).await?;
        let rows = sqlx::query(
            "SELECT revision, value, updated_at, updated_by FROM settings_history \
             WHERE settings_id = $1 ORDER BY revision DESC",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let mut versions = Vec::with_capacity(rows.len());
        for row in &rows {
            let revision: i64 = row.try_get("revision")?;
            let sealed: Vec<u8> = row.try_get("value")?;
            let name = version_row(id, revision);
            versions.push(SettingsVersion {
                value: self.open_value(&version_binding(&name, record.level), &sealed)?,
                revision,
                updated_at: row.try_get("updated_at")?,
                updated_by: row.try_get("updated_by")?,
            });
        }
        Ok(versions)
    }

    /// Every level of `parent`'s settings, opened.
    pub async fn parent_settings(&self, kind: ParentKind, parent: &str) -> Result<ParentSettings> {
        let rows = sqlx::query(
            "SELECT id, level, value FROM settings WHERE parent_kind = $1 AND parent_id = $2",
        )
        .bind(kind.as_str())
        .bind(parent)
        .fetch_all(self.pool())
        .await?;
        let mut layer = ParentSettings::new();
        for row in &rows {
            let (level, value) = self.open_row(row)?;
            layer.insert(level, value);
        }
        Ok(layer)
    }

    /// A current settings row's level and opened value.
    fn open_row(&self, row: &AnyRow) -> Result<(Level, Value)> {
        let id: String = row.try_get("id")?;
        let level_name: String = row.try_get("level")?;
        let level = Level::parse(&level_name).ok_or_else(|| StoreError::Corrupt {
            record: format!("settings/{id}"),
            why: format!("unknown level {level_name:?}"),
        })?;
        let sealed: Vec<u8> = row.try_get("value")?;
        Ok((
            level,
            self.open_value(&current_binding(&id, level), &sealed)?,
        ))
    }

    /// A module's settings as `audience` receives them: its driver's defaults, then the
    /// records of its driver, its home system's zones in order, that system and the module
    /// (see [`crate::settings`]). Three queries whatever the number of zones: the module
    /// with its driver, the home system's zones, and every record on the path.
    pub async fn module_settings(&self, module: &str, audience: Audience) -> Result<Value> {
        let mut conn = self.pool().acquire().await?;
        let row = sqlx::query(
            "SELECT m.driver_id AS driver_id, m.system_id AS system_id, d.metadata AS metadata \
             FROM modules m JOIN drivers d ON d.id = m.driver_id WHERE m.id = $1",
        )
        .bind(module)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::not_found("module", module))?;
        let driver: String = row.try_get("driver_id")?;
        let system: Option<String> = row.try_get("system_id")?;
        let metadata: Value = super::json_column(&row, "metadata", || format!("drivers/{driver}"))?;
        let defaults = metadata
            .get("default_settings")
            .cloned()
            .unwrap_or_else(|| json!({}));
        // The parents whose records merge, lowest precedence first.
        let mut parents = vec![(ParentKind::Driver, driver)];
        if let Some(system) = system {
            let zones = sqlx::query(
                "SELECT zone_id FROM system_zones WHERE system_id = $1 ORDER BY position",
            )
            .bind(&system)
            .fetch_all(&mut *conn)
            .await?;
            for zone in &zones {
                parents.push((ParentKind::Zone, zone.try_get("zone_id")?));
            }
            parents.push((ParentKind::System, system));
        }
        parents.push((ParentKind::Module, module.to_string()));
        let placeholders: Vec<String> = (1..=parents.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, parent_kind, parent_id, level, value FROM settings \
             WHERE parent_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (_, id) in &parents {
            query = query.bind(id.clone());
        }
        let rows = query.fetch_all(&mut *conn).await?;
        drop(conn);
        let mut layers = vec![ParentSettings::new(); parents.len()];
        for row in &rows {
            let kind: String = row.try_get("parent_kind")?;
            let parent: String = row.try_get("parent_id")?;
            let at = parents
                .iter()
                .position(|(k, id)| k.as_str() == kind && *id == parent);
            if let Some(layer) = at.and_then(|at| layers.get_mut(at)) {
                let (level, value) = self.open_row(row)?;
                layer.insert(level, value);
            }
        }
        Ok(merge_layers(&defaults, &layers, audience))
    }

    /// The modules whose merged settings include `parent`'s records.
    pub async fn modules_under(&self, kind: ParentKind, parent: &str) -> Result<Vec<String>> {
        let sql = match kind {
            ParentKind::Module => "SELECT id FROM modules WHERE id = $1",
            ParentKind::Driver => "SELECT id FROM modules WHERE driver_id = $1",
            ParentKind::System => "SELECT id FROM modules WHERE system_id = $1",
            ParentKind::Zone => {
                "SELECT id FROM modules WHERE system_id IN \
                 (SELECT system_id FROM system_zones WHERE zone_id = $1)"
            }
        };
        let rows = sqlx::query(sql).bind(parent).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| row.try_get("id").map_err(StoreError::from))
            .collect()
    }
}
