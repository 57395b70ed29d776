//! `chatctl disconnect`: CloseConversation.

use std::path::Path;

use peerchat::v1 as pb;

use crate::client::{self, ANSWER_TIMEOUT, Control};
use crate::error::Error;
use crate::{format, output};

pub(crate) async fn run(socket: &Path, json: bool) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let closed = close(&mut client).await?;
    let peer = closed.peer;
    let human = match closed.ended {
        // No conversation had begun: saying "disconnected" would claim one.
        Some(pb::close_conversation_response::Ended::DialCancelled(_)) => {
            format!("cancelled the connection attempt to {peer}")
        }
        _ => format!("disconnected from {peer}"),
    };
    output::either(json, || format::peer_json(&peer), || human)
}

/// Ends the current conversation (or dial); says with whom, and what ended.
pub(crate) async fn close(client: &mut Control) -> Result<pb::CloseConversationResponse, Error> {
    let request = pb::CloseConversationRequest {};
    client::call("disconnect", ANSWER_TIMEOUT, client.close_conversation(request)).await
}
