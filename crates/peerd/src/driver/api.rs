//! The driver's front door: the requests it takes and the answers it
//! gives, in types of their own. The control service depends on this
//! module and on nothing else of the driver; it turns these answers into
//! statuses in one place (`control/error.rs`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::session::{ConnectError, DisconnectError, Id, MessageState, Phase, SendError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use crate::consent::Policy;
use crate::link::dial::DialError;

/// Requests queued towards the driver at most.
pub(crate) const REQUEST_QUEUE: usize = 4096;

/// A channel to the driver.
pub(crate) type DriverTx = mpsc::Sender<Request>;

/// What to wait for after a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Delivered,
    Displayed,
}

/// What a `disconnect` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A conversation; its `disconnected` event says `reason`.
    Conversation { peer: Name, reason: String },
    /// A dial still in progress; no conversation had begun, so no
    /// `disconnected` event follows (the dial's `connect` says cancelled).
    Dial { peer: Name },
}

impl Ended {
    pub(crate) fn peer(&self) -> &Name {
        match self {
            Ended::Conversation { peer, .. } | Ended::Dial { peer } => peer,
        }
    }
}

/// The state `status` reports.
#[derive(Debug, Clone)]
pub(crate) struct SessionStatus {
    pub(crate) peer: Option<Name>,
    pub(crate) phase: Phase,
    pub(crate) unacknowledged: usize,
    pub(crate) last_peer: Option<Name>,
    pub(crate) policy: Policy,
    /// Peers asking to talk, oldest first, and when each request lapses
    /// (milliseconds since the Unix epoch).
    pub(crate) requests: Vec<(Name, i64)>,
}

/// Why `accept` or `reject` did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConsentFailed {
    /// No request from that peer (or, with `None`, none at all) waits.
    NoRequest(Option<Name>),
    /// The request was there, but we are in another conversation now (it
    /// is turned down as busy).
    Busy { with: Option<Name> },
}

/// What `block` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// The peer was blocked already.
    pub(crate) already: bool,
    /// It was the current peer: the conversation is ending.
    pub(crate) disconnected: bool,
}

/// Why a connect did not open a conversation.
#[derive(Debug)]
pub(crate) enum ConnectFailed {
    /// The session would not dial (already connected, yourself, ...).
    Session(ConnectError),
    /// The dial failed.
    Dial(DialError),
    /// A disconnect cancelled the dial before it finished.
    Cancelled {
        peer: Name,
    },
    /// The user blocked this peer.
    Blocked(Name),
    /// The conversation the dial was for ended before its link was back
    /// (a restored conversation whose window passed, a `disconnect`), or
    /// the session did not take the link.
    Ended {
        peer: Name,
    },
    ShuttingDown,
}

/// The first send of a `SendStream` the session refused. The stream ends
/// at that answer, so a later send of it that went out anyway would reach
/// the peer before the refused one and without its client ever learning
/// its id: from then on every send of the stream is refused the same way.
pub(crate) type StreamStop = Arc<OnceLock<SendError>>;

/// Why a sent message will never get the receipt waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undelivered {
    Failed {
        id: Id,
        reason: String,
    },
    /// Delivered, but the conversation ended before the peer's user saw
    /// it: `displayed` can no longer come (and it did not fail).
    NotDisplayed {
        id: Id,
        reason: String,
    },
    /// Not delivered, and not failed either: the conversation ended
    /// without failing its unacknowledged messages (a conversation
    /// restored after our restart that the peer no longer has), so the
    /// message waits for the next conversation with `peer` within the
    /// resume window.
    Kept {
        id: Id,
        peer: Name,
        reason: String,
    },
    ShuttingDown,
}

/// Who answered a ping, and how long it took.
pub(crate) type PingReply = oneshot::Sender<Result<(Name, Duration), SendError>>;

/// A sent message's final fate, for `send --wait`, and how long after its
/// hand-off to the link the receipt came.
pub(crate) type Outcome = Result<(MessageState, Duration), Undelivered>;

