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
//! - the SCIM directory's standing and admission: deprovisioned people are refused whatever they hold
//!   ([`directory`], [`Identity::admit`]), and linking key owners to their directory entry.
//!
//! Security rules (ARCHITECTURE.md invariants 2, 3, 4, 8):
//! - a credential that is present but fails any check is an error, never anonymous;
//! - secrets are looked up by their SHA-256 and never kept, logged or put in an error;
//! - a person is (issuer, subject): [`kubehero_core::subject_key`].

pub mod cache;
pub mod clock;
pub mod credential;
pub mod directory;
pub mod grants;
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
}
