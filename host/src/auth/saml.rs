//! SAML2 single sign-on with Warden as the service provider (samael with xmlsec).
//!
//! Each `[[auth.saml]]` identity source names its identity provider's metadata; the host
//! refuses to start when that metadata has no signing certificate (samael would then take
//! unsigned answers). A sign-in is SP-initiated only:
//!
//! 1. [`SamlSources::begin_login`] makes an AuthnRequest whose id has 192 random bits,
//!    remembers it on this host under the hash of a fresh cookie (`wdn_sr_…`) that binds
//!    it to the browser, with the `continue` target, for 10 minutes.
//! 2. [`Auth::sign_in_saml`] takes the IdP's POST to the ACS: the pending request of the
//!    browser's cookie is taken (used once, whatever the outcome); samael verifies the
//!    XML signature against the configured certificates, RSA or ECDSA with SHA-256 or
//!    stronger only, and keeps only the signed element, so an unsigned element around or
//!    beside it is never read; it checks the issuer, the Destination, the Recipient (this
//!    ACS URL), the validity windows with the configured skew and InResponseTo (the
//!    browser's pending request). This module then requires what samael leaves optional
//!    — an audience restriction naming this SP, a NotOnOrAfter — checks the window again
//!    against the host's clock; [`Auth::sign_in_saml`] refuses an assertion id the
//!    store has seen before (the replay cache keeps ids until their NotOnOrAfter plus
//!    the skew).
//! 3. The attributes become an [`ExternalIdentity`] and [`Auth::sign_in_external`]
//!    starts the browser session.
//!
//! Pending requests are in memory, per host (they are made by unauthenticated requests,
//! so they stay out of the database, bounded): the IdP's answer must come back to the
//! host that sent the person there. The replay cache is in the store
//! (`saml_assertions`), shared by every host and kept across restarts.
//!
//! Nothing here logs an assertion, a response or an attribute value: refusals are logged
//! and audited with samael's reason, which names only metadata (issuer, URLs, times).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use samael::crypto::AllowedSignatureAlgorithm;
use samael::metadata::{EntityDescriptor, HTTP_REDIRECT_BINDING};
use samael::schema::Assertion;
use samael::service_provider::ServiceProvider;
use serde::Deserialize;
use serde_json::json;

use super::external::{ExternalIdentity, mapped_roles, role_map_problem, source_id_problem};
use super::pending::PendingSignIns;
use super::secret::{self, Secret, SecretKind};
use super::{Auth, AuthError};
use crate::store::{Actor, NewAuditEntry, SessionRecord};

/// How long a started sign-in waits for the identity provider's answer, ms.
pub const PENDING_TTL_MS: i64 = 10 * 60 * 1000;
/// The SAML assertion namespace.
const SAML_ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// The most clock skew a source may allow, seconds.
const MAX_CLOCK_SKEW_SECONDS: u32 = 600;

/// One `[[auth.saml]]` identity source of `warden.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// The source's id: users it signs in get it as their `auth_source`; it is in the
    /// SP's URLs. Lower-case letters, digits, `-` and `_`; not `local`.
    pub id: String,
    /// What the sign-in page calls it ("Sign in with NAME").
    pub name: String,
    /// The identity provider's metadata XML (a file); it must hold a signing certificate.
    pub idp_metadata: PathBuf,
    /// This service provider's entity id (default: the issuer URL and
    /// `/auth/saml/{id}/metadata`).
    #[serde(default)]
    pub entity_id: Option<String>,
    /// Attributes holding the email, by `Name` or `FriendlyName`; the first present wins.
    /// Without any, a NameID that looks like an email address is taken.
    #[serde(default = "default_email_attributes")]
    pub email_attributes: Vec<String>,
    /// Attributes holding the first name.
    #[serde(default = "default_first_name_attributes")]
    pub first_name_attributes: Vec<String>,
    /// Attributes holding the last name.
    #[serde(default = "default_last_name_attributes")]
    pub last_name_attributes: Vec<String>,
    /// Attributes holding the person's groups or roles at the identity provider.
    #[serde(default = "default_role_attributes")]
    pub role_attributes: Vec<String>,
    /// The identity provider's role or group values that give a Warden role (`admin`,
    /// `support`, `user`, `reviewer`). Empty: roles are left to administrators.
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// Clock skew allowed on validity windows, seconds (default 60, at most 600).
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u32,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

