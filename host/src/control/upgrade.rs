//! Live upgrade: moving a driver's modules to another (approved) version of it while they
//! run. One module at a time, each is re-instantiated on the new component beside its
//! running sandbox and switched over only when the new one started (see
//! [`crate::runtime::ModuleHandle::upgrade`]): its settings, status and queued commands
//! carry over and modules of other drivers are not touched. When a module's new start
//! fails it goes on running the old version, the reason is recorded in the audit log, and
//! the upgrade stops there so that the rest of the modules stay on the version that
//! works.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::runtime::Driver;
use crate::settings::{Level, ParentKind};
use crate::store::{Actor, DriverRecord, ModulePatch, NewAuditEntry, StoreError};

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
    /// Not tried, because an earlier module rolled back, or `to` lost its approval
    /// meanwhile (`reason` says which).
    NotAttempted,
    /// Left alone: it was deleted or moved to another driver while the upgrade ran.
    Skipped,
}

/// One module's part of an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ModuleUpgrade {
    /// The module.
    pub module: String,
    /// What happened.
    pub outcome: UpgradeOutcome,
    /// Why it rolled back, was not attempted or was skipped.
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
    /// Whether no module rolled back or was left untried.
    pub complete: bool,
}

impl Control {
    /// Move every module of driver `from` to driver `to`, live. `to` must be approved
    /// (unless `danger_allow_unapproved`) and use the same transport. Driver-level settings
    /// of `from` that `to` does not have are copied to it first (and removed again when no
    /// module could be upgraded).
    ///
    /// The upgrade runs in a task of its own, so a caller that goes away (a dropped
    /// request) cannot leave a module half-moved.
    pub async fn upgrade_driver(
        &self,
        actor: &Actor,
        from: &str,
        to: &str,
    ) -> Result<UpgradeReport, ControlError> {
        let (control, actor, from, to) = (
            self.clone(),
            actor.clone(),
            from.to_string(),
            to.to_string(),
        );
        tokio::spawn(async move { control.run_upgrade(&actor, &from, &to).await })
            .await
            .map_err(|error| ControlError::Internal(format!("the upgrade task failed: {error}")))?
    }

