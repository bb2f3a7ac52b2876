//! JWK Set parsing into ready-to-use verification keys (RFC 7517 §4–§5, RFC 7518 §6).
//!
//! Security rules:
//! - a key that is unusable or unsafe is skipped with a reason; one bad key never fails the whole set;
//! - symmetric (`oct`) keys are never used: this crate verifies asymmetric signatures only, so an HMAC
//!   token can never be checked against a public key's bytes (RFC 8725 §3.1);
//! - RSA moduli below 2048 bits, even moduli, bad exponents and ROCA-fingerprinted moduli are skipped;
//! - EC keys must be P-256 or P-384 with exactly-sized coordinates; the uncompressed point is built once;
//! - a key with `alg` is only used for that exact `alg`; a key without it for any alg of its family;
//! - `use` other than `sig` and `key_ops` without `verify` make a key unusable (RFC 7517 §4.2, §4.3);
//! - `x5c`/`x5u` are ignored and never fetched; duplicate `kid`s keep the first key.
//!
//! Keys are decoded once, when the set is parsed, so verification never re-parses JWK JSON or base64.

use crate::error::{sanitize, AuthnError};
use crate::json;
use crate::jws::{b64_decode, Alg, JwsHeader};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// The most keys kept from one JWK Set; the rest are skipped.
pub const MAX_KEYS: usize = 64;

/// When a token has no `kid`, at most this many compatible keys are tried.
pub const MAX_KEYS_TRIED_WITHOUT_KID: usize = 4;

/// An elliptic curve this crate verifies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (`ES256`).
    P256,
    /// NIST P-384 (`ES384`).
    P384,
}

#[derive(Debug, Clone)]
enum Material {
    /// Big-endian modulus and exponent without leading zeros.
    Rsa { n: Box<[u8]>, e: Box<[u8]> },
    /// Uncompressed SEC1 point `0x04 || x || y`.
    Ec { curve: Curve, point: Box<[u8]> },
}

/// One verification key decoded from a JWK.
#[derive(Debug, Clone)]
pub struct VerifyKey {
    kid: Option<String>,
    alg: Option<Alg>,
    material: Material,
}

impl VerifyKey {
    /// The key id, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Whether this key may verify a signature made with `alg`.
    pub fn compatible(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match &self.material {
            Material::Rsa { .. } => alg.is_rsa(),
            Material::Ec { curve: Curve::P256, .. } => alg == Alg::Es256,
            Material::Ec { curve: Curve::P384, .. } => alg == Alg::Es384,
        }
    }

    /// Verifies `signature` over `message` with ring. The caller checked [`VerifyKey::compatible`].
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Rsa { n, e } => {
                let params = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Es256 | Alg::Es384 => return false,
                };
                RsaPublicKeyComponents { n: &n[..], e: &e[..] }.verify(params, message, signature).is_ok()
            }
            Material::Ec { curve, point } => {
                // RFC 7518 §3.4: the JWS signature is the fixed-width R || S, never DER.
                let (algorithm, len): (&'static dyn signature::VerificationAlgorithm, usize) = match (alg, curve) {
                    (Alg::Es256, Curve::P256) => (&signature::ECDSA_P256_SHA256_FIXED, 64),
                    (Alg::Es384, Curve::P384) => (&signature::ECDSA_P384_SHA384_FIXED, 96),
                    _ => return false,
                };
                signature.len() == len
                    && UnparsedPublicKey::new(algorithm, &point[..]).verify(message, signature).is_ok()
            }
        }
    }
}

