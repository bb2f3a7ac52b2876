//! Who is making a request. A principal is built once per request by authentication and then only read.

use crate::role::{Grant, Role, Scope};
use serde::Serialize;

/// How the principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// No credential, in open mode only.
    Anonymous,
    /// An OIDC JWT from a configured issuer.
    Jwt,
    /// A static (`KUBEHERO_API_KEYS`) or managed (`/api/v1/api-keys`) API key.
    ApiKey,
    /// A dashboard session cookie.
    Session,
    /// A CLI token from `kubehero login`.
    CliToken,
    /// A cluster agent's mTLS client certificate.
    Mtls,
    /// The IdP's SCIM provisioning client (`KUBEHERO_SCIM_TOKEN`).
    ScimToken,
}

impl AuthMethod {
    /// The snake-case name used in metrics labels, `whoami` and audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Session => "session",
            AuthMethod::CliToken => "cli_token",
            AuthMethod::Mtls => "mtls",
            AuthMethod::ScimToken => "scim",
        }
    }
}

impl PrincipalKind {
    /// The snake-case name used in audit rows and `whoami`.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Person => "person",
            PrincipalKind::ApiKey => "api_key",
            PrincipalKind::Agent => "agent",
            PrincipalKind::Anonymous => "anonymous",
            PrincipalKind::Provisioner => "provisioner",
        }
    }
}

/// What kind of actor this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A human from the IdP (JWT, session, CLI token).
    Person,
    /// A service account holding an API key.
    ApiKey,
    /// A registered cluster's agent.
    Agent,
    /// An unauthenticated caller in open mode.
    Anonymous,
    /// The IdP's SCIM client: may provision people and groups and do nothing else.
    Provisioner,
}

/// An authenticated (or, in open mode, anonymous) caller and every grant it holds.
///
/// `grants` is the union of everything bound to the principal; [`Principal::roles`] and
/// [`Principal::display_role`] are derived from it. It never holds the credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// Stable subject: the IdP's username claim, or the first 16 hex chars of an API key's SHA-256.
    pub sub: String,
    pub email: Option<String>,
    /// Groups after the issuer's prefix was applied.
    pub groups: Vec<String>,
    /// The issuer that vouched for a JWT-derived principal.
    pub issuer: Option<String>,
    pub auth_method: AuthMethod,
    /// For API keys: the [`subject_key`] of the person who created the key.
    pub owner: Option<String>,
    /// Every grant the principal holds; always contains at least global `viewer`, except for the SCIM
    /// provisioner, which holds none.
    pub grants: Vec<Grant>,
    /// Unix seconds after which this principal's credential is no longer valid, if it expires.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// The anonymous open-mode caller: a global `viewer`.
    pub fn anonymous() -> Principal {
        Principal {
            kind: PrincipalKind::Anonymous,
            sub: "anonymous".to_string(),
            email: None,
            groups: Vec::new(),
            issuer: None,
            auth_method: AuthMethod::Anonymous,
            owner: None,
            grants: vec![Grant::global(Role::Viewer)],
            expires_at: None,
        }
    }

    /// The IdP's SCIM client. It holds no grant: [`crate::authorize`] lets it provision and nothing else.
    pub fn provisioner() -> Principal {
        Principal {
            kind: PrincipalKind::Provisioner,
            sub: "scim".to_string(),
            email: None,
            groups: Vec::new(),
            issuer: None,
            auth_method: AuthMethod::ScimToken,
            owner: None,
            grants: Vec::new(),
            expires_at: None,
        }
    }

    /// The identity this principal is stored and compared under: `<issuer>#<sub>` for a person an issuer
    /// vouched for, the bare `sub` otherwise (API key ids, `anonymous`, `scim`). See [`subject_key`].
    pub fn subject_key(&self) -> String {
        subject_key(self.issuer.as_deref(), &self.sub)
    }

    /// The distinct roles held globally, sorted lowest display rank first.
    pub fn roles(&self) -> Vec<Role> {
        let mut v: Vec<Role> = self.grants.iter().filter(|g| g.scope == Scope::Global).map(|g| g.role).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Grants limited to a cluster or namespace.
    pub fn scoped_grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter().filter(|g| g.scope != Scope::Global)
    }

    /// The highest-ranked global role (owner > admin > member > auditor > viewer), for display only:
    /// authorization always looks at every grant.
    pub fn display_role(&self) -> Role {
        self.roles().into_iter().max().unwrap_or(Role::Viewer)
    }

    /// Whether any global grant is `role` or covers it.
    pub fn holds_globally(&self, role: Role) -> bool {
        self.grants.iter().any(|g| g.scope == Scope::Global && g.role.covers(role))
    }
}

/// Separates the issuer from the subject in a [`subject_key`]. OpenID Connect issuers are URLs without a
/// fragment (OIDC Discovery 1.0 §3), so the first `#` always ends the issuer and the key is unambiguous.
pub const SUBJECT_KEY_SEPARATOR: char = '#';

/// The one string a person is known by wherever KubeHero stores or compares an identity (owners of keys,
/// policies, sessions, audit actors, directory links, user bindings): the pair (issuer, subject), because two
/// issuers may both issue `sub=alice` and those are two people. Without an issuer (API keys, `anonymous`,
/// `scim`, rows written before issuers were recorded) it is the bare subject.
pub fn subject_key(issuer: Option<&str>, sub: &str) -> String {
    match issuer {
        Some(iss) if !iss.is_empty() => format!("{iss}{SUBJECT_KEY_SEPARATOR}{sub}"),
        _ => sub.to_string(),
    }
}

/// Splits a [`subject_key`] into (issuer, subject); a bare subject has no issuer.
pub fn split_subject_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once(SUBJECT_KEY_SEPARATOR) {
        Some((iss, sub)) => (Some(iss), sub),
        None => (None, key),
    }
}

/// Adds `viewer` when no global grant exists, dedups, and orders grants. Every authenticated principal can
/// read: this is seed 001's "no group match: viewer" default, kept even when only scoped grants matched.
pub fn normalize_grants(mut grants: Vec<Grant>) -> Vec<Grant> {
    if !grants.iter().any(|g| g.scope == Scope::Global) {
        grants.push(Grant::global(Role::Viewer));
    }
    grants.sort();
    grants.dedup();
    grants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_keys_keep_issuers_apart_and_split_back() {
        let a = subject_key(Some("https://a.example"), "alice");
        let b = subject_key(Some("https://b.example"), "alice");
        assert_ne!(a, b);
        assert_eq!(a, "https://a.example#alice");
        assert_eq!(split_subject_key(&a), (Some("https://a.example"), "alice"));
        // A subject may itself contain '#': the issuer ends at the first one.
        let odd = subject_key(Some("https://a.example"), "x#y");
        assert_eq!(split_subject_key(&odd), (Some("https://a.example"), "x#y"));
        assert_eq!(subject_key(None, "04ad415f49746e11"), "04ad415f49746e11");
        assert_eq!(split_subject_key("anonymous"), (None, "anonymous"));
    }
}
