//! The HTTP client a module's driver uses through the `http` interface.
//!
//! One [`HttpLink`] per module with a base URI. The driver names a path; the link appends
//! it to the base path, asks [`capability::decide`] for the origin, and sends the request
//! on a kept-alive connection to that origin (opened through the same capability-checked
//! resolution and TLS as the stream transport). Redirects are followed only while they
//! stay within the origin — each one is decided again — and a redirect elsewhere fails the
//! request with `denied`. Authentication (basic, bearer or digest) comes from the module's
//! `http_auth` setting and is added by the host, so drivers never handle a digest
//! exchange. Every request has a deadline, and a response body over the module's limit
//! fails the request with `limit` without being read further.
//!
//! The link reports `Connected` after the first response and `Disconnected` when a
//! request then fails to reach the device, so an HTTP module's `connected` status means
//! "the device answered last time".

mod connector;
mod digest;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use self::connector::{ConnectError, Connector, ConnectorConfig};
use self::digest::Challenge;
use super::tls::{Alpn, DeviceTls, TlsSettingsError};
use super::{TransportError, TransportEvent};
use crate::capability::{self, BaseUri, Decision, Grant, Origin, Request, Scheme};

/// The settings key holding a module's HTTP authentication.
pub const SETTING_AUTH: &str = "http_auth";

/// Most headers a driver may add to one request.
const MAX_HEADERS: usize = 64;
/// Most bytes of a redirect's or challenge's body read to keep the connection reusable.
const DRAIN_LIMIT: usize = 64 * 1024;

/// How a module's HTTP client behaves. Deployer settings, not the driver's.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// How long a request may take when the driver does not say, redirects included.
    pub timeout: Duration,
    /// The largest response body accepted; larger ones fail the request with `limit`.
    pub max_body: usize,
    /// Most redirects followed for one request.
    pub max_redirects: u32,
    /// How long an idle kept-alive connection is kept.
    pub idle_timeout: Duration,
    /// Most idle connections kept (requests of one module are sent one at a time, so
    /// one is usually enough).
    pub max_idle: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(10),
            max_body: 4 * 1024 * 1024,
            max_redirects: 5,
            idle_timeout: Duration::from_secs(30),
            max_idle: 2,
        }
    }
}

