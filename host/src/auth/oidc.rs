//! OpenID Connect single sign-on: this host as a relying party of the identity sources in
//! `[[auth.oidc]]`.
//!
//! The flow is the authorization code flow with PKCE (S256), a random `state` and `nonce`
//! (192 bits each), and the client secret at the token endpoint. What a sign-in needs to
//! finish — the PKCE verifier, the nonce, where to continue — stays in this host's memory
//! under the `state`, bound to the browser by a cookie (path `/auth`, `Secure`,
//! `HttpOnly`, `SameSite=Lax` since the provider sends the browser back with a top-level
//! GET) and taken out at the first callback that names it, so a callback works once, in
//! the browser that started it, within [`PENDING_TTL_MS`].
//!
//! The ID token is verified by the `openidconnect` crate: signature with a key of the
//! provider's JWKS and an asymmetric algorithm (never `none`, never an HMAC keyed with the
//! client secret), `iss`, `aud` (and `azp`), `exp` and `nonce`. The identity is then the
//! token's email claim, which the provider must say it verified.
//!
//! Discovery, the JWKS and the token endpoint are reached over HTTPS only, by a client that
//! never follows a redirect, gives up after [`REQUEST_TIMEOUT`] and reads at most
//! [`MAX_RESPONSE_BYTES`]. Nothing here logs or returns a token, a code or the secret.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    HttpRequest, HttpResponse, IdToken, IdTokenVerifier, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AuthError;
use super::external::{mapped_roles, role_map_problem, source_id_problem};
use super::pending::PendingSignIns;
use super::secret::{self, Secret, SecretKind};

/// How long a started sign-in may take to come back, ms.
pub const PENDING_TTL_MS: i64 = 10 * 60 * 1000;
/// Time allowed for one request to the provider, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response read from the provider.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// How long discovery and the JWKS are trusted before they are fetched again, ms.
pub const METADATA_TTL_MS: i64 = 15 * 60 * 1000;

/// One `[[auth.oidc]]` entry of `warden.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSourceConfig {
    /// The source's id: the `auth_source` of its users, and part of its URLs.
    pub id: String,
    /// Shown on the sign-in page ("Sign in with NAME").
    pub name: String,
    /// The provider's issuer URL (https); discovery is at
    /// `/.well-known/openid-configuration` under it.
    pub issuer: String,
    /// This host's client id at the provider.
    pub client_id: String,
    /// The environment variable holding the client secret (never the file).
    pub client_secret_env: String,
    /// A PEM file of the certificates to trust for the provider instead of the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Scopes asked for (default `openid email profile`; `openid` is always asked).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim holding the email address (default `email`).
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// DANGER: accept an email the provider does not say it verified (`email_verified`
    /// missing or false). Only for a provider that never lets users choose their email.
    #[serde(default)]
    pub danger_accept_unverified_email: bool,
    /// The claim holding the first name (default `given_name`).
    #[serde(default = "default_first_name_claim")]
    pub first_name_claim: String,
    /// The claim holding the last name (default `family_name`).
    #[serde(default = "default_last_name_claim")]
    pub last_name_claim: String,
    /// The claim holding the person's groups or roles at the provider (a string or an
    /// array of strings); with `roles`, it decides the user's roles at each sign-in.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Provider value → Warden role (`admin`, `support`, `user`, `reviewer`).
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}
fn default_email_claim() -> String {
    "email".to_string()
}
fn default_first_name_claim() -> String {
    "given_name".to_string()
}
fn default_last_name_claim() -> String {
    "family_name".to_string()
}

/// Why an OpenID Connect sign-in failed. The messages hold no token, code or secret, so
/// they may be logged; they are not shown to the person.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// No source has this id.
    #[error("no OpenID Connect source {0:?}")]
    UnknownSource(String),
    /// The callback's `state` is missing, unknown, used already, or expired.
    #[error("the callback's state is missing, unknown, used already or expired")]
    UnknownState,
    /// The callback came to a browser other than the one that started the sign-in.
    #[error("the callback came without the cookie of the browser that started the sign-in")]
    WrongBrowser,
    /// Too many sign-ins are in progress.
    #[error("too many sign-ins in progress")]
    Busy,
    /// The provider answered the authorization request with an error.
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
    /// The provider could not be reached or answered something unusable.
    #[error("the provider: {0}")]
    Provider(String),
    /// The ID token failed verification.
    #[error("the ID token is not valid: {0}")]
    IdToken(String),
    /// The ID token did not name a usable, verified email address.
    #[error("the ID token has no usable email: {0}")]
    Email(String),
    /// No administrator exists yet.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an https URL with a host.
    #[error("only https URLs with a host are fetched, not {0:?}")]
    NotHttps(String),
    /// TCP, TLS or HTTP failed.
    #[error("{0}")]
    Connection(String),
    /// The provider answered with a redirect.
    #[error("{0} answered {1} (a redirect, which is not followed)")]
    Redirect(String, u16),
    /// The response was larger than [`MAX_RESPONSE_BYTES`].
    #[error("the response of {0} is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge(String),
    /// No answer in [`REQUEST_TIMEOUT`].
    #[error("{0} did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
}

