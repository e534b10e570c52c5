//! The reviewer's view of a driver version: everything needed to decide whether to approve
//! it, on one page, read from the stored component without running it — where its source
//! is and whether the component says the same, its digest and approval, what it can reach,
//! what it imports, its functions with their access levels and schemas, its settings with
//! the secret ones marked — and what changed since the version approved before it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::attestation::{self, PublicKey};
use crate::component::{self, FunctionInfo, Inspection, Level, TransportKind};
use crate::store::{Approval, DriverRecord};

use super::{Control, ControlError};

/// A driver version as a reviewer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DriverReview {
    /// The driver.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The version it declares.
    pub version: String,
    /// What it says it does.
    pub description: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// The component's size in bytes.
    pub size: usize,
    /// Review state, who decided and when.
    pub approval: ReviewApproval,
    /// Where the source is, as registered and as embedded in the component.
    pub source: ReviewSource,
    /// How it reaches its device.
    #[schema(value_type = String)]
    pub transport: TransportKind,
    /// Its device's usual port.
    pub default_port: Option<u16>,
    /// What a module of it can reach, in words.
    pub capabilities: Vec<String>,
    /// The host interfaces it imports.
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
    /// Its functions, with access levels and JSON Schemas.
    #[schema(value_type = Vec<Object>)]
    pub functions: Vec<FunctionInfo>,
    /// JSON Schema of its settings.
    pub settings_schema: Value,
    /// Its default settings.
    pub default_settings: Value,
    /// Settings the schema marks secret (`writeOnly`), as dotted paths.
    pub secret_settings: Vec<String>,
    /// The version approved before it (same name), if any.
    pub previous: Option<PreviousVersion>,
    /// What changed since that version.
    pub changes: Option<ReviewChanges>,
}

/// The review state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReviewApproval {
    /// `pending`, `approved` or `revoked`.
    pub state: Approval,
    /// Who decided.
    pub by: Option<String>,
    /// When, Unix ms.
    pub at: Option<i64>,
    /// Their note.
    pub note: Option<String>,
    /// The key that signed the approval.
    pub keyid: Option<String>,
    /// Whether the stored attestation verifies against the host's keys and names this
    /// digest.
    pub attestation_verified: bool,
}

/// Where the source is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReviewSource {
    /// The repository registered with the driver.
    pub repository: Option<String>,
    /// The commit registered with the driver.
    pub commit: Option<String>,
    /// The package inside the repository.
    pub path: Option<String>,
    /// The build that made it, when the host built it.
    pub build_id: Option<String>,
    /// The repository the component itself names.
    pub embedded_repository: Option<String>,
    /// The commit the component itself names.
    pub embedded_commit: Option<String>,
    /// `false` when the component names another commit than the registered one (or none
    /// while one is registered): the binary may not be what the source says.
    pub commit_matches: Option<bool>,
}

/// The version compared against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PreviousVersion {
    /// Its driver id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Its digest.
    pub digest: String,
    /// Its commit.
    pub commit: Option<String>,
}

/// What changed between the previous approved version and this one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReviewChanges {
    /// `old → new`, when the transport changed.
    pub transport: Option<String>,
    /// `old → new`, when the default port changed.
    pub default_port: Option<String>,
    /// Host interfaces imported now and not before.
    pub imports_added: Vec<String>,
    /// Host interfaces no longer imported.
    pub imports_removed: Vec<String>,
    /// New functions.
    pub functions_added: Vec<String>,
    /// Functions gone.
    pub functions_removed: Vec<String>,
    /// Functions whose level or schemas changed.
    pub functions_changed: Vec<FunctionChange>,
    /// Settings (dotted paths) added to the schema.
    pub settings_added: Vec<String>,
    /// Settings removed from the schema.
    pub settings_removed: Vec<String>,
    /// Settings whose schema changed.
    pub settings_changed: Vec<String>,
    /// Settings that became secret.
    pub secrets_added: Vec<String>,
    /// Settings no longer secret.
    pub secrets_removed: Vec<String>,
    /// Whether the default settings changed.
    pub default_settings_changed: bool,
}

