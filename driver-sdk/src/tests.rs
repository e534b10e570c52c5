//! The SDK's macros and metadata, checked natively.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Driver, DriverInfo, Error, Functions, Result, Schema, TransportKind, functions};

/// Lamp settings.
#[derive(Debug, Default, Deserialize, Schema)]
#[serde(rename_all = "camelCase")]
struct LampSettings {
    /// Brightness used by `on`.
    default_level: u8,
    #[serde(default)]
    label: Option<String>,
    /// The lamp's admin password.
    #[serde(default)]
    #[schema(secret)]
    password: Option<String>,
    #[serde(default)]
    #[schema(secret)]
    token: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Schema, serde::Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Scene {
    Bright,
    DimEvening,
}

#[derive(Default)]
struct Lamp {
    level: u8,
}

impl Driver for Lamp {
    type Settings = LampSettings;
    const INFO: DriverInfo = DriverInfo {
        name: "Lamp \"deluxe\"",
        generic_name: "Lamp",
        description: "A test lamp.\nTwo lines.",
        version: "1.2.3",
        transport: TransportKind::Tcp,
        default_port: Some(7000),
        default_settings: r#"{"defaultLevel":80}"#,
    };

    fn init(&mut self, settings: LampSettings) -> Result<()> {
        self.level = settings.default_level;
        if settings.label.is_some_and(|label| label.is_empty()) {
            return Err(Error::invalid_arguments("an empty label"));
        }
        Ok(())
    }
}

#[functions]
impl Lamp {
    /// Set the level.
    ///
    /// Second paragraph.
    pub fn set(&mut self, level: u8, fade_ms: Option<u32>) -> Result<u8> {
        let _ = fade_ms;
        self.level = level;
        Ok(level)
    }

    /// Recall a scene.
    #[level(support)]
    pub fn scene(&self, r#type: Scene) -> Scene {
        r#type
    }

    /// Always fails.
    #[level(admin)]
    pub fn broken(&self) -> Result<()> {
        Err(Error::device("bulb blown"))
    }

    fn helper(&self) -> u8 {
        self.level
    }
}

#[test]
fn metadata_describes_the_driver() {
    let metadata: Value = serde_json::from_str(&crate::metadata_json::<Lamp>()).unwrap();
    assert_eq!(metadata["name"], "Lamp \"deluxe\"");
    assert_eq!(metadata["description"], "A test lamp.\nTwo lines.");
    assert_eq!(metadata["default_port"], 7000);
    assert_eq!(metadata["transport"], "tcp");
    assert_eq!(metadata["default_settings"], json!({"defaultLevel": 80}));
    let settings = &metadata["settings_schema"];
    assert_eq!(settings["description"], "Lamp settings.");
    assert_eq!(settings["required"], json!(["defaultLevel"]));
    assert_eq!(
        settings["properties"]["defaultLevel"]["description"],
        "Brightness used by `on`."
    );

    let functions = metadata["functions"].as_array().unwrap();
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["set", "scene", "broken"],
        "private helpers are not functions"
    );
    let set = &functions[0];
    assert_eq!(set["description"], "Set the level.\n\nSecond paragraph.");
    assert_eq!(set["level"], "user");
    assert_eq!(set["params"]["required"], json!(["level"]));
    assert_eq!(set["params"]["x-order"], json!(["level", "fade_ms"]));
    assert_eq!(set["params"]["properties"]["level"]["maximum"], 255);
    assert_eq!(set["returns"]["type"], "integer");
    let scene = &functions[1];
    assert_eq!(scene["level"], "support");
    assert_eq!(
        scene["params"]["properties"]["type"]["enum"],
        json!(["bright", "dim_evening"]),
        "raw identifiers lose their r#"
    );
    assert_eq!(functions[2]["level"], "admin");
    assert_eq!(functions[2]["returns"]["type"], "null");
}

