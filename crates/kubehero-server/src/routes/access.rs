//! Time-bound elevation: a person asks for a role on a cluster (or one namespace of it) for a while, with a
//! reason; an admin or owner of that scope — never the requester, and never for a role above their own there —
//! approves or denies. Approval is a role binding that ends on its own (`expires_at`): from then on the role is
//! gone from the proxy (and the streams it allowed), from per-cluster and direct tokens and from RBAC sync.
//! Every step is a durable audit row (`access.request`, `access.approve`, `access.deny`; `role_binding.expire`).

use super::Json;
use crate::audit::{target_of, Audited};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kubehero_core::{Action, Binding, BindingSubject, Principal, PrincipalKind, Role, Scope, Target};
use kubehero_store::{AccessRequest, Change, StoredBinding};
use serde::Deserialize;
use serde_json::json;

/// The longest elevation.
pub const MAX_SECS: i64 = 86_400;
const MIN_SECS: i64 = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestAccess {
    cluster: String,
    #[serde(default)]
    namespace: Option<String>,
    role: Role,
    /// How long the role is held once approved: 5 s to 24 h.
    duration_secs: i64,
    /// Why (an incident number): shown to approvers and kept in the audit log.
    reason: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    #[serde(default)]
    comment: Option<String>,
}

fn target(r: &AccessRequest) -> Target<'_> {
    Target::in_namespace(&r.cluster, r.namespace.as_deref())
}

/// `POST /api/v1/access-requests` (RequestAccess) — permission: `access.request` (anyone signed in).
pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Json(b): Json<RequestAccess>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::AccessRequest, Target::NONE)?;
    if p.kind != PrincipalKind::Person {
        return Err(ApiError::invalid("only people ask for access (an API key's role is set when it is made)"));
    }
    if !(MIN_SECS..=MAX_SECS).contains(&b.duration_secs) {
        return Err(ApiError::invalid(format!(
            "duration_secs: between {MIN_SECS} and {MAX_SECS} (24 hours); ask again when it ends"
        )));
    }
    let reason = b.reason.trim();
    if reason.is_empty() || reason.len() > 500 || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid("reason: 1-500 printable characters (an incident or ticket)"));
    }
    crate::config::validate_scope(Some(b.cluster.clone()), b.namespace.clone()).map_err(ApiError::invalid)?;
    s.store.get_cluster(&b.cluster).await?;
    let raw = kubehero_identity::credential::random_bytes(10)?;
    let request = AccessRequest {
        id: format!("ar_{}", kubehero_audit::hex::encode(&raw)),
        requester: p.subject_key(),
        requester_email: p.email.clone(),
        cluster: b.cluster,
        namespace: b.namespace,
        role: b.role.as_str().to_string(),
        duration_secs: b.duration_secs,
        reason: reason.to_string(),
        state: "pending".into(),
        created_at: s.clock.now(),
        decided_by: None,
        decided_at: None,
        comment: None,
        binding_id: None,
        expires_at: None,
    };
    let t = target_of("access_request", &request.id, Some(&request.cluster), request.namespace.as_deref());
    audited.apply_named(Change::CreateAccessRequest(&request), "access.request", &t, StatusCode::CREATED).await?;
    Ok((StatusCode::CREATED, Audited::done(t), axum::Json(request)))
}

/// `GET /api/v1/access-requests` — permission: `access.request`. One's own requests, and those one may decide.
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::AccessRequest, Target::NONE)?;
    let me = p.subject_key();
    let items: Vec<_> = s
        .store
        .list_access_requests()
        .await?
        .into_iter()
        .map(|r| {
            let decide = r.requester != me && may_grant(&p, &r);
            let mut v = json!(r);
            v["can_decide"] = json!(decide && r.state == "pending");
            (r.requester == me || decide, v)
        })
        .filter(|(visible, _)| *visible)
        .map(|(_, v)| v)
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