/// Authentication the host adds to every request of a module.
#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// `Authorization: Basic …`
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer …`
    Bearer {
        /// The token.
        token: String,
    },
    /// Digest access authentication (RFC 7616), answered on the first challenge.
    Digest {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.write_str(match self {
            HttpAuth::Basic { .. } => "HttpAuth::Basic",
            HttpAuth::Bearer { .. } => "HttpAuth::Bearer",
            HttpAuth::Digest { .. } => "HttpAuth::Digest",
        })
    }
}

/// Why a module's HTTP settings were refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HttpSettingsError {
    /// `http_auth` is malformed.
    #[error("HTTP settings: {0}")]
    Auth(String),
    /// The TLS settings are malformed.
    #[error(transparent)]
    Tls(#[from] TlsSettingsError),
}

impl HttpAuth {
    /// The authentication configured in `settings` (`http_auth`), if any:
    /// `{"type": "basic" | "digest", "username": …, "password": …}` or
    /// `{"type": "bearer", "token": …}`.
    pub fn from_settings(settings: &Value) -> Result<Option<HttpAuth>, HttpSettingsError> {
        let fail = |message: &str| HttpSettingsError::Auth(format!("`{SETTING_AUTH}`: {message}"));
        let auth = match settings.get(SETTING_AUTH) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(auth)) => auth,
            Some(_) => return Err(fail("must be an object with a `type`")),
        };
        let text = |key: &str| -> Result<String, HttpSettingsError> {
            match auth.get(key) {
                Some(Value::String(value)) => Ok(value.clone()),
                _ => Err(fail(&format!("`{key}` must be a string"))),
            }
        };
        let kind = text("type")?;
        let auth = match kind.as_str() {
            "basic" => HttpAuth::Basic {
                username: text("username")?,
                password: text("password")?,
            },
            "digest" => HttpAuth::Digest {
                username: text("username")?,
                password: text("password")?,
            },
            "bearer" => HttpAuth::Bearer {
                token: text("token")?,
            },
            _ => return Err(fail("`type` must be basic, bearer or digest")),
        };
        if let HttpAuth::Basic { username, .. } = &auth
            && username.contains(':')
        {
            return Err(fail("a basic-auth user name cannot contain `:`"));
        }
        Ok(Some(auth))
    }
}

/// A request from the driver, before the host checks it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// The method.
    pub method: http::Method,
    /// Path and query after the base URI, starting with `/`.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The response handed to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers: lower-case name and value.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// One module's HTTP client.
pub struct HttpLink {
    base: BaseUri,
    grant: Arc<Grant>,
    auth: Option<HttpAuth>,
    digest: Mutex<Option<Challenge>>,
    client: Client<Connector, Full<Bytes>>,
    options: HttpOptions,
    events: mpsc::Sender<TransportEvent>,
    /// The connected state last reported to the runtime.
    reported: AtomicBool,
}

impl std::fmt::Debug for HttpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLink")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl HttpLink {
    /// The client of the module holding `grant` (whose base URI it uses), configured from
    /// the module's merged `settings` (authentication and TLS). Connection state changes
    /// are reported on `events`. Must be called within a Tokio runtime.
    pub fn new(
        grant: Arc<Grant>,
        settings: &Value,
        options: HttpOptions,
        connect_timeout: Duration,
        keepalive: Option<Duration>,
        events: mpsc::Sender<TransportEvent>,
    ) -> Result<HttpLink, HttpSettingsError> {
        let base = grant.base_uri.clone().ok_or_else(|| {
            HttpSettingsError::Auth("the module has no base URI configured".to_string())
        })?;
        let auth = HttpAuth::from_settings(settings)?;
        let tls = match base.origin.scheme {
            Scheme::Https => Some(DeviceTls::from_settings(
                settings,
                &base.origin.endpoint.host,
                Alpn::Http1,
            )?),
            Scheme::Http => {
                if super::tls::mentions_tls(settings) {
                    return Err(TlsSettingsError(
                        "TLS settings are given but the base URI is http://".to_string(),
                    )
                    .into());
                }
                None
            }
        };
        let connector = Connector {
            inner: Arc::new(ConnectorConfig {
                grant: Arc::clone(&grant),
                tls,
                keepalive,
                connect_timeout,
                events: events.clone(),
            }),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(options.idle_timeout)
            .pool_max_idle_per_host(options.max_idle)
            .build(connector);
        Ok(HttpLink {
            base,
            grant,
            auth,
            digest: Mutex::new(None),
            client,
            options,
            events,
            reported: AtomicBool::new(false),
        })
    }

    /// The module's base URI.
    pub fn base_uri(&self) -> &BaseUri {
        &self.base
    }

    /// The default deadline of a request made now.
    pub fn default_deadline(&self) -> Instant {
        Instant::now() + self.options.timeout
    }

    /// Send `request` and read the whole response before `deadline`.
    pub async fn send(
        &self,
        request: HttpRequest,
        deadline: Instant,
    ) -> Result<HttpResponse, TransportError> {
        let HttpRequest {
            mut method,
            path,
            headers,
            body,
        } = request;
        let headers = self.check_headers(headers)?;
        let mut uri = self.uri_for(&path)?;
        let mut body = Bytes::from(body);
        let mut redirects = 0;
        let mut answered_challenge = false;
        loop {
            let origin = Origin::of(&uri).ok_or_else(|| {
                TransportError::InvalidRequest(format!("`{uri}` is not an http(s) URI"))
            })?;
            if let Decision::Deny(reason) =
                capability::decide(&self.grant, Request::HttpRequest(&origin))
            {
                return Err(TransportError::Denied(reason));
            }
            let outgoing = self.build(&method, &uri, &headers, body.clone())?;
            let response = match timeout_at(deadline, self.client.request(outgoing)).await {
                Err(_) => {
                    return Err(TransportError::Timeout(format!(
                        "no response from {origin} before the deadline"
                    )));
                }
                Ok(Err(error)) => return Err(self.client_error(&error)),
                Ok(Ok(response)) => response,
            };
            self.report(true);
            let status = response.status();
            if status == http::StatusCode::UNAUTHORIZED
                && !answered_challenge
                && matches!(self.auth, Some(HttpAuth::Digest { .. }))
                && let Some(challenge) = Challenge::pick(
                    response
                        .headers()
                        .get_all(header::WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|value| value.to_str().ok()),
                )
            {
                *self.digest.lock().unwrap_or_else(|e| e.into_inner()) = Some(challenge);
                answered_challenge = true;
                drain(response.into_body(), deadline).await;
                continue;
            }
            if status.is_redirection()
                && let Some(location) = response.headers().get(header::LOCATION)
            {
                let location = location.to_str().map_err(|_| {
                    TransportError::Device("a redirect's location is not text".to_string())
                })?;
                let next = resolve_location(&uri, location).ok_or_else(|| {
                    TransportError::Device(format!("cannot follow the redirect to `{location}`"))
                })?;
                let next_origin = Origin::of(&next).ok_or_else(|| {
                    TransportError::Denied(format!(
                        "origin rule: a redirect to `{location}` leaves this module's origin"
                    ))
                })?;
                if let Decision::Deny(reason) =
                    capability::decide(&self.grant, Request::HttpRedirect(&next_origin))
                {
                    return Err(TransportError::Denied(reason));
                }
                if redirects >= self.options.max_redirects {
                    return Err(TransportError::Device(format!(
                        "more than {} redirects",
                        self.options.max_redirects
                    )));
                }
                redirects += 1;
                let code = status.as_u16();
                if code == 303 || ((code == 301 || code == 302) && method == http::Method::POST) {
                    method = http::Method::GET;
                    body = Bytes::new();
                }
                drain(response.into_body(), deadline).await;
                uri = next;
                continue;
            }
            return self.read(response, deadline).await;
        }
    }

    /// The full URI for a driver's `path`, refusing anything that is not a plain
    /// absolute path and query.
    fn uri_for(&self, path: &str) -> Result<http::Uri, TransportError> {
        let invalid = |why: &str| TransportError::InvalidRequest(format!("path `{path}`: {why}"));
        // A URI with an authority names a place: decide on it like any request, so an
        // attempt at another origin is denied and logged as such.
        let scheme_relative = path
            .starts_with("//")
            .then(|| format!("{}:{path}", self.base.origin.scheme.as_str()));
        if let Some(origin) = scheme_relative
            .as_deref()
            .or(Some(path))
            .and_then(|text| text.parse::<http::Uri>().ok())
            .and_then(|uri| Origin::of(&uri))
        {
            if let Decision::Deny(reason) =
                capability::decide(&self.grant, Request::HttpRequest(&origin))
            {
                return Err(TransportError::Denied(reason));
            }
            return Err(invalid("give a path after the base URI, not a URI"));
        }
        if !path.starts_with('/') {
            return Err(invalid("must start with `/`"));
        }
        if path.starts_with("//") {
            return Err(invalid("must not start with `//`"));
        }
        if path
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '#' | '\\'))
        {
            return Err(invalid(
                "must not contain spaces, control characters, `#` or `\\`",
            ));
        }
        let path_only = path.split('?').next().unwrap_or(path);
        let decoded = path_only.to_ascii_lowercase().replace("%2e", ".");
        if decoded
            .split('/')
            .any(|segment| segment == ".." || segment == ".")
        {
            return Err(invalid("must not contain `.` or `..` segments"));
        }
        let endpoint = &self.base.origin.endpoint;
        let host = if endpoint.host.contains(':') {
            format!("[{}]", endpoint.host)
        } else {
            endpoint.host.clone()
        };
        let authority = if endpoint.port == self.base.origin.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", endpoint.port)
        };
        let text = format!(
            "{}://{authority}{}{path}",
            self.base.origin.scheme.as_str(),
            self.base.path
        );
        let uri: http::Uri = text.parse().map_err(|_| invalid("not a valid URI path"))?;
        if Origin::of(&uri).as_ref() != Some(&self.base.origin) {
            return Err(invalid("would leave the module's origin"));
        }
        Ok(uri)
    }

    /// Parse the driver's headers, refusing those the host owns.
    fn check_headers(
        &self,
        headers: Vec<(String, String)>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, TransportError> {
        if headers.len() > MAX_HEADERS {
            return Err(TransportError::InvalidRequest(format!(
                "at most {MAX_HEADERS} headers"
            )));
        }
        headers
            .into_iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    TransportError::InvalidRequest(format!("`{name}` is not a header name"))
                })?;
                let owned = matches!(
                    name.as_str(),
                    "host"
                        | "content-length"
                        | "transfer-encoding"
                        | "connection"
                        | "keep-alive"
                        | "proxy-connection"
                        | "proxy-authorization"
                        | "te"
                        | "trailer"
                        | "upgrade"
                ) || (name == header::AUTHORIZATION && self.auth.is_some());
                if owned {
                    return Err(TransportError::InvalidRequest(format!(
                        "the `{name}` header is set by the host"
                    )));
                }
                let value = HeaderValue::from_str(&value).map_err(|_| {
                    TransportError::InvalidRequest(format!("the value of `{name}` is not valid"))
                })?;
                Ok((name, value))
            })
            .collect()
    }

    fn build(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, TransportError> {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(uri.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(value) = self.authorization(method, uri) {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                TransportError::InvalidRequest(
                    "the configured credentials are not valid header text".into(),
                )
            })?;
            value.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, value);
        }
        request
            .body(Full::new(body))
            .map_err(|error| TransportError::InvalidRequest(error.to_string()))
    }

    fn authorization(&self, method: &http::Method, uri: &http::Uri) -> Option<String> {
        match self.auth.as_ref()? {
            HttpAuth::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            HttpAuth::Bearer { token } => Some(format!("Bearer {token}")),
            HttpAuth::Digest { username, password } => {
                let mut digest = self.digest.lock().unwrap_or_else(|e| e.into_inner());
                let challenge = digest.as_mut()?;
                let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
                let cnonce = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
                Some(challenge.authorize(username, password, method.as_str(), target, &cnonce))
            }
        }
    }

    /// Read the final response within the body limit.
    async fn read(
        &self,
        response: http::Response<hyper::body::Incoming>,
        deadline: Instant,
    ) -> Result<HttpResponse, TransportError> {
        let limit = self.options.max_body;
        let too_large =
            || TransportError::Limit(format!("the response body is larger than {limit} bytes"));
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let collected = match timeout_at(
            deadline,
            Limited::new(response.into_body(), limit).collect(),
        )
        .await
        {
            Err(_) => {
                return Err(TransportError::Timeout(
                    "the response body did not arrive before the deadline".to_string(),
                ));
            }
            Ok(Err(error)) if error.is::<LengthLimitError>() => return Err(too_large()),
            Ok(Err(error)) => {
                return Err(TransportError::NotConnected(format!(
                    "reading the response failed: {error}"
                )));
            }
            Ok(Ok(collected)) => collected,
        };
        Ok(HttpResponse {
            status,
            headers,
            body: collected.to_bytes().to_vec(),
        })
    }

    /// The typed error for a request the client could not complete.
    fn client_error(&self, error: &hyper_util::client::legacy::Error) -> TransportError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = source {
            if let Some(connect) = current.downcast_ref::<ConnectError>() {
                if connect.denied {
                    return TransportError::Denied(connect.reason.clone());
                }
                self.report(false);
                return TransportError::NotConnected(connect.reason.clone());
            }
            source = current.source();
        }
        self.report(false);
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(current) = source {
            message = format!("{message}: {current}");
            source = current.source();
        }
        TransportError::NotConnected(format!("{}: {message}", self.base.origin))
    }

    /// Tell the runtime the device answered (or stopped answering), on changes only.
    fn report(&self, connected: bool) {
        if self.reported.load(Ordering::Relaxed) == connected {
            return;
        }
        let event = if connected {
            TransportEvent::Connected
        } else {
            TransportEvent::Disconnected {
                reason: format!("{} stopped answering", self.base.origin),
            }
        };
        // Only a delivered change counts, so a full queue is retried at the next change.
        if self.events.try_send(event).is_ok() {
            self.reported.store(connected, Ordering::Relaxed);
        }
    }
}

