//! The feed task: the one owner of the directory's WatchPeers stream.
//!
//! It follows the current replica's stream, applying each event to the
//! shared [`Known`](super::known::Known) and broadcasting what changed.
//! When the stream breaks it reconnects: at once to the next replica when
//! this one did not answer (once around the list), then with backoff. What
//! was known is kept across the break, so the fresh snapshot that starts
//! the new stream is told as the real changes only.
//!
//! A directory that answers WatchPeers with UNIMPLEMENTED (one from before
//! the feed) is polled instead: its whole List every poll interval, each
//! a snapshot for the same diffing.
//!
//! It stops on shutdown or when the last subscriber is gone, whichever
//! first; either way it removes the shared state, which drops the last
//! sender and so ends every subscription.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat::v1::directory_client::DirectoryClient;
use peerchat_core::lease::Backoff;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::known::Known;
use super::{Live, Update, lock};
use crate::deadline::sleep_until;
use crate::directory::DIRECTORY_CALL_TIMEOUT;
use crate::directory::{self, Directories, Verdict};

/// Peers asked for per List page when polling (the directory's maximum).
pub(super) const PAGE_SIZE: u32 = 1000;

/// What the task needs.
#[derive(Debug)]
pub(super) struct Feed {
    pub(super) shared: Arc<Mutex<Option<Live>>>,
    /// A sender of its own, so that it can tell when no receiver is left.
    pub(super) tx: broadcast::Sender<Update>,
    pub(super) directories: Directories,
    pub(super) poll_interval: Duration,
}

/// How the directory is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Stream,
    Poll,
}

/// Why following the directory stopped.
#[derive(Debug)]
enum Ended {
    /// The directory has no WatchPeers: poll it instead.
    Unimplemented,
    Lost {
        why: String,
        /// The replica did not answer (as [`Verdict`] has it), so another
        /// may: move on to the next.
        unreachable: bool,
        /// It had delivered a whole snapshot first: the directory was fine
        /// until now, so the backoff starts over.
        healthy: bool,
    },
}

