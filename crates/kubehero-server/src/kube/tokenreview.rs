//! The TokenReview webhook: a cluster's API server started with `--authentication-token-webhook-config-file`
//! asks KubeHero who a bearer token is. Served on the agent listener (mutual TLS): the API server presents the
//! client certificate of its webhook kubeconfig (`kubehero cluster add --webhook`) or its agent's.
//!
//! It accepts the tokens KubeHero makes for that cluster: per-cluster tokens (`khx_`) and direct tokens (JWTs of
//! KubeHero's issuer whose `aud` is the cluster's audience). Both are checked against their CLI login now, so a
//! revoked login or a deprovisioned person is refused at once (bounded by the API server's own cache TTL). A bad
//! token is an answer (`authenticated: false` with the reason), never an HTTP error; a malformed review, or a
//! caller without a valid certificate, is. Every review is an audit row.

use crate::agent::listener::{answer, error, read_json, Answer};
use crate::agent::{agent_event, result, Agents};
use crate::state::AppState;
use http::StatusCode;
use hyper::body::Incoming;
use kubehero_agent::pki::CertFacts;
use kubehero_core::kube::cluster_user;
use kubehero_core::{AuditActor, AuditOutcome, Principal};
use kubehero_identity::Durability;
use serde_json::{json, Value};
use std::sync::Arc;

const ACTION: &str = "k8s.tokenreview";

/// Writes the review's row; a refused review is durable before the answer.
async fn record(
    state: &AppState,
    cluster: &str,
    who: Option<&Principal>,
    status: u16,
    denied: Option<&str>,
    source: Option<String>,
) -> bool {
    let outcome = if denied.is_some() { AuditOutcome::Denied } else { AuditOutcome::Ok };
    let mut event = agent_event(state, ACTION, cluster, Some("mtls"), result(outcome, status, denied), source);
    if let Some(p) = who {
        event.actor = AuditActor::of(p);
    }
    let durability = if denied.is_some() { Durability::Durable } else { Durability::Queued };
    match state.identity.record(event, durability).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "the row of a token review could not be written");
            false
        }
    }
}

/// `POST /api/v1/tokenreview` on the agent listener.
pub async fn review(
    state: &AppState,
    agents: &Arc<Agents>,
    peer: Option<CertFacts>,
    source: Option<String>,
    req: hyper::Request<Incoming>,
) -> Answer {
    let Some(peer) = peer else {
        record(state, "unknown", None, 401, Some("unauthenticated"), source).await;
        let msg = "a token review needs the cluster's client certificate: the webhook kubeconfig that `kubehero \
                   cluster add NAME --webhook` prints";
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", msg);
    };
    let cluster = peer.cn.clone().unwrap_or_default();
    if let Some(r) = crate::agent::listener::refusal(state, agents, &peer) {
        record(state, &cluster, None, 403, Some(r.code()), source).await;
        return error(StatusCode::FORBIDDEN, r.code(), r.as_str());
    }
    let body: Value = match read_json(req).await {
        Ok(b) => b,
        Err(a) => {
            record(state, &cluster, None, a.status().as_u16(), Some("invalid_argument"), source).await;
            return a;
        }
    };
    let version = body["apiVersion"].as_str().unwrap_or_default().to_string();
    let token = body["spec"]["token"].as_str();
    let versions = ["authentication.k8s.io/v1", "authentication.k8s.io/v1beta1"];
    let (Some(token), true, true) = (token, versions.contains(&version.as_str()), body["kind"] == "TokenReview") else {
        record(state, &cluster, None, 400, Some("invalid_argument"), source).await;
        let msg = "not a TokenReview: send kind TokenReview, apiVersion authentication.k8s.io/v1 (or v1beta1), \
                   spec.token";
        return error(StatusCode::BAD_REQUEST, "invalid_argument", msg);
    };
    let asked: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let status = match who(state, agents, &cluster, token, &asked).await {
        Ok((p, audience, groups)) => {
            if !record(state, &cluster, Some(&p), 200, None, source).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the audit log cannot be written");
            }
            let mut status = json!({
                "authenticated": true,
                "user": {
                    "username": cluster_user(p.email.as_deref(), &p.sub),
                    "uid": p.sub,
                    "groups": groups,
                    "extra": { "kubehero.io/auth-method": [p.auth_method.as_str()] },
                },
            });
            if !asked.is_empty() {
                status["audiences"] = json!([audience]);
            }
            status
        }
        Err(why) => {
            if !record(state, &cluster, None, 200, Some("unauthenticated"), source).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the audit log cannot be written");
            }
            json!({ "authenticated": false, "error": why })
        }
    };
    answer(StatusCode::OK, &json!({ "apiVersion": version, "kind": "TokenReview", "status": status }))
}

/// Who `token` is on `cluster`, with the audience it was accepted for and the groups the cluster sees; why not
/// otherwise.
async fn who(
    state: &AppState,
    agents: &Agents,
    cluster: &str,
    token: &str,
    asked: &[String],
) -> Result<(Principal, String, Vec<String>), String> {
    let audience = agents.registry.audience(cluster).ok_or_else(|| format!("cluster {cluster} is not registered"))?;
    if !asked.is_empty() && !asked.contains(&audience) {
        return Err(format!("KubeHero's tokens for this cluster have the audience {audience:?}, not one asked for"));
    }
    let p = if token.starts_with(kubehero_identity::cluster_token::PREFIX) {
        state.identity.cluster_token(token, cluster).await.map(|(p, _)| p).map_err(|e| e.to_string())?
    } else if token.split('.').count() == 3 {
        let claims = state.issuer.verify(token, state.clock.now())?;
        if claims["aud"] != audience.as_str() {
            return Err(format!("the token is for another audience, not {audience:?}"));
        }
        let (Some(sid), Some(exp)) = (claims["sid"].as_str(), claims["exp"].as_i64()) else {
            return Err("the token names no CLI login".into());
        };
        state.identity.behind_login(sid, exp).await.map(|(p, _)| p).map_err(|e| e.to_string())?
    } else {
        return Err("not a KubeHero token for a cluster (kubehero token --direct, or a per-cluster token)".into());
    };
    let groups = super::direct::groups(state, &p, cluster, None);
    if groups.is_empty() {
        return Err(format!("{} has no KubeHero role on cluster {cluster}", cluster_user(p.email.as_deref(), &p.sub)));
    }
    Ok((p, audience, groups))
}
