//! SQL of the audit log, shared by both backends through [`audit_store!`].
//!
//! The chain head is one row (`audit_head`). An append locks it first (`FOR UPDATE` on PostgreSQL; on
//! SQLite the `BEGIN IMMEDIATE` write lock), so appends from every process take turns and each sees the MAC
//! the previous one wrote. All rows of a batch and the new head commit together: one flush for the batch.

use crate::AuditQuery;

pub(crate) fn head_sql(backend: &str) -> &'static str {
    if backend == "postgres" {
        "SELECT seq, mac FROM audit_head WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT seq, mac FROM audit_head WHERE id = 1"
    }
}
pub(crate) const HEAD: &str = "SELECT seq, mac FROM audit_head WHERE id = 1";
pub(crate) const SET_HEAD: &str = "UPDATE audit_head SET seq = $1, mac = $2 WHERE id = 1";
const INSERT_COLUMNS: &str =
    "INSERT INTO audit_log (seq, event_id, time_ms, actor_sub, action, outcome, cluster, key_id, mac, body)";
/// Rows per multi-row `INSERT` on SQLite (10 parameters each, far below SQLite's limit).
pub(crate) const SQLITE_INSERT_CHUNK: usize = 64;

/// `INSERT … VALUES (…), (…)` for `n` rows (SQLite).
pub(crate) fn insert_rows_sql(n: usize) -> String {
    let mut sql = String::with_capacity(INSERT_COLUMNS.len() + n * 48);
    sql.push_str(INSERT_COLUMNS);
    sql.push_str(" VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        let b = i * 10;
        sql.push('(');
        for c in 1..=10 {
            if c > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", b + c));
        }
        sql.push(')');
    }
    sql
}

/// One `INSERT … SELECT FROM UNNEST(arrays)` for any number of rows (PostgreSQL).
pub(crate) const INSERT_ROWS_UNNEST: &str = "INSERT INTO audit_log \
     (seq, event_id, time_ms, actor_sub, action, outcome, cluster, key_id, mac, body) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::text[], $10::text[])";
pub(crate) const ROWS_AFTER: &str = "SELECT seq, key_id, mac, body FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";

/// The column digest of [`kubehero_core::AuditColumns`], built in SQL: length-prefixed text values (`length`
/// counts characters on both backends), `,` between fields, `-` for a NULL cluster.
const COLUMN_DIGEST: &str = "length(event_id) || ':' || event_id || ',' || time_ms || ',' || length(actor_sub) || ':' \
     || actor_sub || ',' || length(action) || ':' || action || ',' || outcome || ',' || \
     COALESCE(length(cluster) || ':' || cluster, '-')";

