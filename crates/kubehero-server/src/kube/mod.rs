//! The Kubernetes surface: `/k8s/clusters/{name}/…` is the cluster's whole API, reached through its agent's
//! tunnel. The caller authenticates with any KubeHero credential; KubeHero decides who the cluster sees (its
//! roles for that cluster and namespace, as groups) and the agent impersonates exactly that identity with its
//! own service account. Errors KubeHero answers itself are Kubernetes `Status` objects, so kubectl prints them.
//!
//! Invariant 9 (ARCHITECTURE.md): nothing a client sends can add a user, group or extra. Incoming
//! `Authorization`, `Impersonate-*`, `X-Remote-*` and `Kubehero-*` headers never leave the control plane; a
//! request that asks to impersonate (`kubectl --as`) is refused rather than silently run as someone else.

use crate::audit::Recorded;
use crate::error::{ApiError, Code};
use crate::middleware::ForeignErrorBody;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kubehero_core::kube::{cluster_user, RequestInfo};
use kubehero_core::{AuditActor, AuditTarget, Principal};

pub mod direct;
pub mod kubeconfig;
pub mod rbac;
pub mod streams;
pub mod tokenreview;

/// Where the surface lives.
pub const PREFIX: &str = "/k8s/clusters/";

use kubehero_agent::proto::{IMPERSONATE_EXTRA, IMPERSONATE_GROUP, IMPERSONATE_UID, IMPERSONATE_USER};

/// A Kubernetes `Status` answer made by KubeHero (kept as is by the error middleware), with the facts the
/// audit point needs.
fn status(code: StatusCode, reason: &str, message: &str, api: Code) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut res = (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    res.extensions_mut().insert(ForeignErrorBody);
    res.extensions_mut().insert(ApiError::new(api, message));
    res
}

/// The audit facts of a Kubernetes request.
fn recorded(res: &mut Response, p: &Principal, cluster: &str, info: &RequestInfo) {
    res.extensions_mut().insert(Recorded {
        action: action_name(info.verb),
        actor: AuditActor::of(p),
        plain_read: info.is_read(),
    });
    let kind = match (&info.resource, &info.subresource) {
        (Some(r), Some(s)) => format!("{r}/{s}"),
        (Some(r), None) => r.clone(),
        (None, _) => "nonresource".into(),
    };
    let kind = if info.api_group.is_empty() { kind } else { format!("{kind}.{}", info.api_group) };
    res.extensions_mut().insert(AuditTarget {
        kind: Some(kind),
        id: info.name.clone(),
        cluster: Some(cluster.to_string()),
        namespace: info.namespace.clone(),
    });
}

/// `k8s.<verb>`.
fn action_name(verb: &str) -> &'static str {
    match verb {
        "get" => "k8s.get",
        "list" => "k8s.list",
        "watch" => "k8s.watch",
        "create" => "k8s.create",
        "update" => "k8s.update",
        "patch" => "k8s.patch",
        "delete" => "k8s.delete",
        "deletecollection" => "k8s.deletecollection",
        "head" => "k8s.head",
        "post" => "k8s.post",
        "put" => "k8s.put",
        "options" => "k8s.options",
        _ => "k8s.other",
    }
}

/// Headers that belong to one connection (kept on a `101` answer only for the upgrade itself), and `Host`.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == axum::http::header::HOST || kubehero_agent::upstream::hop_by_hop(name)
}

/// Headers a client may never pass to a cluster.
fn identity_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "authorization" || n.starts_with("impersonate-") || n.starts_with("x-remote-") || n.starts_with("kubehero-")
}

/// Splits `/k8s/clusters/{name}/{rest}` into the cluster and the API path (`/` when there is none).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(PREFIX)?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

