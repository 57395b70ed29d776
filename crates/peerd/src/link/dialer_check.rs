//! Is a dialer who it says it is? Its TLS key must be the one the
//! directory binds to the name it gives, and the one we know if we know
//! one.
//!
//! Asking the directory is not free: each Lookup counts against this
//! host's rate limit at the directory, which this daemon's own `list` and
//! `connect` share. So dialers must not be able to make us ask without
//! bound, or a stranger redialing in a loop (or one we blocked, whom the
//! driver turns away only after this check) could leave the user unable to
//! list. Two things bound it:
//! - what the directory said about a name (its key, that it is not
//!   online, or nothing: it failed to answer) is remembered for
//!   [`RECENT`]: a dialer that redials, or was told `busy` and tries
//!   again, costs nothing more;
//! - the lookups strangers may cause are rate-limited, per source and in
//!   all ([`PER_SOURCE_RATE`], [`ALL_RATE`]); over the limit a stranger is
//!   told to try again shortly. A dialer whose key we know for its name is
//!   not limited (the memory already holds it to one lookup per name and
//!   [`RECENT`]), so strangers cannot lock out the people we talk to, nor
//!   push us to take a known key without asking the directory: it is still
//!   asked, and a name it now binds to another key is refused.
//!
//! That a name is not online is remembered too, so a stranger who starts
//! moments after someone dialed under its name may be told `cannot verify`
//! for up to [`RECENT`]; a retry works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerchat_core::Name;
use peerchat_core::identity::fingerprint;
use peerchat_core::rate::{Rate, RateLimiter, TokenBucket};
use peerchat_core::source::Source;

use super::refusal::{Reason, Refusal};
use crate::directory::{self, Directories, Listing};
use crate::known_peers::{KnownPeers, Verdict, changed_message};
use crate::tls::PublicKey;

/// How long the directory's word on a name's key is taken as still true.
pub(crate) const RECENT: Duration = Duration::from_secs(5);
/// Lookups a second one source may make us do (bursts of twice that:
/// eight peers behind one address that dial at the same moment).
pub(crate) const PER_SOURCE_RATE: u32 = 4;
/// Lookups a second all dialers together may make us do: a small share of
/// the directory's default List rate (100 a second per host).
pub(crate) const ALL_RATE: u32 = 16;
/// Names remembered at once, and sources counted at once.
const MAX_REMEMBERED: usize = 1024;

/// The check, shared by every dial the peer port answers.
#[derive(Debug, Clone)]
pub(crate) struct DialerCheck {
    directory: Directories,
    known: KnownPeers,
    memory: Arc<Mutex<Memory>>,
}

impl DialerCheck {
    pub(crate) fn new(directory: Directories, known: KnownPeers) -> DialerCheck {
        DialerCheck { directory, known, memory: Arc::new(Mutex::new(Memory::new(Instant::now()))) }
    }

    /// Checks that `name` is `key`'s, for a dial from `source`. True if we
    /// know the key (have talked to it before).
    pub(crate) async fn check(
        &self,
        name: &Name,
        key: &PublicKey,
        source: Source,
    ) -> Result<bool, Refusal> {
        // A key other than the one we know takes the same path as a new
        // one (the same lookup, charged the same, answered the same) and
        // is refused only after it: refused at once, it would answer "is
        // this a name you know?" to anyone with a throwaway key, by its
        // speed, or by being refused while a stranger's dial is told to
        // try again shortly. Whatever the directory says, it is refused:
        // taking a changed key is `chatctl trust`'s decision.
        let verdict = self.known.check(name, key);
        let known = verdict == Verdict::Known;
        self.vouched(name, key, source, known).await?;
        if let Verdict::Changed { known } = verdict {
            return Err(unverified(name, changed_message(name, &known, key)));
        }
        Ok(known)
    }

