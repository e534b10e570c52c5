//! Signed approvals. When a reviewer approves a driver's digest, the host signs a
//! statement — the digest, where its source is, who approved it and when — with its
//! Ed25519 key. The signed statement (an attestation) can be exported and checked offline
//! by anyone who holds the host's public key (`warden driver verify-attestation`), so an
//! approval can be shown to someone who does not trust the host's database.
//!
//! The envelope is DSSE (the "Dead Simple Signing Envelope" in-toto and Sigstore use):
//! the statement's JSON bytes travel base64-encoded in `payload`, and the signature covers
//! `PAE(payloadType, payload)`, so the bytes that were signed are the bytes that are read
//! back and no JSON canonicalisation is needed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The DSSE payload type of a driver approval.
pub const PAYLOAD_TYPE: &str = "application/vnd.warden.driver-approval.v1+json";
/// The statement's own `type`.
pub const STATEMENT_TYPE: &str = "warden.driver-approval/v1";
/// The largest attestation accepted for checking.
const MAX_ENVELOPE: usize = 1 << 20;

/// Why an attestation could not be made or is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestationError {
    /// Not a DSSE envelope carrying a Warden approval.
    #[error("malformed attestation: {0}")]
    Malformed(String),
    /// Signed by a key not among those trusted.
    #[error("signed by key {0}, which is not the trusted key")]
    UnknownKey(String),
    /// The signature does not match the statement: it was altered or forged.
    #[error("the signature does not verify: the attestation was altered or not made by key {0}")]
    BadSignature(String),
    /// A key that is not an Ed25519 key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// The driver a statement is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementDriver {
    /// The driver record's id on the host that approved it.
    pub id: String,
    /// The driver's name.
    pub name: String,
    /// The version it declares.
    pub version: String,
}

/// Where the approved component's source is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementSource {
    /// The repository.
    pub repository: Option<String>,
    /// The commit.
    pub commit: Option<String>,
    /// The package inside the repository.
    pub path: Option<String>,
}

/// Who approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementReviewer {
    /// The user's id.
    pub id: String,
    /// Their email, when the host knows one.
    pub email: Option<String>,
    /// Their name, when the host knows one.
    pub name: Option<String>,
}

/// What an approval says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// `sha256:<hex>` of the approved component.
    pub digest: String,
    /// The driver.
    pub driver: StatementDriver,
    /// Its source.
    pub source: StatementSource,
    /// The reviewer.
    pub reviewer: StatementReviewer,
    /// When, RFC 3339 UTC.
    pub approved_at: String,
    /// The reviewer's note.
    pub note: Option<String>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvelopeSignature {
    /// The signing key's id (`ed25519:<16 hex>`).
    pub keyid: String,
    /// Base64 of the Ed25519 signature.
    pub sig: String,
}

/// A DSSE envelope: the signed statement as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    /// [`PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 of the statement's JSON.
    pub payload: String,
    /// The signatures (Warden makes one).
    pub signatures: Vec<EnvelopeSignature>,
}

/// An Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// Parse base64 or hex of the 32 key bytes.
    pub fn parse(text: &str) -> Result<PublicKey, AttestationError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| AttestationError::InvalidKey(e.to_string()))?
        } else {
            BASE64
                .decode(text)
                .map_err(|e| AttestationError::InvalidKey(format!("not base64 or hex: {e}")))?
        };
        if bytes.len() != 32 {
            return Err(AttestationError::InvalidKey(format!(
                "an Ed25519 public key is 32 bytes, not {}",
                bytes.len()
            )));
        }
        Ok(PublicKey(bytes))
    }

    /// Base64 of the key bytes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.0)
    }

    /// `ed25519:` and the first 16 hex digits of the key's SHA-256.
    pub fn id(&self) -> String {
        let hash = hex::encode(Sha256::digest(&self.0));
        format!("ed25519:{}", hash.get(..16).unwrap_or(&hash))
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// The host's signing key. Its private half stays in memory only as long as needed and is
/// stored sealed by the store.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.public_key().id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<SigningKey, AttestationError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| AttestationError::InvalidKey("no randomness for a new key".into()))?;
        SigningKey::from_pkcs8(document.as_ref())
    }

    /// A key from its PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, AttestationError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| AttestationError::InvalidKey(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(SigningKey {
            pair,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
        })
    }

    /// The PKCS#8 document, to be sealed for storage.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Its public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.pair.public_key().as_ref().to_vec())
    }

    /// Sign `statement`.
    pub fn sign(&self, statement: &Statement) -> Result<Envelope, AttestationError> {
        let payload = serde_json::to_vec(statement)
            .map_err(|e| AttestationError::Malformed(e.to_string()))?;
        let signature = self.pair.sign(&pae(PAYLOAD_TYPE, &payload));
        Ok(Envelope {
            payload_type: PAYLOAD_TYPE.to_string(),
            payload: BASE64.encode(&payload),
            signatures: vec![EnvelopeSignature {
                keyid: self.public_key().id(),
                sig: BASE64.encode(signature.as_ref()),
            }],
        })
    }
}

/// DSSE's pre-authentication encoding: what the signature covers.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    message.extend_from_slice(b"DSSEv1 ");
    message.extend_from_slice(payload_type.len().to_string().as_bytes());
    message.push(b' ');
    message.extend_from_slice(payload_type.as_bytes());
    message.push(b' ');
    message.extend_from_slice(payload.len().to_string().as_bytes());
    message.push(b' ');
    message.extend_from_slice(payload);
    message
}

