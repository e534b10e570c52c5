//! Sign-in and credentials: the host's own OAuth2 authorization server (code + PKCE,
//! rotating refresh tokens, client credentials), API keys, local accounts with scrypt,
//! browser sessions of the sign-in pages, the one-time setup token of a new installation,
//! and single sign-on through external identity providers.
//!
//! Every credential the host hands out is a 256-bit random value ([`secret`]) stored only
//! as a hash; checking one is a hash, a cache lookup ([`cache`]) and, at most every few
//! seconds, one query. Everything that depends on time takes `now` (Unix ms) so that tests
//! control it. What a credential lets its holder do — roles, scopes — is decided by the
//! API from the [`Caller`] this module returns.

pub mod cache;
pub mod external;
pub mod limiter;
mod oauth;
pub mod oidc;
pub mod password;
pub mod pending;
pub mod saml;
pub mod secret;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

pub use oauth::{AuthorizeOutcome, AuthorizeRequest, OAuthError, TokenRequest, TokenResponse};

use self::cache::CredentialCache;
use self::limiter::LoginLimiter;
use self::password::{PasswordError, PasswordHasher, ScryptCost, Verified};
use self::secret::{Secret, SecretKind};
use crate::store::{
    Actor, ApiKeyRecord, NewApiKey, NewAuditEntry, NewOAuthClient, NewUser, OAuthClient,
    SessionRecord, Store, StoreError, TokenKind, User,
};

/// The most minutes an access token may live.
pub const MAX_ACCESS_TOKEN_MINUTES: u32 = 60;
/// How long an authorization code lives, ms (at most 60 s, RFC 6749 §4.1.2 advises 10 min).
pub const CODE_TTL_MS: i64 = 60_000;
/// The identity source of local accounts.
pub const LOCAL_SOURCE: &str = "local";

/// `[auth]` of `warden.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// This authorization server's issuer URL, sent as `iss` in authorization responses
    /// (default `https://` and the listen address).
    pub issuer: Option<String>,
    /// Minutes an access token lives (default 15, at most 60).
    pub access_token_minutes: u32,
    /// Hours a refresh token's grant may go unused before it must sign in again (default 168).
    pub refresh_idle_hours: u32,
    /// Days a grant lives however often it is refreshed (default 30).
    pub refresh_absolute_days: u32,
    /// Hours a sign-in page session lasts (default 12).
    pub session_hours: u32,
    /// scrypt's cost for local passwords (default N = 2^16, r = 8, p = 1).
    pub scrypt: ScryptCost,
    /// Password hashes computed at once (default: one per core).
    pub hashing_concurrency: Option<usize>,
    /// SAML2 identity sources (`[[auth.saml]]`).
    pub saml: Vec<saml::SamlConfig>,
    /// OpenID Connect identity sources (`[[auth.oidc]]`).
    pub oidc: Vec<oidc::OidcSourceConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: None,
            access_token_minutes: 15,
            refresh_idle_hours: 168,
            refresh_absolute_days: 30,
            session_hours: 12,
            scrypt: ScryptCost::default(),
            hashing_concurrency: None,
            saml: Vec::new(),
            oidc: Vec::new(),
        }
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access token of grant `grant_id`.
    Token {
        /// The grant.
        grant_id: String,
        /// The token's hash (to check it again).
        hash: String,
    },
    /// An API key.
    ApiKey {
        /// The key's id.
        key_id: String,
        /// The key's hash.
        hash: String,
    },
    /// The development switch `--danger-no-auth`.
    Development,
}

/// A checked caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: String,
    /// Their roles now.
    pub roles: Vec<String>,
    /// What the credential allows (`public`, `read`).
    pub scopes: Vec<String>,
    /// The credential.
    pub credential: Credential,
    /// When the credential stops working (Unix ms), if it does.
    pub expires_at: Option<i64>,
}

impl Caller {
    /// The development caller of `--danger-no-auth`: an administrator.
    pub fn development() -> Caller {
        Caller {
            user_id: "danger-no-auth".to_string(),
            roles: vec!["admin".to_string()],
            scopes: vec!["public".to_string()],
            credential: Credential::Development,
            expires_at: None,
        }
    }
}

