//! The conversation state machine: one peer at a time, messages both ways,
//! receipts, a two-sided goodbye, and resuming after a lost link.
//!
//! [`Session`] is sans-IO in the style of quinn-proto: the driver feeds it
//! inputs (`connect`, `send`, `handle_frame`, `handle_link_down`, …, each
//! with `now`) and then drains [`Action`]s with [`Session::poll_action`]. The
//! order of the actions *is* the guarantee: a received message is
//! [`Action::Persist`]ed before its `delivered` receipt is
//! [`Action::Transmit`]ted, and the driver only has to execute them in order
//! (it may batch persists, as long as a batch is written before the
//! transmits that follow it).
//!
//! The session also shapes what goes on the wire, so that every driver
//! does it alike: it answers an accepted Hello with [`Frame::Welcome`], and
//! receipts of one kind for one link queued in a row (only local actions,
//! [`Action::Persist`], [`Action::Emit`] and [`Action::Presence`], between
//! them) leave as one frame of up to [`MAX_RECEIPT_IDS`] ids, at the place
//! of the last of them, so a burst of received messages is acknowledged
//! with one frame and still after every one of them is stored.
//!
//! # Closing
//! `Goodbye` means "I send no more messages"; receipts may still follow. The
//! dialer ends its half of the stream once it has both sent and received a
//! goodbye; the callee ends the call once the dialer's half has ended. So
//! every receipt for every message is on the wire before either side's
//! final end of stream, and a clean end is told apart from a lost link (an
//! end of stream with no goodbye before it).
//!
//! # Resuming
//! A link that dies without a goodbye does not end the conversation: it is
//! `reconnecting` (still ours, still busy to others) for the resume window.
//! The side that dialed last dials again ([`Action::Redial`]) with backoff;
//! the other side takes the same peer back when it says hello. On a new link
//! every message not yet acknowledged `delivered` is sent again, in order,
//! and the receiver recognises the ones it has by id (also across its own
//! restart: the driver loads the ids from history with
//! [`Session::load_seen`]) and acknowledges them again without storing or
//! showing them twice. When the window passes, the conversation ends and
//! every unacknowledged message fails. Messages still unacknowledged when a
//! daemon stopped are handed back with [`Session::restore_unacked`] and go
//! out with the next conversation with that peer, or fail after a window.

mod own_ids;
mod recent;
mod types;
mod window;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

pub use self::own_ids::{OwnIdMap, OwnIdSet};
use self::recent::RecentIds;
pub use self::types::*;
use crate::lease::Backoff;
use crate::name::Name;
use crate::text::check_text;
use crate::timeouts::CROSSED_WAIT;

#[derive(Debug)]
enum State {
    Idle,
    /// `crossed`: our dial was refused because the peer is dialing us at
    /// the same moment and its dial wins (see [`Session::handle_hello`]);
    /// we wait for it until then. `ringing`: the callee is asking its user
    /// (see [`Session::handle_dial_asked`]), and we show as busy.
    Dialing {
        peer: Name,
        link: LinkId,
        crossed: Option<Instant>,
        ringing: bool,
    },
    Connected(Box<Conversation>),
}

#[derive(Debug)]
struct Conversation {
    peer: Name,
    /// `None` while reconnecting.
    link: Option<LinkId>,
    /// Which end we are of the current (or last) link; the dialer redials.
    role: Role,
    sent_goodbye: bool,
    got_goodbye: bool,
    /// Who started the goodbye, for the `disconnected` reason.
    ended_by_us: bool,
    /// Why our user ended it, when it was not a plain `disconnect` (see
    /// [`Session::disconnect_blocked`]).
    end_note: Option<String>,
    /// Our half of the stream is closed: nothing more may be transmitted.
    send_closed: bool,
    close_deadline: Option<Instant>,
    reconnect: Option<Reconnect>,
    /// Our messages not yet acknowledged `delivered`, in sending order,
    /// kept whole so they can be sent again on a new link.
    unacked: VecDeque<Message>,
    unacked_ids: OwnIdSet,
    unacked_bytes: usize,
    next_seq: u64,
    /// `displayed` receipts owed to the peer while the link was down.
    owed_displayed: Vec<Id>,
    /// When the link came back last (as [`Session`]'s clock knew it), and
    /// the reconnect it ended: kept for [`PROVEN_AFTER`].
    resumed_from: Option<(Option<Instant>, Reconnect)>,
    /// The last `displayed` receipts sent on the current link, at most
    /// [`MAX_RECEIPT_IDS`]: if the link is lost they may have been lost
    /// with it (nothing acknowledges a receipt), so they are owed again.
    /// Unlike a `delivered` one, which the peer's resent message asks for
    /// again, nothing else would bring them back. A duplicate is harmless.
    displayed_on_link: VecDeque<Id>,
    /// Restored after our daemon restarted, not started by a `connect` of
    /// this run (see [`Session::connect_restored`]).
    restored: bool,
}

/// A conversation waiting for its link to come back.
#[derive(Debug)]
struct Reconnect {
    give_up_at: Instant,
    reason: String,
    /// The redial in progress (dialer only).
    dial: Option<LinkId>,
    /// When to redial next (dialer only, when no dial is in progress).
    next_attempt: Option<Instant>,
    backoff: Backoff,
    /// The conversation was restored after our daemon restarted (see
    /// [`Session::restore_conversation`]): its redials say so.
    after_restart: bool,
    /// Why the last redial failed (dialer only): said with the give-up,
    /// which may be much later than the link's loss.
    last_failure: Option<String>,
}

impl Reconnect {
    /// Waiting from now until `give_up_at`; `redial_at` for a dialer.
    fn new(give_up_at: Instant, reason: String, redial_at: Option<Instant>) -> Reconnect {
        Reconnect {
            give_up_at,
            reason,
            dial: None,
            next_attempt: redial_at,
            backoff: Backoff::new(REDIAL_INITIAL, REDIAL_MAX),
            after_restart: false,
            last_failure: None,
        }
    }
}

/// What becomes of a conversation's unacknowledged messages when it ends.
enum Unacked<'a> {
    /// They fail, with this reason.
    Fail(&'a str),
    /// They wait again for a next conversation with the peer (see
    /// [`Session::restore_unacked`]), from this instant.
    Keep(Instant),
}

impl Conversation {
    fn new(peer: Name, link: LinkId, role: Role) -> Conversation {
        Conversation {
            peer,
            link: Some(link),
            role,
            sent_goodbye: false,
            got_goodbye: false,
            ended_by_us: false,
            end_note: None,
            send_closed: false,
            close_deadline: None,
            reconnect: None,
            unacked: VecDeque::new(),
            unacked_ids: OwnIdSet::with_span(2 * MAX_UNACKED),
            unacked_bytes: 0,
            next_seq: 1,
            owed_displayed: Vec::new(),
            displayed_on_link: VecDeque::new(),
            resumed_from: None,
            restored: false,
        }
    }

    fn closing(&self) -> bool {
        self.sent_goodbye || self.got_goodbye
    }

    /// `displayed` receipts for `ids` go out on the current link: noted,
    /// the newest [`MAX_RECEIPT_IDS`], to be owed again if it is lost.
    fn sent_displayed(&mut self, ids: &[Id]) {
        self.displayed_on_link.extend(ids.iter().cloned());
        let over = self.displayed_on_link.len().saturating_sub(MAX_RECEIPT_IDS);
        self.displayed_on_link.drain(..over);
    }

    /// The `displayed` receipts still owed, with those sent on a link that
    /// is now lost (and may have lost them): oldest first, taken out.
    fn receipts_at_risk(&mut self) -> Vec<Id> {
        self.displayed_on_link.drain(..).chain(self.owed_displayed.drain(..)).collect()
    }

    fn queue(&mut self, message: Message) {
        // `seq` may come from a history file: no overflow on a wild one.
        self.next_seq = self.next_seq.max(message.seq.saturating_add(1));
        self.unacked_bytes += message.text.len();
        self.unacked_ids.insert(&message.id);
        self.unacked.push_back(message);
    }

