//! A reviewer's decision on a driver. An approval is signed: the host's Ed25519 key signs
//! a statement of the digest, its source, the reviewer and the time, and the signed
//! statement (the attestation) is stored with the driver. Withdrawing an approval stops
//! every module running that digest, here, at once.

use crate::attestation::{
    self, Statement, StatementDriver, StatementReviewer, StatementSource, rfc3339,
};
use crate::store::{Actor, Approval, ApprovalDecision, DriverRecord, StoreError};

use super::{Control, ControlError};

impl Control {
    /// Record `approval` of driver `id` by `actor` with `note`. An approval is signed; a
    /// revocation applies to every driver with the same digest and stops their modules;
    /// setting a driver back to `pending` stops the modules of this driver record.
    ///
    /// It runs in a task of its own, so that a caller that goes away (a dropped request)
    /// cannot leave a withdrawal recorded with its modules still running.
    pub async fn set_approval(
        &self,
        actor: &Actor,
        id: &str,
        approval: Approval,
        note: Option<String>,
    ) -> Result<DriverRecord, ControlError> {
        let (control, actor, driver) = (self.clone(), actor.clone(), id.to_string());
        tokio::spawn(async move {
            control
                .decide_approval(&actor, &driver, approval, note)
                .await
        })
        .await
        .map_err(|error| ControlError::Internal(format!("the approval task failed: {error}")))?
    }

    async fn decide_approval(
        &self,
        actor: &Actor,
        id: &str,
        approval: Approval,
        note: Option<String>,
    ) -> Result<DriverRecord, ControlError> {
        let store = self.store();
        let driver = store.driver(id).await?;
        let at = store.now();
        let attestation = match approval {
            Approval::Approved => {
                let statement = self.statement(actor, &driver, at, note.clone()).await?;
                let key = store.signing_key().await?;
                Some(key.sign(&statement).map_err(|error| {
                    ControlError::Store(StoreError::Corrupt {
                        record: "signing_keys".to_string(),
                        why: error.to_string(),
                    })
                })?)
            }
            Approval::Pending | Approval::Revoked => None,
        };
        let record = store
            .set_driver_approval(
                actor,
                id,
                &ApprovalDecision {
                    approval,
                    note,
                    at,
                    attestation,
                },
            )
            .await?;
        if approval != Approval::Approved {
            // A revocation withdraws the digest, wherever it is registered; setting one
            // record back to pending withdraws only that record.
            let stopped = match approval {
                Approval::Revoked => self.stop_digest(&record.digest).await,
                _ => self.stop_driver_modules(id).await?,
            };
            if stopped > 0 {
                tracing::warn!(
                    driver = %id,
                    digest = %record.digest,
                    "approval withdrawn ({}): {stopped} module(s) stopped",
                    approval.as_str()
                );
            }
        }
        for affected in store.drivers_with_digest(&record.digest).await? {
            self.reindex(crate::search::Kind::Driver, &affected.id)
                .await;
        }
        Ok(record)
    }

    /// The statement an approval of `driver` by `actor` at `at` signs.
    async fn statement(
        &self,
        actor: &Actor,
        driver: &DriverRecord,
        at: i64,
        note: Option<String>,
    ) -> Result<Statement, ControlError> {
        let (email, name) = match self.store().user(&actor.0).await {
            Ok(user) => {
                let name = format!("{} {}", user.first_name, user.last_name);
                let name = name.trim();
                (
                    Some(user.email),
                    (!name.is_empty()).then(|| name.to_string()),
                )
            }
            Err(StoreError::NotFound { .. }) => (None, None),
            Err(error) => return Err(error.into()),
        };
        let version = driver
            .metadata
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        Ok(Statement {
            kind: attestation::STATEMENT_TYPE.to_string(),
            digest: driver.digest.clone(),
            driver: StatementDriver {
                id: driver.id.clone(),
                name: driver.name.clone(),
                version,
            },
            source: StatementSource {
                repository: driver.source_repo.clone(),
                commit: driver.source_commit.clone(),
                path: driver.package_path.clone(),
            },
            reviewer: StatementReviewer {
                id: actor.0.clone(),
                email,
                name,
            },
            approved_at: rfc3339(at),
            note,
        })
    }

    /// Stop every module of driver record `id` this host runs; returns how many.
    async fn stop_driver_modules(&self, id: &str) -> Result<usize, ControlError> {
        let modules = self
            .store()
            .modules_under(crate::settings::ParentKind::Driver, id)
            .await?;
        let _guard = self.inner.lifecycle.lock().await;
        let mut stopped = 0;
        for module in modules {
            if self.runtime().stop_module(&module).await {
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    /// Stop every module this host runs on the component `digest`; returns how many.
    pub(crate) async fn stop_digest(&self, digest: &str) -> usize {
        // No start runs while these stop; a start after this sees the new state.
        let _guard = self.inner.lifecycle.lock().await;
        let runtime = self.runtime();
        let mut stopped = 0;
        for id in runtime.module_ids() {
            let Some(handle) = runtime.module(&id) else {
                continue;
            };
            if handle.driver().digest() == digest && runtime.stop_module(&id).await {
                stopped += 1;
            }
        }
        stopped
    }
}
