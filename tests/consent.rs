//! Consent and blocking, as users see them, with the real binaries on
//! 127.0.0.1: `peerd --accept ask|known` asks its user about a dial
//! (`chatctl accept` / `reject`, the `request` event), an unanswered
//! request lapses after 60 s with "did not accept", and `chatctl block`
//! refuses a peer as busy, across restarts.
//!
//! A dial waiting for an answer is a `chatctl connect` running in the
//! background ([`PendingConnect`]), killed if the test fails.
#![allow(clippy::expect_used)]

mod support;

use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::daemons::{assert_exit, chatctl};
use support::proc;
use support::watch::ev;
use support::{Directory, EVENT_TIMEOUT, Peer};

const TTL: u32 = 15;

/// A `chatctl connect` in the background: a thread waits for it and hands
/// over its output, so the test awaits its end rather than polling.
struct PendingConnect {
    pid: u32,
    done: mpsc::Receiver<Output>,
    finished: bool,
    what: String,
}

impl PendingConnect {
    fn start(from: &Peer, to: &str) -> PendingConnect {
        PendingConnect::run(from, &["connect", to])
    }

    /// Any chatctl command, its stdin at its end.
    fn run(from: &Peer, args: &[&str]) -> PendingConnect {
        PendingConnect::spawn(from, args, Stdio::null()).0
    }

    /// Any chatctl command, and its stdin to write to (closing it ends it).
    fn typed_into(from: &Peer, args: &[&str]) -> (PendingConnect, std::process::ChildStdin) {
        let (pending, stdin) = PendingConnect::spawn(from, args, Stdio::piped());
        (pending, stdin.expect("a piped stdin"))
    }

    fn spawn(
        from: &Peer,
        args: &[&str],
        stdin: Stdio,
    ) -> (PendingConnect, Option<std::process::ChildStdin>) {
        let mut child = chatctl(&from.socket(), args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chatctl connect");
        let pid = child.id();
        let stdin = child.stdin.take();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(out) = child.wait_with_output() {
                let _ = tx.send(out);
            }
        });
        let what = format!("{}'s chatctl {}", from.name(), args.join(" "));
        (PendingConnect { pid, done, finished: false, what }, stdin)
    }

    /// Waits (up to `timeout`) for it to end.
    fn finish(mut self, timeout: Duration) -> Output {
        match self.done.recv_timeout(timeout) {
            Ok(out) => {
                self.finished = true;
                out
            }
            Err(_) => panic!("{} still running after {timeout:?}", self.what),
        }
    }

    /// Still waiting for its answer.
    fn is_waiting(&mut self) -> bool {
        match self.done.try_recv() {
            Err(mpsc::TryRecvError::Empty) => true,
            Ok(out) => panic!("{} ended early: {out:?}", self.what),
            Err(mpsc::TryRecvError::Disconnected) => false,
        }
    }
}

