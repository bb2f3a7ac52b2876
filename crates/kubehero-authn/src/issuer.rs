//! One issuer's discovery document, JWK Set cache and refresh (OpenID Connect Discovery 1.0 §4,
//! RFC 8414 §3, RFC 7517 §5).
//!
//! Security rules:
//! - only configured issuers are ever contacted (ARCHITECTURE.md invariant 6); the discovery URL is derived from
//!   the configured issuer, the discovery `issuer` must equal it byte-for-byte (OIDC Discovery §4.3), and
//!   `jwks_uri` must be https (or loopback http);
//! - redirects are never followed; every response is read incrementally against a size cap (discovery
//!   256 KiB, JWKS 1 MiB) and a timeout, whatever `Content-Length` says, so a hostile or broken IdP can
//!   cause an error but never a hang or unbounded memory;
//! - a failed fetch keeps the previous keys (invariant 7: the IdP being down does not take the cp down);
//! - refetches triggered by an unknown `kid` are single-flight and at most one per `refetch_cooldown`, so a
//!   flood of tokens with random `kid`s cannot be turned into a flood of requests to the IdP.

use crate::config::{check_url, IssuerConfig};
use crate::json;
use crate::jwk::KeySet;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest discovery document accepted.
pub const MAX_DISCOVERY_BYTES: usize = 256 * 1024;
/// Largest JWK Set accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Outcome of one discovery + JWKS fetch, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchOutcome {
    /// Keys fetched and installed.
    Ok,
    /// The fetch failed; previous keys were kept.
    Error,
}

impl FetchOutcome {
    /// `"ok"` or `"error"`, the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchOutcome::Ok => "ok",
            FetchOutcome::Error => "error",
        }
    }
}

/// Receives events worth counting; the server turns them into Prometheus counters.
pub trait AuthnObserver: Send + Sync {
    /// Called after every discovery + JWKS fetch attempt.
    fn jwks_fetch(&self, issuer: &str, outcome: FetchOutcome);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl AuthnObserver for NoopObserver {
    fn jwks_fetch(&self, _issuer: &str, _outcome: FetchOutcome) {}
}

/// The state of one issuer, for `/readyz` and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerHealth {
    /// The configured issuer.
    pub issuer: String,
    /// Whether usable keys are held.
    pub healthy: bool,
    /// Number of usable keys.
    pub keys: usize,
    /// When keys were last fetched successfully, Unix seconds.
    pub last_success_unix: Option<i64>,
    /// The last fetch error, if the last attempt failed.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Status {
    last_success_unix: Option<i64>,
    last_error: Option<String>,
}

/// One issuer: configuration, HTTP client, current keys and fetch bookkeeping.
pub(crate) struct IssuerState {
    pub cfg: IssuerConfig,
    /// `None` until the first successful fetch.
    keys: RwLock<Option<Arc<KeySet>>>,
    status: Mutex<Status>,
    /// Held for the duration of an unknown-`kid` refetch (single flight).
    refetch: tokio::sync::Mutex<()>,
    last_refetch: Mutex<Option<Instant>>,
    client: reqwest::Client,
    observer: Arc<dyn AuthnObserver>,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl IssuerState {
    pub fn new(cfg: IssuerConfig, observer: Arc<dyn AuthnObserver>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.http_timeout)
            .connect_timeout(cfg.http_timeout)
            .user_agent(concat!("kubehero/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(IssuerState {
            cfg,
            keys: RwLock::new(None),
            status: Mutex::new(Status::default()),
            refetch: tokio::sync::Mutex::new(()),
            last_refetch: Mutex::new(None),
            client,
            observer,
        })
    }

