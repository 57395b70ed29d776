//! `chatctl tui [NAME]`: the full-screen chat (also what `chatctl chat`
//! becomes at a terminal).
//!
//! # Layout
//! - `state`: everything the TUI knows and how each input changes it (pure).
//! - `conversation`: the conversation pane's lines, receipt marks,
//!   scrolling, and which received messages are on screen (pure).
//! - `input`: the input line and the recall of earlier lines (pure).
//! - `keys`: which key does what (pure).
//! - `wrap`: breaking styled text into rows (pure).
//! - `view`: drawing it all with ratatui.
//! - `daemon`: the requests to peerd, each on a task, and the presence feed.
//! - `terminal`: raw mode and the alternate screen, always restored.
//!
//! This module is the event loop: it waits on keys, the Watch stream
//! (a display client: `display: true`), answers to requests, the presence
//! feed, a status refresh and signals; applies each to the state; draws;
//! and then reports with MarkDisplayed the received messages that the frame
//! just drawn shows. A message that arrives while the user has scrolled
//! back is reported only once it is scrolled into view.
//!
//! Everything that can fail before the screen is taken over (peerd not
//! running, a bad NAME) fails as every other command does, with the
//! terminal untouched. When peerd goes away later, the TUI says so and
//! waits for `q`; the `error:` line follows on stderr once the terminal is
//! restored.

mod conversation;
mod daemon;
mod input;
mod keys;
mod state;
mod terminal;
#[cfg(test)]
mod testing;
mod view;
mod wrap;

use std::io::{self, IsTerminal};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Local};
use crossterm::event::Event;
use peerchat::v1 as pb;
use peerchat_core::Name;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::codec::Streaming;

use self::state::{App, Request};
use self::terminal::Screen;
use crate::client::{self, ANSWER_TIMEOUT, Control};
use crate::commands::status;
use crate::error::Error;
use crate::signals;

/// How often the status bar is refreshed when nothing happens.
const STATUS_INTERVAL: Duration = Duration::from_secs(3);

/// How many stored messages are shown at the start, and when a
/// conversation with another peer starts.
const HISTORY_LIMIT: u32 = 50;

/// How long to wait, on the way out, for the last MarkDisplayed to get
/// through.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the TUI until the user quits.
pub(crate) async fn run(socket: &Path, name: Option<&str>) -> Result<(), Error> {
    let name = name.map(Name::parse).transpose()?;
    let mut client = client::connect(socket).await?;
    // Watch first, so that nothing from here on is missed. Presence comes
    // by WatchPeers, for the list.
    let request = pb::WatchRequest { display: true, presence: false };
    let events = client::call("start watching", ANSWER_TIMEOUT, client.watch(request)).await?;
    let status = status::get(&mut client).await?;
    if !(io::stdin().is_terminal() && io::stdout().is_terminal()) {
        return Err(Error::Start(io::Error::other(
            "chatctl tui needs a terminal on stdin and stdout",
        )));
    }
    let mut app = App::new(status, local_clock);
    // The conversation so far: with the current peer, or the one to connect to.
    let peer = match (&app.status.peer, &name) {
        (current, _) if !current.is_empty() => Some(current.clone()),
        (_, Some(name)) => Some(name.to_string()),
        _ => None,
    };
    if let Some(peer) = peer {
        let request = pb::GetHistoryRequest { peer, limit: HISTORY_LIMIT };
        // No history is no reason not to chat.
        if let Ok(history) =
            client::call("read the history", ANSWER_TIMEOUT, client.get_history(request)).await
        {
            app.on_history(&history, now_ms());
        }
    }
    let first = name
        .filter(|name| !name.matches(&app.status.peer))
        .map(|name| Request::Connect(name.to_string()));
    let mut screen = Screen::enter().map_err(Error::Start)?;
    // Read keys only once the terminal is in raw mode.
    let keys = terminal::events().map_err(Error::Start)?;
    let result = Loop::new(client, events, keys).run(&mut screen, &mut app, first).await;
    drop(screen);
    result?;
    match app.gone {
        Some(detail) => Err(Error::Stopped { detail: (!detail.is_empty()).then_some(detail) }),
        None => Ok(()),
    }
}

/// `HH:MM` in local time.
fn local_clock(at_ms: i64) -> String {
    DateTime::from_timestamp_millis(at_ms).map_or_else(
        || "--:--".to_owned(),
        |at| at.with_timezone(&Local).format("%H:%M").to_string(),
    )
}

fn now_ms() -> i64 {
    Local::now().timestamp_millis()
}

