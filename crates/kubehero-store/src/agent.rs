//! Cluster agents: the agent CA, one-time join tokens, issued client certificates and each cluster's
//! connection state. Shared by both backends through [`agent_store!`]; the writes that carry an audit row are
//! [`crate::Change`]s (join token issued, token redeemed with its certificate, renewal, revocation).
//!
//! Errors never name a join token's hash: it identifies the secret.

use crate::{Result, StoreError};
use serde::{Deserialize, Serialize};

/// A CA that signs agent client certificates. Its private key is stored sealed by the caller; the store never
/// sees it in the clear.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCa {
    pub id: String,
    pub cert_pem: String,
    #[serde(skip_serializing)]
    pub sealed_key: String,
    pub created_at: i64,
    /// `None` while staged: trusted and handed to agents at renewal, not yet signing. The most recently
    /// activated CA that is not retired signs agent certificates and the agent listener's certificate.
    pub activated_at: Option<i64>,
    /// Set when the CA is dropped: no longer trusted.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for AgentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCa")
            .field("id", &self.id)
            .field("activated_at", &self.activated_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A signing key of KubeHero's own OIDC issuer. Its private key is stored sealed by the caller.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerKey {
    /// The JWK `kid`.
    pub id: String,
    /// The JWS algorithm (`ES256`).
    pub alg: String,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    #[serde(skip_serializing)]
    pub sealed_key: String,
    pub created_at: i64,
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKey")
            .field("id", &self.id)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A one-time join token (`khj_…`) for one cluster: only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    #[serde(skip_serializing)]
    pub hash: String,
    pub cluster: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// A client certificate issued to a cluster's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCert {
    /// Lowercase hex of the certificate's serial number.
    pub serial: String,
    pub cluster: String,
    pub issued_at: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
}

/// A cluster's connection state as the control plane last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Connected,
    Disconnected,
    Removed,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Removed => "removed",
        }
    }
    pub fn parse(s: &str) -> Option<ConnectionState> {
        match s {
            "connected" => Some(ConnectionState::Connected),
            "disconnected" => Some(ConnectionState::Disconnected),
            "removed" => Some(ConnectionState::Removed),
            _ => None,
        }
    }
}

/// One cluster's connection state. A registered cluster without a row has never connected (`pending`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub state: ConnectionState,
    /// When the state began.
    pub since: i64,
    pub last_seen: Option<i64>,
    pub agent_version: Option<String>,
    pub kubernetes_version: Option<String>,
    pub cert_not_after: Option<i64>,
    /// Where the replica holding the tunnel is reached by the others (its `KUBEHERO_PEER_URL`), while connected.
    pub replica: Option<String>,
}

/// The agent tables outside of [`crate::Change`]s.
#[async_trait::async_trait]
pub trait AgentStore: Send + Sync {
    /// Every agent CA, oldest first.
    async fn agent_cas(&self) -> Result<Vec<AgentCa>>;
    /// The first CA, made at start-up (not a [`crate::Change`]: no one asked for it). `AlreadyExists` if the id
    /// is taken (another replica created it first).
    async fn insert_agent_ca(&self, ca: &AgentCa) -> Result<()>;
    /// Every issuer signing key, oldest first.
    async fn issuer_keys(&self) -> Result<Vec<IssuerKey>>;
    /// The first issuer key, made at start-up (not a [`crate::Change`]: no one asked for it; a rotation is
    /// [`crate::Change::AddIssuerKey`]). `AlreadyExists` if the id is taken.
    async fn insert_issuer_key(&self, key: &IssuerKey) -> Result<()>;
    /// The join token with this hash, whatever its state.
    async fn find_join_token(&self, hash: &str) -> Result<Option<JoinToken>>;
    /// Serials revoked and not yet expired at `now`.
    async fn revoked_agent_serials(&self, now: i64) -> Result<Vec<String>>;
    /// Certificates issued to one cluster (or all), newest first.
    async fn agent_certs(&self, cluster: Option<&str>) -> Result<Vec<AgentCert>>;
    /// Every cluster's last known state.
    async fn cluster_statuses(&self) -> Result<Vec<ClusterStatus>>;
    /// One cluster's last known state (`None`: it never connected, or is unknown).
    async fn cluster_status(&self, cluster: &str) -> Result<Option<ClusterStatus>>;
    /// Writes a cluster's state, unless the cluster is no longer registered (a late disconnect of a removed
    /// cluster must not hide that it was removed), and unless it is a disconnect by a replica other than the
    /// one whose tunnel the row names (the agent moved on). True when written.
    async fn put_cluster_status(&self, status: &ClusterStatus) -> Result<bool>;
    /// Marks every cluster still shown as connected to `replica` disconnected at `at`: a replica that starts holds
    /// no tunnel, whatever its previous run (killed without writing its disconnects) left behind.
    async fn disconnect_replica(&self, replica: &str, at: i64) -> Result<u64>;
    /// Records that these clusters, connected to `replica`, were seen at `at`.
    async fn touch_clusters(&self, clusters: &[String], replica: Option<&str>, at: i64) -> Result<()>;
}

