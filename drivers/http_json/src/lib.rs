//! A generic JSON web-service driver: requests to the module's base URI, named commands
//! configured by the deployer, and a polled state document published as status.
//!
//! The host owns everything below the request: the base URI (scheme, host, port, base
//! path), TLS, authentication (`http_auth` in the module's settings, which this driver
//! never reads), redirects (same origin only), timeouts and the response size limit. The
//! driver chooses the method, the path after the base URI, headers and the body.
//!
//! Pure modules hold the logic the unit tests run natively: `template` fills `{{name}}`
//! placeholders, `request` turns a call into a request plan, `reply` decodes responses and
//! words refusals, `state` turns a polled document into status changes.

mod reply;
mod request;
mod state;
mod template;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Map;
use warden_driver_sdk::prelude::*;
use warden_driver_sdk::timers::Timer;

use crate::reply::Reply;
use crate::request::{CommandSpec, Plan, Verb};
use crate::state::Update;

/// The defaults a deployer sees; a unit test checks that they agree with serde's.
const DEFAULT_SETTINGS: &str = r#"{"commands":{},"state_path":null,"poll_ms":30000,"state_key":null,"timeout_ms":0,"headers":{}}"#;

/// Polling faster than this only loads the service.
const MIN_POLL_MS: u32 = 250;

/// The tag of the polling timers.
const POLL: &str = "poll";

/// How soon after `init` the first poll runs.
const FIRST_POLL: Duration = Duration::from_millis(10);

