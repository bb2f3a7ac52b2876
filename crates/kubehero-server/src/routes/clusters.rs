//! Clusters: viewers list and get them with their connection state; admins register them (with a join token
//! for the agent), issue new join tokens, revoke agent certificates and delete them, a scoped admin only
//! within its scope.

use super::Json;
use crate::audit::{target_of, Audited};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kubehero_core::ClusterName;
use kubehero_core::{Action, Target};
use kubehero_store::{Change, Cluster, ClusterStatus, ConnectionState, JoinToken};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A connected cluster whose row was not refreshed for this long is shown disconnected (its replica died
/// without recording the end of the tunnel); rows are refreshed every 30 s.
const STALE_SECS: i64 = 90;

/// A cluster as the API shows it: registration and connection state.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    #[serde(flatten)]
    pub cluster: Option<Cluster>,
    pub name: String,
    /// `pending` (never connected), `connected`, `disconnected`, `removed`.
    pub state: &'static str,
    /// When the state began (Unix seconds); absent while pending.
    pub since: Option<i64>,
    pub last_seen: Option<i64>,
    pub agent_version: Option<String>,
    pub kubernetes_version: Option<String>,
    /// Not-after of the certificate of the last connected agent (Unix seconds).
    pub cert_not_after: Option<i64>,
}

fn view(cluster: Option<Cluster>, name: String, status: Option<ClusterStatus>, now: i64) -> ClusterView {
    let (state, since) = match &status {
        None => ("pending", None),
        Some(s) => match s.state {
            ConnectionState::Connected if s.last_seen.is_some_and(|t| now - t > STALE_SECS) => {
                ("disconnected", s.last_seen)
            }
            st => (st.as_str(), Some(s.since)),
        },
    };
    let s = status.unwrap_or(ClusterStatus {
        cluster: name.clone(),
        state: ConnectionState::Disconnected,
        since: 0,
        last_seen: None,
        agent_version: None,
        kubernetes_version: None,
        cert_not_after: None,
        replica: None,
    });
    ClusterView {
        cluster,
        name,
        state,
        since,
        last_seen: s.last_seen,
        agent_version: s.agent_version,
        kubernetes_version: s.kubernetes_version,
        cert_not_after: s.cert_not_after,
    }
}

async fn statuses(s: &AppState) -> ApiResult<HashMap<String, ClusterStatus>> {
    Ok(s.store.cluster_statuses().await?.into_iter().map(|st| (st.cluster.clone(), st)).collect())
}

/// `GET /api/v1/clusters` — permission: `cluster.list` (viewer). Registered clusters with their state, then
/// removed ones.
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterList, Target::NONE)?;
    Ok(axum::Json(serde_json::json!({ "items": all(&s).await? })))
}

/// Every registered cluster with its state, then removed ones.
pub(crate) async fn all(s: &AppState) -> ApiResult<Vec<ClusterView>> {
    let now = s.clock.now();
    let mut status = statuses(s).await?;
    let mut items: Vec<ClusterView> = Vec::new();
    for c in s.store.list_clusters().await? {
        let st = status.remove(&c.name);
        let name = c.name.clone();
        items.push(view(Some(c), name, st, now));
    }
    let mut removed: Vec<ClusterStatus> =
        status.into_values().filter(|st| st.state == ConnectionState::Removed).collect();
    removed.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    items.extend(removed.into_iter().map(|st| view(None, st.cluster.clone(), Some(st), now)));
    Ok(items)
}

/// `GET /api/v1/clusters/{name}` — permission: `cluster.get` (viewer).
pub async fn get(State(s): State<AppState>, Auth(p): Auth, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterGet, Target::cluster(&name))?;
    Ok(axum::Json(one(&s, name).await?))
}