fn default_email_attributes() -> Vec<String> {
    names(&[
        "email",
        "mail",
        "emailAddress",
        "urn:oid:0.9.2342.19200300.100.1.3",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    ])
}

fn default_first_name_attributes() -> Vec<String> {
    names(&[
        "givenName",
        "firstName",
        "first_name",
        "urn:oid:2.5.4.42",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
    ])
}

fn default_last_name_attributes() -> Vec<String> {
    names(&[
        "sn",
        "surname",
        "lastName",
        "last_name",
        "urn:oid:2.5.4.4",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
    ])
}

fn default_role_attributes() -> Vec<String> {
    names(&[
        "roles",
        "role",
        "groups",
        "memberOf",
        "eduPersonAffiliation",
        "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
    ])
}

fn default_clock_skew() -> u32 {
    60
}

/// Why a SAML sign-in was refused. The messages name no secret and no assertion content.
#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    /// No source with this id is configured.
    #[error("no SAML identity source {0:?}")]
    UnknownSource(String),
    /// The browser has no pending sign-in through this source (none started, expired,
    /// used already, or started in another browser).
    #[error("no pending sign-in for this browser through this source")]
    NoPendingRequest,
    /// Too many sign-ins are waiting for an answer.
    #[error("too many pending SAML sign-ins")]
    Busy,
    /// The response failed a check.
    #[error("response refused: {0}")]
    Refused(String),
    /// The assertion was used before.
    #[error("assertion replayed")]
    Replayed,
    /// The request could not be made.
    #[error("authentication request: {0}")]
    Request(String),
}

