//! Talking to peerd for the TUI. Each request runs as a task of its own
//! and hands its answer back over a channel, so the screen never waits on
//! the daemon: a connect can take the length of a dial while messages,
//! receipts and keys go on being handled.
//!
//! The presence feed is a task too: WatchPeers while it works; when it
//! cannot (the directory unreachable, an older daemon), ListPeers every
//! [`POLL_INTERVAL`], trying WatchPeers again after each list that worked.

use std::time::Duration;

use pb::event::Kind;
use peerchat::v1 as pb;
use tokio::sync::mpsc;

use super::state::{Outcome, PeersUpdate, Request};
use crate::client::{self, ANSWER_TIMEOUT, CONNECT_ANSWER_TIMEOUT, Control};
use crate::commands::status;
use crate::error::Error;
use crate::format;

/// How often the list is polled while WatchPeers is down.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Runs `request` on a task of its own; its answer goes to `outcomes`.
pub(crate) fn spawn_request(
    mut client: Control,
    request: Request,
    id: u64,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    tokio::spawn(async move {
        let outcome = run_request(&mut client, request, id).await;
        // The loop may have ended meanwhile; then nobody needs the answer.
        let _ = outcomes.send(outcome);
    });
}

/// Runs request number `id` (see [`super::state::App::dispatching`]).
async fn run_request(client: &mut Control, request: Request, id: u64) -> Outcome {
    match request {
        Request::Send { local, text } => {
            let request = pb::SendRequest { text, wait: pb::WaitFor::None as i32, timeout_ms: 0 };
            let result = client::call("take the message", ANSWER_TIMEOUT, client.send(request))
                .await
                .map(|answer| (answer.id.clone(), answer.state()))
                .map_err(|err| err.to_string());
            Outcome::Sent { local, result }
        }
        Request::History(peer) => {
            let request = pb::GetHistoryRequest { peer, limit: super::HISTORY_LIMIT };
            let result =
                client::call("read the history", ANSWER_TIMEOUT, client.get_history(request))
                    .await
                    .map_err(|err| err.to_string());
            Outcome::History(result)
        }
        Request::Connect(name) => {
            let request = pb::OpenConversationRequest { name };
            let result =
                client::call("connect", CONNECT_ANSWER_TIMEOUT, client.open_conversation(request))
                    .await
                    .map(|_| ())
                    .map_err(|err| err.to_string());
            Outcome::Connect { id, result }
        }
        Request::Disconnect => {
            let request = pb::CloseConversationRequest {};
            let result =
                client::call("disconnect", ANSWER_TIMEOUT, client.close_conversation(request))
                    .await
                    .map(|answer| match answer.ended {
                        // A conversation's end comes as its `disconnected`
                        // event; a dial cancelled has none.
                        Some(pb::close_conversation_response::Ended::DialCancelled(_)) => {
                            Some(answer.peer)
                        }
                        _ => None,
                    })
                    .map_err(|err| err.to_string());
            Outcome::Disconnect(result)
        }
        other => Outcome::Done(command(client, other).await.map_err(|err| err.to_string())),
    }
}

/// A command other than Send: `Some(line)` when its answer says something
/// the Watch stream will not (connects, disconnects and requests show up
/// there as events).
async fn command(client: &mut Control, request: Request) -> Result<Option<String>, Error> {
    Ok(match request {
        Request::Send { .. } | Request::History(_) | Request::Connect(_) | Request::Disconnect => {
            None
        }
        Request::Trust(name) => {
            let request = pb::TrustRequest { name };
            let answer = client::call("trust", ANSWER_TIMEOUT, client.trust(request)).await?;
            Some(format::trust_text(&answer))
        }
        Request::Accept(name) => {
            let request = pb::AcceptRequest { name: name.unwrap_or_default() };
            client::call("accept", ANSWER_TIMEOUT, client.accept(request)).await?;
            None
        }
        Request::Reject(name) => {
            let request = pb::RejectRequest { name: name.unwrap_or_default() };
            client::call("reject", ANSWER_TIMEOUT, client.reject(request)).await?;
            None
        }
        Request::Block(name) => {
            let request = pb::BlockRequest { name };
            let answer = client::call("block", ANSWER_TIMEOUT, client.block(request)).await?;
            Some(if answer.already {
                format!("{} was blocked already", answer.peer)
            } else {
                format!("blocked {}", answer.peer)
            })
        }
        Request::Unblock(name) => {
            let request = pb::UnblockRequest { name };
            let answer = client::call("unblock", ANSWER_TIMEOUT, client.unblock(request)).await?;
            Some(if answer.was_not_blocked {
                format!("{} was not blocked", answer.peer)
            } else {
                format!("unblocked {}", answer.peer)
            })
        }
    })
}

