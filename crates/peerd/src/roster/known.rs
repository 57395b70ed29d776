//! Who is online as far as peerd knows, and the changes worth telling:
//! sans-IO. The feed task hands it the directory's events (or, when it
//! polls, whole listings) and drains [`Change`]s after each; no socket and
//! no clock, so every rule is a unit test.
//!
//! The directory's ONLINE means "came online *or* changed"; this is where
//! the two are told apart, by comparing with the listing known. A fresh
//! snapshot (after a gap in the directory's feed, a reconnect, or a poll)
//! is compared with what was known, so that watchers hear only what really
//! changed meanwhile, never the whole list again.
//!
//! A peer missing from a fresh snapshot of the stream is not told offline
//! at once, but after [`RESYNC_GRACE`] if it has not come back by then: a
//! directory that restarted (on memory) lists nobody at first, and everyone
//! registers again within seconds; watchers would otherwise see everyone
//! go offline and come back. The time comes from the feed ([`Known::tick`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::identity::PUBLIC_KEY_LEN;

/// Peers known at most. The directory is trusted to list peers, not to
/// hold this daemon's memory: past this, further names are left out (and
/// logged) rather than stored. A directory that big wants a narrower view
/// than everyone anyway.
pub(crate) const MAX_PEERS: usize = 200_000;

/// How long a peer missing from a fresh snapshot of the directory's stream
/// is still shown online, waiting for it to be listed again: the
/// directory's renewal interval (ttl/3: 5 s by default) and a registration
/// retry's longest backoff (5 s), twice over.
pub(crate) const RESYNC_GRACE: Duration = Duration::from_secs(20);

/// Longest address kept: `host:port` with a DNS name fits many times over.
const MAX_ADDRESS_LEN: usize = 300;

/// A change of who is online, in the order it is to be told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// The first complete list since the feed started: everyone online,
    /// ordered by name. Only once per feed; what follows are changes.
    Synced(Arc<[pb::Peer]>),
    /// A peer not known before is online.
    Online(pb::Peer),
    /// A known peer's listing changed (status, address or key): the new one.
    Changed(pb::Peer),
    /// A known peer went offline; its name as it was listed.
    Offline(String),
}

/// The known peers, a snapshot being received, and the changes not yet
/// drained.
#[derive(Debug)]
pub(crate) struct Known {
    /// By case-folded name (names compare case-insensitively), so that
    /// listings and changes come out ordered by name.
    peers: BTreeMap<String, pb::Peer>,
    /// Between SNAPSHOT_BEGIN and SNAPSHOT_END: the peers of the snapshot.
    incoming: Option<BTreeMap<String, pb::Peer>>,
    /// A first complete snapshot arrived: `peers` is a baseline that
    /// changes can be told against.
    synced: bool,
    changes: VecDeque<Change>,
    /// Peers left out for [`MAX_PEERS`] since the last drain, to log.
    left_out: usize,
    /// Keys of peers still in `peers` though a fresh snapshot did not list
    /// them, and until when (see [`RESYNC_GRACE`]).
    held: BTreeMap<String, Instant>,
    /// The instant the feed told last.
    now: Instant,
    /// [`RESYNC_GRACE`], shorter in tests.
    grace: Duration,
}

impl Known {
    /// Nothing known yet; peers missing from a fresh snapshot are held for
    /// `grace` (see [`RESYNC_GRACE`]).
    pub(crate) fn new(grace: Duration) -> Known {
        Known {
            peers: BTreeMap::new(),
            incoming: None,
            synced: false,
            changes: VecDeque::new(),
            left_out: 0,
            held: BTreeMap::new(),
            now: Instant::now(),
            grace,
        }
    }

