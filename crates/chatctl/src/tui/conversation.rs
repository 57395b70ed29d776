//! The conversation pane's content: every line shown (our messages with
//! their receipt marks, the peer's messages, system lines), where the view
//! is scrolled to, and which received messages are on screen.
//!
//! Receipts are matched to our messages by id, but the id only arrives with
//! the Send answer, and peerd may put the receipt on the Watch stream
//! first. Receipts for ids we do not know yet wait in a small bounded map
//! ([`EarlyReceipts`]); receipts for messages sent from elsewhere (another
//! `chatctl send`) also land there and simply age out.
//!
//! Scrolling is kept as the first row shown (`top`), or none to follow the
//! newest: new lines then arrive below a scrolled view without moving it,
//! and stay off screen (and unreported as displayed) until the user scrolls
//! back down.
//!
//! Every frame needs the total number of rows; wrapping a long conversation
//! for each key press would be slow, so each entry's row count is kept for
//! the current width and only the entries on screen are wrapped to draw.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};

use peerchat::v1 as pb;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;

use super::wrap::{Segment, wrap};
use crate::format::clean;

/// How many receipts for unknown ids are kept.
const EARLY_CAP: usize = 64;

/// How many entries are kept; the oldest go first.
const ENTRIES_CAP: usize = 10_000;

/// Continuation rows start under the text, past `HH:MM `.
const INDENT: usize = 6;

/// Where one of our messages has got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Sent (or being sent), no receipt yet.
    Pending,
    Delivered,
    Displayed,
    /// It will never arrive, and why.
    Failed(String),
}

impl Mark {
    /// Marks only move forward: a late `delivered` after `displayed`
    /// changes nothing, and a failure only replaces `pending`. A receipt
    /// does replace a failure: the peer had the message after all, and
    /// said so when the two next talked (its receipt was lost with a link).
    fn advance(&mut self, to: Mark) {
        let rank = |m: &Mark| match m {
            Mark::Pending => 0,
            Mark::Delivered => 1,
            Mark::Displayed => 2,
            Mark::Failed(_) => 3,
        };
        let allowed = match (&*self, &to) {
            (Mark::Failed(_), Mark::Delivered | Mark::Displayed) => true,
            (Mark::Failed(_), _) => false,
            (Mark::Pending, Mark::Failed(_)) => true,
            (_, Mark::Failed(_)) => false,
            _ => rank(&to) > rank(self),
        };
        if allowed {
            *self = to;
        }
    }

    fn from_state(state: pb::MessageState) -> Mark {
        match state {
            pb::MessageState::Delivered => Mark::Delivered,
            pb::MessageState::Displayed => Mark::Displayed,
            pb::MessageState::Failed => Mark::Failed(String::new()),
            pb::MessageState::Sent | pb::MessageState::Unspecified => Mark::Pending,
        }
    }
}

/// How a system line looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    /// Connected, disconnected, link lost, ...
    Info,
    /// Wants an answer: a peer asks to talk.
    Notice,
    /// A command failed, or peerd went away.
    Error,
}

/// One item of the conversation pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Own {
        /// Our own number for it, until (and after) peerd gives an id.
        local: u64,
        id: Option<String>,
        text: String,
        at_ms: i64,
        mark: Mark,
    },
    Received {
        id: String,
        from: String,
        text: String,
        at_ms: i64,
        /// Reported to peerd as displayed.
        shown: bool,
    },
    System {
        text: String,
        at_ms: i64,
        tone: Tone,
    },
}

/// Receipts that came before the Send answer naming their id.
#[derive(Debug, Default)]
struct EarlyReceipts {
    marks: VecDeque<(String, Mark)>,
}

impl EarlyReceipts {
    fn put(&mut self, id: &str, mark: Mark) {
        if let Some((_, held)) = self.marks.iter_mut().find(|(held_id, _)| held_id == id) {
            held.advance(mark);
            return;
        }
        if self.marks.len() == EARLY_CAP {
            self.marks.pop_front();
        }
        let mut held = Mark::Pending;
        held.advance(mark);
        self.marks.push_back((id.to_owned(), held));
    }

    fn take(&mut self, id: &str) -> Option<Mark> {
        let at = self.marks.iter().position(|(held_id, _)| held_id == id)?;
        self.marks.remove(at).map(|(_, mark)| mark)
    }
}

