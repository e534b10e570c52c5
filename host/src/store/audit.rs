//! The audit log: who did what, to what, and when; append-only and hash-chained.
//!
//! Entry `n` stores `hash_n = SHA-256("warden:audit" | hash_{n-1} | n | at | actor |
//! action | target kind | target id | details)`, each text length-prefixed, with
//! `hash_0` 32 zero bytes. The one-row `audit_head` table holds the last sequence number
//! and hash; every append updates it first, which serialises appends (a row lock in
//! PostgreSQL, the write lock in SQLite). Triggers refuse `UPDATE` and `DELETE` on the
//! log, so changing history takes dropping them, and [`Store::verify_audit`] then finds
//! the first entry whose hash does not follow: an edited, deleted, inserted or reordered
//! entry, or a head that does not match the last entry.
//!
//! Whoever can rewrite the whole database could also rewrite the whole chain; the head
//! hash that `warden audit verify` prints is what to record somewhere else to pin it.
//! Details never hold secrets: settings changes record which keys changed, not values.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use super::{Actor, Result, Store};

/// What to record.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// Who did it.
    pub actor: Actor,
    /// What they did (`zone.create`, `settings.set`, `module.exec`, …).
    pub action: String,
    /// What kind of thing it was done to.
    pub target_kind: String,
    /// Its id.
    pub target_id: String,
    /// Details (no secrets).
    pub details: Value,
}

impl NewAuditEntry {
    /// An entry with no details yet.
    pub fn new(actor: &Actor, action: &str, target_kind: &str, target_id: &str) -> Self {
        NewAuditEntry {
            actor: actor.clone(),
            action: action.to_string(),
            target_kind: target_kind.to_string(),
            target_id: target_id.to_string(),
            details: Value::Object(Default::default()),
        }
    }

    /// The same entry with `details`.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Sequence number, from 1.
    pub seq: i64,
    /// When, Unix ms.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Kind of target.
    pub target_kind: String,
    /// Target id.
    pub target_id: String,
    /// Details.
    pub details: Value,
    /// This entry's hash, hex.
    pub hash: String,
}

/// What verifying the chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// Entries checked.
    pub entries: i64,
    /// The head's hash, hex: record it elsewhere to pin the log as it is now.
    pub head: String,
    /// The first entry that breaks the chain, and how; `None` when the chain is whole.
    pub broken: Option<(i64, String)>,
}

fn entry_hash(
    prev: &[u8],
    seq: i64,
    at: i64,
    texts: [&str; 5], // actor, action, target kind, target id, details
) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"warden:audit");
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(at.to_be_bytes());
    for text in texts {
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize().to_vec()
}

/// Append `entry` at time `at` inside the caller's transaction; returns its sequence number.
pub(crate) async fn append(
    conn: &mut AnyConnection,
    at: i64,
    entry: &NewAuditEntry,
) -> Result<i64> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut *conn)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev: Vec<u8> = head.try_get("hash")?;
    let details = entry.details.to_string();
    let hash = entry_hash(
        &prev,
        seq,
        at,
        [
            &entry.actor.0,
            &entry.action,
            &entry.target_kind,
            &entry.target_id,
            &details,
        ],
    );
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, target_kind, target_id, details, \
         prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(seq)
    .bind(at)
    .bind(&entry.actor.0)
    .bind(&entry.action)
    .bind(&entry.target_kind)
    .bind(&entry.target_id)
    .bind(&details)
    .bind(prev)
    .bind(hash.clone())
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(hash)
        .execute(&mut *conn)
        .await?;
    Ok(seq)
}

const VERIFY_BATCH: i64 = 1000;

impl Store {
    /// Record `entry` on its own (an exec, a sign-in); returns its sequence number.
    pub async fn audit(&self, entry: &NewAuditEntry) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let seq = append(tx.conn(), self.now(), entry).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Record `entries`, each with the time it happened (Unix ms), in one transaction: the
    /// host's group commit for execs.
    pub async fn audit_all(&self, entries: &[(i64, NewAuditEntry)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (at, entry) in entries {
            append(tx.conn(), *at, entry).await?;
        }
        tx.commit().await
    }

    /// Entries after sequence number `after`, oldest first, at most `limit` (≤ 1,000).
    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, target_kind, target_id, details, hash \
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit.clamp(0, 1000))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                Ok(AuditEntry {
                    seq,
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target_kind: row.try_get("target_kind")?,
                    target_id: row.try_get("target_id")?,
                    details: super::json_column(row, "details", || format!("audit_log/{seq}"))?,
                    hash: hex::encode(row.try_get::<Vec<u8>, _>("hash")?),
                })
            })
            .collect()
    }

    /// Walk the whole chain and check every link and the head.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        let mut prev = vec![0_u8; 32];
        let mut expected_seq = 1_i64;
        let mut broken = None;
        'walk: loop {
            let rows = sqlx::query(
                "SELECT seq, at, actor, action, target_kind, target_id, details, prev_hash, \
                 hash FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
            )
            .bind(expected_seq)
            .bind(VERIFY_BATCH)
            .fetch_all(self.pool())
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                if seq != expected_seq {
                    broken = Some((expected_seq, format!("entry missing (next is {seq})")));
                    break 'walk;
                }
                let stored_prev: Vec<u8> = row.try_get("prev_hash")?;
                let stored: Vec<u8> = row.try_get("hash")?;
                let text = |column: &str| row.try_get::<String, _>(column);
                let computed = entry_hash(
                    &prev,
                    seq,
                    row.try_get("at")?,
                    [
                        &text("actor")?,
                        &text("action")?,
                        &text("target_kind")?,
                        &text("target_id")?,
                        &text("details")?,
                    ],
                );
                if stored_prev != prev {
                    broken = Some((seq, "does not follow the entry before it".to_string()));
                    break 'walk;
                }
                if stored != computed {
                    broken = Some((seq, "its content does not match its hash".to_string()));
                    break 'walk;
                }
                prev = stored;
                expected_seq += 1;
            }
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: Vec<u8> = head.try_get("hash")?;
        let entries = expected_seq - 1;
        if broken.is_none() && (head_seq != entries || head_hash != prev) {
            broken = Some((
                head_seq.max(entries),
                format!("the head (entry {head_seq}) does not match the last entry ({entries})"),
            ));
        }
        Ok(AuditVerification {
            entries,
            head: hex::encode(head_hash),
            broken,
        })
    }
}