    /// Whether the directory vouches for `key` as `name`'s (or, `known`,
    /// cannot say otherwise right now), asking it only as the module's doc
    /// says.
    async fn vouched(
        &self,
        name: &Name,
        key: &PublicKey,
        source: Source,
        known: bool,
    ) -> Result<(), Refusal> {
        let not_yours = || {
            let why = format!(
                "its key {} is not the one the directory binds to {name}",
                fingerprint(key)
            );
            unverified(name, why)
        };
        let asked = self.with_memory(|m| m.ask(name, source, known, Instant::now()));
        let listed = match asked {
            Ask::Remembered(Word::Key(listed)) if listed == *key => return Ok(()),
            Ask::Remembered(Word::Key(_)) => return Err(not_yours()),
            Ask::Remembered(Word::NotOnline) => Listing::NotOnline,
            Ask::Remembered(Word::NoAnswer) => {
                Listing::Unknown("it did not answer a moment ago".to_owned())
            }
            Ask::TooMany => {
                let why = "too many dials to check at once; try again shortly";
                return Err(Refusal::new(Reason::TooManyDials, why));
            }
            Ask::Directory => {
                let listed = directory::lookup(&self.directory, name.as_str()).await;
                let word = match &listed {
                    Listing::Online(peer) => {
                        PublicKey::try_from(peer.public_key.as_slice()).ok().map(Word::Key)
                    }
                    Listing::NotOnline => Some(Word::NotOnline),
                    // Remembered too: a directory that fails (or limits
                    // our rate) is not asked again for every redial.
                    Listing::Unknown(_) => Some(Word::NoAnswer),
                };
                if let Some(word) = word {
                    self.with_memory(|m| m.remember(name, word, Instant::now()));
                }
                listed
            }
        };
        match listed {
            Listing::Online(peer) if peer.public_key.as_slice() != key.as_slice() => {
                Err(not_yours())
            }
            Listing::Online(_) => Ok(()),
            _ if known => Ok(()),
            Listing::NotOnline => {
                Err(unverified(name, "it is not registered in the directory".to_owned()))
            }
            Listing::Unknown(why) => {
                let why = format!("cannot verify {name}: the directory is unreachable ({why})");
                Err(Refusal::new(Reason::CannotVerify, why))
            }
        }
    }

    fn with_memory<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> T {
        // A panic elsewhere while holding it leaves nothing half-done.
        let mut memory = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut memory)
    }
}

/// The refusal of a dialer that fails the check. It hears the same words
/// whichever part failed: which one would tell a stranger with a throwaway
/// key whom we talked to (a changed key is one we knew). `detail` is for
/// our log.
fn unverified(name: &Name, detail: String) -> Refusal {
    if let Some(left_out) = super::refusal_log::allow() {
        tracing::info!(%name, %detail, left_out, "refused a dialer we cannot verify");
    }
    Refusal::new(Reason::Unverified, format!("cannot verify you as {name}"))
}

/// What the directory said about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// It is online under this key.
    Key(PublicKey),
    NotOnline,
    /// The directory did not answer (or refused to).
    NoAnswer,
}

/// What [`Memory::ask`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// The directory said this lately.
    Remembered(Word),
    /// Ask the directory (a stranger's lookup was charged).
    Directory,
    /// No lookup left for this stranger's source, or for strangers at all,
    /// right now.
    TooMany,
}

/// The pure part: names the directory vouched for lately, and the lookups
/// left. `now` is passed in.
#[derive(Debug)]
struct Memory {
    said: HashMap<String, (Word, Instant)>,
    per_source: RateLimiter,
    all: TokenBucket,
}

impl Memory {
    fn new(now: Instant) -> Memory {
        Memory {
            said: HashMap::new(),
            per_source: RateLimiter::new(PER_SOURCE_RATE, MAX_REMEMBERED),
            all: TokenBucket::full(Rate::per_second(ALL_RATE), now),
        }
    }

    /// `known`: the dialer's key is the one we know for `name`.
    fn ask(&mut self, name: &Name, source: Source, known: bool, now: Instant) -> Ask {
        if let Some(&(word, at)) = self.said.get(&name.key())
            && now.saturating_duration_since(at) < RECENT
        {
            return Ask::Remembered(word);
        }
        if known {
            return Ask::Directory;
        }
        let mut charged = self.per_source.check(source, now);
        if charged.is_err() && self.per_source.len() >= MAX_REMEMBERED {
            // Full of sources: forget the ones that are quiet, then retry.
            self.per_source.sweep(now);
            charged = self.per_source.check(source, now);
        }
        if charged.is_ok() && self.all.try_take(Rate::per_second(ALL_RATE), now) {
            Ask::Directory
        } else {
            Ask::TooMany
        }
    }

