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
    if let Some(note) = left_out(limit, history.entries.len(), history.older) {
        output::note(&note);
    }
    output::either(
        json,
        || format::history_json(&history.entries),
        || format::history_text(&history, &chrono::Local),
    )
}

/// The note on stderr when the answer holds fewer entries than were asked
/// for (all, or `limit`) and older ones exist: one answer's own limits cut
/// it, which the user should know.
fn left_out(limit: Option<u32>, shown: usize, older: u64) -> Option<String> {
    let cut_short = limit.is_none_or(|n| shown < n as usize);
    (older > 0 && cut_short).then(|| {
        format!(
            "{older} older entries not shown: one answer holds at most 10,000 entries and 32 MiB \
             of text"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::left_out;

    #[test]
    fn entries_left_out_by_the_answer_are_noted_not_those_left_out_by_the_limit() {
        // Everything, or more than one answer holds, was asked for.
        assert!(left_out(None, 10_000, 5).is_some_and(|n| n.starts_with("5 older entries")));
        assert!(left_out(Some(50_000), 10_000, 7).is_some());
        // The newest 10 were asked for and shown: nothing to say.
        assert_eq!(left_out(Some(10), 10, 90), None);
        // Nothing older exists.
        assert_eq!(left_out(None, 3, 0), None);
    }
}
