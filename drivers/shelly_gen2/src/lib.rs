//! Shelly Gen2+ relays (Plus, Pro, Gen3, Gen4: Plus 1PM, Pro 4PM, Plug S, ...) over their
//! RPC-over-HTTP API: switch a channel on, off or over, read its power metering, and
//! publish both as status.
//!
//! The module's base URI is the device (`http://192.0.2.10`). The host owns the HTTP
//! client: with authentication enabled on the device, the module's `http_auth` setting
//! (`digest`, user `admin`) lets the host answer the device's SHA-256 digest challenge, so
//! this driver never sees the password. `rpc` (pure, unit-tested natively) holds the
//! requests and the replies; this file sends them and publishes what comes back.

mod rpc;

use warden_driver_sdk::prelude::*;
use warden_driver_sdk::timers::Timer;

use crate::rpc::{DeviceInfo, RpcError, SwitchState};

/// The defaults a deployer sees; a unit test checks that they agree with serde's.
const DEFAULT_SETTINGS: &str = r#"{"switch_id":0,"poll_ms":10000,"timeout_ms":5000}"#;

/// Polling faster than this only keeps the device busy (it serves a handful of HTTP
/// clients at a time).
const MIN_POLL_MS: u32 = 1000;

/// The tag of the polling timers.
const POLL: &str = "poll";

/// How soon after `init` the first poll runs.
const FIRST_POLL: Duration = Duration::from_millis(10);

/// Settings of a Shelly relay module. The password is not one of them: set the host's
/// `http_auth` to `{"type": "digest", "username": "admin", "password": "..."}` when the
/// device has authentication enabled.
#[derive(Debug, Clone, PartialEq, Deserialize, Schema)]
#[serde(default)]
struct ShellySettings {
    /// The switch (relay) channel this module controls: 0 on single-relay devices, 0-3 on
    /// a Pro 4PM (use one module per channel).
    switch_id: u8,
    /// Read the switch's state this often, in milliseconds (at least 1000), and publish
    /// it as status. 0 turns polling off.
    poll_ms: u32,
    /// How long each request may take, in milliseconds; 0 uses the host's default.
    timeout_ms: u32,
}

impl Default for ShellySettings {
    fn default() -> Self {
        ShellySettings {
            switch_id: 0,
            poll_ms: 10_000,
            timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Default)]
struct Shelly {
    settings: ShellySettings,
    timers: Vec<Timer>,
    /// The device's identity, once read.
    info: Option<DeviceInfo>,
    /// Polling failures, so that a device that stays away is logged once.
    polling: log::FailureLog,
}

impl Driver for Shelly {
    type Settings = ShellySettings;
    const INFO: DriverInfo = DriverInfo {
        name: "Shelly Gen2+ relay",
        generic_name: "Relay",
        description: "Switches one channel of a Shelly Plus, Pro, Gen3 or Gen4 relay over \
                      its RPC-over-HTTP API and publishes its power metering (power, \
                      voltage, current, energy, temperature); the device's digest \
                      authentication is answered by the host.",
        version: env!("CARGO_PKG_VERSION"),
        transport: TransportKind::Http,
        default_port: Some(80),
        default_settings: DEFAULT_SETTINGS,
    };

    fn init(&mut self, settings: ShellySettings) -> Result<()> {
        if settings.poll_ms != 0 && settings.poll_ms < MIN_POLL_MS {
            return Err(Error::invalid_arguments(format!(
                "poll_ms must be 0 or at least {MIN_POLL_MS}, not {}",
                settings.poll_ms
            )));
        }
        for timer in self.timers.drain(..) {
            timers::cancel(timer);
        }
        let period = Duration::from_millis(settings.poll_ms.into());
        let polling = settings.poll_ms > 0;
        self.settings = settings;
        self.polling.reset();
        if polling {
            self.timers.push(timers::after(POLL, FIRST_POLL)?);
            self.timers.push(timers::every(POLL, period)?);
        }
        Ok(())
    }

