//! The open tunnels, one per cluster (the newest wins: an agent that reconnects after a network drop the
//! control plane has not noticed yet, or swaps to a renewed certificate, replaces its old tunnel, which gets no
//! new streams and closes when its last stream ends). The hub opens streams by cluster name, closes tunnels
//! whose certificate expired or was revoked or whose cluster was removed, and keeps each cluster's state.

use super::{agent_event, result, Refusal, Registry};
use crate::metrics::Metrics;
use crate::state::AppState;
use kubehero_agent::tunnel::{ClientConnection, Stream, TunnelClient, TunnelError};
use kubehero_core::AuditOutcome;
use kubehero_identity::Durability;
use kubehero_store::{ClusterStatus, ConnectionState};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One open tunnel.
struct Entry {
    id: u64,
    client: TunnelClient,
    serial: String,
    not_after: i64,
    cert: rustls::pki_types::CertificateDer<'static>,
    task: tokio::task::AbortHandle,
    /// The API server's `gitVersion`, once read through the tunnel.
    kubernetes_version: Option<String>,
    agent_version: Option<String>,
}

/// How a tunnel ended.
enum End {
    /// The agent closed it.
    Closed,
    /// The connection broke or stopped answering pings.
    Lost(String),
    /// The control plane closed it.
    Refused(Refusal),
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cluster {0} is not connected")]
    NotConnected(String),
    #[error("the tunnel to cluster {0} failed: {1}")]
    Tunnel(String, TunnelError),
    #[error(
        "cluster {0}'s agent is connected to the replica at {1}, which could not be reached ({2}); if that replica \
         is gone, the agent reconnects to another one within 30 s"
    )]
    Peer(String, String, String),
    #[error(
        "cluster {0}'s agent is connected to another replica, which has no peer address: set KUBEHERO_PEER_URL on \
         every replica"
    )]
    NoPeerUrl(String),
}

/// An HTTP/1.1 connection over a tunnel stream, kept for the next request to the same cluster.
pub type Pooled = hyper::client::conn::http1::SendRequest<axum::body::Body>;

/// Most idle connections kept per cluster.
const POOL_PER_CLUSTER: usize = 32;

pub struct Hub {
    tunnels: Mutex<HashMap<String, Entry>>,
    /// Connections over tunnel streams, by cluster; taken when ready (the previous answer fully read).
    pool: Mutex<HashMap<String, Vec<Pooled>>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    /// Clusters that have been connected since this process started (a connect of one of these counts as a
    /// reconnect).
    seen: Mutex<std::collections::HashSet<String>>,
    /// The Kubernetes versions of clusters reached through another replica, from their state rows.
    remote_versions: Mutex<HashMap<String, String>>,
}

/// The peer of a tunnel, from its client certificate.
#[derive(Debug, Clone)]
pub struct Peer {
    pub cluster: String,
    pub serial: String,
    pub not_after: i64,
    /// The client certificate (DER), re-checked when the set of trusted CAs changes.
    pub cert: rustls::pki_types::CertificateDer<'static>,
    pub version: Option<String>,
    pub source: Option<String>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Hub {
        Hub {
            tunnels: Mutex::default(),
            pool: Mutex::default(),
            next_id: AtomicU64::new(1),
            metrics,
            seen: Mutex::default(),
            remote_versions: Mutex::default(),
        }
    }

    /// A stream to `cluster` through another replica, counted like one of this replica's own.
    pub fn forwarded(&self, cluster: &str, inner: Stream, kubernetes_version: Option<String>) -> TunnelStream {
        if let Some(v) = kubernetes_version {
            self.remote_versions.lock().insert(cluster.to_string(), v);
        }
        self.metrics.agents.streams_open.inc();
        TunnelStream { inner, open: self.metrics.agents.streams_open.clone() }
    }

    /// A pooled connection to `cluster` that can take a request now (closed ones are dropped).
    pub fn pooled(&self, cluster: &str) -> Option<Pooled> {
        let mut pool = self.pool.lock();
        let list = pool.get_mut(cluster)?;
        list.retain(|p| !p.is_closed());
        let i = list.iter().position(|p| p.is_ready())?;
        Some(list.swap_remove(i))
    }

    /// Keeps a connection for later requests (at most a few per cluster).
    pub fn give_back(&self, cluster: &str, p: Pooled) {
        let mut pool = self.pool.lock();
        let list = pool.entry(cluster.to_string()).or_default();
        list.retain(|p| !p.is_closed());
        if list.len() < POOL_PER_CLUSTER {
            list.push(p);
        }
    }

    /// The clusters with a tunnel to this replica, each with its tunnel's id (a new tunnel has a new id).
    pub fn connected(&self) -> Vec<(String, u64)> {
        self.tunnels.lock().iter().map(|(c, e)| (c.clone(), e.id)).collect()
    }

