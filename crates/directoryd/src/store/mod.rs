//! Where the directory's state lives: the [`Store`] trait, and its two
//! implementations.
//!
//! The service validates requests, proves claims and applies rate limits;
//! everything it must remember (nonces, name → key bindings, leases, the
//! presence feed) goes through this one front door, so the service does
//! not know whether it has the embedded store or Redis Cluster.
//!
//! - [`memory`]: the default. One process; bindings in `bindings.jsonl`.
//! - [`redis`]: any number of `directoryd` replicas over one Redis Cluster.
//!
//! Every invariant about names (the first key wins and keeps the name; the
//! same key takes over a live registration; a refused registration leaves
//! no binding) is one atomic step of [`Store::register`], which is why
//! binding and registering are one call and not two.

#[cfg(test)]
mod contract;
pub(crate) mod memory;
pub(crate) mod redis;

use std::fmt;

use peerchat_core::Name;
use peerchat_core::source::Source;
use tokio::sync::broadcast;

use crate::bindings::BindingsError;
use crate::model::{Change, Claim, Listing, Page, Presence, Refusal};

/// Challenge nonces, as drawn by the service.
pub(crate) type Nonce = [u8; peerchat_core::identity::NONCE_LEN];

/// Why a store could not answer. [`Refused`](StoreError::Refused) is an
/// answer about the request; the others are about the store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The shared store did not answer (in time), or answered with an
    /// error: the request may be retried, here or on another replica.
    #[error("directory store unavailable: {why}; retry")]
    Unavailable { why: String },
    /// A new binding was written but no replica of the store confirmed it,
    /// so it could still be lost; the retry finds it and waits again.
    #[error("directory store unavailable: the name binding is not yet durable; retry")]
    NotDurable,
    /// The embedded store's bindings file failed.
    #[error(transparent)]
    Bindings(#[from] BindingsError),
}

/// What [`Store::register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Registered {
    /// The name had no binding and is now bound to the claim's key.
    pub(crate) new_binding: bool,
}

/// What [`Store::renew`] left listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renewed {
    /// The presence listed now.
    pub(crate) presence: Presence,
    /// This renewal changed it (and so announced it to every watcher).
    pub(crate) changed: bool,
}

/// The directory's state. Implementations are cheap to share (`Arc`) and
/// answer each call within their own deadline: a call never hangs on a
/// store that stopped answering.
#[tonic::async_trait]
pub(crate) trait Store: Send + Sync + fmt::Debug + 'static {
    /// Records `nonce` as issued to `source`; it may be spent once within a
    /// minute, by a Register that reaches any replica. Never refused for
    /// want of room: a full table lets go the oldest nonce of the source
    /// holding the most ([`crate::challenges`]).
    async fn issue_nonce(&self, nonce: Nonce, source: Source) -> Result<(), StoreError>;

    /// Spends `nonce`: true if it was issued, unused and unexpired. It is
    /// gone afterwards either way.
    async fn consume_nonce(&self, nonce: &[u8]) -> Result<bool, StoreError>;

    /// Binds the name to the claim's key if it is free, and grants the
    /// lease, in one atomic step: refused with [`Refusal::Taken`] if the
    /// name is bound to, or live under, another key. A new binding is
    /// durable before this returns.
    async fn register(&self, claim: Claim) -> Result<Registered, StoreError>;

    /// Renews the lease on `name` and records `presence`, or keeps the
    /// listed one when it is `None` (the service's choice when the caller
    /// may not announce a change right now).
    /// [`Refusal::UnknownLease`] when the lease is gone: register again.
    async fn renew(
        &self,
        name: &Name,
        lease: &str,
        presence: Option<Presence>,
    ) -> Result<Renewed, StoreError>;

    /// Releases `name`; idempotent. [`Refusal::WrongLease`] if someone else
    /// holds it now.
    async fn unregister(&self, name: &Name, lease: &str) -> Result<(), StoreError>;

    /// The live registration of `name`, or [`Refusal::NotOnline`].
    async fn lookup(&self, name: &Name) -> Result<Listing, StoreError>;

    /// Up to `limit` live peers whose case-folded name sorts after `after`.
    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Page, StoreError>;

    /// Drops what has expired (registrations, nonces), announcing each
    /// registration that went. Called about once a second; reads never
    /// depend on it, only memory and the feed's `Down` events do.
    async fn sweep(&self);

    /// The presence feed from now on: every change to who is online, as
    /// seen by this replica, in order per name.
    fn changes(&self) -> broadcast::Receiver<Change>;
}

/// The feed's buffer per watcher. A watcher that falls further behind
/// gets [`Change::Resync`] and a fresh snapshot instead.
pub(crate) const FEED_CAPACITY: usize = 4096;