/// Parse an exported attestation.
pub fn parse(text: &[u8]) -> Result<Envelope, AttestationError> {
    if text.len() > MAX_ENVELOPE {
        return Err(AttestationError::Malformed(format!(
            "{} bytes is more than the {MAX_ENVELOPE} accepted",
            text.len()
        )));
    }
    serde_json::from_slice(text).map_err(|e| AttestationError::Malformed(e.to_string()))
}

/// Check `envelope` against the trusted `keys`: the signature of one of them must cover
/// exactly its payload. Returns the statement it signs.
pub fn verify(envelope: &Envelope, keys: &[PublicKey]) -> Result<Statement, AttestationError> {
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(AttestationError::Malformed(format!(
            "payload type {:?} is not {PAYLOAD_TYPE:?}",
            envelope.payload_type
        )));
    }
    let payload = BASE64
        .decode(&envelope.payload)
        .map_err(|e| AttestationError::Malformed(format!("payload is not base64: {e}")))?;
    let message = pae(&envelope.payload_type, &payload);
    let mut unknown = None;
    for signature in &envelope.signatures {
        let Some(key) = keys.iter().find(|key| key.id() == signature.keyid) else {
            unknown = Some(signature.keyid.clone());
            continue;
        };
        let bytes = BASE64
            .decode(&signature.sig)
            .map_err(|e| AttestationError::Malformed(format!("signature is not base64: {e}")))?;
        if !key.verify(&message, &bytes) {
            return Err(AttestationError::BadSignature(signature.keyid.clone()));
        }
        let statement: Statement = serde_json::from_slice(&payload)
            .map_err(|e| AttestationError::Malformed(format!("statement: {e}")))?;
        if statement.kind != STATEMENT_TYPE {
            return Err(AttestationError::Malformed(format!(
                "statement type {:?} is not {STATEMENT_TYPE:?}",
                statement.kind
            )));
        }
        return Ok(statement);
    }
    Err(match unknown {
        Some(keyid) => AttestationError::UnknownKey(keyid),
        None => AttestationError::Malformed("the envelope has no signature".to_string()),
    })
}

/// Unix milliseconds as RFC 3339 UTC (`2026-12-04T19:02:03.456Z`).
pub fn rfc3339(unix_ms: i64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Statement {
        Statement {
            kind: STATEMENT_TYPE.to_string(),
            digest: "sha256:00ff".to_string(),
            driver: StatementDriver {
                id: "driver-1".into(),
                name: "PJLink".into(),
                version: "0.1.0".into(),
            },
            source: StatementSource {
                repository: Some("https://example.invalid/drivers.git".into()),
                commit: Some("a".repeat(40)),
                path: Some("drivers/pjlink".into()),
            },
            reviewer: StatementReviewer {
                id: "user-1".into(),
                email: Some("rev@example.com".into()),
                name: None,
            },
            approved_at: rfc3339(1_780_000_000_123),
            note: Some("read every line".into()),
        }
    }

    #[test]
    fn a_signed_statement_verifies_and_survives_export() {
        let key = SigningKey::generate().unwrap();
        let envelope = key.sign(&statement()).unwrap();
        let text = serde_json::to_vec_pretty(&envelope).unwrap();
        let back = parse(&text).unwrap();
        let trusted = PublicKey::parse(&key.public_key().to_base64()).unwrap();
        assert_eq!(verify(&back, &[trusted]).unwrap(), statement());
        // The key survives its PKCS#8 round trip (as stored, sealed).
        let again = SigningKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(statement().approved_at, "2026-05-28T20:26:40.123Z");
    }

    #[test]
    fn altered_statements_and_other_keys_are_refused() {
        let key = SigningKey::generate().unwrap();
        let trusted = key.public_key();
        let envelope = key.sign(&statement()).unwrap();

        // Another digest in the same envelope.
        let mut forged = statement();
        forged.digest = "sha256:11ee".into();
        let mut altered = envelope.clone();
        altered.payload = BASE64.encode(serde_json::to_vec(&forged).unwrap());
        assert!(matches!(
            verify(&altered, std::slice::from_ref(&trusted)),
            Err(AttestationError::BadSignature(_))
        ));

        // Signed by a key that is not trusted, even under the trusted key's id.
        let other = SigningKey::generate().unwrap();
        let mut impostor = other.sign(&forged).unwrap();
        assert!(matches!(
            verify(&impostor, std::slice::from_ref(&trusted)),
            Err(AttestationError::UnknownKey(_))
        ));
        impostor.signatures[0].keyid = trusted.id();
        assert!(matches!(
            verify(&impostor, std::slice::from_ref(&trusted)),
            Err(AttestationError::BadSignature(_))
        ));

        // Another payload type, no signature, garbage.
        let mut typed = envelope.clone();
        typed.payload_type = "application/json".into();
        assert!(verify(&typed, std::slice::from_ref(&trusted)).is_err());
        let mut bare = envelope;
        bare.signatures.clear();
        assert!(verify(&bare, &[trusted]).is_err());
        assert!(parse(b"{}").is_err());
        assert!(PublicKey::parse("not a key").is_err());
        assert!(PublicKey::parse(&BASE64.encode([0u8; 31])).is_err());
    }
}
