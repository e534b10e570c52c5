//! The store: the building model, settings, device history and the audit log, in SQLite
//! (the embedded default) or PostgreSQL, through one implementation on sqlx's `Any`
//! driver. This module is the only place in the host that writes SQL.
//!
//! One query text serves both databases: parameters are written `$1`, `$2`, … (which
//! SQLite accepts too), times are Unix milliseconds in `BIGINT` columns, JSON is text and
//! sealed values are blobs. The dialects differ only in their migrations
//! (`host/migrations/{sqlite,postgres}`).
//!
//! Every change is one transaction that also appends its audit entry, so a change and its
//! record in the audit log land together or not at all. SQLite allows one writer at a
//! time: the store serialises its own write transactions so they wait for each other in
//! order instead of failing with "database is locked". Settings are sealed with
//! [`crate::crypto`] before they reach the database and opened after, bound to their
//! table, row, field and level.

mod audit;
mod builds;
mod drivers;
mod history;
mod keys;
mod model;
mod modules;
mod repositories;
mod settings;
mod sign_in;
mod signing_keys;
mod systems;
mod users;
mod zones;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use audit::{AuditEntry, AuditVerification, NewAuditEntry};
pub use builds::{
    BuildJob, BuildOutcome, BuildState, MAX_BUILD_OUTPUT, checked_commit, output_tail,
};
pub use history::{HistoryReport, Transition};
pub use keys::{KeySource, RotationReport};
pub use model::*;
pub use modules::ModuleFilter;
pub use repositories::{NewRepository, RepositoryCredentials, RepositoryRecord, checked_url};
pub use settings::{SettingsRecord, SettingsVersion};
pub use sign_in::*;
pub use signing_keys::SigningKeyInfo;

use crate::crypto::{CryptoError, KeyError};

/// Settings versions kept per record, besides the current one.
pub const SETTINGS_VERSIONS_KEPT: i64 = 50;

/// The default time device history is kept.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(31 * 24 * 60 * 60);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked for (`zone`, `system`, …).
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The input is unusable; `field` names the part.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The change conflicts with what is stored (a duplicate, or a record still in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A sealed record could not be opened or sealed; names the record.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The master keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// What the database holds is not what this host wrote (names the record).
    #[error("corrupt record {record}: {why}")]
    Corrupt {
        /// The record.
        record: String,
        /// What is wrong.
        why: String,
    },
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: &str) -> StoreError {
        StoreError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// A database error that a unique constraint raised becomes a conflict naming `what`.
    pub(crate) fn unique(error: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
            _ => StoreError::Database(error),
        }
    }
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// The store's clock, in Unix milliseconds. Tests set it; the host uses the system's.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `millis` until set.
    pub fn manual(millis: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(millis))),
        }
    }

    /// Set a manual clock (a system clock ignores it).
    pub fn set(&self, millis: i64) {
        if let Some(manual) = &self.manual {
            manual.store(millis, Ordering::SeqCst);
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now(&self) -> i64 {
        match &self.manual {
            Some(manual) => manual.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| {
                    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                }),
        }
    }
}

/// The store. Cheap to clone; clones share the pool, the keys and the writer lock.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    keys: Arc<KeySource>,
    clock: Clock,
    /// Serialises write transactions on SQLite (see the module docs).
    writer: Option<Arc<Mutex<()>>>,
}

/// A write transaction, holding the writer lock where there is one.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Any>,
    _writer: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Connect to `url` (`sqlite:///path/warden.db`, `sqlite://relative.db`,
    /// `postgres://user@host/db`), create a SQLite file if there is none, and bring the
    /// schema up to date.
    pub async fn open(url: &str, keys: KeySource) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::invalid(
                "database_url",
                "expected a sqlite: or postgres: URL",
            ));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets readers go on while one writer commits; it is a property of the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            keys: Arc::new(keys),
            clock: Clock::system(),
            writer: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
        })
    }

    /// The same store with another clock.
    pub fn with_clock(mut self, clock: Clock) -> Store {
        self.clock = clock;
        self
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The master keys the store seals with.
    pub fn keys(&self) -> &KeySource {
        &self.keys
    }

    /// Now, by the store's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Close every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        let writer = match &self.writer {
            Some(lock) => Some(Arc::clone(lock).lock_owned().await),
            None => None,
        };
        let tx = self.pool.begin().await?;
        Ok(WriteTx {
            tx,
            _writer: writer,
        })
    }
}

/// A new id: `prefix-` and 12 random letters and digits (PlaceOS's shape, `sys-…`).
pub(crate) fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(prefix.len() + 13);
    id.push_str(prefix);
    id.push('-');
    for _ in 0..12 {
        let index = fastrand::usize(..ALPHABET.len());
        id.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'0')));
    }
    id
}

/// A JSON text column parsed, or a `Corrupt` error naming the record.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
    record: impl FnOnce() -> String,
) -> Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|error| StoreError::Corrupt {
        record: record(),
        why: format!("{column} is not the JSON this host writes: {error}"),
    })
}

/// One table listed by a text column: which, and how its rows are read.
pub(crate) struct Listing<T> {
    /// The table.
    pub table: &'static str,
    /// The columns selected, as `from_row` reads them.
    pub columns: &'static str,
    /// The column `q` must occur in (case-insensitive).
    pub matched: &'static str,
    /// `ORDER BY` of the page.
    pub order: &'static str,
    /// A row as the record.
    pub from_row: fn(&AnyRow) -> Result<T>,
}

impl Store {
    /// The page `query` asks for of `listing`'s rows whose matched column contains
    /// `query.q`, with the total over every page.
    pub(crate) async fn list_matching<T>(
        &self,
        listing: &Listing<T>,
        query: &ListQuery,
    ) -> Result<Page<T>> {
        let Listing {
            table,
            columns,
            matched,
            order,
            from_row,
        } = listing;
        let (limit, offset) = query.bounds();
        let pattern = like_pattern(query.q.as_deref().unwrap_or(""));
        let filter = format!("FROM {table} WHERE LOWER({matched}) LIKE $1 ESCAPE '\\'");
        let rows = sqlx::query(&format!(
            "SELECT {columns} {filter} ORDER BY {order} LIMIT $2 OFFSET $3"
        ))
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n {filter}"))
            .bind(&pattern)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        Ok(Page {
            items: rows.iter().map(from_row).collect::<Result<_>>()?,
            total,
        })
    }
}

/// `q` as a case-insensitive `LIKE` pattern matching it anywhere.
pub(crate) fn like_pattern(q: &str) -> String {
    let mut pattern = String::from("%");
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
