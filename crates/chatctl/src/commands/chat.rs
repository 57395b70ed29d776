//! `chatctl chat [NAME]`: the interactive mode, which also works with piped
//! stdin (`printf 'hi\nthere\n' | chatctl chat bob`).
//!
//! One task runs a loop over three inputs: events from a display Watch
//! (printed, then reported with MarkDisplayed), lines from stdin (read on
//! their own thread: a blocking read must never hold up the runtime or the
//! exit), and Ctrl-C/SIGTERM. Lines are messages (Send, wait none) or
//! `/commands`. On `/quit` or end of input it keeps showing events until
//! every message sent from this session is delivered or failed (at most
//! [`DRAIN_TIMEOUT`], then it exits 1, `timed out`), so that piped input
//! is not cut off in flight.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, IsTerminal};
use std::path::Path;
use std::time::Duration;

use chrono::Local;
use pb::close_conversation_response::Ended;
use pb::event::Kind;
use peerchat::v1 as pb;
use peerchat_core::{Name, check_text};
use tokio::sync::mpsc;
use tonic::codec::Streaming;

use crate::client::{self, ANSWER_TIMEOUT, Control};
use crate::commands::{connect, consent, disconnect, status};
use crate::error::Error;
use crate::marker::Marker;
use crate::{format, output, signals};

/// The longest wait for receipts after the last line.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const HELP: &str = "\
type a line and press Enter to send it; a line starting with // sends it with one / less
  /list            who is online
  /connect NAME    open a conversation with NAME
  /disconnect      end the current conversation
  /accept [NAME]   let a peer who asks to talk in (the oldest waiting, without NAME)
  /reject [NAME]   turn a peer who asks to talk down
  /status          this daemon's status
  /quit            leave (also Ctrl-D); waits briefly for receipts of what you sent
marks: ✓ delivered, ✓✓ displayed, ✗ failed";

pub(crate) async fn run(socket: &Path, json: bool, name: Option<&str>) -> Result<(), Error> {
    // A person at a terminal gets the full-screen chat; pipes and scripts
    // keep the line mode below.
    if !json && io::stdin().is_terminal() && io::stdout().is_terminal() {
        return crate::tui::run(socket, name).await;
    }
    let name = name.map(Name::parse).transpose()?;
    let mut client = client::connect(socket).await?;
    // Watch first, so that nothing that happens from here on is missed.
    // Presence would bury the conversation (`/list` asks when wanted).
    let request = pb::WatchRequest { display: true, presence: false };
    let mut events = client::call("start watching", ANSWER_TIMEOUT, client.watch(request)).await?;
    let mut chat = Chat::new(client, json);
    let interactive = io::stdin().is_terminal() && !json;
    chat.start(name.as_ref(), interactive).await?;

    let interrupted = signals::interrupted();
    tokio::pin!(interrupted);
    let result = chat.converse(&mut events, &mut interrupted).await;
    let result = match result {
        Ok(Flow::Quit) => chat.drain(&mut events, &mut interrupted).await,
        Ok(Flow::Interrupted) => chat.left_unconfirmed(),
        Ok(Flow::Continue) => Ok(()),
        Err(err) => Err(err),
    };
    chat.marker.finish().await;
    // Each failure was said as it happened; the exit status says there
    // were some, for a script that piped its lines in.
    match result {
        Ok(()) if chat.failures > 0 => Err(Error::ChatFailures(chat.failures)),
        Err(unconfirmed @ (Error::ChatUnconfirmed { .. } | Error::ChatInterrupted { .. }))
            if chat.failures > 0 =>
        {
            output::note(&format!("error: {unconfirmed}"));
            Err(Error::ChatFailures(chat.failures))
        }
        other => other,
    }
}

/// What the loop does next.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
    Interrupted,
}

