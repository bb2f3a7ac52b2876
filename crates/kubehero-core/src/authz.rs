//! The one authorization function. Every handler calls [`authorize`] on its first line with the action it
//! performs and the target it touches; nothing else decides access.
//!
//! Semantics (ARCHITECTURE.md, the seed specification): a principal holds a set of grants; the check passes if **any** grant
//! whose role allows the action also has a scope that covers the target. Scoped grants never cover actions
//! that have no cluster (listing, settings, bindings, audit), so a scoped admin is the seed's "operator":
//! arm/undo within scope, read everywhere as a viewer.

use crate::glob;
use crate::principal::{Principal, PrincipalKind};
use crate::role::{Grant, Role, Scope};
use serde::Serialize;

/// Everything a principal can ask the control plane to do. The `as_str` name is the audit action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// `GET /api/v1/whoami`.
    WhoAmI,
    ClusterList,
    ClusterGet,
    /// RegisterCluster (`POST /api/v1/clusters`).
    ClusterRegister,
    ClusterDelete,
    PolicyList,
    PolicyGet,
    PolicyCreate,
    /// Edit a draft. The target says whether the principal owns it: members edit their own drafts only.
    PolicyUpdate,
    PolicyArm,
    PolicyDisarm,
    PolicyUndo,
    RoleBindingList,
    RoleBindingCreate,
    RoleBindingDelete,
    /// Read IdP/integration settings (secrets are redacted on output regardless).
    SettingsRead,
    SettingsWrite,
    /// List API keys (metadata only): owners and auditors see every key, everyone else their own.
    ApiKeyList,
    ApiKeyCreate,
    /// Revoke a key: members their own, owners any.
    ApiKeyRevoke,
    /// Read or export the audit log.
    AuditRead,
    /// List one's own dashboard sessions and CLI tokens (owners: everyone's).
    SessionList,
    /// Revoke a session or CLI token: one's own, or (owners) anyone's.
    SessionRevoke,
    /// Exchange one's CLI token for a new one.
    TokenRotate,
    /// Ask for a role on a cluster for a while (time-bound elevation); list one's own requests.
    AccessRequest,
    /// Approve or deny an elevation request: admins and owners of the request's scope.
    AccessDecide,
    /// Make a share link for a cluster (or one namespace): anyone signed in, for a role no higher than their
    /// own there (the handler checks that).
    ShareCreate,
    /// List share links: one's own, and (admins and owners) those of their scope.
    ShareList,
    /// Revoke a share link: its creator, or an admin or owner of its scope.
    ShareRevoke,
    /// Accept a share link (the link's token is the proof): anyone signed in.
    ShareAccept,
    /// Seal break-glass codes for a cluster: owners of it.
    BreakglassCreate,
    /// List break-glass codes and their uses: auditors and owners.
    BreakglassList,
    /// Acknowledge a break-glass use (ends its dashboard banner): owners of the cluster.
    BreakglassAcknowledge,
    /// SCIM discovery: `ServiceProviderConfig`, `ResourceTypes`, `Schemas`.
    ScimDiscover,
    /// SCIM reads of users (get, list, filter, search).
    ScimUserRead,
    ScimUserCreate,
    /// `PUT /scim/v2/Users/{id}`.
    ScimUserReplace,
    ScimUserPatch,
    ScimUserDelete,
    ScimGroupRead,
    ScimGroupCreate,
    ScimGroupReplace,
    ScimGroupPatch,
    ScimGroupDelete,
}

impl Action {
    /// Every action, for exhaustive tests.
    pub const ALL: [Action; 44] = [
        Action::WhoAmI,
        Action::ClusterList,
        Action::ClusterGet,
        Action::ClusterRegister,
        Action::ClusterDelete,
        Action::PolicyList,
        Action::PolicyGet,
        Action::PolicyCreate,
        Action::PolicyUpdate,
        Action::PolicyArm,
        Action::PolicyDisarm,
        Action::PolicyUndo,
        Action::RoleBindingList,
        Action::RoleBindingCreate,
        Action::RoleBindingDelete,
        Action::SettingsRead,
        Action::SettingsWrite,
        Action::ApiKeyList,
        Action::ApiKeyCreate,
        Action::ApiKeyRevoke,
        Action::AuditRead,
        Action::SessionList,
        Action::SessionRevoke,
        Action::TokenRotate,
        Action::AccessRequest,
        Action::AccessDecide,
        Action::ShareCreate,
        Action::ShareList,
        Action::ShareRevoke,
        Action::ShareAccept,
        Action::BreakglassCreate,
        Action::BreakglassList,
        Action::BreakglassAcknowledge,
        Action::ScimDiscover,
        Action::ScimUserRead,
        Action::ScimUserCreate,
        Action::ScimUserReplace,
        Action::ScimUserPatch,
        Action::ScimUserDelete,
        Action::ScimGroupRead,
        Action::ScimGroupCreate,
        Action::ScimGroupReplace,
        Action::ScimGroupPatch,
        Action::ScimGroupDelete,
    ];

