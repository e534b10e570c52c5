//! The error a driver function returns and a host call reports.

use crate::wit::types::Error as WitError;

/// A failed call. Each variant is one case of the WIT `error` variant, so the host and the
/// front end can tell a device error from a refused capability or a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The named function does not exist on the module.
    UnknownFunction(String),
    /// The arguments do not fit the function's parameters, or a value is out of range.
    InvalidArguments(String),
    /// The host refused: the request lies outside the module's capabilities.
    Denied(String),
    /// No answer came before the deadline.
    Timeout(String),
    /// There is no connection to the device, or it broke during the call.
    NotConnected(String),
    /// The device answered, and its answer was an error.
    Device(String),
    /// A limit of the module was reached.
    Limit(String),
    /// Any other failure.
    Failed(String),
}

/// The result type of driver functions and host calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure described for a person.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// The device answered with an error.
    pub fn device(message: impl Into<String>) -> Self {
        Error::Device(message.into())
    }

    /// The caller's arguments are wrong.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Error::InvalidArguments(message.into())
    }

    /// The same error with `context` (what the driver was doing) in front of its
    /// message: `device: lamp failure` becomes `device: power on: lamp failure`.
    #[must_use]
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        let message = format!("{context}: {}", self.message());
        match self {
            Error::UnknownFunction(_) => Error::UnknownFunction(message),
            Error::InvalidArguments(_) => Error::InvalidArguments(message),
            Error::Denied(_) => Error::Denied(message),
            Error::Timeout(_) => Error::Timeout(message),
            Error::NotConnected(_) => Error::NotConnected(message),
            Error::Device(_) => Error::Device(message),
            Error::Limit(_) => Error::Limit(message),
            Error::Failed(_) => Error::Failed(message),
        }
    }

    /// The message of any variant.
    pub fn message(&self) -> &str {
        match self {
            Error::UnknownFunction(m)
            | Error::InvalidArguments(m)
            | Error::Denied(m)
            | Error::Timeout(m)
            | Error::NotConnected(m)
            | Error::Device(m)
            | Error::Limit(m)
            | Error::Failed(m) => m,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Error::UnknownFunction(_) => "unknown function",
            Error::InvalidArguments(_) => "invalid arguments",
            Error::Denied(_) => "denied",
            Error::Timeout(_) => "timeout",
            Error::NotConnected(_) => "not connected",
            Error::Device(_) => "device error",
            Error::Limit(_) => "limit reached",
            Error::Failed(_) => "failed",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::InvalidArguments(error.to_string())
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(error: std::str::Utf8Error) -> Self {
        Error::Device(format!("reply is not UTF-8: {error}"))
    }
}

impl From<WitError> for Error {
    fn from(error: WitError) -> Self {
        match error {
            WitError::UnknownFunction(m) => Error::UnknownFunction(m),
            WitError::InvalidArguments(m) => Error::InvalidArguments(m),
            WitError::Denied(m) => Error::Denied(m),
            WitError::Timeout(m) => Error::Timeout(m),
            WitError::NotConnected(m) => Error::NotConnected(m),
            WitError::Device(m) => Error::Device(m),
            WitError::Limit(m) => Error::Limit(m),
            WitError::Failed(m) => Error::Failed(m),
        }
    }
}

impl From<Error> for WitError {
    fn from(error: Error) -> Self {
        match error {
            Error::UnknownFunction(m) => WitError::UnknownFunction(m),
            Error::InvalidArguments(m) => WitError::InvalidArguments(m),
            Error::Denied(m) => WitError::Denied(m),
            Error::Timeout(m) => WitError::Timeout(m),
            Error::NotConnected(m) => WitError::NotConnected(m),
            Error::Device(m) => WitError::Device(m),
            Error::Limit(m) => WitError::Limit(m),
            Error::Failed(m) => WitError::Failed(m),
        }
    }
}
