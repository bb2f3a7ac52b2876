//! KubeHero's storage. Business code sees only the traits in this file; [`open`] picks SQLite (the embedded
//! default) or PostgreSQL (several replicas) from a database URL. Only this crate knows SQL.
//!
//! Rules every implementation keeps:
//! - every multi-row change (a policy transition and its history row) is one transaction;
//! - unique-key violations become [`StoreError::AlreadyExists`], never a generic error;
//! - secrets are never stored: API keys are kept as their SHA-256 only;
//! - times are Unix seconds (`i64`), ids are strings chosen by the caller.

mod access;
mod agent;
mod audit;
mod change;
mod device;
mod directory;
mod lease;
mod migrate;
mod postgres;
mod session;
mod shares;
mod sql;
mod sqlite;

use async_trait::async_trait;
use kubehero_core::{AuditEvent, AuditOutcome, Binding, Checkpoint, Role, SealedRow, Sealer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use access::{AccessRequest, AccessStore};
pub use agent::{AgentCa, AgentCert, AgentStore, ClusterStatus, ConnectionState, IssuerKey, JoinToken};
pub use change::{
    changed_api_key, changed_count, changed_deleted_group, changed_device, changed_group, changed_policy,
    changed_session, changed_user, Change, ChangeStore, Changed, WithRows,
};
pub use lease::LeaseStore;
pub use postgres::PostgresStore;
pub use shares::{BreakglassCode, Share, ShareGrant, ShareStore};
pub use sqlite::SqliteStore;

/// Errors from the store. Each maps to exactly one API error code in the server.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist (→ `not_found`).
    #[error("{0} not found")]
    NotFound(String),
    /// A row with the same unique key exists (→ `already_exists`).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A precondition on the current state failed: stale version, wrong policy state (→ `failed_precondition`).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or refused the operation (→ `unavailable`). The message names the
    /// backend and the failure but never the connection password.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded (→ `internal`): a bug or a hand-edited database.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database refused a value (a NUL byte in text on PostgreSQL) (→ `invalid_argument`). The API
    /// refuses such text before it gets here; this keeps a value that slips through a client's mistake (400),
    /// not a database outage (503).
    #[error("{0}: the database cannot store this value")]
    Invalid(String),
    /// The database URL or options are invalid (start-up only).
    #[error("invalid database configuration: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A registered cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Unique name (DNS label rules, checked by the server).
    pub name: String,
    /// The Kubernetes API server URL the cp will proxy to, when known.
    pub api_server_url: Option<String>,
    /// Free-form labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `sub` of the principal that registered it.
    pub created_by: String,
    pub created_at: i64,
}

/// The lifecycle state of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyState {
    Draft,
    Armed,
    Disarmed,
}

impl PolicyState {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyState::Draft => "draft",
            PolicyState::Armed => "armed",
            PolicyState::Disarmed => "disarmed",
        }
    }
    pub fn parse(s: &str) -> Option<PolicyState> {
        match s {
            "draft" => Some(PolicyState::Draft),
            "armed" => Some(PolicyState::Armed),
            "disarmed" => Some(PolicyState::Disarmed),
            _ => None,
        }
    }
}

/// A policy: a spec that applies to a cluster (optionally one namespace) and can be armed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub namespace: Option<String>,
    /// `sub` of the creator; members may edit only their own drafts.
    pub owner: String,
    pub spec: serde_json::Value,
    pub state: PolicyState,
    /// Incremented on every change; used for optimistic concurrency.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One recorded change of a policy (creation, edit, arm, disarm, undo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyTransition {
    pub policy_id: String,
    /// 1-based, per policy, no gaps.
    pub seq: i64,
    /// `create`, `update`, `arm`, `disarm`, `undo`.
    pub action: String,
    /// State before (None for `create`).
    pub from_state: Option<PolicyState>,
    pub to_state: PolicyState,
    /// The policy version after this transition.
    pub version: i64,
    /// The spec after this transition.
    pub spec: serde_json::Value,
    pub actor: String,
    pub at: i64,
}

