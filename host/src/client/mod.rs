//! The client side of the `warden` command: `warden systems|zones|drivers|modules …`,
//! `warden exec` and `warden watch` talk to a running `warden serve` over HTTPS and its
//! control WebSocket exactly as any other client does — no database, no data directory.
//!
//! The contract, for scripts and operators:
//! - **Credential from the environment only**: `WARDEN_API_KEY` (sent as `X-API-Key`) or
//!   `WARDEN_TOKEN` (sent as `Authorization: Bearer`). There is no command-line option for
//!   it, so it never lands in shell history or the process list; it is never printed or
//!   logged.
//! - **TLS always verified** (rustls with ring, TLS 1.2 and 1.3): against `--ca FILE`
//!   (`WARDEN_CA`), else `./warden-data/tls/self-signed.crt` when it exists, else the
//!   system's roots. There is no switch that turns verification off.
//! - **Output**: the API's JSON on stdout, pretty-printed or (`--compact`) one line;
//!   `watch` prints one line per value. Errors on stderr with the API's message and code.
//! - **Exit status**: 0 done; 1 the host, the connection or the driver refused or failed
//!   (an API error, TLS, a driver error); 2 the command line was unusable (bad
//!   arguments, no credential, unreadable file), and then nothing was sent.
//!
//! [`connection`] owns the options, the credential and TLS; [`http`] the API calls;
//! [`watch`] the WebSocket; [`commands`] maps each command onto them.

pub mod commands;
pub mod connection;
pub mod http;
pub mod watch;

use std::process::ExitCode;

pub use commands::Command;
use serde_json::Value;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command line or the environment is unusable; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// No connection to the host.
    #[error("cannot connect to {authority}: {reason}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (an untrusted certificate, among others).
    #[error("TLS: {0}")]
    Tls(String),
    /// The API refused the request or failed.
    #[error("{message} ({code}{}, HTTP {status})", field.as_ref().map(|f| format!(", field {f}")).unwrap_or_default())]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's stable error code (`driver_error`, `not_found`, …).
        code: String,
        /// The API's message.
        message: String,
        /// The request field at fault.
        field: Option<String>,
    },
    /// The control WebSocket answered `error`.
    #[error("{message} (WebSocket error code {code})")]
    Socket {
        /// PlaceOS's error code (0–7).
        code: u64,
        /// The host's message.
        message: String,
    },
    /// The host answered something this client does not understand, or went away.
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// The process exit status for this error: 2 for unusable input, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ClientError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }
}

/// Run a client command to completion; its exit status.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// Print `value` on stdout, pretty or on one line. A closed stdout (`| head`) is not an
/// error worth a panic.
fn print_json(value: &Value, compact: bool) {
    use std::io::Write as _;
    let text = if compact {
        value.to_string()
    } else {
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}
