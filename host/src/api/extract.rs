//! Request extractors whose rejections use the API's error shape: a body that is not the
//! JSON a route expects is a 400 `invalid` naming the field serde pointed at, not axum's
//! plain-text rejection.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON request body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            // "Failed to deserialize …: missing field `name` at line 1 column 9"
            let detail = std::error::Error::source(&error)
                .map_or_else(|| error.body_text(), ToString::to_string);
            let field = detail
                .split('`')
                .nth(1)
                .filter(|_| detail.contains("field"))
                .unwrap_or("body")
                .to_string();
            ApiError::invalid(&field, detail)
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("content-type", "send the body as application/json")
        }
        other => ApiError::invalid("body", other.body_text()),
    }
}

/// Query-string parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => {
                Err(ApiError::invalid("query", error.body_text()))
            }
            Err(other) => Err(ApiError::invalid("query", other.body_text())),
        }
    }
}

/// The client's address, when the server recorded it (requests made in process have none).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}
