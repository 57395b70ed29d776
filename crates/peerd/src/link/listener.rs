//! The peer port's accept loop: a bounded number of connections at a time,
//! each with TCP_NODELAY and a TLS 1.3 handshake (in its own task, with a
//! timeout) before it is handed to tonic's `serve_with_incoming` as a
//! [`Served`] connection. A connection over the limit is closed at once and
//! a handshake that stalls is dropped, and so is a connection that carries
//! no Chat stream for a while, so floods, half-open handshakes and idle
//! connections cannot exhaust the daemon (the current conversation keeps
//! its connection).
//!
//! When every slot is taken, a new connection does not simply lose: one
//! that carries no stream (handshaking, or idle) is ended for it, and the
//! new one waits up to [`EVICT_WAIT`] for that slot. The one ended is from
//! the address that holds the most slots, the one idle the longest among
//! its connections, and only from an address that holds more than the
//! newcomer's (or the newcomer's own): slots are shared out fairly between
//! addresses, not first come first served. A connection carrying a stream
//! that said hello (a conversation, a dial being answered) is never ended
//! so; one whose streams say nothing is. So hosts
//! that hold every slot with connections that do nothing, reconnecting as
//! soon as each is closed, cannot keep a dialer out unless they come from
//! as many addresses as there are slots. At most [`MAX_WAITING`] newcomers
//! wait for a slot at a time; past that one is closed at once, so a flood
//! holds no more sockets than the slots and those few.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use peerchat_core::source::{PerSource, Source, SourceSlot};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT};
use crate::served::{Activity, ConnInfo, Incoming, Served};
use crate::tls::certificate_key;

/// How long a connection that evicted another waits for its slot: the
/// evicted one lets go within a turn of its task.
const EVICT_WAIT: Duration = Duration::from_secs(1);

/// Newcomers that may wait for a slot an eviction frees, at once.
const MAX_WAITING: usize = 8;

/// A newcomer's place in the queue for a slot.
type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A new connection's slot: taken, or queued for (with its place among
/// the [`MAX_WAITING`]).
enum Slot {
    Held(OwnedSemaphorePermit),
    Queued(Acquire, OwnedSemaphorePermit),
}

/// An established TLS connection, holding its connection slots (the
/// overall one and its address's) until the server drops it, which it does
/// once the connection has carried no Chat stream for [`IDLE_TIMEOUT`]: a
/// slot is for a conversation, not for holding.
fn served(
    stream: TlsStream<TcpStream>,
    slots: (OwnedSemaphorePermit, SourceSlot),
    activity: Activity,
) -> Served {
    let (tcp, tls) = stream.get_ref();
    let key = tls.peer_certificates().and_then(|c| c.first()).and_then(|c| certificate_key(c).ok());
    let info = ConnInfo::Peer { remote: tcp.peer_addr().ok(), key, activity: activity.clone() };
    Served::new(stream, info, slots).closed_when_idle(activity, IDLE_TIMEOUT)
}

