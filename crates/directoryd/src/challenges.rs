//! Outstanding challenge nonces: each is accepted by one Register within
//! [`NONCE_TTL`] of being issued, and never again, so a captured
//! registration cannot be replayed.
//!
//! The table is bounded by its `max` ([`MAX_OUTSTANDING`]), and shared
//! fairly among sources: a Challenge that finds it full is never refused;
//! it lets go the oldest nonce of the source holding the most (maybe the
//! asker itself). So a flood from many addresses, each at its own rate
//! limit, costs the flooders their own nonces, not everyone's: a host
//! asking for one nonce loses it only if every source holds no more than
//! one, that is, if `max` sources flood at once.
//!
//! Pure state, no clock and no randomness: the store draws nothing and
//! passes `now`; the reaper sweeps expired nonces.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use peerchat_core::identity::NONCE_LEN;
use peerchat_core::source::Source;

/// How long a nonce may wait for its Register: enough for any client, short
/// enough that the table stays small.
pub(crate) const NONCE_TTL: Duration = Duration::from_secs(60);

/// Nonces outstanding at most (about 22 MiB when full, measured): beyond
/// that each new one takes the place of the heaviest source's oldest.
pub(crate) const MAX_OUTSTANDING: usize = 100_000;

/// A nonce, as issued.
pub(crate) type Nonce = [u8; NONCE_LEN];

/// One outstanding nonce.
#[derive(Debug, Clone, Copy)]
struct Issued {
    expires: Instant,
    source: Source,
    /// Its place among its source's nonces, oldest first.
    seq: u64,
}

/// Issued nonces not yet used, with when each expires and who asked.
#[derive(Debug)]
pub(crate) struct Challenges {
    max: usize,
    outstanding: HashMap<Nonce, Issued>,
    /// Each source's nonces, oldest first; only sources holding some.
    by_source: HashMap<Source, BTreeMap<u64, Nonce>>,
    /// Sources by how many nonces they hold, heaviest last.
    by_count: BTreeSet<(usize, Source)>,
    next_seq: u64,
}

impl Challenges {
    /// A table of at most `max` nonces (at least one).
    pub(crate) fn new(max: usize) -> Challenges {
        Challenges {
            max: max.max(1),
            outstanding: HashMap::new(),
            by_source: HashMap::new(),
            by_count: BTreeSet::new(),
            next_seq: 0,
        }
    }

    /// Records `nonce` as issued to `source` at `now`. When the table is
    /// full, the oldest nonce of the source holding the most is let go
    /// first, and returned (it can no longer be spent).
    pub(crate) fn issue(&mut self, nonce: Nonce, source: Source, now: Instant) -> Option<Nonce> {
        // A nonce drawn twice (32 random bytes: never) is issued once.
        self.remove(&nonce);
        let evicted = if self.outstanding.len() >= self.max { self.evict() } else { None };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding.insert(nonce, Issued { expires: now + NONCE_TTL, source, seq });
        let queue = self.by_source.entry(source).or_default();
        let held = queue.len();
        queue.insert(seq, nonce);
        self.by_count.remove(&(held, source));
        self.by_count.insert((held + 1, source));
        evicted
    }

    /// Uses up `nonce`: true if it was issued, unused and unexpired. It is
    /// gone afterwards either way, so each nonce gets exactly one attempt.
    pub(crate) fn consume(&mut self, nonce: &[u8], now: Instant) -> bool {
        let Ok(nonce) = Nonce::try_from(nonce) else {
            return false;
        };
        self.remove(&nonce).is_some_and(|issued| now < issued.expires)
    }