    /// The time is `now`: peers held past [`RESYNC_GRACE`] are offline.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.now = now;
        let expired: Vec<String> =
            self.held.iter().filter(|(_, until)| **until <= now).map(|(k, _)| k.clone()).collect();
        for key in expired {
            self.held.remove(&key);
            if let Some(gone) = self.peers.remove(&key) {
                self.changes.push_back(Change::Offline(gone.name));
            }
        }
    }

    /// When [`Known::tick`] has something to do next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.held.values().min().copied()
    }

    /// One event of the directory's WatchPeers stream. Kinds this build does
    /// not know (a newer directory) are skipped.
    pub(crate) fn handle_event(&mut self, event: pb::PeerEvent) {
        use pb::peer_event::Kind;
        match Kind::try_from(event.kind) {
            Ok(Kind::SnapshotBegin) => self.incoming = Some(BTreeMap::new()),
            Ok(Kind::SnapshotEnd) => {
                // An END without a BEGIN has nothing to end.
                if let Some(fresh) = self.incoming.take() {
                    self.handle_snapshot(fresh, true);
                }
            }
            Ok(Kind::Online) => {
                if let Some(peer) = event.peer.and_then(checked) {
                    self.upsert(peer);
                }
            }
            Ok(Kind::Offline) => {
                if let Some(peer) = event.peer {
                    self.remove(&peer.name);
                }
            }
            Ok(Kind::Unspecified) | Err(_) => {}
        }
    }

    /// A complete listing (from polling List): the same as a snapshot.
    pub(crate) fn handle_listing(&mut self, peers: impl IntoIterator<Item = pb::Peer>) {
        let mut fresh = BTreeMap::new();
        for peer in peers.into_iter().filter_map(checked) {
            insert_bounded(&mut fresh, peer, &mut self.left_out);
        }
        // Polled every few seconds, a listing is how peers are seen to go
        // offline at all: no grace.
        self.handle_snapshot(fresh, false);
    }

    /// The stream broke before SNAPSHOT_END: what was known stands, the
    /// half snapshot is dropped (the next one is compared with `peers`).
    pub(crate) fn abandon_snapshot(&mut self) {
        self.incoming = None;
    }

    /// True once a first complete snapshot arrived.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced
    }

    /// Everyone known online, ordered by name.
    pub(crate) fn list(&self) -> Arc<[pb::Peer]> {
        self.peers.values().cloned().collect()
    }

    /// The next change to tell, oldest first.
    pub(crate) fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// How many peers were left out for [`MAX_PEERS`] since the last call.
    pub(crate) fn take_left_out(&mut self) -> usize {
        std::mem::take(&mut self.left_out)
    }

    fn upsert(&mut self, peer: pb::Peer) {
        if let Some(incoming) = &mut self.incoming {
            insert_bounded(incoming, peer, &mut self.left_out);
            return;
        }
        // A change before any snapshot has no baseline to be told against;
        // the snapshot that comes first will include it.
        if !self.synced {
            return;
        }
        let key = peer.name.to_ascii_lowercase();
        // Listed again: no longer held; told only if its listing changed.
        self.held.remove(&key);
        let full = self.peers.len() >= MAX_PEERS;
        match self.peers.get_mut(&key) {
            Some(known) if *known == peer => {}
            Some(known) => {
                known.clone_from(&peer);
                self.changes.push_back(Change::Changed(peer));
            }
            None if full => self.left_out += 1,
            None => {
                self.peers.insert(key, peer.clone());
                self.changes.push_back(Change::Online(peer));
            }
        }
    }

    fn remove(&mut self, name: &str) {
        let key = name.to_ascii_lowercase();
        if let Some(incoming) = &mut self.incoming {
            incoming.remove(&key);
            return;
        }
        self.held.remove(&key);
        if let Some(gone) = self.peers.remove(&key) {
            self.changes.push_back(Change::Offline(gone.name));
        }
    }

    /// `fresh` is everyone online now: the first one is the baseline, a
    /// later one is told as the differences from what was known. With
    /// `grace`, a peer it lacks is held rather than told offline.
    fn handle_snapshot(&mut self, fresh: BTreeMap<String, pb::Peer>, grace: bool) {
        let known = std::mem::replace(&mut self.peers, fresh);
        if !self.synced {
            self.synced = true;
            self.changes.push_back(Change::Synced(self.list()));
            return;
        }
        let mut held = std::mem::take(&mut self.held);
        for (key, old) in &known {
            if self.peers.contains_key(key) {
                continue;
            }
            match held.remove(key) {
                // Held already: the grace runs from the first snapshot
                // without it.
                Some(until) if grace => {
                    self.held.insert(key.clone(), until);
                    self.peers.insert(key.clone(), old.clone());
                }
                _ if grace && self.peers.len() < MAX_PEERS => {
                    self.held.insert(key.clone(), self.now + self.grace);
                    self.peers.insert(key.clone(), old.clone());
                }
                _ => self.changes.push_back(Change::Offline(old.name.clone())),
            }
        }
        for (key, new) in &self.peers {
            match known.get(key) {
                None => self.changes.push_back(Change::Online(new.clone())),
                Some(old) if old != new => self.changes.push_back(Change::Changed(new.clone())),
                Some(_) => {}
            }
        }
    }
}

