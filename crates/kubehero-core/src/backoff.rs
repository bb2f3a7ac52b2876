//! The one retry policy: exponential backoff with jitter, for every loop that retries something remote (IdP
//! discovery and JWKS, audit forwarders). Jitter spreads the retries of many replicas (or many sinks) that
//! failed together, so a recovering peer is not hit by all of them at once.

use std::time::Duration;

/// Exponential backoff: each wait is drawn uniformly from the upper half of the current step, and the step
/// doubles after every failure up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    /// Draw from the whole step (`[0, step)`) instead of its upper half.
    full: bool,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff { min, max, step: min, full: false }
    }

    /// Full jitter: each wait is drawn from `[0, step)`, so many clients that failed at the same moment (every
    /// agent after a control plane restart) come back spread over the whole step, not in its upper half.
    pub fn full_jitter(mut self) -> Backoff {
        self.full = true;
        self
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.step = self.min;
    }

    /// The next wait, with jitter.
    pub fn next_wait(&mut self) -> Duration {
        self.next_wait_with(jitter_unit())
    }

    /// The next wait for a given `unit` in [0, 1) (deterministic, for tests): `step × (0.5 + unit / 2)`, or
    /// `step × unit` with full jitter.
    pub fn next_wait_with(&mut self, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let wait = self.step.mul_f64(if self.full { unit } else { 0.5 + unit / 2.0 });
        self.step = (self.step * 2).min(self.max);
        wait.max(Duration::from_millis(1))
    }
}

/// A number in [0, 1) that differs from call to call: the standard library's randomly keyed hasher, seeded
/// from the OS once per thread. Enough for spreading retries; never for secrets.
pub fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let h = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        assert_eq!(b.next_wait_with(0.0), Duration::from_millis(100));
        assert_eq!(b.next_wait_with(1.0), Duration::from_millis(400));
        assert_eq!(b.next_wait_with(0.5), Duration::from_millis(600));
        assert_eq!(b.next_wait_with(1.0), Duration::from_secs(1), "capped");
        b.reset();
        assert_eq!(b.next_wait_with(1.0), Duration::from_millis(200));
        let mut f = Backoff::new(Duration::from_secs(4), Duration::from_secs(30)).full_jitter();
        assert_eq!(f.next_wait_with(0.25), Duration::from_secs(1), "anywhere in the step");
        assert_eq!(f.next_wait_with(0.0), Duration::from_millis(1), "never zero");
        let waits: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| Backoff::new(b.min, b.max).next_wait()).collect();
        assert!(waits.len() > 1, "jittered");
        assert!(waits.iter().all(|w| *w >= Duration::from_millis(100) && *w <= Duration::from_millis(200)));
    }
}
