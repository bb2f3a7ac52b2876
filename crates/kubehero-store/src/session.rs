//! SQL of sessions, CLI tokens and pending sign-ins, shared by both backends through [`session_store!`].
//!
//! A login attempt is single use: [`TAKE_LOGIN_ATTEMPT`] deletes the row and returns it in one statement
//! (`DELETE … RETURNING`), so of several concurrent callbacks carrying the same `state` exactly one gets it.
//! Expiry is checked on the returned row, which removes expired attempts as a side effect.

use crate::{Result, SessionKind, SessionRecord, StoreError};

// ---- sessions ---------------------------------------------------------------------------------------------

pub(crate) type SessionRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

const SESSION_COLS: &str = "id, hash, kind, sub, email, groups, issuer, csrf, created_at, last_seen_at, expires_at, \
     absolute_expires_at, revoked_at, user_agent";

pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, hash, kind, sub, email, groups, issuer, csrf, created_at, last_seen_at, expires_at, absolute_expires_at, \
     revoked_at, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
pub(crate) fn session_by_hash_sql() -> String {
    format!("SELECT {SESSION_COLS} FROM sessions WHERE hash = $1")
}
pub(crate) fn list_sessions_sql(filtered: bool) -> String {
    let filter = if filtered { " WHERE sub = $1" } else { "" };
    format!("SELECT {SESSION_COLS} FROM sessions{filter} ORDER BY created_at DESC, id")
}
/// Sessions whose `sub` is one of `subs` or whose email is one of `emails` (lower case): `$1..` subs, then
/// emails.
pub(crate) fn sessions_of_sql(subs: usize, emails: usize) -> String {
    let list = |from: usize, n: usize| (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    let mut conds = Vec::new();
    if subs > 0 {
        conds.push(format!("sub IN ({})", list(1, subs)));
    }
    if emails > 0 {
        conds.push(format!("lower(email) IN ({})", list(subs + 1, emails)));
    }
    format!("SELECT {SESSION_COLS} FROM sessions WHERE {} ORDER BY created_at DESC, id", conds.join(" OR "))
}
/// `$1` last_seen_at, `$2` expires_at, `$3` id.
pub(crate) const TOUCH_SESSION: &str = "UPDATE sessions SET last_seen_at = $1, expires_at = $2 WHERE id = $3";
/// Keeps the first revocation time: revoking twice is not an error and does not move the timestamp.
/// `$1` at, `$2` id.
pub(crate) fn revoke_session_sql() -> String {
    format!("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING {SESSION_COLS}")
}

pub(crate) fn session_from_row(row: SessionRow) -> Result<SessionRecord> {
    let (
        id,
        hash,
        kind,
        sub,
        email,
        groups,
        issuer,
        csrf,
        created_at,
        last_seen_at,
        expires_at,
        absolute_expires_at,
        revoked_at,
        user_agent,
    ) = row;
    let kind =
        SessionKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("session {id:?} has kind {kind:?}")))?;
    let groups: Vec<String> =
        serde_json::from_str(&groups).map_err(|e| StoreError::Corrupt(format!("groups of session {id:?}: {e}")))?;
    Ok(SessionRecord {
        id,
        hash,
        kind,
        sub,
        email,
        groups,
        issuer,
        csrf,
        created_at,
        last_seen_at,
        expires_at,
        absolute_expires_at,
        revoked_at,
        user_agent,
    })
}

/// Implements [`crate::SessionStore`] for a store with a `pool` field and `err()` (from `sql_store!`).
macro_rules! session_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::SessionStore for $store {
            async fn create_session(&self, s: &$crate::SessionRecord) -> $crate::Result<()> {
                $crate::ChangeStore::apply(self, $crate::Change::CreateSession(s), None).await.map(drop)
            }

            async fn find_session_by_hash(&self, hash: &str) -> $crate::Result<Option<$crate::SessionRecord>> {
                let row: Option<$crate::session::SessionRow> = sqlx::query_as(&$crate::session::session_by_hash_sql())
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err("session"))?;
                row.map($crate::session::session_from_row).transpose()
            }

            async fn touch_session(&self, id: &str, last_seen_at: i64, expires_at: i64) -> $crate::Result<()> {
                let what = format!("session {id:?}");
                let done = sqlx::query($crate::session::TOUCH_SESSION)
                    .bind(last_seen_at)
                    .bind(expires_at)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err(what.clone()))?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound(what));
                }
                Ok(())
            }

            async fn revoke_session(&self, id: &str, at: i64) -> $crate::Result<$crate::SessionRecord> {
                $crate::changed_session(
                    $crate::ChangeStore::apply(self, $crate::Change::RevokeSession { id, at }, None).await?.0,
                )
            }

            async fn list_sessions(&self, sub: Option<&str>) -> $crate::Result<Vec<$crate::SessionRecord>> {
                let sql = $crate::session::list_sessions_sql(sub.is_some());
                let mut q = sqlx::query_as::<_, $crate::session::SessionRow>(&sql);
                if let Some(s) = sub {
                    q = q.bind(s);
                }
                let rows = q.fetch_all(&self.pool).await.map_err(Self::err("sessions"))?;
                rows.into_iter().map($crate::session::session_from_row).collect()
            }

            async fn sessions_of(&self, subs: &[&str], emails: &[&str]) -> $crate::Result<Vec<$crate::SessionRecord>> {
                if subs.is_empty() && emails.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = $crate::session::sessions_of_sql(subs.len(), emails.len());
                let mut q = sqlx::query_as::<_, $crate::session::SessionRow>(&sql);
                for s in subs {
                    q = q.bind(*s);
                }
                for e in emails {
                    q = q.bind(e.to_lowercase());
                }
                let rows = q.fetch_all(&self.pool).await.map_err(Self::err("sessions"))?;
                rows.into_iter().map($crate::session::session_from_row).collect()
            }
        }
    };
}
pub(crate) use session_store;
