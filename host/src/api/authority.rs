//! `GET /auth/authority`: what a PlaceOS client asks first, without a credential, to learn
//! where to sign in and which API it talks to. `@placeos/ts-client` retries this call
//! forever until it succeeds, and uses the engine-v2 paths only when `version` looks like
//! `v2.0.0` or later. Warden has one authority per host, so the only thing read from the
//! request is the domain it was reached at (the `Host` header, when it is a plain host
//! and port).

use axum::Json;
use axum::Router;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use serde_json::{Value, json};

use super::ApiState;

/// The API version reported: engine v2, the one Warden's routes follow.
pub const API_VERSION: &str = "v2.0.0";

pub(super) fn router() -> Router<ApiState> {
    Router::new().route("/auth/authority", get(authority))
}

async fn authority(headers: HeaderMap) -> Json<Value> {
    let domain = domain(&headers).unwrap_or_default();
    Json(json!({
        "id": "authority-warden",
        "name": domain,
        "description": "Warden",
        "domain": domain,
        "login_url": "/auth/login?continue={{url}}",
        "logout_url": "/auth/logout",
        // Sessions are the browser's business with `/auth/oauth/authorize`; clients that
        // believe there is one try a silent authorization, so there is none to report.
        "session": false,
        "production": true,
        "config": {},
        "version": API_VERSION,
    }))
}

/// The request's `Host`, if it is a host and port and nothing else (no user info).
fn domain(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let authority: Authority = host.parse().ok()?;
    (!authority.as_str().contains('@')).then(|| authority.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_host(host: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(host));
        headers
    }

    #[test]
    fn the_domain_is_the_host_it_was_reached_at() {
        assert_eq!(
            domain(&with_host("127.0.0.1:8443")).as_deref(),
            Some("127.0.0.1:8443")
        );
        assert_eq!(
            domain(&with_host("warden.example.org")).as_deref(),
            Some("warden.example.org")
        );
        assert_eq!(domain(&with_host("user@evil.example")), None);
        assert_eq!(domain(&with_host("a b")), None);
        assert_eq!(domain(&HeaderMap::new()), None);
    }
}
