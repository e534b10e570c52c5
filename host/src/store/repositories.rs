//! Source repositories drivers are built from: a git URL (or a local path), the branch
//! followed for "update available", and credentials sealed like settings
//! (`repositories/<id>/credentials`), never shown back.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use zeroize::Zeroizing;

use super::audit::{NewAuditEntry, append};
use super::model::{Actor, ListQuery, Page, checked_name};
use super::{Result, Store, StoreError, new_id};
use crate::build::Repository;
use crate::crypto::Binding;

const COLUMNS: &str = "id, name, url, branch, credentials IS NOT NULL AS has_credentials, \
                       created_at, updated_at";

/// A registered source repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepositoryRecord {
    /// `repo-…`.
    pub id: String,
    /// What people call it.
    pub name: String,
    /// Where git reaches it: an `https://`, `ssh://` or `git://` URL, `user@host:path`, or
    /// a local path.
    pub url: String,
    /// The branch followed for "update available"; none: the remote's default branch.
    pub branch: Option<String>,
    /// Whether credentials are stored (they are never shown).
    pub has_credentials: bool,
    /// Registered, Unix ms.
    pub created_at: i64,
    /// Last changed, Unix ms.
    pub updated_at: i64,
}

/// Credentials for an HTTPS repository: a user name and password, or a token as the
/// password (most forges take any user name with a token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepositoryCredentials {
    /// User name (for a token, any non-empty name the forge accepts).
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for RepositoryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A repository to register.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct NewRepository {
    /// Name.
    pub name: String,
    /// Git URL or local path. Credentials go in `credentials`, not in the URL.
    pub url: String,
    /// Branch followed for "update available".
    #[serde(default)]
    pub branch: Option<String>,
    /// Credentials, stored sealed.
    #[serde(default)]
    pub credentials: Option<RepositoryCredentials>,
}

fn binding(id: &str) -> Binding<'_> {
    Binding {
        table: "repositories",
        row: id,
        field: "credentials",
        level: "",
    }
}

/// A URL git can use safely (see [`Repository`]), without credentials in it: they go in
/// `credentials`, sealed, where no log or listing shows them.
pub fn checked_url(url: &str) -> Result<String> {
    let url = url.trim();
    let repository = url
        .parse::<Repository>()
        .map_err(|e| StoreError::invalid("url", e.to_string()))?;
    if repository.embedded_credentials().is_some() {
        return Err(StoreError::invalid(
            "url",
            "put credentials in `credentials`, not in the URL (where logs would show them)",
        ));
    }
    Ok(url.to_string())
}

/// Credentials go only to an HTTPS repository: anything else would send them in the
/// clear, or nowhere.
fn check_credentials_scheme(url: &str, credentials: Option<&RepositoryCredentials>) -> Result<()> {
    if credentials.is_some() && !url.starts_with("https://") {
        return Err(StoreError::invalid(
            "credentials",
            "credentials are sent only to https:// repositories",
        ));
    }
    Ok(())
}

/// A branch name git accepts, checked conservatively.
pub(crate) fn checked_branch(branch: Option<&str>) -> Result<Option<String>> {
    let Some(branch) = branch.map(str::trim).filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let fine = branch.len() <= 255
        && !branch.starts_with('-')
        && !branch.contains("..")
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if !fine {
        return Err(StoreError::invalid(
            "branch",
            "must be a plain branch name (letters, digits, `-`, `_`, `.`, `/`)",
        ));
    }
    Ok(Some(branch.to_string()))
}

