//! Who is online, followed live for the control clients that ask for it
//! (`chatctl watch`, `chatctl list --watch`).
//!
//! # Parts
//! - [`Roster`]: the handle the control service holds; [`Roster::subscribe`]
//!   is the only way in.
//! - `feed`: the one task that owns the directory's WatchPeers stream (or,
//!   from a directory without it, polls List), reconnects with backoff and
//!   moves on to the next replica.
//! - `known`: the sans-IO state: who is known online, snapshot diffing, and
//!   the [`Change`]s to tell.
//!
//! # Lifetime
//! The feed runs only while some local client listens: the first
//! subscription starts it, and it stops when the last one is dropped (or on
//! shutdown), closing its stream to the directory. A directory with 100,000
//! peers each holding a stream for nothing would pay for it; a daemon
//! nobody watches has no use for the feed. What it knew is forgotten when
//! it stops; the next start begins with a fresh snapshot.
//!
//! The state lives behind a mutex the feed holds only to apply an event
//! and broadcast what it changed, so that a new subscriber takes the list
//! and its place in the broadcast at one instant: it misses no change and
//! sees none twice.

mod feed;
pub(crate) mod known;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use peerchat::v1 as pb;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

pub(crate) use known::{Change, checked};

use crate::directory::Directories;

/// Updates buffered per subscriber. One that falls further behind is told
/// so (and its stream ends) rather than shown a wrong list.
const BROADCAST_CAPACITY: usize = 4096;

/// How often a directory without WatchPeers is asked for its whole list:
/// the same ttl/3 a registration is renewed at with the default `--ttl`.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// What subscribers are told.
#[derive(Debug, Clone)]
pub(crate) enum Update {
    Change(Change),
    /// No replica could be reached (a whole round of them failed) before
    /// the first snapshot: subscribers waiting for one need not wait.
    Unreachable(String),
}

/// The presence feed's handle; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Roster {
    shared: Arc<Mutex<Option<Live>>>,
    directories: Directories,
    poll_interval: Duration,
    /// See [`known::RESYNC_GRACE`]; shorter in tests.
    resync_grace: Duration,
    shutdown: CancellationToken,
}

/// The running feed's state, `None` in [`Roster::shared`] while no feed
/// runs.
#[derive(Debug)]
struct Live {
    tx: broadcast::Sender<Update>,
    known: known::Known,
}

/// Why a subscription cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShuttingDown;

impl Roster {
    pub(crate) fn new(
        directories: Directories,
        poll_interval: Duration,
        shutdown: CancellationToken,
    ) -> Roster {
        let resync_grace = known::RESYNC_GRACE;
        Roster { shared: Arc::default(), directories, poll_interval, resync_grace, shutdown }
    }

    /// This roster, holding peers missing from a fresh snapshot for
    /// `grace` instead of [`known::RESYNC_GRACE`].
    #[cfg(test)]
    pub(crate) fn with_resync_grace(mut self, grace: Duration) -> Roster {
        self.resync_grace = grace;
        self
    }

    /// Starts listening: starts the feed if it is not running. Updates come
    /// through the subscription until it is dropped.
    pub(crate) fn subscribe(&self) -> Result<Subscription, ShuttingDown> {
        if self.shutdown.is_cancelled() {
            return Err(ShuttingDown);
        }
        let mut shared = lock(&self.shared);
        let live = match &mut *shared {
            Some(live) => live,
            None => {
                let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
                let task = feed::Feed {
                    shared: self.shared.clone(),
                    tx: tx.clone(),
                    directories: self.directories.clone(),
                    poll_interval: self.poll_interval,
                };
                tokio::spawn(task.run(self.shutdown.clone()));
                shared.insert(Live { tx, known: known::Known::new(self.resync_grace) })
            }
        };
        Ok(Subscription {
            updates: live.tx.subscribe(),
            now: live.known.is_synced().then(|| live.known.list()),
        })
    }
}

/// One local client's view of the feed.
#[derive(Debug)]
pub(crate) struct Subscription {
    updates: broadcast::Receiver<Update>,
    /// Everyone online when it subscribed, if the feed knew already.
    now: Option<Arc<[pb::Peer]>>,
}

impl Subscription {
    /// Everyone online as of this subscription: at once if the feed knew,
    /// else when its first snapshot arrives, up to `limit`. `Err` with the
    /// reason when the directory could not be reached first.
    pub(crate) async fn synced(&mut self, limit: Duration) -> Result<Arc<[pb::Peer]>, String> {
        if let Some(now) = self.now.take() {
            return Ok(now);
        }
        let wait = async {
            loop {
                match self.updates.recv().await {
                    Ok(Update::Change(Change::Synced(peers))) => return Ok(peers),
                    Ok(Update::Unreachable(why)) => return Err(why),
                    // Changes come only after the first Synced.
                    Ok(Update::Change(_)) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return Err("peerd is shutting down".to_owned()),
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(result) => result,
            Err(_) => Err(format!("no list of peers from the directory within {limit:?}")),
        }
    }

    /// The next change, or `None` once the feed has stopped (shutdown).
    /// [`Lagged`] when this subscriber fell so far behind that changes were
    /// lost.
    pub(crate) async fn next(&mut self) -> Result<Option<Change>, Lagged> {
        loop {
            match self.updates.recv().await {
                Ok(Update::Change(change)) => return Ok(Some(change)),
                Ok(Update::Unreachable(_)) => {}
                Err(RecvError::Lagged(_)) => return Err(Lagged),
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }
}

/// A subscriber missed changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lagged;

/// The state is plain data that every holder leaves consistent before it
/// can panic, so a poisoned lock is still good to use.
fn lock(shared: &Mutex<Option<Live>>) -> MutexGuard<'_, Option<Live>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