/// One registered cluster with its state; `NotFound` if it is not registered.
pub(crate) async fn one(s: &AppState, name: String) -> ApiResult<ClusterView> {
    let cluster = s.store.get_cluster(&name).await?;
    let st = statuses(s).await?.remove(&name);
    Ok(view(Some(cluster), name, st, s.clock.now()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterCluster {
    name: String,
    #[serde(default)]
    api_server_url: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Also issue a join token for the cluster's agent (shown once in the answer).
    #[serde(default)]
    join: bool,
    /// The join token's lifetime in seconds (default 3600).
    #[serde(default)]
    join_ttl_secs: Option<i64>,
}

/// A join token and how to use it: shown once.
#[derive(Debug, Serialize)]
pub struct JoinInstructions {
    /// `khj_…`: single use, stored only hashed.
    token: String,
    expires_at: i64,
    /// `sha256:…` of the agent CA's public key.
    ca_hash: String,
    /// The agent listener's URL, as this control plane knows it.
    server: String,
    agent_command: String,
    helm_command: String,
}

/// The URL agents reach the agent listener at: the public URL's host (or the first listener name) and the
/// listener's port.
fn agent_server(s: &AppState) -> String {
    let port = s.agents.bound.get().or(s.agents.settings.listen.as_ref()).map_or(8443, |a| a.port());
    let host = s
        .public_url
        .as_deref()
        .and_then(|u| u.parse::<http::Uri>().ok())
        .and_then(|u| u.host().map(str::to_string))
        .or_else(|| s.agents.server_names.first().cloned())
        .unwrap_or_else(|| "localhost".into());
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    format!("https://{host}:{port}")
}

/// Issues a join token for `cluster` (its row durable with the token), and says how to use it.
pub async fn issue_join_token(
    s: &AppState,
    audited: &Audited,
    cluster: &str,
    ttl: Option<i64>,
) -> ApiResult<JoinInstructions> {
    let ttl = ttl.unwrap_or(3600);
    if !(60..=7 * 86400).contains(&ttl) {
        return Err(ApiError::invalid("join_ttl_secs: between 60 and 604800"));
    }
    let token = format!(
        "{}{}",
        kubehero_agent::proto::JOIN_TOKEN_PREFIX,
        kubehero_identity::credential::random_b64(32).map_err(ApiError::from)?
    );
    let now = s.clock.now();
    let record = JoinToken {
        hash: kubehero_authn::sha256_hex(&token),
        cluster: cluster.to_string(),
        created_by: audited.auth().0.subject_key(),
        created_at: now,
        expires_at: now + ttl,
        used_at: None,
    };
    let target = target_of("cluster", cluster, Some(cluster), None);
    audited.apply_named(Change::IssueJoinToken(&record), "cluster.join_token", &target, StatusCode::CREATED).await?;
    let server = agent_server(s);
    let ca_hash = s.agents.ca.hash();
    Ok(JoinInstructions {
        agent_command: format!(
            "kubehero agent --server {server} --cluster {cluster} --join-token {token} --ca-hash {ca_hash}"
        ),
        helm_command: format!(
            "helm install kubehero-agent deploy/helm/kubehero-agent --namespace kubehero-system --create-namespace \
             --set server={server} --set cluster={cluster} --set joinToken={token} --set caHash={ca_hash}"
        ),
        token,
        expires_at: now + ttl,
        ca_hash,
        server,
    })
}

/// `POST /api/v1/clusters` (RegisterCluster) — permission: `cluster.register` (admin covering the name).
pub async fn register(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Json(body): Json<RegisterCluster>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterRegister, Target::cluster(&body.name))?;
    let name = ClusterName::parse(&body.name).map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Some(u) = &body.api_server_url {
        if !(u.starts_with("https://") && u.len() <= 2048) {
            return Err(ApiError::invalid("api_server_url must be an https:// URL"));
        }
    }
    if body.labels.len() > 64 || body.labels.iter().any(|(k, v)| k.is_empty() || k.len() > 63 || v.len() > 255) {
        return Err(ApiError::invalid("labels: at most 64, keys 1-63 characters, values at most 255"));
    }
    match body.labels.get(crate::kube::direct::SIGNING_ALG_LABEL).map(String::as_str) {
        None | Some("ES256") => {}
        Some("RS256") if !s.agents.settings.issuer_rsa_keys.is_empty() => {}
        Some("RS256") => {
            return Err(ApiError::invalid(
                "labels: kubehero.io/signing-alg=RS256 needs KUBEHERO_ISSUER_RSA_KEYS on the control plane",
            ))
        }
        Some(_) => return Err(ApiError::invalid("labels: kubehero.io/signing-alg is ES256 or RS256")),
    }
    let cluster = Cluster {
        name: name.into(),
        api_server_url: body.api_server_url,
        labels: body.labels,
        created_by: p.subject_key(),
        created_at: s.clock.now(),
    };
    let target = target_of("cluster", &cluster.name, Some(&cluster.name), None);
    audited.apply(Change::CreateCluster(&cluster), Action::ClusterRegister, &target, StatusCode::CREATED).await?;
    s.agents.reload(&s).await;
    let mut out =
        serde_json::to_value(&cluster).map_err(|e| ApiError::new(crate::error::Code::Internal, e.to_string()))?;
    if body.join {
        let join = issue_join_token(&s, &audited, &cluster.name, body.join_ttl_secs).await?;
        out["join"] =
            serde_json::to_value(join).map_err(|e| ApiError::new(crate::error::Code::Internal, e.to_string()))?;
    }
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(out)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewJoinToken {
    #[serde(default)]
    join_ttl_secs: Option<i64>,
}

/// `POST /api/v1/clusters/{name}/join-tokens` (NewJoinToken) — permission: `cluster.register` (admin covering
/// the name). A new one-time token for a re-install; a connected agent is not disturbed.
pub async fn join_token(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(name): Path<String>,
    Json(body): Json<NewJoinToken>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterRegister, Target::cluster(&name))?;
    let join = issue_join_token(&s, &audited, &name, body.join_ttl_secs).await?;
    let target = target_of("cluster", &name, Some(&name), None);
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(join)))
}

