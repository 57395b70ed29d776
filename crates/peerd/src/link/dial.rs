//! The dialing side of a link: look the peer up, connect, say hello, wait
//! for welcome. [`Dialer::dial`] returns the open [`Link`] or a typed
//! [`DialError`]; it knows nothing of who asked for the dial.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use peerchat::transport::Broken;
use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::session::{DialKind, EndedHow};
use peerchat_core::timeouts::{ASK_TIMEOUT, CONNECT_ANSWER_MARGIN, DIAL_TIMEOUT};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_stream::StreamExt as _;
use tonic::transport::{Endpoint, Uri};

use super::duplex::{self, Link, Outbox};
use super::refusal::{Reason, Refusal};
use super::{
    HANDSHAKE_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use crate::directory::{self, Directories, Listing};
use crate::error::with_causes;
use crate::known_peers::{KnownPeers, Verdict, changed_message};
use crate::tls::{self, Credentials, PublicKey};

/// How long TCP and TLS to a peer's address may take.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a dial failed. Each says what happened, and to whom.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DialError {
    #[error("{0} is not online")]
    NotOnline(Name),
    #[error("the directory is unreachable: {0}")]
    DirectoryUnreachable(String),
    #[error("the directory lists no key for {0}")]
    NoKey(Name),
    /// The directory lists a key other than the one we talked to before.
    #[error("{0}")]
    KeyChanged(String),
    #[error("{name} is not online: it is listed at {address} but does not answer ({why})")]
    Unreachable { name: Name, address: String, why: String },
    #[error("refused to talk to {name}: the peer at {address} did not prove {name}'s key ({why})")]
    WrongKey { name: Name, address: String, why: String },
    #[error("{0} is busy in another conversation")]
    Busy(Name),
    /// The callee is dialing us at the same moment and its dial wins: the
    /// conversation will be that dial. Shown only when it did not come.
    #[error("{0} was dialing you at the same moment, and that call did not come through")]
    Crossed(Name),
    /// A redial refused: the conversation ended on the callee's side while
    /// the link was down (`how`), or, after our restart, it has none.
    #[error("{name} {how}")]
    Ended { name: Name, how: EndedHow },
    /// The callee's user was asked and said no, or did not answer in time.
    #[error("{0} did not accept")]
    NotAccepted(Name),
    #[error("{name} refused the conversation: {}", .refusal.message)]
    Refused { name: Name, refusal: Refusal },
    #[error("the peer at {address} is {callee}, not {name}")]
    Impostor { name: Name, address: String, callee: String },
    #[error(
        "unsupported protocol version {theirs}: {name} speaks {theirs}, this peerd speaks {ours}"
    )]
    Version { name: Name, theirs: u32, ours: u32 },
    #[error("timed out: {name} {what}")]
    NoAnswer { name: Name, what: String },
    #[error("{name} broke off the handshake: {why}")]
    Broken { name: Name, why: String },
}

/// Whether a timer's expiry is somewhere in `error`'s causes: tokio's
/// own, or the `TimedOut` I/O error a connector wraps it in (an
/// `io::Error` hides what it wraps from `source`).
fn caused_by_elapsed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    // Bounded: a chain of causes is a few links long.
    for _ in 0..16 {
        match cause {
            Some(c) if c.is::<tokio::time::error::Elapsed>() => return true,
            Some(c)
                if c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut) =>
            {
                return true;
            }
            Some(c) => cause = c.source(),
            None => return false,
        }
    }
    false
}

/// Something that dials peers: [`Dialer`], or a stand-in in tests.
pub(crate) trait Dial: Send + Sync + 'static {
    /// Dials `name`: the callee's name as it spells it, and the link.
    /// `kind`: what the dial is for (the Hello says so). `asked` is
    /// called, at most once, if the callee's user is asked first, with how
    /// long the answer may take.
    fn dial(
        &self,
        name: Name,
        kind: DialKind,
        asked: OnAsked,
    ) -> Pin<Box<dyn Future<Output = DialResult> + Send>>;
}

/// Told that the callee is asking its user, and for how long at most.
pub(crate) type OnAsked = Box<dyn FnOnce(Duration) + Send>;

/// What a dial ends with.
pub(crate) type DialResult = Result<(Name, Link), DialError>;

