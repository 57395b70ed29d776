//! Taking over the terminal and always giving it back.
//!
//! The TUI puts the terminal in raw mode on the alternate screen. A shell
//! left like that is unusable (no echo, no line editing, the old screen
//! gone), so [`Screen`] restores it when dropped, which covers a normal
//! quit and every error, and a panic hook restores it *before* the panic
//! message is printed (and before an abort, in release builds), so the
//! message is readable and the shell works.
//!
//! Keys and resizes are read on a thread of their own: crossterm's read
//! blocks, and a blocking read must never hold up the runtime.

use std::io::{self, Stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

/// The terminal as the TUI drives it.
pub(crate) type Term = Terminal<CrosstermBackend<Stdout>>;

/// True while the terminal is ours: the panic hook restores it only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// How long the input thread waits for a key before it checks whether
/// anyone still listens.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// Raw mode and the alternate screen, undone on drop.
#[derive(Debug)]
pub(crate) struct Screen {
    terminal: Term,
}

impl Screen {
    /// Takes over the terminal. On failure, whatever was changed is undone.
    pub(crate) fn enter() -> io::Result<Screen> {
        install_panic_hook();
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = (|| {
            enable_raw_mode()?;
            // Bracketed paste: a pasted text comes as one event (its lines
            // joined), not as keys whose first Enter would send part of it
            // and leave the rest glued to whatever is typed next.
            execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste)?;
            let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            terminal.clear()?;
            Ok(terminal)
        })();
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(err) => {
                restore();
                Err(err)
            }
        }
    }

    pub(crate) fn terminal(&mut self) -> &mut Term {
        &mut self.terminal
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back: raw mode off, the normal screen, the cursor
/// shown. Safe to call more than once; does nothing if it is not ours.
pub(crate) fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Each step on its own: one failing must not skip the others.
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), DisableBracketedPaste, LeaveAlternateScreen, cursor::Show);
    }
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Terminal events (keys, pastes, resizes) from a thread of their own. The
/// thread ends when the receiver is dropped, or after passing on an error.
pub(crate) fn events() -> io::Result<mpsc::Receiver<io::Result<Event>>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::Builder::new().name("terminal-input".into()).spawn(move || {
        while !tx.is_closed() {
            let next = match event::poll(INPUT_POLL) {
                Ok(false) => continue,
                Ok(true) => event::read(),
                Err(err) => Err(err),
            };
            let failed = next.is_err();
            if tx.blocking_send(next).is_err() || failed {
                break;
            }
        }
    })?;
    Ok(rx)
}