/// `GET /api/v1/clusters/{name}/certificates` — permission: `cluster.get` (viewer). Certificates issued to the
/// cluster's agent, newest first (serial, not-after, revocation).
pub async fn certificates(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterGet, Target::cluster(&name))?;
    s.store.get_cluster(&name).await?;
    Ok(axum::Json(serde_json::json!({ "items": s.store.agent_certs(Some(&name)).await? })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeCertificates {
    /// One certificate (hex serial); absent: every certificate of the cluster.
    #[serde(default)]
    serial: Option<String>,
}

/// `POST /api/v1/clusters/{name}/certificates/revoke` (RevokeCertificates) — permission: `cluster.delete`
/// (admin covering the name). The agent's tunnel closes at once; it needs a new join token to come back.
pub async fn revoke(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(name): Path<String>,
    Json(body): Json<RevokeCertificates>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterDelete, Target::cluster(&name))?;
    s.store.get_cluster(&name).await?;
    let serial = body.serial.as_deref().map(str::to_ascii_lowercase);
    let target = target_of("agent_certificate", serial.as_deref().unwrap_or("*"), Some(&name), None);
    let change = Change::RevokeAgentCerts { cluster: &name, serial: serial.as_deref(), at: s.clock.now() };
    let n = kubehero_store::changed_count(
        audited.apply_named(change, "agent_certificate.revoke", &target, StatusCode::OK).await?,
    )?;
    s.agents.reload(&s).await;
    Ok((StatusCode::OK, Audited::done(target), axum::Json(serde_json::json!({ "revoked": n }))))
}

/// `DELETE /api/v1/clusters/{name}` — permission: `cluster.delete` (admin covering the name). Revokes the
/// agent's certificates and closes its tunnel at once.
pub async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    // Whoever may see the cluster hears that an unknown one is not found, before being told they cannot delete.
    if allow(&p, Action::ClusterDelete, Target::cluster(&name)).is_err()
        && allow(&p, Action::ClusterGet, Target::cluster(&name)).is_ok()
    {
        s.store.get_cluster(&name).await?;
    }
    allow(&p, Action::ClusterDelete, Target::cluster(&name))?;
    let target = target_of("cluster", &name, Some(&name), None);
    let change = Change::DeleteCluster { name: &name, at: s.clock.now() };
    audited.apply(change, Action::ClusterDelete, &target, StatusCode::NO_CONTENT).await?;
    s.agents.reload(&s).await;
    Ok((StatusCode::NO_CONTENT, Audited::done(target)))
}

