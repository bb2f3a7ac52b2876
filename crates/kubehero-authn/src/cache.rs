//! A bounded cache of verified tokens, keyed by the SHA-256 of the token so the cache never holds the
//! credential itself. Entries are never returned past their `exp` (and are dropped when found expired).
//! Revocation (deprovisioned users) is re-checked by the caller on every hit.

use crate::claims::VerifiedToken;
use lru::LruCache;
use parking_lot::Mutex;
use ring::digest;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// An LRU of verified tokens.
pub struct TokenCache {
    inner: Mutex<LruCache<[u8; 32], Arc<VerifiedToken>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("len", &self.len()).finish()
    }
}

fn key(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (at least 1).
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        TokenCache { inner: Mutex::new(LruCache::new(cap)) }
    }

    /// The cached result for `token`, unless absent or expired at `now_unix`.
    pub fn get(&self, token: &str, now_unix: i64) -> Option<Arc<VerifiedToken>> {
        let k = key(token);
        let mut c = self.inner.lock();
        let hit = c.get(&k)?;
        if now_unix > hit.exp {
            c.pop(&k);
            return None;
        }
        Some(Arc::clone(hit))
    }

    /// Remembers a verified token.
    pub fn insert(&self, token: &str, v: Arc<VerifiedToken>) {
        let k = key(token);
        self.inner.lock().put(k, v);
    }

    /// Forgets every cached token (e.g. after a configuration change).
    pub fn clear(&self) {
        self.inner.lock().clear();
    }

    /// Number of cached entries (expired ones included until they are looked up or evicted).
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vt(exp: i64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            issuer: "i".into(),
            sub: "s".into(),
            email: None,
            groups: vec![],
            legacy_roles: vec![],
            exp,
            raw_sub: "s".into(),
        })
    }

    #[test]
    fn never_past_exp_and_bounded() {
        let c = TokenCache::new(2);
        c.insert("a", vt(100));
        assert!(c.get("a", 100).is_some());
        assert!(c.get("a", 101).is_none());
        assert_eq!(c.len(), 0, "expired entry removed");
        c.insert("a", vt(100));
        c.insert("b", vt(100));
        c.insert("c", vt(100));
        assert_eq!(c.len(), 2);
        assert!(c.get("a", 0).is_none(), "least recently used evicted");
        assert!(TokenCache::new(0).get("x", 0).is_none());
    }
}
