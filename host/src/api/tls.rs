//! The API's TLS: what the server offers, and where its certificate comes from.
//!
//! Offered: TLS 1.3 with AES-128-GCM and AES-256-GCM, and TLS 1.2 with ECDHE (ECDSA or RSA
//! certificates) and AES-128/256-GCM; key exchange over X25519, P-256 or P-384, a fresh
//! ephemeral key per handshake. Nothing else: no CBC, no ChaCha20 (not in the policy), no
//! static RSA key exchange, no TLS 1.1 or older. The policy is one restricted rustls
//! `CryptoProvider`, so what rustls does not list here it cannot negotiate.
//!
//! The certificate comes from PEM files the deployer configures or, by default, from a
//! self-signed certificate the host generates in the data directory (`tls/`): ECDSA P-256,
//! valid one year, for `localhost`, `127.0.0.1`, `::1` and any configured names. It is
//! regenerated at start and by a daily check when it has less than 30 days left, and
//! swapped into the running server without a restart. Its SHA-256 fingerprint is printed
//! at start so a client can pin it.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};
use sha2::{Digest, Sha256};

/// How long a generated certificate is valid.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A generated certificate is replaced when it has less than this left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key does not fit the policy or the certificate.
    #[error("TLS key: {0}")]
    Key(String),
    /// Generating the self-signed certificate failed.
    #[error("generating the self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The cipher suites the API offers, strongest first.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The policy as a rustls provider: ring, restricted to [`CIPHER_SUITES`] and X25519,
/// P-256 and P-384.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..rustls::crypto::ring::default_provider()
    }
}

/// The server configuration: the policy, TLS 1.3 and 1.2, no client certificates,
/// certificates from `certificates`, HTTP/1.1 by ALPN.
pub fn server_config(certificates: Arc<CertificateStore>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// PEM files: the chain (leaf first) and its private key.
    Files {
        /// The certificate chain.
        certificate: PathBuf,
        /// The private key (PKCS#8, SEC1 or PKCS#1).
        key: PathBuf,
    },
    /// Generated and kept in `dir`, for these names besides the loopback ones.
    SelfSigned {
        /// The directory (`<data dir>/tls`).
        dir: PathBuf,
        /// Extra DNS names or IP addresses.
        names: Vec<String>,
    },
}

/// The certificate the server presents now; replaced in place when renewed.
#[derive(Debug)]
pub struct CertificateStore {
    source: CertificateSource,
    current: RwLock<Arc<CertifiedKey>>,
    fingerprint: RwLock<String>,
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

impl CertificateStore {
    /// Load the certificate from `source`; a self-signed one is generated when missing,
    /// unreadable or within [`RENEW_BEFORE`] of expiring at `now` (Unix seconds).
    pub fn load(source: CertificateSource, now: i64) -> Result<CertificateStore, TlsError> {
        let (key, fingerprint) = match &source {
            CertificateSource::Files { certificate, key } => load_files(certificate, key)?,
            CertificateSource::SelfSigned { dir, names } => self_signed(dir, names, now)?,
        };
        Ok(CertificateStore {
            source,
            current: RwLock::new(Arc::new(key)),
            fingerprint: RwLock::new(fingerprint),
        })
    }

