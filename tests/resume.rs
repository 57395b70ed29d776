//! Resuming across a lost link (SPEC §3.1), over the real binaries: the
//! receiver killed and restarted in the middle of a burst, and the sender
//! killed with messages unacknowledged. What is checked is the history of
//! both sides, not a few spot values: every message delivered exactly once,
//! in order, and nothing left unacknowledged or failed.
#![allow(clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::Value;

use support::watch::ev;
use support::{Directory, EVENT_TIMEOUT, Peer, eventually};

const TTL: u32 = 15;

/// `history --json` of `of` with `peer`, as an array.
fn history(of: &Peer, peer: &str) -> Vec<Value> {
    match of.ctl_json(&["history", peer, "--limit", "10000"]) {
        Value::Array(entries) => entries,
        other => panic!("history printed {other}"),
    }
}

fn texts(entries: &[Value], direction: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["direction"] == direction)
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect()
}

fn send_none(from: &Peer, text: &str) -> String {
    let out = from.ctl_json(&["send", "--wait", "none", text]);
    assert_eq!(out["state"], "sent", "{out}");
    out["id"].as_str().expect("id").to_owned()
}

/// Waits until `peer` has nothing unacknowledged.
fn all_acknowledged(peer: &Peer) {
    eventually("every message acknowledged", Duration::from_secs(30), || {
        let status = peer.status();
        if status["unacknowledged"] == 0 && status["conversation"] == "connected" {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
}

#[test]
fn receiver_killed_and_restarted_mid_burst_loses_and_doubles_nothing() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();
    alice.ctl_ok(&["connect", "bob"]);

    let sent: Vec<String> = (0..150).map(|i| format!("burst {i:03}")).collect();
    for (i, text) in sent.iter().enumerate() {
        send_none(&alice, text);
        if i == 40 {
            bob.kill9();
        }
        if i == 90 {
            // Same data dir and key; alice redials and the conversation
            // resumes, with everything unacknowledged sent again.
            bob.restart();
        }
    }
    wa.wait_for("resumed", Duration::from_secs(20), |e| e["event"] == "resumed");
    all_acknowledged(&alice);

    let received = texts(&history(&bob, "alice"), "in");
    assert_eq!(received, sent, "bob's history: every message once, in order");
    let out = history(&alice, "bob");
    assert_eq!(texts(&out, "out"), sent);
    assert!(
        out.iter().all(|e| e["state"] == "delivered" || e["state"] == "displayed"),
        "alice's history has messages not delivered: {out:?}"
    );
    assert!(
        !wa.seen().iter().any(|e| e["event"] == "failed" || e["event"] == "disconnected"),
        "{:?}",
        wa.seen()
    );
}

/// The dialer's daemon crashes with messages unacknowledged and restarts
/// within the window: it redials by itself (it noted the conversation),
/// the callee, still reconnecting, takes it back, and each message arrives
/// once, also when its user runs `connect` again after the restart.
#[test]
fn dialer_killed_with_unacknowledged_messages_resumes_after_its_restart() {
    let dir = Directory::start(TTL);
    let mut alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    alice.ctl_ok(&["connect", "bob"]);
    let mut wb = bob.watch();

    // Bob frozen: what alice sends now stays unacknowledged.
    support::proc::signal(bob.pid(), libc::SIGSTOP);
    let sent: Vec<String> = (0..5).map(|i| format!("before the crash {i}")).collect();
    for text in &sent {
        send_none(&alice, text);
    }
    assert_eq!(alice.status()["unacknowledged"], 5);
    alice.kill9();
    support::proc::signal(bob.pid(), libc::SIGCONT);
    wb.wait_for("link_lost", EVENT_TIMEOUT, |e| e["event"] == "link_lost");

    alice.restart();
    // Her user, not knowing, connects to bob again: the conversation her
    // daemon came back in answers it (whether it is on again already or
    // still redialing), not "already connected".
    alice.ctl_ok(&["connect", "bob"]);
    wb.wait_for("resumed", EVENT_TIMEOUT, |e| e["event"] == "resumed" && e["peer"] == "alice");
    all_acknowledged(&alice);
    assert_eq!(alice.status()["peer"], "bob");
    assert_eq!(texts(&history(&bob, "alice"), "in"), sent, "bob has each once, in order");
    let out = history(&alice, "bob");
    assert!(out.iter().all(|e| e["state"] == "delivered" || e["state"] == "displayed"), "{out:?}");
    assert!(
        !wb.seen().iter().any(|e| e["event"] == "disconnected"),
        "one conversation throughout: {:?}",
        wb.seen()
    );
}

/// Alice (the dialer) in a conversation with bob, a watch on each.
fn talking(dir: &Directory) -> (Peer, Peer, support::Watch, support::Watch) {
    let alice = Peer::start(dir, "alice");
    let bob = Peer::start(dir, "bob");
    alice.ctl_ok(&["connect", "bob"]);
    let (wa, wb) = (alice.watch(), bob.watch());
    (alice, bob, wa, wb)
}

/// The directory is gone when the link is lost: the dialer redials where
/// the callee was, with the key it knows, and the conversation resumes (the
/// directory is never in a message's path). It once ended, the redials
/// failing with "the directory is unreachable".
#[test]
fn a_lost_link_resumes_while_the_directory_is_down() {
    let mut dir = Directory::start(TTL);
    let (alice, bob, mut wa, mut wb) = talking(&dir);
    dir.kill9();
    let frozen = support::proc::Stopped::new(bob.pid());
    wa.wait_for("link_lost", EVENT_TIMEOUT, |e| e["event"] == "link_lost");
    drop(frozen);
    wa.wait_for("resumed", EVENT_TIMEOUT, |e| e["event"] == "resumed" && e["peer"] == "bob");
    send_none(&alice, "still here");
    wb.wait_for("the message", EVENT_TIMEOUT, |e| {
        e["event"] == "message" && e["text"] == "still here"
    });
    all_acknowledged(&alice);
    assert!(
        !wa.seen().iter().any(|e| e["event"] == "disconnected"),
        "one conversation throughout: {:?}",
        wa.seen()
    );
}

/// After a conversation ended while its link was down: neither is in a
/// conversation, and bob (the callee) never found alice back.
fn both_free_and_not_revived(alice: &Peer, bob: &Peer, wb: &mut support::Watch) {
    assert_eq!(alice.status()["peer"], Value::Null);
    assert_eq!(bob.status()["peer"], Value::Null);
    assert!(
        !wb.seen().iter().any(|e| e["event"] == "connected" || e["event"] == "resumed"),
        "bob's user did not ask for alice back: {:?}",
        wb.seen()
    );
}

/// SPEC §3.1: `disconnect` while reconnecting ends the conversation at
/// once, also on the side that waits to be redialed. The dialer could not
/// hear that then; when it comes back its redial is refused, and it ends
/// the conversation too, instead of the callee's user finding it back.
#[test]
fn a_conversation_ended_while_reconnecting_stays_ended_when_the_dialer_is_back() {
    let dir = Directory::start(TTL);
    let (alice, bob, mut wa, mut wb) = talking(&dir);

    // Alice frozen: bob finds the link lost and gives up on it.
    support::proc::signal(alice.pid(), libc::SIGSTOP);
    wb.wait_for("link_lost", EVENT_TIMEOUT, |e| e["event"] == "link_lost");
    bob.ctl_ok(&["disconnect"]);
    wb.wait_for("bob's disconnected", EVENT_TIMEOUT, ev::disconnected("alice"));

    // Alice is back: her link is dead, she redials, and hears it ended.
    support::proc::signal(alice.pid(), libc::SIGCONT);
    let ended = wa.wait_for("alice's disconnected", EVENT_TIMEOUT, ev::disconnected("bob"));
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("bob ended the conversation"), "{ended}");
    both_free_and_not_revived(&alice, &bob, &mut wb);
    // And either of them may start a new one.
    bob.ctl_ok(&["connect", "alice"]);
    wa.wait_for("connected", EVENT_TIMEOUT, ev::connected("bob"));
}

/// The callee's resume window (2 s here) passes while the dialer is
/// frozen; the dialer's own (30 s) has not when it wakes. Its redial must
/// not bring back a conversation the callee's user was told had ended:
/// refused, it ends too.
#[test]
fn a_dialer_back_after_the_callees_window_does_not_revive_the_conversation() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--resume-window", "2"]);
    alice.ctl_ok(&["connect", "bob"]);
    let mut wa = alice.watch();
    let mut wb = bob.watch();

    support::proc::signal(alice.pid(), libc::SIGSTOP);
    wb.wait_for("link_lost", EVENT_TIMEOUT, |e| e["event"] == "link_lost");
    let ended = wb.wait_for("bob's disconnected", EVENT_TIMEOUT, ev::disconnected("alice"));
    assert!(ended["reason"].as_str().unwrap_or_default().contains("not back within"), "{ended}");
    support::proc::signal(alice.pid(), libc::SIGCONT);

    let ended = wa.wait_for("alice's disconnected", EVENT_TIMEOUT, ev::disconnected("bob"));
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("bob stopped waiting for the link"), "{ended}");
    both_free_and_not_revived(&alice, &bob, &mut wb);
}

