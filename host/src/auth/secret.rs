//! The host's random secrets: tokens, codes, API keys, session cookies, client secrets.
//!
//! Each is 256 random bits from the operating system, base64url without padding, behind a
//! short prefix naming its kind (`wdn_at_` for an access token…) so that a leaked one is
//! recognisable by secret scanners and a key is never mistaken for a token. Only the
//! SHA-256 of a secret is stored: for 256-bit random values a fast hash is as good as a
//! slow one, and lookups stay an index probe.

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What a secret is for; its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// An OAuth access token.
    AccessToken,
    /// An OAuth refresh token.
    RefreshToken,
    /// An authorization code.
    Code,
    /// An API key.
    ApiKey,
    /// A browser session cookie.
    Session,
    /// An OAuth client secret.
    ClientSecret,
    /// The one-time token that creates the first administrator.
    Setup,
    /// An anti-forgery token of a sign-in form.
    Form,
    /// The cookie binding a pending SAML2 sign-in to the browser that started it.
    SamlRequest,
    /// The cookie binding a single sign-on in progress to its browser.
    SignIn,
}

impl SecretKind {
    /// The prefix of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            SecretKind::AccessToken => "wdn_at_",
            SecretKind::RefreshToken => "wdn_rt_",
            SecretKind::Code => "wdn_ac_",
            SecretKind::ApiKey => "wdn_ak_",
            SecretKind::Session => "wdn_se_",
            SecretKind::ClientSecret => "wdn_cs_",
            SecretKind::Setup => "wdn_su_",
            SecretKind::Form => "wdn_fm_",
            SecretKind::SamlRequest => "wdn_sr_",
            SecretKind::SignIn => "wdn_si_",
        }
    }
}

/// A secret value: zeroized on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// A fresh random secret of `kind`.
    pub fn generate(kind: SecretKind) -> Secret {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        let mut text = String::with_capacity(50);
        text.push_str(kind.prefix());
        URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut text);
        Secret(Zeroizing::new(text))
    }

    /// A secret given by a caller.
    pub fn from_text(text: &str) -> Secret {
        Secret(Zeroizing::new(text.to_string()))
    }

    /// The secret itself, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its SHA-256, hex: what is stored.
    pub fn hash(&self) -> String {
        hash(&self.0)
    }

    /// Whether it is of `kind` (by prefix).
    pub fn is(&self, kind: SecretKind) -> bool {
        self.0.starts_with(kind.prefix())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256 of `text`, hex.
pub fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Equal, in time that does not depend on where they differ.
pub fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A random identifier of at least 128 bits for state that is not a credential (an
/// OAuth `state` of our own, a request id), base64url.
pub fn random_id() -> String {
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_redacted() {
        let a = Secret::generate(SecretKind::AccessToken);
        let b = Secret::generate(SecretKind::AccessToken);
        assert_ne!(a, b);
        assert!(a.is(SecretKind::AccessToken) && !a.is(SecretKind::ApiKey));
        assert_eq!(a.expose().len(), "wdn_at_".len() + 43);
        assert_eq!(format!("{a:?}"), "Secret(<redacted>)");
        assert_eq!(a.hash(), hash(a.expose()));
        assert_ne!(a.hash(), b.hash());
        assert!(equal("abc", "abc") && !equal("abc", "abd") && !equal("abc", "ab"));
    }
}
