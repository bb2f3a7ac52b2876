//! RBAC sync: the agent keeps the ClusterRoles, ClusterRoleBindings and RoleBindings that KubeHero's roles and
//! bindings imply in its cluster. The control plane computes the objects and pushes them over the tunnel (a
//! request carrying [`CONTROL_HEADER`], which no client can send through the proxy); the agent applies them at
//! once and again every [`DRIFT_EVERY`], so an edit or a deletion by someone else is put back.
//!
//! Only objects labelled `app.kubernetes.io/managed-by=kubehero` are created, changed or deleted: an object of
//! the same name without the label is left alone and reported as a conflict.

use crate::upstream::Upstream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// The header that marks a control request from the control plane on a tunnel stream (the proxy strips every
/// `kubehero-*` header a client sends).
pub const CONTROL_HEADER: &str = "kubehero-control";
/// Its value for an RBAC push.
pub const CONTROL_RBAC: &str = "rbac-sync";
/// The label of managed objects.
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "kubehero";
/// How often the agent applies the last pushed objects again on its own.
pub const DRIFT_EVERY: Duration = Duration::from_secs(10);

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

/// What the control plane wants in the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Desired {
    /// A digest of `objects`.
    pub generation: String,
    pub objects: Vec<Value>,
}

/// What one apply did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub generation: String,
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    /// Objects of a managed name that exist without the label: not touched.
    pub conflicts: Vec<String>,
    pub errors: Vec<String>,
}

/// One change to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create(Value),
    /// Replace the labelled object (the desired object, with the current `resourceVersion`).
    Replace(Value),
    /// A binding whose `roleRef` changed (immutable): delete, then create.
    Recreate(Value),
    Delete(Value),
}

impl Step {
    /// `kind namespace/name` of the object.
    pub fn describe(&self) -> String {
        let (verb, o) = match self {
            Step::Create(o) => ("create", o),
            Step::Replace(o) => ("update", o),
            Step::Recreate(o) => ("recreate", o),
            Step::Delete(o) => ("delete", o),
        };
        format!("{verb} {}", name_of(o))
    }
}

/// `Kind namespace/name`.
pub fn name_of(o: &Value) -> String {
    let kind = o["kind"].as_str().unwrap_or("?");
    let name = o["metadata"]["name"].as_str().unwrap_or("?");
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn key(o: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&o["kind"]), s(&o["metadata"]["namespace"]), s(&o["metadata"]["name"]))
}

/// The fields that say what an object grants.
fn content(o: &Value) -> Value {
    json!({ "rules": o["rules"], "roleRef": o["roleRef"], "subjects": o["subjects"], "labels": o["metadata"]["labels"] })
}

/// The steps that turn `current` (the labelled objects in the cluster) into `desired`.
pub fn plan(desired: &[Value], current: &[Value]) -> Vec<Step> {
    let mut steps = Vec::new();
    for d in desired {
        match current.iter().find(|c| key(c) == key(d)) {
            None => steps.push(Step::Create(d.clone())),
            Some(c) if content(c) == content(d) => {}
            Some(c) if d["roleRef"] != Value::Null && c["roleRef"] != d["roleRef"] => {
                steps.push(Step::Recreate(d.clone()))
            }
            Some(c) => {
                let mut r = d.clone();
                r["metadata"]["resourceVersion"] = c["metadata"]["resourceVersion"].clone();
                steps.push(Step::Replace(r));
            }
        }
    }
    for c in current {
        if !desired.iter().any(|d| key(d) == key(c)) {
            steps.push(Step::Delete(c.clone()));
        }
    }
    steps
}

/// The collection path of an object (for create) and its own path.
fn paths(o: &Value) -> Option<(String, String)> {
    let name = o["metadata"]["name"].as_str()?;
    let collection = match (o["kind"].as_str()?, o["metadata"]["namespace"].as_str()) {
        ("ClusterRole", None) => format!("{RBAC}/clusterroles"),
        ("ClusterRoleBinding", None) => format!("{RBAC}/clusterrolebindings"),
        ("RoleBinding", Some(ns)) => format!("{RBAC}/namespaces/{ns}/rolebindings"),
        _ => return None,
    };
    let own = format!("{collection}/{name}");
    Some((collection, own))
}

