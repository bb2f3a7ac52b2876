//! Time-bound elevation requests. Shared by both backends through [`access_store!`]; creating and deciding one
//! are [`crate::Change`]s (the decision and the binding an approval makes commit together, and only a pending
//! request can be decided: two approvals at once grant once).

use crate::{Result, StoreError};
use serde::{Deserialize, Serialize};

/// A request for a role on a cluster (or one namespace of it) for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    /// Subject key of the person asking.
    pub requester: String,
    pub requester_email: Option<String>,
    pub cluster: String,
    pub namespace: Option<String>,
    pub role: String,
    pub duration_secs: i64,
    pub reason: String,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    pub created_at: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub comment: Option<String>,
    /// The binding an approval made, and when it ends.
    pub binding_id: Option<String>,
    pub expires_at: Option<i64>,
    /// Who gave the first of two approvals (a policy that wants two), while the request waits for the second.
    #[serde(default)]
    pub first_approver: Option<String>,
}

/// Reading requests (writes are [`crate::Change`]s).
#[async_trait::async_trait]
pub trait AccessStore: Send + Sync {
    /// Every request, newest first.
    async fn list_access_requests(&self) -> Result<Vec<AccessRequest>>;
    /// One request; `NotFound` if there is none.
    async fn get_access_request(&self, id: &str) -> Result<AccessRequest>;
}

pub(crate) type RequestRow = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    i64,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

const COLS: &str = "id, requester, requester_email, cluster, namespace, role, duration_secs, reason, state, \
     created_at, decided_by, decided_at, comment, binding_id, expires_at, first_approver";

pub(crate) fn list_sql() -> String {
    format!("SELECT {COLS} FROM access_requests ORDER BY created_at DESC, id")
}

pub(crate) fn get_sql() -> String {
    format!("SELECT {COLS} FROM access_requests WHERE id = $1")
}

pub(crate) const INSERT: &str = "INSERT INTO access_requests (id, requester, requester_email, cluster, namespace, \
     role, duration_secs, reason, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)";
/// `$1` id, `$2` by: the first of two approvals of a pending request that has none yet.
pub(crate) const FIRST_APPROVAL: &str =
    "UPDATE access_requests SET first_approver = $2 WHERE id = $1 AND state = 'pending' AND first_approver IS NULL";
/// `$1` id, `$2` state, `$3` by, `$4` at, `$5` comment, `$6` binding id, `$7` expires at: only a pending request.
pub(crate) const DECIDE: &str = "UPDATE access_requests SET state = $2, decided_by = $3, decided_at = $4, \
     comment = $5, binding_id = $6, expires_at = $7 WHERE id = $1 AND state = 'pending'";

pub(crate) fn from_row(r: RequestRow) -> AccessRequest {
    let (
        id,
        requester,
        requester_email,
        cluster,
        namespace,
        role,
        duration_secs,
        reason,
        state,
        created_at,
        decided_by,
        decided_at,
        comment,
        binding_id,
        expires_at,
        first_approver,
    ) = r;
    AccessRequest {
        id,
        requester,
        requester_email,
        cluster,
        namespace,
        role,
        duration_secs,
        reason,
        state,
        created_at,
        decided_by,
        decided_at,
        comment,
        binding_id,
        expires_at,
        first_approver,
    }
}

/// Why a decision did not apply to request `id` (it was not pending).
pub(crate) fn undecidable(found: Option<AccessRequest>, id: &str) -> StoreError {
    match found {
        None => StoreError::NotFound(format!("access request {id:?}")),
        Some(r) if r.state == "pending" => {
            StoreError::Conflict(format!("access request {id:?} has its first approval already"))
        }
        Some(r) => StoreError::Conflict(format!("access request {id:?} was already {}", r.state)),
    }
}

/// Implements [`AccessStore`] for a store with a `pool` field and `err()` (from `sql_store!`).
macro_rules! access_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::access::AccessStore for $store {
            async fn list_access_requests(&self) -> $crate::Result<Vec<$crate::access::AccessRequest>> {
                let rows: Vec<$crate::access::RequestRow> = sqlx::query_as(&$crate::access::list_sql())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("access requests"))?;
                Ok(rows.into_iter().map($crate::access::from_row).collect())
            }

            async fn get_access_request(&self, id: &str) -> $crate::Result<$crate::access::AccessRequest> {
                let row: Option<$crate::access::RequestRow> = sqlx::query_as(&$crate::access::get_sql())
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err("access request"))?;
                row.map($crate::access::from_row)
                    .ok_or_else(|| $crate::StoreError::NotFound(format!("access request {id:?}")))
            }
        }
    };
}
pub(crate) use access_store;
