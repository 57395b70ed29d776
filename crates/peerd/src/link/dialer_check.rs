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
//! - what the directory said about a name is remembered for [`RECENT`]: a
//!   dialer that redials, or was told `busy` and tries again, costs
//!   nothing more;
//! - the lookups dialers may cause are rate-limited, per source and in
//!   all ([`PER_SOURCE_RATE`], [`ALL_RATE`]). Over the limit, a dialer
//!   whose key we know is taken on that key, as when the directory is out
//!   of reach; one we do not know is told to try again shortly.

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
        let unverified = |why: String| Refusal::new(Reason::Unverified, why);
        let known = match self.known.check(name, key) {
            Verdict::Changed { known } => {
                return Err(unverified(changed_message(name, &known, key)));
            }
            Verdict::Known => true,
            Verdict::New => false,
        };
        let not_yours = || {
            unverified(format!(
                "you are not {name}: your key {} is not the one the directory binds to {name}",
                fingerprint(key)
            ))
        };
        let asked = self.with_memory(|m| m.ask(name, source, Instant::now()));
        let listed = match asked {
            Ask::Remembered(listed) if listed == *key => return Ok(known),
            Ask::Remembered(_) => return Err(not_yours()),
            // A key we know is enough without the directory.
            Ask::TooMany if known => return Ok(true),
            Ask::TooMany => {
                let why = "too many dials to check at once; try again shortly";
                return Err(Refusal::new(Reason::TooManyDials, why));
            }
            Ask::Directory => directory::lookup(&self.directory, name.as_str()).await,
        };
        match listed {
            Listing::Online(peer) => {
                let Ok(listed) = PublicKey::try_from(peer.public_key.as_slice()) else {
                    return Err(not_yours());
                };
                self.with_memory(|m| m.remember(name, listed, Instant::now()));
                if listed != *key {
                    return Err(not_yours());
                }
            }
            _ if known => {}
            Listing::NotOnline => {
                return Err(unverified(format!(
                    "cannot verify {name}: it is not registered in the directory"
                )));
            }
            Listing::Unknown(why) => {
                return Err(Refusal::new(
                    Reason::CannotVerify,
                    format!(
                        "cannot verify {name}: the directory is unreachable ({why}) and its key is new to us"
                    ),
                ));
            }
        }
        Ok(known)
    }

    fn with_memory<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> T {
        // A panic elsewhere while holding it leaves nothing half-done.
        let mut memory = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut memory)
    }
}

/// What [`Memory::ask`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// The directory said lately that the name is this key's.
    Remembered(PublicKey),
    /// Ask the directory (a lookup was charged).
    Directory,
    /// No lookup left for this source, or for anyone, right now.
    TooMany,
}

/// The pure part: names the directory vouched for lately, and the lookups
/// left. `now` is passed in.
#[derive(Debug)]
struct Memory {
    vouched: HashMap<String, (PublicKey, Instant)>,
    per_source: RateLimiter,
    all: TokenBucket,
}

impl Memory {
    fn new(now: Instant) -> Memory {
        Memory {
            vouched: HashMap::new(),
            per_source: RateLimiter::new(PER_SOURCE_RATE, MAX_REMEMBERED),
            all: TokenBucket::full(Rate::per_second(ALL_RATE), now),
        }
    }

    fn ask(&mut self, name: &Name, source: Source, now: Instant) -> Ask {
        if let Some(&(key, at)) = self.vouched.get(&name.key())
            && now.saturating_duration_since(at) < RECENT
        {
            return Ask::Remembered(key);
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

    fn remember(&mut self, name: &Name, key: PublicKey, now: Instant) {
        if self.vouched.len() >= MAX_REMEMBERED {
            self.vouched.retain(|_, (_, at)| now.saturating_duration_since(*at) < RECENT);
        }
        if self.vouched.len() < MAX_REMEMBERED {
            self.vouched.insert(name.key(), (key, now));
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
        assert_eq!(m.ask(&name("bob"), a, t0), Ask::Directory);
        m.remember(&name("bob"), [7; 32], t0);
        let soon = t0 + RECENT - Duration::from_millis(1);
        assert_eq!(m.ask(&name("BOB"), a, soon), Ask::Remembered([7; 32]));
        assert_eq!(m.ask(&name("bob"), a, t0 + RECENT), Ask::Directory);
    }

    #[test]
    fn lookups_are_limited_per_source_and_in_all() {
        let t0 = Instant::now();
        let mut m = Memory::new(t0);
        let a = source("10.0.0.1");
        let burst = 2 * PER_SOURCE_RATE;
        for i in 0..burst {
            assert_eq!(m.ask(&name(&format!("p{i}")), a, t0), Ask::Directory, "dial {i}");
        }
        assert_eq!(m.ask(&name("one-more"), a, t0), Ask::TooMany);
        // Another source still may, until all dialers together spent theirs.
        let mut asked = 0;
        for i in 0..100u8 {
            let from = source(&format!("10.0.1.{i}"));
            if m.ask(&name(&format!("q{i}")), from, t0) == Ask::Directory {
                asked += 1;
            }
        }
        assert_eq!(asked + burst, 2 * ALL_RATE);
        // Time refills both.
        assert_eq!(m.ask(&name("later"), a, t0 + Duration::from_secs(1)), Ask::Directory);
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut m = Memory::new(t0);
        for i in 0..(2 * MAX_REMEMBERED) {
            m.remember(&name(&format!("p{i}")), [1; 32], t0);
        }
        assert_eq!(m.vouched.len(), MAX_REMEMBERED);
        // Once old, they make room.
        m.remember(&name("new"), [2; 32], t0 + RECENT);
        assert_eq!(m.vouched.len(), 1);
        for i in 0..(2 * MAX_REMEMBERED) {
            let from = source(&format!("10.{}.{}.1", i / 250, i % 250));
            let _ = m.ask(&name("x"), from, t0 + RECENT + Duration::from_secs(60));
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

    #[tokio::test]
    async fn a_redial_costs_no_lookup_and_a_flood_costs_a_bounded_few() {
        let fake = Fake::default();
        fake.listed.lock().expect("listed").push(listed("carol", [3; 32]));
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
        // Over the limit, a peer we know is taken on its key.
        let dave = name("dave");
        if let Some(written) = known.remember(&dave, &[6; 32]) {
            written.await.expect("written");
        }
        let spent = |m: &mut Memory| {
            (0..100).any(|_| m.ask(&name("y"), from, Instant::now()) == Ask::TooMany)
        };
        assert!(check.with_memory(spent));
        assert_eq!(check.check(&dave, &[6; 32], from).await, Ok(true));
        assert_eq!(lookups.load(Ordering::SeqCst) - 1, asked, "no lookup for dave");
    }
}
