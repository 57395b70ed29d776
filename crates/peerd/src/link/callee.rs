//! The answering side of a link: the `Chat` service. A dial must say hello
//! (of our protocol version) within the handshake timeout, then wait for a
//! slot for pending dials; only with one does its stream keep its
//! connection in use, while the directory vouches for its key. It is then
//! offered to whoever holds the [`Offer`] channel (the driver), who accepts
//! it only when we are in no conversation. Every refusal is a typed
//! [`Refusal`].
//!
//! The driver may also answer that the user is being asked (consent,
//! `peerd --accept known|ask`): the call then answers at once with an
//! `Asking` frame, and either the welcome follows on the link, or the call
//! ends with the verdict the driver sends ([`Declined`]).

use std::future::Future as _;
use std::pin::Pin;

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::session::{AcceptError, DialKind, EndedHow};
use peerchat_core::source::Source;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::dialer_check::DialerCheck;
use super::duplex::{self, Link};
use super::pending::PendingDials;
use super::refusal::{Reason, Refusal};
use super::{HANDSHAKE_TIMEOUT, PROTOCOL_VERSION};
use crate::consent::ASK_TIMEOUT;
use crate::directory::Directories;
use crate::known_peers::KnownPeers;
use crate::served::ConnInfo;
use crate::tls::PublicKey;

/// A verified dialer's link, offered for a conversation. Whoever takes it
/// answers on `reply`; dropping the offer unanswered means shutting down.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) peer: Name,
    /// Where the dial came from (`None`: no address to count it by).
    pub(crate) source: Option<Source>,
    pub(crate) link: Link,
    /// We have talked to this peer's key before (it is in known-peers).
    pub(crate) known: bool,
    /// What the dial is for, as its Hello says.
    pub(crate) kind: DialKind,
    /// Records the dialer's key in known-peers: the taker calls it once it
    /// takes the conversation, not before (a stranger who was turned down
    /// must not become "known").
    pub(crate) pin: KeyPin,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// The answer to an [`Offer`].
#[derive(Debug)]
pub(crate) enum Answer {
    /// The conversation is on: the welcome is the link's first frame.
    Accepted,
    Refused(AcceptError),
    /// The user is being asked. The taker keeps the link; if the answer is
    /// no it drops the link and says why on the receiver; if yes, it
    /// welcomes the dialer on the link and drops the sender.
    Asking(oneshot::Receiver<Declined>),
}

/// Why a dial that waited for the user's answer was turned down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Declined {
    /// The user said no, or did not answer in time.
    NotAccepted,
    /// The user accepted, but we had become busy meanwhile (or the dialer
    /// is blocked, which it is not told).
    Busy,
    ShuttingDown,
}

/// The dialer's key, to be recorded in known-peers once it is taken.
#[derive(Debug)]
pub(crate) struct KeyPin(Option<(KnownPeers, Name, PublicKey)>);

impl KeyPin {
    /// Records nothing (the driver's tests).
    #[cfg(test)]
    pub(crate) fn none() -> KeyPin {
        KeyPin(None)
    }

    /// In memory at once; on disk in the background.
    pub(crate) fn record(self) {
        if let Some((known, name, key)) = self.0 {
            known.remember(&name, &key);
        }
    }
}

/// The end of an asking call: nothing if the user accepted (the stream
/// ended with the conversation), the refusal if not.
struct VerdictStream {
    declined: Option<oneshot::Receiver<Declined>>,
    me: Name,
}

impl Stream for VerdictStream {
    type Item = Result<pb::Frame, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(rx) = self.declined.as_mut() else { return std::task::Poll::Ready(None) };
        let verdict = std::task::ready!(Pin::new(rx).poll(cx));
        self.declined = None;
        let me = &self.me;
        std::task::Poll::Ready(match verdict {
            Ok(Declined::NotAccepted) => {
                let why = format!("{me} did not accept");
                Some(Err(Refusal::new(Reason::NotAccepted, why).into()))
            }
            Ok(Declined::Busy) => Some(Err(busy(me).into())),
            Ok(Declined::ShuttingDown) => {
                Some(Err(Refusal::new(Reason::ShuttingDown, "peerd is shutting down").into()))
            }
            Err(_) => None,
        })
    }
}

fn busy(me: &Name) -> Refusal {
    Refusal::new(Reason::Busy, format!("{me} is busy in another conversation"))
}

/// Where offers go: the driver reads them.
pub(crate) type OfferTx = mpsc::Sender<Offer>;

/// The `Chat` service of this daemon.
#[derive(Debug, Clone)]
pub(crate) struct ChatService {
    offers: OfferTx,
    me: Name,
    pending: PendingDials,
    /// Whether a dialer is who it says it is.
    dialers: DialerCheck,
    /// Where a taken dialer's key is recorded.
    known: KnownPeers,
}

