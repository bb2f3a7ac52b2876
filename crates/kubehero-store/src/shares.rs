//! Share links and break-glass codes. Both are secrets shown once and stored as their SHA-256; using one is a
//! [`crate::Change`] whose conditional `UPDATE` decides, in the same transaction as the binding (and, for a
//! break-glass code, the CLI token) it makes, whether it may be used: an expired, revoked or used-up link and a
//! used code grant nothing, however many requests race.

use crate::{Result, StoreError};
use serde::{Deserialize, Serialize};

/// A link that gives a role on a cluster (or one namespace of it) to whoever accepts it, until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub id: String,
    /// SHA-256 of the link's token; never shown.
    #[serde(skip)]
    pub token_hash: String,
    pub cluster: String,
    pub namespace: Option<String>,
    pub role: String,
    /// Subject key of the person who made it.
    pub created_by: String,
    pub created_by_email: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// How many people may accept it; `None`: any number.
    pub max_uses: Option<i64>,
    pub uses: i64,
    /// Emails and `group:<name>` that may accept it; empty: anyone who signs in.
    pub recipients: Vec<String>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    /// When the expiry sweep recorded its end.
    pub expired_at: Option<i64>,
}

impl Share {
    /// Why the share can no longer be accepted at `now`, if it cannot.
    pub fn closed(&self, now: i64) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if now >= self.expires_at {
            Some("expired")
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            Some("used_up")
        } else {
            None
        }
    }
}

/// A binding made by accepting a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareGrant {
    pub share_id: String,
    pub binding_id: String,
    /// Subject key of the person who accepted.
    pub subject: String,
    pub accepted_at: i64,
}

/// A one-time emergency code: owner on its cluster for `ttl_secs`, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakglassCode {
    pub id: String,
    /// SHA-256 of the code; never shown.
    #[serde(skip)]
    pub code_hash: String,
    pub cluster: String,
    pub ttl_secs: i64,
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub used_at: Option<i64>,
    pub reason: Option<String>,
    /// The client address that used it.
    pub used_from: Option<String>,
    /// The owner binding and CLI token the use made, and when they end.
    pub binding_id: Option<String>,
    pub session_id: Option<String>,
    pub expires_at: Option<i64>,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
}

impl BreakglassCode {
    /// A new, unused code of `cluster` (`code_hash`: the code's SHA-256).
    pub fn sealed(id: String, code_hash: String, cluster: &str, ttl_secs: i64, created_by: String, at: i64) -> Self {
        BreakglassCode {
            id,
            code_hash,
            cluster: cluster.to_string(),
            ttl_secs,
            created_by,
            created_at: at,
            revoked_at: None,
            used_at: None,
            reason: None,
            used_from: None,
            binding_id: None,
            session_id: None,
            expires_at: None,
            acknowledged_at: None,
            acknowledged_by: None,
        }
    }
}

/// Reading shares and break-glass codes (writes are [`crate::Change`]s).
#[async_trait::async_trait]
pub trait ShareStore: Send + Sync {
    /// Every share, newest first.
    async fn list_shares(&self) -> Result<Vec<Share>>;
    /// One share by id; `NotFound` if there is none.
    async fn get_share(&self, id: &str) -> Result<Share>;
    /// The share whose token has this SHA-256.
    async fn find_share_by_hash(&self, hash: &str) -> Result<Option<Share>>;
    /// Every binding made from shares (still held or not), oldest first.
    async fn list_share_grants(&self) -> Result<Vec<ShareGrant>>;
    /// Every break-glass code, newest first.
    async fn list_breakglass(&self) -> Result<Vec<BreakglassCode>>;
    /// The code with this SHA-256.
    async fn find_breakglass_by_hash(&self, hash: &str) -> Result<Option<BreakglassCode>>;
}

pub(crate) type ShareRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

const SHARE_COLS: &str = "id, token_hash, cluster, namespace, role, created_by, created_by_email, created_at, \
     expires_at, max_uses, uses, recipients, revoked_at, revoked_by, expired_at";

pub(crate) fn list_shares_sql() -> String {
    format!("SELECT {SHARE_COLS} FROM shares ORDER BY created_at DESC, id")
}