/// Read and drop a body we do not hand on, so its connection can be reused; a large or
/// slow one is abandoned (and its connection closed) instead.
async fn drain(body: hyper::body::Incoming, deadline: Instant) {
    let _ = timeout_at(deadline, Limited::new(body, DRAIN_LIMIT).collect()).await;
}

/// Where a `Location` header points, relative to the request's `uri`.
fn resolve_location(uri: &http::Uri, location: &str) -> Option<http::Uri> {
    let location = location.trim();
    if location.contains(['\\', ' ', '#']) && !location.starts_with('/') {
        return None;
    }
    let location = location.split('#').next().unwrap_or(location);
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    let text = if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = uri.path();
        let directory = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{scheme}://{authority}{directory}/{location}")
    };
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let uri: http::Uri = "https://dev.example:8443/api/v1/state?x=1".parse().unwrap();
        let cases = [
            ("/login", "https://dev.example:8443/login"),
            ("next", "https://dev.example:8443/api/v1/next"),
            ("//evil.example/x", "https://evil.example/x"),
            ("http://dev.example:8443/y", "http://dev.example:8443/y"),
            ("/a#frag", "https://dev.example:8443/a"),
        ];
        for (location, expected) in cases {
            assert_eq!(
                resolve_location(&uri, location).unwrap().to_string(),
                expected,
                "{location}"
            );
        }
    }

    #[test]
    fn auth_settings_parse_and_refuse_garbage() {
        assert_eq!(HttpAuth::from_settings(&json!({})).unwrap(), None);
        assert_eq!(
            HttpAuth::from_settings(&json!({"http_auth": {"type": "bearer", "token": "t"}}))
                .unwrap(),
            Some(HttpAuth::Bearer { token: "t".into() })
        );
        for bad in [
            json!({"http_auth": "basic"}),
            json!({"http_auth": {"type": "ntlm"}}),
            json!({"http_auth": {"type": "basic", "username": "a:b", "password": "p"}}),
            json!({"http_auth": {"type": "digest", "username": "a"}}),
        ] {
            assert!(HttpAuth::from_settings(&bad).is_err(), "{bad} was accepted");
        }
        let debug = format!(
            "{:?}",
            HttpAuth::Basic {
                username: "u".into(),
                password: "secret".into()
            }
        );
        assert!(!debug.contains("secret"));
    }
}

