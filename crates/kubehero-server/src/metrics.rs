//! Prometheus metrics served at `/metrics`: authentications by method and result, JWKS fetches by issuer and
//! outcome, token-verification latency, and HTTP requests by route and status.

use kubehero_authn::{AuthnObserver, FetchOutcome};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    issuer: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

/// Every metric the control plane exports.
pub struct Metrics {
    registry: Registry,
    authentications: Family<AuthLabels, Counter>,
    jwks_fetches: Family<FetchLabels, Counter>,
    verification_seconds: Histogram,
    http_requests: Family<HttpLabels, Counter>,
    audit_refused: Counter,
    audit_rows: Counter,
    audit_commits: Counter,
    connections_open: Gauge,
    connections: Family<ProtocolLabels, Counter>,
    connection_limit_reached: Counter,
    audit_forward_lag: Family<SinkLabels, Gauge>,
    session_renewals: Counter,
    breakglass_uses: Family<ClusterLabels, Counter>,
    breakglass_unacknowledged: Gauge,
    lease_held: Gauge,
    /// Agents, tunnels and their certificates.
    pub agents: AgentMetrics,
}

/// What the agent listener and the tunnels count.
#[derive(Default)]
pub struct AgentMetrics {
    pub connected: Gauge,
    pub streams_open: Gauge,
    pub streams: Counter,
    pub stream_failures: Counter,
    pub reconnects: Counter,
    pub replaced: Counter,
    pub handshake_failures: Counter,
    cert_expiry: Family<ClusterLabels, Gauge>,
    /// Streams between replicas: `out` forwarded to the replica holding a tunnel, `in` served for another.
    pub peer_streams: Family<PeerLabels, Counter>,
    /// Stream requests refused for a missing or wrong replica credential.
    pub peer_refused: Counter,
}

/// Which way a stream between replicas went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub direction: &'static str,
}

impl AgentMetrics {
    fn register(&self, r: &mut Registry) {
        r.register("agents_connected", "Clusters whose agent holds a tunnel to this replica", self.connected.clone());
        r.register("tunnel_streams_open", "Streams open through agent tunnels", self.streams_open.clone());
        r.register("tunnel_streams", "Streams opened through agent tunnels", self.streams.clone());
        r.register(
            "tunnel_stream_failures",
            "Streams that could not be opened through a tunnel",
            self.stream_failures.clone(),
        );
        r.register(
            "agent_reconnects",
            "Tunnels opened by clusters that had been connected before",
            self.reconnects.clone(),
        );
        r.register(
            "agent_tunnels_replaced",
            "Tunnels that replaced a cluster's open tunnel (a renewal swap, or two agents for one cluster)",
            self.replaced.clone(),
        );
        r.register(
            "agent_handshake_failures",
            "TLS handshakes refused or abandoned on the agent listener",
            self.handshake_failures.clone(),
        );
        r.register(
            "agent_certificate_expiry_seconds",
            "Unix time at which each connected cluster's agent certificate expires",
            self.cert_expiry.clone(),
        );
        r.register(
            "peer_streams",
            "Streams between replicas (out: to the replica holding the cluster's tunnel; in: for another replica)",
            self.peer_streams.clone(),
        );
        r.register(
            "peer_stream_refusals",
            "Stream requests on the agent listener refused for a missing or wrong replica credential",
            self.peer_refused.clone(),
        );
    }

    /// Sets (`Some`) or forgets (`None`) a cluster's certificate expiry.
    pub fn cert_expiry(&self, cluster: &str, not_after: Option<i64>) {
        let labels = ClusterLabels { cluster: cluster.to_string() };
        match not_after {
            Some(t) => {
                self.cert_expiry.get_or_create(&labels).set(t);
            }
            None => {
                self.cert_expiry.remove(&labels);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kubehero");
        let authentications = Family::<AuthLabels, Counter>::default();
        registry.register(
            "authentications",
            "Authentication attempts by credential method and result (ok, or the rejection reason)",
            authentications.clone(),
        );
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        registry.register("jwks_fetches", "OIDC discovery + JWKS fetches by issuer and outcome", jwks_fetches.clone());
        // 5 µs .. ~80 ms
        let verification_seconds = Histogram::new(exponential_buckets(5e-6, 2.0, 15));
        registry.register(
            "token_verification_seconds",
            "Time to verify a bearer JWT (cache misses only)",
            verification_seconds.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by method, route and status", http_requests.clone());
        let audit_refused = Counter::default();
        registry.register(
            "audit_refused_requests",
            "Requests answered 503 because their audit row could not be written",
            audit_refused.clone(),
        );
        let audit_rows = Counter::default();
        registry.register("audit_rows_written", "Audit rows this process made durable", audit_rows.clone());
        let audit_commits = Counter::default();
        registry.register(
            "audit_commits",
            "Audit transactions this process committed (rows / commits = group-commit batch size)",
            audit_commits.clone(),
        );
        let audit_forward_lag = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "audit_forward_lag_rows",
            "Audit rows not yet delivered to each forwarding sink",
            audit_forward_lag.clone(),
        );
        let connections_open = Gauge::default();
        registry.register("connections_open", "Open client connections on the API listener", connections_open.clone());
        let connections = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "connections",
            "Client connections accepted on the API listener, by protocol (h2 or http/1.1, as TLS ALPN settled it)",
            connections.clone(),
        );
        let connection_limit_reached = Counter::default();
        registry.register(
            "connection_limit_reached",
            "Times the listener found KUBEHERO_MAX_CONNECTIONS connections open and made new ones wait",
            connection_limit_reached.clone(),
        );
        let session_renewals = Counter::default();
        registry.register(
            "session_renewals",
            "Store writes made to slide sessions and CLI tokens (at most one a minute per credential)",
            session_renewals.clone(),
        );
        let breakglass_uses = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "breakglass_uses",
            "Break-glass codes used through this replica, by cluster",
            breakglass_uses.clone(),
        );
        let breakglass_unacknowledged = Gauge::default();
        registry.register(
            "breakglass_unacknowledged",
            "Break-glass uses (on any replica) no owner has acknowledged yet",
            breakglass_unacknowledged.clone(),
        );
        let lease_held = Gauge::default();
        registry.register(
            "lease_held",
            "1 on the replica that holds the singleton lease (checkpoints, audit forwarding, expiry sweeps), else 0",
            lease_held.clone(),
        );
        let agents = AgentMetrics::default();
        agents.register(&mut registry);
        Metrics {
            agents,
            lease_held,
            breakglass_uses,
            breakglass_unacknowledged,
            session_renewals,
            registry,
            authentications,
            jwks_fetches,
            verification_seconds,
            http_requests,
            audit_refused,
            audit_rows,
            audit_commits,
            audit_forward_lag,
            connections_open,
            connections,
            connection_limit_reached,
        }
    }

