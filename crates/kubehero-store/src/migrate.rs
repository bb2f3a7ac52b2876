//! A tiny versioned migration runner.
//!
//! Each backend has an ordered list of `(version, name, sql)` migrations embedded in the binary. Applied
//! versions are recorded in `schema_migrations`; pending ones are applied in order, each in its own
//! transaction together with its `schema_migrations` row, so a crash leaves the schema at a known version.
//! A database whose newest version is unknown to this binary (written by a newer KubeHero) is refused.
//!
//! Several replicas may start at once against one PostgreSQL database: every migration transaction first
//! takes a transaction-scoped advisory lock and re-reads the current version, so each migration runs once.
//! On SQLite the transaction starts with `BEGIN IMMEDIATE`, which takes the database write lock up front.

use crate::{Result, StoreError};
use sqlx::{PgPool, SqlitePool};

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Strictly increasing, starting at 1.
    pub version: i64,
    pub name: &'static str,
    /// One or more statements, executed as a script.
    pub sql: &'static str,
}

/// SQLite migrations, oldest first.
pub(crate) const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("migrations/sqlite/0001_init.sql") },
    Migration { version: 2, name: "audit", sql: include_str!("migrations/sqlite/0002_audit.sql") },
    Migration { version: 3, name: "sessions", sql: include_str!("migrations/sqlite/0003_sessions.sql") },
    Migration { version: 4, name: "devices", sql: include_str!("migrations/sqlite/0004_devices.sql") },
    Migration { version: 5, name: "directory", sql: include_str!("migrations/sqlite/0005_directory.sql") },
    Migration {
        version: 6,
        name: "sessions_by_email",
        sql: include_str!("migrations/sqlite/0006_sessions_by_email.sql"),
    },
    Migration { version: 7, name: "bounded_sign_in", sql: include_str!("migrations/sqlite/0007_bounded_sign_in.sql") },
    Migration { version: 8, name: "agents", sql: include_str!("migrations/sqlite/0008_agents.sql") },
    Migration { version: 9, name: "issuer", sql: include_str!("migrations/sqlite/0009_issuer.sql") },
    Migration { version: 10, name: "binding_expiry", sql: include_str!("migrations/sqlite/0010_binding_expiry.sql") },
    Migration { version: 11, name: "access_requests", sql: include_str!("migrations/sqlite/0011_access_requests.sql") },
    Migration {
        version: 12,
        name: "shares_breakglass",
        sql: include_str!("migrations/sqlite/0012_shares_breakglass.sql"),
    },
    Migration { version: 13, name: "leases", sql: include_str!("migrations/sqlite/0013_leases.sql") },
    Migration { version: 14, name: "cluster_replica", sql: include_str!("migrations/sqlite/0014_cluster_replica.sql") },
    Migration {
        version: 15,
        name: "audit_by_cluster",
        sql: include_str!("migrations/sqlite/0015_audit_by_cluster.sql"),
    },
];

/// PostgreSQL migrations, oldest first.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("migrations/postgres/0001_init.sql") },
    Migration { version: 2, name: "audit", sql: include_str!("migrations/postgres/0002_audit.sql") },
    Migration { version: 3, name: "sessions", sql: include_str!("migrations/postgres/0003_sessions.sql") },
    Migration { version: 4, name: "devices", sql: include_str!("migrations/postgres/0004_devices.sql") },
    Migration { version: 5, name: "directory", sql: include_str!("migrations/postgres/0005_directory.sql") },
    Migration {
        version: 6,
        name: "sessions_by_email",
        sql: include_str!("migrations/postgres/0006_sessions_by_email.sql"),
    },
    Migration {
        version: 7,
        name: "bounded_sign_in",
        sql: include_str!("migrations/postgres/0007_bounded_sign_in.sql"),
    },
    Migration { version: 8, name: "agents", sql: include_str!("migrations/postgres/0008_agents.sql") },
    Migration { version: 9, name: "issuer", sql: include_str!("migrations/postgres/0009_issuer.sql") },
    Migration { version: 10, name: "binding_expiry", sql: include_str!("migrations/postgres/0010_binding_expiry.sql") },
    Migration {
        version: 11,
        name: "access_requests",
        sql: include_str!("migrations/postgres/0011_access_requests.sql"),
    },
    Migration {
        version: 12,
        name: "shares_breakglass",
        sql: include_str!("migrations/postgres/0012_shares_breakglass.sql"),
    },
    Migration { version: 13, name: "leases", sql: include_str!("migrations/postgres/0013_leases.sql") },
    Migration {
        version: 14,
        name: "cluster_replica",
        sql: include_str!("migrations/postgres/0014_cluster_replica.sql"),
    },
    Migration {
        version: 15,
        name: "audit_by_cluster",
        sql: include_str!("migrations/postgres/0015_audit_by_cluster.sql"),
    },
];

/// Key of the PostgreSQL advisory lock that serialises migrations across replicas ("KUBEHERO" in ASCII).
const PG_LOCK_KEY: i64 = 0x4b55_4245_4845_524f;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";
pub(crate) const CURRENT_VERSION: &str = "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations";
const RECORD: &str = "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)";

