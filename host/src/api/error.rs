//! The API's one error type and its JSON shape:
//! `{"error": {"code": "…", "message": "…", "field": "…"}}`.
//!
//! Codes are stable; messages are for people. A 4xx names what the caller got wrong (and
//! the field, when one is at fault); a 5xx says only that the host failed, with an id
//! that the log line holding the cause carries too. A driver that rejects an exec
//! (`driver_error`, 422) is distinguishable from the host failing to run it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::control::ControlError;
use crate::runtime::ExecError;
use crate::store::StoreError;

/// An API error: a status, a stable code, a message, perhaps the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with no field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 `invalid`, naming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.to_string()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500 `internal`: the cause is logged with an id; the caller sees the id only.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        let id = format!("{:016x}", fastrand::u64(..));
        tracing::error!(error_id = %id, "request failed: {cause}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the host failed to handle the request (error id {id})"),
        )
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable: `invalid`, `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    /// `driver_error`, `internal`, …
    pub code: String,
    /// For a person.
    pub message: String,
    /// The request field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The largest error body of axum's own that [`json_errors`] reads to reuse its text.
const REJECTION_TEXT_LIMIT: usize = 4096;

/// Give the few errors that axum itself writes (a path segment that does not decode, a
/// method the route lacks, a body over its limit, a WebSocket request without its
/// upgrade headers) the API's error shape, so that every error of the API is JSON.
pub(super) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let text = match axum::body::to_bytes(response.into_body(), REJECTION_TEXT_LIMIT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        _ if status.is_server_error() => "internal",
        _ => "refused",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_string()
    } else {
        text
    };
    let mut response = ApiError::new(status, code, message).into_response();
    if let Some(allow) = allow {
        response
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    response
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound { .. } => ApiError::not_found(error.to_string()),
            StoreError::Invalid { field, message } => ApiError::invalid(field, message),
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            other => ApiError::internal(&other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        match error {
            AuthError::Store(store) => store.into(),
            AuthError::Password(crate::auth::password::PasswordError::Weak(message)) => {
                ApiError::invalid("password", message)
            }
            AuthError::InvalidCredential | AuthError::Deactivated | AuthError::BadPassword => {
                ApiError::unauthenticated(error.to_string())
            }
            AuthError::WrongSource { .. } => ApiError::forbidden(error.to_string()),
            AuthError::RateLimited { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                error.to_string(),
            ),
            AuthError::Config(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            other => ApiError::internal(&other),
        }
    }
}

impl From<ExecError> for ApiError {
    fn from(error: ExecError) -> ApiError {
        let status = |status, code| ApiError::new(status, code, error.to_string());
        match &error {
            ExecError::Driver(_) => status(StatusCode::UNPROCESSABLE_ENTITY, "driver_error"),
            ExecError::UnknownFunction(_) => status(StatusCode::NOT_FOUND, "unknown_function"),
            ExecError::InvalidArguments(_) => ApiError::invalid("args", error.to_string()),
            ExecError::Offline(_) => status(StatusCode::SERVICE_UNAVAILABLE, "offline"),
            ExecError::Timeout(_) => status(StatusCode::GATEWAY_TIMEOUT, "timeout"),
            _ => status(StatusCode::SERVICE_UNAVAILABLE, "module_unavailable"),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> ApiError {
        match error {
            ControlError::Store(store) => store.into(),
            ControlError::Exec(exec) => exec.into(),
            ControlError::Invalid(message) => ApiError::invalid("component", message),
            ControlError::NotRunning(_) => {
                ApiError::new(StatusCode::CONFLICT, "module_stopped", error.to_string())
            }
            ControlError::NotApproved { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "driver_not_approved",
                error.to_string(),
            ),
            ControlError::BadTarget { .. } | ControlError::Start { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "module_not_startable",
                error.to_string(),
            ),
            ControlError::Upgrade(message) => ApiError::invalid("to", message),
            ControlError::Build(_) => {
                ApiError::new(StatusCode::CONFLICT, "build_unavailable", error.to_string())
            }
            ControlError::Load { .. } | ControlError::Search(_) | ControlError::Internal(_) => {
                ApiError::internal(&error)
            }
        }
    }
}
