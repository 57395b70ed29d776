//! Reading a link: the driver polls each link's inbound stream itself, so
//! a frame goes from the connection straight to the session, without a
//! reader task and a channel in between (one task hop less on each end of
//! every round trip).

use std::pin::Pin;
use std::task::{Context, Poll};

use peerchat::v1 as pb;
use peerchat_core::session::{Frame, LinkDown};
use tokio_stream::Stream;
use tonic::Streaming;

use super::frames;

/// A link's frames from the peer, until the link ends.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// `None` once it ended: it was reported, and is not polled again.
    /// Boxed: the stream is a couple of hundred bytes, and it travels to
    /// the driver inside an input, which is that size in the queue.
    stream: Option<Box<Streaming<pb::Frame>>>,
}

impl Inbound {
    pub(crate) fn new(stream: Streaming<pb::Frame>) -> Inbound {
        Inbound { stream: Some(Box::new(stream)) }
    }

    /// The next frame; `Err` once, when the link ends (cleanly or not, or
    /// because the peer broke the protocol), then `Pending` for good.
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Frame, LinkDown>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Pending;
        };
        let why = match Pin::new(&mut **stream).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => match frames::from_wire(frame) {
                Ok(frame) => return Poll::Ready(Ok(frame)),
                Err(v) => LinkDown::Error(v.to_string()),
            },
            Poll::Ready(Some(Err(status))) => LinkDown::Error(describe(&status)),
            Poll::Ready(None) => LinkDown::EndOfStream,
        };
        self.stream = None;
        Poll::Ready(Err(why))
    }
}

/// A human reason for a stream error. Transport failures (reset, keepalive
/// timeout, the peer's process gone) all surface as h2 errors; say so
/// plainly and keep the detail.
fn describe(status: &tonic::Status) -> String {
    let msg = status.message();
    if msg.contains("h2 protocol error") || msg.contains("transport error") {
        format!("the connection to the peer broke ({msg})")
    } else if msg.is_empty() {
        format!("{:?}", status.code())
    } else {
        msg.to_owned()
    }
}