/// A stored message as a pane entry. Received ones that no display client
/// showed yet count as unshown: they are reported once on screen (and not
/// shown twice when the Watch stream replays them).
fn stored(e: &pb::HistoryEntry) -> Entry {
    match e.direction() {
        pb::Direction::Out => Entry::Own {
            local: 0,
            id: Some(e.id.clone()),
            text: e.text.clone(),
            at_ms: e.at_ms,
            mark: match e.state() {
                pb::MessageState::Failed => Mark::Failed(String::new()),
                state => Mark::from_state(state),
            },
        },
        _ => Entry::Received {
            id: e.id.clone(),
            from: e.peer.clone(),
            text: e.text.clone(),
            at_ms: e.at_ms,
            shown: e.state() == pb::MessageState::Displayed,
        },
    }
}

/// The conversation pane's state.
#[derive(Debug)]
pub(crate) struct Conversation {
    entries: Vec<Entry>,
    early: EarlyReceipts,
    /// The first row shown while scrolled back; `None` follows the newest.
    top: Option<usize>,
    /// The pane's inside, in columns and rows, as last drawn.
    width: usize,
    height: usize,
    /// `HH:MM` for a time in ms since the epoch (local time; fixed in tests).
    clock: fn(i64) -> String,
    /// Rows per entry at `counted_width`; `None` where not known (the entry
    /// changed since). Filled as needed, also from `&self` methods.
    counts: RefCell<Vec<Option<usize>>>,
    counted_width: Cell<usize>,
    /// Where the stored conversation asked for goes ([`Self::expect_history`]).
    history_at: Option<usize>,
    /// The peer of the stored conversation on screen, and where a message
    /// of theirs that waited for a display client goes: under its heading,
    /// before the stored messages (it is older than those), after the
    /// waited ones placed before it.
    waited_at: Option<(String, usize)>,
}