/// Asks for a fresh status on a task. `None` when it failed: the Watch
/// stream notices a daemon that went away, the next refresh anything else.
pub(crate) fn spawn_status(
    mut client: Control,
    answers: mpsc::UnboundedSender<Option<pb::GetStatusResponse>>,
) {
    tokio::spawn(async move {
        let _ = answers.send(status::get(&mut client).await.ok());
    });
}

/// Reports received messages as displayed (they are on screen now); a
/// failure becomes an error line.
pub(crate) async fn mark_displayed(
    mut client: Control,
    ids: Vec<String>,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    let request = pb::MarkDisplayedRequest { ids };
    let sent =
        client::call("record what was shown", ANSWER_TIMEOUT, client.mark_displayed(request));
    if let Err(err) = sent.await {
        let message = format!("could not report messages as displayed: {err}");
        let _ = outcomes.send(Outcome::Done(Err(message)));
    }
}

/// Follows who is online until `updates` closes or peerd goes away.
pub(crate) async fn follow_peers(mut client: Control, updates: mpsc::UnboundedSender<PeersUpdate>) {
    loop {
        let trouble = match watch_peers(&mut client, &updates).await {
            Ended::Closed | Ended::DaemonGone => return,
            Ended::Failed(why) => why,
        };
        let _ = updates.send(PeersUpdate::Unreachable(trouble));
        // Poll until a list comes, then try the feed again.
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            if updates.is_closed() {
                return;
            }
            match client::list_all(&mut client).await {
                Ok((peers, you)) => {
                    let _ = updates.send(PeersUpdate::Snapshot { peers, you });
                    break;
                }
                Err(Error::Status(status)) if is_local(&status) => return,
                Err(err) => {
                    let _ = updates.send(PeersUpdate::Unreachable(err.to_string()));
                }
            }
        }
    }
}

/// How a WatchPeers stream ended.
enum Ended {
    /// Nobody listens any more.
    Closed,
    /// The connection to peerd broke: the Watch stream reports that.
    DaemonGone,
    /// peerd refused or ended the feed (the directory unreachable): why.
    Failed(String),
}

async fn watch_peers(client: &mut Control, updates: &mpsc::UnboundedSender<PeersUpdate>) -> Ended {
    let stream = client::call(
        "watch the peers",
        ANSWER_TIMEOUT,
        client.watch_peers(pb::WatchPeersRequest {}),
    )
    .await;
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(Error::Status(status)) if is_local(&status) => return Ended::DaemonGone,
        Err(err) => return Ended::Failed(err.to_string()),
    };
    if updates.send(PeersUpdate::Restart).is_err() {
        return Ended::Closed;
    }
    loop {
        match stream.message().await {
            Ok(Some(event)) => {
                let presence = matches!(
                    event.kind,
                    Some(
                        Kind::PeerOnline(_)
                            | Kind::PeerStatus(_)
                            | Kind::PeerOffline(_)
                            | Kind::PeersSynced(_)
                    )
                );
                if presence && updates.send(PeersUpdate::Event(event)).is_err() {
                    return Ended::Closed;
                }
            }
            Ok(None) => return Ended::Failed("the presence feed ended".to_owned()),
            Err(status) if is_local(&status) => return Ended::DaemonGone,
            Err(status) => return Ended::Failed(Error::Status(status).to_string()),
        }
    }
}

/// A status tonic made on our side: the connection to peerd broke.
fn is_local(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}