/// How one function changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FunctionChange {
    /// The function.
    pub name: String,
    /// `old → new`, when its access level changed.
    pub level: Option<String>,
    /// Whether its parameters' schema changed.
    pub params_changed: bool,
    /// Whether its result's schema changed.
    pub returns_changed: bool,
}

impl Control {
    /// The reviewer's view of driver `id`.
    pub async fn review(&self, id: &str) -> Result<DriverReview, ControlError> {
        let store = self.store();
        let driver = store.driver(id).await?;
        let inspection = self.inspect_stored(&driver.digest).await?;
        let keys = store
            .signing_keys()
            .await?
            .iter()
            .filter_map(|key| PublicKey::parse(&key.public_key).ok())
            .collect::<Vec<_>>();
        let previous = match store.previous_approved_driver(&driver).await? {
            Some(previous) => {
                let before = self.inspect_stored(&previous.digest).await?;
                Some((previous, before))
            }
            None => None,
        };
        Ok(review(&driver, &inspection, &keys, previous.as_ref()))
    }

    async fn inspect_stored(&self, digest: &str) -> Result<Inspection, ControlError> {
        let bytes = self.store().component(digest).await?;
        tokio::task::spawn_blocking(move || component::inspect(&bytes))
            .await
            .map_err(|e| ControlError::Internal(format!("inspecting the component failed: {e}")))?
            .map_err(|e| ControlError::Internal(format!("the stored component {digest}: {e}")))
    }
}

/// The review of `driver`, whose component reads as `inspection`.
fn review(
    driver: &DriverRecord,
    inspection: &Inspection,
    keys: &[PublicKey],
    previous: Option<&(DriverRecord, Inspection)>,
) -> DriverReview {
    let metadata = &inspection.metadata;
    let provenance = inspection.provenance.as_ref();
    let embedded_commit = provenance.and_then(|p| p.commit.clone());
    let commit_matches = driver.source_commit.as_ref().map(|registered| {
        embedded_commit
            .as_deref()
            .is_some_and(|embedded| embedded.eq_ignore_ascii_case(registered))
    });
    let attestation_verified = driver.approval == Approval::Approved
        && driver.attestation.as_ref().is_some_and(|envelope| {
            attestation::verify(envelope, keys)
                .is_ok_and(|statement| statement.digest == driver.digest)
        });
    DriverReview {
        id: driver.id.clone(),
        name: metadata.name.clone(),
        version: metadata.version.clone(),
        description: metadata.description.clone(),
        digest: inspection.digest.clone(),
        size: inspection.size,
        approval: ReviewApproval {
            state: driver.approval,
            by: driver.approved_by.clone(),
            at: driver.approved_at,
            note: driver.approval_note.clone(),
            keyid: driver
                .attestation
                .as_ref()
                .and_then(|a| a.signatures.first())
                .map(|s| s.keyid.clone()),
            attestation_verified,
        },
        source: ReviewSource {
            repository: driver.source_repo.clone(),
            commit: driver.source_commit.clone(),
            path: driver.package_path.clone(),
            build_id: driver.build_id.clone(),
            embedded_repository: provenance.and_then(|p| p.repository.clone()),
            embedded_commit,
            commit_matches,
        },
        transport: metadata.transport,
        default_port: metadata.default_port,
        capabilities: inspection.capabilities(),
        imports: inspection.imports.clone(),
        exports: inspection.exports.clone(),
        functions: metadata.functions.clone(),
        settings_schema: metadata.settings_schema.clone(),
        default_settings: metadata.default_settings.clone(),
        secret_settings: metadata.secret_settings(),
        previous: previous.map(|(record, before)| PreviousVersion {
            id: record.id.clone(),
            version: before.metadata.version.clone(),
            digest: record.digest.clone(),
            commit: record.source_commit.clone(),
        }),
        changes: previous.map(|(_, before)| changes(before, inspection)),
    }
}

fn arrow(old: impl std::fmt::Debug, new: impl std::fmt::Debug) -> String {
    format!("{old:?} → {new:?}")
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::User => "user",
        Level::Support => "support",
        Level::Admin => "admin",
    }
}

