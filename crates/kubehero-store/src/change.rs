//! The writes the API makes, as values ([`Change`]), so that a write and its audit rows commit in one
//! transaction ([`ChangeStore::apply`]): a change is never visible without its row, and a row is never
//! written for a change that did not happen. Both backends share the SQL through [`change_store!`].

use crate::agent::{AgentCa, AgentCert, JoinToken};
use crate::{
    ApiKeyRecord, Cluster, DeviceAuthorization, DirectoryGroup, DirectoryUser, MemberChange, Policy, PolicyState,
    Result, SessionRecord, StoredBinding,
};
use async_trait::async_trait;
use kubehero_core::{AuditEvent, SealedRow, Sealer};
use std::sync::Arc;

/// One write.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// `AlreadyExists` if the name is taken.
    CreateCluster(&'a Cluster),
    /// `NotFound` if absent. Revokes the cluster's agent certificates, drops its join tokens and records it as
    /// removed, in the same transaction.
    DeleteCluster {
        name: &'a str,
        at: i64,
    },
    /// A join token for a registered cluster (`NotFound` if it is not).
    IssueJoinToken(&'a JoinToken),
    /// Uses a join token once, before it expires, for its own cluster, and records the certificate issued for
    /// it. `NotFound` for an unknown token, `Conflict` (used, expired, other cluster) otherwise.
    RedeemJoinToken {
        hash: &'a str,
        cert: &'a AgentCert,
        now: i64,
    },
    /// A renewed certificate for a registered cluster (`NotFound` if it is not).
    IssueAgentCert(&'a AgentCert),
    /// A new agent CA (staged: trusted, handed to agents, not yet signing). `AlreadyExists` for a taken id.
    AddAgentCa(&'a AgentCa),
    /// A new elevation request (pending).
    CreateAccessRequest(&'a crate::AccessRequest),
    /// Approves (with the time-bound binding it makes, in the same transaction) or denies a pending request:
    /// `Conflict` if it was decided already (two approvals at once grant once), `NotFound` if there is none.
    DecideAccessRequest {
        id: &'a str,
        approve: bool,
        by: &'a str,
        at: i64,
        comment: Option<&'a str>,
        binding: Option<&'a StoredBinding>,
    },
    /// A new share link.
    CreateShare(&'a crate::Share),
    /// One use of an open share by the subject of `binding`: the use, the binding (which ends with the share)
    /// and its grant row commit together. `Conflict` says why a share cannot be used (`revoked`, `expired`,
    /// `used_up`), `AlreadyExists` that the person holds that binding already.
    AcceptShare {
        share_id: &'a str,
        binding: &'a StoredBinding,
        at: i64,
    },
    /// Ends a share and deletes every binding made from it; gives back how many. `Conflict` if it was revoked.
    RevokeShare {
        id: &'a str,
        by: &'a str,
        at: i64,
    },
    /// Records that a share's time ran out, once (`Conflict` when it already was).
    ExpireShare {
        id: &'a str,
        at: i64,
    },
    /// New break-glass codes.
    CreateBreakglassCodes(&'a [crate::BreakglassCode]),
    /// Uses a code once: the owner binding and the CLI token it gives commit with the use. `Conflict` for a
    /// used or revoked code (two uses at once: one wins).
    UseBreakglass {
        id: &'a str,
        at: i64,
        reason: &'a str,
        from: Option<&'a str>,
        binding: &'a StoredBinding,
        session: &'a SessionRecord,
    },
    /// An owner has seen a use (its banner ends). `Conflict` unless it was used and not yet acknowledged.
    AcknowledgeBreakglass {
        id: &'a str,
        by: &'a str,
        at: i64,
    },
    /// An unused code can no longer be used. `Conflict` if it was used or revoked.
    RevokeBreakglass {
        id: &'a str,
        at: i64,
    },
    /// The first of two approvals (a policy that wants two): recorded, nothing granted. `Conflict` unless the
    /// request is pending with no first approval yet.
    FirstApproval {
        id: &'a str,
        by: &'a str,
    },
    /// A new signing key of KubeHero's OIDC issuer (a rotation). `AlreadyExists` for a taken id.
    AddIssuerKey(&'a crate::agent::IssuerKey),
    /// A staged CA starts signing. `NotFound` unless it exists staged and not retired.
    ActivateAgentCa {
        id: &'a str,
        at: i64,
    },
    /// A CA is no longer trusted. `NotFound` unless it exists and is not retired.
    RetireAgentCa {
        id: &'a str,
        at: i64,
    },
    /// Revokes one certificate of a cluster, or all of them; gives back how many changed.
    RevokeAgentCerts {
        cluster: &'a str,
        serial: Option<&'a str>,
        at: i64,
    },
    /// A new draft and its `create` history row.
    CreatePolicy(&'a Policy),
    /// Edits a draft at `expected_version` (optimistic concurrency); `Conflict` if it changed or is not a draft.
    UpdatePolicy {
        id: &'a str,
        expected_version: i64,
        name: &'a str,
        spec: &'a serde_json::Value,
        actor: &'a str,
        at: i64,
    },
    /// Moves a policy `from` → `to`, with a history row named `action`; `Conflict` if it is not in `from`.
    TransitionPolicy {
        id: &'a str,
        from: PolicyState,
        to: PolicyState,
        action: &'a str,
        actor: &'a str,
        at: i64,
    },
    CreateBinding(&'a StoredBinding),
    DeleteBinding(&'a str),
    CreateApiKey(&'a ApiKeyRecord),
    /// Keeps the first revocation time.
    RevokeApiKey {
        id: &'a str,
        at: i64,
    },
    PutSetting {
        key: &'a str,
        value: &'a serde_json::Value,
        at: i64,
    },
    /// SCIM users (or just-in-time entries); `AlreadyExists` for a taken id or live userName.
    CreateUsers(&'a [DirectoryUser]),
    /// A live user's new state at `expected_version` (when given); gives back the stored user.
    UpdateUser {
        user: &'a DirectoryUser,
        expected_version: Option<i64>,
    },
    /// Tombstones a user and drops their memberships; gives back the user as it was.
    DeleteUser {
        id: &'a str,
        expected_version: Option<i64>,
        at: i64,
    },
    CreateGroup {
        group: &'a DirectoryGroup,
        members: &'a [String],
    },
    /// A group's new state and member change; gives back the stored group.
    UpdateGroup {
        group: &'a DirectoryGroup,
        members: MemberChange<'a>,
        expected_version: Option<i64>,
    },
    /// Gives back the group and its former member ids.
    DeleteGroup {
        id: &'a str,
        expected_version: Option<i64>,
    },
    /// A dashboard session or CLI token.
    CreateSession(&'a SessionRecord),
    /// Keeps the first revocation time; gives back the record.
    RevokeSession {
        id: &'a str,
        at: i64,
    },
    /// Approves (recording who) or denies a pending, unexpired device authorization; gives it back.
    DecideDevice {
        user_code: &'a str,
        approve: bool,
        who: Option<&'a SessionRecord>,
        now: i64,
    },
    /// A new CLI token for an old one, which is revoked in the same transaction.
    RotateCliToken {
        new: &'a SessionRecord,
        old_id: &'a str,
        at: i64,
    },
}

/// What a [`Change`] gives back.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    Done,
    Policy(Policy),
    ApiKey(ApiKeyRecord),
    User(DirectoryUser),
    Group(DirectoryGroup),
    DeletedGroup(DirectoryGroup, Vec<String>),
    Session(SessionRecord),
    Device(DeviceAuthorization),
    Count(u64),
}

/// The audit rows that commit with a change, and what seals them into the chain.
#[derive(Clone, Copy)]
pub struct WithRows<'a> {
    pub events: &'a [AuditEvent],
    pub sealer: &'a Arc<dyn Sealer>,
}

/// Writes as values.
#[async_trait]
pub trait ChangeStore: Send + Sync {
    /// Applies `change` and, in the same transaction, appends `rows` to the audit chain (taking the chain head
    /// like every append). Either both are durable when this returns `Ok`, or neither happened.
    async fn apply(&self, change: Change<'_>, rows: Option<WithRows<'_>>) -> Result<(Changed, Vec<SealedRow>)>;
}

/// `pub fn $name(Changed) -> Result<$ty>`: what a change of one kind gave back (any other `Changed` is a bug,
/// reported as `Corrupt` rather than a panic).
macro_rules! gave_back {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $pat:pat => $out:expr) => {
        $(#[$doc])*
        pub fn $name(changed: Changed) -> Result<$ty> {
            match changed {
                $pat => Ok($out),
                other => Err(crate::StoreError::Corrupt(format!("{}: unexpected {other:?}", stringify!($name)))),
            }
        }
    };
}

gave_back!(
    /// The policy [`Change::UpdatePolicy`] or [`Change::TransitionPolicy`] gave back.
    changed_policy, Policy, Changed::Policy(p) => p
);
gave_back!(
    /// The key [`Change::RevokeApiKey`] gave back.
    changed_api_key, ApiKeyRecord, Changed::ApiKey(k) => k
);
gave_back!(
    /// The user [`Change::UpdateUser`] or [`Change::DeleteUser`] gave back.
    changed_user, DirectoryUser, Changed::User(u) => u
);
gave_back!(
    /// The group [`Change::UpdateGroup`] gave back.
    changed_group, DirectoryGroup, Changed::Group(g) => g
);
gave_back!(
    /// The group and former members [`Change::DeleteGroup`] gave back.
    changed_deleted_group, (DirectoryGroup, Vec<String>), Changed::DeletedGroup(g, members) => (g, members)
);
gave_back!(
    /// The session [`Change::RevokeSession`] gave back.
    changed_session, SessionRecord, Changed::Session(s) => s
);
gave_back!(
    /// How many rows [`Change::RevokeAgentCerts`] changed.
    changed_count, u64, Changed::Count(n) => n
);
gave_back!(
    /// The authorization [`Change::DecideDevice`] gave back.
    changed_device, DeviceAuthorization, Changed::Device(d) => d
);

/// Implements [`ChangeStore`] for a store from `sql_store!`/`audit_store!`; `$conn` is its connection type.
macro_rules! change_store {
    ($store:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl $crate::change::ChangeStore for $store {
            async fn apply(
                &self,
                change: $crate::change::Change<'_>,
                rows: Option<$crate::change::WithRows<'_>>,
            ) -> $crate::Result<($crate::change::Changed, Vec<kubehero_core::SealedRow>)> {
                let mut tx = self.begin().await?;
                let changed = Self::change_on(&mut tx, change).await?;
                let sealed = match rows {
                    Some(r) if !r.events.is_empty() => Self::append_on(&mut tx, r.events, r.sealer).await?,
                    _ => Vec::new(),
                };
                tx.commit().await.map_err(Self::err("commit"))?;
                self.check_after_commit()?;
                Ok((changed, sealed))
            }
        }

        impl $store {
            async fn change_on(
                conn: &mut $conn,
                change: $crate::change::Change<'_>,
            ) -> $crate::Result<$crate::change::Changed> {
                use $crate::change::{Change, Changed};
                match change {
                    Change::CreateCluster(c) => {
                        sqlx::query($crate::sql::INSERT_CLUSTER)
                            .bind(&c.name)
                            .bind(&c.api_server_url)
                            .bind($crate::sql::to_json(&c.labels)?)
                            .bind(&c.created_by)
                            .bind(c.created_at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("cluster {:?}", c.name)))?;
                        // A name registered again after a removal starts as a new, pending cluster.
                        sqlx::query($crate::agent::DELETE_CLUSTER_STATUS)
                            .bind(&c.name)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("cluster {:?}", c.name)))?;
                    }
                    Change::DeleteCluster { name, at } => {
                        let what = format!("cluster {name:?}");
                        Self::delete_on(conn, $crate::sql::DELETE_CLUSTER, name, what.clone()).await?;
                        Self::revoke_certs_on(conn, name, None, at).await?;
                        sqlx::query($crate::agent::DELETE_JOIN_TOKENS)
                            .bind(name)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(what))?;
                        let removed = $crate::agent::ClusterStatus {
                            cluster: name.to_string(),
                            state: $crate::agent::ConnectionState::Removed,
                            since: at,
                            last_seen: None,
                            agent_version: None,
                            kubernetes_version: None,
                            cert_not_after: None,
                            replica: None,
                        };
                        Self::put_status_on(conn, &removed, false).await?;
                    }
                    Change::IssueJoinToken(t) => {
                        Self::cluster_exists_on(conn, &t.cluster).await?;
                        sqlx::query($crate::agent::INSERT_JOIN_TOKEN)
                            .bind(&t.hash)
                            .bind(&t.cluster)
                            .bind(&t.created_by)
                            .bind(t.created_at)
                            .bind(t.expires_at)
                            .bind(t.used_at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("join token for cluster {:?}", t.cluster)))?;
                    }
                    Change::RedeemJoinToken { hash, cert, now } => {
                        let done = sqlx::query($crate::agent::REDEEM_JOIN_TOKEN)
                            .bind(hash)
                            .bind(now)
                            .bind(&cert.cluster)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err("join token"))?;
                        if done.rows_affected() != 1 {
                            let found: Option<$crate::agent::TokenRow> = sqlx::query_as($crate::agent::FIND_JOIN_TOKEN)
                                .bind(hash)
                                .fetch_optional(&mut *conn)
                                .await
                                .map_err(Self::err("join token"))?;
                            let found = found.map($crate::agent::token_from_row);
                            return Err($crate::agent::unredeemable(found, &cert.cluster, now));
                        }
                        Self::cluster_exists_on(conn, &cert.cluster).await?;
                        Self::insert_cert_on(conn, cert).await?;
                    }
                    Change::IssueAgentCert(cert) => {
                        Self::cluster_exists_on(conn, &cert.cluster).await?;
                        Self::insert_cert_on(conn, cert).await?;
                    }
                    Change::AddAgentCa(ca) => Self::insert_ca_on(conn, ca).await?,
                    Change::AddIssuerKey(key) => Self::insert_issuer_key_on(conn, key).await?,
                    Change::ActivateAgentCa { id, at } | Change::RetireAgentCa { id, at } => {
                        let sql = if matches!(change, Change::ActivateAgentCa { .. }) {
                            $crate::agent::ACTIVATE_AGENT_CA
                        } else {
                            $crate::agent::RETIRE_AGENT_CA
                        };
                        let what = format!("agent CA {id:?}");
                        let done = sqlx::query(sql)
                            .bind(id)
                            .bind(at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(what.clone()))?;
                        if done.rows_affected() != 1 {
                            return Err($crate::StoreError::NotFound(format!("{what} (staged and not retired)")));
                        }
                    }
                    Change::RevokeAgentCerts { cluster, serial, at } => {
                        return Ok(Changed::Count(Self::revoke_certs_on(conn, cluster, serial, at).await?));
                    }
                    Change::CreatePolicy(p) => {
                        let what = format!("policy {:?} (or name {:?} in cluster {:?})", p.id, p.name, p.cluster);
                        let spec = $crate::sql::to_json(&p.spec)?;
                        sqlx::query($crate::sql::INSERT_POLICY)
                            .bind(&p.id)
                            .bind(&p.name)
                            .bind(&p.cluster)
                            .bind(&p.namespace)
                            .bind(&p.owner)
                            .bind(&spec)
                            .bind(p.state.as_str())
                            .bind(1_i64)
                            .bind(p.created_at)
                            .bind(p.updated_at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(what.clone()))?;
                        sqlx::query($crate::sql::INSERT_TRANSITION)
                            .bind(&p.id)
                            .bind("create")
                            .bind(None::<String>)
                            .bind(p.state.as_str())
                            .bind(1_i64)
                            .bind(&spec)
                            .bind(&p.owner)
                            .bind(p.created_at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(what))?;
                    }
                    Change::UpdatePolicy { id, expected_version, name, spec, actor, at } => {
                        let what = format!("policy {id:?}");
                        let spec_text = $crate::sql::to_json(spec)?;
                        // The UPDATE comes first so that it takes the row (PostgreSQL) or database (SQLite)
                        // write lock before anything is read.
                        let row: Option<$crate::sql::PolicyRow> = sqlx::query_as(&$crate::sql::update_policy_sql())
                            .bind(name)
                            .bind(&spec_text)
                            .bind(at)
                            .bind(id)
                            .bind(expected_version)
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(Self::err(format!("{what} (or its new name {name:?})")))?;
                        let Some(row) = row else {
                            let found = Self::policy_state_on(conn, id).await?;
                            return Err(match found {
                                None => $crate::StoreError::NotFound(what),
                                Some((state, _)) if state != "draft" => $crate::StoreError::Conflict(format!(
                                    "{what} is {state}; only a draft can be edited (disarm it first)"
                                )),
                                Some((_, version)) => $crate::StoreError::Conflict(format!(
                                    "{what} is at version {version}, not {expected_version}: it changed since it \
                                     was read; fetch it again and retry"
                                )),
                            });
                        };
                        let policy = $crate::sql::policy_from_row(row)?;
                        Self::history_on(conn, &policy, "update", Some(policy.state), &spec_text, actor, at).await?;
                        return Ok(Changed::Policy(policy));
                    }
                    Change::TransitionPolicy { id, from, to, action, actor, at } => {
                        let what = format!("policy {id:?}");
                        let row: Option<$crate::sql::PolicyRow> = sqlx::query_as(&$crate::sql::transition_policy_sql())
                            .bind(to.as_str())
                            .bind(at)
                            .bind(id)
                            .bind(from.as_str())
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(Self::err(what.clone()))?;
                        let Some(row) = row else {
                            return Err(match Self::policy_state_on(conn, id).await? {
                                None => $crate::StoreError::NotFound(what),
                                Some((state, _)) => $crate::StoreError::Conflict(format!(
                                    "{what} is {state}, not {}: cannot {action} it",
                                    from.as_str()
                                )),
                            });
                        };
                        let policy = $crate::sql::policy_from_row(row)?;
                        let spec = $crate::sql::to_json(&policy.spec)?;
                        Self::history_on(conn, &policy, action, Some(from), &spec, actor, at).await?;
                        return Ok(Changed::Policy(policy));
                    }
                    Change::CreateBinding(b) => Self::insert_binding_on(conn, b).await?,
                    Change::CreateAccessRequest(r) => {
                        sqlx::query($crate::access::INSERT)
                            .bind(&r.id)
                            .bind(&r.requester)
                            .bind(&r.requester_email)
                            .bind(&r.cluster)
                            .bind(&r.namespace)
                            .bind(&r.role)
                            .bind(r.duration_secs)
                            .bind(&r.reason)
                            .bind(r.created_at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("access request {:?}", r.id)))?;
                    }
                    Change::FirstApproval { id, by } => {
                        let done = sqlx::query($crate::access::FIRST_APPROVAL)
                            .bind(id)
                            .bind(by)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("access request {id:?}")))?;
                        if done.rows_affected() != 1 {
                            return Err(Self::undecidable_on(conn, id).await?);
                        }
                    }
                    Change::DecideAccessRequest { id, approve, by, at, comment, binding } => {
                        let done = sqlx::query($crate::access::DECIDE)
                            .bind(id)
                            .bind(if approve { "approved" } else { "denied" })
                            .bind(by)
                            .bind(at)
                            .bind(comment)
                            .bind(binding.map(|b| b.id.as_str()))
                            .bind(binding.and_then(|b| b.expires_at))
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("access request {id:?}")))?;
                        if done.rows_affected() != 1 {
                            return Err(Self::undecidable_on(conn, id).await?);
                        }
                        if let Some(b) = binding {
                            Self::insert_binding_on(conn, b).await?;
                        }
                    }
                    Change::CreateShare(share) => {
                        sqlx::query($crate::shares::INSERT_SHARE)
                            .bind(&share.id)
                            .bind(&share.token_hash)
                            .bind(&share.cluster)
                            .bind(&share.namespace)
                            .bind(&share.role)
                            .bind(&share.created_by)
                            .bind(&share.created_by_email)
                            .bind(share.created_at)
                            .bind(share.expires_at)
                            .bind(share.max_uses)
                            .bind($crate::sql::to_json(&share.recipients)?)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("share {:?}", share.id)))?;
                    }
                    Change::AcceptShare { share_id, binding, at } => {
                        Self::share_update_on(conn, $crate::shares::USE_SHARE, share_id, at, None).await?;
                        Self::insert_binding_on(conn, binding).await?;
                        let subject = $crate::sql::subject_parts(&binding.binding.subject).1;
                        sqlx::query($crate::shares::INSERT_SHARE_GRANT)
                            .bind(share_id)
                            .bind(&binding.id)
                            .bind(subject)
                            .bind(at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("grant of share {share_id:?}")))?;
                    }
                    Change::RevokeShare { id, by, at } => {
                        Self::share_update_on(conn, $crate::shares::REVOKE_SHARE, id, at, Some(by)).await?;
                        let done = sqlx::query($crate::shares::DELETE_SHARE_BINDINGS)
                            .bind(id)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("bindings of share {id:?}")))?;
                        return Ok(Changed::Count(done.rows_affected()));
                    }
                    Change::ExpireShare { id, at } => {
                        let done = sqlx::query($crate::shares::EXPIRE_SHARE)
                            .bind(id)
                            .bind(at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("share {id:?}")))?;
                        if done.rows_affected() != 1 {
                            return Err($crate::StoreError::Conflict(format!(
                                "share {id:?} was already recorded as expired"
                            )));
                        }
                    }
                    Change::CreateBreakglassCodes(codes) => {
                        for c in codes {
                            sqlx::query($crate::shares::INSERT_CODE)
                                .bind(&c.id)
                                .bind(&c.code_hash)
                                .bind(&c.cluster)
                                .bind(c.ttl_secs)
                                .bind(&c.created_by)
                                .bind(c.created_at)
                                .execute(&mut *conn)
                                .await
                                // Never name the hash: it identifies the secret.
                                .map_err(Self::err(format!("break-glass code {:?}", c.id)))?;
                        }
                    }
                    Change::UseBreakglass { id, at, reason, from, binding, session } => {
                        let done = sqlx::query($crate::shares::USE_CODE)
                            .bind(id)
                            .bind(at)
                            .bind(reason)
                            .bind(from)
                            .bind(&binding.id)
                            .bind(&session.id)
                            .bind(binding.expires_at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("break-glass code {id:?}")))?;
                        Self::code_changed_on(conn, done.rows_affected(), id).await?;
                        Self::insert_binding_on(conn, binding).await?;
                        Self::insert_session_on(conn, session).await?;
                    }
                    Change::AcknowledgeBreakglass { id, by, at } => {
                        let done = sqlx::query($crate::shares::ACKNOWLEDGE_CODE)
                            .bind(id)
                            .bind(at)
                            .bind(by)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("break-glass code {id:?}")))?;
                        Self::code_changed_on(conn, done.rows_affected(), id).await?;
                    }
                    Change::RevokeBreakglass { id, at } => {
                        let done = sqlx::query($crate::shares::REVOKE_CODE)
                            .bind(id)
                            .bind(at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("break-glass code {id:?}")))?;
                        Self::code_changed_on(conn, done.rows_affected(), id).await?;
                    }
                    Change::DeleteBinding(id) => {
                        Self::delete_on(conn, $crate::sql::DELETE_BINDING, id, format!("role binding {id:?}")).await?
                    }
                    Change::CreateApiKey(k) => {
                        sqlx::query($crate::sql::INSERT_API_KEY)
                            .bind(&k.id)
                            .bind(&k.hash)
                            .bind(&k.name)
                            .bind(k.role.as_str())
                            .bind(&k.owner)
                            .bind(k.created_at)
                            .bind(k.expires_at)
                            .bind(k.revoked_at)
                            .execute(&mut *conn)
                            .await
                            // Never name the hash: it identifies the secret.
                            .map_err(Self::err(format!("API key {:?}", k.id)))?;
                    }
                    Change::RevokeApiKey { id, at } => {
                        let row: $crate::sql::ApiKeyRow = sqlx::query_as(&$crate::sql::revoke_api_key_sql())
                            .bind(at)
                            .bind(id)
                            .fetch_one(&mut *conn)
                            .await
                            .map_err(Self::err(format!("API key {id:?}")))?;
                        return Ok(Changed::ApiKey($crate::sql::api_key_from_row(row)?));
                    }
                    Change::CreateUsers(users) => Self::dir_create_users_on(conn, users).await?,
                    Change::UpdateUser { user, expected_version } => {
                        return Ok(Changed::User(Self::dir_update_user_on(conn, user, expected_version).await?));
                    }
                    Change::DeleteUser { id, expected_version, at } => {
                        return Ok(Changed::User(Self::dir_delete_user_on(conn, id, expected_version, at).await?));
                    }
                    Change::CreateGroup { group, members } => Self::dir_create_group_on(conn, group, members).await?,
                    Change::UpdateGroup { group, members, expected_version } => {
                        let g = Self::dir_update_group_on(conn, group, members, expected_version).await?;
                        return Ok(Changed::Group(g));
                    }
                    Change::DeleteGroup { id, expected_version } => {
                        let (g, members) = Self::dir_delete_group_on(conn, id, expected_version).await?;
                        return Ok(Changed::DeletedGroup(g, members));
                    }
                    Change::CreateSession(s) => Self::insert_session_on(conn, s).await?,
                    Change::RevokeSession { id, at } => {
                        return Ok(Changed::Session(Self::revoke_session_on(conn, id, at).await?));
                    }
                    Change::DecideDevice { user_code, approve, who, now } => {
                        let d = Self::decide_device_on(conn, user_code, approve, who, now).await?;
                        return Ok(Changed::Device(d));
                    }
                    Change::RotateCliToken { new, old_id, at } => {
                        Self::insert_session_on(conn, new).await?;
                        Self::revoke_session_on(conn, old_id, at).await?;
                    }
                    Change::PutSetting { key, value, at } => {
                        sqlx::query($crate::sql::PUT_SETTING)
                            .bind(key)
                            .bind($crate::sql::to_json(value)?)
                            .bind(at)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err(format!("setting {key:?}")))?;
                    }
                }
                Ok(Changed::Done)
            }

            async fn insert_session_on(conn: &mut $conn, s: &$crate::SessionRecord) -> $crate::Result<()> {
                sqlx::query($crate::session::INSERT_SESSION)
                    .bind(&s.id)
                    .bind(&s.hash)
                    .bind(s.kind.as_str())
                    .bind(&s.sub)
                    .bind(&s.email)
                    .bind($crate::sql::to_json(&s.groups)?)
                    .bind(&s.issuer)
                    .bind(&s.csrf)
                    .bind(s.created_at)
                    .bind(s.last_seen_at)
                    .bind(s.expires_at)
                    .bind(s.absolute_expires_at)
                    .bind(s.revoked_at)
                    .bind(&s.user_agent)
                    .execute(&mut *conn)
                    .await
                    // Never name the hash: it identifies the secret.
                    .map_err(Self::err(format!("session {:?}", s.id)))?;
                Ok(())
            }

            async fn revoke_session_on(conn: &mut $conn, id: &str, at: i64) -> $crate::Result<$crate::SessionRecord> {
                let row: $crate::session::SessionRow = sqlx::query_as(&$crate::session::revoke_session_sql())
                    .bind(at)
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(Self::err(format!("session {id:?}")))?;
                $crate::session::session_from_row(row)
            }

            /// Why a decision did not apply to access request `id`.
            async fn undecidable_on(conn: &mut $conn, id: &str) -> $crate::Result<$crate::StoreError> {
                let found: Option<$crate::access::RequestRow> = sqlx::query_as(&$crate::access::get_sql())
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Self::err(format!("access request {id:?}")))?;
                Ok($crate::access::undecidable(found.map($crate::access::from_row), id))
            }

            /// Uses or revokes a share (`$1` id, `$2` at, `$3` by when given); when the conditional update matched
            /// nothing, says why from the share's state.
            async fn share_update_on(
                conn: &mut $conn,
                sql: &'static str,
                id: &str,
                at: i64,
                by: Option<&str>,
            ) -> $crate::Result<()> {
                let mut q = sqlx::query(sql).bind(id).bind(at);
                if let Some(by) = by {
                    q = q.bind(by);
                }
                let done = q.execute(&mut *conn).await.map_err(Self::err(format!("share {id:?}")))?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                let row: Option<$crate::shares::ShareRow> = sqlx::query_as(&$crate::shares::get_share_sql("id"))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Self::err(format!("share {id:?}")))?;
                let found = row.map($crate::shares::share_from_row).transpose()?;
                Err($crate::shares::share_refusal(found, id, at))
            }

            /// `Ok` when a break-glass code's conditional update matched its row; else why not.
            async fn code_changed_on(conn: &mut $conn, rows: u64, id: &str) -> $crate::Result<()> {
                if rows == 1 {
                    return Ok(());
                }
                let row: Option<$crate::shares::CodeRow> = sqlx::query_as(&$crate::shares::find_code_sql("id"))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Self::err(format!("break-glass code {id:?}")))?;
                Err($crate::shares::code_refusal(row.map($crate::shares::code_from_row), id))
            }

            /// Runs a `DELETE … WHERE key = $1`; `NotFound(what)` when no row matched.
            async fn delete_on(conn: &mut $conn, sql: &'static str, key: &str, what: String) -> $crate::Result<()> {
                let done = sqlx::query(sql).bind(key).execute(&mut *conn).await.map_err(Self::err(what.clone()))?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound(what));
                }
                Ok(())
            }

            /// `NotFound("cluster …")` unless the cluster is registered.
            async fn cluster_exists_on(conn: &mut $conn, name: &str) -> $crate::Result<()> {
                let n: i64 = sqlx::query_scalar($crate::agent::CLUSTER_EXISTS)
                    .bind(name)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(Self::err(format!("cluster {name:?}")))?;
                if n == 0 {
                    return Err($crate::StoreError::NotFound(format!("cluster {name:?}")));
                }
                Ok(())
            }

            async fn insert_ca_on(conn: &mut $conn, ca: &$crate::agent::AgentCa) -> $crate::Result<()> {
                sqlx::query($crate::agent::INSERT_AGENT_CA)
                    .bind(&ca.id)
                    .bind(&ca.cert_pem)
                    .bind(&ca.sealed_key)
                    .bind(ca.created_at)
                    .bind(ca.activated_at)
                    .bind(ca.retired_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(format!("agent CA {:?}", ca.id)))?;
                Ok(())
            }

            async fn insert_binding_on(conn: &mut $conn, b: &$crate::StoredBinding) -> $crate::Result<()> {
                let (kind, subject) = $crate::sql::subject_parts(&b.binding.subject);
                sqlx::query($crate::sql::INSERT_BINDING)
                    .bind(&b.id)
                    .bind(kind)
                    .bind(subject)
                    .bind(b.binding.role.as_str())
                    .bind(b.binding.scope.cluster())
                    .bind(b.binding.scope.namespace())
                    .bind(&b.created_by)
                    .bind(b.created_at)
                    .bind(b.expires_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(format!(
                        "role binding {:?} (or the same {kind} {subject:?} → {} binding)",
                        b.id, b.binding.role
                    )))?;
                Ok(())
            }

            async fn insert_issuer_key_on(conn: &mut $conn, key: &$crate::agent::IssuerKey) -> $crate::Result<()> {
                sqlx::query($crate::agent::INSERT_ISSUER_KEY)
                    .bind(&key.id)
                    .bind(&key.alg)
                    .bind(&key.public_jwk)
                    .bind(&key.sealed_key)
                    .bind(key.created_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(format!("issuer key {:?}", key.id)))?;
                Ok(())
            }

            async fn insert_cert_on(conn: &mut $conn, cert: &$crate::agent::AgentCert) -> $crate::Result<()> {
                sqlx::query($crate::agent::INSERT_AGENT_CERT)
                    .bind(&cert.serial)
                    .bind(&cert.cluster)
                    .bind(cert.issued_at)
                    .bind(cert.not_after)
                    .bind(cert.revoked_at)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(format!("agent certificate {:?}", cert.serial)))?;
                Ok(())
            }

            async fn revoke_certs_on(
                conn: &mut $conn,
                cluster: &str,
                serial: Option<&str>,
                at: i64,
            ) -> $crate::Result<u64> {
                let done = sqlx::query($crate::agent::REVOKE_AGENT_CERTS)
                    .bind(cluster)
                    .bind(at)
                    .bind(serial)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(format!("agent certificates of cluster {cluster:?}")))?;
                Ok(done.rows_affected())
            }

            /// Upserts a cluster's state; with `registered_only`, only while the cluster is registered.
            async fn put_status_on(
                conn: &mut $conn,
                s: &$crate::agent::ClusterStatus,
                registered_only: bool,
            ) -> $crate::Result<bool> {
                let done = sqlx::query($crate::agent::PUT_CLUSTER_STATUS)
                    .bind(&s.cluster)
                    .bind(s.state.as_str())
                    .bind(s.since)
                    .bind(s.last_seen)
                    .bind(&s.agent_version)
                    .bind(&s.kubernetes_version)
                    .bind(s.cert_not_after)
                    .bind(registered_only)
                    .bind(&s.replica)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(format!("state of cluster {:?}", s.cluster)))?;
                Ok(done.rows_affected() > 0)
            }

            async fn policy_state_on(conn: &mut $conn, id: &str) -> $crate::Result<Option<(String, i64)>> {
                sqlx::query_as($crate::sql::POLICY_STATE_VERSION)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Self::err(format!("policy {id:?}")))
            }

            async fn history_on(
                conn: &mut $conn,
                policy: &$crate::Policy,
                action: &str,
                from: Option<$crate::PolicyState>,
                spec: &str,
                actor: &str,
                at: i64,
            ) -> $crate::Result<()> {
                sqlx::query($crate::sql::INSERT_TRANSITION)
                    .bind(&policy.id)
                    .bind(action)
                    .bind(from.map(|f| f.as_str()))
                    .bind(policy.state.as_str())
                    .bind(policy.version)
                    .bind(spec)
                    .bind(actor)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err(format!("policy {:?}", policy.id)))?;
                Ok(())
            }

            /// The chain head, locked (`FOR UPDATE` on PostgreSQL; SQLite's write transaction holds the
            /// database), `events` sealed after it, inserted, and the head moved: [`crate::AuditStore::append_audit`]
            /// inside a caller's transaction.
            async fn append_on(
                conn: &mut $conn,
                events: &[kubehero_core::AuditEvent],
                sealer: &std::sync::Arc<dyn kubehero_core::Sealer>,
            ) -> $crate::Result<Vec<kubehero_core::SealedRow>> {
                let (mut seq, mut mac): (i64, String) = sqlx::query_as($crate::audit::head_sql(Self::BACKEND))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(Self::err("audit head"))?;
                let mut sealed = Vec::with_capacity(events.len());
                for event in events {
                    seq += 1;
                    let row = sealer.seal(seq, &mac, event);
                    mac.clone_from(&row.mac);
                    sealed.push(row);
                }
                // One statement per chunk, not per row: the per-statement cost, not the flush, bounds a batch.
                Self::insert_audit_rows(conn, &sealed).await?;
                sqlx::query($crate::audit::SET_HEAD)
                    .bind(seq)
                    .bind(&mac)
                    .execute(&mut *conn)
                    .await
                    .map_err(Self::err("audit head"))?;
                Ok(sealed)
            }
        }
    };
}
pub(crate) use change_store;
