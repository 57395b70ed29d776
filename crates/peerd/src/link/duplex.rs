//! [`Link`]: both halves of one open conversation stream. The driver
//! polls a link's inbound half itself, so a frame goes from the
//! connection straight to the session, without a reader task and a
//! channel in between (one task hop less on each end of every round trip);
//! frames towards the peer go into a bounded queue that tonic's connection
//! task drains. A link that ends because of what the peer sent ends our
//! half with a status that says so (`INVALID_ARGUMENT: protocol
//! violation: …`), not a clean end the peer would take for a lost link.

use std::error::Error as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use peerchat::transport::Broken;
use peerchat::v1 as pb;
use peerchat_core::session::{Frame, LinkDown};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use super::{SEND_QUEUE, SEND_QUEUE_BYTES, frames};

/// One open link: where frames to the peer go, and where the peer's come
/// from.
pub(crate) struct Link {
    /// `None` once our half is closed.
    out: Option<Outbox>,
    /// `None` once it ended: it was reported, and is not polled again.
    inbound: Option<Inbound>,
}

/// The peer's frames: tonic's `Streaming` on a real link, a channel in the
/// driver's tests.
pub(crate) type Inbound = Pin<Box<dyn Stream<Item = Result<pb::Frame, Status>> + Send>>;

/// What goes towards the peer: frames, and at most one status, last. The
/// callee's response carries the status to the dialer; a dialer's request
/// stream cannot carry one (gRPC has no client status), so it ends there.
pub(crate) type Outbound = Result<pb::Frame, Status>;

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("sending", &self.out.is_some())
            .field("receiving", &self.inbound.is_some())
            .finish()
    }
}

/// A new queue towards the peer: where the link puts frames, and the
/// stream tonic sends them from.
pub(crate) fn outbox() -> (Outbox, Outgoing) {
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    (Outbox { tx, queued: queued.clone() }, Outgoing { rx, queued })
}

/// The sending end of the queue towards the peer, bounded by frames
/// ([`SEND_QUEUE`]) and by their bytes ([`SEND_QUEUE_BYTES`]): a peer that
/// sends many messages and reads nothing makes us queue receipts for them,
/// each frame up to a few thousand ids, and the count alone would let that
/// grow past a gigabyte.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Each frame with its bytes, counted once.
    tx: mpsc::Sender<(usize, Outbound)>,
    /// Bytes of the frames queued and not yet taken by tonic.
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// Queues `frame` without waiting.
    pub(crate) fn try_push(&self, frame: pb::Frame) -> Result<(), SendFailed> {
        let len = frame.encoded_len();
        if self.queued.load(Ordering::Relaxed) + len > SEND_QUEUE_BYTES {
            return Err(SendFailed::Full);
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send((len, Ok(frame))).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => SendFailed::Full,
                mpsc::error::TrySendError::Closed(_) => SendFailed::Closed,
            }
        })
    }

    /// Queues the status that ends our half, if there is room.
    fn try_end(&self, status: Status) {
        let _ = self.tx.try_send((0, Err(status)));
    }
}

/// What tonic sends to the peer: the queue's frames, then maybe a status.
pub(crate) struct Outgoing {
    rx: mpsc::Receiver<(usize, Outbound)>,
    queued: Arc<AtomicUsize>,
}

impl Stream for Outgoing {
    type Item = Outbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        self.rx.poll_recv(cx).map(|next| {
            next.map(|(len, item)| {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                item
            })
        })
    }
}

/// Why a frame could not be queued towards the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFailed {
    /// The peer let [`SEND_QUEUE`] frames or [`SEND_QUEUE_BYTES`] bytes
    /// pile up: it is not reading.
    Full,
    /// Our half is closed, or the stream is gone (its inbound half tells
    /// why).
    Closed,
}

impl Link {
    pub(crate) fn new(
        out: Outbox,
        inbound: impl Stream<Item = Result<pb::Frame, Status>> + Send + 'static,
    ) -> Link {
        Link { out: Some(out), inbound: Some(Box::pin(inbound)) }
    }

