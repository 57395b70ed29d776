//! One connection type for both of peerd's gRPC servers: the peer port
//! (TCP + TLS) and the control socket (Unix).
//!
//! tonic's server is generic over its connections, so two servers over two
//! stream types compile hyper's and h2's whole server stack twice. That
//! second copy cost ~0.2 MB of code, and idle peerd's memory is mostly code
//! pages. Boxing the stream costs one indirect call per read or write,
//! which is not measurable beside a TLS record or a syscall.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::tls::PublicKey;

/// What a handler learns about the other end of its connection, from the
/// request's extensions.
#[derive(Debug, Clone)]
pub(crate) enum ConnInfo {
    /// A peer on the peer port.
    Peer {
        remote: Option<SocketAddr>,
        /// The key the dialer proved in the TLS handshake.
        key: Option<PublicKey>,
        /// Its open streams: a handler holds a [`StreamGuard`] while it
        /// serves one that said hello (one that says nothing must not keep
        /// the connection from being ended for a newcomer).
        activity: Activity,
    },
    /// A local process on the control socket.
    Local {
        /// Its uid (SO_PEERCRED), when the kernel told.
        uid: Option<u32>,
    },
}

/// How many streams a connection carries, and since when none: a peer-port
/// connection that carries none for too long is closed (see
/// [`Served::closed_when_idle`]). Cheap to clone; clones share the count.
#[derive(Debug, Clone)]
pub(crate) struct Activity(Arc<Counts>);

#[derive(Debug)]
struct Counts {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// The reader's, told when the last stream ends so that it arms the
    /// idle timer then (not only at its next read, which may never come),
    /// and when the connection is evicted.
    reader: AtomicWaker,
    /// Cancelled when the port, full, ends this connection for a newer one
    /// (see [`Activity::evict`]).
    evicted: CancellationToken,
    /// False while the connection waits for a slot another's eviction
    /// frees: a waiter holds no slot, so ending it would free none.
    slotted: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity::with_slot(true)
    }

    /// The activity of a connection still waiting for its slot; see
    /// [`Activity::slotted`].
    pub(crate) fn waiting() -> Activity {
        Activity::with_slot(false)
    }

    fn with_slot(slotted: bool) -> Activity {
        Activity(Arc::new(Counts {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            reader: AtomicWaker::new(),
            evicted: CancellationToken::new(),
            slotted: AtomicBool::new(slotted),
        }))
    }

    /// The connection got its slot: from now on it counts as idle (the
    /// newest), and can be evicted like any other.
    pub(crate) fn slotted(&self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.slotted.store(true, Ordering::Release);
    }

    /// Ends the connection: its handshake, or its next read (see
    /// [`Served::closed_when_idle`]).
    pub(crate) fn evict(&self) {
        self.0.evicted.cancel();
        self.0.reader.wake();
    }

    /// Whether the connection was evicted (it may not be gone yet).
    pub(crate) fn is_evicted(&self) -> bool {
        self.0.evicted.is_cancelled()
    }

    /// Done when the connection is evicted.
    pub(crate) fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.0.evicted.cancelled()
    }

    /// Since when the connection carries no stream, if it carries none and
    /// is still up to anyone to end: what the port evicts by, oldest first.
    pub(crate) fn evictable_since(&self) -> Option<Instant> {
        if self.is_evicted() || !self.0.slotted.load(Ordering::Acquire) {
            return None;
        }
        self.idle_since()
    }

    /// Whether anything but the caller still holds this connection's
    /// activity: false once the connection is gone.
    pub(crate) fn in_use(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// Counts a stream until the guard is dropped.
    pub(crate) fn stream(&self) -> StreamGuard {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// When the connection has carried no stream since, if it carries none.
    fn idle_since(&self) -> Option<Instant> {
        if self.0.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        // Again: a stream that opened meanwhile is not idle, whatever the
        // stamp says (on a runtime with several threads).
        (self.0.open.load(Ordering::Acquire) == 0).then_some(since)
    }
}

/// One open stream of a connection; see [`Activity::stream`].
#[derive(Debug)]
pub(crate) struct StreamGuard(Activity);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // The stamp first: a reader that sees no stream open also sees
        // when the last one ended.
        *self.0.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if self.0.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.reader.wake();
        }
    }
}

/// The clock of an idle connection: armed for a deadline, re-armed when
/// the connection was busy meanwhile.
struct IdleLimit {
    activity: Activity,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl IdleLimit {
    /// Ready (with the error to end the connection on) once the connection
    /// has carried no stream for the limit. Only looks at the clock while
    /// no stream is open; while one is, the reader's waker is left for the
    /// last stream's guard, which wakes it to arm the timer.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        // Registered also while idle, and before the look: an eviction
        // wakes the reader.
        self.activity.0.reader.register(cx.waker());
        // A stream that opened after the eviction was decided (its
        // headers were on their way) is served to its end; the last
        // stream's guard then wakes the reader, which ends here.
        if self.activity.is_evicted() && self.activity.idle_since().is_some() {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "ended for a newer connection: the port is full and this one carried nothing",
            ));
        }
        let since = match self.activity.idle_since() {
            Some(since) => since,
            None => {
                // The last stream may have ended before the register: then
                // nobody will wake us for it, so the timer is armed now.
                match self.activity.idle_since() {
                    Some(since) => since,
                    None => return Poll::Pending,
                }
            }
        };
        let deadline = since + self.limit;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no stream on this connection for {:?}", self.limit),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A byte stream either server can serve.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An accepted connection, ready for a server: the stream, who is on the
