//! SAML2 single sign-on pages under `/auth/saml/{source}` (the service provider is
//! `auth::saml`): `metadata` (this SP's metadata for the identity provider), `login`
//! (sends the browser to the identity provider with an AuthnRequest) and `acs` (the
//! identity provider's HTTP-POST answer; then the browser session, as a local sign-in).
//!
//! A pending sign-in is bound to the browser by a `wdn_sr_` cookie holding only a random
//! value; the request id, the source and the `continue` target stay on the host. The
//! cookie is `SameSite=None` because the identity provider's answer is a cross-site POST,
//! which would not carry a `Lax` cookie; it is `Secure`, `HttpOnly`, scoped to `/auth`,
//! lives 10 minutes and is used once.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::ApiState;
use super::extract::ClientAddress;
use super::pages::{self, SESSION_COOKIE, see_other};
use super::sign_in::checked_continue;
use crate::auth::AuthError;
use crate::auth::saml::{PENDING_TTL_MS, SamlError};

/// The cookie binding a pending SAML sign-in to the browser.
pub const SAML_COOKIE: &str = "warden_saml";

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/auth/saml/{source}/metadata", get(metadata))
        .route("/auth/saml/{source}/login", get(login))
        .route("/auth/saml/{source}/acs", post(acs))
}

fn unknown_source() -> Response {
    pages::error(
        StatusCode::NOT_FOUND,
        "Sign in",
        "There is no such identity provider.",
    )
}

async fn metadata(State(state): State<ApiState>, Path(source): Path<String>) -> Response {
    match state.auth.saml().metadata(&source) {
        Ok(xml) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            )],
            xml,
        )
            .into_response(),
        Err(_) => unknown_source(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    #[serde(rename = "continue")]
    next: Option<String>,
}

async fn login(
    State(state): State<ApiState>,
    ClientAddress(address): ClientAddress,
    Path(source): Path<String>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = checked_continue(query.next.as_deref());
    let now = state.auth.now();
    match state.auth.saml().begin_login(&source, next, address, now) {
        Ok(start) => pages::with_cookies(
            see_other(&start.redirect),
            [pages::set_cookie(
                SAML_COOKIE,
                start.cookie.expose(),
                PENDING_TTL_MS / 1000,
                "None",
            )],
        ),
        Err(SamlError::UnknownSource(_)) => unknown_source(),
        Err(SamlError::Busy) => pages::error(
            StatusCode::TOO_MANY_REQUESTS,
            "Sign in",
            "Too many sign-ins are in progress; finish one or try again in a few minutes.",
        ),
        Err(error) => {
            tracing::error!(source, "SAML sign-in could not start: {error}");
            pages::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign in",
                "Signing in through this identity provider is not possible right now; \
                 try again later.",
            )
        }
    }
}

#[derive(Deserialize)]
struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: Option<String>,
}

async fn acs(
    State(state): State<ApiState>,
    ClientAddress(address): ClientAddress,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let clear = pages::set_cookie(SAML_COOKIE, "", 0, "None");
    let Some(saml_response) = serde_urlencoded::from_bytes::<AcsForm>(&body)
        .ok()
        .and_then(|form| form.saml_response)
    else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "Sign in",
            "The identity provider's answer was not understood.",
        );
    };
    let cookie = pages::cookie(&headers, SAML_COOKIE);
    let now = state.auth.now();
    match state
        .auth
        .sign_in_saml(&source, cookie.as_deref(), saml_response, address, now)
        .await
    {
        Ok((cookie, session, next)) => {
            let max_age = (session.expires_at - now) / 1000;
            let target = next.unwrap_or_else(|| "/auth/login".to_string());
            pages::with_cookies(
                see_other(&target),
                [
                    pages::set_cookie(SESSION_COOKIE, cookie.expose(), max_age, "Lax"),
                    clear,
                ],
            )
        }
        Err(AuthError::Saml(SamlError::UnknownSource(_))) => unknown_source(),
        Err(AuthError::Saml(_)) => pages::with_cookies(
            pages::error(
                StatusCode::FORBIDDEN,
                "Sign-in failed",
                "The identity provider's answer was not accepted. Start signing in again.",
            ),
            [clear],
        ),
        Err(error @ (AuthError::WrongSource { .. } | AuthError::Deactivated)) => {
            tracing::warn!(source, "SAML sign-in refused: {error}");
            pages::with_cookies(
                pages::error(
                    StatusCode::FORBIDDEN,
                    "Sign-in failed",
                    "This account cannot sign in through this identity provider.",
                ),
                [clear],
            )
        }
        Err(error) => {
            tracing::error!(source, "SAML sign-in failed: {error}");
            pages::with_cookies(
                pages::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The host failed; its log says why.",
                ),
                [clear],
            )
        }
    }
}
