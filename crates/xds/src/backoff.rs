//! Envoy's jittered exponential backoff for xDS stream retries.

use std::time::Duration;

use rand::Rng;

/// Envoy's `RetryInitialDelayMs` / `RetryMaxDelayMs` (subscription_factory.h).
pub(crate) const BASE: Duration = Duration::from_millis(500);
pub(crate) const CAP: Duration = Duration::from_secs(30);

/// The n-th retry waits a uniform time in [0, (2^n − 1)·base), capped at `cap`; a received
/// response resets it (so a control plane that restarts is re-joined within half a second).
pub(crate) struct Backoff {
    retry: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { retry: 1 }
    }

    pub(crate) fn reset(&mut self) {
        self.retry = 1;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = BASE.as_millis() as u64;
        let cap = CAP.as_millis() as u64;
        // Saturating: past the cap the exponent no longer matters.
        let window = (1u64 << self.retry.min(32))
            .saturating_sub(1)
            .saturating_mul(base);
        if window <= cap {
            self.retry += 1;
        }
        let ms = rand::thread_rng().gen_range(0..window.max(1));
        Duration::from_millis(ms.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps_and_resets() {
        let mut b = Backoff::new();
        let windows: Vec<u64> = (0..12)
            .map(|_| {
                let r = b.retry;
                b.next_delay();
                ((1u64 << r) - 1) * 500
            })
            .collect();
        assert_eq!(&windows[..4], &[500, 1500, 3500, 7500]);
        for _ in 0..100 {
            assert!(b.next_delay() <= CAP);
        }
        b.reset();
        for _ in 0..100 {
            let mut fresh = Backoff::new();
            assert!(fresh.next_delay() < BASE);
        }
    }
}
