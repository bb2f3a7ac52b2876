//! IdP, integration and access-policy settings: named JSON documents. Owners write them; owners and auditors read them,
//! with every secret-looking field redacted on the way out.

use super::Json;
use crate::audit::{target_of, Audited};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use kubehero_core::{Action, Target};
use kubehero_store::Change;
use serde_json::{json, Value};

/// The settings documents that exist.
pub const KEYS: &[&str] = &["idp", "integrations", "access"];

fn check_key(key: &str) -> ApiResult<()> {
    if KEYS.contains(&key) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no settings document {key:?}; known: {}", KEYS.join(", "))))
    }
}

/// Replaces the values of fields whose names look secret (`secret`, `token`, `password`, `key`) with `***`.
pub fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let l = k.to_ascii_lowercase();
                    let secret = ["secret", "token", "password", "key", "credential"].iter().any(|s| l.contains(s));
                    (k.clone(), if secret && !v.is_null() { json!("***") } else { redact(v) })
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// `GET /api/v1/settings` — permission: `settings.read` (owner, auditor).
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsRead, Target::NONE)?;
    let items: serde_json::Map<String, Value> =
        s.store.list_settings().await?.into_iter().map(|(k, v)| (k, redact(&v))).collect();
    Ok(axum::Json(Value::Object(items)))
}

/// `GET /api/v1/settings/{key}` — permission: `settings.read` (owner, auditor).
pub async fn get(State(s): State<AppState>, Auth(p): Auth, Path(key): Path<String>) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsRead, Target::NONE)?;
    check_key(&key)?;
    let v = s.store.get_setting(&key).await?.unwrap_or_else(|| json!({}));
    Ok(axum::Json(redact(&v)))
}

/// `PUT /api/v1/settings/{key}` — permission: `settings.write` (owner). The body must be a JSON object.
pub async fn put(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(key): Path<String>,
    Json(v): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsWrite, Target::NONE)?;
    check_key(&key)?;
    if !v.is_object() {
        return Err(ApiError::invalid("settings must be a JSON object"));
    }
    if key == "access" {
        super::access::AccessPolicies::parse(&v).map_err(ApiError::invalid)?;
    }
    let target = target_of("setting", &key, None, None);
    let change = Change::PutSetting { key: &key, value: &v, at: s.clock.now() };
    audited.apply(change, Action::SettingsWrite, &target, axum::http::StatusCode::OK).await?;
    Ok((Audited::done(target), axum::Json(redact(&v))))
}