/// Who is asking: a per-cluster token (for this cluster only), else any KubeHero credential.
pub(crate) async fn resolve(
    s: &AppState,
    method: &axum::http::Method,
    headers: &HeaderMap,
    cluster: &str,
) -> Result<Principal, ApiError> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| t.starts_with(kubehero_identity::cluster_token::PREFIX));
    match bearer {
        Some(t) => s.identity.cluster_token(t, cluster).await.map(|(p, _)| p).map_err(ApiError::from),
        None => crate::auth::authenticate(s, method, headers).await,
    }
}

/// Who the cluster sees, as the headers the agent turns into `Impersonate-*`: the user, the role and IdP
/// groups (the API server adds `system:authenticated`), the auth-method extra. `uid` only for API servers that
/// accept `Impersonate-Uid` (1.22 and later).
fn identity_headers(p: &Principal, groups: &[String], with_uid: bool) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut push = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            out.push((n, v));
        }
    };
    push(IMPERSONATE_USER, &cluster_user(p.email.as_deref(), &p.sub));
    for g in groups {
        push(IMPERSONATE_GROUP, g);
    }
    // `system:authenticated` is not sent: the API server adds it to every impersonated user itself (when the
    // groups name neither it nor `system:unauthenticated`), and each impersonated group costs it one
    // authorization check per request.
    if with_uid {
        push(IMPERSONATE_UID, &p.sub);
    }
    push(&format!("{IMPERSONATE_EXTRA}kubehero.io%2fauth-method"), p.auth_method.as_str());
    out
}

/// Whether a `gitVersion` is 1.22 or later.
fn accepts_uid(version: Option<&str>) -> bool {
    let v = version.unwrap_or("").trim_start_matches('v');
    let mut it = v.split('.').map(|x| x.chars().take_while(char::is_ascii_digit).collect::<String>());
    match (it.next().and_then(|m| m.parse::<u32>().ok()), it.next().and_then(|m| m.parse::<u32>().ok())) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 22),
        _ => false,
    }
}

