//! `chatctl watch`: a display client. Prints every event as it comes (one
//! line each, flushed) and reports each message shown with MarkDisplayed.
//! It asks for presence too: peers coming online and going offline are
//! events like the others. A peer's status changes (busy, available) are
//! not shown here but by `list --watch`: every connect and disconnect
//! makes two of them, in a big community many more, and a script reading
//! the conversation's events from `watch` would find them in between.
//!
//! Ends with exit 0 on Ctrl-C/SIGTERM or when stdout's reader goes away, or with `error: peerd stopped`
//! (exit 1) when the daemon ends the stream.

use std::path::Path;

use peerchat::v1 as pb;
use tonic::codec::Streaming;

use crate::client::{self, ANSWER_TIMEOUT};
use crate::error::Error;
use crate::marker::Marker;
use crate::{format, output, signals};

pub(crate) async fn run(socket: &Path, json: bool) -> Result<(), Error> {
    let mut client = client::connect(socket).await?;
    let request = pb::WatchRequest { display: true, presence: true };
    let mut events = client::call("start watching", ANSWER_TIMEOUT, client.watch(request)).await?;
    // The daemon answers Watch only once this client is subscribed, so from
    // here on no event is missed: say so (on stderr, which scripts and the
    // tests use as the readiness line).
    output::note(&format!("watching peerd at {} (Ctrl-C to stop)", socket.display()));
    let marker = Marker::spawn(client);
    let result = tokio::select! {
        result = show_all(&mut events, json, &marker) => result,
        () = signals::interrupted() => Ok(()),
        () = output::closed() => Ok(()),
    };
    marker.finish().await;
    result
}

async fn show_all(
    events: &mut Streaming<pb::Event>,
    json: bool,
    marker: &Marker,
) -> Result<(), Error> {
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => return Err(Error::Stopped { detail: None }),
            Err(status) => return Err(Error::from_stream(status)),
        };
        if matches!(event.kind, Some(pb::event::Kind::PeerStatus(_))) {
            continue;
        }
        show(&event, json)?;
        if let Some(pb::event::Kind::Message(message)) = event.kind {
            marker.shown(message.id);
        }
    }
}

/// Prints one event; unknown kinds (a newer daemon) are skipped.
fn show(event: &pb::Event, json: bool) -> Result<(), Error> {
    if json {
        match format::event_json(event) {
            Some(value) => output::json(&value),
            None => Ok(()),
        }
    } else {
        match format::event_text(event, &chrono::Local::now(), &|_| None) {
            Some(text) => output::line(&text),
            None => Ok(()),
        }
    }
}