/// The dialer gives up reconnecting (`disconnect`) while the callee is
/// frozen, then connects to it again. The callee never heard the first
/// conversation end; the new dial is not a resume of it: the callee is
/// told it ended, then that a new one started, and what it wrote meanwhile
/// goes out on the new one.
#[test]
fn a_new_connect_after_the_dialer_gave_up_is_a_new_conversation_for_the_callee() {
    let dir = Directory::start(TTL);
    let (alice, bob, mut wa, mut wb) = talking(&dir);

    support::proc::signal(bob.pid(), libc::SIGSTOP);
    wa.wait_for("link_lost", EVENT_TIMEOUT, |e| e["event"] == "link_lost");
    alice.ctl_ok(&["disconnect"]);
    wa.wait_for("alice's disconnected", EVENT_TIMEOUT, ev::disconnected("bob"));
    support::proc::signal(bob.pid(), libc::SIGCONT);
    // Bob, thawed, is still in the conversation as far as he knows.
    let queued = send_none(&bob, "written before bob knew");

    alice.ctl_ok(&["connect", "bob"]);
    let ended = wb.wait_for("bob's disconnected", EVENT_TIMEOUT, ev::disconnected("alice"));
    assert_eq!(ended["reason"], "alice started a new conversation", "{ended}");
    wb.wait_for("bob's connected", EVENT_TIMEOUT, ev::connected("alice"));
    wa.wait_for("bob's message", EVENT_TIMEOUT, ev::message("bob", "written before bob knew"));
    wb.wait_for("its receipt", EVENT_TIMEOUT, ev::receipt(&queued, "delivered"));
    assert!(!wb.seen().iter().any(|e| e["event"] == "resumed"), "not a resume: {:?}", wb.seen());
    assert_eq!(bob.status()["peer"], "alice");
}

