//! What a driver component is, read from its bytes without running it: digest, size,
//! imports, exports and the metadata the SDK embedded as a custom section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmparser::{Encoding, Parser, Payload};

/// The custom section the SDK writes a driver's metadata into.
pub const METADATA_SECTION: &str = "warden:driver/metadata";

/// The custom section the SDK writes a driver's provenance into (SDK 0.1 drivers built
/// before it existed have none).
pub const PROVENANCE_SECTION: &str = "warden:driver/provenance";

/// Largest metadata document accepted (a driver with hundreds of functions fits easily).
const MAX_METADATA: usize = 1 << 20;

/// Largest provenance document accepted: a handful of short strings.
const MAX_PROVENANCE: usize = 16 << 10;

/// Why a file is not a usable driver component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The bytes are not a WebAssembly component (a core module, or not wasm at all).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The binary does not parse.
    #[error("malformed component: {0}")]
    Malformed(#[from] wasmparser::BinaryReaderError),
    /// No metadata section: not built with the Warden SDK.
    #[error(
        "the component has no `{METADATA_SECTION}` section; was it built with warden-driver-sdk?"
    )]
    MissingMetadata,
    /// More than one metadata section, which would let a component show a reviewer one
    /// description and behave as another.
    #[error("the component has {0} `{METADATA_SECTION}` sections; exactly one is allowed")]
    DuplicateMetadata(usize),
    /// The metadata is not the JSON document the SDK writes.
    #[error("invalid driver metadata: {0}")]
    InvalidMetadata(String),
    /// More than one provenance section, which would let a component claim two sources.
    #[error("the component has {0} `{PROVENANCE_SECTION}` sections; at most one is allowed")]
    DuplicateProvenance(usize),
    /// The provenance is not the JSON document the SDK writes.
    #[error("invalid driver provenance: {0}")]
    InvalidProvenance(String),
}

/// The access level a function requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Any signed-in user of the system.
    User,
    /// Support staff.
    Support,
    /// Administrators.
    Admin,
}

/// How a driver reaches its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// TCP stream.
    Tcp,
    /// TLS stream.
    Tls,
    /// UDP datagrams.
    Udp,
    /// HTTP requests.
    Http,
    /// No device; works through other modules.
    Logic,
}

impl TransportKind {
    /// Whether modules of this driver need a `host:port` endpoint (HTTP drivers need a
    /// base URI instead, logic drivers nothing).
    pub fn needs_endpoint(self) -> bool {
        matches!(
            self,
            TransportKind::Tcp | TransportKind::Tls | TransportKind::Udp
        )
    }
}

/// One function a driver offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// Name used to exec it.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Level required to call it.
    pub level: Level,
    /// JSON Schema of its arguments (an object schema; `x-order` gives positions).
    pub params: Value,
    /// JSON Schema of its result.
    pub returns: Value,
}