/// One configured identity provider.
struct Source {
    id: String,
    name: String,
    entity_id: String,
    acs_url: String,
    idp_sso_url: String,
    provider: ServiceProvider,
    config: SamlConfig,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("id", &self.id)
            .field("entity_id", &self.entity_id)
            .field("acs_url", &self.acs_url)
            .field("idp_sso_url", &self.idp_sso_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Pending {
    source: String,
    request_id: String,
    next: Option<String>,
}

/// The configured SAML identity sources and the sign-ins waiting for an answer.
#[derive(Debug, Default)]
pub struct SamlSources {
    sources: Vec<Arc<Source>>,
    /// Pending sign-ins by the hash of their browser cookie.
    pending: PendingSignIns<Pending>,
}

/// A started sign-in: the cookie that binds it to the browser and where to send the
/// browser.
#[derive(Debug)]
pub struct LoginStart {
    /// The `wdn_sr_` cookie's value.
    pub cookie: Secret,
    /// The identity provider's URL with the AuthnRequest (HTTP-Redirect binding).
    pub redirect: String,
}

fn config_error(index: usize, key: &str, message: impl fmt::Display) -> AuthError {
    AuthError::Config(format!("saml[{index}].{key}: {message}"))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Algorithms accepted on signatures: RSA or ECDSA with SHA-256 or stronger.
fn allowed_algorithms() -> Vec<AllowedSignatureAlgorithm> {
    vec![
        AllowedSignatureAlgorithm::RsaSha256,
        AllowedSignatureAlgorithm::RsaSha384,
        AllowedSignatureAlgorithm::RsaSha512,
        AllowedSignatureAlgorithm::EcdsaSha256,
        AllowedSignatureAlgorithm::EcdsaSha384,
        AllowedSignatureAlgorithm::EcdsaSha512,
    ]
}

impl SamlSources {
    /// Check `configs` and load each identity provider's metadata; `issuer` is this
    /// host's issuer URL, the base of the SP's URLs.
    pub fn new(configs: &[SamlConfig], issuer: &str) -> Result<SamlSources, AuthError> {
        let mut sources: Vec<Arc<Source>> = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let id = &config.id;
            if let Some(problem) = source_id_problem(id) {
                return Err(config_error(index, "id", problem));
            }
            if sources.iter().any(|s| s.id == *id) {
                return Err(config_error(index, "id", format!("{id:?} is used twice")));
            }
            if config.name.trim().is_empty() {
                return Err(config_error(index, "name", "must not be empty"));
            }
            if config.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
                return Err(config_error(
                    index,
                    "clock_skew_seconds",
                    format!("at most {MAX_CLOCK_SKEW_SECONDS}"),
                ));
            }
            if let Some(problem) = role_map_problem(&config.roles) {
                return Err(config_error(index, "roles", problem));
            }
            if config.email_attributes.is_empty() {
                return Err(config_error(index, "email_attributes", "must not be empty"));
            }
            let xml = std::fs::read_to_string(&config.idp_metadata).map_err(|e| {
                config_error(
                    index,
                    "idp_metadata",
                    format!("cannot read {}: {e}", config.idp_metadata.display()),
                )
            })?;
            let metadata: EntityDescriptor = xml.parse().map_err(|e| {
                config_error(
                    index,
                    "idp_metadata",
                    format!(
                        "{} is not SAML metadata: {e}",
                        config.idp_metadata.display()
                    ),
                )
            })?;
            if metadata.entity_id.as_deref().is_none_or(str::is_empty) {
                return Err(config_error(
                    index,
                    "idp_metadata",
                    "the metadata has no entityID",
                ));
            }
            let entity_id = config
                .entity_id
                .clone()
                .unwrap_or_else(|| format!("{issuer}/auth/saml/{id}/metadata"));
            let acs_url = format!("{issuer}/auth/saml/{id}/acs");
            let provider = ServiceProvider {
                entity_id: Some(entity_id.clone()),
                metadata_url: Some(format!("{issuer}/auth/saml/{id}/metadata")),
                acs_url: Some(acs_url.clone()),
                slo_url: None,
                idp_metadata: metadata,
                allow_idp_initiated: false,
                max_clock_skew: chrono_seconds(config.clock_skew_seconds),
                allowed_signature_algorithms: Some(allowed_algorithms()),
                ..ServiceProvider::default()
            };
            match provider.idp_signing_certs() {
                Ok(Some(certs)) if !certs.is_empty() => {}
                Ok(_) => {
                    return Err(config_error(
                        index,
                        "idp_metadata",
                        "the identity provider's metadata has no signing certificate; \
                         unsigned answers are never accepted",
                    ));
                }
                Err(e) => return Err(config_error(index, "idp_metadata", e)),
            }
            let Some(idp_sso_url) = provider.sso_binding_location(HTTP_REDIRECT_BINDING) else {
                return Err(config_error(
                    index,
                    "idp_metadata",
                    "the identity provider has no SingleSignOnService with the HTTP-Redirect \
                     binding",
                ));
            };
            sources.push(Arc::new(Source {
                id: id.clone(),
                name: config.name.clone(),
                entity_id,
                acs_url,
                idp_sso_url,
                provider,
                config: config.clone(),
            }));
        }
        Ok(SamlSources {
            sources,
            ..SamlSources::default()
        })
    }

    fn source(&self, id: &str) -> Result<&Arc<Source>, SamlError> {
        self.sources
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| SamlError::UnknownSource(id.to_string()))
    }

    /// The configured sources: id and display name.
    pub fn list(&self) -> Vec<(String, String)> {
        self.sources
            .iter()
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect()
    }