/// `POST /api/v1/clusters/{name}/token` — permission: `cluster.get`, and a role on the cluster from a group
/// mapping or binding. A per-cluster access token (`khx_…`, 10 minutes by default) minted from the caller's CLI
/// login, for kubectl through `/k8s/clusters/{name}`: what `kubehero token` prints. Only a CLI token can mint
/// one (it is what revokes it); the mint is a durable audit row.
/// `?direct=true`: a JWT of KubeHero's issuer for the cluster's API server itself, instead of a `khx_` token for
/// the proxy.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    #[serde(default)]
    direct: bool,
}

/// `GET /api/v1/clusters/{name}/direct` — permission: `cluster.get`. What the cluster's API server needs to
/// trust KubeHero's direct tokens: the kube-apiserver flags and the `AuthenticationConfiguration` document.
pub async fn direct(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterGet, Target::cluster(&name))?;
    let cluster = s.store.get_cluster(&name).await?;
    let issuer = s.issuer.url().ok_or_else(|| {
        ApiError::new(
            crate::error::Code::FailedPrecondition,
            "KubeHero's OIDC issuer is off: set KUBEHERO_PUBLIC_URL to the https:// URL API servers reach it at",
        )
    })?;
    let audience = crate::kube::direct::audience(&cluster);
    let alg = crate::kube::direct::signing_alg(&cluster);
    Ok(axum::Json(crate::kube::direct::apiserver_settings(issuer, &audience, alg, s.serving_ca_pem.as_deref())))
}

/// `GET /api/v1/clusters/{name}/rbac` — permission: `cluster.get`. The RBAC objects RBAC sync keeps in the
/// cluster, and (when its agent is connected to this replica) what the agent's last apply did.
pub async fn rbac(State(s): State<AppState>, Auth(p): Auth, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterGet, Target::cluster(&name))?;
    s.store.get_cluster(&name).await?;
    let d = crate::kube::rbac::desired(&s, &name);
    let last = s.rbac_pushes.report(&name).map(|(at, r)| serde_json::json!({ "at": at, "report": r }));
    Ok(axum::Json(serde_json::json!({ "generation": d.generation, "objects": d.objects, "last_apply": last })))
}

/// How long the certificate in a webhook kubeconfig lives (the API server does not renew it; revoke it with
/// `kubehero cluster revoke --serial`, issue a new one with `kubehero cluster add NAME --webhook` again).
const WEBHOOK_CERT_TTL: i64 = 365 * 86400;

/// `POST /api/v1/clusters/{name}/webhook` — permission: `cluster.register`. A client certificate (recorded and
/// revocable like an agent's, but good only for token reviews) and the webhook kubeconfig that lets the
/// cluster's API server ask KubeHero who a token is, with the flags to pass it.
pub async fn webhook(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    use base64::Engine;
    allow(&p, Action::ClusterRegister, Target::cluster(&name))?;
    let cluster = s.store.get_cluster(&name).await?;
    let audience = crate::kube::direct::audience(&cluster);
    let internal = |e: String| ApiError::new(crate::error::Code::Internal, e);
    let key = rcgen::KeyPair::generate().map_err(|e| internal(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, name.as_str());
    let csr = params.serialize_request(&key).and_then(|c| c.pem()).map_err(|e| internal(e.to_string()))?;
    let now = s.clock.now();
    let issued = s.agents.ca.issue_webhook(&csr, &name, WEBHOOK_CERT_TTL, now).map_err(|e| internal(e.to_string()))?;
    let cert = kubehero_store::AgentCert {
        serial: issued.serial.clone(),
        cluster: name.clone(),
        issued_at: now,
        not_after: issued.not_after,
        revoked_at: None,
    };
    let target = target_of("cluster", &name, Some(&name), None);
    audited.apply_named(Change::IssueAgentCert(&cert), "cluster.webhook", &target, StatusCode::CREATED).await?;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let server = format!("{}{}", agent_server(&s), crate::agent::listener::TOKENREVIEW_PATH);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubehero\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {}\nusers:\n- name: kube-apiserver\n  user:\n    client-certificate-data: {}\n    \
         client-key-data: {}\ncontexts:\n- name: webhook\n  context:\n    cluster: kubehero\n    user: kube-apiserver\n\
         current-context: webhook\n",
        b64(&s.agents.ca.bundle_pem()),
        b64(&issued.cert_pem),
        b64(&key.serialize_pem()),
    );
    let file = "/etc/kubernetes/kubehero-webhook.kubeconfig";
    let body = serde_json::json!({
        "kubeconfig": kubeconfig,
        "kubeconfig_file": file,
        "flags": [
            format!("--authentication-token-webhook-config-file={file}"),
            "--authentication-token-webhook-version=v1",
            "--authentication-token-webhook-cache-ttl=30s",
            format!("--api-audiences=<its --service-account-issuer>,{audience}"),
        ],
        "serial": issued.serial,
        "not_after": issued.not_after,
        "note": format!("KubeHero's tokens for this cluster have the audience {audience:?}: add it to the API \
                 server's --api-audiences (after its service-account issuer, which stays first) so its reviews ask \
                 for it; a review for other audiences only (a TokenReview some workload makes for its own \
                 audience) is refused. The API server caches each answer for \
                 --authentication-token-webhook-cache-ttl (its default is 2 minutes): a revoked login or a \
                 deprovisioned person keeps working directly for up to that long. 30s trades a few more reviews \
                 for faster revocation."),
    });
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(body)))
}

