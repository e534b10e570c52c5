//! Modules: device (or logic) instances of drivers.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{NewAuditEntry, append};
use super::model::{Actor, ListQuery, ModulePatch, ModuleRecord, NewModule, Page};
use super::settings::delete_parent_settings;
use super::{Result, Store, StoreError, like_pattern, new_id};
use crate::settings::ParentKind;

const COLUMNS: &str = "m.id AS id, m.driver_id AS driver_id, m.endpoint AS endpoint, \
                       m.uri AS uri, m.custom_name AS custom_name, m.notes AS notes, \
                       m.running AS running, m.system_id AS system_id, \
                       m.created_at AS created_at, m.updated_at AS updated_at";

fn module_from(row: &AnyRow) -> Result<ModuleRecord> {
    Ok(ModuleRecord {
        id: row.try_get("id")?,
        driver_id: row.try_get("driver_id")?,
        endpoint: row.try_get("endpoint")?,
        uri: row.try_get("uri")?,
        custom_name: row.try_get("custom_name")?,
        notes: row.try_get("notes")?,
        running: row.try_get::<i64, _>("running")? != 0,
        system_id: row.try_get("system_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Option<ModuleRecord>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM modules m WHERE m.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(module_from).transpose()
}

/// Trimmed, or `None` when blank.
fn optional(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Refuse an endpoint that is not `host:port` or a base URI that is not an http(s) origin
/// with an optional path: what the runtime would refuse to start with.
fn check_target(endpoint: &Option<String>, uri: &Option<String>) -> Result<()> {
    if let Some(endpoint) = endpoint {
        endpoint
            .parse::<crate::capability::Endpoint>()
            .map_err(|error| StoreError::invalid("endpoint", error.to_string()))?;
    }
    if let Some(uri) = uri {
        uri.parse::<crate::capability::BaseUri>()
            .map_err(|error| StoreError::invalid("uri", error.to_string()))?;
    }
    Ok(())
}

async fn check_driver(conn: &mut AnyConnection, driver: &str) -> Result<()> {
    let exists = sqlx::query("SELECT id FROM drivers WHERE id = $1")
        .bind(driver)
        .fetch_optional(conn)
        .await?;
    match exists {
        Some(_) => Ok(()),
        None => Err(StoreError::invalid(
            "driver_id",
            format!("no driver {driver}"),
        )),
    }
}

/// Which modules a list returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleFilter {
    /// Only modules of this driver.
    pub driver_id: Option<String>,
    /// Only modules in this system.
    pub system_id: Option<String>,
    /// Only modules that should be running (`Some(true)`) or stopped.
    pub running: Option<bool>,
}

impl Store {
    /// Create a module. The endpoint and URI are checked for form; whether the driver's
    /// transport needs one or the other is checked when the module starts.
    pub async fn create_module(&self, actor: &Actor, new: &NewModule) -> Result<ModuleRecord> {
        let id = new_id("mod");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        check_driver(tx.conn(), &new.driver_id).await?;
        let endpoint = optional(&new.endpoint);
        let uri = optional(&new.uri);
        check_target(&endpoint, &uri)?;
        sqlx::query(
            "INSERT INTO modules (id, driver_id, endpoint, uri, custom_name, notes, running, \
             system_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $8)",
        )
        .bind(&id)
        .bind(&new.driver_id)
        .bind(endpoint.clone())
        .bind(uri.clone())
        .bind(optional(&new.custom_name))
        .bind(&new.notes)
        .bind(i64::from(new.running))
        .bind(now)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "module.create", "module", &id).details(json!({
                "driver_id": new.driver_id, "endpoint": endpoint, "uri": uri,
                "custom_name": new.custom_name, "running": new.running,
            })),
        )
        .await?;
        let module = fetch(tx.conn(), &id)
            .await?
            .ok_or_else(|| StoreError::not_found("module", &id))?;
        tx.commit().await?;
        Ok(module)
    }

    /// The module `id`.
    pub async fn module(&self, id: &str) -> Result<ModuleRecord> {
        let mut conn = self.pool().acquire().await?;
        fetch(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("module", id))
    }

    /// Modules, by custom name or driver name containing `q`.
    pub async fn list_modules(
        &self,
        query: &ListQuery,
        filter: &ModuleFilter,
    ) -> Result<Page<ModuleRecord>> {
        let (limit, offset) = query.bounds();
        let pattern = like_pattern(query.q.as_deref().unwrap_or(""));
        let running = match filter.running {
            None => -1,
            Some(running) => i64::from(running),
        };
        let condition = "LOWER(COALESCE(m.custom_name, d.name)) LIKE $1 ESCAPE '\\' \
             AND ($2 = '' OR m.driver_id = $2) \
             AND ($3 = '' OR m.id IN (SELECT module_id FROM system_modules WHERE system_id = $3)) \
             AND ($4 < 0 OR m.running = $4)";
        let from = "FROM modules m JOIN drivers d ON d.id = m.driver_id";
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} {from} WHERE {condition} ORDER BY m.created_at, m.id \
             LIMIT $5 OFFSET $6"
        ))
        .bind(&pattern)
        .bind(filter.driver_id.as_deref().unwrap_or(""))
        .bind(filter.system_id.as_deref().unwrap_or(""))
        .bind(running)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n {from} WHERE {condition}"))
            .bind(&pattern)
            .bind(filter.driver_id.as_deref().unwrap_or(""))
            .bind(filter.system_id.as_deref().unwrap_or(""))
            .bind(running)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(Page {
            items: rows.iter().map(module_from).collect::<Result<_>>()?,
            total,
        })
    }

    /// Change a module.
    pub async fn update_module(
        &self,
        actor: &Actor,
        id: &str,
        patch: &ModulePatch,
    ) -> Result<ModuleRecord> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let mut module = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("module", id))?;
        let mut changed = Vec::new();
        if let Some(endpoint) = &patch.endpoint {
            module.endpoint = optional(endpoint);
            changed.push("endpoint");
        }
        if let Some(uri) = &patch.uri {
            module.uri = optional(uri);
            changed.push("uri");
        }
        if let Some(name) = &patch.custom_name {
            module.custom_name = optional(name);
            changed.push("custom_name");
        }
        if let Some(notes) = &patch.notes {
            module.notes = notes.clone();
            changed.push("notes");
        }
        if let Some(running) = patch.running {
            module.running = running;
            changed.push("running");
        }
        check_target(&module.endpoint, &module.uri)?;
        if let Some(driver) = &patch.driver_id {
            check_driver(tx.conn(), driver).await?;
            module.driver_id = driver.clone();
            changed.push("driver_id");
        }
        sqlx::query(
            "UPDATE modules SET driver_id = $2, endpoint = $3, uri = $4, custom_name = $5, \
             notes = $6, running = $7, updated_at = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(&module.driver_id)
        .bind(module.endpoint.clone())
        .bind(module.uri.clone())
        .bind(module.custom_name.clone())
        .bind(&module.notes)
        .bind(i64::from(module.running))
        .bind(now)
        .execute(tx.conn())
        .await?;
        module.updated_at = now;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "module.update", "module", id).details(json!({
                "changed": changed, "running": module.running, "driver_id": module.driver_id,
                "endpoint": module.endpoint, "uri": module.uri,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(module)
    }

    /// Delete a module: it leaves its systems; its settings go with it (its history stays
    /// until pruned).
    pub async fn delete_module(&self, actor: &Actor, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("module", id))?;
        delete_parent_settings(tx.conn(), ParentKind::Module, id).await?;
        sqlx::query("DELETE FROM modules WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "module.delete", "module", id),
        )
        .await?;
        tx.commit().await
    }
}
