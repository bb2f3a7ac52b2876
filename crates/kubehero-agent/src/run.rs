//! The agent's life: credentials (from the state directory, or a join), renewal at about two thirds of the
//! certificate's life, and the tunnel, reopened forever with capped exponential backoff and full jitter.

use crate::client::{AgentError, ControlPlane};
use crate::state::{Credentials, State};
use crate::tunnel::StreamHandler;
use kubehero_core::backoff::Backoff;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the agent needs.
#[derive(Clone)]
pub struct AgentConfig {
    pub server: ControlPlane,
    pub cluster: String,
    /// `khj_…`, needed only when the state holds no usable certificate.
    pub join_token: Option<String>,
    /// `sha256:…` of the control plane's agent CA, needed with a join token.
    pub ca_hash: Option<String>,
    pub state: State,
    /// Sent on the tunnel request.
    pub version: String,
    /// First reconnect step (the wait is drawn from `[0, step)`, the step doubles up to `reconnect_max`).
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("cluster", &self.cluster)
            .field("join_token", &self.join_token.as_ref().map(|_| "<redacted>"))
            .field("ca_hash", &self.ca_hash)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A tunnel that stood this long before it ended proves the control plane was reachable: the next attempt starts
/// the backoff over. One that ends sooner (refused right after the handshake, say) keeps growing the wait.
const STOOD: Duration = Duration::from_secs(2);

/// Default reconnect steps: the first wait is anywhere in 0–4 s, later ones up to 30 s.
pub const RECONNECT_MIN: Duration = Duration::from_secs(4);
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The credentials to start with: stored ones that have not expired, unless the agent was given a join token
/// other than the one they came from (a re-install); else a join with the token (retried while the control
/// plane cannot be reached; a refusal ends it, unless stored credentials are still usable).
pub async fn credentials(cfg: &AgentConfig, stop: &mut watch::Receiver<bool>) -> Result<Credentials, AgentError> {
    let mut stored = cfg.state.load().await.map_err(AgentError::Local)?;
    let new_token = cfg.join_token.as_deref().map(crate::client::token_hash);
    let mut fallback = None;
    if let (Some(c), Some(t)) = (&stored, &new_token) {
        if c.joined_with.as_ref() != Some(t) {
            tracing::info!(cluster = %cfg.cluster, "a join token other than the stored credentials' was given; joining with it");
            fallback = stored.take();
        }
    }
    if let Some(c) = stored {
        let facts = c.facts()?;
        if facts.cn.as_deref() != Some(cfg.cluster.as_str()) {
            return Err(AgentError::Local(format!(
                "{} holds a certificate for cluster {:?}, not {:?}",
                cfg.state,
                facts.cn.unwrap_or_default(),
                cfg.cluster
            )));
        }
        if facts.not_after > now() {
            return Ok(c);
        }
        tracing::warn!(cluster = %cfg.cluster, "the stored certificate has expired; joining again");
    }
    let (Some(token), Some(hash)) = (&cfg.join_token, &cfg.ca_hash) else {
        return Err(AgentError::Local(format!(
            "no usable certificate in {} and no --join-token/--ca-hash: run `kubehero cluster join-token {}` \
             for a new join token",
            cfg.state, cfg.cluster
        )));
    };
    let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max).full_jitter();
    loop {
        match cfg.server.join(&cfg.cluster, token, hash).await {
            Ok(c) => {
                cfg.state.save(&c).await.map_err(AgentError::Local)?;
                tracing::info!(cluster = %cfg.cluster, "joined; certificate stored");
                return Ok(c);
            }
            Err(e @ AgentError::Refused { .. }) => {
                let usable = fallback.take().filter(|c| c.facts().is_ok_and(|f| f.not_after > now()));
                if let Some(c) = usable {
                    tracing::warn!(error = %e, "the join token was refused; keeping the stored certificate");
                    return Ok(c);
                }
                return Err(e);
            }
            Err(AgentError::Unreachable(e)) => {
                tracing::warn!(error = %e, "join failed; retrying");
                if sleep_or_stop(backoff.next_wait(), stop).await {
                    return Err(AgentError::Local("stopped".into()));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Resolves once told to stop (the guard `wait_for` returns is not held across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps; true if told to stop meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(stop) => true,
    }
}

/// When to renew a certificate held from `now` on: after 60–70 % (uniformly) of the life it has left, so a
/// fresh certificate renews at about two thirds of its life (its `notBefore` is back-dated for clock skew and
/// does not count), and after a failed renewal the next try comes sooner, always before expiry.
fn renew_at(c: &Credentials, now: i64) -> i64 {
    match c.facts() {
        Ok(f) => now + ((f.not_after - now).max(0) as f64 * (0.6 + 0.1 * kubehero_core::backoff::jitter_unit())) as i64,
        Err(_) => now,
    }
}

/// Renews before expiry, forever: a failed renewal is retried (backoff, never past expiry by waiting), a new
/// certificate is stored and published on `tx` for the tunnel to swap to.
async fn renewals(cfg: AgentConfig, tx: watch::Sender<Credentials>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_secs(1), cfg.reconnect_max).full_jitter();
    loop {
        let current = tx.borrow().clone();
        let t = now();
        let wait = (renew_at(&current, t) - t).max(0) as u64;
        if sleep_or_stop(Duration::from_secs(wait), &mut stop).await {
            return;
        }
        match cfg.server.renew(&cfg.cluster, &current).await {
            Ok(next) => {
                if let Err(e) = cfg.state.save(&next).await {
                    tracing::error!(error = %e, "the renewed certificate could not be stored; keeping it in memory");
                }
                tracing::info!(cluster = %cfg.cluster, "certificate renewed");
                backoff.reset();
                let _ = tx.send(next);
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewal failed; retrying");
                if sleep_or_stop(backoff.next_wait(), &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Runs the agent until `stop`: renewals in the background, the tunnel in the foreground. A renewed certificate
/// opens a new tunnel; the old one is shut down gracefully, so streams in flight finish on it.
pub async fn run(
    cfg: AgentConfig,
    handler: Arc<dyn StreamHandler>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let creds = credentials(&cfg, &mut stop).await?;
    let (tx, mut rx) = watch::channel(creds);
    let renewer = tokio::spawn(renewals(cfg.clone(), tx, stop.clone()));
    let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max).full_jitter();
    loop {
        // Set when a tunnel that stood for a while was closed cleanly by its replica (a rolling restart).
        let mut handed_back = false;
        let creds = rx.borrow_and_update().clone();
        match cfg.server.tunnel(&creds, &cfg.version, handler.clone()).await {
            Ok(conn) => {
                tracing::info!(cluster = %cfg.cluster, "tunnel up");
                let up = std::time::Instant::now();
                let mut conn = Box::pin(conn);
                let mut clean = false;
                let stopped = loop {
                    tokio::select! {
                        r = &mut conn => {
                            clean = r.is_ok();
                            match r {
                                Ok(()) => tracing::warn!(cluster = %cfg.cluster, "tunnel closed by the control plane"),
                                Err(e) => tracing::warn!(cluster = %cfg.cluster, error = %e, "tunnel lost"),
                            }
                            break false;
                        }
                        changed = rx.changed() => {
                            if changed.is_err() {
                                continue;
                            }
                            let next = rx.borrow_and_update().clone();
                            match cfg.server.tunnel(&next, &cfg.version, handler.clone()).await {
                                Ok(new) => {
                                    let mut old = std::mem::replace(&mut conn, Box::pin(new));
                                    old.as_mut().graceful_shutdown();
                                    tokio::spawn(old);
                                    tracing::info!(cluster = %cfg.cluster, "tunnel moved to the renewed certificate");
                                }
                                Err(e) => tracing::warn!(error = %e, "the renewed certificate's tunnel failed; keeping the old one"),
                            }
                        }
                        _ = stopped(&mut stop) => break true,
                    }
                };
                if stopped {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                    renewer.abort();
                    return Ok(());
                }
                // A tunnel that stood for a while ended: the backoff starts over, so the agent is back on
                // another replica well within 30 s. Closed by its replica (a shutdown, or its process gone: the
                // connection ends without an error), the next attempt comes within a second; broken (a network
                // fault), within the first step (0-4 s). One that ends at once keeps growing the wait, so a broken
                // control plane is not hammered.
                if up.elapsed() > STOOD {
                    backoff.reset();
                    handed_back = clean;
                }
            }
            Err(e) => tracing::warn!(cluster = %cfg.cluster, error = %e, "tunnel could not be opened"),
        }
        // Spread over the second, so many agents do not arrive at once.
        let wait = if handed_back {
            Duration::from_secs_f64(kubehero_core::backoff::jitter_unit().min(1.0))
        } else {
            backoff.next_wait()
        };
        if sleep_or_stop(wait, &mut stop).await {
            renewer.abort();
            return Ok(());
        }
    }
}
