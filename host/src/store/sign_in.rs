//! What sign-in keeps: local password hashes (sealed), OAuth applications, browser
//! sessions, authorization codes, grants with their access and refresh tokens, and API
//! keys.
//!
//! Every secret here is a high-entropy random value that the host generated; only its
//! SHA-256 hash (hex) is stored, so a copy of the database gives no usable credential.
//! The one low-entropy secret, a local password, is stored as a scrypt PHC string, and that
//! string is sealed like a setting (`user_passwords/<user id>/phc`). Hashing and checking
//! are the `auth` layer's; this module keeps records and makes each state change (a code
//! used once, a refresh token rotated once) atomic.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use zeroize::Zeroizing;

use super::audit::{NewAuditEntry, append};
use super::model::{Actor, ListQuery, Page, User};
use super::{Result, Store, StoreError, json_column, like_pattern, new_id};
use crate::crypto::Binding;

/// The scopes a grant or key may carry: `public` (everything the user's roles allow, the
/// scope PlaceOS clients ask for) and `read` (only reading).
pub const SCOPES: [&str; 2] = ["public", "read"];

/// The grant types an OAuth application may use.
pub const GRANT_TYPES: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

fn password_binding(user_id: &str) -> Binding<'_> {
    Binding {
        table: "user_passwords",
        row: user_id,
        field: "phc",
        level: "",
    }
}

/// A registered OAuth application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OAuthClient {
    /// The client id (`app-…`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// Grant types it may use.
    pub grant_types: Vec<String>,
    /// Whether it authenticates with a secret.
    pub confidential: bool,
    /// The user its client-credentials tokens act as.
    pub service_user_id: Option<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last changed, Unix ms.
    pub updated_at: i64,
}

/// What a new OAuth application is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOAuthClient {
    /// Its name.
    pub name: String,
    /// Redirect URIs (needed for `authorization_code`).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Scopes (default `public`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Grant types (default `authorization_code` and `refresh_token`).
    #[serde(default)]
    pub grant_types: Vec<String>,
    /// Whether it gets a secret (required for `client_credentials`).
    #[serde(default)]
    pub confidential: bool,
    /// The user a `client_credentials` token acts as.
    #[serde(default)]
    pub service_user_id: Option<String>,
}

/// A change to an OAuth application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientPatch {
    /// New name.
    pub name: Option<String>,
    /// New redirect URIs.
    pub redirect_uris: Option<Vec<String>>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
}

/// A browser session of the sign-in pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRecord {
    /// `ses-…` (not the cookie: that is only stored hashed).
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// How they signed in (`local`, or an identity source).
    pub source: String,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Ends, Unix ms.
    pub expires_at: i64,
}

/// An authorization code waiting to be exchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    /// The client it was issued to.
    pub client_id: String,
    /// The user who authorized it.
    pub user_id: String,
    /// The browser session it was issued in.
    pub session_id: Option<String>,
    /// The redirect URI of the authorization request.
    pub redirect_uri: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// Issued, Unix ms.
    pub created_at: i64,
    /// Unusable after, Unix ms.
    pub expires_at: i64,
}

/// What presenting an authorization code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// The code was fresh; it is now used.
    Redeemed(AuthCode),
    /// The code was used before; what it issued (this grant) has been revoked.
    Replayed(Option<String>),
    /// The code expired unused.
    Expired,
    /// No such code.
    Unknown,
}

/// A grant: one authorization of one client for one user; its tokens are one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// `grant-…`.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// To which client.
    pub client_id: String,
    /// The browser session it came from, if any.
    pub session_id: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Refreshing is refused after this unless it is used again before (Unix ms).
    pub idle_expires_at: i64,
    /// Refreshing is refused after this whatever happens (Unix ms).
    pub absolute_expires_at: i64,
    /// Revoked, Unix ms.
    pub revoked_at: Option<i64>,
}

/// What a new grant is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    /// Whose.
    pub user_id: String,
    /// To which client.
    pub client_id: String,
    /// The browser session it came from.
    pub session_id: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Idle limit, Unix ms.
    pub idle_expires_at: i64,
    /// Absolute limit, Unix ms.
    pub absolute_expires_at: i64,
}

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Carried on API requests; minutes.
    Access,
    /// Exchanged once for new tokens.
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// A token to store: its hash, kind and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// Its kind.
    pub kind: TokenKind,
    /// Unusable after, Unix ms.
    pub expires_at: i64,
}

