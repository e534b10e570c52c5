//! Live upgrade: moving a driver's modules to another (approved) version of it while they
//! run. One module at a time, each is re-instantiated on the new component beside its
//! running sandbox and switched over only when the new one started (see
//! [`crate::runtime::ModuleHandle::upgrade`]): its settings, status and queued commands
//! carry over and modules of other drivers are not touched. When a module's new start
//! fails it goes on running the old version, the reason is recorded in the audit log, and
//! the upgrade stops there so that the rest of the modules stay on the version that
//! works.

use serde::Serialize;
use serde_json::json;

use crate::settings::{Level, ParentKind};
use crate::store::{Actor, Approval, ModulePatch, NewAuditEntry};

use super::{Control, ControlError};

/// What happened to one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeOutcome {
    /// It runs the new version now.
    Upgraded,
    /// It was not running: it starts on the new version next time.
    Moved,
    /// The new version failed to start: it still runs the old one (`reason` says why).
    RolledBack,
    /// Not tried, because an earlier module rolled back.
    NotAttempted,
}

/// One module's part of an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ModuleUpgrade {
    /// The module.
    pub module: String,
    /// What happened.
    pub outcome: UpgradeOutcome,
    /// Why it rolled back.
    pub reason: Option<String>,
}

/// What an upgrade did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UpgradeReport {
    /// The driver the modules ran.
    pub from: String,
    /// The driver they were moved to.
    pub to: String,
    /// Each module, in the order they were taken.
    pub modules: Vec<ModuleUpgrade>,
    /// Whether every module now belongs to `to`.
    pub complete: bool,
}

impl Control {
    /// Move every module of driver `from` to driver `to`, live. `to` must be approved
    /// (unless `danger_allow_unapproved`) and use the same transport. Driver-level settings
    /// of `from` that `to` does not have are copied to it first.
    pub async fn upgrade_driver(
        &self,
        actor: &Actor,
        from: &str,
        to: &str,
    ) -> Result<UpgradeReport, ControlError> {
        let store = self.store();
        if from == to {
            return Err(ControlError::Upgrade(
                "the driver to upgrade to is the driver upgraded".to_string(),
            ));
        }
        let old = store.driver(from).await?;
        let new = store.driver(to).await?;
        if new.approval != Approval::Approved {
            if !self.inner.config.danger_allow_unapproved {
                return Err(ControlError::NotApproved {
                    driver: new.id,
                    digest: new.digest,
                    state: match new.approval {
                        Approval::Revoked => "revoked",
                        _ => "pending review",
                    },
                });
            }
            tracing::warn!(
                driver = %new.id,
                digest = %new.digest,
                "danger_allow_unapproved: upgrading modules to a driver no reviewer approved"
            );
        }
        let transport =
            |record: &crate::store::DriverRecord| record.metadata.get("transport").cloned();
        if transport(&old) != transport(&new) {
            return Err(ControlError::Upgrade(format!(
                "driver {from} and driver {to} use different transports; create new modules instead"
            )));
        }
        // Load (compile) the new component before any module is touched.
        let component = self.driver(&new.id, &new.digest).await?;
        for level in Level::ALL {
            if store
                .settings(ParentKind::Driver, to, level)
                .await?
                .is_some()
            {
                continue;
            }
            if let Some((_, value)) = store.settings(ParentKind::Driver, from, level).await? {
                store
                    .set_settings(actor, ParentKind::Driver, to, level, &value)
                    .await?;
            }
        }

        let mut modules = Vec::new();
        let mut failed = false;
        for module in store.modules_under(ParentKind::Driver, from).await? {
            if failed {
                modules.push(ModuleUpgrade {
                    module,
                    outcome: UpgradeOutcome::NotAttempted,
                    reason: None,
                });
                continue;
            }
            let _guard = self.inner.lifecycle.lock().await;
            self.move_module(actor, &module, to).await?;
            let Some(handle) = self.runtime().module(&module) else {
                modules.push(ModuleUpgrade {
                    module,
                    outcome: UpgradeOutcome::Moved,
                    reason: None,
                });
                continue;
            };
            let settings = store
                .module_settings(&module, crate::settings::Audience::Driver)
                .await?;
            match handle.upgrade(component.clone(), settings).await {
                Ok(()) => {
                    for system in store.systems_of_module(&module).await? {
                        self.define_system(&system).await?;
                    }
                    modules.push(ModuleUpgrade {
                        module,
                        outcome: UpgradeOutcome::Upgraded,
                        reason: None,
                    });
                }
                Err(reason) => {
                    self.move_module(actor, &module, from).await?;
                    store
                        .audit(
                            &NewAuditEntry::new(
                                actor,
                                "module.upgrade_rolled_back",
                                "module",
                                &module,
                            )
                            .details(json!({
                                "from": from, "to": to, "digest": new.digest,
                                "reason": reason,
                            })),
                        )
                        .await?;
                    tracing::warn!(module = %module, to = %to, "upgrade rolled back: {reason}");
                    failed = true;
                    modules.push(ModuleUpgrade {
                        module,
                        outcome: UpgradeOutcome::RolledBack,
                        reason: Some(reason),
                    });
                }
            }
        }
        let report = UpgradeReport {
            from: from.to_string(),
            to: to.to_string(),
            complete: !failed,
            modules,
        };
        let count = |outcome| {
            report
                .modules
                .iter()
                .filter(|m| m.outcome == outcome)
                .count()
        };
        store
            .audit(
                &NewAuditEntry::new(actor, "driver.upgrade", "driver", from).details(json!({
                    "to": to, "from_digest": old.digest, "to_digest": new.digest,
                    "upgraded": count(UpgradeOutcome::Upgraded),
                    "moved": count(UpgradeOutcome::Moved),
                    "rolled_back": count(UpgradeOutcome::RolledBack),
                    "not_attempted": count(UpgradeOutcome::NotAttempted),
                })),
            )
            .await?;
        Ok(report)
    }

    async fn move_module(
        &self,
        actor: &Actor,
        module: &str,
        driver: &str,
    ) -> Result<(), ControlError> {
        self.store()
            .update_module(
                actor,
                module,
                &ModulePatch {
                    driver_id: Some(driver.to_string()),
                    ..ModulePatch::default()
                },
            )
            .await?;
        Ok(())
    }
}
