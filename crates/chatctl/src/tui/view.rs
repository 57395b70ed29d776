//! Drawing the TUI with ratatui: who is online on the left, the
//! conversation on the right, the input line and the status bar below, and
//! the help over it all when asked.
//!
//! ```text
//! ┌ online ──────────┐┌ bob · connected ─────────────────┐
//! │  alice (you) busy││10:19 connected to bob            │
//! │> bob busy        ││10:19 you: hi ✓✓                  │
//! │  carol available ││                                  │
//! └──────────────────┘└──────────────────────────────────┘
//! ┌ message to bob ──────────────────────────────────────┐
//! │█                                                     │
//! └──────────────────────────────────────────────────────┘
//!  alice · connected to bob · directory registered      ? help
//! ```
//!
//! Drawing tells the state how big the conversation pane is: scrolling and
//! "which received messages are on screen" are worked out at that size.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState, Paragraph};

use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use super::keys::Focus;
use super::state::{App, PeerRow};

/// The panes of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Areas {
    peers: Rect,
    conversation: Rect,
    input: Rect,
    status: Rect,
}

/// `widest`: the display width of the list's widest row.
fn layout(area: Rect, widest: usize) -> Areas {
    let [main, input, status] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(3), Constraint::Length(1)])
            .areas(area);
    let list_width = list_width(area.width, widest);
    let [peers, conversation] =
        Layout::horizontal([Constraint::Length(list_width), Constraint::Min(10)]).areas(main);
    Areas { peers, conversation, input, status }
}

/// The list's columns: a quarter of the screen (18 to 30), or more for its
/// widest row (borders and the selection mark included) while that leaves
/// the conversation three fifths. On an 80-column terminal a quarter is 20,
/// which cut `alice (you) available` to `alice (you) availa`.
fn list_width(screen: u16, widest: usize) -> u16 {
    let usual = (screen / 4).clamp(18, 30);
    let wanted = u16::try_from(widest.saturating_add(4)).unwrap_or(u16::MAX);
    let cap = (screen / 5 * 2).max(usual);
    usual.max(wanted.min(cap))
}

/// A row's words: the name, `(you)`, and its status. A name too long for
/// `room` columns is cut, with `…`, so that the status always shows.
fn row_spans(row: &PeerRow, room: usize) -> Vec<Span<'static>> {
    let you = if row.you { " (you)" } else { "" };
    let status = if row.busy { " busy" } else { " available" };
    let name_room = room.saturating_sub(you.len() + status.len());
    let name = if row.name.width() <= name_room || name_room < 2 {
        row.name.clone()
    } else {
        let mut cut = String::new();
        for c in row.name.chars() {
            if cut.width() + c.width().unwrap_or(0) + 1 > name_room {
                break;
            }
            cut.push(c);
        }
        cut.push('…');
        cut
    };
    let mut spans = vec![Span::raw(name)];
    if row.you {
        spans.push(Span::styled(you, Style::default().add_modifier(Modifier::BOLD)));
    }
    spans.push(if row.busy {
        Span::styled(status, Style::default().fg(Color::Yellow))
    } else {
        Span::styled(status, Style::default().fg(Color::Green))
    });
    spans
}

/// The display width of a row's words, uncut.
fn row_width(row: &PeerRow) -> usize {
    row.name.width() + if row.you { 6 } else { 0 } + if row.busy { 5 } else { 10 }
}

/// Draws one frame.
pub(crate) fn draw(frame: &mut Frame<'_>, app: &mut App) {
    let widest = app.peers.rows().iter().map(row_width).max().unwrap_or(0);
    let areas = layout(frame.area(), widest);
    let conversation_block = conversation_block(app);
    let inner = conversation_block.inner(areas.conversation);
    app.conversation.set_viewport(usize::from(inner.width), usize::from(inner.height));

    draw_peers(frame, app, areas.peers);
    frame.render_widget(
        Paragraph::new(app.conversation.visible_rows()).block(conversation_block),
        areas.conversation,
    );
    draw_input(frame, app, areas.input);
    draw_status(frame, app, areas.status);
    if app.help {
        draw_help(frame, frame.area());
    }
}

fn focused(yes: bool) -> Style {
    if yes { Style::default().fg(Color::Cyan) } else { Style::default() }
}