pub(crate) type CaRow = (String, String, String, i64, Option<i64>, Option<i64>);
pub(crate) type TokenRow = (String, String, String, i64, i64, Option<i64>);
pub(crate) type CertRow = (String, String, i64, i64, Option<i64>);
pub(crate) type StatusRow =
    (String, String, i64, Option<i64>, Option<String>, Option<String>, Option<i64>, Option<String>);

pub(crate) const AGENT_CAS: &str = "SELECT id, cert_pem, sealed_key, created_at, activated_at, retired_at \
     FROM agent_cas ORDER BY created_at, id";
pub(crate) const INSERT_AGENT_CA: &str = "INSERT INTO agent_cas \
     (id, cert_pem, sealed_key, created_at, activated_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6)";
/// `$1` id, `$2` at: a staged, not retired CA starts signing.
pub(crate) const ACTIVATE_AGENT_CA: &str =
    "UPDATE agent_cas SET activated_at = $2 WHERE id = $1 AND activated_at IS NULL AND retired_at IS NULL";
/// `$1` id, `$2` at.
pub(crate) const RETIRE_AGENT_CA: &str = "UPDATE agent_cas SET retired_at = $2 WHERE id = $1 AND retired_at IS NULL";
pub(crate) const ISSUER_KEYS: &str =
    "SELECT id, alg, public_jwk, sealed_key, created_at FROM issuer_keys ORDER BY created_at, id";
pub(crate) const INSERT_ISSUER_KEY: &str =
    "INSERT INTO issuer_keys (id, alg, public_jwk, sealed_key, created_at) VALUES ($1, $2, $3, $4, $5)";
pub(crate) type IssuerKeyRow = (String, String, String, String, i64);
pub(crate) const FIND_JOIN_TOKEN: &str =
    "SELECT hash, cluster, created_by, created_at, expires_at, used_at FROM agent_join_tokens WHERE hash = $1";
pub(crate) const INSERT_JOIN_TOKEN: &str = "INSERT INTO agent_join_tokens \
     (hash, cluster, created_by, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6)";
/// `$1` hash, `$2` now, `$3` cluster: uses the token once, only before it expires, only for its cluster.
pub(crate) const REDEEM_JOIN_TOKEN: &str = "UPDATE agent_join_tokens SET used_at = $2 \
     WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 AND cluster = $3";
pub(crate) const DELETE_JOIN_TOKENS: &str = "DELETE FROM agent_join_tokens WHERE cluster = $1";
pub(crate) const CLUSTER_EXISTS: &str = "SELECT COUNT(*) FROM clusters WHERE name = $1";
pub(crate) const INSERT_AGENT_CERT: &str =
    "INSERT INTO agent_certs (serial, cluster, issued_at, not_after, revoked_at) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const REVOKED_SERIALS: &str =
    "SELECT serial FROM agent_certs WHERE revoked_at IS NOT NULL AND not_after > $1";
pub(crate) fn agent_certs_sql(one_cluster: bool) -> String {
    let filter = if one_cluster { " WHERE cluster = $1" } else { "" };
    format!(
        "SELECT serial, cluster, issued_at, not_after, revoked_at FROM agent_certs{filter} \
         ORDER BY issued_at DESC, serial"
    )
}
/// `$1` cluster, `$2` at, `$3` one serial or NULL for all of the cluster's certificates.
pub(crate) const REVOKE_AGENT_CERTS: &str = "UPDATE agent_certs SET revoked_at = $2 \
     WHERE cluster = $1 AND revoked_at IS NULL AND ($3 IS NULL OR serial = $3)";
