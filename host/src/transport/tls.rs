//! TLS to devices: how a module's settings choose whom to trust, and the handshake.
//!
//! Verification is on by default, against the system's trusted roots. A module's
//! settings may instead name its own CA (`tls_ca_pem`, PEM, one or more certificates;
//! then only those are trusted) or pin the device's certificate by its SHA-256
//! fingerprint (`tls_fingerprint_sha256`, hex with or without `:`; then exactly that
//! certificate is accepted, whatever its name or dates — the usual way to trust a
//! device's self-signed certificate). `tls_server_name` sets the name checked against the
//! certificate when the endpoint is an address. Turning verification off is
//! `danger_accept_invalid_certs: true`; it is logged at every connect. The handshake's
//! signatures are verified in every mode, so the peer always proves it holds the key of
//! the certificate it shows.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The settings keys this module reads.
pub const SETTING_CA_PEM: &str = "tls_ca_pem";
/// See the module docs.
pub const SETTING_FINGERPRINT: &str = "tls_fingerprint_sha256";
/// See the module docs.
pub const SETTING_SERVER_NAME: &str = "tls_server_name";
/// See the module docs.
pub const SETTING_DANGER: &str = "danger_accept_invalid_certs";

/// Why a module's TLS settings were refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("TLS settings: {0}")]
pub struct TlsSettingsError(pub(crate) String);

/// Whom a module trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's trusted roots.
    SystemRoots,
    /// Only these CA certificates (DER).
    Ca(Vec<Vec<u8>>),
    /// Exactly the certificate with this SHA-256 fingerprint.
    Pinned([u8; 32]),
    /// Anything (`danger_accept_invalid_certs`).
    DangerAcceptInvalid,
}

/// A module's TLS configuration, built once from its settings and shared by every
/// connection it makes.
#[derive(Clone)]
pub struct DeviceTls {
    trust: Trust,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl std::fmt::Debug for DeviceTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTls")
            .field("trust", &self.trust)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// What the HTTP client needs to offer in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// Nothing (a device protocol over TLS).
    None,
    /// `http/1.1`.
    Http1,
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trusted roots, read once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's trusted certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system trusted roots loaded");
            Arc::new(roots)
        })
        .clone()
}

impl DeviceTls {
    /// The TLS configuration for a module whose device is `host`, from its merged
    /// `settings`. Refuses contradictory or malformed settings rather than guessing.
    pub fn from_settings(
        settings: &Value,
        host: &str,
        alpn: Alpn,
    ) -> Result<DeviceTls, TlsSettingsError> {
        let fail = |message: String| TlsSettingsError(message);
        let text = |key: &str| -> Result<Option<&str>, TlsSettingsError> {
            match settings.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
                Some(Value::String(text)) => Ok(Some(text.as_str())),
                Some(_) => Err(fail(format!("`{key}` must be a string"))),
            }
        };
        let danger = match settings.get(SETTING_DANGER) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => return Err(fail(format!("`{SETTING_DANGER}` must be true or false"))),
        };
        let ca = text(SETTING_CA_PEM)?;
        let fingerprint = text(SETTING_FINGERPRINT)?;
        let trust = match (danger, ca, fingerprint) {
            (true, None, None) => Trust::DangerAcceptInvalid,
            (true, _, _) => {
                return Err(fail(format!(
                    "`{SETTING_DANGER}` cannot be combined with `{SETTING_CA_PEM}` or \
                     `{SETTING_FINGERPRINT}`"
                )));
            }
            (false, Some(_), Some(_)) => {
                return Err(fail(format!(
                    "choose `{SETTING_CA_PEM}` or `{SETTING_FINGERPRINT}`, not both"
                )));
            }
            (false, Some(pem), None) => Trust::Ca(parse_ca(pem)?),
            (false, None, Some(hex)) => Trust::Pinned(parse_fingerprint(hex)?),
            (false, None, None) => Trust::SystemRoots,
        };
        let name = text(SETTING_SERVER_NAME)?.unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| fail(format!("`{name}` is not a valid server name")))?;
        let config = client_config(&trust, alpn)?;
        Ok(DeviceTls {
            trust,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Whether certificate verification is off for this module.
    pub fn is_danger(&self) -> bool {
        self.trust == Trust::DangerAcceptInvalid
    }

    /// Whom this module trusts.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Run the handshake on `stream`. The caller bounds it with its connect deadline.
    pub async fn handshake(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
    }

    /// The warning logged at every connect in danger mode, if this is it.
    pub fn danger_warning(&self, module: &str, endpoint: &dyn std::fmt::Display) -> Option<String> {
        self.is_danger().then(|| {
            tracing::warn!(%module, %endpoint, "TLS certificate verification is off (danger_accept_invalid_certs)");
            format!(
                "TLS certificate verification is off for {endpoint} \
                 ({SETTING_DANGER}): the device's identity is not checked"
            )
        })
    }
}

/// Whether `settings` mention any TLS key, so a plain-TCP module can refuse them instead
/// of silently ignoring them.
pub fn mentions_tls(settings: &Value) -> bool {
    [
        SETTING_CA_PEM,
        SETTING_FINGERPRINT,
        SETTING_SERVER_NAME,
        SETTING_DANGER,
    ]
    .iter()
    .any(|key| settings.get(key).is_some_and(|value| !value.is_null()))
}

fn parse_ca(pem: &str) -> Result<Vec<Vec<u8>>, TlsSettingsError> {
    let mut certificates = Vec::new();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate
            .map_err(|e| TlsSettingsError(format!("`{SETTING_CA_PEM}` is not valid PEM: {e}")))?;
        certificates.push(certificate.as_ref().to_vec());
    }
    if certificates.is_empty() {
        return Err(TlsSettingsError(format!(
            "`{SETTING_CA_PEM}` holds no CERTIFICATE block"
        )));
    }
    Ok(certificates)
}

