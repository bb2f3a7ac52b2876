//! Shared application state, built once at start-up. [`AppState`] is one `Arc`: every middleware layer and
//! handler clones it per request, so a clone is one reference count, not one per field.

use crate::metrics::Metrics;
use kubehero_identity::Identity;
use kubehero_store::Store;
use std::sync::Arc;

pub use kubehero_identity::{Clock, SystemClock};

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
    /// Progress of the in-process audit forwarder's sinks (empty when none is configured).
    pub forward: Arc<kubehero_audit::forward::ForwardStatus>,
    pub store: Arc<dyn Store>,
    /// Browser sign-in, when `KUBEHERO_OIDC_CLIENT_ID` is set.
    pub login: Option<Arc<crate::login::Login>>,
    /// Who is asking: every credential kind to a principal, grants, directory standing (no HTTP).
    pub identity: Arc<Identity>,
    /// `KUBEHERO_PUBLIC_URL`, when set: where SCIM resources are located.
    pub public_url: Option<String>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// How plain reads are audited (`KUBEHERO_AUDIT_READS`).
    pub audit_reads: crate::config::AuditReads,
    /// The listener's limits (the header timeout also bounds how long a request body may stall).
    pub limits: crate::listener::Limits,
    /// The API listener's open connections.
    pub connections: Arc<crate::listener::ConnectionStats>,
    /// `KUBEHERO_TRUSTED_PROXIES`: whose `X-Forwarded-For` counts.
    pub trusted_proxies: crate::net::TrustedProxies,
    /// Requests without a credential, counted rather than written one by one past a few a minute.
    pub sampler: crate::audit::Sampler,
    /// Open Kubernetes streams, checked again every second.
    pub kube_streams: Arc<crate::kube::streams::Streams>,
    /// The agent CA, who may connect, and the open tunnels.
    pub agents: Arc<crate::agent::Agents>,
    /// The last certificate of `KUBEHERO_TLS_CERT` (the CA an API server needs to reach the issuer), if any.
    pub serving_ca_pem: Option<String>,
    /// What RBAC sync last pushed to each cluster connected here, and its agents' reports.
    pub rbac_pushes: Arc<crate::kube::rbac::Pushes>,
    /// The WorkOS Directory Sync webhook, when `KUBEHERO_WORKOS_WEBHOOK_SECRET` is set.
    pub workos: Option<crate::scim::workos::Webhook>,
    /// KubeHero's own OIDC issuer (direct tokens for clusters that trust it).
    pub issuer: Arc<crate::issuer::Issuer>,
    /// Device codes per client address (10 at once, then one every 30 s).
    pub device_codes: crate::throttle::PerSource,
    /// Break-glass code attempts per client address (each code is 160 random bits; this keeps guessing loud
    /// and slow anyway).
    pub breakglass_attempts: crate::throttle::PerSource,
    /// Whether this replica does the once-only work (checkpoints, forwarding, sweeps).
    pub lease: crate::lease::Lease,
}
