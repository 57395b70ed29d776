//! Who may open a conversation with us: the accept policy
//! (`peerd --accept all|known|ask`) and the requests waiting for the
//! user's answer. Pure logic, no I/O: the driver holds the links of the
//! waiting dials in [`Requests`] and carries out what it decides.
//!
//! A request lasts [`ASK_TIMEOUT`]; unanswered, it lapses and the dialer is
//! told "NAME did not accept", the same as a `reject`: the dialer cannot
//! tell a user who said no from one who was away.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use peerchat_core::Name;
use peerchat_core::source::Source;
pub(crate) use peerchat_core::timeouts::ASK_TIMEOUT;

/// Requests waiting for an answer at once; more dials are refused as busy
/// (a flood of strangers must not grow this).
pub(crate) const MAX_REQUESTS: usize = 8;

/// ...of which one source address may hold this many, so that one host
/// registering a few names cannot keep the queue full and every other
/// stranger busy.
pub(crate) const MAX_REQUESTS_PER_SOURCE: usize = 2;

/// Who may open a conversation without asking the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    /// Everyone (the directory has verified who they are).
    #[default]
    All,
    /// Peers whose key we have talked to before (known-peers); the user is
    /// asked for the rest.
    Known,
    /// The user is asked for everyone.
    Ask,
}

impl Policy {
    /// The word the CLI, the config file and `status` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::All => "all",
            Policy::Known => "known",
            Policy::Ask => "ask",
        }
    }

    /// Must the user be asked before talking to a dialer, who is `known`
    /// (talked to before) or not?
    pub(crate) fn must_ask(self, known: bool) -> bool {
        match self {
            Policy::All => false,
            Policy::Known => !known,
            Policy::Ask => true,
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "all" => Ok(Policy::All),
            "known" => Ok(Policy::Known),
            "ask" => Ok(Policy::Ask),
            other => Err(format!("unknown accept policy {other:?} (all, known or ask)")),
        }
    }
}

/// One waiting request: who asks, until when, and what the driver keeps
/// for the answer (the dial's link and where to send the verdict).
#[derive(Debug)]
pub(crate) struct Request<T> {
    pub(crate) peer: Name,
    /// Where the dial came from (`None`: no address to count it by).
    pub(crate) source: Option<Source>,
    pub(crate) expires: Instant,
    /// The same moment as wall-clock milliseconds, for clients.
    pub(crate) expires_at_ms: i64,
    pub(crate) held: T,
}

/// Why a new request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// [`MAX_REQUESTS`] are waiting already.
    TooMany,
    /// [`MAX_REQUESTS_PER_SOURCE`] from the dial's source are waiting.
    TooManyFromSource,
}

/// The waiting requests, oldest first. A peer asks at most once: a new
/// request from a peer already waiting replaces the old one (its daemon
/// restarted, or dialed again), and the old one is handed back.
#[derive(Debug)]
pub(crate) struct Requests<T> {
    waiting: VecDeque<Request<T>>,
    lasts: Duration,
}

impl<T> Default for Requests<T> {
    fn default() -> Self {
        Requests { waiting: VecDeque::new(), lasts: ASK_TIMEOUT }
    }
}

impl<T> Requests<T> {
    /// Requests that lapse after `lasts` (tests use short ones).
    pub(crate) fn lasting(lasts: Duration) -> Requests<T> {
        Requests { waiting: VecDeque::new(), lasts }
    }

    /// Queues `peer`'s request, from `source`. Returns the one it
    /// replaces, if any.
    pub(crate) fn add(
        &mut self,
        peer: Name,
        source: Option<Source>,
        held: T,
        now: Instant,
        now_ms: i64,
    ) -> Result<Option<Request<T>>, (Full, T)> {
        let others = |r: &&Request<T>| r.peer != peer;
        if self.waiting.iter().filter(others).count() >= MAX_REQUESTS {
            return Err((Full::TooMany, held));
        }
        let from_source = |r: &&Request<T>| source.is_some() && r.source == source;
        if self.waiting.iter().filter(others).filter(from_source).count() >= MAX_REQUESTS_PER_SOURCE
        {
            return Err((Full::TooManyFromSource, held));
        }
        let replaced = self.take(Some(&peer));
        let ms = i64::try_from(self.lasts.as_millis()).unwrap_or(i64::MAX);
        self.waiting.push_back(Request {
            peer,
            source,
            expires: now + self.lasts,
            expires_at_ms: now_ms.saturating_add(ms),
            held,
        });
        Ok(replaced)
    }

    /// Takes `peer`'s request, or with `None` the oldest.
    pub(crate) fn take(&mut self, peer: Option<&Name>) -> Option<Request<T>> {
        let at = match peer {
            None => 0,
            Some(p) => self.waiting.iter().position(|r| r.peer == *p)?,
        };
        self.waiting.remove(at)
    }