fn repository_from(row: &AnyRow) -> Result<RepositoryRecord> {
    let has_credentials: bool = match row.try_get::<bool, _>("has_credentials") {
        Ok(flag) => flag,
        // SQLite answers the comparison with an integer.
        Err(_) => row.try_get::<i64, _>("has_credentials")? != 0,
    };
    Ok(RepositoryRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        branch: row.try_get("branch")?,
        has_credentials,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Option<RepositoryRecord>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM repositories WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(repository_from).transpose()
}

impl Store {
    /// Register a repository.
    pub async fn create_repository(
        &self,
        actor: &Actor,
        new: &NewRepository,
    ) -> Result<RepositoryRecord> {
        let name = checked_name("name", &new.name)?;
        let url = checked_url(&new.url)?;
        check_credentials_scheme(&url, new.credentials.as_ref())?;
        let branch = checked_branch(new.branch.as_deref())?;
        let id = new_id("repo");
        let now = self.now();
        let sealed = match &new.credentials {
            Some(credentials) => {
                if credentials.username.trim().is_empty() || credentials.password.is_empty() {
                    return Err(StoreError::invalid(
                        "credentials",
                        "need a non-empty username and password (or token)",
                    ));
                }
                let text = Zeroizing::new(
                    serde_json::to_vec(credentials)
                        .map_err(|e| StoreError::invalid("credentials", e.to_string()))?,
                );
                let ring = self.keys().current()?;
                Some((
                    ring.seal(&binding(&id), &text)?,
                    i64::from(ring.active().id().0),
                ))
            }
            None => None,
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO repositories (id, name, url, branch, credentials, key_id, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&id)
        .bind(&name)
        .bind(&url)
        .bind(branch.clone())
        .bind(sealed.as_ref().map(|(bytes, _)| bytes.clone()))
        .bind(sealed.as_ref().map(|(_, key)| *key))
        .bind(now)
        .execute(tx.conn())
        .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "repository.create", "repository", &id).details(json!({
                "name": name, "url": url, "branch": branch,
                "has_credentials": sealed.is_some(),
            })),
        )
        .await?;
        let record = fetch(tx.conn(), &id)
            .await?
            .ok_or_else(|| StoreError::not_found("repository", &id))?;
        tx.commit().await?;
        Ok(record)
    }

    /// The repository `id`.
    pub async fn repository(&self, id: &str) -> Result<RepositoryRecord> {
        let mut conn = self.pool().acquire().await?;
        fetch(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::not_found("repository", id))
    }

    /// The repository whose URL is `url`, if one is registered.
    pub async fn repository_by_url(&self, url: &str) -> Result<Option<RepositoryRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM repositories WHERE url = $1 ORDER BY created_at LIMIT 1"
        ))
        .bind(url.trim())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(repository_from).transpose()
    }

    /// Repositories by name.
    pub async fn list_repositories(&self, query: &ListQuery) -> Result<Page<RepositoryRecord>> {
        self.list_matching(
            &super::Listing {
                table: "repositories",
                columns: COLUMNS,
                matched: "name",
                order: "name, id",
                from_row: repository_from,
            },
            query,
        )
        .await
    }

    /// The repository's credentials, opened (for the builder only; never for display).
    pub async fn repository_credentials(&self, id: &str) -> Result<Option<RepositoryCredentials>> {
        let row = sqlx::query("SELECT credentials FROM repositories WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("repository", id))?;
        let sealed: Option<Vec<u8>> = row.try_get("credentials")?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let text = self.keys().open(&binding(id), &sealed)?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                record: format!("repositories/{id}/credentials"),
                why: "opened, but not the JSON this host seals".to_string(),
            })
    }

    /// Delete a repository and its builds. Drivers built from it keep their source URL.
    pub async fn delete_repository(&self, actor: &Actor, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let repository = fetch(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::not_found("repository", id))?;
        let running: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM builds WHERE repository_id = $1 \
             AND state IN ('queued', 'running')",
        )
        .bind(id)
        .fetch_one(tx.conn())
        .await?
        .try_get("n")?;
        if running > 0 {
            return Err(StoreError::Conflict(format!(
                "repository {id} has {running} builds queued or running"
            )));
        }
        sqlx::query("DELETE FROM builds WHERE repository_id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        sqlx::query("DELETE FROM repositories WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "repository.delete", "repository", id)
                .details(json!({"url": repository.url})),
        )
        .await?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_could_inject_options_or_leak_credentials_are_refused() {
        assert!(checked_url("https://git.example.com/drivers.git").is_ok());
        assert!(checked_url("/srv/git/drivers").is_ok());
        assert!(checked_url("git@git.example.com:org/drivers.git").is_ok());
        assert!(checked_url("--upload-pack=touch /tmp/x").is_err());
        assert!(checked_url("https://user:secret@git.example.com/x.git").is_err());
        assert!(checked_url("ext::sh -c touch% /tmp/x").is_err());
        assert!(checked_url("ftp://example.com/x").is_err());
        assert!(checked_url("https://x/\u{7}y").is_err());
        assert!(checked_url("ssh://git:secret@git.example.com/x.git").is_err());
        let credentials = RepositoryCredentials {
            username: "bot".into(),
            password: "token".into(),
        };
        assert!(check_credentials_scheme("https://git.example.com/x", Some(&credentials)).is_ok());
        for url in ["http://git.example.com/x", "/srv/git/x", "git@host:x"] {
            assert!(
                check_credentials_scheme(url, Some(&credentials)).is_err(),
                "{url}"
            );
        }
        assert!(checked_branch(Some("main")).unwrap() == Some("main".into()));
        assert!(checked_branch(Some("--force")).is_err());
        assert!(checked_branch(Some("a..b")).is_err());
        assert!(checked_branch(Some(" ")).unwrap().is_none());
    }
}
