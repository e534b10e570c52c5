//! Systems (rooms), their ordered zones and modules, and PlaceOS module names.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{NewAuditEntry, append};
use super::model::{Actor, ListQuery, NewSystem, Page, System, SystemPatch, checked_name};
use super::settings::delete_parent_settings;
use super::{Result, Store, StoreError, like_pattern, new_id};
use crate::settings::ParentKind;

const COLUMNS: &str = "id, name, description, email, created_at, updated_at";

async fn ordered(
    conn: &mut AnyConnection,
    table: &str,
    column: &str,
    id: &str,
) -> Result<Vec<String>> {
    let rows = sqlx::query(&format!(
        "SELECT {column} AS member FROM {table} WHERE system_id = $1 ORDER BY position"
    ))
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| row.try_get("member").map_err(StoreError::from))
        .collect()
}

async fn system_from(conn: &mut AnyConnection, row: &AnyRow) -> Result<System> {
    let id: String = row.try_get("id")?;
    Ok(System {
        zones: ordered(conn, "system_zones", "zone_id", &id).await?,
        modules: ordered(conn, "system_modules", "module_id", &id).await?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        email: row.try_get("email")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

pub(crate) async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Option<System>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM systems WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(Some(system_from(conn, &row).await?)),
        None => Ok(None),
    }
}

fn checked_members(field: &'static str, ids: &[String]) -> Result<()> {
    for (index, id) in ids.iter().enumerate() {
        if ids.iter().skip(index + 1).any(|other| other == id) {
            return Err(StoreError::invalid(field, format!("{id} is listed twice")));
        }
    }
    Ok(())
}

fn checked_email(email: &Option<String>) -> Result<Option<String>> {
    match email.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(email) if email.contains('@') && !email.contains(char::is_whitespace) => {
            Ok(Some(email.to_string()))
        }
        Some(_) => Err(StoreError::invalid("email", "not an email address")),
    }
}

/// Replace the system's zones with `zones`, in order.
async fn set_zones(conn: &mut AnyConnection, system: &str, zones: &[String]) -> Result<()> {
    checked_members("zones", zones)?;
    sqlx::query("DELETE FROM system_zones WHERE system_id = $1")
        .bind(system)
        .execute(&mut *conn)
        .await?;
    for (position, zone) in zones.iter().enumerate() {
        let exists = sqlx::query("SELECT id FROM zones WHERE id = $1")
            .bind(zone)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::invalid("zones", format!("no zone {zone}")));
        }
        sqlx::query("INSERT INTO system_zones (system_id, zone_id, position) VALUES ($1, $2, $3)")
            .bind(system)
            .bind(zone)
            .bind(position as i64)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Replace the system's modules with `modules`, in order, keeping every module's home
/// system right.
async fn set_modules(conn: &mut AnyConnection, system: &str, modules: &[String]) -> Result<()> {
    checked_members("modules", modules)?;
    let before = ordered(conn, "system_modules", "module_id", system).await?;
    sqlx::query("DELETE FROM system_modules WHERE system_id = $1")
        .bind(system)
        .execute(&mut *conn)
        .await?;
    for (position, module) in modules.iter().enumerate() {
        let exists = sqlx::query("SELECT id FROM modules WHERE id = $1")
            .bind(module)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::invalid(
                "modules",
                format!("no module {module}"),
            ));
        }
        sqlx::query(
            "INSERT INTO system_modules (system_id, module_id, position) VALUES ($1, $2, $3)",
        )
        .bind(system)
        .bind(module)
        .bind(position as i64)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE modules SET system_id = $2 WHERE id = $1 AND system_id IS NULL")
            .bind(module)
            .bind(system)
            .execute(&mut *conn)
            .await?;
    }
    for removed in before.iter().filter(|id| !modules.contains(id)) {
        rehome(conn, removed).await?;
    }
    Ok(())
}