impl ChatService {
    pub(crate) fn new(
        offers: OfferTx,
        me: Name,
        directory: Directories,
        known: KnownPeers,
    ) -> ChatService {
        let dialers = DialerCheck::new(directory, known.clone());
        ChatService { offers, me, pending: PendingDials::default(), dialers, known }
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
        let (remote, key, activity) = match request.extensions().get::<ConnInfo>() {
            Some(ConnInfo::Peer { remote, key, activity }) => {
                (*remote, *key, Some(activity.clone()))
            }
            _ => (None, None, None),
        };
        let key = key.ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let mut inbound = request.into_inner();
        // The hello comes first, before the stream counts for anything: a
        // dialer sends it at once, and a stream that says nothing must
        // neither keep its connection from being ended for a newcomer nor
        // hold a pending-dial slot. (Both once did: eight addresses opening
        // streams that never said hello kept every dialer out.) A stream
        // counts once it holds its slot, which bounds how many can.
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
            if let Some(left_out) = super::refusal_log::allow() {
                tracing::info!(
                    ?remote,
                    version = hello.version,
                    left_out,
                    "refused a dial of another version"
                );
            }
            return Err(Refusal::version(hello.version, PROTOCOL_VERSION).into());
        }
        let peer = Name::parse(&hello.name).map_err(|e| bad_hello(e.to_string()))?;
        if !hello.to.is_empty() && !self.me.matches(&hello.to) {
            // Not our name: a scanner guessing names learns none.
            let why = format!("this is not {}", hello.to);
            return Err(Refusal::new(Reason::WrongPeer, why).into());
        }
        // Not "busy": that means "in another conversation" to dialers.
        let full =
            || Refusal::new(Reason::TooManyDials, "too many dials in progress; try again shortly");
        let source = remote.map(|addr| Source::of_ip(addr.ip()));
        let _slot = self.pending.take(source).await.ok_or_else(full)?;
        // Counted from here until the answer's stream ends: the connection
        // is in use, not idle. Not while the dial waits for its slot: dials
        // that only wait (their source's slots held) must not keep their
        // connections from being ended for a newcomer either.
        let stream = activity.map(|a| a.stream());
        let known = self.dialers.check(&peer, &key, Source::of(remote)).await?;
        let (out, outgoing) = duplex::outbox();
        let (reply, answer) = oneshot::channel();
        let shutting_down = || Refusal::new(Reason::ShuttingDown, "peerd is shutting down");
        let offer = Offer {
            peer: peer.clone(),
            source,
            link: Link::new(out, inbound),
            known,
            kind: match (hello.redial, hello.restarted) {
                (true, true) => DialKind::AfterRestart,
                (true, false) => DialKind::Redial,
                (false, _) => DialKind::Fresh,
            },
            pin: KeyPin(Some((self.known.clone(), peer.clone(), key))),
            reply,
        };
        if self.offers.send(offer).await.is_err() {
            return Err(shutting_down().into());
        }
        let frames = outgoing.map(move |frame| {
            let _in_use = &stream;
            frame
        });
        match answer.await {
            Ok(Answer::Accepted) => {
                tracing::info!(%peer, ?remote, "accepted a conversation");
                Ok(Response::new(Box::pin(frames)))
            }
            Ok(Answer::Asking(declined)) => {
                tracing::info!(%peer, ?remote, "asking the user whether to talk");
                let timeout_s = u32::try_from(ASK_TIMEOUT.as_secs()).unwrap_or(u32::MAX);
                let asking =
                    pb::Frame { kind: Some(pb::frame::Kind::Asking(pb::Asking { timeout_s })) };
                let verdict = VerdictStream { declined: Some(declined), me: self.me.clone() };
                Ok(Response::new(Box::pin(
                    tokio_stream::once(Ok(asking)).chain(frames).chain(verdict),
                )))
            }
            Ok(Answer::Refused(AcceptError::Busy { me })) => Err(busy(&me).into()),
            Ok(Answer::Refused(AcceptError::Yourself)) => {
                let why = "a peer cannot connect to itself";
                Err(Refusal::new(Reason::Yourself, why).into())
            }
            Ok(Answer::Refused(e @ AcceptError::Ended { how, .. })) => {
                tracing::info!(%peer, ?remote, ?how, "refused a redial of an ended conversation");
                let reason = match how {
                    EndedHow::ByUser => Reason::Ended,
                    EndedHow::WindowPassed => Reason::WindowPassed,
                    EndedHow::NotHere => Reason::NotHere,
                };
                Err(Refusal::new(reason, e.to_string()).into())
            }
            Ok(Answer::Refused(e @ AcceptError::Crossed { .. })) => {
                tracing::info!(%peer, ?remote, "our dials crossed; ours is the conversation");
                Err(Refusal::new(Reason::Crossed, e.to_string()).into())
            }
            Err(_) => Err(shutting_down().into()),
        }
    }
}
