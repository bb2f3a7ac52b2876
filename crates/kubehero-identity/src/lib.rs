//! KubeHero's identity service, without HTTP: every credential a door accepts becomes a [`Principal`] here, or
//! a documented [`IdentityError`]. The server's surfaces (API, sign-in, SCIM, and next the agent listener, the
//! kube proxy, TokenReview) each parse their transport's credential and ask this crate who it is.
//!
//! It owns:
//! - credential kinds, prefixes and lifetimes, and minting sessions and CLI tokens ([`credential`]);
//! - resolving a bearer token (IdP JWT, managed or static API key, CLI token), a session secret, or no
//!   credential (anonymous in open mode) ([`Identity::bearer`], [`Identity::session`], [`Identity::anonymous`]);
//! - the grants a principal holds ([`grants::BindingsCache`]);
//! - the SCIM client's token and its per-address throttle ([`scim_token`]);
//! - the deprovisioning effects of directory changes on every credential a person holds, found by indexed
//!   queries ([`Identity::user_changed`], [`Identity::user_deleted`], [`Identity::members_removed`]);
//! - the one entry point into the audit log ([`Identity::record`], [`Identity::record_all`]);
//! - the SCIM directory's standing and admission: deprovisioned people are refused whatever they hold
//!   ([`directory`], [`Identity::admit`]), and linking key owners to their directory entry.
//!
//! Security rules (ARCHITECTURE.md invariants 2, 3, 4, 8):
//! - a credential that is present but fails any check is an error, never anonymous;
//! - secrets are looked up by their SHA-256 and never kept, logged or put in an error;
//! - a person is (issuer, subject): [`kubehero_core::subject_key`].

pub mod cache;
pub mod clock;
pub mod cluster_token;
pub mod credential;
mod deprovision;
pub mod directory;
pub mod grants;
pub mod macs;
mod resolve;
pub mod scim_token;

pub use clock::{Clock, SystemClock};
pub use credential::{CredentialKind, SignedIn};

use kubehero_authn::{StaticApiKeys, TokenCache, Verifier};
use kubehero_store::{Store, StoreError};
use std::sync::Arc;

/// Why a credential did not yield a principal.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The credential failed a check, or names someone deprovisioned; the message says which check, never
    /// any of the credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// No credential was presented and `KUBEHERO_REQUIRE_AUTH` is on.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Required,
    /// The store could not answer; nothing about the credential was decided.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operating system gave no randomness for a new secret.
    #[error("no randomness available for a new secret")]
    NoRandomness,
    /// An audit row that must be durable before the answer could not be written: the caller must not answer
    /// as if the action had been recorded.
    #[error("the audit log cannot be written: {0}")]
    AuditUnavailable(String),
}

/// How long a request's answer waits for its audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answered after the row is durable.
    Durable,
    /// Answered once the row is queued for the same chain (plain reads).
    Queued,
}

/// What the service reports as it works (the server exports these as metrics).
pub trait Observer: Send + Sync {
    /// One authentication outcome: credential kind (`jwt`, `api_key`, `cli_token`, `session`, `none`,
    /// `anonymous`) and result (`ok`, `rejected`, a verifier reason, `deprovisioned`, …).
    fn authentication(&self, kind: &'static str, result: &'static str);
    /// Seconds one uncached JWT verification took.
    fn verification(&self, seconds: f64);
    /// A session or CLI token's sliding expiry was written.
    fn session_renewal(&self);
}

/// Everything the identity service needs, built once at start-up.
pub struct Identity {
    pub store: Arc<dyn Store>,
    pub verifier: Verifier,
    /// Verified JWTs by the token's digest, until their `exp`.
    pub token_cache: Arc<TokenCache>,
    /// Recently read sessions and CLI tokens.
    pub credentials: cache::CredentialCache,
    pub api_keys: StaticApiKeys,
    pub bindings: grants::BindingsCache,
    /// The SCIM directory's view of people (no-op when SCIM is off).
    pub directory: directory::Directory,
    pub clock: Arc<dyn Clock>,
    /// `KUBEHERO_REQUIRE_AUTH`: no credential is refused rather than anonymous.
    pub require_auth: bool,
    pub observer: Arc<dyn Observer>,
    /// The SCIM client's token, when `KUBEHERO_SCIM_TOKEN` is set.
    pub scim: Option<scim_token::ScimToken>,
    /// The one group-commit writer of the audit chain.
    pub audit: kubehero_audit::AuditLog,
    /// Request and audit event ids.
    pub ids: kubehero_audit::IdSource,
    /// Per-cluster access tokens (`khx_…`) for kubectl.
    pub cluster_tokens: cluster_token::ClusterTokens,
}

impl Identity {
    /// The one entry point into the audit log for a request's row: durable before the answer, or queued.
    pub async fn record(&self, event: kubehero_core::AuditEvent, wait: Durability) -> Result<(), IdentityError> {
        let done = match wait {
            Durability::Durable => self.audit.record(event).await.map(drop),
            Durability::Queued => self.audit.enqueue(event).await,
        };
        done.map_err(|e| IdentityError::AuditUnavailable(e.to_string()))
    }

    /// The one way a write reaches the store with its audit row: both commit in one transaction or neither
    /// does. Rows of reads answered before it (queued, not yet committed) are committed first, so the chain
    /// keeps the order in which requests were answered.
    pub async fn apply(
        &self,
        change: kubehero_store::Change<'_>,
        event: kubehero_core::AuditEvent,
    ) -> Result<kubehero_store::Changed, kubehero_store::StoreError> {
        self.audit.flush().await.map_err(|e| kubehero_store::StoreError::Unavailable(e.to_string()))?;
        let rows = kubehero_store::WithRows { events: std::slice::from_ref(&event), sealer: self.audit.sealer() };
        let (changed, sealed) = self.store.apply(change, Some(rows)).await?;
        self.audit.committed(&sealed);
        Ok(changed)
    }
}