    /// Drops expired nonces. Returns how many went.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        let expired: Vec<Nonce> = self
            .outstanding
            .iter()
            .filter(|(_, issued)| issued.expires <= now)
            .map(|(nonce, _)| *nonce)
            .collect();
        for nonce in &expired {
            self.remove(nonce);
        }
        expired.len()
    }

    /// Nonces outstanding (some may have expired since the last sweep).
    pub(crate) fn len(&self) -> usize {
        self.outstanding.len()
    }

    /// Nonces `source` holds.
    #[cfg(test)]
    pub(crate) fn held_by(&self, source: Source) -> usize {
        self.by_source.get(&source).map_or(0, BTreeMap::len)
    }

    /// Lets go the oldest nonce of the source holding the most.
    fn evict(&mut self) -> Option<Nonce> {
        let &(_, heaviest) = self.by_count.last()?;
        let oldest = *self.by_source.get(&heaviest)?.first_key_value()?.1;
        self.remove(&oldest).map(|_| oldest)
    }

    fn remove(&mut self, nonce: &Nonce) -> Option<Issued> {
        let issued = self.outstanding.remove(nonce)?;
        if let Some(queue) = self.by_source.get_mut(&issued.source) {
            let held = queue.len();
            queue.remove(&issued.seq);
            self.by_count.remove(&(held, issued.source));
            if queue.is_empty() {
                self.by_source.remove(&issued.source);
            } else {
                self.by_count.insert((held - 1, issued.source));
            }
        }
        Some(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Source = Source::V4([192, 0, 2, 1]);
    const B: Source = Source::V4([192, 0, 2, 2]);
    const C: Source = Source::V6Net(0x2001_0db8_0000_0001);

    fn n(i: u32) -> Nonce {
        let mut nonce = [0; NONCE_LEN];
        nonce[..4].copy_from_slice(&i.to_be_bytes());
        nonce
    }

    /// The three views of the table agree.
    fn consistent(c: &Challenges) {
        let mut held: HashMap<Source, usize> = HashMap::new();
        for issued in c.outstanding.values() {
            *held.entry(issued.source).or_default() += 1;
        }
        let queues: HashMap<Source, usize> =
            c.by_source.iter().map(|(s, q)| (*s, q.len())).collect();
        assert_eq!(held, queues);
        let counted: HashMap<Source, usize> = c.by_count.iter().map(|&(k, s)| (s, k)).collect();
        assert_eq!(held, counted);
        assert_eq!(c.by_count.len(), c.by_source.len(), "one count per source");
        assert!(c.len() <= c.max);
    }

    #[test]
    fn a_nonce_is_accepted_once() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(10);
        assert_eq!(challenges.issue([1; NONCE_LEN], A, t0), None);
        assert!(challenges.consume(&[1; NONCE_LEN], t0));
        assert!(!challenges.consume(&[1; NONCE_LEN], t0), "second use");
        assert!(!challenges.consume(&[2; NONCE_LEN], t0), "never issued");
        assert!(!challenges.consume(&[1; 5], t0), "wrong length");
        assert_eq!(challenges.len(), 0);
        consistent(&challenges);
    }

    #[test]
    fn a_nonce_expires_exactly_at_its_ttl_and_is_spent_by_a_late_try() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(10);
        challenges.issue([1; NONCE_LEN], A, t0);
        challenges.issue([2; NONCE_LEN], A, t0);
        assert!(challenges.consume(&[1; NONCE_LEN], t0 + NONCE_TTL - Duration::from_millis(1)));
        assert!(!challenges.consume(&[2; NONCE_LEN], t0 + NONCE_TTL));
        assert_eq!(challenges.len(), 0);
        consistent(&challenges);
    }

    #[test]
    fn the_table_is_bounded_and_swept() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(2);
        challenges.issue(n(1), A, t0);
        challenges.issue(n(2), A, t0 + Duration::from_secs(30));
        // Full: the asker is the only (so the heaviest) source, and its
        // oldest goes.
        assert_eq!(challenges.issue(n(3), A, t0 + Duration::from_secs(30)), Some(n(1)));
        assert_eq!(challenges.len(), 2);
        assert!(!challenges.consume(&n(1), t0), "let go");
        consistent(&challenges);
        assert_eq!(challenges.sweep(t0 + Duration::from_secs(30) + NONCE_TTL / 2), 0);
        assert_eq!(challenges.sweep(t0 + Duration::from_secs(30) + NONCE_TTL), 2);
        assert_eq!(challenges.len(), 0);
        consistent(&challenges);
    }

    #[test]
    fn a_full_table_takes_from_the_heaviest_source_not_from_a_newcomer() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(10);
        for i in 0..9 {
            assert_eq!(challenges.issue(n(i), A, t0), None);
        }
        assert_eq!(challenges.issue(n(100), B, t0), None, "the last free place");
        // The flood goes on: each new nonce of A's takes A's oldest.
        for i in 9..20 {
            assert_eq!(challenges.issue(n(i), A, t0), Some(n(i - 9)));
        }
        // A newcomer takes A's oldest too, and keeps its own.
        assert_eq!(challenges.issue(n(200), C, t0), Some(n(11)));
        assert_eq!(
            (challenges.held_by(A), challenges.held_by(B), challenges.held_by(C)),
            (8, 1, 1)
        );
        consistent(&challenges);
        assert!(challenges.consume(&n(100), t0), "B's nonce outlived the flood");
        assert!(challenges.consume(&n(200), t0), "so did C's");
        assert!(challenges.consume(&n(19), t0), "A's newest is there");
        assert!(!challenges.consume(&n(11), t0), "A's oldest are not");
        consistent(&challenges);
    }

    #[test]
    fn sources_with_equal_shares_stay_equal() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(6);
        let mut i = 0;
        for _ in 0..50 {
            for source in [A, B, C] {
                challenges.issue(n(i), source, t0);
                i += 1;
            }
            consistent(&challenges);
        }
        assert_eq!(
            (challenges.held_by(A), challenges.held_by(B), challenges.held_by(C)),
            (2, 2, 2)
        );
    }

    #[test]
    fn the_books_agree_after_any_mix_of_calls() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(16);
        // A fixed pseudo-random walk: issue, consume, sweep, from four
        // sources, over a minute and a half.
        let mut x: u32 = 0x9e37_79b9;
        for step in 0..5_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let now = t0 + Duration::from_millis(u64::from(step) * 20);
            let source = [A, B, C, Source::Unknown][(x % 4) as usize];
            match x % 10 {
                0..=5 => {
                    challenges.issue(n(step), source, now);
                }
                6..=8 => {
                    challenges.consume(&n(x % (step + 1)), now);
                }
                _ => {
                    challenges.sweep(now);
                }
            }
            consistent(&challenges);
        }
    }
}
