//! `WatchPeers`: the presence feed, one task per watcher.
//!
//! A watcher first gets a snapshot (SNAPSHOT_BEGIN, an ONLINE event per
//! peer, SNAPSHOT_END), then every [`Change`] the store announces. The
//! task subscribes to the store's feed *before* it reads the snapshot, so
//! nothing that happens while it reads is missed; the changes that arrived
//! meanwhile are replayed after it, in order, which converges on the right
//! state (an ONLINE is an upsert, an OFFLINE a delete). When the watcher
//! falls behind the feed's buffer, or the store says it lost track
//! ([`Change::Resync`]), the watcher gets a fresh snapshot rather than a
//! silent gap. Watchers that need a snapshot at the same moment (all of
//! them, after a resync) share one read of the store ([`snapshots`]).

mod snapshots;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use peerchat::v1 as pb;
use peerchat_core::source::{PerSource, Source, SourceSlot};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use self::snapshots::Snapshots;
use crate::model::Change;
use crate::store::Store;
use crate::wire::peer;

/// Watchers served at once by one replica; each holds a task and a small
/// buffer. A directory with more users than this wants more replicas.
pub(crate) const MAX_WATCHERS: usize = 20_000;

/// Peers read from the store per step of a snapshot.
const SNAPSHOT_PAGE: usize = 1000;

/// Events buffered per watcher before its task waits for it to read.
const BUFFER: usize = 256;

/// The stream a `WatchPeers` call answers with.
pub(crate) type PeerEvents = Pin<Box<dyn Stream<Item = Result<pb::PeerEvent, Status>> + Send>>;

/// The watchers of one directory: their bound, in all and per source, and
/// the shutdown that ends them (so that a graceful stop does not wait for
/// every watcher to hang up).
#[derive(Debug, Clone)]
pub(crate) struct Watchers {
    permits: Arc<Semaphore>,
    /// A source may watch as often as it may register: one watcher per
    /// peer. Without it one host could hold every watcher slot (a watcher
    /// that never reads still holds its own).
    per_source: PerSource,
    snapshots: Arc<Snapshots>,
    stop: CancellationToken,
}

impl Watchers {
    pub(crate) fn new(max: usize, per_source: usize, stop: CancellationToken) -> Watchers {
        Watchers {
            permits: Arc::new(Semaphore::new(max)),
            per_source: PerSource::new(per_source),
            snapshots: Arc::new(Snapshots::default()),
            stop,
        }
    }

    /// Starts feeding a new watcher from `source`, or refuses when there
    /// are too many, from it or in all.
    pub(crate) fn start(
        &self,
        store: Arc<dyn Store>,
        source: Source,
    ) -> Result<PeerEvents, Status> {
        let mine = self.per_source.try_take(source).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many presence watchers from {source}: at most {}",
                self.per_source.max()
            ))
        })?;
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("too many presence watchers on this directory; try later")
        })?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let stop = self.stop.clone();
        let snapshots = self.snapshots.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = feed(store, &snapshots, tx, (permit, mine)) => {}
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Why a feed stopped.
enum Stop {
    /// The watcher went away, or the store's feed closed.
    Gone,
    /// A snapshot could not be read.
    Failed(Status),
}

/// Feeds one watcher until it goes away; holds `_slots` that long.
async fn feed(
    store: Arc<dyn Store>,
    snapshots: &Snapshots,
    tx: mpsc::Sender<Result<pb::PeerEvent, Status>>,
    _slots: (OwnedSemaphorePermit, SourceSlot),
) {
    loop {
        let changes = store.changes();
        let subscribed = Instant::now();
        match snapshot(store.as_ref(), snapshots, subscribed, &tx).await {
            Ok(()) => {}
            Err(Stop::Gone) => return,
            Err(Stop::Failed(status)) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
        match deltas(changes, &tx).await {
            Next::Gone => return,
            Next::Resync => tracing::debug!("a presence watcher gets a fresh snapshot"),
        }
    }
}

/// Sends everyone online, as read since `subscribed`, between
/// SNAPSHOT_BEGIN and SNAPSHOT_END.
async fn snapshot(
    store: &dyn Store,
    snapshots: &Snapshots,
    subscribed: Instant,
    tx: &mpsc::Sender<Result<pb::PeerEvent, Status>>,
) -> Result<(), Stop> {
    let read = snapshots.take(store, subscribed).await;
    let everyone = match read.get() {
        Some(Ok(everyone)) => everyone,
        Some(Err(status)) => return Err(Stop::Failed(status.clone())),
        None => return Err(Stop::Failed(Status::internal("a snapshot read did not finish"))),
    };
    send(tx, event(pb::peer_event::Kind::SnapshotBegin, None)).await?;
    for listing in everyone {
        send(tx, event(pb::peer_event::Kind::Online, Some(peer(listing.clone())))).await?;
    }
    send(tx, event(pb::peer_event::Kind::SnapshotEnd, None)).await
}

/// What a watcher needs after its deltas stop.
enum Next {
    Gone,
    Resync,
}

/// Forwards changes until the watcher goes away or needs a new snapshot.
async fn deltas(
    mut changes: broadcast::Receiver<Change>,
    tx: &mpsc::Sender<Result<pb::PeerEvent, Status>>,
) -> Next {
    loop {
        let change = tokio::select! {
            () = tx.closed() => return Next::Gone,
            change = changes.recv() => change,
        };
        let event = match change {
            Ok(Change::Up(listing)) => event(pb::peer_event::Kind::Online, Some(peer(listing))),
            Ok(Change::Down { name }) => {
                let gone = pb::Peer { name, ..pb::Peer::default() };
                event(pb::peer_event::Kind::Offline, Some(gone))
            }
            Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                return Next::Resync;
            }
            Err(broadcast::error::RecvError::Closed) => return Next::Gone,
        };
        if send(tx, event).await.is_err() {
            return Next::Gone;
        }
    }
}

fn event(kind: pb::peer_event::Kind, peer: Option<pb::Peer>) -> pb::PeerEvent {
    pb::PeerEvent { kind: kind.into(), peer }
}

async fn send(
    tx: &mpsc::Sender<Result<pb::PeerEvent, Status>>,
    event: pb::PeerEvent,
) -> Result<(), Stop> {
    tx.send(Ok(event)).await.map_err(|_| Stop::Gone)
}