/// A watch client's events.
pub(crate) type EventRx = mpsc::Receiver<Result<pb::Event, Status>>;

/// Everything the driver is asked.
#[derive(Debug)]
pub(crate) enum Request {
    /// Answered when the dial succeeds or fails; the dial takes at most
    /// `DIAL_TIMEOUT`, so the answer always comes.
    Connect {
        name: Name,
        reply: oneshot::Sender<Result<Name, ConnectFailed>>,
    },
    Send {
        text: String,
        /// Answered with the new message's id at once.
        accepted: oneshot::Sender<Result<Id, SendError>>,
        /// Answered when the receipt waited for arrives (or never comes).
        wait: Option<(Wait, oneshot::Sender<Outcome>)>,
    },
    /// Sends of one `SendStream`, in order: each is noted on `notes` as
    /// accepted (or refused) at once, and settled when its receipt comes.
    SendBatch {
        sends: Vec<StreamSend>,
        notes: StreamTx,
        /// The stream's first refusal, shared by all its batches: once
        /// set, nothing more of the stream is sent (see [`StreamStop`]).
        stop: StreamStop,
    },
    Disconnect {
        reply: oneshot::Sender<Result<Ended, DisconnectError>>,
    },
    Status {
        reply: oneshot::Sender<SessionStatus>,
    },
    Watch {
        display: bool,
        reply: oneshot::Sender<EventRx>,
    },
    Displayed {
        ids: Vec<Id>,
    },
    /// One round trip to the peer; answered with the time it took.
    Ping {
        reply: PingReply,
    },
    /// Takes `name`'s request to talk (`None`: the oldest).
    Accept {
        name: Option<Name>,
        reply: oneshot::Sender<Result<Name, ConsentFailed>>,
    },
    /// Turns down `name`'s request (`None`: the oldest).
    Reject {
        name: Option<Name>,
        reply: oneshot::Sender<Result<Name, ConsentFailed>>,
    },
    /// Blocks `name` (on disk before the answer); `Err` says why it could
    /// not be stored.
    Block {
        name: Name,
        reply: oneshot::Sender<Result<Blocking, String>>,
    },
    /// Unblocks `name`: `Ok(false)` if it was not blocked.
    Unblock {
        name: Name,
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// The blocked names, sorted.
    Blocked {
        reply: oneshot::Sender<Vec<Name>>,
    },
}

/// What a `SendStream`'s answerer is told about one of its sends, by
/// number.
#[derive(Debug)]
pub(crate) enum StreamNote {
    /// By the stream's reader, before the driver sees them: sends `first`,
    /// `first + 1`, …, what each waits for, and for how long after `at`,
    /// when the reader took them. One note per batch, not per send.
    Queued { first: u64, waits: Vec<Option<(Wait, Duration)>>, at: Instant },
    /// By the reader: the request was bad; this ends the stream.
    Refused { seq: u64, status: Status },
    /// By the driver, for a batch: each send was taken, with this id, or
    /// refused.
    Accepted { results: Vec<(u64, Result<Id, SendError>)> },
    /// By the driver: the receipt waited for came, or never will.
    Settled { seq: u64, outcome: Outcome },
}

/// Where the driver notes what became of a stream's sends.
pub(crate) type StreamTx = mpsc::UnboundedSender<StreamNote>;

/// One send of a stream, as the driver gets it.
#[derive(Debug)]
pub(crate) struct StreamSend {
    pub(crate) seq: u64,
    pub(crate) text: String,
    pub(crate) wait: Option<Wait>,
}

/// A message state as the control API spells it.
pub(crate) fn wire_state(s: MessageState) -> pb::MessageState {
    match s {
        MessageState::Sent => pb::MessageState::Sent,
        MessageState::Delivered => pb::MessageState::Delivered,
        MessageState::Displayed => pb::MessageState::Displayed,
        MessageState::Failed => pb::MessageState::Failed,
    }
}
