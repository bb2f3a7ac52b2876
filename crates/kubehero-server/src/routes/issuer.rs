//! KubeHero's own OIDC issuer over HTTP: discovery and JWKS (public: API servers fetch them without a
//! credential), and the signing keys' rotation (owners).

use crate::audit::{target_of, Audited};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use kubehero_core::{Action, Target};
use kubehero_store::Change;
use serde_json::json;

fn off() -> ApiError {
    ApiError::new(
        Code::NotFound,
        "KubeHero's OIDC issuer is off: set KUBEHERO_PUBLIC_URL to the https:// URL API servers reach KubeHero at",
    )
}

/// `GET /.well-known/openid-configuration` — public.
pub async fn discovery(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    let doc = s.issuer.discovery().ok_or_else(off)?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(doc)))
}

/// `GET /openid/v1/jwks` — public. Every key that signs, is about to, or did within a day. Cached for 20 s:
/// go-oidc (kube-apiserver's verifier) fetches the JWKS again on an unknown `kid` only once its copy is within
/// 30 s of expiring, so a shorter lifetime lets it pick up a new key the first time it meets one.
pub async fn jwks(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    s.issuer.url().ok_or_else(off)?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=20")], axum::Json(s.issuer.jwks())))
}

/// `GET /api/v1/issuer-keys` — permission: `settings.read`. Each key's place in the rotation.
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsRead, Target::NONE)?;
    Ok(axum::Json(json!({ "issuer": s.issuer.url(), "items": s.issuer.keys() })))
}

/// `POST /api/v1/issuer-keys/rotate` — permission: `settings.write` (owner). A new key, published now, signing
/// after `KUBEHERO_ISSUER_KEY_LEAD_SECS`; the current one stays published for a day after that.
pub async fn rotate(State(s): State<AppState>, Auth(p): Auth, audited: Audited) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsWrite, Target::NONE)?;
    let now = s.clock.now();
    let key = s.issuer.new_key(now).map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
    let target = target_of("issuer_key", &key.id, None, None);
    audited.apply_named(Change::AddIssuerKey(&key), "issuer_key.rotate", &target, StatusCode::CREATED).await?;
    s.issuer.refresh(&*s.store, now).await.map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
    let state = s.issuer.keys().into_iter().find(|k| k.kid == key.id);
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(json!(state))))
}
