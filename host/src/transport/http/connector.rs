//! How the HTTP client opens connections: only to the module's origin, through the same
//! capability-checked resolution and TLS as the stream transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::capability::{self, Decision, Grant, Origin, Request};
use crate::transport::TransportEvent;
use crate::transport::stream::DeviceStream;
use crate::transport::tcp::{Opened, open_stream};
use crate::transport::tls::DeviceTls;

/// Why a connection for an HTTP request was not opened. Carried through the client's
/// error so the request fails with the right typed error.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub(super) struct ConnectError {
    pub(super) reason: String,
    /// Refused by the capability decision (rather than a network failure).
    pub(super) denied: bool,
}

/// Opens connections to one module's origin.
#[derive(Debug, Clone)]
pub(super) struct Connector {
    pub(super) inner: Arc<ConnectorConfig>,
}

#[derive(Debug)]
pub(super) struct ConnectorConfig {
    pub(super) grant: Arc<Grant>,
    pub(super) tls: Option<DeviceTls>,
    pub(super) keepalive: Option<Duration>,
    pub(super) connect_timeout: Duration,
    pub(super) events: mpsc::Sender<TransportEvent>,
}

/// A connection the HTTP client owns.
#[derive(Debug)]
pub(super) struct HttpStream(TokioIo<DeviceStream>);

impl Connection for HttpStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for HttpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for HttpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = HttpStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = Arc::clone(&self.inner);
        Box::pin(async move { config.connect(&uri).await })
    }
}

impl ConnectorConfig {
    async fn connect(&self, uri: &http::Uri) -> Result<HttpStream, ConnectError> {
        // The client only asks for URIs the link built and checked; ask again anyway, so
        // no connection opens without the decision.
        let origin = Origin::of(uri).ok_or_else(|| ConnectError {
            reason: format!("origin rule: `{uri}` has no http(s) origin"),
            denied: true,
        })?;
        if let Decision::Deny(reason) =
            capability::decide(&self.grant, Request::HttpRequest(&origin))
        {
            return Err(ConnectError {
                reason,
                denied: true,
            });
        }
        let deadline = Instant::now() + self.connect_timeout;
        let tls = match origin.scheme {
            capability::Scheme::Https => match &self.tls {
                Some(tls) => Some(tls),
                None => {
                    return Err(ConnectError {
                        reason: "no TLS configuration for an https origin".to_string(),
                        denied: false,
                    });
                }
            },
            capability::Scheme::Http => None,
        };
        match open_stream(&origin.endpoint, &self.grant, self.keepalive, tls, deadline).await {
            Ok((stream, peer)) => {
                if let Some(warning) =
                    tls.and_then(|tls| tls.danger_warning(&self.grant.module, &origin))
                {
                    // Best effort: a full queue must not stall the request.
                    let _ = self.events.try_send(TransportEvent::Warning(warning));
                }
                tracing::debug!(module = %self.grant.module, %origin, %peer, "HTTP connection opened");
                Ok(HttpStream(TokioIo::new(stream)))
            }
            Err(Opened::Denied(reason)) => Err(ConnectError {
                reason,
                denied: true,
            }),
            Err(Opened::Failed(failure)) => Err(ConnectError {
                reason: failure.reason,
                denied: failure.denied,
            }),
        }
    }
}
