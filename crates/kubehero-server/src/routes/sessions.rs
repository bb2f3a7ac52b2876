//! `/api/v1/auth/…`: people list and revoke their own dashboard sessions and CLI tokens (owners: anyone's),
//! and exchange a CLI token for a new one.

use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use kubehero_core::{Action, AuthMethod, Principal, Role, Target};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    all: bool,
}

/// `GET /api/v1/auth/sessions` — permission: `session.list` (everyone; `?all=true` owners).
pub async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SessionList, Target::NONE)?;
    if q.all && !p.holds_globally(Role::Owner) {
        return Err(ApiError::denied("listing everyone's sessions requires owner"));
    }
    let items = if q.all { s.store.list_sessions(None).await? } else { own_sessions(&s, &p).await? };
    Ok(axum::Json(json!({ "items": items })))
}

/// The caller's own sessions and CLI tokens: their subject *from their issuer* (another issuer's `alice` is
/// someone else).
async fn own_sessions(s: &AppState, p: &Principal) -> ApiResult<Vec<kubehero_store::SessionRecord>> {
    let mine = s.store.list_sessions(Some(&p.sub)).await?;
    Ok(mine.into_iter().filter(|x| x.issuer == p.issuer).collect())
}

/// `DELETE /api/v1/auth/sessions/{id}` — permission: `session.revoke` (own; owners any).
pub async fn revoke(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: crate::audit::Audited,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    // Look among the caller's own first, so that others' ids are not even confirmed to exist.
    let own = own_sessions(&s, &p).await?.into_iter().find(|x| x.id == id);
    allow(&p, Action::SessionRevoke, Target { owned: own.is_some(), ..Target::NONE })?;
    let exists = match own {
        Some(_) => true,
        None => s.store.list_sessions(None).await?.iter().any(|x| x.id == id),
    };
    if !exists {
        return Err(ApiError::not_found(format!("session {id:?} not found")));
    }
    let target = crate::audit::target_of("session", &id, None, None);
    let change = kubehero_store::Change::RevokeSession { id: &id, at: s.clock.now() };
    let rec =
        kubehero_store::changed_session(audited.apply(change, Action::SessionRevoke, &target, StatusCode::OK).await?)?;
    s.identity.credentials.forget_id(&id);
    Ok((crate::audit::Audited::done(target), axum::Json(rec)))
}

/// `POST /api/v1/auth/rotate` — permission: `token.rotate`: a new CLI token for the one presented, which is
/// revoked at once.
pub async fn rotate(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: crate::audit::Audited,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::TokenRotate, Target::NONE)?;
    if p.auth_method != AuthMethod::CliToken {
        return Err(ApiError::invalid("only a CLI token (from `kubehero login`) can be rotated"));
    }
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').map(|(_, t)| t.trim()))
        .unwrap_or_default();
    let (_, old) = s.identity.cli_token(token).await?;
    if old.sub.starts_with(super::breakglass::SUBJECT_PREFIX) {
        return Err(ApiError::invalid("a break-glass token cannot be rotated: it ends with its emergency access"));
    }
    let now = s.clock.now();
    let (secret, new) = crate::device::new_cli_token(
        &old.sub,
        old.email.clone(),
        old.groups.clone(),
        old.issuer.clone(),
        now,
        old.user_agent.clone(),
    )?;
    let target = crate::audit::target_of("session", &old.id, None, None);
    let change = kubehero_store::Change::RotateCliToken { new: &new, old_id: &old.id, at: now };
    audited.apply(change, Action::TokenRotate, &target, StatusCode::OK).await?;
    s.identity.credentials.forget_id(&old.id);
    Ok((
        crate::audit::Audited::done(target),
        axum::Json(
            json!({ "access_token": secret, "token_type": "Bearer", "expires_in": crate::device::CLI_TOKEN_SECS }),
        ),
    ))
}