impl Feed {
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let mut mode = Mode::Stream;
        // Replicas that failed in a row since the last full round.
        let mut failed = 0;
        tracing::debug!("following the directory's presence feed");
        loop {
            let (index, client) = self.directories.current();
            let ended = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.unwatched() => {
                    tracing::debug!("nobody watches presence any more; feed closed");
                    return;
                }
                ended = self.follow(mode, client) => ended,
            };
            let (why, unreachable, healthy) = match ended {
                Ended::Unimplemented => {
                    tracing::info!(
                        "the directory has no presence feed (WatchPeers unimplemented); \
                         polling its list every {:?}",
                        self.poll_interval
                    );
                    mode = Mode::Poll;
                    continue;
                }
                Ended::Lost { why, unreachable, healthy } => (why, unreachable, healthy),
            };
            self.apply(Known::abandon_snapshot);
            if healthy {
                backoff.reset();
                failed = 0;
            }
            failed += 1;
            let why = self.directories.labelled(index, why);
            if unreachable {
                let next = self.directories.failed(index);
                if failed < self.directories.len() {
                    tracing::info!(%why, "presence feed: trying {}", self.directories.url(next));
                    continue;
                }
            }
            failed = 0;
            tracing::warn!(%why, "presence feed lost; reconnecting");
            self.unreachable(why);
            let until = tokio::time::Instant::now() + backoff.next_delay();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.unwatched() => return,
                    () = sleep_until(Some(until)) => break,
                    // Peers held since the last snapshot are due meanwhile.
                    () = sleep_until(self.held_until()) => self.apply(|_| {}),
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        // Shutdown: the state goes, and with it the last sender.
        lock(&self.shared).take();
    }

    /// Resolves once no subscriber is left, having removed the shared state
    /// (under the lock, so that a subscriber arriving meanwhile finds either
    /// this feed, and keeps it, or none, and starts a new one).
    async fn unwatched(&self) {
        loop {
            self.tx.closed().await;
            let mut shared = lock(&self.shared);
            if self.tx.receiver_count() == 0 {
                shared.take();
                return;
            }
        }
    }

    async fn follow(&self, mode: Mode, client: DirectoryClient<Channel>) -> Ended {
        match mode {
            Mode::Stream => self.stream(client).await,
            Mode::Poll => self.poll(client).await,
        }
    }

    /// Follows one WatchPeers stream until it breaks.
    async fn stream(&self, mut client: DirectoryClient<Channel>) -> Ended {
        let call = client.watch_peers(pb::WatchPeersRequest {});
        let mut events = match tokio::time::timeout(DIRECTORY_CALL_TIMEOUT, call).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return ended(&status, false),
            Err(_) => return no_answer(false),
        };
        let mut healthy = false;
        loop {
            let next = tokio::select! {
                next = events.message() => next,
                () = sleep_until(self.held_until()) => {
                    self.apply(|_| {});
                    continue;
                }
            };
            match next {
                Ok(Some(event)) => {
                    let end = event.kind == pb::peer_event::Kind::SnapshotEnd as i32;
                    self.apply(|known| known.handle_event(event));
                    healthy |= end;
                }
                Ok(None) => {
                    // The replica is going away (a graceful shutdown ends
                    // its streams): another may be there.
                    let why = "the directory ended the presence feed".to_owned();
                    return Ended::Lost { why, unreachable: true, healthy };
                }
                Err(status) => return ended(&status, healthy),
            }
        }
    }

    /// Polls List until it fails; each complete listing is a snapshot.
    async fn poll(&self, client: DirectoryClient<Channel>) -> Ended {
        let mut healthy = false;
        loop {
            match list_all(client.clone()).await {
                Ok(peers) => {
                    self.apply(|known| known.handle_listing(peers));
                    healthy = true;
                }
                Err(Failure::Status(status)) => return ended(&status, healthy),
                Err(Failure::Timeout) => return no_answer(healthy),
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// Changes the known state and broadcasts what changed, under the lock
    /// (see the module docs of `roster`).
    fn apply(&self, change: impl FnOnce(&mut Known)) {
        let mut shared = lock(&self.shared);
        let Some(live) = shared.as_mut() else { return };
        live.known.tick(std::time::Instant::now());
        change(&mut live.known);
        while let Some(change) = live.known.poll_change() {
            // No receiver is not an error: the feed stops on its own then.
            let _ = live.tx.send(Update::Change(change));
        }
        let left_out = live.known.take_left_out();
        if left_out > 0 {
            tracing::warn!(
                left_out,
                "the directory lists more peers than peerd keeps ({}); some are not shown",
                super::known::MAX_PEERS
            );
        }
    }

    /// When peers held since the last snapshot are due (see
    /// [`Known::tick`]), as the runtime's clock has it.
    fn held_until(&self) -> Option<tokio::time::Instant> {
        let due = lock(&self.shared).as_ref().and_then(|live| live.known.poll_timeout())?;
        let left = due.saturating_duration_since(std::time::Instant::now());
        Some(tokio::time::Instant::now() + left)
    }

    /// Tells subscribers still waiting for a first snapshot that none is
    /// coming soon.
    fn unreachable(&self, why: String) {
        let shared = lock(&self.shared);
        if let Some(live) = shared.as_ref()
            && !live.known.is_synced()
        {
            let _ = live.tx.send(Update::Unreachable(why));
        }
    }
}

/// What a failed call or stream means, from the status code alone.
fn ended(status: &Status, healthy: bool) -> Ended {
    match Verdict::of(status) {
        Verdict::Answer if status.code() == Code::Unimplemented => Ended::Unimplemented,
        Verdict::Answer => {
            Ended::Lost { why: directory::reason(status), unreachable: false, healthy }
        }
        Verdict::Unreachable | Verdict::WrongKey => {
            Ended::Lost { why: directory::reason(status), unreachable: true, healthy }
        }
    }
}

fn no_answer(healthy: bool) -> Ended {
    let why = "the directory did not answer in time".to_owned();
    Ended::Lost { why, unreachable: true, healthy }
}

#[derive(Debug)]
enum Failure {
    Status(Status),
    Timeout,
}

/// Everyone online, from every page of List.
async fn list_all(mut client: DirectoryClient<Channel>) -> Result<Vec<pb::Peer>, Failure> {
    let mut peers = Vec::new();
    let mut token = String::new();
    // Bounded even if the directory hands out tokens forever.
    let max_pages = super::known::MAX_PEERS / PAGE_SIZE as usize + 1;
    for _ in 0..max_pages {
        let request = pb::ListRequest { page_size: PAGE_SIZE, page_token: token.clone() };
        let page = match tokio::time::timeout(DIRECTORY_CALL_TIMEOUT, client.list(request)).await {
            Ok(Ok(page)) => page.into_inner(),
            Ok(Err(status)) => return Err(Failure::Status(status)),
            Err(_) => return Err(Failure::Timeout),
        };
        // No more than asked for, nor past what the roster keeps: a
        // directory that sends more cannot make us hold it.
        let room = (super::known::MAX_PEERS - peers.len()).min(PAGE_SIZE as usize);
        peers.extend(page.peers.into_iter().take(room));
        let full = peers.len() >= super::known::MAX_PEERS;
        // A token that does not move would loop for nothing.
        if full || page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    Ok(peers)
}