/// Every method on `/k8s/clusters/{name}` and below.
pub async fn proxy(State(s): State<AppState>, mut req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let Some((cluster, api_path)) = split_path(&path) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such path", Code::NotFound);
    };
    let (cluster, api_path) = (cluster.to_string(), api_path.to_string());
    let p = match resolve(&s, req.method(), req.headers(), &cluster).await {
        Ok(p) => p,
        Err(e) => {
            let mut res = status(StatusCode::UNAUTHORIZED, "Unauthorized", &e.message, Code::Unauthenticated);
            // The audit point records refused credentials from this.
            res.extensions_mut().insert(e);
            return res;
        }
    };
    let info = RequestInfo::parse(req.method().as_str(), &api_path, query.as_deref());
    let refuse = |code: StatusCode, reason: &str, message: &str, api: Code| {
        let mut res = status(code, reason, message, api);
        recorded(&mut res, &p, &cluster, &info);
        res
    };
    if req.headers().keys().any(|n| n.as_str().starts_with("impersonate-")) {
        let msg = "KubeHero decides who you are in the cluster: impersonation (kubectl --as, --as-group) is not \
                   passed on. Ask for a binding with the role you need instead";
        return refuse(StatusCode::FORBIDDEN, "Forbidden", msg, Code::PermissionDenied);
    }
    // Registered clusters are known in memory (the registry follows every change here at once, and other
    // replicas' within 2 s): no database read per request.
    if s.agents.registry.refusal(Some(&cluster), "").is_some() {
        let msg = format!("cluster {cluster} is not registered with KubeHero");
        return refuse(StatusCode::NOT_FOUND, "NotFound", &msg, Code::NotFound);
    }
    let groups = direct::groups(&s, &p, &cluster, info.namespace.as_deref());
    if groups.is_empty() {
        let msg = format!("you have no KubeHero role on cluster {cluster}: ask an admin for a binding");
        return refuse(StatusCode::FORBIDDEN, "Forbidden", &msg, Code::PermissionDenied);
    }
    let upgrade = req.headers().contains_key(axum::http::header::UPGRADE);
    // An idle HTTP/1.1 connection over a stream of this cluster's tunnel, when one is free: no new stream, no
    // handshake. Upgrades always get their own stream (the connection is theirs afterwards).
    let pooled = if upgrade { None } else { s.agents.hub.pooled(&cluster) };
    let conn = match pooled {
        Some(send) => Ok(send),
        None => match s.agents.open(&s, &cluster).await {
            Ok(stream) => Err(stream),
            Err(e) => {
                let known = s.store.cluster_status(&cluster).await.ok().flatten();
                let seen = known.as_ref().and_then(|k| k.last_seen).map(|t| {
                    let ago = (s.clock.now() - t).max(0);
                    if ago < 120 {
                        format!(" (last seen {ago} s ago)")
                    } else {
                        format!(" (last seen {} min ago)", ago / 60)
                    }
                });
                let msg = match e {
                    crate::agent::hub::OpenError::NotConnected(_) => {
                        format!(
                            "cluster {cluster} is not connected{}",
                            seen.unwrap_or_else(|| " (its agent never connected)".into())
                        )
                    }
                    other => other.to_string(),
                };
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", &msg, Code::Unavailable);
            }
        },
    };
    let with_uid = accepts_uid(s.agents.hub.kubernetes_version(&cluster).as_deref());
    // Open until the answer is sent (a watch, logs -f, an exec session: as long as they last); cut when access is
    // lost. A watch gets a second row when it ends.
    let on_end: Option<Box<dyn FnOnce() + Send>> = (info.verb == "watch").then(|| {
        let (s2, actor, cluster2, info2) = (s.clone(), AuditActor::of(&p), cluster.clone(), info.clone());
        // The same request id as the watch's first row, so the two are found together; and how long it was open.
        let request_id = req.extensions().get::<crate::middleware::RequestId>().map(|r| r.0.clone());
        let opened = std::time::Instant::now();
        Box::new(move || {
            tokio::spawn(async move {
                let target = AuditTarget {
                    kind: info2.resource.clone(),
                    id: info2.name.clone(),
                    cluster: Some(cluster2),
                    namespace: info2.namespace.clone(),
                };
                let event = kubehero_core::AuditEvent {
                    event_id: s2.identity.ids.next_id(),
                    time_ms: s2.clock.now_ms(),
                    actor,
                    action: "k8s.watch_end".into(),
                    target,
                    result: kubehero_core::AuditResult {
                        duration_ms: Some(u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX)),
                        ..kubehero_core::AuditResult::ok(200)
                    },
                    request_id: request_id.unwrap_or_else(|| s2.identity.ids.next_id()),
                    source: None,
                    user_agent: None,
                };
                if let Err(e) = s2.identity.record(event, kubehero_identity::Durability::Queued).await {
                    tracing::warn!(error = %e, "the end row of a watch could not be queued");
                }
            });
        }) as Box<dyn FnOnce() + Send>
    });
    let registration =
        s.kube_streams.register(&cluster, info.namespace.as_deref(), req.method(), req.headers(), on_end);
    let mut cut = registration.stopped.clone();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let target = match &query {
        Some(q) => format!("{api_path}?{q}"),
        None => api_path.clone(),
    };
    let mut out = http::Request::builder().method(parts.method.clone()).uri(target);
    let Some(headers) = out.headers_mut() else {
        return refuse(StatusCode::BAD_REQUEST, "BadRequest", "the request cannot be passed on", Code::InvalidArgument);
    };
    copy_headers(&parts.headers, headers, upgrade);
    headers.insert(axum::http::header::HOST, HeaderValue::from_static("kubernetes.default.svc"));
    for (n, v) in identity_headers(&p, &groups, with_uid) {
        headers.append(n, v);
    }
    let Ok(out) = out.body(body) else {
        return refuse(StatusCode::BAD_REQUEST, "BadRequest", "the request cannot be passed on", Code::InvalidArgument);
    };
    let hub = s.agents.hub.clone();
    let answer = async {
        // A pooled connection, or a new stream to start one on.
        let mut send = match conn {
            Ok(send) => send,
            Err(stream) => {
                let (send, conn) = hyper::client::conn::http1::handshake(stream).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!(error = %e, "a stream to a cluster ended with an error");
                    }
                });
                send
            }
        };
        let res = send.send_request(out).await;
        if !upgrade && res.is_ok() {
            // Free again once this answer's body has been read.
            hub.give_back(&cluster, send);
        }
        res
    };
    let mut res = match answer.await {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("the request to cluster {cluster} failed in its tunnel: {e}");
            return refuse(StatusCode::BAD_GATEWAY, "ServiceUnavailable", &msg, Code::Unavailable);
        }
    };
    let upgraded = match (res.status() == StatusCode::SWITCHING_PROTOCOLS, client_upgrade) {
        (true, Some(client)) => Some((client, hyper::upgrade::on(&mut res))),
        _ => None,
    };
    let (mut head, body) = res.into_parts();
    let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
    let drop: Vec<HeaderName> = head
        .headers
        .keys()
        .filter(|n| hop_by_hop(n) && !(switching && matches!(n.as_str(), "connection" | "upgrade")))
        .cloned()
        .collect();
    for n in drop {
        head.headers.remove(n);
    }
    let body = match upgraded {
        // Exec, attach, port-forward: the two upgraded connections are joined for as long as access lasts.
        Some((client, server)) => {
            tokio::spawn(async move {
                let _open = registration;
                match (client.await, server.await) {
                    (Ok(c), Ok(u)) => {
                        let (mut c, mut u) = (hyper_util::rt::TokioIo::new(c), hyper_util::rt::TokioIo::new(u));
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
                            _ = cut.wait_for(|v| *v) => tracing::info!("closed an exec/attach/port-forward session: access lost"),
                        }
                    }
                    _ => tracing::debug!("an upgraded Kubernetes stream could not be joined"),
                }
            });
            Body::empty()
        }
        None => Body::new(streams::Guarded::new(body, registration)),
    };
    let mut res = Response::from_parts(head, body);
    // The cluster's own errors are its Status objects: they are passed on as they are.
    res.extensions_mut().insert(ForeignErrorBody);
    recorded(&mut res, &p, &cluster, &info);
    res
}

