//! The full-screen chat (`chatctl tui`, and `chatctl chat` at a terminal)
//! as a person uses it: run inside a detached tmux server with a terminal
//! of known size, typed at with `tmux send-keys`, read with `tmux
//! capture-pane`. The daemons are the real ones (see `support`).
//!
//! A screen can only be polled, so each expectation is awaited by reading
//! the pane until it shows (with a deadline, printing the last screen on
//! failure); no sleep stands in for anything. Every tmux server is killed
//! by a guard, also when a test fails.
//!
//! Without tmux these tests are skipped with a note, except on CI (`CI`
//! set), where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::bins::bin;
use support::daemons::{assert_exit, error_line};
use support::watch::ev;
use support::{Directory, EVENT_TIMEOUT, Peer, eventually, proc};

const TTL: u32 = 15;

/// How long a screen may take to show what it should.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A tmux server of this test's own (`tmux -L NAME`), killed when dropped.
#[derive(Debug)]
struct Tmux {
    server: String,
}

impl Tmux {
    /// A fresh server name, or `None` (after a note) when tmux is missing
    /// and this is not CI.
    fn new() -> Option<Tmux> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let found = Command::new("tmux").arg("-V").output().is_ok_and(|out| out.status.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "tmux is not installed, and the TUI tests need it on CI (apt-get install tmux)"
            );
            eprintln!("note: tmux is not installed: skipping the TUI test");
            return None;
        }
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        Some(Tmux { server: format!("pc-tui-{}-{n}", std::process::id()) })
    }

    fn command(&self) -> Command {
        // A clean peerchat environment, and not the developer's tmux.
        let mut cmd = proc::command(Path::new("tmux"));
        cmd.env_remove("TMUX").args(["-f", "/dev/null", "-L", &self.server]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = proc::run(self.command().args(args), Duration::from_secs(30));
        assert!(out.status.success(), "tmux {args:?} failed: {out:?}");
        out
    }

    /// Runs `chatctl ARGS` for `peer` (its socket in `PEERCHAT_SOCKET`) in
    /// a 120×35 window. When chatctl ends, the pane prints
    /// `TUI-EXITED-<status>` and whether the terminal was left in raw mode.
    fn start(&self, peer: &Peer, args: &str) {
        let script = format!(
            "\"$0\" {args}; echo TUI-EXITED-$?; \
             if stty -a | grep -q -- -icanon; then echo TTY-RAW; else echo TTY-COOKED; fi; \
             exec sleep 3600"
        );
        let chatctl = bin("chatctl");
        let socket = format!("PEERCHAT_SOCKET={}", peer.socket().display());
        let chatctl = chatctl.to_str().expect("a UTF-8 path");
        self.run(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "35",
            "-e",
            &socket,
            "sh",
            "-c",
            &script,
            chatctl,
        ]);
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-l", text]);
    }

    /// Presses keys by tmux name (`Enter`, `Tab`, `Down`, `C-c`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Reads the screen until `ok` holds, and returns it.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        eventually(what, SCREEN_TIMEOUT, || {
            let screen = self.screen();
            if ok(&screen) { Ok(screen) } else { Err(format!("the screen:\n{screen}")) }
        })
    }

    fn wait_for_text(&self, text: &str) -> String {
        self.wait_for(&format!("{text:?} on the screen"), |screen| screen.contains(text))
    }

    /// A tmux format for the pane (`#{alternate_on}`).
    fn pane(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // tmux leaves its socket file behind when killed.
        let socket = self.command().args(["display-message", "-p", "#{socket_path}"]).output();
        let _ = self.command().arg("kill-server").output();
        if let Ok(out) = socket
            && out.status.success()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !path.is_empty() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// After chatctl ended: the normal screen is back, the cursor shown, raw
/// mode off.
fn assert_restored(tmux: &Tmux, status: &str) -> String {
    let screen = tmux.wait_for_text("TTY-");
    assert!(screen.contains(&format!("TUI-EXITED-{status}")), "{screen}");
    assert!(screen.contains("TTY-COOKED"), "raw mode was left on:\n{screen}");
    assert!(!screen.contains("┌ online"), "the TUI is still on the screen:\n{screen}");
    assert_eq!(tmux.pane("#{alternate_on} #{cursor_flag}"), "0 1", "alternate screen, cursor");
    screen
}

#[test]
fn a_conversation_in_the_tui() {
    let Some(tmux) = Tmux::new() else { return };
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    // Bob's display client: it shows alice's messages, so they get ✓✓.
    let mut bob_watch = bob.watch();
    // An earlier conversation, before the TUI: it is shown on connecting.
    alice.ctl_ok(&["connect", "bob"]);
    alice.ctl_ok(&["send", "--wait", "delivered", "from before the tui"]);
    alice.ctl_ok(&["disconnect"]);

    tmux.start(&alice, "tui");
    tmux.wait_for("the list with bob and (you)", |s| {
        s.contains("alice (you)") && s.contains("bob available")
    });
    tmux.wait_for_text(" alice · no conversation · directory registered");

    // Connect from the list: Tab to it, down to bob (you are first), Enter.
    tmux.keys(&["Tab", "Down", "Enter"]);
    tmux.wait_for_text("connected to bob");
    tmux.wait_for("the earlier conversation", |s| {
        s.contains("the last message with bob:") && s.contains("you: from before the tui")
    });
    tmux.wait_for_text(" alice · connected to bob");
    bob_watch.wait_for("alice connecting", EVENT_TIMEOUT, ev::connected("alice"));

    let text = "hello from the tui: grüße 漢字";
    tmux.type_text(text);
    tmux.keys(&["Enter"]);
    bob_watch.wait_for("alice's message", EVENT_TIMEOUT, ev::message("alice", text));
    tmux.wait_for_text(&format!("you: {text} ✓✓"));

    // Bob's message is shown, and reported displayed by the TUI.
    let sent = bob.ctl_json(&["send", "--wait", "displayed", "hi from bob"]);
    assert_eq!(sent["state"], "displayed", "{sent}");
    tmux.wait_for_text("bob: hi from bob");

    // A paste of two lines is one message, its lines joined, sent with the
    // Enter that follows (bracketed paste), not two halves.
    tmux.run(&["set-buffer", "pasted one\npasted two"]);
    tmux.run(&["paste-buffer", "-p"]);
    tmux.type_text(" and typed");
    tmux.keys(&["Enter"]);
    let pasted = "pasted one pasted two and typed";
    bob_watch.wait_for("the pasted message", EVENT_TIMEOUT, ev::message("alice", pasted));
    tmux.wait_for_text(&format!("you: {pasted}"));

    // A smaller terminal: the same panes at the new size.
    tmux.run(&["resize-window", "-x", "80", "-y", "24"]);
    let screen = tmux.wait_for("the layout at 80×24", |s| {
        let rows: Vec<&str> = s.lines().collect();
        rows.len() == 24
            && rows[0].starts_with("┌ online")
            && rows[0].chars().count() == 80
            && rows[23].starts_with(" alice · connected to bob")
    });
    assert!(screen.contains("bob: hi from bob"), "{screen}");
    assert!(screen.contains("message to bob"), "{screen}");

    tmux.type_text("/quit");
    tmux.keys(&["Enter"]);
    assert_restored(&tmux, "0");
}

#[test]
fn chat_at_a_terminal_is_the_tui_and_ctrl_c_restores_the_terminal() {
    let Some(tmux) = Tmux::new() else { return };
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");

    tmux.start(&alice, "chat");
    tmux.wait_for("the TUI", |s| s.contains("┌ online") && s.contains("alice (you)"));
    // The help overlay, and Esc closes it.
    tmux.keys(&["?"]);
    tmux.wait_for_text("help — Esc to close");
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", |s| !s.contains("help — Esc to close"));
    // A command error is a line on the screen, not the end.
    tmux.type_text("/connect nobody");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the error line", |s| s.contains("error: ") && s.contains("not online"));

    tmux.keys(&["C-c"]);
    assert_restored(&tmux, "0");
}

#[test]
fn peerd_stopping_is_shown_and_quitting_says_why() {
    let Some(tmux) = Tmux::new() else { return };
    let dir = Directory::start(TTL);
    let mut alice = Peer::start(&dir, "alice");

    tmux.start(&alice, "tui");
    tmux.wait_for_text("alice (you)");
    let out = alice.peerd_stop();
    assert_exit(&out, 0, "peerd stop");
    alice.wait_exit(EVENT_TIMEOUT);
    tmux.wait_for_text("peerd stopped — press q to quit");

    tmux.keys(&["q"]);
    let screen = assert_restored(&tmux, "1");
    assert!(screen.contains("error: peerd stopped"), "{screen}");
}

#[test]
fn no_daemon_fails_like_every_command_without_touching_the_terminal() {
    let home = support::short_tempdir();
    let socket = home.path().join("none.sock");
    let out = proc::run(
        &mut support::daemons::chatctl(&socket, &["tui", "bob"]),
        Duration::from_secs(30),
    );
    assert_exit(&out, 1, "chatctl tui without peerd");
    let line = error_line(&out);
    assert!(line.contains("not running"), "{line}");
    assert!(out.stdout.is_empty(), "nothing on the terminal: {:?}", out.stdout);
}
