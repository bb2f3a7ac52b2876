//! Role bindings: viewers list them; owners create and delete the database's bindings. Bindings from the
//! config file are listed with `source: "config"` and cannot be deleted through the API.

use super::Json;
use crate::audit::{target_of, Audited};
use crate::auth::{allow, Auth};
use crate::config::validate_scope;
use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kubehero_core::{Action, Binding, BindingSubject, Role, Target};
use kubehero_store::{Change, StoredBinding};
use serde::Deserialize;
use serde_json::json;

/// `GET /api/v1/role-bindings` — permission: `role_binding.list` (viewer).
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::RoleBindingList, Target::NONE)?;
    let mut items: Vec<serde_json::Value> = s
        .identity
        .bindings
        .file_bindings()
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut v = json!(b);
            v["id"] = json!(format!("config-{i}"));
            v["source"] = json!("config");
            v
        })
        .collect();
    for b in s.store.list_bindings().await? {
        let mut v = json!(b);
        v["source"] = json!("api");
        items.push(v);
    }
    Ok(axum::Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBinding {
    /// `{"kind":"group","name":"…"}` or `{"kind":"user","name":"…"}`.
    subject: BindingSubject,
    role: Role,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    /// Unix seconds from which the binding grants nothing (it is then deleted with an audit row); absent: until
    /// deleted.
    #[serde(default)]
    expires_at: Option<i64>,
}

/// `POST /api/v1/role-bindings` — permission: `role_binding.create` (owner).
pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Json(b): Json<CreateBinding>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::RoleBindingCreate, Target::NONE)?;
    let name = match &b.subject {
        BindingSubject::Group(n) | BindingSubject::User(n) => n,
    };
    if name.is_empty() || name.len() > 512 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("subject name must be 1-512 printable characters"));
    }
    if let BindingSubject::User(u) = &b.subject {
        kubehero_core::check_user_name(u).map_err(ApiError::invalid)?;
    }
    let scope = validate_scope(b.cluster, b.namespace).map_err(ApiError::invalid)?;
    let now = s.clock.now();
    if let Some(at) = b.expires_at {
        if at <= now || at > now + 366 * 86400 {
            return Err(ApiError::invalid("expires_at: Unix seconds in the future, at most a year away"));
        }
    }
    // An expired binding of the same subject, role and scope (not yet swept) would block this one.
    s.identity.expire_bindings().await?;
    let raw = kubehero_identity::credential::random_bytes(10)?;
    let stored = StoredBinding {
        id: format!("rb_{}", kubehero_audit::hex::encode(&raw)),
        binding: Binding { subject: b.subject, role: b.role, scope },
        created_by: p.subject_key(),
        created_at: now,
        expires_at: b.expires_at,
    };
    let target = target_of("role_binding", &stored.id, None, None);
    audited.apply(Change::CreateBinding(&stored), Action::RoleBindingCreate, &target, StatusCode::CREATED).await?;
    reload(&s).await;
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(stored)))
}

/// `DELETE /api/v1/role-bindings/{id}` — permission: `role_binding.delete` (owner).
pub async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    // Whoever may list bindings hears that an unknown one is not found, before being told they cannot delete.
    if allow(&p, Action::RoleBindingDelete, Target::NONE).is_err()
        && allow(&p, Action::RoleBindingList, Target::NONE).is_ok()
        && !id.starts_with("config-")
        && !s.store.list_bindings().await?.iter().any(|b| b.id == id)
    {
        return Err(ApiError::not_found(format!("role binding {id:?} not found")));
    }
    allow(&p, Action::RoleBindingDelete, Target::NONE)?;
    if id.starts_with("config-") {
        return Err(ApiError::new(Code::FailedPrecondition, "bindings from the config file are changed in the file"));
    }
    let target = target_of("role_binding", &id, None, None);
    audited.apply(Change::DeleteBinding(&id), Action::RoleBindingDelete, &target, StatusCode::NO_CONTENT).await?;
    reload(&s).await;
    Ok((StatusCode::NO_CONTENT, Audited::done(target)))
}

async fn reload(s: &AppState) {
    if let Err(e) = s.identity.bindings.reload().await {
        tracing::warn!(error = %e, "reloading role bindings failed; the periodic refresh will retry");
    }
}
