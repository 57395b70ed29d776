//! The store's answers on the wire: a listing as a `pb::Peer`, and the
//! one mapping from a [`StoreError`] to a gRPC status. A leaf shared by the
//! service and the presence feed, so neither depends on the other.

use peerchat::v1 as pb;
use prost::Message as _;
use tonic::{Code, Status};

use crate::bindings::BindingsError;
use crate::model::{Listing, Presence, Refusal};
use crate::store::StoreError;

/// The one mapping from a store's answer to a gRPC status. A store that
/// cannot answer is UNAVAILABLE, never NOT_FOUND: peerd takes NOT_FOUND to
/// mean "register again", and retries UNAVAILABLE with backoff.
pub(crate) fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::Refused(refusal) => refusal_status(refusal),
        // Why is for the operator's log (Redis answers name nodes, slots
        // and OS errors), not the caller.
        StoreError::Unavailable { why } => {
            tracing::debug!(%why, "the store cannot answer");
            Status::unavailable("directory store unavailable; retry")
        }
        StoreError::NotDurable => Status::unavailable(err.to_string()),
        StoreError::Bindings(BindingsError::Closed) => {
            Status::unavailable(BindingsError::Closed.to_string())
        }
        // The path and OS error are for the operator's log, not the caller.
        StoreError::Bindings(err) => {
            tracing::error!(%err, "cannot record a name binding");
            Status::internal("cannot record the name binding durably; try again later")
        }
    }
}

fn refusal_status(err: Refusal) -> Status {
    let code = match err {
        Refusal::Taken { .. } => Code::AlreadyExists,
        Refusal::TooManyFromSource { .. } | Refusal::NewNames { .. } | Refusal::Full { .. } => {
            Code::ResourceExhausted
        }
        Refusal::UnknownLease { .. } | Refusal::NotOnline { .. } => Code::NotFound,
        Refusal::WrongLease { .. } => Code::PermissionDenied,
    };
    let reason = match err {
        Refusal::NewNames { .. } => pb::directory_refusal::Reason::NewNameQuota,
        _ => return Status::new(code, err.to_string()),
    };
    let details = pb::DirectoryRefusal { reason: reason.into() };
    Status::with_details(code, err.to_string(), details.encode_to_vec().into())
}

pub(crate) fn status(presence: Presence) -> pb::PeerStatus {
    match presence {
        Presence::Available => pb::PeerStatus::Available,
        Presence::Busy => pb::PeerStatus::Busy,
    }
}

pub(crate) fn peer(listing: Listing) -> pb::Peer {
    pb::Peer {
        name: listing.name,
        address: listing.address,
        status: status(listing.presence).into(),
        public_key: listing.public_key.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;

    #[test]
    fn registry_errors_map_to_the_promised_codes_and_words() {
        let name = "bob".to_owned();
        let table = [
            (Refusal::Taken { name: name.clone() }, Code::AlreadyExists, "taken"),
            (
                Refusal::TooManyFromSource {
                    from: Source::of(Some("10.0.0.1:9".parse().unwrap())),
                    max: 3,
                },
                Code::ResourceExhausted,
                "too many registrations from 10.0.0.1",
            ),
            (Refusal::UnknownLease { name: name.clone() }, Code::NotFound, "register again"),
            (Refusal::NotOnline { name: name.clone() }, Code::NotFound, "not online"),
            (Refusal::WrongLease { name }, Code::PermissionDenied, "different lease"),
        ];
        for (err, code, words) in table {
            let s = refusal_status(err);
            assert_eq!(s.code(), code);
            assert!(s.message().contains(words), "{:?} lacks {words:?}", s.message());
            if code != Code::ResourceExhausted {
                assert!(s.message().contains("bob"), "{}", s.message());
            }
        }
    }

    #[test]
    fn an_unavailable_store_says_so_without_its_insides() {
        let why = "listing: Moved: 743 127.0.0.1:35357".to_owned();
        let s = store_status(StoreError::Unavailable { why });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "directory store unavailable; retry");
        let s = store_status(StoreError::NotDurable);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("not yet durable"), "{}", s.message());
    }
}
