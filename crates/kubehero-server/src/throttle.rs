//! Bounds on what requests without a credential may cost: a token bucket per client address
//! ([`crate::net::ClientAddr`]) for the routes that create pre-authentication state (device codes), the
//! table of addresses itself bounded (least recently seen forgotten first).

use crate::error::{ApiError, Code};
use axum::response::{IntoResponse, Response};
use lru::LruCache;
use parking_lot::Mutex;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Instant;

/// Addresses remembered at once.
const TRACKED: usize = 10_000;

/// A token bucket per address: `burst` at once, then one every `every`.
pub struct PerSource {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<LruCache<IpAddr, (f64, Instant)>>,
}

impl PerSource {
    pub fn new(burst: u32, every: std::time::Duration) -> PerSource {
        PerSource {
            burst: f64::from(burst),
            per_sec: 1.0 / every.as_secs_f64().max(0.001),
            buckets: Mutex::new(LruCache::new(NonZeroUsize::new(TRACKED).unwrap_or(NonZeroUsize::MIN))),
        }
    }

    /// Takes one token for `addr`; `Err(seconds)` until the next one when none is left.
    pub fn take(&self, addr: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let (tokens, at) = buckets.get(&addr).copied().unwrap_or((self.burst, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.per_sec).min(self.burst);
        if tokens < 1.0 {
            buckets.put(addr, (tokens, now));
            return Err(((1.0 - tokens) / self.per_sec).ceil() as u64);
        }
        buckets.put(addr, (tokens - 1.0, now));
        Ok(())
    }
}

/// A 429 with `Retry-After`, in the API's error shape.
pub fn too_many(message: impl Into<String>, retry_after_secs: u64) -> Response {
    let mut r = ApiError::new(Code::ResourceExhausted, message).into_response();
    if let Ok(v) = retry_after_secs.max(1).to_string().parse() {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_per_address() {
        let limit = PerSource::new(3, std::time::Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        for _ in 0..3 {
            assert_eq!(limit.take(a), Ok(()));
        }
        let wait = limit.take(a).err().unwrap_or_default();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(limit.take(b), Ok(()), "other addresses are unaffected");
    }
}
