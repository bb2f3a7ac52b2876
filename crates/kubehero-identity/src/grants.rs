//! Turning an identity (subject, email, groups) into grants: the group maps of `KUBEHERO_GROUP_ROLES` and of
//! each issuer, the config file's bindings, and the database's bindings. Union semantics; `kh_roles` is the
//! legacy fallback when nothing matched; `viewer` is always held.

use kubehero_core::{normalize_grants, Binding, BindingSubject, Grant, Role, Scope};
use kubehero_store::Store;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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
    /// Database bindings as loaded, with their expiry.
    db_rows: RwLock<Arc<Vec<TimedBinding>>>,
    /// The database bindings in force: those not yet expired.
    db_bindings: RwLock<Arc<Vec<Binding>>>,
    /// When the next of them expires (`i64::MAX`: none does); the set is recomputed on the first read after it.
    next_expiry: AtomicI64,
    clock: Arc<dyn crate::clock::Clock>,
    generation: AtomicU64,
}

/// A database binding and when it ends (`None`: when deleted).
type TimedBinding = (Binding, Option<i64>);

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
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Self {
        BindingsCache {
            store,
            global_groups: group_map(global),
            issuer_groups: issuers.iter().map(|(iss, pairs)| (iss.clone(), group_map(pairs))).collect(),
            file_bindings,
            db_rows: RwLock::new(Arc::new(Vec::new())),
            db_bindings: RwLock::new(Arc::new(Vec::new())),
            next_expiry: AtomicI64::new(i64::MAX),
            clock,
            generation: AtomicU64::new(0),
        }
    }

    /// Reloads the database bindings. Errors keep the previous set (and are logged by the caller).
    pub async fn reload(&self) -> Result<(), kubehero_store::StoreError> {
        let rows = self.store.list_bindings().await?;
        let v: Vec<TimedBinding> = rows.into_iter().map(|r| (r.binding, r.expires_at)).collect();
        if **self.db_rows.read() != v {
            *self.db_rows.write() = Arc::new(v);
        }
        self.recompute(self.clock.now());
        Ok(())
    }

    /// The bindings in force at `now`; bumps the generation when they changed (a binding came or expired).
    fn recompute(&self, now: i64) {
        let rows = self.db_rows.read().clone();
        let active: Vec<Binding> =
            rows.iter().filter(|(_, e)| e.is_none_or(|e| e > now)).map(|(b, _)| b.clone()).collect();
        let next = rows.iter().filter_map(|(_, e)| e.filter(|e| *e > now)).min().unwrap_or(i64::MAX);
        self.next_expiry.store(next, Ordering::Release);
        if **self.db_bindings.read() != active {
            *self.db_bindings.write() = Arc::new(active);
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The database bindings in force now (a time-bound one stops counting the moment it expires).
    fn db(&self) -> Arc<Vec<Binding>> {
        let now = self.clock.now();
        if now >= self.next_expiry.load(Ordering::Acquire) {
            self.recompute(now);
        }
        self.db_bindings.read().clone()
    }

    /// When the first time-bound database binding of `cluster` that applies to `p` ends, if one does: a direct
    /// token for the cluster must not outlive it.
    pub fn earliest_expiry(&self, p: &kubehero_core::Principal, cluster: &str) -> Option<i64> {
        let now = self.clock.now();
        let key = kubehero_core::subject_key(p.issuer.as_deref(), &p.sub);
        self.db_rows
            .read()
            .iter()
            .filter(|(b, e)| e.is_some_and(|e| e > now) && b.applies_to(&key, p.email.as_deref(), &p.groups))
            .filter(|(b, _)| match &b.scope {
                Scope::Global => true,
                Scope::Cluster { cluster: g } | Scope::Namespace { cluster: g, .. } => {
                    kubehero_core::glob::matches(g, cluster)
                }
            })
            .filter_map(|(_, e)| *e)
            .min()
    }

    /// Bumps whenever the effective bindings change; cached principals built under an older generation are
    /// rebuilt.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// [`BindingsCache::generation`], after letting bindings whose time is up expire: what a caller that caches
    /// on the generation (RBAC sync) compares.
    pub fn current_generation(&self) -> u64 {
        drop(self.db());
        self.generation()
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
        let db = self.db();
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

    /// The group mappings (global, and those of `issuer`) that name one of `groups`: (group, role).
    pub fn group_roles(&self, issuer: Option<&str>, groups: &[String]) -> Vec<(String, Role)> {
        let per_issuer = issuer.and_then(|i| self.issuer_groups.get(i));
        let mut out = Vec::new();
        for g in groups {
            for map in [Some(&self.global_groups), per_issuer].into_iter().flatten() {
                out.extend(map.get(g).into_iter().flatten().map(|r| (g.clone(), *r)));
            }
        }
        out
    }

    /// Every group mapping: (group, role, the issuer it is limited to).
    pub fn group_mappings(&self) -> Vec<(String, Role, Option<String>)> {
        let mut out: Vec<_> =
            self.global_groups.iter().flat_map(|(g, rs)| rs.iter().map(move |r| (g.clone(), *r, None))).collect();
        for (iss, map) in &self.issuer_groups {
            out.extend(map.iter().flat_map(|(g, rs)| rs.iter().map(move |r| (g.clone(), *r, Some(iss.clone())))));
        }
        out.sort();
        out
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
        let db = self.db();
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
        let db = self.db();
        for b in self.file_bindings.iter().chain(db.iter()) {
            if matches!(&b.subject, BindingSubject::User(u) if u == key_id) {
                grants.push(Grant { role: b.role, scope: b.scope.clone() });
            }
        }
        normalize_grants(grants)
    }
}

impl crate::Identity {
    /// Deletes the database bindings whose time is up, each with a `role_binding.expire` audit row (they
    /// already grant nothing from the moment they expire; this keeps the table and the listing honest). Returns
    /// how many went.
    pub async fn expire_bindings(&self) -> Result<usize, kubehero_store::StoreError> {
        use kubehero_core::AuditTarget;
        let now = self.clock.now();
        let mut gone = 0;
        for b in self.store.list_bindings().await? {
            if b.expires_at.is_none_or(|e| e > now) {
                continue;
            }
            let target = AuditTarget {
                kind: Some("role_binding".into()),
                id: Some(b.id.clone()),
                cluster: b.binding.scope.cluster().map(str::to_string),
                namespace: b.binding.scope.namespace().map(str::to_string),
            };
            let event = self.system_event("role_binding.expire", target);
            match self.apply(kubehero_store::Change::DeleteBinding(&b.id), event).await {
                Ok(_) => gone += 1,
                // Deleted meanwhile (by hand, or by another replica's sweep).
                Err(kubehero_store::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if gone > 0 {
            self.bindings.reload().await?;
        }
        Ok(gone)
    }

    /// Records, once, the end of every share link whose time ran out (`share.expire`); its grants end on their
    /// own at the same time (they are bindings with the share's `expires_at`). Gives back how many.
    pub async fn expire_shares(&self) -> Result<usize, kubehero_store::StoreError> {
        let now = self.clock.now();
        let mut ended = 0;
        for sh in self.store.list_shares().await? {
            if sh.expired_at.is_some() || sh.revoked_at.is_some() || sh.expires_at > now {
                continue;
            }
            let target = kubehero_core::AuditTarget {
                kind: Some("share".into()),
                id: Some(sh.id.clone()),
                cluster: Some(sh.cluster.clone()),
                namespace: sh.namespace.clone(),
            };
            let event = self.system_event("share.expire", target);
            match self.apply(kubehero_store::Change::ExpireShare { id: &sh.id, at: now }, event).await {
                Ok(_) => ended += 1,
                // Recorded meanwhile by another replica's sweep.
                Err(kubehero_store::StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ended)
    }

    /// A row written by KubeHero itself (a sweep), not on anyone's request.
    fn system_event(&self, action: &str, target: kubehero_core::AuditTarget) -> kubehero_core::AuditEvent {
        kubehero_core::AuditEvent {
            event_id: self.ids.next_id(),
            time_ms: self.clock.now_ms(),
            actor: kubehero_core::AuditActor {
                sub: "kubehero".into(),
                issuer: None,
                email: None,
                groups: Vec::new(),
                kind: "system".into(),
                auth_method: "none".into(),
            },
            action: action.into(),
            target,
            result: kubehero_core::AuditResult::ok(200),
            request_id: self.ids.next_id(),
            source: None,
            user_agent: None,
        }
    }
}
