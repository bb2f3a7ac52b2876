//! The one error type of this crate.
//!
//! Security rule: no variant carries the token, a key, or any other secret, so `Display` and `Debug` are
//! safe to log and to put in audit rows. Values echoed back (an unsupported `alg`) are sanitized and cut to
//! 32 characters first.

/// Why a credential or a piece of authentication configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    /// The token is longer than [`crate::MAX_TOKEN_LEN`] bytes; refused before any decoding.
    #[error("token too large")]
    TooLarge,
    /// The token is not a well-formed compact JWS/JWT (RFC 7515 §7.1): wrong number of parts, bad base64url,
    /// invalid JSON, duplicate member names, a non-object header or payload. The text says which.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The `alg` header is missing or is not one of RS256, RS384, RS512, ES256, ES384 (RFC 8725 §3.1).
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The header names a key or certificate by reference or by value (`jku`, `x5u`, `jwk`, `x5c`), or
    /// uses JWE/RFC 7797 parameters (`enc`, `zip`, `b64`). These are never followed (RFC 8725 §3.10).
    #[error("forbidden header parameter {0:?}")]
    ForbiddenHeader(&'static str),
    /// The header has a `crit` parameter; this implementation understands no extensions (RFC 7515 §4.1.11).
    #[error("critical header extensions are not supported")]
    CriticalHeader,
    /// The `iss` claim names no configured issuer. Nothing is ever fetched for it.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// The issuer is configured but its keys have never been fetched (the IdP is unreachable).
    #[error("issuer {0} is unavailable: no signing keys fetched yet")]
    IssuerUnavailable(String),
    /// No `aud` value matches a configured audience, or `aud` has the wrong shape (RFC 7519 §4.1.3).
    #[error("invalid audience")]
    InvalidAudience,
    /// `exp` is more than the allowed clock skew in the past (RFC 7519 §4.1.4).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is more than the allowed clock skew in the future (RFC 7519 §4.1.5, §4.1.6).
    #[error("token not yet valid")]
    NotYetValid,
    /// A claim has the wrong JSON type or an unacceptable value; names the claim.
    #[error("invalid claim {0:?}")]
    InvalidClaim(&'static str),
    /// A required claim is absent; names the claim.
    #[error("missing claim {0:?}")]
    MissingClaim(&'static str),
    /// No key in the issuer's key set matches the header's `kid` and `alg`.
    #[error("no matching signing key")]
    UnknownKey,
    /// The signature does not verify with the selected key.
    #[error("bad signature")]
    BadSignature,
    /// An entry of `KUBEHERO_API_KEYS` is invalid. Names the entry by index, never by its content.
    #[error("KUBEHERO_API_KEYS entry {index}: {reason}")]
    InvalidApiKeyConfig {
        /// Zero-based index of the entry in the comma-separated list.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An issuer configuration is invalid (bad URL, duplicate issuer, ...).
    #[error("invalid issuer configuration: {0}")]
    InvalidIssuerConfig(String),
    /// An unexpected internal failure (e.g. the system RNG failed).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl AuthnError {
    /// A short snake_case label for metrics and audit rows.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthnError::TooLarge => "too_large",
            AuthnError::Malformed(_) => "malformed",
            AuthnError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            AuthnError::ForbiddenHeader(_) => "forbidden_header",
            AuthnError::CriticalHeader => "critical_header",
            AuthnError::UnknownIssuer => "unknown_issuer",
            AuthnError::IssuerUnavailable(_) => "issuer_unavailable",
            AuthnError::InvalidAudience => "invalid_audience",
            AuthnError::Expired => "expired",
            AuthnError::NotYetValid => "not_yet_valid",
            AuthnError::InvalidClaim(_) => "invalid_claim",
            AuthnError::MissingClaim(_) => "missing_claim",
            AuthnError::UnknownKey => "unknown_key",
            AuthnError::BadSignature => "bad_signature",
            AuthnError::InvalidApiKeyConfig { .. } => "invalid_api_key_config",
            AuthnError::InvalidIssuerConfig(_) => "invalid_issuer_config",
            AuthnError::Internal(_) => "internal",
        }
    }
}

/// Makes an attacker-chosen string safe to echo: printable ASCII only (others become `?`), at most 32 chars.
pub(crate) fn sanitize(s: &str) -> String {
    s.chars().take(32).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}
