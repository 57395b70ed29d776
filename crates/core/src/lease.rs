//! Lease arithmetic shared by the directory and peerd: when a registration
//! expires, when to renew it, and how long to back off after a failure.

use std::time::{Duration, Instant};

/// The default lease time-to-live of the directory (`--ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// How often a peer renews a lease of `ttl`: three times per lease, so that
/// two heartbeats can be lost before the registration lapses.
pub fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

/// One registration's lifetime, as the directory keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    expires_at: Instant,
}

impl Lease {
    /// A lease granted (or renewed) at `now` for `ttl`.
    pub fn new(now: Instant, ttl: Duration) -> Lease {
        Lease { expires_at: now + ttl }
    }

    /// True once the lease has run out.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }

    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

/// Exponential backoff with a ceiling, for retrying the directory.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, next: initial }
    }

    /// The delay before the next attempt; doubles each call up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expires_exactly_at_ttl() {
        let t0 = Instant::now();
        let lease = Lease::new(t0, Duration::from_secs(15));
        assert!(!lease.expired(t0 + Duration::from_millis(14_999)));
        assert!(lease.expired(t0 + Duration::from_secs(15)));
    }

    #[test]
    fn renews_three_times_per_lease() {
        assert_eq!(renew_interval(Duration::from_secs(15)), Duration::from_secs(5));
        assert_eq!(renew_interval(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(renew_interval(Duration::ZERO), Duration::from_millis(100));
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
