//! RBAC sync, the control plane's half: which RBAC objects each cluster should hold, and pushing them to its
//! agent over the tunnel (the agent applies them and puts back drift; see `kubehero_agent::rbac`).
//!
//! The objects, all labelled `app.kubernetes.io/managed-by=kubehero`, with explicit rules (never aggregated
//! roles, which are empty on an API server without controllers):
//! - ClusterRoles `kubehero:viewer|member|auditor|admin|owner`:
//!   - viewer reads everything but Secrets, RBAC objects and events;
//!   - auditor reads what viewer reads plus RBAC objects and events (still no Secrets);
//!   - member is viewer plus create/update/patch/delete of workloads, services, configmaps, PVCs and exec,
//!     attach and port-forward (in the namespaces it is bound in);
//!   - admin is everything in the API groups Kubernetes ships, RBAC within namespaces, and only reading
//!     cluster-scoped RBAC;
//!   - owner is everything (cluster-admin).
//! - A ClusterRoleBinding `kubehero:role:<role>` of group `kubehero:role:<role>` to each ClusterRole: roles held
//!   on the whole cluster (the proxy sends these groups; so do direct tokens).
//! - For every namespace-scoped KubeHero binding on the cluster, a RoleBinding `kubehero:role:<role>` in that
//!   namespace of group `kubehero:role:<role>:ns:<namespace>` (the group direct tokens carry) to the ClusterRole.

use crate::state::AppState;
use kubehero_agent::rbac::{Desired, Report, MANAGED_BY_KEY, MANAGED_BY_VALUE};
use kubehero_core::kube::{namespace_role_group, role_group};
use kubehero_core::Role;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 4] = ["create", "update", "patch", "delete"];
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const RBAC_API: &str = "rbac.authorization.k8s.io/v1";

/// API groups Kubernetes ships, other than core, RBAC and events (which roles treat apart).
const GROUPS: [&str; 17] = [
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "extensions",
    "networking.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "admissionregistration.k8s.io",
    "discovery.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "coordination.k8s.io",
    "certificates.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "metrics.k8s.io",
];

/// Core resources a viewer reads (not secrets, not events).
const CORE_READ: [&str; 17] = [
    "pods",
    "pods/log",
    "pods/status",
    "services",
    "services/status",
    "endpoints",
    "configmaps",
    "persistentvolumeclaims",
    "persistentvolumes",
    "nodes",
    "namespaces",
    "replicationcontrollers",
    "serviceaccounts",
    "limitranges",
    "resourcequotas",
    "podtemplates",
    "componentstatuses",
];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({ "apiGroups": groups, "resources": resources, "verbs": verbs })
}

fn labels() -> Value {
    json!({ MANAGED_BY_KEY: MANAGED_BY_VALUE })
}

/// The rules of one role's ClusterRole.
pub fn rules(role: Role) -> Vec<Value> {
    let viewer = vec![rule(&[""], &CORE_READ, &READ), rule(&GROUPS, &["*"], &READ)];
    match role {
        Role::Viewer => viewer,
        Role::Auditor => {
            let mut r = viewer;
            r.push(rule(&[RBAC_GROUP], &["*"], &READ));
            r.push(rule(&["", "events.k8s.io"], &["events"], &READ));
            r
        }
        Role::Member => {
            let mut r = viewer;
            r.push(rule(
                &[""],
                &["pods", "services", "configmaps", "persistentvolumeclaims", "replicationcontrollers"],
                &WRITE,
            ));
            r.push(rule(&[""], &["pods/exec", "pods/attach", "pods/portforward"], &["get", "create"]));
            r.push(rule(
                &["apps"],
                &[
                    "deployments",
                    "deployments/scale",
                    "statefulsets",
                    "statefulsets/scale",
                    "daemonsets",
                    "replicasets",
                ],
                &WRITE,
            ));
            r.push(rule(&["batch"], &["jobs", "cronjobs"], &WRITE));
            r.push(rule(&["autoscaling"], &["horizontalpodautoscalers"], &WRITE));
            r
        }
        Role::Admin => {
            let mut r = vec![rule(&[""], &["*"], &["*"]), rule(&GROUPS, &["*"], &["*"])];
            r.push(rule(&["events.k8s.io"], &["*"], &["*"]));
            r.push(rule(&[RBAC_GROUP], &["roles", "rolebindings"], &["*"]));
            r.push(rule(&[RBAC_GROUP], &["clusterroles", "clusterrolebindings"], &READ));
            r
        }
        Role::Owner => vec![rule(&["*"], &["*"], &["*"]), json!({ "nonResourceURLs": ["*"], "verbs": ["*"] })],
    }
}

