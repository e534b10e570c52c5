//! A driver's stdout and stderr, turned into module log lines.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::{LogLevel, RuntimeEvent, RuntimeInner};

/// Longest log line kept; the rest of a longer line is cut.
pub const MAX_LINE: usize = 4096;

/// Where a module's stdout or stderr goes.
#[derive(Clone)]
pub(crate) struct LogPipe {
    runtime: Arc<RuntimeInner>,
    module: Arc<str>,
    level: LogLevel,
}

impl LogPipe {
    pub(crate) fn new(runtime: Arc<RuntimeInner>, module: Arc<str>, level: LogLevel) -> Self {
        LogPipe {
            runtime,
            module,
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
        emit_log(
            &self.pipe.runtime,
            &self.pipe.module,
            self.pipe.level,
            &line,
        );
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
