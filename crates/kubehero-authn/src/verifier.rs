//! Multi-issuer JWT verification: routes a token to the one configured issuer whose string equals its
//! `iss` exactly, then runs [`crate::pipeline`] with that issuer's cached keys, refetching once (subject to
//! single-flight and cooldown) when the token names a `kid` the cache lacks (key rotation).
//!
//! Security rules: a token's `iss` never causes a fetch unless it is configured (invariant 6); keys are
//! fetched in the background and a failed refresh keeps the old ones (invariant 7); `start` never blocks.

use crate::claims::{self, VerifiedToken};
use crate::config::IssuerConfig;
use crate::error::AuthnError;
use crate::issuer::{AuthnObserver, IssuerHealth, IssuerState};
use crate::jwk::KeySet;
use crate::pipeline::prepare;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Verifies JWTs from a fixed set of issuers. Cheap to clone; create one per process.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Vec<Arc<IssuerState>>,
    started: AtomicBool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuers", &self.issuers()).finish()
    }
}

impl Verifier {
    /// Validates every issuer configuration; fails on an invalid or duplicate issuer. Fetches nothing.
    pub fn new(issuers: Vec<IssuerConfig>, observer: Arc<dyn AuthnObserver>) -> Result<Self, AuthnError> {
        let mut states: Vec<Arc<IssuerState>> = Vec::with_capacity(issuers.len());
        for cfg in issuers {
            cfg.validate().map_err(AuthnError::InvalidIssuerConfig)?;
            if states.iter().any(|s| s.cfg.issuer == cfg.issuer) {
                return Err(AuthnError::InvalidIssuerConfig(format!("issuer {:?} is configured twice", cfg.issuer)));
            }
            let state = IssuerState::new(cfg, Arc::clone(&observer)).map_err(AuthnError::InvalidIssuerConfig)?;
            states.push(Arc::new(state));
        }
        Ok(Verifier { inner: Arc::new(Inner { issuers: states, started: AtomicBool::new(false) }) })
    }

    /// Spawns one background task per issuer on the current tokio runtime: fetch discovery + JWKS, retrying
    /// with exponential backoff (1 s doubling up to `retry_max`) until it succeeds, then refresh every
    /// `jwks_ttl` (a failed refresh keeps the old keys and retries with backoff). Returns immediately.
    /// Calling it again is a no-op; tasks end when the last clone of the verifier is dropped.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!("Verifier::start called outside a tokio runtime; JWKS will not be fetched");
            self.inner.started.store(false, Ordering::SeqCst);
            return;
        };
        for state in &self.inner.issuers {
            handle.spawn(refresh_loop(Arc::downgrade(state)));
        }
    }

    /// Fetches every issuer's keys once, now, concurrently (for start-up probes, tests and operators).
    /// Returns the issuers that failed, with the error.
    pub async fn refresh_now(&self) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        let mut tasks = Vec::new();
        for s in &self.inner.issuers {
            let s = Arc::clone(s);
            tasks.push(tokio::spawn(async move {
                let r = s.refresh().await;
                (s.cfg.issuer.clone(), r)
            }));
        }
        for t in tasks {
            if let Ok((issuer, Err(e))) = t.await {
                failed.push((issuer, e));
            }
        }
        failed
    }

    /// Installs a key set for an issuer without fetching (tests and benchmarks). Returns false if the
    /// issuer is not configured.
    pub fn install_keys(&self, issuer: &str, keys: KeySet) -> bool {
        match self.inner.issuers.iter().find(|s| s.cfg.issuer == issuer) {
            Some(s) => {
                s.install(keys);
                true
            }
            None => false,
        }
    }

    /// Verifies a JWT at `now_unix` (see [`crate::verify_with_keys`] for the checks, in order).
    pub async fn verify(&self, token: &str, now_unix: i64) -> Result<VerifiedToken, AuthnError> {
        let p = prepare(token)?;
        let iss = claims::issuer(&p.claims)?;
        let state = self.inner.issuers.iter().find(|s| s.cfg.issuer == iss).ok_or(AuthnError::UnknownIssuer)?;
        let keys = state.keys().ok_or_else(|| AuthnError::IssuerUnavailable(state.cfg.issuer.clone()))?;
        let exp = claims::check_audience_and_time(&p.claims, &state.cfg, now_unix)?;
        let header = &p.jws.header;
        match keys.verify(header, p.jws.signing_input, &p.jws.signature) {
            Err(AuthnError::UnknownKey) => match header.kid.as_deref() {
                // A kid we do not hold: maybe the IdP rotated keys. Refetch (bounded), then retry once.
                Some(kid) if !keys.contains_kid(kid) => {
                    let keys = state.refetch_for_kid(kid).await.ok_or(AuthnError::UnknownKey)?;
                    keys.verify(header, p.jws.signing_input, &p.jws.signature)?;
                }
                _ => return Err(AuthnError::UnknownKey),
            },
            other => other?,
        }
        claims::extract(p.claims, &state.cfg, exp)
    }

    /// Health of every issuer, in configuration order.
    pub fn health(&self) -> Vec<IssuerHealth> {
        self.inner.issuers.iter().map(|s| s.health()).collect()
    }

    /// The configured issuer strings, in configuration order.
    pub fn issuers(&self) -> Vec<String> {
        self.inner.issuers.iter().map(|s| s.cfg.issuer.clone()).collect()
    }
}

/// The background task of one issuer. Holds only a weak reference so it ends with the verifier.
async fn refresh_loop(state: Weak<IssuerState>) {
    const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff: Option<kubehero_core::backoff::Backoff> = None;
    loop {
        let Some(s) = state.upgrade() else { return };
        let wait = match s.refresh().await {
            Ok(()) => {
                backoff = None;
                s.cfg.jwks_ttl
            }
            Err(_) => backoff
                .get_or_insert_with(|| kubehero_core::backoff::Backoff::new(INITIAL_BACKOFF, s.cfg.retry_max))
                .next_wait(),
        };
        drop(s);
        tokio::time::sleep(wait).await;
    }
}
