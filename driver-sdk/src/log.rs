//! Log lines, tagged by the host with the module's id. Anything the driver prints to
//! stdout (info) or stderr (warning) becomes a log line too. The host keeps at most about
//! 100 lines a second per module and says how many it dropped.

use crate::wit::log::{Level, write};

/// Write a trace line.
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Write a debug line.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Write an info line.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Write a warning.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Write an error line.
pub fn error(message: &str) {
    write(Level::Error, message);
}

/// Logs a recurring task's failures without flooding the log: a failure is written (as a
/// warning) when its message differs from the last one, and the recovery once (as info).
/// For polling loops, where the same device error would otherwise repeat every tick.
///
/// ```no_run
/// # use warden_driver_sdk::prelude::*;
/// # fn poll() -> Result<()> { Ok(()) }
/// let mut polling = log::FailureLog::default();
/// // "polling: not-connected: …" once while it fails, then "polling works again".
/// polling.record("polling", &poll());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureLog {
    last: Option<String>,
}

impl FailureLog {
    /// Record the outcome of one run of the task called `what` (it starts each line).
    pub fn record<T>(&mut self, what: &str, outcome: &crate::Result<T>) {
        match outcome {
            Ok(_) => {
                if self.last.take().is_some() {
                    info(&format!("{what} works again"));
                }
            }
            Err(error) => {
                let message = error.to_string();
                if self.last.as_ref() != Some(&message) {
                    warn(&format!("{what}: {message}"));
                    self.last = Some(message);
                }
            }
        }
    }

    /// Forget the last failure (for example after new settings), so the next one is
    /// written even if it is the same.
    pub fn reset(&mut self) {
        self.last = None;
    }
}
