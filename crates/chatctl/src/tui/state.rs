//! Everything the TUI knows, and how each input changes it: keys (as
//! [`Action`]s), events from peerd's Watch stream, answers to our requests
//! ([`Outcome`]), the presence feed ([`PeersUpdate`]). Pure: no sockets, no
//! terminal, no clock (times are passed in), so every story is a unit test.
//!
//! What the user asks of peerd comes out as a [`Request`]; the event loop
//! runs it and feeds the answer back as an [`Outcome`]. Nothing here waits.

use std::collections::{BTreeMap, BTreeSet};

use pb::event::Kind;
use peerchat::v1 as pb;
use peerchat_core::Name;

use super::conversation::{Conversation, Entry, Mark, Tone};
use super::input::{History, Input};
use super::keys::{Action, Context, Focus};
use crate::format::{outcome_name, tui_asking_text, unshown_text};

/// Something to ask peerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Send, without waiting: the marks come from the Watch stream.
    Send {
        local: u64,
        text: String,
    },
    Connect(String),
    Disconnect,
    Trust(String),
    /// `None`: the oldest pending request.
    Accept(Option<String>),
    Reject(Option<String>),
    Block(String),
    Unblock(String),
    /// The stored conversation with a peer: asked for by the TUI itself
    /// when a conversation starts with someone whose messages are not on
    /// screen yet.
    History(String),
}

/// peerd's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The answer to `Send`: the message's id and state, or why not.
    Sent { local: u64, result: Result<(String, pb::MessageState), String> },
    /// Any other command: a line to show (if the answer says something the
    /// events will not), or the error's message.
    Done(Result<Option<String>, String>),
    /// The answer to `History`.
    History(Result<pb::GetHistoryResponse, String>),
    /// The answer to our connect number `id` (its `connected` event says
    /// the rest), or why not.
    Connect { id: u64, result: Result<(), String> },
    /// The answer to `Disconnect`: the peer whose dial it cancelled (a
    /// conversation's end comes as its event), or why not.
    Disconnect(Result<Option<String>, String>),
}

/// Our own connects and the `/disconnect`s that may cancel them. A connect
/// that our disconnect cancelled is no error (the disconnect's answer says
/// "cancelled the connection attempt"); any other failure is one. Which it
/// was, the disconnect's typed answer says (`DialCancelled`), so the
/// failure of a connect a disconnect went out after waits for that answer.
/// peerd dials one peer at a time: of our connects a disconnect went out
/// after, only the oldest can be the dial it cancelled (later ones were
/// answered "already connecting", or failed on their own).
#[derive(Debug, Default)]
struct Cancels {
    /// Our connects sent and not answered, by number.
    in_flight: BTreeSet<u64>,
    /// Of those, the ones a disconnect of ours went out after.
    exposed: BTreeSet<u64>,
    /// Disconnects sent and not answered.
    disconnects: usize,
    /// Connects a disconnect's answer said it cancelled, not answered yet.
    cancelled: BTreeSet<u64>,
    /// Failures of exposed connects, waiting for the disconnect's answer.
    held: BTreeMap<u64, String>,
}

impl Cancels {
    fn connect_sent(&mut self, id: u64) {
        self.in_flight.insert(id);
    }

    fn disconnect_sent(&mut self) {
        self.exposed.extend(self.in_flight.iter().copied());
        self.disconnects += 1;
    }

    /// Our connect `id` answered: the failure to show now, if any.
    fn connect_answered(&mut self, id: u64, failure: Option<String>) -> Option<String> {
        self.in_flight.remove(&id);
        let exposed = self.exposed.remove(&id);
        let cancelled = self.cancelled.remove(&id);
        let failure = failure?;
        if cancelled {
            return None;
        }
        if exposed && self.disconnects > 0 {
            self.held.insert(id, failure);
            return None;
        }
        Some(failure)
    }

    /// A disconnect answered (`cancelled`: it cancelled a dial): the held
    /// failures that were not its doing, to show now.
    fn disconnect_answered(&mut self, cancelled: bool) -> Vec<String> {
        self.disconnects = self.disconnects.saturating_sub(1);
        let oldest = self.held.keys().chain(self.exposed.iter()).min().copied();
        if cancelled
            && let Some(oldest) = oldest
            && self.held.remove(&oldest).is_none()
        {
            self.cancelled.insert(oldest);
        }
        if self.disconnects == 0 {
            // Nothing else can cancel them now: they fail on their own.
            self.exposed.clear();
        }
        std::mem::take(&mut self.held).into_values().collect()
    }
}

/// News about who is online.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PeersUpdate {
    /// A new WatchPeers stream starts: the full list follows, then `Synced`.
    Restart,
    /// An event from WatchPeers (online, status, offline, synced).
    Event(pb::Event),
    /// The whole list from ListPeers (polling while WatchPeers is down).
    Snapshot { peers: Vec<pb::Peer>, you: String },
    /// Neither feed works (the directory is unreachable): why.
    Unreachable(String),
}

/// One row of the list of who is online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerRow {
    pub(crate) name: String,
    pub(crate) busy: bool,
    pub(crate) you: bool,
}

