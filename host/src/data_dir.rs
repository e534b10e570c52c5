//! The data directory: where a Warden installation keeps its SQLite database and its
//! master key file, and how the store is opened from it.
//!
//! ```text
//! warden-data/          mode 0700
//!   warden.db           the SQLite database (unless a PostgreSQL URL is configured)
//!   master.key          the master keys, mode 0600 (unless WARDEN_MASTER_KEYS is set)
//! ```

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::store::{KeySource, Store, StoreError};

/// The environment variable naming the data directory.
pub const DATA_DIR_VARIABLE: &str = "WARDEN_DATA_DIR";
/// The environment variable holding a database URL (`postgres://…` or `sqlite://…`).
pub const DATABASE_URL_VARIABLE: &str = "WARDEN_DATABASE_URL";
/// The data directory used when none is given.
pub const DEFAULT_DATA_DIR: &str = "warden-data";

/// Why the store could not be opened from the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// There is no database where one was expected.
    #[error(
        "no Warden database at {0}: is --data-dir right? (`warden serve` creates one on \
         first start)"
    )]
    NoDatabase(PathBuf),
    /// The directory could not be created or secured.
    #[error("data directory {path}: {error}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The keys or the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A data directory and, optionally, a database elsewhere.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    database_url: Option<String>,
}

impl DataDir {
    /// The data directory at `root`, with its database in it unless `database_url` is
    /// given.
    pub fn new(root: impl Into<PathBuf>, database_url: Option<String>) -> DataDir {
        DataDir {
            root: root.into(),
            database_url,
        }
    }

    /// The directory given, else `WARDEN_DATA_DIR`, else `./warden-data`; the database URL
    /// given, else `WARDEN_DATABASE_URL`, else SQLite in the directory.
    pub fn from_options(root: Option<PathBuf>, database_url: Option<String>) -> DataDir {
        let root = root
            .or_else(|| std::env::var_os(DATA_DIR_VARIABLE).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let database_url = database_url.or_else(|| std::env::var(DATABASE_URL_VARIABLE).ok());
        DataDir::new(root, database_url)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The master key file.
    pub fn key_file(&self) -> PathBuf {
        self.root.join("master.key")
    }

    /// The SQLite database file, when no other database is configured.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match &self.database_url {
            Some(_) => None,
            None => Some(self.root.join("warden.db")),
        }
    }

    /// Open the store. With `create`, a missing directory (mode 0700), key file (0600) and
    /// SQLite database are created; without it, each must exist.
    pub async fn open_store(&self, create: bool) -> Result<Store, DataDirError> {
        let io = |error| DataDirError::Io {
            path: self.root.clone(),
            error,
        };
        if create {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(io)?;
            let mode = std::fs::metadata(&self.root)
                .map_err(io)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "data directory {} has mode {:o}; 0700 is recommended",
                    self.root.display(),
                    mode & 0o777
                );
            }
        }
        let keys = KeySource::load(&self.key_file(), create).map_err(StoreError::from)?;
        let url = match (&self.database_url, self.sqlite_file()) {
            (Some(url), _) => url.clone(),
            (None, Some(file)) => {
                if !create && !file.is_file() {
                    return Err(DataDirError::NoDatabase(file));
                }
                format!("sqlite://{}", file.display())
            }
            (None, None) => return Err(DataDirError::NoDatabase(self.root.clone())),
        };
        Ok(Store::open(&url, keys).await?)
    }
}
