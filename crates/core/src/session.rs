//! The conversation state machine: one peer at a time, messages both ways,
//! receipts, a two-sided goodbye, and what happens when the link dies.
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
//! # Closing
//! `Goodbye` means "I send no more messages"; receipts may still follow. The
//! dialer ends its half of the stream once it has both sent and received a
//! goodbye; the callee ends the call once the dialer's half has ended. So
//! every receipt for every message is on the wire before either side's
//! final end of stream, and a clean end is told apart from a lost link (an
//! end of stream with no goodbye before it).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::name::Name;
use crate::text::{TextError, check_text};

/// How long a goodbye may take before the link is dropped regardless.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How many received-but-unshown message texts are kept for the next
/// display client, by bytes. Past this the oldest are dropped from memory
/// (they stay in the history file) so an unwatched daemon stays bounded.
pub const MAX_UNDISPLAYED_BYTES: usize = 16 * 1024 * 1024;

/// And by count, for many tiny messages.
pub const MAX_UNDISPLAYED_MESSAGES: usize = 100_000;

/// How many of our messages may wait for `delivered` at once; `send`
/// refuses more, which is the back-pressure that keeps a stalled peer from
/// making us buffer without end.
pub const MAX_UNACKED: usize = 10_000;

/// How many delivered-but-not-yet-displayed ids of ours are remembered, so
/// that a `displayed` receipt is believed only for a message we sent.
pub const MAX_AWAITING_DISPLAY: usize = 65_536;

/// The longest message id accepted from a peer.
pub const MAX_ID_LEN: usize = 64;

/// Identifies one link (one Converse stream). Events of an old link that
/// arrive after a new one started are ignored by comparing ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// Which end of the stream this daemon is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the stream (ran `connect`).
    Dialer,
    /// Accepted it.
    Callee,
}

/// A message on the wire, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub text: String,
    /// Milliseconds since the Unix epoch, as the sender's clock had it.
    pub sent_at_ms: i64,
    /// Per conversation and direction: 1, 2, 3, … in sending order.
    pub seq: u64,
}

/// The two acknowledgements a receiver gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// Stored in the receiver's history.
    Delivered,
    /// Shown to the receiving user.
    Displayed,
}

/// Frames after the Hello/Welcome handshake (which the link layer does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Message),
    Receipt { ids: Vec<String>, kind: ReceiptKind },
    Goodbye { reason: String },
    Ping(u64),
    Pong(u64),
}

/// Where a stored message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageState {
    /// Ours, handed to the link, not yet acknowledged.
    Sent,
    Delivered,
    Displayed,
    /// Ours, and it will never be delivered.
    Failed,
}

/// A line for the history store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message, when it was sent or received.
    Message { peer: Name, direction: Direction, message: Message, state: MessageState },
    /// A later change of a stored message's state.
    State { peer: Name, id: String, state: MessageState },
}

/// Things the user (watch and chat clients) is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message { from: Name, message: Message },
    Receipt { peer: Name, id: String, kind: ReceiptKind },
    Connected { peer: Name },
    Disconnected { peer: Name, reason: String },
    Failed { peer: Name, id: String, reason: String },
    Pong { nonce: u64 },
}

/// What the directory should say about us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Available,
    Busy,
}

/// The outputs of the state machine, in the order they must take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Transmit {
        link: LinkId,
        frame: Frame,
    },
    /// End our half of the stream (dialer) or the whole call (callee),
    /// after everything transmitted before it.
    CloseSend {
        link: LinkId,
    },
    /// Abandon the link now.
    DropLink {
        link: LinkId,
    },
    Persist(Record),
    Emit(Event),
    Presence(Presence),
}

/// Why a link ended, as the link layer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDown {
    /// The peer's half of the stream ended (which, without a goodbye
    /// before it, still means the link was lost).
    EndOfStream,
    /// A transport error: reset, keepalive timeout, protocol violation.
    Error(String),
}

