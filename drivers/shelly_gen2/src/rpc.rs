//! Shelly's Gen2 RPC over HTTP, as documented in the Shelly API docs (RPC channels,
//! `Shelly` service, `Switch` component, common errors). Nothing here calls the host, so
//! all of it is unit-tested natively.
//!
//! A call is `GET /rpc/<Method>?<params>`; the device answers the method's `result` object
//! as the body (`{"was_on": false}`), or, when the call fails, an error object
//! `{"code": -105, "message": "..."}` with a status other than 200. With authentication
//! enabled every method but `Shelly.GetDeviceInfo` needs HTTP digest authentication
//! (SHA-256, user `admin`, realm the device id), which the host answers.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_driver_sdk::Schema;

/// `GET /rpc/Shelly.GetDeviceInfo`: identity, firmware, whether auth is on.
pub fn get_device_info() -> String {
    "/rpc/Shelly.GetDeviceInfo".to_string()
}

/// `GET /rpc/Switch.GetStatus?id=N`.
pub fn switch_get_status(id: u8) -> String {
    format!("/rpc/Switch.GetStatus?id={id}")
}

/// `GET /rpc/Switch.Set?id=N&on=true|false`.
pub fn switch_set(id: u8, on: bool) -> String {
    format!("/rpc/Switch.Set?id={id}&on={on}")
}

/// `GET /rpc/Switch.Toggle?id=N`.
pub fn switch_toggle(id: u8) -> String {
    format!("/rpc/Switch.Toggle?id={id}")
}

/// Why a call did not give the expected result.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcError {
    /// The device wants (other) credentials.
    Unauthorized,
    /// The device answered with an RPC error object.
    Refused {
        /// HTTP status.
        status: u16,
        /// The RPC error code, such as -103 (invalid argument) or -105 (not found).
        code: i64,
        /// The device's message.
        message: String,
    },
    /// Any other status, with the start of the body.
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        excerpt: String,
    },
    /// A 200 whose body is not what the method returns.
    Malformed(String),
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Unauthorized => f.write_str(
                "the device refused the credentials (HTTP 401): it has authentication \
                 enabled; set the module's `http_auth` to {\"type\": \"digest\", \
                 \"username\": \"admin\", \"password\": ...} with the device's password",
            ),
            RpcError::Refused {
                status,
                code,
                message,
            } => write!(
                f,
                "the device refused: {message} (error {code}, HTTP {status})"
            ),
            RpcError::Status { status, excerpt } if excerpt.is_empty() => {
                write!(f, "the device answered HTTP {status}")
            }
            RpcError::Status { status, excerpt } => {
                write!(f, "the device answered HTTP {status}: {excerpt}")
            }
            RpcError::Malformed(why) => write!(f, "unexpected reply: {why}"),
        }
    }
}

/// The RPC error object, on its own or inside a response frame.
#[derive(Debug, Deserialize)]
struct ErrorObject {
    code: i64,
    message: String,
}

#[derive(Debug, Deserialize)]
struct ErrorFrame {
    error: ErrorObject,
}

fn error_object(body: &[u8]) -> Option<ErrorObject> {
    serde_json::from_slice::<ErrorObject>(body)
        .ok()
        .or_else(|| {
            serde_json::from_slice::<ErrorFrame>(body)
                .ok()
                .map(|frame| frame.error)
        })
}

/// The `result` of a call answered with `status` and `body`.
pub fn result<T: serde::de::DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, RpcError> {
    if status == 401 {
        return Err(RpcError::Unauthorized);
    }
    if let Some(error) = error_object(body) {
        return Err(RpcError::Refused {
            status,
            code: error.code,
            message: error.message,
        });
    }
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(body);
        return Err(RpcError::Status {
            status,
            excerpt: text.trim().chars().take(200).collect(),
        });
    }
    serde_json::from_slice(body).map_err(|e| RpcError::Malformed(e.to_string()))
}

/// What `Shelly.GetDeviceInfo` says about the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Schema)]
pub struct DeviceInfo {
    /// The device id, such as `shellyplus1pm-a8032ab12345` (also its digest realm).
    pub id: String,
    /// The model (SKU), such as `SNSW-001P16EU`.
    pub model: String,
    /// The device generation: 2, 3, 4 (all speak Gen2 RPC).
    pub generation: u8,
    /// The firmware version, such as `1.4.4`.
    pub firmware: String,
    /// The firmware build id.
    #[serde(default)]
    pub firmware_id: Option<String>,
    /// The application (product line), such as `Plus1PM`.
    #[serde(default)]
    pub app: Option<String>,
    /// The MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// The name given to the device, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether the device requires authentication.
    pub auth_enabled: bool,
}

