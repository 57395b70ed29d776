//! `chatctl connect NAME`: OpenConversation.

use std::path::Path;

use peerchat::v1 as pb;
use peerchat_core::Name;

use crate::client::{self, ANSWER_TIMEOUT, CONNECT_ANSWER_TIMEOUT, Control};
use crate::error::Error;
use crate::{format, output};

pub(crate) async fn run(socket: &Path, json: bool, name: &str) -> Result<(), Error> {
    let name = Name::parse(name)?;
    let mut client = client::connect(socket).await?;
    let peer = open_telling(&mut client, &name, |asking| {
        output::note(&format::connect_asking_text(&asking.peer));
    })
    .await?;
    output::either(json, || format::peer_json(&peer), || format!("connected to {peer}"))
}

/// Like [`open`], calling `told` when the wait is the peer's user being
/// asked (consent), at once, so that a connect that takes a minute can say
/// why. The events come from a Watch of our own beside the call; without
/// it the connect is the same, only quiet.
pub(crate) async fn open_telling(
    client: &mut Control,
    name: &Name,
    mut told: impl FnMut(&pb::AskingEvent),
) -> Result<String, Error> {
    let mut watcher = client.clone();
    let request = pb::WatchRequest { display: false, presence: false };
    let events = match tokio::time::timeout(ANSWER_TIMEOUT, watcher.watch(request)).await {
        Ok(Ok(events)) => Some(events.into_inner()),
        _ => None,
    };
    let opening = open(client, name);
    tokio::pin!(opening);
    let Some(mut events) = events else { return opening.await };
    loop {
        tokio::select! {
            opened = &mut opening => return opened,
            event = events.message() => match event {
                Ok(Some(pb::Event { kind: Some(pb::event::Kind::Asking(a)) }))
                    if name.matches(&a.peer) =>
                {
                    told(&a);
                }
                Ok(Some(_)) => {}
                // The events stopped; the answer still comes.
                _ => return opening.await,
            },
        }
    }
}

/// Opens a conversation with `name`; returns the peer's name as it
/// registered it.
pub(crate) async fn open(client: &mut Control, name: &Name) -> Result<String, Error> {
    let request = pb::OpenConversationRequest { name: name.to_string() };
    let response =
        client::call("connect", CONNECT_ANSWER_TIMEOUT, client.open_conversation(request)).await?;
    Ok(if response.peer.is_empty() { name.to_string() } else { response.peer })
}
