//! Who is calling. A request's credential is checked once, by `authenticate`, before
//! any handler runs: an `Authorization: Bearer` access token, or an `X-API-Key` (as
//! PlaceOS sends them). The control WebSocket also takes the token in the query string
//! (`bearer_token=…` or `api-key=…`, as PlaceOS clients connect), and only that route,
//! since a URL ends up in more logs than a header does. A credential that is present but
//! not valid is refused with 401 even on a public route; a request without one goes on
//! without a principal, and [`super::access`] refuses it unless its route is public.
//!
//! `--danger-no-auth` (development only) makes every request an administrator named
//! `danger-no-auth` and is logged at start.

use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use crate::auth::{AuthError, Caller};
use crate::component::Level as FunctionLevel;
use crate::settings::{Level, Role};
use crate::store::Actor;

/// An authenticated caller: the user, their roles and the credential's scopes.
pub use crate::auth::Caller as Principal;

/// The one path that accepts a credential in its query string.
pub const CONTROL_SOCKET_PATH: &str = "/api/engine/v2/systems/control";

impl Caller {
    /// The caller as the audit log names them.
    pub fn actor(&self) -> Actor {
        Actor(self.user_id.clone())
    }

    /// Whether the caller holds `role` by name.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The highest of PlaceOS's levels the caller holds.
    pub fn role(&self) -> Role {
        if self.has_role("admin") {
            Role::Admin
        } else if self.has_role("support") {
            Role::Support
        } else {
            Role::User
        }
    }

    /// Whether the credential only reads (the `read` scope without `public`).
    pub fn read_only(&self) -> bool {
        !self.scopes.iter().any(|s| s == "public")
    }

    /// Refuse a caller below `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role().readable() >= needed.readable() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role",
                match needed {
                    Role::Admin => "admin",
                    Role::Support => "support",
                    Role::User => "user",
                }
            )))
        }
    }

    /// Whether the caller may call a driver function of access level `level`.
    pub fn may_call(&self, level: FunctionLevel) -> bool {
        let needed = match level {
            FunctionLevel::User => Level::None,
            FunctionLevel::Support => Level::Support,
            FunctionLevel::Admin => Level::Admin,
        };
        needed <= self.role().readable()
    }
}

/// A credential as the request presents it.
enum Presented {
    Bearer(String),
    ApiKey(String),
}

fn presented(
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
) -> Result<Option<Presented>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthenticated("Authorization must be a Bearer token"))?;
        return Ok(Some(Presented::Bearer(token.trim().to_string())));
    }
    if let Some(value) = headers.get("x-api-key") {
        return Ok(Some(Presented::ApiKey(
            value.to_str().unwrap_or("").trim().to_string(),
        )));
    }
    if path == CONTROL_SOCKET_PATH {
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "bearer_token" | "access_token" => {
                    return Ok(Some(Presented::Bearer(value.into_owned())));
                }
                "api-key" | "api_key" => return Ok(Some(Presented::ApiKey(value.into_owned()))),
                _ => {}
            }
        }
    }
    Ok(None)
}

/// Check the request's credential and attach its [`Principal`], or refuse it.
pub(super) async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.danger_no_auth {
        request.extensions_mut().insert(Caller::development());
        return next.run(request).await;
    }
    // Inside the nested API router the path has lost its prefix; the original has it.
    let uri = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().clone(), |original| original.0.clone());
    let credential = match presented(request.headers(), uri.path(), uri.query()) {
        Ok(credential) => credential,
        Err(error) => return challenge(error),
    };
    let now = state.auth.now();
    let checked = match credential {
        None => return next.run(request).await,
        Some(Presented::Bearer(token)) => state.auth.check_bearer(&token, now).await,
        Some(Presented::ApiKey(key)) => state.auth.check_api_key(&key, now).await,
    };
    match checked {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(AuthError::Store(error)) => ApiError::internal(&error).into_response(),
        Err(error) => challenge(ApiError::unauthenticated(error.to_string())),
    }
}

/// A 401 with the `WWW-Authenticate` challenge of RFC 6750.
fn challenge(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("sign in first"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credential;

    fn with(roles: &[&str]) -> Principal {
        Principal {
            user_id: "user-x".to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: vec!["public".to_string()],
            credential: Credential::Development,
            expires_at: None,
        }
    }

    #[test]
    fn roles_rank_admin_over_support_over_user() {
        let user = with(&["user", "reviewer"]);
        let support = with(&["support"]);
        let admin = with(&["user", "admin"]);
        assert!(user.require(Role::User).is_ok());
        assert_eq!(user.require(Role::Support).unwrap_err().code, "forbidden");
        assert!(support.require(Role::Support).is_ok());
        assert!(support.require(Role::Admin).is_err());
        assert!(admin.require(Role::Admin).is_ok());
        assert!(user.may_call(FunctionLevel::User) && !user.may_call(FunctionLevel::Support));
        assert!(
            support.may_call(FunctionLevel::Support) && !support.may_call(FunctionLevel::Admin)
        );
        assert!(admin.may_call(FunctionLevel::Admin));
        // No roles at all is the lowest level, never more.
        assert!(with(&[]).require(Role::Support).is_err());
        let mut reader = with(&["admin"]);
        reader.scopes = vec!["read".to_string()];
        assert!(reader.read_only() && !with(&["user"]).read_only());
    }

    #[test]
    fn credentials_come_from_headers_and_only_the_socket_takes_them_in_the_query() {
        let mut headers = HeaderMap::new();
        assert!(
            presented(&headers, "/api/engine/v2/zones", Some("bearer_token=x"))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            presented(&headers, CONTROL_SOCKET_PATH, Some("bearer_token=wdn_at_x")).unwrap(),
            Some(Presented::Bearer(t)) if t == "wdn_at_x"
        ));
        assert!(matches!(
            presented(&headers, CONTROL_SOCKET_PATH, Some("fixed_device=true&api-key=k")).unwrap(),
            Some(Presented::ApiKey(k)) if k == "k"
        ));
        headers.insert("x-api-key", HeaderValue::from_static("wdn_ak_y"));
        assert!(matches!(
            presented(&headers, "/", None).unwrap(),
            Some(Presented::ApiKey(_))
        ));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(presented(&headers, "/", None).is_err());
    }
}
