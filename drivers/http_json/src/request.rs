//! What the driver sends: methods, headers, bodies and configured commands turned into one
//! request plan. Nothing here calls the host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use warden_driver_sdk::Schema;
use warden_driver_sdk::http::Method;

use crate::template::{self, TemplateError};

/// A request method, as written in settings: `GET`, `POST`, `PUT`, `PATCH`, `DELETE`,
/// `HEAD` or `OPTIONS` (lower case is accepted too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Schema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verb {
    #[default]
    #[serde(alias = "get")]
    Get,
    #[serde(alias = "post")]
    Post,
    #[serde(alias = "put")]
    Put,
    #[serde(alias = "patch")]
    Patch,
    #[serde(alias = "delete")]
    Delete,
    #[serde(alias = "head")]
    Head,
    #[serde(alias = "options")]
    Options,
}

impl Verb {
    /// The SDK's method.
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::Get,
            Verb::Post => Method::Post,
            Verb::Put => Method::Put,
            Verb::Patch => Method::Patch,
            Verb::Delete => Method::Delete,
            Verb::Head => Method::Head,
            Verb::Options => Method::Options,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
            Verb::Head => "HEAD",
            Verb::Options => "OPTIONS",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A named request configured by the deployer and run with `command(name, args)`.
#[derive(Debug, Clone, PartialEq, Deserialize, Schema)]
pub struct CommandSpec {
    /// The request method (default `GET`).
    #[serde(default)]
    pub method: Verb,
    /// Path and query after the base URI, starting with `/`. `{{name}}` placeholders are
    /// filled with the call's arguments, percent-encoded.
    pub path: String,
    /// The request body: any JSON, whose strings may hold `{{name}}` placeholders. A
    /// string that is exactly one placeholder becomes the argument's JSON value. Sent as
    /// JSON, unless `headers` sets a `content-type` and the rendered body is a string,
    /// which is then sent as that text. Leave it out for no body.
    #[serde(default)]
    pub body_template: Option<Value>,
    /// Extra request headers for this command; values may hold `{{name}}` placeholders.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long this command may take, in milliseconds; 0 (the default) uses the
    /// module's `timeout_ms`.
    #[serde(default)]
    pub timeout_ms: u32,
}

/// Headers a driver may not set: the host owns them (`authorization` too when the module
/// has `http_auth`, which only the host knows, so that one is left to the host to refuse).
const HOST_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Check a header name from the settings.
pub fn check_header_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(format!("`{name}` is not a header name"));
    }
    if HOST_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("the `{name}` header is set by the host"));
    }
    Ok(())
}

/// Check a path from the settings: it must start with `/`.
pub fn check_path(what: &str, path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(format!("{what} `{path}` must start with `/`"))
    }
}

impl CommandSpec {
    /// Check the command as configured.
    pub fn check(&self, name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err("a command needs a name".to_string());
        }
        check_path(&format!("the path of command `{name}`"), &self.path)?;
        for header in self.headers.keys() {
            check_header_name(header).map_err(|e| format!("command `{name}`: {e}"))?;
        }
        Ok(())
    }

    /// The request for a call with `args`.
    pub fn plan(
        &self,
        args: &Map<String, Value>,
        defaults: &BTreeMap<String, String>,
    ) -> Result<Plan, TemplateError> {
        let mut used = BTreeSet::new();
        template::names_in_text(&self.path, &mut used);
        for value in self.headers.values() {
            template::names_in_text(value, &mut used);
        }
        if let Some(body) = &self.body_template {
            template::names_in_value(body, &mut used);
        }
        template::check_unused(args, &used)?;
        let path = template::render_text(&self.path, args, template::percent_encode)?;
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            headers.push((
                name.clone(),
                template::render_text(value, args, str::to_string)?,
            ));
        }
        let body = self
            .body_template
            .as_ref()
            .map(|body| template::render_value(body, args))
            .transpose()?;
        Ok(Plan::new(
            self.method,
            path,
            defaults,
            &headers,
            body.as_ref(),
        ))
    }
}

/// One request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The method.
    pub verb: Verb,
    /// Path and query.
    pub path: String,
    /// Every header: the module's, then the call's (which replace the module's of the
    /// same name), then `content-type` for a JSON body unless one was given.
    pub headers: Vec<(String, String)>,
    /// The body; empty for none.
    pub body: Vec<u8>,
}

impl Plan {
    /// A request with the module's `defaults` headers, the call's `headers` and `body`: a
    /// JSON string is sent as its text when the headers name a `content-type`, anything
    /// else as JSON with `content-type: application/json`.
    pub fn new(
        verb: Verb,
        path: String,
        defaults: &BTreeMap<String, String>,
        headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Plan {
        let mut merged: Vec<(String, String)> = Vec::new();
        for (name, value) in defaults.iter().chain(headers.iter().map(|(n, v)| (n, v))) {
            merged.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
            merged.push((name.clone(), value.clone()));
        }
        let has_content_type = merged
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        let body = match body {
            None => Vec::new(),
            Some(Value::String(text)) if has_content_type => text.clone().into_bytes(),
            Some(value) => {
                if !has_content_type {
                    merged.push(("content-type".to_string(), "application/json".to_string()));
                }
                value.to_string().into_bytes()
            }
        };
        Plan {
            verb,
            path,
            headers: merged,
            body,
        }
    }

    /// `GET /path`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.verb, self.path)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: Value) -> CommandSpec {
        serde_json::from_value(value).unwrap()
    }

