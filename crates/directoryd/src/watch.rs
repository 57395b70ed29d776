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
//! silent gap. After a resync every watcher of the replica needs one at
//! once: those share one read of the store ([`snapshots`]); a new watcher,
//! or one that fell behind, pages through the store on its own as before.

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
use crate::wire::{peer, store_status};

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
    /// Must be called within the runtime: a task lets old snapshot reads
    /// go, until `stop`.
    pub(crate) fn new(max: usize, per_source: usize, stop: CancellationToken) -> Watchers {
        let snapshots = Arc::new(Snapshots::default());
        let expiring = Arc::downgrade(&snapshots);
        let stopped = stop.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(snapshots::KEEP);
            loop {
                tokio::select! {
                    () = stopped.cancelled() => return,
                    _ = beat.tick() => match expiring.upgrade() {
                        Some(snapshots) => snapshots.expire(),
                        None => return,
                    },
                }
            }
        });
        Watchers {
            permits: Arc::new(Semaphore::new(max)),
            per_source: PerSource::new(per_source),
            snapshots,
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
    let mut changes = store.changes();
    let mut read = Read::Own;
    loop {
        let sent = match read {
            Read::Own => snapshot(store.as_ref(), &tx).await,
            Read::Shared { since } => shared_snapshot(store.as_ref(), snapshots, since, &tx).await,
        };
        match sent {
            Ok(()) => {}
            Err(Stop::Gone) => return,
            Err(Stop::Failed(status)) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
        read = match deltas(&mut changes, &tx).await {
            Next::Gone => return,
            // The receiver goes on: it has every change since the resync,
            // so a read begun after the resync was announced misses none.
            Next::Resync { at } => Read::Shared { since: at },
            // It lost changes of its own: subscribe again, then read.
            Next::Lagged => {
                changes = store.changes();
                Read::Own
            }
        };
        tracing::debug!("a presence watcher gets a fresh snapshot");
    }
}

/// Where a watcher's next snapshot comes from.
enum Read {
    /// Paged through by this watcher alone (at most a page held at a
    /// time): a new watcher, or one that fell behind the feed.
    Own,
    /// Shared by the watchers that got the same resync, announced `since`.
    Shared { since: Instant },
}

/// Sends everyone online now, between SNAPSHOT_BEGIN and SNAPSHOT_END.
async fn snapshot(
    store: &dyn Store,
    tx: &mpsc::Sender<Result<pb::PeerEvent, Status>>,
) -> Result<(), Stop> {
    send(tx, event(pb::peer_event::Kind::SnapshotBegin, None)).await?;
    let mut after: Option<String> = None;
    // Bounded: each page moves `after` strictly forward through the names.
    loop {
        let page = store.list(after.as_deref(), SNAPSHOT_PAGE).await;
        let page = page.map_err(|err| Stop::Failed(store_status(err)))?;
        for listing in page.peers {
            send(tx, event(pb::peer_event::Kind::Online, Some(peer(listing)))).await?;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    send(tx, event(pb::peer_event::Kind::SnapshotEnd, None)).await
}

/// Sends everyone online, as read after `since`, between SNAPSHOT_BEGIN
/// and SNAPSHOT_END: one read for every watcher that needs one since then.
async fn shared_snapshot(
    store: &dyn Store,
    snapshots: &Snapshots,
    since: Instant,
    tx: &mpsc::Sender<Result<pb::PeerEvent, Status>>,
) -> Result<(), Stop> {
    let read = snapshots.take(store, since).await;
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
    /// The store lost track: a fresh snapshot, read after `at`.
    Resync {
        at: Instant,
    },
    /// This watcher fell behind the feed's buffer.
    Lagged,
}

/// Forwards changes until the watcher goes away or needs a new snapshot.
async fn deltas(
    changes: &mut broadcast::Receiver<Change>,
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
            Ok(Change::Resync { at }) => return Next::Resync { at },
            Err(broadcast::error::RecvError::Lagged(_)) => return Next::Lagged,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio_stream::StreamExt as _;

    use super::*;
    use crate::bindings::BindingStore;
    use crate::model::{Claim, Presence};
    use crate::store::memory::MemoryStore;

    /// A claim for `name`, all from one source and key (shared with
    /// [`super::snapshots`]'s tests).
    pub(super) fn claim(name: &str) -> Claim {
        Claim {
            name: peerchat_core::Name::parse(name).expect("a valid name"),
            address: "127.0.0.1:7400".to_owned(),
            presence: Presence::Available,
            public_key: [7; 32],
            lease_token: format!("lease of {name}"),
            source: Source::of(Some("10.0.0.1:1".parse().expect("an address"))),
            may_bind: true,
        }
    }

    /// The kinds and names of a watcher's events up to and including the
    /// first that `last` matches.
    async fn until(
        events: &mut PeerEvents,
        last: impl Fn(&pb::PeerEvent) -> bool,
    ) -> Vec<(pb::peer_event::Kind, String)> {
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
            let event = next.expect("an event in time").expect("the feed goes on").expect("ok");
            let name = event.peer.as_ref().map(|p| p.name.clone()).unwrap_or_default();
            seen.push((event.kind(), name));
            if last(&event) {
                return seen;
            }
        }
    }

    fn end(event: &pb::PeerEvent) -> bool {
        event.kind() == pb::peer_event::Kind::SnapshotEnd
    }

    #[tokio::test]
    async fn after_a_resync_the_watchers_share_one_read_and_miss_nothing() {
        let memory = Arc::new(MemoryStore::new(
            BindingStore::in_memory(),
            Duration::from_secs(60),
            usize::MAX,
        ));
        memory.register(claim("alice")).await.expect("alice registers");
        let store: Arc<dyn Store> = memory.clone();
        let watchers = Watchers::new(100, 100, CancellationToken::new());
        let mut feeds = Vec::new();
        for _ in 0..20 {
            let mut events = watchers.start(store.clone(), Source::of(None)).expect("watching");
            until(&mut events, end).await;
            feeds.push(events);
        }
        assert_eq!(watchers.snapshots.reads.load(Ordering::Relaxed), 0, "first ones page alone");
        memory.resync();
        memory.register(claim("bob")).await.expect("bob registers");
        for events in &mut feeds {
            let seen = until(events, end).await;
            assert!(seen.contains(&(pb::peer_event::Kind::Online, "alice".into())), "{seen:?}");
            // Bob came after the resync: maybe in the snapshot, and in any
            // case next (the subscription kept has his change).
            let next = until(events, |_| true).await;
            assert_eq!(next, [(pb::peer_event::Kind::Online, "bob".into())]);
        }
        let reads = watchers.snapshots.reads.load(Ordering::Relaxed);
        assert!(reads <= 2, "{reads} reads for 20 watchers after one resync");
        // And the feed goes on after the shared snapshot.
        memory.register(claim("carol")).await.expect("carol registers");
        for events in &mut feeds {
            let next = until(events, |_| true).await;
            assert_eq!(next, [(pb::peer_event::Kind::Online, "carol".into())]);
        }
    }
}