/// An HTTPS client for one provider: HTTP/1.1, one connection per request, no redirects,
/// a timeout and a size limit.
#[derive(Debug, Clone)]
pub struct ProviderHttp {
    tls: Arc<rustls::ClientConfig>,
}

impl ProviderHttp {
    /// A client trusting `ca` (PEM), or the system's roots without it.
    pub fn new(ca: Option<&std::path::Path>) -> Result<ProviderHttp, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let certificates = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if certificates.is_empty() {
                    return Err(format!("{}: no certificate in it", path.display()));
                }
                for certificate in certificates {
                    roots
                        .add(certificate)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err("no system root certificates found; set ca".to_string());
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ProviderHttp {
            tls: Arc::new(config),
        })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        // The URL without its query, which is all a message needs.
        let shown = {
            let uri = request.uri();
            format!(
                "{}://{}{}",
                uri.scheme_str().unwrap_or(""),
                uri.authority().map_or("", |a| a.as_str()),
                uri.path()
            )
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request, &shown)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(shown)),
        }
    }

    async fn exchange(&self, request: HttpRequest, shown: &str) -> Result<HttpResponse, HttpError> {
        let uri = request.uri().clone();
        let (Some("https"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(HttpError::NotHttps(shown.to_string()));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(443);
        let failed = |what: &str, e: &dyn std::error::Error| {
            HttpError::Connection(format!("{what} {shown}: {}", chain(e)))
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| failed("name of", &e))?;
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| failed("connecting to", &e))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| failed("TLS with", &e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| failed("HTTP with", &e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a connection to an identity provider ended");
            }
        });
        let (mut parts, body) = request.into_parts();
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| failed("path of", &e))?;
        let host_header = http::HeaderValue::from_str(authority.as_str())
            .map_err(|e| failed("authority of", &e))?;
        parts.headers.insert(http::header::HOST, host_header);
        let response = sender
            .send_request(http::Request::from_parts(
                parts,
                Full::new(Bytes::from(body)),
            ))
            .await
            .map_err(|e| failed("request to", &e))?;
        if response.status().is_redirection() {
            return Err(HttpError::Redirect(
                shown.to_string(),
                response.status().as_u16(),
            ));
        }
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpError::TooLarge(shown.to_string())
                } else {
                    failed("reading the response of", e.as_ref())
                }
            })?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body.to_vec()))
    }
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// The claims of an ID token that are not standard (a roles claim, say).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(transparent)]
struct Claims(serde_json::Map<String, Value>);

impl AdditionalClaims for Claims {}

type VerifiedIdToken =
    IdToken<Claims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// The ID token signature algorithms accepted: asymmetric ones only.
const ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// A configured source, checked.
#[derive(Debug)]
struct Source {
    config: OidcSourceConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    secret: ClientSecret,
    http: ProviderHttp,
    /// Discovery and JWKS, and when they were fetched.
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, i64)>>,
}

/// A sign-in waiting for its callback.
#[derive(Debug)]
struct Pending {
    source: String,
    browser_hash: String,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    next: Option<String>,
}

/// A started sign-in: where to send the browser, and the cookie that binds it.
#[derive(Debug)]
pub struct Started {
    /// The provider's authorization URL.
    pub location: String,
    /// The browser's binding cookie (value of [`BROWSER_COOKIE`]).
    pub browser: Secret,
}

/// The cookie binding a sign-in to the browser that started it.
pub const BROWSER_COOKIE: &str = "warden_sso";

/// What the provider sent back to the callback.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    /// The `state` sent with the request.
    pub state: Option<String>,
    /// The authorization code.
    pub code: Option<String>,
    /// An error code instead of a code.
    pub error: Option<String>,
    /// The issuer that answered (RFC 9207), when the provider says.
    pub iss: Option<String>,
}

