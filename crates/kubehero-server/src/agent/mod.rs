//! The agent surface: the CA, the registry of who may connect, the agent listener (join, renew, tunnel) and
//! the hub of open tunnels, through which the control plane opens streams to any connected cluster by name.
//!
//! Invariant 8 (ARCHITECTURE.md): a tunnel only carries traffic for the cluster its certificate names; an
//! expired, revoked or removed cluster's tunnel is closed, not just refused at its next handshake.

pub mod ca;
pub mod hub;
pub mod listener;
pub mod peer;

use crate::config::AgentSettings;
use crate::state::AppState;
use kubehero_core::{AuditActor, AuditEvent, AuditOutcome, AuditResult, AuditTarget};
use kubehero_store::{ConnectionState, Store};
use parking_lot::RwLock;
use std::collections::HashSet;
use std::sync::Arc;

/// Who may hold a tunnel: registered clusters, minus revoked certificate serials. Read at every handshake and
/// whenever a tunnel is checked; reloaded from the store after every local change and every few seconds (for
/// changes made through another replica).
#[derive(Default)]
pub struct Registry {
    snapshot: RwLock<Snapshot>,
    /// Numbers reloads in the order they start reading, so a slow reload that read the store before a change
    /// never overwrites the snapshot of one that read it after.
    reloads: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Snapshot {
    /// Registered clusters, each with the audience of its direct tokens.
    clusters: std::collections::HashMap<String, String>,
    revoked: HashSet<String>,
    /// The reload that wrote this snapshot.
    from: u64,
}

impl Registry {
    /// Why a certificate for `cluster` with `serial` may not be used, if it may not.
    pub fn refusal(&self, cluster: Option<&str>, serial: &str) -> Option<Refusal> {
        let s = self.snapshot.read();
        match cluster {
            None => Some(Refusal::NoCluster),
            Some(c) if !s.clusters.contains_key(c) => Some(Refusal::NotRegistered),
            Some(_) if s.revoked.contains(serial) => Some(Refusal::Revoked),
            Some(_) => None,
        }
    }

    /// The audience of a registered cluster's direct tokens.
    pub fn audience(&self, cluster: &str) -> Option<String> {
        self.snapshot.read().clusters.get(cluster).cloned()
    }

    /// Re-reads clusters and revocations.
    pub async fn reload(&self, store: &dyn Store, now: i64) -> Result<(), kubehero_store::StoreError> {
        let from = self.reloads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let clusters = store
            .list_clusters()
            .await?
            .into_iter()
            .map(|c| (c.name.clone(), crate::kube::direct::audience(&c)))
            .collect();
        let revoked = store.revoked_agent_serials(now).await?.into_iter().collect();
        let mut snapshot = self.snapshot.write();
        if from > snapshot.from {
            *snapshot = Snapshot { clusters, revoked, from };
        }
        Ok(())
    }
}

/// Why a certificate is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoCluster,
    NotRegistered,
    Revoked,
    Expired,
    /// No trusted CA vouches for the certificate (its CA was retired).
    Untrusted,
}

impl Refusal {
    /// The audit row's error code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NoCluster => "unauthenticated",
            Refusal::NotRegistered => "cluster_removed",
            Refusal::Revoked => "certificate_revoked",
            Refusal::Expired => "certificate_expired",
            Refusal::Untrusted => "certificate_untrusted",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCluster => "the certificate names no cluster",
            Refusal::NotRegistered => "the cluster is not registered (removed?)",
            Refusal::Revoked => "the certificate is revoked",
            Refusal::Expired => "the certificate has expired",
            Refusal::Untrusted => "no trusted agent CA vouches for the certificate (its CA was retired)",
        }
    }
}