/// Refusals of `connect`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("you cannot connect to yourself")]
    Yourself,
    #[error("already connected to {peer}; disconnect first")]
    AlreadyConnected { peer: Name },
    #[error("already connecting to {peer}; wait for it or disconnect first")]
    AlreadyConnecting { peer: Name },
}

/// Refusals of an inbound Hello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error("{me} is busy in another conversation")]
    Busy { me: Name },
    #[error("a peer cannot connect to itself")]
    Yourself,
}

/// Refusals of `send`, `disconnect` and friends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("not connected: connect to a peer first")]
    NotConnected,
    #[error("not connected: the conversation with {peer} is ending")]
    Closing { peer: Name },
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("too many messages in flight ({0} unacknowledged)")]
    TooManyInFlight(usize),
}

/// Refusal of `disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectError {
    #[error("not connected: there is no conversation to end")]
    NotConnected,
}

/// A coarse view of the state, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Connecting,
    Connected,
    Closing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Closing => "closing",
        }
    }
}

#[derive(Debug)]
enum State {
    Idle,
    Dialing { peer: Name, link: LinkId },
    Connected(Conversation),
}

#[derive(Debug)]
struct Conversation {
    peer: Name,
    link: LinkId,
    role: Role,
    sent_goodbye: bool,
    got_goodbye: bool,
    /// Who started the goodbye, for the `disconnected` reason.
    ended_by_us: bool,
    close_deadline: Option<Instant>,
    /// Our messages not yet acknowledged `delivered`, in sending order.
    unacked: VecDeque<String>,
    unacked_set: HashSet<String>,
    next_seq: u64,
    /// Highest `seq` received: anything at or below it is a duplicate.
    highest_seen: u64,
}

impl Conversation {
    fn new(peer: Name, link: LinkId, role: Role) -> Conversation {
        Conversation {
            peer,
            link,
            role,
            sent_goodbye: false,
            got_goodbye: false,
            ended_by_us: false,
            close_deadline: None,
            unacked: VecDeque::new(),
            unacked_set: HashSet::new(),
            next_seq: 1,
            highest_seen: 0,
        }
    }
}

/// A received message waiting for a display client.
#[derive(Debug, Clone)]
struct Undisplayed {
    from: Name,
    message: Message,
}

/// One daemon's conversation state. See the module docs.
#[derive(Debug)]
pub struct Session {
    me: Name,
    state: State,
    next_link: u64,
    actions: VecDeque<Action>,
    /// Received messages no display client has shown yet, oldest first.
    undisplayed: VecDeque<Undisplayed>,
    undisplayed_bytes: usize,
    /// Our delivered messages that may still get a `displayed` receipt:
    /// id → peer, bounded FIFO.
    awaiting_display: HashMap<String, Name>,
    awaiting_display_order: VecDeque<String>,
    /// The last peer we talked to, for `history` with no name.
    last_peer: Option<Name>,
}

impl Session {
    pub fn new(me: Name) -> Session {
        Session {
            me,
            state: State::Idle,
            next_link: 1,
            actions: VecDeque::new(),
            undisplayed: VecDeque::new(),
            undisplayed_bytes: 0,
            awaiting_display: HashMap::new(),
            awaiting_display_order: VecDeque::new(),
            last_peer: None,
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

    /// The link the conversation runs on, if any.
    pub fn link(&self) -> Option<LinkId> {
        match &self.state {
            State::Idle => None,
            State::Dialing { link, .. } => Some(*link),
            State::Connected(c) => Some(c.link),
        }
    }

    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Idle => Phase::Idle,
            State::Dialing { .. } => Phase::Connecting,
            State::Connected(c) if c.sent_goodbye || c.got_goodbye => Phase::Closing,
            State::Connected(_) => Phase::Connected,
        }
    }

    /// Our messages to the current peer still waiting for `delivered`.
    pub fn unacknowledged(&self) -> usize {
        match &self.state {
            State::Connected(c) => c.unacked.len(),
            _ => 0,
        }
    }

