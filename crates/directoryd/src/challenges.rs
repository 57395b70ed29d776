//! Outstanding challenge nonces: each is accepted by one Register within
//! [`NONCE_TTL`] of being issued, and never again, so a captured
//! registration cannot be replayed.
//!
//! The table is bounded by its `max` ([`MAX_OUTSTANDING`]), and shared
//! fairly among sites: a Challenge that finds it full is never refused;
//! it lets go the oldest nonce of the site holding the most (maybe the
//! asker's own), and among sites holding as many, of the one whose oldest
//! nonce is oldest. So a flood costs the flooders their own nonces, not
//! everyone's. A site is an IPv4 address or an IPv6 /48
//! ([`Source::site`]): a /64 each is too cheap to share by, since one
//! asking once a minute is all it takes to hold a nonce. A newcomer's
//! nonce goes first only once every site holds no more than one; even
//! then the table lets go oldest first, so it lasts `max` Challenges
//! (a minute at the rate that keeps 100,000 sites holding one each).
//!
//! Pure state, no clock and no randomness: the store draws nothing and
//! passes `now`; the reaper sweeps expired nonces.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use peerchat_core::identity::NONCE_LEN;
use peerchat_core::source::Source;

/// How long a nonce may wait for its Register: enough for any client, short
/// enough that the table stays small.
pub(crate) const NONCE_TTL: Duration = Duration::from_secs(60);

/// Nonces outstanding at most (about 22 MiB when full, measured): beyond
/// that each new one takes the place of the heaviest site's oldest.
pub(crate) const MAX_OUTSTANDING: usize = 100_000;

/// Expired nonces dropped at most per [`Challenges::sweep`]: a sweep holds
/// its store's lock, and 100,000 expiring at once would hold it for tens
/// of milliseconds; the store sweeps again, lock released in between.
pub(crate) const SWEEP_BATCH: usize = 4_096;

/// A nonce, as issued.
pub(crate) type Nonce = [u8; NONCE_LEN];

/// One outstanding nonce.
#[derive(Debug, Clone, Copy)]
struct Issued {
    expires: Instant,
    /// The asker's site.
    site: Source,
    /// When it was issued, among all nonces: its place in its site's queue.
    seq: u64,
}

/// Where a site stands when a nonce must go: the greatest goes first (the
/// most nonces; then the oldest first nonce).
type Standing = (usize, Reverse<u64>, Source);

/// Issued nonces not yet used, with when each expires and who asked.
#[derive(Debug)]
pub(crate) struct Challenges {
    max: usize,
    outstanding: HashMap<Nonce, Issued>,
    /// Each site's nonces, oldest first; only sites holding some.
    by_site: HashMap<Source, BTreeMap<u64, Nonce>>,
    /// Each site holding some, by its standing: the next to lose one last.
    standings: BTreeSet<Standing>,
    next_seq: u64,
}

impl Challenges {
    /// A table of at most `max` nonces (at least one).
    pub(crate) fn new(max: usize) -> Challenges {
        Challenges {
            max: max.max(1),
            outstanding: HashMap::new(),
            by_site: HashMap::new(),
            standings: BTreeSet::new(),
            next_seq: 0,
        }
    }

    /// Records `nonce` as issued to `source` at `now`. When the table is
    /// full, a nonce is let go first (see the module's doc), and returned:
    /// it can no longer be spent.
    pub(crate) fn issue(&mut self, nonce: Nonce, source: Source, now: Instant) -> Option<Nonce> {
        let site = source.site();
        // A nonce drawn twice (32 random bytes: never) is issued once.
        self.remove(&nonce);
        let let_go = if self.outstanding.len() >= self.max { self.let_one_go() } else { None };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding.insert(nonce, Issued { expires: now + NONCE_TTL, site, seq });
        self.change(site, |queue| {
            queue.insert(seq, nonce);
        });
        let_go
    }

    /// Uses up `nonce`: true if it was issued, unused and unexpired. It is
    /// gone afterwards either way, so each nonce gets exactly one attempt.
    pub(crate) fn consume(&mut self, nonce: &[u8], now: Instant) -> bool {
        let Ok(nonce) = Nonce::try_from(nonce) else {
            return false;
        };
        self.remove(&nonce).is_some_and(|issued| now < issued.expires)
    }

    /// Drops expired nonces, at most [`SWEEP_BATCH`]. Returns how many
    /// went: as many as that means there may be more.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        let expired: Vec<Nonce> = self
            .outstanding
            .iter()
            .filter(|(_, issued)| issued.expires <= now)
            .map(|(nonce, _)| *nonce)
            .take(SWEEP_BATCH)
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

    /// Nonces the site of `source` holds.
    #[cfg(test)]
    pub(crate) fn held_by(&self, source: Source) -> usize {
        self.by_site.get(&source.site()).map_or(0, BTreeMap::len)
    }