/// Everything about agents that the rest of the server uses.
pub struct Agents {
    pub ca: ca::Ca,
    pub registry: Arc<Registry>,
    /// The agent listener's TLS settings, and the chain check alone: rebuilt when the CAs change.
    tls: RwLock<(Arc<rustls::ServerConfig>, Arc<dyn rustls::server::danger::ClientCertVerifier>)>,
    pub hub: Arc<hub::Hub>,
    pub settings: AgentSettings,
    /// The names in the agent listener's certificate.
    pub server_names: Vec<String>,
    /// Where the agent listener is bound (set once it is).
    pub bound: std::sync::OnceLock<std::net::SocketAddr>,
    /// Streams to and from the other replicas.
    pub peers: peer::Peers,
}

impl Agents {
    /// Loads (or creates) the CA and the registry.
    pub async fn start(
        settings: &AgentSettings,
        public_url: Option<&str>,
        store: &Arc<dyn Store>,
        keys: Arc<kubehero_audit::HmacKeys>,
        metrics: Arc<crate::metrics::Metrics>,
        now: i64,
    ) -> Result<Agents, ca::CaError> {
        let peers = peer::Peers::new(&keys.derive_all(b"kubehero-peer-streams-v1"));
        let source = match &settings.ca_files {
            Some((cert, key)) => ca::CaSource::Files { cert: cert.clone(), key: key.clone() },
            None => ca::CaSource::Store { keys },
        };
        let ca = ca::Ca::load(source, &**store, now).await?;
        let registry = Arc::new(Registry::default());
        registry.reload(&**store, now).await.map_err(|e| ca::CaError(format!("reading clusters: {e}")))?;
        let mut server_names = settings.server_names.clone();
        if server_names.is_empty() {
            server_names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            if let Some(host) =
                public_url.and_then(|u| u.parse::<http::Uri>().ok()).and_then(|u| u.host().map(str::to_string))
            {
                let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
                if !server_names.contains(&host) {
                    server_names.push(host);
                }
            }
        }
        // The other replicas check this listener's certificate for the host of its peer URL.
        let peer_host = match &settings.peer_url {
            Some(u) => peer::host_of(u),
            None => settings.listen.filter(|a| !a.ip().is_unspecified()).map(|a| a.ip().to_string()),
        };
        if let Some(h) = peer_host.filter(|h| !server_names.contains(h)) {
            server_names.push(h);
        }
        let tls = RwLock::new(listener::tls_config(&ca, &registry, &server_names, now)?);
        Ok(Agents {
            ca,
            registry,
            tls,
            hub: Arc::new(hub::Hub::new(metrics)),
            settings: settings.clone(),
            server_names,
            bound: Default::default(),
            peers,
        })
    }