#[test]
fn calls_dispatch_by_name_with_positional_or_named_arguments() {
    let mut lamp = Lamp::default();
    assert_eq!(lamp.call("set", "[40]").unwrap(), "40");
    assert_eq!(
        lamp.call("set", r#"{"level": 50, "fade_ms": 10}"#).unwrap(),
        "50"
    );
    assert_eq!(lamp.helper(), 50);
    assert_eq!(
        lamp.call("scene", r#"{"type": "dim_evening"}"#).unwrap(),
        r#""dim_evening""#
    );
    assert_eq!(
        lamp.call("broken", "[]"),
        Err(Error::Device("bulb blown".into()))
    );
    assert!(matches!(
        lamp.call("set", "[300]"),
        Err(Error::InvalidArguments(_))
    ));
    assert!(matches!(
        lamp.call("helper", "[]"),
        Err(Error::UnknownFunction(_))
    ));
}

#[test]
fn no_settings_accepts_any_object() {
    let _: crate::NoSettings = serde_json::from_str(r#"{"anything": [1, 2]}"#).unwrap();
    assert_eq!(
        crate::schema::render(&<crate::NoSettings as Schema>::SCHEMA).unwrap(),
        r#"{"type":"object"}"#
    );
}

#[test]
fn context_keeps_the_kind() {
    let error = Error::Timeout("no reply".into()).context("POWR");
    assert_eq!(error, Error::Timeout("POWR: no reply".into()));
    assert_eq!(error.to_string(), "timeout: POWR: no reply");
}

#[test]
fn secret_fields_are_write_only() {
    let metadata: Value = serde_json::from_str(&crate::metadata_json::<Lamp>()).unwrap();
    let properties = &metadata["settings_schema"]["properties"];
    assert_eq!(properties["password"]["writeOnly"], true);
    assert_eq!(
        properties["password"]["description"],
        "The lamp's admin password."
    );
    assert_eq!(properties["password"]["anyOf"][1]["type"], "null");
    assert_eq!(
        properties["token"],
        json!({"writeOnly": true, "type": "string"})
    );
    for plain in ["defaultLevel", "label"] {
        assert!(properties[plain].get("writeOnly").is_none(), "{plain}");
    }
    // The mark changes the schema only: the values deserialize as any other setting.
    let settings: LampSettings =
        serde_json::from_value(json!({"defaultLevel": 1, "password": "p", "token": "t"})).unwrap();
    assert_eq!(
        (settings.password.as_deref(), settings.token.as_str()),
        (Some("p"), "t")
    );
}

#[test]
fn provenance_names_the_expanding_crate() {
    const PROVENANCE: crate::schema::Node = crate::__provenance!();
    let text = crate::schema::render(&PROVENANCE).unwrap();
    let provenance: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(provenance["format"], 1);
    assert_eq!(provenance["package"], env!("CARGO_PKG_NAME"));
    assert_eq!(provenance["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(provenance["repository"], env!("CARGO_PKG_REPOSITORY"));
    assert_eq!(provenance["sdk"], crate::SDK_VERSION);
    assert_eq!(provenance["wit"], crate::WIT_VERSION);
    assert_eq!(
        provenance["commit"],
        option_env!("WARDEN_SOURCE_COMMIT").unwrap_or("")
    );
}

#[test]
fn only_full_commit_ids_are_embedded() {
    use crate::__private::source_commit;
    let sha1 = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(source_commit(None), "");
    assert_eq!(source_commit(Some(sha1)), sha1);
    assert!(crate::export::is_source_commit(&"ab".repeat(32)));
    for bad in [
        "main",
        "0123456",
        "0123456789ABCDEF0123456789ABCDEF01234567",
        "0123456789abcdef0123456789abcdef0123456\"",
        "0123456789abcdef0123456789abcdef012345678",
    ] {
        assert!(!crate::export::is_source_commit(bad), "{bad}");
    }
}