/// Give `module` a home among the systems it is still in (the oldest), or none.
pub(crate) async fn rehome(conn: &mut AnyConnection, module: &str) -> Result<()> {
    sqlx::query(
        "UPDATE modules SET system_id = (SELECT sm.system_id FROM system_modules sm \
         JOIN systems s ON s.id = sm.system_id WHERE sm.module_id = $1 \
         ORDER BY s.created_at, s.id LIMIT 1) \
         WHERE id = $1 AND (system_id IS NULL OR system_id NOT IN \
         (SELECT system_id FROM system_modules WHERE module_id = $1))",
    )
    .bind(module)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Create a system.
    pub async fn create_system(&self, actor: &Actor, new: &NewSystem) -> Result<System> {
        let name = checked_name("name", &new.name)?;
        let email = checked_email(&new.email)?;
        let id = new_id("sys");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO systems ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $5)"
        ))
        .bind(&id)
        .bind(&name)
        .bind(&new.description)
        .bind(email)
        .bind(now)
        .execute(tx.conn())
        .await?;
        set_zones(tx.conn(), &id, &new.zones).await?;
        set_modules(tx.conn(), &id, &new.modules).await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "system.create", "system", &id)
                .details(json!({"name": name, "zones": new.zones, "modules": new.modules})),
        )
        .await?;
        let system = fetch(tx.conn(), &id)
            .await?
            .ok_or_else(|| StoreError::not_found("system", &id))?;
        tx.commit().await?;
        Ok(system)
    }

    /// The system `id`.
    pub async fn system(&self, id: &str) -> Result<System> {
        let mut conn = self.pool().acquire().await?;
        fetch(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("system", id))
    }

    /// Systems by name, optionally only those in `zone`.
    pub async fn list_systems(
        &self,
        query: &ListQuery,
        zone: Option<&str>,
    ) -> Result<Page<System>> {
        let (limit, offset) = query.bounds();
        let pattern = like_pattern(query.q.as_deref().unwrap_or(""));
        let filter = "LOWER(name) LIKE $1 ESCAPE '\\' AND ($2 = '' OR id IN \
                      (SELECT system_id FROM system_zones WHERE zone_id = $2))";
        let mut conn = self.pool().acquire().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM systems WHERE {filter} ORDER BY name, id LIMIT $3 OFFSET $4"
        ))
        .bind(&pattern)
        .bind(zone.unwrap_or(""))
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *conn)
        .await?;
        let total: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM systems WHERE {filter}"))
            .bind(&pattern)
            .bind(zone.unwrap_or(""))
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push(system_from(&mut conn, row).await?);
        }
        Ok(Page { items, total })
    }

    /// Change a system.
    pub async fn update_system(
        &self,
        actor: &Actor,
        id: &str,
        patch: &SystemPatch,
    ) -> Result<System> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let mut system = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("system", id))?;
        let mut changed = Vec::new();
        if let Some(name) = &patch.name {
            system.name = checked_name("name", name)?;
            changed.push("name");
        }
        if let Some(description) = &patch.description {
            system.description = description.clone();
            changed.push("description");
        }
        if let Some(email) = &patch.email {
            system.email = checked_email(email)?;
            changed.push("email");
        }
        sqlx::query(
            "UPDATE systems SET name = $2, description = $3, email = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(&system.name)
        .bind(&system.description)
        .bind(system.email.clone())
        .bind(now)
        .execute(tx.conn())
        .await?;
        if let Some(zones) = &patch.zones {
            set_zones(tx.conn(), id, zones).await?;
            changed.push("zones");
        }
        if let Some(modules) = &patch.modules {
            set_modules(tx.conn(), id, modules).await?;
            changed.push("modules");
        }
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "system.update", "system", id).details(json!({
                "changed": changed, "zones": patch.zones, "modules": patch.modules,
            })),
        )
        .await?;
        let system = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("system", id))?;
        tx.commit().await?;
        Ok(system)
    }

    /// Add `module` at the end of the system's modules (no change if it is there).
    pub async fn add_system_module(&self, actor: &Actor, id: &str, module: &str) -> Result<System> {
        let mut modules = self.system(id).await?.modules;
        if !modules.iter().any(|m| m == module) {
            modules.push(module.to_string());
        }
        self.update_system(
            actor,
            id,
            &SystemPatch {
                modules: Some(modules),
                ..SystemPatch::default()
            },
        )
        .await
    }

    /// Remove `module` from the system's modules.
    pub async fn remove_system_module(
        &self,
        actor: &Actor,
        id: &str,
        module: &str,
    ) -> Result<System> {
        let modules = self.system(id).await?.modules;
        if !modules.iter().any(|m| m == module) {
            return Err(StoreError::not_found("module in system", module));
        }
        self.update_system(
            actor,
            id,
            &SystemPatch {
                modules: Some(modules.into_iter().filter(|m| m != module).collect()),
                ..SystemPatch::default()
            },
        )
        .await
    }

    /// Delete a system; its modules stay (and move home if it was theirs).
    pub async fn delete_system(&self, actor: &Actor, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let system = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("system", id))?;
        delete_parent_settings(tx.conn(), ParentKind::System, id).await?;
        sqlx::query("DELETE FROM systems WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        for module in &system.modules {
            rehome(tx.conn(), module).await?;
        }
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "system.delete", "system", id)
                .details(json!({"name": system.name})),
        )
        .await?;
        tx.commit().await
    }

    /// The system's modules in order, each with the name it is known by before numbering:
    /// its custom name, or its driver's module name (`Display`).
    pub async fn system_member_names(&self, id: &str) -> Result<Vec<(String, String)>> {
        self.system(id).await?;
        let rows = sqlx::query(
            "SELECT m.id AS id, COALESCE(m.custom_name, d.module_name) AS name \
             FROM system_modules sm JOIN modules m ON m.id = sm.module_id \
             JOIN drivers d ON d.id = m.driver_id WHERE sm.system_id = $1 ORDER BY sm.position",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("name")?)))
            .collect()
    }

    /// The system's modules with their PlaceOS names (`Display_1`), in the system's order:
    /// `(name, module id)`.
    pub async fn system_module_names(&self, id: &str) -> Result<Vec<(String, String)>> {
        Ok(crate::slug::module_slugs(
            self.system_member_names(id).await?,
        ))
    }

    /// The ids of the systems zone `id` is in.
    pub async fn systems_in_zone(&self, id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT system_id FROM system_zones WHERE zone_id = $1 ORDER BY system_id")
                .bind(id)
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| row.try_get("system_id").map_err(StoreError::from))
            .collect()
    }

    /// The ids of the systems module `id` is in.
    pub async fn systems_of_module(&self, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT system_id FROM system_modules WHERE module_id = $1 ORDER BY system_id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| row.try_get("system_id").map_err(StoreError::from))
            .collect()
    }
}
