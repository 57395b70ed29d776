//! The control service chatctl talks to over the Unix socket. Each handler
//! turns a request into a driver [`api::Request`] (or a directory call) and the
//! answer into a response; [`error`] is where failures become statuses,
//! [`validate`] checks requests, [`stream`] runs `SendStream`, and
//! [`peers`] relays presence from the roster (`WatchPeers`, `Watch` with
//! presence).

pub(crate) mod error;
mod peers;
pub(crate) mod stream;
pub(crate) mod validate;

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::session::{Direction, Id, MessageState, Presence};
use tokio::sync::{oneshot, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::directory::DIRECTORY_CALL_TIMEOUT;
use crate::directory::{self, Directories, Failed, Listing};
use crate::driver::api::{self, DriverTx, Outcome, SessionStatus, Wait, wire_state};
use crate::history;
use crate::known_peers::KnownPeers;
use crate::link::dial::DialError;
use crate::presence::DirectoryState;
use crate::roster::{Roster, ShuttingDown, checked};
use crate::tls::PublicKey;
use error::ControlError;
use peerchat_core::identity::fingerprint;

/// How long a ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `disconnect` waits for the directory to hear we are available.
const PRESENCE_WAIT: Duration = Duration::from_secs(2);
/// How long `Watch` with presence waits for the roster's first list before
/// it answers, so that a client that sees the answer misses no change after
/// it. Short: with the directory away, the watch starts anyway (its
/// presence events start when the directory is back), as it always did.
const WATCH_SYNC_WAIT: Duration = Duration::from_secs(2);
/// How long `WatchPeers` waits for the list it starts with (a big directory
/// takes a while to stream).
const PEERS_SYNC_WAIT: Duration = Duration::from_secs(10);

/// The daemon's facts that do not change while it runs.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub(crate) name: Name,
    pub(crate) listen: String,
    pub(crate) data_dir: PathBuf,
    /// Our key's fingerprint.
    pub(crate) key: String,
    /// `--advertise`: what `status` shows while no directory has said
    /// which address it publishes.
    pub(crate) advertise: Option<std::net::SocketAddr>,
}

/// The `Control` service.
#[derive(Debug, Clone)]
pub(crate) struct ControlService {
    pub(crate) me: Facts,
    pub(crate) driver: DriverTx,
    pub(crate) directory: Directories,
    pub(crate) directory_state: watch::Receiver<DirectoryState>,
    pub(crate) published: watch::Receiver<Option<Presence>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) known: KnownPeers,
    /// Who is online, live, for the clients that ask.
    pub(crate) roster: Roster,
}

impl ControlService {
    /// Who is "you" in a listing (our name, unless it is taken).
    fn you(&self) -> peers::You {
        peers::You::new(self.me.name.clone(), self.directory_state.clone())
    }

    /// Sends `input` to the driver and waits for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> api::Request,
    ) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.driver.send(make(tx)).await.map_err(|_| ControlError::ShuttingDown)?;
        rx.await.map_err(|_| ControlError::ShuttingDown)
    }

    async fn session(&self) -> Result<SessionStatus, ControlError> {
        self.ask(|reply| api::Request::Status { reply }).await
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;
type SendStream = Pin<Box<dyn Stream<Item = Result<pb::SendResponse, Status>> + Send>>;

/// Waits up to `timeout` for the receipt a send waits for.
async fn await_outcome(
    id: String,
    wait: Wait,
    outcome: oneshot::Receiver<Outcome>,
    timeout: Duration,
) -> Result<(String, MessageState, Duration), ControlError> {
    match tokio::time::timeout(timeout, outcome).await {
        Ok(Ok(Ok((state, took)))) => Ok((id, state, took)),
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(_)) => Err(ControlError::ShuttingDown),
        Err(_) => Err(ControlError::TimedOut {
            id,
            what: match wait {
                Wait::Delivered => "delivered",
                Wait::Displayed => "displayed",
            },
            after: timeout,
        }),
    }
}