impl Dial for Dialer {
    fn dial(
        &self,
        name: Name,
        kind: DialKind,
        asked: OnAsked,
    ) -> Pin<Box<dyn Future<Output = DialResult> + Send>> {
        Box::pin(self.clone().dial_owned(name, kind, asked))
    }
}

/// Dials peers; cheap to clone (the directory channels are shared).
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    pub(crate) me: Name,
    pub(crate) directory: Directories,
    pub(crate) credentials: Credentials,
    pub(crate) known: KnownPeers,
    /// Where each peer we got through to lately was, and its key: a redial
    /// goes there when the directory cannot be asked (see
    /// [`Dialer::last_reached`]).
    pub(crate) reached: Reached,
}

/// Peers dialed successfully, by name key: their address and key then.
/// Bounded: cleared when it would pass [`MAX_REACHED`].
pub(crate) type Reached = Arc<Mutex<HashMap<String, (String, PublicKey)>>>;

/// Peers [`Reached`] remembers: a redial is of the last conversation's
/// peer, so a few are plenty.
const MAX_REACHED: usize = 64;

impl Dialer {
    /// Dials `name`: the callee's name as it spells it, and the link. Takes
    /// at most [`DIAL_TIMEOUT`], all steps together, and then, if the
    /// callee asks its user, as long as it says the asking may take (at
    /// most [`ASK_TIMEOUT`]) and a margin.
    async fn dial_owned(self, name: Name, kind: DialKind, asked: OnAsked) -> DialResult {
        let result = self.dial_steps(&name, kind, asked).await;
        if let Err(e) = &result {
            tracing::info!(peer = %name, error = %e, "dial failed");
        }
        result
    }

    async fn dial_steps(&self, name: &Name, kind: DialKind, asked: OnAsked) -> DialResult {
        let dialed = tokio::time::timeout(DIAL_TIMEOUT, self.handshake(name, kind)).await;
        let mut answered = dialed.unwrap_or_else(|_| {
            Err(DialError::NoAnswer {
                name: name.clone(),
                what: format!("did not complete the dial within {DIAL_TIMEOUT:?}"),
            })
        })?;
        if let Some(pb::frame::Kind::Asking(asking)) = &answered.first.kind {
            let wait = Duration::from_secs(asking.timeout_s.into()).min(ASK_TIMEOUT);
            tracing::info!(peer = %name, ?wait, "the peer is asking its user");
            asked(wait);
            let next = tokio::time::timeout(
                wait.saturating_add(CONNECT_ANSWER_MARGIN),
                answered.inbound.message(),
            );
            answered.first = match next.await {
                Err(_) => return Err(DialError::NotAccepted(name.clone())),
                Ok(next) => first_frame(name, next)?,
            };
        }
        self.welcomed(name, answered)
    }

    /// Checks the callee's welcome: of our version, from the peer dialed.
    fn welcomed(&self, name: &Name, answered: Answered) -> DialResult {
        let Answered { first, inbound, out, listed, address } = answered;
        let Some(pb::frame::Kind::Welcome(welcome)) = first.kind else {
            let why = "the first frame was not a welcome".into();
            return Err(DialError::Broken { name: name.clone(), why });
        };
        if welcome.version != PROTOCOL_VERSION {
            return Err(DialError::Version {
                name: name.clone(),
                theirs: welcome.version,
                ours: PROTOCOL_VERSION,
            });
        }
        let callee = Name::parse(&welcome.name).map_err(|e| DialError::Broken {
            name: name.clone(),
            why: format!("its welcome names no valid peer: {e}"),
        })?;
        if callee != *name {
            return Err(DialError::Impostor {
                name: name.clone(),
                address,
                callee: callee.to_string(),
            });
        }
        self.known.remember(&callee, &listed);
        let mut reached = self.reached.lock().unwrap_or_else(|e| e.into_inner());
        if reached.len() >= MAX_REACHED && !reached.contains_key(&callee.key()) {
            reached.clear();
        }
        reached.insert(callee.key(), (address, listed));
        drop(reached);
        Ok((callee, Link::new(out, inbound)))
    }

