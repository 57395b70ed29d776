//! Which key does what. A pure table from a key press and the little that
//! decides its meaning (where the focus is, whether the input is empty, an
//! overlay is open, peerd is gone) to an [`Action`], so that the bindings
//! are tested without a terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Where typing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Focus {
    #[default]
    Input,
    /// The list of who is online: arrows select, Enter connects.
    Peers,
}

/// What decides the meaning of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Context {
    pub(crate) focus: Focus,
    pub(crate) input_empty: bool,
    pub(crate) help_open: bool,
    pub(crate) daemon_gone: bool,
}

/// Something the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Quit,
    /// Enter in the input: send the line or run the command.
    Submit,
    Insert(char),
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    DeleteWordBack,
    KillToStart,
    KillToEnd,
    HistoryPrevious,
    HistoryNext,
    PageUp,
    PageDown,
    ToggleFocus,
    /// Back to the input (Esc in the list; typing there does it too).
    FocusInput,
    SelectPrevious,
    SelectNext,
    /// Enter in the list: connect to the selected peer.
    ConnectSelected,
    ShowHelp,
    CloseHelp,
}

/// The action for `key`, if any.
pub(crate) fn action(key: &KeyEvent, cx: Context) -> Option<Action> {
    // Key releases (reported by some terminals) are not presses.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if ctrl && key.code == KeyCode::Char('d') && (cx.input_empty || cx.daemon_gone) {
        return Some(Action::Quit);
    }
    if cx.daemon_gone {
        // Nothing else can work: say how to leave, and leave on q.
        return matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc).then_some(Action::Quit);
    }
    if cx.help_open {
        return matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?' | 'q'))
            .then_some(Action::CloseHelp);
    }
    match key.code {
        KeyCode::PageUp => return Some(Action::PageUp),
        KeyCode::PageDown => return Some(Action::PageDown),
        KeyCode::Tab | KeyCode::BackTab => return Some(Action::ToggleFocus),
        _ => {}
    }
    match cx.focus {
        Focus::Peers => peers_key(key, ctrl),
        Focus::Input => input_key(key, ctrl, cx.input_empty),
    }
}

fn peers_key(key: &KeyEvent, ctrl: bool) -> Option<Action> {
    Some(match key.code {
        KeyCode::Up => Action::SelectPrevious,
        KeyCode::Down => Action::SelectNext,
        KeyCode::Enter => Action::ConnectSelected,
        KeyCode::Esc => Action::FocusInput,
        KeyCode::Char('?') => Action::ShowHelp,
        // Typing goes back to the input line, keeping what was typed.
        KeyCode::Char(c) if !ctrl => Action::Insert(c),
        _ => return None,
    })
}

fn input_key(key: &KeyEvent, ctrl: bool, empty: bool) -> Option<Action> {
    if ctrl {
        return Some(match key.code {
            KeyCode::Char('a') => Action::Home,
            KeyCode::Char('e') => Action::End,
            KeyCode::Char('u') => Action::KillToStart,
            KeyCode::Char('k') => Action::KillToEnd,
            KeyCode::Char('w') | KeyCode::Backspace => Action::DeleteWordBack,
            KeyCode::Char('b') => Action::Left,
            KeyCode::Char('f') => Action::Right,
            KeyCode::Char('p') => Action::HistoryPrevious,
            KeyCode::Char('n') => Action::HistoryNext,
            KeyCode::Home => Action::Home,
            KeyCode::End => Action::End,
            _ => return None,
        });
    }
    Some(match key.code {
        KeyCode::Char('?') if empty => Action::ShowHelp,
        KeyCode::Char(c) => Action::Insert(c),
        KeyCode::Enter => Action::Submit,
        KeyCode::Backspace => Action::Backspace,
        KeyCode::Delete => Action::Delete,
        KeyCode::Left => Action::Left,
        KeyCode::Right => Action::Right,
        KeyCode::Home => Action::Home,
        KeyCode::End => Action::End,
        KeyCode::Up => Action::HistoryPrevious,
        KeyCode::Down => Action::HistoryNext,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    const TYPING: Context =
        Context { focus: Focus::Input, input_empty: false, help_open: false, daemon_gone: false };
    const EMPTY: Context = Context { input_empty: true, ..TYPING };
    const LIST: Context = Context { focus: Focus::Peers, ..EMPTY };

    #[test]
    fn ways_to_quit() {
        assert_eq!(action(&ctrl('c'), TYPING), Some(Action::Quit));
        assert_eq!(action(&ctrl('d'), EMPTY), Some(Action::Quit));
        assert_eq!(action(&ctrl('d'), TYPING), None, "Ctrl-D quits only on an empty line");
        assert_eq!(action(&key(KeyCode::Char('q')), TYPING), Some(Action::Insert('q')));
        let gone = Context { daemon_gone: true, ..TYPING };
        assert_eq!(action(&key(KeyCode::Char('q')), gone), Some(Action::Quit));
        assert_eq!(action(&key(KeyCode::Char('x')), gone), None);
    }

    #[test]
    fn question_mark_opens_help_only_on_an_empty_line() {
        assert_eq!(action(&key(KeyCode::Char('?')), EMPTY), Some(Action::ShowHelp));
        assert_eq!(action(&key(KeyCode::Char('?')), TYPING), Some(Action::Insert('?')));
        let help = Context { help_open: true, ..EMPTY };
        assert_eq!(action(&key(KeyCode::Esc), help), Some(Action::CloseHelp));
        assert_eq!(action(&key(KeyCode::Char('x')), help), None);
        assert_eq!(action(&ctrl('c'), help), Some(Action::Quit));
    }

    #[test]
    fn tab_switches_focus_and_the_list_has_its_own_keys() {
        assert_eq!(action(&key(KeyCode::Tab), TYPING), Some(Action::ToggleFocus));
        assert_eq!(action(&key(KeyCode::Up), LIST), Some(Action::SelectPrevious));
        assert_eq!(action(&key(KeyCode::Down), LIST), Some(Action::SelectNext));
        assert_eq!(action(&key(KeyCode::Enter), LIST), Some(Action::ConnectSelected));
        assert_eq!(action(&key(KeyCode::Esc), LIST), Some(Action::FocusInput));
        assert_eq!(action(&key(KeyCode::Char('h')), LIST), Some(Action::Insert('h')));
        assert_eq!(action(&key(KeyCode::Up), TYPING), Some(Action::HistoryPrevious));
        assert_eq!(action(&key(KeyCode::Enter), TYPING), Some(Action::Submit));
    }

    #[test]
    fn paging_works_from_either_focus() {
        for cx in [TYPING, LIST] {
            assert_eq!(action(&key(KeyCode::PageUp), cx), Some(Action::PageUp));
            assert_eq!(action(&key(KeyCode::PageDown), cx), Some(Action::PageDown));
        }
    }

    #[test]
    fn releases_are_ignored_and_shifted_letters_are_text() {
        let mut release = key(KeyCode::Enter);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(&release, TYPING), None);
        let shifted = KeyEvent::new(KeyCode::Char('É'), KeyModifiers::SHIFT);
        assert_eq!(action(&shifted, TYPING), Some(Action::Insert('É')));
        assert_eq!(action(&ctrl('w'), TYPING), Some(Action::DeleteWordBack));
        assert_eq!(action(&ctrl('u'), TYPING), Some(Action::KillToStart));
    }
}