/// Why a credential or a sign-in was refused. The messages are safe to show and to log:
/// none holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No such credential, or one that was revoked or expired.
    #[error("the credential is not valid (unknown, expired or revoked)")]
    InvalidCredential,
    /// The credential's user is deactivated.
    #[error("the user is deactivated")]
    Deactivated,
    /// Wrong login name or password.
    #[error("wrong login name or password")]
    BadPassword,
    /// Too many failed sign-ins: try again after `retry_after_ms`.
    #[error("too many failed sign-ins; try again in {} s", (retry_after_ms + 999) / 1000)]
    RateLimited {
        /// How long to wait.
        retry_after_ms: i64,
    },
    /// No administrator exists yet: only the setup token creates one.
    #[error(
        "this installation has no administrator yet; create one with the setup token or `warden user create --admin`"
    )]
    SetupRequired,
    /// The setup token was wrong or is used up.
    #[error("the setup token is not valid")]
    BadSetupToken,
    /// An administrator exists already.
    #[error("an administrator exists already")]
    SetupDone,
    /// The configuration is unusable.
    #[error("[auth] {0}")]
    Config(String),
    /// An identity provider vouched for someone whose account belongs to another
    /// identity source (or is a local account).
    #[error("this account does not sign in through {identity_source}")]
    WrongSource {
        /// The source that tried.
        identity_source: String,
    },
    /// A password that may not be set, or hashing failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A SAML2 sign-in was refused.
    #[error(transparent)]
    Saml(#[from] saml::SamlError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sign-in service: one per host, cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    issuer: String,
    access_ttl_ms: i64,
    refresh_idle_ms: i64,
    refresh_absolute_ms: i64,
    session_ttl_ms: i64,
    passwords: PasswordHasher,
    limiter: LoginLimiter,
    cache: CredentialCache,
    /// The hash of the one-time setup token while no administrator exists.
    setup: Mutex<Option<String>>,
    /// SAML2 identity sources, their pending sign-ins and consumed assertions.
    saml: saml::SamlSources,
    oidc: oidc::OidcSources,
}