/// A JWK Set reduced to the keys that are safe to verify with. Immutable once built; shared behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl KeySet {
    /// An empty set.
    pub fn empty() -> KeySet {
        KeySet::default()
    }

    /// Parses a JWK Set document (`{"keys":[...]}`). Fails only when the document itself is not a strict JSON
    /// object with a `keys` array; each unusable key is skipped and the reason returned alongside.
    pub fn from_jwks_json(bytes: &[u8]) -> Result<(KeySet, Vec<String>), AuthnError> {
        let doc = json::parse_object(bytes).map_err(|e| AuthnError::Malformed(e.as_str()))?;
        let Some(Value::Array(keys)) = doc.get("keys") else {
            return Err(AuthnError::Malformed("JWK Set has no keys array"));
        };
        Ok(KeySet::from_jwk_values(keys))
    }

    /// Builds a set from already-parsed JWK objects (see [`KeySet::from_jwks_json`]).
    pub fn from_jwk_values(keys: &[Value]) -> (KeySet, Vec<String>) {
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for (i, v) in keys.iter().enumerate() {
            let kid = v.get("kid").and_then(Value::as_str);
            let label = match kid {
                Some(k) => format!("key {i} (kid {:?})", sanitize(k)),
                None => format!("key {i}"),
            };
            if set.keys.len() >= MAX_KEYS {
                skipped.push(format!("{label}: more than {MAX_KEYS} keys"));
                continue;
            }
            let Value::Object(m) = v else {
                skipped.push(format!("{label}: not a JSON object"));
                continue;
            };
            match parse_jwk(m) {
                Ok(key) => {
                    if key.kid.is_some() && set.keys.iter().any(|k| k.kid == key.kid) {
                        skipped.push(format!("{label}: duplicate kid, the first key with it is kept"));
                    } else {
                        set.keys.push(key);
                    }
                }
                Err(reason) => skipped.push(format!("{label}: {reason}")),
            }
        }
        (set, skipped)
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The usable keys.
    pub fn keys(&self) -> &[VerifyKey] {
        &self.keys
    }

    /// Whether a key with this exact `kid` exists.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Selects the key(s) for `header` and verifies the signature (RFC 7515 §5.2 steps 6–8, RFC 8725 §3.1).
    ///
    /// `UnknownKey` means no key fits (the kid is absent from the set, or its key cannot do `alg`);
    /// callers that may refetch the set use [`KeySet::contains_kid`] to tell the two apart.
    pub fn verify(&self, header: &JwsHeader, message: &[u8], signature: &[u8]) -> Result<(), AuthnError> {
        let alg = header.alg;
        if let Some(kid) = header.kid.as_deref() {
            let key = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).ok_or(AuthnError::UnknownKey)?;
            if !key.compatible(alg) {
                return Err(AuthnError::UnknownKey);
            }
            return if key.verify(alg, message, signature) { Ok(()) } else { Err(AuthnError::BadSignature) };
        }
        let mut tried = 0;
        for key in self.keys.iter().filter(|k| k.compatible(alg)).take(MAX_KEYS_TRIED_WITHOUT_KID) {
            tried += 1;
            if key.verify(alg, message, signature) {
                return Ok(());
            }
        }
        Err(if tried == 0 { AuthnError::UnknownKey } else { AuthnError::BadSignature })
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

fn req_b64(m: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = opt_str(m, name)?.ok_or_else(|| format!("missing {name}"))?;
    b64_decode(s).map_err(|_| format!("{name} is not base64url"))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

fn parse_jwk(m: &Map<String, Value>) -> Result<VerifyKey, String> {
    let kty = opt_str(m, "kty")?.ok_or("missing kty")?;
    if let Some(u) = opt_str(m, "use")? {
        if u != "sig" {
            return Err(format!("use is {:?}, not \"sig\"", sanitize(u)));
        }
    }
    match m.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if !ops.iter().any(|o| o.as_str() == Some("verify")) => {
            return Err("key_ops lacks \"verify\"".into());
        }
        Some(Value::Array(_)) => {}
        Some(_) => return Err("key_ops is not an array".into()),
    }
    let kid = opt_str(m, "kid")?.map(str::to_owned);
    let alg_name = opt_str(m, "alg")?;
    let alg = match alg_name {
        None => None,
        Some(a) => Some(Alg::from_name(a).ok_or_else(|| format!("unsupported alg {:?}", sanitize(a)))?),
    };
    let material = match kty {
        "RSA" => {
            if alg.is_some_and(|a| !a.is_rsa()) {
                return Err("alg does not match kty RSA".into());
            }
            parse_rsa(m)?
        }
        "EC" => parse_ec(m, alg)?,
        "oct" => return Err("symmetric (oct) keys are never used".into()),
        other => return Err(format!("unsupported kty {:?}", sanitize(other))),
    };
    Ok(VerifyKey { kid, alg, material })
}

fn parse_rsa(m: &Map<String, Value>) -> Result<Material, String> {
    let n_raw = req_b64(m, "n")?;
    let e_raw = req_b64(m, "e")?;
    let n = strip_leading_zeros(&n_raw);
    let e = strip_leading_zeros(&e_raw);
    let bits = match n.first() {
        Some(&b) => (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
        None => 0,
    };
    if bits < 2048 {
        return Err(format!("RSA modulus of {bits} bits is below 2048"));
    }
    if bits > 8192 {
        return Err(format!("RSA modulus of {bits} bits is above 8192"));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err("RSA modulus is even".into());
    }
    if e.is_empty() || e.len() > 4 {
        return Err("RSA exponent out of range".into());
    }
    let e_val = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if e_val < 3 || e_val & 1 == 0 {
        return Err("RSA exponent must be odd and at least 3".into());
    }
    if roca_fingerprint(n) {
        return Err("RSA modulus has the ROCA fingerprint (CVE-2017-15361)".into());
    }
    Ok(Material::Rsa { n: n.into(), e: e.into() })
}

fn parse_ec(m: &Map<String, Value>, alg: Option<Alg>) -> Result<Material, String> {
    let crv = opt_str(m, "crv")?.ok_or("missing crv")?;
    let (curve, len, want) = match crv {
        "P-256" => (Curve::P256, 32, Alg::Es256),
        "P-384" => (Curve::P384, 48, Alg::Es384),
        other => return Err(format!("unsupported curve {:?}", sanitize(other))),
    };
    if alg.is_some_and(|a| a != want) {
        return Err(format!("alg does not match crv {crv}"));
    }
    let x = req_b64(m, "x")?;
    let y = req_b64(m, "y")?;
    if x.len() != len || y.len() != len {
        return Err(format!("{crv} coordinates must be {len} bytes"));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(Material::Ec { curve, point: point.into() })
}

/// The ROCA fingerprint (Nemec et al., CCS 2017): moduli from the flawed Infineon generator satisfy
/// `n mod p ∈ ⟨65537⟩ (mod p)` for each of these small primes; a random modulus does so with probability
/// about 2^-154.
fn roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107,
        109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let r = n.iter().fold(0u32, |acc, &b| ((acc << 8) | u32::from(b)) % p);
        let g = 65537 % p;
        let mut x = 1;
        loop {
            if x == r {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                return false;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_with_reasons() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"AAAA","kid":"a"},
            {"kty":"EC","crv":"P-521","x":"AA","y":"AA","kid":"b"},
            {"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"c"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"d"},
            "not an object",
            {"kty":"OKP","crv":"Ed25519","x":"AA"}
        ]}"#;
        let (set, skipped) = KeySet::from_jwks_json(doc).unwrap();
        assert!(set.is_empty());
        assert_eq!(skipped.len(), 6, "{skipped:?}");
    }

    #[test]
    fn document_errors() {
        assert!(KeySet::from_jwks_json(b"{}").is_err());
        assert!(KeySet::from_jwks_json(b"{\"keys\":{}}").is_err());
        assert!(KeySet::from_jwks_json(b"{\"keys\":[],\"keys\":[]}").is_err());
        assert!(KeySet::from_jwks_json(b"[]").is_err());
        assert_eq!(KeySet::from_jwks_json(b"{\"keys\":[]}").unwrap().0.len(), 0);
    }

    #[test]
    fn roca_is_rare_on_ordinary_numbers() {
        // 65537-smooth residues are rare; an ordinary odd number is not fingerprinted.
        assert!(!roca_fingerprint(&[0xc3; 256]));
    }
}
