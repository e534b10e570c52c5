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
