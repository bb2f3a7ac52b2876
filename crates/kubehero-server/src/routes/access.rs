//! Time-bound elevation: a person asks for a role on a cluster (or one namespace of it) for a while, with a
//! reason; an admin or owner of that scope — never the requester, and never for a role above their own there —
//! approves or denies. Approval is a role binding that ends on its own (`expires_at`): from then on the role is
//! gone from the proxy (and the streams it allowed), from per-cluster and direct tokens and from RBAC sync.
//! Every step is a durable audit row (`access.request`, `access.approve`, `access.deny`; `role_binding.expire`).
//!
//! An owner may set access policies (the settings document `access`): for clusters matching a glob, the longest
//! elevation, which of the scope's admins and owners may approve, and whether two different approvers must.

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
use serde::{Deserialize, Serialize};
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

/// The settings document `access` (`PUT /api/v1/settings/access`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicies {
    /// The first policy whose `clusters` matches a request's cluster applies.
    #[serde(default)]
    pub policies: Vec<AccessPolicy>,
}

/// How elevation works on some clusters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// A cluster name or glob (`prod-*`).
    pub clusters: String,
    /// The longest elevation there (at most 24 h).
    #[serde(default)]
    pub max_duration_secs: Option<i64>,
    /// Which of the scope's admins and owners may approve: emails and `group:<name>`; empty: all of them.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How many different people must approve: 1 (default) or 2.
    #[serde(default = "one")]
    pub approvals: u8,
}

fn one() -> u8 {
    1
}

impl AccessPolicies {
    /// Checks a document an owner writes; the error says what is wrong.
    pub fn parse(v: &serde_json::Value) -> Result<AccessPolicies, String> {
        let p: AccessPolicies = serde_json::from_value(v.clone()).map_err(|e| format!("the access policies: {e}"))?;
        for (i, x) in p.policies.iter().enumerate() {
            if x.clusters.is_empty() || x.clusters.len() > 253 {
                return Err(format!("policies[{i}].clusters: a cluster name or glob"));
            }
            if x.max_duration_secs.is_some_and(|m| !(MIN_SECS..=MAX_SECS).contains(&m)) {
                return Err(format!("policies[{i}].max_duration_secs: between {MIN_SECS} and {MAX_SECS}"));
            }
            if !(1..=2).contains(&x.approvals) {
                return Err(format!("policies[{i}].approvals: 1 or 2"));
            }
            if x.approvers.iter().any(|a| a.is_empty() || a.len() > 256) {
                return Err(format!("policies[{i}].approvers: emails and group:<name>"));
            }
        }
        Ok(p)
    }

    /// The policy for `cluster`: the first whose glob matches it.
    pub(crate) fn for_cluster(&self, cluster: &str) -> Option<&AccessPolicy> {
        self.policies.iter().find(|x| kubehero_core::glob::matches(&x.clusters, cluster))
    }
}

/// Every access policy an owner set (none: no document).
pub(crate) async fn policies(s: &AppState) -> ApiResult<AccessPolicies> {
    match s.store.get_setting("access").await? {
        Some(v) => AccessPolicies::parse(&v).map_err(|e| ApiError::new(Code::Internal, e)),
        None => Ok(AccessPolicies::default()),
    }
}

/// The policy for `cluster`, if an owner set one.
async fn policy_for(s: &AppState, cluster: &str) -> ApiResult<Option<AccessPolicy>> {
    Ok(policies(s).await?.for_cluster(cluster).cloned())
}

/// Whether `p` may approve the pending `r` now: may decide it, is among the approvers the cluster's policy names
/// (if it names any), and did not give its first approval (when the policy wants two). A decider who may not
/// approve may still deny.
pub(crate) fn may_approve(p: &Principal, r: &AccessRequest, policies: &AccessPolicies) -> bool {
    let me = p.subject_key();
    let policy = policies.for_cluster(&r.cluster);
    r.state == "pending"
        && r.requester != me
        && may_grant(p, r)
        && policy.is_none_or(|x| x.approvers.is_empty() || named(p, &x.approvers))
        && !(policy.is_some_and(|x| x.approvals == 2) && r.first_approver.as_deref() == Some(me.as_str()))
}

