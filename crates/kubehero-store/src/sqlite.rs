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
    /// Direct connections for the audit log's hot paths, for a file database.
    bulk: Option<DirectSqlite>,
    /// The `-wal` file of a file database, checked after every commit.
    wal: Option<std::path::PathBuf>,
    /// Set once the write-ahead log was found deleted under us: every later write is refused.
    wal_lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Direct rusqlite connections to the same file for the audit log's two hot paths: appends (one statement
/// per row costs ~40 µs through sqlx's worker thread, a few µs here) and long sequential reads (sqlx hands
/// rows over one at a time, capping a scan near 300k rows/s). They share the bundled SQLite library with
/// sqlx; appends take the same `BEGIN IMMEDIATE` write lock as every other writer, so they serialise with the
/// pool and with other processes, and run with the same `synchronous=FULL` durability.
#[derive(Clone)]
struct DirectSqlite {
    path: std::path::PathBuf,
    conn: std::sync::Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
    writer: std::sync::Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
}

impl std::fmt::Debug for DirectSqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSqlite").field("path", &self.path).finish()
    }
}

impl DirectSqlite {
    fn append(
        &self,
        events: &[kubehero_core::AuditEvent],
        sealer: &dyn kubehero_core::Sealer,
    ) -> rusqlite::Result<Vec<kubehero_core::SealedRow>> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = rusqlite::Connection::open_with_flags(&self.path, flags)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else { return Ok(Vec::new()) };
        let result = Self::append_on(conn, events, sealer);
        if result.is_err() {
            *guard = None;
        }
        result
    }

    fn append_on(
        conn: &mut rusqlite::Connection,
        events: &[kubehero_core::AuditEvent],
        sealer: &dyn kubehero_core::Sealer,
    ) -> rusqlite::Result<Vec<kubehero_core::SealedRow>> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (mut seq, mut mac): (i64, String) = tx.query_row(crate::audit::HEAD, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut sealed = Vec::with_capacity(events.len());
        {
            let mut stmt = tx.prepare_cached(crate::audit::INSERT_ROW_QMARK)?;
            for event in events {
                seq += 1;
                let r = sealer.seal(seq, &mac, event);
                stmt.execute(rusqlite::params![
                    r.seq,
                    r.event_id,
                    r.time_ms,
                    r.actor_sub,
                    r.action,
                    r.outcome.as_str(),
                    r.cluster,
                    r.key_id,
                    r.mac,
                    r.body
                ])?;
                mac.clone_from(&r.mac);
                sealed.push(r);
            }
        }
        tx.execute(crate::audit::SET_HEAD_QMARK, rusqlite::params![seq, mac])?;
        tx.commit()?;
        Ok(sealed)
    }

    /// Rows after `after`, with their column digest when `columns`.
    fn read(&self, after: i64, limit: i64, columns: bool) -> rusqlite::Result<Vec<crate::StoredAuditRow>> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = rusqlite::Connection::open_with_flags(&self.path, flags)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_ref() else { return Ok(Vec::new()) };
        let sql = if columns { crate::audit::ROWS_WITH_COLUMNS_QMARK } else { crate::audit::ROWS_AFTER_QMARK };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params![after, limit], |r| {
            Ok(crate::StoredAuditRow {
                seq: r.get(0)?,
                key_id: r.get(1)?,
                mac: r.get(2)?,
                body: r.get(3)?,
                columns: if columns { Some(column_digest(r)?) } else { None },
            })
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
        Self::open_as(url, crate::Open::Serve).await
    }

    /// Opens the database as `how` says: to serve (created if missing, checked with `PRAGMA quick_check`,
    /// migrated), or an existing one as it is (read-only tools).
    pub async fn open_as(url: &str, how: crate::Open) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL {:?}: {e}", redact_url(url))))?
            .create_if_missing(how == crate::Open::Serve)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = SqlitePoolOptions::new()
            .acquire_timeout(BUSY_TIMEOUT * 2)
            // A COMMIT that fails (a full disk) can leave sqlx counting a transaction that SQLite already rolled
            // back; such a connection would refuse every later BEGIN. A round trip (which runs after the
            // rollback sqlx queued on release) and then the count decide whether the connection is kept.
            .after_release(|conn, _| {
                Box::pin(async move {
                    use sqlx::{Connection, Executor};
                    Ok(conn.execute("SELECT 1").await.is_ok() && !conn.is_in_transaction())
                })
            });
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
        match how {
            crate::Open::Serve => {
                if !in_memory {
                    quick_check(&pool, url).await?;
                }
                migrate::run_sqlite(&pool).await?;
            }
            crate::Open::Existing => {
                let current = sqlx::query_scalar(migrate::CURRENT_VERSION).fetch_one(&pool).await;
                migrate::check_current(current, "sqlite", migrate::SQLITE)?
            }
        }
        let bulk = (!in_memory).then(|| DirectSqlite {
            path: options_path(url),
            conn: std::sync::Arc::new(std::sync::Mutex::new(None)),
            writer: std::sync::Arc::new(std::sync::Mutex::new(None)),
        });
        let wal = bulk.as_ref().map(|b| std::path::PathBuf::from(format!("{}-wal", b.path.display())));
        Ok(SqliteStore { pool, bulk, wal, wal_lost: Default::default() })
    }

    /// After a commit, before it is acknowledged: in WAL mode the `-wal` file exists from the first write
    /// until the last connection closes, and ours stay open. If it is gone, someone deleted it under the
    /// running server: SQLite keeps writing to the unlinked file, and everything since is lost at the next
    /// start. Refuse the write (and every later one) rather than acknowledge what will vanish.
    fn check_after_commit(&self) -> Result<()> {
        let Some(wal) = &self.wal else { return Ok(()) };
        if !self.wal_lost.load(std::sync::atomic::Ordering::Relaxed) && wal.exists() {
            return Ok(());
        }
        if !self.wal_lost.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(wal = %wal.display(), "the SQLite write-ahead log was deleted under the running server; refusing every write until restart");
        }
        Err(StoreError::Unavailable(format!(
            "the database's write-ahead log {} was deleted while the server ran, so writes since then would be lost; \
             writes are refused. Fix: restart kubehero (the database as of the deletion is kept)",
            wal.display()
        )))
    }

    /// Starts a write transaction. `BEGIN IMMEDIATE` takes the write lock up front (waiting up to the busy
    /// timeout), so a transaction never fails half-way because another connection wrote first.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(Self::err("transaction"))
    }

    /// Appends through the direct connection of a file database (`None`: use the sqlx path).
    async fn append_audit_direct(
        &self,
        events: &[kubehero_core::AuditEvent],
        sealer: &std::sync::Arc<dyn kubehero_core::Sealer>,
    ) -> Option<Result<Vec<kubehero_core::SealedRow>>> {
        let bulk = self.bulk.clone()?;
        let (events, sealer) = (events.to_vec(), sealer.clone());
        let done = tokio::task::spawn_blocking(move || bulk.append(&events, &*sealer)).await;
        Some(match done {
            Ok(Ok(rows)) => self.check_after_commit().map(|()| rows),
            Ok(Err(e)) => Err(rusqlite_error("audit append", e)),
            Err(e) => Err(StoreError::Unavailable(format!("sqlite audit append task: {e}"))),
        })
    }

    /// Inserts sealed audit rows, a multi-row statement per chunk.
    async fn insert_audit_rows(conn: &mut sqlx::SqliteConnection, rows: &[kubehero_core::SealedRow]) -> Result<()> {
        for chunk in rows.chunks(crate::audit::SQLITE_INSERT_CHUNK) {
            let sql = crate::audit::insert_rows_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.seq)
                    .bind(&r.event_id)
                    .bind(r.time_ms)
                    .bind(&r.actor_sub)
                    .bind(&r.action)
                    .bind(r.outcome.as_str())
                    .bind(&r.cluster)
                    .bind(&r.key_id)
                    .bind(&r.mac)
                    .bind(&r.body);
            }
            q.execute(&mut *conn).await.map_err(Self::err("audit events"))?;
        }
        Ok(())
    }

    /// A page of audit rows through the direct connection of a file database (`None`: use the sqlx path).
    async fn read_audit_rows_direct(&self, after: i64, limit: i64) -> Option<Result<Vec<crate::StoredAuditRow>>> {
        self.read_direct(after, limit, false).await
    }

    async fn read_audit_rows_with_columns_direct(
        &self,
        after: i64,
        limit: i64,
    ) -> Option<Result<Vec<crate::StoredAuditRow>>> {
        self.read_direct(after, limit, true).await
    }

    async fn read_direct(&self, after: i64, limit: i64, columns: bool) -> Option<Result<Vec<crate::StoredAuditRow>>> {
        let bulk = self.bulk.clone()?;
        Some(match tokio::task::spawn_blocking(move || bulk.read(after, limit, columns)).await {
            Ok(rows) => rows.map_err(|e| rusqlite_error("audit rows", e)),
            Err(e) => Err(StoreError::Unavailable(format!("sqlite audit read task: {e}"))),
        })
    }

    /// Closes every connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The column digest of a row selected by [`crate::audit::ROWS_WITH_COLUMNS_QMARK`], read from SQLite's own
