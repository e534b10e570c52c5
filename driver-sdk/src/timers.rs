//! Timers that call [`crate::Driver::timer`] with their tag. All of a module's timers are
//! cancelled when it stops or restarts.

use std::time::Duration;

use crate::Result;

/// A running timer; pass it to [`cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timer(u64);

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// Call `timer(tag)` once after `delay`.
pub fn after(tag: &str, delay: Duration) -> Result<Timer> {
    crate::wit::timers::after(tag, millis(delay))
        .map(Timer)
        .map_err(Into::into)
}

/// Call `timer(tag)` every `period` until cancelled.
pub fn every(tag: &str, period: Duration) -> Result<Timer> {
    crate::wit::timers::every(tag, millis(period))
        .map(Timer)
        .map_err(Into::into)
}

/// Cancel a timer.
pub fn cancel(timer: Timer) {
    crate::wit::timers::cancel(timer.0);
}
