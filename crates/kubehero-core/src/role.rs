//! The five roles, the scopes a grant can be limited to, and bindings from groups or users to roles.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One of KubeHero's five built-in roles (seed 001).
///
/// Roles are not a ladder: `auditor` sits beside `member`, so holding `auditor` never grants mutation.
/// What each role may do lives in [`crate::authz`]; this type only names them and ranks them for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every list/get; no mutation.
    Viewer,
    /// Read-everything plus the full audit log and its export; no mutation.
    Auditor,
    /// Viewer plus create/update of its own resources (policy drafts, API keys).
    Member,
    /// Member plus every cluster: register/delete clusters, arm/disarm/undo policies.
    Admin,
    /// Admin plus IdP and integration settings and role grants.
    Owner,
}

impl Role {
    /// All roles, lowest display rank first.
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Auditor, Role::Member, Role::Admin, Role::Owner];

    /// The lowercase name used in configuration, the API and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Whether `self` grants at least everything `other` grants. Used to refuse minting a credential
    /// (an API key) with a role its creator could not exercise: `auditor` and `member` do not cover each other.
    pub fn covers(self, other: Role) -> bool {
        match (self, other) {
            (a, b) if a == b => true,
            (_, Role::Viewer) => true,
            (Role::Owner, _) => true,
            (Role::Admin, Role::Member) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A role name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected one of viewer, member, auditor, admin, owner")]
pub struct ParseRoleError(pub String);

impl FromStr for Role {
    type Err = ParseRoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "auditor" => Ok(Role::Auditor),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            _ => Err(ParseRoleError(s.to_string())),
        }
    }
}

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Scope {
    /// Everywhere: every cluster, and resources that belong to no cluster (settings, bindings, audit).
    #[default]
    Global,
    /// Clusters whose name matches the glob, and every namespace in them.
    Cluster { cluster: String },
    /// One namespace in the clusters whose name matches the glob.
    Namespace { cluster: String, namespace: String },
}

impl Scope {
    /// Builds a scope from optional cluster glob and namespace, as stored and as sent over the API.
    /// A namespace without a cluster is refused by the caller before this point; here it means `Global`.
    pub fn from_parts(cluster: Option<String>, namespace: Option<String>) -> Scope {
        match (cluster, namespace) {
            (Some(cluster), Some(namespace)) => Scope::Namespace { cluster, namespace },
            (Some(cluster), None) => Scope::Cluster { cluster },
            _ => Scope::Global,
        }
    }

    /// The cluster glob, if scoped.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Scope::Global => None,
            Scope::Cluster { cluster } | Scope::Namespace { cluster, .. } => Some(cluster),
        }
    }

    /// The namespace, if scoped to one.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Scope::Namespace { namespace, .. } => Some(namespace),
            _ => None,
        }
    }
}

/// A role held within a scope. A principal holds a set of grants; authorization is their union.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    #[serde(flatten)]
    pub scope: Scope,
}

impl Grant {
    /// A role held everywhere.
    pub fn global(role: Role) -> Grant {
        Grant { role, scope: Scope::Global }
    }
}

/// Who a binding applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name", deny_unknown_fields)]
pub enum BindingSubject {
    /// Everyone whose (prefixed) groups contain this name.
    Group(String),
    /// One principal, named one of three ways (see [`user_name_kind`]): a person as `<issuer>#<sub>` (their
    /// [`crate::subject_key`]), a person of any issuer by email (`carol@acme.com`, trusting every configured
    /// issuer's `email` claim), or an API key by its id.
    User(String),
}

/// How a user binding's name picks its principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNameKind {
    /// `<issuer>#<sub>`: exactly that issuer's subject.
    Subject,
    /// An email address: any issuer's person whose `email` claim equals it, ignoring case.
    Email,
    /// A bare name: only a principal whose subject key is exactly this (an API key id, 16 hex characters).
    Bare,
}

/// Classifies a user binding's name.
pub fn user_name_kind(name: &str) -> UserNameKind {
    if name.contains(crate::principal::SUBJECT_KEY_SEPARATOR) {
        UserNameKind::Subject
    } else if name.contains('@') {
        UserNameKind::Email
    } else {
        UserNameKind::Bare
    }
}

/// Checks a user binding's name: a person must be named with their issuer or by email, since a bare `sub`
/// would be ambiguous between issuers; a bare name must be an API key id.
pub fn check_user_name(name: &str) -> Result<(), String> {
    match user_name_kind(name) {
        UserNameKind::Subject => match crate::split_subject_key(name) {
            (Some(iss), sub) if !iss.is_empty() && !sub.is_empty() => Ok(()),
            _ => Err(format!("user {name:?}: write a person as <issuer URL>#<sub>")),
        },
        UserNameKind::Email => Ok(()),
        UserNameKind::Bare if is_api_key_id(name) => Ok(()),
        UserNameKind::Bare => Err(format!(
            "user {name:?} names no issuer: write a person as <issuer URL>#<sub> (two issuers may both issue \
             this subject), or by email, or an API key by its 16-hex-character id"
        )),
    }
}

