//! Why a callee refuses a dial, as both ends see it: a typed reason, and a
//! message for people. The callee turns a [`Refusal`] into the Converse
//! call's error status (its code, its message, and the reason encoded in
//! the details); the dialer reads the reason back from the details, never
//! from the words of the message.

use peerchat::v1 as pb;
use prost::Message as _;
use tonic::{Code, Status};

pub(crate) use pb::refusal::Reason;

/// A callee's refusal of a dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: Reason,
    /// For people: shown by the dialer, never parsed.
    pub(crate) message: String,
    /// For [`Reason::UnsupportedVersion`]: the version the callee speaks.
    pub(crate) version: u32,
}

impl Refusal {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into(), version: 0 }
    }

    /// The refusal of a Hello of another protocol version.
    pub(crate) fn version(theirs: u32, ours: u32) -> Refusal {
        Refusal {
            reason: Reason::UnsupportedVersion,
            message: format!("unsupported protocol version {theirs} (this peer speaks {ours})"),
            version: ours,
        }
    }

    /// The call's error status: the code says the kind of failure to any
    /// gRPC client, the details carry the reason for peerd.
    pub(crate) fn into_status(self) -> Status {
        let code = match self.reason {
            Reason::Busy
            | Reason::WrongPeer
            | Reason::NotAccepted
            | Reason::Ended
            | Reason::WindowPassed
            | Reason::NotHere
            | Reason::Crossed => Code::FailedPrecondition,
            Reason::Unverified => Code::PermissionDenied,
            Reason::CannotVerify | Reason::ShuttingDown => Code::Unavailable,
            Reason::UnsupportedVersion | Reason::BadHello | Reason::Yourself => {
                Code::InvalidArgument
            }
            Reason::TooManyDials => Code::ResourceExhausted,
            Reason::NoHello => Code::DeadlineExceeded,
            Reason::Unspecified => Code::Unknown,
        };
        let details = pb::Refusal { reason: self.reason as i32, version: self.version };
        Status::with_details(code, self.message, details.encode_to_vec().into())
    }

    /// The refusal a status carries. A status without one (a peer of an
    /// older version, a proxy, a transport failure) is
    /// [`Reason::Unspecified`]: shown, but decided on by nobody.
    pub(crate) fn from_status(status: &Status) -> Refusal {
        let details = pb::Refusal::decode(status.details()).unwrap_or_default();
        let message = if status.message().is_empty() {
            status.code().description().to_owned()
        } else {
            status.message().to_owned()
        };
        Refusal {
            reason: Reason::try_from(details.reason).unwrap_or(Reason::Unspecified),
            message,
            version: details.version,
        }
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        r.into_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_travels_in_the_details_not_the_words() {
        let sent = Refusal::new(Reason::Busy, "bob is in a meeting");
        let status = sent.clone().into_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(Refusal::from_status(&status), sent);
        // The same words without details decide nothing.
        let plain = Status::failed_precondition("bob is busy in another conversation");
        assert_eq!(Refusal::from_status(&plain).reason, Reason::Unspecified);
        // Garbage details are no reason either.
        let junk = Status::with_details(Code::Unknown, "x", vec![0xff, 0xff, 0xff].into());
        assert_eq!(Refusal::from_status(&junk).reason, Reason::Unspecified);
    }

    #[test]
    fn a_version_refusal_says_both_versions() {
        let r = Refusal::version(7, 2);
        let back = Refusal::from_status(&r.into_status());
        assert_eq!(back.reason, Reason::UnsupportedVersion);
        assert_eq!(back.version, 2);
        assert!(back.message.starts_with("unsupported protocol version 7"), "{}", back.message);
    }
}