/// The OpenID Connect sources of this host and their sign-ins in progress.
#[derive(Debug, Default)]
pub struct OidcSources {
    sources: Vec<Source>,
    pending: PendingSignIns<Pending>,
}

impl OidcSources {
    /// Check `configs` (`[[auth.oidc]]`), reading each client secret with `env`; this
    /// host's public URL is `base` (its callbacks are under it).
    pub fn new(
        configs: &[OidcSourceConfig],
        base: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<OidcSources, AuthError> {
        let mut sources: Vec<Source> = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let bad = |key: &str, message: String| {
                AuthError::Config(format!("oidc[{index}].{key}: {message}"))
            };
            let id = &config.id;
            if let Some(problem) = source_id_problem(id) {
                return Err(bad("id", problem));
            }
            if sources.iter().any(|s| s.config.id == *id) {
                return Err(bad("id", format!("{id:?} is used twice")));
            }
            if config.name.trim().is_empty() {
                return Err(bad("name", "must not be empty".to_string()));
            }
            if !config.issuer.starts_with("https://") {
                return Err(bad(
                    "issuer",
                    format!("{:?} is not an https URL", config.issuer),
                ));
            }
            let issuer = IssuerUrl::new(config.issuer.clone())
                .map_err(|e| bad("issuer", format!("{:?}: {e}", config.issuer)))?;
            if config.client_id.is_empty() {
                return Err(bad("client_id", "must not be empty".to_string()));
            }
            let secret = env(&config.client_secret_env)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    bad(
                        "client_secret_env",
                        format!(
                            "the environment variable {} is not set",
                            config.client_secret_env
                        ),
                    )
                })?;
            if !config.scopes.iter().any(|s| s == "openid") {
                return Err(bad("scopes", "must include openid".to_string()));
            }
            if let Some(scope) = config
                .scopes
                .iter()
                .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                return Err(bad("scopes", format!("{scope:?} is not a scope")));
            }
            for (key, claim) in [
                ("email_claim", &config.email_claim),
                ("first_name_claim", &config.first_name_claim),
                ("last_name_claim", &config.last_name_claim),
            ] {
                if claim.is_empty() {
                    return Err(bad(key, "must not be empty".to_string()));
                }
            }
            match (&config.roles_claim, config.roles.is_empty()) {
                (Some(_), true) => {
                    return Err(bad(
                        "roles",
                        "roles_claim needs a roles mapping".to_string(),
                    ));
                }
                (None, false) => {
                    return Err(bad(
                        "roles_claim",
                        "a roles mapping needs roles_claim".to_string(),
                    ));
                }
                _ => {}
            }
            if let Some(problem) = role_map_problem(&config.roles) {
                return Err(bad("roles", problem));
            }
            let http = ProviderHttp::new(config.ca.as_deref()).map_err(|e| bad("ca", e))?;
            let redirect = RedirectUrl::new(format!("{base}/auth/oidc/{id}/callback"))
                .map_err(|e| AuthError::Config(format!("issuer: {e}")))?;
            sources.push(Source {
                config: config.clone(),
                issuer,
                redirect,
                secret: ClientSecret::new(secret),
                http,
                metadata: tokio::sync::Mutex::new(None),
            });
        }
        Ok(OidcSources {
            sources,
            pending: PendingSignIns::default(),
        })
    }

    /// The sources' ids and names, in the configuration's order.
    pub fn list(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sources
            .iter()
            .map(|s| (s.config.id.as_str(), s.config.name.as_str()))
    }

    /// The name of source `id`.
    pub fn name(&self, id: &str) -> Option<&str> {
        self.source(id).ok().map(|s| s.config.name.as_str())
    }

    fn source(&self, id: &str) -> Result<&Source, OidcError> {
        self.sources
            .iter()
            .find(|s| s.config.id == id)
            .ok_or_else(|| OidcError::UnknownSource(id.chars().take(64).collect()))
    }

    /// The provider's metadata and keys, fetched when missing or older than
    /// [`METADATA_TTL_MS`].
    async fn metadata(&self, source: &Source, now: i64) -> Result<CoreProviderMetadata, OidcError> {
        let mut cached = source.metadata.lock().await;
        if let Some((metadata, fetched_at)) = cached.as_ref()
            && now - fetched_at < METADATA_TTL_MS
        {
            return Ok(metadata.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(source.issuer.clone(), &source.http)
            .await
            .map_err(|e| OidcError::Provider(format!("discovery: {}", chain(&e))))?;
        *cached = Some((metadata.clone(), now));
        Ok(metadata)
    }

    /// Start a sign-in through source `id` in the browser holding `browser` (the
    /// [`BROWSER_COOKIE`], if any), asked for from `address`, to continue at `next`
    /// afterwards.
    pub async fn begin(
        &self,
        id: &str,
        browser: Option<&str>,
        next: Option<String>,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<Started, OidcError> {
        let source = self.source(id)?;
        let metadata = self.metadata(source, now).await?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(source.config.client_id.clone()),
            Some(source.secret.clone()),
        )
        .set_redirect_uri(source.redirect.clone());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                || CsrfToken::new(secret::random_id()),
                || Nonce::new(secret::random_id()),
            )
            .set_pkce_challenge(challenge);
        for scope in source.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        // A browser keeps its cookie across sign-ins, so two tabs can sign in at once.
        let browser = browser
            .map(Secret::from_text)
            .filter(|b| b.is(SecretKind::SignIn))
            .unwrap_or_else(|| Secret::generate(SecretKind::SignIn));
        self.pending
            .insert(
                secret::hash(state.secret()),
                Pending {
                    source: id.to_string(),
                    browser_hash: browser.hash(),
                    nonce,
                    verifier,
                    next,
                },
                address,
                now + PENDING_TTL_MS,
                now,
            )
            .map_err(|_| OidcError::Busy)?;
        Ok(Started {
            location: url.to_string(),
            browser,
        })
    }

    /// Finish a sign-in through source `id` with the provider's `callback` in the browser
    /// holding `browser`: the verified identity, and where to continue.
    pub async fn finish(
        &self,
        id: &str,
        callback: &Callback,
        browser: Option<&str>,
        now: i64,
    ) -> Result<(super::external::ExternalIdentity, Option<String>), OidcError> {
        let source = self.source(id)?;
        let state = callback.state.as_deref().ok_or(OidcError::UnknownState)?;
        // Taken out whatever happens next: a state works once.
        let pending = self
            .pending
            .take(&secret::hash(state), now)
            .ok_or(OidcError::UnknownState)?;
        if pending.source != id {
            return Err(OidcError::UnknownState);
        }
        let genuine =
            browser.is_some_and(|b| secret::equal(&secret::hash(b), &pending.browser_hash));
        if !genuine {
            return Err(OidcError::WrongBrowser);
        }
        // A provider that names itself (RFC 9207) must be the one asked (mix-up defence,
        // besides each source's own redirect URI).
        if callback
            .iss
            .as_ref()
            .is_some_and(|iss| *iss != source.config.issuer)
        {
            return Err(OidcError::Provider(
                "the callback's iss is not the source's issuer".to_string(),
            ));
        }
        if let Some(error) = &callback.error {
            let shown: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(OidcError::Refused(shown));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OidcError::Provider("the callback has neither code nor error".into()))?;
        let metadata = self.metadata(source, now).await?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(source.config.client_id.clone()),
            Some(source.secret.clone()),
        )
        .set_redirect_uri(source.redirect.clone());
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&source.http)
            .await
            .map_err(|e| OidcError::Provider(format!("code exchange: {}", token_error(&e))))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::IdToken("the token response has none".to_string()))?;
        let verifier = restricted(client.id_token_verifier());
        let claims = match verified_claims(&id_token.to_string(), &verifier, &pending.nonce) {
            Ok(claims) => claims,
            Err(error) => {
                // The provider may have rotated its keys: fetch them again next time.
                *source.metadata.lock().await = None;
                return Err(error);
            }
        };
        let identity = identity(&source.config, &claims)?;
        Ok((identity, pending.next))
    }
}