    async fn run_upgrade(
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
        self.check_runnable(&new, "upgrading modules to it")?;
        let transport = |record: &DriverRecord| record.metadata.get("transport").cloned();
        if transport(&old) != transport(&new) {
            return Err(ControlError::Upgrade(format!(
                "driver {from} and driver {to} use different transports; create new modules instead"
            )));
        }
        // Load (compile) the new component before any module is touched.
        let component = self.driver(&new.id, &new.digest).await?;
        let mut copied = Vec::new();
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
                copied.push(level);
            }
        }

        let mut modules = Vec::new();
        let mut stop: Option<String> = None;
        for module in store.modules_under(ParentKind::Driver, from).await? {
            let step = match &stop {
                Some(reason) => ModuleUpgrade {
                    module,
                    outcome: UpgradeOutcome::NotAttempted,
                    reason: Some(reason.clone()),
                },
                None => {
                    self.upgrade_module(actor, &module, &old, &new, &component)
                        .await
                }
            };
            match step.outcome {
                UpgradeOutcome::RolledBack => {
                    stop = Some(format!("module {} rolled back", step.module));
                }
                UpgradeOutcome::NotAttempted if stop.is_none() => {
                    stop = step.reason.clone();
                }
                _ => {}
            }
            modules.push(step);
        }
        let moved_any = modules
            .iter()
            .any(|m| matches!(m.outcome, UpgradeOutcome::Upgraded | UpgradeOutcome::Moved));
        if !moved_any {
            for level in copied {
                if let Err(error) = store
                    .delete_settings(actor, ParentKind::Driver, to, level)
                    .await
                {
                    tracing::warn!(driver = %to, "could not remove the settings copied for the upgrade: {error}");
                }
            }
        }
        let report = UpgradeReport {
            from: from.to_string(),
            to: to.to_string(),
            complete: stop.is_none(),
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
                    "skipped": count(UpgradeOutcome::Skipped),
                })),
            )
            .await?;
        Ok(report)
    }

    /// Upgrade one module, under the lifecycle lock so that no start, stop or revocation
    /// interleaves. Whatever fails, the store and the runtime end up agreeing: on `to`
    /// when the new version runs, on `from` otherwise.
    async fn upgrade_module(
        &self,
        actor: &Actor,
        module: &str,
        old: &DriverRecord,
        new: &DriverRecord,
        component: &Arc<Driver>,
    ) -> ModuleUpgrade {
        let store = self.store();
        let step = |outcome, reason: Option<String>| ModuleUpgrade {
            module: module.to_string(),
            outcome,
            reason,
        };
        let _guard = self.inner.lifecycle.lock().await;
        // A revocation may have come while earlier modules were upgraded.
        match store.driver(&new.id).await {
            Ok(now) => {
                if let Err(error) = self.check_runnable(&now, "upgrading modules to it") {
                    return step(UpgradeOutcome::NotAttempted, Some(error.to_string()));
                }
            }
            Err(error) => return step(UpgradeOutcome::NotAttempted, Some(error.to_string())),
        }
        // The module may have been deleted or given another driver meanwhile.
        match store.module(module).await {
            Ok(record) if record.driver_id == old.id => {}
            Ok(record) => {
                return step(
                    UpgradeOutcome::Skipped,
                    Some(format!(
                        "it was moved to driver {} meanwhile",
                        record.driver_id
                    )),
                );
            }
            Err(StoreError::NotFound { .. }) => {
                return step(
                    UpgradeOutcome::Skipped,
                    Some("it was deleted meanwhile".into()),
                );
            }
            Err(error) => return step(UpgradeOutcome::NotAttempted, Some(error.to_string())),
        }
        if let Err(error) = self.move_module(actor, module, &new.id).await {
            return step(UpgradeOutcome::NotAttempted, Some(error.to_string()));
        }
        let Some(handle) = self.runtime().module(module) else {
            return step(UpgradeOutcome::Moved, None);
        };
        let upgraded = match store
            .module_settings(module, crate::settings::Audience::Driver)
            .await
        {
            Ok(settings) => handle.upgrade(component.clone(), settings).await,
            Err(error) => Err(format!("reading its settings failed: {error}")),
        };
        match upgraded {
            Ok(()) => {
                // The systems it belongs to learn its new functions; a failure here is
                // the same as after any settings change: logged, and the next change of
                // the system redefines it.
                match store.systems_of_module(module).await {
                    Ok(systems) => {
                        for system in systems {
                            if let Err(error) = self.define_system(&system).await {
                                tracing::warn!(module, system = %system, "upgrade: {error}");
                            }
                        }
                    }
                    Err(error) => tracing::warn!(module, "upgrade: {error}"),
                }
                self.reindex(crate::search::Kind::Module, module).await;
                step(UpgradeOutcome::Upgraded, None)
            }
            Err(reason) => {
                let mut reason = reason;
                if let Err(error) = self.move_module(actor, module, &old.id).await {
                    tracing::error!(
                        module,
                        "upgrade rolled back in the runtime, but the store could not be \
                         reverted: {error}"
                    );
                    reason = format!("{reason}; the store still names driver {}: {error}", new.id);
                }
                let audit = store
                    .audit(
                        &NewAuditEntry::new(actor, "module.upgrade_rolled_back", "module", module)
                            .details(json!({
                                "from": old.id, "to": new.id, "digest": new.digest,
                                "reason": reason,
                            })),
                    )
                    .await;
                if let Err(error) = audit {
                    tracing::error!(module, "could not audit the rollback: {error}");
                }
                tracing::warn!(module, to = %new.id, "upgrade rolled back: {reason}");
                step(UpgradeOutcome::RolledBack, Some(reason))
            }
        }
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