impl Drop for PendingConnect {
    fn drop(&mut self) {
        // Not if it ended already: its pid may be someone else's by now.
        if !self.finished && self.done.try_recv().is_err() {
            proc::signal(self.pid, libc::SIGKILL);
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// A `request` event from `peer`.
fn request_from(peer: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["event"] == "request" && e["peer"] == peer
}

/// Waits until `by`'s `list` shows `name` as `status` (the directory is
/// told at once; the list is polled).
fn listed_as(by: &Peer, name: &str, status: &str) {
    support::eventually(&format!("{name} listed {status}"), EVENT_TIMEOUT, || {
        let list = by.list();
        let shown = list.iter().find(|p| p["name"] == name).map(|p| p["status"].clone());
        if shown.as_ref().is_some_and(|s| s == status) { Ok(()) } else { Err(format!("{list:?}")) }
    });
}

fn request_ended<'a>(peer: &'a str, outcome: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| e["event"] == "request_ended" && e["peer"] == peer && e["outcome"] == outcome
}

#[test]
fn ask_lets_the_user_accept_or_reject() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--accept", "ask"]);
    assert_eq!(bob.status()["accept"], "ask");
    let mut bob_sees = bob.watch();

    // Asked: alice waits, bob's user hears of it and says yes.
    let mut dial = PendingConnect::start(&alice, "bob");
    bob_sees.wait_for("alice's request", EVENT_TIMEOUT, request_from("alice"));
    let requests = bob.status()["requests"].clone();
    assert_eq!(requests.as_array().map(Vec::len), Some(1), "{requests}");
    assert_eq!(requests[0]["peer"], "alice");
    assert!(dial.is_waiting(), "alice's connect answered before bob did");
    assert_eq!(bob.ctl_ok(&["accept"]).trim(), "accepted alice: connected");
    let out = dial.finish(EVENT_TIMEOUT);
    assert_exit(&out, 0, "alice's connect");
    assert_eq!(stdout(&out), "connected to bob");
    // It said why it waited.
    assert_eq!(
        stderr(&out),
        "waiting for bob to accept (up to 60 s; Ctrl-C or `chatctl disconnect` gives up)"
    );
    bob_sees.wait_for("connected", EVENT_TIMEOUT, ev::connected("alice"));
    bob_sees.wait_for("accepted", EVENT_TIMEOUT, request_ended("alice", "accepted"));
    let sent = alice.ctl_json(&["send", "hello", "bob"]);
    assert_eq!(sent["state"], "delivered", "{sent}");
    alice.ctl_ok(&["disconnect"]);
    bob_sees.wait_for("disconnected", EVENT_TIMEOUT, ev::disconnected("alice"));

    // Asked again (ask means every time), and turned down by name.
    let mut alice_sees = alice.watch();
    let dial = PendingConnect::start(&alice, "bob");
    bob_sees.wait_for("alice's second request", EVENT_TIMEOUT, request_from("alice"));
    assert_eq!(bob.ctl_json(&["reject", "Alice"]), json!({ "peer": "alice" }));
    let out = dial.finish(EVENT_TIMEOUT);
    assert_exit(&out, 1, "alice's turned-down connect");
    assert!(stderr(&out).ends_with("\nerror: bob did not accept"), "{}", stderr(&out));
    let failed = alice_sees.wait_for("connect_failed", EVENT_TIMEOUT, |e| {
        e["event"] == "connect_failed" && e["peer"] == "bob"
    });
    assert_eq!(failed["reason"], "bob did not accept", "{failed}");
    bob_sees.wait_for("rejected", EVENT_TIMEOUT, request_ended("alice", "rejected"));
    assert_eq!(alice.status()["conversation"], "idle");
    assert_eq!(bob.status()["conversation"], "idle");

    // Nothing waits now.
    assert_eq!(bob.ctl_err(&["accept"]), "error: no request to talk is waiting");
    assert_eq!(bob.ctl_err(&["reject", "carol"]), "error: no request from carol is waiting");
}

/// Piped `chat NAME` says that it waits for the callee's user when the wait
/// starts, as `connect` does, not after the `connected` line, and once.
#[test]
fn piped_chat_says_it_waits_for_consent_before_it_is_connected() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--accept", "ask"]);
    let mut bob_sees = bob.watch();
    let chat = PendingConnect::run(&alice, &["chat", "bob"]);
    bob_sees.wait_for("alice's request", EVENT_TIMEOUT, request_from("alice"));
    assert_eq!(bob.ctl_ok(&["accept"]).trim(), "accepted alice: connected");
    let out = chat.finish(EVENT_TIMEOUT);
    assert_exit(&out, 0, "alice's chat bob");
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    let waiting: Vec<usize> =
        (0..lines.len()).filter(|&i| lines[i].contains("waiting for bob to accept")).collect();
    let connected = lines.iter().position(|line| line.contains("connected to bob"));
    assert_eq!(waiting.len(), 1, "said once:\n{printed}");
    assert!(connected.is_some_and(|c| waiting[0] < c), "waiting, then connected:\n{printed}");
}

/// A request to talk is answered from piped `chat` too: `/accept`.
#[test]
fn piped_chat_accepts_a_request() {
    use std::io::Write as _;
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--accept", "ask"]);
    let mut bob_sees = bob.watch();
    let (chat, mut typed) = PendingConnect::typed_into(&bob, &["chat"]);
    let dial = PendingConnect::start(&alice, "bob");
    bob_sees.wait_for("alice's request", EVENT_TIMEOUT, request_from("alice"));
    typed.write_all(b"/accept alice\nhello alice\n").expect("typing into chat");
    assert_exit(&dial.finish(EVENT_TIMEOUT), 0, "alice's connect");
    bob_sees.wait_for("connected", EVENT_TIMEOUT, ev::connected("alice"));
    drop(typed);
    let out = chat.finish(EVENT_TIMEOUT);
    assert_exit(&out, 0, "bob's chat");
    let history = alice.ctl_json(&["history", "bob"]);
    assert_eq!(history[0]["text"], "hello alice", "{history}");
}