/// Copies a client's headers for the agent: without hop-by-hop headers (but with `Connection`/`Upgrade` for an
/// upgrade) and without anything that could say who the caller is.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, upgrade: bool) {
    for (n, v) in from {
        let keep_for_upgrade = upgrade && matches!(n.as_str(), "connection" | "upgrade");
        if (hop_by_hop(n) && !keep_for_upgrade) || identity_header(n) || n.as_str() == "cookie" {
            continue;
        }
        to.append(n.clone(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_cluster_and_api_path() {
        assert_eq!(split_path("/k8s/clusters/prod/api/v1/pods"), Some(("prod", "/api/v1/pods")));
        assert_eq!(split_path("/k8s/clusters/prod"), Some(("prod", "/")));
        assert_eq!(split_path("/api/v1"), None);
    }

    #[test]
    fn uid_only_from_1_22() {
        assert!(!accepts_uid(Some("v1.20.2")));
        assert!(accepts_uid(Some("v1.22.0")));
        assert!(accepts_uid(Some("v1.30.1-eks")));
        assert!(!accepts_uid(None));
    }

    #[test]
    fn identity_headers_never_pass() {
        let mut from = HeaderMap::new();
        for h in [
            "authorization",
            "impersonate-user",
            "impersonate-group",
            "x-remote-user",
            "kubehero-impersonate-user",
            "cookie",
        ] {
            from.insert(HeaderName::try_from(h).unwrap(), HeaderValue::from_static("x"));
        }
        from.insert(HeaderName::from_static("accept"), HeaderValue::from_static("application/json"));
        let mut to = HeaderMap::new();
        copy_headers(&from, &mut to, false);
        assert_eq!(to.len(), 1);
        assert!(to.contains_key("accept"));
    }
}
