//! Shared application state, built once at start-up. [`AppState`] is one `Arc`: every middleware layer and
//! handler clones it per request, so a clone is one reference count, not one per field.

use crate::grants::BindingsCache;
use crate::metrics::Metrics;
use kubehero_authn::{StaticApiKeys, TokenCache, Verifier};
use kubehero_store::Store;
use std::sync::Arc;

/// Wall-clock time, injectable so tests can move it.
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> i64;
    /// Unix milliseconds (audit timestamps). Defaults to [`Clock::now`] in whole seconds.
    fn now_ms(&self) -> i64 {
        self.now().saturating_mul(1000)
    }
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// Everything a handler may use: a cheap handle to [`Shared`].
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    /// The group-commit audit writer every audited request waits on.
    pub audit: kubehero_audit::AuditLog,
    /// Progress of the in-process audit forwarder's sinks (empty when none is configured).
    pub forward: Arc<kubehero_audit::forward::ForwardStatus>,
    pub store: Arc<dyn Store>,
    /// Browser sign-in, when `KUBEHERO_OIDC_CLIENT_ID` is set.
    pub login: Option<Arc<crate::login::Login>>,
    pub verifier: Verifier,
    pub token_cache: Arc<TokenCache>,
    /// Recently read sessions and CLI tokens.
    pub credentials: Arc<crate::credentials::CredentialCache>,
    pub api_keys: Arc<StaticApiKeys>,
    pub bindings: Arc<BindingsCache>,
    /// The SCIM directory's view of people (no-op when SCIM is off).
    pub directory: Arc<crate::directory::Directory>,
    /// The SCIM endpoint's token check and throttle, when `KUBEHERO_SCIM_TOKEN` is set.
    pub scim: Option<Arc<crate::scim::ScimGate>>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Request and audit event ids.
    pub ids: kubehero_audit::IdSource,
    /// `KUBEHERO_REQUIRE_AUTH`.
    pub require_auth: bool,
    /// How plain reads are audited (`KUBEHERO_AUDIT_READS`).
    pub audit_reads: crate::config::AuditReads,
}
