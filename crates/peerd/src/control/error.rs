//! What a control request can fail with, and the one place each failure
//! becomes a gRPC `Status`. The messages carry the words of SPEC §2 that
//! scripts match on; the table test below pins them.

use peerchat_core::session::{ConnectError, DisconnectError, SendError};
use peerchat_core::{NameError, TextError};
use tonic::{Code, Status};

use crate::driver::api::{ConnectFailed, ConsentFailed, Undelivered};
use crate::link::dial::DialError;

/// Failures of control requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("{0} is not online")]
    NotOnline(String),
    /// Dialing the peer failed; the dial's error says how (its words are
    /// SPEC's: "not online", "busy", ...).
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("the connect to {0} was cancelled by disconnect")]
    Cancelled(String),
    #[error(
        "the conversation with {0} ended before its link was back (see its disconnected event)"
    )]
    Ended(String),
    #[error("already connected to {0}; disconnect first")]
    AlreadyConnected(String),
    /// A dial in progress counts as a conversation: the words are SPEC's
    /// for a connect while in one.
    #[error("already connected or connecting: dialing {0}; wait for it or disconnect first")]
    AlreadyConnecting(String),
    /// `connect` or `block` naming this daemon's own name; the words say
    /// which ("connect to", "block").
    #[error("you cannot {0} yourself")]
    Yourself(&'static str),
    #[error("not connected: {0}")]
    NotConnected(String),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("timed out after {after:?} waiting for message {id} to be {what} (it may still be)")]
    TimedOut { id: String, what: &'static str, after: std::time::Duration },
    #[error("timed out: {0}")]
    NoAnswer(String),
    #[error("message {id} failed: {reason}")]
    Failed { id: String, reason: String },
    #[error(
        "message {id} was delivered but not displayed: the conversation ended before it was shown ({reason})"
    )]
    NotDisplayed { id: String, reason: String },
    #[error(
        "message {id} was not delivered: the conversation ended first ({reason}); it is kept and \
         sent when you next connect to {peer}, if within the resume window (else it fails)"
    )]
    Kept { id: String, peer: String, reason: String },
    #[error("the directory is unreachable: {0}")]
    DirectoryUnreachable(String),
    #[error("too many messages waiting for receipts ({0}); wait for some to be delivered")]
    TooManyInFlight(usize),
    #[error("peerd is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    NoRequest(String),
    #[error("you blocked {0}; `chatctl unblock {0}` first")]
    Blocked(String),
    /// A request field out of bounds.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ConnectError> for ControlError {
    fn from(e: ConnectError) -> ControlError {
        match e {
            ConnectError::Yourself => ControlError::Yourself("connect to"),
            ConnectError::AlreadyConnected { peer } => {
                ControlError::AlreadyConnected(peer.to_string())
            }
            ConnectError::AlreadyConnecting { peer } => {
                ControlError::AlreadyConnecting(peer.to_string())
            }
        }
    }
}

impl From<ConnectFailed> for ControlError {
    fn from(e: ConnectFailed) -> ControlError {
        match e {
            ConnectFailed::Session(e) => e.into(),
            ConnectFailed::Dial(e) => e.into(),
            ConnectFailed::Cancelled { peer } => ControlError::Cancelled(peer.to_string()),
            ConnectFailed::ShuttingDown => ControlError::ShuttingDown,
            ConnectFailed::Blocked(peer) => ControlError::Blocked(peer.to_string()),
            ConnectFailed::Ended { peer } => ControlError::Ended(peer.to_string()),
        }
    }
}

impl From<ConsentFailed> for ControlError {
    fn from(e: ConsentFailed) -> ControlError {
        match e {
            ConsentFailed::NoRequest(None) => {
                ControlError::NoRequest("no request to talk is waiting".into())
            }
            ConsentFailed::NoRequest(Some(peer)) => {
                ControlError::NoRequest(format!("no request from {peer} is waiting"))
            }
            ConsentFailed::Busy { with: Some(peer) } => {
                ControlError::AlreadyConnected(peer.to_string())
            }
            ConsentFailed::Busy { with: None } => {
                ControlError::NotConnected("the request could not be taken".into())
            }
        }
    }
}

impl From<Undelivered> for ControlError {
    fn from(e: Undelivered) -> ControlError {
        match e {
            Undelivered::Failed { id, reason } => {
                ControlError::Failed { id: id.to_string(), reason }
            }
            Undelivered::NotDisplayed { id, reason } => {
                ControlError::NotDisplayed { id: id.to_string(), reason }
            }
            Undelivered::Kept { id, peer, reason } => {
                ControlError::Kept { id: id.to_string(), peer: peer.to_string(), reason }
            }
            Undelivered::ShuttingDown => ControlError::ShuttingDown,
        }
    }
}

/// The status code of a failed dial: what kind of failure it is to any
/// gRPC client (chatctl shows the message and exits 1 for all of them).
fn dial_code(e: &DialError) -> Code {
    match e {
        DialError::NotOnline(_) | DialError::Unreachable { .. } => Code::NotFound,
        DialError::Busy(_)
        | DialError::Ended { .. }
        | DialError::Crossed(_)
        | DialError::NotAccepted(_)
        | DialError::NoKey(_)
        | DialError::Version { .. } => Code::FailedPrecondition,
        DialError::KeyChanged(_) | DialError::WrongKey { .. } | DialError::Impostor { .. } => {
            Code::PermissionDenied
        }
        DialError::Refused { .. } => Code::Aborted,
        DialError::NoAnswer { .. } => Code::DeadlineExceeded,
        DialError::DirectoryUnreachable(_) | DialError::Broken { .. } => Code::Unavailable,
    }
}