    /// The dotted name used in audit rows and error messages (`cluster.register`, `policy.arm`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::WhoAmI => "whoami",
            Action::ClusterList => "cluster.list",
            Action::ClusterGet => "cluster.get",
            Action::ClusterRegister => "cluster.register",
            Action::ClusterDelete => "cluster.delete",
            Action::PolicyList => "policy.list",
            Action::PolicyGet => "policy.get",
            Action::PolicyCreate => "policy.create",
            Action::PolicyUpdate => "policy.update",
            Action::PolicyArm => "policy.arm",
            Action::PolicyDisarm => "policy.disarm",
            Action::PolicyUndo => "policy.undo",
            Action::RoleBindingList => "role_binding.list",
            Action::RoleBindingCreate => "role_binding.create",
            Action::RoleBindingDelete => "role_binding.delete",
            Action::SettingsRead => "settings.read",
            Action::SettingsWrite => "settings.write",
            Action::ApiKeyList => "api_key.list",
            Action::ApiKeyCreate => "api_key.create",
            Action::ApiKeyRevoke => "api_key.revoke",
            Action::AuditRead => "audit.read",
            Action::SessionList => "session.list",
            Action::SessionRevoke => "session.revoke",
            Action::TokenRotate => "token.rotate",
            Action::AccessRequest => "access.request",
            Action::AccessDecide => "access.decide",
            Action::ShareCreate => "share.create",
            Action::ShareList => "share.list",
            Action::ShareRevoke => "share.revoke",
            Action::ShareAccept => "share.accept",
            Action::BreakglassCreate => "breakglass.create",
            Action::BreakglassList => "breakglass.list",
            Action::BreakglassAcknowledge => "breakglass.acknowledge",
            Action::ScimDiscover => "scim.discover",
            Action::ScimUserRead => "scim.user.read",
            Action::ScimUserCreate => "scim.user.create",
            Action::ScimUserReplace => "scim.user.replace",
            Action::ScimUserPatch => "scim.user.patch",
            Action::ScimUserDelete => "scim.user.delete",
            Action::ScimGroupRead => "scim.group.read",
            Action::ScimGroupCreate => "scim.group.create",
            Action::ScimGroupReplace => "scim.group.replace",
            Action::ScimGroupPatch => "scim.group.patch",
            Action::ScimGroupDelete => "scim.group.delete",
        }
    }

    /// Whether the action changes state (used by the audit log and by tests).
    pub fn is_mutation(self) -> bool {
        !matches!(
            self,
            Action::WhoAmI
                | Action::ClusterList
                | Action::ClusterGet
                | Action::PolicyList
                | Action::PolicyGet
                | Action::RoleBindingList
                | Action::SettingsRead
                | Action::ApiKeyList
                | Action::AuditRead
                | Action::SessionList
                | Action::ShareList
                | Action::BreakglassList
                | Action::ScimDiscover
                | Action::ScimUserRead
                | Action::ScimGroupRead
        )
    }

    /// Whether this is an IdP's provisioning call: allowed to the SCIM client only, and the only actions it has.
    pub fn is_provisioning(self) -> bool {
        matches!(
            self,
            Action::ScimDiscover
                | Action::ScimUserRead
                | Action::ScimUserCreate
                | Action::ScimUserReplace
                | Action::ScimUserPatch
                | Action::ScimUserDelete
                | Action::ScimGroupRead
                | Action::ScimGroupCreate
                | Action::ScimGroupReplace
                | Action::ScimGroupPatch
                | Action::ScimGroupDelete
        )
    }
}

/// What an action touches. Empty for actions on collections or global resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target<'a> {
    /// The cluster the resource belongs to.
    pub cluster: Option<&'a str>,
    /// The namespace within that cluster.
    pub namespace: Option<&'a str>,
    /// Whether the principal owns the resource (created the policy draft, owns the API key).
    pub owned: bool,
}

