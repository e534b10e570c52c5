//! The sign-in pages under `/auth`: `login` (a local account's email or username and
//! password; then back to the authorization request that sent the person here),
//! `logout` (ends the browser session and revokes every token issued through it) and
//! `setup` (the first administrator, with the one-time token the host printed at start).
//!
//! Until an administrator exists every sign-in is refused and points at `setup`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::ApiState;
use super::extract::ClientAddress;
use super::pages::{self, SESSION_COOKIE, escape, form_is_genuine, form_token, see_other};
use crate::auth::AuthError;
use crate::store::NewUser;

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/auth/login", get(login_page).post(login))
        .route("/auth/logout", get(logout_page).post(logout))
        .route("/auth/setup", get(setup_page).post(setup))
}

/// Where to go after signing in: only back into an authorization request on this host
/// (a path-absolute reference with this fixed start cannot name another origin).
pub(super) fn checked_continue(target: Option<&str>) -> Option<String> {
    let target = target?;
    let safe =
        target.starts_with("/auth/oauth/authorize?") && !target.chars().any(char::is_control);
    safe.then(|| target.to_string())
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginQuery {
    #[serde(rename = "continue")]
    pub(super) next: Option<String>,
}

/// "Sign in with NAME" links to every configured identity provider (SAML2, then OpenID
/// Connect), each carrying `next`.
fn sso_links(state: &ApiState, next: Option<&str>) -> String {
    let carried = next.map_or(String::new(), |n| {
        format!(
            "?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("continue", n)
                .finish()
        )
    });
    let saml = state.auth.saml().list();
    let saml = saml
        .iter()
        .map(|(id, name)| (format!("/auth/saml/{id}/login{carried}"), name.as_str()));
    let oidc = state
        .auth
        .oidc()
        .list()
        .map(|(id, name)| (format!("/auth/oidc/{id}/login{carried}"), name));
    saml.chain(oidc)
        .map(|(href, name)| {
            format!(
                "<p><a href=\"{}\">Sign in with {}</a></p>\n",
                escape(&href),
                escape(name)
            )
        })
        .collect()
}

/// The local sign-in form, after `single_sign_on` (the identity providers' links).
fn login_form(
    csrf: &str,
    next: Option<&str>,
    notice: Option<&str>,
    single_sign_on: &str,
) -> String {
    let notice = notice.map_or(String::new(), |n| {
        format!("<p role=\"alert\">{}</p>\n", escape(n))
    });
    let next = next.map_or(String::new(), |n| {
        format!(
            "<input type=\"hidden\" name=\"continue\" value=\"{}\">",
            escape(n)
        )
    });
    format!(
        "{notice}{single_sign_on}<form method=\"post\" action=\"/auth/login\">{csrf}{next}\n\
         <p><label>Email or username <input name=\"login\" autocomplete=\"username\" required></label></p>\n\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\n\
         <p><button type=\"submit\">Sign in</button></p>\n</form>"
    )
}

async fn login_page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = checked_continue(query.next.as_deref());
    let now = state.auth.now();
    if let Some(cookie) = pages::cookie(&headers, SESSION_COOKIE) {
        match state.auth.session(&cookie, now).await {
            Ok(Some((_, user))) => {
                if let Some(next) = next {
                    return see_other(&next);
                }
                return pages::page(
                    StatusCode::OK,
                    "Signed in",
                    &format!(
                        "<p>Signed in as {}.</p><p><a href=\"/auth/logout\">Sign out</a></p>",
                        escape(&user.email)
                    ),
                );
            }
            Ok(None) => {}
            Err(error) => return failure(&error),
        }
    }
    let notice = match state.auth.ready().await {
        Ok(true) => None,
        Ok(false) => Some(
            "This installation has no administrator yet: create one on the setup page with \
             the token the host printed at start.",
        ),
        Err(error) => return failure(&error),
    };
    let (cookie, csrf) = form_token();
    let links = sso_links(&state, next.as_deref());
    let body = login_form(&csrf, next.as_deref(), notice, &links);
    pages::with_cookies(pages::page(StatusCode::OK, "Sign in", &body), [cookie])
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: Option<String>,
    login: Option<String>,
    password: Option<String>,
    #[serde(rename = "continue")]
    next: Option<String>,
}

fn failure(error: &AuthError) -> Response {
    tracing::error!("sign-in page failed: {error}");
    pages::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The host failed; its log says why.",
    )
}

