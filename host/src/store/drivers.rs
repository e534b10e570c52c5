//! Drivers: registered components, by digest, with their metadata, source and approval.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{NewAuditEntry, append};
use super::model::{
    Actor, Approval, ApprovalDecision, DriverRecord, ListQuery, NewDriver, Page, checked_name,
};
use super::settings::delete_parent_settings;
use super::{Result, Store, StoreError, json_column, new_id};
use crate::settings::ParentKind;

const COLUMNS: &str = "id, name, module_name, digest, metadata, source_repo, source_commit, approval, \
                       approved_by, approved_at, approval_note, repository_id, package_path, build_id, \
                       attestation, created_at, updated_at";

fn driver_from(row: &AnyRow) -> Result<DriverRecord> {
    let id: String = row.try_get("id")?;
    let approval: String = row.try_get("approval")?;
    let attestation: Option<String> = row.try_get("attestation")?;
    Ok(DriverRecord {
        attestation: attestation
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    record: format!("drivers/{id}/attestation"),
                    why: e.to_string(),
                })
            })
            .transpose()?,
        repository_id: row.try_get("repository_id")?,
        package_path: row.try_get("package_path")?,
        build_id: row.try_get("build_id")?,
        metadata: json_column(row, "metadata", || format!("drivers/{id}"))?,
        approval: Approval::parse(&approval).ok_or_else(|| StoreError::Corrupt {
            record: format!("drivers/{id}"),
            why: format!("unknown approval state {approval:?}"),
        })?,
        name: row.try_get("name")?,
        module_name: row.try_get("module_name")?,
        digest: row.try_get("digest")?,
        source_repo: row.try_get("source_repo")?,
        source_commit: row.try_get("source_commit")?,
        approved_by: row.try_get("approved_by")?,
        approved_at: row.try_get("approved_at")?,
        approval_note: row.try_get("approval_note")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

pub(crate) async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Option<DriverRecord>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM drivers WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(driver_from).transpose()
}