    fn remember(&mut self, name: &Name, word: Word, now: Instant) {
        if self.said.len() >= MAX_REMEMBERED {
            self.said.retain(|_, (_, at)| now.saturating_duration_since(*at) < RECENT);
        }
        if self.said.len() < MAX_REMEMBERED {
            self.said.insert(name.key(), (word, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use peerchat::v1 as pb;

    use super::*;
    use crate::fake_directory::{Fake, directories};

    fn name(n: &str) -> Name {
        Name::parse(n).expect("a valid name")
    }

    fn source(ip: &str) -> Source {
        Source::of_ip(ip.parse().expect("an IP"))
    }

    #[test]
    fn the_directory_word_is_remembered_for_a_few_seconds() {
        let t0 = Instant::now();
        let mut m = Memory::new(t0);
        let a = source("10.0.0.1");
        assert_eq!(m.ask(&name("bob"), a, false, t0), Ask::Directory);
        m.remember(&name("bob"), Word::Key([7; 32]), t0);
        m.remember(&name("eve"), Word::NotOnline, t0);
        m.remember(&name("ida"), Word::NoAnswer, t0);
        let soon = t0 + RECENT - Duration::from_millis(1);
        assert_eq!(m.ask(&name("BOB"), a, false, soon), Ask::Remembered(Word::Key([7; 32])));
        assert_eq!(m.ask(&name("eve"), a, true, soon), Ask::Remembered(Word::NotOnline));
        assert_eq!(m.ask(&name("ida"), a, true, soon), Ask::Remembered(Word::NoAnswer));
        assert_eq!(m.ask(&name("bob"), a, false, t0 + RECENT), Ask::Directory);
    }

    #[test]
    fn strangers_lookups_are_limited_per_source_and_in_all_and_known_keys_are_not() {
        let t0 = Instant::now();
        let mut m = Memory::new(t0);
        let a = source("10.0.0.1");
        let burst = 2 * PER_SOURCE_RATE;
        for i in 0..burst {
            assert_eq!(m.ask(&name(&format!("p{i}")), a, false, t0), Ask::Directory, "dial {i}");
        }
        assert_eq!(m.ask(&name("one-more"), a, false, t0), Ask::TooMany);
        // Another source still may, until all strangers together spent theirs.
        let mut asked = 0;
        for i in 0..100u8 {
            let from = source(&format!("10.0.1.{i}"));
            if m.ask(&name(&format!("q{i}")), from, false, t0) == Ask::Directory {
                asked += 1;
            }
        }
        assert_eq!(asked + burst, 2 * ALL_RATE);
        // Someone whose key we know is still looked up, from anywhere.
        assert_eq!(m.ask(&name("friend"), a, true, t0), Ask::Directory);
        // Time refills both.
        assert_eq!(m.ask(&name("later"), a, false, t0 + Duration::from_secs(1)), Ask::Directory);
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut m = Memory::new(t0);
        for i in 0..(2 * MAX_REMEMBERED) {
            m.remember(&name(&format!("p{i}")), Word::NotOnline, t0);
        }
        assert_eq!(m.said.len(), MAX_REMEMBERED);
        // Once old, they make room.
        m.remember(&name("new"), Word::Key([2; 32]), t0 + RECENT);
        assert_eq!(m.said.len(), 1);
        for i in 0..(2 * MAX_REMEMBERED) {
            let from = source(&format!("10.{}.{}.1", i / 250, i % 250));
            let _ = m.ask(&name("x"), from, false, t0 + RECENT + Duration::from_secs(60));
        }
        assert!(m.per_source.len() <= MAX_REMEMBERED);
    }

    fn listed(name: &str, key: PublicKey) -> pb::Peer {
        pb::Peer {
            name: name.into(),
            address: "127.0.0.1:4000".into(),
            status: pb::PeerStatus::Available.into(),
            public_key: key.to_vec(),
        }
    }

    /// Remembers `key` as `who`'s, as after a conversation with them.
    async fn know(known: &KnownPeers, who: &Name, key: PublicKey) {
        if let Some(written) = known.remember(who, &key) {
            written.await.expect("written");
        }
    }

    fn lock_listed(
        listed: &std::sync::Mutex<Vec<pb::Peer>>,
    ) -> std::sync::MutexGuard<'_, Vec<pb::Peer>> {
        listed.lock().expect("the fake's list")
    }

    #[tokio::test]
    async fn a_redial_costs_no_lookup_and_a_flood_costs_a_bounded_few() {
        let fake = Fake::default();
        let listed_peers = fake.listed.clone();
        lock_listed(&listed_peers).push(listed("carol", [3; 32]));
        let lookups = fake.lookups.clone();
        let (addr, _server) = fake.serve().await;
        let data = tempfile::tempdir().expect("a temp dir");
        let known = KnownPeers::load(data.path()).expect("known peers");
        let check = DialerCheck::new(directories(addr), known.clone());
        let from = source("127.0.0.5");

        assert_eq!(check.check(&name("carol"), &[3; 32], from).await, Ok(false));
        assert_eq!(check.check(&name("carol"), &[3; 32], from).await, Ok(false));
        let impostor = check.check(&name("carol"), &[4; 32], from).await.expect_err("not carol");
        assert_eq!(impostor.reason, Reason::Unverified);
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "carol was looked up once");

        // Made-up names from one source: a burst of lookups, then refusals.
        let mut too_many = 0;
        for i in 0..40 {
            let refused = check.check(&name(&format!("x{i}")), &[5; 32], from).await;
            match refused.expect_err("nobody is x").reason {
                Reason::TooManyDials => too_many += 1,
                other => assert_eq!(other, Reason::Unverified),
            }
        }
        let asked = lookups.load(Ordering::SeqCst) - 1;
        assert!(asked <= 2 * PER_SOURCE_RATE as usize + 1, "{asked} lookups for a flood");
        assert!(too_many >= 30, "{too_many}");
        // With strangers' lookups spent, a peer we know is still looked up
        // (once per RECENT) and taken.
        let dave = name("dave");
        know(&known, &dave, [6; 32]).await;
        let spent = |m: &mut Memory| {
            (0..100).any(|_| m.ask(&name("y"), from, false, Instant::now()) == Ask::TooMany)
        };
        assert!(check.with_memory(spent));
        assert_eq!(check.check(&dave, &[6; 32], from).await, Ok(true), "not online: known key");
        assert_eq!(check.check(&dave, &[6; 32], from).await, Ok(true));
        assert_eq!(lookups.load(Ordering::SeqCst) - 1, asked + 1, "dave looked up once");
        // A throwaway key under a name we know is charged like a stranger's
        // and answered the same: the answer does not say whom we know.
        let fay = name("fay");
        know(&known, &fay, [10; 32]).await;
        assert!(check.with_memory(spent));
        let probe = check.check(&fay, &[11; 32], from).await.expect_err("not fay's key");
        let stranger = check.check(&name("gus"), &[11; 32], from).await.expect_err("nobody");
        assert_eq!((probe.reason, stranger.reason), (Reason::TooManyDials, Reason::TooManyDials));
        // A known key whose name the directory now binds to another key
        // (a stolen key, its name moved on) is refused all the same.
        let erin = name("erin");
        know(&known, &erin, [7; 32]).await;
        lock_listed(&listed_peers).push(listed("erin", [8; 32]));
        assert!(check.with_memory(spent));
        let thief = check.check(&erin, &[7; 32], from).await.expect_err("erin moved on");
        assert_eq!(thief.reason, Reason::Unverified);
    }

    /// Carol's key changed and the directory binds her name to the new
    /// one: still refused, the first time (after the lookup) and while the
    /// directory's word is remembered, until `chatctl trust` takes it.
    #[tokio::test]
    async fn a_changed_key_is_refused_even_when_the_directory_vouches_for_it() {
        let fake = Fake::default();
        lock_listed(&fake.listed).push(listed("carol", [4; 32]));
        let (addr, _server) = fake.serve().await;
        let data = tempfile::tempdir().expect("a temp dir");
        let known = KnownPeers::load(data.path()).expect("known peers");
        know(&known, &name("carol"), [3; 32]).await;
        let check = DialerCheck::new(directories(addr), known);
        let from = source("127.0.0.5");
        for attempt in ["looked up", "remembered"] {
            let refused = check.check(&name("carol"), &[4; 32], from).await;
            let refused = refused.expect_err(attempt);
            assert_eq!(refused.reason, Reason::Unverified, "{attempt}");
            assert_eq!(refused.message, "cannot verify you as carol");
        }
    }

    #[tokio::test]
    async fn without_the_directory_a_known_key_is_enough_and_a_new_one_is_not() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let addr = gone.local_addr().expect("its address");
        drop(gone);
        let data = tempfile::tempdir().expect("a temp dir");
        let known = KnownPeers::load(data.path()).expect("known peers");
        know(&known, &name("dave"), [6; 32]).await;
        let check = DialerCheck::new(directories(addr), known);
        let from = source("127.0.0.5");
        for _ in 0..2 {
            assert_eq!(check.check(&name("dave"), &[6; 32], from).await, Ok(true));
        }
        let stranger = check.check(&name("zed"), &[9; 32], from).await.expect_err("unverifiable");
        assert_eq!(stranger.reason, Reason::CannotVerify);
        // Another key under dave's name hears what a stranger hears.
        let probe = check.check(&name("dave"), &[9; 32], from).await.expect_err("not dave's");
        assert_eq!(probe.reason, Reason::CannotVerify);
        let words = "cannot verify dave: the directory is unreachable (";
        assert!(probe.message.starts_with(words), "{}", probe.message);
        assert!(stranger.message.starts_with("cannot verify zed: the directory is unreachable ("));
        // The failure is remembered: dave's redial did not ask again.
        let asked = check.with_memory(|m| m.ask(&name("dave"), from, true, Instant::now()));
        assert_eq!(asked, Ask::Remembered(Word::NoAnswer));
    }
}
