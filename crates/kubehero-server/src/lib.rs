//! The KubeHero control plane's HTTP layer.
//!
//! [`routes::app`] builds the router from the route table; [`start`] wires configuration, storage, the
//! verifier and background tasks, binds the listener (plain or rustls) and serves until shut down. Tests and
//! benchmarks call [`start`] with port 0.

pub mod agent;
pub mod audit;
pub mod auth;
pub mod config;
pub mod device;
pub mod error;
pub mod issuer;
pub mod kube;
pub mod lease;
pub mod listener;
pub mod login;
pub mod metrics;
pub mod middleware;
pub mod net;
pub mod routes;
pub mod scim;
pub mod sealed;
pub mod state;
pub mod throttle;
mod tls;
pub mod ui;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::state::{AppState, Clock, SystemClock};
use kubehero_authn::{TokenCache, Verifier};
use kubehero_identity::grants::BindingsCache;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use routes::app;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("{0}")]
    Store(#[from] kubehero_store::StoreError),
    /// The issuers could not be set up.
    #[error("OIDC issuer configuration: {0}")]
    Authn(#[from] kubehero_authn::AuthnError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}. Fix: choose a free address with KUBEHERO_LISTEN")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The agent listen address could not be bound.
    #[error(
        "cannot listen for agents on {addr}: {source}. Fix: choose a free address with KUBEHERO_AGENT_LISTEN (or off)"
    )]
    AgentBind { addr: SocketAddr, source: std::io::Error },
    /// The TLS files could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The audit keys could not be loaded or created.
    #[error("audit log: {0}")]
    Audit(String),
    /// The agent CA or listener could not be set up.
    #[error("agents: {0}")]
    Agents(String),
    /// KubeHero's OIDC issuer keys could not be read or made.
    #[error("issuer: {0}")]
    Issuer(String),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}. Fix: set KUBEHERO_DATA_DIR to a writable directory")]
    DataDir { path: String, source: std::io::Error },
}

/// A running server.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The agent listener's address (`None` with `KUBEHERO_AGENT_LISTEN=off`).
    pub agent_addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Tasks that finish their work after the listener stops (the final audit checkpoint).
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Stops the background tasks, once the listener has drained and the audit writer is flushed.
    background_stop: watch::Sender<bool>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, writes the final checkpoint, and waits.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.wait().await;
    }

    /// Waits until the server stops (after a shutdown signal): the last requests' rows, including reads that
    /// were not waited for, are committed before the final checkpoint.
    pub async fn wait(self) {
        let _ = self.task.await;
        record_sampled(&self.state).await;
        if let Err(e) = self.state.identity.audit.flush().await {
            tracing::error!(error = %e, "the last audit rows could not be committed at shutdown");
        }
        let _ = self.background_stop.send(true);
        for t in self.background {
            let _ = t.await;
        }
        // Another replica takes over at once rather than when the lease expires.
        self.state.lease.release(&self.state).await;
    }

    /// A handle that triggers shutdown.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Builds the state from a configuration and an open store.
