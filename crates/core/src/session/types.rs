//! The vocabulary of the session: what goes in, what comes out, and the
//! limits that keep it bounded.

use std::sync::Arc;
use std::time::Duration;

use crate::name::Name;
use crate::text::TextError;

/// How long a goodbye may take before the link is dropped regardless.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How many received-but-unshown message texts are kept for the next
/// display client, by bytes. Past this the oldest are dropped from memory
/// (they stay in the history file) so an unwatched daemon stays bounded.
/// Small on purpose: a daemon's memory under load is mostly this backlog
/// (measured by `scripts/bench`), and ten thousand unseen messages is more
/// than anyone reads as "new" rather than in `history`.
pub const MAX_UNDISPLAYED_BYTES: usize = 4 * 1024 * 1024;

/// And by count, for many tiny messages.
pub const MAX_UNDISPLAYED_MESSAGES: usize = 10_000;

/// How many of our messages may wait for `delivered` at once; `send`
/// refuses more, which is the back-pressure that keeps a stalled peer from
/// making us buffer without end.
pub const MAX_UNACKED: usize = 10_000;

/// How many delivered-but-not-yet-displayed ids of ours are remembered, so
/// that a `displayed` receipt is believed only for a message we sent: as
/// many as the peer can hold unshown, plus what may be in flight.
pub const MAX_AWAITING_DISPLAY: usize = MAX_UNDISPLAYED_MESSAGES + MAX_UNACKED;

/// And by bytes: a conversation keeps the texts it may have to send again.
pub const MAX_UNACKED_BYTES: usize = 32 * 1024 * 1024;

/// How many received message ids are remembered per peer, to recognise a
/// message sent again after a lost link (or a restart). More than can be
/// unacknowledged at once.
pub const MAX_SEEN_IDS: usize = 2 * MAX_UNACKED;

/// The default `--resume-window`: how long a lost link may take to come
/// back before the conversation ends.
pub const DEFAULT_RESUME_WINDOW: Duration = Duration::from_secs(30);

/// Redial backoff after a lost link: first attempt at once, then from this,
/// doubling...
pub const REDIAL_INITIAL: Duration = Duration::from_millis(250);
/// ...up to this.
pub const REDIAL_MAX: Duration = Duration::from_secs(2);

/// How long a link that came back must last to earn a new resume window
/// when it is lost again. One lost sooner keeps the window (and the redial
/// backoff) it came back from: a link that breaks at once each time (a
/// peer that resets it, a disk that cannot take what it carries) would
/// otherwise keep a conversation reconnecting for ever, redialing at once.
pub const PROVEN_AFTER: Duration = Duration::from_secs(5);

/// The longest message id accepted from a peer.
pub const MAX_ID_LEN: usize = 64;

/// The most ids one receipt frame may carry. The session packs receipts of
/// one kind that are queued in a row into one frame (a burst of received
/// messages is acknowledged with one frame, not one each), and splits at
/// this so the peer's link layer, which refuses bigger receipts as a
/// protocol violation, accepts every frame. A frame of this many ids of
/// [`MAX_ID_LEN`] bytes (66 each on the wire) stays within the link's
/// frame limit (a message's 65,536 bytes and 1 KiB); it was 4,096, whose
/// frame tonic refused to send once the ids passed about 1,950.
pub const MAX_RECEIPT_IDS: usize = 1000;

/// The most ids a receipt frame from a peer may carry: what earlier
/// versions sent (they split at 4,096), so that talking to one does not
/// break the link. The frame's byte limit bounds it in any case.
pub const MAX_RECEIPT_IDS_TAKEN: usize = 4096;

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

/// A message id. Shared, not copied: one id is held by the outbox, the
/// history line, the receipt and the event at once, and a clone is a
/// reference count rather than an allocation per holder.
pub type Id = Arc<str>;

/// A message text, shared for the same reason (the outbox keeps it to send
/// again while the frame and the history line are made from it).
pub type Text = Arc<str>;

/// A message on the wire, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: Id,
    pub text: Text,
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

impl From<ReceiptKind> for MessageState {
    /// The state a message reaches with this receipt.
    fn from(kind: ReceiptKind) -> MessageState {
        match kind {
            ReceiptKind::Delivered => MessageState::Delivered,
            ReceiptKind::Displayed => MessageState::Displayed,
        }
    }
}

/// Frames of a link. The dialer's Hello is read by the link layer. The
/// callee's answer to it, [`Frame::Welcome`] with the callee's registered
/// spelling of its name, is the first frame the session transmits on a link
/// it accepted; only the dialer's handshake reads it, so a session that
/// receives one treats it as a protocol violation. Everything after is the
/// conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Welcome { name: Name },
    Message(Message),
    Receipt { ids: Vec<Id>, kind: ReceiptKind },
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
    State { peer: Name, id: Id, state: MessageState },
    /// The conversation this daemon would redial if it restarted now: the
    /// one it is the dialer of, or none. See
    /// [`Session::restore_conversation`](super::Session::restore_conversation).
    Resumable { peer: Option<Name> },
}