    /// The SHA-256 fingerprint of the leaf certificate, `AB:CD:…`.
    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Renew a self-signed certificate that is close to expiry at `now`; returns whether
    /// it was replaced. Configured files are left alone.
    pub fn renew_if_due(&self, now: i64) -> Result<bool, TlsError> {
        let CertificateSource::SelfSigned { dir, names } = &self.source else {
            return Ok(false);
        };
        if !renewal_due(dir, now) {
            return Ok(false);
        }
        let (key, fingerprint) = self_signed(dir, names, now)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        *self.fingerprint.write().unwrap_or_else(|e| e.into_inner()) = fingerprint;
        Ok(true)
    }
}

/// `AB:CD:…` of SHA-256 over `der`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn load_files(certificate: &Path, key: &Path) -> Result<(CertifiedKey, String), TlsError> {
    let pem = |path: &Path, why: String| TlsError::Pem {
        path: path.to_path_buf(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| pem(certificate, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(certificate, e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| pem(certificate, "no certificate in the file".to_string()))?;
    let fingerprint = fingerprint(leaf.as_ref());
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    Ok((certified(chain, private)?, fingerprint))
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Key(format!("the key does not match the certificate: {e}")))?;
    Ok(certified)
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("self-signed.crt"),
        dir.join("self-signed.key"),
        dir.join("self-signed.expires"),
    )
}

/// Whether the self-signed certificate in `dir` is missing or expires within
/// [`RENEW_BEFORE`] of `now`.
fn renewal_due(dir: &Path, now: i64) -> bool {
    let (_, _, expires) = paths(dir);
    let not_after = std::fs::read_to_string(expires)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok());
    let renew_before = i64::try_from(RENEW_BEFORE.as_secs()).unwrap_or(i64::MAX);
    not_after.is_none_or(|not_after| not_after - now < renew_before)
}

/// The self-signed certificate in `dir`, generated first when due.
fn self_signed(dir: &Path, names: &[String], now: i64) -> Result<(CertifiedKey, String), TlsError> {
    let (certificate, key, expires) = paths(dir);
    if !renewal_due(dir, now)
        && let Ok(loaded) = load_files(&certificate, &key)
    {
        return Ok(loaded);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| TlsError::Io { path, error }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .map_err(io(dir))?;
    let generated = generate(names, now)?;
    write_private(&key, generated.key_pem.as_bytes()).map_err(io(&key))?;
    std::fs::write(&certificate, generated.certificate_pem.as_bytes()).map_err(io(&certificate))?;
    std::fs::write(&expires, format!("{}\n", generated.not_after)).map_err(io(&expires))?;
    tracing::info!(
        "generated a self-signed TLS certificate in {}, valid until {}",
        dir.display(),
        generated.not_after
    );
    load_files(&certificate, &key)
}

/// A generated certificate.
struct Generated {
    certificate_pem: String,
    key_pem: String,
    not_after: i64,
}

fn generate(names: &[String], now: i64) -> Result<Generated, TlsError> {
    let failed = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut all = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    all.extend(
        names
            .iter()
            .filter(|n| !all.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut params = rcgen::CertificateParams::new(all).map_err(failed)?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "Warden (self-signed)");
    params.distinguished_name = name;
    let validity = i64::try_from(SELF_SIGNED_VALIDITY.as_secs()).unwrap_or(i64::MAX);
    let not_before = time::OffsetDateTime::from_unix_timestamp(now - 60)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let not_after = time::OffsetDateTime::from_unix_timestamp(now + validity)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let certificate = params.self_signed(&key).map_err(failed)?;
    Ok(Generated {
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        not_after: now + validity,
    })
}

/// Write `bytes` to `path` readable by its owner only, replacing what was there.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warden-tls-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn self_signed_is_kept_until_renewal_is_due() {
        let dir = scratch();
        let source = CertificateSource::SelfSigned {
            dir: dir.clone(),
            names: vec!["warden.example".to_string()],
        };
        let now = 1_800_000_000;
        let first = CertificateStore::load(source.clone(), now).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("self-signed.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A restart a month later keeps the same certificate.
        let again = CertificateStore::load(source.clone(), now + 30 * 86_400).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert!(!again.renew_if_due(now + 300 * 86_400).unwrap());
        // 340 days in, less than 30 are left: the running store renews in place.
        assert!(again.renew_if_due(now + 340 * 86_400).unwrap());
        assert_ne!(again.fingerprint(), first.fingerprint());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_policy_offers_only_gcm_with_ecdhe() {
        let provider = provider();
        for suite in &provider.cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(name.contains("GCM"), "{name}");
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
        }
        assert_eq!(provider.kx_groups.len(), 3);
    }
}