impl Auth {
    /// The service over `store`; `default_issuer` when the configuration names none.
    pub fn new(store: Store, config: &AuthConfig, default_issuer: &str) -> Result<Auth, AuthError> {
        if !(1..=MAX_ACCESS_TOKEN_MINUTES).contains(&config.access_token_minutes) {
            return Err(AuthError::Config(format!(
                "access_token_minutes must be 1..={MAX_ACCESS_TOKEN_MINUTES}, not {}",
                config.access_token_minutes
            )));
        }
        if config.refresh_idle_hours == 0
            || config.refresh_absolute_days == 0
            || config.session_hours == 0
        {
            return Err(AuthError::Config(
                "refresh_idle_hours, refresh_absolute_days and session_hours must be positive"
                    .to_string(),
            ));
        }
        let issuer = config
            .issuer
            .clone()
            .unwrap_or_else(|| default_issuer.to_string());
        if !issuer.starts_with("https://") || issuer.ends_with('/') {
            return Err(AuthError::Config(format!(
                "issuer must be an https URL without a trailing slash, not {issuer:?}"
            )));
        }
        let concurrency = config.hashing_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        });
        let hour = 60 * 60 * 1000;
        let saml = saml::SamlSources::new(&config.saml, &issuer)?;
        let oidc = oidc::OidcSources::new(&config.oidc, &issuer, |name| std::env::var(name).ok())?;
        Ok(Auth {
            inner: Arc::new(Inner {
                store,
                issuer,
                access_ttl_ms: i64::from(config.access_token_minutes) * 60 * 1000,
                refresh_idle_ms: i64::from(config.refresh_idle_hours) * hour,
                refresh_absolute_ms: i64::from(config.refresh_absolute_days) * 24 * hour,
                session_ttl_ms: i64::from(config.session_hours) * hour,
                passwords: PasswordHasher::new(config.scrypt, concurrency)?,
                limiter: LoginLimiter::default(),
                cache: CredentialCache::default(),
                setup: Mutex::new(None),
                saml,
                oidc,
            }),
        })
    }

    /// The store it keeps credentials in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The SAML2 identity sources.
    pub fn saml(&self) -> &saml::SamlSources {
        &self.inner.saml
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Now, by the store's clock.
    pub fn now(&self) -> i64 {
        self.inner.store.now()
    }

    /// The OpenID Connect identity sources.
    pub fn oidc(&self) -> &oidc::OidcSources {
        &self.inner.oidc
    }

    /// The password hasher (its cost and concurrency).
    pub fn passwords(&self) -> &PasswordHasher {
        &self.inner.passwords
    }

    /// Check a bearer access token.
    pub async fn check_bearer(&self, token: &str, now: i64) -> Result<Caller, AuthError> {
        let secret = Secret::from_text(token);
        if !secret.is(SecretKind::AccessToken) {
            return Err(AuthError::InvalidCredential);
        }
        self.check_token_hash(&secret.hash(), now).await
    }

    async fn check_token_hash(&self, hash: &str, now: i64) -> Result<Caller, AuthError> {
        if let Some(caller) = self.inner.cache.get(hash, now) {
            return Ok(caller);
        }
        let record = self
            .inner
            .store
            .token(hash)
            .await?
            .ok_or(AuthError::InvalidCredential)?;
        if record.kind != TokenKind::Access
            || record.expires_at <= now
            || record.grant.revoked_at.is_some()
        {
            return Err(AuthError::InvalidCredential);
        }
        if !record.user.active {
            return Err(AuthError::Deactivated);
        }
        let caller = Caller {
            user_id: record.user.id,
            roles: record.user.roles,
            scopes: record.grant.scopes,
            credential: Credential::Token {
                grant_id: record.grant.id,
                hash: hash.to_string(),
            },
            expires_at: Some(record.expires_at),
        };
        self.inner.cache.put(hash.to_string(), caller.clone(), now);
        Ok(caller)
    }

    /// Check an API key (`X-API-Key`).
    pub async fn check_api_key(&self, key: &str, now: i64) -> Result<Caller, AuthError> {
        let secret = Secret::from_text(key);
        if !secret.is(SecretKind::ApiKey) {
            return Err(AuthError::InvalidCredential);
        }
        self.check_key_hash(&secret.hash(), now).await
    }

    async fn check_key_hash(&self, hash: &str, now: i64) -> Result<Caller, AuthError> {
        if let Some(caller) = self.inner.cache.get(hash, now) {
            return Ok(caller);
        }
        let (key, user) = self
            .inner
            .store
            .api_key(hash)
            .await?
            .ok_or(AuthError::InvalidCredential)?;
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::InvalidCredential);
        }
        if !user.active {
            return Err(AuthError::Deactivated);
        }
        let caller = Caller {
            user_id: user.id,
            roles: user.roles,
            scopes: key.scopes,
            credential: Credential::ApiKey {
                key_id: key.id,
                hash: hash.to_string(),
            },
            expires_at: key.expires_at,
        };
        self.inner.cache.put(hash.to_string(), caller.clone(), now);
        Ok(caller)
    }

    /// Check `caller`'s credential again (a long-lived WebSocket does, on every request):
    /// the caller as it is now, or why not.
    pub async fn recheck(&self, caller: &Caller, now: i64) -> Result<Caller, AuthError> {
        match &caller.credential {
            Credential::Token { hash, .. } => self.check_token_hash(hash, now).await,
            Credential::ApiKey { hash, .. } => self.check_key_hash(hash, now).await,
            Credential::Development => Ok(caller.clone()),
        }
    }

    /// Forget cached credentials of `user_id` (after a role change or a deactivation).
    pub fn forget_user(&self, user_id: &str) {
        self.inner.cache.forget(|caller| caller.user_id == user_id);
    }

    fn forget_grants(&self, grants: &[String]) {
        self.inner.cache.forget(|caller| {
            matches!(&caller.credential, Credential::Token { grant_id, .. } if grants.contains(grant_id))
        });
    }

    /// Whether sign-in is open: an administrator exists. Until then, the setup token is
    /// the only way in.
    pub async fn ready(&self) -> Result<bool, AuthError> {
        Ok(self.inner.store.admin_exists().await?)
    }

    /// When no administrator exists, make a new one-time setup token (replacing any
    /// earlier one) for the operator: the host prints it at start.
    pub async fn issue_setup_token(&self) -> Result<Option<Secret>, AuthError> {
        if self.ready().await? {
            *self.inner.setup.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return Ok(None);
        }
        let token = Secret::generate(SecretKind::Setup);
        *self.inner.setup.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.hash());
        Ok(Some(token))
    }

    /// Create the first administrator with the setup token, which is then used up.
    pub async fn complete_setup(
        &self,
        token: &str,
        new: &NewUser,
        password: Zeroizing<String>,
    ) -> Result<User, AuthError> {
        let presented = secret::hash(token);
        let matches = self
            .inner
            .setup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|expected| secret::equal(expected, &presented));
        if !matches {
            return Err(AuthError::BadSetupToken);
        }
        if self.ready().await? {
            return Err(AuthError::SetupDone);
        }
        let mut new = new.clone();
        new.auth_source = LOCAL_SOURCE.to_string();
        if !new.roles.iter().any(|r| r == "admin") {
            new.roles.push("admin".to_string());
        }
        let user = self
            .create_local_user(&Actor("setup-token".to_string()), &new, password)
            .await?;
        // Used up whatever happens next.
        *self.inner.setup.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(user)
    }

    /// Create a local account with a password.
    pub async fn create_local_user(
        &self,
        actor: &Actor,
        new: &NewUser,
        password: Zeroizing<String>,
    ) -> Result<User, AuthError> {
        let names = [new.email.as_str(), new.username.as_deref().unwrap_or("")];
        PasswordHasher::check_policy(&password, &names)?;
        let phc = self.inner.passwords.hash(password).await?;
        let mut new = new.clone();
        new.auth_source = LOCAL_SOURCE.to_string();
        let user = self.inner.store.create_user(actor, &new).await?;
        self.inner.store.set_password(actor, &user.id, &phc).await?;
        Ok(user)
    }

    /// Set a local account's password.
    pub async fn set_password(
        &self,
        actor: &Actor,
        user: &User,
        password: Zeroizing<String>,
    ) -> Result<(), AuthError> {
        if user.auth_source != LOCAL_SOURCE {
            return Err(AuthError::Config(format!(
                "{} signs in through {}, which owns their password",
                user.email, user.auth_source
            )));
        }
        PasswordHasher::check_policy(&password, &[&user.email, &user.username])?;
        let phc = self.inner.passwords.hash(password).await?;
        self.inner.store.set_password(actor, &user.id, &phc).await?;
        Ok(())
    }

    /// Check a local account's password (for changing it): the user, or why not.
    pub async fn verify_password(
        &self,
        user: &User,
        password: Zeroizing<String>,
    ) -> Result<(), AuthError> {
        let stored = self.inner.store.password_hash(&user.id).await?;
        match self.inner.passwords.verify(password, stored).await? {
            Verified::Match { .. } => Ok(()),
            Verified::Mismatch => Err(AuthError::BadPassword),
        }
    }

    /// Sign in with a local account's login name (email or username) and password from
    /// `address`; a browser session (its cookie secret and record) on success.
    pub async fn sign_in_password(
        &self,
        login: &str,
        password: Zeroizing<String>,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<(Secret, SessionRecord), AuthError> {
        if !self.ready().await? {
            return Err(AuthError::SetupRequired);
        }
        let limiter = &self.inner.limiter;
        if let Err(retry_after_ms) = limiter.check(login, address, now) {
            return Err(AuthError::RateLimited { retry_after_ms });
        }
        let user = self.inner.store.user_by_login(login).await?;
        let usable = user
            .as_ref()
            .filter(|user| user.active && user.auth_source == LOCAL_SOURCE);
        let stored = match usable {
            Some(user) => self.inner.store.password_hash(&user.id).await?,
            None => None,
        };
        let verified = self.inner.passwords.verify(password, stored).await?;
        let (Verified::Match { rehash }, Some(user)) = (verified, usable) else {
            limiter.failed(login, address, now);
            let shown: String = login.chars().take(256).collect();
            let target = user.as_ref().map_or("", |u| u.id.as_str());
            self.inner
                .store
                .audit(
                    &NewAuditEntry::new(&Actor::host(), "user.sign_in_failed", "user", target)
                        .details(json!({"login": shown, "source": LOCAL_SOURCE,
                                        "address": address.map(|a| a.to_string())})),
                )
                .await?;
            return Err(AuthError::BadPassword);
        };
        limiter.succeeded(login);
        if let Some(phc) = rehash {
            self.inner
                .store
                .set_password(&Actor::host(), &user.id, &phc)
                .await?;
        }
        self.start_session(user, LOCAL_SOURCE, address, now).await
    }

    /// Start a browser session for `user`, who signed in through `source`.
    pub async fn start_session(
        &self,
        user: &User,
        source: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<(Secret, SessionRecord), AuthError> {
        if !user.active {
            return Err(AuthError::Deactivated);
        }
        let cookie = Secret::generate(SecretKind::Session);
        let record = self
            .inner
            .store
            .create_session(
                &user.id,
                source,
                &cookie.hash(),
                now + self.inner.session_ttl_ms,
                json!({"source": source, "address": address.map(|a| a.to_string())}),
            )
            .await?;
        Ok((cookie, record))
    }

    /// The live session of a browser's cookie, with its (active) user.
    pub async fn session(
        &self,
        cookie: &str,
        now: i64,
    ) -> Result<Option<(SessionRecord, User)>, AuthError> {
        let secret = Secret::from_text(cookie);
        if !secret.is(SecretKind::Session) {
            return Ok(None);
        }
        let Some(session) = self.inner.store.session(&secret.hash(), now).await? else {
            return Ok(None);
        };
        let user = self.inner.store.user(&session.user_id).await?;
        Ok(user.active.then_some((session, user)))
    }

    /// Sign out: end the session and revoke every grant issued through it, at once.
    pub async fn sign_out(&self, session: &SessionRecord) -> Result<(), AuthError> {
        let grants = self
            .inner
            .store
            .end_session(&Actor(session.user_id.clone()), &session.id)
            .await?;
        self.forget_grants(&grants);
        Ok(())
    }

    /// Create an API key; the key itself is returned once and never stored.
    pub async fn create_api_key(
        &self,
        actor: &Actor,
        new: &NewApiKey,
    ) -> Result<(ApiKeyRecord, Secret), AuthError> {
        let key = Secret::generate(SecretKind::ApiKey);
        let record = self
            .inner
            .store
            .create_api_key(actor, new, &key.hash())
            .await?;
        Ok((record, key))
    }

    /// Revoke an API key, at once.
    pub async fn revoke_api_key(&self, actor: &Actor, id: &str) -> Result<ApiKeyRecord, AuthError> {
        let record = self.inner.store.revoke_api_key(actor, id).await?;
        self.inner.cache.forget(
            |caller| matches!(&caller.credential, Credential::ApiKey { key_id, .. } if key_id == id),
        );
        Ok(record)
    }

    /// Register an OAuth application; a confidential one's secret is returned once.
    pub async fn create_client(
        &self,
        actor: &Actor,
        new: &NewOAuthClient,
    ) -> Result<(OAuthClient, Option<Secret>), AuthError> {
        let secret = new
            .confidential
            .then(|| Secret::generate(SecretKind::ClientSecret));
        let client = self
            .inner
            .store
            .create_oauth_client(actor, new, secret.as_ref().map(Secret::hash).as_deref())
            .await?;
        Ok((client, secret))
    }

    /// A new secret for a confidential application; its grants are revoked.
    pub async fn replace_client_secret(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<Secret, AuthError> {
        let secret = Secret::generate(SecretKind::ClientSecret);
        self.inner
            .store
            .set_oauth_client_secret(actor, id, &secret.hash())
            .await?;
        self.inner.cache.forget(|_| true);
        Ok(secret)
    }

    /// Delete an OAuth application and everything it was granted.
    pub async fn delete_client(&self, actor: &Actor, id: &str) -> Result<(), AuthError> {
        self.inner.store.delete_oauth_client(actor, id).await?;
        self.inner.cache.forget(|_| true);
        Ok(())
    }

    /// Delete expired codes, tokens and sessions.
    pub async fn prune(&self, now: i64) -> Result<u64, AuthError> {
        Ok(self.inner.store.prune_sign_in(now).await?)
    }
}