    fn timer(&mut self, tag: &str) {
        if tag != POLL {
            return;
        }
        let polled = match self.info {
            Some(_) => self.state().map(|_| ()),
            None => self.info().and_then(|_| self.state()).map(|_| ()),
        };
        self.polling.record("polling", &polled);
    }
}

#[functions]
impl Shelly {
    /// Switch the output on (`true`) or off (`false`), then read the switch's state back,
    /// publish it and return it.
    pub fn power(&mut self, on: bool) -> Result<SwitchState> {
        let path = rpc::switch_set(self.settings.switch_id, on);
        let (status, body) = self.call(&path)?;
        rpc::was_on(status, &body).map_err(|e| device("Switch.Set", &e))?;
        publish("power", &on);
        self.state()
    }

    /// Toggle the output, then read the switch's state back, publish it and return it.
    pub fn toggle(&mut self) -> Result<SwitchState> {
        let path = rpc::switch_toggle(self.settings.switch_id);
        let (status, body) = self.call(&path)?;
        let was_on = rpc::was_on(status, &body).map_err(|e| device("Switch.Toggle", &e))?;
        publish("power", &!was_on);
        self.state()
    }

    /// Read the switch's output and metering (power, voltage, current, frequency,
    /// energy, temperature, errors), publish them as status and return them.
    pub fn state(&mut self) -> Result<SwitchState> {
        let path = rpc::switch_get_status(self.settings.switch_id);
        let (status, body) = self.call(&path)?;
        let state =
            rpc::switch_status(status, &body).map_err(|e| device("Switch.GetStatus", &e))?;
        for (key, value) in state.status() {
            match value {
                Some(value) => publish(key, &value),
                None => status::clear(key),
            }
        }
        Ok(state)
    }

    /// Read the device's identity (id, model, generation, firmware, whether
    /// authentication is on), publish `device_id`, `model` and `firmware`, and return it.
    /// The device answers this without authentication.
    pub fn info(&mut self) -> Result<DeviceInfo> {
        let (status, body) = self.call(&rpc::get_device_info())?;
        let info =
            rpc::device_info(status, &body).map_err(|e| device("Shelly.GetDeviceInfo", &e))?;
        publish("device_id", &info.id);
        publish("model", &info.model);
        publish("firmware", &info.firmware);
        self.info = Some(info.clone());
        Ok(info)
    }
}

impl Shelly {
    /// GET `path` and return the status and body; host errors pass through unchanged.
    fn call(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let mut request = http::get(path);
        if self.settings.timeout_ms > 0 {
            request = request.timeout(Duration::from_millis(self.settings.timeout_ms.into()));
        }
        let response = request.send()?;
        Ok((response.status, response.body))
    }
}

/// The device answered, and not with what was asked for.
fn device(method: &str, error: &RpcError) -> Error {
    Error::device(format!("{method}: {error}"))
}

/// Publish a status value. A failure is logged, not returned: the device did what it was
/// asked, and the caller should hear that.
fn publish<T: Serialize + ?Sized>(key: &str, value: &T) {
    if let Err(error) = status::set(key, value) {
        log::warn(&format!("publishing `{key}`: {error}"));
    }
}

export_driver!(Shelly);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_agree_with_the_serde_defaults() {
        let declared: ShellySettings = serde_json::from_str(DEFAULT_SETTINGS).unwrap();
        assert_eq!(declared, ShellySettings::default());
        let empty: ShellySettings = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ShellySettings::default());
    }

    #[test]
    fn settings_schema_describes_every_setting() {
        const SCHEMA: &[u8] = &warden_driver_sdk::json_bytes!(<ShellySettings as Schema>::SCHEMA);
        let schema: Value = serde_json::from_slice(SCHEMA).unwrap();
        for key in ["switch_id", "poll_ms", "timeout_ms"] {
            assert!(
                schema["properties"][key]["description"].is_string(),
                "{key}: {schema}"
            );
        }
        assert_eq!(schema["required"], json!([]), "every setting has a default");
    }

    #[test]
    fn the_hosts_auth_setting_is_not_the_drivers() {
        let settings: ShellySettings = serde_json::from_value(json!({
            "switch_id": 2,
            "http_auth": {"type": "digest", "username": "admin", "password": "secret"},
        }))
        .unwrap();
        assert_eq!(settings.switch_id, 2);
        assert!(!format!("{settings:?}").contains("secret"));
    }
}