impl PeerRow {
    fn from_listing(peer: Option<&pb::Peer>, you: bool) -> Option<PeerRow> {
        let peer = peer?;
        Some(PeerRow { name: peer.name.clone(), busy: peer.status() == pb::PeerStatus::Busy, you })
    }
}

/// The left pane.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    rows: Vec<PeerRow>,
    /// While a fresh WatchPeers list comes in: the rows so far.
    incoming: Option<Vec<PeerRow>>,
    /// The selected name (kept by name across changes to the list).
    selected: Option<String>,
    /// Why the list may be stale.
    pub(crate) trouble: Option<String>,
}

impl Peers {
    pub(crate) fn rows(&self) -> &[PeerRow] {
        &self.rows
    }

    /// The index of the selected row, if it is still listed.
    pub(crate) fn selected_index(&self) -> Option<usize> {
        let name = self.selected.as_deref()?;
        self.rows.iter().position(|r| r.name.eq_ignore_ascii_case(name))
    }

    fn upsert(rows: &mut Vec<PeerRow>, row: PeerRow) {
        match rows.iter_mut().find(|r| r.name.eq_ignore_ascii_case(&row.name)) {
            Some(held) => *held = row,
            None => rows.push(row),
        }
    }

    /// You first, then by name.
    fn sort(&mut self) {
        self.rows.sort_by(|a, b| {
            b.you.cmp(&a.you).then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
        });
    }

    fn replace(&mut self, rows: Vec<PeerRow>) {
        self.rows = rows;
        self.sort();
    }

    fn apply(&mut self, update: PeersUpdate) {
        match update {
            PeersUpdate::Restart => self.incoming = Some(Vec::new()),
            PeersUpdate::Event(event) => self.apply_event(event),
            PeersUpdate::Snapshot { peers, you } => {
                let rows = peers
                    .iter()
                    .filter_map(|p| {
                        let is_you = !you.is_empty() && p.name.eq_ignore_ascii_case(&you);
                        PeerRow::from_listing(Some(p), is_you)
                    })
                    .collect();
                self.replace(rows);
                self.trouble = None;
            }
            PeersUpdate::Unreachable(why) => self.trouble = Some(why),
        }
    }

    fn apply_event(&mut self, event: pb::Event) {
        let target = match &mut self.incoming {
            Some(rows) => rows,
            None => &mut self.rows,
        };
        match event.kind {
            Some(Kind::PeerOnline(e)) => {
                if let Some(row) = PeerRow::from_listing(e.peer.as_ref(), e.you) {
                    Self::upsert(target, row);
                }
            }
            Some(Kind::PeerStatus(e)) => {
                if let Some(row) = PeerRow::from_listing(e.peer.as_ref(), e.you) {
                    Self::upsert(target, row);
                }
            }
            Some(Kind::PeerOffline(e)) => target.retain(|r| !r.name.eq_ignore_ascii_case(&e.name)),
            Some(Kind::PeersSynced(_)) => {
                if let Some(rows) = self.incoming.take() {
                    self.rows = rows;
                }
                self.trouble = None;
            }
            _ => {}
        }
        self.sort();
    }

    fn step(&mut self, forward: bool) {
        if self.rows.is_empty() {
            return;
        }
        let last = self.rows.len() - 1;
        let next = match (self.selected_index(), forward) {
            (None, true) => 0,
            (None, false) => last,
            (Some(i), true) => (i + 1).min(last),
            (Some(i), false) => i.saturating_sub(1),
        };
        self.selected = Some(self.rows[next].name.clone());
    }
}

/// The whole TUI.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) status: pb::GetStatusResponse,
    pub(crate) peers: Peers,
    pub(crate) conversation: Conversation,
    pub(crate) input: Input,
    history: History,
    pub(crate) focus: Focus,
    pub(crate) help: bool,
    /// peerd went away (the Watch stream ended): what it said, if anything.
    pub(crate) gone: Option<String>,
    /// Our own connects, and the disconnects that may cancel them.
    cancels: Cancels,
    /// The number of the last request sent.
    requests: u64,
    /// The peer whose stored conversation is on screen (or asked for).
    history_of: Option<String>,
    next_local: u64,
    pub(crate) quit: bool,
}

impl App {
    /// A TUI for the daemon whose status is `status`; `clock` formats times
    /// as `HH:MM`.
    pub(crate) fn new(status: pb::GetStatusResponse, clock: fn(i64) -> String) -> App {
        App {
            status,
            peers: Peers::default(),
            conversation: Conversation::new(clock),
            input: Input::default(),
            history: History::default(),
            focus: Focus::Input,
            help: false,
            gone: None,
            cancels: Cancels::default(),
            requests: 0,
            history_of: None,
            next_local: 0,
            quit: false,
        }
    }

    /// What decides the meaning of the next key.
    pub(crate) fn key_context(&self) -> Context {
        Context {
            focus: self.focus,
            input_empty: self.input.is_empty(),
            help_open: self.help,
            daemon_gone: self.gone.is_some(),
        }
    }

    /// A line in the conversation pane.
    pub(crate) fn say(&mut self, text: impl Into<String>, at_ms: i64, tone: Tone) {
        self.conversation.system(text.into(), at_ms, tone);
    }

