//! `chatctl send TEXT... [--wait ...] [--timeout ...]`: Send, waiting in
//! the daemon for the receipt asked for.

use std::path::Path;
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat_core::check_text;

use crate::cli::{SendArgs, Wait};
use crate::client::{self, ANSWER_TIMEOUT};
use crate::error::Error;
use crate::{format, output};

/// Slack beyond `--timeout` for peerd to report its own "timed out".
const GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn run(socket: &Path, json: bool, args: &SendArgs) -> Result<(), Error> {
    let text = format::join_text(&args.text);
    check_text(&text)?;
    let mut client = client::connect(socket).await?;
    let (wait, limit) = match args.wait {
        Wait::None => (pb::WaitFor::None, ANSWER_TIMEOUT),
        Wait::Delivered => (pb::WaitFor::Delivered, args.timeout + GRACE),
        Wait::Displayed => (pb::WaitFor::Displayed, args.timeout + GRACE),
    };
    let timeout_ms = u32::try_from(args.timeout.as_millis()).unwrap_or(u32::MAX).max(1);
    let request = pb::SendRequest { text, wait: wait as i32, timeout_ms };
    let response = client::call("confirm the message", limit, client.send(request)).await?;
    if response.state() == pb::MessageState::Failed {
        return Err(Error::MessageFailed { id: response.id });
    }
    output::either(json, || format::send_json(&response), || format::send_text(&response))
}
