//! Outstanding challenge nonces: each is accepted by one Register within
//! [`NONCE_TTL`] of being issued, and never again, so a captured
//! registration cannot be replayed.
//!
//! Pure state, no clock and no randomness: the service draws the nonce and
//! passes `now`; the reaper sweeps expired nonces. The store is bounded by
//! [`MAX_OUTSTANDING`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use peerchat_core::identity::NONCE_LEN;

/// How long a nonce may wait for its Register: enough for any client, short
/// enough that the store stays small.
pub(crate) const NONCE_TTL: Duration = Duration::from_secs(60);

/// Nonces outstanding at most; beyond that Challenge is refused until some
/// are used or expire, so a flood of Challenge calls costs bounded memory.
pub(crate) const MAX_OUTSTANDING: usize = 100_000;

/// A nonce, as issued.
pub(crate) type Nonce = [u8; NONCE_LEN];

/// Why no nonce was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChallengeError {
    #[error("too many outstanding challenges ({max}); try again in a minute")]
    Full { max: usize },
}

/// Issued nonces not yet used, with when each expires.
#[derive(Debug)]
pub(crate) struct Challenges {
    max: usize,
    outstanding: HashMap<Nonce, Instant>,
}

impl Challenges {
    pub(crate) fn new(max: usize) -> Challenges {
        Challenges { max, outstanding: HashMap::new() }
    }

    /// Records `nonce` as issued at `now`.
    pub(crate) fn issue(&mut self, nonce: Nonce, now: Instant) -> Result<(), ChallengeError> {
        if self.outstanding.len() >= self.max {
            return Err(ChallengeError::Full { max: self.max });
        }
        self.outstanding.insert(nonce, now + NONCE_TTL);
        Ok(())
    }

    /// Uses up `nonce`: true if it was issued, unused and unexpired. It is
    /// gone afterwards either way, so each nonce gets exactly one attempt.
    pub(crate) fn consume(&mut self, nonce: &[u8], now: Instant) -> bool {
        let Ok(nonce) = Nonce::try_from(nonce) else {
            return false;
        };
        match self.outstanding.remove(&nonce) {
            Some(expires) => now < expires,
            None => false,
        }
    }

    /// Drops expired nonces. Returns how many went.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        let before = self.outstanding.len();
        self.outstanding.retain(|_, expires| now < *expires);
        before - self.outstanding.len()
    }

    /// Nonces outstanding (some may have expired since the last sweep).
    pub(crate) fn len(&self) -> usize {
        self.outstanding.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(10);
        challenges.issue([1; NONCE_LEN], t0).unwrap();
        assert!(challenges.consume(&[1; NONCE_LEN], t0));
        assert!(!challenges.consume(&[1; NONCE_LEN], t0), "second use");
        assert!(!challenges.consume(&[2; NONCE_LEN], t0), "never issued");
        assert!(!challenges.consume(&[1; 5], t0), "wrong length");
        assert_eq!(challenges.len(), 0);
    }

    #[test]
    fn a_nonce_expires_exactly_at_its_ttl_and_is_spent_by_a_late_try() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(10);
        challenges.issue([1; NONCE_LEN], t0).unwrap();
        challenges.issue([2; NONCE_LEN], t0).unwrap();
        assert!(challenges.consume(&[1; NONCE_LEN], t0 + NONCE_TTL - Duration::from_millis(1)));
        assert!(!challenges.consume(&[2; NONCE_LEN], t0 + NONCE_TTL));
        assert_eq!(challenges.len(), 0);
    }

    #[test]
    fn the_store_is_bounded_and_swept() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(2);
        challenges.issue([1; NONCE_LEN], t0).unwrap();
        challenges.issue([2; NONCE_LEN], t0 + Duration::from_secs(30)).unwrap();
        let err = challenges.issue([3; NONCE_LEN], t0).unwrap_err();
        assert!(err.to_string().contains("too many outstanding challenges"));
        assert_eq!(challenges.sweep(t0 + NONCE_TTL - Duration::from_millis(1)), 0);
        assert_eq!(challenges.sweep(t0 + NONCE_TTL), 1);
        challenges.issue([3; NONCE_LEN], t0 + NONCE_TTL).unwrap();
        assert_eq!(challenges.len(), 2);
    }
}