    fn error(&mut self, text: &str, at_ms: i64) {
        self.say(format!("error: {text}"), at_ms, Tone::Error);
    }

    /// Does what the user asked; returns the request for peerd, if any.
    pub(crate) fn apply(&mut self, action: Action, now_ms: i64) -> Option<Request> {
        match action {
            Action::Quit => self.quit = true,
            Action::Submit => return self.submit(now_ms),
            Action::Insert(c) => {
                self.focus = Focus::Input;
                self.input.insert(c);
            }
            Action::Backspace => self.input.backspace(),
            Action::Delete => self.input.delete(),
            Action::Left => self.input.left(),
            Action::Right => self.input.right(),
            Action::Home => self.input.home(),
            Action::End => self.input.end(),
            Action::DeleteWordBack => self.input.delete_word_back(),
            Action::KillToStart => self.input.kill_to_start(),
            Action::KillToEnd => self.input.kill_to_end(),
            Action::HistoryPrevious => self.history.previous(&mut self.input),
            Action::HistoryNext => self.history.next(&mut self.input),
            Action::PageUp => self.conversation.page_up(),
            Action::PageDown => self.conversation.page_down(),
            Action::ToggleFocus => {
                self.focus = match self.focus {
                    Focus::Input => Focus::Peers,
                    Focus::Peers => Focus::Input,
                };
                if self.focus == Focus::Peers && self.peers.selected_index().is_none() {
                    self.peers.step(true);
                }
            }
            Action::FocusInput => self.focus = Focus::Input,
            Action::SelectPrevious => self.peers.step(false),
            Action::SelectNext => self.peers.step(true),
            Action::ConnectSelected => {
                let index = self.peers.selected_index()?;
                let name = self.peers.rows[index].name.clone();
                self.focus = Focus::Input;
                return Some(Request::Connect(name));
            }
            Action::ShowHelp => self.help = true,
            Action::CloseHelp => self.help = false,
        }
        None
    }

    /// Enter: a message to send, or a `/command`.
    fn submit(&mut self, now_ms: i64) -> Option<Request> {
        let line = self.input.take();
        self.history.record(&line);
        match parse_line(&line) {
            Parsed::Nothing => None,
            Parsed::Send(text) => {
                self.next_local += 1;
                let local = self.next_local;
                self.conversation.push_own(local, &text, now_ms);
                Some(Request::Send { local, text })
            }
            Parsed::Request(request) => Some(request),
            Parsed::Quit => {
                self.quit = true;
                None
            }
            Parsed::Help => {
                self.help = true;
                None
            }
            Parsed::List => self.apply(Action::ToggleFocus, now_ms),
            Parsed::Error(message) => {
                self.error(&message, now_ms);
                None
            }
        }
    }

    /// A peer's stored conversation: at the start, before anything new;
    /// later, when a conversation with another peer starts, after the
    /// `connected` line. A message already on screen (it came on the Watch
    /// stream while the history was read) is not shown twice.
    pub(crate) fn on_history(&mut self, history: &pb::GetHistoryResponse, now_ms: i64) {
        self.history_of = Some(history.peer.clone());
        let peer = &history.peer;
        let all = history.entries.len();
        // Those already on screen are not shown again: then the heading
        // cannot say "the last N".
        let heading = |fresh: usize| {
            let text = match (fresh, all) {
                (1, 1) => format!("the last message with {peer}:"),
                (n, all) if n == all => format!("the last {n} messages with {peer}:"),
                _ => format!("earlier messages with {peer}:"),
            };
            Entry::System { text, at_ms: now_ms, tone: Tone::Info }
        };
        self.conversation.insert_history(peer, heading, &history.entries);
    }

    /// An event from the Watch stream; the request it calls for, if any (a
    /// conversation with a peer whose history is not on screen: read it).
    pub(crate) fn on_event(&mut self, event: &pb::Event, now_ms: i64) -> Option<Request> {
        let Some(kind) = &event.kind else { return None };
        match kind {
            Kind::Message(m) => self.conversation.received(m),
            Kind::Receipt(r) => {
                let mark = match r.state() {
                    pb::MessageState::Displayed => Mark::Displayed,
                    pb::MessageState::Delivered => Mark::Delivered,
                    pb::MessageState::Failed => Mark::Failed(String::new()),
                    _ => return None,
                };
                self.conversation.receipt(&r.id, mark);
            }
            Kind::Failed(f) => self.conversation.receipt(&f.id, Mark::Failed(f.reason.clone())),
            Kind::Connected(c) => {
                self.say(format!("connected to {}", c.peer), now_ms, Tone::Info);
                let shown =
                    self.history_of.as_ref().is_some_and(|p| p.eq_ignore_ascii_case(&c.peer));
                if !shown {
                    self.history_of = Some(c.peer.clone());
                    // Right after the `connected` line, whatever comes
                    // while it is read.
                    self.conversation.expect_history();
                    return Some(Request::History(c.peer.clone()));
                }
            }
            Kind::Disconnected(d) if d.reason.is_empty() => {
                self.say(format!("disconnected from {}", d.peer), now_ms, Tone::Info);
            }
            Kind::Disconnected(d) => {
                self.say(format!("disconnected from {} ({})", d.peer, d.reason), now_ms, Tone::Info)
            }
            Kind::LinkLost(l) => self.say(
                format!("link to {} lost, reconnecting ({})", l.peer, l.reason),
                now_ms,
                Tone::Notice,
            ),
            Kind::Resumed(r) => {
                self.say(format!("link to {} resumed", r.peer), now_ms, Tone::Info);
            }
            Kind::Request(r) => self.say(
                format!("{} asks to talk — /accept or /reject", r.peer),
                now_ms,
                Tone::Notice,
            ),
            Kind::RequestEnded(r) => self.say(
                format!("request from {} {}", r.peer, outcome_name(r.outcome())),
                now_ms,
                Tone::Info,
            ),
            Kind::Asking(a) => self.say(tui_asking_text(&a.peer), now_ms, Tone::Notice),
            Kind::Unshown(u) => self.say(unshown_text(&u.peer, u.count), now_ms, Tone::Notice),
            // A `/connect` of this screen says how it failed in its own
            // answer; the event would say it twice.
            Kind::ConnectFailed(_) => {}
            // Presence comes by its own feed (this Watch does not ask).
            Kind::PeerOnline(_)
            | Kind::PeerStatus(_)
            | Kind::PeerOffline(_)
            | Kind::PeersSynced(_) => {}
        }
        None
    }