/// The changes from `before` to `after`.
fn changes(before: &Inspection, after: &Inspection) -> ReviewChanges {
    let (old, new) = (&before.metadata, &after.metadata);
    let set = |names: &[String]| names.iter().cloned().collect::<BTreeSet<_>>();
    let (old_imports, new_imports) = (set(&before.imports), set(&after.imports));
    let old_functions: BTreeMap<&str, &FunctionInfo> =
        old.functions.iter().map(|f| (f.name.as_str(), f)).collect();
    let new_functions: BTreeMap<&str, &FunctionInfo> =
        new.functions.iter().map(|f| (f.name.as_str(), f)).collect();
    let old_settings = schema_properties(&old.settings_schema);
    let new_settings = schema_properties(&new.settings_schema);
    let old_secrets = set(&old.secret_settings());
    let new_secrets = set(&new.secret_settings());
    ReviewChanges {
        transport: (old.transport != new.transport).then(|| arrow(old.transport, new.transport)),
        default_port: (old.default_port != new.default_port)
            .then(|| arrow(old.default_port, new.default_port)),
        imports_added: new_imports.difference(&old_imports).cloned().collect(),
        imports_removed: old_imports.difference(&new_imports).cloned().collect(),
        functions_added: new_functions
            .keys()
            .filter(|name| !old_functions.contains_key(*name))
            .map(|name| name.to_string())
            .collect(),
        functions_removed: old_functions
            .keys()
            .filter(|name| !new_functions.contains_key(*name))
            .map(|name| name.to_string())
            .collect(),
        functions_changed: new_functions
            .iter()
            .filter_map(|(name, new)| {
                let old = old_functions.get(name)?;
                let change = FunctionChange {
                    name: name.to_string(),
                    level: (old.level != new.level)
                        .then(|| format!("{} → {}", level_name(old.level), level_name(new.level))),
                    params_changed: old.params != new.params,
                    returns_changed: old.returns != new.returns,
                };
                (change.level.is_some() || change.params_changed || change.returns_changed)
                    .then_some(change)
            })
            .collect(),
        settings_added: new_settings
            .keys()
            .filter(|path| !old_settings.contains_key(*path))
            .cloned()
            .collect(),
        settings_removed: old_settings
            .keys()
            .filter(|path| !new_settings.contains_key(*path))
            .cloned()
            .collect(),
        settings_changed: new_settings
            .iter()
            .filter(|(path, schema)| old_settings.get(*path).is_some_and(|old| old != *schema))
            .map(|(path, _)| path.clone())
            .collect(),
        secrets_added: new_secrets.difference(&old_secrets).cloned().collect(),
        secrets_removed: old_secrets.difference(&new_secrets).cloned().collect(),
        default_settings_changed: old.default_settings != new.default_settings,
    }
}