/// A role binding stored in the database, managed through `/api/v1/role-bindings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBinding {
    pub id: String,
    #[serde(flatten)]
    pub binding: Binding,
    pub created_by: String,
    pub created_at: i64,
    /// From then (Unix seconds) it grants nothing; `None`: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A managed API key. The key itself is never stored: only its SHA-256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// First 16 hex chars of the SHA-256: the key's public id and the principal's `sub`.
    pub id: String,
    /// Full SHA-256 of the key, lowercase hex (64 chars). Unique.
    #[serde(skip_serializing)]
    pub hash: String,
    pub name: String,
    pub role: Role,
    /// `sub` of the person who created it.
    pub owner: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Clusters.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    async fn list_clusters(&self) -> Result<Vec<Cluster>>;
    async fn get_cluster(&self, name: &str) -> Result<Cluster>;
    /// `AlreadyExists` if the name is taken.
    async fn create_cluster(&self, cluster: &Cluster) -> Result<()>;
    /// `NotFound` if absent; revokes its agent certificates (see [`Change::DeleteCluster`]).
    async fn delete_cluster(&self, name: &str, at: i64) -> Result<()>;
}

/// Policies and their history.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Ordered by `created_at`, then id. `cluster` filters when given.
    async fn list_policies(&self, cluster: Option<&str>) -> Result<Vec<Policy>>;
    async fn get_policy(&self, id: &str) -> Result<Policy>;
    /// Inserts the policy (version 1) and its `create` transition in one transaction.
    /// `AlreadyExists` if the id, or the (cluster, name) pair, is taken.
    async fn create_policy(&self, policy: &Policy) -> Result<()>;
    /// Replaces name and spec if the stored version equals `expected_version` and the state is `draft`;
    /// bumps the version, records an `update` transition. `Conflict` otherwise, `NotFound` if absent.
    async fn update_policy(
        &self,
        id: &str,
        expected_version: i64,
        name: &str,
        spec: &serde_json::Value,
        actor: &str,
        at: i64,
    ) -> Result<Policy>;
    /// Moves the policy from `from` to `to` if its current state is `from`; bumps the version and records a
    /// transition named `action`, all in one transaction. `Conflict` if the state is not `from`.
    async fn transition_policy(
        &self,
        id: &str,
        from: PolicyState,
        to: PolicyState,
        action: &str,
        actor: &str,
        at: i64,
    ) -> Result<Policy>;
    /// Every transition of one policy, oldest first. `NotFound` if the policy does not exist.
    async fn policy_history(&self, id: &str) -> Result<Vec<PolicyTransition>>;
}

/// Role bindings.
#[async_trait]
pub trait BindingStore: Send + Sync {
    async fn list_bindings(&self) -> Result<Vec<StoredBinding>>;
    /// `AlreadyExists` if an identical (subject, role, scope) binding exists.
    async fn create_binding(&self, binding: &StoredBinding) -> Result<()>;
    async fn delete_binding(&self, id: &str) -> Result<()>;
}

/// Managed API keys.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// `AlreadyExists` on a duplicate id or hash.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// Looks a key up by its full SHA-256 hex, whatever its state (the caller checks expiry/revocation).
    async fn find_api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;
    /// All keys, or those of one owner; newest first.
    async fn list_api_keys(&self, owner: Option<&str>) -> Result<Vec<ApiKeyRecord>>;
    async fn get_api_key(&self, id: &str) -> Result<ApiKeyRecord>;
    /// Sets `revoked_at` if not already set. `NotFound` if absent; revoking twice is not an error.
    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<ApiKeyRecord>;
}

/// IdP and integration settings: named JSON documents, owner-managed.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    async fn get_setting(&self, key: &str) -> Result<Option<serde_json::Value>>;
    async fn list_settings(&self) -> Result<Vec<(String, serde_json::Value)>>;
    async fn put_setting(&self, key: &str, value: &serde_json::Value, at: i64) -> Result<()>;
}

/// An audit row as stored: the canonical record text and its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditRow {
    pub seq: i64,
    pub key_id: String,
    /// Lowercase hex HMAC-SHA256.
    pub mac: String,
    /// The canonical record (JSON) the MAC covers.
    pub body: String,
    /// The indexed copies of record fields as the database holds them, as a column digest
    /// ([`kubehero_core::AuditColumns`]); only [`AuditStore::audit_rows_with_columns`] reads them (the
    /// verifier checks them against the body), `None` elsewhere and in an export.
    pub columns: Option<String>,
}

