//! Accepting connections with a ceiling: a flood of connections waits in the
//! kernel's backlog instead of costing the process a task and buffers each.
//!
//! An accept task holds one semaphore permit per open connection; the permit
//! travels with the socket and is returned when hyper drops it. One source
//! (an IPv4 address or an IPv6 /64) may hold only a share of them: a
//! connection over its source's share is closed at once, so that one host
//! cannot take every slot and leave the directory to nobody else.
//!
//! Plaintext gRPC and TLS share one port, so that `http://` URLs (the
//! default, `grpcurl -plaintext`) keep working while `https://` clients can
//! pin the directory key. Each accepted connection gets its own task that
//! peeks at the first byte: 0x16 opens a TLS handshake record (the
//! ClientHello), whereas plaintext HTTP/2 starts with its `PRI * HTTP/2.0`
//! preface. The peek and the handshake run in that task, never in the
//! accept loop, so a client that connects and stays silent delays nobody;
//! both are bounded, so it does not hold its permit for long either.
//!
//! Each write to a connection first yields once, so that the responses
//! finished meanwhile leave in one write instead of one each (see
//! `Counted::coalesce`). Under heartbeat load that is about fifteen times
//! fewer writes and a fifth less CPU a heartbeat.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use peerchat_core::source::{PerSource, Source, SourceSlot};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Sleep, sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// After a failed accept (typically out of file descriptors) retrying at
/// once would spin; a short pause lets connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How long a new connection may take to send its first byte. A real client
/// speaks at once; this only bounds what a silent one costs.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a TLS handshake may take, for the same reason.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take, once classified, to send the HTTP/2
/// preface and its first SETTINGS frame. hyper waits for them without a
/// limit, and its keepalive pings start only after them: a client that
/// sent half a preface held its connection (and a slot) for good.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);

/// The bytes of the client preface (`PRI * HTTP/2.0...`, 24) and of the
/// SETTINGS frame header that must follow it (9).
const PREFACE_BYTES: usize = 24 + 9;

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long a connection's writes may stay blocked (the client reads
/// nothing) before it is closed. Every answer a client asked for and does
/// not read waits in the server's memory meanwhile: a client that opens
/// large HTTP/2 windows and stops reading parks whole List pages. So what
/// one source can park is at most its List rate times this of pages
/// (100/s x 10 s of pages of up to 1,000 peers: about 120 MB), where only
/// HTTP/2 keepalive (20 s) bounded it before.
pub(crate) const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection, plaintext or TLS, that counts against the ceiling while it
/// lives.
#[derive(Debug)]
pub(crate) struct Counted {
    stream: Stream,
    /// Whether the last write yielded instead (see [`Counted::coalesce`]).
    yielded: bool,
    /// Running while writes are blocked (see [`Counted::stalled`]).
    stall: Option<Pin<Box<Sleep>>>,
    /// Until the preface is in: the bytes read so far and the deadline
    /// (see [`PREFACE_TIMEOUT`]).
    preface: Option<(usize, Pin<Box<Sleep>>)>,
    _slots: (OwnedSemaphorePermit, SourceSlot),
}

impl Counted {
    /// Lets every other ready task run before each write, once.
    ///
    /// hyper runs each request's handler in a task of its own, and each one
    /// that finishes wakes the connection task, which writes at once: one
    /// syscall and one TCP segment per response, however many responses are
    /// about to follow. Yielding first lets the handlers that are ready
    /// finish, and h2 then writes all their responses together. Under load
    /// that is several times fewer writes; when idle it costs one trip
    /// through the scheduler, about a microsecond.
    fn coalesce(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            self.yielded = false;
            Poll::Ready(())
        } else {
            self.yielded = true;
            // A task that wakes itself goes to the back of the run queue.
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl Counted {
    /// Passes a write's outcome through, timing how long writes stay
    /// blocked: past [`WRITE_STALL_TIMEOUT`] without progress the write
    /// fails, and hyper closes the connection.
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let timer = self.stall.get_or_insert_with(|| Box::pin(sleep(WRITE_STALL_TIMEOUT)));
        if timer.as_mut().poll(cx).is_ready() {
            let why = format!("the client read nothing for {WRITE_STALL_TIMEOUT:?}");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        Poll::Pending
    }
}

/// What a client speaks on the shared port.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    // Boxed: the TLS state is large, the plaintext variant is not.
    Tls(Box<TlsStream<TcpStream>>),
}

/// How many connections may be open at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ceiling {
    /// In all; further clients wait in the listen backlog.
    pub(crate) total: usize,
    /// From one source; further ones from it are closed at once.
    pub(crate) per_source: usize,
}

