//! Where the host is, whom to trust, and who is asking: the options every client command
//! shares, the credential from the environment, and the verified TLS connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use http::{HeaderName, HeaderValue, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

use super::ClientError;

/// The URL used when neither `--url` nor `WARDEN_URL` is given.
pub const DEFAULT_URL: &str = "https://127.0.0.1:8443";
/// The certificate trusted when neither `--ca` nor `WARDEN_CA` is given and it exists:
/// the one `warden serve` generates in its default data directory.
pub const DEFAULT_CA: &str = "warden-data/tls/self-signed.crt";
/// Time allowed for the TCP connection and the TLS handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The options every client command takes. The credential is not among them: it comes
/// from the environment only (`WARDEN_API_KEY` or `WARDEN_TOKEN`), so that it never
/// lands in shell history or in the process list.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// The host's URL [env: WARDEN_URL] [default: https://127.0.0.1:8443]
    #[arg(long)]
    url: Option<String>,
    /// A PEM file of the certificate(s) to trust instead of the system's roots, such as
    /// the host's `warden-data/tls/self-signed.crt` [env: WARDEN_CA] [default:
    /// ./warden-data/tls/self-signed.crt when it exists]
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print JSON on one line instead of pretty-printed.
    #[arg(long)]
    pub compact: bool,
}

/// The credential a command presents: an API key (`X-API-Key`) or an access token
/// (`Authorization: Bearer`). Zeroized when dropped; its `Debug` shows only its kind.
pub enum Credential {
    /// From `WARDEN_API_KEY`.
    ApiKey(Zeroizing<String>),
    /// From `WARDEN_TOKEN`.
    Bearer(Zeroizing<String>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::ApiKey(_) => f.write_str("Credential::ApiKey(<redacted>)"),
            Credential::Bearer(_) => f.write_str("Credential::Bearer(<redacted>)"),
        }
    }
}

impl Credential {
    /// The credential from the environment.
    pub fn from_env() -> Result<Credential, ClientError> {
        let read = |name: &str| match std::env::var(name) {
            Ok(value) => Ok(Some(Zeroizing::new(value))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(ClientError::Usage(format!("{name} is not valid text")))
            }
        };
        Credential::from_values(read("WARDEN_API_KEY")?, read("WARDEN_TOKEN")?)
    }

    /// The credential from the values of `WARDEN_API_KEY` and `WARDEN_TOKEN`; an empty
    /// value counts as unset, and setting both is refused rather than guessed at.
    pub fn from_values(
        api_key: Option<Zeroizing<String>>,
        token: Option<Zeroizing<String>>,
    ) -> Result<Credential, ClientError> {
        let set = |value: Option<Zeroizing<String>>| value.filter(|v| !v.trim().is_empty());
        match (set(api_key), set(token)) {
            (Some(key), None) => Ok(Credential::ApiKey(key)),
            (None, Some(token)) => Ok(Credential::Bearer(token)),
            (Some(_), Some(_)) => Err(ClientError::Usage(
                "both WARDEN_API_KEY and WARDEN_TOKEN are set: set only one".to_string(),
            )),
            (None, None) => Err(ClientError::Usage(
                "no credential: set WARDEN_API_KEY to an API key (`warden api-key create` \
                 makes one) or WARDEN_TOKEN to an access token"
                    .to_string(),
            )),
        }
    }

