//! HTTP requests to the module's configured base URI.
//!
//! The deployer configures the scheme, host, port and base path (for example
//! `https://display.example.org/api`); a driver names only the path after it. The host
//! verifies TLS, keeps connections alive, follows redirects within that origin only, adds
//! the authentication configured in the module's settings and limits the response size.
//!
//! ```no_run
//! use warden_driver_sdk::prelude::*;
//!
//! # fn example() -> Result<()> {
//! let reply = http::get("/status").send()?;
//! let state: Value = reply.json()?;
//! let reply = http::post("/power").json(&json!({ "on": true }))?.send()?;
//! reply.error_for_status()?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wit::http as wit;
use crate::{Error, Result};

/// A request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
}

impl From<Method> for wit::Method {
    fn from(method: Method) -> Self {
        match method {
            Method::Get => wit::Method::Get,
            Method::Head => wit::Method::Head,
            Method::Post => wit::Method::Post,
            Method::Put => wit::Method::Put,
            Method::Patch => wit::Method::Patch,
            Method::Delete => wit::Method::Delete,
            Method::Options => wit::Method::Options,
        }
    }
}

/// A request being built; [`Request::send`] sends it.
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until it is sent"]
pub struct Request {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// A request with `method` to `path` (path and query after the module's base URI,
/// starting with `/`).
pub fn request(method: Method, path: impl Into<String>) -> Request {
    Request {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout: Duration::ZERO,
    }
}

/// A GET request to `path`.
pub fn get(path: impl Into<String>) -> Request {
    request(Method::Get, path)
}

/// A POST request to `path`.
pub fn post(path: impl Into<String>) -> Request {
    request(Method::Post, path)
}

/// A PUT request to `path`.
pub fn put(path: impl Into<String>) -> Request {
    request(Method::Put, path)
}

/// A DELETE request to `path`.
pub fn delete(path: impl Into<String>) -> Request {
    request(Method::Delete, path)
}

impl Request {
    /// Add a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Use `body` as the request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Send `value` as a JSON body with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::InvalidArguments(format!("request body: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Give up after `timeout` (redirects included) instead of the module's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send the request and wait for the whole response. Any status is a response;
    /// see [`Response::error_for_status`].
    pub fn send(self) -> Result<Response> {
        let request = wit::Request {
            method: self.method.into(),
            path: self.path,
            headers: self.headers,
            body: self.body,
            timeout_ms: u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX),
        };
        let response = wit::send(&request)?;
        Ok(Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }
}

/// A response from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers as lower-case name and value, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// This response if its status is 2xx, else a `device` error naming the status and
    /// the start of the body.
    pub fn error_for_status(self) -> Result<Self> {
        if self.is_success() {
            return Ok(self);
        }
        let text = String::from_utf8_lossy(&self.body);
        let excerpt: String = text.chars().take(200).collect();
        Err(Error::Device(format!(
            "HTTP {}: {}",
            self.status,
            excerpt.trim()
        )))
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body parsed as JSON into `T`; a body that does not parse is a `device` error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Device(format!("response is not the expected JSON: {e}")))
    }
}