/// The state of one chat session.
#[derive(Debug)]
struct Chat {
    client: Control,
    json: bool,
    marker: Marker,
    /// Ids of messages sent from this session not yet delivered or failed.
    unconfirmed: HashSet<String>,
    /// Texts of messages sent from this session, to label their receipts;
    /// dropped once displayed or failed.
    texts: HashMap<String, String>,
    /// A `connected`/`disconnected` this session printed itself on its
    /// request's answer; the daemon's matching event is then not repeated.
    announced_connect: Option<String>,
    announced_disconnect: Option<String>,
    /// A `/connect` of this session that failed (or that its `/disconnect`
    /// cancelled): said on its own line; the daemon's `connect_failed`
    /// event is then not repeated.
    announced_connect_failed: Option<String>,
    /// The `asking` of a `/connect` of this session, said while the connect
    /// waited (from a Watch of the connect's own): not repeated when this
    /// Watch, which is not read meanwhile, brings it after `connected`.
    announced_asking: Option<String>,
    /// Our own `disconnected` line, printed once the events that came
    /// before it (a last receipt) are shown.
    deferred: Option<pb::Event>,
    /// Lines that failed (a refused request, a mistyped command) and
    /// messages from this session reported failed.
    failures: usize,
}

impl Chat {
    fn new(client: Control, json: bool) -> Chat {
        Chat {
            marker: Marker::spawn(client.clone()),
            client,
            json,
            unconfirmed: HashSet::new(),
            texts: HashMap::new(),
            announced_connect: None,
            announced_disconnect: None,
            announced_connect_failed: None,
            announced_asking: None,
            deferred: None,
            failures: 0,
        }
    }

    /// Connects to `name` (unless already talking to it) and, for a person
    /// at a terminal, says where things stand. A failed connect ends chat.
    async fn start(&mut self, name: Option<&Name>, interactive: bool) -> Result<(), Error> {
        let current = if name.is_some() || interactive {
            status::get(&mut self.client).await?.peer
        } else {
            String::new()
        };
        match name {
            Some(name) if !name.matches(&current) => {
                let peer = self.open(name).await?;
                self.announce_connected(peer)?;
            }
            _ if interactive && !current.is_empty() => {
                output::line(&format!("* talking to {current}"))?
            }
            _ if interactive => {
                output::line("* not in a conversation: /connect NAME to start one")?
            }
            _ => {}
        }
        if interactive {
            output::line("* type a message and press Enter; /help for commands")?;
        }
        Ok(())
    }