pub(crate) fn get_share_sql(by: &str) -> String {
    format!("SELECT {SHARE_COLS} FROM shares WHERE {by} = $1")
}

pub(crate) const INSERT_SHARE: &str = "INSERT INTO shares (id, token_hash, cluster, namespace, role, created_by, \
     created_by_email, created_at, expires_at, max_uses, uses, recipients) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11)";
/// `$1` id, `$2` now: one more use of an open share.
pub(crate) const USE_SHARE: &str = "UPDATE shares SET uses = uses + 1 WHERE id = $1 AND revoked_at IS NULL \
     AND expires_at > $2 AND (max_uses IS NULL OR uses < max_uses)";
pub(crate) const INSERT_SHARE_GRANT: &str =
    "INSERT INTO share_grants (share_id, binding_id, subject, accepted_at) VALUES ($1, $2, $3, $4)";
/// `$1` id, `$2` at, `$3` by.
pub(crate) const REVOKE_SHARE: &str =
    "UPDATE shares SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL";
pub(crate) const DELETE_SHARE_BINDINGS: &str =
    "DELETE FROM role_bindings WHERE id IN (SELECT binding_id FROM share_grants WHERE share_id = $1)";
/// `$1` id, `$2` at.
pub(crate) const EXPIRE_SHARE: &str = "UPDATE shares SET expired_at = $2 WHERE id = $1 AND expired_at IS NULL";
pub(crate) const LIST_SHARE_GRANTS: &str =
    "SELECT share_id, binding_id, subject, accepted_at FROM share_grants ORDER BY accepted_at, binding_id";

pub(crate) fn share_from_row(r: ShareRow) -> Result<Share> {
    let (
        id,
        token_hash,
        cluster,
        namespace,
        role,
        created_by,
        created_by_email,
        created_at,
        expires_at,
        max_uses,
        uses,
        recipients,
        revoked_at,
        revoked_by,
        expired_at,
    ) = r;
    let recipients = serde_json::from_str(&recipients)
        .map_err(|e| StoreError::Corrupt(format!("recipients of share {id:?}: {e}")))?;
    Ok(Share {
        id,
        token_hash,
        cluster,
        namespace,
        role,
        created_by,
        created_by_email,
        created_at,
        expires_at,
        max_uses,
        uses,
        recipients,
        revoked_at,
        revoked_by,
        expired_at,
    })
}

/// Why share `id` could not be used, revoked or expired (its state when the `UPDATE` matched nothing).
pub(crate) fn share_refusal(found: Option<Share>, id: &str, now: i64) -> StoreError {
    match found {
        None => StoreError::NotFound(format!("share {id:?}")),
        Some(s) => StoreError::Conflict(format!("share {id:?} is {}", s.closed(now).unwrap_or("closed"))),
    }
}

