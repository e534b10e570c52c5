//! A byte stream to a device: plain TCP or TLS over TCP, one type for the transports
//! that carry either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// An open stream to a device.
#[derive(Debug)]
pub enum DeviceStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large and most modules use plain TCP).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for DeviceStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DeviceStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            DeviceStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DeviceStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DeviceStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            DeviceStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DeviceStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            DeviceStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DeviceStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            DeviceStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DeviceStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            DeviceStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            DeviceStream::Plain(stream) => stream.is_write_vectored(),
            DeviceStream::Tls(stream) => stream.is_write_vectored(),
        }
    }
}