    /// Takes every request that lapsed by `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Request<T>> {
        let mut lapsed = Vec::new();
        while self.waiting.front().is_some_and(|r| r.expires <= now) {
            lapsed.extend(self.waiting.pop_front());
        }
        lapsed
    }

    /// Takes every request (shutting down, or busy with someone else).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Request<T>> + '_ {
        self.waiting.drain(..)
    }

    /// When the oldest request lapses. Requests lapse in the order they
    /// came: they all last the same.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.waiting.front().map(|r| r.expires)
    }

    /// The waiting requests, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Request<T>> {
        self.waiting.iter()
    }

    /// The waiting requests, to poll what each holds.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Request<T>> {
        self.waiting.iter_mut()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("valid name")
    }

    #[test]
    fn the_policy_decides_who_is_asked() {
        assert!(!Policy::All.must_ask(false));
        assert!(!Policy::Known.must_ask(true));
        assert!(Policy::Known.must_ask(false));
        assert!(Policy::Ask.must_ask(true));
        for p in [Policy::All, Policy::Known, Policy::Ask] {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
        }
        assert!("sometimes".parse::<Policy>().is_err());
    }

    #[test]
    fn requests_are_answered_by_name_or_oldest_first() {
        let now = Instant::now();
        let mut r = Requests::default();
        assert!(r.add(name("alice"), None, 1, now, 1000).expect("room").is_none());
        assert!(r.add(name("bob"), None, 2, now, 1000).expect("room").is_none());
        assert_eq!(r.iter().next().map(|q| q.expires_at_ms), Some(61_000));
        assert_eq!(r.take(Some(&name("BOB"))).map(|q| q.held), Some(2));
        assert!(r.take(Some(&name("bob"))).is_none());
        assert_eq!(r.take(None).map(|q| q.held), Some(1));
        assert!(r.take(None).is_none());
    }

    #[test]
    fn a_peer_asking_again_replaces_its_request() {
        let now = Instant::now();
        let mut r = Requests::default();
        r.add(name("alice"), None, 1, now, 0).expect("room");
        let old = r.add(name("alice"), None, 2, now, 0).expect("room").expect("replaced");
        assert_eq!(old.held, 1);
        assert_eq!(r.iter().count(), 1);
    }

    #[test]
    fn requests_are_bounded() {
        let now = Instant::now();
        let mut r = Requests::default();
        for i in 0..MAX_REQUESTS {
            r.add(name(&format!("p{i}")), None, i, now, 0).expect("room");
        }
        assert_eq!(r.add(name("late"), None, 99, now, 0).err(), Some((Full::TooMany, 99)));
        // Replacing a waiting peer's request needs no new room.
        assert!(r.add(name("p0"), None, 100, now, 0).is_ok());
    }

    #[test]
    fn one_source_holds_only_its_share_of_the_requests() {
        let now = Instant::now();
        let src = |s: &str| Some(Source::of(Some(s.parse().expect("an address"))));
        let mut r = Requests::default();
        for (i, who) in ["m1", "m2"].into_iter().enumerate() {
            r.add(name(who), src("10.0.0.9:1"), i, now, 0).expect("room");
        }
        let third = r.add(name("m3"), src("10.0.0.9:2"), 3, now, 0);
        assert_eq!(third.err(), Some((Full::TooManyFromSource, 3)));
        // One of its peers asking again replaces its own request.
        assert!(r.add(name("m1"), src("10.0.0.9:3"), 4, now, 0).is_ok());
        // Others still get in.
        r.add(name("carol"), src("10.0.0.1:1"), 5, now, 0).expect("room");
        r.add(name("dave"), None, 6, now, 0).expect("room");
        assert_eq!(r.iter().count(), 4);
    }

    #[test]
    fn requests_lapse_in_order_at_their_time() {
        let t0 = Instant::now();
        let mut r = Requests::lasting(Duration::from_secs(10));
        r.add(name("alice"), None, 1, t0, 0).expect("room");
        r.add(name("bob"), None, 2, t0 + Duration::from_secs(3), 0).expect("room");
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(10)));
        assert!(r.expire(t0 + Duration::from_secs(9)).is_empty());
        let lapsed = r.expire(t0 + Duration::from_secs(10));
        assert_eq!(lapsed.iter().map(|q| q.held).collect::<Vec<_>>(), vec![1]);
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(13)));
        assert_eq!(r.expire(t0 + Duration::from_secs(60)).len(), 1);
        assert!(r.is_empty());
        assert_eq!(r.next_expiry(), None);
    }
}