    /// The service provider's metadata for source `id`.
    pub fn metadata(&self, id: &str) -> Result<String, SamlError> {
        let source = self.source(id)?;
        Ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
             entityID=\"{entity}\">\n\
             <md:SPSSODescriptor AuthnRequestsSigned=\"false\" WantAssertionsSigned=\"true\" \
             protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">\n\
             <md:AssertionConsumerService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" \
             Location=\"{acs}\" index=\"0\" isDefault=\"true\"/>\n\
             </md:SPSSODescriptor>\n</md:EntityDescriptor>\n",
            entity = xml_escape(&source.entity_id),
            acs = xml_escape(&source.acs_url),
        ))
    }

    /// Start a sign-in through source `id`, asked for from `address`, that continues to
    /// `next` afterwards.
    pub fn begin_login(
        &self,
        id: &str,
        next: Option<String>,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<LoginStart, SamlError> {
        let source = self.source(id)?;
        // 192 random bits; an XML id must not start with a digit or '-'.
        let request_id = format!("_{}", secret::random_id());
        let mut request = source
            .provider
            .make_authentication_request(&source.idp_sso_url)
            .map_err(|e| SamlError::Request(e.to_string()))?;
        request.id.clone_from(&request_id);
        let redirect = request
            .redirect("")
            .map_err(|e| SamlError::Request(e.to_string()))?
            .ok_or_else(|| SamlError::Request("no destination".to_string()))?;
        let cookie = Secret::generate(SecretKind::SamlRequest);
        self.pending
            .insert(
                cookie.hash(),
                Pending {
                    source: source.id.clone(),
                    request_id,
                    next,
                },
                address,
                now + PENDING_TTL_MS,
                now,
            )
            .map_err(|_| SamlError::Busy)?;
        Ok(LoginStart {
            cookie,
            redirect: redirect.to_string(),
        })
    }

    /// Take the pending sign-in of `cookie` through `source` (used once).
    fn take_pending(&self, source: &str, cookie: Option<&str>, now: i64) -> Option<Pending> {
        let cookie = Secret::from_text(cookie?);
        if !cookie.is(SecretKind::SamlRequest) {
            return None;
        }
        let taken = self.pending.take(&cookie.hash(), now)?;
        (taken.source == source).then_some(taken)
    }

    /// Verify `saml_response` (the base64 form field) posted to source `id`'s ACS by the
    /// browser holding `cookie`; the identity and the `continue` target.
    pub async fn finish(
        &self,
        id: &str,
        cookie: Option<&str>,
        saml_response: String,
        now: i64,
    ) -> Result<Verified, SamlError> {
        let source = Arc::clone(self.source(id)?);
        let pending = self
            .take_pending(id, cookie, now)
            .ok_or(SamlError::NoPendingRequest)?;
        let verifier = Arc::clone(&source);
        let request_id = pending.request_id.clone();
        // xmlsec's verification is CPU work: off the async workers.
        let assertion = tokio::task::spawn_blocking(move || {
            let encoded: String = saml_response.split_whitespace().collect();
            let xml = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| SamlError::Refused("not base64 of UTF-8 text".to_string()))?;
            check_shape(&xml)?;
            verifier
                .provider
                .parse_xml_response(&xml, Some(&[request_id.as_str()]))
                .map_err(|e| SamlError::Refused(e.to_string()))
        })
        .await
        .map_err(|e| SamlError::Refused(format!("verification task failed: {e}")))??;
        let remember_until = check_assertion(&source, &assertion, now)?;
        let identity = identity(&source, &assertion)?;
        Ok(Verified {
            identity,
            next: pending.next,
            assertion_id: assertion.id,
            remember_until,
        })
    }
}

/// A verified answer, before its assertion id is recorded as consumed.
#[derive(Debug)]
pub struct Verified {
    /// Who signed in.
    pub identity: ExternalIdentity,
    /// Where to continue.
    pub next: Option<String>,
    /// The assertion's id, for the replay cache.
    assertion_id: String,
    /// Until when the replay cache must remember it.
    remember_until: i64,
}

/// Before any signature is checked: no DTD (nothing for an XML parser to expand) and
/// exactly one assertion, anywhere. samael reads only the signed element, so an unsigned
/// assertion beside it would be ignored anyway; a response with two is refused outright
/// since no identity provider sends one and it is the shape of a wrapping attack.
fn check_shape(xml: &str) -> Result<(), SamlError> {
    let refused = |why: &str| SamlError::Refused(why.to_string());
    let mut reader = NsReader::from_str(xml);
    let mut assertions = 0usize;
    loop {
        match reader.read_resolved_event() {
            Ok((namespace, Event::Start(element) | Event::Empty(element))) => {
                let local = element.local_name();
                let is_assertion = matches!(local.as_ref(), b"Assertion" | b"EncryptedAssertion");
                let in_saml = matches!(namespace, ResolveResult::Bound(ns)
                    if ns.as_ref() == SAML_ASSERTION_NS.as_bytes());
                if is_assertion && in_saml {
                    assertions += 1;
                }
            }
            Ok((_, Event::DocType(_))) => return Err(refused("the response has a DTD")),
            Ok((_, Event::Eof)) => break,
            Ok(_) => {}
            Err(_) => return Err(refused("the response is not well-formed XML")),
        }
    }
    if assertions == 1 {
        Ok(())
    } else {
        Err(SamlError::Refused(format!(
            "the response has {assertions} assertions, not one"
        )))
    }
}

