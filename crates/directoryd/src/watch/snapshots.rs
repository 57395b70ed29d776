//! One read of everyone online, shared by the watchers that need it at the
//! same moment.
//!
//! A resync from the store (a failover, a gap in a bucket's events, the
//! subscriber reconnecting) sends every watcher of a replica for a fresh
//! snapshot at once: up to [`super::MAX_WATCHERS`] full lists, each of
//! them a whole pass over the store, all on the connections that
//! heartbeats use. Instead, a watcher takes the read in progress if that
//! read started after the watcher subscribed to the changes (so nothing it
//! could have missed happened before the read), and starts a new one
//! otherwise. A read is kept only while a watcher still sends from it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::OnceCell;
use tonic::Status;

use super::SNAPSHOT_PAGE;
use crate::lock;
use crate::model::Listing;
use crate::store::Store;
use crate::wire::store_status;

/// What one read gave: everyone online, in name order, or why not.
pub(crate) type Read = Result<Vec<Listing>, Status>;

/// One read, done or under way.
pub(crate) type Shared = Arc<OnceCell<Read>>;

/// The latest read, while a watcher holds it, and when it started.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    latest: Mutex<Option<(Instant, Weak<OnceCell<Read>>)>>,
    /// Reads of the store made, for the tests.
    #[cfg(test)]
    pub(crate) reads: std::sync::atomic::AtomicUsize,
}

impl Snapshots {
    /// Everyone online, as read after `subscribed` (when the caller
    /// subscribed to the changes): the read under way or just done if it
    /// started after that, else a new one. Keep the result while sending
    /// from it, so that others can share it.
    pub(crate) async fn take(&self, store: &dyn Store, subscribed: Instant) -> Shared {
        let shared = {
            let mut latest = lock(&self.latest);
            match latest.as_ref().and_then(|(started, read)| {
                let read = read.upgrade()?;
                (*started >= subscribed).then_some(read)
            }) {
                Some(read) => read,
                None => {
                    // Stamped before the read can start: it starts later
                    // (here, or in a caller that shares it, if this one is
                    // dropped first), never earlier.
                    let read: Shared = Arc::new(OnceCell::new());
                    *latest = Some((Instant::now(), Arc::downgrade(&read)));
                    read
                }
            }
        };
        shared.get_or_init(|| self.read(store)).await;
        shared
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::bindings::BindingStore;
    use crate::model::{Claim, Presence, Source};
    use crate::store::memory::MemoryStore;

    async fn store_with(n: usize) -> Arc<dyn Store> {
        let store =
            MemoryStore::new(BindingStore::in_memory(), Duration::from_secs(60), usize::MAX);
        for i in 0..n {
            let claim = Claim {
                name: peerchat_core::Name::parse(&format!("peer{i:04}")).expect("a valid name"),
                address: "127.0.0.1:7400".to_owned(),
                presence: Presence::Available,
                public_key: [7; 32],
                lease_token: format!("l{i}"),
                source: Source::of(Some("10.0.0.1:1".parse().expect("an address"))),
                may_bind: true,
            };
            store.register(claim).await.expect("registered");
        }
        Arc::new(store)
    }

    #[tokio::test]
    async fn watchers_that_subscribed_before_a_read_share_it() {
        let store = store_with(2_500).await;
        let snapshots = Snapshots::default();
        let subscribed = Instant::now();
        let first = snapshots.take(store.as_ref(), subscribed).await;
        let mut held = vec![first.clone()];
        for _ in 0..100 {
            held.push(snapshots.take(store.as_ref(), subscribed).await);
        }
        assert_eq!(snapshots.reads.load(Ordering::Relaxed), 1, "one read for all");
        let everyone = first.get().expect("read").as_ref().expect("listed");
        assert_eq!(everyone.len(), 2_500, "every page");
        // One that subscribed after that read began needs a read of its own.
        let later = snapshots.take(store.as_ref(), Instant::now()).await;
        assert_eq!(snapshots.reads.load(Ordering::Relaxed), 2);
        // Nobody holds a read: it is not kept.
        drop((held, first, later));
        snapshots.take(store.as_ref(), subscribed).await;
        assert_eq!(snapshots.reads.load(Ordering::Relaxed), 3);
    }
}
