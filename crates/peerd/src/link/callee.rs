//! The answering side of a link: the `Chat` service. A dial is admitted
//! only while a slot for pending handshakes is free, must say hello (of our
//! protocol version) within the handshake timeout, and is offered to
//! whoever holds the [`Offer`] channel (the driver), who accepts it only
//! when we are in no conversation. Every refusal is a typed [`Refusal`].

use std::pin::Pin;
use std::sync::Arc;

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::identity::fingerprint;
use peerchat_core::session::AcceptError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::duplex::Link;
use super::listener::PeerConnectInfo;
use super::per_source::PerSource;
use super::refusal::{Reason, Refusal};
use super::{
    HANDSHAKE_TIMEOUT, MAX_PENDING_DIALS, MAX_PENDING_DIALS_PER_SOURCE, PROTOCOL_VERSION,
    SEND_QUEUE,
};
use crate::directory::{self, Directories, Listing};
use crate::known_peers::{KnownPeers, Verdict, changed_message};
use crate::tls::PublicKey;

/// A verified dialer's link, offered for a conversation. Whoever takes it
/// answers on `reply`; dropping the offer unanswered means shutting down.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) peer: Name,
    pub(crate) link: Link,
    pub(crate) reply: oneshot::Sender<Result<(), AcceptError>>,
}

/// Where offers go: the driver reads them.
pub(crate) type OfferTx = mpsc::Sender<Offer>;

/// The `Chat` service of this daemon.
#[derive(Debug, Clone)]
pub(crate) struct ChatService {
    offers: OfferTx,
    me: Name,
    pending: Arc<Semaphore>,
    pending_per_source: PerSource,
    directory: Directories,
    known: KnownPeers,
}

impl ChatService {
    pub(crate) fn new(
        offers: OfferTx,
        me: Name,
        directory: Directories,
        known: KnownPeers,
    ) -> ChatService {
        let pending = Arc::new(Semaphore::new(MAX_PENDING_DIALS));
        let pending_per_source = PerSource::new(MAX_PENDING_DIALS_PER_SOURCE);
        ChatService { offers, me, pending, pending_per_source, directory, known }
    }

    /// Is the dialer who it says it is? Its TLS key must be the one the
    /// directory binds to the name, and the one we know if we know one.
    async fn check_dialer(&self, name: &Name, key: &PublicKey) -> Result<(), Refusal> {
        let unverified = |why: String| Refusal::new(Reason::Unverified, why);
        if let Verdict::Changed { known } = self.known.check(name, key) {
            return Err(unverified(changed_message(name, &known, key)));
        }
        match directory::lookup(&self.directory, name.as_str()).await {
            Listing::Online(peer) => {
                if peer.public_key.as_slice() != key.as_slice() {
                    return Err(unverified(format!(
                        "you are not {name}: your key {} is not the one the directory binds to {name}",
                        fingerprint(key)
                    )));
                }
            }
            // Without the directory, a key we already know is enough.
            _ if self.known.check(name, key) == Verdict::Known => {}
            Listing::NotOnline => {
                return Err(unverified(format!(
                    "cannot verify {name}: it is not registered in the directory"
                )));
            }
            Listing::Unknown(why) => {
                return Err(Refusal::new(
                    Reason::CannotVerify,
                    format!(
                        "cannot verify {name}: the directory is unreachable ({why}) and its key is new to us"
                    ),
                ));
            }
        }
        if let Err(e) = self.known.remember(name, key) {
            tracing::warn!(error = %e, "cannot record the peer's key");
        }
        Ok(())
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
        let info = request.extensions().get::<PeerConnectInfo>().cloned();
        let remote = info.as_ref().and_then(|i| i.remote);
        // Not "busy": that means "in another conversation" to dialers.
        let full =
            || Refusal::new(Reason::TooManyDials, "too many dials in progress; try again shortly");
        let _source_slot = match remote {
            Some(addr) => Some(self.pending_per_source.try_take(addr.ip()).ok_or_else(full)?),
            None => None,
        };
        let _slot = self.pending.clone().try_acquire_owned().map_err(|_| full())?;
        let key = info
            .and_then(|i| i.key)
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let mut inbound = request.into_inner();
        let bad_hello = |why: String| Refusal::new(Reason::BadHello, why);
        let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Refusal::new(Reason::NoHello, "no hello in time").into()),
            Ok(Err(s)) => return Err(s),
            Ok(Ok(None)) => return Err(Status::cancelled("the stream ended before hello")),
            Ok(Ok(Some(f))) => f,
        };
        let Some(pb::frame::Kind::Hello(hello)) = first.kind else {
            return Err(bad_hello("the first frame must be a hello".into()).into());
        };
        if hello.version != PROTOCOL_VERSION {
            tracing::info!(?remote, version = hello.version, "refused a dial of another version");
            return Err(Refusal::version(hello.version, PROTOCOL_VERSION).into());
        }
        let peer = Name::parse(&hello.name).map_err(|e| bad_hello(e.to_string()))?;
        if !hello.to.is_empty() && !self.me.matches(&hello.to) {
            let why = format!("this is {}, not {}", self.me, hello.to);
            return Err(Refusal::new(Reason::WrongPeer, why).into());
        }
        self.check_dialer(&peer, &key).await?;
        let (out, out_rx) = mpsc::channel(SEND_QUEUE);
        let (reply, answer) = oneshot::channel();
        let shutting_down = || Refusal::new(Reason::ShuttingDown, "peerd is shutting down");
        let offer = Offer { peer: peer.clone(), link: Link::new(out, inbound), reply };
        if self.offers.send(offer).await.is_err() {
            return Err(shutting_down().into());
        }
        match answer.await {
            Ok(Ok(())) => tracing::info!(%peer, ?remote, "accepted a conversation"),
            Ok(Err(AcceptError::Busy { me })) => {
                let why = format!("{me} is busy in another conversation");
                return Err(Refusal::new(Reason::Busy, why).into());
            }
            Ok(Err(AcceptError::Yourself)) => {
                let why = "a peer cannot connect to itself";
                return Err(Refusal::new(Reason::Yourself, why).into());
            }
            Err(_) => return Err(shutting_down().into()),
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx).map(Ok))))
    }
}
