//! Static API keys (`KUBEHERO_API_KEYS`, seed 001), key generation and hashing.
//!
//! Security rules (ARCHITECTURE.md invariant 4): keys are held only as SHA-256 digests; a presented key is
//! compared against every stored digest in constant time with no early exit; a key is identified in logs
//! and audit rows by the first 16 hex characters of its SHA-256, never by its value; configuration errors
//! name the entry by index, never by content; [`Secret`] never prints its value.

use crate::error::AuthnError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kubehero_core::Role;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Prefix of generated API keys, so scanners and humans can recognise them.
pub const API_KEY_PREFIX: &str = "khk_";

/// Shortest static API key accepted.
pub const MIN_API_KEY_LEN: usize = 16;

pub use kubehero_core::Secret;

fn sha256(s: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

use kubehero_core::hex::encode as hex;

/// Lowercase hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    hex(&sha256(s))
}

/// The public identifier of an API key: the first 16 hex characters of its SHA-256.
pub fn api_key_id(token: &str) -> String {
    hex(&sha256(token)[..8])
}

/// A new random API key: `khk_` + base64url (no padding) of 32 bytes from the system CSPRNG.
pub fn generate_api_key() -> Result<Secret, AuthnError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| AuthnError::Internal("system random generator failed"))?;
    Ok(Secret::new(format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))))
}

/// Whether a bearer credential has the shape of a compact JWS (two dots), to route it to the JWT path.
pub fn looks_like_jwt(token: &str) -> bool {
    // `split` finds each dot with a vectorised search; a byte-by-byte count showed up in request profiles.
    let mut dots = token.split('.');
    dots.nth(2).is_some() && dots.next().is_none()
}

/// A matched static API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticKeyMatch {
    /// First 16 hex characters of the key's SHA-256.
    pub id: String,
    /// The role the key was configured with.
    pub role: Role,
}

#[derive(Clone)]
struct StoredKey {
    hash: [u8; 32],
    role: Role,
}

/// The keys from `KUBEHERO_API_KEYS`, stored as SHA-256 digests only.
#[derive(Clone, Default)]
pub struct StaticApiKeys {
    keys: Vec<StoredKey>,
}

impl fmt::Debug for StaticApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticApiKeys").field("len", &self.keys.len()).finish()
    }
}

impl StaticApiKeys {
    /// Parses comma-separated `<token>` or `<token>:<role>` entries (default role `viewer`). Blank entries
    /// (a trailing comma) are ignored. A `:` in an entry must introduce a valid role. Tokens must be at
    /// least [`MIN_API_KEY_LEN`] characters; the same token twice is refused.
    pub fn parse(env_value: &str) -> Result<Self, AuthnError> {
        let mut keys: Vec<StoredKey> = Vec::new();
        for (index, entry) in env_value.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let err = |reason| AuthnError::InvalidApiKeyConfig { index, reason };
            let (token, role) = match entry.rsplit_once(':') {
                Some((token, role)) => {
                    (token.trim(), role.trim().parse::<Role>().map_err(|_| err("unknown role after ':'"))?)
                }
                None => (entry, Role::Viewer),
            };
            if token.is_empty() {
                return Err(err("empty token"));
            }
            if token.len() < MIN_API_KEY_LEN {
                return Err(err("token too short (at least 16 characters)"));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err("token contains whitespace or control characters"));
            }
            let hash = sha256(token);
            if keys.iter().any(|k| bool::from(k.hash.ct_eq(&hash))) {
                return Err(err("duplicate token"));
            }
            keys.push(StoredKey { hash, role });
        }
        Ok(StaticApiKeys { keys })
    }

    /// Finds the key matching `token`. Hashes it, then compares against every stored digest in constant
    /// time without early exit, so timing reveals neither which key matched nor how close a guess was.
    pub fn lookup(&self, token: &str) -> Option<StaticKeyMatch> {
        // Without configured keys there is nothing to compare against (and no digest worth computing).
        if self.keys.is_empty() {
            return None;
        }
        let hash = sha256(token);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, k) in self.keys.iter().enumerate() {
            let eq = k.hash.ct_eq(&hash);
            index = u64::conditional_select(&index, &(i as u64), eq);
            found |= eq;
        }
        if !bool::from(found) {
            return None;
        }
        let k = self.keys.get(usize::try_from(index).ok()?)?;
        Some(StaticKeyMatch { id: hex(&hash[..8]), role: k.role })
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_lookup() {
        let keys = StaticApiKeys::parse(" ci-token-0123456789 , ops-token-0123456789:admin,").unwrap();
        assert_eq!(keys.len(), 2);
        let m = keys.lookup("ci-token-0123456789").unwrap();
        assert_eq!(m.role, Role::Viewer);
        assert_eq!(m.id, sha256_hex("ci-token-0123456789")[..16]);
        assert_eq!(keys.lookup("ops-token-0123456789").unwrap().role, Role::Admin);
        assert!(keys.lookup("ops-token-0123456789:admin").is_none());
        assert!(keys.lookup("").is_none());
        assert!(StaticApiKeys::parse("").unwrap().is_empty());
    }

    #[test]
    fn parse_errors_name_index_not_token() {
        for (v, index) in [
            ("short", 0),
            ("ok-token-0123456789,:admin", 1),
            ("ok-token-0123456789:superuser", 0),
            ("a:b:c-0123456789012345", 0),
            ("ok-token-0123456789,ok-token-0123456789", 1),
        ] {
            let e = StaticApiKeys::parse(v).unwrap_err();
            assert!(matches!(e, AuthnError::InvalidApiKeyConfig { index: i, .. } if i == index), "{v}: {e:?}");
            assert!(!e.to_string().contains("token-0123"), "{e}");
        }
    }

    #[test]
    fn generated_keys_and_secret() {
        let a = generate_api_key().unwrap();
        let b = generate_api_key().unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(API_KEY_PREFIX));
        assert_eq!(a.expose().len(), 4 + 43);
        assert_eq!(format!("{a:?} {a}"), "Secret(***) Secret(***)");
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("khk_abc"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a.b"));
        assert!(looks_like_jwt("a..b"));
    }
}
