//! Zones: the tree of places and groupings.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{NewAuditEntry, append};
use super::model::{Actor, ListQuery, NewZone, Page, Zone, ZonePatch, checked_name};
use super::settings::delete_parent_settings;
use super::{Result, Store, StoreError, json_column, like_pattern, new_id};
use crate::settings::ParentKind;

const COLUMNS: &str = "id, parent_id, name, description, tags, created_at, updated_at";

fn zone_from(row: &AnyRow) -> Result<Zone> {
    let id: String = row.try_get("id")?;
    Ok(Zone {
        tags: json_column(row, "tags", || format!("zones/{id}"))?,
        parent_id: row.try_get("parent_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

fn checked_tags(tags: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = checked_name("tags", tag)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Option<Zone>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM zones WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(zone_from).transpose()
}

/// Refuse a parent that does not exist or would make a cycle.
async fn check_parent(conn: &mut AnyConnection, id: &str, parent: &str) -> Result<()> {
    let mut cursor = Some(parent.to_string());
    let mut steps = 0;
    while let Some(current) = cursor {
        if current == id {
            return Err(StoreError::invalid(
                "parent_id",
                "a zone cannot be inside itself",
            ));
        }
        let row = sqlx::query("SELECT parent_id FROM zones WHERE id = $1")
            .bind(&current)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::invalid(
                "parent_id",
                format!("no zone {current}"),
            ));
        };
        cursor = row.try_get("parent_id")?;
        steps += 1;
        if steps > 1000 {
            return Err(StoreError::Corrupt {
                record: format!("zones/{id}"),
                why: "the zone tree is deeper than 1,000 or has a cycle".to_string(),
            });
        }
    }
    Ok(())
}

impl Store {
    /// Create a zone.
    pub async fn create_zone(&self, actor: &Actor, new: &NewZone) -> Result<Zone> {
        let name = checked_name("name", &new.name)?;
        let tags = checked_tags(&new.tags)?;
        let id = new_id("zone");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        if let Some(parent) = &new.parent_id {
            check_parent(tx.conn(), &id, parent).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO zones ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6)"
        ))
        .bind(&id)
        .bind(new.parent_id.clone())
        .bind(&name)
        .bind(&new.description)
        .bind(serde_json::to_string(&tags).unwrap_or_default())
        .bind(now)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "zone.create", "zone", &id)
                .details(json!({"name": name, "parent_id": new.parent_id, "tags": tags})),
        )
        .await?;
        let zone = fetch(tx.conn(), &id)
            .await?
            .ok_or_else(|| StoreError::not_found("zone", &id))?;
        tx.commit().await?;
        Ok(zone)
    }

    /// The zone `id`.
    pub async fn zone(&self, id: &str) -> Result<Zone> {
        let mut conn = self.pool().acquire().await?;
        fetch(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("zone", id))
    }

    /// Zones by name, optionally only the children of `parent`.
    pub async fn list_zones(&self, query: &ListQuery, parent: Option<&str>) -> Result<Page<Zone>> {
        let (limit, offset) = query.bounds();
        let pattern = like_pattern(query.q.as_deref().unwrap_or(""));
        let filter = "LOWER(name) LIKE $1 ESCAPE '\\' AND ($2 = '' OR parent_id = $2)";
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM zones WHERE {filter} ORDER BY name, id LIMIT $3 OFFSET $4"
        ))
        .bind(&pattern)
        .bind(parent.unwrap_or(""))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM zones WHERE {filter}"))
            .bind(&pattern)
            .bind(parent.unwrap_or(""))
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(Page {
            items: rows.iter().map(zone_from).collect::<Result<_>>()?,
            total,
        })
    }

    /// Change a zone.
    pub async fn update_zone(&self, actor: &Actor, id: &str, patch: &ZonePatch) -> Result<Zone> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let mut zone = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("zone", id))?;
        let mut changed = Vec::new();
        if let Some(name) = &patch.name {
            zone.name = checked_name("name", name)?;
            changed.push("name");
        }
        if let Some(description) = &patch.description {
            zone.description = description.clone();
            changed.push("description");
        }
        if let Some(tags) = &patch.tags {
            zone.tags = checked_tags(tags)?;
            changed.push("tags");
        }
        if let Some(parent) = &patch.parent_id {
            if let Some(parent) = parent {
                check_parent(tx.conn(), id, parent).await?;
            }
            zone.parent_id = parent.clone();
            changed.push("parent_id");
        }
        sqlx::query(
            "UPDATE zones SET parent_id = $2, name = $3, description = $4, tags = $5, \
             updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(zone.parent_id.clone())
        .bind(&zone.name)
        .bind(&zone.description)
        .bind(serde_json::to_string(&zone.tags).unwrap_or_default())
        .bind(now)
        .execute(tx.conn())
        .await?;
        zone.updated_at = now;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "zone.update", "zone", id)
                .details(json!({"changed": changed})),
        )
        .await?;
        tx.commit().await?;
        Ok(zone)
    }

    /// Delete a zone: refused while it has child zones; it leaves every system it was in,
    /// and its settings go with it.
    pub async fn delete_zone(&self, actor: &Actor, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("zone", id))?;
        let children: i64 = sqlx::query("SELECT COUNT(*) AS n FROM zones WHERE parent_id = $1")
            .bind(id)
            .fetch_one(tx.conn())
            .await?
            .try_get("n")?;
        if children > 0 {
            return Err(StoreError::Conflict(format!(
                "zone {id} has {children} child zones; move or delete them first"
            )));
        }
        delete_parent_settings(tx.conn(), ParentKind::Zone, id).await?;
        sqlx::query("DELETE FROM zones WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "zone.delete", "zone", id),
        )
        .await?;
        tx.commit().await
    }
}