fn shutting_down(_: ShuttingDown) -> Status {
    ControlError::ShuttingDown.into()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    type WatchStream = EventStream;

    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let s = self.session().await?;
        let dir = self.directory_state.borrow().clone();
        let advertise = match &dir {
            DirectoryState::Registered { address }
            | DirectoryState::Unreachable { last_address: Some(address), .. } => address.clone(),
            _ => self.me.advertise.map(|a| a.to_string()).unwrap_or_default(),
        };
        Ok(Response::new(pb::GetStatusResponse {
            name: self.me.name.to_string(),
            listen: self.me.listen.clone(),
            advertise,
            // The replica in use now: the one the state is about.
            directory: self.directory.current_url().to_owned(),
            directory_state: dir.word().to_owned(),
            directory_error: dir.why().to_owned(),
            peer: s.peer.map(|p| p.to_string()).unwrap_or_default(),
            conversation: s.phase.as_str().to_owned(),
            pid: std::process::id(),
            unacknowledged: u32::try_from(s.unacknowledged).unwrap_or(u32::MAX),
            data_dir: self.me.data_dir.display().to_string(),
            key: self.me.key.clone(),
            accept: s.policy.as_str().to_owned(),
            requests: s
                .requests
                .into_iter()
                .map(|(peer, expires_at_ms)| pb::PendingRequest {
                    peer: peer.to_string(),
                    expires_at_ms,
                })
                .collect(),
        }))
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let req = request.into_inner();
        let list = pb::ListRequest { page_size: req.page_size, page_token: req.page_token };
        let asked = self
            .directory
            .call(DIRECTORY_CALL_TIMEOUT, |mut client| {
                let list = list.clone();
                async move { client.list(list).await }
            })
            .await;
        let resp = match asked {
            Ok(r) => r,
            Err(Failed::Answer(s)) if s.code() == tonic::Code::InvalidArgument => return Err(s),
            Err(Failed::Answer(s)) => {
                return Err(ControlError::DirectoryUnreachable(s.message().to_owned()).into());
            }
            Err(Failed::Unreachable(why)) => {
                return Err(ControlError::DirectoryUnreachable(why).into());
            }
        };
        Ok(Response::new(pb::ListPeersResponse {
            // What `list --watch` would leave out is left out here too.
            peers: resp.peers.into_iter().filter_map(checked).collect(),
            next_page_token: resp.next_page_token,
            you: self.you().name(),
        }))
    }

    async fn open_conversation(
        &self,
        request: Request<pb::OpenConversationRequest>,
    ) -> Result<Response<pb::OpenConversationResponse>, Status> {
        let name = validate::peer_name(&request.into_inner().name)?;
        // No timeout of our own: the driver answers when the dial ends,
        // and a dial takes at most DIAL_TIMEOUT. Giving up sooner would
        // report a failure while the dial goes on and may succeed.
        let peer = self
            .ask(|reply| api::Request::Connect { name, reply })
            .await?
            .map_err(ControlError::from)?;
        Ok(Response::new(pb::OpenConversationResponse { peer: peer.to_string() }))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let validate::Send { text, wait, timeout } = validate::send(request.into_inner())?;
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let id = self
            .ask(|accepted| api::Request::Send {
                text,
                accepted,
                wait: wait.map(|w| (w, outcome_tx)),
            })
            .await?
            .map_err(ControlError::from)?
            .to_string();
        let Some(w) = wait else {
            return Ok(Response::new(pb::SendResponse {
                id,
                state: pb::MessageState::Sent as i32,
                link_rtt_us: 0,
            }));
        };
        let (id, state, took) = await_outcome(id, w, outcome_rx, timeout).await?;
        Ok(Response::new(pb::SendResponse {
            id,
            state: wire_state(state) as i32,
            link_rtt_us: micros(took),
        }))
    }

    type SendStreamStream = SendStream;

    async fn send_stream(
        &self,
        request: Request<Streaming<pb::SendRequest>>,
    ) -> Result<Response<SendStream>, Status> {
        let answers =
            stream::start(request.into_inner(), self.driver.clone(), self.shutdown.clone());
        Ok(Response::new(Box::pin(ReceiverStream::new(answers))))
    }

    async fn close_conversation(
        &self,
        _: Request<pb::CloseConversationRequest>,
    ) -> Result<Response<pb::CloseConversationResponse>, Status> {
        let ended = self
            .ask(|reply| api::Request::Disconnect { reply })
            .await?
            .map_err(ControlError::from)?;
        // So that a `list` right after shows us available (when there is a
        // directory to tell).
        if matches!(*self.directory_state.borrow(), DirectoryState::Registered { .. }) {
            let mut published = self.published.clone();
            let _ = tokio::time::timeout(
                PRESENCE_WAIT,
                published.wait_for(|p| *p == Some(Presence::Available)),
            )
            .await;
        }
        let peer = ended.peer().to_string();
        let ended = match ended {
            api::Ended::Conversation { reason, .. } => {
                pb::close_conversation_response::Ended::ConversationReason(reason)
            }
            api::Ended::Dial { .. } => {
                pb::close_conversation_response::Ended::DialCancelled(pb::DialCancelled {})
            }
        };
        Ok(Response::new(pb::CloseConversationResponse { peer, ended: Some(ended) }))
    }

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let pb::WatchRequest { display, presence } = request.into_inner();
        // Presence first, so that both are subscribed before the answer.
        let presence = if presence {
            let mut sub = self.roster.subscribe().map_err(shutting_down)?;
            // Without the first list there is nothing to tell changes
            // against; with the directory away, the list comes later.
            if let Err(why) = sub.synced(WATCH_SYNC_WAIT).await {
                tracing::debug!(%why, "watch starts without the list of peers");
            }
            Some(sub)
        } else {
            None
        };
        let rx = self.ask(|reply| api::Request::Watch { display, reply }).await?;
        let rx = match presence {
            // The usual case costs no extra hop.
            None => rx,
            Some(sub) => peers::merge(rx, sub, self.you(), self.shutdown.clone()),
        };
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchPeersStream = EventStream;

    async fn watch_peers(
        &self,
        _: Request<pb::WatchPeersRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let mut sub = self.roster.subscribe().map_err(shutting_down)?;
        let now = sub.synced(PEERS_SYNC_WAIT).await.map_err(ControlError::DirectoryUnreachable)?;
        let rx = peers::follow(&now, sub, self.you(), self.shutdown.clone());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn mark_displayed(
        &self,
        request: Request<pb::MarkDisplayedRequest>,
    ) -> Result<Response<pb::MarkDisplayedResponse>, Status> {
        let ids = validate::displayed(request.into_inner())?;
        let ids = ids.into_iter().map(Id::from).collect();
        self.driver
            .send(api::Request::Displayed { ids })
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        Ok(Response::new(pb::MarkDisplayedResponse {}))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let (named, limit) = validate::history(&request.into_inner())?;
        let peer = if let Some(peer) = named {
            peer
        } else {
            // The current or last peer of this run, else (after a restart)
            // the one whose history changed last.
            match self.session().await?.last_peer {
                Some(p) => p,
                None => {
                    // A look at every history file: off the runtime thread.
                    let dir = self.me.data_dir.clone();
                    tokio::task::spawn_blocking(move || history::last_peer(&dir))
                        .await
                        .map_err(|e| ControlError::Internal(e.to_string()))?
                        .ok_or_else(|| {
                            ControlError::NotConnected(
                                "no conversation yet; name a peer: history NAME".into(),
                            )
                        })?
                }
            }
        };
        let dir = self.me.data_dir.clone();
        let who = peer.clone();
        let read = tokio::task::spawn_blocking(move || history::read(&dir, &who, limit))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let entries = read
            .entries
            .into_iter()
            .map(|e| pb::HistoryEntry {
                id: e.id,
                direction: match e.direction {
                    Direction::In => pb::Direction::In,
                    Direction::Out => pb::Direction::Out,
                } as i32,
                peer: e.peer,
                text: e.text,
                at_ms: e.at_ms,
                state: wire_state(e.state) as i32,
            })
            .collect();
        Ok(Response::new(pb::GetHistoryResponse {
            peer: peer.to_string(),
            entries,
            older: read.older,
        }))
    }

    async fn trust(
        &self,
        request: Request<pb::TrustRequest>,
    ) -> Result<Response<pb::TrustResponse>, Status> {
        let name = validate::peer_name(&request.into_inner().name)?;
        let listed = match directory::lookup(&self.directory, name.as_str()).await {
            Listing::Online(peer) => peer.public_key,
            Listing::NotOnline => return Err(ControlError::NotOnline(name.to_string()).into()),
            Listing::Unknown(why) => return Err(ControlError::DirectoryUnreachable(why).into()),
        };
        let key: PublicKey = listed
            .as_slice()
            .try_into()
            .map_err(|_| ControlError::from(DialError::NoKey(name.clone())))?;
        let previous = self
            .known
            .trust(&name, &key)
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        tracing::info!(peer = %name, key = %fingerprint(&key), "trusting a new key");
        Ok(Response::new(pb::TrustResponse {
            peer: name.to_string(),
            key: fingerprint(&key),
            previous: previous.map(|k| fingerprint(&k)).unwrap_or_default(),
        }))
    }

    async fn ping(
        &self,
        _: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let asked = self.ask(|reply| api::Request::Ping { reply });
        let (peer, rtt) = match tokio::time::timeout(PING_TIMEOUT, asked).await {
            Ok(r) => r?.map_err(ControlError::from)?,
            Err(_) => {
                let why = format!("no answer to the ping within {PING_TIMEOUT:?}");
                return Err(ControlError::NoAnswer(why).into());
            }
        };
        Ok(Response::new(pb::PingResponse {
            peer: peer.to_string(),
            rtt_us: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
        }))
    }

    async fn accept(
        &self,
        request: Request<pb::AcceptRequest>,
    ) -> Result<Response<pb::AcceptResponse>, Status> {
        let name = validate::optional_peer_name(&request.into_inner().name)?;
        let peer = self
            .ask(|reply| api::Request::Accept { name, reply })
            .await?
            .map_err(ControlError::from)?;
        Ok(Response::new(pb::AcceptResponse { peer: peer.to_string() }))
    }

    async fn reject(
        &self,
        request: Request<pb::RejectRequest>,
    ) -> Result<Response<pb::RejectResponse>, Status> {
        let name = validate::optional_peer_name(&request.into_inner().name)?;
        let peer = self
            .ask(|reply| api::Request::Reject { name, reply })
            .await?
            .map_err(ControlError::from)?;
        Ok(Response::new(pb::RejectResponse { peer: peer.to_string() }))
    }

    async fn block(
        &self,
        request: Request<pb::BlockRequest>,
    ) -> Result<Response<pb::BlockResponse>, Status> {
        let name = validate::peer_name(&request.into_inner().name)?;
        if name == self.me.name {
            return Err(ControlError::Yourself("block").into());
        }
        let peer = name.to_string();
        let done = self
            .ask(|reply| api::Request::Block { name, reply })
            .await?
            .map_err(ControlError::Internal)?;
        Ok(Response::new(pb::BlockResponse {
            peer,
            already: done.already,
            disconnected: done.disconnected,
        }))
    }

    async fn unblock(
        &self,
        request: Request<pb::UnblockRequest>,
    ) -> Result<Response<pb::UnblockResponse>, Status> {
        let name = validate::peer_name(&request.into_inner().name)?;
        let peer = name.to_string();
        let was = self
            .ask(|reply| api::Request::Unblock { name, reply })
            .await?
            .map_err(ControlError::Internal)?;
        Ok(Response::new(pb::UnblockResponse { peer, was_not_blocked: !was }))
    }

    async fn list_blocked(
        &self,
        _: Request<pb::ListBlockedRequest>,
    ) -> Result<Response<pb::ListBlockedResponse>, Status> {
        let names = self.ask(|reply| api::Request::Blocked { reply }).await?;
        Ok(Response::new(pb::ListBlockedResponse {
            names: names.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn stop(
        &self,
        _: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        tracing::info!("stop requested over the control socket");
        // Graceful shutdown lets this answer go out before the server stops.
        self.shutdown.cancel();
        Ok(Response::new(pb::StopResponse {
            name: self.me.name.to_string(),
            pid: std::process::id(),
        }))
    }
}
