//! `kubehero agent`: the cluster agent (thin wiring of `kubehero-agent`).

use anyhow::Context;
use clap::Args;
use kubehero_agent::client::ControlPlane;
use kubehero_agent::run::{AgentConfig, RECONNECT_MAX, RECONNECT_MIN};
use kubehero_agent::state::StateDir;
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
--kubeconfig, or (in a pod) the pod's service account.";

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
    /// Where the key and certificate are kept (0700; files 0600).
    #[arg(long, value_name = "DIR", env = "KUBEHERO_AGENT_STATE_DIR", default_value = "./kubehero-agent")]
    state_dir: PathBuf,
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
    let cfg = AgentConfig {
        server: ControlPlane::parse(&a.server)?,
        cluster: a.cluster,
        join_token: a.join_token,
        ca_hash: a.ca_hash,
        state: StateDir::new(a.state_dir),
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
    kubehero_agent::run::run(cfg, Arc::new(Forwarder(Arc::new(upstream))), rx).await.context("agent")?;
    Ok(())
}