impl FunctionInfo {
    /// Parameter names in positional order.
    pub fn param_names(&self) -> Vec<String> {
        self.params
            .get("x-order")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(|name| name.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The metadata document a driver carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverMetadata {
    /// Layout version of this document.
    pub format: u32,
    /// WIT package version the driver was built against.
    pub wit: String,
    /// SDK version.
    pub sdk: String,
    /// Driver name.
    pub name: String,
    /// Generic name, used for module names in systems (`Display_1`).
    pub generic_name: String,
    /// Description.
    pub description: String,
    /// Driver version.
    pub version: String,
    /// Transport kind.
    pub transport: TransportKind,
    /// Usual device port.
    pub default_port: Option<u16>,
    /// JSON Schema of the settings.
    pub settings_schema: Value,
    /// Default settings (an object).
    pub default_settings: Value,
    /// The driver's functions.
    pub functions: Vec<FunctionInfo>,
}

impl DriverMetadata {
    /// The function called `name`.
    pub fn function(&self, name: &str) -> Option<&FunctionInfo> {
        self.functions.iter().find(|f| f.name == name)
    }
}

impl DriverMetadata {
    /// The settings that are secrets (`"writeOnly": true` in the settings schema, which
    /// `#[schema(secret)]` writes), as dotted paths (`auth.password`), sorted.
    pub fn secret_settings(&self) -> Vec<String> {
        let mut found = Vec::new();
        secret_paths(&self.settings_schema, "", &mut found);
        found.sort();
        found.dedup();
        found
    }
}

/// Collect the paths of write-only properties of `schema`, looking through `anyOf`,
/// `oneOf` and `allOf` (an optional object is `{"anyOf":[{...},{"type":"null"}]}`).
fn secret_paths(schema: &Value, prefix: &str, found: &mut Vec<String>) {
    // A hostile schema could nest without end; settings are never this deep.
    const MAX_DEPTH: usize = 32;
    if prefix.matches('.').count() >= MAX_DEPTH {
        return;
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if is_write_only(property) {
                found.push(path);
            } else {
                secret_paths(property, &path, found);
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if branch.get("properties").is_some() {
                secret_paths(branch, prefix, found);
            }
        }
    }
}

fn is_write_only(schema: &Value) -> bool {
    schema.get("writeOnly") == Some(&Value::Bool(true))
        || ["anyOf", "oneOf", "allOf"].iter().any(|key| {
            schema
                .get(key)
                .and_then(Value::as_array)
                .is_some_and(|branches| {
                    branches
                        .iter()
                        .any(|b| b.get("writeOnly") == Some(&Value::Bool(true)))
                })
        })
}

/// Where a driver's source is, as its build declared it: the `warden:driver/provenance`
/// section. It is a claim, not a proof: `warden driver verify` rebuilds the named commit
/// and compares digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Layout version of this document.
    pub format: u32,
    /// The driver's cargo package name.
    pub package: String,
    /// The package version.
    pub version: String,
    /// The package's `repository` from its manifest, when it declares one.
    pub repository: Option<String>,
    /// The git commit the component was built from, when a builder said so (a plain
    /// `cargo build` leaves it out): 40 or 64 lower-case hex digits.
    pub commit: Option<String>,
    /// The SDK version.
    pub sdk: String,
    /// The WIT package version.
    pub wit: String,
}

/// Everything read from a component's bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// `sha256:<hex>` of the exact bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: usize,
    /// Interfaces the component imports, as `namespace:package/interface@version`.
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
    /// The embedded metadata.
    pub metadata: DriverMetadata,
    /// The embedded provenance; `None` for drivers built before the SDK wrote it.
    pub provenance: Option<Provenance>,
}

impl Inspection {
    /// What a module of the driver can reach, in words, from its transport and imports:
    /// the capabilities a reviewer approves.
    pub fn capabilities(&self) -> Vec<String> {
        let mut out = vec![
            match self.metadata.transport {
                TransportKind::Tcp => {
                    "TCP: connects only to its module's configured endpoint (host:port)"
                }
                TransportKind::Tls => {
                    "TLS: connects only to its module's configured endpoint (host:port); the \
                     certificate is verified unless the module sets danger_accept_invalid_certs"
                }
                TransportKind::Udp => {
                    "UDP: exchanges datagrams only with its module's configured endpoint; \
                     broadcast only when that endpoint is a broadcast address"
                }
                TransportKind::Http => {
                    "HTTP: requests only under its module's configured base URI; redirects \
                     followed only within that origin"
                }
                TransportKind::Logic => "no device connection",
            }
            .to_string(),
        ];
        let imports = |interface: &str| {
            self.imports
                .iter()
                .any(|name| name.starts_with(&format!("warden:driver/{interface}@")))
        };
        if imports("system") {
            out.push(
                "reads status of, subscribes to and calls functions of the other modules of its \
                 own system"
                    .to_string(),
            );
        }
        if imports("settings") {
            out.push("reads its own module's merged settings, secrets included".to_string());
        }
        if imports("timers") {
            out.push("sets timers".to_string());
        }
        if self.imports.iter().any(|name| name.starts_with("wasi:")) {
            out.push(
                "WASI with no files, environment variables, sockets or name lookup; its stdout \
                 and stderr go to the module's log"
                    .to_string(),
            );
        }
        out
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Read a component without instantiating or compiling it.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, ComponentError> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut metadata_sections = Vec::new();
    let mut provenance_sections = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(ComponentError::NotAComponent(
                        "this is a core WebAssembly module; build the driver for wasm32-wasip2"
                            .to_string(),
                    ));
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export?.name.name.to_string());
                }
            }
            Payload::CustomSection(section) if section.name() == METADATA_SECTION => {
                metadata_sections.push(section.data());
            }
            Payload::CustomSection(section) if section.name() == PROVENANCE_SECTION => {
                provenance_sections.push(section.data());
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(ComponentError::NotAComponent(
            "truncated binary".to_string(),
        ));
    }
    let metadata = match metadata_sections.as_slice() {
        [] => return Err(ComponentError::MissingMetadata),
        [only] => parse_metadata(only)?,
        many => return Err(ComponentError::DuplicateMetadata(many.len())),
    };
    let provenance = match provenance_sections.as_slice() {
        [] => None,
        [only] => Some(parse_provenance(only)?),
        many => return Err(ComponentError::DuplicateProvenance(many.len())),
    };
    Ok(Inspection {
        digest: digest(bytes),
        size: bytes.len(),
        imports,
        exports,
        metadata,
        provenance,
    })
}

