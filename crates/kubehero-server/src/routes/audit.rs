//! `GET /api/v1/audit`: auditors and owners read the log, newest first, with filters and a cursor.

use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use kubehero_core::{Action, AuditOutcome, Target};
use kubehero_store::AuditQuery;
use serde::Deserialize;
use serde_json::{json, Value};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// RFC 3339 time or Unix milliseconds; inclusive.
    pub(crate) since: Option<String>,
    /// RFC 3339 time or Unix milliseconds; exclusive.
    pub(crate) until: Option<String>,
    /// `actor.sub`.
    pub(crate) actor: Option<String>,
    pub(crate) action: Option<String>,
    /// `ok`, `denied` or `error`.
    pub(crate) result: Option<String>,
    pub(crate) cluster: Option<String>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
    pub(crate) limit: Option<i64>,
}

fn time_ms(name: &str, v: &str) -> ApiResult<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::invalid(format!("{name} must be an RFC 3339 time or Unix milliseconds")))
}

/// Commits the rows of reads that were not waited for, so a reader sees every request answered before theirs.
pub(crate) async fn flushed(s: &AppState) -> ApiResult<()> {
    s.identity.audit.flush().await.map_err(|e| {
        tracing::error!(error = %e, "the audit log could not be brought up to date for a read");
        ApiError::new(crate::error::Code::Unavailable, "the audit log cannot be read right now; retry later")
    })?;
    Ok(())
}

/// The store query the filters ask for.
pub(crate) fn query_of(q: Params) -> ApiResult<AuditQuery> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let outcome = match q.result.as_deref() {
        None => None,
        Some(r) => Some(AuditOutcome::parse(r).ok_or_else(|| ApiError::invalid("result must be ok, denied or error"))?),
    };
    let before_seq = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::invalid("bad cursor"))?),
    };
    Ok(AuditQuery {
        since_ms: q.since.as_deref().map(|v| time_ms("since", v)).transpose()?,
        until_ms: q.until.as_deref().map(|v| time_ms("until", v)).transpose()?,
        actor: q.actor,
        action: q.action,
        outcome,
        cluster: q.cluster,
        before_seq,
        limit,
    })
}

/// `GET /api/v1/audit` — permission: `audit.read` (auditor, owner).
pub async fn list(State(s): State<AppState>, Auth(p): Auth, Query(q): Query<Params>) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::AuditRead, Target::NONE)?;
    flushed(&s).await?;
    let query = query_of(q)?;
    let limit = query.limit;
    let rows = s.store.query_audit(&query).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.seq.to_string())).flatten();
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            v["mac"] = json!(r.mac);
            v
        })
        .collect();
    Ok(axum::Json(json!({ "items": items, "next_cursor": next_cursor })))
}
