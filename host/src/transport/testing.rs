//! Certificates and TLS peers for the transport tests: a real handshake with rustls on
//! the other side, certificates made by rcgen.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::capability::Endpoint;

/// A server identity for tests.
pub(crate) struct Identity {
    /// The server's TLS configuration.
    pub(crate) config: Arc<ServerConfig>,
    /// PEM of the CA that signed it (for a CA-signed identity), else of the certificate.
    pub(crate) ca_pem: String,
    /// SHA-256 of the server certificate, hex.
    pub(crate) fingerprint: String,
}

fn server_config(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// A certificate for `names` signed by a fresh CA.
pub(crate) fn ca_signed(names: &[&str]) -> Identity {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Identity {
        fingerprint: hex::encode(Sha256::digest(cert.der())),
        config: server_config(vec![cert.der().clone()], &key),
        ca_pem: ca.pem(),
    }
}

/// A self-signed certificate for `names`.
pub(crate) fn self_signed(names: &[&str]) -> Identity {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    Identity {
        fingerprint: hex::encode(Sha256::digest(cert.der())),
        config: server_config(vec![cert.der().clone()], &key),
        ca_pem: cert.pem(),
    }
}

/// A TLS server on 127.0.0.1 that echoes every byte it receives; counts completed
/// handshakes.
pub(crate) async fn tls_echo(identity: &Identity) -> (Endpoint, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint {
        host: "127.0.0.1".to_string(),
        port: listener.local_addr().unwrap().port(),
    };
    let acceptor = TlsAcceptor::from(Arc::clone(&identity.config));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0_u8; 1024];
                while let Ok(count) = stream.read(&mut buffer).await {
                    if count == 0 || stream.write_all(&buffer[..count]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (endpoint, handshakes)
}

/// How the canned HTTP server answers a request, given its head (request line and
/// headers); `None` leaves the request unanswered.
pub(crate) type Respond = Arc<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

/// A minimal HTTP/1.1 server for client tests: keeps connections alive and counts
/// accepted connections. With `tls`, it speaks HTTPS.
pub(crate) struct CannedHttp {
    pub(crate) endpoint: Endpoint,
    pub(crate) accepted: Arc<AtomicUsize>,
}

/// A `200 OK` response with `body`.
pub(crate) fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub(crate) async fn canned_http(respond: Respond, tls: Option<&Identity>) -> CannedHttp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint {
        host: "127.0.0.1".to_string(),
        port: listener.local_addr().unwrap().port(),
    };
    let accepted = Arc::new(AtomicUsize::new(0));
    let acceptor = tls.map(|identity| TlsAcceptor::from(Arc::clone(&identity.config)));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let (respond, acceptor) = (Arc::clone(&respond), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_http(stream, respond).await;
                        }
                    }
                    None => serve_http(stream, respond).await,
                }
            });
        }
    });
    CannedHttp { endpoint, accepted }
}

async fn serve_http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    respond: Respond,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(count) => buffer.extend_from_slice(&chunk[..count]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(count) => buffer.extend_from_slice(&chunk[..count]),
            }
        }
        buffer.drain(..head_end + length);
        match respond(&head) {
            Some(response) => {
                if stream.write_all(&response).await.is_err() {
                    return;
                }
            }
            None => {
                // Hold the connection open without answering.
                let _ = stream.read(&mut chunk).await;
                return;
            }
        }
    }
}