/// The event loop's inputs.
struct Loop {
    client: Control,
    events: Streaming<pb::Event>,
    /// False once the Watch stream ended (peerd gone).
    watching: bool,
    keys: mpsc::Receiver<io::Result<Event>>,
    outcomes_tx: mpsc::UnboundedSender<state::Outcome>,
    outcomes: mpsc::UnboundedReceiver<state::Outcome>,
    statuses_tx: mpsc::UnboundedSender<Option<pb::GetStatusResponse>>,
    statuses: mpsc::UnboundedReceiver<Option<pb::GetStatusResponse>>,
    /// A GetStatus is on its way; `status_again`: another is wanted after it.
    status_busy: bool,
    status_again: bool,
    /// MarkDisplayed calls in flight, waited for on the way out.
    marks: JoinSet<()>,
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop").field("watching", &self.watching).finish_non_exhaustive()
    }
}

impl Loop {
    fn new(
        client: Control,
        events: Streaming<pb::Event>,
        keys: mpsc::Receiver<io::Result<Event>>,
    ) -> Loop {
        let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
        let (statuses_tx, statuses) = mpsc::unbounded_channel();
        Loop {
            client,
            events,
            watching: true,
            keys,
            outcomes_tx,
            outcomes,
            statuses_tx,
            statuses,
            status_busy: false,
            status_again: false,
            marks: JoinSet::new(),
        }
    }

    fn request(&self, app: &mut App, request: Request) {
        let id = app.dispatching(&request);
        daemon::spawn_request(self.client.clone(), request, id, self.outcomes_tx.clone());
    }

    /// Asks for a fresh status, at most one at a time.
    fn refresh_status(&mut self) {
        if self.status_busy {
            self.status_again = true;
        } else {
            self.status_busy = true;
            daemon::spawn_status(self.client.clone(), self.statuses_tx.clone());
        }
    }

    async fn run(
        mut self,
        screen: &mut Screen,
        app: &mut App,
        first: Option<Request>,
    ) -> Result<(), Error> {
        let (peers_tx, mut peers) = mpsc::unbounded_channel();
        let feed = tokio::spawn(daemon::follow_peers(self.client.clone(), peers_tx));
        if let Some(request) = first {
            self.request(app, request);
        }
        let mut tick = tokio::time::interval(STATUS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let interrupted = signals::interrupted();
        tokio::pin!(interrupted);

        let result = loop {
            if let Err(err) = screen.terminal().draw(|frame| view::draw(frame, app)) {
                break Err(Error::Stdout(err));
            }
            // Drawn and flushed: what it shows has been displayed.
            let ids = app.take_newly_visible();
            if !ids.is_empty() {
                let report =
                    daemon::mark_displayed(self.client.clone(), ids, self.outcomes_tx.clone());
                self.marks.spawn(report);
            }
            if app.quit {
                break Ok(());
            }
            tokio::select! {
                () = &mut interrupted => app.quit = true,
                key = self.keys.recv() => match key {
                    Some(Ok(event)) => self.on_terminal(app, event),
                    Some(Err(err)) => break Err(Error::Stdin(err)),
                    None => break Err(Error::Stdin(io::ErrorKind::UnexpectedEof.into())),
                },
                event = self.events.message(), if self.watching => match event {
                    Ok(Some(event)) => {
                        if let Some(request) = app.on_event(&event, now_ms()) {
                            self.request(app, request);
                        }
                        self.refresh_status();
                    }
                    Ok(None) => {
                        self.watching = false;
                        app.on_daemon_gone(None, now_ms());
                    }
                    Err(status) => {
                        self.watching = false;
                        let detail = match Error::from_stream(status) {
                            Error::Stopped { detail } => detail,
                            other => Some(other.to_string()),
                        };
                        app.on_daemon_gone(detail, now_ms());
                    }
                },
                Some(outcome) = self.outcomes.recv() => {
                    app.on_outcome(outcome, now_ms());
                    self.refresh_status();
                }
                Some(status) = self.statuses.recv() => {
                    self.status_busy = false;
                    if let Some(status) = status {
                        app.on_status(status);
                    }
                    if std::mem::take(&mut self.status_again) {
                        self.refresh_status();
                    }
                }
                Some(update) = peers.recv() => app.on_peers(update),
                _ = tick.tick(), if app.gone.is_none() => self.refresh_status(),
            }
        };
        feed.abort();
        let marks = &mut self.marks;
        let _ = tokio::time::timeout(FINISH_TIMEOUT, async {
            while marks.join_next().await.is_some() {}
        })
        .await;
        result
    }

    fn on_terminal(&mut self, app: &mut App, event: Event) {
        match event {
            Event::Key(key) => {
                if let Some(action) = keys::action(&key, app.key_context())
                    && let Some(request) = app.apply(action, now_ms())
                {
                    self.request(app, request);
                }
            }
            Event::Paste(text) if app.gone.is_none() => app.input.insert_str(&text),
            // A resize needs only the redraw that follows every event.
            _ => {}
        }
    }
}