impl Store {
    /// Register a driver. The component is stored once per digest.
    pub async fn create_driver(&self, actor: &Actor, new: &NewDriver) -> Result<DriverRecord> {
        let name = checked_name("name", &new.name)?;
        if new.component.is_empty() {
            return Err(StoreError::invalid("component", "is empty"));
        }
        if !new.metadata.is_object() {
            return Err(StoreError::invalid("metadata", "must be a JSON object"));
        }
        // Modules of this driver are named after this in their systems (`Display_1`).
        let module_name = new
            .metadata
            .get("generic_name")
            .and_then(|name| name.as_str())
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map_or_else(|| name.clone(), str::to_string);
        let digest = crate::component::digest(&new.component);
        let id = new_id("driver");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let stored = sqlx::query("SELECT digest FROM components WHERE digest = $1")
            .bind(&digest)
            .fetch_optional(tx.conn())
            .await?;
        if stored.is_none() {
            sqlx::query("INSERT INTO components (digest, bytes) VALUES ($1, $2)")
                .bind(&digest)
                .bind(new.component.clone())
                .execute(tx.conn())
                .await?;
        }
        sqlx::query(
            "INSERT INTO drivers (id, name, module_name, digest, metadata, source_repo, \
             source_commit, approval, repository_id, package_path, build_id, created_at, \
             updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $9, $10, $11, $8, $8)",
        )
        .bind(&id)
        .bind(&name)
        .bind(&module_name)
        .bind(&digest)
        .bind(new.metadata.to_string())
        .bind(new.source_repo.clone())
        .bind(new.source_commit.clone())
        .bind(now)
        .bind(new.repository_id.clone())
        .bind(new.package_path.clone())
        .bind(new.build_id.clone())
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "driver.create", "driver", &id).details(json!({
                "name": name, "digest": digest,
                "source_repo": new.source_repo, "source_commit": new.source_commit,
                "package_path": new.package_path, "build_id": new.build_id,
            })),
        )
        .await?;
        let driver = fetch(tx.conn(), &id)
            .await?
            .ok_or_else(|| StoreError::not_found("driver", &id))?;
        tx.commit().await?;
        Ok(driver)
    }

    /// The driver `id`.
    pub async fn driver(&self, id: &str) -> Result<DriverRecord> {
        let mut conn = self.pool().acquire().await?;
        fetch(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("driver", id))
    }

    /// Drivers by name.
    pub async fn list_drivers(&self, query: &ListQuery) -> Result<Page<DriverRecord>> {
        self.list_matching(
            &super::Listing {
                table: "drivers",
                columns: COLUMNS,
                matched: "name",
                order: "name, id",
                from_row: driver_from,
            },
            query,
        )
        .await
    }

    /// The component with `digest`, checked against it on the way out.
    pub async fn component(&self, digest: &str) -> Result<Vec<u8>> {
        let row = sqlx::query("SELECT bytes FROM components WHERE digest = $1")
            .bind(digest)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("component", digest))?;
        let bytes: Vec<u8> = row.try_get("bytes")?;
        if crate::component::digest(&bytes) != digest {
            return Err(StoreError::Corrupt {
                record: format!("components/{digest}"),
                why: "the stored bytes do not have this digest".to_string(),
            });
        }
        Ok(bytes)
    }

    /// Record a reviewer's decision on a driver. A revocation withdraws the approval of
    /// every driver with the same digest: what was found wrong is in the bytes.
    pub async fn set_driver_approval(
        &self,
        actor: &Actor,
        id: &str,
        decision: &ApprovalDecision,
    ) -> Result<DriverRecord> {
        let mut tx = self.begin_write().await?;
        let driver = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("driver", id))?;
        if decision.approval == Approval::Approved && decision.attestation.is_none() {
            return Err(StoreError::invalid(
                "attestation",
                "an approval must carry its signed attestation",
            ));
        }
        let attestation = decision
            .attestation
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::invalid("attestation", e.to_string()))?;
        let targets: Vec<String> = if decision.approval == Approval::Revoked {
            sqlx::query("SELECT id FROM drivers WHERE digest = $1 ORDER BY id")
                .bind(&driver.digest)
                .fetch_all(tx.conn())
                .await?
                .iter()
                .map(|row| row.try_get("id"))
                .collect::<Result<_, _>>()?
        } else {
            vec![id.to_string()]
        };
        for target in &targets {
            sqlx::query(
                "UPDATE drivers SET approval = $2, approved_by = $3, approved_at = $4, \
                 approval_note = $5, attestation = $6, updated_at = $4 WHERE id = $1",
            )
            .bind(target)
            .bind(decision.approval.as_str())
            .bind(&actor.0)
            .bind(decision.at)
            .bind(decision.note.clone())
            .bind(attestation.clone())
            .execute(tx.conn())
            .await?;
            append(
                tx.conn(),
                decision.at,
                &NewAuditEntry::new(actor, "driver.approval", "driver", target).details(json!({
                    "digest": driver.digest, "approval": decision.approval.as_str(),
                    "note": decision.note,
                    "keyid": decision.attestation.as_ref()
                        .and_then(|a| a.signatures.first()).map(|s| s.keyid.clone()),
                })),
            )
            .await?;
        }
        let driver = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("driver", id))?;
        tx.commit().await?;
        Ok(driver)
    }

    /// Every driver whose component has `digest`.
    pub async fn drivers_with_digest(&self, digest: &str) -> Result<Vec<DriverRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM drivers WHERE digest = $1 ORDER BY id"
        ))
        .bind(digest)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(driver_from).collect()
    }

    /// The version a reviewer compares driver `this` with: the driver of the same name
    /// with another component that was approved last (before `this` was, when it was).
    pub async fn previous_approved_driver(
        &self,
        this: &DriverRecord,
    ) -> Result<Option<DriverRecord>> {
        // Another component, approved before this one was (when it was).
        let before = match this.approval {
            Approval::Approved => this.approved_at.unwrap_or(i64::MAX),
            _ => i64::MAX,
        };
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM drivers WHERE name = $1 AND id <> $2 AND digest <> $3 \
             AND approval = 'approved' AND approved_at < $4 \
             ORDER BY approved_at DESC, id DESC LIMIT 1"
        ))
        .bind(&this.name)
        .bind(&this.id)
        .bind(&this.digest)
        .bind(before)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(driver_from).transpose()
    }

    /// Delete a driver: refused while modules use it. Its component goes when no other
    /// driver shares it.
    pub async fn delete_driver(&self, actor: &Actor, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let driver = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("driver", id))?;
        let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM modules WHERE driver_id = $1")
            .bind(id)
            .fetch_one(tx.conn())
            .await?
            .try_get("n")?;
        if users > 0 {
            return Err(StoreError::Conflict(format!(
                "driver {id} is used by {users} modules"
            )));
        }
        delete_parent_settings(tx.conn(), ParentKind::Driver, id).await?;
        sqlx::query("DELETE FROM drivers WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "DELETE FROM components WHERE digest = $1 AND NOT EXISTS \
             (SELECT 1 FROM drivers WHERE digest = $1)",
        )
        .bind(&driver.digest)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "driver.delete", "driver", id)
                .details(json!({"digest": driver.digest})),
        )
        .await?;
        tx.commit().await
    }
}