    /// A request goes to peerd now. A `/disconnect` while our own connect
    /// waits cancels that connect: its failure is then no error, the
    /// disconnect's answer says what happened.
    /// Returns the request's number, which its outcome carries back.
    pub(crate) fn dispatching(&mut self, request: &Request) -> u64 {
        self.requests += 1;
        match request {
            Request::Connect(_) => self.cancels.connect_sent(self.requests),
            Request::Disconnect => self.cancels.disconnect_sent(),
            _ => {}
        }
        self.requests
    }

    /// peerd's answer to a request.
    pub(crate) fn on_outcome(&mut self, outcome: Outcome, now_ms: i64) {
        match outcome {
            Outcome::Sent { local, result: Ok((id, state)) } => {
                self.conversation.sent(local, &id, state);
            }
            Outcome::Sent { local, result: Err(reason) } => {
                self.conversation.send_failed(local, &reason);
            }
            Outcome::Done(Ok(Some(line))) => self.say(line, now_ms, Tone::Info),
            Outcome::Done(Ok(None)) => {}
            // Once peerd is gone, what was in flight fails too: said already.
            Outcome::Done(Err(_)) if self.gone.is_some() => {}
            Outcome::Done(Err(message)) => self.error(&message, now_ms),
            // Only the history last asked for: an answer that comes after
            // the user moved on to someone else is stale.
            Outcome::History(Ok(history)) => {
                let wanted =
                    self.history_of.as_ref().is_some_and(|p| p.eq_ignore_ascii_case(&history.peer));
                if wanted {
                    self.on_history(&history, now_ms);
                }
            }
            // As at the start: no history is no reason not to chat.
            Outcome::History(Err(_)) => {}
            Outcome::Connect { id, result } => {
                if let Some(failure) = self.cancels.connect_answered(id, result.err())
                    && self.gone.is_none()
                {
                    self.error(&failure, now_ms);
                }
            }
            Outcome::Disconnect(result) => {
                let cancelled = matches!(&result, Ok(Some(_)));
                for failure in self.cancels.disconnect_answered(cancelled) {
                    self.error(&failure, now_ms);
                }
                match result {
                    Ok(Some(peer)) => self.say(
                        format!("cancelled the connection attempt to {peer}"),
                        now_ms,
                        Tone::Info,
                    ),
                    Ok(None) => {}
                    Err(_) if self.gone.is_some() => {}
                    Err(message) => self.error(&message, now_ms),
                }
            }
        }
    }

    /// A fresh answer to GetStatus (the status bar, the pane's title).
    pub(crate) fn on_status(&mut self, status: pb::GetStatusResponse) {
        self.status = status;
    }

    pub(crate) fn on_peers(&mut self, update: PeersUpdate) {
        self.peers.apply(update);
    }

    /// The Watch stream ended: peerd stopped (or dropped us).
    pub(crate) fn on_daemon_gone(&mut self, detail: Option<String>, now_ms: i64) {
        if self.gone.is_some() {
            return;
        }
        self.help = false;
        let line = match &detail {
            Some(detail) => format!("peerd stopped ({detail}) — press q to quit"),
            None => "peerd stopped — press q to quit".to_owned(),
        };
        self.say(line, now_ms, Tone::Error);
        self.gone = Some(detail.unwrap_or_default());
    }

    /// Ids of received messages that are on screen now and not reported yet
    /// (none while the help covers the conversation or peerd is gone).
    pub(crate) fn take_newly_visible(&mut self) -> Vec<String> {
        if self.help || self.gone.is_some() {
            return Vec::new();
        }
        self.conversation.take_newly_visible()
    }
}

/// What an input line means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Parsed {
    Nothing,
    Send(String),
    Request(Request),
    Quit,
    Help,
    /// `/list` (line mode's command): the list is on screen, go to it.
    List,
    /// A usage mistake, shown as an error line.
    Error(String),
}

