//! Single sign-on through OpenID Connect (`auth::oidc`): `GET /auth/oidc/{source}/login`
//! sends the browser to the provider, `GET /auth/oidc/{source}/callback` takes it back and
//! starts the same browser session as the local sign-in, then continues into the
//! authorization request that sent the person to the sign-in page.
//!
//! The person sees what they can do about a failure, never why a check failed; the cause
//! is in the log and the audit log.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;

use super::ApiState;
use super::extract::ClientAddress;
use super::pages::{self, SESSION_COOKIE, escape, see_other};
use super::sign_in::{LoginQuery, checked_continue};
use crate::auth::AuthError;
use crate::auth::oidc::{BROWSER_COOKIE, Callback, OidcError, PENDING_TTL_MS};

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/auth/oidc/{source}/login", get(login))
        .route("/auth/oidc/{source}/callback", get(callback))
}

async fn login(
    State(state): State<ApiState>,
    ClientAddress(address): ClientAddress,
    Path(source): Path<String>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = checked_continue(query.next.as_deref());
    let now = state.auth.now();
    match state.auth.ready().await {
        Ok(true) => {}
        Ok(false) => return failure(&source, &OidcError::Auth(AuthError::SetupRequired)),
        Err(error) => return failure(&source, &OidcError::Auth(error)),
    }
    let browser = pages::cookie(&headers, BROWSER_COOKIE);
    match state
        .auth
        .oidc()
        .begin(&source, browser.as_deref(), next, address, now)
        .await
    {
        Ok(started) => pages::with_cookies(
            see_other(&started.location),
            [pages::set_cookie(
                BROWSER_COOKIE,
                started.browser.expose(),
                PENDING_TTL_MS / 1000,
                "Lax",
            )],
        ),
        Err(error) => failure(&source, &error),
    }
}

async fn callback(
    State(state): State<ApiState>,
    Path(source): Path<String>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Response {
    let now = state.auth.now();
    let browser = pages::cookie(&headers, BROWSER_COOKIE);
    match state
        .auth
        .sign_in_oidc(&source, &callback, browser.as_deref(), address, now)
        .await
    {
        Ok((cookie, session, next)) => {
            tracing::info!(
                source,
                user = session.user_id,
                "signed in through OpenID Connect"
            );
            let target = checked_continue(next.as_deref()).unwrap_or_else(|| "/auth/login".into());
            pages::with_cookies(
                see_other(&target),
                [pages::set_cookie(
                    SESSION_COOKIE,
                    cookie.expose(),
                    (session.expires_at - now) / 1000,
                    "Lax",
                )],
            )
        }
        Err(error) => failure(&source, &error),
    }
}

/// The page for a failed sign-in; the cause goes to the log.
fn failure(source: &str, error: &OidcError) -> Response {
    let source: String = source.chars().take(64).collect();
    let again = "<p><a href=\"/auth/login\">Back to sign-in</a></p>";
    let (status, message) = match error {
        OidcError::UnknownSource(_) => {
            (StatusCode::NOT_FOUND, "There is no such identity provider.")
        }
        OidcError::UnknownState | OidcError::WrongBrowser => (
            StatusCode::BAD_REQUEST,
            "This sign-in is not valid any more: it was used already, it expired, or it was \
             started in another browser. Start again from the sign-in page.",
        ),
        OidcError::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-ins are in progress; finish one or try again in a few minutes.",
        ),
        OidcError::Refused(_) => (
            StatusCode::FORBIDDEN,
            "The identity provider did not sign you in.",
        ),
        OidcError::Provider(_) | OidcError::IdToken(_) => (
            StatusCode::BAD_GATEWAY,
            "The identity provider's answer could not be used. Try again; if it keeps \
             failing, tell the administrator (the host's log says why).",
        ),
        OidcError::Email(_) => (
            StatusCode::FORBIDDEN,
            "The identity provider did not vouch for your email address, which this host \
             needs to know who you are.",
        ),
        OidcError::Auth(AuthError::SetupRequired) => (
            StatusCode::FORBIDDEN,
            "This installation has no administrator yet: create one on the setup page first.",
        ),
        OidcError::Auth(AuthError::WrongSource { .. }) => (
            StatusCode::FORBIDDEN,
            "Your account on this host does not sign in through this identity provider.",
        ),
        OidcError::Auth(AuthError::Deactivated) => (
            StatusCode::FORBIDDEN,
            "Your account on this host is deactivated.",
        ),
        OidcError::Auth(_) => {
            tracing::error!(source, "OpenID Connect sign-in failed: {error}");
            return pages::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The host failed; its log says why.",
            );
        }
    };
    tracing::warn!(source, "OpenID Connect sign-in failed: {error}");
    pages::page(
        status,
        "Sign-in failed",
        &format!("<p>{}</p>{again}", escape(message)),
    )
}
