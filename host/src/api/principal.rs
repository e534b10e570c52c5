//! Who is calling. Every route takes a [`Principal`]; a request without one is refused
//! with 401 before any handler runs.
//!
//! Sign-in (OAuth2 tokens, API keys, SSO) is not built yet, so there is no way to become a
//! principal except the development switch `--danger-no-auth`, which makes every request
//! an administrator named `danger-no-auth` and is logged at start and on the first
//! request. Without it, every API request is refused: fail closed.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use crate::component::Level as FunctionLevel;
use crate::settings::{Level, Role};
use crate::store::Actor;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's id (the audit log's actor).
    pub user_id: String,
    /// Their roles (`admin`, `support`, `user`, `reviewer`).
    pub roles: Vec<String>,
}

impl Principal {
    /// The development principal of `--danger-no-auth`.
    pub fn danger_no_auth() -> Principal {
        Principal {
            user_id: "danger-no-auth".to_string(),
            roles: vec!["admin".to_string()],
        }
    }

    /// The caller as the audit log names them.
    pub fn actor(&self) -> Actor {
        Actor(self.user_id.clone())
    }

    /// The highest of PlaceOS's levels the caller holds.
    pub fn role(&self) -> Role {
        let has = |name: &str| self.roles.iter().any(|r| r == name);
        if has("admin") {
            Role::Admin
        } else if has("support") {
            Role::Support
        } else {
            Role::User
        }
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

/// Attach the caller's principal to the request, or refuse it.
pub(super) async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.danger_no_auth {
        request.extensions_mut().insert(Principal::danger_no_auth());
        return next.run(request).await;
    }
    ApiError::unauthenticated(
        "this host accepts no sign-in yet: start it with --danger-no-auth for development",
    )
    .into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("sign in first"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(roles: &[&str]) -> Principal {
        Principal {
            user_id: "user-x".to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
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
    }
}