pub async fn build_state(
    config: &ServerConfig,
    store: Arc<dyn kubehero_store::Store>,
    clock: Arc<dyn Clock>,
) -> Result<AppState, StartError> {
    let metrics = Arc::new(Metrics::new());
    let verifier = Verifier::new(config.issuers.iter().map(|i| i.verifier.clone()).collect(), metrics.clone())?;
    verifier.start();
    qualify_legacy_subjects(&*store, config).await?;
    let issuer_maps: Vec<_> =
        config.issuers.iter().map(|i| (i.verifier.issuer.clone(), i.group_roles.clone())).collect();
    let bindings =
        BindingsCache::new(store.clone(), &config.group_roles, &issuer_maps, config.bindings.clone(), clock.clone());
    bindings.reload().await?;
    let (keys, generated) = audit::load_hmac_keys(config, true)?;
    audit::check_hmac_key_matches_chain(&*store, &keys).await?;
    if generated {
        tracing::warn!(
            path = %config.data_dir.join("audit-hmac.key").display(),
            "AUDIT_HMAC_KEY is not set: the audit log is chained with a key generated into the data directory. \
             Set AUDIT_HMAC_KEY (and KUBEHERO_REQUIRE_AUTH=true) for production."
        );
    }
    let forward = kubehero_audit::forward::ForwardStatus::new();
    let cluster_tokens =
        kubehero_identity::cluster_token::ClusterTokens::new(&keys.derive_all(b"kubehero-cluster-token-v1"));
    let keys = Arc::new(keys);
    let agents = agent::Agents::start(
        &config.agents,
        config.public_url.as_deref(),
        &store,
        keys.clone(),
        metrics.clone(),
        clock.now(),
    )
    .await
    .map_err(|e| StartError::Agents(e.to_string()))?;
    let issuer = issuer::Issuer::start(
        config.public_url.clone(),
        keys.clone(),
        (config.agents.issuer_key_lead, &config.agents.issuer_rsa_keys),
        &*store,
        clock.now(),
    )
    .await
    .map_err(|e| StartError::Issuer(e.to_string()))?;
    let audit = kubehero_audit::AuditLog::start_notifying(
        store.clone(),
        kubehero_audit::ChainSealer::new(keys.clone()),
        AUDIT_BATCH,
        forward.clone(),
    );
    let identity = Arc::new(kubehero_identity::Identity {
        store: store.clone(),
        verifier,
        token_cache: Arc::new(TokenCache::new(config.token_cache_size)),
        credentials: kubehero_identity::cache::CredentialCache::default(),
        api_keys: config.api_keys.clone(),
        bindings,
        directory: kubehero_identity::directory::Directory::new(
            store.clone(),
            config.scim_token.is_some(),
            config.issuers.first().map(|i| i.verifier.issuer.clone()),
        ),
        clock: clock.clone(),
        require_auth: config.require_auth,
        observer: metrics.clone(),
        scim: config.scim_token.as_ref().map(kubehero_identity::scim_token::ScimToken::new),
        audit,
        ids: kubehero_audit::IdSource::new().map_err(StartError::Audit)?,
        cluster_tokens,
    });
    let login = match config.login.clone() {
        None => None,
        Some(client) => {
            let issuers = config
                .issuers
                .iter()
                .map(|i| login::LoginIssuer {
                    issuer: i.verifier.issuer.clone(),
                    group_prefix: i.verifier.group_prefix.clone(),
                    groups_claim: i.verifier.groups_claim.clone(),
                })
                .collect();
            let login = login::Login::new(client, issuers, keys.clone())
                .map_err(|e| StartError::Tls(format!("the sign-in HTTP client cannot be built: {e}")))?;
            Some(Arc::new(login))
        }
    };
    Ok(AppState::new(state::Shared {
        login,
        forward,
        store: store.clone(),
        identity,
        public_url: config.public_url.clone(),
        metrics,
        clock,
        audit_reads: config.audit_reads,
        connections: Default::default(),
        limits: config.limits,
        trusted_proxies: config.trusted_proxies.clone(),
        sampler: Default::default(),
        device_codes: throttle::PerSource::new(10, Duration::from_secs(30)),
        breakglass_attempts: throttle::PerSource::new(5, Duration::from_secs(12)),
        lease: Default::default(),
        agents: Arc::new(agents),
        issuer: Arc::new(issuer),
        rbac_pushes: Arc::default(),
        serving_ca_pem: config.tls.as_ref().and_then(|t| std::fs::read_to_string(&t.cert).ok()).and_then(|pem| {
            let last = pem.rfind("-----BEGIN CERTIFICATE-----")?;
            Some(pem[last..].trim().to_string() + "\n")
        }),
        kube_streams: Default::default(),
        workos: config.workos_webhook_secret.as_ref().map(scim::workos::Webhook::new),
    }))
}