    fn header<'a>(plan: &'a Plan, name: &str) -> Option<&'a str> {
        plan.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn verbs_parse_in_either_case_and_default_to_get() {
        assert_eq!(spec(json!({"path": "/x"})).method, Verb::Get);
        assert_eq!(
            spec(json!({"method": "post", "path": "/x"})).method,
            Verb::Post
        );
        assert_eq!(
            spec(json!({"method": "DELETE", "path": "/x"})).method,
            Verb::Delete
        );
        assert!(
            serde_json::from_value::<CommandSpec>(json!({"method": "BREW", "path": "/"})).is_err()
        );
        assert_eq!(Verb::Patch.to_string(), "PATCH");
    }

    #[test]
    fn a_command_becomes_a_request() {
        let command = spec(json!({
            "method": "PUT",
            "path": "/zones/{{zone}}/setpoint",
            "body_template": {"celsius": "{{celsius}}", "note": "set by {{who}}"},
            "headers": {"X-Zone": "{{zone}}"},
        }));
        let defaults = BTreeMap::from([("X-Api-Key".to_string(), "k".to_string())]);
        let args = json!({"zone": "east wing", "celsius": 21.5, "who": "warden"});
        let plan = command.plan(args.as_object().unwrap(), &defaults).unwrap();
        assert_eq!(plan.describe(), "PUT /zones/east%20wing/setpoint");
        assert_eq!(header(&plan, "x-api-key"), Some("k"));
        assert_eq!(header(&plan, "x-zone"), Some("east wing"));
        assert_eq!(header(&plan, "content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&plan.body).unwrap();
        assert_eq!(body, json!({"celsius": 21.5, "note": "set by warden"}));
    }

    #[test]
    fn command_arguments_are_checked() {
        let command = spec(json!({"path": "/scene/{{n}}"}));
        let none = Map::new();
        assert_eq!(
            command.plan(&none, &BTreeMap::new()),
            Err(TemplateError::Missing("n".into()))
        );
        let extra = json!({"n": 1, "m": 2});
        assert_eq!(
            command.plan(extra.as_object().unwrap(), &BTreeMap::new()),
            Err(TemplateError::Unused("m".into()))
        );
        let plan = spec(json!({"path": "/ping"}))
            .plan(&none, &BTreeMap::new())
            .unwrap();
        assert!(plan.body.is_empty());
        assert_eq!(header(&plan, "content-type"), None);
    }

    #[test]
    fn bodies_are_json_unless_a_content_type_is_given_for_text() {
        let plan = Plan::new(
            Verb::Post,
            "/a".into(),
            &BTreeMap::new(),
            &[],
            Some(&json!("hi")),
        );
        assert_eq!(plan.body, br#""hi""#);
        assert_eq!(header(&plan, "content-type"), Some("application/json"));
        let text = [("Content-Type".to_string(), "text/plain".to_string())];
        let plan = Plan::new(
            Verb::Post,
            "/a".into(),
            &BTreeMap::new(),
            &text,
            Some(&json!("hi")),
        );
        assert_eq!(plan.body, b"hi");
        assert_eq!(header(&plan, "content-type"), Some("text/plain"));
        // A configured content-type is kept for JSON bodies too.
        let defaults = BTreeMap::from([(
            "content-type".to_string(),
            "application/vnd.acme+json".to_string(),
        )]);
        let plan = Plan::new(
            Verb::Put,
            "/a".into(),
            &defaults,
            &[],
            Some(&json!({"a": 1})),
        );
        assert_eq!(plan.body, br#"{"a":1}"#);
        assert_eq!(plan.headers.len(), 1);
    }

    #[test]
    fn call_headers_replace_module_headers_of_the_same_name() {
        let defaults = BTreeMap::from([
            ("Accept".to_string(), "application/json".to_string()),
            ("X-Trace".to_string(), "module".to_string()),
        ]);
        let call = [("x-trace".to_string(), "call".to_string())];
        let plan = Plan::new(Verb::Get, "/".into(), &defaults, &call, None);
        assert_eq!(
            plan.headers,
            vec![
                ("Accept".to_string(), "application/json".to_string()),
                ("x-trace".to_string(), "call".to_string()),
            ]
        );
    }

    #[test]
    fn settings_checks() {
        assert!(check_header_name("X-Api-Key").is_ok());
        assert!(check_header_name("Authorization").is_ok());
        assert!(check_header_name("").is_err());
        assert!(check_header_name("bad header").is_err());
        assert!(
            check_header_name("Content-Length")
                .unwrap_err()
                .contains("set by the host")
        );
        assert!(check_path("state_path", "/x").is_ok());
        assert!(check_path("state_path", "x").is_err());
        assert!(spec(json!({"path": "relative"})).check("c").is_err());
        assert!(spec(json!({"path": "/"})).check("").is_err());
        assert!(
            spec(json!({"path": "/", "headers": {"Host": "x"}}))
                .check("c")
                .is_err()
        );
    }
}