    /// The interactive phase: until `/quit`, end of input, or a signal.
    async fn converse(
        &mut self,
        events: &mut Streaming<pb::Event>,
        interrupted: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Flow, Error> {
        let mut lines = stdin_lines()?;
        let stdout_closed = output::closed();
        tokio::pin!(stdout_closed);
        loop {
            tokio::select! {
                () = &mut *interrupted => return Ok(Flow::Interrupted),
                () = &mut stdout_closed => return Ok(Flow::Interrupted),
                event = events.message() => self.on_event(event)?,
                line = lines.recv() => match line {
                    Some(Ok(None)) => {
                        // Sent as typed or not at all: never with characters
                        // replaced behind the user's back.
                        self.note_failure(mistyped("a line that is not UTF-8 text was not sent"))?;
                    }
                    Some(Ok(Some(line))) => {
                        // Ctrl-C also while a line's request waits: a
                        // `/connect` may wait a minute for the peer's user.
                        // Dropping the request withdraws it in peerd.
                        let flow = tokio::select! {
                            () = &mut *interrupted => return Ok(Flow::Interrupted),
                            flow = self.on_line(&line) => flow?,
                        };
                        self.settle(events)?;
                        if flow == Flow::Quit {
                            return Ok(Flow::Quit);
                        }
                    }
                    Some(Err(err)) => return Err(Error::Stdin(err)),
                    None => return Ok(Flow::Quit),
                },
            }
        }
    }

    /// After the last line: keep showing events until every message sent
    /// from here is confirmed one way or the other, or time is up.
    async fn drain(
        &mut self,
        events: &mut Streaming<pb::Event>,
        interrupted: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(), Error> {
        let deadline = tokio::time::sleep(DRAIN_TIMEOUT);
        tokio::pin!(deadline);
        while !self.unconfirmed.is_empty() {
            tokio::select! {
                () = &mut *interrupted => return self.left_unconfirmed(),
                () = &mut deadline => {
                    // Not a success: a script that piped its lines in must
                    // learn that it cannot know they went through.
                    return Err(Error::ChatUnconfirmed {
                        count: self.unconfirmed.len(),
                        within: DRAIN_TIMEOUT,
                    });
                }
                event = events.message() => self.on_event(event)?,
            }
        }
        Ok(())
    }

    /// Interrupted: fine, unless messages sent from here are still
    /// unconfirmed.
    fn left_unconfirmed(&self) -> Result<(), Error> {
        match self.unconfirmed.len() {
            0 => Ok(()),
            count => Err(Error::ChatInterrupted { count }),
        }
    }

    /// One item from the Watch stream: show it; its end is peerd's end.
    fn on_event(&mut self, event: Result<Option<pb::Event>, tonic::Status>) -> Result<(), Error> {
        match event {
            Ok(Some(event)) => self.show(&event),
            Ok(None) => Err(Error::Stopped { detail: None }),
            Err(status) => Err(Error::from_stream(status)),
        }
    }

    fn show(&mut self, event: &pb::Event) -> Result<(), Error> {
        let already_shown = match &event.kind {
            Some(Kind::Connected(c)) => take_if_same(&mut self.announced_connect, &c.peer),
            Some(Kind::Disconnected(d)) => {
                self.announced_connect = None;
                take_if_same(&mut self.announced_disconnect, &d.peer)
            }
            Some(Kind::ConnectFailed(f)) => {
                take_if_same(&mut self.announced_connect_failed, &f.peer)
            }
            Some(Kind::Asking(a)) => take_if_same(&mut self.announced_asking, &a.peer),
            _ => false,
        };
        if already_shown {
            return Ok(());
        }
        if self.json {
            if let Some(value) = format::event_json(event) {
                output::json(&value)?;
            }
        } else {
            let label = |id: &str| self.texts.get(id).map(|text| format::snippet(text));
            if let Some(text) = format::event_text(event, &Local::now(), &label) {
                output::line(&text)?;
            }
        }
        match &event.kind {
            Some(Kind::Message(m)) => self.marker.shown(m.id.clone()),
            Some(Kind::Receipt(r)) => {
                self.unconfirmed.remove(&r.id);
                if r.state() == pb::MessageState::Displayed {
                    self.texts.remove(&r.id);
                }
            }
            Some(Kind::Failed(f)) => {
                if self.unconfirmed.remove(&f.id) {
                    self.failures += 1;
                }
                self.texts.remove(&f.id);
            }
            _ => {}
        }
        Ok(())
    }

    /// One line of input. Only output failures are errors here; a refused
    /// request is a note and the chat goes on.
    async fn on_line(&mut self, line: &str) -> Result<Flow, Error> {
        if line.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        let Some(command) = line.strip_prefix('/') else {
            return self.send(line).await;
        };
        if command.starts_with('/') {
            return self.send(command).await;
        }
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let outcome = match (verb, args.as_slice()) {
            ("quit" | "exit", []) => return Ok(Flow::Quit),
            ("help", _) if self.json => {
                // For the user, not for the program reading stdout.
                output::note(HELP);
                Ok(())
            }
            ("help", _) => output::line(HELP),
            ("list", []) => self.list().await,
            ("status", []) => self.status().await,
            ("connect", [name]) => self.connect(name).await,
            ("accept", []) => self.answer(true, None).await,
            ("accept", [name]) => self.answer(true, Some(name)).await,
            ("reject", []) => self.answer(false, None).await,
            ("reject", [name]) => self.answer(false, Some(name)).await,
            ("accept" | "reject", _) => mistyped(&format!("usage: /{verb} [NAME]")),
            ("disconnect", []) => self.disconnect().await,
            ("connect", _) => mistyped("usage: /connect NAME"),
            ("quit" | "exit" | "list" | "status" | "disconnect", _) => {
                mistyped(&format!("usage: /{verb} (no arguments)"))
            }
            _ => mistyped(&format!("unknown command /{verb} (try /help)")),
        };
        self.note_failure(outcome)?;
        Ok(Flow::Continue)
    }

    async fn send(&mut self, text: &str) -> Result<Flow, Error> {
        let outcome = async {
            check_text(text)?;
            let request = pb::SendRequest {
                text: text.to_owned(),
                wait: pb::WaitFor::None as i32,
                timeout_ms: 0,
            };
            let response =
                client::call("take the message", ANSWER_TIMEOUT, self.client.send(request)).await?;
            let now = Local::now();
            if self.json {
                output::json(&format::sent_json(&response.id, text, now.timestamp_millis()))?;
            } else {
                output::line(&format::sent_text(text, &now))?;
            }
            if response.state() != pb::MessageState::Delivered
                && response.state() != pb::MessageState::Displayed
            {
                self.unconfirmed.insert(response.id.clone());
            }
            self.texts.insert(response.id, text.to_owned());
            Ok(())
        }
        .await;
        self.note_failure(outcome)?;
        Ok(Flow::Continue)
    }

    async fn list(&mut self) -> Result<(), Error> {
        let (peers, you) = client::list_all(&mut self.client).await?;
        output::either(
            self.json,
            || format::list_json(&peers, &you),
            || format::list_text(&peers, &you, false),
        )
    }

    async fn status(&mut self) -> Result<(), Error> {
        let status = status::get(&mut self.client).await?;
        output::either(self.json, || format::status_json(&status), || format::status_text(&status))
    }

    async fn connect(&mut self, name: &str) -> Result<(), Error> {
        let name = Name::parse(name)?;
        let peer = match self.open(&name).await {
            Ok(peer) => peer,
            Err(e) => {
                self.announced_connect_failed = Some(name.to_string());
                return Err(e);
            }
        };
        self.announce_connected(peer)
    }

    /// Answers a request to talk (the oldest waiting without a name). The
    /// events say what came of it (`connected`, the request `rejected`).
    async fn answer(&mut self, accept: bool, name: Option<&str>) -> Result<(), Error> {
        consent::answer(&mut self.client, accept, name).await.map(|_| ())
    }

    /// Opens a conversation with `name`, showing the wait for its user's
    /// consent when it starts, not once the connect is over.
    async fn open(&mut self, name: &Name) -> Result<String, Error> {
        let mut client = self.client.clone();
        let mut told = Ok(());
        let opened = connect::open_telling(&mut client, name, |asking| {
            if told.is_err() {
                return;
            }
            let event = pb::Event { kind: Some(Kind::Asking(asking.clone())) };
            told = self.print_event(&event);
            self.announced_asking = Some(asking.peer.clone());
        })
        .await;
        told?;
        opened
    }

    /// Shows the end at once, with the daemon's reason, before whatever is
    /// typed next; the daemon's own `disconnected` event is then not
    /// repeated. A cancelled dial has no such event to wait for.
    async fn disconnect(&mut self) -> Result<(), Error> {
        let ended = disconnect::close(&mut self.client).await?;
        let (reason, event_follows) = match ended.ended {
            Some(Ended::ConversationReason(reason)) => (reason, true),
            Some(Ended::DialCancelled(_)) => {
                self.announced_connect_failed = Some(ended.peer.clone());
                ("you cancelled the connection attempt".to_owned(), false)
            }
            // A daemon that does not say (older than this chatctl).
            None => (String::new(), true),
        };
        let peer = ended.peer;
        let event = pb::Event {
            kind: Some(Kind::Disconnected(pb::DisconnectedEvent { peer: peer.clone(), reason })),
        };
        self.announced_connect = None;
        self.deferred = Some(event);
        if event_follows {
            self.announced_disconnect = Some(peer);
        }
        Ok(())
    }

    /// After a line's request: shows the events already here, then the
    /// line that waited for them. The daemon told of a last receipt before
    /// it answered `/disconnect`, and the receipt is shown first, as
    /// `watch` shows it (when it has arrived, as it nearly always has: the
    /// two come on separate streams). A failed `/connect`'s event, if one
    /// is among them, is not repeated; one that comes later is shown.
    fn settle(&mut self, events: &mut Streaming<pb::Event>) -> Result<(), Error> {
        if self.deferred.is_none() && self.announced_connect_failed.is_none() {
            return Ok(());
        }
        let mut drained = Ok(());
        while let Some(event) = ready(events) {
            drained = self.on_event(event);
            if drained.is_err() {
                break;
            }
        }
        self.announced_connect_failed = None;
        if let Some(line) = self.deferred.take() {
            self.print_event(&line)?;
        }
        drained
    }

    /// Shows that our own request connected us, before the daemon's event.
    fn announce_connected(&mut self, peer: String) -> Result<(), Error> {
        let event =
            pb::Event { kind: Some(Kind::Connected(pb::ConnectedEvent { peer: peer.clone() })) };
        self.print_event(&event)?;
        self.announced_connect = Some(peer);
        Ok(())
    }

    /// In chat a failed request is an `error:` line on stderr, counted,
    /// and the chat goes on; only a broken stdout ends it.
    fn note_failure(&mut self, outcome: Result<(), Error>) -> Result<(), Error> {
        match outcome {
            Err(err @ Error::Stdout(_)) => Err(err),
            Err(err) => {
                output::note(&format!("error: {err}"));
                self.failures += 1;
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    fn print_event(&self, event: &pb::Event) -> Result<(), Error> {
        if self.json {
            format::event_json(event).map_or(Ok(()), |value| output::json(&value))
        } else {
            format::event_text(event, &Local::now(), &|_| None)
                .map_or(Ok(()), |text| output::line(&text))
        }
    }
}

/// The next event if it is already here, without waiting.
fn ready(events: &mut Streaming<pb::Event>) -> Option<Result<Option<pb::Event>, tonic::Status>> {
    use std::task::{Context, Poll, Waker};
    use tokio_stream::Stream;
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(events).poll_next(&mut cx) {
        Poll::Ready(Some(event)) => Some(event.map(Some)),
        Poll::Ready(None) => Some(Ok(None)),
        Poll::Pending => None,
    }
}

/// Clears `slot` and returns true when it holds `peer`.
fn take_if_same(slot: &mut Option<String>, peer: &str) -> bool {
    if slot.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(peer)) {
        *slot = None;
        true
    } else {
        false
    }
}

/// A mistyped command: a failure like a refused request.
fn mistyped(text: &str) -> Result<(), Error> {
    Err(Error::Mistyped(text.to_owned()))
}

/// Lines of stdin, read on a thread of their own. Line ends (`\n`, `\r\n`)
/// are stripped; a line that is not UTF-8 is `None`, not fatal.
fn stdin_lines() -> Result<mpsc::Receiver<io::Result<Option<String>>>, Error> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut input = io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let line = match input.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => Ok(strip_line_end(&buf)),
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => Err(err),
                };
                let failed = line.is_err();
                if tx.blocking_send(line).is_err() || failed {
                    break;
                }
            }
        })
        .map_err(Error::Start)?;
    Ok(rx)
}

fn strip_line_end(buf: &[u8]) -> Option<String> {
    let line = buf.strip_suffix(b"\n").unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8(line.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_are_stripped() {
        assert_eq!(strip_line_end(b"hi\n").as_deref(), Some("hi"));
        assert_eq!(strip_line_end(b"hi\r\n").as_deref(), Some("hi"));
        assert_eq!(strip_line_end(b"last").as_deref(), Some("last"));
        assert_eq!(strip_line_end(b"\xffx\n"), None);
    }

    #[test]
    fn announced_events_are_matched_case_insensitively_once() {
        let mut slot = Some("Bob".to_owned());
        assert!(!take_if_same(&mut slot, "carol"));
        assert!(take_if_same(&mut slot, "bob"));
        assert!(!take_if_same(&mut slot, "bob"));
    }
}
