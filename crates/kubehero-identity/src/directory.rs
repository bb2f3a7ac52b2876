//! The SCIM directory's say over every credential: whether the person behind a request is still provisioned,
//! and which groups the IdP gave them.
//!
//! When SCIM is on (`KUBEHERO_SCIM_TOKEN`), every authenticated person — bearer JWT, dashboard session, CLI
//! token — and every managed API key's owner is looked up here after the credential itself passed:
//! - a person the IdP deactivated (`active=false`) or deleted is refused with 401 whatever they hold; the
//!   credential is not destroyed, so re-activation restores it (deletion revokes sessions, CLI tokens and keys
//!   for good, by the SCIM surface);
//! - a provisioned person's SCIM groups count with the token's groups for roles and bindings, and a group that
//!   SCIM manages counts only while the person is a member of it, whatever an older token or sign-in says;
//! - a person unknown to the directory is let through unchanged (SCIM may simply not have sent them yet).
//!
//! Who is who across issuers: a directory entry is linked to a person by their issuer-qualified subject
//! ([`kubehero_core::subject_key`]). The directory is the provisioning IdP's, the *directory issuer* (the first
//! configured issuer): only that issuer's subjects are also matched against SCIM `userName` and `externalId`
//! (and against links made before subjects were qualified). A person of any issuer is matched by the
//! `email` claim, so a person signing in through a second IdP with the same address is deprovisioned with
//! them; this trusts every configured issuer's email claims, as email user bindings do.
//!
//! Lookups are cached for [`STANDING_TTL`]; any SCIM change made through this process drops the cache at once,
//! one made through another replica is seen within the TTL.

use kubehero_store::{PersonMatch, Store, StoreError};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a person's standing is trusted before the database is asked again.
pub const STANDING_TTL: Duration = Duration::from_secs(2);
const CAPACITY: usize = 100_000;

/// What the directory says about an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Not in the directory: nothing to add or refuse.
    Unknown,
    /// Provisioned and active, with the display names of their SCIM groups.
    Active { groups: Vec<String> },
    /// Deactivated by the IdP.
    Inactive,
    /// Deleted by the IdP (a tombstone).
    Deleted,
}

impl Standing {
    /// Decides from every directory entry an identity matches: live entries decide (any inactive one refuses),
    /// tombstones only when no live entry matches.
    pub fn from_matches(matches: &[kubehero_store::PersonMatch]) -> Standing {
        let live: Vec<_> = matches.iter().filter(|m| !m.deleted).collect();
        if live.is_empty() {
            return if matches.is_empty() { Standing::Unknown } else { Standing::Deleted };
        }
        if live.iter().any(|m| !m.active) {
            return Standing::Inactive;
        }
        let groups: BTreeSet<&String> = live.iter().flat_map(|m| m.groups.iter()).collect();
        Standing::Active { groups: groups.into_iter().cloned().collect() }
    }
}

/// (subject key, email).
type Key = (String, Option<String>);

/// A cached value, when it was read, and the directory generation it was read under.
type Cached<T> = (Arc<T>, Instant, u64);

/// The directory lookups of authentication.
pub struct Directory {
    store: Arc<dyn Store>,
    enabled: bool,
    /// The issuer whose subjects SCIM's user names and external ids describe.
    issuer: Option<String>,
    standings: Mutex<lru::LruCache<Key, Cached<Standing>>>,
    /// Lower-cased display names of every SCIM group, and when they were read.
    managed: Mutex<Option<Cached<HashSet<String>>>>,
    generation: AtomicU64,
}

