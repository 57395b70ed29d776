//! One read of everyone online, shared by the watchers that need it after
//! the same resync.
//!
//! A resync from the store (a failover, a gap in a bucket's events, the
//! subscriber reconnecting) sends every watcher of a replica for a fresh
//! snapshot at once: up to [`super::MAX_WATCHERS`] full lists, each of
//! them a whole pass over the store, all on the connections that
//! heartbeats use. Instead, a watcher takes the latest read if it started
//! after the resync was announced (each watcher still has every change
//! since then in its receiver, so nothing is missed), and starts a new one
//! otherwise. A read holds the whole list, once for all who share it: for
//! [`KEEP`] after it started (the watchers of one resync take it within
//! that, one after another), and after that while a watcher still sends
//! from it.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tonic::Status;

use super::SNAPSHOT_PAGE;
use crate::lock;
use crate::model::Listing;
use crate::store::Store;
use crate::wire::store_status;

/// How long a read is kept for the watchers of its resync.
pub(crate) const KEEP: Duration = Duration::from_secs(10);

/// What one read gave: everyone online, in name order, or why not.
pub(crate) type Read = Result<Vec<Listing>, Status>;

/// One read, done or under way.
pub(crate) type Shared = Arc<OnceCell<Read>>;

/// The latest read and when it started: held for [`KEEP`], then only while
/// a watcher holds it.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    latest: Mutex<Option<(Instant, Latest)>>,
    /// Reads of the store made, for the tests.
    #[cfg(test)]
    pub(crate) reads: std::sync::atomic::AtomicUsize,
}

impl Snapshots {
    /// Everyone online, as read after `since` (when the resync was
    /// announced): the read under way or just done if it started after
    /// that, else a new one. Keep the result while sending from it, so
    /// that others can share it.
    pub(crate) async fn take(&self, store: &dyn Store, since: Instant) -> Shared {
        let shared = {
            let mut latest = lock(&self.latest);
            let now = Instant::now();
            let_go(&mut latest, now);
            let valid = latest.as_ref().filter(|(started, _)| *started >= since);
            // A read that failed is not shared on: the store may be back.
            let ok = |read: &Shared| !matches!(read.get(), Some(Err(_)));
            match valid.and_then(|(_, held)| held.read()).filter(ok) {
                Some(read) => read,
                None => {
                    // Stamped before the read can start: it starts later
                    // (here, or in a caller that shares it, if this one is
                    // dropped first), never earlier.
                    let read: Shared = Arc::new(OnceCell::new());
                    *latest = Some((now, Latest::Kept(read.clone())));
                    read
                }
            }
        };
        shared.get_or_init(|| self.read(store)).await;
        shared
    }

    /// Lets the latest read go once [`KEEP`] has passed and no watcher
    /// holds it. Called every [`KEEP`] ([`super::Watchers::new`]): without
    /// it a read would stay until the next resync.
    pub(crate) fn expire(&self) {
        let_go(&mut lock(&self.latest), Instant::now());
    }

    async fn read(&self, store: &dyn Store) -> Read {
        #[cfg(test)]
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut everyone = Vec::new();
        let mut after: Option<String> = None;
        // Bounded: each page moves `after` strictly forward through the names.
        loop {
            let page = store.list(after.as_deref(), SNAPSHOT_PAGE).await.map_err(store_status)?;
            everyone.extend(page.peers);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(everyone),
            }
        }
    }
}

/// Holds the latest read only weakly once [`KEEP`] has passed.
fn let_go(latest: &mut Option<(Instant, Latest)>, now: Instant) {
    if let Some((started, held)) = latest.as_mut()
        && now.saturating_duration_since(*started) >= KEEP
        && let Latest::Kept(read) = held
    {
        *held = Latest::Held(Arc::downgrade(read));
    }
}

/// How the latest read is held.
#[derive(Debug)]
enum Latest {
    /// For the watchers of its resync, until [`KEEP`] has passed.
    Kept(Shared),
    /// By the watchers still sending from it, if any.
    Held(Weak<OnceCell<Read>>),
}

impl Latest {
    fn read(&self) -> Option<Shared> {
        match self {
            Latest::Kept(read) => Some(read.clone()),
            Latest::Held(read) => read.upgrade(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::bindings::BindingStore;
    use crate::store::memory::MemoryStore;
    use crate::watch::tests::claim;

    async fn store_with(n: usize) -> Arc<dyn Store> {
        let store =
            MemoryStore::new(BindingStore::in_memory(), Duration::from_secs(60), usize::MAX);
        for i in 0..n {
            store.register(claim(&format!("peer{i:04}"))).await.expect("registered");
        }
        Arc::new(store)
    }

    #[tokio::test]
    async fn watchers_after_the_same_resync_share_a_read() {
        let store = store_with(2_500).await;
        let snapshots = Snapshots::default();
        // As the watchers see it: one resync, announced before any of them
        // gets it; they ask one after another.
        let resync = Instant::now();
        let first = snapshots.take(store.as_ref(), resync).await;
        let mut held = vec![first.clone()];
        for _ in 0..100 {
            held.push(snapshots.take(store.as_ref(), resync).await);
        }
        assert_eq!(snapshots.reads.load(Ordering::Relaxed), 1, "one read for all");
        let everyone = first.get().expect("read").as_ref().expect("listed");
        assert_eq!(everyone.len(), 2_500, "every page");
        // A later resync needs a read of its own.
        let later = snapshots.take(store.as_ref(), Instant::now()).await;
        assert_eq!(snapshots.reads.load(Ordering::Relaxed), 2);
        // Kept for a while, and after that only while somebody holds it.
        drop((held, first));
        snapshots.take(store.as_ref(), resync).await;
        assert_eq!(snapshots.reads.load(Ordering::Relaxed), 2, "the later read is kept");
        if let Some((started, _)) = lock(&snapshots.latest).as_mut() {
            *started -= KEEP;
        }
        snapshots.expire();
        let weak = match lock(&snapshots.latest).as_ref() {
            Some((_, Latest::Held(weak))) => weak.clone(),
            other => panic!("held weakly after KEEP: {other:?}"),
        };
        assert!(weak.upgrade().is_some(), "`later` still holds it");
        drop(later);
        assert!(weak.upgrade().is_none(), "let go");
    }
}
