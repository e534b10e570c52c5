//! The authorization server: `authorize` (code + PKCE S256 for every client), `token`
//! (authorization code, refresh token, client credentials) and `revoke`.
//!
//! - Before a client's redirect URI is known to be registered (exactly, character for
//!   character), errors are shown to the person, never redirected: an attacker's URI gets
//!   nothing. After, they go back to the client with `state` and `iss` (RFC 9207).
//! - Codes live [`CODE_TTL_MS`] and are used once; presenting one again revokes the grant
//!   it produced (RFC 6749 §4.1.2).
//! - Access tokens live minutes. Refresh tokens rotate on every use; presenting a used one
//!   revokes its whole grant (both tokens of every generation), since either the client or
//!   a thief holds a copy (OAuth 2.0 Security BCP §4.14). A grant also ends after an idle
//!   time without refreshing and an absolute lifetime.
//! - The implicit and password grants are refused by design: the host never sees a
//!   password except on its own sign-in page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::secret::{self, Secret, SecretKind};
use super::{Auth, AuthError, CODE_TTL_MS};
use crate::store::{
    AuthCode, CodeRedemption, NewGrant, NewToken, OAuthClient, RefreshOutcome, SessionRecord,
    StoreError, TokenKind, User,
};

/// An OAuth error (RFC 6749 §5.2): its code, a description, and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    /// HTTP status.
    pub status: u16,
    /// The RFC's error code (`invalid_grant`…).
    pub error: &'static str,
    /// What went wrong, for a person.
    pub description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "invalid_grant", description)
    }

    fn invalid_client() -> OAuthError {
        OAuthError::new(401, "invalid_client", "client authentication failed")
    }

    fn server(error: impl std::fmt::Display) -> OAuthError {
        tracing::error!("authorization server failure: {error}");
        OAuthError::new(500, "server_error", "the server failed; see its log")
    }
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> Self {
        OAuthError::server(error)
    }
}

impl From<AuthError> for OAuthError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Store(error) => OAuthError::server(error),
            other => OAuthError::new(400, "access_denied", other.to_string()),
        }
    }
}

/// The query of `GET /auth/oauth/authorize`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeRequest {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// One of the client's registered redirect URIs, exactly.
    pub redirect_uri: Option<String>,
    /// Space-separated scopes (default: the client's).
    pub scope: Option<String>,
    /// Echoed back to the client.
    pub state: Option<String>,
    /// BASE64URL(SHA-256(verifier)).
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
}

/// What to do with an authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    /// Send the browser to this URL: the client's redirect URI with a code or an error.
    Redirect(String),
    /// The person must sign in first, then come back.
    SignIn,
}

/// The form of `POST /auth/oauth/token`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    /// `authorization_code`, `refresh_token` or `client_credentials`.
    pub grant_type: Option<String>,
    /// The authorization code.
    pub code: Option<String>,
    /// The redirect URI the code was requested with.
    pub redirect_uri: Option<String>,
    /// The client (or in the Basic header).
    pub client_id: Option<String>,
    /// A confidential client's secret (or in the Basic header).
    pub client_secret: Option<String>,
    /// The PKCE verifier.
    pub code_verifier: Option<String>,
    /// The refresh token.
    pub refresh_token: Option<String>,
    /// Scopes for client credentials.
    pub scope: Option<String>,
}

impl TokenRequest {
    /// The client's credentials from the form and an `Authorization: Basic` header.
    fn client(
        &self,
        basic: Option<(String, String)>,
    ) -> Result<(String, Option<String>), OAuthError> {
        match (basic, &self.client_id) {
            (Some((id, _)), Some(form)) if &id != form => Err(OAuthError::invalid_request(
                "client_id differs between the form and the Authorization header",
            )),
            (Some(_), _) if self.client_secret.is_some() => Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            )),
            (Some((id, secret)), _) => Ok((id, Some(secret))),
            (None, Some(id)) => Ok((id.clone(), self.client_secret.clone())),
            (None, None) => Err(OAuthError::invalid_client()),
        }
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: Secret,
    /// Seconds it lives.
    pub expires_in: i64,
    /// The refresh token, if the client may refresh.
    pub refresh_token: Option<Secret>,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