    /// Queues `frame` towards the peer without waiting.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), SendFailed> {
        let Some(out) = &self.out else { return Err(SendFailed::Closed) };
        out.try_push(frames::to_wire(frame))
    }

    /// Ends our half: what was queued still goes out, then the stream's
    /// end.
    pub(crate) fn close_send(&mut self) {
        self.out = None;
    }

    /// The next frame; `Err` once, when the link ends (cleanly or not, or
    /// because the peer broke the protocol), then `Pending` for good. A
    /// frame that breaks the rules, or one tonic could not decode (over
    /// the size limit, not protobuf), also ends our half, with the status
    /// that says why.
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Frame, LinkDown>> {
        let Some(stream) = self.inbound.as_mut() else {
            return Poll::Pending;
        };
        let (why, answer) = match stream.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => match frames::from_wire(frame) {
                Ok(frame) => return Poll::Ready(Ok(frame)),
                Err(v) => {
                    let why = v.to_string();
                    (LinkDown::Error(why.clone()), Some(Status::invalid_argument(why)))
                }
            },
            Poll::Ready(Some(Err(status))) => {
                // With a source it is a transport failure: nothing more
                // can reach the peer. Without, tonic refused what the peer
                // sent (or, on a dialer, the peer ended with it).
                let answer = status
                    .source()
                    .is_none()
                    .then(|| Status::new(status.code(), status.message().to_owned()));
                (LinkDown::Error(describe(&status)), answer)
            }
            Poll::Ready(None) => (LinkDown::EndOfStream, None),
        };
        self.inbound = None;
        // A clean end leaves our half open: the session may still say
        // goodbye on it.
        if let Some(answer) = answer {
            // A full queue (the peer stopped reading) loses the status,
            // not the end: `out` is dropped either way.
            if let Some(out) = self.out.take() {
                out.try_end(answer);
            }
        }
        Poll::Ready(Err(why))
    }
}

/// A human reason for a stream error. A status tonic made on our side from
/// a transport failure (the peer's process gone, keepalive pings
/// unanswered, a reset) carries the failure as its source, and its typed
/// cause ([`Broken`]) says which; one the peer sent does not.
fn describe(status: &tonic::Status) -> String {
    let msg = status.message();
    if let Some(broken) = Broken::of(status) {
        broken_words(broken)
    } else if status.source().is_some() {
        format!("the connection to the peer broke: {msg}")
    } else if msg.is_empty() {
        format!("{:?}", status.code())
    } else {
        msg.to_owned()
    }
}