impl From<SendError> for ControlError {
    fn from(e: SendError) -> ControlError {
        match e {
            SendError::Text(t) => ControlError::Text(t),
            SendError::TooManyInFlight(n) => ControlError::TooManyInFlight(n),
            SendError::NotConnected => ControlError::NotConnected("connect to a peer first".into()),
            SendError::Connecting { peer } => ControlError::NotConnected(format!(
                "still connecting to {peer}; send once the connect succeeds"
            )),
            SendError::Closing { peer } => {
                ControlError::NotConnected(format!("the conversation with {peer} is ending"))
            }
        }
    }
}

impl From<DisconnectError> for ControlError {
    fn from(_: DisconnectError) -> ControlError {
        ControlError::NotConnected("there is no conversation to end".into())
    }
}

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Status {
        let code = match &e {
            ControlError::NotOnline(_) => Code::NotFound,
            ControlError::Dial(e) => dial_code(e),
            ControlError::AlreadyConnected(_)
            | ControlError::AlreadyConnecting(_)
            | ControlError::NotConnected(_)
            | ControlError::Blocked(_) => Code::FailedPrecondition,
            ControlError::NoRequest(_) => Code::NotFound,
            ControlError::Yourself(_)
            | ControlError::Text(_)
            | ControlError::InvalidName(_)
            | ControlError::Invalid(_) => Code::InvalidArgument,
            ControlError::TimedOut { .. } | ControlError::NoAnswer(_) => Code::DeadlineExceeded,
            ControlError::Failed { .. }
            | ControlError::NotDisplayed { .. }
            | ControlError::Kept { .. }
            | ControlError::Cancelled(_)
            | ControlError::Ended(_) => Code::Aborted,
            ControlError::DirectoryUnreachable(_) | ControlError::ShuttingDown => Code::Unavailable,
            ControlError::TooManyInFlight(_) => Code::ResourceExhausted,
            ControlError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> peerchat_core::Name {
        peerchat_core::Name::parse("bob").expect("valid")
    }

    /// SPEC §2: the words scripts rely on, and the codes other clients see.
    #[test]
    fn every_spec_error_carries_its_words() {
        let table: Vec<(ControlError, Code, &str)> = vec![
            (ControlError::NotOnline("bob".into()), Code::NotFound, "not online"),
            (DialError::NotOnline(bob()).into(), Code::NotFound, "not online"),
            (
                DialError::Unreachable {
                    name: bob(),
                    address: "1.2.3.4:5".into(),
                    why: "refused".into(),
                }
                .into(),
                Code::NotFound,
                "not online",
            ),
            (DialError::Busy(bob()).into(), Code::FailedPrecondition, "busy"),
            (DialError::NotAccepted(bob()).into(), Code::FailedPrecondition, "bob did not accept"),
            (ConnectFailed::Blocked(bob()).into(), Code::FailedPrecondition, "you blocked bob"),
            (ConsentFailed::NoRequest(Some(bob())).into(), Code::NotFound, "no request from bob"),
            (
                ConnectFailed::Cancelled { peer: bob() }.into(),
                Code::Aborted,
                "cancelled by disconnect",
            ),
            (
                ConnectFailed::Ended { peer: bob() }.into(),
                Code::Aborted,
                "the conversation with bob ended before its link was back",
            ),
            (
                DialError::Version { name: bob(), theirs: 3, ours: 2 }.into(),
                Code::FailedPrecondition,
                "unsupported protocol version 3",
            ),
            (
                ControlError::AlreadyConnected("bob".into()),
                Code::FailedPrecondition,
                "already connected",
            ),
            (
                ConnectError::AlreadyConnecting { peer: bob() }.into(),
                Code::FailedPrecondition,
                "already connected",
            ),
            (ControlError::Yourself("block"), Code::InvalidArgument, "yourself"),
            (SendError::NotConnected.into(), Code::FailedPrecondition, "not connected"),
            (
                SendError::Connecting { peer: peerchat_core::Name::parse("bob").expect("a name") }
                    .into(),
                Code::FailedPrecondition,
                "not connected",
            ),
            (DisconnectError::NotConnected.into(), Code::FailedPrecondition, "not connected"),
            (
                ControlError::Text(TextError::TooLong { len: 70_000 }),
                Code::InvalidArgument,
                "too long",
            ),
            (
                ControlError::Text(TextError::TooLong { len: 70_000 }),
                Code::InvalidArgument,
                "65536",
            ),
            (ControlError::Text(TextError::Empty), Code::InvalidArgument, "empty"),
            (ControlError::InvalidName(NameError::Empty), Code::InvalidArgument, "invalid name"),
            (
                ControlError::TimedOut {
                    id: "x".into(),
                    what: "delivered",
                    after: std::time::Duration::from_secs(10),
                },
                Code::DeadlineExceeded,
                "timed out",
            ),
        ];
        for (err, code, words) in table {
            let status = Status::from(err.clone());
            assert_eq!(status.code(), code, "{err}");
            assert!(status.message().contains(words), "{:?} lacks {words:?}", status.message());
        }
    }
}