pub async fn token(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<TokenQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterGet, Target::cluster(&name))?;
    let cluster = s.store.get_cluster(&name).await?;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').map(|(_, t)| t.trim().to_string()))
        .filter(|t| t.starts_with(kubehero_identity::credential::CLI_TOKEN_PREFIX))
        .ok_or_else(|| {
            ApiError::invalid(
                "per-cluster tokens are minted from a CLI login: run `kubehero login`, then `kubehero token`",
            )
        })?;
    let (_, login) = s.identity.cli_token(&token).await?;
    let held = s.identity.bindings.explicit_grants(&p).into_iter().any(|g| {
        kubehero_core::authz::scope_covers(&g.scope, Target::cluster(&name))
            || matches!(&g.scope, kubehero_core::Scope::Namespace { cluster, .. } if kubehero_core::glob::matches(cluster, &name))
    });
    if !held {
        return Err(ApiError::new(
            crate::error::Code::PermissionDenied,
            format!("you have no KubeHero role on cluster {name}: ask an admin for a binding"),
        ));
    }
    let now = s.clock.now();
    let expires_at = (now + s.agents.settings.cluster_token_ttl).min(login.expires_at);
    // A direct token does not outlive a time-bound binding it carries: the API server cannot be told when that
    // ends (a per-cluster token is checked at every use).
    let expires_at = match q.direct {
        true => expires_at.min(s.identity.bindings.earliest_expiry(&p, &name).unwrap_or(i64::MAX)),
        false => expires_at,
    };
    let (minted, action) = if q.direct {
        // A JWT of KubeHero's own issuer, for an API server that trusts it (or asks KubeHero by TokenReview).
        let issuer = s.issuer.url().ok_or_else(|| {
            ApiError::new(
                crate::error::Code::FailedPrecondition,
                "direct tokens need KubeHero's OIDC issuer: set KUBEHERO_PUBLIC_URL on the control plane",
            )
        })?;
        let groups = crate::kube::direct::groups(&s, &p, &name, None);
        let claims = crate::kube::direct::claims(
            issuer,
            &crate::kube::direct::audience(&cluster),
            &p,
            &groups,
            &login.hash,
            (now, expires_at),
        );
        let alg = crate::kube::direct::signing_alg(&cluster);
        let jwt = s
            .issuer
            .sign(&claims, alg)
            .map_err(|e| ApiError::new(crate::error::Code::FailedPrecondition, e.to_string()))?;
        (jwt, "cluster.direct_token")
    } else {
        (s.identity.cluster_tokens.mint(&login.hash, &name, expires_at), "cluster.token")
    };
    let mut res = (StatusCode::CREATED, axum::Json(serde_json::json!({ "token": minted, "expires_at": expires_at })))
        .into_response();
    res.extensions_mut().insert(crate::audit::Recorded {
        action,
        actor: kubehero_core::AuditActor::of(&p),
        plain_read: false,
    });
    res.extensions_mut().insert(target_of("cluster", &name, Some(&name), None));
    Ok(res)
}
