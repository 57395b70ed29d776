//! The directory's vocabulary, shared by the service and every store: who
//! claims a name, how a peer is listed, a page of the list, a change to
//! announce to watchers, and the typed refusals a store may answer with.
//!
//! A leaf module: it depends on nothing else in the crate but the
//! [`Source`] a claim comes from and the [`PublicKey`] it proves, so the
//! stores and the service can all depend on it without depending on each
//! other.

use peerchat_core::Name;

pub(crate) use crate::proof::PublicKey;
pub(crate) use peerchat_core::source::Source;

/// What a peer says about itself to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    Available,
    Busy,
}

/// A claim on a name, already validated and proven by the service.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) name: Name,
    /// `host:port` to list.
    pub(crate) address: String,
    pub(crate) presence: Presence,
    /// The key that proved possession (and to which the name is bound).
    pub(crate) public_key: PublicKey,
    /// Chosen by the service so that stores need no randomness.
    pub(crate) lease_token: String,
    /// Where the registration came from, for the cap per source.
    pub(crate) source: Source,
    /// The source may bind a name nobody owns yet (its quota of new names
    /// is not spent): else only a name the key already owns is claimed.
    pub(crate) may_bind: bool,
}

/// One peer as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    /// As registered (original case).
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) presence: Presence,
    pub(crate) public_key: PublicKey,
}

/// One page of a list, in case-folded name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) peers: Vec<Listing>,
    /// The case-folded name to continue after; `None` on the last page.
    pub(crate) next: Option<String>,
}

/// A change in who is online, for the presence feed (`WatchPeers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Registered, re-registered (address or key may be new) or changed
    /// status: the listing as it now is.
    Up(Listing),
    /// Unregistered or expired; the name as it was registered.
    Down { name: String },
    /// Changes may have been missed (a gap in a store's sequence, a
    /// subscription rebuilt): watchers must take a fresh snapshot, read
    /// after `at`, when this was announced.
    Resync { at: std::time::Instant },
}

impl Change {
    /// A resync announced now.
    pub(crate) fn resync() -> Change {
        Change::Resync { at: std::time::Instant::now() }
    }
}

/// Why a store refused an operation: answers about the request, the same
/// whatever store holds the directory. The messages carry the words the
/// SPEC promises to scripts (`taken`, `not online`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("name {name} is taken: it is bound to another key")]
    Taken { name: String },
    #[error("too many registrations from {from} (at most {max}); unregister some first")]
    TooManyFromSource { from: Source, max: usize },
    #[error(
        "too many new names from {from} today; register a name your key already owns, or try again later"
    )]
    NewNames { from: Source },
    #[error("no registration for {name} with that lease; register again")]
    UnknownLease { name: String },
    #[error("{name} is held with a different lease")]
    WrongLease { name: String },
    #[error("{name} is not online")]
    NotOnline { name: String },
    #[error("the directory holds its maximum of {max} name bindings; no new name can be claimed")]
    Full { max: usize },
}