    /// The next output, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Connected(c) => c.close_deadline,
            _ => None,
        }
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
        self.state = State::Dialing { peer, link };
        Ok(link)
    }

    /// The dial on `link` succeeded: the callee, who is `peer`, welcomed us.
    pub fn handle_dialed(&mut self, link: LinkId, peer: Name) {
        match &self.state {
            State::Dialing { link: l, .. } if *l == link => {}
            // A dial we gave up on: hang up on it.
            _ => {
                self.push(Action::DropLink { link });
                return;
            }
        }
        self.start(Conversation::new(peer, link, Role::Dialer));
    }

    /// The dial on `link` failed; the driver tells the user why.
    pub fn handle_dial_failed(&mut self, link: LinkId) {
        if matches!(&self.state, State::Dialing { link: l, .. } if *l == link) {
            self.state = State::Idle;
        }
    }

    /// A dialer says hello. On success the driver answers Welcome on the
    /// returned link and starts reading its frames.
    pub fn handle_hello(&mut self, peer: Name) -> Result<LinkId, AcceptError> {
        if peer == self.me {
            return Err(AcceptError::Yourself);
        }
        if !matches!(self.state, State::Idle) {
            return Err(AcceptError::Busy { me: self.me.clone() });
        }
        let link = self.new_link();
        self.start(Conversation::new(peer, link, Role::Callee));
        Ok(link)
    }

    /// The user sends `text` with the driver-chosen unique `id`.
    pub fn send(&mut self, id: String, text: String, now_ms: i64) -> Result<(), SendError> {
        check_text(&text)?;
        let State::Connected(c) = &mut self.state else {
            return Err(SendError::NotConnected);
        };
        if c.sent_goodbye || c.got_goodbye {
            return Err(SendError::Closing { peer: c.peer.clone() });
        }
        if c.unacked.len() >= MAX_UNACKED {
            return Err(SendError::TooManyInFlight(c.unacked.len()));
        }
        let message = Message { id: id.clone(), text, sent_at_ms: now_ms, seq: c.next_seq };
        c.next_seq += 1;
        c.unacked.push_back(id.clone());
        c.unacked_set.insert(id);
        let (peer, link) = (c.peer.clone(), c.link);
        self.push(Action::Persist(Record::Message {
            peer,
            direction: Direction::Out,
            message: message.clone(),
            state: MessageState::Sent,
        }));
        self.push(Action::Transmit { link, frame: Frame::Message(message) });
        Ok(())
    }

    /// Sends a ping with `nonce`; the answer comes back as [`Event::Pong`].
    pub fn ping(&mut self, nonce: u64) -> Result<(), SendError> {
        let State::Connected(c) = &self.state else {
            return Err(SendError::NotConnected);
        };
        let link = c.link;
        self.push(Action::Transmit { link, frame: Frame::Ping(nonce) });
        Ok(())
    }

    /// The user ends the conversation (or cancels a dial in progress).
    pub fn disconnect(&mut self, now: Instant) -> Result<Name, DisconnectError> {
        match &mut self.state {
            State::Idle => Err(DisconnectError::NotConnected),
            State::Dialing { peer, link } => {
                let (peer, link) = (peer.clone(), *link);
                self.state = State::Idle;
                self.push(Action::DropLink { link });
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

    /// A display client showed these received messages to the user.
    pub fn handle_displayed(&mut self, ids: &[String]) {
        let shown: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut receipts = Vec::new();
        let mut kept = VecDeque::with_capacity(self.undisplayed.len());
        for u in self.undisplayed.drain(..) {
            if shown.contains(u.message.id.as_str()) {
                self.undisplayed_bytes -= u.message.text.len();
                receipts.push(u);
            } else {
                kept.push_back(u);
            }
        }
        self.undisplayed = kept;
        let current = match &self.state {
            State::Connected(c) => Some((c.peer.clone(), c.link)),
            _ => None,
        };
        let mut ids_for_peer = Vec::new();
        for u in receipts {
            self.push(Action::Persist(Record::State {
                peer: u.from.clone(),
                id: u.message.id.clone(),
                state: MessageState::Displayed,
            }));
            // A receipt can only travel on the link to its sender; once that
            // conversation is over the user has still seen it (history says
            // so) but the sender is not told.
            if current.as_ref().is_some_and(|(p, _)| *p == u.from) {
                ids_for_peer.push(u.message.id);
            }
        }
        if let (Some((_, link)), false) = (current, ids_for_peer.is_empty()) {
            self.push(Action::Transmit {
                link,
                frame: Frame::Receipt { ids: ids_for_peer, kind: ReceiptKind::Displayed },
            });
        }
    }

    /// Queues a message stored in an earlier run but never shown, so that
    /// the next display client shows it (oldest first: call in order).
    pub fn restore_undisplayed(&mut self, from: Name, message: Message) {
        self.queue_undisplayed(from, message);
    }

    /// Received messages not yet shown, oldest first, for a display client
    /// that just attached.
    pub fn undisplayed(&self) -> impl Iterator<Item = (&Name, &Message)> {
        self.undisplayed.iter().map(|u| (&u.from, &u.message))
    }

    /// A frame arrived on `link`.
    pub fn handle_frame(&mut self, link: LinkId, frame: Frame, now: Instant) {
        let State::Connected(c) = &mut self.state else {
            return;
        };
        if c.link != link {
            return;
        }
        match frame {
            Frame::Message(message) => self.on_message(message),
            Frame::Receipt { ids, kind } => self.on_receipt(ids, kind),
            Frame::Goodbye { .. } => self.on_goodbye(now),
            Frame::Ping(nonce) => self.push(Action::Transmit { link, frame: Frame::Pong(nonce) }),
            Frame::Pong(nonce) => self.push(Action::Emit(Event::Pong { nonce })),
        }
    }

    /// The link layer says `link` ended.
    pub fn handle_link_down(&mut self, link: LinkId, why: LinkDown) {
        match &self.state {
            State::Dialing { link: l, .. } if *l == link => {
                self.state = State::Idle;
                return;
            }
            State::Connected(c) if c.link == link => {}
            _ => return,
        }
        let State::Connected(c) = &self.state else {
            return;
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
            LinkDown::EndOfStream => {
                self.finish("link lost: the stream ended without a goodbye".into(), "link lost");
            }
            LinkDown::Error(e) => {
                let reason = format!("link lost: {e}");
                self.finish(reason.clone(), &reason);
            }
        }
    }

    /// Time passed; call at [`Session::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let State::Connected(c) = &self.state else {
            return;
        };
        if c.close_deadline.is_some_and(|d| now >= d) {
            let link = c.link;
            self.push(Action::DropLink { link });
            self.finish(
                "the goodbye was not answered in time".into(),
                "the conversation ended before it was delivered",
            );
        }
    }

    /// The daemon is shutting down: say goodbye if we can. The driver gives
    /// the close a moment and then drops the link.
    pub fn shutdown(&mut self, now: Instant) {
        match &self.state {
            State::Idle => {}
            State::Dialing { link, .. } => {
                let link = *link;
                self.state = State::Idle;
                self.push(Action::DropLink { link });
            }
            State::Connected(c) => {
                if !c.sent_goodbye {
                    if let State::Connected(c) = &mut self.state {
                        c.ended_by_us = !c.got_goodbye;
                    }
                    self.say_goodbye(now, "the peer's daemon stopped");
                }
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        let State::Connected(c) = &mut self.state else {
            return;
        };
        let link = c.link;
        if message.seq <= c.highest_seen {
            // Already stored and acknowledged; acknowledge again, show once.
            self.push(Action::Transmit {
                link,
                frame: Frame::Receipt { ids: vec![message.id], kind: ReceiptKind::Delivered },
            });
            return;
        }
        c.highest_seen = message.seq;
        let from = c.peer.clone();
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
        self.undisplayed.push_back(Undisplayed { from, message });
        while self.undisplayed_bytes > MAX_UNDISPLAYED_BYTES
            || self.undisplayed.len() > MAX_UNDISPLAYED_MESSAGES
        {
            match self.undisplayed.pop_front() {
                Some(old) => self.undisplayed_bytes -= old.message.text.len(),
                None => break,
            }
        }
    }

    fn on_receipt(&mut self, ids: Vec<String>, kind: ReceiptKind) {
        let State::Connected(c) = &mut self.state else {
            return;
        };
        let peer = c.peer.clone();
        let mut accepted = Vec::new();
        match kind {
            ReceiptKind::Delivered => {
                for id in ids {
                    if c.unacked_set.remove(&id) {
                        accepted.push(id);
                    }
                }
                if !accepted.is_empty() {
                    // Receipts come in sending order, so this is usually a
                    // pop from the front.
                    let set = &c.unacked_set;
                    c.unacked.retain(|id| set.contains(id));
                }
                for id in &accepted {
                    self.remember_awaiting_display(id.clone(), peer.clone());
                }
            }
            ReceiptKind::Displayed => {
                for id in ids {
                    // `displayed` may overtake `delivered` in a coalesced
                    // batch; it implies delivery.
                    if c.unacked_set.remove(&id) {
                        c.unacked.retain(|u| *u != id);
                        accepted.push(id);
                    } else if self.awaiting_display.remove(&id).is_some() {
                        accepted.push(id);
                    }
                }
            }
        }
        let state = match kind {
            ReceiptKind::Delivered => MessageState::Delivered,
            ReceiptKind::Displayed => MessageState::Displayed,
        };
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
        } else if c.role == Role::Dialer {
            let link = c.link;
            self.push(Action::CloseSend { link });
        }
    }

    /// Sends our goodbye; the dialer that has heard theirs already ends its
    /// half right after it.
    fn say_goodbye(&mut self, now: Instant, reason: &str) {
        let State::Connected(c) = &mut self.state else {
            return;
        };
        c.sent_goodbye = true;
        c.close_deadline = Some(now + CLOSE_TIMEOUT);
        let link = c.link;
        let close = c.got_goodbye && c.role == Role::Dialer;
        self.push(Action::Transmit { link, frame: Frame::Goodbye { reason: reason.to_owned() } });
        if close {
            self.push(Action::CloseSend { link });
        }
    }

    fn clean_end_reason(&self) -> String {
        match &self.state {
            State::Connected(c) if c.ended_by_us => "you ended the conversation".to_owned(),
            State::Connected(c) => format!("{} ended the conversation", c.peer),
            _ => String::new(),
        }
    }

    /// Ends the conversation: every unacknowledged message of ours fails,
    /// both users are told, and we are available again.
    fn finish(&mut self, reason: String, failed_reason: &str) {
        let State::Connected(c) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        for id in c.unacked {
            self.push(Action::Persist(Record::State {
                peer: c.peer.clone(),
                id: id.clone(),
                state: MessageState::Failed,
            }));
            self.push(Action::Emit(Event::Failed {
                peer: c.peer.clone(),
                id,
                reason: failed_reason.to_owned(),
            }));
        }
        self.push(Action::Emit(Event::Disconnected { peer: c.peer.clone(), reason }));
        self.push(Action::Presence(Presence::Available));
        self.last_peer = Some(c.peer);
    }

    fn start(&mut self, conversation: Conversation) {
        let peer = conversation.peer.clone();
        self.last_peer = Some(peer.clone());
        self.state = State::Connected(conversation);
        self.push(Action::Presence(Presence::Busy));
        self.push(Action::Emit(Event::Connected { peer }));
    }

    fn remember_awaiting_display(&mut self, id: String, peer: Name) {
        if self.awaiting_display_order.len() >= MAX_AWAITING_DISPLAY
            && let Some(old) = self.awaiting_display_order.pop_front()
        {
            self.awaiting_display.remove(&old);
        }
        self.awaiting_display_order.push_back(id.clone());
        self.awaiting_display.insert(id, peer);
    }

    fn new_link(&mut self) -> LinkId {
        let link = LinkId(self.next_link);
        self.next_link += 1;
        link
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }
}

#[cfg(test)]
mod tests;
