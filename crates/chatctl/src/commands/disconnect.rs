//! `chatctl disconnect`: CloseConversation.

use std::path::Path;

use peerchat::v1 as pb;

use crate::client::{self, ANSWER_TIMEOUT, Control};
use crate::error::Error;
use crate::{format, output};

pub(crate) async fn run(socket: &Path, json: bool) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let peer = close(&mut client).await?.peer;
    output::either(json, || format::peer_json(&peer), || format!("disconnected from {peer}"))
}

/// Ends the current conversation (or dial); says with whom, and what ended.
pub(crate) async fn close(client: &mut Control) -> Result<pb::CloseConversationResponse, Error> {
    let request = pb::CloseConversationRequest {};
    client::call("disconnect", ANSWER_TIMEOUT, client.close_conversation(request)).await
}
