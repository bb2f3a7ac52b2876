//! Managed API keys: shown once at creation, stored as SHA-256 only, with an owner, an expiry and a role no
//! higher than the creator's. Revocation takes effect on the next request (keys are looked up per request).

use super::Json;
use crate::audit::{target_of, Audited};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kubehero_authn::{generate_api_key, sha256_hex};
use kubehero_core::{Action, PrincipalKind, Role, Target};
use kubehero_store::{ApiKeyRecord, Change};
use serde::Deserialize;
use serde_json::json;

/// Default and longest lifetime of a managed key.
const DEFAULT_DAYS: u32 = 90;
const MAX_DAYS: u32 = 3650;

/// `GET /api/v1/api-keys` — permission: `api_key.list` (viewer; owners and auditors see every key, others
/// their own).
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ApiKeyList, Target::NONE)?;
    let all = p.holds_globally(Role::Owner) || p.holds_globally(Role::Auditor);
    let me = p.subject_key();
    let keys = s.store.list_api_keys(if all { None } else { Some(me.as_str()) }).await?;
    Ok(axum::Json(json!({ "items": keys })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    #[serde(default = "viewer")]
    role: Role,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

fn viewer() -> Role {
    Role::Viewer
}

/// `POST /api/v1/api-keys` — permission: `api_key.create` (member). The role must be one the creator holds
/// globally; API keys cannot mint API keys. The response is the only time the key is shown.
pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Json(b): Json<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ApiKeyCreate, Target::NONE)?;
    if p.kind != PrincipalKind::Person {
        return Err(ApiError::denied("API keys are created by people, not by other API keys"));
    }
    if !p.holds_globally(b.role) {
        return Err(ApiError::denied(format!("cannot create a key with role {}: higher than your own", b.role)));
    }
    if b.name.is_empty() || b.name.len() > 128 || b.name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name must be 1-128 printable characters"));
    }
    let days = b.expires_in_days.unwrap_or(DEFAULT_DAYS);
    if days == 0 || days > MAX_DAYS {
        return Err(ApiError::invalid(format!("expires_in_days must be between 1 and {MAX_DAYS}")));
    }
    let secret = generate_api_key().map_err(|_| ApiError::new(Code::Internal, "no randomness available"))?;
    let hash = sha256_hex(secret.expose());
    let now = s.clock.now();
    let rec = ApiKeyRecord {
        id: hash[..16].to_string(),
        hash,
        name: b.name,
        role: b.role,
        owner: p.subject_key(),
        created_at: now,
        expires_at: Some(now + i64::from(days) * 86_400),
        revoked_at: None,
    };
    // The key is refused when its owner is deprovisioned: make sure the directory knows the owner by this key
    // (first, so that a failure leaves no key behind).
    s.identity.link_subject(&p).await?;
    let target = target_of("api_key", &rec.id, None, None);
    audited.apply(Change::CreateApiKey(&rec), Action::ApiKeyCreate, &target, StatusCode::CREATED).await?;
    let mut body = json!(rec);
    body["key"] = json!(secret.expose());
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(body)))
}

/// `DELETE /api/v1/api-keys/{id}` — permission: `api_key.revoke` (the key's owner, or an owner).
pub async fn revoke(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rec = s.store.get_api_key(&id).await?;
    allow(&p, Action::ApiKeyRevoke, Target::NONE.owned(rec.owner == p.subject_key()))?;
    let target = target_of("api_key", &id, None, None);
    let change = Change::RevokeApiKey { id: &id, at: s.clock.now() };
    let rec =
        kubehero_store::changed_api_key(audited.apply(change, Action::ApiKeyRevoke, &target, StatusCode::OK).await?)?;
    Ok((Audited::done(target), axum::Json(rec)))
}
