//! `kubehero agent`: the cluster agent (thin wiring of `kubehero-agent`).

use anyhow::Context;
use clap::Args;
use kubehero_agent::client::ControlPlane;
use kubehero_agent::run::{AgentConfig, RECONNECT_MAX, RECONNECT_MIN};
use kubehero_agent::state::{State, StateDir};
use kubehero_agent::upstream::{Forwarder, Upstream};
use std::path::PathBuf;
use std::sync::Arc;

pub const AGENT_ABOUT: &str = "Run the cluster agent: join once with a one-time token, then hold an outbound, \
multiplexed mTLS tunnel to the control plane's agent listener, through which the control plane reaches this \
cluster's API server. No inbound port is opened on the cluster.

On first start the agent makes its own key (it never leaves the state directory), sends a CSR with the join \
token (`kubehero cluster add NAME` prints both the token and --ca-hash), and trusts the control plane only if \
its chain holds the CA with that hash. From then on it authenticates with its client certificate (CN = the \
cluster), renews it at about two thirds of its life, and reconnects forever with capped exponential backoff \
and full jitter. A restarted agent reuses the key and certificate in --state-dir without a join token.

Requests through the tunnel reach the API server with the agent's own credentials: the current context of \
--kubeconfig, or (in a pod) the pod's service account.

RBAC sync (on by default): the control plane pushes the ClusterRoles kubehero:viewer|member|auditor|admin|owner \
and the bindings KubeHero's roles imply; the agent applies them at once and every 10 s puts back edits and \
deletions. It touches only objects labelled app.kubernetes.io/managed-by=kubehero.";

#[derive(Args)]
pub struct AgentArgs {
    /// The control plane's agent listener, https://HOST:PORT.
    #[arg(long, value_name = "URL", env = "KUBEHERO_AGENT_SERVER")]
    server: String,
    /// The cluster's name, as registered.
    #[arg(long, value_name = "NAME", env = "KUBEHERO_AGENT_CLUSTER")]
    cluster: String,
    /// The one-time join token (khj_…); needed only when --state-dir holds no usable certificate.
    #[arg(long, value_name = "TOKEN", env = "KUBEHERO_AGENT_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// sha256:… of the control plane's agent CA (printed by `kubehero cluster add`).
    #[arg(long, value_name = "HASH", env = "KUBEHERO_AGENT_CA_HASH")]
    ca_hash: Option<String>,
    /// A kubeconfig whose current context reaches this cluster's API server (default: the pod's service
    /// account).
    #[arg(long, value_name = "FILE", env = "KUBEHERO_AGENT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Where the key and certificate are kept (0700; files 0600). Default: ./kubehero-agent, or in a pod the
    /// Secret of --state-secret.
    #[arg(long, value_name = "DIR", env = "KUBEHERO_AGENT_STATE_DIR", conflicts_with = "state_secret")]
    state_dir: Option<PathBuf>,
    /// Keep the key and certificate in this Secret (NAMESPACE/NAME) of the cluster, through the agent's own
    /// API server credentials. Default in a pod: <the pod's namespace>/kubehero-agent-state.
    #[arg(long, value_name = "NAMESPACE/NAME", env = "KUBEHERO_AGENT_STATE_SECRET")]
    state_secret: Option<String>,
    /// Keep the cluster's RBAC in step with KubeHero's roles (needs the RBAC permissions of the agent's
    /// ClusterRole, see the README).
    #[arg(long, value_name = "BOOL", env = "KUBEHERO_AGENT_RBAC_SYNC", default_value_t = true, action = clap::ArgAction::Set)]
    rbac_sync: bool,
}

/// The pod's namespace, when running in one.
fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
}

pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let upstream = match &a.kubeconfig {
        Some(path) => Upstream::from_kubeconfig(path)?,
        None => Upstream::in_cluster()?,
    };
    match upstream.version().await {
        Ok(v) => tracing::info!(server = upstream.server(), version = %v, "the cluster's API server answers"),
        Err(e) => {
            tracing::warn!(server = upstream.server(), error = %e, "the cluster's API server does not answer yet")
        }
    }
    let upstream = Arc::new(if a.rbac_sync { upstream } else { upstream.without_rbac_sync() });
    let secret = match (&a.state_secret, &a.state_dir, &a.kubeconfig) {
        (Some(s), _, _) => Some(s.clone()),
        (None, None, None) => pod_namespace().map(|ns| format!("{ns}/kubehero-agent-state")),
        _ => None,
    };
    let state = match secret {
        Some(s) => {
            let (namespace, name) = s
                .split_once('/')
                .filter(|(n, m)| !n.is_empty() && !m.is_empty() && !m.contains('/'))
                .ok_or_else(|| anyhow::anyhow!("--state-secret {s:?} is not NAMESPACE/NAME"))?;
            State::Secret { upstream: upstream.clone(), namespace: namespace.into(), name: name.into() }
        }
        None => State::Dir(StateDir::new(a.state_dir.unwrap_or_else(|| PathBuf::from("./kubehero-agent")))),
    };
    let cfg = AgentConfig {
        server: ControlPlane::parse(&a.server)?,
        cluster: a.cluster,
        join_token: a.join_token,
        ca_hash: a.ca_hash,
        state,
        version: env!("CARGO_PKG_VERSION").to_string(),
        reconnect_min: RECONNECT_MIN,
        reconnect_max: RECONNECT_MAX,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        tracing::info!("shutting down: letting open streams finish");
        let _ = tx.send(true);
    });
    kubehero_agent::run::run(cfg, Arc::new(Forwarder(upstream)), rx).await.context("agent")?;
    Ok(())
}