    /// The cluster's Kubernetes version, once known (through this replica's tunnel, or another replica's).
    pub fn kubernetes_version(&self, cluster: &str) -> Option<String> {
        let local = self.tunnels.lock().get(cluster).and_then(|e| e.kubernetes_version.clone());
        local.or_else(|| self.remote_versions.lock().get(cluster).cloned())
    }

    /// Opens a byte stream to `cluster`'s API server. If the tunnel it picks is closing (replaced a moment ago),
    /// it tries the current one once more.
    pub async fn open(&self, cluster: &str) -> Result<TunnelStream, OpenError> {
        let mut last = None;
        for _ in 0..2 {
            let (id, client) = {
                let t = self.tunnels.lock();
                let e = t.get(cluster).ok_or_else(|| OpenError::NotConnected(cluster.to_string()))?;
                (e.id, e.client.clone())
            };
            if last == Some(id) {
                break;
            }
            match client.open().await {
                Ok(s) => {
                    self.metrics.agents.streams.inc();
                    self.metrics.agents.streams_open.inc();
                    return Ok(TunnelStream { inner: s, open: self.metrics.agents.streams_open.clone() });
                }
                Err(e @ TunnelError::Closed(_)) => {
                    tracing::debug!(cluster, error = %e, "stream on a closing tunnel; trying the current one");
                    last = Some(id);
                }
                Err(e) => {
                    self.metrics.agents.stream_failures.inc();
                    return Err(OpenError::Tunnel(cluster.to_string(), e));
                }
            }
        }
        self.metrics.agents.stream_failures.inc();
        Err(OpenError::Tunnel(cluster.to_string(), TunnelError::Closed("the tunnel closed".into())))
    }

    /// Takes a new tunnel into service: it replaces the cluster's previous one, is closed at its certificate's
    /// expiry, and its end is recorded. The connect and the disconnect are durable audit rows.
    pub async fn register(
        self: &Arc<Self>,
        state: &AppState,
        peer: Peer,
        client: TunnelClient,
        conn: ClientConnection,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let hub = self.clone();
        let st = state.clone();
        let cluster = peer.cluster.clone();
        let until_expiry = (peer.not_after - state.clock.now()).max(0) as u64;
        // Spawned and entered under the lock, so a tunnel that ends at once still finds its entry.
        let replaced = {
            let mut tunnels = self.tunnels.lock();
            let task = tokio::spawn(async move {
                let why = tokio::select! {
                    r = conn => match r {
                        Ok(()) => End::Closed,
                        Err(e) => End::Lost(e.to_string()),
                    },
                    _ = tokio::time::sleep(std::time::Duration::from_secs(until_expiry)) => End::Refused(Refusal::Expired),
                };
                // This task is the tunnel's own: it must not abort itself before the end is recorded.
                hub.ended(&st, &cluster, id, why, false).await;
            });
            tunnels.insert(
                peer.cluster.clone(),
                Entry {
                    id,
                    client: client.clone(),
                    serial: peer.serial.clone(),
                    not_after: peer.not_after,
                    cert: peer.cert.clone(),
                    task: task.abort_handle(),
                    kubernetes_version: None,
                    agent_version: peer.version.clone(),
                },
            )
        };
        if replaced.is_some() {
            self.metrics.agents.replaced.inc();
            tracing::info!(cluster = %peer.cluster, "a new tunnel replaced the cluster's open one");
        } else {
            self.metrics.agents.connected.inc();
        }
        if !self.seen.lock().insert(peer.cluster.clone()) {
            self.metrics.agents.reconnects.inc();
        }
        self.metrics.agents.cert_expiry(&peer.cluster, Some(peer.not_after));
        let now = state.clock.now();
        let mut status = ClusterStatus {
            cluster: peer.cluster.clone(),
            state: ConnectionState::Connected,
            since: now,
            last_seen: Some(now),
            agent_version: peer.version.clone(),
            kubernetes_version: None,
            cert_not_after: Some(peer.not_after),
            replica: state.agents.peers.own().map(str::to_string),
        };
        self.write_status(state, &status).await;
        let event = agent_event(
            state,
            "agent.connect",
            &peer.cluster,
            Some("mtls"),
            result(AuditOutcome::Ok, 101, None),
            peer.source.clone(),
        );
        if let Err(e) = state.identity.record(event, Durability::Durable).await {
            tracing::error!(error = %e, cluster = %peer.cluster, "the connect row could not be written");
        }
        // The API server's version, read through the tunnel just opened: the first stream proves the path.
        match kubernetes_version(&client).await {
            Ok(v) => {
                if let Some(e) = self.tunnels.lock().get_mut(&peer.cluster).filter(|e| e.id == id) {
                    e.kubernetes_version = Some(v.clone());
                }
                status.kubernetes_version = Some(v);
                self.write_status(state, &status).await;
            }
            Err(e) => tracing::warn!(cluster = %peer.cluster, error = %e, "reading the cluster's /version failed"),
        }
    }

