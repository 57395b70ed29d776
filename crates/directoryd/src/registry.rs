//! The registry: who is online, as an in-memory map of leases.
//!
//! Pure state, no I/O and no clock: every operation takes `now`, so the
//! rules (case-insensitive uniqueness, takeover by the same key, the cap per
//! source, expiry exactly at the TTL, pagination) are unit-tested
//! deterministically. Who may hold a name at all is decided before, by the
//! durable bindings; the registry only knows who is online. The memory
//! store owns one `Registry` behind a mutex.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::{Duration, Instant};

use peerchat_core::Name;
use peerchat_core::lease::Lease;

use crate::model::{Claim, Listing, Page, Presence, Refusal, Source};

#[derive(Debug)]
struct Entry {
    listing: Listing,
    lease_token: String,
    lease: Lease,
    source: Source,
}

/// What a heartbeat left listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// The presence was already this (or the heartbeat asked to keep it).
    Kept(Presence),
    /// The presence changed: the listing as it is now, for the feed.
    Changed(Listing),
}

/// Every live (and not yet reaped) registration, keyed by case-folded name
/// so that uniqueness is case-insensitive and listing is ordered.
#[derive(Debug)]
pub(crate) struct Registry {
    ttl: Duration,
    max_per_source: usize,
    entries: BTreeMap<String, Entry>,
    /// Entries per source, kept in step with `entries` (expired ones count
    /// until reaped, a second at most).
    per_source: HashMap<Source, usize>,
    /// No entry expires before this (`None`: there are none). A lower
    /// bound, not exact: renewals only push expiries later, so only
    /// inserts lower it and only [`reap`](Self::reap) raises it. With
    /// 100,000 peers a sweep walks the whole map under the lock that every
    /// heartbeat takes; this lets the reaper skip the seconds in which
    /// nothing can have expired.
    earliest_expiry: Option<Instant>,
}

impl Registry {
    pub(crate) fn new(ttl: Duration, max_per_source: usize) -> Registry {
        Registry {
            ttl,
            max_per_source,
            entries: BTreeMap::new(),
            per_source: HashMap::new(),
            earliest_expiry: None,
        }
    }

    /// Whether [`register`](Self::register) would accept `claim` now. The
    /// service asks before it makes a binding durable, so that a refused
    /// registration leaves no binding behind.
    pub(crate) fn admit(&self, claim: &Claim, now: Instant) -> Result<(), Refusal> {
        let held = self.entries.get(&claim.name.key());
        // Bindings already refused other keys; this only guards the
        // invariant that a live name is never handed to another key.
        if let Some(held) = held
            && !held.lease.expired(now)
            && held.listing.public_key != claim.public_key
        {
            return Err(Refusal::Taken { name: claim.name.as_str().to_owned() });
        }
        // Re-registering a name this source already holds does not count twice.
        let replaces_own = held.is_some_and(|held| held.source == claim.source);
        let count = self.per_source.get(&claim.source).copied().unwrap_or(0);
        if !replaces_own && count >= self.max_per_source {
            return Err(Refusal::TooManyFromSource {
                from: claim.source,
                max: self.max_per_source,
            });
        }
        Ok(())
    }

    /// Grants `claim.name` to the claimant, replacing an expired registration
    /// or a live one by the same key (a restarted or moved daemon gets its
    /// name back at once; the old lease is dead).
    pub(crate) fn register(&mut self, claim: Claim, now: Instant) -> Result<(), Refusal> {
        self.admit(&claim, now)?;
        let entry = Entry {
            listing: Listing {
                name: claim.name.as_str().to_owned(),
                address: claim.address,
                presence: claim.presence,
                public_key: claim.public_key,
            },
            lease_token: claim.lease_token,
            lease: Lease::new(now, self.ttl),
            source: claim.source,
        };
        *self.per_source.entry(entry.source).or_default() += 1;
        let expires = entry.lease.expires_at();
        self.earliest_expiry = Some(self.earliest_expiry.map_or(expires, |e| e.min(expires)));
        if let Some(old) = self.entries.insert(claim.name.key(), entry) {
            self.forget_source(old.source);
        }
        Ok(())
    }