/// Whether a bare user binding name is an API key id (the first 16 hex characters of the key's SHA-256):
/// the only bare names a binding may use, since a person is always named with their issuer or by email.
pub fn is_api_key_id(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A role binding: subject → role within a scope. Bindings come from `KUBEHERO_GROUP_ROLES` (global, per
/// issuer), the config file, and the database (managed by owners through `/api/v1/role-bindings`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding {
    pub subject: BindingSubject,
    pub role: Role,
    #[serde(flatten)]
    pub scope: Scope,
}

impl Binding {
    /// Whether this binding applies to a principal with the given [`crate::subject_key`], email and groups.
    /// A person's bare `sub` never matches a user binding: `alice` of one issuer is not `alice` of another.
    pub fn applies_to(&self, subject_key: &str, email: Option<&str>, groups: &[String]) -> bool {
        match &self.subject {
            BindingSubject::Group(g) => groups.iter().any(|x| x == g),
            BindingSubject::User(u) => match user_name_kind(u) {
                UserNameKind::Subject | UserNameKind::Bare => u == subject_key,
                UserNameKind::Email => email.is_some_and(|e| e.eq_ignore_ascii_case(u)),
            },
        }
    }
}

/// An error in a `group=role,group=role` list such as `KUBEHERO_GROUP_ROLES`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupRolesError {
    /// An entry has no `=` or an empty group name.
    #[error("entry {index} ({entry:?}) is not of the form group=role")]
    Malformed { index: usize, entry: String },
    /// An entry names a role that does not exist.
    #[error("entry {index}: {source}")]
    UnknownRole { index: usize, source: ParseRoleError },
}

/// Parses seed 001's `KUBEHERO_GROUP_ROLES` syntax: comma-separated `group=role` pairs. The group is
/// everything before the **last** `=` so group names may contain `=` (LDAP DNs do); surrounding spaces are
/// trimmed; empty entries (a trailing comma) are ignored. A group may appear several times: it then grants
/// every role listed for it (union semantics).
pub fn parse_group_roles(s: &str) -> Result<Vec<(String, Role)>, GroupRolesError> {
    let mut out = Vec::new();
    for (index, entry) in s.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((group, role)) = entry.rsplit_once('=') else {
            return Err(GroupRolesError::Malformed { index, entry: entry.to_string() });
        };
        let group = group.trim();
        if group.is_empty() {
            return Err(GroupRolesError::Malformed { index, entry: entry.to_string() });
        }
        let role = role.parse().map_err(|source| GroupRolesError::UnknownRole { index, source })?;
        out.push((group.to_string(), role));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_examples() {
        let v = parse_group_roles(
            "kubehero-owners=owner,kubehero-admins=admin, kubehero-auditors=auditor ,/ml-platform=member,acme:sre=admin,",
        )
        .unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v[3], ("/ml-platform".to_string(), Role::Member));
        assert_eq!(v[4], ("acme:sre".to_string(), Role::Admin));
        // A comma splits entries, so a DN with commas cannot be a group name here (use the config file).
        let v = parse_group_roles("CN=Admins,OU=x=admin").unwrap_err();
        assert!(matches!(v, GroupRolesError::UnknownRole { index: 0, .. }));
        let v = parse_group_roles("Kubehero Admins=admin,cn=x=member").unwrap();
        assert_eq!(v[1], ("cn=x".to_string(), Role::Member));
    }

    #[test]
    fn rejects_bad_entries() {
        assert!(matches!(parse_group_roles("admins"), Err(GroupRolesError::Malformed { .. })));
        assert!(matches!(parse_group_roles("=admin"), Err(GroupRolesError::Malformed { .. })));
        assert!(matches!(parse_group_roles("a=root"), Err(GroupRolesError::UnknownRole { .. })));
    }

    #[test]
    fn user_bindings_name_the_issuer_or_an_email() {
        let b = |name: &str| Binding {
            subject: BindingSubject::User(name.into()),
            role: Role::Admin,
            scope: Scope::Global,
        };
        let alice_a = crate::subject_key(Some("https://a.example"), "alice");
        let alice_b = crate::subject_key(Some("https://b.example"), "alice");
        let by_subject = b("https://a.example#alice");
        assert!(by_subject.applies_to(&alice_a, None, &[]));
        assert!(!by_subject.applies_to(&alice_b, None, &[]), "same sub, other issuer");
        assert!(!b("alice").applies_to(&alice_a, None, &[]), "a bare sub names no person");
        let by_email = b("Alice@Acme.com");
        assert!(by_email.applies_to(&alice_b, Some("alice@acme.com"), &[]));
        assert!(!by_email.applies_to(&alice_b, None, &[]));
        assert!(!b("alice@acme.com").applies_to("https://x#alice@acme.com", None, &[]), "an email is not a sub");
        assert!(b("04ad415f49746e11").applies_to("04ad415f49746e11", None, &[]));
        assert!(is_api_key_id("04ad415f49746e11") && !is_api_key_id("alice") && !is_api_key_id("04AD415F49746E11"));
    }

    #[test]
    fn covers_is_not_a_ladder() {
        assert!(Role::Owner.covers(Role::Auditor));
        assert!(!Role::Admin.covers(Role::Auditor));
        assert!(!Role::Auditor.covers(Role::Member));
        assert!(!Role::Member.covers(Role::Auditor));
        assert!(Role::Admin.covers(Role::Member));
        assert!(Role::Auditor.covers(Role::Viewer));
    }
}