/// Interrupting a waiting `chatctl connect` (Ctrl-C) gives up on the dial
/// as `chatctl disconnect` does: the request is withdrawn on the callee's
/// side, and the dialer is free at once instead of busy for the rest of
/// the minute.
#[test]
fn ctrl_c_on_a_waiting_connect_withdraws_the_request() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--accept", "ask"]);
    let mut bob_sees = bob.watch();
    let dial = PendingConnect::start(&alice, "bob");
    bob_sees.wait_for("alice's request", EVENT_TIMEOUT, request_from("alice"));
    assert_eq!(alice.status()["conversation"], "connecting");
    // While bob's user is asked, alice is busy to others, and listed so.
    listed_as(&bob, "alice", "busy");

    proc::signal(dial.pid, libc::SIGINT);
    let out = dial.finish(EVENT_TIMEOUT);
    assert!(!out.status.success(), "an interrupted connect succeeded: {out:?}");
    bob_sees.wait_for("withdrawn", EVENT_TIMEOUT, request_ended("alice", "withdrawn"));
    assert_eq!(bob.ctl_err(&["accept"]), "error: no request to talk is waiting");
    assert_eq!(alice.status()["conversation"], "idle");
    listed_as(&bob, "alice", "available");
    // Nothing of the old dial lingers: alice may ask again.
    let again = PendingConnect::start(&alice, "bob");
    bob_sees.wait_for("alice's new request", EVENT_TIMEOUT, request_from("alice"));
    assert_eq!(bob.ctl_ok(&["accept"]).trim(), "accepted alice: connected");
    assert_exit(&again.finish(EVENT_TIMEOUT), 0, "alice's second connect");
}

/// Ctrl-C in line-mode chat while its `/connect` waits for the callee's
/// user ends chat at once, and the request is withdrawn as for `connect`.
#[test]
fn ctrl_c_in_chat_during_a_waiting_connect_ends_it_and_withdraws_the_request() {
    use std::io::Write as _;
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--accept", "ask"]);
    let mut bob_sees = bob.watch();
    let (mut chat, mut typed) = PendingConnect::typed_into(&alice, &["chat"]);
    typed.write_all(b"/connect bob\n").expect("typing into chat");
    bob_sees.wait_for("alice's request", EVENT_TIMEOUT, request_from("alice"));
    assert!(chat.is_waiting(), "chat ended before its connect was answered");
    let interrupted = Instant::now();
    proc::signal(chat.pid, libc::SIGINT);
    // Its stdin stays open: only the signal can end it.
    let out = chat.finish(EVENT_TIMEOUT);
    drop(typed);
    assert!(
        interrupted.elapsed() < Duration::from_secs(5),
        "chat took {:?} to end after Ctrl-C",
        interrupted.elapsed()
    );
    assert_exit(&out, 0, "alice's interrupted chat");
    bob_sees.wait_for("withdrawn", EVENT_TIMEOUT, request_ended("alice", "withdrawn"));
    assert_eq!(alice.status()["conversation"], "idle");
}

/// `chatctl disconnect` while the connect still waits for the callee's
/// user cancels it, and says so: no conversation had begun, so not
/// "disconnected".
#[test]
fn disconnect_while_the_callee_is_asked_says_the_attempt_was_cancelled() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--accept", "ask"]);
    let mut bob_sees = bob.watch();
    let mut alice_sees = alice.watch();
    let dial = PendingConnect::start(&alice, "bob");
    bob_sees.wait_for("alice's request", EVENT_TIMEOUT, request_from("alice"));
    assert_eq!(alice.ctl_ok(&["disconnect"]).trim(), "cancelled the connection attempt to bob");
    // A watch of hers hears how the connect ended, not only the connect.
    let failed = alice_sees.wait_for("connect_failed", EVENT_TIMEOUT, |e| {
        e["event"] == "connect_failed" && e["peer"] == "bob"
    });
    assert_eq!(failed["reason"], "cancelled by disconnect", "{failed}");
    let out = dial.finish(EVENT_TIMEOUT);
    assert_exit(&out, 1, "the cancelled connect");
    assert!(stderr(&out).ends_with("cancelled by disconnect"), "{}", stderr(&out));
    bob_sees.wait_for("withdrawn", EVENT_TIMEOUT, request_ended("alice", "withdrawn"));
    assert_eq!(alice.status()["conversation"], "idle");
}

