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
use std::task::{Context, Poll};

use peerchat::v1 as pb;
use peerchat_core::session::{Frame, LinkDown};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use super::frames;

/// One open link: where frames to the peer go, and where the peer's come
/// from.
pub(crate) struct Link {
    /// `None` once our half is closed.
    out: Option<mpsc::Sender<Outbound>>,
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

/// Why a frame could not be queued towards the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFailed {
    /// The peer let [`super::SEND_QUEUE`] frames pile up: it is not
    /// reading.
    Full,
    /// Our half is closed, or the stream is gone (its inbound half tells
    /// why).
    Closed,
}

impl Link {
    pub(crate) fn new(
        out: mpsc::Sender<Outbound>,
        inbound: impl Stream<Item = Result<pb::Frame, Status>> + Send + 'static,
    ) -> Link {
        Link { out: Some(out), inbound: Some(Box::pin(inbound)) }
    }

    /// Queues `frame` towards the peer without waiting.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), SendFailed> {
        let Some(out) = &self.out else { return Err(SendFailed::Closed) };
        out.try_send(Ok(frames::to_wire(frame))).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendFailed::Full,
            mpsc::error::TrySendError::Closed(_) => SendFailed::Closed,
        })
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
                let _ = out.try_send(Err(answer));
            }
        }
        Poll::Ready(Err(why))
    }
}

/// A human reason for a stream error. A status tonic made on our side from
/// a transport failure (reset, keepalive timeout, the peer's process gone)
/// carries the failure as its source, one the peer sent does not: say
/// which, and keep the detail.
fn describe(status: &tonic::Status) -> String {
    let msg = status.message();
    if status.source().is_some() {
        format!("the connection to the peer broke ({msg})")
    } else if msg.is_empty() {
        format!("{:?}", status.code())
    } else {
        msg.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Code;

    use super::*;

    /// A link whose inbound frames the test feeds, and the receiving end
    /// of what it sends.
    fn wired() -> (Link, mpsc::Sender<Result<pb::Frame, Status>>, mpsc::Receiver<Outbound>) {
        let (out, sent) = mpsc::channel(8);
        let (feed, inbound) = mpsc::channel(8);
        (Link::new(out, ReceiverStream::new(inbound)), feed, sent)
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
        let status = sent.recv().await.expect("a status").expect_err("not a frame");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "protocol violation: empty frame");
        assert!(sent.recv().await.is_none(), "our half ends after the status");
        assert_eq!(link.try_send(Frame::Ping(1)), Err(SendFailed::Closed));
    }

    #[tokio::test]
    async fn what_tonic_refused_goes_back_with_its_code_and_a_clean_end_does_not() {
        let (mut link, feed, mut sent) = wired();
        feed.send(Err(Status::out_of_range("decoded message length too large")))
            .await
            .expect("feeding");
        next_end(&mut link).await;
        let status = sent.recv().await.expect("a status").expect_err("not a frame");
        assert_eq!(status.code(), Code::OutOfRange);

        let (mut link, feed, mut sent) = wired();
        drop(feed);
        assert_eq!(next_end(&mut link).await, LinkDown::EndOfStream);
        link.try_send(Frame::Ping(7)).expect("our half is still open");
        assert!(matches!(sent.recv().await, Some(Ok(_))), "a frame, no status");
    }
}
