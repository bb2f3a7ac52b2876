//! Compact JWS parsing and JOSE header checks (RFC 7515 §7.1, §4.1; RFC 8725 §3).
//!
//! Security rules:
//! - the token is refused before any decoding when longer than [`MAX_TOKEN_LEN`];
//! - exactly three non-empty parts, each strict base64url without padding (RFC 7515 §2, §3.1): no `=`,
//!   no `+`/`/`, no whitespace, no non-zero trailing bits, so every token has one canonical spelling;
//! - the header is a strict JSON object ([`crate::json`]): duplicate names are refused (RFC 7515 §4);
//! - `alg` is matched exactly against an allow-list of asymmetric algorithms (RFC 8725 §3.1, §3.2):
//!   `none`, HMAC (the RSA-public-key-as-HMAC-secret confusion), PSS, ES512 and EdDSA are refused;
//! - headers that point at keys (`jku`, `x5u`, `jwk`, `x5c`) are refused and never followed
//!   (RFC 8725 §3.10); `crit` is refused because no extension is understood (RFC 7515 §4.1.11);
//!   JWE (`enc`, `zip`) and unencoded-payload (`b64`, RFC 7797) parameters are refused.

use crate::error::{sanitize, AuthnError};
use crate::json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

/// The longest token accepted, in bytes (16 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The signature algorithms accepted (RFC 7518 §3.1). Everything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA P-256 with SHA-256, raw `r||s` signature (RFC 7518 §3.4).
    Es256,
    /// ECDSA P-384 with SHA-384, raw `r||s` signature.
    Es384,
}

impl Alg {
    /// Every accepted algorithm.
    pub const ALL: [Alg; 5] = [Alg::Rs256, Alg::Rs384, Alg::Rs512, Alg::Es256, Alg::Es384];

    /// Parses the exact, case-sensitive JOSE name.
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "RS384" => Some(Alg::Rs384),
            "RS512" => Some(Alg::Rs512),
            "ES256" => Some(Alg::Es256),
            "ES384" => Some(Alg::Es384),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
        }
    }

    /// Whether this is an RSA algorithm.
    pub fn is_rsa(self) -> bool {
        matches!(self, Alg::Rs256 | Alg::Rs384 | Alg::Rs512)
    }
}

/// The JOSE header parameters this implementation uses, after every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwsHeader {
    /// The signature algorithm.
    pub alg: Alg,
    /// The key id, if any.
    pub kid: Option<String>,
    /// The media type, if any (not interpreted).
    pub typ: Option<String>,
}

/// A compact JWS split and decoded; the signature is not yet checked.
#[derive(Debug)]
pub struct CompactJws<'t> {
    /// The checked header.
    pub header: JwsHeader,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, exactly as received (RFC 7515 §5.2 step 8).
    pub signing_input: &'t [u8],
    /// The decoded signature bytes.
    pub signature: Vec<u8>,
}

/// Decodes strict base64url without padding.
pub fn b64_decode(part: &str) -> Result<Vec<u8>, AuthnError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| AuthnError::Malformed("invalid base64url"))
}

/// Splits and decodes a compact JWS and checks its header (steps 1–3 of the verification pipeline).
pub fn parse_compact(token: &str) -> Result<CompactJws<'_>, AuthnError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthnError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AuthnError::Malformed("expected three dot-separated parts"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(AuthnError::Malformed("empty part"));
    }
    let header_bytes = b64_decode(h)?;
    let header = parse_header(&header_bytes)?;
    let payload = b64_decode(p)?;
    let signature = b64_decode(s)?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(CompactJws { header, payload, signing_input, signature })
}

/// Parses and checks a decoded JOSE header.
pub fn parse_header(bytes: &[u8]) -> Result<JwsHeader, AuthnError> {
    let map = json::parse_object(bytes).map_err(|e| AuthnError::Malformed(e.as_str()))?;
    let alg = match map.get("alg") {
        Some(Value::String(s)) => Alg::from_name(s).ok_or_else(|| AuthnError::UnsupportedAlgorithm(sanitize(s)))?,
        Some(_) => return Err(AuthnError::UnsupportedAlgorithm("(not a string)".into())),
        None => return Err(AuthnError::UnsupportedAlgorithm("(missing)".into())),
    };
    if map.contains_key("crit") {
        return Err(AuthnError::CriticalHeader);
    }
    for name in ["jku", "x5u", "jwk", "x5c", "enc", "zip", "b64"] {
        if map.contains_key(name) {
            return Err(AuthnError::ForbiddenHeader(name));
        }
    }
    let mut kid = None;
    let mut typ = None;
    for (name, value) in map {
        match name.as_str() {
            "kid" => match value {
                Value::String(s) => kid = Some(s),
                _ => return Err(AuthnError::Malformed("kid is not a string")),
            },
            "typ" => match value {
                Value::String(s) => typ = Some(s),
                _ => return Err(AuthnError::Malformed("typ is not a string")),
            },
            "cty" if !value.is_string() => return Err(AuthnError::Malformed("cty is not a string")),
            _ => {}
        }
    }
    Ok(JwsHeader { alg, kid, typ })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(h: &str) -> String {
        format!("{}.{}.{}", enc(h), enc("{}"), enc("sig"))
    }

    #[test]
    fn strict_base64() {
        assert_eq!(b64_decode("YQ").unwrap(), b"a");
        assert!(b64_decode("YQ==").is_err());
        assert!(b64_decode("YR").is_err(), "non-zero trailing bits");
        assert!(b64_decode("Y Q").is_err());
        assert!(b64_decode("+/").is_err());
        assert_eq!(b64_decode("-w").unwrap(), vec![0xfb]);
        assert!(b64_decode("-_").is_err(), "non-zero trailing bits");
        assert!(b64_decode("Y").is_err());
    }

    #[test]
    fn header_checks() {
        assert!(parse_compact(&tok(r#"{"alg":"RS256","kid":"k","typ":"JWT"}"#)).is_ok());
        assert_eq!(
            parse_compact(&tok(r#"{"alg":"none"}"#)).unwrap_err(),
            AuthnError::UnsupportedAlgorithm("none".into())
        );
        assert!(matches!(parse_compact(&tok(r#"{"alg":"RS256 "}"#)), Err(AuthnError::UnsupportedAlgorithm(_))));
        assert_eq!(parse_compact(&tok(r#"{"alg":"RS256","crit":[]}"#)).unwrap_err(), AuthnError::CriticalHeader);
        assert_eq!(
            parse_compact(&tok(r#"{"alg":"RS256","jku":"https://x"}"#)).unwrap_err(),
            AuthnError::ForbiddenHeader("jku")
        );
        assert!(matches!(parse_compact(&tok(r#"{"alg":"RS256","kid":1}"#)), Err(AuthnError::Malformed(_))));
        assert!(matches!(parse_compact(&tok(r#"{"alg":"RS256","alg":"RS256"}"#)), Err(AuthnError::Malformed(_))));
    }

    #[test]
    fn sanitizes_alg() {
        let long = format!(r#"{{"alg":"{}\u0000"}}"#, "A".repeat(100));
        let Err(AuthnError::UnsupportedAlgorithm(s)) = parse_compact(&tok(&long)) else { panic!() };
        assert_eq!(s.len(), 32);
    }
}