    /// Records where the agent listener is bound (and so where the other replicas reach this one), and marks
    /// the clusters that a previous run at this address left shown as connected disconnected: a replica that
    /// starts holds no tunnel, and the other replicas must not forward to it.
    pub async fn bound_at(&self, state: &AppState, addr: std::net::SocketAddr) {
        let _ = self.bound.set(addr);
        self.peers.set_own(self.settings.peer_url.as_deref(), addr);
        if let Some(own) = self.peers.own() {
            match state.store.disconnect_replica(own, state.clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    clusters = n,
                    "clusters left connected to this replica's previous run: now disconnected"
                ),
                Err(e) => tracing::warn!(error = %e, "clearing this replica's previous tunnels failed"),
            }
        }
    }

    /// A byte stream to `cluster`'s API server: through this replica's tunnel, or, when the agent is connected
    /// to another replica, through that one (see [`peer`]).
    pub async fn open(&self, state: &AppState, cluster: &str) -> Result<hub::TunnelStream, hub::OpenError> {
        match self.hub.open(cluster).await {
            Err(hub::OpenError::NotConnected(_)) => {}
            other => return other,
        }
        let not_connected = || hub::OpenError::NotConnected(cluster.to_string());
        let status = state.store.cluster_status(cluster).await.ok().flatten();
        let status = status.filter(|s| s.state == ConnectionState::Connected).ok_or_else(not_connected)?;
        let Some(url) = status.replica else {
            return Err(hub::OpenError::NoPeerUrl(cluster.to_string()));
        };
        if Some(url.as_str()) == self.peers.own() {
            // The row names this replica, which has no tunnel: it ended and its row is not written yet.
            return Err(not_connected());
        }
        match peer::open(self, &url, cluster, state.clock.now()).await {
            Ok(stream) => {
                state.metrics.agents.peer_streams.get_or_create(&crate::metrics::PeerLabels { direction: "out" }).inc();
                Ok(self.hub.forwarded(cluster, stream, status.kubernetes_version))
            }
            Err(e) => {
                state.metrics.agents.stream_failures.inc();
                Err(hub::OpenError::Peer(cluster.to_string(), url, e))
            }
        }
    }

    /// The agent listener's current TLS settings.
    pub fn tls(&self) -> Arc<rustls::ServerConfig> {
        self.tls.read().0.clone()
    }

    /// Re-reads the CA (files that changed, or a rollover in the store) and, if it changed, the listener's TLS
    /// settings: new handshakes trust the new set of CAs.
    pub async fn refresh_ca(&self, state: &AppState) {
        let now = state.clock.now();
        match self.ca.refresh(&*state.store, now).await {
            Ok(false) => {}
            Ok(true) => match listener::tls_config(&self.ca, &self.registry, &self.server_names, now) {
                Ok(cfg) => {
                    *self.tls.write() = cfg;
                    tracing::info!(ca_hash = %self.ca.hash(), "agent CA changed; the agent listener trusts the new set");
                    // A tunnel whose certificate no CA vouches for any more is closed.
                    let trust = self.tls.read().1.clone();
                    self.hub.enforce(state, &self.registry, &*trust).await;
                }
                Err(e) => tracing::error!(error = %e, "the agent listener's TLS settings could not be rebuilt"),
            },
            Err(e) => tracing::error!(error = %e, "re-reading the agent CA failed; keeping the loaded one"),
        }
    }

    /// After a change to clusters or certificates (here or, found by the periodic refresh, elsewhere): reloads
    /// who may connect and closes every tunnel that may no longer stay open.
    pub async fn reload(&self, state: &AppState) {
        let now = state.clock.now();
        if let Err(e) = self.registry.reload(&*state.store, now).await {
            tracing::warn!(error = %e, "reloading agent registrations failed; keeping the last ones");
            return;
        }
        let trust = self.tls.read().1.clone();
        self.hub.enforce(state, &self.registry, &*trust).await;
    }
}

/// The result of an agent call: ok, or `outcome` with an error code.
pub fn result(outcome: AuditOutcome, status: u16, code: Option<&str>) -> AuditResult {
    AuditResult { outcome, code: code.map(str::to_string), status, repeated: None, duration_ms: None }
}

/// An audit event about a cluster's agent; `method` is how the agent proved who it is (`mtls`, `join_token`),
/// `None` when it did not.
pub fn agent_event(
    state: &AppState,
    action: &str,
    cluster: &str,
    method: Option<&'static str>,
    result: AuditResult,
    source: Option<String>,
) -> AuditEvent {
    let id = &state.identity.ids;
    AuditEvent {
        event_id: id.next_id(),
        time_ms: state.clock.now_ms(),
        actor: AuditActor {
            sub: if method.is_some() { format!("cluster:{cluster}") } else { "unknown".into() },
            issuer: None,
            email: None,
            groups: Vec::new(),
            kind: if method.is_some() { "agent" } else { "unknown" }.into(),
            auth_method: method.unwrap_or("none").into(),
        },
        action: action.to_string(),
        target: AuditTarget {
            kind: Some("cluster".into()),
            id: Some(cluster.to_string()),
            cluster: Some(cluster.to_string()),
            namespace: None,
        },
        result,
        request_id: id.next_id(),
        source,
        user_agent: None,
    }
}