/// Filters for reading the audit log, newest first. Every filter is optional; `before_seq` is the cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<AuditOutcome>,
    pub cluster: Option<String>,
    /// Only rows with `seq` below this (the previous page's last `seq`).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// The audit log: append-only, HMAC-chained, with signed checkpoints and the forwarders' cursors.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `events` in order as one transaction: takes the chain head (a row lock that serialises every
    /// writer, in this process and in other replicas), seals each event with `sealer`, inserts the rows and
    /// moves the head. Either all rows are durable when this returns `Ok`, or none is.
    async fn append_audit(&self, events: &[AuditEvent], sealer: &Arc<dyn Sealer>) -> Result<Vec<SealedRow>>;
    /// The chain head: the last `seq` and its MAC (`0` and the genesis MAC when empty).
    async fn audit_head(&self) -> Result<(i64, String)>;
    /// Rows with `seq > after`, ascending, at most `limit`: for verification, export and forwarding.
    async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<StoredAuditRow>>;
    /// [`AuditStore::audit_rows`] with each row's column digest, for verification.
    async fn audit_rows_with_columns(&self, after: i64, limit: i64) -> Result<Vec<StoredAuditRow>>;
    /// Rows matching `q`, newest first.
    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<StoredAuditRow>>;
    /// Records a signed checkpoint. Writing the same one twice is not an error.
    async fn add_checkpoint(&self, c: &Checkpoint) -> Result<()>;
    /// Every checkpoint, ascending by `seq`.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>>;
    /// The public key and time of the newest checkpoint.
    async fn last_checkpoint_key(&self) -> Result<Option<(String, i64)>>;
    /// The last `seq` a sink has durably delivered (0 when it never delivered).
    async fn sink_cursor(&self, sink: &str) -> Result<i64>;
    /// Moves a sink's cursor forward (never backwards).
    async fn set_sink_cursor(&self, sink: &str, seq: i64, at: i64) -> Result<()>;
    /// Every sink and its cursor.
    async fn sink_cursors(&self) -> Result<Vec<(String, i64)>>;
}

/// What a login credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A dashboard session (cookie), 8 hours sliding under an absolute cap.
    Session,
    /// A CLI token from `kubehero login`, 30 days.
    CliToken,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Session => "session",
            SessionKind::CliToken => "cli_token",
        }
    }
    pub fn parse(s: &str) -> Option<SessionKind> {
        match s {
            "session" => Some(SessionKind::Session),
            "cli_token" => Some(SessionKind::CliToken),
            _ => None,
        }
    }
}

/// A server-side session or CLI token. The secret itself is never stored: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// First 16 hex chars of the SHA-256: the public id (lists, revocation, audit).
    pub id: String,
    /// Full SHA-256 of the secret, lowercase hex. Unique.
    #[serde(skip_serializing)]
    pub hash: String,
    pub kind: SessionKind,
    /// The person, as the IdP named them when they signed in.
    pub sub: String,
    pub email: Option<String>,
    /// Groups (prefixed) from the id_token or userinfo at sign-in.
    pub groups: Vec<String>,
    pub issuer: Option<String>,
    /// Anti-CSRF token of a dashboard session (sent back in a header or form field); `None` for CLI tokens.
    #[serde(skip_serializing)]
    pub csrf: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// Sliding expiry, never beyond `absolute_expires_at`.
    pub expires_at: i64,
    pub absolute_expires_at: i64,
    pub revoked_at: Option<i64>,
    pub user_agent: Option<String>,
}

/// Sessions and CLI tokens.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// `AlreadyExists` on a duplicate id or hash.
    async fn create_session(&self, s: &SessionRecord) -> Result<()>;
    /// Looks a session up by the SHA-256 of its secret, whatever its state (the caller checks expiry and
    /// revocation).
    async fn find_session_by_hash(&self, hash: &str) -> Result<Option<SessionRecord>>;
    /// Slides a session: sets `last_seen_at` and `expires_at`. `NotFound` if absent.
    async fn touch_session(&self, id: &str, last_seen_at: i64, expires_at: i64) -> Result<()>;
    /// Sets `revoked_at` if not already set. `NotFound` if absent; revoking twice is not an error.
    async fn revoke_session(&self, id: &str, at: i64) -> Result<SessionRecord>;
    /// Every session and token, or those of one person; newest first.
    async fn list_sessions(&self, sub: Option<&str>) -> Result<Vec<SessionRecord>>;
    /// Sessions and CLI tokens whose `sub` is one of `subs` or whose sign-in email is one of `emails` (any
    /// letter case): one indexed query per person, for deprovisioning.
    async fn sessions_of(&self, subs: &[&str], emails: &[&str]) -> Result<Vec<SessionRecord>>;
}