/// buffers (one string for the six columns).
fn column_digest(r: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    let text = |i: usize| -> rusqlite::Result<Option<&str>> {
        match r.get_ref(i)? {
            rusqlite::types::ValueRef::Null => Ok(None),
            v => {
                v.as_str().map(Some).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, v.data_type(), e.into()))
            }
        }
    };
    let values = kubehero_core::ColumnValues {
        event_id: text(4)?,
        time_ms: r.get(5)?,
        actor_issuer: None,
        actor_sub: text(6)?,
        action: text(7)?,
        outcome: text(8)?,
        cluster: text(9)?,
    };
    Ok(values.digest())
}

sql::sql_store!(SqliteStore, "sqlite");
crate::audit::audit_store!(SqliteStore, "sqlite");
crate::session::session_store!(SqliteStore);
crate::change::change_store!(SqliteStore, sqlx::SqliteConnection);
crate::device::device_store!(SqliteStore, sqlx::SqliteConnection, "");
crate::agent::agent_store!(SqliteStore);
crate::access::access_store!(SqliteStore);
crate::shares::share_store!(SqliteStore);
crate::lease::lease_store!(SqliteStore);
crate::directory::directory_store!(SqliteStore, sqlx::SqliteConnection, "", "");

/// The file named by a `sqlite:` URL (`sqlite:PATH`, `sqlite://PATH`, with or without `?options`).
fn options_path(url: &str) -> std::path::PathBuf {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    std::path::PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

/// Maps a rusqlite error like [`crate::sql::map_err`] maps sqlx's: unique violations are `AlreadyExists`,
/// everything else (busy, I/O, read-only) `Unavailable`.
fn rusqlite_error(what: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::AlreadyExists(format!("{what}: {e}")),
        _ => StoreError::Unavailable(format!("sqlite {what}: {e}")),
    }
}

/// `PRAGMA quick_check`: a damaged file is refused at start-up (with the fix) instead of served.
async fn quick_check(pool: &sqlx::SqlitePool, url: &str) -> Result<()> {
    let findings: std::result::Result<Vec<String>, sqlx::Error> =
        sqlx::query_scalar("PRAGMA quick_check").fetch_all(pool).await;
    let problem = match findings {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => return Ok(()),
        Ok(lines) => lines.into_iter().next().unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    let path = options_path(url).display().to_string();
    Err(StoreError::Corrupt(format!(
        "the SQLite database {path} is damaged (PRAGMA quick_check: {problem}). Fix: stop every kubehero process \
         and restore the data directory from a backup, or salvage it with `sqlite3 {path} .recover | sqlite3 \
         recovered.db` and set KUBEHERO_DATABASE_URL=sqlite:recovered.db"
    )))
}
