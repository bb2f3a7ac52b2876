//! The work that must happen once across replicas — signing audit checkpoints, forwarding the audit log to its
//! sinks, the expiry sweeps — runs on the replica that holds one lease in the store. Every replica tries to
//! take it every 5 s; the holder renews it for 15 s each time; when the holder dies, another replica takes it
//! within 15–20 s; a clean shutdown gives it up at once. `kubehero_lease_held` in `/metrics` says which replica
//! has it. (Replicas' clocks must agree to within a few seconds, as they must for tokens anyway.)

use crate::state::AppState;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// The lease's name in the store.
pub const NAME: &str = "kubehero.singleton";
const TTL_MS: i64 = 15_000;
const RENEW: Duration = Duration::from_secs(5);

/// This replica's side of the lease.
pub struct Lease {
    holder: String,
    held: watch::Sender<bool>,
}

impl Lease {
    /// A new holder id (random), not holding the lease.
    pub fn new() -> Lease {
        let id = kubehero_identity::credential::random_bytes(8).map(|b| kubehero_audit::hex::encode(&b));
        let holder = id.unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        Lease { holder, held: watch::channel(false).0 }
    }

    /// Whether this replica holds the lease now.
    pub fn held(&self) -> bool {
        *self.held.borrow()
    }

    /// Changes of [`Lease::held`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.held.subscribe()
    }

    /// Takes or renews the lease once; keeps holding it through a store outage shorter than its life.
    async fn renew(&self, s: &AppState, last_ok: &mut i64) {
        let now = s.clock.now_ms();
        let held = match s.store.acquire_lease(NAME, &self.holder, now, now + TTL_MS).await {
            Ok(true) => {
                *last_ok = now;
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "renewing the singleton lease failed");
                self.held() && now - *last_ok < TTL_MS - 2 * i64::try_from(RENEW.as_millis()).unwrap_or(0)
            }
        };
        if held != self.held() {
            tracing::info!(held, holder = %self.holder, "singleton lease (checkpoints, forwarding, sweeps)");
        }
        self.held.send_replace(held);
        s.metrics.lease_held(held);
    }

    /// Gives the lease up (a clean shutdown, after the work it guards has stopped).
    pub async fn release(&self, s: &AppState) {
        if self.held() {
            if let Err(e) = s.store.release_lease(NAME, &self.holder).await {
                tracing::warn!(error = %e, "giving up the singleton lease failed; it expires by itself");
            }
            self.held.send_replace(false);
        }
    }
}

impl Default for Lease {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes and renews the lease until `stop`.
pub async fn keep(s: AppState, mut stop: watch::Receiver<bool>) {
    let mut last_ok = 0;
    let mut tick = tokio::time::interval(RENEW);
    loop {
        tokio::select! {
            _ = tick.tick() => s.lease.renew(&s, &mut last_ok).await,
            _ = crate::stopped(&mut stop) => return,
        }
    }
}

/// Runs `work` while this replica holds the lease: started when it is taken, told to stop (its channel fires)
/// when the lease is lost or `stop` fires, and waited for; returns once `stop` fired and the work ended.
pub async fn while_held<F, Fut>(mut held: watch::Receiver<bool>, mut stop: watch::Receiver<bool>, work: F)
where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        while !*held.borrow_and_update() {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                r = held.changed() => if r.is_err() { return },
                _ = stop.changed() => {}
            }
        }
        let (tell, told) = watch::channel(false);
        let task = work(told);
        tokio::pin!(task);
        let finishing = loop {
            tokio::select! {
                _ = &mut task => break None,
                r = held.changed() => if r.is_err() || !*held.borrow_and_update() { break Some(false) },
                _ = stop.changed() => break Some(true),
            }
        };
        match finishing {
            // The work ended by itself: start it again when the lease is (still) held.
            None if *stop.borrow() => return,
            None => tokio::time::sleep(RENEW).await,
            Some(last) => {
                let _ = tell.send(true);
                task.await;
                if last {
                    return;
                }
            }
        }
    }
}