pub(crate) const CLUSTER_STATUSES: &str = "SELECT cluster, state, since, last_seen, agent_version, \
     kubernetes_version, cert_not_after, replica FROM cluster_status ORDER BY cluster";
pub(crate) const CLUSTER_STATUS: &str = "SELECT cluster, state, since, last_seen, agent_version, \
     kubernetes_version, cert_not_after, replica FROM cluster_status WHERE cluster = $1";
/// Upserts a status row; `$8` is whether the cluster must still be registered for the write to happen. A
/// disconnect from one replica leaves a row that another replica's tunnel wrote since.
pub(crate) const PUT_CLUSTER_STATUS: &str = "INSERT INTO cluster_status \
     (cluster, state, since, last_seen, agent_version, kubernetes_version, cert_not_after, replica) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $9 WHERE NOT $8 OR EXISTS (SELECT 1 FROM clusters WHERE name = $1) \
     ON CONFLICT (cluster) DO UPDATE SET state = excluded.state, since = excluded.since, \
     last_seen = excluded.last_seen, agent_version = excluded.agent_version, \
     kubernetes_version = excluded.kubernetes_version, cert_not_after = excluded.cert_not_after, \
     replica = excluded.replica \
     WHERE excluded.state <> 'disconnected' OR cluster_status.state <> 'connected' \
     OR cluster_status.replica IS NULL OR excluded.replica IS NULL OR cluster_status.replica = excluded.replica";
pub(crate) const DELETE_CLUSTER_STATUS: &str = "DELETE FROM cluster_status WHERE cluster = $1";
pub(crate) const DISCONNECT_REPLICA: &str = "UPDATE cluster_status SET state = 'disconnected', since = $2 \
     WHERE replica = $1 AND state = 'connected'";
/// `$3` the replica that holds the tunnel (a row another replica has taken since is left alone).
pub(crate) const TOUCH_CLUSTER: &str = "UPDATE cluster_status SET last_seen = $2 WHERE cluster = $1 \
     AND state = 'connected' AND ($3 IS NULL OR replica IS NULL OR replica = $3)";

pub(crate) fn ca_from_row((id, cert_pem, sealed_key, created_at, activated_at, retired_at): CaRow) -> AgentCa {
    AgentCa { id, cert_pem, sealed_key, created_at, activated_at, retired_at }
}

pub(crate) fn token_from_row((hash, cluster, created_by, created_at, expires_at, used_at): TokenRow) -> JoinToken {
    JoinToken { hash, cluster, created_by, created_at, expires_at, used_at }
}

pub(crate) fn cert_from_row((serial, cluster, issued_at, not_after, revoked_at): CertRow) -> AgentCert {
    AgentCert { serial, cluster, issued_at, not_after, revoked_at }
}

pub(crate) fn status_from_row(row: StatusRow) -> Result<ClusterStatus> {
    let (cluster, state, since, last_seen, agent_version, kubernetes_version, cert_not_after, replica) = row;
    let state = ConnectionState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("cluster {cluster:?} has connection state {state:?}")))?;
    Ok(ClusterStatus { cluster, state, since, last_seen, agent_version, kubernetes_version, cert_not_after, replica })
}

/// Why a join token could not be redeemed for `cluster` at `now`; `token` is what [`FIND_JOIN_TOKEN`] found.
/// A token for another cluster is named only as "not for this cluster".
pub(crate) fn unredeemable(token: Option<JoinToken>, cluster: &str, now: i64) -> StoreError {
    match token {
        None => StoreError::NotFound("join token".into()),
        Some(t) if t.cluster != cluster => {
            StoreError::Conflict(format!("the join token is not for cluster {cluster:?}"))
        }
        Some(t) if t.used_at.is_some() => StoreError::Conflict("the join token was already used".into()),
        Some(t) if t.expires_at <= now => StoreError::Conflict("the join token has expired".into()),
        Some(_) => StoreError::Conflict("the join token changed concurrently; try again".into()),
    }
}

