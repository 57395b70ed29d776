//! Accepting connections with a ceiling: a flood of connections waits in the
//! kernel's backlog instead of costing the process a task and buffers each.
//!
//! An accept task holds one semaphore permit per open connection and hands
//! the connection to tonic through a channel; the permit travels with the
//! socket and is returned when hyper drops it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// After a failed accept (typically out of file descriptors) retrying at
/// once would spin; a short pause lets connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A TCP connection that counts against the ceiling while it lives.
#[derive(Debug)]
pub(crate) struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// Spawns the accept loop; the returned stream ends when `shutdown` fires.
pub(crate) fn accept(
    listener: TcpListener,
    max_connections: usize,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<Counted>> {
    let (tx, rx) = mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => break,
                },
            };
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tracing::trace!(%peer, "connection accepted");
                    // Small unary RPCs: waiting to coalesce writes only adds latency.
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
                    }
                    let conn = Counted { stream, _permit: permit };
                    if tx.send(Ok(conn)).await.is_err() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            }
        }
        tracing::debug!("accept loop stopped");
    });
    ReceiverStream::new(rx)
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    /// The same info a bare `TcpStream` gives, so `Request::remote_addr` works.
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