/// The labelled objects in the cluster now.
pub async fn current(up: &Upstream) -> Result<Vec<Value>, String> {
    let selector = format!("labelSelector={MANAGED_BY_KEY}%3D{MANAGED_BY_VALUE}");
    let mut all = Vec::new();
    for (resource, kind) in [
        ("clusterroles", "ClusterRole"),
        ("clusterrolebindings", "ClusterRoleBinding"),
        ("rolebindings", "RoleBinding"),
    ] {
        let path = format!("{RBAC}/{resource}?{selector}");
        let (status, body) = up.call_json(http::Method::GET, &path, None).await.map_err(|e| e.0)?;
        if status != 200 {
            return Err(format!("listing {resource}: HTTP {status}: {}", body["message"].as_str().unwrap_or("")));
        }
        for mut item in body["items"].as_array().cloned().unwrap_or_default() {
            item["kind"] = json!(kind);
            item["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
            all.push(item);
        }
    }
    Ok(all)
}

/// The agent's RBAC sync: the last objects the control plane pushed, applied again every [`DRIFT_EVERY`].
#[derive(Debug, Default)]
pub struct Sync {
    /// `false`: `kubehero agent --rbac-sync=false`; pushes are refused and nothing is changed.
    pub enabled: bool,
    last: parking_lot::Mutex<Option<Desired>>,
    /// One apply at a time (a push and the drift round).
    applying: tokio::sync::Mutex<()>,
    drift_started: std::sync::atomic::AtomicBool,
}

impl Sync {
    pub fn new(enabled: bool) -> Sync {
        Sync { enabled, ..Sync::default() }
    }
}

/// Applies a push from the control plane now, and keeps applying it against drift.
pub async fn push(up: std::sync::Arc<Upstream>, desired: Desired) -> Report {
    let sync = up.rbac();
    *sync.last.lock() = Some(desired.clone());
    if !sync.drift_started.swap(true, std::sync::atomic::Ordering::AcqRel) {
        let up = up.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DRIFT_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(d) = up.rbac().last.lock().clone() else { continue };
                let _one = up.rbac().applying.lock().await;
                let r = apply(&up, &d).await;
                if !(r.created.is_empty() && r.updated.is_empty() && r.deleted.is_empty()) {
                    tracing::info!(created = ?r.created, updated = ?r.updated, deleted = ?r.deleted, "RBAC drift put back");
                }
                for e in &r.errors {
                    tracing::warn!(error = %e, "RBAC sync");
                }
            }
        });
    }
    let _one = sync.applying.lock().await;
    apply(&up, &desired).await
}

/// Applies `desired`: lists what is there, then creates, replaces and deletes what differs.
pub async fn apply(up: &Upstream, desired: &Desired) -> Report {
    let mut report = Report { generation: desired.generation.clone(), ..Report::default() };
    let now = match current(up).await {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(e);
            return report;
        }
    };
    for step in plan(&desired.objects, &now) {
        let what = step.describe();
        if let Err(e) = run(up, &step, &mut report).await {
            report.errors.push(format!("{what}: {e}"));
        }
    }
    report
}

async fn run(up: &Upstream, step: &Step, report: &mut Report) -> Result<(), String> {
    let o = match step {
        Step::Create(o) | Step::Replace(o) | Step::Recreate(o) | Step::Delete(o) => o,
    };
    let (collection, own) = paths(o).ok_or_else(|| "not an RBAC object KubeHero manages".to_string())?;
    let call = |method: http::Method, path: String, body: Option<Value>| async move {
        let (status, answer) = up.call_json(method, &path, body.as_ref()).await.map_err(|e| e.0)?;
        Ok::<_, String>((status, answer))
    };
    let refused = |status: u16, answer: &Value| format!("HTTP {status}: {}", answer["message"].as_str().unwrap_or(""));
    match step {
        Step::Delete(_) => {
            let (status, answer) = call(http::Method::DELETE, own, None).await?;
            if !(200..300).contains(&status) && status != 404 {
                return Err(refused(status, &answer));
            }
            report.deleted.push(name_of(o));
        }
        Step::Replace(_) => {
            let (status, answer) = call(http::Method::PUT, own, Some(o.clone())).await?;
            if !(200..300).contains(&status) {
                return Err(refused(status, &answer));
            }
            report.updated.push(name_of(o));
        }
        Step::Create(_) | Step::Recreate(_) => {
            if matches!(step, Step::Recreate(_)) {
                let (status, answer) = call(http::Method::DELETE, own, None).await?;
                if !(200..300).contains(&status) && status != 404 {
                    return Err(refused(status, &answer));
                }
            }
            let (status, answer) = call(http::Method::POST, collection, Some(o.clone())).await?;
            match status {
                200..=299 => report.created.push(name_of(o)),
                // Not in the labelled list, yet there: someone else's object of that name.
                409 => report
                    .conflicts
                    .push(format!("{} exists without {MANAGED_BY_KEY}={MANAGED_BY_VALUE}: left alone", name_of(o))),
                _ => return Err(refused(status, &answer)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, verbs: &[&str]) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": {MANAGED_BY_KEY: MANAGED_BY_VALUE}},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]})
    }

    fn binding(name: &str, role: &str) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "labels": {MANAGED_BY_KEY: MANAGED_BY_VALUE}},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "g"}]})
    }

    #[test]
    fn the_plan_creates_fixes_and_deletes_only_what_differs() {
        let mut edited = role("a", &["get", "delete"]);
        edited["metadata"]["resourceVersion"] = json!("7");
        let current = [edited, role("same", &["get"]), role("gone", &["get"]), binding("b", "old")];
        let desired = [role("a", &["get"]), role("same", &["get"]), role("new", &["get"]), binding("b", "new")];
        let steps = plan(&desired, &current);
        let described: Vec<String> = steps.iter().map(Step::describe).collect();
        assert_eq!(
            described,
            [
                "update ClusterRole a",
                "create ClusterRole new",
                "recreate ClusterRoleBinding b",
                "delete ClusterRole gone"
            ]
        );
        let Step::Replace(r) = &steps[0] else { panic!() };
        assert_eq!(r["metadata"]["resourceVersion"], "7", "a replace carries the version it read");
    }
}