    /// Takes `ids` out of the unacknowledged queue, and keeps in `ids` only
    /// the ones it had (in place: this runs for every receipt); those it
    /// did not have go to `misses`, if given.
    fn acknowledge(&mut self, ids: &mut Vec<Id>, mut misses: Option<&mut Vec<Id>>) {
        ids.retain(|id| {
            let had = self.unacked_ids.remove(id);
            if !had && let Some(misses) = misses.as_deref_mut() {
                misses.push(id.clone());
            }
            had
        });
        let acked = ids.len();
        // Receipts come in sending order, so the acknowledged messages are
        // usually at the front: pop them in O(1) each, and scan the whole
        // queue only for ones acknowledged out of order (with thousands in
        // flight, a scan per receipt would cost O(n) per message). The
        // front that is the next id of the receipt goes without asking the
        // set, which would read the id's digits again; then whatever else
        // at the front the set no longer holds.
        let mut popped = 0;
        while let (Some(front), Some(id)) = (self.unacked.front(), ids.get(popped))
            && front.id == *id
        {
            self.unacked_bytes -= front.text.len();
            self.unacked.pop_front();
            popped += 1;
        }
        while let Some(front) = self.unacked.front() {
            if self.unacked_ids.contains(&front.id) {
                break;
            }
            self.unacked_bytes -= front.text.len();
            self.unacked.pop_front();
            popped += 1;
        }
        if popped < acked {
            let (ids, bytes) = (&self.unacked_ids, &mut self.unacked_bytes);
            self.unacked.retain(|m| {
                let keep = ids.contains(&m.id);
                if !keep {
                    *bytes -= m.text.len();
                }
                keep
            });
        }
    }
}

/// A received message waiting for a display client.
#[derive(Debug, Clone)]
struct Undisplayed {
    from: Name,
    message: Message,
    /// A display client was sent it (as it came, or replayed when the
    /// client attached): letting it go is then not news to the user.
    offered: bool,
}

/// Messages of ours left unacknowledged by an earlier run of the daemon.
#[derive(Debug)]
struct Pending {
    peer: Name,
    messages: Vec<Message>,
}

/// One daemon's conversation state. See the module docs.
#[derive(Debug)]
pub struct Session {
    me: Name,
    resume_window: Duration,
    state: State,
    next_link: u64,
    /// The outputs not yet polled. A slot is `None` when its receipt was
    /// merged into a later one (see [`Session::push_receipt`]); polling
    /// skips it.
    actions: VecDeque<Option<Action>>,
    /// How many slots were ever popped from the front of `actions`, so that
    /// `last_wire` can name a slot by a number that does not move.
    popped: u64,
    /// The slot (counted like `popped`) of the newest queued action that
    /// touches the wire, the only one a new receipt may merge into.
    last_wire: Option<u64>,
    /// Received messages no display client has shown yet, oldest first.
    undisplayed: VecDeque<Undisplayed>,
    undisplayed_bytes: usize,
    /// How many were let go from `undisplayed` over its caps unoffered,
    /// per sender (`None`: the senders past [`MAX_LET_GO_SENDERS`]), since
    /// a display client last attached (see [`Session::attach_display`]).
    let_go: Vec<(Option<Name>, usize)>,
    /// Whether a display client is attached (the driver says).
    display_attached: bool,
    /// Our delivered messages that may still get a `displayed` receipt,
    /// and the peer each went to (only that peer may say it was shown),
    /// at most `MAX_AWAITING_DISPLAY`, the oldest forgotten first.
    awaiting_display: OwnIdMap<Name>,
    /// Likewise for an earlier run's messages (see
    /// [`Session::restore_delivered_unshown`]). Apart from
    /// `awaiting_display`, whose fast path expects this run's ids.
    delivered_before: HashMap<Id, Name>,
    /// The last peer we talked to, for `history` with no name.
    last_peer: Option<Name>,
    /// Ids received from one peer (the current or last), to recognise
    /// messages sent again.
    seen: Option<(Name, RecentIds)>,
    /// Unacknowledged messages from an earlier run, by peer key, and when
    /// they fail if no conversation with their peer takes them.
    pending: HashMap<String, Pending>,
    pending_deadline: Option<Instant>,
    /// Peers whose conversation ended here while its link was down (our
    /// user ended it, or the resume window passed) and who dialed it, so
    /// may still redial: their redials are refused as ended (they could
    /// not be told then, and are told so), until a new conversation with
    /// them starts. Newest last, at most [`MAX_ENDED_AWAY`].
    ended_away: VecDeque<(Name, EndedHow)>,
    /// The latest instant a caller gave us (timers, frames, lost links):
    /// when a link comes back (calls that carry no clock) it is stamped
    /// with this, which can only make it look older than it is.
    clock: Option<Instant>,
    /// `displayed` receipts for peers we are not talking to (shown after
    /// their conversation ended, or owed when it ended): sent when a
    /// conversation with that peer next starts. Oldest first, at most
    /// [`MAX_OWED_LATER`]; in memory only.
    owed_later: VecDeque<(Name, Id)>,
    /// Our messages reported failed, and the peer each went to: that peer
    /// may say later that it had one after all (its receipt was lost with
    /// the link), and then it is delivered. At most
    /// [`MAX_FAILED_REMEMBERED`], the oldest forgotten first (`failed_order`
    /// may hold ids already taken out); in memory only.
    failed_to: HashMap<Id, Name>,
    failed_order: VecDeque<Id>,
    /// `delivered` receipts for peers whose conversation ended: the newest
    /// ids we had from each (at most [`MAX_OWED_DELIVERED`]), some of which
    /// it may have failed for want of their receipts. Sent when a
    /// conversation with it next starts. At most
    /// [`MAX_OWED_DELIVERED_PEERS`] peers, the oldest forgotten first; in
    /// memory only.
    owed_delivered: VecDeque<(Name, Vec<Id>)>,
}

/// How many ids [`Session`] owes `delivered` for when a conversation ends:
/// a frame's worth.
const MAX_OWED_DELIVERED: usize = MAX_RECEIPT_IDS;

/// How many peers [`Session`] keeps owed `delivered` receipts for.
const MAX_OWED_DELIVERED_PEERS: usize = 8;

/// How many failed messages [`Session`] remembers, for a late receipt: as
/// many as one conversation may leave unacknowledged.
const MAX_FAILED_REMEMBERED: usize = MAX_UNACKED;

/// Senders whose messages let go unshown are counted one by one; past
/// these, together (one more entry), so that the count stays small.
const MAX_LET_GO_SENDERS: usize = 64;

/// How many `displayed` receipts [`Session`] keeps for peers it is not
/// talking to, across them all.
const MAX_OWED_LATER: usize = MAX_RECEIPT_IDS;

/// How many peers [`Session::refuses_redial`] remembers. A peer redials
/// only within its own resume window, so this holds the few that could.
const MAX_ENDED_AWAY: usize = 64;

impl Session {
    pub fn new(me: Name, resume_window: Duration) -> Session {
        Session {
            me,
            resume_window,
            state: State::Idle,
            next_link: 1,
            actions: VecDeque::new(),
            popped: 0,
            last_wire: None,
            undisplayed: VecDeque::new(),
            undisplayed_bytes: 0,
            let_go: Vec::new(),
            display_attached: false,
            awaiting_display: OwnIdMap::with_span(2 * MAX_AWAITING_DISPLAY),
            delivered_before: HashMap::new(),
            last_peer: None,
            seen: None,
            pending: HashMap::new(),
            pending_deadline: None,
            ended_away: VecDeque::new(),
            clock: None,
            owed_later: VecDeque::new(),
            failed_to: HashMap::new(),
            failed_order: VecDeque::new(),
            owed_delivered: VecDeque::new(),
        }
    }

    pub fn me(&self) -> &Name {
        &self.me
    }

    /// The peer of the current (or starting) conversation.
    pub fn peer(&self) -> Option<&Name> {
        match &self.state {
            State::Idle => None,
            State::Dialing { peer, .. } => Some(peer),
            State::Connected(c) => Some(&c.peer),
        }
    }

    /// The current peer, or else the last one.
    pub fn current_or_last_peer(&self) -> Option<&Name> {
        self.peer().or(self.last_peer.as_ref())
    }

