//! The reaper: once a second drops expired registrations, expired challenge
//! nonces and rate-limit buckets that have refilled, so that none of these
//! maps grows with peers that went away. Reads already ignore what has
//! expired; this only bounds memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::service::{Shared, lock};

const PERIOD: Duration = Duration::from_secs(1);

/// Reaps until `shutdown` fires.
pub(crate) async fn run(state: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    // After a stall one sweep catches up on everything; a burst would not.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => sweep(&state, Instant::now()),
        }
    }
}

fn sweep(state: &Shared, now: Instant) {
    // One lock at a time: requests wait for one map, never for the sweep.
    let (reaped, left) = {
        let mut registry = lock(&state.registry);
        (registry.reap(now), registry.len())
    };
    let (nonces, nonces_left) = {
        let mut challenges = lock(&state.challenges);
        (challenges.sweep(now), challenges.len())
    };
    let mut buckets = 0;
    let mut sources = 0;
    for limiter in [&state.register_limits, &state.list_limits] {
        let mut limiter = lock(limiter);
        buckets += limiter.sweep(now);
        sources += limiter.len();
    }
    if reaped + nonces + buckets > 0 {
        tracing::debug!(
            reaped,
            left,
            nonces,
            nonces_left,
            buckets,
            sources,
            "expired state dropped"
        );
    }
}
