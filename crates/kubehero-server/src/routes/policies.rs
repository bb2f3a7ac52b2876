//! Policies: members create drafts and edit their own; admins arm, disarm and undo within their scope;
//! every transition is kept as history.
//!
//! Handlers whose target is a stored policy first load it (a read) to learn its cluster, namespace and owner,
//! then authorize before doing anything else.

use super::Json;
use crate::audit::Audited;
use crate::auth::{allow, Auth};
use crate::config::is_dns_label;
use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kubehero_core::{Action, Principal, Target};
use kubehero_store::{Change, Policy, PolicyState};
use serde::Deserialize;

/// Largest policy spec, serialized.
const MAX_SPEC: usize = 32 * 1024;

fn target<'a>(p: &'a Policy, principal: &Principal) -> Target<'a> {
    Target::in_namespace(&p.cluster, p.namespace.as_deref()).owned(p.owner == principal.subject_key())
}

fn new_id() -> ApiResult<String> {
    let b = kubehero_identity::credential::random_bytes(10)?;
    Ok(format!("pol_{}", kubehero_audit::hex::encode(&b)))
}

fn check_spec(name: &str, spec: &serde_json::Value) -> ApiResult<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name must be 1-128 printable characters"));
    }
    if !spec.is_object() {
        return Err(ApiError::invalid("spec must be a JSON object"));
    }
    if serde_json::to_vec(spec).map(|v| v.len()).unwrap_or(usize::MAX) > MAX_SPEC {
        return Err(ApiError::invalid(format!("spec larger than {MAX_SPEC} bytes")));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    cluster: Option<String>,
}

/// `GET /api/v1/policies[?cluster=NAME]` — permission: `policy.list` (viewer).
pub async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::PolicyList, Target::NONE)?;
    Ok(axum::Json(serde_json::json!({ "items": s.store.list_policies(q.cluster.as_deref()).await? })))
}

/// `GET /api/v1/policies/{id}` — permission: `policy.get` (viewer).
pub async fn get(State(s): State<AppState>, Auth(p): Auth, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::PolicyGet, Target::NONE)?;
    Ok(axum::Json(s.store.get_policy(&id).await?))
}