/// The state of a device authorization (RFC 8628-shaped CLI login).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Waiting for a person to confirm the user code.
    Pending,
    /// Confirmed; the polling CLI may collect its token once.
    Approved,
    Denied,
    /// The token was issued; the authorization cannot be used again.
    Consumed,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Denied => "denied",
            DeviceStatus::Consumed => "consumed",
        }
    }
    pub fn parse(s: &str) -> Option<DeviceStatus> {
        match s {
            "pending" => Some(DeviceStatus::Pending),
            "approved" => Some(DeviceStatus::Approved),
            "denied" => Some(DeviceStatus::Denied),
            "consumed" => Some(DeviceStatus::Consumed),
            _ => None,
        }
    }
}

/// A device authorization: the CLI holds the device code (stored hashed), the person types the user code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorization {
    /// SHA-256 hex of the device code.
    pub device_hash: String,
    /// `XXXX-XXXX`, unique while the authorization exists.
    pub user_code: String,
    pub status: DeviceStatus,
    /// The person who approved (set with `Approved`).
    pub sub: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub issuer: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// When the CLI last polled (for `slow_down`).
    pub last_poll_at: Option<i64>,
}

/// Device authorizations for `kubehero login`.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// `AlreadyExists` on a duplicate device hash or user code.
    async fn create_device(&self, d: &DeviceAuthorization) -> Result<()>;
    /// The authorization with this user code, whatever its state.
    async fn find_device_by_user_code(&self, user_code: &str) -> Result<Option<DeviceAuthorization>>;
    /// Approves (recording who) or denies a `pending`, unexpired authorization. `NotFound` if absent,
    /// `Conflict` if it is no longer pending or has expired at `now`.
    async fn decide_device(
        &self,
        user_code: &str,
        approve: bool,
        who: Option<&SessionRecord>,
        now: i64,
    ) -> Result<DeviceAuthorization>;
    /// Records a poll at `now` and returns the authorization as it was before this poll (its previous
    /// `last_poll_at` tells whether the CLI polls too fast). `None` if absent.
    async fn poll_device(&self, device_hash: &str, now: i64) -> Result<Option<DeviceAuthorization>>;
    /// Moves an `approved` authorization to `consumed`; true only for the one call that did (single use).
    async fn consume_device(&self, device_hash: &str) -> Result<bool>;
    /// Deletes authorizations that expired before `now`; returns how many.
    async fn purge_expired_devices(&self, now: i64) -> Result<u64>;
    /// Authorizations not yet expired at `now` (the global cap on pending sign-ins counts these).
    async fn count_live_devices(&self, now: i64) -> Result<i64>;
}

/// Where a directory person came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserOrigin {
    /// Created (or adopted) by the IdP through SCIM.
    Scim,
    /// Created just-in-time when the person signed in before the IdP provisioned them.
    Jit,
}

impl UserOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            UserOrigin::Scim => "scim",
            UserOrigin::Jit => "jit",
        }
    }
    pub fn parse(s: &str) -> Option<UserOrigin> {
        match s {
            "scim" => Some(UserOrigin::Scim),
            "jit" => Some(UserOrigin::Jit),
            _ => None,
        }
    }
}