async fn login(
    State(state): State<ApiState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "Sign in",
            "The form was not understood.",
        );
    };
    if !form_is_genuine(&headers, form.csrf.as_deref()) {
        return pages::error(
            StatusCode::FORBIDDEN,
            "Sign in",
            "The form expired or was not sent by this host's page; reload the page.",
        );
    }
    let next = checked_continue(form.next.as_deref());
    let login = form.login.unwrap_or_default();
    let password = Zeroizing::new(form.password.unwrap_or_default());
    let now = state.auth.now();
    let links = sso_links(&state, next.as_deref());
    let again = |status: StatusCode, notice: &str| {
        let (cookie, csrf) = form_token();
        let body = login_form(&csrf, next.as_deref(), Some(notice), &links);
        pages::with_cookies(pages::page(status, "Sign in", &body), [cookie])
    };
    match state
        .auth
        .sign_in_password(&login, password, address, now)
        .await
    {
        Ok((cookie, session)) => {
            let max_age = (session.expires_at - now) / 1000;
            let target = next.unwrap_or_else(|| "/auth/login".to_string());
            pages::with_cookies(
                see_other(&target),
                [pages::set_cookie(
                    SESSION_COOKIE,
                    cookie.expose(),
                    max_age,
                    "Lax",
                )],
            )
        }
        Err(AuthError::BadPassword) => again(StatusCode::UNAUTHORIZED, "Wrong login or password."),
        Err(error @ AuthError::RateLimited { retry_after_ms }) => {
            let mut response = again(StatusCode::TOO_MANY_REQUESTS, &error.to_string());
            if let Ok(value) = HeaderValue::from_str(&((retry_after_ms + 999) / 1000).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Err(error @ AuthError::SetupRequired) => again(StatusCode::FORBIDDEN, &error.to_string()),
        Err(error) => failure(&error),
    }
}

async fn logout_page() -> Response {
    let (cookie, csrf) = form_token();
    let body = format!(
        "<form method=\"post\" action=\"/auth/logout\">{csrf}\
         <p><button type=\"submit\">Sign out</button></p></form>"
    );
    pages::with_cookies(pages::page(StatusCode::OK, "Sign out", &body), [cookie])
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = serde_urlencoded::from_bytes::<CsrfForm>(&body).unwrap_or(CsrfForm { csrf: None });
    if !form_is_genuine(&headers, form.csrf.as_deref()) {
        return pages::error(
            StatusCode::FORBIDDEN,
            "Sign out",
            "The form expired or was not sent by this host's page; reload the page.",
        );
    }
    if let Some(cookie) = pages::cookie(&headers, SESSION_COOKIE) {
        match state.auth.session(&cookie, state.auth.now()).await {
            Ok(Some((session, _))) => {
                if let Err(error) = state.auth.sign_out(&session).await {
                    return failure(&error);
                }
            }
            Ok(None) => {}
            Err(error) => return failure(&error),
        }
    }
    pages::with_cookies(
        pages::page(
            StatusCode::OK,
            "Signed out",
            "<p><a href=\"/auth/login\">Sign in</a></p>",
        ),
        [pages::set_cookie(SESSION_COOKIE, "", 0, "Lax")],
    )
}

async fn setup_page(State(state): State<ApiState>) -> Response {
    match state.auth.ready().await {
        Ok(true) => {
            return pages::error(
                StatusCode::CONFLICT,
                "Set up",
                "This installation has an administrator; sign in instead.",
            );
        }
        Ok(false) => {}
        Err(error) => return failure(&error),
    }
    let (cookie, csrf) = form_token();
    let body = format!(
        "<p>Create the first administrator with the one-time setup token the host printed \
         when it started.</p>\n<form method=\"post\" action=\"/auth/setup\">{csrf}\n\
         <p><label>Setup token <input name=\"setup_token\" autocomplete=\"off\" required></label></p>\n\
         <p><label>Email <input name=\"email\" type=\"email\" autocomplete=\"username\" required></label></p>\n\
         <p><label>First name <input name=\"first_name\"></label></p>\n\
         <p><label>Last name <input name=\"last_name\"></label></p>\n\
         <p><label>Password (at least {min} characters) <input name=\"password\" type=\"password\" \
         autocomplete=\"new-password\" required></label></p>\n\
         <p><button type=\"submit\">Create administrator</button></p>\n</form>",
        min = crate::auth::password::MIN_PASSWORD_CHARS
    );
    pages::with_cookies(pages::page(StatusCode::OK, "Set up", &body), [cookie])
}

#[derive(Deserialize)]
struct SetupForm {
    csrf: Option<String>,
    setup_token: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    password: Option<String>,
}

async fn setup(
    State(state): State<ApiState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<SetupForm>(&body) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "Set up",
            "The form was not understood.",
        );
    };
    if !form_is_genuine(&headers, form.csrf.as_deref()) {
        return pages::error(
            StatusCode::FORBIDDEN,
            "Set up",
            "The form expired or was not sent by this host's page; reload the page.",
        );
    }
    let new = NewUser {
        email: form.email.unwrap_or_default(),
        username: None,
        first_name: form.first_name.unwrap_or_default(),
        last_name: form.last_name.unwrap_or_default(),
        roles: vec!["admin".to_string()],
        auth_source: crate::auth::LOCAL_SOURCE.to_string(),
    };
    let password = Zeroizing::new(form.password.unwrap_or_default());
    let token = form.setup_token.unwrap_or_default();
    let user = match state.auth.complete_setup(&token, &new, password).await {
        Ok(user) => user,
        Err(AuthError::Store(crate::store::StoreError::Invalid { field, message })) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "Set up",
                &format!("{field}: {message}"),
            );
        }
        Err(error @ (AuthError::BadSetupToken | AuthError::SetupDone | AuthError::Password(_))) => {
            let status = match error {
                AuthError::BadSetupToken => StatusCode::FORBIDDEN,
                AuthError::SetupDone => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            return pages::error(status, "Set up", &error.to_string());
        }
        Err(error) => return failure(&error),
    };
    let now = state.auth.now();
    match state
        .auth
        .start_session(&user, crate::auth::LOCAL_SOURCE, address, now)
        .await
    {
        Ok((cookie, session)) => pages::with_cookies(
            see_other("/auth/login"),
            [pages::set_cookie(
                SESSION_COOKIE,
                cookie.expose(),
                (session.expires_at - now) / 1000,
                "Lax",
            )],
        ),
        Err(error) => failure(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_authorization_requests_on_this_host_are_continued() {
        assert!(checked_continue(Some("/auth/oauth/authorize?client_id=a")).is_some());
        assert!(checked_continue(Some("https://evil.example/")).is_none());
        assert!(checked_continue(Some("//evil.example/auth/oauth/authorize?")).is_none());
        assert!(checked_continue(Some("/auth/oauth/authorize?r=https://app/cb")).is_some());
        assert!(checked_continue(Some("/auth/oauth/authorize?\r\nSet-Cookie:x")).is_none());
        assert!(checked_continue(Some("/api/engine/v2/zones")).is_none());
        assert!(checked_continue(None).is_none());
    }
}