/// A stored token with its grant and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its kind.
    pub kind: TokenKind,
    /// Unusable after, Unix ms.
    pub expires_at: i64,
    /// When a refresh token was exchanged.
    pub used_at: Option<i64>,
    /// Its grant.
    pub grant: Grant,
    /// The grant's user.
    pub user: User,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// It was current: it is now used and the new tokens are stored in its grant.
    Rotated(Grant),
    /// It had been used before: its whole grant (this one) has been revoked.
    Reused(String),
    /// It, or its grant, is past a lifetime or revoked, or its user is deactivated.
    Refused(&'static str),
    /// No such refresh token, or it belongs to another client.
    Unknown,
}

/// An API key's record (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiKeyRecord {
    /// `key-…`.
    pub id: String,
    /// The user it acts as.
    pub user_id: String,
    /// What it is for.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Who created it.
    pub created_by: String,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Unusable after, Unix ms.
    pub expires_at: Option<i64>,
    /// Revoked, Unix ms.
    pub revoked_at: Option<i64>,
}

/// What a new API key is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// The user it acts as.
    pub user_id: String,
    /// What it is for.
    pub name: String,
    /// Scopes (default `public`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Unusable after, Unix ms.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// Known scopes only, no repeats; empty means `public`.
pub fn checked_scopes(field: &'static str, scopes: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for scope in scopes {
        if !SCOPES.contains(&scope.as_str()) {
            return Err(StoreError::invalid(
                field,
                format!("unknown scope {scope:?} (known: {})", SCOPES.join(", ")),
            ));
        }
        if !out.contains(scope) {
            out.push(scope.clone());
        }
    }
    if out.is_empty() {
        out.push("public".to_string());
    }
    Ok(out)
}

fn checked_grant_types(types: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for kind in types {
        if !GRANT_TYPES.contains(&kind.as_str()) {
            return Err(StoreError::invalid(
                "grant_types",
                format!(
                    "unsupported grant type {kind:?} (supported: {}; the implicit and password \
                     grants are refused by design)",
                    GRANT_TYPES.join(", ")
                ),
            ));
        }
        if !out.contains(kind) {
            out.push(kind.clone());
        }
    }
    if out.is_empty() {
        out = vec!["authorization_code".into(), "refresh_token".into()];
    }
    Ok(out)
}

/// An absolute `https` URI, or a loopback `http` one (a native app's, RFC 8252), with
/// no fragment.
fn checked_redirect_uris(uris: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for uri in uris {
        let parsed: http::Uri = uri
            .parse()
            .map_err(|_| StoreError::invalid("redirect_uris", format!("{uri:?} is not a URI")))?;
        let host = parsed.host().unwrap_or("");
        let loopback = matches!(host, "127.0.0.1" | "[::1]" | "localhost");
        let scheme_ok = match parsed.scheme_str() {
            Some("https") => true,
            Some("http") => loopback,
            _ => false,
        };
        if !scheme_ok || host.is_empty() || uri.contains('#') {
            return Err(StoreError::invalid(
                "redirect_uris",
                format!(
                    "{uri:?}: a redirect URI is an absolute https URI (http only for loopback) \
                     without a fragment"
                ),
            ));
        }
        if !out.contains(uri) {
            out.push(uri.clone());
        }
    }
    Ok(out)
}

const CLIENT_COLUMNS: &str = "id, name, redirect_uris, scopes, grant_types, secret_hash, \
                              service_user_id, created_at, updated_at";

