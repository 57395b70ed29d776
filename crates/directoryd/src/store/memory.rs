//! The embedded store: everything in this process's memory, name bindings
//! also in `bindings.jsonl` in the data dir. The default; needs nothing
//! installed, and serves one directory process.
//!
//! Each part has its own lock so that, say, a List never waits for a
//! Challenge. Register takes the bindings lock across the whole claim
//! (binding check, durable append, registry insert), so that two keys
//! racing for a new name cannot both win.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerchat_core::Name;
use peerchat_core::source::Source;
use tokio::sync::broadcast;

use super::{FEED_CAPACITY, Nonce, Registered, Renewed, Store, StoreError};
use crate::bindings::{BindingStore, Check, MAX_BINDINGS};
use crate::challenges::{self, Challenges};
use crate::lock;
use crate::model::{Change, Claim, Listing, Page, Presence, Refusal};
use crate::registry::{Registry, Renewal};

/// The embedded store. Dropping the last handle closes the bindings file.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    /// Behind an `Arc`, like the bindings, so that a claim can run on the
    /// blocking pool.
    registry: Arc<Mutex<Registry>>,
    challenges: Mutex<Challenges>,
    bindings: Arc<Mutex<BindingStore>>,
    feed: broadcast::Sender<Change>,
}

impl MemoryStore {
    pub(crate) fn new(bindings: BindingStore, ttl: Duration, max_per_source: usize) -> MemoryStore {
        MemoryStore {
            registry: Arc::new(Mutex::new(Registry::new(ttl, max_per_source))),
            challenges: Mutex::new(Challenges::new(challenges::MAX_OUTSTANDING)),
            bindings: Arc::new(Mutex::new(bindings)),
            feed: broadcast::channel(FEED_CAPACITY).0,
        }
    }

    /// The same store holding at most `max` challenges.
    pub(crate) fn with_max_nonces(self, max: usize) -> MemoryStore {
        MemoryStore { challenges: Mutex::new(Challenges::new(max)), ..self }
    }

    /// Closes the bindings file, releasing its lock: a directory started
    /// next on the same data dir must not wait for the last stray
    /// connection of this one to let go of the store.
    pub(crate) fn close(&self) {
        lock(&self.bindings).close();
    }

    /// Announces a resync, as the Redis store does when it lost track.
    #[cfg(test)]
    pub(crate) fn resync(&self) {
        self.announce(Change::resync());
    }

    fn announce(&self, change: Change) {
        // No watcher is not an error.
        let _ = self.feed.send(change);
    }
}

#[tonic::async_trait]
impl Store for MemoryStore {
    async fn issue_nonce(&self, nonce: Nonce, source: Source) -> Result<(), StoreError> {
        lock(&self.challenges).issue(nonce, source, Instant::now());
        Ok(())
    }

    async fn consume_nonce(&self, nonce: &[u8]) -> Result<bool, StoreError> {
        Ok(lock(&self.challenges).consume(nonce, Instant::now()))
    }

    async fn register(&self, claim: Claim) -> Result<Registered, StoreError> {
        let listing = Listing {
            name: claim.name.as_str().to_owned(),
            address: claim.address.clone(),
            presence: claim.presence,
            public_key: claim.public_key,
        };
        let (registry, bindings) = (self.registry.clone(), self.bindings.clone());
        let feed = self.feed.clone();
        // A new binding appends to the bindings file and syncs it: blocking.
        // The claim is announced in there too, so that it is announced even
        // if the caller goes away meanwhile (the claim goes on without it).
        tokio::task::spawn_blocking(move || claim_name(&registry, &bindings, claim, &feed, listing))
            .await
            .map_err(|err| StoreError::Unavailable { why: format!("the claim failed: {err}") })?
    }

    // Every change is announced while the registry is still locked, so
    // that watchers hear the changes in the order the registry made them.

    async fn renew(
        &self,
        name: &Name,
        lease: &str,
        presence: Option<Presence>,
    ) -> Result<Renewed, StoreError> {
        let mut registry = lock(&self.registry);
        match registry.heartbeat(name, lease, presence, Instant::now())? {
            Renewal::Kept(presence) => Ok(Renewed { presence, changed: false }),
            Renewal::Changed(listing) => {
                let presence = listing.presence;
                self.announce(Change::Up(listing));
                Ok(Renewed { presence, changed: true })
            }
        }
    }

    async fn unregister(&self, name: &Name, lease: &str) -> Result<(), StoreError> {
        let mut registry = lock(&self.registry);
        if let Some(name) = registry.unregister(name, lease, Instant::now())? {
            self.announce(Change::Down { name });
        }
        Ok(())
    }

    async fn lookup(&self, name: &Name) -> Result<Listing, StoreError> {
        Ok(lock(&self.registry).lookup(name, Instant::now())?)
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        Ok(lock(&self.registry).list(after, limit, Instant::now()))
    }

    async fn sweep(&self) {
        let now = Instant::now();
        // One lock at a time: requests wait for one map, never for the sweep.
        let (reaped, left) = {
            let mut registry = lock(&self.registry);
            let reaped = registry.reap(now);
            for name in &reaped {
                self.announce(Change::Down { name: name.clone() });
            }
            (reaped.len(), registry.len())
        };
        // A batch per lock: a Challenge or Register waits for one batch
        // at most. Each batch but the last removes SWEEP_BATCH.
        let mut nonces = 0;
        loop {
            let swept = lock(&self.challenges).sweep(now);
            nonces += swept;
            if swept < challenges::SWEEP_BATCH {
                break;
            }
        }
        let nonces_left = lock(&self.challenges).len();
        if reaped > 0 || nonces > 0 {
            tracing::debug!(reaped, left, nonces, nonces_left, "expired state dropped");
        }
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
}

/// Grants `claim` if its name is free or bound to its key, making a new
/// binding durable before the registration exists, and announces it on
/// `feed` as `listing`. Blocking: a new binding appends to the bindings
/// file and syncs it.
fn claim_name(
    registry: &Mutex<Registry>,
    bindings: &Mutex<BindingStore>,
    claim: Claim,
    feed: &broadcast::Sender<Change>,
    listing: Listing,
) -> Result<Registered, StoreError> {
    let mut bindings = lock(bindings);
    let name_key = claim.name.key();
    let new_binding = match bindings.check(&name_key, &claim.public_key) {
        // Whether or not its owner is online: nobody takes an offline name.
        Check::Other => return Err(Refusal::Taken { name: claim.name.as_str().to_owned() }.into()),
        Check::Same => false,
        Check::Free if !claim.may_bind => {
            return Err(Refusal::NewNames { from: claim.source.site() }.into());
        }
        Check::Free => true,
    };
    // Asked first, so that a registration refused for its source leaves no
    // binding behind. Only claims change who is admitted, and they are
    // serialised by the bindings lock, so the answer still holds below.
    lock(registry).admit(&claim, Instant::now())?;
    if new_binding {
        if bindings.len() >= MAX_BINDINGS {
            return Err(Refusal::Full { max: MAX_BINDINGS }.into());
        }
        bindings.bind(&name_key, &claim.public_key)?;
    }
    let mut registry = lock(registry);
    registry.register(claim, Instant::now())?;
    // No watcher is not an error.
    let _ = feed.send(Change::Up(listing));
    Ok(Registered { new_binding })
}
