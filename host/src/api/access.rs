//! What each API route needs, in one table, enforced before any handler runs.
//!
//! [`RULES`] names every route by method and path (axum's syntax, relative to
//! [`super::BASE`]) with the least the caller must hold. `enforce` runs after routing,
//! looks the matched route up and refuses: a method the path has no rule for → 405 with
//! `Allow` when the path has rules for others, else 403 and an error in the log (a route
//! someone forgot to declare is closed, not open); no principal → 401; too low a role →
//! 403; a read-only credential (the `read` scope) on anything but `GET` → 403. Finer
//! checks stay in the handlers that need the request's content: a settings level, a
//! driver function's access level.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::principal::Principal;
use crate::settings::Role;

/// The least a caller must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: no credential needed.
    Public,
    /// Any signed-in user.
    User,
    /// The `support` role or higher.
    Support,
    /// The `admin` role.
    Admin,
    /// The `reviewer` role (or `admin`): approving drivers.
    Reviewer,
}

impl Need {
    /// Whether `caller` has what this needs.
    pub fn met_by(self, caller: &Principal) -> bool {
        match self {
            Need::Public | Need::User => true,
            Need::Support => caller.require(Role::Support).is_ok(),
            Need::Admin => caller.require(Role::Admin).is_ok(),
            Need::Reviewer => caller.has_role("reviewer") || caller.has_role("admin"),
        }
    }
}

/// One route's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The HTTP method.
    pub method: &'static str,
    /// The path, relative to the API base, as the router spells it.
    pub path: &'static str,
    /// What it needs.
    pub need: Need,
}

const fn rule(method: &'static str, path: &'static str, need: Need) -> Rule {
    Rule { method, path, need }
}

/// Every API route and what it needs.
pub const RULES: &[Rule] = &[
    // This API's OpenAPI document.
    rule("GET", "/openapi.json", Need::Public),
    // The building, as every signed-in user sees it.
    rule("GET", "/zones", Need::User),
    rule("GET", "/zones/{id}", Need::User),
    rule("POST", "/zones", Need::Admin),
    rule("PATCH", "/zones/{id}", Need::Admin),
    rule("PUT", "/zones/{id}", Need::Admin),
    rule("DELETE", "/zones/{id}", Need::Admin),
    rule("GET", "/systems", Need::User),
    rule("GET", "/systems/{id}", Need::User),
    rule("POST", "/systems", Need::Admin),
    rule("PATCH", "/systems/{id}", Need::Admin),
    rule("PUT", "/systems/{id}", Need::Admin),
    rule("DELETE", "/systems/{id}", Need::Admin),
    rule("PUT", "/systems/{id}/module/{module_id}", Need::Admin),
    rule("DELETE", "/systems/{id}/module/{module_id}", Need::Admin),
    // By module name; a function's own level is checked by the handler.
    rule("GET", "/systems/{id}/functions/{module_slug}", Need::User),
    rule("GET", "/systems/{id}/{module_slug}", Need::User),
    rule("POST", "/systems/{id}/{module_slug}/{method}", Need::User),
    rule("GET", "/systems/control", Need::User),
    // Search: the handler leaves out drivers and modules below support.
    rule("GET", "/search", Need::User),
    // The back office: drivers, modules and settings.
    rule("GET", "/drivers", Need::Support),
    rule("GET", "/drivers/{id}", Need::Support),
    rule("POST", "/drivers", Need::Admin),
    rule("DELETE", "/drivers/{id}", Need::Admin),
    rule("POST", "/drivers/{id}/approval", Need::Reviewer),
    rule("GET", "/drivers/{id}/attestation", Need::Support),
    rule("POST", "/drivers/{id}/upgrade", Need::Admin),
    rule("GET", "/drivers/{id}/review", Need::Reviewer),
    rule("GET", "/drivers/{id}/updates", Need::Reviewer),
    rule("GET", "/drivers/{id}/component", Need::Reviewer),
    rule("GET", "/signing_keys", Need::User),
    // The supply chain: repositories and builds.
    rule("GET", "/repositories", Need::Reviewer),
    rule("POST", "/repositories", Need::Admin),
    rule("GET", "/repositories/{id}", Need::Reviewer),
    rule("DELETE", "/repositories/{id}", Need::Admin),
    rule("GET", "/builds", Need::Reviewer),
    rule("POST", "/builds", Need::Admin),
    rule("GET", "/builds/{id}", Need::Reviewer),
    rule("POST", "/builds/{id}/cancel", Need::Admin),
    rule("GET", "/modules", Need::Support),
    rule("GET", "/modules/{id}", Need::Support),
    rule("POST", "/modules", Need::Admin),
    rule("PATCH", "/modules/{id}", Need::Admin),
    rule("PUT", "/modules/{id}", Need::Admin),
    rule("DELETE", "/modules/{id}", Need::Admin),
    rule("POST", "/modules/{id}/start", Need::Support),
    rule("POST", "/modules/{id}/stop", Need::Support),
    rule("GET", "/modules/{id}/state", Need::Support),
    rule("GET", "/modules/{id}/state/{key}", Need::Support),
    rule("POST", "/modules/{id}/exec/{method}", Need::Support),
    rule("GET", "/modules/{id}/settings", Need::Support),
    rule("GET", "/modules/{id}/history", Need::Support),
    // Settings: the handler checks the record's level against the role.
    rule("GET", "/settings", Need::Support),
    rule("POST", "/settings", Need::Support),
    rule("GET", "/settings/{id}", Need::Support),
    rule("DELETE", "/settings/{id}", Need::Support),
    rule("GET", "/settings/{id}/history", Need::Support),
    // People and credentials.
    rule("GET", "/users/current", Need::User),
    rule("POST", "/users/current/password", Need::User),
    rule("GET", "/users", Need::Admin),
    rule("POST", "/users", Need::Admin),
    rule("GET", "/users/{id}", Need::Admin),
    rule("PATCH", "/users/{id}", Need::Admin),
    rule("PUT", "/users/{id}", Need::Admin),
    rule("DELETE", "/users/{id}", Need::Admin),
    rule("POST", "/users/{id}/password", Need::Admin),
    rule("GET", "/api_keys", Need::Admin),
    rule("POST", "/api_keys", Need::Admin),
    rule("DELETE", "/api_keys/{id}", Need::Admin),
    rule("GET", "/oauth_apps", Need::Admin),
    rule("POST", "/oauth_apps", Need::Admin),
    rule("GET", "/oauth_apps/{id}", Need::Admin),
    rule("PATCH", "/oauth_apps/{id}", Need::Admin),
    rule("PUT", "/oauth_apps/{id}", Need::Admin),
    rule("DELETE", "/oauth_apps/{id}", Need::Admin),
    rule("POST", "/oauth_apps/{id}/secret", Need::Admin),
];

