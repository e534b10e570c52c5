//! The HTTPS API under `/api/engine/v2`, shaped like PlaceOS's engine v2: JSON resources,
//! lists as JSON arrays with the total in `X-Total-Count`, one error shape
//! ([`error::ApiError`]). [`app`] builds the whole service, so tests call it directly;
//! [`server`] serves it over TLS ([`tls`]).
//!
//! A request's credential is checked by [`principal`]; what each route needs is the
//! table in [`access`]; every response carries the security headers of [`headers`]. The
//! authorization server and the sign-in pages live beside the API under `/auth`
//! (`oauth`, `sign_in`, single sign-on in `sso_saml` and `sso_oidc`), with the authority
//! document PlaceOS clients read first (`authority`). The API's OpenAPI document is
//! generated from the handlers' annotations ([`openapi`]).

pub mod access;
mod api_keys;
mod authority;
mod builds;
pub mod control_socket;
mod drivers;
pub mod error;
mod extract;
pub mod headers;
mod list;
mod modules;
mod oauth;
mod oauth_apps;
pub mod openapi;
mod pages;
pub mod principal;
mod repositories;
mod search;
pub mod server;
mod settings;
mod sign_in;
mod sso_oidc;
mod sso_saml;
mod systems;
pub mod tls;
mod users;
mod zones;

use axum::Router;
use axum::middleware;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use principal::Principal;

use crate::auth::Auth;
use crate::control::Control;

/// The path every API route is under.
pub const BASE: &str = "/api/engine/v2";

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The control layer (and through it the store and the runtime).
    pub control: Control,
    /// Sign-in and credentials.
    pub auth: Auth,
    /// Every request is an administrator (development only; see [`principal`]).
    pub danger_no_auth: bool,
}

/// The API's routes under [`BASE`], each with its OpenAPI description.
fn routes() -> OpenApiRouter<ApiState> {
    let api = OpenApiRouter::new()
        .routes(routes!(openapi::openapi_json))
        .merge(zones::router())
        .merge(control_socket::router())
        .merge(systems::router())
        .merge(drivers::router())
        .merge(repositories::router())
        .merge(builds::router())
        .merge(modules::router())
        .merge(settings::router())
        .merge(users::router())
        .merge(api_keys::router())
        .merge(oauth_apps::router())
        .merge(search::router());
    OpenApiRouter::new().nest(BASE, api)
}

/// The whole API as one service.
pub fn app(state: ApiState) -> Router {
    let (api, _) = routes().split_for_parts();
    let api = api
        .route_layer(middleware::from_fn(access::enforce))
        .layer(middleware::from_fn(list::next_link))
        .layer(middleware::map_response(error::json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            principal::authenticate,
        ))
        .with_state(state.clone());
    let auth = Router::new()
        .merge(authority::router())
        .merge(oauth::router())
        .merge(sign_in::router())
        .merge(sso_saml::router())
        .merge(sso_oidc::router())
        .with_state(state);
    Router::new()
        .merge(api)
        .merge(auth)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::map_response(headers::secure))
}