impl Conversation {
    pub(crate) fn new(clock: fn(i64) -> String) -> Conversation {
        Conversation {
            entries: Vec::new(),
            early: EarlyReceipts::default(),
            top: None,
            width: 0,
            height: 0,
            clock,
            counts: RefCell::new(Vec::new()),
            counted_width: Cell::new(0),
            history_at: None,
            waited_at: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn push(&mut self, entry: Entry) {
        self.insert_at(self.entries.len(), entry);
    }

    /// Puts `entry` before entry `i` (at the end for the length), and
    /// returns where it went (earlier when the oldest entries made room).
    fn insert_at(&mut self, i: usize, entry: Entry) -> usize {
        let mut i = i.min(self.entries.len());
        if self.entries.len() >= ENTRIES_CAP {
            let dropped = ENTRIES_CAP / 10;
            self.entries.drain(..dropped);
            self.counts.get_mut().clear();
            // Rows moved under a scrolled view: start again at the newest.
            self.top = None;
            self.history_at = self.history_at.map(|at| at.saturating_sub(dropped));
            if let Some((_, at)) = &mut self.waited_at {
                *at = at.saturating_sub(dropped);
            }
            i = i.saturating_sub(dropped);
        }
        let counts = self.counts.get_mut();
        if i < counts.len() {
            counts.insert(i, None);
        }
        for at in [self.history_at.as_mut(), self.waited_at.as_mut().map(|(_, at)| at)]
            .into_iter()
            .flatten()
        {
            if *at > i {
                *at += 1;
            }
        }
        self.entries.insert(i, entry);
        // A scrolled-back view stays on what it shows: an entry put above
        // its first row (or in its place) moves that row down.
        if let Some(top) = self.top {
            let row: usize = (0..i).map(|k| self.count(k)).sum();
            if row <= top {
                self.top = Some(top + self.count(i));
            }
        }
        i
    }

    /// A message of ours, just typed; its id comes with the Send answer.
    pub(crate) fn push_own(&mut self, local: u64, text: &str, at_ms: i64) {
        self.push(Entry::Own {
            local,
            id: None,
            text: text.to_owned(),
            at_ms,
            mark: Mark::Pending,
        });
    }

    /// Our message `i`, about to change: its rows are counted again.
    fn own_at(&mut self, i: usize) -> Option<(&mut Option<String>, &mut Mark)> {
        if let Some(count) = self.counts.get_mut().get_mut(i) {
            *count = None;
        }
        match self.entries.get_mut(i) {
            Some(Entry::Own { id, mark, .. }) => Some((id, mark)),
            _ => None,
        }
    }

    fn own_by_local(&mut self, local: u64) -> Option<(&mut Option<String>, &mut Mark)> {
        let i = self
            .entries
            .iter()
            .rposition(|entry| matches!(entry, Entry::Own { local: l, .. } if *l == local))?;
        self.own_at(i)
    }

    fn own_by_id(&mut self, wanted: &str) -> Option<&mut Mark> {
        let i = self
            .entries
            .iter()
            .rposition(|entry| matches!(entry, Entry::Own { id: Some(id), .. } if id == wanted))?;
        self.own_at(i).map(|(_, mark)| mark)
    }

    /// peerd took message `local` as `id`: any receipt that came first
    /// applies now.
    pub(crate) fn sent(&mut self, local: u64, id: &str, state: pb::MessageState) {
        let early = self.early.take(id);
        if let Some((slot, mark)) = self.own_by_local(local) {
            *slot = Some(id.to_owned());
            mark.advance(Mark::from_state(state));
            if let Some(early) = early {
                mark.advance(early);
            }
        }
    }

    /// peerd refused message `local` (not connected, too long, ...).
    pub(crate) fn send_failed(&mut self, local: u64, reason: &str) {
        if let Some((_, mark)) = self.own_by_local(local) {
            mark.advance(Mark::Failed(reason.to_owned()));
        }
    }

    /// A receipt (or a failure) for message `id`.
    pub(crate) fn receipt(&mut self, id: &str, mark: Mark) {
        match self.own_by_id(id) {
            Some(held) => held.advance(mark),
            None => self.early.put(id, mark),
        }
    }

    /// A message from the peer. The same id twice is shown once. New ones
    /// go at the end. One that waited (replayed, oldest first, when this
    /// client attached: not yet reported shown) and is not among the
    /// stored messages on screen is older than all of them: it goes
    /// before them, under their heading, after those placed there before.
    pub(crate) fn received(&mut self, m: &pb::MessageEvent) {
        let seen = self.entries.iter().rev().take(1000).any(
            |entry| matches!(entry, Entry::Received { id, .. } if !id.is_empty() && *id == m.id),
        );
        if seen {
            return;
        }
        let entry = Entry::Received {
            id: m.id.clone(),
            from: m.from.clone(),
            text: m.text.clone(),
            at_ms: m.at_ms,
            shown: false,
        };
        match &self.waited_at {
            Some((peer, at)) if m.waited && peer.eq_ignore_ascii_case(&m.from) => {
                let placed = self.insert_at(*at, entry);
                if let Some((_, at)) = &mut self.waited_at {
                    *at = placed + 1;
                }
            }
            _ => {
                self.push(entry);
            }
        }
    }

    /// The stored conversation is being read: it goes here, after the lines
    /// so far and before whatever comes while it is read.
    pub(crate) fn expect_history(&mut self) {
        self.history_at = Some(self.entries.len());
    }

    /// A peer's stored conversation, under `heading`, where
    /// [`Self::expect_history`] said (else at the end). Messages already
    /// in the pane stay where they are; with none left, no heading either.
    /// Returns how many stored messages went in.
    pub(crate) fn insert_history(
        &mut self,
        peer: &str,
        heading: impl FnOnce(usize) -> Entry,
        entries: &[pb::HistoryEntry],
    ) -> usize {
        let at = self.history_at.take().unwrap_or(self.entries.len());
        // Ours typed here and still waiting for peerd's answer (the history
        // was read after peerd took them, before the answer named their
        // id): the newest stored one of the same text is that message, and
        // is left out, once for each.
        let mut awaiting: Vec<&str> = self
            .entries
            .iter()
            .filter_map(|entry| match entry {
                Entry::Own { id: None, mark: Mark::Pending, text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let mut left_out = HashSet::new();
        for e in entries.iter().rev() {
            if e.direction() == pb::Direction::Out
                && let Some(i) = awaiting.iter().position(|text| *text == e.text)
            {
                awaiting.swap_remove(i);
                left_out.insert(e.id.as_str());
            }
        }
        let fresh: Vec<Entry> = entries
            .iter()
            .filter(|e| !self.has_id(&e.id) && !left_out.contains(e.id.as_str()))
            .map(stored)
            .collect();
        if fresh.is_empty() {
            return 0;
        }
        let n = fresh.len();
        let mut next = self.insert_at(at, heading(n)) + 1;
        self.waited_at = Some((peer.to_owned(), next));
        for entry in fresh {
            next = self.insert_at(next, entry) + 1;
        }
        n
    }

    /// Whether a message with `id` is in the pane (ours once peerd named
    /// it, or received).
    fn has_id(&self, id: &str) -> bool {
        !id.is_empty()
            && self.entries.iter().any(|entry| match entry {
                Entry::Own { id: Some(own), .. } => own == id,
                Entry::Received { id: received, .. } => received == id,
                _ => false,
            })
    }

    pub(crate) fn system(&mut self, text: String, at_ms: i64, tone: Tone) {
        self.push(Entry::System { text, at_ms, tone });
    }

    // ---- layout and scrolling ----

    /// The pane's inside as last drawn.
    pub(crate) fn set_viewport(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
    }

    fn wrap_entry(&self, entry: &Entry) -> Vec<Line<'static>> {
        wrap(&self.segments(entry), self.width, INDENT)
    }

    /// How many rows entry `i` takes at the current width.
    fn count(&self, i: usize) -> usize {
        let mut counts = self.counts.borrow_mut();
        if self.counted_width.get() != self.width {
            counts.clear();
            self.counted_width.set(self.width);
        }
        if counts.len() < self.entries.len() {
            counts.resize(self.entries.len(), None);
        }
        if let Some(Some(count)) = counts.get(i) {
            return *count;
        }
        let count = self.entries.get(i).map_or(0, |entry| self.wrap_entry(entry).len());
        counts[i] = Some(count);
        count
    }

    fn total(&self) -> usize {
        (0..self.entries.len()).map(|i| self.count(i)).sum()
    }

    /// The rows on screen, each with the entry it belongs to.
    fn window(&self) -> Vec<(usize, Line<'static>)> {
        let start = self.start(self.total());
        let end = start + self.height;
        let mut rows = Vec::new();
        let mut row = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            if row >= end {
                break;
            }
            let count = self.count(i);
            if row + count > start {
                for (k, line) in self.wrap_entry(entry).into_iter().enumerate() {
                    if (start..end).contains(&(row + k)) {
                        rows.push((i, line));
                    }
                }
            }
            row += count;
        }
        rows
    }

    /// The index of the first row shown, given `total` rows.
    fn start(&self, total: usize) -> usize {
        let last_page = total.saturating_sub(self.height);
        self.top.map_or(last_page, |top| top.min(last_page))
    }

    /// The rows on screen now, top to bottom.
    pub(crate) fn visible_rows(&self) -> Vec<Line<'static>> {
        self.window().into_iter().map(|(_, line)| line).collect()
    }

    fn page(&self) -> usize {
        self.height.saturating_sub(1).max(1)
    }

    /// PageUp: one screen back (nothing to do when everything fits).
    pub(crate) fn page_up(&mut self) {
        let total = self.total();
        if total <= self.height {
            return;
        }
        self.top = Some(self.start(total).saturating_sub(self.page()));
    }

    /// PageDown: one screen on; at the end, follow the newest again.
    pub(crate) fn page_down(&mut self) {
        let total = self.total();
        let next = self.start(total) + self.page();
        self.top = (next < total.saturating_sub(self.height)).then_some(next);
    }

    /// True while scrolled back (new lines arrive out of view).
    pub(crate) fn is_scrolled(&self) -> bool {
        let total = self.total();
        self.start(total) < total.saturating_sub(self.height)
    }

    /// Received messages not shown yet (out of view).
    pub(crate) fn unseen(&self) -> usize {
        self.entries.iter().filter(|e| matches!(e, Entry::Received { shown: false, .. })).count()
    }

    /// The ids of received messages with a row on screen that were not
    /// reported yet; from now on they count as reported.
    pub(crate) fn take_newly_visible(&mut self) -> Vec<String> {
        if self.height == 0 || self.width == 0 {
            return Vec::new();
        }
        // Entries with the rows of each on screen, in order.
        let mut on_screen: Vec<(usize, usize)> = Vec::new();
        for (i, _) in self.window() {
            match on_screen.last_mut() {
                Some((last, rows)) if *last == i => *rows += 1,
                _ => on_screen.push((i, 1)),
            }
        }
        let mut ids = Vec::new();
        for (i, rows) in on_screen {
            // Shown means shown whole: a message cut off at the top (a
            // tiny terminal, or scrolled to its end) is not read yet,
            // unless it fills the pane, which is all it can do.
            if rows < self.count(i) && rows < self.height {
                continue;
            }
            if let Some(Entry::Received { id, shown, .. }) = self.entries.get_mut(i)
                && !*shown
            {
                *shown = true;
                if !id.is_empty() {
                    ids.push(id.clone());
                }
            }
        }
        ids
    }

    /// One entry as styled pieces of text.
    fn segments(&self, entry: &Entry) -> Vec<Segment> {
        let dim = Style::default().fg(Color::DarkGray);
        let time = |at_ms: i64| (format!("{} ", (self.clock)(at_ms)), dim);
        match entry {
            Entry::Own { text, at_ms, mark, .. } => {
                let mut out = vec![
                    time(*at_ms),
                    (
                        "you: ".to_owned(),
                        Style::default().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                    ),
                    (clean(text).into_owned(), Style::default()),
                ];
                out.push(match mark {
                    Mark::Pending => (" …".to_owned(), dim),
                    Mark::Delivered => (" ✓".to_owned(), Style::default().fg(Color::Green)),
                    Mark::Displayed => (" ✓✓".to_owned(), Style::default().fg(Color::Green)),
                    Mark::Failed(reason) if reason.is_empty() => {
                        (" ✗ failed".to_owned(), Style::default().fg(Color::Red))
                    }
                    Mark::Failed(reason) => {
                        (format!(" ✗ failed: {}", clean(reason)), Style::default().fg(Color::Red))
                    }
                });
                out
            }
            Entry::Received { from, text, at_ms, .. } => vec![
                time(*at_ms),
                (
                    format!("{}: ", clean(from)),
                    Style::default().fg(Color::Magenta).add_modifier(Modifier::BOLD),
                ),
                (clean(text).into_owned(), Style::default()),
            ],
            Entry::System { text, at_ms, tone } => {
                let style = match tone {
                    Tone::Info => Style::default().fg(Color::Blue),
                    Tone::Notice => Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                    Tone::Error => Style::default().fg(Color::Red),
                };
                vec![time(*at_ms), (clean(text).into_owned(), style)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::clock;
    use super::*;

    fn message(id: &str, text: &str) -> pb::MessageEvent {
        pb::MessageEvent {
            id: id.into(),
            from: "bob".into(),
            text: text.into(),
            ..Default::default()
        }
    }

    fn mark_of(c: &Conversation, local: u64) -> Mark {
        c.entries()
            .iter()
            .find_map(|e| match e {
                Entry::Own { local: l, mark, .. } if *l == local => Some(mark.clone()),
                _ => None,
            })
            .expect("that message is there")
    }

    fn text_rows(c: &Conversation) -> Vec<String> {
        c.visible_rows().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn marks_follow_receipts_and_never_go_back() {
        let mut c = Conversation::new(clock);
        c.push_own(1, "hi", 0);
        assert_eq!(mark_of(&c, 1), Mark::Pending);
        c.sent(1, "m1", pb::MessageState::Sent);
        c.receipt("m1", Mark::Delivered);
        assert_eq!(mark_of(&c, 1), Mark::Delivered);
        c.receipt("m1", Mark::Displayed);
        c.receipt("m1", Mark::Delivered);
        assert_eq!(mark_of(&c, 1), Mark::Displayed);
        c.receipt("m1", Mark::Failed("x".into()));
        assert_eq!(mark_of(&c, 1), Mark::Displayed, "a failure never undoes a receipt");
    }

    #[test]
    fn a_receipt_before_the_send_answer_is_kept_for_it() {
        let mut c = Conversation::new(clock);
        c.push_own(1, "hi", 0);
        c.receipt("m1", Mark::Delivered);
        c.receipt("m1", Mark::Displayed);
        assert_eq!(mark_of(&c, 1), Mark::Pending);
        c.sent(1, "m1", pb::MessageState::Sent);
        assert_eq!(mark_of(&c, 1), Mark::Displayed);
        assert!(c.early.marks.is_empty());
    }

    #[test]
    fn failures_show_their_reason() {
        let mut c = Conversation::new(clock);
        c.push_own(1, "hi", 0);
        c.push_own(2, "there", 0);
        c.send_failed(1, "not connected");
        assert_eq!(mark_of(&c, 1), Mark::Failed("not connected".into()));
        c.sent(2, "m2", pb::MessageState::Sent);
        c.receipt("m2", Mark::Failed("bob went away".into()));
        c.set_viewport(60, 10);
        assert_eq!(
            text_rows(&c),
            ["00:00 you: hi ✗ failed: not connected", "00:00 you: there ✗ failed: bob went away"]
        );
        // Bob had it after all, and said so when they next talked.
        c.receipt("m2", Mark::Delivered);
        assert_eq!(mark_of(&c, 2), Mark::Delivered);
        c.receipt("m2", Mark::Failed("again".into()));
        assert_eq!(mark_of(&c, 2), Mark::Delivered, "a failure never undoes a receipt");
    }

    #[test]
    fn early_receipts_are_bounded() {
        let mut c = Conversation::new(clock);
        for i in 0..EARLY_CAP + 5 {
            c.receipt(&format!("other-{i}"), Mark::Delivered);
        }
        assert_eq!(c.early.marks.len(), EARLY_CAP);
        assert!(c.early.take("other-0").is_none(), "the oldest went first");
        assert_eq!(c.early.take(&format!("other-{}", EARLY_CAP + 4)), Some(Mark::Delivered));
    }

    #[test]
    fn long_lines_wrap_under_the_text() {
        let mut c = Conversation::new(clock);
        c.received(&message("r1", "one two three four five six"));
        c.set_viewport(20, 10);
        assert_eq!(text_rows(&c), ["00:00 bob: one two", "      three four", "      five six"]);
    }

    #[test]
    fn the_same_message_twice_is_shown_once() {
        let mut c = Conversation::new(clock);
        c.received(&message("r1", "a"));
        c.received(&message("r1", "a"));
        assert_eq!(c.entries().len(), 1);
    }

    #[test]
    fn only_messages_on_screen_are_reported_once() {
        let mut c = Conversation::new(clock);
        c.set_viewport(40, 3);
        for i in 0..5 {
            c.received(&message(&format!("r{i}"), &format!("message {i}")));
        }
        // Following the newest: the last three rows.
        assert_eq!(c.take_newly_visible(), ["r2", "r3", "r4"]);
        assert!(c.take_newly_visible().is_empty(), "each id once");
        assert_eq!(c.unseen(), 2);
        c.page_up();
        assert!(c.is_scrolled());
        assert_eq!(c.take_newly_visible(), ["r0", "r1"]);
        assert_eq!(c.unseen(), 0);
    }

    #[test]
    fn a_message_cut_off_is_not_reported_until_it_is_shown_whole() {
        let mut c = Conversation::new(clock);
        // Three rows a message at 20 columns.
        c.received(&message("r0", "one two three four five six"));
        c.received(&message("r1", "short"));
        c.set_viewport(20, 3);
        assert_eq!(text_rows(&c), ["      three four", "      five six", "00:00 bob: short"]);
        assert_eq!(c.take_newly_visible(), ["r1"], "only r0's end is on screen");
        c.set_viewport(20, 4);
        assert_eq!(c.take_newly_visible(), ["r0"]);
        // One taller than the pane counts once it fills it.
        c.received(&message("r2", "a b c d e f g h i j k l m n o p q r s t u v w x y z"));
        assert_eq!(c.take_newly_visible(), ["r2"]);
    }

    #[test]
    fn messages_arriving_while_scrolled_back_wait_until_scrolled_into_view() {
        let mut c = Conversation::new(clock);
        c.set_viewport(40, 2);
        for i in 0..4 {
            c.system(format!("line {i}"), 0, Tone::Info);
        }
        c.page_up();
        assert_eq!(text_rows(&c), ["00:00 line 1", "00:00 line 2"]);
        c.received(&message("late", "you are scrolled away"));
        assert_eq!(text_rows(&c), ["00:00 line 1", "00:00 line 2"], "the view stays put");
        assert!(c.take_newly_visible().is_empty());
        assert_eq!(c.unseen(), 1);
        c.page_down();
        assert_eq!(text_rows(&c), ["00:00 line 2", "00:00 line 3"]);
        assert!(c.take_newly_visible().is_empty());
        c.page_down();
        assert_eq!(text_rows(&c), ["00:00 line 3", "00:00 bob: you are scrolled away"]);
        assert_eq!(c.take_newly_visible(), ["late"]);
        assert!(!c.is_scrolled());
        c.page_down();
        assert!(!c.is_scrolled(), "PageDown at the end stays at the end");
    }

    #[test]
    fn page_up_stops_at_the_top_and_does_nothing_when_all_fits() {
        let mut c = Conversation::new(clock);
        c.set_viewport(40, 5);
        c.system("only".into(), 0, Tone::Info);
        c.page_up();
        assert!(!c.is_scrolled());
        for i in 0..20 {
            c.system(format!("line {i}"), 0, Tone::Info);
        }
        for _ in 0..10 {
            c.page_up();
        }
        assert_eq!(text_rows(&c)[0], "00:00 only");
    }

    #[test]
    fn history_comes_first_and_unshown_messages_are_reported_once() {
        let mut c = Conversation::new(clock);
        c.set_viewport(60, 10);
        let entry =
            |id: &str, direction: pb::Direction, state: pb::MessageState| pb::HistoryEntry {
                id: id.into(),
                direction: direction as i32,
                peer: "bob".into(),
                text: id.into(),
                at_ms: 0,
                state: state as i32,
            };
        let stored = [
            entry("old-in", pb::Direction::In, pb::MessageState::Displayed),
            entry("old-out", pb::Direction::Out, pb::MessageState::Delivered),
            entry("unseen-in", pb::Direction::In, pb::MessageState::Delivered),
        ];
        assert_eq!(c.insert_history("bob", heading, &stored), 3);
        // The Watch stream replays what no display client showed.
        c.received(&pb::MessageEvent { waited: true, ..message("unseen-in", "unseen-in") });
        c.receipt("old-out", Mark::Displayed);
        assert_eq!(
            text_rows(&c),
            [
                "00:00 stored 3:",
                "00:00 bob: old-in",
                "00:00 you: old-out ✓✓",
                "00:00 bob: unseen-in"
            ]
        );
        assert_eq!(c.take_newly_visible(), ["unseen-in"]);
        // Nothing new in it: no heading over nothing.
        assert_eq!(c.insert_history("bob", heading, &stored), 0);
        assert_eq!(c.entries().len(), 4);
    }

    fn heading(n: usize) -> Entry {
        Entry::System { text: format!("stored {n}:"), at_ms: 0, tone: Tone::Info }
    }

    fn stored_in(id: &str) -> pb::HistoryEntry {
        pb::HistoryEntry {
            id: id.into(),
            direction: pb::Direction::In as i32,
            peer: "bob".into(),
            text: id.into(),
            at_ms: 0,
            state: pb::MessageState::Displayed as i32,
        }
    }

    #[test]
    fn the_stored_conversation_goes_before_what_came_while_it_was_read() {
        let mut c = Conversation::new(clock);
        c.set_viewport(60, 10);
        c.system("connected to bob".into(), 0, Tone::Info);
        c.expect_history();
        // A message that came while the history was read: it is in the
        // history too, and shown once, after the rest of it.
        c.received(&message("new", "new"));
        assert_eq!(c.insert_history("bob", heading, &[stored_in("old"), stored_in("new")]), 1);
        assert_eq!(
            text_rows(&c),
            ["00:00 connected to bob", "00:00 stored 1:", "00:00 bob: old", "00:00 bob: new"]
        );
    }

    #[test]
    fn our_message_read_back_before_its_id_came_is_shown_once() {
        let mut c = Conversation::new(clock);
        c.set_viewport(60, 10);
        c.expect_history();
        c.push_own(1, "typed at once", 0);
        let ours = pb::HistoryEntry {
            direction: pb::Direction::Out as i32,
            text: "typed at once".into(),
            state: pb::MessageState::Sent as i32,
            ..stored_in("o1")
        };
        // The same words sent long ago stay; so do those of a message
        // peerd refused (it has no id, and never will).
        let long_ago = pb::HistoryEntry { id: "o0".into(), ..ours.clone() };
        c.push_own(2, "refused", 0);
        c.send_failed(2, "not connected");
        let refused = pb::HistoryEntry { id: "r0".into(), text: "refused".into(), ..ours.clone() };
        c.insert_history("bob", heading, &[long_ago, refused, stored_in("old"), ours]);
        c.sent(1, "o1", pb::MessageState::Delivered);
        assert_eq!(
            text_rows(&c),
            [
                "00:00 stored 3:",
                "00:00 you: typed at once …",
                "00:00 you: refused …",
                "00:00 bob: old",
                "00:00 you: typed at once ✓",
                "00:00 you: refused ✗ failed: not connected",
            ]
        );
    }

    #[test]
    fn messages_that_waited_go_before_the_stored_ones_and_new_ones_last() {
        let mut c = Conversation::new(clock);
        c.set_viewport(60, 10);
        c.insert_history("Bob", heading, &[stored_in("m3"), stored_in("m4")]);
        // Replayed oldest first: m1 and m2 are older than the stored ones;
        // m3 is among them already.
        let waited = |id: &str| pb::MessageEvent { waited: true, ..message(id, id) };
        c.received(&waited("m1"));
        c.received(&waited("m2"));
        c.received(&waited("m3"));
        // A new message goes last, whatever its sender's clock says.
        c.received(&pb::MessageEvent { at_ms: -5, ..message("m5", "m5") });
        assert_eq!(
            text_rows(&c),
            [
                "00:00 stored 2:",
                "00:00 bob: m1",
                "00:00 bob: m2",
                "00:00 bob: m3",
                "00:00 bob: m4",
                "00:00 bob: m5",
            ]
        );
        // One from someone else is not put in bob's block.
        c.received(&pb::MessageEvent { from: "carol".into(), waited: true, ..message("c1", "c1") });
        assert_eq!(text_rows(&c).last().map(String::as_str), Some("00:00 carol: c1"));
    }

    #[test]
    fn an_entry_put_above_a_scrolled_view_does_not_move_it() {
        let mut c = Conversation::new(clock);
        c.set_viewport(60, 2);
        c.insert_history("bob", heading, &[stored_in("m3"), stored_in("m4")]);
        c.received(&message("m5", "m5"));
        c.page_up();
        let before = text_rows(&c);
        c.received(&pb::MessageEvent { waited: true, ..message("m1", "m1") });
        assert_eq!(text_rows(&c), before, "the same rows on screen");
    }

    #[test]
    fn row_counts_follow_the_width_and_changed_marks() {
        let mut c = Conversation::new(clock);
        c.set_viewport(21, 10);
        c.push_own(1, "abc def ghi", 0);
        // "00:00 you: abc def ghi …" is 24 columns: two rows at 21.
        assert_eq!(text_rows(&c), ["00:00 you: abc def", "      ghi …"]);
        c.sent(1, "m1", pb::MessageState::Displayed);
        assert_eq!(text_rows(&c), ["00:00 you: abc def", "      ghi ✓✓"]);
        c.set_viewport(40, 10);
        assert_eq!(text_rows(&c), ["00:00 you: abc def ghi ✓✓"]);
        c.set_viewport(18, 10);
        c.push_own(2, "x", 0);
        let _ = c.total();
        c.send_failed(2, "a reason long enough to wrap");
        let fresh: usize = c.entries.iter().map(|e| c.wrap_entry(e).len()).sum();
        assert_eq!(c.total(), fresh);
        assert_eq!(c.visible_rows().len(), fresh);
        assert!(fresh > 4, "{:?}", text_rows(&c));
    }

    #[test]
    fn nothing_is_visible_before_the_first_draw() {
        let mut c = Conversation::new(clock);
        c.received(&message("r1", "a"));
        assert!(c.take_newly_visible().is_empty());
    }
}
