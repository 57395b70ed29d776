//! The reaper: drops expired registrations once a second, so that peers
//! which died without unregistering do not hold memory. Reads already hide
//! expired entries; this only bounds the map.

use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::service::{SharedRegistry, lock};

const PERIOD: Duration = Duration::from_secs(1);

/// Reaps until `shutdown` fires.
pub(crate) async fn run(registry: SharedRegistry, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    // After a stall one sweep catches up on everything; a burst would not.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let (reaped, left) = {
                    let mut registry = lock(&registry);
                    (registry.reap(Instant::now()), registry.len())
                };
                if reaped > 0 {
                    tracing::debug!(reaped, left, "expired registrations dropped");
                }
            }
        }
    }
}
