//! The HTTPS API under `/api/engine/v2`, shaped like PlaceOS's engine v2: JSON resources,
//! lists as JSON arrays with the total in `X-Total-Count`, one error shape
//! ([`error::ApiError`]). [`app`] builds the whole service, so tests call it directly;
//! [`server`] serves it over TLS ([`tls`]).
//!
//! Every route needs a [`Principal`] (see [`principal`]); every response carries the
//! security headers of [`headers`].

pub mod control_socket;
mod drivers;
pub mod error;
mod extract;
pub mod headers;
mod list;
mod modules;
pub mod principal;
pub mod server;
mod settings;
mod systems;
pub mod tls;
mod zones;

use axum::Router;
use axum::middleware;

pub use error::ApiError;
pub use principal::Principal;

use crate::control::Control;

/// The path every API route is under.
pub const BASE: &str = "/api/engine/v2";

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The control layer (and through it the store and the runtime).
    pub control: Control,
    /// Every request is an administrator (development only; see [`principal`]).
    pub danger_no_auth: bool,
}

/// The whole API as one service.
pub fn app(state: ApiState) -> Router {
    let api = Router::new()
        .merge(zones::router())
        .merge(control_socket::router())
        .merge(systems::router())
        .merge(drivers::router())
        .merge(modules::router())
        .merge(settings::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            principal::authenticate,
        ))
        .with_state(state);
    Router::new()
        .nest(BASE, api)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::map_response(headers::secure))
}
