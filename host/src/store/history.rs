//! Device history: every online/offline transition of every module, kept for a retention
//! period and pruned, with uptime over any time range.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store};

/// One transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Transition {
    /// When, Unix ms.
    pub at: i64,
    /// Online after it.
    pub online: bool,
    /// Why, when known (`connected`, `crashed: …`, `stopped`).
    pub reason: String,
}

/// A module's history over a time range.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryReport {
    /// The module.
    pub module_id: String,
    /// Range start, Unix ms (inclusive).
    pub from: i64,
    /// Range end, Unix ms (exclusive).
    pub to: i64,
    /// The state at `from` (the last transition before it), if one is recorded.
    pub initial: Option<bool>,
    /// Transitions inside the range, oldest first.
    pub transitions: Vec<Transition>,
    /// Time online within the range, ms.
    pub online_ms: i64,
    /// Time within the range whose state is known (after the first recorded transition), ms.
    pub known_ms: i64,
    /// `online_ms` as a percentage of `known_ms`; `None` when nothing is known.
    pub uptime_percent: Option<f64>,
}

/// The most transitions one report returns.
pub const MAX_TRANSITIONS: i64 = 10_000;

/// Rows per `INSERT` statement of a batch (4 parameters each, well within both
/// databases' parameter limits).
pub const INSERT_ROWS: usize = 250;

/// Online time and known time within `[from, to)`, given the state at `from` and the
/// transitions inside the range in order.
pub(crate) fn uptime(
    from: i64,
    to: i64,
    initial: Option<bool>,
    transitions: &[Transition],
) -> (i64, i64) {
    let mut online_ms = 0;
    let mut known_ms = 0;
    let mut state = initial;
    let mut since = from;
    for transition in transitions {
        let at = transition.at.clamp(from, to);
        if let Some(online) = state {
            known_ms += at - since;
            if online {
                online_ms += at - since;
            }
        }
        state = Some(transition.online);
        since = at;
    }
    if let Some(online) = state {
        known_ms += to - since;
        if online {
            online_ms += to - since;
        }
    }
    (online_ms, known_ms)
}

impl Store {
    /// Record that `module` went online or offline now.
    pub async fn record_transition(&self, module: &str, online: bool, reason: &str) -> Result<()> {
        self.record_transition_at(module, online, reason, self.now())
            .await
    }

    /// Record a transition at `at` (Unix ms).
    pub async fn record_transition_at(
        &self,
        module: &str,
        online: bool,
        reason: &str,
        at: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO module_history (module_id, at, online, reason) VALUES ($1, $2, $3, $4)",
        )
        .bind(module)
        .bind(at)
        .bind(i64::from(online))
        .bind(reason)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    /// Record many transitions in one transaction (the host batches them), written
    /// 250 rows per statement.
    pub async fn record_transitions(&self, batch: &[(String, bool, String, i64)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for rows in batch.chunks(INSERT_ROWS) {
            let values: Vec<String> = (0..rows.len())
                .map(|i| {
                    let p = i * 4;
                    format!("(${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4)
                })
                .collect();
            let sql = format!(
                "INSERT INTO module_history (module_id, at, online, reason) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (module, online, reason, at) in rows {
                query = query
                    .bind(module.clone())
                    .bind(*at)
                    .bind(i64::from(*online))
                    .bind(reason.clone());
            }
            query.execute(tx.conn()).await?;
        }
        tx.commit().await
    }

    /// `module`'s history within `[from, to)` with its uptime.
    pub async fn module_history(&self, module: &str, from: i64, to: i64) -> Result<HistoryReport> {
        let to = to.max(from);
        let before = sqlx::query(
            "SELECT online FROM module_history WHERE module_id = $1 AND at < $2 \
             ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(module)
        .bind(from)
        .fetch_optional(self.pool())
        .await?;
        let initial = match before {
            Some(row) => Some(row.try_get::<i64, _>("online")? != 0),
            None => None,
        };
        let rows = sqlx::query(
            "SELECT at, online, reason FROM module_history \
             WHERE module_id = $1 AND at >= $2 AND at < $3 ORDER BY at, id LIMIT $4",
        )
        .bind(module)
        .bind(from)
        .bind(to)
        .bind(MAX_TRANSITIONS)
        .fetch_all(self.pool())
        .await?;
        let transitions = rows
            .iter()
            .map(|row| {
                Ok(Transition {
                    at: row.try_get("at")?,
                    online: row.try_get::<i64, _>("online")? != 0,
                    reason: row.try_get("reason")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (online_ms, known_ms) = uptime(from, to, initial, &transitions);
        Ok(HistoryReport {
            module_id: module.to_string(),
            from,
            to,
            initial,
            transitions,
            online_ms,
            known_ms,
            uptime_percent: (known_ms > 0).then(|| online_ms as f64 * 100.0 / known_ms as f64),
        })
    }

    /// Delete transitions older than `now - retention_ms`, keeping each module's last one
    /// before that point so its state at the start of the kept period stays known.
    /// Returns how many were deleted.
    pub async fn prune_history(&self, now: i64, retention_ms: i64) -> Result<u64> {
        let cutoff = now.saturating_sub(retention_ms);
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "DELETE FROM module_history WHERE at < $1 AND id NOT IN \
             (SELECT MAX(id) FROM module_history WHERE at < $1 GROUP BY module_id)",
        )
        .bind(cutoff)
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(at: i64, online: bool) -> Transition {
        Transition {
            at,
            online,
            reason: String::new(),
        }
    }

    #[test]
    fn uptime_counts_online_time_within_the_range() {
        // Online from 0, offline at 30, online at 60; range [0, 100).
        let transitions = [t(0, true), t(30, false), t(60, true)];
        assert_eq!(uptime(0, 100, None, &transitions), (70, 100));
        // State before the range is carried in; nothing known before the first record.
        assert_eq!(uptime(0, 100, Some(false), &[t(50, true)]), (50, 100));
        assert_eq!(uptime(0, 100, None, &[t(50, true)]), (50, 50));
        assert_eq!(uptime(0, 100, None, &[]), (0, 0));
        assert_eq!(uptime(0, 100, Some(true), &[]), (100, 100));
    }
}