/// Every property of a settings schema by dotted path (nested objects' properties too),
/// with its schema less its own nested properties, so a change shows once, where it is.
fn schema_properties(schema: &Value) -> BTreeMap<String, Value> {
    const BRANCHES: [&str; 3] = ["anyOf", "oneOf", "allOf"];
    /// The object schemas whose `properties` hold settings below `schema`: itself, and the
    /// branches of an `anyOf`/`oneOf`/`allOf` (an optional object is
    /// `{"anyOf": [{…}, {"type": "null"}]}`), as the secret settings are found.
    fn objects(schema: &Value) -> impl Iterator<Item = &Value> {
        std::iter::once(schema).chain(
            BRANCHES
                .iter()
                .filter_map(|key| schema.get(*key).and_then(Value::as_array))
                .flatten(),
        )
    }
    /// `schema` less what is reported at deeper paths: its properties, also in branches.
    fn own(schema: &Value) -> Value {
        let mut own = schema.clone();
        if let Some(object) = own.as_object_mut() {
            object.remove("properties");
            for key in BRANCHES {
                if let Some(branches) = object.get_mut(key).and_then(Value::as_array_mut) {
                    for branch in branches.iter_mut().filter_map(Value::as_object_mut) {
                        branch.remove("properties");
                    }
                }
            }
        }
        own
    }
    fn walk(schema: &Value, prefix: &str, out: &mut BTreeMap<String, Value>, depth: usize) {
        if depth > 16 {
            return;
        }
        for object in objects(schema) {
            let Some(properties) = object.get("properties").and_then(Value::as_object) else {
                continue;
            };
            for (name, property) in properties {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                out.insert(path.clone(), own(property));
                walk(property, &path, out, depth + 1);
            }
        }
    }
    let mut out = BTreeMap::new();
    // The settings object itself (its `required`, `additionalProperties`), as `(settings)`.
    out.insert("(settings)".to_string(), own(schema));
    walk(schema, "", &mut out, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inspection(metadata: Value, imports: &[&str]) -> Inspection {
        Inspection {
            digest: "sha256:00".into(),
            size: 1,
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: vec!["warden:driver/driver@0.1.1".into()],
            metadata: serde_json::from_value(metadata).unwrap(),
            provenance: None,
        }
    }

    fn metadata(functions: Value, settings: Value, port: u16) -> Value {
        json!({
            "format": 1, "wit": "0.1.1", "sdk": "0.1.0", "name": "PJLink",
            "generic_name": "Display", "description": "", "version": "1.0.0",
            "transport": "tcp", "default_port": port,
            "settings_schema": settings, "default_settings": {},
            "functions": functions,
        })
    }

    #[test]
    fn changes_name_what_a_reviewer_must_look_at_again() {
        let before = inspection(
            metadata(
                json!([
                    {"name": "power", "level": "support", "params": {"type": "object"}, "returns": {}},
                    {"name": "mute", "level": "user", "params": {}, "returns": {}},
                ]),
                json!({"type": "object", "properties": {
                    "password": {"type": "string", "writeOnly": true},
                    "poll": {"type": "integer"},
                    "tls": {"type": "object", "properties": {"ca": {"type": "string"}}},
                    "proxy": {"anyOf": [{"type": "object", "properties": {"host": {"type": "string"}}}, {"type": "null"}]},
                }}),
                4352,
            ),
            &["warden:driver/transport@0.1.1", "wasi:cli/stdout@0.2.0"],
        );
        let after = inspection(
            metadata(
                json!([
                    {"name": "power", "level": "admin", "params": {"type": "object"}, "returns": {}},
                    {"name": "input", "level": "user", "params": {}, "returns": {}},
                ]),
                json!({"type": "object", "properties": {
                    "password": {"type": "string"},
                    "poll": {"type": "integer", "minimum": 1000},
                    "tls": {"type": "object", "properties": {
                        "ca": {"type": "string"}, "key": {"type": "string", "writeOnly": true},
                    }},
                    "proxy": {"anyOf": [{"type": "object", "properties": {
                        "host": {"type": "string"}, "token": {"type": "string", "writeOnly": true},
                    }}, {"type": "null"}]},
                }, "required": ["poll"]}),
                4353,
            ),
            &[
                "warden:driver/transport@0.1.1",
                "warden:driver/system@0.1.1",
            ],
        );
        let diff = changes(&before, &after);
        assert_eq!(
            diff.default_port.as_deref(),
            Some("Some(4352) → Some(4353)")
        );
        assert_eq!(diff.transport, None);
        assert_eq!(diff.imports_added, vec!["warden:driver/system@0.1.1"]);
        assert_eq!(diff.imports_removed, vec!["wasi:cli/stdout@0.2.0"]);
        assert_eq!(diff.functions_added, vec!["input"]);
        assert_eq!(diff.functions_removed, vec!["mute"]);
        assert_eq!(diff.functions_changed.len(), 1);
        assert_eq!(
            diff.functions_changed[0].level.as_deref(),
            Some("support → admin")
        );
        // An optional object's new key shows at its own path, not as a change of the
        // object; `required` shows as a change of the settings object.
        assert_eq!(diff.settings_added, vec!["proxy.token", "tls.key"]);
        assert!(diff.settings_removed.is_empty());
        assert_eq!(
            diff.settings_changed,
            vec!["(settings)", "password", "poll"]
        );
        assert_eq!(diff.secrets_added, vec!["proxy.token", "tls.key"]);
        assert_eq!(diff.secrets_removed, vec!["password"]);
        assert!(!diff.default_settings_changed);
        // The system import is named among the capabilities.
        assert!(
            after
                .capabilities()
                .iter()
                .any(|c| c.contains("other modules of its own system"))
        );
        assert_eq!(changes(&after, &after), ReviewChanges::default());
    }
}