    /// The link the conversation runs on, if it has one now.
    pub fn link(&self) -> Option<LinkId> {
        match &self.state {
            State::Idle => None,
            State::Dialing { link, .. } => Some(*link),
            State::Connected(c) => c.link,
        }
    }

    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Idle => Phase::Idle,
            State::Dialing { .. } => Phase::Connecting,
            State::Connected(c) if c.closing() => Phase::Closing,
            State::Connected(c) if c.link.is_none() => Phase::Reconnecting,
            State::Connected(_) => Phase::Connected,
        }
    }

    /// When a conversation waiting for its link gives up (the end of its
    /// resume window): a redial's consent can take no longer than that.
    pub fn gives_up_at(&self) -> Option<Instant> {
        match &self.state {
            State::Connected(c) => c.reconnect.as_ref().map(|r| r.give_up_at),
            _ => None,
        }
    }

    /// Our messages still waiting for `delivered`: the current
    /// conversation's, and those an earlier run left for a peer we are not
    /// talking to now.
    pub fn unacknowledged(&self) -> usize {
        let current = match &self.state {
            State::Connected(c) => c.unacked.len(),
            _ => 0,
        };
        current + self.pending.values().map(|p| p.messages.len()).sum::<usize>()
    }

    /// The next output, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        loop {
            let slot = self.actions.pop_front()?;
            self.popped += 1;
            if slot.is_some() {
                return slot;
            }
        }
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.pending_deadline;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        match &self.state {
            State::Connected(c) => {
                consider(c.close_deadline);
                if let Some(r) = &c.reconnect {
                    consider(Some(r.give_up_at));
                    consider(r.next_attempt);
                }
            }
            State::Dialing { crossed, .. } => consider(*crossed),
            State::Idle => {}
        }
        at
    }

    /// True when the driver should [`Session::load_seen`] the ids of
    /// `peer` from history before a conversation with it starts.
    pub fn needs_seen(&self, peer: &Name) -> bool {
        !matches!(&self.seen, Some((p, _)) if p == peer)
    }

    /// The ids already received from `peer` (from history, oldest first)
    /// and whether each was shown. Ignored while talking to someone else:
    /// a dialer about to be told "busy" must not wipe the current peer's
    /// ids, or a message of theirs resent after a resume would be taken
    /// for new and stored twice. Ignored too when `peer`'s ids are held
    /// already ([`Session::needs_seen`] is false): those are kept up to
    /// date as messages arrive, while a read that finishes now may have
    /// started before the latest ones (the losing dial of two that
    /// crossed, say).
    pub fn load_seen(&mut self, peer: Name, ids: impl IntoIterator<Item = (Id, bool)>) {
        if self.peer().is_some_and(|current| *current != peer) || !self.needs_seen(&peer) {
            return;
        }
        let mut recent = RecentIds::new(MAX_SEEN_IDS);
        for (id, displayed) in ids {
            recent.insert(id, displayed);
        }
        self.seen = Some((peer, recent));
    }

    /// Hands back our messages to `peer` that an earlier run left
    /// unacknowledged (oldest first). They go out with the next conversation
    /// with `peer`; if none takes them within the resume window they fail.
    pub fn restore_unacked(&mut self, peer: Name, messages: Vec<Message>, now: Instant) {
        if messages.is_empty() {
            return;
        }
        self.pending_deadline = Some(now + self.resume_window);
        let entry = self
            .pending
            .entry(peer.key())
            .or_insert_with(|| Pending { peer: peer.clone(), messages: Vec::new() });
        entry.messages.extend(messages);
    }

    /// An earlier run of this daemon was the dialer of a conversation with
    /// `peer` and stopped without ending it (a crash; see
    /// [`Record::Resumable`]). The conversation is reconnecting again, for
    /// a resume window from now, and redials at once as
    /// [`DialKind::AfterRestart`]: the peer takes it back only if it still
    /// has that conversation (and otherwise refuses it as ended). Call
    /// after [`Session::restore_unacked`]: that peer's unacknowledged
    /// messages are the conversation's again, sent first when it resumes.
    pub fn restore_conversation(&mut self, peer: Name, now: Instant) {
        if !matches!(self.state, State::Idle) || peer == self.me {
            return;
        }
        let mut c = Box::new(Conversation::new(peer.clone(), self.new_link(), Role::Dialer));
        c.link = None;
        c.restored = true;
        if let Some(pending) = self.pending.remove(&peer.key()) {
            for m in pending.messages {
                c.queue(m);
            }
        }
        if self.pending.is_empty() {
            self.pending_deadline = None;
        }
        let reason = "link lost when this daemon stopped".to_owned();
        let mut reconnect = Reconnect::new(now + self.resume_window, reason, Some(now));
        reconnect.after_restart = true;
        c.reconnect = Some(reconnect);
        self.last_peer = Some(peer);
        self.state = State::Connected(c);
        self.push(Action::Presence(Presence::Busy));
        self.handle_timeout(now);
    }

    /// The user asks to talk to `peer`, whose conversation was restored
    /// after our restart: that conversation is what they ask for, so it
    /// answers the `connect` rather than "already connected" (their
    /// daemon came back in it by itself). Still reconnecting, it redials
    /// now as a dial the user asked for (a peer that no longer has the
    /// conversation may take it as a new one), in place of the restarted
    /// daemon's. `None`: not such a conversation; [`Session::connect`]
    /// answers.
    pub fn connect_restored(&mut self, peer: &Name) -> Option<ConnectRestored> {
        let State::Connected(c) = &mut self.state else {
            return None;
        };
        if !c.restored || c.peer != *peer || c.closing() {
            return None;
        }
        if c.link.is_some() {
            return Some(ConnectRestored::Live);
        }
        let r = c.reconnect.as_mut()?;
        let old = r.dial.take();
        r.after_restart = false;
        r.next_attempt = None;
        let link = LinkId(self.next_link);
        self.next_link += 1;
        r.dial = Some(link);
        if let Some(old) = old {
            self.push(Action::DropLink { link: old });
        }
        Some(ConnectRestored::Dial(link))
    }

    /// The user asked to talk to `peer`. On success the driver dials (and
    /// reports back with [`Session::handle_dialed`] or
    /// [`Session::handle_dial_failed`]) on the returned link.
    pub fn connect(&mut self, peer: Name) -> Result<LinkId, ConnectError> {
        if peer == self.me {
            return Err(ConnectError::Yourself);
        }
        match &self.state {
            State::Idle => {}
            State::Dialing { peer, .. } => {
                return Err(ConnectError::AlreadyConnecting { peer: peer.clone() });
            }
            State::Connected(c) => {
                return Err(ConnectError::AlreadyConnected { peer: c.peer.clone() });
            }
        }
        let link = self.new_link();
        self.state = State::Dialing { peer, link, crossed: None, ringing: false };
        Ok(link)
    }

    /// The dial on `link` succeeded: the callee, who is `peer`, welcomed us.
    pub fn handle_dialed(&mut self, link: LinkId, peer: Name) {
        match &mut self.state {
            State::Dialing { link: l, .. } if *l == link => {
                self.start(Box::new(Conversation::new(peer, link, Role::Dialer)));
            }
            State::Connected(c)
                if c.reconnect.as_ref().is_some_and(|r| r.dial == Some(link)) && c.peer == peer =>
            {
                if c.role != Role::Dialer {
                    c.role = Role::Dialer;
                    let peer = Some(c.peer.clone());
                    self.push(Action::Persist(Record::Resumable { peer }));
                }
                self.resume(link);
            }
            // A dial we gave up on: hang up on it.
            _ => self.push(Action::DropLink { link }),
        }
    }

    /// The dial on `link` failed (`why`); for a first dial the driver tells
    /// the user why, for a redial the session tries again after a backoff
    /// and keeps `why` for when it gives up.
    pub fn handle_dial_failed(&mut self, link: LinkId, why: &str, now: Instant) {
        match &mut self.state {
            State::Dialing { link: l, .. } if *l == link => self.end_dial(),
            State::Connected(c) => {
                if let Some(r) = c.reconnect.as_mut().filter(|r| r.dial == Some(link)) {
                    r.dial = None;
                    r.next_attempt = Some(now + r.backoff.next_delay());
                    r.last_failure = Some(bounded(why, MAX_FAILURE_LEN));
                }
            }
            _ => {}
        }
    }

    /// The callee of our dial on `link` is asking its user whether to talk
    /// (its `--accept` policy): the dial may now last a minute, so we show
    /// as busy to everyone else meanwhile, as a phone ringing someone does
    /// (a dial that is answered at once never changes what is listed).
    pub fn handle_dial_asked(&mut self, link: LinkId) {
        match &mut self.state {
            State::Dialing { link: l, ringing, .. } if *l == link && !*ringing => {
                *ringing = true;
                self.push(Action::Presence(Presence::Busy));
            }
            // A redial the callee's user is asked about (it restarted and
            // asks about every dial): if the window passes meanwhile, that
            // is what the last redial heard, not an older failure.
            State::Connected(c) => {
                let peer = c.peer.clone();
                if let Some(r) = c.reconnect.as_mut().filter(|r| r.dial == Some(link)) {
                    r.last_failure = Some(format!("{peer}'s user was asked to accept it"));
                }
            }
            _ => {}
        }
    }

    /// Our dial ended without a conversation: idle again, and available
    /// again if it had shown us busy.
    fn end_dial(&mut self) {
        if let State::Dialing { ringing: true, .. } = self.state {
            self.push(Action::Presence(Presence::Available));
        }
        self.state = State::Idle;
    }

    /// The callee refused our dial on `link` because it is dialing us at
    /// the same moment and its dial wins: we wait up to [`CROSSED_WAIT`] for
    /// it, and take it as the answer to our user's `connect` (see
    /// [`Action::Crossed`]). A redial refused so is retried as usual.
    pub fn handle_dial_crossed(&mut self, link: LinkId, now: Instant) {
        match &mut self.state {
            State::Dialing { link: l, crossed, .. } if *l == link => {
                *crossed = Some(now + CROSSED_WAIT);
            }
            _ => self.handle_dial_failed(link, "our dials crossed", now),
        }
    }

    /// The callee refused our redial on `link` because its user ended the
    /// conversation while the link was down (see
    /// [`Session::refuses_redial`]): it ends here too. Any other refusal of
    /// a redial is [`Session::handle_dial_failed`] (it may be brief).
    ///
    /// A conversation restored after our own restart (see
    /// [`Session::restore_conversation`]) that the peer no longer has ends
    /// without failing anything: its unacknowledged messages are back to
    /// what they were before, sent with the next conversation with that
    /// peer if one comes within the resume window.
    pub fn handle_redial_refused_ended(&mut self, link: LinkId, how: EndedHow, now: Instant) {
        let why = "the conversation ended on the other side";
        let State::Connected(c) = &self.state else {
            return self.handle_dial_failed(link, why, now);
        };
        let Some(r) = c.reconnect.as_ref().filter(|r| r.dial == Some(link)) else {
            return self.handle_dial_failed(link, why, now);
        };
        if r.after_restart {
            let reason =
                format!("{} no longer has this conversation (it ended while we were down)", c.peer);
            return self.end(reason, Unacked::Keep(now));
        }
        let reason = format!("{} {how}", c.peer);
        self.finish(reason, "the conversation ended before it was delivered");
    }

    /// Whether a redial from `peer` is refused as ended before anything
    /// else (before the user is asked, say): our user ended that
    /// conversation while its link was down, within the resume window (the
    /// dialer, who could not hear a goodbye then, hears it this way and
    /// stops redialing); or the dialer restarted and we have no
    /// conversation with it. A fresh dial (its user ran `connect`) is never
    /// refused for this.
    pub fn refuses_redial(&self, peer: &Name, kind: DialKind) -> Option<AcceptError> {
        if kind == DialKind::Fresh || self.talking_to(peer) {
            return None;
        }
        let remembered = self.ended_away.iter().find(|(ended, _)| ended == peer).map(|e| e.1);
        let how = match (kind, remembered) {
            (_, Some(how)) => how,
            (DialKind::AfterRestart, None) => EndedHow::NotHere,
            _ => return None,
        };
        Some(AcceptError::Ended { me: self.me.clone(), how })
    }

    /// Remembers that the conversation with `peer`, which dialed it, ended
    /// here while its link was down (see [`Session::refuses_redial`]).
    fn ended_while_away(&mut self, peer: &Name, how: EndedHow) {
        self.ended_away.retain(|(p, _)| p != peer);
        if self.ended_away.len() >= MAX_ENDED_AWAY {
            self.ended_away.pop_front();
        }
        self.ended_away.push_back((peer.clone(), how));
    }

    /// Whether `peer` is the one we are dialing or in a conversation with.
    fn talking_to(&self, peer: &Name) -> bool {
        self.peer().is_some_and(|p| p == peer)
    }

    /// A dialer says hello (`kind`: what for, as its Hello says). On success the driver starts reading the returned link's
    /// frames; the first action on that link is the [`Frame::Welcome`] to
    /// transmit, ahead of any message sent again. The peer of a
    /// conversation we are in (its link lost, or about to be found lost)
    /// is taken back: that is how the other side resumes.
    ///
    /// Two peers that dial each other at the same moment would each find
    /// the other busy. Instead the dial of the peer whose name sorts first
    /// (case-insensitively) wins on both ends: the other end takes it as
    /// the conversation and drops its own dial, and this end refuses the
    /// other's dial as [`AcceptError::Crossed`].
    pub fn handle_hello(&mut self, peer: Name, kind: DialKind) -> Result<LinkId, AcceptError> {
        if peer == self.me {
            return Err(AcceptError::Yourself);
        }
        if let Some(ended) = self.refuses_redial(&peer, kind) {
            return Err(ended);
        }
        let crossed = || AcceptError::Crossed { me: self.me.clone() };
        match &self.state {
            State::Idle => {
                let link = self.new_link();
                self.welcome(link);
                self.start(Box::new(Conversation::new(peer, link, Role::Callee)));
                Ok(link)
            }
            State::Dialing { peer: dialing, link: ours, crossed: waiting, .. }
                if *dialing == peer =>
            {
                if waiting.is_none() && self.me.key() < peer.key() {
                    return Err(crossed());
                }
                let ours = *ours;
                self.push(Action::DropLink { link: ours });
                let link = self.new_link();
                self.welcome(link);
                self.start(Box::new(Conversation::new(peer.clone(), link, Role::Callee)));
                self.push(Action::Crossed { link: ours, outcome: Crossing::Connected(peer) });
                Ok(link)
            }
            // Our dial won a crossing and the peer's own dial, which it
            // dropped, reached us only now: not a reason to drop the link
            // we just made. (A callee that restarted and dials us before we
            // noticed hears this too; we redial it once we notice.)
            State::Connected(c)
                if c.peer == peer
                    && kind == DialKind::Fresh
                    && c.role == Role::Dialer
                    && c.link.is_some() =>
            {
                Err(crossed())
            }
            // The peer's user ran `connect` while we still hold a
            // conversation with it, as its callee or reconnecting: its end
            // of that one is over (a dialer still in it redials, and it
            // only dials fresh when idle), and we missed the goodbye
            // (frozen, or the link was down). Ours ends too, and says so;
            // the new one starts, and what we had not got acknowledged
            // goes out on it.
            State::Connected(c)
                if c.peer == peer
                    && kind == DialKind::Fresh
                    && (c.role == Role::Callee || c.link.is_none()) =>
            {
                self.end_for_a_new_one(&peer);
                let link = self.new_link();
                self.welcome(link);
                self.start(Box::new(Conversation::new(peer, link, Role::Callee)));
                Ok(link)
            }
            State::Connected(c) if c.peer == peer && !c.closing() => {
                let link = self.new_link();
                let mut stale = Vec::new();
                let mut was_dialer = false;
                if let State::Connected(c) = &mut self.state {
                    if c.link.is_some() {
                        // A link we had not seen die yet: what it carried
                        // last may be lost with it, as in `handle_link_down`.
                        c.owed_displayed = c.receipts_at_risk();
                    }
                    stale.extend(c.link.take());
                    stale.extend(c.reconnect.as_ref().and_then(|r| r.dial));
                    was_dialer = c.role == Role::Dialer;
                    c.role = Role::Callee;
                }
                for old in stale {
                    self.push(Action::DropLink { link: old });
                }
                if was_dialer {
                    // The peer redials now, not we.
                    self.push(Action::Persist(Record::Resumable { peer: None }));
                }
                self.welcome(link);
                self.resume(link);
                Ok(link)
            }
            _ => Err(AcceptError::Busy { me: self.me.clone() }),
        }
    }

    /// The user sends `text` with the driver-chosen unique `id`. While
    /// reconnecting it is queued and goes out when the link is back.
    pub fn send(&mut self, id: Id, text: Text, now_ms: i64) -> Result<(), SendError> {
        check_text(&text)?;
        let c = match &mut self.state {
            State::Connected(c) => c,
            State::Dialing { peer, .. } => {
                return Err(SendError::Connecting { peer: peer.clone() });
            }
            State::Idle => return Err(SendError::NotConnected),
        };
        if c.closing() {
            return Err(SendError::Closing { peer: c.peer.clone() });
        }
        if c.unacked.len() >= MAX_UNACKED || c.unacked_bytes + text.len() > MAX_UNACKED_BYTES {
            return Err(SendError::TooManyInFlight(c.unacked.len()));
        }
        let message = Message { id, text, sent_at_ms: now_ms, seq: c.next_seq };
        c.queue(message.clone());
        let (peer, link) = (c.peer.clone(), c.link);
        self.push(Action::Persist(Record::Message {
            peer,
            direction: Direction::Out,
            message: message.clone(),
            state: MessageState::Sent,
        }));
        if let Some(link) = link {
            self.push(Action::Transmit { link, frame: Frame::Message(message) });
        }
        Ok(())
    }

    /// Sends a ping with `nonce`; the answer comes back as [`Event::Pong`].
    pub fn ping(&mut self, nonce: u64) -> Result<(), SendError> {
        if let State::Dialing { peer, .. } = &self.state {
            return Err(SendError::Connecting { peer: peer.clone() });
        }
        let (State::Connected(c), Some(link)) = (&self.state, self.connected_link()) else {
            return Err(SendError::NotConnected);
        };
        if c.closing() {
            return Err(SendError::Closing { peer: c.peer.clone() });
        }
        self.push(Action::Transmit { link, frame: Frame::Ping(nonce) });
        Ok(())
    }

    /// The user ends the conversation (or cancels a dial in progress, or
    /// gives up reconnecting).
    pub fn disconnect(&mut self, now: Instant) -> Result<Name, DisconnectError> {
        match &mut self.state {
            State::Idle => Err(DisconnectError::NotConnected),
            State::Dialing { peer, link, .. } => {
                let (peer, link) = (peer.clone(), *link);
                self.end_dial();
                self.push(Action::HangUp { link });
                Ok(peer)
            }
            State::Connected(c) if c.link.is_none() => {
                let peer = c.peer.clone();
                let redial = c.reconnect.as_ref().and_then(|r| r.dial);
                let how = c.end_note.take().unwrap_or_else(|| "you ended the conversation".into());
                if c.role == Role::Callee {
                    self.ended_while_away(&peer, EndedHow::ByUser);
                }
                if let Some(dial) = redial {
                    self.push(Action::DropLink { link: dial });
                }
                self.finish(
                    format!("{how} while it was reconnecting"),
                    "the conversation ended before it was delivered",
                );
                Ok(peer)
            }
            State::Connected(c) => {
                let peer = c.peer.clone();
                if !c.sent_goodbye {
                    c.ended_by_us = !c.got_goodbye;
                    self.say_goodbye(now, "the peer ended the conversation");
                }
                Ok(peer)
            }
        }
    }

    /// The user blocked the peer of the conversation (or of the dial): it
    /// ends as [`Session::disconnect`] ends it, and our users are told
    /// "you blocked NAME". The peer is told only that it ended.
    pub fn disconnect_blocked(&mut self, now: Instant) -> Result<Name, DisconnectError> {
        if let State::Connected(c) = &mut self.state
            && !c.sent_goodbye
        {
            c.end_note = Some(format!("you blocked {}", c.peer));
        }
        self.disconnect(now)
    }

    /// A display client showed these received messages to the user.
    pub fn handle_displayed(&mut self, ids: &[Id]) {
        let shown: HashSet<&str> = ids.iter().map(|id| &**id).collect();
        let mut receipts = Vec::new();
        let mut kept = VecDeque::with_capacity(self.undisplayed.len());
        for u in self.undisplayed.drain(..) {
            if shown.contains(&*u.message.id) {
                self.undisplayed_bytes -= u.message.text.len();
                receipts.push(u);
            } else {
                kept.push_back(u);
            }
        }
        self.undisplayed = kept;
        let mut ids_for_peer = Vec::new();
        for u in receipts {
            if let Some((peer, seen)) = &mut self.seen
                && *peer == u.from
            {
                seen.mark_displayed(&u.message.id);
            }
            self.push(Action::Persist(Record::State {
                peer: u.from.clone(),
                id: u.message.id.clone(),
                state: MessageState::Displayed,
            }));
            // A receipt travels to its sender in the conversation with it
            // (a lost link owes it for later), or waits for the next one.
            if matches!(&self.state, State::Connected(c) if c.peer == u.from && !c.send_closed) {
                ids_for_peer.push(u.message.id);
            } else {
                self.owe_later(u.from, u.message.id);
            }
        }
        if ids_for_peer.is_empty() {
            return;
        }
        match &mut self.state {
            State::Connected(c) if c.link.is_none() => c.owed_displayed.extend(ids_for_peer),
            State::Connected(c) => {
                if let Some(link) = c.link {
                    c.sent_displayed(&ids_for_peer);
                    self.push(Action::Transmit {
                        link,
                        frame: Frame::Receipt { ids: ids_for_peer, kind: ReceiptKind::Displayed },
                    });
                }
            }
            _ => {}
        }
    }

    /// Our messages to `peer` that an earlier run saw delivered but not
    /// yet displayed (oldest first): the peer's `displayed` receipt for
    /// them may still come, when a conversation with it next starts, and
    /// is believed as if this run had sent them. At most
    /// [`MAX_AWAITING_DISPLAY`] in all; the rest are ignored.
    pub fn restore_delivered_unshown(&mut self, peer: Name, ids: impl IntoIterator<Item = Id>) {
        for id in ids {
            if self.delivered_before.len() >= MAX_AWAITING_DISPLAY {
                return;
            }
            self.delivered_before.insert(id, peer.clone());
        }
    }

    /// Queues a message stored in an earlier run but never shown, so that
    /// the next display client shows it (oldest first: call in order).
    pub fn restore_undisplayed(&mut self, from: Name, message: Message) {
        self.queue_undisplayed(from, message);
    }

    /// A display client attached and is shown every message waiting (see
    /// [`Session::undisplayed`]). Returns how many received messages were
    /// let go before it unshown, per sender (`None`: other senders), so
    /// that the user learns there is more than it shows (in the history):
    /// more waited than the caps keep, with no display client to see them.
    pub fn attach_display(&mut self) -> Vec<(Option<Name>, usize)> {
        for waiting in &mut self.undisplayed {
            waiting.offered = true;
        }
        std::mem::take(&mut self.let_go)
    }

    /// The display clients were dropped unread (they fell behind): what
    /// waits was sent to no one who showed it, and counts as unshown if
    /// it is let go before the next one attaches.
    pub fn display_dropped_unread(&mut self) {
        for waiting in &mut self.undisplayed {
            waiting.offered = false;
        }
    }

    /// Whether a display client is attached, so that a message let go over
    /// the caps is counted only if none was sent it (see
    /// [`Session::attach_display`]).
    pub fn set_display_attached(&mut self, attached: bool) {
        self.display_attached = attached;
    }

    /// Received messages not yet shown, oldest first, for a display client
    /// that just attached.
    pub fn undisplayed(&self) -> impl Iterator<Item = (&Name, &Message)> {
        self.undisplayed.iter().map(|u| (&u.from, &u.message))
    }

    /// A frame arrived on `link`.
    pub fn handle_frame(&mut self, link: LinkId, frame: Frame, now: Instant) {
        self.clock = Some(now);
        if self.connected_link() != Some(link) {
            return;
        }
        match frame {
            Frame::Welcome { .. } => {
                // Only the dialer's handshake reads a Welcome; one inside
                // the conversation breaks the protocol, which ends a link
                // like any transport error: hang up, and resume or end as
                // for any lost link.
                self.push(Action::DropLink { link });
                self.handle_link_down(link, LinkDown::Error("unexpected welcome".into()), now);
            }
            Frame::Message(message) => self.on_message(link, message),
            Frame::Receipt { ids, kind } => self.on_receipt(ids, kind),
            Frame::Goodbye { .. } => self.on_goodbye(now),
            Frame::Ping(nonce) => self.push(Action::Transmit { link, frame: Frame::Pong(nonce) }),
            Frame::Pong(nonce) => self.push(Action::Emit(Event::Pong { nonce })),
        }
    }

    /// The link layer says `link` ended.
    pub fn handle_link_down(&mut self, link: LinkId, why: LinkDown, now: Instant) {
        self.clock = Some(now);
        let c = match &mut self.state {
            State::Dialing { link: l, .. } if *l == link => {
                self.end_dial();
                return;
            }
            State::Connected(c) if c.link == Some(link) => c,
            State::Connected(c) if c.reconnect.as_ref().is_some_and(|r| r.dial == Some(link)) => {
                // A redial whose stream died before it was adopted.
                self.handle_dial_failed(link, &describe(&why), now);
                return;
            }
            _ => return,
        };
        match why {
            LinkDown::EndOfStream if c.got_goodbye => {
                // A clean end: everything the peer will ever send is here.
                if c.role == Role::Callee {
                    self.push(Action::CloseSend { link });
                }
                let reason = self.clean_end_reason();
                self.finish(reason, "the conversation ended before it was delivered");
            }
            _ if c.closing() => {
                let reason = format!("link lost while ending the conversation: {}", describe(&why));
                self.finish(reason.clone(), &reason);
            }
            _ => {
                // The event says the link was lost: its reason is the
                // cause alone. What ends the conversation later, if the
                // link does not come back, says both.
                let cause = describe(&why);
                let reason = format!("link lost: {cause}");
                let dialer = c.role == Role::Dialer;
                let reconnect = match c.resumed_from.take() {
                    // Back less than PROVEN_AFTER ago: the same window, and
                    // the backoff goes on growing.
                    Some((Some(at), mut old))
                        if now.saturating_duration_since(at) < PROVEN_AFTER =>
                    {
                        old.reason = reason;
                        old.dial = None;
                        old.next_attempt = dialer.then(|| now + old.backoff.next_delay());
                        old
                    }
                    _ => Reconnect::new(now + self.resume_window, reason, dialer.then_some(now)),
                };
                c.link = None;
                // Receipts sent on the lost link may be lost with it.
                c.owed_displayed = c.receipts_at_risk();
                c.reconnect = Some(reconnect);
                let peer = c.peer.clone();
                self.push(Action::Emit(Event::LinkLost { peer, reason: cause }));
                // The first redial goes out at once.
                self.handle_timeout(now);
            }
        }
    }

    /// Time passed; call at [`Session::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = Some(now);
        self.fail_expired_pending(now);
        if let State::Dialing { peer, link, crossed: Some(until), .. } = &self.state
            && now >= *until
        {
            let (peer, link) = (peer.clone(), *link);
            self.end_dial();
            self.push(Action::Crossed { link, outcome: Crossing::NotCalled(peer) });
            return;
        }
        let State::Connected(c) = &mut self.state else {
            return;
        };
        if c.close_deadline.is_some_and(|d| now >= d) {
            if let Some(link) = c.link {
                self.push(Action::DropLink { link });
            }
            self.finish(
                "the goodbye was not answered in time".into(),
                "the conversation ended before it was delivered",
            );
            return;
        }
        let Some(r) = c.reconnect.as_mut() else {
            return;
        };
        if now >= r.give_up_at {
            let window = self.resume_window.as_secs_f64().round();
            let reason = match &r.last_failure {
                Some(last) => {
                    format!("{} (not back within {window}s; last redial: {last})", r.reason)
                }
                None => format!("{} (not back within {window}s)", r.reason),
            };
            let dial = r.dial;
            // The peer's own window may be longer than ours.
            let redialer = (c.role == Role::Callee).then(|| c.peer.clone());
            if let Some(dial) = dial {
                self.push(Action::DropLink { link: dial });
            }
            if let Some(peer) = redialer {
                self.ended_while_away(&peer, EndedHow::WindowPassed);
            }
            self.finish(reason.clone(), &reason);
            return;
        }
        if r.dial.is_none() && r.next_attempt.is_some_and(|t| now >= t) {
            r.next_attempt = None;
            let link = LinkId(self.next_link);
            self.next_link += 1;
            r.dial = Some(link);
            let peer = c.peer.clone();
            let kind = if r.after_restart { DialKind::AfterRestart } else { DialKind::Redial };
            self.push(Action::Redial { link, peer, kind });
        }
    }

    /// The daemon is shutting down: say goodbye if we can. The driver gives
    /// the close a moment and then drops the link.
    pub fn shutdown(&mut self, now: Instant) {
        match &mut self.state {
            State::Idle => {}
            State::Dialing { link, .. } => {
                let link = *link;
                self.end_dial();
                self.push(Action::DropLink { link });
            }
            State::Connected(c) if c.link.is_none() => {
                if let Some(dial) = c.reconnect.as_ref().and_then(|r| r.dial) {
                    self.push(Action::DropLink { link: dial });
                }
                self.finish(
                    "the daemon stopped while reconnecting".into(),
                    "the daemon stopped before it was delivered",
                );
            }
            State::Connected(c) => {
                let dialer = c.role == Role::Dialer;
                if !c.sent_goodbye {
                    c.ended_by_us = !c.got_goodbye;
                    self.say_goodbye(now, "the peer's daemon stopped");
                }
                // Stopped on purpose: nothing to resume at the next start,
                // even if the goodbye is not answered in time.
                if dialer {
                    self.push(Action::Persist(Record::Resumable { peer: None }));
                }
            }
        }
    }

    fn connected_link(&self) -> Option<LinkId> {
        match &self.state {
            State::Connected(c) => c.link,
            _ => None,
        }
    }

    fn on_message(&mut self, link: LinkId, message: Message) {
        let State::Connected(c) = &self.state else {
            return;
        };
        // After its goodbye the peer promised no more messages; one that
        // comes anyway is not taken (it could not be acknowledged once our
        // half is closed, and its sender fails it).
        if c.got_goodbye {
            return;
        }
        let from = c.peer.clone();
        let seen = match &mut self.seen {
            Some((peer, seen)) if *peer == from => seen,
            _ => &mut self.seen.insert((from.clone(), RecentIds::new(MAX_SEEN_IDS))).1,
        };
        if let Some(displayed) = seen.get(&message.id) {
            // Sent again after a lost link: we have it. Acknowledge again;
            // store and show it once.
            let ids = vec![message.id];
            if displayed {
                self.push(Action::Transmit {
                    link,
                    frame: Frame::Receipt { ids: ids.clone(), kind: ReceiptKind::Delivered },
                });
                self.push(Action::Transmit {
                    link,
                    frame: Frame::Receipt { ids, kind: ReceiptKind::Displayed },
                });
            } else {
                self.push(Action::Transmit {
                    link,
                    frame: Frame::Receipt { ids, kind: ReceiptKind::Delivered },
                });
            }
            return;
        }
        seen.insert(message.id.clone(), false);
        self.push(Action::Persist(Record::Message {
            peer: from.clone(),
            direction: Direction::In,
            message: message.clone(),
            state: MessageState::Delivered,
        }));
        self.push(Action::Transmit {
            link,
            frame: Frame::Receipt { ids: vec![message.id.clone()], kind: ReceiptKind::Delivered },
        });
        self.queue_undisplayed(from.clone(), message.clone());
        self.push(Action::Emit(Event::Message { from, message }));
    }

    fn queue_undisplayed(&mut self, from: Name, message: Message) {
        self.undisplayed_bytes += message.text.len();
        let offered = self.display_attached;
        self.undisplayed.push_back(Undisplayed { from, message, offered });
        while self.undisplayed_bytes > MAX_UNDISPLAYED_BYTES
            || self.undisplayed.len() > MAX_UNDISPLAYED_MESSAGES
        {
            match self.undisplayed.pop_front() {
                Some(old) => {
                    self.undisplayed_bytes -= old.message.text.len();
                    if !old.offered {
                        self.count_let_go(old.from);
                    }
                }
                None => break,
            }
        }
    }

    fn count_let_go(&mut self, from: Name) {
        let sender = if self.let_go.iter().any(|(f, _)| f.as_ref() == Some(&from))
            || self.let_go.len() < MAX_LET_GO_SENDERS
        {
            Some(from)
        } else {
            None
        };
        match self.let_go.iter_mut().find(|(f, _)| *f == sender) {
            Some((_, count)) => *count += 1,
            None => self.let_go.push((sender, 1)),
        }
    }

    fn on_receipt(&mut self, ids: Vec<Id>, kind: ReceiptKind) {
        let State::Connected(c) = &mut self.state else {
            return;
        };
        let peer = c.peer.clone();
        let accepted = match kind {
            ReceiptKind::Delivered => {
                // Ids the queue does not have may be late receipts for
                // messages reported failed: noted only after a failure.
                let mut maybe_late = Vec::new();
                let misses = (!self.failed_to.is_empty()).then_some(&mut maybe_late);
                let mut accepted = ids;
                c.acknowledge(&mut accepted, misses);
                for id in &accepted {
                    self.awaiting_display.insert_new_within(id, peer.clone(), MAX_AWAITING_DISPLAY);
                }
                for id in maybe_late {
                    if self.take_failed(&id, &peer) {
                        self.remember_delivered_before(id.clone(), &peer);
                        accepted.push(id);
                    }
                }
                accepted
            }
            ReceiptKind::Displayed => {
                let mut accepted = ids.clone();
                c.acknowledge(&mut accepted, None);
                // `displayed` can overtake `delivered` (a receipt owed from
                // an outage goes first on a resumed link). It implies
                // delivery: say so first, so every watcher sees both.
                for id in &accepted {
                    self.push(Action::Emit(Event::Receipt {
                        peer: peer.clone(),
                        id: id.clone(),
                        kind: ReceiptKind::Delivered,
                    }));
                }
                for id in ids {
                    // Ours, delivered to this peer: a later peer cannot say
                    // that an earlier one's messages were shown.
                    if self.awaiting_display.get(&id) == Some(&peer) {
                        self.awaiting_display.remove(&id);
                        accepted.push(id);
                    } else if self.delivered_before.get(&id) == Some(&peer) {
                        self.delivered_before.remove(&id);
                        accepted.push(id);
                    } else if self.take_failed(&id, &peer) {
                        // Reported failed, and shown after all: delivered
                        // first, as above.
                        self.push(Action::Persist(Record::State {
                            peer: peer.clone(),
                            id: id.clone(),
                            state: MessageState::Delivered,
                        }));
                        self.push(Action::Emit(Event::Receipt {
                            peer: peer.clone(),
                            id: id.clone(),
                            kind: ReceiptKind::Delivered,
                        }));
                        accepted.push(id);
                    }
                }
                accepted
            }
        };
        let state = MessageState::from(kind);
        for id in accepted {
            self.push(Action::Persist(Record::State { peer: peer.clone(), id: id.clone(), state }));
            self.push(Action::Emit(Event::Receipt { peer: peer.clone(), id, kind }));
        }
    }

    fn on_goodbye(&mut self, now: Instant) {
        let State::Connected(c) = &mut self.state else {
            return;
        };
        if c.got_goodbye {
            return;
        }
        c.got_goodbye = true;
        if !c.sent_goodbye {
            self.say_goodbye(now, "goodbye");
        } else if let (Role::Dialer, Some(link)) = (c.role, c.link) {
            c.send_closed = true;
            self.push(Action::CloseSend { link });
        }
    }

    /// Sends our goodbye; the dialer that has heard theirs already ends its
    /// half right after it.
    fn say_goodbye(&mut self, now: Instant, reason: &str) {
        let State::Connected(c) = &mut self.state else {
            return;
        };
        let Some(link) = c.link else {
            return;
        };
        c.sent_goodbye = true;
        c.close_deadline = Some(now + CLOSE_TIMEOUT);
        let close = c.got_goodbye && c.role == Role::Dialer;
        c.send_closed |= close;
        self.push(Action::Transmit { link, frame: Frame::Goodbye { reason: reason.to_owned() } });
        if close {
            self.push(Action::CloseSend { link });
        }
    }

    fn clean_end_reason(&self) -> String {
        match &self.state {
            State::Connected(c) if c.ended_by_us => {
                c.end_note.clone().unwrap_or_else(|| "you ended the conversation".to_owned())
            }
            State::Connected(c) => format!("{} ended the conversation", c.peer),
            _ => String::new(),
        }
    }

    /// Ends the conversation: every unacknowledged message of ours fails,
    /// both users are told, and we are available again.
    fn finish(&mut self, reason: String, failed_reason: &str) {
        self.end(reason, Unacked::Fail(failed_reason));
    }

    /// Ends the conversation: both users are told `reason`, we are
    /// available again, and its unacknowledged messages go as `unacked`
    /// says.
    fn end(&mut self, reason: String, unacked: Unacked<'_>) {
        let State::Connected(mut c) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        if c.role == Role::Dialer {
            self.push(Action::Persist(Record::Resumable { peer: None }));
        }
        // Owed, or sent on a link that may have lost them (a goodbye's end
        // is clean, and they arrived): the next conversation pays them.
        let clean = c.got_goodbye && c.link.is_some();
        let owed: Vec<Id> =
            if clean { std::mem::take(&mut c.owed_displayed) } else { c.receipts_at_risk() };
        for id in owed {
            self.owe_later(c.peer.clone(), id);
        }
        self.owe_delivered(&c.peer);
        match unacked {
            Unacked::Fail(why) => {
                for m in c.unacked {
                    self.fail(&c.peer, m.id, why);
                }
            }
            Unacked::Keep(now) => self.restore_unacked(c.peer.clone(), c.unacked.into(), now),
        }
        self.push(Action::Emit(Event::Disconnected { peer: c.peer.clone(), reason }));
        self.push(Action::Presence(Presence::Available));
        self.last_peer = Some(c.peer);
    }

    /// Ends the conversation with `peer`, whose user has just started a
    /// new one with us: its link is dropped, our users are told, and its
    /// unacknowledged messages wait to go first on the new one (which
    /// [`Session::start`] takes them into at once).
    fn end_for_a_new_one(&mut self, peer: &Name) {
        let State::Connected(mut c) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        for link in c.link.into_iter().chain(c.reconnect.as_ref().and_then(|r| r.dial)) {
            self.push(Action::DropLink { link });
        }
        if c.role == Role::Dialer {
            // We no longer redial it: the peer dialed us.
            self.push(Action::Persist(Record::Resumable { peer: None }));
        }
        // Receipts it owed, or sent on a link that may have lost them, go
        // out on the new one.
        for id in c.receipts_at_risk() {
            self.owe_later(c.peer.clone(), id);
        }
        // The old link is dropped under whatever was on it.
        self.owe_delivered(&c.peer);
        if !c.unacked.is_empty() {
            let entry = self
                .pending
                .entry(c.peer.key())
                .or_insert_with(|| Pending { peer: c.peer.clone(), messages: Vec::new() });
            entry.messages.extend(c.unacked);
        }
        let reason = format!("{peer} started a new conversation");
        self.push(Action::Emit(Event::Disconnected { peer: c.peer, reason }));
    }

    /// Keeps `delivered` receipts for the newest ids we had from `peer`
    /// until a conversation with it starts (see
    /// [`Session::owed_delivered`]). On every end, clean or not: whether
    /// the peer read our last receipts before its end of the link went is
    /// not something either end can know (a goodbye read after the peer
    /// dropped the link looks clean), and a conversation that dies in its
    /// turn owes them again. They are a frame, and the peer takes a
    /// receipt for a message it does not miss as a no-op.
    fn owe_delivered(&mut self, peer: &Name) {
        let Some((from, seen)) = &self.seen else {
            return;
        };
        if from != peer {
            return;
        }
        let ids = seen.newest(MAX_OWED_DELIVERED);
        self.owed_delivered.retain(|(p, _)| p != peer);
        if ids.is_empty() {
            return;
        }
        if self.owed_delivered.len() >= MAX_OWED_DELIVERED_PEERS {
            self.owed_delivered.pop_front();
        }
        self.owed_delivered.push_back((peer.clone(), ids));
    }

    /// Takes `id` out of the failed messages if it went to `peer`.
    fn take_failed(&mut self, id: &Id, peer: &Name) -> bool {
        if self.failed_to.get(id) != Some(peer) {
            return false;
        }
        self.failed_to.remove(id);
        true
    }

    /// `id`, ours and delivered to `peer`, may still be reported shown.
    fn remember_delivered_before(&mut self, id: Id, peer: &Name) {
        if self.delivered_before.len() < MAX_AWAITING_DISPLAY {
            self.delivered_before.insert(id, peer.clone());
        }
    }

    /// Keeps a `displayed` receipt for `peer` until a conversation with it
    /// starts (see [`Session::owed_later`]).
    fn owe_later(&mut self, peer: Name, id: Id) {
        if self.owed_later.len() >= MAX_OWED_LATER {
            self.owed_later.pop_front();
        }
        self.owed_later.push_back((peer, id));
    }

    fn fail(&mut self, peer: &Name, id: Id, reason: &str) {
        if self.failed_order.len() >= MAX_FAILED_REMEMBERED
            && let Some(oldest) = self.failed_order.pop_front()
        {
            self.failed_to.remove(&oldest);
        }
        self.failed_to.insert(id.clone(), peer.clone());
        self.failed_order.push_back(id.clone());
        self.push(Action::Persist(Record::State {
            peer: peer.clone(),
            id: id.clone(),
            state: MessageState::Failed,
        }));
        self.push(Action::Emit(Event::Failed {
            peer: peer.clone(),
            id,
            reason: reason.to_owned(),
        }));
    }

    /// Messages an earlier run left unacknowledged, whose peer did not come
    /// back in time, fail now.
    fn fail_expired_pending(&mut self, now: Instant) {
        if self.pending_deadline.is_none_or(|d| now < d) {
            return;
        }
        self.pending_deadline = None;
        let window = self.resume_window.as_secs_f64().round();
        for (_, p) in std::mem::take(&mut self.pending) {
            let reason = format!(
                "not delivered before the daemon stopped, and no conversation with {} \
                 took it within {window}s of the restart",
                p.peer
            );
            for m in p.messages {
                self.fail(&p.peer, m.id, &reason);
            }
        }
    }

    fn start(&mut self, mut conversation: Box<Conversation>) {
        let peer = conversation.peer.clone();
        self.ended_away.retain(|(ended, _)| *ended != peer);
        // Messages an earlier run could not deliver to this peer go first.
        let pending = self.pending.remove(&peer.key());
        if self.pending.is_empty() {
            self.pending_deadline = None;
        }
        let resend: Vec<Message> = pending.map(|p| p.messages).unwrap_or_default();
        for m in &resend {
            conversation.queue(m.clone());
        }
        let mut owed = Vec::new();
        self.owed_later.retain(|(p, id)| {
            let theirs = *p == peer;
            if theirs {
                owed.push(id.clone());
            }
            !theirs
        });
        let owed_delivered = match self.owed_delivered.iter().position(|(p, _)| *p == peer) {
            Some(i) => self.owed_delivered.remove(i).map(|(_, ids)| ids).unwrap_or_default(),
            None => Vec::new(),
        };
        let link = conversation.link;
        if link.is_none() {
            conversation.owed_displayed.append(&mut owed);
        } else {
            conversation.sent_displayed(&owed);
        }
        if conversation.role == Role::Dialer {
            self.push(Action::Persist(Record::Resumable { peer: Some(peer.clone()) }));
        }
        self.last_peer = Some(peer.clone());
        self.state = State::Connected(conversation);
        self.push(Action::Presence(Presence::Busy));
        self.push(Action::Emit(Event::Connected { peer }));
        if let Some(link) = link {
            for m in resend {
                self.push(Action::Transmit { link, frame: Frame::Message(m) });
            }
            if !owed_delivered.is_empty() {
                self.push(Action::Transmit {
                    link,
                    frame: Frame::Receipt { ids: owed_delivered, kind: ReceiptKind::Delivered },
                });
            }
            if !owed.is_empty() {
                self.push(Action::Transmit {
                    link,
                    frame: Frame::Receipt { ids: owed, kind: ReceiptKind::Displayed },
                });
            }
        }
    }

    /// The conversation has a link again: send everything unacknowledged,
    /// in order, and the receipts we owe.
    fn resume(&mut self, link: LinkId) {
        let clock = self.clock;
        let State::Connected(c) = &mut self.state else {
            return;
        };
        c.link = Some(link);
        // Kept only for its window and backoff: the link that came back is
        // of this run, and the outage it ended is over.
        c.resumed_from = c.reconnect.take().map(|mut r| {
            r.after_restart = false;
            r.last_failure = None;
            (clock, r)
        });
        let peer = c.peer.clone();
        let resend: Vec<Message> = c.unacked.iter().cloned().collect();
        let owed = std::mem::take(&mut c.owed_displayed);
        c.sent_displayed(&owed);
        self.push(Action::Emit(Event::Resumed { peer }));
        for m in resend {
            self.push(Action::Transmit { link, frame: Frame::Message(m) });
        }
        if !owed.is_empty() {
            self.push(Action::Transmit {
                link,
                frame: Frame::Receipt { ids: owed, kind: ReceiptKind::Displayed },
            });
        }
    }

    fn new_link(&mut self) -> LinkId {
        let link = LinkId(self.next_link);
        self.next_link += 1;
        link
    }

    /// The callee's answer to an accepted Hello, under our own spelling of
    /// our name. It comes from here rather than from the driver so that it
    /// is ordered with the rest: nothing is transmitted on `link` before it.
    fn welcome(&mut self, link: LinkId) {
        let name = self.me.clone();
        self.push(Action::Transmit { link, frame: Frame::Welcome { name } });
    }

    fn push(&mut self, action: Action) {
        match action {
            Action::Transmit { link, frame: Frame::Receipt { ids, kind } } => {
                self.push_receipt(link, ids, kind);
            }
            Action::Persist(_) | Action::Emit(_) | Action::Presence(_) | Action::Crossed { .. } => {
                self.actions.push_back(Some(action));
            }
            Action::Transmit { .. }
            | Action::CloseSend { .. }
            | Action::DropLink { .. }
            | Action::HangUp { .. }
            | Action::Redial { .. } => self.push_wire(action),
        }
    }

    /// Queues an action that touches the wire (or a link), which a later
    /// receipt must not be merged across.
    fn push_wire(&mut self, action: Action) {
        self.last_wire = Some(self.popped + self.actions.len() as u64);
        self.actions.push_back(Some(action));
    }

    /// Queues a receipt, merged with the newest wire action if that is a
    /// receipt of the same link and kind that still has room and has not
    /// been polled. Only local actions can be between the two, so the
    /// peer sees the same receipts in the same order, in fewer frames.
    ///
    /// The merged frame takes the place of the *new* receipt, not the old
    /// one: a local action in between may be the [`Action::Persist`] of the
    /// message the new receipt acknowledges, and an acknowledgement may be
    /// late but never ahead of the store. The old slot is left empty rather
    /// than removed, which keeps this O(1) per id.
    fn push_receipt(&mut self, link: LinkId, mut ids: Vec<Id>, kind: ReceiptKind) {
        if ids.is_empty() {
            return;
        }
        let last = self
            .last_wire
            .and_then(|slot| slot.checked_sub(self.popped))
            .and_then(|i| usize::try_from(i).ok());
        if let Some(i) = last
            && let Some(slot) = self.actions.get_mut(i)
            && let Some(Action::Transmit {
                link: l,
                frame: Frame::Receipt { ids: before, kind: k },
            }) = slot
            && *l == link
            && *k == kind
            && before.len() < MAX_RECEIPT_IDS
        {
            let mut merged = std::mem::take(before);
            *slot = None;
            merged.append(&mut ids);
            ids = merged;
        }
        if ids.len() <= MAX_RECEIPT_IDS {
            self.push_wire(Action::Transmit { link, frame: Frame::Receipt { ids, kind } });
            return;
        }
        let mut rest = ids.into_iter();
        loop {
            let chunk: Vec<Id> = rest.by_ref().take(MAX_RECEIPT_IDS).collect();
            if chunk.is_empty() {
                return;
            }
            self.push_wire(Action::Transmit { link, frame: Frame::Receipt { ids: chunk, kind } });
        }
    }
}

fn describe(why: &LinkDown) -> String {
    match why {
        LinkDown::EndOfStream => "the stream ended without a goodbye".to_owned(),
        LinkDown::Error(e) => e.clone(),
    }
}

/// How much of a failed redial's reason (which may quote the peer) is kept.
const MAX_FAILURE_LEN: usize = 200;

/// `text`, cut to at most `max` bytes at a character boundary.
fn bounded(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