fn client_from(row: &AnyRow) -> Result<OAuthClient> {
    let id: String = row.try_get("id")?;
    let record = || format!("oauth_clients/{id}");
    Ok(OAuthClient {
        name: row.try_get("name")?,
        redirect_uris: json_column(row, "redirect_uris", record)?,
        scopes: json_column(row, "scopes", record)?,
        grant_types: json_column(row, "grant_types", record)?,
        confidential: row.try_get::<Option<String>, _>("secret_hash")?.is_some(),
        service_user_id: row.try_get("service_user_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

const GRANT_COLUMNS: &str = "g.id AS g_id, g.user_id AS g_user_id, g.client_id AS g_client_id, \
    g.session_id AS g_session_id, g.scopes AS g_scopes, g.created_at AS g_created_at, \
    g.idle_expires_at AS g_idle_expires_at, g.absolute_expires_at AS g_absolute_expires_at, \
    g.revoked_at AS g_revoked_at";

fn grant_from(row: &AnyRow) -> Result<Grant> {
    let id: String = row.try_get("g_id")?;
    Ok(Grant {
        user_id: row.try_get("g_user_id")?,
        client_id: row.try_get("g_client_id")?,
        session_id: row.try_get("g_session_id")?,
        scopes: json_column(row, "g_scopes", || format!("auth_grants/{id}"))?,
        created_at: row.try_get("g_created_at")?,
        idle_expires_at: row.try_get("g_idle_expires_at")?,
        absolute_expires_at: row.try_get("g_absolute_expires_at")?,
        revoked_at: row.try_get("g_revoked_at")?,
        id,
    })
}

const KEY_COLUMNS: &str =
    "id, user_id, name, scopes, created_by, created_at, expires_at, revoked_at";

fn api_key_from(row: &AnyRow) -> Result<ApiKeyRecord> {
    let id: String = row.try_get("id")?;
    Ok(ApiKeyRecord {
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        scopes: json_column(row, "scopes", || format!("api_keys/{id}"))?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        id,
    })
}

fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Revoke every grant, session and API key of `user_id` (in the caller's transaction).
pub(crate) async fn revoke_user_credentials(
    conn: &mut AnyConnection,
    user_id: &str,
    now: i64,
    why: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE auth_grants SET revoked_at = $2, revoked_why = $3 \
         WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(now)
    .bind(why)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE auth_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn revoke_grant_in(conn: &mut AnyConnection, id: &str, now: i64, why: &str) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE auth_grants SET revoked_at = $2, revoked_why = $3 \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(now)
    .bind(why)
    .execute(conn)
    .await?
    .rows_affected())
}

impl Store {
    /// Store `phc` (a scrypt PHC string) as `user_id`'s password, sealed.
    pub async fn set_password(&self, actor: &Actor, user_id: &str, phc: &str) -> Result<()> {
        let ring = self.keys().current()?;
        let sealed = ring.seal(&password_binding(user_id), phc.as_bytes())?;
        let key_id = i64::from(ring.active().id().0);
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let user = sqlx::query("SELECT id FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(tx.conn())
            .await?;
        if user.is_none() {
            return Err(StoreError::not_found("user", user_id));
        }
        let updated = sqlx::query(
            "UPDATE user_passwords SET phc = $2, key_id = $3, updated_at = $4 WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(&sealed)
        .bind(key_id)
        .bind(now)
        .execute(tx.conn())
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO user_passwords (user_id, phc, key_id, updated_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(user_id)
            .bind(&sealed)
            .bind(key_id)
            .bind(now)
            .execute(tx.conn())
            .await?;
        }
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "user.password_set", "user", user_id),
        )
        .await?;
        tx.commit().await
    }

    /// `user_id`'s password hash (a PHC string), if they have a local password.
    pub async fn password_hash(&self, user_id: &str) -> Result<Option<Zeroizing<String>>> {
        let row = sqlx::query("SELECT phc FROM user_passwords WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = row.try_get("phc")?;
        let binding = password_binding(user_id);
        let plain = self.keys().open(&binding, &sealed)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| StoreError::Corrupt {
            record: binding.to_string(),
            why: "opened, but not a PHC string".to_string(),
        })?;
        Ok(Some(Zeroizing::new(text)))
    }

    /// Register an OAuth application; `secret_hash` for a confidential one.
    pub async fn create_oauth_client(
        &self,
        actor: &Actor,
        new: &NewOAuthClient,
        secret_hash: Option<&str>,
    ) -> Result<OAuthClient> {
        let name = super::model::checked_name("name", &new.name)?;
        let redirect_uris = checked_redirect_uris(&new.redirect_uris)?;
        let scopes = checked_scopes("scopes", &new.scopes)?;
        let grant_types = checked_grant_types(&new.grant_types)?;
        if grant_types.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
            return Err(StoreError::invalid(
                "redirect_uris",
                "the authorization_code grant needs at least one redirect URI",
            ));
        }
        let credentials = grant_types.iter().any(|g| g == "client_credentials");
        if credentials && (secret_hash.is_none() || new.service_user_id.is_none()) {
            return Err(StoreError::invalid(
                "service_user_id",
                "the client_credentials grant needs a confidential client and a service user",
            ));
        }
        if new.confidential != secret_hash.is_some() {
            return Err(StoreError::invalid(
                "confidential",
                "a confidential client has a secret, a public one none",
            ));
        }
        let id = new_id("app");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        if let Some(user) = &new.service_user_id {
            let found = sqlx::query("SELECT id FROM users WHERE id = $1")
                .bind(user)
                .fetch_optional(tx.conn())
                .await?;
            if found.is_none() {
                return Err(StoreError::invalid(
                    "service_user_id",
                    format!("no user {user}"),
                ));
            }
        }
        sqlx::query(&format!(
            "INSERT INTO oauth_clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
        ))
        .bind(&id)
        .bind(&name)
        .bind(json_text(&redirect_uris))
        .bind(json_text(&scopes))
        .bind(json_text(&grant_types))
        .bind(secret_hash)
        .bind(new.service_user_id.as_deref())
        .bind(now)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "oauth_client.create", "oauth_client", &id).details(
                json!({"name": name, "redirect_uris": redirect_uris, "scopes": scopes,
                       "grant_types": grant_types, "confidential": secret_hash.is_some(),
                       "service_user_id": new.service_user_id}),
            ),
        )
        .await?;
        let client = fetch_client(tx.conn(), &id).await?;
        tx.commit().await?;
        Ok(client)
    }

    /// The OAuth application `id`.
    pub async fn oauth_client(&self, id: &str) -> Result<OAuthClient> {
        let mut conn = self.pool().acquire().await?;
        fetch_client(&mut conn, id).await
    }

    /// The secret hash of a confidential OAuth application.
    pub async fn oauth_client_secret_hash(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT secret_hash FROM oauth_clients WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("oauth_client", id))?;
        Ok(row.try_get("secret_hash")?)
    }

    /// OAuth applications whose name contains `q`.
    pub async fn list_oauth_clients(&self, query: &ListQuery) -> Result<Page<OAuthClient>> {
        self.list_matching(
            &super::Listing {
                table: "oauth_clients",
                columns: CLIENT_COLUMNS,
                matched: "name",
                order: "name, id",
                from_row: client_from,
            },
            query,
        )
        .await
    }

    /// Change an OAuth application.
    pub async fn update_oauth_client(
        &self,
        actor: &Actor,
        id: &str,
        patch: &OAuthClientPatch,
    ) -> Result<OAuthClient> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let mut client = fetch_client(tx.conn(), id).await?;
        if let Some(name) = &patch.name {
            client.name = super::model::checked_name("name", name)?;
        }
        if let Some(uris) = &patch.redirect_uris {
            client.redirect_uris = checked_redirect_uris(uris)?;
        }
        if let Some(scopes) = &patch.scopes {
            client.scopes = checked_scopes("scopes", scopes)?;
        }
        if client.grant_types.iter().any(|g| g == "authorization_code")
            && client.redirect_uris.is_empty()
        {
            return Err(StoreError::invalid(
                "redirect_uris",
                "the authorization_code grant needs at least one redirect URI",
            ));
        }
        sqlx::query(
            "UPDATE oauth_clients SET name = $2, redirect_uris = $3, scopes = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(&client.name)
        .bind(json_text(&client.redirect_uris))
        .bind(json_text(&client.scopes))
        .bind(now)
        .execute(tx.conn())
        .await?;
        client.updated_at = now;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "oauth_client.update", "oauth_client", id).details(
                json!({"name": client.name, "redirect_uris": client.redirect_uris,
                       "scopes": client.scopes}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(client)
    }

    /// Replace a confidential application's secret; every grant it holds is revoked.
    pub async fn set_oauth_client_secret(
        &self,
        actor: &Actor,
        id: &str,
        secret_hash: &str,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let client = fetch_client(tx.conn(), id).await?;
        if !client.confidential {
            return Err(StoreError::invalid(
                "confidential",
                "a public client has no secret",
            ));
        }
        sqlx::query("UPDATE oauth_clients SET secret_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(secret_hash)
            .bind(now)
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "UPDATE auth_grants SET revoked_at = $2, revoked_why = 'client secret replaced' \
             WHERE client_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "oauth_client.secret", "oauth_client", id),
        )
        .await?;
        tx.commit().await
    }

    /// Delete an OAuth application with its grants, tokens and codes.
    pub async fn delete_oauth_client(&self, actor: &Actor, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let client = fetch_client(tx.conn(), id).await?;
        for sql in [
            "DELETE FROM auth_tokens WHERE grant_id IN \
             (SELECT id FROM auth_grants WHERE client_id = $1)",
            "DELETE FROM auth_grants WHERE client_id = $1",
            "DELETE FROM auth_codes WHERE client_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(tx.conn()).await?;
        }
        sqlx::query("DELETE FROM oauth_clients WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "oauth_client.delete", "oauth_client", id)
                .details(json!({"name": client.name})),
        )
        .await?;
        tx.commit().await
    }

    /// Start a browser session for `user_id` (the cookie's hash given), recording the
    /// sign-in.
    pub async fn create_session(
        &self,
        user_id: &str,
        source: &str,
        token_hash: &str,
        expires_at: i64,
        details: serde_json::Value,
    ) -> Result<SessionRecord> {
        let id = new_id("ses");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO auth_sessions (id, token_hash, user_id, source, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(token_hash)
        .bind(user_id)
        .bind(source)
        .bind(now)
        .bind(expires_at)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(&Actor(user_id.to_string()), "user.sign_in", "user", user_id)
                .details(details),
        )
        .await?;
        tx.commit().await?;
        Ok(SessionRecord {
            id,
            user_id: user_id.to_string(),
            source: source.to_string(),
            created_at: now,
            expires_at,
        })
    }

    /// The live session whose cookie hashes to `token_hash`, with its user (active or
    /// not: the caller decides).
    pub async fn session(&self, token_hash: &str, now: i64) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT id, user_id, source, created_at, expires_at FROM auth_sessions \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(SessionRecord {
                id: row.try_get("id")?,
                user_id: row.try_get("user_id")?,
                source: row.try_get("source")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// End a session and revoke every grant issued through it (sign-out).
    pub async fn end_session(&self, actor: &Actor, id: &str) -> Result<Vec<String>> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE auth_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(tx.conn())
        .await?;
        let grants: Vec<String> =
            sqlx::query("SELECT id FROM auth_grants WHERE session_id = $1 AND revoked_at IS NULL")
                .bind(id)
                .fetch_all(tx.conn())
                .await?
                .iter()
                .map(|row| row.try_get("id"))
                .collect::<Result<_, _>>()?;
        for grant in &grants {
            revoke_grant_in(tx.conn(), grant, now, "signed out").await?;
        }
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "user.sign_out", "session", id)
                .details(json!({"grants_revoked": grants.len()})),
        )
        .await?;
        tx.commit().await?;
        Ok(grants)
    }

    /// Store an authorization code (its hash).
    pub async fn create_auth_code(&self, code_hash: &str, code: &AuthCode) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO auth_codes (code_hash, client_id, user_id, session_id, redirect_uri, \
             scopes, code_challenge, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(code_hash)
        .bind(&code.client_id)
        .bind(&code.user_id)
        .bind(code.session_id.as_deref())
        .bind(&code.redirect_uri)
        .bind(json_text(&code.scopes))
        .bind(&code.code_challenge)
        .bind(code.created_at)
        .bind(code.expires_at)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// Present an authorization code: the first presentation before it expires redeems
    /// it; a second revokes whatever the first issued (RFC 6749 §4.1.2).
    pub async fn redeem_auth_code(&self, code_hash: &str, now: i64) -> Result<CodeRedemption> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT client_id, user_id, session_id, redirect_uri, scopes, code_challenge, \
             created_at, expires_at, used_at, grant_id FROM auth_codes WHERE code_hash = $1",
        )
        .bind(code_hash)
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Ok(CodeRedemption::Unknown);
        };
        if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
            let grant: Option<String> = row.try_get("grant_id")?;
            let user: String = row.try_get("user_id")?;
            if let Some(grant) = &grant {
                revoke_grant_in(tx.conn(), grant, now, "authorization code replayed").await?;
            }
            append(
                tx.conn(),
                now,
                &NewAuditEntry::new(&Actor::host(), "token.code_replayed", "user", &user)
                    .details(json!({"grant_revoked": grant})),
            )
            .await?;
            tx.commit().await?;
            return Ok(CodeRedemption::Replayed(grant));
        }
        let expires_at: i64 = row.try_get("expires_at")?;
        if expires_at <= now {
            return Ok(CodeRedemption::Expired);
        }
        sqlx::query("UPDATE auth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL")
            .bind(code_hash)
            .bind(now)
            .execute(tx.conn())
            .await?;
        let code = AuthCode {
            client_id: row.try_get("client_id")?,
            user_id: row.try_get("user_id")?,
            session_id: row.try_get("session_id")?,
            redirect_uri: row.try_get("redirect_uri")?,
            scopes: json_column(&row, "scopes", || "auth_codes".to_string())?,
            code_challenge: row.try_get("code_challenge")?,
            created_at: row.try_get("created_at")?,
            expires_at,
        };
        tx.commit().await?;
        Ok(CodeRedemption::Redeemed(code))
    }

    /// Create a grant with its first tokens; `code_hash` names the code it was exchanged
    /// for, so that a replay of that code revokes it.
    pub async fn create_grant(
        &self,
        new: &NewGrant,
        tokens: &[NewToken],
        code_hash: Option<&str>,
    ) -> Result<Grant> {
        let id = new_id("grant");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO auth_grants (id, user_id, client_id, session_id, scopes, created_at, \
             idle_expires_at, absolute_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&new.user_id)
        .bind(&new.client_id)
        .bind(new.session_id.as_deref())
        .bind(json_text(&new.scopes))
        .bind(now)
        .bind(new.idle_expires_at)
        .bind(new.absolute_expires_at)
        .execute(tx.conn())
        .await?;
        insert_tokens(tx.conn(), &id, tokens, now).await?;
        if let Some(code) = code_hash {
            sqlx::query("UPDATE auth_codes SET grant_id = $2 WHERE code_hash = $1")
                .bind(code)
                .bind(&id)
                .execute(tx.conn())
                .await?;
        }
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(&Actor(new.user_id.clone()), "token.issue", "grant", &id).details(
                json!({"client_id": new.client_id, "scopes": new.scopes,
                                "via": if code_hash.is_some() { "authorization_code" }
                                       else { "client_credentials" }}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Grant {
            id,
            user_id: new.user_id.clone(),
            client_id: new.client_id.clone(),
            session_id: new.session_id.clone(),
            scopes: new.scopes.clone(),
            created_at: now,
            idle_expires_at: new.idle_expires_at,
            absolute_expires_at: new.absolute_expires_at,
            revoked_at: None,
        })
    }

    /// The token whose hash is `hash`, with its grant and user.
    pub async fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let mut conn = self.pool().acquire().await?;
        fetch_token(&mut conn, hash).await
    }

    /// Exchange refresh token `hash` (of `client_id`): used once, it is marked used and
    /// `tokens` join its grant, whose idle limit moves to `idle_expires_at` (never past the
    /// absolute one); used twice, its grant is revoked.
    pub async fn rotate_refresh_token(
        &self,
        hash: &str,
        client_id: &str,
        tokens: &[NewToken],
        idle_expires_at: i64,
        now: i64,
    ) -> Result<RefreshOutcome> {
        let mut tx = self.begin_write().await?;
        let Some(found) = fetch_token(tx.conn(), hash).await? else {
            return Ok(RefreshOutcome::Unknown);
        };
        if found.kind != TokenKind::Refresh || found.grant.client_id != client_id {
            return Ok(RefreshOutcome::Unknown);
        }
        if found.used_at.is_some() {
            revoke_grant_in(tx.conn(), &found.grant.id, now, "refresh token reused").await?;
            append(
                tx.conn(),
                now,
                &NewAuditEntry::new(
                    &Actor::host(),
                    "token.reuse_detected",
                    "grant",
                    &found.grant.id,
                )
                .details(json!({"user_id": found.user.id, "client_id": client_id})),
            )
            .await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused(found.grant.id));
        }
        let refused = if found.grant.revoked_at.is_some() {
            Some("the grant was revoked")
        } else if !found.user.active {
            Some("the user is deactivated")
        } else if found.expires_at <= now || found.grant.absolute_expires_at <= now {
            Some("the grant reached its absolute lifetime")
        } else if found.grant.idle_expires_at <= now {
            Some("the grant was idle too long")
        } else {
            None
        };
        if let Some(why) = refused {
            return Ok(RefreshOutcome::Refused(why));
        }
        sqlx::query(
            "UPDATE auth_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL",
        )
        .bind(hash)
        .bind(now)
        .execute(tx.conn())
        .await?;
        let idle = idle_expires_at.min(found.grant.absolute_expires_at);
        sqlx::query("UPDATE auth_grants SET idle_expires_at = $2 WHERE id = $1")
            .bind(&found.grant.id)
            .bind(idle)
            .execute(tx.conn())
            .await?;
        insert_tokens(tx.conn(), &found.grant.id, tokens, now).await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(
                &Actor(found.user.id.clone()),
                "token.refresh",
                "grant",
                &found.grant.id,
            )
            .details(json!({"client_id": client_id})),
        )
        .await?;
        tx.commit().await?;
        let mut grant = found.grant;
        grant.idle_expires_at = idle;
        Ok(RefreshOutcome::Rotated(grant))
    }

    /// Revoke grant `id` (all its tokens); whether it was live.
    pub async fn revoke_grant(&self, actor: &Actor, id: &str, why: &str) -> Result<bool> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let revoked = revoke_grant_in(tx.conn(), id, now, why).await? > 0;
        if revoked {
            append(
                tx.conn(),
                now,
                &NewAuditEntry::new(actor, "token.revoke", "grant", id)
                    .details(json!({"why": why})),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    /// Store a new API key (its hash).
    pub async fn create_api_key(
        &self,
        actor: &Actor,
        new: &NewApiKey,
        key_hash: &str,
    ) -> Result<ApiKeyRecord> {
        let name = super::model::checked_name("name", &new.name)?;
        let scopes = checked_scopes("scopes", &new.scopes)?;
        let now = self.now();
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(StoreError::invalid("expires_at", "is in the past"));
        }
        let id = new_id("key");
        let mut tx = self.begin_write().await?;
        let user = sqlx::query("SELECT deactivated_at FROM users WHERE id = $1")
            .bind(&new.user_id)
            .fetch_optional(tx.conn())
            .await?
            .ok_or_else(|| StoreError::invalid("user_id", format!("no user {}", new.user_id)))?;
        if user.try_get::<Option<i64>, _>("deactivated_at")?.is_some() {
            return Err(StoreError::invalid("user_id", "the user is deactivated"));
        }
        sqlx::query(&format!(
            "INSERT INTO api_keys (key_hash, {KEY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"
        ))
        .bind(key_hash)
        .bind(&id)
        .bind(&new.user_id)
        .bind(&name)
        .bind(json_text(&scopes))
        .bind(&actor.0)
        .bind(now)
        .bind(new.expires_at)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "api_key.create", "api_key", &id).details(json!({
                "user_id": new.user_id, "name": name, "scopes": scopes,
                "expires_at": new.expires_at,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(ApiKeyRecord {
            id,
            user_id: new.user_id.clone(),
            name,
            scopes,
            created_by: actor.0.clone(),
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
        })
    }

    /// The API key whose hash is `hash`, with its user.
    pub async fn api_key(&self, hash: &str) -> Result<Option<(ApiKeyRecord, User)>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = api_key_from(&row)?;
        let user = self.user(&key.user_id).await?;
        Ok(Some((key, user)))
    }

    /// API keys, of one user or all, newest first.
    pub async fn list_api_keys(
        &self,
        user_id: Option<&str>,
        query: &ListQuery,
    ) -> Result<Page<ApiKeyRecord>> {
        let (limit, offset) = query.bounds();
        let pattern = like_pattern(query.q.as_deref().unwrap_or(""));
        let filter = "LOWER(name) LIKE $1 ESCAPE '\\' AND ($2 = '' OR user_id = $2)";
        let user = user_id.unwrap_or("");
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE {filter} \
             ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
        ))
        .bind(&pattern)
        .bind(user)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM api_keys WHERE {filter}"
        ))
        .bind(&pattern)
        .bind(user)
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        Ok(Page {
            items: rows.iter().map(api_key_from).collect::<Result<_>>()?,
            total,
        })
    }

    /// Revoke API key `id`.
    pub async fn revoke_api_key(&self, actor: &Actor, id: &str) -> Result<ApiKeyRecord> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(tx.conn())
            .await?
            .ok_or_else(|| StoreError::not_found("api_key", id))?;
        let mut key = api_key_from(&row)?;
        if key.revoked_at.is_none() {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(tx.conn())
                .await?;
            key.revoked_at = Some(now);
            append(
                tx.conn(),
                now,
                &NewAuditEntry::new(actor, "api_key.revoke", "api_key", id)
                    .details(json!({"user_id": key.user_id})),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(key)
    }

    /// Record that the SAML assertion `assertion_id` of identity source `source` was
    /// consumed, to be remembered until `expires_at`; false when it was already.
    pub async fn consume_saml_assertion(
        &self,
        source: &str,
        assertion_id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO saml_assertions (source, assertion_id, consumed_at, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (source, assertion_id) DO NOTHING",
        )
        .bind(source)
        .bind(assertion_id)
        .bind(now)
        .bind(expires_at)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Delete what can never be used again: codes, tokens, sessions and consumed SAML assertions expired before
    /// `now` less a day (kept that long so a late replay is still recognised). Returns
    /// the rows deleted.
    pub async fn prune_sign_in(&self, now: i64) -> Result<u64> {
        let cutoff = now.saturating_sub(24 * 60 * 60 * 1000);
        let mut tx = self.begin_write().await?;
        let mut deleted = 0;
        for sql in [
            "DELETE FROM auth_codes WHERE expires_at < $1",
            "DELETE FROM auth_tokens WHERE expires_at < $1",
            "DELETE FROM auth_sessions WHERE expires_at < $1",
            "DELETE FROM saml_assertions WHERE expires_at < $1",
        ] {
            deleted += sqlx::query(sql)
                .bind(cutoff)
                .execute(tx.conn())
                .await?
                .rows_affected();
        }
        deleted += sqlx::query(
            "DELETE FROM auth_grants WHERE absolute_expires_at < $1 \
             AND id NOT IN (SELECT grant_id FROM auth_tokens)",
        )
        .bind(cutoff)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

async fn fetch_client(conn: &mut AnyConnection, id: &str) -> Result<OAuthClient> {
    let row = sqlx::query(&format!(
        "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::not_found("oauth_client", id))?;
    client_from(&row)
}

async fn insert_tokens(
    conn: &mut AnyConnection,
    grant: &str,
    tokens: &[NewToken],
    now: i64,
) -> Result<()> {
    for token in tokens {
        sqlx::query(
            "INSERT INTO auth_tokens (token_hash, grant_id, kind, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.hash)
        .bind(grant)
        .bind(token.kind.as_str())
        .bind(now)
        .bind(token.expires_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn fetch_token(conn: &mut AnyConnection, hash: &str) -> Result<Option<TokenRecord>> {
    let row = sqlx::query(&format!(
        "SELECT t.kind AS kind, t.expires_at AS expires_at, t.used_at AS used_at, {GRANT_COLUMNS} \
         FROM auth_tokens t JOIN auth_grants g ON g.id = t.grant_id WHERE t.token_hash = $1"
    ))
    .bind(hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let kind = match row.try_get::<String, _>("kind")?.as_str() {
        "access" => TokenKind::Access,
        "refresh" => TokenKind::Refresh,
        other => {
            return Err(StoreError::Corrupt {
                record: "auth_tokens".to_string(),
                why: format!("unknown kind {other:?}"),
            });
        }
    };
    let grant = grant_from(&row)?;
    let user = super::users::fetch_user(conn, &grant.user_id).await?;
    Ok(Some(TokenRecord {
        kind,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        grant,
        user,
    }))
}