fn chrono_seconds(seconds: u32) -> chrono::Duration {
    chrono::Duration::seconds(i64::from(seconds))
}

/// What samael leaves optional: an audience restriction naming this SP in every
/// `AudienceRestriction`, and a validity window, checked against `now` with the skew.
/// Returns until when the assertion id must be remembered.
fn check_assertion(source: &Source, assertion: &Assertion, now: i64) -> Result<i64, SamlError> {
    let skew_ms = i64::from(source.config.clock_skew_seconds) * 1000;
    let conditions = assertion
        .conditions
        .as_ref()
        .ok_or_else(|| SamlError::Refused("the assertion has no Conditions".to_string()))?;
    let restrictions = conditions
        .audience_restrictions
        .as_deref()
        .unwrap_or_default();
    if restrictions.is_empty()
        || !restrictions
            .iter()
            .all(|r| r.audience.contains(&source.entity_id))
    {
        return Err(SamlError::Refused(format!(
            "the assertion's audience is not {}",
            source.entity_id
        )));
    }
    let not_on_or_after = conditions
        .not_on_or_after
        .ok_or_else(|| SamlError::Refused("the assertion has no NotOnOrAfter".to_string()))?
        .timestamp_millis();
    if now >= not_on_or_after + skew_ms {
        return Err(SamlError::Refused("the assertion expired".to_string()));
    }
    if let Some(not_before) = conditions.not_before
        && now < not_before.timestamp_millis() - skew_ms
    {
        return Err(SamlError::Refused(
            "the assertion is not valid yet".to_string(),
        ));
    }
    Ok(not_on_or_after + skew_ms)
}

/// The values of the first attribute named in `names` that has a non-empty one.
fn attribute_values(assertion: &Assertion, names: &[String]) -> Vec<String> {
    let attributes: Vec<_> = assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| s.attributes.iter())
        .collect();
    for name in names {
        let values: Vec<String> = attributes
            .iter()
            .filter(|a| {
                a.name.as_deref() == Some(name.as_str())
                    || a.friendly_name.as_deref() == Some(name.as_str())
            })
            .flat_map(|a| a.values.iter())
            .filter_map(|v| v.value.as_deref())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        if !values.is_empty() {
            return values;
        }
    }
    Vec::new()
}

fn identity(source: &Source, assertion: &Assertion) -> Result<ExternalIdentity, SamlError> {
    let config = &source.config;
    let email = attribute_values(assertion, &config.email_attributes)
        .into_iter()
        .next()
        .or_else(|| {
            assertion
                .subject
                .as_ref()
                .and_then(|s| s.name_id.as_ref())
                .map(|n| n.value.trim().to_string())
        })
        .filter(|e| e.contains('@') && !e.chars().any(char::is_whitespace))
        .ok_or_else(|| SamlError::Refused("the assertion names no email address".to_string()))?;
    let first = |names: &[String]| attribute_values(assertion, names).into_iter().next();
    let roles = (!config.roles.is_empty()).then(|| {
        let values = attribute_values(assertion, &config.role_attributes);
        mapped_roles(values.iter().map(String::as_str), &config.roles)
    });
    Ok(ExternalIdentity {
        source: source.id.clone(),
        email,
        first_name: first(&config.first_name_attributes),
        last_name: first(&config.last_name_attributes),
        roles,
    })
}

