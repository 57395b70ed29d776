//! The reaper: once a second lets the store drop what has expired (and
//! announce registrations that went), and drops rate-limit buckets that
//! have refilled, so that no map grows with peers that went away. Reads
//! already ignore what has expired; this bounds memory and feeds the
//! presence feed's OFFLINE events for peers that died without a word.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::lock;
use crate::service::Limits;
use crate::store::Store;

const PERIOD: Duration = Duration::from_secs(1);

/// Reaps until `shutdown` fires.
pub(crate) async fn run(store: Arc<dyn Store>, limits: Arc<Limits>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    // After a stall one sweep catches up on everything; a burst would not.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                // The limits first: a store sweep can be slow (a Redis
                // sweep of many expired leases), and full limiter maps
                // would refuse every new source meanwhile.
                sweep_limits(&limits, Instant::now());
                store.sweep().await;
            }
        }
    }
}

fn sweep_limits(limits: &Limits, now: Instant) {
    let mut buckets = 0;
    let mut sources = 0;
    for limiter in [&limits.register, &limits.list, &limits.leases, &limits.new_names] {
        let mut limiter = lock(limiter);
        buckets += limiter.sweep(now);
        sources += limiter.len();
    }
    if buckets > 0 {
        tracing::debug!(buckets, sources, "idle rate-limit buckets dropped");
    }
}