/// Whether `commit` is a full git object id: 40 (SHA-1) or 64 (SHA-256) lower-case hex
/// digits, as the SDK embeds it and `git rev-parse` prints it.
pub fn is_full_commit(commit: &str) -> bool {
    matches!(commit.len(), 40 | 64)
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_provenance(data: &[u8]) -> Result<Provenance, ComponentError> {
    /// The document as the SDK writes it: absent values are empty strings.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Written {
        format: u32,
        package: String,
        version: String,
        repository: String,
        commit: String,
        sdk: String,
        wit: String,
    }
    let invalid = |why: String| ComponentError::InvalidProvenance(why);
    if data.len() > MAX_PROVENANCE {
        return Err(invalid(format!(
            "{} bytes is more than the {MAX_PROVENANCE} allowed",
            data.len()
        )));
    }
    let written: Written = serde_json::from_slice(data).map_err(|e| invalid(e.to_string()))?;
    if written.format != 1 {
        return Err(invalid(format!(
            "provenance format {} is not supported (this host reads format 1)",
            written.format
        )));
    }
    if !written.commit.is_empty() && !is_full_commit(&written.commit) {
        return Err(invalid(format!(
            "commit `{}` is not a full commit id",
            written.commit.escape_debug()
        )));
    }
    let present = |text: String| (!text.is_empty()).then_some(text);
    Ok(Provenance {
        format: written.format,
        package: written.package,
        version: written.version,
        repository: present(written.repository),
        commit: present(written.commit),
        sdk: written.sdk,
        wit: written.wit,
    })
}