    /// Lets go the oldest nonce of the site that stands greatest.
    fn let_one_go(&mut self) -> Option<Nonce> {
        let &(_, _, site) = self.standings.last()?;
        let oldest = *self.by_site.get(&site)?.first_key_value()?.1;
        self.remove(&oldest).map(|_| oldest)
    }

    fn remove(&mut self, nonce: &Nonce) -> Option<Issued> {
        let issued = self.outstanding.remove(nonce)?;
        self.change(issued.site, |queue| {
            queue.remove(&issued.seq);
        });
        Some(issued)
    }

    /// Changes `site`'s queue with `edit`, keeping its standing (and
    /// whether it is held at all) up to date.
    fn change(&mut self, site: Source, edit: impl FnOnce(&mut BTreeMap<u64, Nonce>)) {
        let queue = self.by_site.entry(site).or_default();
        if let Some(before) = standing(site, queue) {
            self.standings.remove(&before);
        }
        edit(queue);
        match standing(site, queue) {
            Some(after) => {
                self.standings.insert(after);
            }
            None => {
                self.by_site.remove(&site);
            }
        }
    }
}

/// Where `site`, holding `queue`, stands; `None` when it holds nothing.
fn standing(site: Source, queue: &BTreeMap<u64, Nonce>) -> Option<Standing> {
    let (&oldest, _) = queue.first_key_value()?;
    Some((queue.len(), Reverse(oldest), site))
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
        let mut queues: HashMap<Source, BTreeMap<u64, Nonce>> = HashMap::new();
        for (nonce, issued) in &c.outstanding {
            queues.entry(issued.site).or_default().insert(issued.seq, *nonce);
        }
        assert_eq!(queues, c.by_site, "each site's queue holds exactly its nonces");
        let standings: BTreeSet<Standing> =
            queues.iter().filter_map(|(site, queue)| standing(*site, queue)).collect();
        assert_eq!(standings, c.standings, "one standing per site, up to date");
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
    fn a_table_of_ones_lets_go_oldest_first_whatever_the_address() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(3);
        // Issued in an order unlike the addresses' order.
        challenges.issue(n(1), B, t0);
        challenges.issue(n(2), C, t0);
        challenges.issue(n(3), A, t0);
        let d = Source::V4([198, 51, 100, 1]);
        let e = Source::V4([198, 51, 100, 2]);
        let f = Source::V4([10, 0, 0, 1]);
        assert_eq!(challenges.issue(n(4), d, t0), Some(n(1)));
        assert_eq!(challenges.issue(n(5), e, t0), Some(n(2)));
        assert_eq!(challenges.issue(n(6), f, t0), Some(n(3)));
        assert_eq!(challenges.issue(n(7), A, t0), Some(n(4)));
        consistent(&challenges);
    }

    #[test]
    fn the_64s_of_one_48_share_one_place() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(4);
        let net = |low: u64| Source::V6Net(0x2001_0db8_0042_0000 | low);
        challenges.issue(n(1), net(1), t0);
        challenges.issue(n(2), net(2), t0);
        challenges.issue(n(3), net(3), t0);
        assert_eq!(challenges.held_by(net(0xffff)), 3, "one site");
        challenges.issue(n(4), A, t0);
        // Full: a new /64 of that site takes from the site, not from A.
        assert_eq!(challenges.issue(n(5), net(4), t0), Some(n(1)));
        assert_eq!(challenges.issue(n(6), B, t0), Some(n(2)));
        assert!(challenges.consume(&n(4), t0), "A kept its one");
        consistent(&challenges);
    }

    #[test]
    fn a_nonce_issued_again_is_held_once_by_its_last_asker() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(2);
        challenges.issue(n(1), A, t0);
        assert_eq!(challenges.issue(n(1), B, t0), None);
        assert_eq!((challenges.len(), challenges.held_by(A), challenges.held_by(B)), (1, 0, 1));
        consistent(&challenges);
        let mut one = Challenges::new(1);
        one.issue(n(1), A, t0);
        assert_eq!(one.issue(n(1), A, t0), None, "itself is not let go");
        assert_eq!(one.issue(n(2), B, t0), Some(n(1)));
        consistent(&one);
    }

    #[test]
    fn a_sweep_drops_a_batch_at_a_time() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(MAX_OUTSTANDING);
        for i in 0..SWEEP_BATCH + 5 {
            challenges.issue(n(i as u32), A, t0);
        }
        challenges.issue(n(u32::MAX), B, t0 + NONCE_TTL);
        assert_eq!(challenges.sweep(t0 + NONCE_TTL), SWEEP_BATCH);
        assert_eq!(challenges.sweep(t0 + NONCE_TTL), 5);
        assert_eq!(challenges.sweep(t0 + NONCE_TTL), 0);
        assert_eq!(challenges.len(), 1);
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