    fn forget_source(&mut self, source: Source) {
        if let Some(count) = self.per_source.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Renews the lease `lease_token` on `name` and records `presence`
    /// (`None` keeps the listed one).
    pub(crate) fn heartbeat(
        &mut self,
        name: &Name,
        lease_token: &str,
        presence: Option<Presence>,
        now: Instant,
    ) -> Result<Renewal, Refusal> {
        let unknown = || Refusal::UnknownLease { name: name.as_str().to_owned() };
        let entry = self.entries.get_mut(&name.key()).ok_or_else(unknown)?;
        if entry.lease.expired(now)
            || !constant_time_eq(entry.lease_token.as_bytes(), lease_token.as_bytes())
        {
            return Err(unknown());
        }
        entry.lease = Lease::new(now, self.ttl);
        match presence {
            Some(presence) if presence != entry.listing.presence => {
                entry.listing.presence = presence;
                Ok(Renewal::Changed(entry.listing.clone()))
            }
            _ => Ok(Renewal::Kept(entry.listing.presence)),
        }
    }

    /// Releases `name`. Releasing a name nobody holds succeeds, so that a
    /// retried or late unregister is harmless; a live registration under a
    /// different lease (someone took over) is left alone. Returns the name
    /// as registered when a registration went, for the feed: an expired
    /// one not yet reaped too, since watchers still show it and the reaper
    /// will not find it now.
    pub(crate) fn unregister(
        &mut self,
        name: &Name,
        lease_token: &str,
        now: Instant,
    ) -> Result<Option<String>, Refusal> {
        let key = name.key();
        let Some(entry) = self.entries.get(&key) else {
            return Ok(None);
        };
        if !entry.lease.expired(now)
            && !constant_time_eq(entry.lease_token.as_bytes(), lease_token.as_bytes())
        {
            return Err(Refusal::WrongLease { name: name.as_str().to_owned() });
        }
        let Some(old) = self.entries.remove(&key) else {
            return Ok(None);
        };
        self.forget_source(old.source);
        Ok(Some(old.listing.name))
    }

    pub(crate) fn lookup(&self, name: &Name, now: Instant) -> Result<Listing, Refusal> {
        match self.entries.get(&name.key()) {
            Some(entry) if !entry.lease.expired(now) => Ok(entry.listing.clone()),
            _ => Err(Refusal::NotOnline { name: name.as_str().to_owned() }),
        }
    }

    /// Up to `limit` live peers whose key sorts after `after`, in key order.
    pub(crate) fn list(&self, after: Option<&str>, limit: usize, now: Instant) -> Page {
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let mut live = self
            .entries
            .range::<str, _>((lower, Bound::Unbounded))
            .filter(|(_, entry)| !entry.lease.expired(now));
        let mut peers = Vec::with_capacity(limit.min(self.entries.len()));
        let mut last_key = None;
        for (key, entry) in live.by_ref().take(limit) {
            peers.push(entry.listing.clone());
            last_key = Some(key);
        }
        // Peek one further so that the last page says it is the last.
        let next = match live.next() {
            Some(_) => last_key.cloned(),
            None => None,
        };
        Page { peers, next }
    }

    /// Drops every expired registration, so that peers that died without
    /// unregistering do not hold memory. Returns the names (as registered)
    /// that went.
    pub(crate) fn reap(&mut self, now: Instant) -> Vec<String> {
        if self.earliest_expiry.is_none_or(|earliest| now < earliest) {
            return Vec::new();
        }
        let mut names = Vec::new();
        let mut gone = Vec::new();
        let mut earliest: Option<Instant> = None;
        self.entries.retain(|_, entry| {
            let keep = !entry.lease.expired(now);
            if keep {
                let expires = entry.lease.expires_at();
                earliest = Some(earliest.map_or(expires, |e| e.min(expires)));
            } else {
                gone.push(entry.source);
                names.push(entry.listing.name.clone());
            }
            keep
        });
        self.earliest_expiry = earliest;
        for source in gone {
            self.forget_source(source);
        }
        names
    }

    /// Registrations held, live or not yet reaped.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Compares secrets without leaking, through timing, how long a prefix
/// matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PublicKey;

    const TTL: Duration = Duration::from_secs(15);
    const KEY_A: PublicKey = [0xaa; 32];
    const KEY_B: PublicKey = [0xbb; 32];

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn source(ip: &str) -> Source {
        Source::of(Some(format!("{ip}:1").parse().unwrap()))
    }

    fn claim(n: &str, key: PublicKey, lease: &str, address: &str) -> Claim {
        Claim {
            name: name(n),
            address: address.to_owned(),
            presence: Presence::Available,
            public_key: key,
            lease_token: lease.to_owned(),
            source: source("10.0.0.1"),
            may_bind: true,
        }
    }

    /// No cap per source unless a test is about it.
    fn registry() -> Registry {
        Registry::new(TTL, usize::MAX)
    }

    #[test]
    fn names_are_unique_case_insensitively() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("Bob", KEY_A, "l1", "10.0.0.1:1"), t0).unwrap();
        let err = reg.register(claim("bOB", KEY_B, "l2", "10.0.0.2:2"), t0).unwrap_err();
        assert_eq!(err, Refusal::Taken { name: "bOB".into() });
        assert!(err.to_string().contains("taken"));
        let bob = reg.lookup(&name("BOB"), t0).unwrap();
        assert_eq!(bob.name, "Bob", "listed with the case it registered with");
        assert_eq!(bob.address, "10.0.0.1:1");
    }

    #[test]
    fn the_same_key_takes_over_a_live_name() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("bob", KEY_A, "old", "10.0.0.1:1"), t0).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        reg.register(claim("Bob", KEY_A, "new", "10.0.0.9:9"), t1).unwrap();
        let bob = reg.lookup(&name("bob"), t1).unwrap();
        assert_eq!((bob.name.as_str(), bob.address.as_str()), ("Bob", "10.0.0.9:9"));
        assert_eq!(bob.public_key, KEY_A);
        // The crashed daemon's lease is dead; the new one lives.
        assert!(matches!(
            reg.heartbeat(&name("bob"), "old", Some(Presence::Available), t1),
            Err(Refusal::UnknownLease { .. })
        ));
        reg.heartbeat(&name("bob"), "new", Some(Presence::Available), t1).unwrap();
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn expired_registration_frees_the_name_exactly_at_ttl() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("bob", KEY_A, "l1", "10.0.0.1:1"), t0).unwrap();
        let just_before = t0 + TTL - Duration::from_millis(1);
        assert!(reg.lookup(&name("bob"), just_before).is_ok());
        assert_eq!(reg.list(None, 10, just_before).peers.len(), 1);
        assert!(reg.register(claim("bob", KEY_B, "l2", "x:1"), just_before).is_err());

        let at_ttl = t0 + TTL;
        let err = reg.lookup(&name("bob"), at_ttl).unwrap_err();
        assert!(err.to_string().contains("not online"));
        assert!(reg.list(None, 10, at_ttl).peers.is_empty());
        assert!(matches!(
            reg.heartbeat(&name("bob"), "l1", Some(Presence::Available), at_ttl),
            Err(Refusal::UnknownLease { .. })
        ));
        reg.register(claim("bob", KEY_B, "l2", "10.0.0.2:2"), at_ttl).unwrap();
        assert_eq!(reg.lookup(&name("bob"), at_ttl).unwrap().address, "10.0.0.2:2");
    }

    #[test]
    fn heartbeat_renews_the_lease() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("bob", KEY_A, "l1", "10.0.0.1:1"), t0).unwrap();
        let mut now = t0;
        for _ in 0..5 {
            now += Duration::from_secs(10);
            reg.heartbeat(&name("BOB"), "l1", Some(Presence::Available), now).unwrap();
        }
        assert!(now > t0 + TTL);
        assert!(reg.lookup(&name("bob"), now + TTL - Duration::from_millis(1)).is_ok());
        assert!(reg.lookup(&name("bob"), now + TTL).is_err());
    }

    #[test]
    fn heartbeat_with_a_wrong_lease_or_unknown_name_is_refused() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("bob", KEY_A, "l1", "10.0.0.1:1"), t0).unwrap();
        let err = reg.heartbeat(&name("bob"), "nope", Some(Presence::Busy), t0).unwrap_err();
        assert!(err.to_string().contains("register again"));
        assert!(reg.heartbeat(&name("alice"), "l1", Some(Presence::Busy), t0).is_err());
        assert_eq!(reg.lookup(&name("bob"), t0).unwrap().presence, Presence::Available);
    }

    #[test]
    fn heartbeat_changes_status() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("bob", KEY_A, "l1", "10.0.0.1:1"), t0).unwrap();
        let busy = reg.heartbeat(&name("bob"), "l1", Some(Presence::Busy), t0).unwrap();
        assert!(matches!(busy, Renewal::Changed(Listing { presence: Presence::Busy, .. })));
        assert_eq!(reg.lookup(&name("bob"), t0).unwrap().presence, Presence::Busy);
        assert_eq!(reg.list(None, 10, t0).peers[0].presence, Presence::Busy);
        let again = reg.heartbeat(&name("bob"), "l1", Some(Presence::Busy), t0).unwrap();
        assert_eq!(again, Renewal::Kept(Presence::Busy));
        // Keeping renews the lease and leaves the presence alone.
        let t1 = t0 + Duration::from_secs(10);
        let kept = reg.heartbeat(&name("bob"), "l1", None, t1).unwrap();
        assert_eq!(kept, Renewal::Kept(Presence::Busy));
        assert_eq!(reg.lookup(&name("bob"), t0 + TTL).unwrap().presence, Presence::Busy);
        reg.heartbeat(&name("bob"), "l1", Some(Presence::Available), t1).unwrap();
        assert_eq!(reg.lookup(&name("bob"), t1).unwrap().presence, Presence::Available);
    }

    #[test]
    fn unregister_needs_the_lease_and_is_idempotent() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("bob", KEY_A, "l1", "10.0.0.1:1"), t0).unwrap();
        assert_eq!(
            reg.unregister(&name("bob"), "other", t0),
            Err(Refusal::WrongLease { name: "bob".into() })
        );
        assert!(reg.lookup(&name("bob"), t0).is_ok());
        reg.unregister(&name("Bob"), "l1", t0).unwrap();
        assert!(reg.lookup(&name("bob"), t0).is_err());
        reg.unregister(&name("bob"), "l1", t0).unwrap();
        // The name is free at once for anyone.
        reg.register(claim("bob", KEY_B, "l2", "10.0.0.2:2"), t0).unwrap();
    }

    #[test]
    fn unregistering_an_expired_registration_reports_it_gone() {
        // Watchers still list a registration that expired until the
        // reaper reports it; one released first must be reported by the
        // release, or nobody ever would.
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("Bob", KEY_A, "l1", "10.0.0.1:1"), t0).unwrap();
        let later = t0 + TTL + Duration::from_millis(1);
        assert_eq!(reg.unregister(&name("bob"), "anything", later), Ok(Some("Bob".into())));
        assert!(reg.reap(later + TTL).is_empty(), "nothing left for the reaper");
        assert_eq!(reg.unregister(&name("bob"), "l1", later), Ok(None), "nothing twice");
    }

    #[test]
    fn pagination_returns_every_peer_once_in_order() {
        let t0 = Instant::now();
        let mut reg = registry();
        let total = 2_500;
        // Insert in an order unrelated to the sort order, in mixed case.
        for i in (0..total).rev() {
            let n = if i % 2 == 0 { format!("Peer{i:05}") } else { format!("peer{i:05}") };
            reg.register(claim(&n, KEY_A, &format!("l{i}"), "10.0.0.1:1"), t0).unwrap();
        }
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = reg.list(token.as_deref(), 1000, t0);
            pages += 1;
            assert!(page.peers.len() <= 1000);
            seen.extend(page.peers.into_iter().map(|p| p.name.to_ascii_lowercase()));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..total).map(|i| format!("peer{i:05}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_page_deep_in_100k_peers_starts_right_after_its_token() {
        let t0 = Instant::now();
        let mut reg = registry();
        for i in 0..100_000 {
            let n = format!("p{i:06}");
            reg.register(claim(&n, KEY_A, &n, "10.0.0.1:1"), t0).unwrap();
        }
        let page = reg.list(Some("p099000"), 1000, t0);
        assert_eq!(page.peers.len(), 999);
        assert_eq!(page.peers[0].name, "p099001");
        assert_eq!(page.next, None);
        assert_eq!(reg.reap(t0 + TTL).len(), 100_000);
    }

    #[test]
    fn an_exactly_full_last_page_says_it_is_the_last() {
        let t0 = Instant::now();
        let mut reg = registry();
        for n in ["a", "b", "c", "d"] {
            reg.register(claim(n, KEY_A, n, "10.0.0.1:1"), t0).unwrap();
        }
        let first = reg.list(None, 2, t0);
        assert_eq!(first.next.as_deref(), Some("b"));
        let second = reg.list(Some("b"), 2, t0);
        assert_eq!(second.peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["c", "d"]);
        assert_eq!(second.next, None);
    }

    #[test]
    fn listing_skips_expired_peers() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("a", KEY_A, "a", "10.0.0.1:1"), t0).unwrap();
        reg.register(claim("b", KEY_A, "b", "10.0.0.1:1"), t0 + Duration::from_secs(5)).unwrap();
        reg.register(claim("c", KEY_A, "c", "10.0.0.1:1"), t0).unwrap();
        let later = t0 + TTL;
        let page = reg.list(None, 1, later);
        assert_eq!(page.peers[0].name, "b");
        assert_eq!(page.next, None, "the expired c does not make another page");
    }

    #[test]
    fn reaping_drops_only_expired_entries() {
        let t0 = Instant::now();
        let mut reg = registry();
        reg.register(claim("old", KEY_A, "1", "10.0.0.1:1"), t0).unwrap();
        reg.register(claim("new", KEY_A, "2", "10.0.0.1:1"), t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(reg.reap(t0 + TTL - Duration::from_millis(1)).len(), 0);
        assert_eq!(reg.reap(t0 + TTL).len(), 1);
        assert_eq!(reg.len(), 1);
        assert!(reg.lookup(&name("new"), t0 + TTL).is_ok());
    }

    #[test]
    fn reaping_skips_until_something_can_have_expired() {
        let t0 = Instant::now();
        let mut reg = registry();
        assert_eq!(reg.reap(t0).len(), 0, "an empty registry");
        reg.register(claim("a", KEY_A, "a", "10.0.0.1:1"), t0).unwrap();
        reg.register(claim("b", KEY_A, "b", "10.0.0.1:1"), t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(reg.earliest_expiry, Some(t0 + TTL));
        // Renewed: a expires later than the bound says, which only costs
        // one sweep that finds nothing, after which the bound is exact.
        reg.heartbeat(&name("a"), "a", Some(Presence::Available), t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(reg.reap(t0 + TTL).len(), 0);
        assert_eq!(reg.earliest_expiry, Some(t0 + TTL + Duration::from_secs(5)));
        // b, then a, go exactly at their TTL; the last one out clears the
        // bound and the next insert sets it.
        assert_eq!(reg.reap(t0 + TTL + Duration::from_secs(5)).len(), 1);
        assert_eq!(reg.earliest_expiry, Some(t0 + Duration::from_secs(10) + TTL));
        assert_eq!(reg.reap(t0 + Duration::from_secs(10) + TTL).len(), 1);
        assert_eq!((reg.len(), reg.earliest_expiry), (0, None));
        assert!(reg.per_source.is_empty());
        let t1 = t0 + Duration::from_secs(60);
        reg.register(claim("c", KEY_A, "c", "10.0.0.1:1"), t1).unwrap();
        assert_eq!(reg.earliest_expiry, Some(t1 + TTL));
        assert_eq!(reg.reap(t1 + TTL).len(), 1);
    }

    #[test]
    fn registrations_per_source_are_capped_but_re_registering_is_free() {
        let t0 = Instant::now();
        let mut reg = Registry::new(TTL, 2);
        let from = |c: Claim, ip: &str| Claim { source: source(ip), ..c };
        reg.register(claim("a", KEY_A, "a", "10.0.0.1:1"), t0).unwrap();
        reg.register(claim("b", KEY_A, "b", "10.0.0.1:1"), t0).unwrap();
        let err = reg.register(claim("c", KEY_A, "c", "10.0.0.1:1"), t0).unwrap_err();
        assert_eq!(err, Refusal::TooManyFromSource { from: source("10.0.0.1"), max: 2 });
        assert!(err.to_string().contains("too many registrations from 10.0.0.1"), "{err}");
        // The same name again from the same source replaces, not adds.
        reg.register(claim("A", KEY_A, "a2", "10.0.0.1:2"), t0).unwrap();
        // Another source has its own allowance.
        reg.register(from(claim("c", KEY_A, "c", "x:1"), "10.0.0.2"), t0).unwrap();
        // Moving a name to another source frees a slot at the first.
        reg.register(from(claim("b", KEY_A, "b2", "x:1"), "10.0.0.2"), t0).unwrap();
        reg.register(claim("d", KEY_A, "d", "10.0.0.1:1"), t0).unwrap();
        assert!(reg.register(from(claim("e", KEY_A, "e", "x:1"), "10.0.0.2"), t0).is_err());
        // Unregistering and expiry give slots back.
        reg.unregister(&name("c"), "c", t0).unwrap();
        reg.register(from(claim("e", KEY_A, "e", "x:1"), "10.0.0.2"), t0).unwrap();
        assert_eq!(reg.reap(t0 + TTL).len(), 4);
        assert!(reg.per_source.is_empty());
        reg.register(claim("f", KEY_A, "f", "10.0.0.1:1"), t0 + TTL).unwrap();
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
