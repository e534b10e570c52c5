//! Users: who may sign in, with which roles, through which identity source.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{NewAuditEntry, append};
use super::model::{Actor, ListQuery, NewUser, Page, ROLES, User, UserPatch, checked_name};
use super::sign_in::revoke_user_credentials;
use super::{Result, Store, StoreError, json_column, like_pattern, new_id};

const COLUMNS: &str = "id, email, username, first_name, last_name, roles, auth_source, \
                       created_at, updated_at, deactivated_at";

fn user_from(row: &AnyRow) -> Result<User> {
    let id: String = row.try_get("id")?;
    Ok(User {
        roles: json_column(row, "roles", || format!("users/{id}"))?,
        email: row.try_get("email")?,
        username: row.try_get("username")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        auth_source: row.try_get("auth_source")?,
        active: row.try_get::<Option<i64>, _>("deactivated_at")?.is_none(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

async fn fetch_by(conn: &mut AnyConnection, column: &str, value: &str) -> Result<Option<User>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE {column} = $1"))
        .bind(value)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(user_from).transpose()
}

/// The user `id`, in the caller's connection or transaction.
pub(crate) async fn fetch_user(conn: &mut AnyConnection, id: &str) -> Result<User> {
    fetch_by(conn, "id", id)
        .await?
        .ok_or_else(|| StoreError::not_found("user", id))
}

/// Emails compare without case: stored lower-cased.
fn checked_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.contains(char::is_whitespace)
        && email.len() <= 320;
    if valid {
        Ok(email)
    } else {
        Err(StoreError::invalid("email", "not an email address"))
    }
}

fn checked_roles(roles: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for role in roles {
        if !ROLES.contains(&role.as_str()) {
            return Err(StoreError::invalid(
                "roles",
                format!("unknown role {role:?} (known: {})", ROLES.join(", ")),
            ));
        }
        if !out.contains(role) {
            out.push(role.clone());
        }
    }
    Ok(out)
}

impl Store {
    /// Create a user.
    pub async fn create_user(&self, actor: &Actor, new: &NewUser) -> Result<User> {
        let email = checked_email(&new.email)?;
        let username = checked_name("username", new.username.as_deref().unwrap_or(&email))?;
        let roles = checked_roles(&new.roles)?;
        let source = checked_name("auth_source", &new.auth_source)?;
        let id = new_id("user");
        let now = self.now();
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO users ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL)"
        ))
        .bind(&id)
        .bind(&email)
        .bind(&username)
        .bind(&new.first_name)
        .bind(&new.last_name)
        .bind(serde_json::to_string(&roles).unwrap_or_default())
        .bind(&source)
        .bind(now)
        .execute(tx.conn())
        .await
        .map_err(|error| {
            StoreError::unique(error, || {
                format!("a user with email {email} or username {username} exists")
            })
        })?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "user.create", "user", &id).details(json!({
                "email": email, "roles": roles, "auth_source": source,
            })),
        )
        .await?;
        let user = fetch_by(tx.conn(), "id", &id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", &id))?;
        tx.commit().await?;
        Ok(user)
    }

    /// The user `id`.
    pub async fn user(&self, id: &str) -> Result<User> {
        let mut conn = self.pool().acquire().await?;
        fetch_by(&mut conn, "id", id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", id))
    }

    /// The user with `email`, if there is one.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let mut conn = self.pool().acquire().await?;
        fetch_by(&mut conn, "email", &email.trim().to_lowercase()).await
    }

    /// Users whose email or name contains `q`.
    pub async fn list_users(&self, query: &ListQuery) -> Result<Page<User>> {
        let (limit, offset) = query.bounds();
        let pattern = like_pattern(query.q.as_deref().unwrap_or(""));
        let filter = "(email LIKE $1 ESCAPE '\\' OR LOWER(username) LIKE $1 ESCAPE '\\' \
                      OR LOWER(first_name || ' ' || last_name) LIKE $1 ESCAPE '\\')";
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM users WHERE {filter} ORDER BY email LIMIT $2 OFFSET $3"
        ))
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM users WHERE {filter}"))
            .bind(&pattern)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(Page {
            items: rows.iter().map(user_from).collect::<Result<_>>()?,
            total,
        })
    }

    /// Change a user.
    pub async fn update_user(&self, actor: &Actor, id: &str, patch: &UserPatch) -> Result<User> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let mut user = fetch_by(tx.conn(), "id", id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", id))?;
        let mut changed = Vec::new();
        if let Some(email) = &patch.email {
            user.email = checked_email(email)?;
            changed.push("email");
        }
        if let Some(username) = &patch.username {
            user.username = checked_name("username", username)?;
            changed.push("username");
        }
        if let Some(first) = &patch.first_name {
            user.first_name = first.clone();
            changed.push("first_name");
        }
        if let Some(last) = &patch.last_name {
            user.last_name = last.clone();
            changed.push("last_name");
        }
        if let Some(roles) = &patch.roles {
            user.roles = checked_roles(roles)?;
            changed.push("roles");
        }
        let deactivating = patch.active == Some(false) && user.active;
        if let Some(active) = patch.active {
            if active != user.active {
                changed.push("active");
            }
            user.active = active;
        }
        sqlx::query(
            "UPDATE users SET email = $2, username = $3, first_name = $4, last_name = $5, \
             roles = $6, updated_at = $7, \
             deactivated_at = CASE WHEN $8 = 1 THEN NULL ELSE COALESCE(deactivated_at, $7) END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(&user.email)
        .bind(&user.username)
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(serde_json::to_string(&user.roles).unwrap_or_default())
        .bind(now)
        .bind(i64::from(user.active))
        .execute(tx.conn())
        .await
        .map_err(|error| {
            StoreError::unique(error, || {
                "another user has that email or username".to_string()
            })
        })?;
        user.updated_at = now;
        if deactivating {
            revoke_user_credentials(tx.conn(), id, now, "user deactivated").await?;
        }
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "user.update", "user", id)
                .details(json!({"changed": changed, "roles": user.roles})),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Delete a user.
    pub async fn delete_user(&self, actor: &Actor, id: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin_write().await?;
        let user = fetch_by(tx.conn(), "id", id)
            .await?
            .ok_or_else(|| StoreError::not_found("user", id))?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        append(
            tx.conn(),
            now,
            &NewAuditEntry::new(actor, "user.delete", "user", id)
                .details(json!({"email": user.email})),
        )
        .await?;
        tx.commit().await
    }
}

impl Store {
    /// The user whose email or username is `login` (emails compare without case).
    pub async fn user_by_login(&self, login: &str) -> Result<Option<User>> {
        let login = login.trim();
        let mut conn = self.pool().acquire().await?;
        if let Some(user) = fetch_by(&mut conn, "email", &login.to_lowercase()).await? {
            return Ok(Some(user));
        }
        fetch_by(&mut conn, "username", login).await
    }

    /// Whether an active user holds the `admin` role.
    pub async fn admin_exists(&self) -> Result<bool> {
        Ok(self.active_admins_besides("").await? > 0)
    }

    /// How many active users other than `user_id` hold the `admin` role.
    pub async fn active_admins_besides(&self, user_id: &str) -> Result<i64> {
        // Roles are a JSON array of known names, so the quoted name matches only itself.
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users WHERE deactivated_at IS NULL \
             AND roles LIKE '%\"admin\"%' AND id <> $1",
        )
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("n")?)
    }
}
