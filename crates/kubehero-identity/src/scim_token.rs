//! The IdP's SCIM client credential (`KUBEHERO_SCIM_TOKEN`): one bearer token, compared in constant time, and
//! a per-address throttle of failed attempts. An address that keeps presenting wrong tokens is refused for a
//! while whatever it presents, after the same comparison work as any other request (no timing difference
//! between the paths). A right token yields the provisioner principal, which may provision and nothing else.

use kubehero_authn::Secret;
use kubehero_core::Principal;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Failed attempts an address may make before it is throttled, and how fast that allowance refills.
const FAILURE_BURST: f64 = 10.0;
const FAILURE_REFILL_PER_SEC: f64 = 1.0 / 6.0;
/// Addresses tracked at most; beyond, fully refilled entries are dropped first.
const TRACKED_ADDRESSES: usize = 10_000;

/// Why a SCIM request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimRefusal {
    /// No token, or the wrong one.
    Unauthenticated,
    /// Too many failures from this address: retry after this many seconds.
    Throttled { retry_after_secs: u64 },
}

/// The SCIM token check and the per-address throttle of failed attempts.
pub struct ScimToken {
    digest: [u8; 32],
    failures: Mutex<HashMap<IpAddr, Bucket>>,
}

impl std::fmt::Debug for ScimToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimToken").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures not yet forgiven.
    level: f64,
    at: Instant,
}

impl Bucket {
    fn now(self, now: Instant) -> f64 {
        (self.level - now.duration_since(self.at).as_secs_f64() * FAILURE_REFILL_PER_SEC).max(0.0)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ScimToken {
    pub fn new(token: &Secret) -> ScimToken {
        ScimToken { digest: digest(token.expose().as_bytes()), failures: Mutex::new(HashMap::new()) }
    }

    /// Checks a presented token from `addr`: the provisioner when it is right and the address is not
    /// throttled. The comparison runs in every case.
    pub fn check(&self, presented: Option<&str>, addr: Option<IpAddr>) -> Result<Principal, ScimRefusal> {
        // Digests of equal length, compared in constant time: neither the length nor a prefix of the token
        // shows in the timing.
        let sent = digest(presented.unwrap_or_default().as_bytes());
        let right = bool::from(subtle::ConstantTimeEq::ct_eq(&sent[..], &self.digest[..])) && presented.is_some();
        let Some(addr) = addr else {
            return if right { Ok(Principal::provisioner()) } else { Err(ScimRefusal::Unauthenticated) };
        };
        let now = Instant::now();
        let mut failures = self.failures.lock();
        let level = failures.get(&addr).map_or(0.0, |b| b.now(now));
        // One more failure must fit in the allowance, or the address waits until it does.
        if level + 1.0 > FAILURE_BURST {
            let wait = ((level + 1.0 - FAILURE_BURST) / FAILURE_REFILL_PER_SEC).ceil() as u64;
            return Err(ScimRefusal::Throttled { retry_after_secs: wait.max(1) });
        }
        if right {
            return Ok(Principal::provisioner());
        }
        if failures.len() >= TRACKED_ADDRESSES && !failures.contains_key(&addr) {
            failures.retain(|_, b| b.now(now) > 0.0);
            if failures.len() >= TRACKED_ADDRESSES {
                failures.clear();
            }
        }
        failures.insert(addr, Bucket { level: level + 1.0, at: now });
        Err(ScimRefusal::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_token_is_the_provisioner_and_failures_throttle_the_address() {
        let t = ScimToken::new(&Secret::new("0123456789abcdef0123456789abcdef"));
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        let p = t.check(Some("0123456789abcdef0123456789abcdef"), Some(addr)).unwrap();
        assert_eq!(p.kind, kubehero_core::PrincipalKind::Provisioner);
        for _ in 0..10 {
            assert_eq!(t.check(Some("wrong"), Some(addr)).unwrap_err(), ScimRefusal::Unauthenticated);
        }
        assert!(matches!(t.check(Some("wrong"), Some(addr)), Err(ScimRefusal::Throttled { .. })));
        let right = t.check(Some("0123456789abcdef0123456789abcdef"), Some(addr));
        assert!(matches!(right, Err(ScimRefusal::Throttled { .. })), "throttled whatever it sends");
        assert!(t.check(Some("0123456789abcdef0123456789abcdef"), Some("10.0.0.2".parse().unwrap())).is_ok());
        assert!(t.check(None, Some("10.0.0.2".parse().unwrap())).is_err(), "no token");
        assert!(!format!("{t:?}").contains("0123"));
    }
}
