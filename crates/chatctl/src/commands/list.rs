//! `chatctl list`: ListPeers, every page. `chatctl list --watch`:
//! WatchPeers, the same list and then each change as it happens.

use std::path::Path;

use pb::event::Kind;
use peerchat::v1 as pb;
use tonic::codec::Streaming;

use crate::client::{self, ANSWER_TIMEOUT};
use crate::error::Error;
use crate::{format, output, signals};

pub(crate) async fn run(socket: &Path, json: bool, keys: bool) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let (peers, you) = client::list_all(&mut client).await?;
    output::either(
        json,
        || format::list_json(&peers, &you),
        || format::list_text(&peers, &you, keys),
    )
}

/// `list --watch`. With `--json` every event is a line as `watch --json`
/// prints it: a `peer_online` per peer online, `synced`, then the changes.
/// For people: the table `list` prints, then a line per change.
///
/// Ends with exit 0 on Ctrl-C/SIGTERM or when stdout's reader goes away, or
/// with `error: peerd stopped` (exit 1) when the daemon ends the stream.
pub(crate) async fn follow(socket: &Path, json: bool, keys: bool) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let request = pb::WatchPeersRequest {};
    let mut events =
        client::call("watch the peers", ANSWER_TIMEOUT, client.watch_peers(request)).await?;
    tokio::select! {
        result = show_all(&mut events, json, keys) => result,
        () = signals::interrupted() => Ok(()),
        () = output::closed() => Ok(()),
    }
}

async fn show_all(events: &mut Streaming<pb::Event>, json: bool, keys: bool) -> Result<(), Error> {
    // For people, the first list is gathered into one table.
    let mut first: Option<(Vec<pb::Peer>, String)> = (!json).then(Default::default);
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => return Err(Error::Stopped { detail: None }),
            Err(status) => return Err(Error::from_stream(status)),
        };
        if json {
            if let Some(value) = format::event_json(&event) {
                output::json(&value)?;
            }
            continue;
        }
        if let Some((peers, you)) = &mut first {
            match event.kind {
                Some(Kind::PeerOnline(online)) => {
                    let peer = online.peer.unwrap_or_default();
                    if online.you {
                        you.clone_from(&peer.name);
                    }
                    peers.push(peer);
                }
                Some(Kind::PeersSynced(_)) => {
                    output::line(&format::list_text(peers, you, keys))?;
                    first = None;
                }
                // Nothing else comes before the list is complete.
                _ => {}
            }
            continue;
        }
        if let Some(text) = format::event_text(&event, &chrono::Local::now(), &|_| None) {
            output::line(&text)?;
        }
    }
}