/// Most audit rows committed in one transaction.
const AUDIT_BATCH: usize = 1024;

/// Opens the database named by the configuration, creating the data directory for SQLite.
pub async fn open_store(config: &ServerConfig) -> Result<Arc<dyn kubehero_store::Store>, StartError> {
    if config.database_url.starts_with("sqlite:") && !config.database_url.contains(":memory:") {
        private_data_dir(config)
            .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
    }
    Ok(kubehero_store::open(&config.database_url).await?)
}

/// The data directory holds SCIM's personal data, the audit log and keys: it is made (or tightened to) 0700,
/// and the database files to 0600. The database file is created 0600 before SQLite opens it, and SQLite gives
/// its `-wal` and `-shm` files the database file's mode.
fn private_data_dir(config: &ServerConfig) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = &config.data_dir;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tighten = |path: &std::path::Path, mode: u32| -> std::io::Result<()> {
        let meta = std::fs::metadata(path)?;
        if meta.permissions().mode() & 0o777 & !mode != 0 {
            tracing::warn!(path = %path.display(), "tightening permissions to {mode:o}: it holds personal data and the audit log");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    };
    tighten(dir, 0o700)?;
    let db = config.database_url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let db = std::path::Path::new(db.split('?').next().unwrap_or(db));
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(db)?;
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if path.exists() {
            tighten(&path, 0o600)?;
        }
    }
    Ok(())
}

/// Starts the control plane: opens the store, builds the state, binds, serves in the background.
pub async fn start(config: &ServerConfig) -> Result<RunningServer, StartError> {
    let store = open_store(config).await?;
    start_with(config, store, Arc::new(SystemClock)).await
}

/// [`start`] with a given store and clock (tests inject both).
pub async fn start_with(
    config: &ServerConfig,
    store: Arc<dyn kubehero_store::Store>,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    let state = build_state(config, store, clock).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let agent_listener = match config.agents.listen {
        None => None,
        Some(a) => {
            let l =
                tokio::net::TcpListener::bind(a).await.map_err(|source| StartError::AgentBind { addr: a, source })?;
            let bound = l.local_addr().map_err(|source| StartError::AgentBind { addr: a, source })?;
            Some((l, bound))
        }
    };
    let agent_addr = agent_listener.as_ref().map(|(_, a)| *a);
    let signing = Arc::new(audit::load_signing_key(&config.audit_signing_key)?);
    audit::check_signing_key_shared(&*state.store, &signing, &config.audit_signing_key, state.clock.now_ms()).await?;
    let (tx, rx) = watch::channel(false);
    let (background_stop, background_rx) = watch::channel(false);
    spawn_refresh(state.clone(), rx.clone());
    kube::streams::spawn_rechecks(state.clone(), rx.clone());
    // Checkpoints and forwarding run on the replica holding the lease (and move with it).
    tokio::spawn(lease::keep(state.clone(), background_rx.clone()));
    let (store, every) = (state.store.clone(), config.audit_checkpoint_every);
    let mut background =
        vec![tokio::spawn(lease::while_held(state.lease.subscribe(), background_rx.clone(), move |stop| {
            kubehero_audit::writer::run_checkpoints(store.clone(), signing.clone(), every, stop)
        }))];
    if !config.audit_forward.is_empty() {
        let (store, sinks, options) =
            (state.store.clone(), config.audit_forward.clone(), config.audit_forward_options.clone());
        let status = state.forward.clone();
        background.push(tokio::spawn(lease::while_held(state.lease.subscribe(), background_rx, move |stop| {
            let forward =
                kubehero_audit::forward::run_with(store.clone(), sinks.clone(), options.clone(), status.clone(), stop);
            async move {
                if let Err(e) = forward.await {
                    tracing::error!(error = %e, "audit forwarding stopped");
                }
            }
        })));
    }
    if let Some((l, bound)) = agent_listener {
        state.agents.bound_at(&state, bound).await;
        tokio::spawn(agent::listener::serve(l, state.clone(), state.agents.clone(), rx.clone()));
    }
    let router = app(state.clone());
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let task = tokio::spawn(listener::serve(listener, tls, router, state.clone(), config.limits, rx));
    Ok(RunningServer { addr, agent_addr, state, shutdown: tx, task, background, background_stop })
}