fn draw_peers(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let title = match &app.peers.trouble {
        Some(_) => " online (stale) ",
        None => " online ",
    };
    let has_focus = app.focus == Focus::Peers;
    let block = Block::bordered().title(title).border_style(focused(has_focus));
    let selected = app.peers.selected_index();
    // Inside the borders, less the selection mark's column when a row is
    // selected (ratatui then sets every row in by it).
    let room = usize::from(area.width.saturating_sub(2)).saturating_sub(if selected.is_some() {
        2
    } else {
        0
    });
    let items: Vec<ListItem<'_>> = app
        .peers
        .rows()
        .iter()
        .map(|row| ListItem::new(Line::from(row_spans(row, room))))
        .collect();
    let highlight = if has_focus {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default().add_modifier(Modifier::BOLD)
    };
    let empty = items.is_empty();
    let list = List::new(items).block(block).highlight_style(highlight).highlight_symbol("> ");
    let mut state = ListState::default().with_selected(selected);
    frame.render_stateful_widget(list, area, &mut state);
    if empty && area.width > 2 && area.height > 2 {
        let inner = Rect { x: area.x + 1, y: area.y + 1, width: area.width - 2, height: 1 };
        let text = if app.peers.trouble.is_some() { "directory unreachable" } else { "nobody yet" };
        frame
            .render_widget(Paragraph::new(text).style(Style::default().fg(Color::DarkGray)), inner);
    }
}

fn conversation_block(app: &App) -> Block<'static> {
    let status = &app.status;
    let title = if status.peer.is_empty() {
        " no conversation ".to_owned()
    } else if status.conversation.is_empty() {
        format!(" {} ", status.peer)
    } else {
        format!(" {} · {} ", status.peer, status.conversation)
    };
    let mut block = Block::bordered().title(title);
    if app.conversation.is_scrolled() {
        let unseen = app.conversation.unseen();
        let note = if unseen > 0 {
            format!(" ↓ {unseen} new — PageDown ")
        } else {
            " ↓ more — PageDown ".to_owned()
        };
        block = block.title_bottom(
            Line::from(note).right_aligned().style(Style::default().fg(Color::Yellow)),
        );
    }
    block
}

fn draw_input(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let title = if app.gone.is_some() {
        " peerd stopped — press q to quit ".to_owned()
    } else if app.status.peer.is_empty() {
        " /connect NAME (or Tab to pick from the list) · ? for help ".to_owned()
    } else {
        format!(" message to {} · ? for help ", app.status.peer)
    };
    let has_focus = app.focus == Focus::Input && app.gone.is_none() && !app.help;
    let block = Block::bordered().title(title).border_style(focused(has_focus));
    let inner = block.inner(area);
    let (shown, column) = app.input.window(usize::from(inner.width));
    frame.render_widget(Paragraph::new(shown.to_owned()).block(block), area);
    if has_focus && inner.width > 0 && inner.height > 0 {
        let x = inner.x.saturating_add(u16::try_from(column).unwrap_or(u16::MAX));
        frame.set_cursor_position(Position {
            x: x.min(inner.right().saturating_sub(1)),
            y: inner.y,
        });
    }
}

/// The status bar's text: who we are, the conversation, the directory,
/// who asks to talk.
pub(crate) fn status_text(app: &App) -> String {
    let s = &app.status;
    if app.gone.is_some() {
        return format!(" {} · peerd stopped — press q to quit", or_dash(&s.name));
    }
    let conversation = match (s.conversation.as_str(), s.peer.as_str()) {
        (_, "") => "no conversation".to_owned(),
        ("connected", peer) => format!("connected to {peer}"),
        ("connecting", peer) => format!("connecting to {peer}"),
        ("reconnecting", peer) => format!("reconnecting to {peer}"),
        ("closing", peer) => format!("closing with {peer}"),
        (state, peer) => format!("{state} {peer}"),
    };
    let mut parts = vec![
        or_dash(&s.name).to_owned(),
        conversation,
        format!("directory {}", or_dash(&s.directory_state)),
    ];
    if !s.requests.is_empty() {
        let names: Vec<&str> = s.requests.iter().map(|r| r.peer.as_str()).collect();
        parts.push(format!("asking to talk: {}", names.join(", ")));
    }
    format!(" {}", parts.join(" · "))
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn draw_status(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let style = if app.gone.is_some() {
        Style::default().fg(Color::White).bg(Color::Red)
    } else {
        Style::default().fg(Color::Black).bg(Color::Gray)
    };
    let text = status_text(app);
    let hint = "? help ";
    let used = unicode_width::UnicodeWidthStr::width(text.as_str());
    let pad = usize::from(area.width).saturating_sub(used + hint.len());
    let line = if pad > 0 && app.gone.is_none() {
        format!("{text}{}{hint}", " ".repeat(pad))
    } else {
        text
    };
    frame.render_widget(Paragraph::new(line).style(style), area);
}

const HELP: &[(&str, &str)] = &[
    ("Enter", "send the line (//text sends /text)"),
    ("/connect NAME", "talk to NAME (or Tab, arrows, Enter in the list)"),
    ("/disconnect", "end the conversation"),
    ("/accept [NAME]", "take a request to talk (the oldest if no NAME)"),
    ("/reject [NAME]", "turn a request down"),
    ("/trust NAME", "accept the key NAME has now"),
    ("/block NAME", "refuse NAME from now on (/unblock NAME)"),
    ("/quit", "leave (also Ctrl-C, or Ctrl-D on an empty line)"),
    ("Up / Down", "earlier lines"),
    ("PageUp / PageDown", "scroll the conversation"),
    ("Tab", "switch between the input and the list"),
    ("marks", "… sending  ✓ delivered  ✓✓ displayed  ✗ failed"),
];

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(format!("{key:<18}"), Style::default().add_modifier(Modifier::BOLD)),
                Span::raw(*what),
            ])
        })
        .collect();
    let width = 72.min(area.width);
    let height = u16::try_from(HELP.len() + 2).unwrap_or(u16::MAX).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let block = Block::bordered()
        .title(" help — Esc to close ")
        .border_style(Style::default().fg(Color::Cyan));
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

