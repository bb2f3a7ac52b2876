//! The agent CAs and their rollover (owners): stage a new built-in CA (trusted and handed to agents at their
//! next renewal), activate it once every agent has renewed (it signs agent certificates and the agent
//! listener's certificate), retire the old one once every agent holds a certificate from the new one (it is no
//! longer trusted; tunnels whose certificate it signed are closed). With CA files (cert-manager), the same
//! three steps are edits of the files; these routes list them and refuse changes.

use super::Json;
use crate::audit::{target_of, Audited};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kubehero_core::{Action, Target};
use kubehero_store::Change;
use serde::Deserialize;
use serde_json::json;

fn hash_of(cert_pem: &str) -> String {
    kubehero_agent::pki::pem_certs(cert_pem)
        .ok()
        .and_then(|c| kubehero_agent::pki::cert_facts(&c[0]).ok())
        .map_or_else(|| "unreadable".into(), |f| f.spki_hash)
}

/// `GET /api/v1/agent-cas` — permission: `settings.read` (owner, auditor).
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsRead, Target::NONE)?;
    let signing = s.agents.ca.hash();
    if !s.agents.ca.built_in() {
        let items: Vec<_> = kubehero_agent::pki::pem_certs(&s.agents.ca.bundle_pem())
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, c)| kubehero_agent::pki::cert_facts(c).ok().map(|f| (i, f)))
            .map(|(i, f)| json!({ "id": format!("file-{i}"), "ca_hash": f.spki_hash, "signing": f.spki_hash == signing, "not_after": f.not_after }))
            .collect();
        return Ok(axum::Json(json!({ "source": "files", "items": items })));
    }
    let items: Vec<_> = s
        .store
        .agent_cas()
        .await?
        .into_iter()
        .map(|c| {
            let hash = hash_of(&c.cert_pem);
            json!({
                "id": c.id, "ca_hash": hash, "signing": c.retired_at.is_none() && hash == signing,
                "created_at": c.created_at, "activated_at": c.activated_at, "retired_at": c.retired_at,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "source": "store", "items": items })))
}

fn files_refusal() -> ApiError {
    ApiError::new(
        Code::FailedPrecondition,
        "the agent CA comes from KUBEHERO_AGENT_CA_CERT/KEY: roll it over by editing those files (add the new \
         CA after the current one; later put it first with its key; later remove the old one)",
    )
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StageCa {}

/// `POST /api/v1/agent-cas` (StageCa) — permission: `settings.write` (owner). A new built-in CA, staged.
pub async fn stage(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Json(_): Json<StageCa>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsWrite, Target::NONE)?;
    let ca = s
        .agents
        .ca
        .stage(s.clock.now())
        .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?
        .ok_or_else(files_refusal)?;
    let target = target_of("agent_ca", &ca.id, None, None);
    audited.apply_named(Change::AddAgentCa(&ca), "agent_ca.stage", &target, StatusCode::CREATED).await?;
    s.agents.refresh_ca(&s).await;
    let body = json!({ "id": ca.id, "ca_hash": hash_of(&ca.cert_pem), "created_at": ca.created_at });
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(body)))
}

/// `POST /api/v1/agent-cas/{id}/activate` — permission: `settings.write` (owner). The staged CA signs from now
/// on; do it once every agent has renewed since it was staged (their bundles hold it).
pub async fn activate(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsWrite, Target::NONE)?;
    if !s.agents.ca.built_in() {
        return Err(files_refusal());
    }
    let target = target_of("agent_ca", &id, None, None);
    let change = Change::ActivateAgentCa { id: &id, at: s.clock.now() };
    audited.apply_named(change, "agent_ca.activate", &target, StatusCode::OK).await?;
    s.agents.refresh_ca(&s).await;
    Ok((StatusCode::OK, Audited::done(target), axum::Json(json!({ "id": id, "ca_hash": s.agents.ca.hash() }))))
}

/// `POST /api/v1/agent-cas/{id}/retire` — permission: `settings.write` (owner). The CA is no longer trusted:
/// tunnels whose certificate it signed close. The signing CA cannot be retired.
pub async fn retire(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::SettingsWrite, Target::NONE)?;
    if !s.agents.ca.built_in() {
        return Err(files_refusal());
    }
    let signing = s.agents.ca.hash();
    let cas = s.store.agent_cas().await?;
    let ca = cas.iter().find(|c| c.id == id).ok_or_else(|| ApiError::not_found(format!("agent CA {id:?}")))?;
    if ca.retired_at.is_none() && hash_of(&ca.cert_pem) == signing {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            "this CA signs agent certificates: activate another one before retiring it",
        ));
    }
    let target = target_of("agent_ca", &id, None, None);
    let change = Change::RetireAgentCa { id: &id, at: s.clock.now() };
    audited.apply_named(change, "agent_ca.retire", &target, StatusCode::OK).await?;
    s.agents.refresh_ca(&s).await;
    Ok((StatusCode::OK, Audited::done(target), axum::Json(json!({ "id": id }))))
}
