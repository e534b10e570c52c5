//! The host's Ed25519 keys that sign driver approvals. The private key is sealed like a
//! setting (`signing_keys/<id>/private_key`), so every host sharing the database signs with
//! the same key and key rotation re-encrypts it. Retired keys stay listed: attestations
//! they signed remain checkable.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, StoreError, new_id};
use crate::attestation::{PublicKey, SigningKey};
use crate::crypto::Binding;

/// A signing key as the API shows it: the public half only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SigningKeyInfo {
    /// `ed25519:<16 hex>`, as in each signature's `keyid`.
    pub keyid: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Retired (no longer signs), Unix ms.
    pub retired_at: Option<i64>,
}

fn binding(id: &str) -> Binding<'_> {
    Binding {
        table: "signing_keys",
        row: id,
        field: "private_key",
        level: "",
    }
}

impl Store {
    /// The key that signs approvals now: the newest one not retired, made at first use.
    pub async fn signing_key(&self) -> Result<SigningKey> {
        if let Some(key) = self.active_signing_key().await? {
            return Ok(key);
        }
        let mut tx = self.begin_write().await?;
        // Another writer may have made one while this one waited.
        if let Some(key) = self.active_signing_key().await? {
            return Ok(key);
        }
        let key = SigningKey::generate().map_err(|e| StoreError::Corrupt {
            record: "signing_keys".to_string(),
            why: e.to_string(),
        })?;
        let id = new_id("signkey");
        let ring = self.keys().current()?;
        let sealed = ring.seal(&binding(&id), key.pkcs8())?;
        sqlx::query(
            "INSERT INTO signing_keys (id, public_key, private_key, key_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(key.public_key().to_base64())
        .bind(sealed)
        .bind(i64::from(ring.active().id().0))
        .bind(self.now())
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn active_signing_key(&self) -> Result<Option<SigningKey>> {
        let row = sqlx::query(
            "SELECT id, public_key, private_key FROM signing_keys WHERE retired_at IS NULL \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let sealed: Vec<u8> = row.try_get("private_key")?;
        let pkcs8 = self.keys().open(&binding(&id), &sealed)?;
        let corrupt = |why: String| StoreError::Corrupt {
            record: format!("signing_keys/{id}"),
            why,
        };
        let key = SigningKey::from_pkcs8(&pkcs8).map_err(|e| corrupt(e.to_string()))?;
        let public: String = row.try_get("public_key")?;
        if PublicKey::parse(&public).ok() != Some(key.public_key()) {
            return Err(corrupt(
                "the public key does not belong to the private key".to_string(),
            ));
        }
        Ok(Some(key))
    }

    /// Every signing key's public half, newest first, retired ones included.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyInfo>> {
        let rows = sqlx::query(
            "SELECT public_key, created_at, retired_at FROM signing_keys \
             ORDER BY created_at DESC, id DESC",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let public_key: String = row.try_get("public_key")?;
                let keyid = PublicKey::parse(&public_key)
                    .map_err(|e| StoreError::Corrupt {
                        record: "signing_keys".to_string(),
                        why: e.to_string(),
                    })?
                    .id();
                Ok(SigningKeyInfo {
                    keyid,
                    public_key,
                    created_at: row.try_get("created_at")?,
                    retired_at: row.try_get("retired_at")?,
                })
            })
            .collect()
    }
}
