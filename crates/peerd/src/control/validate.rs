//! Checking control requests, apart from acting on them: every field a
//! client sends is bounded and parsed here, with no I/O, so that the rules
//! are unit-tested and fuzzed on their own. The handlers in `mod.rs` only
//! act on what passed.

use std::time::Duration;

use peerchat::v1 as pb;
use peerchat_core::session::MAX_ID_LEN;
use peerchat_core::{Name, check_text};

use super::error::ControlError;
use crate::driver::api::Wait;

/// How long `send` waits for a receipt when the client gives no timeout.
pub(crate) const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `send` timeout a client may ask for (chatctl's cap too).
pub(crate) const MAX_SEND_TIMEOUT: Duration = peerchat_core::timeouts::MAX_SEND_WAIT;
/// History entries one request may ask for.
pub(crate) const MAX_HISTORY: usize = 10_000;
/// History entries when the client does not say: the stored conversation
/// (SPEC), as far as one answer holds it.
pub(crate) const DEFAULT_HISTORY: usize = MAX_HISTORY;
/// Ids one MarkDisplayed may carry.
pub(crate) const MAX_DISPLAYED_IDS: usize = 10_000;

/// A send that passed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Send {
    pub(crate) text: String,
    /// `None`: answer at once (`--wait none`).
    pub(crate) wait: Option<Wait>,
    pub(crate) timeout: Duration,
}

pub(crate) fn send(req: pb::SendRequest) -> Result<Send, ControlError> {
    check_text(&req.text)?;
    let wait = match pb::WaitFor::try_from(req.wait) {
        Ok(pb::WaitFor::None) => None,
        Ok(pb::WaitFor::Displayed) => Some(Wait::Displayed),
        // Unspecified, delivered, or a value from a newer client.
        _ => Some(Wait::Delivered),
    };
    let timeout = match req.timeout_ms {
        0 => DEFAULT_SEND_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    // Said, not silently cut: a client asking for more than we wait would
    // wait for an answer that comes sooner than it thinks.
    if wait.is_some() && timeout > MAX_SEND_TIMEOUT {
        return Err(ControlError::Invalid(format!(
            "timeout of {timeout:?} is too long (at most {}s)",
            MAX_SEND_TIMEOUT.as_secs()
        )));
    }
    Ok(Send { text: req.text, wait, timeout })
}

/// The peer of `connect` or `trust`.
pub(crate) fn peer_name(name: &str) -> Result<Name, ControlError> {
    Ok(Name::parse(name)?)
}

/// A name that may be left empty (`accept` with no name: the oldest
/// request).
pub(crate) fn optional_peer_name(name: &str) -> Result<Option<Name>, ControlError> {
    if name.is_empty() { Ok(None) } else { peer_name(name).map(Some) }
}

/// `history`: the peer named (`None`: the current or last one) and how many
/// entries.
pub(crate) fn history(req: &pb::GetHistoryRequest) -> Result<(Option<Name>, usize), ControlError> {
    let peer = if req.peer.is_empty() { None } else { Some(Name::parse(&req.peer)?) };
    let limit = match req.limit {
        0 => DEFAULT_HISTORY,
        n => usize::try_from(n).unwrap_or(MAX_HISTORY).min(MAX_HISTORY),
    };
    Ok((peer, limit))
}

/// `MarkDisplayed`: at most [`MAX_DISPLAYED_IDS`] ids of a sane length.
pub(crate) fn displayed(req: pb::MarkDisplayedRequest) -> Result<Vec<String>, ControlError> {
    if req.ids.len() > MAX_DISPLAYED_IDS {
        return Err(ControlError::Invalid(format!("at most {MAX_DISPLAYED_IDS} ids per request")));
    }
    if let Some(bad) = req.ids.iter().find(|id| id.is_empty() || id.len() > MAX_ID_LEN) {
        return Err(ControlError::Invalid(format!(
            "a message id is 1 to {MAX_ID_LEN} bytes, not {}",
            bad.len()
        )));
    }
    Ok(req.ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_defaults_and_bounds() {
        let ok = send(pb::SendRequest { text: "hi".into(), wait: 0, timeout_ms: 0 }).expect("ok");
        assert_eq!(ok.wait, Some(Wait::Delivered));
        assert_eq!(ok.timeout, DEFAULT_SEND_TIMEOUT);
        let none = send(pb::SendRequest { text: "hi".into(), wait: 1, timeout_ms: u32::MAX });
        let none = none.expect("ok");
        assert_eq!(none.wait, None, "a send that waits for nothing has no timeout to check");
        let max = u32::try_from(MAX_SEND_TIMEOUT.as_millis()).expect("fits");
        let longest = send(pb::SendRequest { text: "hi".into(), wait: 0, timeout_ms: max });
        assert_eq!(longest.expect("the longest wait is allowed").timeout, MAX_SEND_TIMEOUT);
        let over = send(pb::SendRequest { text: "hi".into(), wait: 0, timeout_ms: max + 1 });
        assert!(over.expect_err("over the cap").to_string().contains("too long"));
        let shown = send(pb::SendRequest { text: "hi".into(), wait: 3, timeout_ms: 5 });
        assert_eq!(shown.expect("ok").wait, Some(Wait::Displayed));
        let odd = send(pb::SendRequest { text: "hi".into(), wait: -7, timeout_ms: 1 });
        assert_eq!(odd.expect("ok").wait, Some(Wait::Delivered));
        assert!(send(pb::SendRequest::default()).expect_err("empty").to_string().contains("empty"));
    }

    #[test]
    fn history_and_names() {
        let (peer, limit) =
            history(&pb::GetHistoryRequest { peer: String::new(), limit: 0 }).expect("ok");
        assert_eq!((peer, limit), (None, DEFAULT_HISTORY));
        let (_, limit) =
            history(&pb::GetHistoryRequest { peer: "bob".into(), limit: u32::MAX }).expect("ok");
        assert_eq!(limit, MAX_HISTORY);
        let err =
            history(&pb::GetHistoryRequest { peer: "b b".into(), limit: 1 }).expect_err("bad");
        assert!(err.to_string().contains("invalid name"));
        assert!(peer_name("").expect_err("empty").to_string().contains("invalid name"));
    }

    #[test]
    fn displayed_ids_are_bounded() {
        let many = pb::MarkDisplayedRequest { ids: vec!["a".into(); MAX_DISPLAYED_IDS + 1] };
        assert!(displayed(many).is_err());
        assert!(displayed(pb::MarkDisplayedRequest { ids: vec![String::new()] }).is_err());
        assert!(displayed(pb::MarkDisplayedRequest { ids: vec!["x".repeat(65)] }).is_err());
        assert_eq!(
            displayed(pb::MarkDisplayedRequest { ids: vec!["a".into()] }).expect("ok"),
            ["a"]
        );
    }
}
