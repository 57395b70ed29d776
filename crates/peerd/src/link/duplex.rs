//! [`Link`]: both halves of one open conversation stream. The driver
//! polls a link's inbound half itself, so a frame goes from the
//! connection straight to the session, without a reader task and a
//! channel in between (one task hop less on each end of every round trip);
//! frames towards the peer go into a bounded queue that tonic's connection
//! task drains.

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
    out: Option<mpsc::Sender<pb::Frame>>,
    /// `None` once it ended: it was reported, and is not polled again.
    inbound: Option<Inbound>,
}

/// The peer's frames: tonic's `Streaming` on a real link, a channel in the
/// driver's tests.
pub(crate) type Inbound = Pin<Box<dyn Stream<Item = Result<pb::Frame, Status>> + Send>>;

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
        out: mpsc::Sender<pb::Frame>,
        inbound: impl Stream<Item = Result<pb::Frame, Status>> + Send + 'static,
    ) -> Link {
        Link { out: Some(out), inbound: Some(Box::pin(inbound)) }
    }

    /// Queues `frame` towards the peer without waiting.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), SendFailed> {
        let Some(out) = &self.out else { return Err(SendFailed::Closed) };
        out.try_send(frames::to_wire(frame)).map_err(|e| match e {
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
    /// because the peer broke the protocol), then `Pending` for good.
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Frame, LinkDown>> {
        let Some(stream) = self.inbound.as_mut() else {
            return Poll::Pending;
        };
        let why = match stream.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => match frames::from_wire(frame) {
                Ok(frame) => return Poll::Ready(Ok(frame)),
                Err(v) => LinkDown::Error(v.to_string()),
            },
            Poll::Ready(Some(Err(status))) => LinkDown::Error(describe(&status)),
            Poll::Ready(None) => LinkDown::EndOfStream,
        };
        self.inbound = None;
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