/// The migration to apply after `current`, `None` when up to date, or an error when the database is newer
/// than this binary.
fn next(migrations: &'static [Migration], current: i64, backend: &str) -> Result<Option<&'static Migration>> {
    let latest = migrations.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::Config(format!(
            "the {backend} database is at schema version {current}, but this kubehero binary only knows \
             versions up to {latest}: it was migrated by a newer release; run that release (or newer) \
             instead of downgrading"
        )));
    }
    Ok(migrations.iter().find(|m| m.version > current))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn failed(backend: &str, what: &str, e: sqlx::Error) -> StoreError {
    match crate::sql::map_err(backend, what.to_string(), e) {
        // A failing migration script is a bug or a hand-edited schema: say so at start-up.
        StoreError::AlreadyExists(m) | StoreError::Conflict(m) | StoreError::NotFound(m) => {
            StoreError::Config(format!("migration failed: {m}"))
        }
        other => other,
    }
}

/// Whether a database opened without migrating is at exactly this binary's schema version: tools that only
/// read (`kubehero audit verify`, `export`) must neither change an old schema nor misread it.
pub(crate) fn check_current(
    current: std::result::Result<i64, sqlx::Error>,
    backend: &str,
    migrations: &'static [Migration],
) -> Result<()> {
    let latest = migrations.last().map_or(0, |m| m.version);
    let current = current.map_err(|e| {
        StoreError::Config(format!(
            "the {backend} database has no KubeHero schema ({e}). Fix: point at the database `kubehero serve` uses"
        ))
    })?;
    next(migrations, current, backend)?;
    if current < latest {
        return Err(StoreError::Config(format!(
            "the {backend} database is at schema version {current}; this kubehero reads version {latest} and does \
             not migrate from a read-only command. Fix: run this release's `kubehero serve` once (it migrates), or \
             use the release that wrote the database"
        )));
    }
    Ok(())
}

/// Applies every pending SQLite migration.
pub(crate) async fn run_sqlite(pool: &SqlitePool) -> Result<()> {
    const B: &str = "sqlite";
    loop {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| failed(B, "begin", e))?;
        sqlx::raw_sql(CREATE_TABLE).execute(&mut *tx).await.map_err(|e| failed(B, "schema_migrations", e))?;
        let current: i64 =
            sqlx::query_scalar(CURRENT_VERSION).fetch_one(&mut *tx).await.map_err(|e| failed(B, "version", e))?;
        let Some(m) = next(SQLITE, current, B)? else {
            tx.commit().await.map_err(|e| failed(B, "commit", e))?;
            return Ok(());
        };
        let what = format!("migration {} ({})", m.version, m.name);
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|e| failed(B, &what, e))?;
        sqlx::query(RECORD)
            .bind(m.version)
            .bind(m.name)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(B, &what, e))?;
        tx.commit().await.map_err(|e| failed(B, &what, e))?;
        tracing::info!(backend = B, version = m.version, name = m.name, "applied migration");
    }
}

/// Applies every pending PostgreSQL migration, serialised across replicas by an advisory lock.
pub(crate) async fn run_postgres(pool: &PgPool) -> Result<()> {
    const B: &str = "postgres";
    loop {
        let mut tx = pool.begin().await.map_err(|e| failed(B, "begin", e))?;
        // Held until this transaction ends; a replica that waited here re-reads the version below.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(B, "migration lock", e))?;
        sqlx::raw_sql(CREATE_TABLE).execute(&mut *tx).await.map_err(|e| failed(B, "schema_migrations", e))?;
        let current: i64 =
            sqlx::query_scalar(CURRENT_VERSION).fetch_one(&mut *tx).await.map_err(|e| failed(B, "version", e))?;
        let Some(m) = next(POSTGRES, current, B)? else {
            tx.commit().await.map_err(|e| failed(B, "commit", e))?;
            return Ok(());
        };
        let what = format!("migration {} ({})", m.version, m.name);
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|e| failed(B, &what, e))?;
        sqlx::query(RECORD)
            .bind(i32::try_from(m.version).unwrap_or(i32::MAX))
            .bind(m.name)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(B, &what, e))?;
        tx.commit().await.map_err(|e| failed(B, &what, e))?;
        tracing::info!(backend = B, version = m.version, name = m.name, "applied migration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(list: &[Migration]) {
        for (i, m) in list.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "versions are 1..n without gaps");
            assert!(!m.sql.trim().is_empty());
        }
    }

    #[test]
    fn versions_are_dense_and_match_across_backends() {
        check(SQLITE);
        check(POSTGRES);
        let names = |l: &[Migration]| l.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }

    #[test]
    fn newer_database_is_refused() {
        assert!(next(SQLITE, 0, "sqlite").unwrap().is_some());
        assert!(next(SQLITE, SQLITE.len() as i64, "sqlite").unwrap().is_none());
        let err = next(SQLITE, 9999, "sqlite").unwrap_err();
        assert!(matches!(err, StoreError::Config(ref m) if m.contains("9999")), "{err}");
    }
}