/// Reads one line: text to send (`//x` sends `/x`), or a command.
fn parse_line(line: &str) -> Parsed {
    if line.trim().is_empty() {
        return Parsed::Nothing;
    }
    let Some(command) = line.strip_prefix('/') else {
        return Parsed::Send(line.to_owned());
    };
    if command.starts_with('/') {
        return Parsed::Send(command.to_owned());
    }
    let mut words = command.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let name = |arg: &str| Name::parse(arg).map(|n| n.to_string()).map_err(|e| e.to_string());
    let parsed = match (verb, args.as_slice()) {
        ("quit" | "exit" | "q", []) => return Parsed::Quit,
        ("help" | "?", _) => return Parsed::Help,
        ("list", []) => return Parsed::List,
        ("disconnect", []) => Ok(Request::Disconnect),
        ("connect", [n]) => name(n).map(Request::Connect),
        ("trust", [n]) => name(n).map(Request::Trust),
        ("block", [n]) => name(n).map(Request::Block),
        ("unblock", [n]) => name(n).map(Request::Unblock),
        ("accept", []) => Ok(Request::Accept(None)),
        ("accept", [n]) => name(n).map(|n| Request::Accept(Some(n))),
        ("reject", []) => Ok(Request::Reject(None)),
        ("reject", [n]) => name(n).map(|n| Request::Reject(Some(n))),
        ("connect" | "trust" | "block" | "unblock", _) => Err(format!("usage: /{verb} NAME")),
        ("accept" | "reject", _) => Err(format!("usage: /{verb} [NAME]")),
        ("quit" | "exit" | "disconnect" | "list", _) => {
            Err(format!("usage: /{verb} (no arguments)"))
        }
        _ => Err(format!("unknown command /{verb} (try /help)")),
    };
    match parsed {
        Ok(request) => Parsed::Request(request),
        Err(message) => Parsed::Error(message),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::clock;
    use super::*;

    fn app() -> App {
        let status = pb::GetStatusResponse { name: "alice".into(), ..Default::default() };
        let mut app = App::new(status, clock);
        app.conversation.set_viewport(80, 20);
        app
    }

    fn event(kind: Kind) -> pb::Event {
        pb::Event { kind: Some(kind) }
    }

    fn typed(app: &mut App, line: &str) -> Option<Request> {
        for c in line.chars() {
            assert_eq!(app.apply(Action::Insert(c), 0), None);
        }
        app.apply(Action::Submit, 0)
    }

    fn rows(app: &App) -> Vec<String> {
        app.conversation.visible_rows().iter().map(ToString::to_string).collect()
    }

    fn listing(name: &str, status: pb::PeerStatus) -> Option<pb::Peer> {
        Some(pb::Peer { name: name.into(), status: status as i32, ..Default::default() })
    }

    fn online(name: &str, you: bool) -> PeersUpdate {
        PeersUpdate::Event(event(Kind::PeerOnline(pb::PeerOnlineEvent {
            peer: listing(name, pb::PeerStatus::Available),
            you,
        })))
    }

    #[test]
    fn lines_parse_into_messages_and_commands() {
        assert_eq!(parse_line("  "), Parsed::Nothing);
        assert_eq!(parse_line("hello /x"), Parsed::Send("hello /x".into()));
        assert_eq!(parse_line("//etc"), Parsed::Send("/etc".into()));
        assert_eq!(parse_line("/connect bob"), Parsed::Request(Request::Connect("bob".into())));
        assert_eq!(parse_line("/disconnect"), Parsed::Request(Request::Disconnect));
        assert_eq!(parse_line("/trust bob"), Parsed::Request(Request::Trust("bob".into())));
        assert_eq!(parse_line("/accept"), Parsed::Request(Request::Accept(None)));
        assert_eq!(
            parse_line("/reject carol"),
            Parsed::Request(Request::Reject(Some("carol".into())))
        );
        assert_eq!(parse_line("/block eve"), Parsed::Request(Request::Block("eve".into())));
        assert_eq!(parse_line("/unblock eve"), Parsed::Request(Request::Unblock("eve".into())));
        assert_eq!(parse_line("/quit"), Parsed::Quit);
        assert_eq!(parse_line("/help"), Parsed::Help);
        assert_eq!(parse_line("/list"), Parsed::List);
        assert_eq!(parse_line("/connect"), Parsed::Error("usage: /connect NAME".into()));
        assert_eq!(parse_line("/accept a b"), Parsed::Error("usage: /accept [NAME]".into()));
        assert_eq!(parse_line("/frob"), Parsed::Error("unknown command /frob (try /help)".into()));
        match parse_line("/connect a/b") {
            Parsed::Error(message) => assert!(message.contains("invalid name"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sending_shows_the_message_at_once_and_marks_it_as_receipts_come() {
        let mut app = app();
        let request = typed(&mut app, "héllo 😀");
        assert_eq!(request, Some(Request::Send { local: 1, text: "héllo 😀".into() }));
        assert_eq!(rows(&app), ["00:00 you: héllo 😀 …"]);
        // The receipt races ahead of the Send answer.
        let receipt = |state: pb::MessageState| {
            event(Kind::Receipt(pb::ReceiptEvent {
                id: "m1".into(),
                state: state as i32,
                peer: "bob".into(),
            }))
        };
        app.on_event(&receipt(pb::MessageState::Delivered), 0);
        let answer = Ok(("m1".to_owned(), pb::MessageState::Sent));
        app.on_outcome(Outcome::Sent { local: 1, result: answer }, 0);
        assert_eq!(rows(&app), ["00:00 you: héllo 😀 ✓"]);
        app.on_event(&receipt(pb::MessageState::Displayed), 0);
        assert_eq!(rows(&app), ["00:00 you: héllo 😀 ✓✓"]);
    }

    #[test]
    fn a_refused_send_and_a_failed_message_say_why() {
        let mut app = app();
        typed(&mut app, "one");
        app.on_outcome(Outcome::Sent { local: 1, result: Err("not connected".into()) }, 0);
        typed(&mut app, "two");
        let answer = Ok(("m2".to_owned(), pb::MessageState::Sent));
        app.on_outcome(Outcome::Sent { local: 2, result: answer }, 0);
        app.on_event(
            &event(Kind::Failed(pb::FailedEvent {
                id: "m2".into(),
                reason: "bob never came back".into(),
                peer: "bob".into(),
            })),
            0,
        );
        assert_eq!(
            rows(&app),
            [
                "00:00 you: one ✗ failed: not connected",
                "00:00 you: two ✗ failed: bob never came back"
            ]
        );
    }

    #[test]
    fn a_connect_our_disconnect_cancelled_is_no_error() {
        let mut app = app();
        let cancelled = || Err("the connect to carol was cancelled by disconnect".to_owned());
        let connect = |app: &mut App| app.dispatching(&Request::Connect("carol".into()));
        let disconnect = |app: &mut App| app.dispatching(&Request::Disconnect);
        let said = |app: &App, n: usize| rows(app)[n..].to_vec();
        // The connect's answer first, then the disconnect's.
        let id = connect(&mut app);
        disconnect(&mut app);
        app.on_outcome(Outcome::Connect { id, result: cancelled() }, 0);
        app.on_outcome(Outcome::Disconnect(Ok(Some("carol".into()))), 0);
        assert_eq!(rows(&app), ["00:00 cancelled the connection attempt to carol"]);
        // The other way round.
        let id = connect(&mut app);
        disconnect(&mut app);
        app.on_outcome(Outcome::Disconnect(Ok(Some("carol".into()))), 0);
        app.on_outcome(Outcome::Connect { id, result: cancelled() }, 0);
        assert_eq!(rows(&app).len(), 2, "{:?}", rows(&app));
        // A second /connect while the first waits is refused, and said so,
        // also when its answer comes after the disconnect went out; the
        // first, cancelled, is not.
        let first = connect(&mut app);
        let second = connect(&mut app);
        disconnect(&mut app);
        let busy = Err("already connecting to carol".to_owned());
        app.on_outcome(Outcome::Connect { id: second, result: busy }, 0);
        app.on_outcome(Outcome::Connect { id: first, result: cancelled() }, 0);
        app.on_outcome(Outcome::Disconnect(Ok(Some("carol".into()))), 0);
        assert_eq!(
            said(&app, 2),
            [
                "00:00 error: already connecting to carol",
                "00:00 cancelled the connection attempt to carol"
            ]
        );
        // A connect that failed on its own just before the disconnect got
        // there: the disconnect had nothing to cancel, and the failure shows.
        let id = app.dispatching(&Request::Connect("dave".into()));
        disconnect(&mut app);
        app.on_outcome(Outcome::Connect { id, result: Err("dave is busy".into()) }, 0);
        app.on_outcome(Outcome::Disconnect(Err("not connected".into())), 0);
        assert_eq!(said(&app, 4), ["00:00 error: dave is busy", "00:00 error: not connected"]);
        // Another client's dial cancelled by our /disconnect leaves nothing
        // behind that could hide a later failure of ours.
        disconnect(&mut app);
        app.on_outcome(Outcome::Disconnect(Ok(Some("erin".into()))), 0);
        let id = app.dispatching(&Request::Connect("frank".into()));
        app.on_outcome(Outcome::Connect { id, result: Err("frank is busy".into()) }, 0);
        assert_eq!(
            said(&app, 6),
            ["00:00 cancelled the connection attempt to erin", "00:00 error: frank is busy"]
        );
    }

    #[test]
    fn conversation_events_become_system_lines() {
        let mut app = app();
        let at = 10 * 3_600_000 + 19 * 60_000;
        let events = [
            Kind::Connected(pb::ConnectedEvent { peer: "bob".into() }),
            Kind::Message(pb::MessageEvent {
                id: "r1".into(),
                from: "bob".into(),
                text: "hi alice".into(),
                at_ms: at,
                waited: false,
            }),
            Kind::LinkLost(pb::LinkLostEvent { peer: "bob".into(), reason: "reset".into() }),
            Kind::Resumed(pb::ResumedEvent { peer: "bob".into() }),
            Kind::Disconnected(pb::DisconnectedEvent { peer: "bob".into(), reason: "".into() }),
            Kind::Request(pb::RequestEvent { peer: "carol".into(), expires_at_ms: 0 }),
            Kind::RequestEnded(pb::RequestEndedEvent {
                peer: "carol".into(),
                outcome: pb::request_ended_event::Outcome::Expired as i32,
            }),
        ];
        for kind in events {
            app.on_event(&event(kind), at);
        }
        assert_eq!(
            rows(&app),
            [
                "10:19 connected to bob",
                "10:19 bob: hi alice",
                "10:19 link to bob lost, reconnecting (reset)",
                "10:19 link to bob resumed",
                "10:19 disconnected from bob",
                "10:19 carol asks to talk — /accept or /reject",
                "10:19 request from carol expired",
            ]
        );
    }

    #[test]
    fn command_errors_are_red_lines_and_answers_can_speak() {
        let mut app = app();
        assert_eq!(typed(&mut app, "/connect bob"), Some(Request::Connect("bob".into())));
        app.on_outcome(Outcome::Done(Err("bob is busy in another conversation".into())), 0);
        app.on_outcome(Outcome::Done(Ok(Some("blocked eve".into()))), 0);
        app.on_outcome(Outcome::Done(Ok(None)), 0);
        assert_eq!(typed(&mut app, "/nope"), None);
        assert_eq!(
            rows(&app),
            [
                "00:00 error: bob is busy in another conversation",
                "00:00 blocked eve",
                "00:00 error: unknown command /nope (try /help)"
            ]
        );
        let last = app.conversation.entries().last().cloned();
        assert!(matches!(last, Some(Entry::System { tone: Tone::Error, .. })));
    }

    #[test]
    fn history_recall_through_actions() {
        let mut app = app();
        typed(&mut app, "/connect bob");
        typed(&mut app, "first");
        app.apply(Action::HistoryPrevious, 0);
        app.apply(Action::HistoryPrevious, 0);
        assert_eq!(app.input.text(), "/connect bob");
        app.apply(Action::HistoryNext, 0);
        assert_eq!(app.input.text(), "first");
    }

    #[test]
    fn the_peer_list_follows_the_feed_and_marks_you() {
        let mut app = app();
        app.on_peers(PeersUpdate::Restart);
        app.on_peers(online("carol", false));
        app.on_peers(online("alice", true));
        assert!(app.peers.rows().is_empty(), "the list shows once it is complete");
        app.on_peers(online("bob", false));
        app.on_peers(PeersUpdate::Event(event(Kind::PeersSynced(pb::PeersSyncedEvent {}))));
        let names: Vec<_> = app.peers.rows().iter().map(|r| (r.name.as_str(), r.you)).collect();
        assert_eq!(names, [("alice", true), ("bob", false), ("carol", false)]);
        app.on_peers(PeersUpdate::Event(event(Kind::PeerStatus(pb::PeerStatusEvent {
            peer: listing("bob", pb::PeerStatus::Busy),
            you: false,
        }))));
        assert!(app.peers.rows()[1].busy);
        app.on_peers(PeersUpdate::Event(event(Kind::PeerOffline(pb::PeerOfflineEvent {
            name: "Carol".into(),
            you: false,
        }))));
        assert_eq!(app.peers.rows().len(), 2);
        app.on_peers(PeersUpdate::Unreachable("directory unreachable".into()));
        assert!(app.peers.trouble.is_some());
        app.on_peers(PeersUpdate::Snapshot {
            peers: vec![
                listing("dave", pb::PeerStatus::Available).unwrap_or_default(),
                listing("alice", pb::PeerStatus::Available).unwrap_or_default(),
            ],
            you: "alice".into(),
        });
        let names: Vec<_> = app.peers.rows().iter().map(|r| (r.name.as_str(), r.you)).collect();
        assert_eq!(names, [("alice", true), ("dave", false)]);
        assert!(app.peers.trouble.is_none());
    }

    #[test]
    fn enter_on_a_selected_name_connects() {
        let mut app = app();
        app.on_peers(online("alice", true));
        app.on_peers(online("bob", false));
        app.apply(Action::ToggleFocus, 0);
        assert_eq!(app.focus, Focus::Peers);
        assert_eq!(app.peers.selected_index(), Some(0));
        app.apply(Action::SelectNext, 0);
        app.apply(Action::SelectNext, 0);
        assert_eq!(app.peers.selected_index(), Some(1), "stays on the last");
        assert_eq!(app.apply(Action::ConnectSelected, 0), Some(Request::Connect("bob".into())));
        assert_eq!(app.focus, Focus::Input);
        // The selection follows the name when the list changes.
        app.on_peers(online("aaron", false));
        assert_eq!(app.peers.selected_index(), Some(2));
        app.apply(Action::SelectPrevious, 0);
        assert_eq!(app.peers.selected_index(), Some(1));
    }

    #[test]
    fn the_stored_conversation_is_shown_first() {
        let mut app = app();
        app.on_history(
            &pb::GetHistoryResponse { peer: "bob".into(), entries: vec![], older: 0 },
            0,
        );
        assert!(rows(&app).is_empty(), "no heading for nothing");
        let history = pb::GetHistoryResponse {
            peer: "bob".into(),
            entries: vec![pb::HistoryEntry {
                id: "h1".into(),
                direction: pb::Direction::Out as i32,
                peer: "bob".into(),
                text: "before".into(),
                at_ms: 0,
                state: pb::MessageState::Displayed as i32,
            }],
            older: 0,
        };
        app.on_history(&history, 0);
        assert_eq!(rows(&app), ["00:00 the last message with bob:", "00:00 you: before ✓✓"]);
    }

    fn entry(id: &str, direction: pb::Direction, peer: &str, text: &str) -> pb::HistoryEntry {
        pb::HistoryEntry {
            id: id.into(),
            direction: direction as i32,
            peer: peer.into(),
            text: text.into(),
            at_ms: 0,
            state: pb::MessageState::Displayed as i32,
        }
    }

    #[test]
    fn a_conversation_with_another_peer_brings_its_history_once() {
        let mut app = app();
        let bob = vec![entry("b1", pb::Direction::Out, "bob", "to bob")];
        app.on_history(&pb::GetHistoryResponse { peer: "bob".into(), entries: bob, older: 0 }, 0);
        let connected =
            |peer: &str| event(Kind::Connected(pb::ConnectedEvent { peer: peer.into() }));
        assert_eq!(app.on_event(&connected("bob"), 0), None, "bob's is on screen");
        let bye = pb::DisconnectedEvent { peer: "bob".into(), reason: "".into() };
        assert_eq!(app.on_event(&event(Kind::Disconnected(bye)), 0), None);
        assert_eq!(app.on_event(&connected("carol"), 0), Some(Request::History("carol".into())));
        // Carol's first message comes before her history does.
        let live = pb::MessageEvent {
            id: "c2".into(),
            from: "carol".into(),
            text: "hi again".into(),
            at_ms: 0,
            waited: false,
        };
        assert_eq!(app.on_event(&event(Kind::Message(live)), 0), None);
        let carol = vec![
            entry("c1", pb::Direction::Out, "carol", "last week"),
            entry("c2", pb::Direction::In, "carol", "hi again"),
        ];
        let history = pb::GetHistoryResponse { peer: "carol".into(), entries: carol, older: 0 };
        app.on_outcome(Outcome::History(Ok(history)), 0);
        assert_eq!(
            rows(&app),
            [
                "00:00 the last message with bob:",
                "00:00 you: to bob ✓✓",
                "00:00 connected to bob",
                "00:00 disconnected from bob",
                "00:00 connected to carol",
                "00:00 earlier messages with carol:",
                "00:00 you: last week ✓✓",
                "00:00 carol: hi again",
            ],
            "carol's history right after the connected line, her message once, last"
        );
        // Back to carol (names are case-insensitive): nothing to read again.
        assert_eq!(app.on_event(&connected("Carol"), 0), None);
        // A failed read says nothing: no history is no reason not to chat.
        assert_eq!(app.on_event(&connected("dave"), 0), Some(Request::History("dave".into())));
        let before = rows(&app);
        app.on_outcome(Outcome::History(Err("unavailable".into())), 0);
        assert_eq!(rows(&app), before);
        // Erin's history comes after the user moved on to frank: not shown.
        assert_eq!(app.on_event(&connected("erin"), 0), Some(Request::History("erin".into())));
        assert_eq!(app.on_event(&connected("frank"), 0), Some(Request::History("frank".into())));
        let erin = vec![entry("e1", pb::Direction::Out, "erin", "an old word")];
        app.on_outcome(
            Outcome::History(Ok(pb::GetHistoryResponse {
                peer: "erin".into(),
                entries: erin,
                older: 0,
            })),
            0,
        );
        let shown = rows(&app);
        assert!(
            !shown.iter().any(|r| r.contains("with erin") || r.contains("an old word")),
            "{shown:?}"
        );
    }

    #[test]
    fn help_and_quit() {
        let mut app = app();
        assert_eq!(typed(&mut app, "/help"), None);
        assert!(app.help);
        app.apply(Action::CloseHelp, 0);
        assert!(!app.help);
        app.apply(Action::ShowHelp, 0);
        assert!(app.help);
        app.apply(Action::CloseHelp, 0);
        typed(&mut app, "/quit");
        assert!(app.quit);
    }

    #[test]
    fn nothing_is_reported_displayed_under_the_help_or_after_peerd_went_away() {
        let mut app = app();
        let message = |id: &str| {
            event(Kind::Message(pb::MessageEvent {
                id: id.into(),
                from: "bob".into(),
                text: "x".into(),
                at_ms: 0,
                waited: false,
            }))
        };
        app.on_event(&message("r1"), 0);
        app.help = true;
        assert!(app.take_newly_visible().is_empty());
        app.help = false;
        assert_eq!(app.take_newly_visible(), ["r1"]);
        app.on_event(&message("r2"), 0);
        app.on_daemon_gone(None, 0);
        app.on_daemon_gone(Some("again".into()), 0);
        assert!(app.take_newly_visible().is_empty());
        assert_eq!(app.gone.as_deref(), Some(""));
        assert!(app.key_context().daemon_gone);
        assert_eq!(
            rows(&app).last().map(String::as_str),
            Some("00:00 peerd stopped — press q to quit")
        );
    }
}
