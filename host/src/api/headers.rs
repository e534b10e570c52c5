//! The security headers on every response: HSTS (the API is HTTPS only), no sniffing, no
//! framing, no referrer, a content security policy that allows nothing (the API serves
//! JSON, not pages), and no caching of responses that may hold private data.

use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::response::Response;

/// The headers, name and value.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("cache-control", "no-store"),
];

/// Add the security headers to `response`.
pub async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (STRICT_TRANSPORT_SECURITY, SECURITY_HEADERS[0].1),
        (X_CONTENT_TYPE_OPTIONS, SECURITY_HEADERS[1].1),
        (X_FRAME_OPTIONS, SECURITY_HEADERS[2].1),
        (REFERRER_POLICY, SECURITY_HEADERS[3].1),
        (CONTENT_SECURITY_POLICY, SECURITY_HEADERS[4].1),
        (CACHE_CONTROL, SECURITY_HEADERS[5].1),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