/// The rule of `method` on `path` (relative to the API base).
pub fn rule_for(method: &Method, path: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|rule| rule.method == method.as_str() && rule.path == path)
}

/// Refuse a request its route's rule does not allow.
pub(super) async fn enforce(request: Request, next: Next) -> Response {
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let path = matched.strip_prefix(super::BASE).unwrap_or(&matched);
    let method = if request.method() == Method::HEAD {
        Method::GET
    } else {
        request.method().clone()
    };
    let Some(rule) = rule_for(&method, path) else {
        let allowed: Vec<&str> = RULES
            .iter()
            .filter(|rule| rule.path == path)
            .map(|rule| rule.method)
            .collect();
        if !allowed.is_empty() {
            // The route exists, for other methods: the caller's mistake.
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; {} are", allowed.join(", ")),
            )
            .into_response();
            if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return response;
        }
        tracing::error!(%method, path, "route has no access rule; refused");
        return ApiError::forbidden("this route has no access rule").into_response();
    };
    if rule.need == Need::Public {
        return next.run(request).await;
    }
    let Some(caller) = request.extensions().get::<Principal>() else {
        return ApiError::unauthenticated("sign in first: send a bearer token or an X-API-Key")
            .into_response();
    };
    if !rule.need.met_by(caller) {
        return ApiError::forbidden(match rule.need {
            Need::Support => "this needs the support role",
            Need::Admin => "this needs the admin role",
            Need::Reviewer => "this needs the reviewer or admin role",
            Need::Public | Need::User => "refused",
        })
        .into_response();
    }
    if caller.read_only() && method != Method::GET {
        return ApiError::forbidden("this credential may only read (scope read)").into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_unique() {
        for (i, a) in RULES.iter().enumerate() {
            for b in RULES.iter().skip(i + 1) {
                assert!(!(a.method == b.method && a.path == b.path), "{a:?} twice");
            }
        }
    }
}