/// What a broken link says to the user. Links are TLS: a peer that went
/// away shows as `Closed`, so `Dropped` is our keepalive giving up. Neither
/// says whose fault it was: after a freeze (a laptop that slept) it is our
/// own keepalive or the peer's closing that tells the sleeper.
pub(super) fn broken_words(broken: Broken) -> String {
    match broken {
        Broken::Closed => "the connection closed without a goodbye".to_owned(),
        Broken::Dropped => "keepalive pings went unanswered".to_owned(),
        Broken::Reset => "the connection to the peer was reset".to_owned(),
        Broken::Ended { reason, connection: false } => {
            format!("the peer ended the stream: HTTP/2 {reason}")
        }
        Broken::Ended { reason, connection: true } => {
            format!("the peer ended the connection: HTTP/2 {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Code;

    use super::*;

    /// A link whose inbound frames the test feeds, and the receiving end
    /// of what it sends.
    fn wired() -> (Link, mpsc::Sender<Result<pb::Frame, Status>>, Outgoing) {
        let (out, sent) = outbox();
        let (feed, inbound) = mpsc::channel(8);
        (Link::new(out, ReceiverStream::new(inbound)), feed, sent)
    }

    #[tokio::test]
    async fn frames_the_peer_does_not_take_are_bounded_by_bytes() {
        let (link, _feed, mut sent) = wired();
        let ids = |n: usize| (0..n).map(|i| format!("{i:032}").into()).collect::<Vec<_>>();
        let receipt = || Frame::Receipt {
            kind: peerchat_core::session::ReceiptKind::Delivered,
            ids: ids(peerchat_core::session::MAX_RECEIPT_IDS),
        };
        let one = frames::to_wire(receipt()).encoded_len();
        let fit = SEND_QUEUE_BYTES / one;
        assert!(fit < SEND_QUEUE, "the bytes bound first: {fit} frames of {one} bytes");
        for i in 0..fit {
            link.try_send(receipt()).unwrap_or_else(|e| panic!("frame {i}: {e:?}"));
        }
        assert_eq!(link.try_send(receipt()), Err(SendFailed::Full));
        // What tonic takes makes room again.
        assert!(matches!(sent.next().await, Some(Ok(_))));
        link.try_send(receipt()).expect("room for one more");
        assert_eq!(link.try_send(receipt()), Err(SendFailed::Full));
    }

    async fn next_end(link: &mut Link) -> LinkDown {
        match std::future::poll_fn(|cx| link.poll_frame(cx)).await {
            Ok(frame) => panic!("a frame, not the end: {frame:?}"),
            Err(why) => why,
        }
    }

    #[tokio::test]
    async fn a_frame_that_breaks_the_rules_ends_our_half_with_invalid_argument() {
        let (mut link, feed, mut sent) = wired();
        feed.send(Ok(pb::Frame { kind: None })).await.expect("feeding");
        let why = next_end(&mut link).await;
        assert!(matches!(&why, LinkDown::Error(e) if e.contains("empty frame")), "{why:?}");
        let status = sent.next().await.expect("a status").expect_err("not a frame");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "protocol violation: empty frame");
        assert!(sent.next().await.is_none(), "our half ends after the status");
        assert_eq!(link.try_send(Frame::Ping(1)), Err(SendFailed::Closed));
    }

    #[tokio::test]
    async fn what_tonic_refused_goes_back_with_its_code_and_a_clean_end_does_not() {
        let (mut link, feed, mut sent) = wired();
        feed.send(Err(Status::out_of_range("decoded message length too large")))
            .await
            .expect("feeding");
        next_end(&mut link).await;
        let status = sent.next().await.expect("a status").expect_err("not a frame");
        assert_eq!(status.code(), Code::OutOfRange);

        let (mut link, feed, mut sent) = wired();
        drop(feed);
        assert_eq!(next_end(&mut link).await, LinkDown::EndOfStream);
        link.try_send(Frame::Ping(7)).expect("our half is still open");
        assert!(matches!(sent.next().await, Some(Ok(_))), "a frame, no status");
    }

    #[tokio::test]
    async fn a_broken_connection_says_how_it_broke_and_sends_nothing_back() {
        let cases = [
            (std::io::ErrorKind::UnexpectedEof, "the connection closed without a goodbye"),
            (std::io::ErrorKind::BrokenPipe, "keepalive pings went unanswered"),
            (std::io::ErrorKind::ConnectionReset, "the connection to the peer was reset"),
        ];
        for (kind, words) in cases {
            let (mut link, feed, mut sent) = wired();
            // As tonic makes it: a generic message, the cause as its source.
            let mut status = Status::unknown("h2 protocol error: error reading a body");
            status.set_source(Arc::new(std::io::Error::new(kind, "as h2 says it")));
            feed.send(Err(status)).await.expect("feeding");
            let why = next_end(&mut link).await;
            assert!(
                matches!(&why, LinkDown::Error(e) if e.starts_with(words)),
                "{kind:?}: {why:?}"
            );
            drop(link);
            assert!(sent.next().await.is_none(), "{kind:?}: nothing goes back on a broken link");
        }
        // A failure it cannot name keeps tonic's words.
        let (mut link, feed, _sent) = wired();
        let mut status = Status::unknown("something odd");
        status.set_source(Arc::new(std::io::Error::other("odd")));
        feed.send(Err(status)).await.expect("feeding");
        let why = next_end(&mut link).await;
        assert_eq!(why, LinkDown::Error("the connection to the peer broke: something odd".into()));
    }
}