    /// For a redial while the directory cannot be asked: the peer as we
    /// last reached it, its address and key then. The conversation must
    /// not end because the directory is down (it is never in a message's
    /// path), and TLS still proves the key, which must still be the one we
    /// know; if the peer moved, the redial fails and is tried again.
    fn last_reached(&self, name: &Name, kind: DialKind) -> Option<pb::Peer> {
        if !kind.is_redial() {
            return None;
        }
        let reached = self.reached.lock().unwrap_or_else(|e| e.into_inner());
        let (address, key) = reached.get(&name.key())?;
        Some(pb::Peer {
            name: name.to_string(),
            address: address.clone(),
            status: pb::PeerStatus::Busy.into(),
            public_key: key.to_vec(),
        })
    }

    /// Looks the peer up, connects, says hello, and reads the callee's
    /// first frame (a welcome, or that it is asking its user).
    async fn handshake(&self, name: &Name, kind: DialKind) -> Result<Answered, DialError> {
        let peer = match directory::lookup(&self.directory, name.as_str()).await {
            Listing::Online(peer) => peer,
            Listing::NotOnline => return Err(DialError::NotOnline(name.clone())),
            Listing::Unknown(why) => match self.last_reached(name, kind) {
                Some(peer) => {
                    tracing::info!(
                        %name, address = %peer.address, %why,
                        "the directory cannot be asked; redialing where the peer was"
                    );
                    peer
                }
                None => return Err(DialError::DirectoryUnreachable(why)),
            },
        };
        // From here on the name as the peer registered it, not as typed:
        // "bob is busy", not "BOB is busy" (the same name either way).
        let listed_name = Name::parse(&peer.name).ok().filter(|n| n == name);
        let name = listed_name.as_ref().unwrap_or(name);
        // A busy peer is dialed all the same: it may be busy with us (a
        // conversation whose link was lost), and only it can tell.
        let address = peer.address;
        let listed: PublicKey =
            peer.public_key.as_slice().try_into().map_err(|_| DialError::NoKey(name.clone()))?;
        // The directory could be wrong or lying: a key that differs from the
        // one we talked to before is the user's call, not ours.
        if let Verdict::Changed { known } = self.known.check(name, &listed) {
            return Err(DialError::KeyChanged(changed_message(name, &known, &listed)));
        }
        let unreachable = |why: String| DialError::Unreachable {
            name: name.clone(),
            address: address.clone(),
            why,
        };
        let addr: SocketAddr =
            address.parse().map_err(|e| unreachable(format!("bad address: {e}")))?;
        let tls = TlsConnector::from(
            self.credentials.client_config(listed).map_err(|e| unreachable(e.to_string()))?,
        );
        // The URI is required by the API but unused: the connector dials.
        let endpoint = Endpoint::from_static("http://peer.invalid")
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let tls = tls.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }));
        let timed_out =
            || unreachable(format!("timed out after {} s", PEER_CONNECT_TIMEOUT.as_secs()));
        let channel = match tokio::time::timeout(PEER_CONNECT_TIMEOUT, connect).await {
            Err(_) => return Err(timed_out()),
            // tonic's own connect timeout, which may fire first: in its
            // words, "transport error: deadline has elapsed".
            Ok(Err(e)) if caused_by_elapsed(&e) => return Err(timed_out()),
            Ok(Err(e)) => {
                let why = with_causes(e.to_string(), std::error::Error::source(&e));
                if tls::is_peer_key_refused(&e) {
                    return Err(DialError::WrongKey {
                        name: name.clone(),
                        address: address.clone(),
                        why,
                    });
                }
                return Err(unreachable(why));
            }
            Ok(Ok(channel)) => channel,
        };
        let mut client = pb::chat_client::ChatClient::new(channel)
            .max_decoding_message_size(MAX_FRAME_BYTES)
            .max_encoding_message_size(MAX_FRAME_BYTES);
        let (out, outgoing) = duplex::outbox();
        let hello = pb::Hello {
            name: self.me.to_string(),
            to: name.to_string(),
            version: PROTOCOL_VERSION,
            redial: kind.is_redial(),
            restarted: kind == DialKind::AfterRestart,
        };
        // The queue is new and empty: this cannot fail.
        let _ = out.try_push(pb::Frame { kind: Some(pb::frame::Kind::Hello(hello)) });
        let no_answer = |what: &str| DialError::NoAnswer { name: name.clone(), what: what.into() };
        let refused = |status: tonic::Status| refused(name, &status);
        // A status queued to end our half ends the request stream there.
        let requests = outgoing.map_while(Result::ok);
        let response =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, client.converse(requests)).await {
                Err(_) => return Err(no_answer("did not answer our hello in time")),
                Ok(Err(s)) => return Err(refused(s)),
                Ok(Ok(r)) => r,
            };
        let mut inbound = response.into_inner();
        let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(no_answer("did not welcome us in time")),
            Ok(next) => first_frame(name, next)?,
        };
        Ok(Answered { first, inbound, out, listed, address })
    }
}

