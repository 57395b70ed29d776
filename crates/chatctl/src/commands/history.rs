//! `chatctl history [NAME] [--limit N]`: GetHistory.

use std::path::Path;

use peerchat::v1 as pb;
use peerchat_core::Name;

use crate::client::{self, ANSWER_TIMEOUT};
use crate::error::Error;
use crate::{format, output};

pub(crate) async fn run(
    socket: &Path,
    json: bool,
    name: Option<&str>,
    limit: Option<u32>,
) -> Result<(), Error> {
    let peer = name.map(Name::parse).transpose()?.map(|n| n.to_string()).unwrap_or_default();
    let mut client = client::connect(socket).await?;
    // limit 0 asks for the daemon's default: the whole conversation, as
    // far as one answer holds it.
    let request = pb::GetHistoryRequest { peer, limit: limit.unwrap_or(0) };
    let history =
        client::call("read the history", ANSWER_TIMEOUT, client.get_history(request)).await?;
    let cut_short = limit.is_none_or(|n| history.entries.len() < n as usize);
    if history.older > 0 && cut_short {
        output::note(&format!(
            "{} older entries not shown: one answer holds at most 10,000 entries and 32 MiB of text",
            history.older
        ));
    }
    output::either(
        json,
        || format::history_json(&history.entries),
        || format::history_text(&history, &chrono::Local),
    )
}
