//! How often the refusal of a dial nobody vouches for is logged.
//!
//! A dial refused before we know who dials (another protocol version, a
//! key we cannot verify) can be caused by anyone who reaches the peer
//! port, with a throwaway key, as fast as TLS handshakes go; the log of a
//! detached daemon is a file that nothing rotates. So these lines are
//! limited to [`RATE`] a second, and the next one says how many were left
//! out.

use std::sync::Mutex;
use std::time::Instant;

use peerchat_core::rate::{Rate, TokenBucket};

/// Lines a second, in bursts of twice that.
const RATE: u32 = 1;

static LOG: Mutex<Limiter> = Mutex::new(Limiter { bucket: None, held: 0 });

/// `Some(n)` if a line may be written now (`n`: lines left out before
/// it), `None` if it is to be left out.
pub(crate) fn allow() -> Option<u64> {
    let mut log = LOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    log.allow(Instant::now())
}

#[derive(Debug)]
struct Limiter {
    bucket: Option<TokenBucket>,
    /// Lines left out since the last one written.
    held: u64,
}

impl Limiter {
    fn allow(&mut self, now: Instant) -> Option<u64> {
        let rate = Rate::per_second(RATE);
        let bucket = self.bucket.get_or_insert_with(|| TokenBucket::full(rate, now));
        if bucket.try_take(rate, now) {
            Some(std::mem::take(&mut self.held))
        } else {
            self.held = self.held.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_is_cut_to_a_few_lines_and_the_next_says_how_many_were_left_out() {
        let mut limiter = Limiter { bucket: None, held: 0 };
        let start = Instant::now();
        let written = (0..100).filter(|_| limiter.allow(start).is_some()).count();
        assert_eq!(written, 2, "a burst of twice the rate");
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.allow(later), Some(98), "the next line says 98 were left out");
        assert_eq!(limiter.allow(later), None);
    }
}
