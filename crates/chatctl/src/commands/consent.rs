//! Consent and blocking: `chatctl accept [NAME]`, `reject [NAME]`,
//! `block NAME`, `unblock NAME`, `blocked`. Without a NAME, `accept` and
//! `reject` answer the oldest waiting request.

use std::path::Path;

use peerchat::v1 as pb;
use peerchat_core::Name;

use crate::client::{self, ANSWER_TIMEOUT, Control};
use crate::error::Error;
use crate::{format, output};

/// A NAME that may be left out: checked here, sent empty when absent.
fn optional(name: Option<&str>) -> Result<String, Error> {
    Ok(match name {
        Some(n) => Name::parse(n)?.to_string(),
        None => String::new(),
    })
}

pub(crate) async fn accept(socket: &Path, json: bool, name: Option<&str>) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let peer = answer(&mut client, true, name).await?;
    output::either(json, || format::peer_json(&peer), || format!("accepted {peer}: connected"))
}

pub(crate) async fn reject(socket: &Path, json: bool, name: Option<&str>) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let peer = answer(&mut client, false, name).await?;
    output::either(json, || format::peer_json(&peer), || format!("rejected {peer}"))
}

/// Accepts or rejects the request from `name` (the oldest waiting without
/// one); returns whose it was. Also `chat`'s `/accept` and `/reject`.
pub(crate) async fn answer(
    client: &mut Control,
    accept: bool,
    name: Option<&str>,
) -> Result<String, Error> {
    let name = optional(name)?;
    Ok(if accept {
        client::call("accept", ANSWER_TIMEOUT, client.accept(pb::AcceptRequest { name }))
            .await?
            .peer
    } else {
        client::call("reject", ANSWER_TIMEOUT, client.reject(pb::RejectRequest { name }))
            .await?
            .peer
    })
}

pub(crate) async fn block(socket: &Path, json: bool, name: &str) -> Result<(), Error> {
    let name = Name::parse(name)?.to_string();
    let mut client = client::connect(socket).await?;
    let answer =
        client::call("block", ANSWER_TIMEOUT, client.block(pb::BlockRequest { name })).await?;
    output::either(json, || format::block_json(&answer), || format::block_text(&answer))
}

pub(crate) async fn unblock(socket: &Path, json: bool, name: &str) -> Result<(), Error> {
    let name = Name::parse(name)?.to_string();
    let mut client = client::connect(socket).await?;
    let answer =
        client::call("unblock", ANSWER_TIMEOUT, client.unblock(pb::UnblockRequest { name }))
            .await?;
    output::either(json, || format::unblock_json(&answer), || format::unblock_text(&answer))
}

pub(crate) async fn blocked(socket: &Path, json: bool) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let request = pb::ListBlockedRequest {};
    let answer =
        client::call("list the blocked peers", ANSWER_TIMEOUT, client.list_blocked(request))
            .await?;
    output::either(json, || format::blocked_json(&answer), || format::blocked_text(&answer))
}
