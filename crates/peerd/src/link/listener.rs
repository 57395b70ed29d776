//! The peer port's accept loop: a bounded number of connections at a time,
//! each with TCP_NODELAY and a TLS 1.3 handshake (in its own task, with a
//! timeout) before it is handed to tonic's `serve_with_incoming` as a
//! [`Served`] connection. A connection over the limit is closed at once and
//! a handshake that stalls is dropped, and so is a connection that carries
//! no Chat stream for a while, so floods, half-open handshakes and idle
//! connections cannot exhaust the daemon (the current conversation keeps
//! its connection).
//!
//! When every slot is taken, a new connection does not simply lose: the
//! one that has carried no stream for the longest (handshaking, or idle) is
//! ended for it, and the new one waits up to [`EVICT_WAIT`] for that slot.
//! A connection carrying a stream (a conversation, a dial being answered)
//! is never ended so. So hosts that hold every slot with connections that
//! do nothing, reconnecting as soon as each is closed, cannot keep a
//! dialer out: its connection is the newest, and theirs go first.

use std::sync::Arc;
use std::time::Duration;

use peerchat_core::source::{PerSource, Source, SourceSlot};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT};

/// How long a connection that evicted another waits for its slot: the
/// evicted one lets go within a turn of its task.
const EVICT_WAIT: Duration = Duration::from_secs(1);
use crate::served::{Activity, ConnInfo, Incoming, Served};
use crate::tls::certificate_key;

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
    let sources = PerSource::new(per_source);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        // Every connection holding a slot, oldest first (pruned as they go).
        let mut holders: Vec<Activity> = Vec::with_capacity(max);
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
            let Some(source) = sources.try_take(Source::of_ip(from.ip())) else {
                tracing::debug!(%from, "too many connections from this address; closing this one");
                continue;
            };
            holders.retain(Activity::in_use);
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) if evict_one(&holders) => None,
                Err(_) => {
                    tracing::debug!(%from, "too many connections, all in use; closing this one");
                    continue;
                }
            };
            let activity = Activity::new();
            holders.push(activity.clone());
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, shutdown) = (acceptor.clone(), tx.clone(), shutdown.clone());
            let slots = slots.clone();
            tokio::spawn(async move {
                let slot = match slot {
                    Some(slot) => slot,
                    None => match tokio::time::timeout(EVICT_WAIT, slots.acquire_owned()).await {
                        Ok(Ok(slot)) => slot,
                        _ => {
                            tracing::debug!(%from, "no slot came free; closing this one");
                            return;
                        }
                    },
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

/// Ends the connection among `holders` that has carried no stream for the
/// longest, if there is one; see the module's doc.
fn evict_one(holders: &[Activity]) -> bool {
    let oldest = holders
        .iter()
        .filter_map(|a| a.evictable_since().map(|since| (since, a)))
        .min_by_key(|(since, _)| *since);
    match oldest {
        Some((_, activity)) => {
            tracing::debug!("the port is full: ending the connection idle the longest");
            activity.evict();
            true
        }
        None => false,
    }
}