fn parse_fingerprint(text: &str) -> Result<[u8; 32], TlsSettingsError> {
    let hex_digits: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let bytes = hex::decode(&hex_digits)
        .ok()
        .filter(|bytes| bytes.len() == 32);
    bytes
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            TlsSettingsError(format!(
                "`{SETTING_FINGERPRINT}` must be 32 bytes of hex (a SHA-256 fingerprint)"
            ))
        })
}

fn client_config(trust: &Trust, alpn: Alpn) -> Result<ClientConfig, TlsSettingsError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsSettingsError(e.to_string()))?;
    let mut config = match trust {
        Trust::SystemRoots => builder
            .with_root_certificates(system_roots())
            .with_no_client_auth(),
        Trust::Ca(certificates) => {
            let mut roots = RootCertStore::empty();
            for der in certificates {
                roots
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|e| TlsSettingsError(format!("`{SETTING_CA_PEM}`: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pinned(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KeyProofVerifier {
                pinned: Some(*fingerprint),
                algorithms,
            }))
            .with_no_client_auth(),
        Trust::DangerAcceptInvalid => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KeyProofVerifier {
                pinned: None,
                algorithms,
            }))
            .with_no_client_auth(),
    };
    if alpn == Alpn::Http1 {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(config)
}

/// Accepts the certificate with the pinned fingerprint (or, with `pinned: None`, any
/// certificate), and verifies the handshake signatures against it.
#[derive(Debug)]
struct KeyProofVerifier {
    pinned: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for KeyProofVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pinned) = self.pinned else {
            return Ok(ServerCertVerified::assertion());
        };
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the device's certificate has SHA-256 fingerprint {}, not the pinned {}",
                hex::encode(seen),
                hex::encode(pinned)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_choose_one_trust_and_refuse_contradictions() {
        let tls = DeviceTls::from_settings(&json!({}), "device.local", Alpn::None).unwrap();
        assert_eq!(tls.trust(), &Trust::SystemRoots);
        assert!(!tls.is_danger());
        let pin = "AB:".repeat(31) + "AB";
        let tls = DeviceTls::from_settings(
            &json!({ "tls_fingerprint_sha256": pin }),
            "10.0.0.1",
            Alpn::None,
        )
        .unwrap();
        assert_eq!(tls.trust(), &Trust::Pinned([0xAB; 32]));
        let tls = DeviceTls::from_settings(
            &json!({ "danger_accept_invalid_certs": true }),
            "x",
            Alpn::Http1,
        )
        .unwrap();
        assert!(tls.is_danger());
        for bad in [
            json!({ "danger_accept_invalid_certs": "yes" }),
            json!({ "danger_accept_invalid_certs": true, "tls_fingerprint_sha256": "AB".repeat(32) }),
            json!({ "tls_fingerprint_sha256": "AB".repeat(31) }),
            json!({ "tls_fingerprint_sha256": "zz".repeat(32) }),
            json!({ "tls_ca_pem": "not pem" }),
            json!({ "tls_ca_pem": 5 }),
            json!({ "tls_ca_pem": "x", "tls_fingerprint_sha256": "AB".repeat(32) }),
            json!({ "tls_server_name": "bad name!" }),
        ] {
            assert!(
                DeviceTls::from_settings(&bad, "device.local", Alpn::None).is_err(),
                "{bad} was accepted"
            );
        }
        assert!(mentions_tls(&json!({ "tls_ca_pem": "x" })));
        assert!(!mentions_tls(&json!({ "other": 1, "tls_ca_pem": null })));
    }
}

#[cfg(test)]
mod handshake_tests {
    //! The TCP transport over TLS against a rustls server, in every trust mode.

    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use serde_json::{Value, json};
    use tokio::sync::mpsc;
    use tokio::time::{Instant, timeout};

    use super::*;
    use crate::capability::{Endpoint, Grant};
    use crate::transport::testing::{ca_signed, self_signed, tls_echo};
    use crate::transport::{Connection, ConnectionOptions, TransportError, TransportEvent};

