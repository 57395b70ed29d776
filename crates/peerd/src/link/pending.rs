//! The callee's slots for dials not yet answered: at most
//! [`MAX_PENDING_DIALS`] at once, [`MAX_PENDING_DIALS_PER_SOURCE`] of them
//! from one source, so that dials whose key takes long to check (a slow
//! directory) cannot lock other dialers out, nor make us ask the directory
//! about many at once.
//!
//! A dial takes its slot once it has said hello (one that says nothing
//! holds none), and waits up to [`SLOT_WAIT`] for one before it is refused
//! (`too many dials in progress`). A slot is held only for the directory's
//! word on the dialer's key and the driver's answer, usually a few
//! milliseconds; so several peers behind one address (a NAT,
//! or one machine) that dial at the same moment each get the real answer,
//! a conversation or `busy`, instead of a refusal that says nothing about
//! the peer. The wait, with the directory's word on the key after it, stays
//! inside the dialer's handshake timeout (a unit test checks).

use std::sync::Arc;
use std::time::Duration;

use peerchat_core::source::{PerSource, Source, SourceSlot};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{MAX_PENDING_DIALS, MAX_PENDING_DIALS_PER_SOURCE};

/// How long a dial waits for a free slot: what the dialer's handshake
/// timeout leaves after the longest directory lookup, less a second for
/// the rest of the answer.
pub(crate) const SLOT_WAIT: Duration = Duration::from_secs(1);

/// The slots of one daemon's peer port.
#[derive(Debug, Clone)]
pub(crate) struct PendingDials {
    all: Arc<Semaphore>,
    per_source: PerSource,
    /// Told whenever a source's slot is given back.
    freed: Arc<Notify>,
}

/// A dial's slots, given back when dropped.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    source: Option<SourceSlot>,
    _all: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        // Given back before the waiters look again.
        if self.source.take().is_some() {
            self.freed.notify_waiters();
        }
    }
}

impl Default for PendingDials {
    fn default() -> PendingDials {
        PendingDials::new(MAX_PENDING_DIALS, MAX_PENDING_DIALS_PER_SOURCE)
    }
}

impl PendingDials {
    pub(crate) fn new(all: usize, per_source: usize) -> PendingDials {
        PendingDials {
            all: Arc::new(Semaphore::new(all)),
            per_source: PerSource::new(per_source),
            freed: Arc::new(Notify::new()),
        }
    }

    /// Slots for a dial from `source` (`None`: no address to count it
    /// by), waiting up to [`SLOT_WAIT`]; `None` if none came free.
    pub(crate) async fn take(&self, source: Option<Source>) -> Option<PendingSlot> {
        let deadline = Instant::now() + SLOT_WAIT;
        let mut slot = PendingSlot { source: None, _all: None, freed: self.freed.clone() };
        if let Some(source) = source {
            slot.source = Some(self.take_source(source, deadline).await?);
        }
        let all = tokio::time::timeout_at(deadline, self.all.clone().acquire_owned()).await;
        slot._all = Some(all.ok()?.ok()?);
        Some(slot)
    }

    async fn take_source(&self, source: Source, deadline: Instant) -> Option<SourceSlot> {
        // Ends at the deadline at the latest.
        loop {
            // Listening before looking, so that a slot given back between
            // the look and the wait is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.per_source.try_take(source) {
                return Some(slot);
            }
            tokio::time::timeout_at(deadline, freed).await.ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Option<Source> {
        Some(Source::of(Some(s.parse().expect("a socket address"))))
    }

    #[test]
    fn the_wait_and_the_key_check_fit_in_the_dialers_handshake_timeout() {
        let answer = Duration::from_secs(1);
        let longest = SLOT_WAIT + crate::directory::DIRECTORY_CALL_TIMEOUT + answer;
        assert!(longest <= super::super::HANDSHAKE_TIMEOUT, "{longest:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dial_over_its_sources_share_waits_for_a_slot_to_come_back() {
        let dials = PendingDials::new(16, 2);
        let first = dials.take(src("10.0.0.1:1")).await.expect("first");
        let _second = dials.take(src("10.0.0.1:2")).await.expect("second");
        let started = Instant::now();
        let waiting = {
            let dials = dials.clone();
            tokio::spawn(async move { dials.take(src("10.0.0.1:3")).await.map(|_| ()) })
        };
        tokio::time::sleep(SLOT_WAIT / 2).await;
        assert!(!waiting.is_finished(), "the third waits while both are held");
        // Another source is not held up meanwhile.
        assert!(dials.take(src("10.0.0.2:1")).await.is_some());
        drop(first);
        assert!(waiting.await.expect("the task").is_some(), "the third got the slot given back");
        assert!(started.elapsed() < SLOT_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dial_that_finds_no_slot_in_time_is_refused_after_the_wait() {
        let dials = PendingDials::new(16, 1);
        let _held = dials.take(src("10.0.0.1:1")).await.expect("first");
        let started = Instant::now();
        assert!(dials.take(src("10.0.0.1:2")).await.is_none());
        assert_eq!(started.elapsed(), SLOT_WAIT);

        // Likewise when all slots are held, by whoever.
        let dials = PendingDials::new(1, 8);
        let _held = dials.take(src("10.0.0.1:1")).await.expect("first");
        assert!(dials.take(src("10.0.0.2:1")).await.is_none());
        assert!(dials.take(None).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_slot_taken_without_a_global_one_is_given_back() {
        let dials = PendingDials::new(1, 1);
        let _held = dials.take(src("10.0.0.1:1")).await.expect("first");
        // 10.0.0.2 gets its own source slot but no global one: refused,
        // and its source slot is not kept.
        assert!(dials.take(src("10.0.0.2:1")).await.is_none());
        assert!(
            dials.per_source.try_take(Source::of(Some("10.0.0.2:1".parse().expect("a")))).is_some()
        );
    }
}
