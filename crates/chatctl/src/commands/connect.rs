//! `chatctl connect NAME`: OpenConversation.

use std::path::Path;

use peerchat::v1 as pb;
use peerchat_core::Name;

use crate::client::{self, CONNECT_ANSWER_TIMEOUT, Control};
use crate::error::Error;
use crate::{format, output};

pub(crate) async fn run(socket: &Path, json: bool, name: &str) -> Result<(), Error> {
    let name = Name::parse(name)?;
    let mut client = client::connect(socket).await?;
    let peer = open(&mut client, &name).await?;
    output::either(json, || format::peer_json(&peer), || format!("connected to {peer}"))
}

/// Opens a conversation with `name`; returns the peer's name as it
/// registered it.
pub(crate) async fn open(client: &mut Control, name: &Name) -> Result<String, Error> {
    let request = pb::OpenConversationRequest { name: name.to_string() };
    let response =
        client::call("connect", CONNECT_ANSWER_TIMEOUT, client.open_conversation(request)).await?;
    Ok(if response.peer.is_empty() { name.to_string() } else { response.peer })
}