/// A call the callee answered, with its first frame.
struct Answered {
    first: pb::Frame,
    inbound: tonic::Streaming<pb::Frame>,
    out: Outbox,
    listed: PublicKey,
    address: String,
}

/// The frame the callee answered with, or why there was none.
fn first_frame(
    name: &Name,
    next: Result<Option<pb::Frame>, tonic::Status>,
) -> Result<pb::Frame, DialError> {
    match next {
        Err(s) => Err(refused(name, &s)),
        Ok(None) => Err(DialError::Broken {
            name: name.clone(),
            why: "the stream ended before welcome".into(),
        }),
        Ok(Some(f)) => Ok(f),
    }
}

/// What a failed Converse call means: the callee's refusal, by the reason
/// it carries, or (a status tonic made on our side, with the transport's
/// error as its source) a connection that broke.
fn refused(name: &Name, status: &tonic::Status) -> DialError {
    if let Some(source) = std::error::Error::source(status) {
        // In the words a lost link has ("the connection closed without a
        // goodbye"), from the failure's type; else tonic's and its causes.
        let why = match Broken::of(status) {
            Some(broken) => duplex::broken_words(broken),
            None => with_causes(status.message().to_owned(), Some(source)),
        };
        return DialError::Broken { name: name.clone(), why };
    }
    let refusal = Refusal::from_status(status);
    match refusal.reason {
        Reason::Busy => DialError::Busy(name.clone()),
        Reason::NotAccepted => DialError::NotAccepted(name.clone()),
        Reason::Ended => DialError::Ended { name: name.clone(), how: EndedHow::ByUser },
        Reason::WindowPassed => {
            DialError::Ended { name: name.clone(), how: EndedHow::WindowPassed }
        }
        Reason::NotHere => DialError::Ended { name: name.clone(), how: EndedHow::NotHere },
        Reason::Crossed => DialError::Crossed(name.clone()),
        _ => DialError::Refused { name: name.clone(), refusal },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn bob() -> Name {
        Name::parse("bob").expect("a valid name")
    }

    #[test]
    fn too_many_dials_is_its_own_refusal_not_busy() {
        let why = "too many dials in progress; try again shortly";
        let status: tonic::Status = Refusal::new(Reason::TooManyDials, why).into();
        let error = refused(&bob(), &status);
        assert!(
            matches!(&error, DialError::Refused { refusal, .. } if refusal.reason == Reason::TooManyDials),
            "{error:?}"
        );
        assert_eq!(error.to_string(), format!("bob refused the conversation: {why}"));
        let status: tonic::Status = Refusal::new(Reason::Busy, "bob is busy").into();
        assert_eq!(refused(&bob(), &status), DialError::Busy(bob()));
    }

    #[test]
    fn a_handshake_cut_off_says_how_in_plain_words() {
        // As tonic makes it: its own words, the transport's failure as the
        // source (rustls's end of file without close_notify).
        let mut status = tonic::Status::unknown("h2 protocol error: error reading a body");
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no close_notify");
        status.set_source(Arc::new(eof));
        let why = "the connection closed without a goodbye".to_owned();
        assert_eq!(refused(&bob(), &status), DialError::Broken { name: bob(), why });
        // A failure it cannot name keeps tonic's words and the cause's.
        let mut status = tonic::Status::unknown("odd");
        status.set_source(Arc::new(std::io::Error::other("odder")));
        let why = "odd: odder".to_owned();
        assert_eq!(refused(&bob(), &status), DialError::Broken { name: bob(), why });
    }
}