/// The name of a role's ClusterRole.
pub fn cluster_role_name(role: Role) -> String {
    format!("kubehero:{}", role.as_str())
}

fn group_subject(name: &str) -> Value {
    json!([{ "kind": "Group", "apiGroup": RBAC_GROUP, "name": name }])
}

fn role_ref(role: Role) -> Value {
    json!({ "apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role_name(role) })
}

/// Every object `cluster` should hold, and their digest.
pub fn desired(s: &AppState, cluster: &str) -> Desired {
    let mut objects = Vec::new();
    for role in Role::ALL {
        objects.push(json!({
            "apiVersion": RBAC_API, "kind": "ClusterRole",
            "metadata": { "name": cluster_role_name(role), "labels": labels() },
            "rules": rules(role),
        }));
        objects.push(json!({
            "apiVersion": RBAC_API, "kind": "ClusterRoleBinding",
            "metadata": { "name": role_group(role), "labels": labels() },
            "roleRef": role_ref(role),
            "subjects": group_subject(&role_group(role)),
        }));
    }
    for (role, namespace) in s.identity.bindings.namespace_roles(cluster) {
        objects.push(json!({
            "apiVersion": RBAC_API, "kind": "RoleBinding",
            "metadata": { "name": role_group(role), "namespace": namespace, "labels": labels() },
            "roleRef": role_ref(role),
            "subjects": group_subject(&namespace_role_group(role, &namespace)),
        }));
    }
    let text = serde_json::to_string(&objects).unwrap_or_default();
    let generation = kubehero_audit::hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
    Desired { generation, objects }
}

/// At most this many pushes are under way at once. Each one holds its objects, their JSON and an HTTP/1.1
/// connection over a tunnel stream: a round over 1,000 new tunnels (a restart) with all of them at once left
/// tens of MiB of freed but unreturnable heap behind.
const PUSHES_AT_ONCE: usize = 16;

/// What was last pushed to each connected cluster: (tunnel id, bindings generation, objects digest), and the
/// agent's report.
pub struct Pushes {
    last: Mutex<HashMap<String, (u64, u64, String)>>,
    reports: Mutex<HashMap<String, (i64, Report)>>,
    /// Clusters whose last push failed: their tunnel id, the backoff, and when the next try is due (2 s, then
    /// doubling up to 5 min, so an agent that cannot apply never gets a push every round).
    failing: Mutex<HashMap<String, (u64, kubehero_core::backoff::Backoff, std::time::Instant)>>,
    under_way: tokio::sync::Semaphore,
}

impl Default for Pushes {
    fn default() -> Pushes {
        Pushes {
            last: Mutex::default(),
            reports: Mutex::default(),
            failing: Mutex::default(),
            under_way: tokio::sync::Semaphore::new(PUSHES_AT_ONCE),
        }
    }
}

impl Pushes {
    /// Drops what is kept for clusters gone from this replica: the push state of those without a tunnel here (a
    /// new tunnel is pushed to at once anyway), and the last report of those no longer registered.
    fn forget(&self, s: &AppState, connected: &[(String, u64)]) {
        let here: std::collections::HashSet<&str> = connected.iter().map(|(name, _)| name.as_str()).collect();
        self.last.lock().retain(|c, _| here.contains(c.as_str()));
        self.failing.lock().retain(|c, _| here.contains(c.as_str()));
        self.reports.lock().retain(|c, _| s.agents.registry.refusal(Some(c), "").is_none());
    }

    /// The last report of `cluster`'s agent (when, what it did).
    pub fn report(&self, cluster: &str) -> Option<(i64, Report)> {
        self.reports.lock().get(cluster).cloned()
    }
}

/// Pushes the objects to every cluster connected to this replica whose objects changed since its last push (or
/// whose tunnel is new). Called every 2 s.
pub async fn push_changed(s: &AppState) {
    // The objects change only with the bindings: a tunnel pushed to under this generation is skipped unseen.
    let bindings = s.identity.bindings.current_generation();
    let mut due = Vec::new();
    let now = std::time::Instant::now();
    let connected = s.agents.hub.connected();
    s.rbac_pushes.forget(s, &connected);
    for (cluster, tunnel) in connected {
        // A failing cluster waits for its backoff (a new tunnel is tried at once).
        let waiting =
            s.rbac_pushes.failing.lock().get(&cluster).is_some_and(|(t, _, next)| *t == tunnel && *next > now);
        if waiting {
            continue;
        }
        let last = s.rbac_pushes.last.lock().get(&cluster).cloned();
        if last.as_ref().is_some_and(|(t, b, _)| *t == tunnel && *b == bindings) {
            continue;
        }
        // Only the digest is kept: the objects are built again when the push's turn comes.
        let generation = desired(s, &cluster).generation;
        let unchanged = last.is_some_and(|(t, _, g)| t == tunnel && g == generation);
        s.rbac_pushes.last.lock().insert(cluster.clone(), (tunnel, bindings, generation));
        if !unchanged {
            due.push((cluster, tunnel));
        }
    }
    for (cluster, tunnel) in due {
        let s = s.clone();
        tokio::spawn(async move {
            let Ok(_turn) = s.rbac_pushes.under_way.acquire().await else { return };
            match push(&s, &cluster).await {
                Ok(report) => {
                    s.rbac_pushes.failing.lock().remove(&cluster);
                    for e in report.errors.iter().chain(&report.conflicts) {
                        tracing::warn!(cluster, problem = %e, "RBAC sync");
                    }
                    s.rbac_pushes.reports.lock().insert(cluster, (s.clock.now(), report));
                }
                Err(e) => {
                    // Forget the push so a later round tries again, after the cluster's backoff.
                    s.rbac_pushes.last.lock().remove(&cluster);
                    let mut failing = s.rbac_pushes.failing.lock();
                    let entry = failing.entry(cluster.clone()).or_insert_with(|| {
                        let b = kubehero_core::backoff::Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
                        (tunnel, b, std::time::Instant::now())
                    });
                    if entry.0 != tunnel {
                        entry.0 = tunnel;
                        entry.1.reset();
                    }
                    let wait = entry.1.next_wait();
                    entry.2 = std::time::Instant::now() + wait;
                    let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(cluster, error = %e, retry_in_ms, "pushing RBAC objects to the agent failed; trying again");
                }
            }
        });
    }
}

/// One push over a tunnel stream: the agent applies the objects and says what it did.
async fn push(s: &AppState, cluster: &str) -> Result<Report, String> {
    use http_body_util::BodyExt;
    // The objects as of now (the bindings may have changed since the round), as JSON; the tree is dropped here.
    let (generation, body) = {
        let d = desired(s, cluster);
        (d.generation.clone(), serde_json::to_vec(&d).map_err(|e| e.to_string())?)
    };
    let stream = s.agents.hub.open(cluster).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(stream).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(http::Method::PUT)
        .uri("/")
        .header(http::header::HOST, kubehero_agent::proto::STREAM_AUTHORITY)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(kubehero_agent::rbac::CONTROL_HEADER, kubehero_agent::rbac::CONTROL_RBAC)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let call = async {
        let res = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            let message = format!("the agent answered {status}: {}", v["message"].as_str().unwrap_or(""));
            // Sync turned off on the agent: say so once per change, not every 2 s.
            if status == http::StatusCode::CONFLICT {
                return Ok(Report { generation, errors: vec![message], ..Report::default() });
            }
            return Err(message);
        }
        serde_json::from_slice::<Report>(&body).map_err(|e| format!("the agent's report: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(60), call).await.map_err(|_| "no answer within 60 s".to_string())?
}