    pub fn authentication(&self, method: &'static str, result: &'static str) {
        self.authentications.get_or_create(&AuthLabels { method, result }).inc();
    }

    pub fn verification(&self, seconds: f64) {
        self.verification_seconds.observe(seconds);
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels { method: method.to_string(), route: route.to_string(), status })
            .inc();
    }

    pub fn session_renewal(&self) {
        self.session_renewals.inc();
    }

    pub fn audit_refused(&self) {
        self.audit_refused.inc();
    }

    /// One connection served, over HTTP/2 (`h2`) or HTTP/1.1.
    pub fn connection(&self, h2: bool) {
        let protocol = if h2 { "h2" } else { "http/1.1" };
        self.connections.get_or_create(&ProtocolLabels { protocol }).inc();
    }

    pub fn connection_limit_reached(&self) {
        self.connection_limit_reached.inc();
    }

    /// Copies what other parts count (the audit writer, the listener), at scrape time.
    pub fn sample(&self, stats: &kubehero_audit::writer::WriterStats, connections: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        // Counters only go up: add what the writer counted since the last scrape.
        let rows = stats.rows.load(Relaxed);
        self.audit_rows.inc_by(rows.saturating_sub(self.audit_rows.get()));
        let commits = stats.commits.load(Relaxed);
        self.audit_commits.inc_by(commits.saturating_sub(self.audit_commits.get()));
        self.connections_open.set(i64::try_from(connections).unwrap_or(i64::MAX));
    }

    /// Sets one forwarding sink's lag.
    pub fn audit_forward_lag(&self, sink: &str, rows: i64) {
        self.audit_forward_lag.get_or_create(&SinkLabels { sink: sink.to_string() }).set(rows);
    }

    /// The OpenMetrics 1.0 text exposition.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The Prometheus text format 0.0.4 (what scrapers read unless they ask for OpenMetrics).
    pub fn render(&self) -> String {
        classic_text(&self.render_openmetrics())
    }
}

/// Rewrites OpenMetrics text into the classic format: a counter family's `HELP`/`TYPE` lines name its
/// `_total` samples (a classic parser otherwise sees no samples for it), and `# UNIT`/`# EOF` go.
fn classic_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl kubehero_identity::Observer for Metrics {
    fn authentication(&self, kind: &'static str, result: &'static str) {
        Metrics::authentication(self, kind, result);
    }
    fn verification(&self, seconds: f64) {
        Metrics::verification(self, seconds);
    }
    fn session_renewal(&self) {
        Metrics::session_renewal(self);
    }
}

impl AuthnObserver for Metrics {
    fn jwks_fetch(&self, issuer: &str, outcome: FetchOutcome) {
        self.jwks_fetches.get_or_create(&FetchLabels { issuer: issuer.to_string(), outcome: outcome.as_str() }).inc();
    }
}

impl Metrics {
    /// A break-glass code was used here.
    pub fn breakglass_used(&self, cluster: &str) {
        self.breakglass_uses.get_or_create(&ClusterLabels { cluster: cluster.to_string() }).inc();
    }

    /// Whether this replica holds the singleton lease.
    pub fn lease_held(&self, held: bool) {
        self.lease_held.set(i64::from(held));
    }

    /// How many uses wait for an owner's acknowledgement (read from the store at each scrape).
    pub fn breakglass_unacknowledged(&self, n: usize) {
        self.breakglass_unacknowledged.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