impl<'a> Target<'a> {
    /// No particular resource.
    pub const NONE: Target<'static> = Target { cluster: None, namespace: None, owned: false };

    /// A cluster, or a resource in one.
    pub fn cluster(cluster: &'a str) -> Self {
        Target { cluster: Some(cluster), ..Target::default() }
    }

    /// A namespaced resource in a cluster.
    pub fn in_namespace(cluster: &'a str, namespace: Option<&'a str>) -> Self {
        Target { cluster: Some(cluster), namespace, ..Target::default() }
    }

    /// Marks the target as owned by the principal.
    pub fn owned(self, owned: bool) -> Self {
        Target { owned, ..self }
    }
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the message says which role would have been needed.
    Deny {
        needed: &'static str,
    },
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Decides whether `principal` may perform `action` on `target`. Pure, total and fail-closed.
pub fn authorize(principal: &Principal, action: Action, target: Target<'_>) -> Decision {
    // Provisioning is a separate door: the SCIM token opens it and nothing else, and no role opens it.
    let provisioner = principal.kind == PrincipalKind::Provisioner;
    if action.is_provisioning() || provisioner {
        return if action.is_provisioning() && provisioner {
            Decision::Allow
        } else {
            Decision::Deny { needed: needed_role(action, target) }
        };
    }
    if principal.grants.iter().any(|g| grant_allows(g, action, target)) {
        Decision::Allow
    } else {
        Decision::Deny { needed: needed_role(action, target) }
    }
}

fn grant_allows(grant: &Grant, action: Action, target: Target<'_>) -> bool {
    role_allows(grant.role, action, target) && scope_covers(&grant.scope, target)
}

/// Whether a scope covers a target. Global covers everything; a cluster scope covers targets in a matching
/// cluster; a namespace scope also needs the same namespace. Targets with no cluster are global-only.
pub fn scope_covers(scope: &Scope, target: Target<'_>) -> bool {
    match scope {
        Scope::Global => true,
        Scope::Cluster { cluster } => target.cluster.is_some_and(|c| glob::matches(cluster, c)),
        Scope::Namespace { cluster, namespace } => {
            target.cluster.is_some_and(|c| glob::matches(cluster, c))
                && target.namespace.is_some_and(|n| n == namespace)
        }
    }
}

/// The permission table of seed 001's five roles.
fn role_allows(role: Role, action: Action, target: Target<'_>) -> bool {
    use Action::*;
    let read = matches!(
        action,
        WhoAmI | ClusterList | ClusterGet | PolicyList | PolicyGet | RoleBindingList | ApiKeyList | ShareList
    );
    // Everyone manages their own sign-ins, asks for access and shares what they hold, whatever their role.
    let self_service = matches!(action, SessionList | TokenRotate | AccessRequest | ShareCreate | ShareAccept)
        || (matches!(action, SessionRevoke | ShareRevoke) && target.owned);
    let own_write = matches!(action, PolicyCreate | ApiKeyCreate)
        || (matches!(action, PolicyUpdate | ApiKeyRevoke) && target.owned);
    let cluster_admin = matches!(
        action,
        ClusterRegister
            | ClusterDelete
            | PolicyArm
            | PolicyDisarm
            | PolicyUndo
            | PolicyUpdate
            | AccessDecide
            | ShareRevoke
    );
    match role {
        Role::Viewer => read || self_service,
        Role::Auditor => read || self_service || matches!(action, AuditRead | SettingsRead | BreakglassList),
        Role::Member => read || self_service || own_write,
        Role::Admin => read || self_service || own_write || cluster_admin,
        // Owners hold every permission: bindings, settings, anyone's API keys.
        Role::Owner => true,
    }
}

fn needed_role(action: Action, target: Target<'_>) -> &'static str {
    use Action::*;
    match action {
        WhoAmI | ClusterList | ClusterGet | PolicyList | PolicyGet | RoleBindingList | ApiKeyList => "viewer",
        SessionList | TokenRotate | AccessRequest | ShareCreate | ShareAccept | ShareList => "viewer",
        SessionRevoke | ShareRevoke if target.owned => "viewer",
        PolicyCreate | ApiKeyCreate => "member",
        PolicyUpdate if target.owned => "member",
        ApiKeyRevoke if target.owned => "member",
        ClusterRegister | ClusterDelete | PolicyArm | PolicyDisarm | PolicyUndo | PolicyUpdate | AccessDecide
        | ShareRevoke => "admin (within the target cluster's scope)",
        AuditRead | SettingsRead | BreakglassList => "auditor or owner",
        BreakglassCreate | BreakglassAcknowledge => "owner (of the target cluster)",
        RoleBindingCreate | RoleBindingDelete | SettingsWrite | ApiKeyRevoke | SessionRevoke => "owner",
        ScimDiscover | ScimUserRead | ScimUserCreate | ScimUserReplace | ScimUserPatch | ScimUserDelete
        | ScimGroupRead | ScimGroupCreate | ScimGroupReplace | ScimGroupPatch | ScimGroupDelete => {
            "the SCIM provisioning token"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::normalize_grants;

    fn with(grants: Vec<Grant>) -> Principal {
        Principal { grants: normalize_grants(grants), ..Principal::anonymous() }
    }

    #[test]
    fn auditor_never_mutates() {
        let p = with(vec![Grant::global(Role::Auditor)]);
        for a in Action::ALL {
            let d = authorize(&p, a, Target::cluster("prod").owned(true));
            // Managing one's own sign-ins, and asking for more access, are the only writes an auditor makes.
            let self_service = matches!(
                a,
                Action::SessionRevoke
                    | Action::TokenRotate
                    | Action::AccessRequest
                    | Action::ShareCreate
                    | Action::ShareAccept
                    | Action::ShareRevoke
            );
            let expected = (!a.is_mutation() || self_service) && !a.is_provisioning();
            assert_eq!(d.is_allowed(), expected, "{a:?}");
        }
        assert!(!authorize(&p, Action::SessionRevoke, Target::NONE).is_allowed(), "not someone else's session");
    }

    #[test]
    fn scoped_admin_is_operator() {
        let p = with(vec![Grant { role: Role::Admin, scope: Scope::Cluster { cluster: "prod-*".into() } }]);
        assert!(authorize(&p, Action::PolicyArm, Target::cluster("prod-eu")).is_allowed());
        assert!(!authorize(&p, Action::PolicyArm, Target::cluster("staging")).is_allowed());
        assert!(!authorize(&p, Action::ClusterRegister, Target::NONE).is_allowed());
        assert!(authorize(&p, Action::ClusterList, Target::NONE).is_allowed());
        assert!(!authorize(&p, Action::SettingsWrite, Target::NONE).is_allowed());
    }

    #[test]
    fn namespace_scope_needs_namespace() {
        let p = with(vec![Grant {
            role: Role::Admin,
            scope: Scope::Namespace { cluster: "prod".into(), namespace: "payments".into() },
        }]);
        assert!(authorize(&p, Action::PolicyArm, Target::in_namespace("prod", Some("payments"))).is_allowed());
        assert!(!authorize(&p, Action::PolicyArm, Target::in_namespace("prod", Some("web"))).is_allowed());
        assert!(!authorize(&p, Action::PolicyArm, Target::in_namespace("prod", None)).is_allowed());
        assert!(!authorize(&p, Action::ClusterDelete, Target::cluster("prod")).is_allowed());
    }

    #[test]
    fn no_grants_denies_everything() {
        let p = Principal { grants: vec![], ..Principal::anonymous() };
        for a in Action::ALL {
            assert!(!authorize(&p, a, Target::cluster("x").owned(true)).is_allowed(), "{a:?}");
        }
    }

    #[test]
    fn provisioning_is_the_scim_clients_only() {
        let owner = with(vec![Grant::global(Role::Owner)]);
        let scim = Principal::provisioner();
        for a in Action::ALL {
            assert_eq!(authorize(&owner, a, Target::NONE).is_allowed(), !a.is_provisioning(), "{a:?}");
            assert_eq!(authorize(&scim, a, Target::NONE).is_allowed(), a.is_provisioning(), "{a:?}");
        }
    }

    #[test]
    fn members_edit_only_their_own() {
        let p = with(vec![Grant::global(Role::Member)]);
        assert!(authorize(&p, Action::PolicyUpdate, Target::cluster("c").owned(true)).is_allowed());
        assert!(!authorize(&p, Action::PolicyUpdate, Target::cluster("c")).is_allowed());
        assert!(!authorize(&p, Action::PolicyArm, Target::cluster("c").owned(true)).is_allowed());
        assert!(!authorize(&p, Action::ApiKeyRevoke, Target::NONE).is_allowed());
    }
}
