//! SQLite, the embedded default: one file under the data directory, written through WAL with
//! `synchronous=FULL` so that a committed transaction survives power loss.

use crate::{migrate, redact_url, sql, Result, StoreError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// How long a writer waits for another connection's write lock before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections for a file database: WAL lets readers proceed while one writer holds the lock.
const MAX_CONNECTIONS: u32 = 4;

/// The SQLite implementation of [`crate::Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database named by a `sqlite:PATH` or `sqlite::memory:` URL and
    /// applies pending migrations.
    ///
    /// `sqlite::memory:` is a private database that lives as long as the store: it uses one connection that
    /// is never recycled, for tests and throwaway runs.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL {:?}: {e}", redact_url(url))))?
            .create_if_missing(true)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = SqlitePoolOptions::new().acquire_timeout(BUSY_TIMEOUT * 2);
        let (options, pool_options) = if in_memory {
            // Every connection to `:memory:` would otherwise see its own empty database.
            let pool = pool_options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
            (options, pool)
        } else {
            (options.journal_mode(SqliteJournalMode::Wal), pool_options.max_connections(MAX_CONNECTIONS))
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open SQLite database {}: {e}", redact_url(url))))?;
        migrate::run_sqlite(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Starts a write transaction. `BEGIN IMMEDIATE` takes the write lock up front (waiting up to the busy
    /// timeout), so a transaction never fails half-way because another connection wrote first.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(Self::err("transaction"))
    }

    /// Closes every connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

sql::sql_store!(SqliteStore, "sqlite");
crate::audit::audit_store!(SqliteStore, "sqlite");