/// Accepts on `listener` until `shutdown`, at most `max` connections open
/// (handshaking or established), and at most `per_source` of them from one
/// address.
pub(crate) fn connections(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    max: usize,
    per_source: usize,
    shutdown: CancellationToken,
) -> Incoming {
    let (tx, rx) = mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(max));
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let sources = PerSource::new(per_source);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        // Every connection holding or waiting for a slot, with its source
        // (pruned as they go).
        let mut holders: Vec<(Activity, Source)> = Vec::with_capacity(max + MAX_WAITING);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let newcomer = Source::of_ip(from.ip());
            let Some(source) = sources.try_take(newcomer) else {
                tracing::debug!(%from, "too many connections from this address; closing this one");
                continue;
            };
            holders.retain(|(a, _)| a.in_use());
            let (slot, activity) = match slots.clone().try_acquire_owned() {
                Ok(slot) => (Slot::Held(slot), Activity::new()),
                Err(_) => {
                    let Ok(wait) = waiting.clone().try_acquire_owned() else {
                        tracing::debug!(%from, "too many connections waiting; closing this one");
                        continue;
                    };
                    // In the semaphore's queue before the victim lets go:
                    // the semaphore is fair, so the slot it frees comes
                    // here, not to whoever connects next.
                    let mut queued: Acquire = Box::pin(slots.clone().acquire_owned());
                    let mut cx = Context::from_waker(Waker::noop());
                    if let Poll::Ready(Ok(slot)) = queued.as_mut().poll(&mut cx) {
                        (Slot::Held(slot), Activity::new())
                    } else if evict_one(&holders, newcomer) {
                        (Slot::Queued(queued, wait), Activity::waiting())
                    } else {
                        tracing::debug!(%from, "too many connections, none to end; closing this one");
                        continue;
                    }
                }
            };
            holders.push((activity.clone(), newcomer));
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, shutdown) = (acceptor.clone(), tx.clone(), shutdown.clone());
            tokio::spawn(async move {
                let slot = match slot {
                    Slot::Held(slot) => slot,
                    Slot::Queued(queued, _wait) => {
                        match tokio::time::timeout(EVICT_WAIT, queued).await {
                            Ok(Ok(slot)) => {
                                activity.slotted();
                                slot
                            }
                            _ => {
                                tracing::debug!(%from, "no slot came free; closing this one");
                                return;
                            }
                        }
                    }
                };
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = activity.evicted() => {
                        tracing::debug!(%from, "handshake ended for a newer connection");
                        return;
                    }
                    r = handshake => match r {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%from, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%from, "TLS handshake timed out");
                            return;
                        }
                    },
                };
                let _ = tx.send(Ok(served(stream, (slot, source), activity))).await;
            });
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Ends a connection among `holders` for one from `newcomer`, if one may
/// be ended (see [`victim`]).
fn evict_one(holders: &[(Activity, Source)], newcomer: Source) -> bool {
    // One already ended, on its way out, holds nothing for its source.
    let staying: Vec<&(Activity, Source)> =
        holders.iter().filter(|(a, _)| !a.is_evicted()).collect();
    let candidates: Vec<(Option<Instant>, Source)> =
        staying.iter().map(|(a, source)| (a.evictable_since(), *source)).collect();
    match victim(&candidates, newcomer) {
        Some(i) => {
            let (activity, source) = staying[i];
            tracing::debug!(%source, "the port is full: ending an idle connection");
            activity.evict();
            true
        }
        None => false,
    }
}

/// Which of `holders` (since when each has carried no stream, if it may be
/// ended; and its source) to end for a connection from `newcomer`: one
/// from the source that holds the most, the one idle the longest of those;
/// never one from a source that holds no more than the newcomer's does,
/// except the newcomer's own. `None` if there is none.
fn victim(holders: &[(Option<Instant>, Source)], newcomer: Source) -> Option<usize> {
    let mut held: HashMap<Source, usize> = HashMap::new();
    for (_, source) in holders {
        *held.entry(*source).or_default() += 1;
    }
    let count = |source: &Source| held.get(source).copied().unwrap_or(0);
    let mine = count(&newcomer);
    holders
        .iter()
        .enumerate()
        .filter_map(|(i, (since, source))| since.map(|since| (i, since, *source)))
        .filter(|(_, _, source)| *source == newcomer || count(source) > mine)
        .max_by_key(|(_, since, source)| (count(source), std::cmp::Reverse(*since)))
        .map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(last: u8) -> Source {
        Source::V4([10, 0, 0, last])
    }

    #[test]
    fn the_address_holding_the_most_loses_its_longest_idle_connection() {
        let t = Instant::now();
        let s = |n: u64| Some(t + Duration::from_secs(n));
        // Address 1 holds three (one busy), address 2 two, address 3 one,
        // idle the longest of all.
        let holders = [(s(5), from(1)), (None, from(1)), (s(2), from(1)), (s(1), from(2))];
        let holders = [&holders[..], &[(s(3), from(2)), (s(0), from(3))]].concat();
        assert_eq!(victim(&holders, from(9)), Some(2), "address 1's longest idle");
        assert_eq!(victim(&holders, from(3)), Some(2), "a holder of one takes from the heaviest");
        // Address 2 holds two: it may take from address 1 (three), or its own.
        assert_eq!(victim(&holders, from(2)), Some(2));
        // Address 1, the heaviest, may only end one of its own.
        assert_eq!(victim(&holders, from(1)), Some(2));
    }

    #[test]
    fn no_connection_is_ended_for_an_address_that_already_holds_as_many() {
        let t = Some(Instant::now());
        let holders = [(t, from(1)), (t, from(2)), (None, from(3)), (None, from(3))];
        assert_eq!(victim(&holders, from(3)), None, "address 3 holds more than 1 and 2");
        assert_eq!(victim(&holders, from(1)), Some(0), "its own idle one");
        let busy = [(None, from(1)), (None, from(2))];
        assert_eq!(victim(&busy, from(9)), None, "every connection carries a stream");
    }
}