/// other end (read once, at accept), and whatever must live as long as the
/// connection (the peer port's connection slots).
pub(crate) struct Served {
    io: Box<dyn Io>,
    info: ConnInfo,
    idle: Option<IdleLimit>,
    _held: Box<dyn Send>,
}

/// What both servers take connections from.
pub(crate) type Incoming = Pin<Box<dyn Stream<Item = io::Result<Served>> + Send>>;

impl Served {
    /// `io`, holding `held` until the connection is dropped.
    pub(crate) fn new(io: impl Io, info: ConnInfo, held: impl Send + 'static) -> Served {
        Served { io: Box::new(io), info, idle: None, _held: Box::new(held) }
    }

    /// Ends the connection (its next read fails) once `activity` shows no
    /// stream for `limit`: a connection that holds a slot must be used.
    /// The timer (armed while no stream is open, and when the last one
    /// ends) wakes the reader even if no byte ever comes.
    pub(crate) fn closed_when_idle(mut self, activity: Activity, limit: Duration) -> Served {
        let timer = Box::pin(tokio::time::sleep(limit));
        self.idle = Some(IdleLimit { activity, limit, timer });
        self
    }

    /// A control-socket connection, with its client's uid, holding `held`
    /// (its connection slot) until it is dropped.
    pub(crate) fn local(stream: UnixStream, held: impl Send + 'static) -> Served {
        let uid = stream.peer_cred().ok().map(|cred| cred.uid());
        Served::new(stream, ConnInfo::Local { uid }, held)
    }
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Connected for Served {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Served {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(idle) = &mut this.idle
            && let Poll::Ready(e) = idle.poll_expired(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Served {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_ended_once_it_carries_no_stream_for_its_limit() {
        let limit = Duration::from_secs(10);
        let mut buf = [0u8; 8];
        let timed_out =
            |r: io::Result<usize>| r.is_err_and(|e| e.kind() == io::ErrorKind::TimedOut);

        // Never used: ended `limit` after it was accepted, without a byte.
        let (a, _b) = UnixStream::pair().expect("socket pair");
        let started = Instant::now();
        let mut unused = Served::local(a, ()).closed_when_idle(Activity::new(), limit);
        assert!(timed_out(unused.read(&mut buf).await));
        assert_eq!(started.elapsed(), limit);

        // In use: never ended; once its last stream ends, `limit` later.
        let (a, _b) = UnixStream::pair().expect("socket pair");
        let activity = Activity::new();
        let mut used = Served::local(a, ()).closed_when_idle(activity.clone(), limit);
        let stream = activity.stream();
        let quiet = tokio::time::timeout(6 * limit, used.read(&mut buf)).await;
        assert!(quiet.is_err(), "a connection with a stream open is not ended: {quiet:?}");
        drop(stream);
        let ended = Instant::now();
        assert!(timed_out(used.read(&mut buf).await));
        assert_eq!(ended.elapsed(), limit);
    }

    /// The last stream's end arms the timer of a read already waiting: no
    /// byte, no other wake-up needed.
    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_last_stream_starts_the_clock_of_a_waiting_read() {
        let limit = Duration::from_secs(10);
        let (a, _b) = UnixStream::pair().expect("socket pair");
        let activity = Activity::new();
        let mut served = Served::local(a, ()).closed_when_idle(activity.clone(), limit);
        let stream = activity.stream();
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(stream);
        });
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(6 * limit, served.read(&mut buf)).await;
        let ended = read.expect("ended, not left waiting");
        assert!(ended.is_err_and(|e| e.kind() == io::ErrorKind::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(1) + limit);
    }

    /// Evicted while idle: the waiting read ends at once. A connection
    /// carrying a stream is never offered for eviction.
    #[tokio::test(start_paused = true)]
    async fn an_evicted_connection_ends_at_once_and_only_an_idle_one_is_offered() {
        let limit = Duration::from_secs(10);
        let (a, _b) = UnixStream::pair().expect("socket pair");
        let activity = Activity::new();
        let mut served = Served::local(a, ()).closed_when_idle(activity.clone(), limit);
        let stream = activity.stream();
        assert_eq!(activity.evictable_since(), None, "busy: not offered");
        drop(stream);
        assert!(activity.evictable_since().is_some(), "idle: offered");
        assert!(activity.in_use(), "the connection holds it");
        let started = Instant::now();
        let evicting = activity.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            evicting.evict();
        });
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(limit / 2, served.read(&mut buf)).await;
        let ended = read.expect("ended by the eviction, not by the idle limit");
        assert!(ended.is_err_and(|e| e.kind() == io::ErrorKind::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(activity.evictable_since(), None, "evicted once");
        drop(served);
        assert!(!activity.in_use(), "gone with its connection");
    }

    #[tokio::test]
    async fn a_local_connection_carries_its_uid_and_its_bytes() {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let mut served = Served::local(a, ());
        let ConnInfo::Local { uid } = served.connect_info() else {
            panic!("a Unix connection is local");
        };
        assert_eq!(uid, Some(crate::config::uid()));
        let mut b = b;
        b.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        served.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        served.write_all(b"pong").await.expect("write back");
        b.read_exact(&mut got).await.expect("read back");
        assert_eq!(&got, b"pong");
    }
}