    /// The current keys, `None` if never fetched.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.read().clone()
    }

    /// Installs a key set directly (tests, and callers that obtained keys out of band).
    pub fn install(&self, keys: KeySet) {
        *self.keys.write() = Some(Arc::new(keys));
    }

    pub fn health(&self) -> IssuerHealth {
        let keys = self.keys().map_or(0, |k| k.len());
        let st = self.status.lock();
        IssuerHealth {
            issuer: self.cfg.issuer.clone(),
            healthy: keys > 0,
            keys,
            last_success_unix: st.last_success_unix,
            last_error: st.last_error.clone(),
        }
    }

    /// Fetches discovery + JWKS once and installs the keys; on failure keeps the old keys. Records health
    /// and reports the outcome to the observer.
    pub async fn refresh(&self) -> Result<(), String> {
        let mut result = self.fetch_key_set().await;
        // A document with no usable key (`{"keys":[]}`, only `oct` or unsupported keys) is more likely a
        // broken IdP deployment than a deliberate withdrawal: treat it as a failed refresh so the keys that
        // worked keep working. Key rotation always publishes the new key, so this never blocks one.
        if result.as_ref().is_ok_and(|(set, _)| set.is_empty()) && self.keys().is_some_and(|k| !k.is_empty()) {
            result = Err("JWKS has no usable keys".to_string());
        }
        match result {
            Ok((set, skipped)) => {
                for reason in &skipped {
                    tracing::warn!(issuer = %self.cfg.issuer, %reason, "JWKS key skipped");
                }
                tracing::debug!(issuer = %self.cfg.issuer, keys = set.len(), "JWKS fetched");
                self.install(set);
                let mut st = self.status.lock();
                st.last_success_unix = Some(unix_now());
                st.last_error = None;
                drop(st);
                self.observer.jwks_fetch(&self.cfg.issuer, FetchOutcome::Ok);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, "JWKS fetch failed; keeping previous keys");
                self.status.lock().last_error = Some(e.clone());
                self.observer.jwks_fetch(&self.cfg.issuer, FetchOutcome::Error);
                Err(e)
            }
        }
    }

    fn in_cooldown(&self) -> bool {
        self.last_refetch.lock().is_some_and(|t| t.elapsed() < self.cfg.refetch_cooldown)
    }

    /// Called when a token names a `kid` the current set lacks. Refetches at most once per cooldown window
    /// and never concurrently; concurrent callers wait for the one fetch in flight and then re-check.
    pub async fn refetch_for_kid(&self, kid: &str) -> Option<Arc<KeySet>> {
        if self.in_cooldown() {
            return self.keys();
        }
        let _flight = self.refetch.lock().await;
        if let Some(k) = self.keys() {
            if k.contains_kid(kid) {
                return Some(k);
            }
        }
        {
            let mut last = self.last_refetch.lock();
            if last.is_some_and(|t| t.elapsed() < self.cfg.refetch_cooldown) {
                drop(last);
                return self.keys();
            }
            *last = Some(Instant::now());
        }
        tracing::info!(issuer = %self.cfg.issuer, "unknown kid: refetching JWKS");
        // Failure is recorded by `refresh`; the old keys stay.
        let _ = self.refresh().await;
        self.keys()
    }

    async fn fetch_key_set(&self) -> Result<(KeySet, Vec<String>), String> {
        let base = self.cfg.issuer.strip_suffix('/').unwrap_or(&self.cfg.issuer);
        let discovery_url = format!("{base}/.well-known/openid-configuration");
        let body = self.get_limited(&discovery_url, MAX_DISCOVERY_BYTES).await?;
        let doc = json::parse_object(&body).map_err(|e| format!("discovery document: {}", e.as_str()))?;
        match doc.get("issuer") {
            Some(Value::String(s)) if *s == self.cfg.issuer => {}
            Some(Value::String(_)) => {
                return Err("discovery document names a different issuer (must match exactly)".into())
            }
            _ => return Err("discovery document has no issuer string".into()),
        }
        let Some(Value::String(jwks_uri)) = doc.get("jwks_uri") else {
            return Err("discovery document has no jwks_uri string".into());
        };
        check_url(jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
        let body = self.get_limited(jwks_uri, MAX_JWKS_BYTES).await?;
        KeySet::from_jwks_json(&body).map_err(|e| format!("JWKS: {e}"))
    }

    /// GET `url` and read at most `limit` bytes of a 200 response within `http_timeout`.
    async fn get_limited(&self, url: &str, limit: usize) -> Result<Vec<u8>, String> {
        let fetch = async {
            let mut resp = self
                .client
                .get(url)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
            if resp.status() != reqwest::StatusCode::OK {
                return Err(format!("GET {url}: HTTP status {}", resp.status().as_u16()));
            }
            if resp.content_length().is_some_and(|l| l > limit as u64) {
                return Err(format!("GET {url}: response larger than {limit} bytes"));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {}", e.without_url()))? {
                if body.len() + chunk.len() > limit {
                    return Err(format!("GET {url}: response larger than {limit} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        match tokio::time::timeout(self.cfg.http_timeout + Duration::from_millis(100), fetch).await {
            Ok(r) => r,
            Err(_) => Err(format!("GET {url}: timed out")),
        }
    }
}
