//! Turning an identity (subject, email, groups) into grants: the group maps of `KUBEHERO_GROUP_ROLES` and of
//! each issuer, the config file's bindings, and the database's bindings. Union semantics; `kh_roles` is the
//! legacy fallback when nothing matched; `viewer` is always held.

use kubehero_core::{normalize_grants, Binding, BindingSubject, Grant, Role, Scope};
use kubehero_store::Store;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The bindings in force, rebuilt whenever the database's bindings change on this replica and refreshed
/// periodically so changes made through another replica are seen within seconds.
pub struct BindingsCache {
    store: Arc<dyn Store>,
    /// Global group → roles from `KUBEHERO_GROUP_ROLES` and the file.
    global_groups: HashMap<String, Vec<Role>>,
    /// Per issuer: group → roles.
    issuer_groups: HashMap<String, HashMap<String, Vec<Role>>>,
    /// Config file bindings (static).
    file_bindings: Vec<Binding>,
    /// Database bindings (dynamic).
    db_bindings: RwLock<Arc<Vec<Binding>>>,
    generation: AtomicU64,
}

fn group_map(pairs: &[(String, Role)]) -> HashMap<String, Vec<Role>> {
    let mut m: HashMap<String, Vec<Role>> = HashMap::new();
    for (g, r) in pairs {
        m.entry(g.clone()).or_default().push(*r);
    }
    m
}

/// The identity facts grants are computed from.
pub struct Facts<'a> {
    pub issuer: Option<&'a str>,
    pub sub: &'a str,
    pub email: Option<&'a str>,
    pub groups: &'a [String],
    /// Legacy `kh_roles` claim values.
    pub legacy_roles: &'a [String],
}

impl BindingsCache {
    pub fn new(
        store: Arc<dyn Store>,
        global: &[(String, Role)],
        issuers: &[(String, Vec<(String, Role)>)],
        file_bindings: Vec<Binding>,
    ) -> Self {
        BindingsCache {
            store,
            global_groups: group_map(global),
            issuer_groups: issuers.iter().map(|(iss, pairs)| (iss.clone(), group_map(pairs))).collect(),
            file_bindings,
            db_bindings: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
        }
    }

    /// Reloads the database bindings. Errors keep the previous set (and are logged by the caller).
    pub async fn reload(&self) -> Result<(), kubehero_store::StoreError> {
        let rows = self.store.list_bindings().await?;
        let v: Vec<Binding> = rows.into_iter().map(|r| r.binding).collect();
        let changed = **self.db_bindings.read() != v;
        if changed {
            *self.db_bindings.write() = Arc::new(v);
            self.generation.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }

    /// Bumps whenever the effective bindings change; cached principals built under an older generation are
    /// rebuilt.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The file's static bindings, for listing.
    pub fn file_bindings(&self) -> &[Binding] {
        &self.file_bindings
    }

    /// Every grant the identity holds.
    pub fn grants_for(&self, id: &Facts<'_>) -> Vec<Grant> {
        let mut grants = self.bound(id);
        if grants.is_empty() {
            grants.extend(id.legacy_roles.iter().filter_map(|r| r.parse::<Role>().ok()).map(Grant::global));
        }
        normalize_grants(grants)
    }

    /// The (role, namespace) pairs that namespace-scoped bindings (from the file and the database) grant in
    /// `cluster`, whoever they name: what RBAC sync binds in each namespace.
    pub fn namespace_roles(&self, cluster: &str) -> std::collections::BTreeSet<(Role, String)> {
        let db = self.db_bindings.read().clone();
        self.file_bindings
            .iter()
            .chain(db.iter())
            .filter_map(|b| match &b.scope {
                Scope::Namespace { cluster: glob, namespace } if kubehero_core::glob::matches(glob, cluster) => {
                    Some((b.role, namespace.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The grants that group mappings and bindings give a principal, without the global `viewer` every
    /// principal holds by default: what reaching a cluster's Kubernetes API needs (a person with no binding for
    /// a cluster cannot reach it, though they may see it listed).
    pub fn explicit_grants(&self, p: &kubehero_core::Principal) -> Vec<Grant> {
        use kubehero_core::PrincipalKind;
        match p.kind {
            PrincipalKind::Person => self.bound(&Facts {
                issuer: p.issuer.as_deref(),
                sub: &p.sub,
                email: p.email.as_deref(),
                groups: &p.groups,
                legacy_roles: &[],
            }),
            // A key's own role is explicit (whoever made the key chose it), as are bindings naming the key.
            PrincipalKind::ApiKey => p.grants.clone(),
            _ => Vec::new(),
        }
    }

    /// Group mappings and bindings that apply to `id`.
    fn bound(&self, id: &Facts<'_>) -> Vec<Grant> {
        let mut grants = Vec::new();
        for g in id.groups {
            if let Some(roles) = self.global_groups.get(g) {
                grants.extend(roles.iter().map(|r| Grant::global(*r)));
            }
            if let Some(roles) = id.issuer.and_then(|i| self.issuer_groups.get(i)).and_then(|m| m.get(g)) {
                grants.extend(roles.iter().map(|r| Grant::global(*r)));
            }
        }
        let db = self.db_bindings.read().clone();
        let key = kubehero_core::subject_key(id.issuer, id.sub);
        for b in self.file_bindings.iter().chain(db.iter()) {
            if b.applies_to(&key, id.email, id.groups) {
                grants.push(Grant { role: b.role, scope: b.scope.clone() });
            }
        }
        grants
    }

    /// Grants for an API key: its own role everywhere plus any user binding naming its id.
    pub fn grants_for_key(&self, key_id: &str, role: Role) -> Vec<Grant> {
        let mut grants = vec![Grant::global(role)];
        let db = self.db_bindings.read().clone();
        for b in self.file_bindings.iter().chain(db.iter()) {
            if matches!(&b.subject, BindingSubject::User(u) if u == key_id) {
                grants.push(Grant { role: b.role, scope: b.scope.clone() });
            }
        }
        normalize_grants(grants)
    }
}

/// Human-readable scope, for `whoami` and listings.
pub fn scope_json(scope: &Scope) -> serde_json::Value {
    serde_json::json!({ "cluster": scope.cluster(), "namespace": scope.namespace() })
}