impl super::Auth {
    /// Finish a sign-in through OpenID Connect source `id` (see [`OidcSources::finish`])
    /// and start the browser session of its user: the session's cookie and record, and
    /// where to continue. Every failure is in the audit log, without the callback's values.
    pub async fn sign_in_oidc(
        &self,
        id: &str,
        callback: &Callback,
        browser: Option<&str>,
        address: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<(Secret, crate::store::SessionRecord, Option<String>), OidcError> {
        let result = async {
            if !self.ready().await? {
                return Err(OidcError::Auth(AuthError::SetupRequired));
            }
            let (identity, next) = self.oidc().finish(id, callback, browser, now).await?;
            let (cookie, session) = self.sign_in_external(&identity, address, now).await?;
            Ok((cookie, session, next))
        }
        .await;
        match &result {
            // Audited where it was found, or not an event of the sign-in.
            Ok(_) | Err(OidcError::Auth(AuthError::WrongSource { .. } | AuthError::Store(_))) => {}
            Err(error) => {
                let source: String = id.chars().take(64).collect();
                let entry = crate::store::NewAuditEntry::new(
                    &crate::store::Actor::host(),
                    "user.sign_in_failed",
                    "user",
                    "",
                )
                .details(
                    serde_json::json!({"source": source, "reason": error.to_string(),
                                            "address": address.map(|a| a.to_string())}),
                );
                self.store().audit(&entry).await.map_err(AuthError::from)?;
            }
        }
        result
    }
}

/// `verifier` accepting only [`ALGORITHMS`], and requiring `iss` and `aud` to match.
fn restricted(
    verifier: IdTokenVerifier<'_, CoreJsonWebKey>,
) -> IdTokenVerifier<'_, CoreJsonWebKey> {
    verifier
        .set_allowed_algs(ALGORITHMS)
        .require_issuer_match(true)
        .require_audience_match(true)
}