#[cfg(test)]
mod client_tests {
    //! The client against a canned HTTP/1.1 server (and an HTTPS one).

    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::transport::testing::{CannedHttp, Respond, canned_http, ok, self_signed};

    fn link_for(
        base: &str,
        settings: Value,
        options: HttpOptions,
    ) -> (HttpLink, Arc<Grant>, mpsc::Receiver<TransportEvent>) {
        let base: BaseUri = base.parse().unwrap();
        let grant = Arc::new(Grant::new("http-test", None, BTreeSet::new()).with_base_uri(base));
        let (tx, rx) = mpsc::channel(64);
        let link = HttpLink::new(
            Arc::clone(&grant),
            &settings,
            options,
            Duration::from_secs(2),
            None,
            tx,
        )
        .unwrap();
        (link, grant, rx)
    }

    fn get(path: &str) -> HttpRequest {
        HttpRequest {
            method: http::Method::GET,
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(3)
    }

    fn echo_head() -> Respond {
        Arc::new(|head: &str| Some(ok(head)))
    }

    #[tokio::test]
    async fn paths_join_the_base_and_connections_are_kept_alive() {
        let server = canned_http(echo_head(), None).await;
        let (link, _, mut events) = link_for(
            &format!("http://{}/api/", server.endpoint),
            json!({}),
            HttpOptions::default(),
        );
        for round in 0..5 {
            let response = link
                .send(get(&format!("/state?round={round}")), soon())
                .await
                .unwrap();
            assert_eq!(response.status, 200);
            let head = String::from_utf8(response.body).unwrap();
            assert!(
                head.starts_with(&format!("GET /api/state?round={round} HTTP/1.1")),
                "{head}"
            );
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("host: {}", server.endpoint)),
                "{head}"
            );
        }
        assert_eq!(
            server.accepted.load(Ordering::SeqCst),
            1,
            "one kept-alive connection"
        );
        assert_eq!(events.try_recv().unwrap(), TransportEvent::Connected);
        assert!(events.try_recv().is_err(), "connected is reported once");
    }

    #[tokio::test]
    async fn redirects_are_followed_within_the_origin_only() {
        let elsewhere = canned_http(echo_head(), None).await;
        let target = format!("http://{}/steal", elsewhere.endpoint);
        let respond: Respond = Arc::new(move |head: &str| {
            let location = if head.starts_with("GET /old ") {
                "/new".to_string()
            } else if head.starts_with("GET /away ") {
                target.clone()
            } else if head.starts_with("GET /scheme ") {
                "https://127.0.0.1:1/x".to_string()
            } else {
                return Some(ok("landed"));
            };
            Some(
                format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n")
                    .into_bytes(),
            )
        });
        let server = canned_http(respond, None).await;
        let (link, grant, _events) = link_for(
            &format!("http://{}", server.endpoint),
            json!({}),
            HttpOptions::default(),
        );
        let response = link.send(get("/old"), soon()).await.unwrap();
        assert_eq!(response.body, b"landed");
        for path in ["/away", "/scheme"] {
            let error = link.send(get(path), soon()).await.unwrap_err();
            assert!(
                matches!(&error, TransportError::Denied(reason) if reason.contains("origin rule")),
                "{error:?}"
            );
        }
        assert_eq!(grant.denials(), 2);
        assert_eq!(
            elsewhere.accepted.load(Ordering::SeqCst),
            0,
            "nothing reached the other origin"
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_fail_with_limit() {
        let respond: Respond = Arc::new(|head: &str| {
            if head.starts_with("GET /declared ") {
                return Some(b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n".to_vec());
            }
            // Chunked, no length announced: 1 MiB in 16 KiB chunks.
            let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..64 {
                response.extend_from_slice(b"4000\r\n");
                response.extend_from_slice(&[b'x'; 0x4000]);
                response.extend_from_slice(b"\r\n");
            }
            response.extend_from_slice(b"0\r\n\r\n");
            Some(response)
        });
        let server = canned_http(respond, None).await;
        let options = HttpOptions {
            max_body: 64 * 1024,
            ..HttpOptions::default()
        };
        let (link, _, _events) =
            link_for(&format!("http://{}", server.endpoint), json!({}), options);
        for path in ["/declared", "/chunked"] {
            let error = link.send(get(path), soon()).await.unwrap_err();
            assert!(
                matches!(error, TransportError::Limit(_)),
                "{path}: {error:?}"
            );
        }
    }

    #[tokio::test]
    async fn requests_time_out_and_unreachable_devices_are_not_connected() {
        let server = canned_http(Arc::new(|_: &str| None), None).await;
        let (link, _, _events) = link_for(
            &format!("http://{}", server.endpoint),
            json!({}),
            HttpOptions::default(),
        );
        let error = link
            .send(get("/slow"), Instant::now() + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(error, TransportError::Timeout(_)), "{error:?}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let (link, _, _events) = link_for(
            &format!("http://127.0.0.1:{port}"),
            json!({}),
            HttpOptions::default(),
        );
        let error = link.send(get("/"), soon()).await.unwrap_err();
        assert!(
            matches!(error, TransportError::NotConnected(_)),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn host_owned_headers_and_escaping_paths_are_refused() {
        let server = canned_http(echo_head(), None).await;
        let settings =
            json!({ "http_auth": { "type": "basic", "username": "u", "password": "p" } });
        let (link, _, _events) = link_for(
            &format!("http://{}/api", server.endpoint),
            settings,
            HttpOptions::default(),
        );
        for path in [
            "relative",
            "/a/../b",
            "/a/%2E%2e/b",
            "/a b",
            "/x#y",
            "/a\\b",
        ] {
            let error = link.send(get(path), soon()).await.unwrap_err();
            assert!(
                matches!(error, TransportError::InvalidRequest(_)),
                "{path}: {error:?}"
            );
        }
        for name in ["Host", "authorization", "Transfer-Encoding", "connection"] {
            let mut request = get("/x");
            request.headers.push((name.to_string(), "v".to_string()));
            let error = link.send(request, soon()).await.unwrap_err();
            assert!(
                matches!(error, TransportError::InvalidRequest(_)),
                "{name}: {error:?}"
            );
        }
        for path in ["//evil.example/x", "http://evil.example/x"] {
            let error = link.send(get(path), soon()).await.unwrap_err();
            assert!(
                matches!(error, TransportError::Denied(_)),
                "{path}: {error:?}"
            );
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
        // The configured credentials are sent.
        let response = link.send(get("/x"), soon()).await.unwrap();
        let head = String::from_utf8(response.body).unwrap();
        assert!(head.contains("authorization: Basic dTpw"), "{head}");
    }

    #[tokio::test]
    async fn https_verifies_the_device_certificate() {
        let identity = self_signed(&["device.invalid"]);
        let server: CannedHttp = canned_http(echo_head(), Some(&identity)).await;
        let base = format!("https://{}/", server.endpoint);
        let (link, _, _events) = link_for(
            &base,
            json!({ "tls_fingerprint_sha256": identity.fingerprint }),
            HttpOptions::default(),
        );
        let response = link.send(get("/secure"), soon()).await.unwrap();
        assert!(
            String::from_utf8(response.body)
                .unwrap()
                .starts_with("GET /secure ")
        );
        // Without the pin the self-signed certificate is not trusted.
        let (link, _, _events) = link_for(&base, json!({}), HttpOptions::default());
        let error = link.send(get("/secure"), soon()).await.unwrap_err();
        assert!(
            matches!(&error, TransportError::NotConnected(reason) if reason.contains("certificate")),
            "{error:?}"
        );
    }
}