/// Reloads database bindings every few seconds so changes made through another replica apply here too; every
/// 2 s, who may hold an agent tunnel (a removal or revocation made through another replica closes its tunnel
/// here too) and the agent CA; every 30 s, when connected clusters were last seen; every minute, writes the
/// counted rows of sampled requests and sweeps expired device authorizations.
fn spawn_refresh(state: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut agents = tokio::time::interval(Duration::from_secs(2));
        let mut seen = tokio::time::interval(Duration::from_secs(30));
        let mut minute = tokio::time::interval(Duration::from_secs(60));
        minute.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = state.identity.bindings.reload().await {
                        tracing::warn!(error = %e, "periodic role-binding reload failed");
                    }
                }
                _ = agents.tick() => {
                    if let Err(e) = state.issuer.refresh(&*state.store, state.clock.now()).await {
                        tracing::warn!(error = %e, "periodic issuer key reload failed");
                    }
                    state.agents.refresh_ca(&state).await;
                    state.agents.reload(&state).await;
                    kube::rbac::push_changed(&state).await;
                }
                _ = seen.tick() => state.agents.hub.touch(&state).await,
                _ = minute.tick() => {
                    record_sampled(&state).await;
                    // The sweeps run on one replica: the lease holder.
                    if !state.lease.held() {
                        continue;
                    }
                    match state.identity.expire_bindings().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(bindings = n, "expired role bindings deleted"),
                        Err(e) => tracing::warn!(error = %e, "deleting expired role bindings failed"),
                    }
                    if let Err(e) = state.identity.expire_shares().await {
                        tracing::warn!(error = %e, "recording expired share links failed");
                    }
                    match state.store.purge_expired_devices(state.clock.now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(rows = n, "expired device authorizations swept"),
                        Err(e) => tracing::warn!(error = %e, "sweeping expired device authorizations failed"),
                    }
                }
                _ = stopped(&mut stop) => return,
            }
        }
    });
}

/// Ends the sampling window: the rows that stand for counted requests go into the chain.
pub async fn record_sampled(state: &AppState) {
    for event in state.sampler.drain() {
        if let Err(e) = state.identity.record(event, kubehero_identity::Durability::Queued).await {
            tracing::error!(error = %e, "the row of sampled requests could not be queued");
        }
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Rows written before identities were (issuer, subject) pairs name people by a bare `sub`. With exactly one
/// issuer configured they can only be that issuer's and are rewritten as its subject keys; with several the
/// issuer is unknowable, so they are left to match nobody (admins and owners still manage them) and a warning
/// says how many.
async fn qualify_legacy_subjects(
    store: &dyn kubehero_store::Store,
    config: &ServerConfig,
) -> Result<(), kubehero_store::StoreError> {
    match config.issuers.as_slice() {
        [] => {}
        [only] => {
            let n = store.qualify_legacy_subjects(&only.verifier.issuer).await?;
            if n > 0 {
                tracing::info!(rows = n, issuer = %only.verifier.issuer, "owners and user bindings now name their issuer");
            }
        }
        _ => {
            let n = store.count_legacy_subjects().await?;
            if n > 0 {
                tracing::warn!(
                    rows = n,
                    "owners or user bindings from before issuers were recorded name a bare subject; with several \
                     issuers configured they match nobody. Re-create those bindings as <issuer>#<sub>."
                );
            }
        }
    }
    Ok(())
}
