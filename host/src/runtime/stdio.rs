//! A driver's stdout and stderr, turned into module log lines.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use tokio::time::Instant;

use super::module::ModuleShared;
use super::{LogLevel, RuntimeEvent, RuntimeInner};

/// Longest log line kept; the rest of a longer line is cut.
pub const MAX_LINE: usize = 4096;
/// Log lines a module may write per second, on average…
pub const LOG_LINES_PER_SECOND: f64 = 100.0;
/// …and in one burst. Lines beyond are dropped and counted, so a driver cannot flood
/// the host's log.
pub const LOG_BURST: f64 = 200.0;

/// A token bucket over one module's log lines.
#[derive(Debug)]
pub(crate) struct LogBudget {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

/// Whether a line may be written, and how many were dropped before it.
pub(crate) enum Admit {
    Write { dropped_before: u64 },
    Drop,
}

impl LogBudget {
    pub(crate) fn new() -> Self {
        LogBudget {
            tokens: LOG_BURST,
            refilled: Instant::now(),
            dropped: 0,
        }
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * LOG_LINES_PER_SECOND).min(LOG_BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admit::Write {
                dropped_before: std::mem::take(&mut self.dropped),
            }
        } else {
            self.dropped += 1;
            Admit::Drop
        }
    }
}

/// Where a module's stdout or stderr goes.
#[derive(Clone)]
pub(crate) struct LogPipe {
    runtime: Arc<RuntimeInner>,
    shared: Arc<ModuleShared>,
    level: LogLevel,
}

impl LogPipe {
    pub(crate) fn new(
        runtime: Arc<RuntimeInner>,
        shared: Arc<ModuleShared>,
        level: LogLevel,
    ) -> Self {
        LogPipe {
            runtime,
            shared,
            level,
        }
    }
}

/// Emit a log line of `module`, to the runtime's events and to the host's log.
pub(crate) fn emit_log(runtime: &RuntimeInner, module: &str, level: LogLevel, message: &str) {
    let mut message = message.trim_end().to_string();
    if message.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" …");
    }
    match level {
        LogLevel::Trace => tracing::trace!(module, "{message}"),
        LogLevel::Debug => tracing::debug!(module, "{message}"),
        LogLevel::Info => tracing::info!(module, "{message}"),
        LogLevel::Warn => tracing::warn!(module, "{message}"),
        LogLevel::Error => tracing::error!(module, "{message}"),
    }
    runtime.emit(RuntimeEvent::Log {
        module: module.to_string(),
        level,
        message,
    });
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            pipe: self.clone(),
            partial: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            pipe: self.clone(),
            partial: Vec::new(),
        })
    }
}

/// Splits written bytes into lines and logs each one.
struct LineWriter {
    pipe: LogPipe,
    partial: Vec<u8>,
}

impl LineWriter {
    fn write_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                self.flush_line();
            } else if self.partial.len() < MAX_LINE + 4 {
                self.partial.push(byte);
            }
        }
    }

    fn flush_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        self.pipe
            .shared
            .driver_log(&self.pipe.runtime, self.pipe.level, &line);
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.flush_line();
        }
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_budget_drops_and_counts_a_flood() {
        let mut budget = LogBudget::new();
        let start = Instant::now();
        let written = (0..1000)
            .filter(|_| matches!(budget.admit(start), Admit::Write { .. }))
            .count();
        assert_eq!(written, LOG_BURST as usize);
        // A second later, 100 more lines are allowed, and the first says how many were lost.
        match budget.admit(start + Duration::from_secs(1)) {
            Admit::Write { dropped_before } => assert_eq!(dropped_before, 800),
            Admit::Drop => panic!("budget did not refill"),
        }
    }
}