    fn open_link(
        endpoint: &Endpoint,
        settings: Value,
    ) -> (Connection, mpsc::Receiver<TransportEvent>) {
        let tls = DeviceTls::from_settings(&settings, &endpoint.host, Alpn::None).unwrap();
        let grant = Arc::new(Grant::new(
            "tls-test",
            Some(endpoint.clone()),
            BTreeSet::new(),
        ));
        let (tx, rx) = mpsc::channel(64);
        let options = ConnectionOptions {
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(200),
            tls: Some(tls),
            ..ConnectionOptions::default()
        };
        (Connection::spawn(endpoint.clone(), grant, options, tx), rx)
    }

    /// Send `text` and return the echo, or the send's error.
    async fn echo(
        connection: &Connection,
        events: &mut mpsc::Receiver<TransportEvent>,
        text: &str,
    ) -> Result<String, TransportError> {
        let deadline = Instant::now() + Duration::from_millis(1500);
        connection.send(text.as_bytes().to_vec(), deadline).await?;
        loop {
            match timeout(Duration::from_secs(2), events.recv()).await {
                Ok(Some(TransportEvent::Message(bytes))) => {
                    return Ok(String::from_utf8(bytes).unwrap());
                }
                Ok(Some(_)) => continue,
                _ => panic!("no echo"),
            }
        }
    }

    #[tokio::test]
    async fn a_device_certificate_signed_by_the_configured_ca_is_trusted() {
        let identity = ca_signed(&["127.0.0.1", "device.local"]);
        let (endpoint, handshakes) = tls_echo(&identity).await;
        let (connection, mut events) =
            open_link(&endpoint, json!({ "tls_ca_pem": identity.ca_pem }));
        assert_eq!(
            echo(&connection, &mut events, "hello").await.unwrap(),
            "hello"
        );
        assert_eq!(handshakes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_refused_with_system_roots() {
        let identity = ca_signed(&["127.0.0.1"]);
        let (endpoint, handshakes) = tls_echo(&identity).await;
        let (connection, mut events) = open_link(&endpoint, json!({}));
        let error = echo(&connection, &mut events, "hello").await.unwrap_err();
        let TransportError::NotConnected(reason) = error else {
            panic!("expected not-connected, got {error:?}");
        };
        assert!(reason.contains("certificate"), "{reason}");
        assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_name_mismatch_is_refused_unless_the_server_name_is_set() {
        let identity = ca_signed(&["projector.example"]);
        let (endpoint, _) = tls_echo(&identity).await;
        let (connection, mut events) =
            open_link(&endpoint, json!({ "tls_ca_pem": identity.ca_pem }));
        let error = echo(&connection, &mut events, "x").await.unwrap_err();
        assert!(
            matches!(error, TransportError::NotConnected(ref r) if r.contains("certificate")),
            "{error:?}"
        );
        let (connection, mut events) = open_link(
            &endpoint,
            json!({ "tls_ca_pem": identity.ca_pem, "tls_server_name": "projector.example" }),
        );
        assert_eq!(
            echo(&connection, &mut events, "named").await.unwrap(),
            "named"
        );
    }

    #[tokio::test]
    async fn a_pinned_fingerprint_accepts_exactly_that_certificate() {
        let identity = self_signed(&["whatever.invalid"]);
        let (endpoint, _) = tls_echo(&identity).await;
        let pin = identity
            .fingerprint
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        let (connection, mut events) =
            open_link(&endpoint, json!({ "tls_fingerprint_sha256": pin }));
        assert_eq!(
            echo(&connection, &mut events, "pinned").await.unwrap(),
            "pinned"
        );

        let other = self_signed(&["whatever.invalid"]);
        let (connection, mut events) = open_link(
            &endpoint,
            json!({ "tls_fingerprint_sha256": other.fingerprint }),
        );
        let error = echo(&connection, &mut events, "x").await.unwrap_err();
        assert!(
            matches!(error, TransportError::NotConnected(ref r) if r.contains("pinned")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn danger_mode_connects_and_warns_at_every_connect() {
        let identity = self_signed(&["whatever.invalid"]);
        let (endpoint, handshakes) = tls_echo(&identity).await;
        let (connection, mut events) =
            open_link(&endpoint, json!({ "danger_accept_invalid_certs": true }));
        let mut warnings = 0;
        for round in 0..2 {
            // The warning comes before the connection it concerns.
            loop {
                match timeout(Duration::from_secs(3), events.recv()).await {
                    Ok(Some(TransportEvent::Warning(text))) => {
                        assert!(text.contains("danger_accept_invalid_certs"), "{text}");
                        warnings += 1;
                    }
                    Ok(Some(TransportEvent::Connected)) => break,
                    Ok(Some(TransportEvent::Disconnected { .. })) => {}
                    other => panic!("round {round}: {other:?}"),
                }
            }
            assert_eq!(warnings, round + 1);
            connection.disconnect();
        }
        // The server counts a handshake when its side completes, just after ours.
        let deadline = Instant::now() + Duration::from_secs(2);
        while handshakes.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(handshakes.load(Ordering::SeqCst) >= 2);
    }
}