/// The claims of ID token `jwt` after the crate verified its signature, `iss`, `aud`,
/// `azp`, `exp`, `iat` and `nonce` with `verifier`.
fn verified_claims(
    jwt: &str,
    verifier: &IdTokenVerifier<'_, CoreJsonWebKey>,
    nonce: &Nonce,
) -> Result<serde_json::Map<String, Value>, OidcError> {
    let token =
        VerifiedIdToken::from_str(jwt).map_err(|_| OidcError::IdToken("not a JWT".to_string()))?;
    let claims = token
        .claims(verifier, nonce)
        .map_err(|e| OidcError::IdToken(e.to_string()))?;
    // The standard claims and the others, as the provider sent them, for the mapping.
    match serde_json::to_value(claims) {
        Ok(Value::Object(all)) => Ok(all),
        _ => Err(OidcError::IdToken(
            "its claims are not an object".to_string(),
        )),
    }
}

/// Who `claims` name, by `config`'s mapping.
fn identity(
    config: &OidcSourceConfig,
    claims: &serde_json::Map<String, Value>,
) -> Result<super::external::ExternalIdentity, OidcError> {
    let email = claims
        .get(&config.email_claim)
        .and_then(Value::as_str)
        .map(str::trim)
        .ok_or_else(|| {
            // The claims' names (never their values) help an operator fix the mapping.
            let names: Vec<&str> = claims.keys().map(String::as_str).take(64).collect();
            OidcError::Email(format!(
                "no string claim {:?} (the token has {})",
                config.email_claim,
                names.join(", ")
            ))
        })?;
    let plausible = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plausible {
        return Err(OidcError::Email(format!(
            "claim {:?} is not an email address",
            config.email_claim
        )));
    }
    let verified = claims.get("email_verified").and_then(Value::as_bool) == Some(true);
    if !verified && !config.danger_accept_unverified_email {
        return Err(OidcError::Email(
            "the provider does not say it verified the email (email_verified)".to_string(),
        ));
    }
    let name = |claim: &str| {
        claims.get(claim).and_then(Value::as_str).map(|n| {
            n.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(256)
                .collect()
        })
    };
    let roles = config.roles_claim.as_ref().map(|claim| {
        let values: Vec<&str> = match claims.get(claim) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        mapped_roles(values, &config.roles)
    });
    Ok(super::external::ExternalIdentity {
        source: config.id.clone(),
        email: email.to_lowercase(),
        first_name: name(&config.first_name_claim),
        last_name: name(&config.last_name_claim),
        roles,
    })
}