pub(crate) type CodeRow = (
    String,
    String,
    String,
    i64,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

const CODE_COLS: &str = "id, code_hash, cluster, ttl_secs, created_by, created_at, revoked_at, used_at, reason, \
     used_from, binding_id, session_id, expires_at, acknowledged_at, acknowledged_by";

pub(crate) fn list_codes_sql() -> String {
    format!("SELECT {CODE_COLS} FROM breakglass_codes ORDER BY created_at DESC, id")
}

pub(crate) fn find_code_sql(by: &str) -> String {
    format!("SELECT {CODE_COLS} FROM breakglass_codes WHERE {by} = $1")
}

pub(crate) const INSERT_CODE: &str = "INSERT INTO breakglass_codes (id, code_hash, cluster, ttl_secs, created_by, \
     created_at) VALUES ($1, $2, $3, $4, $5, $6)";
/// `$1` id, `$2` at, `$3` reason, `$4` from, `$5` binding, `$6` session, `$7` expires: only an unused,
/// unrevoked code.
pub(crate) const USE_CODE: &str = "UPDATE breakglass_codes SET used_at = $2, reason = $3, used_from = $4, \
     binding_id = $5, session_id = $6, expires_at = $7 WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL";
/// `$1` id, `$2` at, `$3` by: only a used, unacknowledged code.
pub(crate) const ACKNOWLEDGE_CODE: &str = "UPDATE breakglass_codes SET acknowledged_at = $2, acknowledged_by = $3 \
     WHERE id = $1 AND used_at IS NOT NULL AND acknowledged_at IS NULL";
/// `$1` id, `$2` at: only an unused, unrevoked code.
pub(crate) const REVOKE_CODE: &str =
    "UPDATE breakglass_codes SET revoked_at = $2 WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL";

pub(crate) fn code_from_row(r: CodeRow) -> BreakglassCode {
    let (
        id,
        code_hash,
        cluster,
        ttl_secs,
        created_by,
        created_at,
        revoked_at,
        used_at,
        reason,
        used_from,
        binding_id,
        session_id,
        expires_at,
        acknowledged_at,
        acknowledged_by,
    ) = r;
    BreakglassCode {
        id,
        code_hash,
        cluster,
        ttl_secs,
        created_by,
        created_at,
        revoked_at,
        used_at,
        reason,
        used_from,
        binding_id,
        session_id,
        expires_at,
        acknowledged_at,
        acknowledged_by,
    }
}

/// Why code `id` could not be used, acknowledged or revoked (its state when the `UPDATE` matched nothing).
pub(crate) fn code_refusal(found: Option<BreakglassCode>, id: &str) -> StoreError {
    match found {
        None => StoreError::NotFound(format!("break-glass code {id:?}")),
        Some(c) if c.revoked_at.is_some() => StoreError::Conflict(format!("break-glass code {id:?} was revoked")),
        Some(c) if c.acknowledged_at.is_some() => {
            StoreError::Conflict(format!("the use of break-glass code {id:?} was already acknowledged"))
        }
        Some(c) if c.used_at.is_some() => StoreError::Conflict(format!("break-glass code {id:?} was already used")),
        Some(_) => StoreError::Conflict(format!("break-glass code {id:?} was not used")),
    }
}

/// Implements [`ShareStore`] for a store with a `pool` field and `err()` (from `sql_store!`).
macro_rules! share_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::shares::ShareStore for $store {
            async fn list_shares(&self) -> $crate::Result<Vec<$crate::shares::Share>> {
                let rows: Vec<$crate::shares::ShareRow> = sqlx::query_as(&$crate::shares::list_shares_sql())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("shares"))?;
                rows.into_iter().map($crate::shares::share_from_row).collect()
            }

            async fn get_share(&self, id: &str) -> $crate::Result<$crate::shares::Share> {
                let row: Option<$crate::shares::ShareRow> = sqlx::query_as(&$crate::shares::get_share_sql("id"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err("share"))?;
                let row = row.ok_or_else(|| $crate::StoreError::NotFound(format!("share {id:?}")))?;
                $crate::shares::share_from_row(row)
            }

            async fn find_share_by_hash(&self, hash: &str) -> $crate::Result<Option<$crate::shares::Share>> {
                let row: Option<$crate::shares::ShareRow> =
                    sqlx::query_as(&$crate::shares::get_share_sql("token_hash"))
                        .bind(hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(Self::err("share"))?;
                row.map($crate::shares::share_from_row).transpose()
            }

            async fn list_share_grants(&self) -> $crate::Result<Vec<$crate::shares::ShareGrant>> {
                let rows: Vec<(String, String, String, i64)> = sqlx::query_as($crate::shares::LIST_SHARE_GRANTS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("share grants"))?;
                Ok(rows
                    .into_iter()
                    .map(|(share_id, binding_id, subject, accepted_at)| $crate::shares::ShareGrant {
                        share_id,
                        binding_id,
                        subject,
                        accepted_at,
                    })
                    .collect())
            }

            async fn list_breakglass(&self) -> $crate::Result<Vec<$crate::shares::BreakglassCode>> {
                let rows: Vec<$crate::shares::CodeRow> = sqlx::query_as(&$crate::shares::list_codes_sql())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("break-glass codes"))?;
                Ok(rows.into_iter().map($crate::shares::code_from_row).collect())
            }

            async fn find_breakglass_by_hash(
                &self,
                hash: &str,
            ) -> $crate::Result<Option<$crate::shares::BreakglassCode>> {
                let row: Option<$crate::shares::CodeRow> = sqlx::query_as(&$crate::shares::find_code_sql("code_hash"))
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err("break-glass code"))?;
                Ok(row.map($crate::shares::code_from_row))
            }
        }
    };
}
pub(crate) use share_store;