/// `Shelly.GetDeviceInfo`'s result as the device sends it.
#[derive(Debug, Deserialize)]
struct DeviceInfoWire {
    id: String,
    model: String,
    #[serde(rename = "gen")]
    generation: u8,
    ver: String,
    #[serde(default)]
    fw_id: Option<String>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    auth_en: bool,
}

/// Parse `Shelly.GetDeviceInfo`'s reply; a device older than Gen2 is refused.
pub fn device_info(status: u16, body: &[u8]) -> Result<DeviceInfo, RpcError> {
    let wire: DeviceInfoWire = result(status, body)?;
    if wire.generation < 2 {
        return Err(RpcError::Malformed(format!(
            "generation {} device; this driver needs Gen2 RPC (Plus, Pro, Gen3, Gen4)",
            wire.generation
        )));
    }
    Ok(DeviceInfo {
        id: wire.id,
        model: wire.model,
        generation: wire.generation,
        firmware: wire.ver,
        firmware_id: wire.fw_id,
        app: wire.app,
        mac: wire.mac,
        name: wire.name,
        auth_enabled: wire.auth_en,
    })
}

/// The state of one switch (relay) channel.
#[derive(Debug, Clone, PartialEq, Serialize, Schema)]
pub struct SwitchState {
    /// Whether the output is on.
    pub power: bool,
    /// Active power delivered to the load, in watts (metering devices only).
    pub apower: Option<f64>,
    /// Supply voltage, in volts (metering devices only).
    pub voltage: Option<f64>,
    /// Current, in amperes (metering devices only).
    pub current: Option<f64>,
    /// Mains frequency, in hertz (where measured).
    pub freq: Option<f64>,
    /// Energy delivered since the counter was reset, in watt-hours (metering devices only).
    pub energy: Option<f64>,
    /// The switch's temperature, in degrees Celsius (where measured).
    pub temperature: Option<f64>,
    /// What last changed the output: `init`, `http`, `button`, `timer`, ...
    pub source: Option<String>,
    /// Error conditions the device reports: `overtemp`, `overpower`, `overvoltage`, ...
    pub errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Energy {
    total: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Temperature {
    #[serde(rename = "tC")]
    celsius: Option<f64>,
}

/// `Switch.GetStatus`'s result as the device sends it.
#[derive(Debug, Deserialize)]
struct SwitchStatusWire {
    output: bool,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    apower: Option<f64>,
    #[serde(default)]
    voltage: Option<f64>,
    #[serde(default)]
    current: Option<f64>,
    #[serde(default)]
    freq: Option<f64>,
    #[serde(default)]
    aenergy: Option<Energy>,
    #[serde(default)]
    temperature: Option<Temperature>,
    #[serde(default)]
    errors: Vec<String>,
}

/// Parse `Switch.GetStatus`'s reply.
pub fn switch_status(status: u16, body: &[u8]) -> Result<SwitchState, RpcError> {
    let wire: SwitchStatusWire = result(status, body)?;
    Ok(SwitchState {
        power: wire.output,
        apower: wire.apower,
        voltage: wire.voltage,
        current: wire.current,
        freq: wire.freq,
        energy: wire.aenergy.and_then(|energy| energy.total),
        temperature: wire.temperature.and_then(|t| t.celsius),
        source: wire.source,
        errors: wire.errors,
    })
}

#[derive(Debug, Deserialize)]
struct WasOn {
    was_on: bool,
}

/// Parse the reply of `Switch.Set` and `Switch.Toggle`: whether the output was on before.
pub fn was_on(status: u16, body: &[u8]) -> Result<bool, RpcError> {
    result::<WasOn>(status, body).map(|reply| reply.was_on)
}

impl SwitchState {
    /// The status keys this state publishes, with their values; `None` clears a key the
    /// device does not report.
    pub fn status(&self) -> Vec<(&'static str, Option<Value>)> {
        let number = |value: Option<f64>| value.map(Value::from);
        vec![
            ("power", Some(Value::Bool(self.power))),
            ("apower", number(self.apower)),
            ("voltage", number(self.voltage)),
            ("current", number(self.current)),
            ("freq", number(self.freq)),
            ("energy", number(self.energy)),
            ("temperature", number(self.temperature)),
            ("source", self.source.clone().map(Value::String)),
            (
                "errors",
                Some(Value::Array(
                    self.errors.iter().cloned().map(Value::String).collect(),
                )),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_are_rpc_paths() {
        assert_eq!(get_device_info(), "/rpc/Shelly.GetDeviceInfo");
        assert_eq!(switch_get_status(0), "/rpc/Switch.GetStatus?id=0");
        assert_eq!(switch_set(3, true), "/rpc/Switch.Set?id=3&on=true");
        assert_eq!(switch_set(0, false), "/rpc/Switch.Set?id=0&on=false");
        assert_eq!(switch_toggle(1), "/rpc/Switch.Toggle?id=1");
    }

    #[test]
    fn device_info_from_the_documented_reply() {
        let body = json!({
            "name": null,
            "id": "shellyplus1pm-a8032ab12345",
            "mac": "A8032AB12345",
            "slot": 0,
            "model": "SNSW-001P16EU",
            "gen": 2,
            "fw_id": "20241011-114455/1.4.4-g6d2a586",
            "ver": "1.4.4",
            "app": "Plus1PM",
            "auth_en": true,
            "auth_domain": "shellyplus1pm-a8032ab12345"
        })
        .to_string();
        let info = device_info(200, body.as_bytes()).unwrap();
        assert_eq!(
            info,
            DeviceInfo {
                id: "shellyplus1pm-a8032ab12345".into(),
                model: "SNSW-001P16EU".into(),
                generation: 2,
                firmware: "1.4.4".into(),
                firmware_id: Some("20241011-114455/1.4.4-g6d2a586".into()),
                app: Some("Plus1PM".into()),
                mac: Some("A8032AB12345".into()),
                name: None,
                auth_enabled: true,
            }
        );
        let gen1 = json!({"id": "shelly1", "model": "SHSW-1", "gen": 1, "ver": "1.11"}).to_string();
        assert!(matches!(
            device_info(200, gen1.as_bytes()),
            Err(RpcError::Malformed(why)) if why.contains("generation 1")
        ));
    }

    #[test]
    fn switch_status_of_a_metering_relay() {
        let body = json!({
            "id": 0,
            "source": "http",
            "output": true,
            "apower": 60.5,
            "voltage": 230.1,
            "freq": 50.0,
            "current": 0.263,
            "aenergy": {"total": 14.093, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1700000000},
            "temperature": {"tC": 42.3, "tF": 108.1}
        })
        .to_string();
        let state = switch_status(200, body.as_bytes()).unwrap();
        assert_eq!(
            state,
            SwitchState {
                power: true,
                apower: Some(60.5),
                voltage: Some(230.1),
                current: Some(0.263),
                freq: Some(50.0),
                energy: Some(14.093),
                temperature: Some(42.3),
                source: Some("http".into()),
                errors: vec![],
            }
        );
        let status = state.status();
        assert!(status.contains(&("apower", Some(json!(60.5)))));
        assert!(status.contains(&("errors", Some(json!([])))));
    }

    #[test]
    fn switch_status_of_a_plain_relay_with_errors() {
        let body = br#"{"id":0,"source":"init","output":false,"temperature":{"tC":null,"tF":null},"errors":["overtemp"]}"#;
        let state = switch_status(200, body).unwrap();
        assert!(!state.power);
        assert_eq!(state.apower, None);
        assert_eq!(state.temperature, None);
        assert_eq!(state.errors, vec!["overtemp".to_string()]);
        let status = state.status();
        assert!(status.contains(&("apower", None)));
        assert!(status.contains(&("errors", Some(json!(["overtemp"])))));
    }

    #[test]
    fn set_and_toggle_replies() {
        assert_eq!(was_on(200, br#"{"was_on":true}"#), Ok(true));
        assert_eq!(was_on(200, br#"{"was_on":false}"#), Ok(false));
        assert!(matches!(was_on(200, b"{}"), Err(RpcError::Malformed(_))));
    }

    #[test]
    fn refusals() {
        assert_eq!(was_on(401, b""), Err(RpcError::Unauthorized));
        let refused = was_on(
            404,
            br#"{"code":-105,"message":"Argument 'id', value 7 not found!"}"#,
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the device refused: Argument 'id', value 7 not found! (error -105, HTTP 404)"
        );
        // The whole response frame, as POST /rpc answers.
        let framed = switch_status(
            200,
            br#"{"id":1,"src":"shellypro4pm-f008d1d8b8b8","error":{"code":-103,"message":"Missing required 'id'"}}"#,
        )
        .unwrap_err();
        assert!(matches!(framed, RpcError::Refused { code: -103, .. }));
        assert_eq!(
            was_on(500, b"Internal error\n").unwrap_err().to_string(),
            "the device answered HTTP 500: Internal error"
        );
        assert_eq!(
            was_on(503, b"").unwrap_err().to_string(),
            "the device answered HTTP 503"
        );
        assert!(RpcError::Unauthorized.to_string().contains("http_auth"));
    }
}