/// An error and its causes, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A token request's failure without the response body (which could echo a token).
fn token_error<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
    error: &RequestTokenError<RE, T>,
) -> String {
    match error {
        RequestTokenError::ServerResponse(response) => response.to_string(),
        RequestTokenError::Request(error) => chain(error),
        RequestTokenError::Parse(_, _) => "the token response is not understood".to_string(),
        RequestTokenError::Other(message) => message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> OidcSourceConfig {
        toml::from_str(
            r#"
            id = "corp"
            name = "Corp"
            issuer = "https://idp.example"
            client_id = "warden"
            client_secret_env = "CORP_SECRET"
            roles_claim = "groups"
            roles = { "it-admins" = "admin", "helpdesk" = "support" }
            "#,
        )
        .unwrap()
    }

    fn claims(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn oidc_claims_become_an_identity_only_with_a_verified_email() {
        let config = config();
        let identity = identity(
            &config,
            &claims(json!({"email": "Ada@Example.org", "email_verified": true,
                           "given_name": "Ada", "family_name": "Lovelace",
                           "groups": ["helpdesk", "it-admins", "other"]})),
        )
        .unwrap();
        assert_eq!(identity.email, "ada@example.org");
        assert_eq!(identity.source, "corp");
        assert_eq!(identity.first_name.as_deref(), Some("Ada"));
        assert_eq!(identity.roles.unwrap(), ["admin", "support"]);
        // Unmapped groups leave the plain user role; one string is one group.
        let identity = identity_of(
            &config,
            json!({"email": "a@b", "email_verified": true,
                                                   "groups": "other"}),
        );
        assert_eq!(identity.unwrap().roles.unwrap(), ["user"]);
        for bad in [
            json!({"email": "a@b"}),
            json!({"email": "a@b", "email_verified": false}),
            json!({"email": "a@b", "email_verified": "true"}),
            json!({"email_verified": true}),
            json!({"email": "not an email", "email_verified": true}),
            json!({"email": ["a@b"], "email_verified": true}),
        ] {
            assert!(
                matches!(identity_of(&config, bad.clone()), Err(OidcError::Email(_))),
                "{bad}"
            );
        }
        let mut lenient = config.clone();
        lenient.danger_accept_unverified_email = true;
        lenient.roles_claim = None;
        let identity = identity_of(&lenient, json!({"email": "a@b"})).unwrap();
        assert_eq!(identity.roles, None);
    }

    fn identity_of(
        config: &OidcSourceConfig,
        value: Value,
    ) -> Result<super::super::external::ExternalIdentity, OidcError> {
        identity(config, &claims(value))
    }

    #[test]
    fn oidc_configuration_is_checked_with_the_key_named() {
        let env = |name: &str| (name == "CORP_SECRET").then(|| "s3cret".to_string());
        let base = "https://warden.example";
        let sources = OidcSources::new(&[config()], base, env).unwrap();
        assert_eq!(sources.list().collect::<Vec<_>>(), [("corp", "Corp")]);
        assert_eq!(
            sources.sources[0].redirect.as_str(),
            "https://warden.example/auth/oidc/corp/callback"
        );
        type Change = fn(&mut OidcSourceConfig);
        let cases: [(&str, Change); 8] = [
            ("oidc[0].id", |c| c.id = "local".into()),
            ("oidc[0].id", |c| c.id = "Corp A".into()),
            ("oidc[0].issuer", |c| c.issuer = "http://idp.example".into()),
            ("oidc[0].client_secret_env", |c| {
                c.client_secret_env = "UNSET".into()
            }),
            ("oidc[0].scopes", |c| c.scopes = vec!["email".into()]),
            ("oidc[0].roles", |c| {
                c.roles.insert("x".into(), "superuser".into());
            }),
            ("oidc[0].roles_claim", |c| c.roles_claim = None),
            ("oidc[0].ca", |c| c.ca = Some("/nonexistent.pem".into())),
        ];
        for (key, change) in cases {
            let mut config = config();
            change(&mut config);
            let error = OidcSources::new(&[config], base, env)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("[auth] {key}: ")),
                "{key}: {error}"
            );
        }
        let error = OidcSources::new(&[config(), config()], base, env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("oidc[1].id"), "{error}");
    }

    #[test]
    fn oidc_id_tokens_are_checked_for_signature_issuer_audience_expiry_and_nonce() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use openidconnect::core::{CoreEdDsaPrivateSigningKey, CoreHmacKey};
        use openidconnect::{
            Audience, EndUserEmail, IdTokenClaims, JsonWebKeyId, JsonWebKeySet, PrivateSigningKey,
            StandardClaims, SubjectIdentifier,
        };
        let signing_key = || {
            let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .unwrap()
                .serialize_pem();
            CoreEdDsaPrivateSigningKey::from_ed25519_pem(&pem, Some(JsonWebKeyId::new("k1".into())))
                .unwrap()
        };
        let (key, other_key) = (signing_key(), signing_key());
        let jwks = JsonWebKeySet::new(vec![key.as_verification_key()]);
        let issuer = "https://idp.example";
        let verifier = restricted(IdTokenVerifier::new_confidential_client(
            ClientId::new("warden".into()),
            ClientSecret::new("s3cret".into()),
            IssuerUrl::new(issuer.into()).unwrap(),
            jwks,
        ));
        let nonce = Nonce::new("nonce-1".into());
        let now = chrono::Utc::now();
        let claims = |iss: &str, aud: &str, lifetime_s: i64, nonce: &str| {
            IdTokenClaims::new(
                IssuerUrl::new(iss.into()).unwrap(),
                vec![Audience::new(aud.into())],
                now + chrono::Duration::seconds(lifetime_s),
                now - chrono::Duration::seconds(600),
                StandardClaims::new(SubjectIdentifier::new("ada".into()))
                    .set_email(Some(EndUserEmail::new("ada@example.org".into()))),
                Claims::default(),
            )
            .set_nonce(Some(Nonce::new(nonce.into())))
        };
        let signed = |claims, key: &CoreEdDsaPrivateSigningKey| {
            VerifiedIdToken::new(claims, key, CoreJwsSigningAlgorithm::EdDsa, None, None)
                .unwrap()
                .to_string()
        };
        let good = signed(claims(issuer, "warden", 300, "nonce-1"), &key);
        let verified = verified_claims(&good, &verifier, &nonce).unwrap();
        assert_eq!(verified["email"], "ada@example.org");
        // The payload of the good token with no signature, or an HMAC keyed with the
        // client secret (which the provider and this host both know).
        let payload = good.split('.').nth(1).unwrap();
        let header = |alg: &str| URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"{alg}\"}}"));
        let unsigned = format!("{}.{payload}.", header("none"));
        let hmac_input = format!("{}.{payload}", header("HS256"));
        let mac = CoreHmacKey::new("s3cret".as_bytes())
            .sign(&CoreJwsSigningAlgorithm::HmacSha256, hmac_input.as_bytes())
            .unwrap();
        let hmac = format!("{hmac_input}.{}", URL_SAFE_NO_PAD.encode(mac));
        for (what, token) in [
            (
                "another client",
                signed(claims(issuer, "other-app", 300, "nonce-1"), &key),
            ),
            (
                "another issuer",
                signed(
                    claims("https://evil.example", "warden", 300, "nonce-1"),
                    &key,
                ),
            ),
            (
                "expired",
                signed(claims(issuer, "warden", -300, "nonce-1"), &key),
            ),
            (
                "another nonce",
                signed(claims(issuer, "warden", 300, "nonce-2"), &key),
            ),
            (
                "another key",
                signed(claims(issuer, "warden", 300, "nonce-1"), &other_key),
            ),
            ("alg none", unsigned),
            ("HS256", hmac),
            ("garbage", "not.a.jwt".to_string()),
        ] {
            assert!(
                matches!(
                    verified_claims(&token, &verifier, &nonce),
                    Err(OidcError::IdToken(_))
                ),
                "{what} was accepted"
            );
        }
    }

    /// A one-shot HTTPS server on 127.0.0.1 answering every request with `answer`; its
    /// address, its certificate's PEM file, and the count of requests it read.
    async fn provider_answering(
        answer: &'static [u8],
    ) -> (
        String,
        tempfile_path::Path,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = tempfile_path::Path::new(certificate.pem());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buffer = vec![0u8; 4096];
                let _ = tls.read(&mut buffer).await;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tls.write_all(answer).await;
                let _ = tls.shutdown().await;
            }
        });
        (address, pem, requests)
    }

    /// A temporary file removed on drop.
    mod tempfile_path {
        pub struct Path(std::path::PathBuf);
        impl Path {
            pub fn new(text: String) -> Path {
                let path =
                    std::env::temp_dir().join(format!("warden-oidc-ca-{}.pem", fastrand::u64(..)));
                std::fs::write(&path, text).unwrap();
                Path(path)
            }
            pub fn get(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Path {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn get(url: &str) -> HttpRequest {
        http::Request::get(url).body(Vec::new()).unwrap()
    }

    #[tokio::test]
    async fn oidc_http_client_follows_no_redirect_and_reads_a_bounded_answer() {
        use std::sync::atomic::Ordering;
        let (address, ca, requests) = provider_answering(
            b"HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let client = ProviderHttp::new(Some(ca.get())).unwrap();
        let error = client
            .call(get(&format!(
                "https://{address}/.well-known/openid-configuration?x=1"
            )))
            .await
            .unwrap_err();
        assert!(matches!(error, HttpError::Redirect(_, 302)), "{error}");
        assert!(!error.to_string().contains("x=1"), "{error}");
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "the redirect was followed"
        );

        let mut big = b"HTTP/1.1 200 OK\r\ncontent-length: 2000000\r\n\r\n".to_vec();
        big.resize(big.len() + 2_000_000, b' ');
        let (address, ca, _) = provider_answering(big.leak()).await;
        let client = ProviderHttp::new(Some(ca.get())).unwrap();
        let error = client
            .call(get(&format!("https://{address}/jwks")))
            .await
            .unwrap_err();
        assert!(matches!(error, HttpError::TooLarge(_)), "{error}");

        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let (address, ca, _) = provider_answering(OK).await;
        let client = ProviderHttp::new(Some(ca.get())).unwrap();
        let response = client
            .call(get(&format!("https://{address}/jwks")))
            .await
            .unwrap();
        assert_eq!(response.body(), b"{}");
        // Plain HTTP is never fetched; a provider certificate not trusted fails.
        let error = client
            .call(get(&format!("http://{address}/")))
            .await
            .unwrap_err();
        assert!(matches!(error, HttpError::NotHttps(_)), "{error}");
        let (address, _, _) = provider_answering(OK).await;
        let error = client
            .call(get(&format!("https://{address}/")))
            .await
            .unwrap_err();
        assert!(matches!(error, HttpError::Connection(_)), "{error}");
    }

    /// The ```toml block of `text` that follows `heading`.
    fn toml_after(text: &str, heading: &str) -> String {
        let rest = &text[text.find(heading).unwrap()..];
        let start = rest.find("```toml").unwrap() + "```toml".len();
        let block = &rest[start..];
        let block = &block[..block.find("```").unwrap()];
        // Indented inside a list item in the README.
        block
            .lines()
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn oidc_examples_of_the_readme_and_the_configuration_page_are_valid() {
        let env = |_: &str| Some("s3cret".to_string());
        let readme = include_str!("../../../README.md");
        let config: crate::serve::ServeConfig =
            toml::from_str(&toml_after(readme, "#### OpenID Connect")).unwrap();
        let sources =
            OidcSources::new(&config.auth.oidc, "https://warden.example:8443", env).unwrap();
        assert_eq!(
            sources.sources[0].redirect.as_str(),
            "https://warden.example:8443/auth/oidc/corp/callback"
        );
        let page = include_str!("../../../docs/configuration.md");
        let config: crate::serve::ServeConfig =
            toml::from_str(&toml_after(page, "# Configuration")).unwrap();
        let mut oidc = config.auth.oidc.clone();
        // The page's CA file does not exist here.
        oidc[0].ca = None;
        OidcSources::new(&oidc, "https://warden.example:8443", env).unwrap();
    }

    #[tokio::test]
    async fn oidc_callbacks_need_a_known_state_once_in_the_same_browser() {
        let env = |_: &str| Some("s3cret".to_string());
        let sources = OidcSources::new(&[config()], "https://w.example", env).unwrap();
        // A pending sign-in as `begin` leaves it (without the network).
        let browser = Secret::generate(SecretKind::SignIn);
        let add = |state: &str, expires_at: i64| {
            sources
                .pending
                .insert(
                    secret::hash(state),
                    Pending {
                        source: "corp".into(),
                        browser_hash: browser.hash(),
                        nonce: Nonce::new("n".into()),
                        verifier: PkceCodeVerifier::new("v".repeat(43)),
                        next: None,
                    },
                    None,
                    expires_at,
                    0,
                )
                .unwrap();
        };
        async fn refused(sources: &OidcSources, state: &str, cookie: Option<&str>) -> OidcError {
            let callback = Callback {
                state: Some(state.to_string()),
                error: Some("access_denied".into()),
                code: None,
                iss: None,
            };
            sources
                .finish("corp", &callback, cookie, 1000)
                .await
                .unwrap_err()
        }
        let cookie = Some(browser.expose());
        add("s1", 2000);
        assert!(matches!(
            refused(&sources, "s1", None).await,
            OidcError::WrongBrowser
        ));
        // Used up by that attempt, even with the right cookie now.
        assert!(matches!(
            refused(&sources, "s1", cookie).await,
            OidcError::UnknownState
        ));
        add("s2", 2000);
        assert!(matches!(
            refused(&sources, "s2", cookie).await,
            OidcError::Refused(_)
        ));
        assert!(matches!(
            refused(&sources, "s2", cookie).await,
            OidcError::UnknownState
        ));
        add("s3", 1000);
        assert!(matches!(
            refused(&sources, "s3", cookie).await,
            OidcError::UnknownState
        ));
        assert!(matches!(
            refused(&sources, "other", cookie).await,
            OidcError::UnknownState
        ));
    }
}