/// `GET /api/v1/policies/{id}/history` — permission: `policy.get` (viewer).
pub async fn history(State(s): State<AppState>, Auth(p): Auth, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::PolicyGet, Target::NONE)?;
    Ok(axum::Json(serde_json::json!({ "items": s.store.policy_history(&id).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    name: String,
    cluster: String,
    #[serde(default)]
    namespace: Option<String>,
    spec: serde_json::Value,
}

/// `POST /api/v1/policies` — permission: `policy.create` (member, or a grant scoped to the cluster).
/// The new policy is a draft owned by the caller.
pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Json(b): Json<CreatePolicy>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::PolicyCreate, Target::in_namespace(&b.cluster, b.namespace.as_deref()).owned(true))?;
    check_spec(&b.name, &b.spec)?;
    if let Some(ns) = &b.namespace {
        if !is_dns_label(ns) {
            return Err(ApiError::invalid("namespace must be a valid Kubernetes namespace name"));
        }
    }
    match s.store.get_cluster(&b.cluster).await {
        Ok(_) => {}
        Err(kubehero_store::StoreError::NotFound(_)) => {
            return Err(ApiError::invalid(format!("cluster {:?} is not registered", b.cluster)))
        }
        Err(e) => return Err(e.into()),
    }
    let now = s.clock.now();
    let policy = Policy {
        id: new_id()?,
        name: b.name,
        cluster: b.cluster,
        namespace: b.namespace,
        owner: p.subject_key(),
        spec: b.spec,
        state: PolicyState::Draft,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let target = policy_target(&policy);
    audited.apply(Change::CreatePolicy(&policy), Action::PolicyCreate, &target, StatusCode::CREATED).await?;
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(policy)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    name: String,
    spec: serde_json::Value,
    /// The version the edit is based on; a stale one is refused (409 `failed_precondition`).
    version: i64,
}

/// `PUT /api/v1/policies/{id}` — permission: `policy.update` (member on its own draft; admin within scope).
pub async fn update(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
    Json(b): Json<UpdatePolicy>,
) -> ApiResult<impl IntoResponse> {
    let current = s.store.get_policy(&id).await?;
    allow(&p, Action::PolicyUpdate, target(&current, &p))?;
    check_spec(&b.name, &b.spec)?;
    if current.state != PolicyState::Draft {
        return Err(ApiError::new(Code::FailedPrecondition, "only drafts can be edited; disarm and undo first"));
    }
    let actor = p.subject_key();
    let change = Change::UpdatePolicy {
        id: &id,
        expected_version: b.version,
        name: &b.name,
        spec: &b.spec,
        actor: &actor,
        at: s.clock.now(),
    };
    let target = policy_target(&current);
    let updated = audited.apply(change, Action::PolicyUpdate, &target, StatusCode::OK).await?;
    let updated = kubehero_store::changed_policy(updated)?;
    Ok((Audited::done(target), axum::Json(updated)))
}

/// The audit target of a policy: its id, cluster and namespace.
fn policy_target(p: &Policy) -> kubehero_core::AuditTarget {
    crate::audit::target_of("policy", &p.id, Some(&p.cluster), p.namespace.as_deref())
}

/// Arms, disarms or undoes; answers with the policy after the change.
async fn transition(
    s: &AppState,
    p: &Principal,
    audited: &Audited,
    id: &str,
    action: Action,
) -> ApiResult<impl IntoResponse> {
    let current = s.store.get_policy(id).await?;
    allow(p, action, target(&current, p))?;
    let (to, name) = match action {
        Action::PolicyArm => (PolicyState::Armed, "arm"),
        Action::PolicyDisarm => (PolicyState::Disarmed, "disarm"),
        _ => {
            // Undo steps back through the history: each undo reverts the latest arm or disarm that no
            // later undo has reverted yet, back to the state it left.
            let history = s.store.policy_history(id).await?;
            let mut undone = 0;
            let mut back_to = None;
            for t in history.iter().rev() {
                match t.action.as_str() {
                    "undo" => undone += 1,
                    "arm" | "disarm" if undone > 0 => undone -= 1,
                    "arm" | "disarm" => {
                        back_to = t.from_state;
                        break;
                    }
                    _ => {}
                }
            }
            match back_to {
                Some(prev) => (prev, "undo"),
                None => return Err(ApiError::new(Code::FailedPrecondition, "nothing left to undo")),
            }
        }
    };
    let allowed_from = match action {
        Action::PolicyArm => matches!(current.state, PolicyState::Draft | PolicyState::Disarmed),
        Action::PolicyDisarm => current.state == PolicyState::Armed,
        _ => current.state != to,
    };
    if !allowed_from {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            format!("cannot {name} a policy that is {}", current.state.as_str()),
        ));
    }
    let actor = p.subject_key();
    let change =
        Change::TransitionPolicy { id, from: current.state, to, action: name, actor: &actor, at: s.clock.now() };
    let target = policy_target(&current);
    let policy = kubehero_store::changed_policy(audited.apply(change, action, &target, StatusCode::OK).await?)?;
    Ok((Audited::done(target), axum::Json(policy)))
}

/// `POST /api/v1/policies/{id}/arm` — permission: `policy.arm` (admin within the policy's scope).
pub async fn arm(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    transition(&s, &p, &audited, &id, Action::PolicyArm).await
}

/// `POST /api/v1/policies/{id}/disarm` — permission: `policy.disarm` (admin within the policy's scope).
pub async fn disarm(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    transition(&s, &p, &audited, &id, Action::PolicyDisarm).await
}

/// `POST /api/v1/policies/{id}/undo` — permission: `policy.undo` (admin within the policy's scope).
pub async fn undo(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    transition(&s, &p, &audited, &id, Action::PolicyUndo).await
}
