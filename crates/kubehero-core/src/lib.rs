//! KubeHero's domain: who is asking ([`Principal`]), what they hold ([`Role`], [`Grant`]) and the one pure
//! function that decides whether they may do something ([`authorize`]).
//!
//! Security rules this crate upholds:
//! - authorization is a pure function of (principal, action, target); it does no I/O and cannot fail open;
//! - a check passes only if some held grant, whose scope covers the target, grants the action;
//! - secrets never live in these types: a principal carries identifiers, never credentials.

pub mod audit;
pub mod authz;
pub mod backoff;
pub mod glob;
pub mod hex;
pub mod kube;
pub mod names;
pub mod principal;
pub mod role;
pub mod secret;

pub use audit::{
    AuditActor, AuditColumns, AuditEvent, AuditOutcome, AuditRecord, AuditResult, AuditTarget, Checkpoint,
    ColumnValues, SealedRow, Sealer, GENESIS_MAC,
};
pub use authz::{authorize, Action, Decision, Target};
pub use names::{is_dns_label, ClusterName, InvalidClusterName};
pub use principal::{
    normalize_grants, split_subject_key, subject_key, AuthMethod, Principal, PrincipalKind, SUBJECT_KEY_SEPARATOR,
};
pub use role::{
    check_user_name, is_api_key_id, parse_group_roles, user_name_kind, Binding, BindingSubject, Grant, GroupRolesError,
    ParseRoleError, Role, Scope, UserNameKind,
};
pub use secret::Secret;