/// A person in the SCIM directory.
///
/// The store indexes the identity facts (`user_name` case-insensitively, `external_id`, `subject`, `emails`)
/// so that a credential's subject and email find the person ([`DirectoryStore::find_people`]). Deleting a
/// person leaves a tombstone (`deleted_at`): invisible to SCIM reads and to `userName` uniqueness, but still
/// found by `find_people`, so the IdP's tokens for a deleted person keep being refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryUser {
    /// Chosen by the caller (a UUID), never reused.
    pub id: String,
    /// Unique among live users, compared case-insensitively.
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    /// The IdP subject linked at just-in-time creation, if any.
    pub subject: Option<String>,
    /// The person's email addresses (as given), matched case-insensitively against a credential's email.
    pub emails: Vec<String>,
    /// The SCIM resource as last written (a JSON object), without `id`, `meta` and `groups`.
    pub resource: serde_json::Value,
    pub origin: UserOrigin,
    /// Starts at 1, bumped by every change (the SCIM `meta.version`).
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

/// A group in the SCIM directory. Members are users, kept apart from the resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryGroup {
    pub id: String,
    /// Unique among groups, compared case-insensitively; the name `KUBEHERO_GROUP_ROLES` and bindings match.
    pub display_name: String,
    pub external_id: Option<String>,
    /// The SCIM resource as last written (a JSON object), without `id`, `meta` and `members`.
    pub resource: serde_json::Value,
    /// Starts at 1, bumped by every change including membership.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One member of a group, with the user's `userName` for SCIM's `display`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub user_id: String,
    pub user_name: String,
}

/// One group a user belongs to, for the user's read-only `groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub user_id: String,
    pub group_id: String,
    pub display_name: String,
}

/// How an update changes a group's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange<'a> {
    /// Members stay as they are.
    Keep,
    /// Members become exactly these user ids.
    Replace(&'a [String]),
    /// These user ids are added (already members are ignored) and these removed (non-members are ignored).
    Edit { add: &'a [String], remove: &'a [String] },
}

