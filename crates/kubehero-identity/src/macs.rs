//! HMAC-SHA256 under a key derived from `AUDIT_HMAC_KEY` and from each of `KUBEHERO_AUDIT_PREVIOUS_KEYS`: what
//! this replica makes is signed with the current one, and what was made before a rotation (or by a replica that
//! has not been given the new key yet) still checks.

/// The current key first, then the previous ones.
pub struct Macs(Vec<ring::hmac::Key>);

impl std::fmt::Debug for Macs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Macs(<{} keys>)", self.0.len())
    }
}

impl Macs {
    /// `keys`: the derived keys, the current one first (`HmacKeys::derive_all`).
    pub fn new(keys: &[[u8; 32]]) -> Macs {
        Macs(keys.iter().map(|k| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k)).collect())
    }

    /// The tag under the current key (empty when there is no key, which nothing then checks).
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.0.first().map(|k| ring::hmac::sign(k, data).as_ref().to_vec()).unwrap_or_default()
    }

    /// One tag per key, the current key's first: for a peer that may have only one of them.
    pub fn sign_each(&self, data: &[u8]) -> Vec<Vec<u8>> {
        self.0.iter().map(|k| ring::hmac::sign(k, data).as_ref().to_vec()).collect()
    }

    /// Whether `tag` is `data`'s under any of the keys (constant-time comparison).
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        self.0.iter().any(|k| ring::hmac::verify(k, data, tag).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_with_the_current_key_and_checks_with_any() {
        let (old, rotated) = (Macs::new(&[[7; 32]]), Macs::new(&[[8; 32], [7; 32]]));
        assert!(rotated.verify(b"x", &old.sign(b"x")), "made before the rotation");
        assert!(!old.verify(b"x", &rotated.sign(b"x")), "made with the new key");
        assert!(rotated.sign_each(b"x").iter().any(|t| old.verify(b"x", t)), "one tag for each key");
        assert!(!rotated.verify(b"y", &old.sign(b"x")));
        assert!(Macs::new(&[]).sign(b"x").is_empty() && !Macs::new(&[]).verify(b"x", &[]));
    }
}