fn parse_metadata(data: &[u8]) -> Result<DriverMetadata, ComponentError> {
    if data.len() > MAX_METADATA {
        return Err(ComponentError::InvalidMetadata(format!(
            "{} bytes is more than the {MAX_METADATA} allowed",
            data.len()
        )));
    }
    let metadata: DriverMetadata =
        serde_json::from_slice(data).map_err(|e| ComponentError::InvalidMetadata(e.to_string()))?;
    if metadata.format != 1 {
        return Err(ComponentError::InvalidMetadata(format!(
            "metadata format {} is not supported (this host reads format 1)",
            metadata.format
        )));
    }
    if metadata.generic_name.is_empty()
        || !metadata
            .generic_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(ComponentError::InvalidMetadata(format!(
            "generic name `{}` must be non-empty ASCII letters, digits or `_`",
            metadata.generic_name
        )));
    }
    if !metadata.default_settings.is_object() {
        return Err(ComponentError::InvalidMetadata(
            "default settings must be a JSON object".to_string(),
        ));
    }
    let mut seen = BTreeMap::new();
    for function in &metadata.functions {
        if seen.insert(function.name.as_str(), ()).is_some() {
            return Err(ComponentError::InvalidMetadata(format!(
                "function `{}` is declared twice",
                function.name
            )));
        }
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_modules_and_garbage_are_refused() {
        // The smallest core module: magic + version 1.
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(
            inspect(core),
            Err(ComponentError::NotAComponent(_))
        ));
        assert!(matches!(
            inspect(b"not wasm"),
            Err(ComponentError::Malformed(_))
        ));
    }

    #[test]
    fn metadata_is_validated() {
        let good = serde_json::json!({
            "format": 1, "wit": "0.1.0", "sdk": "0.1.0", "name": "X", "generic_name": "Display",
            "description": "", "version": "1.0.0", "transport": "tcp", "default_port": 23,
            "settings_schema": {}, "default_settings": {},
            "functions": [{"name": "power", "description": "", "level": "admin",
                           "params": {"x-order": ["state"]}, "returns": {}}]
        });
        let parsed = parse_metadata(good.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.function("power").unwrap().level, Level::Admin);
        assert_eq!(
            parsed.function("power").unwrap().param_names(),
            vec!["state"]
        );

        let mut bad_name = good.clone();
        bad_name["generic_name"] = "Dis play".into();
        assert!(parse_metadata(bad_name.to_string().as_bytes()).is_err());
        let mut twice = good.clone();
        twice["functions"] = serde_json::json!([good["functions"][0], good["functions"][0]]);
        assert!(parse_metadata(twice.to_string().as_bytes()).is_err());
        let mut format = good;
        format["format"] = 2.into();
        assert!(parse_metadata(format.to_string().as_bytes()).is_err());
    }

    #[test]
    fn provenance_is_validated() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let good = serde_json::json!({
            "format": 1, "package": "pjlink", "version": "0.1.0", "repository": "",
            "commit": commit, "sdk": "0.1.0", "wit": "0.1.1"
        });
        let parsed = parse_provenance(good.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.commit.as_deref(), Some(commit));
        assert_eq!(parsed.repository, None);

        let mut developer = good.clone();
        developer["commit"] = "".into();
        assert_eq!(
            parse_provenance(developer.to_string().as_bytes())
                .unwrap()
                .commit,
            None
        );
        for (key, value) in [
            ("commit", serde_json::json!("main")),
            ("commit", serde_json::json!(commit.to_uppercase())),
            ("format", serde_json::json!(2)),
            ("extra", serde_json::json!("x")),
        ] {
            let mut bad = good.clone();
            bad[key] = value;
            assert!(
                matches!(
                    parse_provenance(bad.to_string().as_bytes()),
                    Err(ComponentError::InvalidProvenance(_))
                ),
                "{bad}"
            );
        }
        let huge = vec![b' '; MAX_PROVENANCE + 1];
        assert!(parse_provenance(&huge).is_err());
    }

    #[test]
    fn secret_settings_are_found_by_path() {
        let metadata = DriverMetadata {
            format: 1,
            wit: "0.1.1".into(),
            sdk: "0.1.0".into(),
            name: "X".into(),
            generic_name: "X".into(),
            description: String::new(),
            version: "1".into(),
            transport: TransportKind::Tcp,
            default_port: None,
            settings_schema: serde_json::json!({
                "type": "object",
                "properties": {
                    "password": {"writeOnly": true, "anyOf": [{"type": "string"}, {"type": "null"}]},
                    "port": {"type": "integer"},
                    "auth": {"anyOf": [{"type": "object", "properties": {
                        "user": {"type": "string"},
                        "token": {"anyOf": [{"writeOnly": true, "type": "string"}, {"type": "null"}]}
                    }}, {"type": "null"}]},
                    "nested": {"type": "object", "properties": {"deeper": {"type": "object",
                        "properties": {"key": {"type": "string", "writeOnly": true}}}}}
                }
            }),
            default_settings: serde_json::json!({}),
            functions: Vec::new(),
        };
        assert_eq!(
            metadata.secret_settings(),
            vec!["auth.token", "nested.deeper.key", "password"]
        );
    }
}
