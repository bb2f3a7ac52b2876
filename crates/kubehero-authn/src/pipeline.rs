//! The I/O-free verification pipeline for one issuer and a fixed key set (RFC 7515 §5.2, RFC 7519 §7.2,
//! RFC 8725 §3). [`crate::Verifier`] runs the same steps, adding issuer routing and unknown-`kid` refetch.
//!
//! Order, cheapest first: size → structure and base64 → header (alg allow-list, forbidden and critical
//! parameters) → payload JSON → `iss` → `aud`/`exp`/`nbf`/`iat` → key selection → signature → identity
//! claims. Nothing from the token is trusted until the signature verified; the early checks only refuse.

use crate::claims::{self, VerifiedToken};
use crate::config::IssuerConfig;
use crate::error::AuthnError;
use crate::json;
use crate::jwk::KeySet;
use crate::jws::{self, CompactJws, JwsHeader};
use serde_json::{Map, Value};

/// A token split, its header checked and its claim set parsed; nothing verified yet.
pub(crate) struct Prepared<'t> {
    pub jws: CompactJws<'t>,
    pub claims: Map<String, Value>,
}

pub(crate) fn prepare(token: &str) -> Result<Prepared<'_>, AuthnError> {
    let jws = jws::parse_compact(token)?;
    let claims = json::parse_object(&jws.payload).map_err(|e| AuthnError::Malformed(e.as_str()))?;
    Ok(Prepared { jws, claims })
}

/// Verifies a compact JWS's header and signature only; the payload is returned undecoded. For JWS uses
/// that are not JWTs, and for test vectors whose payloads are not claim sets.
pub fn verify_jws_with_keys(token: &str, keys: &KeySet) -> Result<(JwsHeader, Vec<u8>), AuthnError> {
    let jws = jws::parse_compact(token)?;
    keys.verify(&jws.header, jws.signing_input, &jws.signature)?;
    Ok((jws.header, jws.payload))
}

/// The full JWT pipeline for one issuer with a fixed key set. `iss` must equal `cfg.issuer` exactly.
pub fn verify_with_keys(
    token: &str,
    cfg: &IssuerConfig,
    keys: &KeySet,
    now_unix: i64,
) -> Result<VerifiedToken, AuthnError> {
    let p = prepare(token)?;
    if claims::issuer(&p.claims)? != cfg.issuer {
        return Err(AuthnError::UnknownIssuer);
    }
    let exp = claims::check_audience_and_time(&p.claims, cfg, now_unix)?;
    keys.verify(&p.jws.header, p.jws.signing_input, &p.jws.signature)?;
    claims::extract(p.claims, cfg, exp)
}
