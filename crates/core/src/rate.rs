//! Rate limits per source: token buckets that cap how fast one [`Source`]
//! (an IPv4 address or an IPv6 /64) may make us do something costly.
//!
//! Pure arithmetic, no clock: `now` is passed in, so refill and burst are
//! tested deterministically. The directory keeps one [`RateLimiter`] for
//! Challenge+Register (and status changes), one for List+Lookup and one
//! for Heartbeat+Unregister; peerd keeps one for the directory lookups
//! that dialers make it do. Their owners drop buckets that have refilled
//! completely (a full bucket is the same as no bucket), so a map only
//! holds sources active in the last few seconds, and it has a hard ceiling
//! on top.

use std::collections::HashMap;
use std::time::Instant;

use crate::source::Source;

/// A sustained rate with a burst of twice that, so that a peer starting up
/// (Challenge then Register, maybe twice) never waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_sec: f64,
    burst: f64,
}

impl Rate {
    /// `per_sec` requests a second (at least one), bursts of `2 * per_sec`.
    pub fn per_second(per_sec: u32) -> Rate {
        let per_sec = f64::from(per_sec.max(1));
        Rate { per_sec, burst: 2.0 * per_sec }
    }

    /// `per_day` requests a day (at least one), all of them at once if
    /// the day's were not used: a quota rather than a speed.
    pub fn per_day(per_day: u32) -> Rate {
        let per_day = f64::from(per_day.max(1));
        Rate { per_sec: per_day / 86_400.0, burst: per_day }
    }
}

/// Tokens refill continuously at `rate.per_sec` up to `rate.burst`; each
/// request takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket { tokens: rate.burst, last: now }
    }

    /// Takes a token if there is one. A `now` earlier than the last call
    /// (callers read the clock before taking the lock) adds nothing.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Puts back a token taken for a request that turned out not to need it.
    pub fn give_back(&mut self, rate: Rate) {
        self.tokens = (self.tokens + 1.0).min(rate.burst);
    }

    /// True once the bucket has refilled completely: forgetting it then
    /// changes nothing for its source.
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut probe = self.clone();
        probe.refill(rate, now);
        probe.tokens >= rate.burst
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.last = self.last.max(now);
    }
}

/// Why a request was refused. Every message contains `rate limit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    #[error("rate limit exceeded for requests from {from}: at most {per_sec} a second; slow down")]
    TooFast { from: Source, per_sec: u32 },
    #[error(
        "rate limit: the directory is tracking too many sources at once; try again in a few seconds"
    )]
    TooManySources,
}

/// One token bucket per source.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: u32,
    rate: Rate,
    max_sources: usize,
    buckets: HashMap<Source, TokenBucket>,
}

impl RateLimiter {
    pub fn new(per_sec: u32, max_sources: usize) -> RateLimiter {
        RateLimiter::with_rate(Rate::per_second(per_sec), max_sources)
    }

    /// One bucket of `rate` per source, for `max_sources` sources at most.
    pub fn with_rate(rate: Rate, max_sources: usize) -> RateLimiter {
        // For messages: the sustained rate, rounded up to a whole request.
        let per_sec = rate.per_sec.ceil().min(f64::from(u32::MAX)) as u32;
        RateLimiter { per_sec, rate, max_sources, buckets: HashMap::new() }
    }

    /// Charges one request to `source`.
    pub fn check(&mut self, source: Source, now: Instant) -> Result<(), Limited> {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            return Err(Limited::TooManySources);
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(source).or_insert_with(|| TokenBucket::full(rate, now));
        if bucket.try_take(rate, now) {
            Ok(())
        } else {
            Err(Limited::TooFast { from: source, per_sec: self.per_sec })
        }
    }

    /// Gives back the token [`RateLimiter::check`] took from `source`, for a
    /// request that turned out to cost nothing (a heartbeat that changed no
    /// presence). A bucket swept meanwhile was full: nothing to give back.
    pub fn refund(&mut self, source: Source) {
        let rate = self.rate;
        if let Some(bucket) = self.buckets.get_mut(&source) {
            bucket.give_back(rate);
        }
    }