/// Whether `p` is among `names` (emails and `group:<name>`).
fn named(p: &Principal, names: &[String]) -> bool {
    names.iter().any(|n| match n.strip_prefix("group:") {
        Some(g) => p.groups.iter().any(|mine| mine == g),
        None => p.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(n)),
    })
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
    if let Some(max) = policy_for(&s, &b.cluster).await?.and_then(|x| x.max_duration_secs) {
        if b.duration_secs > max {
            return Err(ApiError::invalid(format!(
                "duration_secs: the access policy of cluster {} allows at most {max} s",
                b.cluster
            )));
        }
    }
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
        first_approver: None,
    };
    let t = target_of("access_request", &request.id, Some(&request.cluster), request.namespace.as_deref());
    audited.apply_named(Change::CreateAccessRequest(&request), "access.request", &t, StatusCode::CREATED).await?;
    Ok((StatusCode::CREATED, Audited::done(t), axum::Json(request)))
}

/// `GET /api/v1/access-requests` — permission: `access.request`. One's own requests, and those one may decide
/// (`can_decide`: deny, and approve when `can_approve`: the cluster's access policy may name other approvers).
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::AccessRequest, Target::NONE)?;
    let me = p.subject_key();
    let policies = policies(&s).await?;
    let items: Vec<_> = s
        .store
        .list_access_requests()
        .await?
        .into_iter()
        .map(|r| {
            let decide = r.requester != me && may_grant(&p, &r);
            let mut v = json!(r);
            v["can_decide"] = json!(decide && r.state == "pending");
            v["can_approve"] = json!(may_approve(&p, &r, &policies));
            (r.requester == me || decide, v)
        })
        .filter(|(visible, _)| *visible)
        .map(|(_, v)| v)
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

/// Whether `p` may decide `r`: admin or owner of its scope, and holding the asked role (or owner) there.
pub(crate) fn may_grant(p: &Principal, r: &AccessRequest) -> bool {
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
    let by = p.subject_key();
    let t = target_of("access_request", &id, Some(&r.cluster), r.namespace.as_deref());
    let policy = if approve { policy_for(&s, &r.cluster).await? } else { None };
    if let Some(x) = &policy {
        if !x.approvers.is_empty() && !named(&p, &x.approvers) {
            return Err(ApiError::new(
                Code::PermissionDenied,
                format!("the access policy of cluster {} names who may approve, and you are not among them", r.cluster),
            ));
        }
    }
    if policy.as_ref().is_some_and(|x| x.approvals == 2) {
        let mut first = r.first_approver.clone();
        if first.is_none() {
            let change = Change::FirstApproval { id: &id, by: &by };
            match audited.apply_named(change, "access.approve", &t, StatusCode::OK).await {
                Ok(_) => {
                    let now_pending = s.store.get_access_request(&id).await?;
                    return Ok((StatusCode::OK, Audited::done(t), axum::Json(now_pending)));
                }
                // Another approver was first meanwhile (or it was decided): read it again.
                Err(kubehero_store::StoreError::Conflict(_)) => {
                    first = s.store.get_access_request(&id).await?.first_approver;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if first.as_deref() == Some(by.as_str()) {
            return Err(ApiError::new(
                Code::FailedPrecondition,
                "you gave the first approval; the access policy wants a second approver",
            ));
        }
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
    let change = Change::DecideAccessRequest {
        id: &id,
        approve,
        by: &by,
        at: now,
        comment,
        binding: approve.then_some(&binding),
    };
    let action = if approve { "access.approve" } else { "access.deny" };
    match audited.apply_named(change, action, &t, StatusCode::OK).await {
        Ok(_) => {}
        Err(kubehero_store::StoreError::AlreadyExists(_)) => {
            return Err(ApiError::new(
                Code::FailedPrecondition,
                format!(
                    "{} already holds {} there through a role binding; it must end (or be deleted) before another \
                     is granted",
                    r.requester_email.as_deref().unwrap_or(&r.requester),
                    r.role
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    if approve {
        if let Err(e) = s.identity.bindings.reload().await {
            tracing::warn!(error = %e, "reloading role bindings after an approval failed; the periodic reload will");
        }
    }
    let decided = s.store.get_access_request(&id).await?;
    Ok((StatusCode::OK, Audited::done(t), axum::Json(decided)))
}