/// Things the user (watch and chat clients) is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message {
        from: Name,
        message: Message,
    },
    Receipt {
        peer: Name,
        id: Id,
        kind: ReceiptKind,
    },
    Connected {
        peer: Name,
    },
    Disconnected {
        peer: Name,
        reason: String,
    },
    /// The link failed without a goodbye; the conversation is reconnecting.
    LinkLost {
        peer: Name,
        reason: String,
    },
    /// The link is back; unacknowledged messages are being sent again.
    Resumed {
        peer: Name,
    },
    Failed {
        peer: Name,
        id: Id,
        reason: String,
    },
    Pong {
        nonce: u64,
    },
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
    /// The user cancelled the dial on `link`. Should it still reach the
    /// callee, which then waits for us, the driver says goodbye on it
    /// rather than leave the callee waiting a resume window for a redial
    /// that never comes; a dial whose callee is still asking its user is
    /// dropped (the request is withdrawn).
    HangUp {
        link: LinkId,
    },
    /// Dial `peer` again, on `link`, to resume the conversation; report back
    /// with `handle_dialed` or `handle_dial_failed`. `kind` is never
    /// [`DialKind::Fresh`].
    Redial {
        link: LinkId,
        peer: Name,
        kind: DialKind,
    },
    /// The user's `connect` whose dial was `link` is answered without that
    /// dial: the peer was dialing us at the same moment (see
    /// [`Session::handle_hello`](super::Session::handle_hello)).
    Crossed {
        link: LinkId,
        outcome: Crossing,
    },
    Persist(Record),
    Emit(Event),
    Presence(Presence),
}

/// What a dial is for, as its Hello says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialKind {
    /// Its user ran `connect`.
    Fresh,
    /// It resumes a conversation whose link was lost.
    Redial,
    /// It resumes a conversation the dialer's daemon had before it
    /// restarted: only a callee still in that conversation takes it (an
    /// idle one would otherwise start a conversation nobody asked for).
    AfterRestart,
}

impl DialKind {
    pub fn is_redial(self) -> bool {
        self != DialKind::Fresh
    }
}

/// How a `connect` to the peer of a conversation restored after our
/// restart is answered (see
/// [`Session::connect_restored`](super::Session::connect_restored)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRestored {
    /// The conversation is on again: that is the answer.
    Live,
    /// It is still reconnecting: the driver dials on this link now, and
    /// the dial's outcome is the answer.
    Dial(LinkId),
}

/// How a `connect` whose dial crossed the peer's own dial ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crossing {
    /// The peer's dial is the conversation.
    Connected(Name),
    /// Ours lost, and the peer's did not come within
    /// [`CROSSED_WAIT`](crate::timeouts::CROSSED_WAIT).
    NotCalled(Name),
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
    /// A dial in progress counts as a conversation (the control error
    /// carries SPEC's words for it, "already connected").
    #[error("already connecting to {peer}; wait for it or disconnect first")]
    AlreadyConnecting { peer: Name },
}

/// How a conversation a redial asks for ended on the callee's side: what
/// the dialer, which could not be told then, is told now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EndedHow {
    /// Its user ran `disconnect` while the link was down.
    #[error("ended the conversation while the link was down")]
    ByUser,
    /// Its resume window passed before the link came back.
    #[error("stopped waiting for the link: its resume window passed")]
    WindowPassed,
    /// The dialer restarted and the callee has no conversation with it.
    #[error("has no conversation with you to resume")]
    NotHere,
}

/// Refusals of an inbound Hello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error("{me} is busy in another conversation")]
    Busy { me: Name },
    #[error("a peer cannot connect to itself")]
    Yourself,
    /// A redial of a conversation that ended here while its link was down
    /// (or, after the dialer's restart, that we do not have).
    #[error("{me} {how}")]
    Ended { me: Name, how: EndedHow },
    /// We are dialing the dialer at the same moment, and our dial wins.
    #[error("{me} is dialing you at the same moment; take that call")]
    Crossed { me: Name },
}

/// Refusals of `send`, `disconnect` and friends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("not connected: connect to a peer first")]
    NotConnected,
    /// A dial is in progress (the callee's user may be being asked).
    #[error("not connected yet: still connecting to {peer}")]
    Connecting { peer: Name },
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
    Reconnecting,
    Closing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Reconnecting => "reconnecting",
            Phase::Closing => "closing",
        }
    }
}