#[test]
fn known_asks_about_strangers_only() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let carol = Peer::start(&dir, "carol");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--accept", "known"]);
    // Bob talks to alice first: her key is known to him from then on.
    bob.ctl_ok(&["connect", "alice"]);
    bob.ctl_ok(&["disconnect"]);
    let mut bob_sees = bob.watch();

    // Alice is known: taken at once.
    assert_eq!(alice.ctl_ok(&["connect", "bob"]).trim(), "connected to bob");
    alice.ctl_ok(&["disconnect"]);
    bob_sees.wait_for("alice gone", EVENT_TIMEOUT, ev::disconnected("alice"));

    // Carol is a stranger: asked, turned down, and asked again next time
    // (a refused stranger does not become known).
    for _ in 0..2 {
        let dial = PendingConnect::start(&carol, "bob");
        bob_sees.wait_for("carol's request", EVENT_TIMEOUT, request_from("carol"));
        assert_eq!(bob.ctl_ok(&["reject"]).trim(), "rejected carol");
        let out = dial.finish(EVENT_TIMEOUT);
        assert_exit(&out, 1, "carol's connect");
        assert!(stderr(&out).ends_with("error: bob did not accept"), "{}", stderr(&out));
    }
    let seen = bob_sees.seen().to_vec();
    assert!(!seen.iter().any(|e| e["event"] == "request" && e["peer"] == "alice"), "{seen:?}");
}

#[test]
fn an_unanswered_request_lapses_after_a_minute_as_not_accepted() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--accept", "ask"]);
    let mut bob_sees = bob.watch();
    let started = Instant::now();
    let dial = PendingConnect::start(&alice, "bob");
    bob_sees.wait_for("alice's request", EVENT_TIMEOUT, request_from("alice"));
    let out = dial.finish(Duration::from_secs(90));
    let took = started.elapsed();
    assert_exit(&out, 1, "alice's unanswered connect");
    assert!(stderr(&out).ends_with("error: bob did not accept"), "{}", stderr(&out));
    assert!(took >= Duration::from_secs(59), "lapsed after {took:?}, not 60 s");
    bob_sees.wait_for("expired", EVENT_TIMEOUT, request_ended("alice", "expired"));
    assert_eq!(bob.status()["requests"], json!([]));
}

#[test]
fn a_blocked_peer_hears_busy_even_after_a_restart() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    assert_eq!(bob.ctl_ok(&["blocked"]).trim(), "nobody is blocked");
    assert_eq!(bob.ctl_err(&["block", "BOB"]), "error: you cannot block yourself");
    assert_eq!(
        bob.ctl_json(&["block", "alice"]),
        json!({ "peer": "alice", "already": false, "disconnected": false })
    );
    assert_eq!(alice.ctl_err(&["connect", "bob"]), "error: bob is busy in another conversation");
    assert_eq!(
        bob.ctl_err(&["connect", "alice"]),
        "error: you blocked alice; `chatctl unblock alice` first"
    );

    bob.terminate();
    bob.restart();
    assert_eq!(bob.ctl_json(&["blocked"]), json!({ "blocked": ["alice"] }));
    assert!(alice.ctl_err(&["connect", "bob"]).contains("busy"));

    assert_eq!(bob.ctl_ok(&["unblock", "alice"]).trim(), "unblocked alice");
    assert_eq!(alice.ctl_ok(&["connect", "bob"]).trim(), "connected to bob");

    // Blocking the current peer ends the conversation: bob is told it was
    // the block, alice only that bob ended it.
    let mut alice_sees = alice.watch();
    let mut bob_sees = bob.watch();
    let blocked = bob.ctl_json(&["block", "alice"]);
    assert_eq!(blocked["disconnected"], true, "{blocked}");
    let end = alice_sees.wait_for("the end", EVENT_TIMEOUT, ev::disconnected("bob"));
    assert_eq!(end["reason"], "bob ended the conversation", "{end}");
    let end = bob_sees.wait_for("bob's end", EVENT_TIMEOUT, ev::disconnected("alice"));
    assert_eq!(end["reason"], "you blocked alice", "{end}");
    assert_eq!(bob.ctl_ok(&["block", "alice"]).trim(), "alice was already blocked");
}
