//! KubeHero authentication: strict JWS/JWT verification (RFC 7515, 7519, 8725), OIDC discovery and JWK Set
//! caching with bounded refresh, a verified-token cache, and static API keys.
//!
//! Security rules this crate upholds (ARCHITECTURE.md invariants 2, 4, 5, 6, 7):
//! - every check fails closed with a typed [`AuthnError`]; nothing here panics on any input;
//! - only asymmetric algorithms on an allow-list are accepted, keys are chosen by the verifier's own JWK Set,
//!   never by a URL or key in the token, and only configured issuers are contacted;
//! - inputs are bounded: tokens 16 KiB, JSON depth 32, discovery 256 KiB, JWKS 1 MiB, fetch timeouts;
//! - secrets (tokens, API keys) never appear in errors or `Debug` output; API keys are stored hashed and
//!   compared in constant time;
//! - an unreachable IdP leaves previously fetched keys in use.
//!
//! No HTTP server code lives here; the only I/O is the outgoing discovery/JWKS fetches in [`issuer`].

pub mod apikey;
pub mod cache;
pub mod claims;
pub mod config;
pub mod error;
pub mod issuer;
pub mod json;
pub mod jwk;
pub mod jws;
pub mod pipeline;
pub mod verifier;

pub use apikey::{
    api_key_id, generate_api_key, looks_like_jwt, sha256_hex, Secret, StaticApiKeys, StaticKeyMatch, API_KEY_PREFIX,
};
pub use cache::TokenCache;
pub use claims::{VerifiedToken, CLOCK_SKEW_SECS};
pub use config::IssuerConfig;
pub use error::AuthnError;
pub use issuer::{AuthnObserver, FetchOutcome, IssuerHealth, NoopObserver};
pub use jwk::KeySet;
pub use jws::{Alg, JwsHeader, MAX_TOKEN_LEN};
pub use pipeline::{verify_jws_with_keys, verify_with_keys};
pub use verifier::Verifier;