impl Serialize for TokenResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            access_token: &'a str,
            token_type: &'a str,
            expires_in: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            refresh_token: Option<&'a str>,
            scope: String,
        }
        Wire {
            access_token: self.access_token.expose(),
            token_type: "Bearer",
            expires_in: self.expires_in,
            refresh_token: self.refresh_token.as_ref().map(Secret::expose),
            scope: self.scopes.join(" "),
        }
        .serialize(serializer)
    }
}

/// `uri` with `params` added to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{}", query.finish())
}

/// A PKCE verifier or challenge: 43 to 128 of the unreserved characters (RFC 7636 §4.1).
fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Requested scopes, all within `allowed`; none requested means all of `allowed`.
fn scopes_within(requested: Option<&str>, allowed: &[String]) -> Option<Vec<String>> {
    let requested: Vec<String> = requested
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if requested.is_empty() {
        return Some(allowed.to_vec());
    }
    requested
        .iter()
        .all(|scope| allowed.contains(scope))
        .then_some(requested)
}

impl Auth {
    /// Decide an authorization request for the browser's `session`, if it has one.
    /// `Err` is shown to the person, not redirected (the client or its URI is unknown).
    pub async fn authorize(
        &self,
        request: &AuthorizeRequest,
        session: Option<&(SessionRecord, User)>,
        now: i64,
    ) -> Result<AuthorizeOutcome, OAuthError> {
        let client_id = request
            .client_id
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("client_id is missing"))?;
        let client = match self.store().oauth_client(client_id).await {
            Ok(client) => client,
            Err(StoreError::NotFound { .. }) => {
                return Err(OAuthError::new(400, "invalid_client", "no such client"));
            }
            Err(error) => return Err(error.into()),
        };
        let redirect_uri = request
            .redirect_uri
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("redirect_uri is missing"))?;
        if !client.redirect_uris.iter().any(|uri| uri == redirect_uri) {
            return Err(OAuthError::invalid_request(
                "redirect_uri is not one the client registered",
            ));
        }
        // From here on the answer goes back to the client.
        let state = request.state.as_deref();
        let back = |error: &str, description: &str| {
            let mut params = vec![("error", error), ("error_description", description)];
            if let Some(state) = state {
                params.push(("state", state));
            }
            params.push(("iss", self.issuer()));
            Ok(AuthorizeOutcome::Redirect(with_query(
                redirect_uri,
                &params,
            )))
        };
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            return back(
                "unauthorized_client",
                "the client may not use the code grant",
            );
        }
        if request.response_type.as_deref() != Some("code") {
            return back(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
        if request.code_challenge_method.as_deref() != Some("S256") {
            return back(
                "invalid_request",
                "PKCE is required: code_challenge_method must be S256",
            );
        }
        let challenge = request.code_challenge.as_deref().unwrap_or("");
        if !pkce_shaped(challenge) {
            return back("invalid_request", "code_challenge is missing or malformed");
        }
        let Some(scopes) = scopes_within(request.scope.as_deref(), &client.scopes) else {
            return back("invalid_scope", "a requested scope is not the client's");
        };
        if !self.ready().await? {
            return back("access_denied", "the installation has no administrator yet");
        }
        let Some((session, user)) = session else {
            return Ok(AuthorizeOutcome::SignIn);
        };
        let code = Secret::generate(SecretKind::Code);
        self.store()
            .create_auth_code(
                &code.hash(),
                &AuthCode {
                    client_id: client.id.clone(),
                    user_id: user.id.clone(),
                    session_id: Some(session.id.clone()),
                    redirect_uri: redirect_uri.to_string(),
                    scopes,
                    code_challenge: challenge.to_string(),
                    created_at: now,
                    expires_at: now + CODE_TTL_MS,
                },
            )
            .await?;
        let mut params = vec![("code", code.expose())];
        if let Some(state) = state {
            params.push(("state", state));
        }
        params.push(("iss", self.issuer()));
        Ok(AuthorizeOutcome::Redirect(with_query(
            redirect_uri,
            &params,
        )))
    }

    /// The token endpoint. `basic` is the client's `Authorization: Basic` credentials.
    pub async fn token(
        &self,
        request: &TokenRequest,
        basic: Option<(String, String)>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let client = self.authenticate_client(request, basic).await?;
        let grant_type = request.grant_type.as_deref().unwrap_or("");
        let allowed = |kind: &str| client.grant_types.iter().any(|g| g == kind);
        match grant_type {
            "authorization_code" if allowed("authorization_code") => {
                self.exchange_code(&client, request, now).await
            }
            "refresh_token" if allowed("refresh_token") => {
                self.refresh(&client, request, now).await
            }
            "client_credentials" if allowed("client_credentials") => {
                self.client_credentials(&client, request, now).await
            }
            "authorization_code" | "refresh_token" | "client_credentials" => Err(OAuthError::new(
                400,
                "unauthorized_client",
                "the client may not use this grant",
            )),
            "password" => Err(OAuthError::new(
                400,
                "unsupported_grant_type",
                "the password grant is refused by design: sign in through /auth/oauth/authorize",
            )),
            "" => Err(OAuthError::invalid_request("grant_type is missing")),
            _ => Err(OAuthError::new(
                400,
                "unsupported_grant_type",
                "supported: authorization_code, refresh_token, client_credentials",
            )),
        }
    }

    async fn authenticate_client(
        &self,
        request: &TokenRequest,
        basic: Option<(String, String)>,
    ) -> Result<OAuthClient, OAuthError> {
        let (id, presented) = request.client(basic)?;
        let client = match self.store().oauth_client(&id).await {
            Ok(client) => client,
            Err(StoreError::NotFound { .. }) => return Err(OAuthError::invalid_client()),
            Err(error) => return Err(error.into()),
        };
        if client.confidential {
            let expected = self.store().oauth_client_secret_hash(&id).await?;
            let ok = match (expected, presented) {
                (Some(expected), Some(presented)) => {
                    secret::equal(&expected, &secret::hash(&presented))
                }
                _ => false,
            };
            if !ok {
                return Err(OAuthError::invalid_client());
            }
        }
        Ok(client)
    }

    fn new_tokens(&self, refresh: bool, now: i64) -> (Secret, Option<Secret>, Vec<NewToken>) {
        let access = Secret::generate(SecretKind::AccessToken);
        let mut stored = vec![NewToken {
            hash: access.hash(),
            kind: TokenKind::Access,
            expires_at: now + self.inner.access_ttl_ms,
        }];
        let refresh = refresh.then(|| {
            let token = Secret::generate(SecretKind::RefreshToken);
            stored.push(NewToken {
                hash: token.hash(),
                kind: TokenKind::Refresh,
                expires_at: now + self.inner.refresh_absolute_ms,
            });
            token
        });
        (access, refresh, stored)
    }

    async fn exchange_code(
        &self,
        client: &OAuthClient,
        request: &TokenRequest,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let code = request
            .code
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
        let code_hash = secret::hash(code);
        let code = match self.store().redeem_auth_code(&code_hash, now).await? {
            CodeRedemption::Redeemed(code) => code,
            CodeRedemption::Replayed(grant) => {
                if let Some(grant) = grant {
                    self.forget_grants(&[grant]);
                }
                return Err(OAuthError::invalid_grant(
                    "the code was used before; the tokens it gave were revoked",
                ));
            }
            CodeRedemption::Expired => {
                return Err(OAuthError::invalid_grant("the code expired"));
            }
            CodeRedemption::Unknown => return Err(OAuthError::invalid_grant("unknown code")),
        };
        if code.client_id != client.id {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        if request.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        let verifier = request.code_verifier.as_deref().unwrap_or("");
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if !pkce_shaped(verifier) || !secret::equal(&computed, &code.code_challenge) {
            return Err(OAuthError::invalid_grant(
                "the PKCE code_verifier does not match",
            ));
        }
        let user = self.store().user(&code.user_id).await?;
        if !user.active {
            return Err(OAuthError::invalid_grant("the user is deactivated"));
        }
        let refresh = client.grant_types.iter().any(|g| g == "refresh_token");
        let (access, refresh_token, stored) = self.new_tokens(refresh, now);
        let grant = self
            .store()
            .create_grant(
                &NewGrant {
                    user_id: user.id,
                    client_id: client.id.clone(),
                    session_id: code.session_id,
                    scopes: code.scopes,
                    idle_expires_at: now + self.inner.refresh_idle_ms,
                    absolute_expires_at: now + self.inner.refresh_absolute_ms,
                },
                &stored,
                Some(&code_hash),
            )
            .await?;
        Ok(TokenResponse {
            access_token: access,
            expires_in: self.inner.access_ttl_ms / 1000,
            refresh_token,
            scopes: grant.scopes,
        })
    }

    async fn refresh(
        &self,
        client: &OAuthClient,
        request: &TokenRequest,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = request
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let (access, refresh_token, stored) = self.new_tokens(true, now);
        let outcome = self
            .store()
            .rotate_refresh_token(
                &secret::hash(presented),
                &client.id,
                &stored,
                now + self.inner.refresh_idle_ms,
                now,
            )
            .await?;
        match outcome {
            RefreshOutcome::Rotated(grant) => Ok(TokenResponse {
                access_token: access,
                // An access token never outlives its grant.
                expires_in: (self.inner.access_ttl_ms / 1000)
                    .min((grant.absolute_expires_at - now) / 1000),
                refresh_token,
                scopes: grant.scopes,
            }),
            RefreshOutcome::Reused(grant) => {
                self.forget_grants(&[grant]);
                Err(OAuthError::invalid_grant(
                    "the refresh token was used before; every token of its grant is revoked",
                ))
            }
            RefreshOutcome::Refused(why) => Err(OAuthError::invalid_grant(why)),
            RefreshOutcome::Unknown => Err(OAuthError::invalid_grant("unknown refresh token")),
        }
    }

    async fn client_credentials(
        &self,
        client: &OAuthClient,
        request: &TokenRequest,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let user_id = client
            .service_user_id
            .as_deref()
            .ok_or_else(|| OAuthError::new(400, "unauthorized_client", "no service user"))?;
        let user = self.store().user(user_id).await?;
        if !user.active {
            return Err(OAuthError::invalid_grant("the service user is deactivated"));
        }
        let scopes = scopes_within(request.scope.as_deref(), &client.scopes)
            .ok_or_else(|| OAuthError::new(400, "invalid_scope", "a scope is not the client's"))?;
        let (access, _, stored) = self.new_tokens(false, now);
        let lifetime = now + self.inner.access_ttl_ms;
        self.store()
            .create_grant(
                &NewGrant {
                    user_id: user.id,
                    client_id: client.id.clone(),
                    session_id: None,
                    scopes: scopes.clone(),
                    idle_expires_at: lifetime,
                    absolute_expires_at: lifetime,
                },
                &stored,
                None,
            )
            .await?;
        Ok(TokenResponse {
            access_token: access,
            expires_in: self.inner.access_ttl_ms / 1000,
            refresh_token: None,
            scopes,
        })
    }

    /// Revoke an access or refresh token of the authenticated client: its whole grant
    /// ends at once. An unknown token is not an error (RFC 7009 §2.2).
    pub async fn revoke(
        &self,
        request: &TokenRequest,
        token: &str,
        basic: Option<(String, String)>,
    ) -> Result<(), OAuthError> {
        let client = self.authenticate_client(request, basic).await?;
        let Some(record) = self.store().token(&secret::hash(token)).await? else {
            return Ok(());
        };
        if record.grant.client_id != client.id {
            return Ok(());
        }
        self.store()
            .revoke_grant(
                &crate::store::Actor(record.user.id.clone()),
                &record.grant.id,
                "revoked by the client",
            )
            .await?;
        self.forget_grants(&[record.grant.id]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_values_have_the_rfc_shape() {
        assert!(pkce_shaped(&"a".repeat(43)));
        assert!(pkce_shaped(&"A-._~9".repeat(10)));
        assert!(!pkce_shaped(&"a".repeat(42)));
        assert!(!pkce_shaped(&"a".repeat(129)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn scopes_stay_within_the_clients() {
        let allowed = vec!["public".to_string(), "read".to_string()];
        assert_eq!(scopes_within(None, &allowed), Some(allowed.clone()));
        assert_eq!(
            scopes_within(Some("read"), &allowed),
            Some(vec!["read".to_string()])
        );
        assert_eq!(scopes_within(Some("read admin"), &allowed), None);
    }

    #[test]
    fn redirect_parameters_are_encoded() {
        assert_eq!(
            with_query(
                "https://app.example/cb?x=1",
                &[("code", "a b&c"), ("iss", "https://h")]
            ),
            "https://app.example/cb?x=1&code=a+b%26c&iss=https%3A%2F%2Fh"
        );
    }
}
