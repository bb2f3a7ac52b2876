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
    /// Bulk reads of the audit log (verify, export, forward) for a file database.
    bulk: Option<BulkReader>,
}

/// A read-only rusqlite connection to the same file, used for long sequential reads of the audit log: sqlx
/// hands rows over from its worker thread one at a time, which caps a full scan at about 300k rows/s; a direct
/// read runs at several times that. It shares the bundled SQLite library with sqlx and only ever reads (WAL
/// lets it read while the pool writes).
#[derive(Clone)]
struct BulkReader {
    path: std::path::PathBuf,
    conn: std::sync::Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
}

impl std::fmt::Debug for BulkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkReader").field("path", &self.path).finish()
    }
}

impl BulkReader {
    fn read(&self, after: i64, limit: i64) -> rusqlite::Result<Vec<crate::StoredAuditRow>> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = rusqlite::Connection::open_with_flags(&self.path, flags)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_ref() else { return Ok(Vec::new()) };
        let mut stmt = conn.prepare_cached(crate::audit::ROWS_AFTER_QMARK)?;
        let rows = stmt.query_map(rusqlite::params![after, limit], |r| {
            Ok(crate::StoredAuditRow { seq: r.get(0)?, key_id: r.get(1)?, mac: r.get(2)?, body: r.get(3)? })
        })?;
        let result: rusqlite::Result<Vec<crate::StoredAuditRow>> = rows.collect();
        if result.is_err() {
            // Reopen next time (the file may have been replaced).
            drop(stmt);
            *guard = None;
        }
        result
    }
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
        let bulk = (!in_memory)
            .then(|| BulkReader { path: options_path(url), conn: std::sync::Arc::new(std::sync::Mutex::new(None)) });
        Ok(SqliteStore { pool, bulk })
    }

    /// Starts a write transaction. `BEGIN IMMEDIATE` takes the write lock up front (waiting up to the busy
    /// timeout), so a transaction never fails half-way because another connection wrote first.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(Self::err("transaction"))
    }

    /// A page of audit rows after `after`, ascending.
    async fn read_audit_rows(&self, after: i64, limit: i64) -> Result<Vec<crate::StoredAuditRow>> {
        if let Some(bulk) = self.bulk.clone() {
            return tokio::task::spawn_blocking(move || bulk.read(after, limit))
                .await
                .map_err(|e| StoreError::Unavailable(format!("sqlite audit read task: {e}")))?
                .map_err(|e| StoreError::Unavailable(format!("sqlite audit rows: {e}")));
        }
        let rows = sqlx::query_as(crate::audit::ROWS_AFTER)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err("audit rows"))?;
        Ok(crate::audit::to_rows(rows))
    }

    /// Closes every connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

sql::sql_store!(SqliteStore, "sqlite");
crate::audit::audit_store!(SqliteStore, "sqlite");

/// The file named by a `sqlite:` URL (`sqlite:PATH`, `sqlite://PATH`, with or without `?options`).
fn options_path(url: &str) -> std::path::PathBuf {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    std::path::PathBuf::from(rest.split('?').next().unwrap_or(rest))
}