#[cfg(test)]
mod tests {
    use super::super::keys::Action;
    use super::super::state::PeersUpdate;
    use super::super::testing::clock;
    use super::*;
    use pb::event::Kind;
    use peerchat::v1 as pb;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn app() -> App {
        let status = pb::GetStatusResponse {
            name: "alice".into(),
            peer: "bob".into(),
            conversation: "connected".into(),
            directory_state: "registered".into(),
            ..Default::default()
        };
        let mut app = App::new(status, clock);
        for (name, you, status) in [
            ("alice", true, pb::PeerStatus::Busy),
            ("bob", false, pb::PeerStatus::Busy),
            ("carol", false, pb::PeerStatus::Available),
        ] {
            let peer = pb::Peer { name: name.into(), status: status as i32, ..Default::default() };
            app.on_peers(PeersUpdate::Event(pb::Event {
                kind: Some(Kind::PeerOnline(pb::PeerOnlineEvent { peer: Some(peer), you })),
            }));
        }
        app
    }

    /// Draws `app` on a `width`×`height` screen and returns its rows.
    fn screen(app: &mut App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        terminal.draw(|frame| draw(frame, app)).expect("draws");
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>())
            .collect()
    }

    fn contains(screen: &[String], text: &str) -> bool {
        screen.iter().any(|row| row.contains(text))
    }

    fn type_line(app: &mut App, line: &str) {
        for c in line.chars() {
            app.apply(Action::Insert(c), 0);
        }
        app.apply(Action::Submit, 0);
    }

    #[test]
    fn the_list_marks_you_and_shows_who_is_busy() {
        let mut app = app();
        let rows = screen(&mut app, 100, 20);
        assert!(contains(&rows, "│alice (you) busy"), "{rows:#?}");
        assert!(contains(&rows, "│bob busy"), "{rows:#?}");
        assert!(contains(&rows, "│carol available"), "{rows:#?}");
        assert!(contains(&rows, " bob · connected "), "{rows:#?}");
    }

    #[test]
    fn an_eighty_column_list_shows_every_status_whole() {
        let mut app = app();
        let long = "a-name-of-thirty-two-characters0";
        for (name, you) in [("alice", true), (long, false)] {
            let peer = pb::Peer {
                name: name.into(),
                status: pb::PeerStatus::Available as i32,
                ..Default::default()
            };
            app.on_peers(PeersUpdate::Event(pb::Event {
                kind: Some(Kind::PeerOnline(pb::PeerOnlineEvent { peer: Some(peer), you })),
            }));
        }
        let rows = screen(&mut app, 80, 24);
        assert!(contains(&rows, "│alice (you) available "), "{rows:#?}");
        // The longest name is cut, its status is not.
        assert!(contains(&rows, "│a-name-of-thirty-tw… available│"), "{rows:#?}");
        // The conversation keeps three fifths of the screen.
        assert!(rows[0].starts_with(&format!("┌ online {}┐┌", "─".repeat(22))), "{rows:#?}");
        // With a row selected every row is set in by the mark, and still fits.
        app.apply(Action::ToggleFocus, 0);
        app.apply(Action::SelectNext, 0);
        let rows = screen(&mut app, 80, 24);
        assert!(contains(&rows, "│  alice (you) available "), "{rows:#?}");
        assert!(contains(&rows, "│> a-name-of-thirty-… available│"), "{rows:#?}");
    }

    #[test]
    fn the_selected_name_is_marked_when_the_list_has_the_focus() {
        let mut app = app();
        app.apply(Action::ToggleFocus, 0);
        app.apply(Action::SelectNext, 0);
        let rows = screen(&mut app, 100, 20);
        assert!(contains(&rows, "│> bob busy"), "{rows:#?}");
    }

    #[test]
    fn own_messages_show_their_marks() {
        let mut app = app();
        type_line(&mut app, "hello from the tui");
        let rows = screen(&mut app, 100, 20);
        assert!(contains(&rows, "00:00 you: hello from the tui …"), "{rows:#?}");
        app.conversation.sent(1, "m1", pb::MessageState::Displayed);
        let rows = screen(&mut app, 100, 20);
        assert!(contains(&rows, "00:00 you: hello from the tui ✓✓"), "{rows:#?}");
    }

    #[test]
    fn long_lines_wrap_in_the_conversation_pane() {
        let mut app = app();
        let long = "word ".repeat(30);
        app.on_event(
            &pb::Event {
                kind: Some(Kind::Message(pb::MessageEvent {
                    id: "r1".into(),
                    from: "bob".into(),
                    text: long.trim_end().to_owned(),
                    at_ms: 0,
                    waited: false,
                })),
            },
            0,
        );
        // 80 columns: 20 for the list, 58 inside the conversation's borders.
        let rows = screen(&mut app, 80, 24);
        let wrapped: Vec<&String> = rows.iter().filter(|r| r.contains("word word")).collect();
        assert!(wrapped.len() >= 3, "{rows:#?}");
        assert!(wrapped[0].contains("00:00 bob: word"), "{rows:#?}");
        assert!(wrapped[1].contains("│      word"), "continuation rows are indented: {rows:#?}");
        assert_eq!(app.take_newly_visible(), ["r1"]);
    }

    #[test]
    fn the_status_bar_says_where_things_stand() {
        let mut app = app();
        let rows = screen(&mut app, 100, 20);
        let last = rows.last().cloned().unwrap_or_default();
        assert!(last.starts_with(" alice · connected to bob · directory registered"), "{last:?}");
        assert!(last.ends_with("? help "), "{last:?}");
        app.status.peer.clear();
        app.status.requests.push(pb::PendingRequest { peer: "carol".into(), expires_at_ms: 0 });
        assert_eq!(
            status_text(&app),
            " alice · no conversation · directory registered · asking to talk: carol"
        );
        app.on_daemon_gone(None, 0);
        let rows = screen(&mut app, 100, 20);
        assert!(contains(&rows, "peerd stopped — press q to quit"), "{rows:#?}");
    }

    #[test]
    fn the_help_overlay_covers_the_screen_until_closed() {
        let mut app = app();
        app.apply(Action::ShowHelp, 0);
        let rows = screen(&mut app, 100, 24);
        assert!(contains(&rows, "help — Esc to close"), "{rows:#?}");
        assert!(contains(&rows, "/connect NAME"), "{rows:#?}");
        assert!(contains(&rows, "✓✓ displayed"), "{rows:#?}");
        app.apply(Action::CloseHelp, 0);
        let rows = screen(&mut app, 100, 24);
        assert!(!contains(&rows, "help — Esc to close"), "{rows:#?}");
    }

    #[test]
    fn multi_byte_input_puts_the_cursor_by_display_width() {
        let mut app = app();
        for c in "漢字é".chars() {
            app.apply(Action::Insert(c), 0);
        }
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
        terminal.draw(|frame| draw(frame, &mut app)).expect("draws");
        // The input's inside starts at column 1 of row 21: 2+2+1 columns in.
        terminal.backend_mut().assert_cursor_position(Position { x: 6, y: 21 });
    }

    #[test]
    fn tiny_and_resized_screens_still_draw() {
        let mut app = app();
        type_line(&mut app, "hello");
        for (w, h) in [(80, 24), (120, 35), (20, 5), (1, 1), (40, 10)] {
            let rows = screen(&mut app, w, h);
            assert_eq!(rows.len(), usize::from(h));
        }
        let rows = screen(&mut app, 80, 24);
        assert!(contains(&rows, "you: hello"), "{rows:#?}");
    }
}
