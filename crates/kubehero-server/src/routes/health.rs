//! Liveness, readiness and metrics. Public: no authentication, nothing secret in the bodies.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

/// `GET /healthz` — permission: public. The process is up and serving.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /readyz` — permission: public. Ready when the database answers and the audit log takes rows (a
/// request that changes anything is refused while it does not). Issuers are reported in the body but never
/// make the server unready: an IdP being down only affects that issuer's tokens.
///
/// After a failed audit append the log counts as failing until a row commits again; while it is failing,
/// each readiness check tries one durable `audit.probe` row, so a replica that a load balancer stopped
/// sending requests to still finds out that it has recovered (and the log shows when it did).
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let two_secs = std::time::Duration::from_secs(2);
    let db = tokio::time::timeout(two_secs, state.store.ping()).await;
    let (db_ok, db_error) = match db {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (false, Some(e.to_string())),
        Err(_) => (false, Some("timed out after 2 s".to_string())),
    };
    let audit = &state.identity.audit;
    let (audit_ok, audit_error) = if !audit.stats().failing.load(std::sync::atomic::Ordering::Relaxed) {
        (true, None)
    } else {
        match tokio::time::timeout(
            two_secs,
            state.identity.record(probe(&state), kubehero_identity::Durability::Durable),
        )
        .await
        {
            Ok(Ok(())) => (true, None),
            Ok(Err(e)) => (false, Some(e.to_string())),
            Err(_) => (false, Some("the audit writer did not answer within 2 s".to_string())),
        }
    };
    let ready = db_ok && audit_ok;
    let issuers: Vec<_> = state
        .identity
        .verifier
        .health()
        .into_iter()
        .map(|h| {
            json!({
                "issuer": h.issuer,
                "healthy": h.healthy,
                "keys": h.keys,
                "last_success": h.last_success_unix.map(super::rfc3339),
                "last_error": h.last_error,
            })
        })
        .collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": { "backend": state.store.backend(), "ok": db_ok, "error": db_error },
        "audit": { "ok": audit_ok, "error": audit_error },
        "issuers": issuers,
    });
    (status, axum::Json(body))
}

/// The row a readiness check writes to find out whether a failing audit log takes rows again.
fn probe(state: &AppState) -> kubehero_core::AuditEvent {
    use kubehero_core::{AuditActor, AuditResult, AuditTarget};
    let id = state.identity.ids.next_id();
    kubehero_core::AuditEvent {
        event_id: state.identity.ids.next_id(),
        time_ms: state.clock.now_ms(),
        actor: AuditActor {
            sub: "kubehero".into(),
            kind: "system".into(),
            auth_method: "none".into(),
            ..Default::default()
        },
        action: "audit.probe".into(),
        target: AuditTarget { kind: Some("audit".into()), ..Default::default() },
        result: AuditResult::ok(200),
        request_id: id,
        source: None,
        user_agent: None,
    }
}

/// `GET /metrics` — permission: public. The Prometheus text format 0.0.4, or OpenMetrics 1.0 when the
/// `Accept` header asks for `application/openmetrics-text`.
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let open = state.connections.open.load(std::sync::atomic::Ordering::Relaxed);
    state.metrics.sample(state.identity.audit.stats(), open);
    for sink in state.forward.snapshot() {
        state.metrics.audit_forward_lag(&sink.name, sink.lag_rows);
    }
    // Unreachable store: the gauge keeps its last value (`/readyz` says the store is down).
    if let Ok(used) = super::breakglass::unacknowledged(&state).await {
        state.metrics.breakglass_unacknowledged(used.len());
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            state.metrics.render_openmetrics(),
        )
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
    }
}
