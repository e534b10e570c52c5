//! The few HTML pages the host serves itself (sign-in, sign-out, first administrator,
//! authorization errors): plain forms without scripts or styles, every value escaped, and
//! the cookies they use.
//!
//! Cookies are `Secure`, `HttpOnly`, and scoped to `/auth`, so a browser never sends one
//! to the API (which takes only tokens and keys, and so cannot be driven by a forged
//! cross-site request). Each form carries an anti-forgery value that must equal its
//! `SameSite=Strict` cookie.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::auth::secret::{self, Secret, SecretKind};

/// The browser session's cookie.
pub const SESSION_COOKIE: &str = "warden_session";
/// The anti-forgery cookie of the forms.
pub const FORM_COOKIE: &str = "warden_form";

pub use crate::html::escape;

/// A whole page around `body` (already HTML).
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} · Warden</title></head>\n<body>\n<h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title)
    );
    (status, Html(html)).into_response()
}

/// A page saying what went wrong.
pub fn error(status: StatusCode, title: &str, message: &str) -> Response {
    page(status, title, &format!("<p>{}</p>", escape(message)))
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// A `Set-Cookie` for `name`, scoped to `/auth`; `max_age` 0 removes it.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64, same_site: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/auth; Max-Age={max_age_s}; Secure; HttpOnly; SameSite={same_site}"
    ))
    .ok()
}

/// A fresh anti-forgery value, its cookie, and the hidden field that must repeat it.
pub fn form_token() -> (Option<HeaderValue>, String) {
    let token = Secret::generate(SecretKind::Form);
    let cookie = set_cookie(FORM_COOKIE, token.expose(), 3600, "Strict");
    let field = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(token.expose())
    );
    (cookie, field)
}

/// Whether a posted form's anti-forgery value matches its cookie.
pub fn form_is_genuine(headers: &HeaderMap, posted: Option<&str>) -> bool {
    match (cookie(headers, FORM_COOKIE), posted) {
        (Some(expected), Some(posted)) => {
            Secret::from_text(&expected).is(SecretKind::Form) && secret::equal(&expected, posted)
        }
        _ => false,
    }
}

/// `response` with `cookies` set.
pub fn with_cookies(
    mut response: Response,
    cookies: impl IntoIterator<Item = Option<HeaderValue>>,
) -> Response {
    for cookie in cookies.into_iter().flatten() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A 303 to `location` (a path on this host, or a client's registered redirect URI).
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_cookies_found() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; warden_form=wdn_fm_x"),
        );
        assert_eq!(cookie(&headers, "warden_form").as_deref(), Some("wdn_fm_x"));
        assert!(cookie(&headers, "b").is_none());
        assert!(form_is_genuine(&headers, Some("wdn_fm_x")));
        assert!(!form_is_genuine(&headers, Some("wdn_fm_y")));
        assert!(!form_is_genuine(&headers, None));
    }
}