    async fn write_status(&self, state: &AppState, status: &ClusterStatus) {
        if let Err(e) = state.store.put_cluster_status(status).await {
            tracing::warn!(cluster = %status.cluster, error = %e, "writing the cluster's state failed");
        }
    }

    /// A tunnel's connection ended, or (`close`) is to be closed now: if it is still the cluster's current one,
    /// the cluster is disconnected.
    async fn ended(&self, state: &AppState, cluster: &str, id: u64, why: End, close: bool) {
        let current = {
            let mut t = self.tunnels.lock();
            if t.get(cluster).is_some_and(|e| e.id == id) {
                t.remove(cluster)
            } else {
                None
            }
        };
        let Some(entry) = current else {
            return;
        };
        self.pool.lock().remove(cluster);
        if close {
            entry.task.abort();
        }
        self.metrics.agents.connected.dec();
        self.metrics.agents.cert_expiry(cluster, None);
        match &why {
            End::Closed => tracing::info!(cluster, "agent tunnel closed by the agent"),
            End::Lost(e) => tracing::warn!(cluster, error = %e, "agent tunnel lost"),
            End::Refused(r) => tracing::warn!(cluster, reason = r.as_str(), "agent tunnel closed by the control plane"),
        }
        let now = state.clock.now();
        // The versions last seen stay on the disconnected row.
        let status = ClusterStatus {
            cluster: cluster.to_string(),
            state: ConnectionState::Disconnected,
            since: now,
            last_seen: Some(now),
            agent_version: entry.agent_version,
            kubernetes_version: entry.kubernetes_version,
            cert_not_after: Some(entry.not_after),
            replica: state.agents.peers.own().map(str::to_string),
        };
        self.write_status(state, &status).await;
        let r = match why {
            End::Closed => result(AuditOutcome::Ok, 200, None),
            End::Lost(_) => result(AuditOutcome::Error, 503, Some("tunnel_lost")),
            End::Refused(r) => result(AuditOutcome::Denied, 403, Some(r.code())),
        };
        let event = agent_event(state, "agent.disconnect", cluster, Some("mtls"), r, None);
        if let Err(e) = state.identity.record(event, Durability::Durable).await {
            tracing::error!(error = %e, cluster, "the disconnect row could not be written");
        }
    }

    /// Closes every tunnel whose cluster is no longer registered or whose certificate is revoked, expired, or no
    /// longer vouched for by a trusted CA.
    pub async fn enforce(
        &self,
        state: &AppState,
        registry: &Registry,
        trust: &dyn rustls::server::danger::ClientCertVerifier,
    ) {
        let now = state.clock.now();
        let doomed: Vec<(String, u64, Refusal)> = self
            .tunnels
            .lock()
            .iter()
            .filter_map(|(c, e)| {
                let untrusted = || trust.verify_client_cert(&e.cert, &[], rustls::pki_types::UnixTime::now()).is_err();
                let why = registry
                    .refusal(Some(c), &e.serial)
                    .or_else(|| (e.not_after <= now).then_some(Refusal::Expired))
                    .or_else(|| untrusted().then_some(Refusal::Untrusted))?;
                Some((c.clone(), e.id, why))
            })
            .collect();
        for (cluster, id, why) in doomed {
            self.ended(state, &cluster, id, End::Refused(why), true).await;
        }
    }

    /// Records that the connected clusters were seen now (every 30 s).
    pub async fn touch(&self, state: &AppState) {
        let names: Vec<String> = self.tunnels.lock().keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        if let Err(e) = state.store.touch_clusters(&names, state.agents.peers.own(), state.clock.now()).await {
            tracing::warn!(error = %e, "recording when clusters were last seen failed");
        }
    }
}

/// `gitVersion` of the cluster's `/version`, read through one tunnel stream.
async fn kubernetes_version(client: &TunnelClient) -> Result<String, String> {
    use http_body_util::BodyExt;
    let stream = client.open().await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(stream).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/version")
        .header(http::header::HOST, kubehero_agent::proto::STREAM_AUTHORITY)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let res = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(v["gitVersion"].as_str().unwrap_or("unknown").to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), fetch)
        .await
        .map_err(|_| "no answer within 15 s".to_string())?
}

/// A stream through a tunnel, counted in `kubehero_tunnel_streams_open` while it lives.
pub struct TunnelStream {
    inner: Stream,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl hyper::rt::Read for TunnelStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TunnelStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