/// Which users a listing selects, before the SCIM filter's remaining conditions (evaluated by the caller).
/// Only live users are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSelect<'a> {
    All,
    Id(&'a str),
    /// Case-insensitive.
    UserName(&'a str),
    ExternalId(&'a str),
    /// Any of the user's emails, case-insensitive.
    Email(&'a str),
}

/// Which groups a listing selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSelect<'a> {
    All,
    Id(&'a str),
    /// Case-insensitive.
    DisplayName(&'a str),
    ExternalId(&'a str),
    /// Groups this user id belongs to.
    Member(&'a str),
}

/// A directory person found from a credential's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonMatch {
    pub user_id: String,
    pub user_name: String,
    pub active: bool,
    /// A tombstone: the IdP deleted this person.
    pub deleted: bool,
    /// Display names of the groups the person belongs to (empty for tombstones).
    pub groups: Vec<String>,
}

/// The SCIM directory: users, groups and memberships.
///
/// Listings are ordered by `created_at`, then `id`, and return `(total matching, the page)`; `offset` is
/// 0-based. Version checks: when `expected_version` is `Some(v)` and the stored version differs, `Conflict`.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Inserts users in one transaction (one or many). `AlreadyExists` if a `user_name` is taken by a live user
    /// (case-insensitively) or an id exists.
    async fn create_users(&self, users: &[DirectoryUser]) -> Result<()>;
    /// A live user. `NotFound` if absent or deleted.
    async fn get_user(&self, id: &str) -> Result<DirectoryUser>;
    /// Writes every field of `user` except `id`, `created_at`, `deleted_at`; bumps the version and returns the
    /// stored user. `NotFound`, `Conflict` (stale version), `AlreadyExists` (`user_name` clash).
    async fn update_user(&self, user: &DirectoryUser, expected_version: Option<i64>) -> Result<DirectoryUser>;
    /// Tombstones a live user at `at`, removes their memberships (bumping those groups' versions), and returns
    /// the user as it was. `NotFound` if absent or already deleted.
    async fn delete_user(&self, id: &str, expected_version: Option<i64>, at: i64) -> Result<DirectoryUser>;
    async fn select_users(&self, select: UserSelect<'_>, offset: i64, limit: i64) -> Result<(i64, Vec<DirectoryUser>)>;
    /// The groups of these users (any order).
    async fn memberships(&self, user_ids: &[String]) -> Result<Vec<Membership>>;
    /// Every user, live or deleted, whose `external_id` or `subject` equals `subject`, or whose `user_name` or
    /// one of whose `emails` equals `subject` or `email` case-insensitively.
    async fn find_people(&self, subject: &str, email: Option<&str>) -> Result<Vec<PersonMatch>> {
        let names: Vec<&str> = std::iter::once(subject).chain(email).collect();
        self.find_people_by(&[subject], &names).await
    }
    /// Every user, live or deleted, whose `external_id` or `subject` equals one of `ids`, or whose `user_name`
    /// or one of whose `emails` equals one of `names` case-insensitively. Empty values match nothing.
    async fn find_people_by(&self, ids: &[&str], names: &[&str]) -> Result<Vec<PersonMatch>>;

    /// Inserts a group (version 1) with these members in one transaction. `AlreadyExists` if the id or the
    /// display name is taken; `NotFound("user …")` if a member is not a live user.
    async fn create_group(&self, group: &DirectoryGroup, members: &[String]) -> Result<()>;
    async fn get_group(&self, id: &str) -> Result<DirectoryGroup>;
    /// Writes display name, external id, resource and `updated_at`, applies `members`, bumps the version, all in
    /// one transaction. `NotFound` (group, or a member that is not a live user), `Conflict`, `AlreadyExists`.
    async fn update_group(
        &self,
        group: &DirectoryGroup,
        members: MemberChange<'_>,
        expected_version: Option<i64>,
    ) -> Result<DirectoryGroup>;
    /// Deletes a group and its memberships; returns it and its former member ids.
    async fn delete_group(&self, id: &str, expected_version: Option<i64>) -> Result<(DirectoryGroup, Vec<String>)>;
    async fn select_groups(
        &self,
        select: GroupSelect<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<DirectoryGroup>)>;
    /// Members of one group, ordered by user name. `NotFound` if the group is absent.
    async fn group_members(&self, id: &str) -> Result<Vec<GroupMember>>;
    /// The display names of every group (for telling SCIM-managed group names from others).
    async fn group_names(&self) -> Result<Vec<String>>;
}

/// Who-is-who upkeep across tables.
#[async_trait::async_trait]
pub trait SubjectStore: Send + Sync {
    /// Rewrites the bare person subjects that rows written before issuers were recorded hold (API key and
    /// policy owners, user role bindings) as `issuer`'s [`kubehero_core::subject_key`]s. Leaves alone what is
    /// already qualified, emails, API key ids and the non-person names `anonymous`, `scim` and
    /// `local-operator`. Returns how many rows changed; running it again changes nothing.
    async fn qualify_legacy_subjects(&self, issuer: &str) -> Result<u64>;
    /// How many rows [`SubjectStore::qualify_legacy_subjects`] would change.
    async fn count_legacy_subjects(&self) -> Result<u64>;
}

/// Whether a stored owner or user binding name is a bare person subject from before issuers were recorded.
pub fn is_legacy_person_subject(v: &str) -> bool {
    !v.is_empty()
        && kubehero_core::user_name_kind(v) == kubehero_core::UserNameKind::Bare
        && !kubehero_core::is_api_key_id(v)
        && !matches!(v, "anonymous" | "scim" | "local-operator")
}

/// The whole store: every aggregate plus health.
#[async_trait]
pub trait Store:
    ChangeStore
    + SubjectStore
    + ClusterStore
    + AgentStore
    + AccessStore
    + ShareStore
    + LeaseStore
    + PolicyStore
    + BindingStore
    + ApiKeyStore
    + SettingsStore
    + AuditStore
    + SessionStore
    + DeviceStore
    + DirectoryStore
{
    /// A cheap round trip for `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
}

/// Opens the database named by `url` (`sqlite:PATH`, `sqlite::memory:`, `postgres://…`), applies pending
/// migrations, and returns it behind the [`Store`] trait.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_as(url, Open::Serve).await
}

/// How a database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// To serve: created if missing (SQLite), checked for damage (SQLite `PRAGMA quick_check`), migrated.
    Serve,
    /// As it is, for tools that only read (`kubehero audit verify`, `export`): never created, never
    /// migrated; refused unless it is at this binary's schema version.
    Existing,
}

/// Opens `url` as `how` says.
pub async fn open_as(url: &str, how: Open) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open_as(url, how).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open_as(url, how).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL scheme in {:?}: use sqlite:PATH or postgres://USER@HOST:PORT/DB",
            redact_url(url)
        )))
    }
}

/// Hides the password of a `scheme://user:password@host` URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