    /// Drops the buckets that have refilled. Returns how many went.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let before = self.buckets.len();
        let rate = self.rate;
        self.buckets.retain(|_, bucket| !bucket.is_full(rate, now));
        before - self.buckets.len()
    }

    /// Sources currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// No source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MAX_SOURCES: usize = 65_536;

    fn src(s: &str) -> Source {
        Source::of(Some(s.parse().unwrap()))
    }

    #[test]
    fn a_full_bucket_allows_a_burst_of_twice_the_rate_then_the_rate() {
        let t0 = Instant::now();
        let rate = Rate::per_second(10);
        let mut bucket = TokenBucket::full(rate, t0);
        for i in 0..20 {
            assert!(bucket.try_take(rate, t0), "burst request {i}");
        }
        assert!(!bucket.try_take(rate, t0));
        // 100 ms buys exactly one token at 10/s.
        let t1 = t0 + Duration::from_millis(100);
        assert!(bucket.try_take(rate, t1));
        assert!(!bucket.try_take(rate, t1));
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert!(bucket.is_full(rate, t2));
        let taken = (0..100).take_while(|_| bucket.try_take(rate, t2)).count();
        assert_eq!(taken, 20);
    }

    #[test]
    fn a_daily_quota_is_spent_at_once_and_comes_back_over_the_day() {
        let t0 = Instant::now();
        let rate = Rate::per_day(3);
        let mut bucket = TokenBucket::full(rate, t0);
        for i in 0..3 {
            assert!(bucket.try_take(rate, t0), "new name {i}");
        }
        assert!(!bucket.try_take(rate, t0 + Duration::from_secs(28_799)));
        assert!(bucket.try_take(rate, t0 + Duration::from_secs(28_801)));
        assert!(bucket.is_full(rate, t0 + Duration::from_secs(3 * 86_400)));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now();
        let rate = Rate::per_second(1);
        let later = t0 + Duration::from_secs(10);
        let mut bucket = TokenBucket::full(rate, later);
        assert!(bucket.try_take(rate, later));
        assert!(bucket.try_take(rate, later));
        assert!(!bucket.try_take(rate, t0));
        assert!(!bucket.try_take(rate, later));
        assert!(bucket.try_take(rate, later + Duration::from_secs(1)));
    }

    #[test]
    fn sources_are_limited_independently() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, MAX_SOURCES);
        let a = src("10.0.0.1:1");
        let b = src("10.0.0.2:1");
        limiter.check(a, t0).unwrap();
        limiter.check(a, t0).unwrap();
        let err = limiter.check(a, t0).unwrap_err();
        assert_eq!(err, Limited::TooFast { from: a, per_sec: 1 });
        assert!(err.to_string().contains("rate limit"));
        assert!(err.to_string().contains("10.0.0.1"), "{err}");
        limiter.check(b, t0).unwrap();
    }

    #[test]
    fn the_map_is_bounded_and_idle_buckets_are_swept() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, 2);
        limiter.check(src("10.0.0.1:1"), t0).unwrap();
        limiter.check(src("10.0.0.2:1"), t0).unwrap();
        let err = limiter.check(src("10.0.0.3:1"), t0).unwrap_err();
        assert_eq!(err, Limited::TooManySources);
        assert!(err.to_string().contains("rate limit"));
        // One token used at 1/s: full again after a second, not before.
        assert_eq!(limiter.sweep(t0 + Duration::from_millis(999)), 0);
        assert_eq!(limiter.sweep(t0 + Duration::from_secs(1)), 2);
        assert!(limiter.is_empty());
        limiter.check(src("10.0.0.3:1"), t0 + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_refund_gives_back_one_token_up_to_the_burst() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, MAX_SOURCES);
        let a = src("10.0.0.1:1");
        limiter.check(a, t0).unwrap();
        limiter.check(a, t0).unwrap();
        assert!(limiter.check(a, t0).is_err());
        limiter.refund(a);
        limiter.check(a, t0).unwrap();
        assert!(limiter.check(a, t0).is_err());
        // Refunds never make a burst bigger than twice the rate.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            limiter.refund(a);
        }
        limiter.check(a, later).unwrap();
        limiter.check(a, later).unwrap();
        assert!(limiter.check(a, later).is_err());
        // Nothing to refund to a source that has no bucket.
        limiter.refund(src("10.0.0.2:1"));
        assert_eq!(limiter.len(), 1);
    }
}
