//! PostgreSQL, for several control-plane replicas sharing one database.
//!
//! Every connection runs with `synchronous_commit=on`, so a commit is durable (flushed to the WAL) before the
//! server answers. Acquiring a connection gives up after [`ACQUIRE_TIMEOUT`]: a dead database turns into
//! `Unavailable` within seconds instead of a request that hangs.

use crate::{migrate, redact_url, sql, Result, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// Upper bound on waiting for a pooled or new connection (including connecting to a dead server).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 10;

/// The PostgreSQL implementation of [`crate::Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database named by a `postgres://` URL and applies pending migrations (once, even
    /// when several replicas start together).
    pub async fn open(url: &str) -> Result<PostgresStore> {
        Self::open_as(url, crate::Open::Serve).await
    }

    /// Opens the database to serve (migrated) or as it is (read-only tools).
    pub async fn open_as(url: &str, how: crate::Open) -> Result<PostgresStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL {}: {e}", redact_url(url))))?
            .application_name("kubehero");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET synchronous_commit = on").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {}: {e}", redact_url(url)))
            })?;
        match how {
            crate::Open::Serve => migrate::run_postgres(&pool).await?,
            crate::Open::Existing => {
                let current = sqlx::query_scalar(migrate::CURRENT_VERSION).fetch_one(&pool).await;
                migrate::check_current(current, "postgres", migrate::POSTGRES)?
            }
        }
        Ok(PostgresStore { pool })
    }

    /// Nothing to check after a PostgreSQL commit (its server owns its files).
    fn check_after_commit(&self) -> Result<()> {
        Ok(())
    }

    /// Starts a transaction (READ COMMITTED). Writers of one policy serialise on the row lock taken by the
    /// transaction's first statement, an `UPDATE` of that row.
    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(Self::err("transaction"))
    }

    /// PostgreSQL appends through sqlx (the shared path).
    async fn append_audit_direct(
        &self,
        _events: &[kubehero_core::AuditEvent],
        _sealer: &std::sync::Arc<dyn kubehero_core::Sealer>,
    ) -> Option<Result<Vec<kubehero_core::SealedRow>>> {
        None
    }

    /// Inserts sealed audit rows with one statement (arrays unnested server-side).
    async fn insert_audit_rows(conn: &mut sqlx::PgConnection, rows: &[kubehero_core::SealedRow]) -> Result<()> {
        let col = |f: fn(&kubehero_core::SealedRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
        sqlx::query(crate::audit::INSERT_ROWS_UNNEST)
            .bind(rows.iter().map(|r| r.seq).collect::<Vec<i64>>())
            .bind(col(|r| r.event_id.clone()))
            .bind(rows.iter().map(|r| r.time_ms).collect::<Vec<i64>>())
            .bind(col(|r| r.actor_sub.clone()))
            .bind(col(|r| r.action.clone()))
            .bind(col(|r| r.outcome.as_str().to_string()))
            .bind(rows.iter().map(|r| r.cluster.clone()).collect::<Vec<Option<String>>>())
            .bind(col(|r| r.key_id.clone()))
            .bind(col(|r| r.mac.clone()))
            .bind(col(|r| r.body.clone()))
            .execute(&mut *conn)
            .await
            .map_err(Self::err("audit events"))?;
        Ok(())
    }

    /// PostgreSQL reads audit pages through sqlx (the shared path).
    async fn read_audit_rows_direct(&self, _after: i64, _limit: i64) -> Option<Result<Vec<crate::StoredAuditRow>>> {
        None
    }

    async fn read_audit_rows_with_columns_direct(
        &self,
        _after: i64,
        _limit: i64,
    ) -> Option<Result<Vec<crate::StoredAuditRow>>> {
        None
    }

    /// Closes every connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

sql::sql_store!(PostgresStore, "postgres");
crate::audit::audit_store!(PostgresStore, "postgres");
crate::session::session_store!(PostgresStore);
crate::change::change_store!(PostgresStore, sqlx::PgConnection);
crate::device::device_store!(PostgresStore, sqlx::PgConnection, " FOR UPDATE");
crate::agent::agent_store!(PostgresStore);
crate::access::access_store!(PostgresStore);
crate::shares::share_store!(PostgresStore);
crate::lease::lease_store!(PostgresStore);
crate::directory::directory_store!(PostgresStore, sqlx::PgConnection, " FOR UPDATE", " FOR SHARE");