/// Adds `peer` to `map` unless that would pass [`MAX_PEERS`] (counting it
/// in `left_out` then).
fn insert_bounded(map: &mut BTreeMap<String, pb::Peer>, peer: pb::Peer, left_out: &mut usize) {
    let key = peer.name.to_ascii_lowercase();
    if map.len() >= MAX_PEERS && !map.contains_key(&key) {
        *left_out += 1;
        return;
    }
    map.insert(key, peer);
}

/// `peer` if it is a listing we can show: a valid name, an address of
/// printable ASCII (it goes to terminals as is) and of sane length, a key of
/// the right length or none. Anything else came from a broken or hostile
/// directory and is left out (of `list` too).
pub(crate) fn checked(peer: pb::Peer) -> Option<pb::Peer> {
    Name::parse(&peer.name).ok()?;
    let address_ok =
        peer.address.len() <= MAX_ADDRESS_LEN && peer.address.bytes().all(|b| b.is_ascii_graphic());
    let key_ok = peer.public_key.is_empty() || peer.public_key.len() == PUBLIC_KEY_LEN;
    (address_ok && key_ok).then_some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::peer_event::Kind;

    fn peer(name: &str, port: u16, status: pb::PeerStatus) -> pb::Peer {
        pb::Peer {
            name: name.into(),
            address: format!("127.0.0.1:{port}"),
            status: status as i32,
            public_key: vec![1; PUBLIC_KEY_LEN],
        }
    }

    fn available(name: &str) -> pb::Peer {
        peer(name, 4000, pb::PeerStatus::Available)
    }

    fn busy(name: &str) -> pb::Peer {
        peer(name, 4000, pb::PeerStatus::Busy)
    }

    fn ev(kind: Kind, peer: Option<pb::Peer>) -> pb::PeerEvent {
        pb::PeerEvent { kind: kind as i32, peer }
    }

    fn online(p: pb::Peer) -> pb::PeerEvent {
        ev(Kind::Online, Some(p))
    }

    fn offline(name: &str) -> pb::PeerEvent {
        ev(Kind::Offline, Some(pb::Peer { name: name.into(), ..pb::Peer::default() }))
    }

    /// SNAPSHOT_BEGIN, an ONLINE per peer, SNAPSHOT_END.
    fn snapshot(known: &mut Known, peers: &[pb::Peer]) {
        known.handle_event(ev(Kind::SnapshotBegin, None));
        for p in peers {
            known.handle_event(online(p.clone()));
        }
        known.handle_event(ev(Kind::SnapshotEnd, None));
    }

    fn drain(known: &mut Known) -> Vec<Change> {
        std::iter::from_fn(|| known.poll_change()).collect()
    }

    fn synced_with(peers: &[pb::Peer]) -> Known {
        let mut known = Known::new(RESYNC_GRACE);
        snapshot(&mut known, peers);
        drain(&mut known);
        known
    }

    #[test]
    fn the_first_snapshot_is_the_baseline_ordered_by_name() {
        let mut known = Known::new(RESYNC_GRACE);
        assert!(!known.is_synced());
        snapshot(&mut known, &[available("carol"), busy("alice")]);
        assert!(known.is_synced());
        assert_eq!(
            drain(&mut known),
            [Change::Synced(Arc::from(vec![busy("alice"), available("carol")]))],
            "one Synced with everyone, no Online per peer"
        );
        assert_eq!(&*known.list(), [busy("alice"), available("carol")]);
    }

    #[test]
    fn nothing_is_told_before_the_first_snapshot_ends() {
        let mut known = Known::new(RESYNC_GRACE);
        known.handle_event(online(available("bob")));
        known.handle_event(offline("bob"));
        known.handle_event(ev(Kind::SnapshotBegin, None));
        known.handle_event(online(available("alice")));
        assert_eq!(drain(&mut known), [], "half a snapshot tells nothing");
        assert!(!known.is_synced());
        assert_eq!(known.list().len(), 0);
    }

    #[test]
    fn a_new_name_is_online_a_known_one_changed() {
        let mut known = synced_with(&[available("alice")]);
        known.handle_event(online(available("bob")));
        known.handle_event(online(busy("bob")));
        known.handle_event(online(busy("BOB")));
        known.handle_event(online(peer("bob", 5000, pb::PeerStatus::Busy)));
        assert_eq!(
            drain(&mut known),
            [
                Change::Online(available("bob")),
                Change::Changed(busy("bob")),
                // Another case of the same name is the same peer, and its
                // listing is what the directory says now.
                Change::Changed(busy("BOB")),
                Change::Changed(peer("bob", 5000, pb::PeerStatus::Busy)),
            ]
        );
    }

    #[test]
    fn the_same_listing_again_is_no_change() {
        let mut known = synced_with(&[available("alice")]);
        known.handle_event(online(available("alice")));
        assert_eq!(drain(&mut known), []);
    }

    #[test]
    fn offline_tells_a_known_peer_by_its_listed_name_and_ignores_strangers() {
        let mut known = synced_with(&[available("Alice"), available("bob")]);
        known.handle_event(offline("alice"));
        known.handle_event(offline("alice"));
        known.handle_event(offline("zed"));
        assert_eq!(drain(&mut known), [Change::Offline("Alice".into())]);
        assert_eq!(&*known.list(), [available("bob")]);
    }

    #[test]
    fn a_second_snapshot_after_a_gap_tells_only_the_real_changes() {
        let mut known = synced_with(&[available("alice"), available("bob"), available("carol")]);
        let t0 = Instant::now();
        known.tick(t0);
        // Meanwhile bob went away, carol got busy, dave came; alice is as
        // she was.
        snapshot(&mut known, &[available("alice"), busy("carol"), available("dave")]);
        assert_eq!(
            drain(&mut known),
            [Change::Changed(busy("carol")), Change::Online(available("dave"))],
            "bob is held for the grace, not told offline yet"
        );
        snapshot(&mut known, &[available("alice"), busy("carol"), available("dave")]);
        assert_eq!(drain(&mut known), [], "an identical snapshot tells nothing");
        // The grace runs from the first snapshot without him.
        assert_eq!(known.poll_timeout(), Some(t0 + RESYNC_GRACE));
        known.tick(t0 + RESYNC_GRACE - Duration::from_millis(1));
        assert_eq!(drain(&mut known), []);
        assert_eq!(known.list().len(), 4, "still listed while held");
        known.tick(t0 + RESYNC_GRACE);
        assert_eq!(drain(&mut known), [Change::Offline("bob".into())]);
        assert_eq!(known.poll_timeout(), None);
        assert_eq!(known.list().len(), 3);
    }

    /// A directory that restarted on memory lists nobody at first; everyone
    /// registers again within seconds. Watchers must not see them all go
    /// offline and come back.
    #[test]
    fn peers_listed_again_within_the_grace_were_never_offline() {
        let mut known = synced_with(&[available("alice"), available("bob"), available("carol")]);
        known.tick(Instant::now());
        snapshot(&mut known, &[]);
        assert_eq!(drain(&mut known), []);
        // Back as they were: nothing to tell; back changed: Changed.
        known.handle_event(online(available("alice")));
        known.handle_event(online(busy("bob")));
        assert_eq!(drain(&mut known), [Change::Changed(busy("bob"))]);
        // One the directory says left is told at once.
        known.handle_event(offline("carol"));
        assert_eq!(drain(&mut known), [Change::Offline("carol".into())]);
        assert_eq!(known.poll_timeout(), None, "nobody is held any more");
        assert_eq!(&*known.list(), [available("alice"), busy("bob")]);
    }

    #[test]
    fn deltas_replayed_inside_a_snapshot_count_towards_it() {
        let mut known = synced_with(&[available("alice")]);
        known.handle_event(ev(Kind::SnapshotBegin, None));
        known.handle_event(online(available("alice")));
        known.handle_event(online(available("bob")));
        known.handle_event(offline("bob"));
        known.handle_event(online(busy("alice")));
        assert_eq!(drain(&mut known), [], "nothing until the snapshot ends");
        known.handle_event(ev(Kind::SnapshotEnd, None));
        assert_eq!(drain(&mut known), [Change::Changed(busy("alice"))]);
    }

    #[test]
    fn a_broken_snapshot_leaves_what_was_known() {
        let mut known = synced_with(&[available("alice")]);
        known.handle_event(ev(Kind::SnapshotBegin, None));
        known.handle_event(online(available("bob")));
        known.abandon_snapshot();
        known.handle_event(ev(Kind::SnapshotEnd, None));
        assert_eq!(drain(&mut known), [], "an END after the break ends nothing");
        assert_eq!(&*known.list(), [available("alice")]);
        // The next full snapshot is compared with alice alone.
        snapshot(&mut known, &[available("alice"), available("bob")]);
        assert_eq!(drain(&mut known), [Change::Online(available("bob"))]);
    }

    #[test]
    fn polled_listings_are_snapshots() {
        let mut known = Known::new(RESYNC_GRACE);
        known.handle_listing([available("bob"), available("alice")]);
        assert_eq!(
            drain(&mut known),
            [Change::Synced(Arc::from(vec![available("alice"), available("bob")]))]
        );
        // Polled, a listing is how peers are seen to go: no grace.
        known.handle_listing([busy("alice")]);
        assert_eq!(
            drain(&mut known),
            [Change::Offline("bob".into()), Change::Changed(busy("alice"))]
        );
    }

    #[test]
    fn listings_a_terminal_or_a_dialer_cannot_use_are_left_out() {
        let mut known = synced_with(&[]);
        let mut bad_name = available("bob");
        bad_name.name = "bob\u{1b}[2J".into();
        let mut bad_address = available("carol");
        bad_address.address = "10.0.0.1:1\u{1b}]0;owned\u{7}".into();
        let mut long_address = available("dave");
        long_address.address = "a".repeat(MAX_ADDRESS_LEN + 1);
        let mut bad_key = available("erin");
        bad_key.public_key = vec![1; 31];
        let mut no_key = available("frank");
        no_key.public_key.clear();
        for p in [bad_name, bad_address, long_address, bad_key, no_key.clone()] {
            known.handle_event(online(p));
        }
        known.handle_event(ev(Kind::Online, None));
        known.handle_event(ev(Kind::Unspecified, Some(available("gina"))));
        known.handle_event(pb::PeerEvent { kind: 99, peer: Some(available("hank")) });
        assert_eq!(drain(&mut known), [Change::Online(no_key)]);
    }

    #[test]
    fn the_known_set_is_bounded() {
        let mut known = Known::new(RESYNC_GRACE);
        let many = (0..MAX_PEERS + 3).map(|i| available(&format!("p{i}")));
        known.handle_listing(many);
        assert_eq!(known.list().len(), MAX_PEERS);
        assert_eq!(known.take_left_out(), 3);
        drain(&mut known);
        known.handle_event(online(available("one-more")));
        assert_eq!(drain(&mut known), []);
        assert_eq!(known.take_left_out(), 1);
        assert_eq!(known.take_left_out(), 0);
    }
}