/// Settings of a JSON web-service module. Authentication and TLS are the host's settings
/// (`http_auth`, `tls_ca_pem`, `tls_fingerprint_sha256`, `danger_accept_invalid_certs`)
/// and are not read by the driver.
#[derive(Debug, Clone, PartialEq, Deserialize, Schema)]
#[serde(default)]
struct Settings {
    /// Named requests run by `command(name, args)`: `{"name": {"method": "POST", "path":
    /// "/lights/{{id}}", "body_template": {"on": "{{on}}"}, "headers": {...},
    /// "timeout_ms": 0}}`.
    commands: BTreeMap<String, CommandSpec>,
    /// Path (and query) of a JSON document describing the service's state, fetched with
    /// GET by `poll()` and every `poll_ms`, and published as status. Unset: no polling.
    state_path: Option<String>,
    /// How often to poll `state_path`, in milliseconds (at least 250; 0 turns the timer
    /// off, `poll()` still works).
    poll_ms: u32,
    /// Publish the whole state document under this one status key. Unset: the document
    /// must be a JSON object, and each top-level key becomes a status key.
    state_key: Option<String>,
    /// How long each request may take, redirects included, in milliseconds; 0 uses the
    /// host's default (10 s). Always within the calling function's own deadline.
    timeout_ms: u32,
    /// Headers sent with every request, such as `{"X-Api-Key": "..."}` or `{"Accept":
    /// "application/json"}`. Secret as a whole, because API keys travel here.
    #[schema(secret)]
    headers: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            commands: BTreeMap::new(),
            state_path: None,
            poll_ms: 30_000,
            state_key: None,
            timeout_ms: 0,
            headers: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// Everything `init` refuses, checked before anything changes.
    fn check(&self) -> std::result::Result<(), String> {
        for (name, command) in &self.commands {
            command.check(name)?;
        }
        if let Some(path) = &self.state_path {
            request::check_path("state_path", path)?;
        }
        if self.poll_ms != 0 && self.poll_ms < MIN_POLL_MS {
            return Err(format!(
                "poll_ms must be 0 or at least {MIN_POLL_MS}, not {}",
                self.poll_ms
            ));
        }
        if let Some(key) = &self.state_key
            && (key.is_empty() || key == state::RESERVED)
        {
            return Err(format!(
                "state_key cannot be `{key}` (empty, or the host's own key)"
            ));
        }
        for name in self.headers.keys() {
            request::check_header_name(name).map_err(|e| format!("headers: {e}"))?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct HttpJson {
    settings: Settings,
    /// The periodic poll and the first one after `init`.
    timers: Vec<Timer>,
    /// The status keys the last poll published.
    published: BTreeSet<String>,
    /// Polling failures, so that a service that stays down is logged once.
    polling: log::FailureLog,
}

impl Driver for HttpJson {
    type Settings = Settings;
    const INFO: DriverInfo = DriverInfo {
        name: "JSON web service",
        generic_name: "WebService",
        description: "Talks to a JSON web service over HTTP(S): GET, POST, PUT and DELETE \
                      to paths under the module's base URI, named commands with \
                      {{placeholders}} configured in the settings, and a polled state \
                      document published as status.",
        version: env!("CARGO_PKG_VERSION"),
        transport: TransportKind::Http,
        default_port: None,
        default_settings: DEFAULT_SETTINGS,
    };

    fn init(&mut self, settings: Settings) -> Result<()> {
        settings.check().map_err(Error::invalid_arguments)?;
        for timer in self.timers.drain(..) {
            timers::cancel(timer);
        }
        if settings.state_path != self.settings.state_path
            || settings.state_key != self.settings.state_key
        {
            // A different document, or published differently: forget the old keys.
            for key in std::mem::take(&mut self.published) {
                status::clear(&key);
            }
        }
        let polling = settings.state_path.is_some() && settings.poll_ms > 0;
        let period = Duration::from_millis(settings.poll_ms.into());
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
        let polled = self.poll();
        self.polling.record("polling the state", &polled);
    }
}

#[functions]
impl HttpJson {
    /// GET `path` (path and query after the module's base URI, starting with `/`). Returns
    /// `{status, content_type, body}`, the body parsed when it is JSON, else text. A
    /// status other than 2xx is a device error naming it.
    #[level(support)]
    pub fn get(&mut self, path: String) -> Result<Reply> {
        self.send(&self.plan(Verb::Get, path, None, None), 0)
    }

    /// POST `body` to `path`. The body is sent as JSON; a string body is sent as it is
    /// when `content_type` is given (for example `text/plain`). Returns as `get` does.
    #[level(support)]
    pub fn post(
        &mut self,
        path: String,
        body: Option<Value>,
        content_type: Option<String>,
    ) -> Result<Reply> {
        let plan = self.plan(Verb::Post, path, body.as_ref(), content_type);
        self.send(&plan, 0)
    }

    /// PUT `body` to `path`, as `post` does.
    #[level(support)]
    pub fn put(
        &mut self,
        path: String,
        body: Option<Value>,
        content_type: Option<String>,
    ) -> Result<Reply> {
        let plan = self.plan(Verb::Put, path, body.as_ref(), content_type);
        self.send(&plan, 0)
    }

    /// DELETE `path`. Returns as `get` does.
    #[level(support)]
    pub fn delete(&mut self, path: String) -> Result<Reply> {
        self.send(&self.plan(Verb::Delete, path, None, None), 0)
    }

    /// Run the command `name` configured in the settings, filling its `{{placeholders}}`
    /// with `args` (an object; every placeholder needs an argument and every argument a
    /// placeholder). Returns as `get` does.
    pub fn command(&mut self, name: String, args: Option<Map<String, Value>>) -> Result<Reply> {
        let command = self.settings.commands.get(&name).ok_or_else(|| {
            let known: Vec<&str> = self.settings.commands.keys().map(String::as_str).collect();
            Error::invalid_arguments(format!(
                "no command `{name}` is configured (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        let plan = command
            .plan(&args.unwrap_or_default(), &self.settings.headers)
            .map_err(|e| Error::invalid_arguments(format!("command `{name}`: {e}")))?;
        self.send(&plan, command.timeout_ms)
    }

    /// Fetch the state document (`state_path`) now, publish it as status and return it.
    pub fn poll(&mut self) -> Result<Value> {
        let Some(path) = self.settings.state_path.clone() else {
            return Err(Error::invalid_arguments(
                "no state_path is configured for this module",
            ));
        };
        let plan = self.plan(Verb::Get, path, None, None);
        let reply = self.send(&plan, 0)?;
        if reply.body_base64.is_some() {
            return Err(Error::device(format!(
                "{}: the state document is binary, not JSON",
                plan.describe()
            )));
        }
        let publication = state::updates(
            &self.published,
            &reply.body,
            self.settings.state_key.as_deref(),
        )
        .map_err(|e| Error::device(format!("{}: {e}", plan.describe())))?;
        for key in publication.skipped {
            log::debug(&format!("state key {key:?} is not published"));
        }
        for change in publication.changes {
            match change {
                Update::Set(key, value) => {
                    if let Err(error) = status::set(&key, &value) {
                        log::warn(&format!("publishing `{key}`: {error}"));
                    }
                }
                Update::Clear(key) => status::clear(&key),
            }
        }
        self.published = publication.published;
        Ok(reply.body)
    }
}

impl HttpJson {
    /// A request with the module's headers, and `content_type` when given.
    fn plan(
        &self,
        verb: Verb,
        path: String,
        body: Option<&Value>,
        content_type: Option<String>,
    ) -> Plan {
        let headers: Vec<(String, String)> = content_type
            .map(|value| ("content-type".to_string(), value))
            .into_iter()
            .collect();
        Plan::new(verb, path, &self.settings.headers, &headers, body)
    }

    /// Send `plan` and return its reply; a status other than 2xx is a device error.
    fn send(&self, plan: &Plan, timeout_ms: u32) -> Result<Reply> {
        let mut request = http::request(plan.verb.method(), plan.path.clone());
        for (name, value) in &plan.headers {
            request = request.header(name.clone(), value.clone());
        }
        if !plan.body.is_empty() {
            request = request.body(plan.body.clone());
        }
        let timeout_ms = if timeout_ms > 0 {
            timeout_ms
        } else {
            self.settings.timeout_ms
        };
        if timeout_ms > 0 {
            request = request.timeout(Duration::from_millis(timeout_ms.into()));
        }
        let response = request.send().map_err(|e| e.context(plan.describe()))?;
        let reply = Reply::decode(response.status, &response.headers, &response.body);
        if !reply.is_success() {
            return Err(Error::device(reply::refusal(
                &plan.describe(),
                response.status,
                &response.body,
            )));
        }
        Ok(reply)
    }
}

export_driver!(HttpJson);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_agree_with_the_serde_defaults() {
        let declared: Settings = serde_json::from_str(DEFAULT_SETTINGS).unwrap();
        assert_eq!(declared, Settings::default());
        let empty: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Settings::default());
        assert_eq!(Settings::default().check(), Ok(()));
    }

    #[test]
    fn settings_schema_describes_every_setting() {
        const SCHEMA: &[u8] = &warden_driver_sdk::json_bytes!(<Settings as Schema>::SCHEMA);
        let schema: Value = serde_json::from_slice(SCHEMA).unwrap();
        for key in [
            "commands",
            "state_path",
            "poll_ms",
            "state_key",
            "timeout_ms",
            "headers",
        ] {
            assert!(
                schema["properties"][key]["description"].is_string(),
                "{key}: {schema}"
            );
        }
        assert_eq!(schema["required"], json!([]), "every setting has a default");
    }

    #[test]
    fn the_readme_example_settings_are_accepted() {
        let readme = include_str!("../README.md");
        let start = readme.find("```json\n").unwrap() + "```json\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let settings: Settings = serde_json::from_str(&readme[start..end]).unwrap();
        assert_eq!(settings.check(), Ok(()));
        assert!(!settings.commands.is_empty());
    }

    #[test]
    fn host_settings_are_ignored_by_the_driver() {
        let settings: Settings = serde_json::from_value(json!({
            "http_auth": {"type": "basic", "username": "u", "password": "p"},
            "tls_ca_pem": "-----BEGIN CERTIFICATE-----",
        }))
        .unwrap();
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn refused_settings() {
        let refused = |value: Value| {
            let settings: Settings = serde_json::from_value(value).unwrap();
            settings.check().unwrap_err()
        };
        assert!(refused(json!({"poll_ms": 100})).contains("at least 250"));
        assert!(refused(json!({"state_path": "status"})).contains("must start with `/`"));
        assert!(refused(json!({"state_key": "connected"})).contains("state_key"));
        assert!(refused(json!({"state_key": ""})).contains("state_key"));
        assert!(refused(json!({"headers": {"Content-Length": "1"}})).contains("host"));
        assert!(refused(json!({"commands": {"on": {"path": "relay/0"}}})).contains("command `on`"));
        let zero: Settings = serde_json::from_value(json!({"poll_ms": 0})).unwrap();
        assert_eq!(zero.check(), Ok(()));
    }
}