/// Implements [`AgentStore`] for a store with a `pool` field and `err()` (from `sql_store!`).
macro_rules! agent_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::agent::AgentStore for $store {
            async fn agent_cas(&self) -> $crate::Result<Vec<$crate::agent::AgentCa>> {
                let rows: Vec<$crate::agent::CaRow> = sqlx::query_as($crate::agent::AGENT_CAS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("agent CAs"))?;
                Ok(rows.into_iter().map($crate::agent::ca_from_row).collect())
            }

            async fn insert_agent_ca(&self, ca: &$crate::agent::AgentCa) -> $crate::Result<()> {
                let mut conn = self.pool.acquire().await.map_err(Self::err("agent CA"))?;
                Self::insert_ca_on(&mut *conn, ca).await
            }

            async fn issuer_keys(&self) -> $crate::Result<Vec<$crate::agent::IssuerKey>> {
                let rows: Vec<$crate::agent::IssuerKeyRow> = sqlx::query_as($crate::agent::ISSUER_KEYS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("issuer keys"))?;
                Ok(rows
                    .into_iter()
                    .map(|(id, alg, public_jwk, sealed_key, created_at)| $crate::agent::IssuerKey {
                        id,
                        alg,
                        public_jwk,
                        sealed_key,
                        created_at,
                    })
                    .collect())
            }

            async fn insert_issuer_key(&self, key: &$crate::agent::IssuerKey) -> $crate::Result<()> {
                let mut conn = self.pool.acquire().await.map_err(Self::err("issuer key"))?;
                Self::insert_issuer_key_on(&mut *conn, key).await
            }

            async fn find_join_token(&self, hash: &str) -> $crate::Result<Option<$crate::agent::JoinToken>> {
                let row: Option<$crate::agent::TokenRow> = sqlx::query_as($crate::agent::FIND_JOIN_TOKEN)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err("join token"))?;
                Ok(row.map($crate::agent::token_from_row))
            }

            async fn revoked_agent_serials(&self, now: i64) -> $crate::Result<Vec<String>> {
                sqlx::query_scalar($crate::agent::REVOKED_SERIALS)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("revoked agent certificates"))
            }

            async fn agent_certs(&self, cluster: Option<&str>) -> $crate::Result<Vec<$crate::agent::AgentCert>> {
                let sql = $crate::agent::agent_certs_sql(cluster.is_some());
                let mut q = sqlx::query_as::<_, $crate::agent::CertRow>(&sql);
                if let Some(c) = cluster {
                    q = q.bind(c);
                }
                let rows = q.fetch_all(&self.pool).await.map_err(Self::err("agent certificates"))?;
                Ok(rows.into_iter().map($crate::agent::cert_from_row).collect())
            }

            async fn cluster_statuses(&self) -> $crate::Result<Vec<$crate::agent::ClusterStatus>> {
                let rows: Vec<$crate::agent::StatusRow> = sqlx::query_as($crate::agent::CLUSTER_STATUSES)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Self::err("cluster states"))?;
                rows.into_iter().map($crate::agent::status_from_row).collect()
            }

            async fn cluster_status(&self, cluster: &str) -> $crate::Result<Option<$crate::agent::ClusterStatus>> {
                let row: Option<$crate::agent::StatusRow> = sqlx::query_as($crate::agent::CLUSTER_STATUS)
                    .bind(cluster)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Self::err("cluster state"))?;
                row.map($crate::agent::status_from_row).transpose()
            }

            async fn put_cluster_status(&self, s: &$crate::agent::ClusterStatus) -> $crate::Result<bool> {
                let mut conn = self.pool.acquire().await.map_err(Self::err("cluster state"))?;
                Self::put_status_on(&mut *conn, s, true).await
            }

            async fn disconnect_replica(&self, replica: &str, at: i64) -> $crate::Result<u64> {
                let done = sqlx::query($crate::agent::DISCONNECT_REPLICA)
                    .bind(replica)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err(Self::err("cluster state"))?;
                Ok(done.rows_affected())
            }

            async fn touch_clusters(&self, clusters: &[String], replica: Option<&str>, at: i64) -> $crate::Result<()> {
                let mut tx = self.begin().await?;
                for c in clusters {
                    sqlx::query($crate::agent::TOUCH_CLUSTER)
                        .bind(c)
                        .bind(at)
                        .bind(replica)
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::err("cluster state"))?;
                }
                tx.commit().await.map_err(Self::err("cluster state"))
            }
        }
    };
}
pub(crate) use agent_store;