impl Auth {
    /// Finish a SAML sign-in: verify the IdP's answer posted to source `id`'s ACS by the
    /// browser holding `cookie`, then sign the person in. Refusals are audited
    /// (`user.sign_in_failed`) and logged with their reason, never with the response.
    /// Returns the session cookie, its record and where to continue.
    pub async fn sign_in_saml(
        &self,
        id: &str,
        cookie: Option<&str>,
        saml_response: String,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<(Secret, SessionRecord, Option<String>), AuthError> {
        let verified = match self.saml().finish(id, cookie, saml_response, now).await {
            Ok(verified) => {
                let fresh = self
                    .store()
                    .consume_saml_assertion(
                        id,
                        &verified.assertion_id,
                        verified.remember_until,
                        now,
                    )
                    .await?;
                if fresh {
                    Ok(verified)
                } else {
                    Err(SamlError::Replayed)
                }
            }
            Err(error) => Err(error),
        };
        match verified {
            Ok(verified) => {
                let (cookie, session) = self
                    .sign_in_external(&verified.identity, address, now)
                    .await?;
                Ok((cookie, session, verified.next))
            }
            Err(error) => {
                tracing::warn!(source = id, "SAML sign-in refused: {error}");
                self.store()
                    .audit(
                        &NewAuditEntry::new(
                            &Actor::host(),
                            "user.sign_in_failed",
                            "identity_source",
                            id,
                        )
                        .details(json!({"source": id, "reason": error.to_string(),
                                        "address": address.map(|a| a.to_string())})),
                    )
                    .await?;
                Err(AuthError::Saml(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(metadata: PathBuf) -> SamlConfig {
        SamlConfig {
            id: "corp".to_string(),
            name: "Corp".to_string(),
            idp_metadata: metadata,
            entity_id: None,
            email_attributes: default_email_attributes(),
            first_name_attributes: default_first_name_attributes(),
            last_name_attributes: default_last_name_attributes(),
            role_attributes: default_role_attributes(),
            roles: BTreeMap::new(),
            clock_skew_seconds: 60,
        }
    }

    const NO_CERT_METADATA: &str = r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example/">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#;

    #[test]
    fn an_identity_provider_without_a_signing_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("warden-saml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("idp.xml");
        std::fs::write(&path, NO_CERT_METADATA).unwrap();
        let error =
            SamlSources::new(&[config(path.clone())], "https://warden.example").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("saml[0].idp_metadata"), "{message}");
        assert!(message.contains("no signing certificate"), "{message}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_documented_example_is_a_valid_configuration() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
        )
        .unwrap();
        let start = doc.find("[[auth.saml]]").unwrap();
        let end = doc[start..].find("```").unwrap() + start;
        #[derive(Deserialize)]
        struct File {
            auth: super::super::AuthConfig,
        }
        let file: File = toml::from_str(&doc[start..end]).unwrap();
        let saml = &file.auth.saml[0];
        assert_eq!(saml.id, "corp");
        assert_eq!(
            saml.roles.get("warden-admins").map(String::as_str),
            Some("admin")
        );
        assert_eq!(saml.email_attributes, default_email_attributes());
        assert_eq!(saml.role_attributes, default_role_attributes());
        assert_eq!(saml.clock_skew_seconds, default_clock_skew());
    }

    #[test]
    fn only_one_assertion_and_no_dtd() {
        let one = r#"<p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol"><a:Assertion xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion"/></p:Response>"#;
        assert!(check_shape(one).is_ok());
        let two = one.replace(
            "/></p:",
            "/><Assertion xmlns=\"urn:oasis:names:tc:SAML:2.0:assertion\"/></p:",
        );
        assert!(check_shape(&two).is_err());
        let none = r#"<p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol"/>"#;
        assert!(check_shape(none).is_err());
        let dtd = format!("<!DOCTYPE r [<!ENTITY x \"y\">]>{one}");
        assert!(check_shape(&dtd).is_err());
    }

    #[test]
    fn bad_keys_are_named() {
        let mut bad = config(PathBuf::from("/nonexistent/idp.xml"));
        bad.id = "local".to_string();
        let message = SamlSources::new(&[bad], "https://w")
            .unwrap_err()
            .to_string();
        assert!(message.contains("saml[0].id"), "{message}");
        let mut bad = config(PathBuf::from("/nonexistent/idp.xml"));
        bad.roles.insert("admins".to_string(), "root".to_string());
        let message = SamlSources::new(&[bad], "https://w")
            .unwrap_err()
            .to_string();
        assert!(message.contains("saml[0].roles"), "{message}");
        let bad = config(PathBuf::from("/nonexistent/idp.xml"));
        let message = SamlSources::new(&[bad], "https://w")
            .unwrap_err()
            .to_string();
        assert!(message.contains("saml[0].idp_metadata"), "{message}");
    }
}