/// Whether `p` may decide `r`: admin or owner of its scope, and holding the asked role (or owner) there.
fn may_grant(p: &Principal, r: &AccessRequest) -> bool {
    let asked = r.role.parse::<Role>().ok();
    kubehero_core::authorize(p, Action::AccessDecide, target(r)).is_allowed()
        && p.grants.iter().any(|g| {
            let enough = g.role == Role::Owner || (g.role == Role::Admin && asked != Some(Role::Owner));
            enough && kubehero_core::authz::scope_covers(&g.scope, target(r))
        })
}

/// `POST /api/v1/access-requests/{id}/approve` — permission: `access.decide` (admin or owner of the scope).
pub async fn approve(
    s: State<AppState>,
    auth: Auth,
    audited: Audited,
    id: Path<String>,
    Json(d): Json<Decide>,
) -> ApiResult<impl IntoResponse> {
    decide(s, auth, audited, id, d, true).await
}

/// `POST /api/v1/access-requests/{id}/deny` — permission: `access.decide` (admin or owner of the scope).
pub async fn deny(
    s: State<AppState>,
    auth: Auth,
    audited: Audited,
    id: Path<String>,
    Json(d): Json<Decide>,
) -> ApiResult<impl IntoResponse> {
    decide(s, auth, audited, id, d, false).await
}

async fn decide(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
    d: Decide,
    approve: bool,
) -> ApiResult<impl IntoResponse> {
    let r = s.store.get_access_request(&id).await?;
    allow(&p, Action::AccessDecide, target(&r))?;
    if r.requester == p.subject_key() {
        return Err(ApiError::new(Code::PermissionDenied, "you cannot decide your own request: another admin must"));
    }
    if !may_grant(&p, &r) {
        return Err(ApiError::new(
            Code::PermissionDenied,
            format!("only an owner of {} can grant {}", r.cluster, r.role),
        ));
    }
    if r.state != "pending" {
        return Err(ApiError::new(Code::FailedPrecondition, format!("access request {id:?} was already {}", r.state)));
    }
    let comment = d.comment.as_deref().map(str::trim).filter(|c| !c.is_empty());
    if comment.is_some_and(|c| c.len() > 500 || c.chars().any(char::is_control)) {
        return Err(ApiError::invalid("comment: at most 500 printable characters"));
    }
    // An expired binding of the same person, role and scope (not yet swept) would block the new one.
    s.identity.expire_bindings().await?;
    let now = s.clock.now();
    let role = r.role.parse::<Role>().ok().ok_or_else(|| ApiError::new(Code::Internal, "the request names no role"))?;
    let scope = match &r.namespace {
        Some(ns) => Scope::Namespace { cluster: r.cluster.clone(), namespace: ns.clone() },
        None => Scope::Cluster { cluster: r.cluster.clone() },
    };
    let raw = kubehero_identity::credential::random_bytes(10)?;
    let binding = StoredBinding {
        id: format!("rb_{}", kubehero_audit::hex::encode(&raw)),
        binding: Binding { subject: BindingSubject::User(r.requester.clone()), role, scope },
        created_by: p.subject_key(),
        created_at: now,
        expires_at: Some(now + r.duration_secs),
    };
    let by = p.subject_key();
    let change = Change::DecideAccessRequest {
        id: &id,
        approve,
        by: &by,
        at: now,
        comment,
        binding: approve.then_some(&binding),
    };
    let action = if approve { "access.approve" } else { "access.deny" };
    let t = target_of("access_request", &id, Some(&r.cluster), r.namespace.as_deref());
    audited.apply_named(change, action, &t, StatusCode::OK).await?;
    if approve {
        if let Err(e) = s.identity.bindings.reload().await {
            tracing::warn!(error = %e, "reloading role bindings after an approval failed; the periodic reload will");
        }
    }
    let decided = s.store.get_access_request(&id).await?;
    Ok((StatusCode::OK, Audited::done(t), axum::Json(decided)))
}