    /// The request header that carries it, marked sensitive.
    pub fn header(&self) -> Result<(HeaderName, HeaderValue), ClientError> {
        let (name, value, variable) = match self {
            Credential::ApiKey(key) => (
                HeaderName::from_static("x-api-key"),
                Zeroizing::new(key.trim().to_string()),
                "WARDEN_API_KEY",
            ),
            Credential::Bearer(token) => (
                http::header::AUTHORIZATION,
                Zeroizing::new(format!("Bearer {}", token.trim())),
                "WARDEN_TOKEN",
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ClientError::Usage(format!("{variable} holds characters a header cannot carry"))
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

/// A host to talk to: where it is, the TLS configuration that verifies it, and the
/// credential to present.
#[derive(Debug, Clone)]
pub struct Server {
    /// `host:port`, as sent in `Host`.
    pub authority: String,
    host: String,
    port: u16,
    /// The URL's path, without a trailing `/` (empty unless the host is behind a proxy
    /// that serves it under a prefix).
    pub prefix: String,
    tls: Arc<ClientConfig>,
    /// Whether stdout gets one line per JSON value.
    pub compact: bool,
}

impl ConnectionArgs {
    /// The server these options name. Every check that needs no network happens here:
    /// the URL, the certificate file.
    pub fn server(&self) -> Result<Server, ClientError> {
        let url = match &self.url {
            Some(url) => url.clone(),
            None => non_empty_var("WARDEN_URL")?.unwrap_or_else(|| DEFAULT_URL.to_string()),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| ClientError::Usage(format!("--url {url:?} is not a URL")))?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::Usage(format!(
                "--url {url:?}: the host speaks HTTPS only (https://…)"
            )));
        }
        if uri.query().is_some() {
            return Err(ClientError::Usage(format!(
                "--url {url:?}: a query string is not allowed"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Usage(format!("--url {url:?} names no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        if authority.contains('@') {
            return Err(ClientError::Usage(
                "--url: credentials in the URL are not accepted; use WARDEN_API_KEY or \
                 WARDEN_TOKEN"
                    .to_string(),
            ));
        }
        let ca = match &self.ca {
            Some(ca) => Some(ca.clone()),
            None => match non_empty_var("WARDEN_CA")? {
                Some(ca) => Some(PathBuf::from(ca)),
                None => Some(PathBuf::from(DEFAULT_CA)).filter(|path| path.is_file()),
            },
        };
        let roots = match ca {
            Some(path) => trusted_file(&path)?,
            None => system_roots(),
        };
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| ClientError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Server {
            authority,
            host,
            port,
            prefix: uri.path().trim_end_matches('/').to_string(),
            tls: Arc::new(config),
            compact: self.compact,
        })
    }
}

impl Server {
    /// A TCP connection to the host with a completed, verified TLS handshake.
    pub async fn connect(&self) -> Result<TlsStream<TcpStream>, ClientError> {
        let server_name = ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::Usage(format!("{:?} is not a host name", self.host)))?;
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|error| ClientError::Connect {
                    authority: self.authority.clone(),
                    reason: error.to_string(),
                })?;
            TlsConnector::from(Arc::clone(&self.tls))
                .connect(server_name, tcp)
                .await
                .map_err(|error| {
                    ClientError::Tls(format!("handshake with {} failed: {error}", self.authority))
                })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ClientError::Connect {
                authority: self.authority.clone(),
                reason: format!("no TLS connection within {CONNECT_TIMEOUT:?}"),
            })?
    }
}

fn non_empty_var(name: &str) -> Result<Option<String>, ClientError> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(ClientError::Usage(format!("{name} is not valid text")))
        }
    }
}

/// Only the certificates in the PEM file at `path`.
fn trusted_file(path: &std::path::Path) -> Result<RootCertStore, ClientError> {
    let bad = |why: String| ClientError::Usage(format!("--ca {}: {why}", path.display()));
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| bad(e.to_string()))?;
        roots.add(certificate).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no CERTIFICATE block".to_string()));
    }
    Ok(roots)
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "reading the system's trusted certificates");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(text.to_string()))
    }

    #[test]
    fn the_credential_comes_from_exactly_one_variable() {
        assert!(matches!(
            Credential::from_values(value("wdn_ak_x"), None),
            Ok(Credential::ApiKey(_))
        ));
        assert!(matches!(
            Credential::from_values(value(""), value("wdn_at_y")),
            Ok(Credential::Bearer(_))
        ));
        assert!(matches!(
            Credential::from_values(None, value("  ")),
            Err(ClientError::Usage(_))
        ));
        assert!(matches!(
            Credential::from_values(value("a"), value("b")),
            Err(ClientError::Usage(_))
        ));
    }

    #[test]
    fn the_credential_is_never_shown() {
        let credential = Credential::ApiKey(Zeroizing::new("wdn_ak_secret".to_string()));
        assert!(!format!("{credential:?}").contains("secret"));
        let (name, header) = credential.header().unwrap();
        assert_eq!(name, "x-api-key");
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains("secret"));
        let bearer = Credential::Bearer(Zeroizing::new("t".to_string()));
        assert_eq!(bearer.header().unwrap().1, "Bearer t");
    }
}