impl Directory {
    /// `enabled` is whether SCIM is on; when off every check is a no-op. `issuer` is the directory issuer.
    pub fn new(store: Arc<dyn Store>, enabled: bool, issuer: Option<String>) -> Directory {
        Directory {
            store,
            enabled,
            issuer,
            standings: Mutex::new(lru::LruCache::new(NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN))),
            managed: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Makes everything cached stale: called after every SCIM change on this replica. Entries carry the
    /// generation they were read under, so a bump is enough (no clearing a large cache on every write of a bulk
    /// provisioning run).
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The directory issuer, if any issuer is configured.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Whether `issuer` is the directory issuer, whose bare subjects SCIM's names describe (a person without
    /// an issuer comes from a credential made before issuers were recorded).
    pub fn is_directory_issuer(&self, issuer: Option<&str>) -> bool {
        issuer.is_none() || issuer == self.issuer.as_deref()
    }

    /// Every directory entry the person (issuer, subject, email) may be.
    pub(crate) async fn find(
        &self,
        issuer: Option<&str>,
        sub: &str,
        email: Option<&str>,
    ) -> Result<Vec<PersonMatch>, StoreError> {
        let key = kubehero_core::subject_key(issuer, sub);
        let mut ids = vec![key.as_str()];
        let mut names: Vec<&str> = email.into_iter().collect();
        if self.is_directory_issuer(issuer) {
            ids.push(sub);
            names.push(sub);
        }
        self.store.find_people_by(&ids, &names).await
    }

    /// The standing of the person an issuer, subject (and email) name.
    pub async fn standing(
        &self,
        issuer: Option<&str>,
        sub: &str,
        email: Option<&str>,
    ) -> Result<Arc<Standing>, StoreError> {
        if !self.enabled {
            return Ok(Arc::new(Standing::Unknown));
        }
        let key: Key = (kubehero_core::subject_key(issuer, sub), email.map(str::to_string));
        let generation = self.generation.load(Ordering::Acquire);
        if let Some((s, at, g)) = self.standings.lock().get(&key) {
            if *g == generation && at.elapsed() < STANDING_TTL {
                return Ok(Arc::clone(s));
            }
        }
        let matches = self.find(issuer, sub, email).await?;
        let standing = Arc::new(Standing::from_matches(&matches));
        self.standings.lock().put(key, (Arc::clone(&standing), Instant::now(), generation));
        Ok(standing)
    }

    /// Lower-cased names of the groups SCIM manages.
    pub(crate) async fn managed_groups(&self) -> Result<Arc<HashSet<String>>, StoreError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some((names, at, g)) = self.managed.lock().as_ref() {
            if *g == generation && at.elapsed() < STANDING_TTL {
                return Ok(Arc::clone(names));
            }
        }
        let names: HashSet<String> = self.store.group_names().await?.iter().map(|n| n.to_lowercase()).collect();
        let names = Arc::new(names);
        *self.managed.lock() = Some((Arc::clone(&names), Instant::now(), generation));
        Ok(names)
    }
}

/// A person's groups: those the credential carries, minus any SCIM-managed group the person is no longer a
/// member of, plus their SCIM groups.
pub fn merge_groups(token: &[String], scim: &[String], managed: &HashSet<String>) -> Vec<String> {
    let member: HashSet<String> = scim.iter().map(|g| g.to_lowercase()).collect();
    let mut out: Vec<String> = token
        .iter()
        .filter(|g| {
            let l = g.to_lowercase();
            !managed.contains(&l) || member.contains(&l)
        })
        .cloned()
        .collect();
    for g in scim {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(g)) {
            out.push(g.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(active: bool, deleted: bool, groups: &[&str]) -> PersonMatch {
        PersonMatch {
            user_id: "u".into(),
            user_name: "n".into(),
            active,
            deleted,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn live_entries_decide_and_any_inactive_refuses() {
        assert_eq!(Standing::from_matches(&[]), Standing::Unknown);
        assert_eq!(Standing::from_matches(&[m(true, true, &[])]), Standing::Deleted);
        assert_eq!(
            Standing::from_matches(&[m(true, true, &[]), m(true, false, &["a"])]),
            Standing::Active { groups: vec!["a".into()] }
        );
        assert_eq!(Standing::from_matches(&[m(true, false, &["a"]), m(false, false, &[])]), Standing::Inactive);
    }

    #[test]
    fn managed_groups_count_only_while_a_member() {
        let managed: HashSet<String> = ["admins".to_string(), "viewers".to_string()].into();
        let token = vec!["Admins".to_string(), "other".to_string()];
        assert_eq!(merge_groups(&token, &["viewers".into()], &managed), vec!["other", "viewers"]);
        assert_eq!(merge_groups(&token, &["admins".into()], &managed), vec!["Admins", "other"]);
    }
}
