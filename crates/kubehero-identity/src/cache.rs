//! A short-lived in-process cache of dashboard sessions and CLI tokens, keyed by the SHA-256 of the secret.
//!
//! Looking a session up in the database on every request would make a cookie or CLI token far dearer than a
//! cached JWT. Entries live [`CREDENTIAL_CACHE_TTL`] at most: a revocation or rotation made through this
//! process drops the entry at once, one made through another replica is seen within the TTL.

use kubehero_store::SessionRecord;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a cached session is trusted before the database is asked again.
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(2);
const CAPACITY: usize = 100_000;

/// Sessions and CLI tokens recently read from the store.
pub struct CredentialCache {
    /// SHA-256 of the secret → the record and when it was read.
    inner: Mutex<lru::LruCache<[u8; 32], Entry>>,
}

type Entry = (Arc<SessionRecord>, Instant);

/// The cache key of a secret.
pub fn key(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache {
            inner: Mutex::new(lru::LruCache::new(NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN))),
        }
    }
}

impl CredentialCache {
    /// The record for `key` if read less than the TTL ago.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<SessionRecord>> {
        let mut c = self.inner.lock();
        match c.get(key) {
            Some((r, at)) if at.elapsed() < CREDENTIAL_CACHE_TTL => Some(Arc::clone(r)),
            Some(_) => {
                c.pop(key);
                None
            }
            None => None,
        }
    }

    /// Remembers a record just read from the store.
    pub fn put(&self, key: [u8; 32], r: Arc<SessionRecord>) {
        self.inner.lock().put(key, (r, Instant::now()));
    }

    /// Replaces a cached record after a sliding renewal, keeping its age.
    pub fn touched(&self, key: &[u8; 32], r: Arc<SessionRecord>) {
        if let Some(entry) = self.inner.lock().get_mut(key) {
            entry.0 = r;
        }
    }

    /// Forgets the credential with public id `id` (revoked or rotated here).
    pub fn forget_id(&self, id: &str) {
        let mut c = self.inner.lock();
        let keys: Vec<[u8; 32]> = c.iter().filter(|(_, (r, _))| r.id == id).map(|(k, _)| *k).collect();
        for h in keys {
            c.pop(&h);
        }
    }
}
