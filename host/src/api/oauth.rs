//! The authorization server's endpoints, at PlaceOS's paths:
//! `GET /auth/oauth/authorize`, `POST /auth/oauth/token`, `POST /auth/oauth/revoke`.
//! The protocol is [`crate::auth`]'s; this is its HTTP: the browser session's cookie,
//! form bodies, client authentication by `Authorization: Basic` or form fields, and the
//! RFC 6749 error shape `{"error", "error_description"}`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::pages::{self, SESSION_COOKIE, see_other};
use crate::auth::{AuthorizeOutcome, AuthorizeRequest, OAuthError, TokenRequest};

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/auth/oauth/authorize", get(authorize))
        .route("/auth/oauth/token", post(token))
        .route("/auth/oauth/revoke", post(revoke))
}

async fn authorize(
    State(state): State<ApiState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(request): Query<AuthorizeRequest>,
) -> Response {
    let now = state.auth.now();
    let session = match pages::cookie(&headers, SESSION_COOKIE) {
        Some(cookie) => match state.auth.session(&cookie, now).await {
            Ok(session) => session,
            Err(error) => return error_page(&OAuthError::from(error)),
        },
        None => None,
    };
    match state.auth.authorize(&request, session.as_ref(), now).await {
        Ok(AuthorizeOutcome::Redirect(location)) => see_other(&location),
        Ok(AuthorizeOutcome::SignIn) => {
            let here = uri
                .path_and_query()
                .map_or("/auth/oauth/authorize", |pq| pq.as_str());
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("continue", here);
            see_other(&format!("/auth/login?{}", query.finish()))
        }
        Err(error) => error_page(&error),
    }
}

fn error_page(error: &OAuthError) -> Response {
    pages::error(
        StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST),
        "Sign-in request refused",
        &format!("{}: {}", error.error, error.description),
    )
}

fn oauth_error(error: &OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        Json(json!({"error": error.error, "error_description": error.description})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"warden\""),
        );
    }
    response
}

/// `Authorization: Basic` client credentials: `id:secret`, each form-encoded
/// (RFC 6749 §2.3.1).
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError {
        status: 401,
        error: "invalid_client",
        description: "the Authorization header is not Basic client credentials".to_string(),
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(bad)?;
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let unescape = |part: &str| {
        form_urlencoded::parse(format!("v={part}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

fn form<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, OAuthError> {
    serde_urlencoded::from_bytes(body).map_err(|error| OAuthError {
        status: 400,
        error: "invalid_request",
        description: format!("the body is not the form this endpoint takes: {error}"),
    })
}

async fn token(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let request: TokenRequest = form(&body)?;
        let basic = basic(&headers)?;
        state.auth.token(&request, basic, state.auth.now()).await
    }
    .await;
    match result {
        Ok(tokens) => {
            let mut response = Json(tokens).into_response();
            response
                .headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => oauth_error(&error),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn revoke(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let form: RevokeForm = form(&body)?;
        let token = form.token.ok_or_else(|| OAuthError {
            status: 400,
            error: "invalid_request",
            description: "token is missing".to_string(),
        })?;
        let client = TokenRequest {
            client_id: form.client_id,
            client_secret: form.client_secret,
            ..TokenRequest::default()
        };
        state.auth.revoke(&client, &token, basic(&headers)?).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => oauth_error(&error),
    }
}
