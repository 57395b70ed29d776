//! The answering side of a link: the `Chat` service. A dial is admitted
//! only while a slot for pending handshakes is free, must say hello within
//! the handshake timeout, and is accepted by the driver only when we are in
//! no conversation ("busy" otherwise).

use std::pin::Pin;
use std::sync::Arc;

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::session::AcceptError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::dial::read_frames;
use super::{HANDSHAKE_TIMEOUT, MAX_PENDING_DIALS, SEND_QUEUE};
use crate::driver::{DriverTx, Input};

/// The `Chat` service of this daemon.
#[derive(Debug, Clone)]
pub(crate) struct ChatService {
    driver: DriverTx,
    me: Name,
    pending: Arc<Semaphore>,
}

impl ChatService {
    pub(crate) fn new(driver: DriverTx, me: Name) -> ChatService {
        ChatService { driver, me, pending: Arc::new(Semaphore::new(MAX_PENDING_DIALS)) }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::Frame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::chat_server::Chat for ChatService {
    type ConverseStream = FrameStream;

    async fn converse(
        &self,
        request: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let _slot = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("busy: too many dials in progress"))?;
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no hello in time")),
            Ok(Err(s)) => return Err(s),
            Ok(Ok(None)) => return Err(Status::cancelled("the stream ended before hello")),
            Ok(Ok(Some(f))) => f,
        };
        let Some(pb::frame::Kind::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument("the first frame must be a hello"));
        };
        let peer = Name::parse(&hello.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !hello.to.is_empty() && !self.me.matches(&hello.to) {
            return Err(Status::failed_precondition(format!(
                "this is {}, not {}",
                self.me, hello.to
            )));
        }
        let (out, out_rx) = mpsc::channel(SEND_QUEUE);
        let (link_tx, link_rx) = oneshot::channel();
        let driver = self.driver.clone();
        let reader = tokio::spawn(async move {
            if let Ok(link) = link_rx.await {
                read_frames(link, inbound, driver).await;
            }
        });
        let (reply, answer) = oneshot::channel();
        let hello = Input::Hello { peer: peer.clone(), out, reader: reader.abort_handle(), reply };
        if self.driver.send(hello).await.is_err() {
            reader.abort();
            return Err(Status::unavailable("peerd is shutting down"));
        }
        match answer.await {
            Ok(Ok((link, _))) => {
                tracing::info!(%peer, "accepted a conversation");
                let _ = link_tx.send(link);
            }
            Ok(Err(AcceptError::Busy { me })) => {
                reader.abort();
                return Err(Status::failed_precondition(format!(
                    "{me} is busy in another conversation"
                )));
            }
            Ok(Err(AcceptError::Yourself)) => {
                reader.abort();
                return Err(Status::invalid_argument("a peer cannot connect to itself"));
            }
            Err(_) => {
                reader.abort();
                return Err(Status::unavailable("peerd is shutting down"));
            }
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx).map(Ok))))
    }
}