/// Rows after `$1` with their column digest.
pub(crate) fn rows_with_columns_sql() -> String {
    format!("SELECT seq, key_id, mac, body, {COLUMN_DIGEST} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
}

/// Rows after `?1` with their indexed columns, for rusqlite, which builds the digest without copying them.
pub(crate) const ROWS_WITH_COLUMNS_QMARK: &str = "SELECT seq, key_id, mac, body, event_id, time_ms, actor_sub, \
     action, outcome, cluster FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2";
/// [`ROWS_AFTER`] for rusqlite's positional parameters.
pub(crate) const INSERT_ROW_QMARK: &str = "INSERT INTO audit_log \
     (seq, event_id, time_ms, actor_sub, action, outcome, cluster, key_id, mac, body) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
pub(crate) const SET_HEAD_QMARK: &str = "UPDATE audit_head SET seq = ?1, mac = ?2 WHERE id = 1";
pub(crate) const ROWS_AFTER_QMARK: &str =
    "SELECT seq, key_id, mac, body FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2";

pub(crate) const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints \
     (seq, mac, time_ms, public_key, signature) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
pub(crate) const CHECKPOINTS: &str =
    "SELECT seq, mac, time_ms, public_key, signature FROM audit_checkpoints ORDER BY seq, time_ms";
pub(crate) const LAST_CHECKPOINT_KEY: &str =
    "SELECT public_key, time_ms FROM audit_checkpoints ORDER BY seq DESC, time_ms DESC LIMIT 1";
pub(crate) const SINK_CURSOR: &str = "SELECT seq FROM audit_sink_cursors WHERE sink = $1";
pub(crate) const SET_SINK_CURSOR: &str = "INSERT INTO audit_sink_cursors (sink, seq, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at \
     WHERE audit_sink_cursors.seq < excluded.seq";
pub(crate) const SINK_CURSORS: &str = "SELECT sink, seq FROM audit_sink_cursors ORDER BY sink";

/// A value bound to a dynamically built query.
pub(crate) enum Arg {
    Int(i64),
    Text(String),
}

/// Builds the filtered, newest-first query for [`AuditQuery`] and the values to bind, in order.
pub(crate) fn query_sql(q: &AuditQuery) -> (String, Vec<Arg>) {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    let mut add = |clause: &str, arg: Arg| {
        args.push(arg);
        clauses.push(clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(v) = q.since_ms {
        add("time_ms >= ?", Arg::Int(v));
    }
    if let Some(v) = q.until_ms {
        add("time_ms < ?", Arg::Int(v));
    }
    if let Some(v) = &q.actor {
        add("actor_sub = ?", Arg::Text(v.clone()));
    }
    if let Some(v) = &q.action {
        add("action = ?", Arg::Text(v.clone()));
    }
    if let Some(v) = q.outcome {
        add("outcome = ?", Arg::Text(v.as_str().to_string()));
    }
    if let Some(v) = &q.cluster {
        add("cluster = ?", Arg::Text(v.clone()));
    }
    if let Some(v) = q.before_seq {
        add("seq < ?", Arg::Int(v));
    }
    let filter = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    args.push(Arg::Int(q.limit));
    let sql = format!("SELECT seq, key_id, mac, body FROM audit_log{filter} ORDER BY seq DESC LIMIT ${}", args.len());
    (sql, args)
}

/// A stored row: `(seq, key_id, mac, body)`.
pub(crate) type AuditRowTuple = (i64, String, String, String);

/// Turns selected tuples into rows.
pub(crate) fn to_rows(rows: Vec<AuditRowTuple>) -> Vec<crate::StoredAuditRow> {
    rows.into_iter()
        .map(|(seq, key_id, mac, body)| crate::StoredAuditRow { seq, key_id, mac, body, columns: None })
        .collect()
}

/// Turns tuples selected with their column digest into rows.
pub(crate) fn to_rows_with_columns(rows: Vec<(i64, String, String, String, String)>) -> Vec<crate::StoredAuditRow> {
    rows.into_iter()
        .map(|(seq, key_id, mac, body, c)| crate::StoredAuditRow { seq, key_id, mac, body, columns: Some(c) })
        .collect()
}

/// Implements [`crate::AuditStore`] for a store with a `pool` field, `begin()`, `err()` and
/// `append_audit_direct()`, `read_audit_rows_direct()` and `read_audit_rows_with_columns_direct()` (`None`: use
/// the sqlx path) and `insert_audit_rows()`.
macro_rules! audit_store {
    ($store:ty, $backend:literal) => {
        #[async_trait::async_trait]
        impl $crate::AuditStore for $store {
            async fn append_audit(
                &self,
                events: &[kubehero_core::AuditEvent],
                sealer: &std::sync::Arc<dyn kubehero_core::Sealer>,
            ) -> $crate::Result<Vec<kubehero_core::SealedRow>> {
                if let Some(done) = self.append_audit_direct(events, sealer).await {
                    return done;
                }
                let mut tx = self.begin().await?;
                let sealed = Self::append_on(&mut tx, events, sealer).await?;
                tx.commit().await.map_err(Self::err("audit commit"))?;
                self.check_after_commit()?;
                Ok(sealed)
            }

            async fn audit_head(&self) -> $crate::Result<(i64, String)> {
                sqlx::query_as($crate::audit::HEAD).fetch_one(&self.pool).await.map_err(Self::err("audit head"))
            }

            async fn audit_rows(&self, after: i64, limit: i64) -> $crate::Result<Vec<$crate::StoredAuditRow>> {
                if let Some(done) = self.read_audit_rows_direct(after, limit).await {
                    return done;
                }
                let rows = sqlx::query_as($crate::audit::ROWS_AFTER)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("audit rows"))?;
                Ok($crate::audit::to_rows(rows))
            }

            async fn audit_rows_with_columns(
                &self,
                after: i64,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::StoredAuditRow>> {
                if let Some(done) = self.read_audit_rows_with_columns_direct(after, limit).await {
                    return done;
                }
                let rows = sqlx::query_as(&$crate::audit::rows_with_columns_sql())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("audit rows"))?;
                Ok($crate::audit::to_rows_with_columns(rows))
            }

            async fn query_audit(&self, q: &$crate::AuditQuery) -> $crate::Result<Vec<$crate::StoredAuditRow>> {
                let (sql, args) = $crate::audit::query_sql(q);
                let mut query = sqlx::query_as::<_, $crate::audit::AuditRowTuple>(&sql);
                for a in args {
                    query = match a {
                        $crate::audit::Arg::Int(v) => query.bind(v),
                        $crate::audit::Arg::Text(v) => query.bind(v),
                    };
                }
                let rows = query.fetch_all(&self.pool).await.map_err(Self::err("audit query"))?;
                Ok($crate::audit::to_rows(rows))
            }

            async fn add_checkpoint(&self, c: &kubehero_core::Checkpoint) -> $crate::Result<()> {
                sqlx::query($crate::audit::INSERT_CHECKPOINT)
                    .bind(c.seq)
                    .bind(&c.mac)
                    .bind(c.time_ms)
                    .bind(&c.public_key)
                    .bind(&c.signature)
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err("audit checkpoint"))?;
                Ok(())
            }

            async fn checkpoints(&self) -> $crate::Result<Vec<kubehero_core::Checkpoint>> {
                let rows: Vec<(i64, String, i64, String, String)> = sqlx::query_as($crate::audit::CHECKPOINTS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("audit checkpoints"))?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, mac, time_ms, public_key, signature)| kubehero_core::Checkpoint {
                        seq,
                        mac,
                        time_ms,
                        public_key,
                        signature,
                    })
                    .collect())
            }

            async fn last_checkpoint_key(&self) -> $crate::Result<Option<(String, i64)>> {
                sqlx::query_as($crate::audit::LAST_CHECKPOINT_KEY)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err("audit checkpoints"))
            }

            async fn sink_cursor(&self, sink: &str) -> $crate::Result<i64> {
                let seq: Option<i64> = sqlx::query_scalar($crate::audit::SINK_CURSOR)
                    .bind(sink)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err(format!("cursor of sink {sink:?}")))?;
                Ok(seq.unwrap_or(0))
            }

            async fn set_sink_cursor(&self, sink: &str, seq: i64, at: i64) -> $crate::Result<()> {
                sqlx::query($crate::audit::SET_SINK_CURSOR)
                    .bind(sink)
                    .bind(seq)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err(format!("cursor of sink {sink:?}")))?;
                Ok(())
            }

            async fn sink_cursors(&self) -> $crate::Result<Vec<(String, i64)>> {
                sqlx::query_as($crate::audit::SINK_CURSORS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("sink cursors"))
            }
        }
    };
}
pub(crate) use audit_store;