/// Spawns the accept loop; the returned stream ends when `shutdown` fires.
pub(crate) fn accept(
    listener: TcpListener,
    ceiling: Ceiling,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<Counted>> {
    let (tx, rx) = mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(ceiling.total.max(1)));
    let sources = PerSource::new(ceiling.per_source.max(1));
    let acceptor = TlsAcceptor::from(tls);
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
                    let Some(source) = sources.try_take(Source::of(Some(peer))) else {
                        // Dropping the socket closes it: the client sees the
                        // connection end before anything was said.
                        tracing::debug!(%peer, "too many connections from this source; closing");
                        continue;
                    };
                    tracing::trace!(%peer, "connection accepted");
                    // Small unary RPCs: waiting to coalesce writes only adds latency.
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
                    }
                    let (tx, acceptor, shutdown) = (tx.clone(), acceptor.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        let stream = tokio::select! {
                            () = shutdown.cancelled() => return,
                            stream = classify(stream, &acceptor) => stream,
                        };
                        match stream {
                            Ok(stream) => {
                                // Fails only when tonic stopped taking connections.
                                let _ = tx
                                    .send(Ok(Counted {
                                        stream,
                                        yielded: false,
                                        stall: None,
                                        preface: Some((0, Box::pin(sleep(PREFACE_TIMEOUT)))),
                                        _slots: (permit, source),
                                    }))
                                    .await;
                            }
                            Err(why) => tracing::debug!(%peer, %why, "connection dropped"),
                        }
                    });
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

/// Waits for the first byte and, if it starts a TLS handshake, completes
/// the handshake; anything else is left for the plaintext HTTP/2 server
/// (which closes the connection on garbage). The error says why the
/// connection is dropped.
async fn classify(stream: TcpStream, acceptor: &TlsAcceptor) -> Result<Stream, String> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first))
        .await
        .map_err(|_| format!("nothing received within {FIRST_BYTE_TIMEOUT:?}"))?;
    match peeked {
        Ok(0) => return Err("closed before sending anything".to_owned()),
        Ok(_) => {}
        Err(err) => return Err(format!("cannot read: {err}")),
    }
    if first[0] != TLS_HANDSHAKE {
        return Ok(Stream::Plain(stream));
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
        Ok(Err(err)) => Err(format!("TLS handshake failed: {err}")),
        Err(_) => Err(format!("TLS handshake not done within {HANDSHAKE_TIMEOUT:?}")),
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    /// The TCP socket's info, also under TLS, so that `Request::remote_addr`
    /// (the observed address, the limits per source) works for both.
    fn connect_info(&self) -> TcpConnectInfo {
        match &self.stream {
            Stream::Plain(tcp) => tcp.connect_info(),
            Stream::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = match &mut self.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        };
        let Some((read, deadline)) = self.preface.as_mut() else { return poll };
        if let Poll::Ready(Ok(())) = &poll {
            *read += buf.filled().len() - before;
            if *read >= PREFACE_BYTES {
                self.preface = None;
                return poll;
            }
        }
        // Polled (so armed) also while the read waits: its firing wakes
        // hyper, whose next read fails.
        if deadline.as_mut().poll(cx).is_ready() {
            let why = format!("no HTTP/2 preface within {PREFACE_TIMEOUT:?}");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.coalesce(cx));
        let poll = match &mut self.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        };
        self.stalled(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.coalesce(cx));
        let poll = match &mut self.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        };
        self.stalled(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = match &mut self.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        };
        self.stalled(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
