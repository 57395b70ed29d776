//! The peer port's accept loop: a bounded number of connections at a time,
//! each with TCP_NODELAY and a TLS 1.3 handshake (in its own task, with a
//! timeout) before it is handed to tonic's `serve_with_incoming` as a
//! [`Served`] connection. A connection over the limit is closed at once and
//! a handshake that stalls is dropped, and so is a connection that carries
//! no Chat stream for a while, so floods, half-open handshakes and idle
//! connections cannot exhaust the daemon (the current conversation keeps
//! its connection).

use std::sync::Arc;

use peerchat_core::source::{PerSource, Source, SourceSlot};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{HANDSHAKE_TIMEOUT, IDLE_TIMEOUT};
use crate::served::{Activity, ConnInfo, Incoming, Served};
use crate::tls::certificate_key;

/// An established TLS connection, holding its connection slots (the
/// overall one and its address's) until the server drops it, which it does
/// once the connection has carried no Chat stream for [`IDLE_TIMEOUT`]: a
/// slot is for a conversation, not for holding.
fn served(stream: TlsStream<TcpStream>, slots: (OwnedSemaphorePermit, SourceSlot)) -> Served {
    let (tcp, tls) = stream.get_ref();
    let key = tls.peer_certificates().and_then(|c| c.first()).and_then(|c| certificate_key(c).ok());
    let activity = Activity::new();
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
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%from, "too many connections; closing this one");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, shutdown) = (acceptor.clone(), tx.clone(), shutdown.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
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
                let _ = tx.send(Ok(served(stream, (slot, source)))).await;
            });
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