/// A message that reached bob's daemon while it was frozen, after alice
/// had given up on the link (her window passed: `failed`), is reported
/// delivered when they next talk: a conversation that ended without a
/// goodbye leaves bob owing `delivered` for what he had. And displayed,
/// once bob's user sees it. Alice's history used to say `failed` for good
/// while bob had it.
#[test]
fn a_message_failed_while_the_receiver_was_frozen_is_delivered_when_they_talk_again() {
    let dir = Directory::start(TTL);
    let alice = Peer::start_with(&dir, "alice", "127.0.0.1:0", &["--resume-window", "2"]);
    let bob = Peer::start(&dir, "bob");
    alice.ctl_ok(&["connect", "bob"]);
    let mut wa = alice.watch();

    let frozen = support::proc::Stopped::new(bob.pid());
    let id = send_none(&alice, "are you there?");
    let gave_up = Duration::from_secs(30);
    wa.wait_for("failed", gave_up, |e| e["event"] == "failed" && e["id"] == id.as_str());
    drop(frozen);
    // No display client at bob's: nothing he could owe as `displayed`.
    eventually("bob stored it", EVENT_TIMEOUT, || {
        let entries = history(&bob, "alice");
        if texts(&entries, "in") == ["are you there?"] {
            Ok(())
        } else {
            Err(format!("{entries:?}"))
        }
    });

    alice.ctl_ok(&["connect", "bob"]);
    wa.wait_for("delivered after all", EVENT_TIMEOUT, ev::receipt(&id, "delivered"));
    let mut wb = bob.watch();
    wb.wait_for("the message, shown now", EVENT_TIMEOUT, ev::message("alice", "are you there?"));
    wa.wait_for("displayed", EVENT_TIMEOUT, ev::receipt(&id, "displayed"));
    let entries = history(&alice, "bob");
    let entry = entries.iter().find(|e| e["id"] == id.as_str()).expect("in alice's history");
    assert_eq!(entry["state"], "displayed", "{entries:?}");
}
