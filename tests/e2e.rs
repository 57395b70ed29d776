//! Black-box end-to-end tests of peerchat: the real `directoryd`, `peerd`
//! and `chatctl` binaries, driven as a user and a script would, against the
//! contract in SPEC.md. Each test owns its directory (on 127.0.0.1:0), its
//! peers, temp dirs and processes, so the tests run in parallel.
//!
//! Events are awaited through `chatctl --json watch` (never a sleep); state
//! that can only be polled (the directory's list, a daemon's status) is
//! awaited with `eventually`, with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::daemons::{
    assert_exit, chatctl, error_line, parse_peerd_ready, peerd_start_detached,
    peerd_start_detached_on,
};
use support::watch::ev;
use support::{
    Directory, EVENT_TIMEOUT, Peer, eventually, pid_is_gone, random_bytes, short_tempdir,
};

/// The directory's default lease: long enough that no test sees a live
/// registration expire.
const TTL: u32 = 15;

// ---------------------------------------------------------------- helpers

fn entry<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|p| p["name"] == name)
}

fn names(list: &[Value]) -> HashSet<String> {
    list.iter().map(|p| p["name"].as_str().unwrap_or_default().to_owned()).collect()
}

/// `from` connects to `to`; asserts the SPEC's `{"peer": NAME}`.
fn connect(from: &Peer, to: &Peer) {
    let out = from.ctl_json(&["connect", to.name()]);
    assert_eq!(out["peer"], to.name(), "connect printed {out}");
}

/// `chatctl --json send TEXT...`, returning `(id, state)`.
fn send(from: &Peer, words: &[&str]) -> (String, String) {
    let mut args = vec!["send"];
    args.extend_from_slice(words);
    let out = from.ctl_json(&args);
    let id = out["id"].as_str().unwrap_or_else(|| panic!("send printed no id: {out}")).to_owned();
    assert!(!id.is_empty(), "send printed an empty id: {out}");
    let state = out["state"].as_str().unwrap_or_default().to_owned();
    (id, state)
}

/// `chatctl --json history NAME --limit N` as an array.
fn history(of: &Peer, peer: &str, limit: u32) -> Vec<Value> {
    match of.ctl_json(&["history", peer, "--limit", &limit.to_string()]) {
        Value::Array(entries) => entries,
        other => panic!("history printed {other}, not an array"),
    }
}

fn assert_contains(line: &str, words: &str) {
    assert!(line.contains(words), "expected the error line to contain {words:?}: {line}");
}

/// RFC 3339, e.g. `2025-01-02T03:04:05.678Z` or `...+01:00`.
fn assert_rfc3339(at: &Value) {
    let s = at.as_str().unwrap_or_else(|| panic!("`at` is not a string: {at}"));
    let b = s.as_bytes();
    let ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z')
            || s.ends_with('z')
            || b[b.len() - 6] == b'+'
            || b[b.len() - 6] == b'-');
    assert!(ok, "`at` is not RFC 3339: {s}");
}

/// Writes `bytes` to a fresh connection and reads until the other side
/// closes or 2 s pass; errors (reset, broken pipe) are expected.
fn throw_garbage<S: Read + Write>(mut stream: S, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    stream
}

/// The kinds of garbage SPEC §4 says must not hurt a server.
fn garbage_payloads() -> Vec<(&'static str, Vec<u8>)> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut bad_frames = PREFACE.to_vec();
    // An empty SETTINGS frame, then HEADERS on stream 1 with junk HPACK.
    bad_frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let junk = random_bytes(64);
    bad_frames.extend_from_slice(&[0, 0, 64, 1, 0x4, 0, 0, 0, 1]);
    bad_frames.extend_from_slice(&junk);
    let mut huge_frame = PREFACE.to_vec();
    // A frame header announcing 16 MiB of SETTINGS.
    huge_frame.extend_from_slice(&[0xff, 0xff, 0xff, 4, 0, 0, 0, 0, 0]);
    huge_frame.extend_from_slice(&random_bytes(1024));
    vec![
        ("random bytes", random_bytes(64 * 1024)),
        (
            "an HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n".to_vec(),
        ),
        ("a broken HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec()),
        ("HTTP/2 frames with junk headers", bad_frames),
        ("an oversize HTTP/2 frame", huge_frame),
    ]
}

// ------------------------------------------------------------ the tests

#[test]
fn list_shows_everyone_with_status_address_and_you() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let carol = Peer::start(&dir, "carol");

    for me in [&alice, &bob, &carol] {
        let list = me.list();
        assert_eq!(
            names(&list),
            HashSet::from(["alice".into(), "bob".into(), "carol".into()]),
            "list from {}: {list:?}",
            me.name()
        );
        for peer in [&alice, &bob, &carol] {
            let e = entry(&list, peer.name()).unwrap();
            assert_eq!(e["address"], peer.addr().to_string(), "{e}");
            assert_eq!(e["status"], "available", "{e}");
            assert_eq!(e["you"], peer.name() == me.name(), "{e}");
        }
    }

    let status = alice.status();
    assert_eq!(status["name"], "alice", "{status}");
    assert_eq!(status["listen"], alice.addr().to_string(), "{status}");
    assert_eq!(status["advertise"], alice.addr().to_string(), "{status}");
    assert_eq!(status["directory"], dir.url(), "{status}");
    assert_eq!(status["directory_state"], "registered", "{status}");
    assert!(status["peer"].is_null(), "{status}");

    // A conversation makes both busy, pushed to the directory at once.
    connect(&alice, &bob);
    eventually("alice and bob listed busy", Duration::from_secs(5), || {
        let list = carol.list();
        let busy = |n| entry(&list, n).is_some_and(|e| e["status"] == "busy");
        let carol_free = entry(&list, "carol").is_some_and(|e| e["status"] == "available");
        if busy("alice") && busy("bob") && carol_free { Ok(()) } else { Err(format!("{list:?}")) }
    });
    assert_eq!(alice.status()["peer"], "bob");
    assert_eq!(bob.status()["peer"], "alice");
}

/// `directoryd --threads N` serves on N worker threads rather than the
/// default one: the same directory, seen from its peers.
#[test]
fn a_directory_on_several_threads_serves_the_same() {
    let dir = Directory::start_with(TTL, &["--threads", "2"]);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    assert_eq!(names(&alice.list()), HashSet::from(["alice".into(), "bob".into()]));
    connect(&alice, &bob);
    let (_, state) = send(&alice, &["over", "a", "threaded", "directory"]);
    assert!(state == "delivered" || state == "displayed", "send reported {state}");
}

#[test]
fn connect_send_delivered_then_displayed_both_ways() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();
    let mut wb = bob.watch();

    connect(&alice, &bob);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));

    // TEXT words are joined with single spaces.
    let (id, state) = send(&alice, &["hello", "there,", "bob"]);
    assert!(state == "delivered" || state == "displayed", "send reported {state}");
    let msg =
        wb.wait_for("alice's message", EVENT_TIMEOUT, ev::message("alice", "hello there, bob"));
    assert_eq!(msg["id"], id.as_str(), "{msg}");
    assert_rfc3339(&msg["at"]);
    wa.wait_for("delivered", EVENT_TIMEOUT, ev::receipt(&id, "delivered"));
    wa.wait_for("displayed", EVENT_TIMEOUT, ev::receipt(&id, "displayed"));
    let order: Vec<&str> = wa
        .seen()
        .iter()
        .filter(|e| e["event"] == "receipt" && e["id"] == id.as_str())
        .map(|e| e["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(order, ["delivered", "displayed"], "receipts for {id}");

    // And the other way, on the same stream.
    let (id2, _) = send(&bob, &["hi alice"]);
    assert_ne!(id, id2, "message ids must be unique");
    let msg = wa.wait_for("bob's message", EVENT_TIMEOUT, ev::message("bob", "hi alice"));
    assert_eq!(msg["id"], id2.as_str());
    wb.wait_for("delivered", EVENT_TIMEOUT, ev::receipt(&id2, "delivered"));
    wb.wait_for("displayed", EVENT_TIMEOUT, ev::receipt(&id2, "displayed"));

    // --wait displayed returns once the watch has shown it.
    let (_, state) = send(&alice, &["shown?", "--wait", "displayed"]);
    assert_eq!(state, "displayed");
    // --wait none returns at once, state sent (or better).
    let (id3, state) = send(&alice, &["fire and forget", "--wait", "none"]);
    assert!(
        ["sent", "delivered", "displayed"].contains(&state.as_str()),
        "send --wait none reported {state}"
    );
    wa.wait_for("delivered", EVENT_TIMEOUT, ev::receipt(&id3, "delivered"));
}

/// More waits for a display client than peerd keeps for one (4 MiB of
/// text): the oldest are let go, and the next display client is told how
/// many, before the messages that waited, rather than nothing.
#[test]
fn messages_let_go_unshown_are_counted_for_the_next_display_client() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    connect(&alice, &bob);
    // 80 messages of 60,000 bytes: 69 fit in 4 MiB, 11 are let go.
    let lines: String = (0..80).map(|i| format!("m{i:02} {}\n", "y".repeat(59_996))).collect();
    let out = alice.ctl_with_input(&["chat"], lines.into_bytes());
    assert_exit(&out, 0, "alice's chat");
    let mut wb = bob.watch();
    let first = wb.wait_for("the first event", EVENT_TIMEOUT, |e| {
        e["event"] == "unshown" || e["event"] == "message"
    });
    assert_eq!(first["event"], "unshown", "{first}");
    assert_eq!(first["peer"], "alice", "{first}");
    assert_eq!(first["count"], 11, "{first}");
    let next = wb.wait_for("a message", EVENT_TIMEOUT, |e| e["event"] == "message");
    assert!(next["text"].as_str().is_some_and(|t| t.starts_with("m11 ")), "oldest kept first");
    // Told once: the next display client is not told again.
    wb.stop();
    let mut wb2 = bob.watch();
    let (id, _) = send(&alice, &["after"]);
    let shown = wb2.wait_for("the new message", EVENT_TIMEOUT, |e| {
        e["event"] == "message" && e["id"] == id.as_str()
    });
    assert!(!wb2.seen().iter().any(|e| e["event"] == "unshown"), "told twice: {shown}");
}

/// Bob's user sees alice's message only after her daemon restarted: the
/// `displayed` receipt, which waits for their next conversation, is still
/// believed by the new run of her daemon, and her history says so. (A new
/// run once took it for a receipt of a message it never sent.)
#[test]
fn a_sender_restarted_since_still_hears_that_its_message_was_displayed() {
    let dir = Directory::start(TTL);
    let mut alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    connect(&alice, &bob);
    let (id, state) = send(&alice, &["seen after your restart"]);
    assert_eq!(state, "delivered");
    alice.terminate();
    alice.restart();
    let mut wb = bob.watch();
    let shown = wb.wait_for("the message", EVENT_TIMEOUT, |e| e["event"] == "message");
    assert_eq!(shown["id"], id.as_str(), "{shown}");
    let mut wa = alice.watch();
    connect(&alice, &bob);
    wa.wait_for("displayed", EVENT_TIMEOUT, ev::receipt(&id, "displayed"));
    eventually("alice's history says displayed", Duration::from_secs(5), || {
        let entries = history(&alice, "bob", 50);
        match entries.iter().find(|e| e["id"] == id.as_str()) {
            Some(e) if e["state"] == "displayed" => Ok(()),
            _ => Err(format!("{entries:?}")),
        }
    });
}

#[test]
fn message_without_display_client_is_shown_to_the_next_watch_then_displayed() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();

    connect(&alice, &bob);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));

    // Nobody shows bob his messages: delivered, never displayed.
    let (id1, state) = send(&alice, &["while you were away"]);
    assert_eq!(state, "delivered");
    wa.wait_for("delivered", EVENT_TIMEOUT, ev::receipt(&id1, "delivered"));
    let line = alice.ctl_err(&["send", "second one", "--wait", "displayed", "--timeout", "1"]);
    assert_contains(&line, "timed out");

    let entries = history(&alice, "bob", 50);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for e in &entries {
        assert_eq!(e["direction"], "out", "{e}");
        assert_eq!(e["state"], "delivered", "{e}");
    }
    assert!(
        !wa.seen().iter().any(|e| e["event"] == "receipt" && e["state"] == "displayed"),
        "a message was reported displayed with no display client: {:?}",
        wa.seen()
    );
    let id2 = entries[1]["id"].as_str().unwrap().to_owned();

    // The next watch shows them, oldest first, and only then are they displayed.
    let mut wb = bob.watch();
    let first = wb.wait_for("a message", EVENT_TIMEOUT, |e| e["event"] == "message");
    assert_eq!(first["text"], "while you were away", "{first}");
    assert_eq!(first["id"], id1.as_str());
    assert_eq!(first["waited"], true, "it waited for a display client: {first}");
    let second = wb.wait_for("a message", EVENT_TIMEOUT, |e| e["event"] == "message");
    assert_eq!(second["text"], "second one", "{second}");
    wa.wait_for("displayed", EVENT_TIMEOUT, ev::receipt(&id1, "displayed"));
    wa.wait_for("displayed", EVENT_TIMEOUT, ev::receipt(&id2, "displayed"));
    eventually("history shows displayed", Duration::from_secs(5), || {
        let entries = history(&alice, "bob", 50);
        if entries.iter().all(|e| e["state"] == "displayed") {
            Ok(())
        } else {
            Err(format!("{entries:?}"))
        }
    });

    // A second watch attaching later is not shown them again.
    wb.stop();
    let mut wb2 = bob.watch();
    let (id3, _) = send(&alice, &["third"]);
    let next = wb2.wait_for("a message", EVENT_TIMEOUT, |e| e["event"] == "message");
    assert_eq!(next["id"], id3.as_str(), "shown again: {next}");
    assert!(next.get("waited").is_none(), "a new message did not wait: {next}");
}

#[test]
fn full_duplex_thousand_messages_each_way_in_order_exactly_once() {
    const N: usize = 1000;
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();
    let mut wb = bob.watch();
    connect(&alice, &bob);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));

    let lines = |who: &str| -> Vec<String> { (0..N).map(|i| format!("{who} {i:04}")).collect() };
    let input = |who: &str| -> Vec<u8> {
        lines(who).iter().flat_map(|l| format!("{l}\n").into_bytes()).collect()
    };

    let started = Instant::now();
    let (out_a, out_b) = std::thread::scope(|s| {
        let a = s.spawn(|| alice.ctl_with_input(&["chat"], input("alice")));
        let b = s.spawn(|| bob.ctl_with_input(&["chat"], input("bob")));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_exit(&out_a, 0, "alice's chatctl chat");
    assert_exit(&out_b, 0, "bob's chatctl chat");

    let from_alice = wb.collect("message from alice", N, Duration::from_secs(90), |e| {
        e["event"] == "message" && e["from"] == "alice"
    });
    let from_bob = wa.collect("message from bob", N, Duration::from_secs(90), |e| {
        e["event"] == "message" && e["from"] == "bob"
    });
    eprintln!("{} messages each way in {:?}", N, started.elapsed());
    let texts = |events: &[Value]| -> Vec<String> {
        events.iter().map(|e| e["text"].as_str().unwrap_or_default().to_owned()).collect()
    };
    assert_eq!(texts(&from_alice), lines("alice"), "bob's view of alice's messages");
    assert_eq!(texts(&from_bob), lines("bob"), "alice's view of bob's messages");

    // Each side stored each message once, in order, and got every receipt.
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let entries = eventually("every message acknowledged", Duration::from_secs(30), || {
            let entries = history(me, other.name(), 10_000);
            let unacked = entries
                .iter()
                .filter(|e| e["direction"] == "out")
                .filter(|e| e["state"] != "delivered" && e["state"] != "displayed")
                .count();
            if unacked == 0 {
                Ok(entries)
            } else {
                Err(format!("{unacked} of {}'s messages not delivered", me.name()))
            }
        });
        let of = |dir: &str| -> Vec<String> {
            entries
                .iter()
                .filter(|e| e["direction"] == dir)
                .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(of("out"), lines(me.name()), "{}'s sent history", me.name());
        assert_eq!(of("in"), lines(other.name()), "{}'s received history", me.name());
        let ids: HashSet<&str> = entries.iter().filter_map(|e| e["id"].as_str()).collect();
        assert_eq!(ids.len(), 2 * N, "message ids are not unique");
    }
    let dup = |w: &mut support::Watch, from: &str| {
        w.seen().iter().filter(|e| e["event"] == "message" && e["from"] == from).count()
    };
    assert_eq!(dup(&mut wb, "alice"), N, "bob's watch saw duplicates");
    assert_eq!(dup(&mut wa, "bob"), N, "alice's watch saw duplicates");

    // With no --limit, `history` is the whole stored conversation.
    match bob.ctl_json(&["history", "alice"]) {
        Value::Array(entries) => assert_eq!(entries.len(), 2 * N, "all of it"),
        other => panic!("history printed {other}, not an array"),
    }
}

#[test]
fn connect_errors_busy_already_connected_yourself_not_online_invalid_name() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let carol = Peer::start(&dir, "carol");
    connect(&alice, &bob);

    assert_contains(&carol.ctl_err(&["connect", "alice"]), "busy");
    assert_contains(&carol.ctl_err(&["connect", "bob"]), "busy");
    // Said with the name as bob registered it, not as typed.
    assert_eq!(carol.ctl_err(&["connect", "BOB"]), "error: bob is busy in another conversation");
    assert_contains(&alice.ctl_err(&["connect", "carol"]), "already connected");
    assert_contains(&carol.ctl_err(&["connect", "carol"]), "yourself");
    // Names compare case-insensitively.
    assert_contains(&carol.ctl_err(&["connect", "CaRoL"]), "yourself");
    assert_contains(&carol.ctl_err(&["connect", "dave"]), "not online");
    assert_contains(&carol.ctl_err(&["connect", "bad name"]), "invalid name");

    // None of that disturbed the conversation, or carol.
    let (_, state) = send(&alice, &["still here"]);
    assert_eq!(state, "delivered");
    assert_eq!(bob.status()["peer"], "alice");
    assert!(carol.status()["peer"].is_null());
}

/// Five peers on one machine (one source address to bob) dial bob at the
/// same moment: one gets the conversation and every other hears `busy`,
/// the answer SPEC gives, not a refusal about dials in progress.
#[test]
fn simultaneous_dials_from_one_address_each_get_connected_or_busy() {
    let dir = Directory::start(TTL);
    let bob = Peer::start(&dir, "bob");
    let dialers: Vec<Peer> =
        ["carol", "dave", "erin", "frank", "grace"].iter().map(|n| Peer::start(&dir, n)).collect();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let runs: Vec<_> =
            dialers.iter().map(|p| s.spawn(move || p.ctl(&["connect", "bob"]))).collect();
        runs.into_iter().map(|r| r.join().expect("a connect thread")).collect()
    });
    let mut connected = 0;
    for (peer, out) in dialers.iter().zip(&outs) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => connected += 1,
            Some(1) => assert!(stderr.contains("busy"), "{}: {stderr}", peer.name()),
            other => panic!("{}: exit {other:?}: {stderr}", peer.name()),
        }
    }
    assert_eq!(connected, 1, "exactly one conversation");
    assert!(!bob.status()["peer"].is_null());
}

/// Two people run `connect` for each other at the same moment: both
/// commands succeed, into one conversation between them (each would
/// otherwise find the other busy, dialing). A few rounds, since whether
/// the dials really cross depends on timing; every round must end so.
#[test]
fn two_peers_connecting_to_each_other_at_once_both_succeed() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let carol = Peer::start(&dir, "carol");
    for round in 0..3 {
        let (a, c) = std::thread::scope(|s| {
            let a = s.spawn(|| alice.ctl(&["connect", "carol"]));
            let c = s.spawn(|| carol.ctl(&["connect", "alice"]));
            (a.join().expect("alice's connect"), c.join().expect("carol's connect"))
        });
        // Both succeed when the two dials cross. When one's call is
        // answered before the other's `connect` even reaches its daemon
        // (a slow chatctl start on a loaded machine), that other is
        // already in the conversation and hears so; never `busy`.
        let mut connected = 0;
        for (who, other, out) in [("alice", "carol", &a), ("carol", "alice", &c)] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => connected += 1,
                Some(1) if stderr.contains(&format!("already connected to {other}")) => {}
                _ => panic!("round {round}, {who}: {:?} {stderr}", out.status),
            }
        }
        assert!(connected >= 1, "round {round}: neither connect succeeded");
        assert_eq!(alice.status()["peer"], "carol");
        assert_eq!(carol.status()["peer"], "alice");
        let (_, state) = send(&carol, &["we crossed"]);
        assert_eq!(state, "delivered");
        alice.ctl_ok(&["disconnect"]);
        eventually("carol free again", EVENT_TIMEOUT, || {
            let status = carol.status();
            if status["peer"].is_null() { Ok(()) } else { Err(status.to_string()) }
        });
    }
}

#[test]
fn send_and_disconnect_without_conversation_are_not_connected() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    assert_contains(&alice.ctl_err(&["send", "anyone?"]), "not connected");
    assert_contains(&alice.ctl_err(&["disconnect"]), "not connected");

    connect(&alice, &bob);
    alice.ctl_ok(&["disconnect"]);
    assert_contains(&alice.ctl_err(&["send", "gone?"]), "not connected");
    assert_contains(&alice.ctl_err(&["disconnect"]), "not connected");
}

#[test]
fn invalid_names_are_refused() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    assert_contains(&alice.ctl_err(&["connect", "bad name"]), "invalid name");
    assert_contains(&alice.ctl_err(&["connect", "--", "-x"]), "invalid name");

    let home = short_tempdir();
    let too_long = format!("--name={}", "a".repeat(33));
    for name_arg in ["--name=-x", "--name=bad name", "--name=", too_long.as_str()] {
        let (out, _guard) = peerd_start_detached(&dir.url(), name_arg, home.path());
        assert!(
            !out.status.success(),
            "peerd start {name_arg} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error:"), "peerd start {name_arg}: {stderr}");
        assert!(stderr.contains("invalid name"), "peerd start {name_arg}: {stderr}");
    }
    assert_eq!(names(&alice.list()), HashSet::from(["alice".into()]));
}

#[test]
fn text_limits_too_long_and_empty() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let mut wb = bob.watch();
    connect(&alice, &bob);

    let line = alice.ctl_err(&["send", &"x".repeat(65_537)]);
    assert_contains(&line, "too long");
    assert!(
        line.contains("65536") || line.contains("65,536"),
        "the too-long error does not name the limit: {line}"
    );
    // Bytes, not characters: 16,385 four-byte characters are too long.
    assert_contains(&alice.ctl_err(&["send", &"🦀".repeat(16_385)]), "too long");
    assert_contains(&alice.ctl_err(&["send", ""]), "empty");

    let max = "y".repeat(65_536);
    let (id, state) = send(&alice, &[&max]);
    assert_eq!(state, "delivered");
    let msg = wb.wait_for("the largest message", EVENT_TIMEOUT, |e| {
        e["event"] == "message" && e["id"] == id.as_str()
    });
    assert_eq!(msg["text"].as_str().map(str::len), Some(65_536));
    let crabs = "🦀".repeat(16_384);
    let (id, _) = send(&alice, &[&crabs]);
    let msg = wb.wait_for("crabs", EVENT_TIMEOUT, |e| e["id"] == id.as_str());
    assert_eq!(msg["text"], crabs.as_str());

    // Words that start with `-` are text (`-hi` is not `-h`, the help),
    // also with an option after them.
    let (id, state) = send(&alice, &["-hi", "-", "buy", "milk", "--wait", "delivered"]);
    assert_eq!(state, "delivered");
    let msg = wb.wait_for("the dashes", EVENT_TIMEOUT, |e| e["id"] == id.as_str());
    assert_eq!(msg["text"], "-hi - buy milk");
}

#[test]
fn disconnect_frees_both_sides_who_may_then_talk_to_others() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let carol = Peer::start(&dir, "carol");
    let mut wa = alice.watch();
    let mut wb = bob.watch();
    let mut wc = carol.watch();

    connect(&alice, &bob);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));

    alice.ctl_ok(&["disconnect"]);
    wa.wait_for("disconnected bob", EVENT_TIMEOUT, ev::disconnected("bob"));
    let e = wb.wait_for("disconnected alice", EVENT_TIMEOUT, ev::disconnected("alice"));
    assert!(e["reason"].is_string(), "no reason: {e}");
    assert!(alice.status()["peer"].is_null());
    assert!(bob.status()["peer"].is_null());
    eventually("both available again", Duration::from_secs(5), || {
        let list = carol.list();
        let free = |n| entry(&list, n).is_some_and(|e| e["status"] == "available");
        if free("alice") && free("bob") { Ok(()) } else { Err(format!("{list:?}")) }
    });

    connect(&alice, &carol);
    wa.wait_for("connected carol", EVENT_TIMEOUT, ev::connected("carol"));
    wc.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));
    // Bob may start a conversation of his own, dialing this time.
    let dave = Peer::start(&dir, "dave");
    connect(&bob, &dave);
    wb.wait_for("connected dave", EVENT_TIMEOUT, ev::connected("dave"));
}

/// kill -9 of the peer: the link is lost within 5 s and the conversation is
/// `reconnecting` (still ours); when the resume window passes without the
/// peer, it ends and what was never acknowledged fails.
#[test]
fn killed_peer_is_link_lost_within_five_seconds_then_ends_after_the_window() {
    let dir = Directory::start(TTL);
    let alice = Peer::start_with(&dir, "alice", "127.0.0.1:0", &["--resume-window", "3"]);
    let mut bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();
    connect(&alice, &bob);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));

    let killed = Instant::now();
    bob.kill9();
    let e = wa.wait_for("link_lost bob", Duration::from_secs(10), |e| {
        e["event"] == "link_lost" && e["peer"] == "bob"
    });
    let took = killed.elapsed();
    eprintln!("kill -9 detected in {took:?}");
    assert!(took <= Duration::from_secs(5), "detected after {took:?}");
    // Said from the typed cause, not tonic's "h2 protocol error".
    assert_eq!(e["reason"], "the connection closed without a goodbye", "{e}");
    let status = alice.status();
    assert_eq!(status["conversation"], "reconnecting", "{status}");
    assert_eq!(status["peer"], "bob", "{status}");

    // Queued while reconnecting; fails when the window passes.
    let (id, state) = send(&alice, &["--wait", "none", "into the void"]);
    assert_eq!(state, "sent");
    assert_eq!(alice.status()["unacknowledged"], 1);
    let e = wa.wait_for("disconnected bob", Duration::from_secs(10), ev::disconnected("bob"));
    assert!(e["reason"].as_str().is_some_and(|r| r.contains("link lost")), "{e}");
    let failed =
        wa.wait_for("failed", EVENT_TIMEOUT, |e| e["event"] == "failed" && e["id"] == id.as_str());
    assert!(failed["reason"].as_str().is_some_and(|r| !r.is_empty()), "{failed}");
    assert!(alice.status()["peer"].is_null());
    assert_contains(&alice.ctl_err(&["send", "hello?"]), "not connected");
}

#[test]
fn disconnect_while_reconnecting_ends_at_once() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();
    connect(&alice, &bob);
    bob.kill9();
    wa.wait_for("link_lost bob", Duration::from_secs(10), |e| e["event"] == "link_lost");
    let (id, _) = send(&alice, &["--wait", "none", "never"]);
    let started = Instant::now();
    alice.ctl_ok(&["disconnect"]);
    wa.wait_for("disconnected bob", EVENT_TIMEOUT, ev::disconnected("bob"));
    wa.wait_for("failed", EVENT_TIMEOUT, |e| e["event"] == "failed" && e["id"] == id.as_str());
    assert!(started.elapsed() < Duration::from_secs(5), "disconnect waited for the window");
    assert_eq!(alice.status()["conversation"], "idle");
}

/// What `link_lost` says when our keepalive gives up on a peer.
const STOPPED_ANSWERING: &str = "keepalive pings went unanswered";

/// A peer that vanishes without closing its connection (here: frozen with
/// SIGSTOP, as a pulled cable or a suspended laptop looks from outside) is
/// noticed by HTTP/2 keepalive within 5 s, by the dialer and by the callee;
/// when it comes back the conversation resumes and nothing is lost.
#[test]
fn frozen_peer_is_link_lost_within_five_seconds_on_both_ends_and_resumes() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let carol = Peer::start(&dir, "carol");
    let mut wa = alice.watch();
    let mut wb = bob.watch();
    let mut wc = carol.watch();
    let lost = |peer: &'static str| move |e: &Value| e["event"] == "link_lost" && e["peer"] == peer;
    let resumed =
        |peer: &'static str| move |e: &Value| e["event"] == "resumed" && e["peer"] == peer;

    // bob is the callee: alice's client-side keepalive must notice.
    connect(&alice, &bob);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));
    support::proc::signal(bob.pid(), libc::SIGSTOP);
    let frozen = Instant::now();
    let (id, _) = send(&alice, &["--wait", "none", "are you there?"]);
    let e = wa.wait_for("link_lost bob", Duration::from_secs(10), lost("bob"));
    let took = frozen.elapsed();
    support::proc::signal(bob.pid(), libc::SIGCONT);
    eprintln!("frozen callee detected in {took:?}: {e}");
    assert!(took <= Duration::from_secs(5), "detected after {took:?}");
    assert_eq!(e["reason"], STOPPED_ANSWERING, "{e}");
    wa.wait_for("resumed bob", Duration::from_secs(15), resumed("bob"));
    wa.wait_for("delivered", EVENT_TIMEOUT, ev::receipt(&id, "delivered"));
    wb.wait_for("the message", EVENT_TIMEOUT, ev::message("alice", "are you there?"));
    alice.ctl_ok(&["disconnect"]);
    wb.wait_for("disconnected alice", EVENT_TIMEOUT, ev::disconnected("alice"));
    let shown = wb.seen().iter().filter(|e| e["event"] == "message").count();
    assert_eq!(shown, 1, "shown once: {:?}", wb.seen());

    // alice is the dialer: carol's server-side keepalive must notice.
    connect(&alice, &carol);
    wc.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));
    support::proc::signal(alice.pid(), libc::SIGSTOP);
    let frozen = Instant::now();
    let e = wc.wait_for("link_lost alice", Duration::from_secs(10), lost("alice"));
    let took = frozen.elapsed();
    // Asked while alice is still frozen: once she thaws she redials within
    // milliseconds and carol is `connected` again.
    let state = carol.status()["conversation"].clone();
    support::proc::signal(alice.pid(), libc::SIGCONT);
    eprintln!("frozen dialer detected in {took:?}: {e}");
    assert!(took <= Duration::from_secs(5), "detected after {took:?}");
    // The server's keepalive ends the call's request stream as if cleanly
    // (hyper), so the callee can only say that it ended without a goodbye.
    let reason = e["reason"].as_str().unwrap_or_default();
    assert!([STOPPED_ANSWERING, "the stream ended without a goodbye"].contains(&reason), "{e}");
    assert_eq!(state, "reconnecting");
    wc.wait_for("resumed alice", Duration::from_secs(15), resumed("alice"));
    let (_, state) = send(&carol, &["still here"]);
    assert_eq!(state, "delivered");
}

#[test]
fn dead_peer_leaves_the_list_within_ttl() {
    let dir = Directory::start(3);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    assert!(entry(&alice.list(), "bob").is_some());

    let killed = Instant::now();
    bob.kill9();
    let limit = Duration::from_secs(u64::from(dir.ttl()) + 1);
    let gone_at = eventually("bob gone from the list", limit * 2, || {
        let asked = killed.elapsed();
        let list = alice.list();
        if entry(&list, "bob").is_none() { Ok(asked) } else { Err(format!("{list:?}")) }
    });
    eprintln!("bob left the list {gone_at:?} after kill -9");
    assert!(gone_at <= limit, "bob still listed {gone_at:?} after he died");
}

#[test]
fn directory_outage_does_not_stop_the_conversation() {
    let mut dir = Directory::start(3);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();
    let mut wb = bob.watch();
    connect(&alice, &bob);
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));
    let advertised = alice.status()["advertise"].clone();
    assert!(advertised.as_str().is_some_and(|a| !a.is_empty()), "{advertised}");

    dir.kill9();
    let (id, state) = send(&alice, &["is the directory gone?"]);
    assert_eq!(state, "delivered");
    let m = wb.wait_for("message", EVENT_TIMEOUT, ev::message("alice", "is the directory gone?"));
    assert_eq!(m["id"], id.as_str());
    let (_, state) = send(&bob, &["we", "do", "not", "need", "it"]);
    assert_eq!(state, "delivered");
    wa.wait_for("message", EVENT_TIMEOUT, ev::message("bob", "we do not need it"));

    eventually("alice sees the directory unreachable", Duration::from_secs(15), || {
        let status = alice.status();
        if status["directory_state"] == "unreachable" { Ok(()) } else { Err(status.to_string()) }
    });
    let status = alice.status();
    assert_eq!(status["peer"], "bob");
    // The address the directory last confirmed, not nothing.
    assert_eq!(status["advertise"], advertised, "{status}");

    dir.restart_on_same_port();
    eventually("both registered again", Duration::from_secs(20), || {
        let out = alice.ctl(&["--json", "list"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let busy = |n| entry(&list, n).is_some_and(|e| e["status"] == "busy");
        if busy("alice") && busy("bob") { Ok(()) } else { Err(format!("{list:?}")) }
    });
    eventually("alice registered", Duration::from_secs(10), || {
        let status = alice.status();
        if status["directory_state"] == "registered" { Ok(()) } else { Err(status.to_string()) }
    });
    let (_, state) = send(&alice, &["welcome back, directory"]);
    assert_eq!(state, "delivered");
}

#[test]
fn second_peer_with_a_live_name_is_taken() {
    let dir = Directory::start(TTL);
    let mut alice = Peer::start(&dir, "alice");
    let home = short_tempdir();
    for name_arg in ["--name=alice", "--name=ALICE"] {
        let (out, _guard) = peerd_start_detached(&dir.url(), name_arg, home.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a second {name_arg} started: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains("error:"), "{stderr}");
        assert!(stderr.contains("taken"), "{name_arg}: {stderr}");
    }
    // The same user starting alice twice (same data dir, so the same key,
    // which the directory would let take the name over): the second is
    // refused by the first's lock, before it registers.
    let (out, _guard) =
        peerd_start_detached_on(&dir.url(), "--name=alice", home.path(), &alice.data_dir());
    let line = error_line(&out);
    assert_exit(&out, 1, "a second alice on alice's data dir");
    assert!(line.contains("taken") && line.contains(&format!("(pid {})", alice.pid())), "{line}");
    // Another name on alice's data dir would share her key and history.
    let (out, _guard) =
        peerd_start_detached_on(&dir.url(), "--name=mallory", home.path(), &alice.data_dir());
    assert_exit(&out, 1, "mallory on alice's data dir");
    assert!(error_line(&out).contains("in use by peerd alice"), "{}", error_line(&out));
    alice.assert_running();
    let list = alice.list();
    assert_eq!(names(&list), HashSet::from(["alice".into()]));
    assert_eq!(entry(&list, "alice").unwrap()["address"], alice.addr().to_string());
}

#[test]
fn peerd_stop_says_goodbye_unregisters_at_once_and_removes_the_socket() {
    let dir = Directory::start(TTL);
    let mut alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let mut wb = bob.watch();
    connect(&alice, &bob);
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));

    let out = alice.peerd_stop();
    assert_exit(&out, 0, "peerd stop");
    assert!(!alice.socket().exists(), "the socket file is still there");
    let list = bob.list();
    assert!(entry(&list, "alice").is_none(), "alice still listed: {list:?}");
    let status = alice.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "peerd exited with {status}");

    wb.wait_for("disconnected alice", EVENT_TIMEOUT, ev::disconnected("alice"));
    assert!(bob.status()["peer"].is_null());
    let out = alice.ctl(&["status"]);
    assert_exit(&out, 1, "chatctl status after peerd stop");
    assert_contains(&error_line(&out), "not running");
}

#[test]
fn sigterm_in_a_conversation_is_a_clean_goodbye() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();
    connect(&alice, &bob);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));

    bob.terminate(); // asserts exit 0
    assert!(pid_is_gone(bob.pid()));
    // A goodbye, answered before bob went: not a lost link.
    let ended = wa.wait_for("disconnected bob", EVENT_TIMEOUT, ev::disconnected("bob"));
    assert_eq!(ended["reason"], "bob ended the conversation", "{ended}");
    assert!(!bob.socket().exists(), "bob's socket file is still there");
    let list = alice.list();
    assert!(entry(&list, "bob").is_none(), "bob still listed: {list:?}");
    assert!(alice.status()["peer"].is_null());
}

#[test]
fn detached_start_then_status_then_stop() {
    let dir = Directory::start(TTL);
    let home = short_tempdir();
    let (out, guard) = peerd_start_detached(&dir.url(), "--name=dora", home.path());
    assert_exit(&out, 0, "peerd start (detached)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the launcher printed more than its line: {stdout}");
    let (name, addr, pid) = parse_peerd_ready(lines[0]);
    assert_eq!(name, "dora");
    let guard = guard.unwrap();
    assert_eq!(guard.pid, pid);
    assert!(!pid_is_gone(pid), "the daemon is not running");

    let socket = home.path().join("x.sock");
    let status_out =
        support::proc::run(&mut chatctl(&socket, &["--json", "status"]), Duration::from_secs(30));
    assert_exit(&status_out, 0, "chatctl status");
    let status: Value = serde_json::from_slice(&status_out.stdout).unwrap();
    assert_eq!(status["name"], "dora", "{status}");
    assert_eq!(status["listen"], addr.to_string(), "{status}");
    assert_eq!(status["directory_state"], "registered", "{status}");

    // The socket is private to its user (SPEC: dir 0700, socket 0600).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    let mut stop = support::proc::command(&support::bins::bin("peerd"));
    stop.arg("stop").arg("--socket").arg(&socket);
    support::daemons::isolate_dirs(&mut stop, home.path());
    let out = support::proc::run(&mut stop, Duration::from_secs(30));
    assert_exit(&out, 0, "peerd stop");
    assert!(!socket.exists(), "the socket file is still there");
    eventually("the daemon's pid gone", Duration::from_secs(5), || {
        if pid_is_gone(pid) { Ok(()) } else { Err(format!("pid {pid} alive")) }
    });
    drop(guard);
}

#[test]
fn chatctl_without_daemon_says_not_running_and_where() {
    let home = short_tempdir();
    let missing = home.path().join("none.sock");
    for args in [&["status"][..], &["--json", "list"], &["send", "hi"]] {
        let out = support::proc::run(&mut chatctl(&missing, args), Duration::from_secs(30));
        assert_exit(&out, 1, &format!("chatctl {args:?} with no daemon"));
        let line = error_line(&out);
        assert!(
            line.contains("not running") && line.contains(missing.to_str().unwrap()),
            "chatctl {args:?} with no socket file: {line}"
        );
    }

    // A stale socket file: nobody listens on it. Made with mknod rather
    // than a dropped listener, whose fd a concurrent fork elsewhere in this
    // test process could keep listening until that child execs.
    let stale = home.path().join("stale.sock");
    let c_path = std::ffi::CString::new(stale.to_str().unwrap()).unwrap();
    // SAFETY: mknod on a NUL-terminated path we own.
    let made = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFSOCK | 0o600, 0) };
    assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    let out = support::proc::run(&mut chatctl(&stale, &["status"]), Duration::from_secs(30));
    assert_exit(&out, 1, "chatctl status on a stale socket");
    let line = error_line(&out);
    assert!(line.contains("not running"), "chatctl status on a stale socket: {line}");
}

/// chatctl talks only to a daemon of its own user: a socket served by
/// anyone else (who took the socket's place in a folder they could write
/// to, say) is refused before a byte is sent, so that process reads
/// nothing. Runs chatctl as another user, so only as root.
#[test]
fn chatctl_refuses_a_socket_served_by_another_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: running chatctl as another user needs root");
        return;
    }
    let home = short_tempdir();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = home.path().join("taken.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A copy the other user can run wherever this checkout is.
    let copy = home.path().join("chatctl");
    std::fs::copy(support::bins::bin("chatctl"), &copy).expect("copying chatctl");
    let mut cmd = support::proc::command(&copy);
    cmd.arg("--socket").arg(&path).args(["send", "my secret"]).env_remove("RUST_LOG");
    cmd.uid(4343).gid(4343).env("XDG_CONFIG_HOME", home.path()).env("HOME", home.path());
    let out = support::proc::run(&mut cmd, Duration::from_secs(30));
    assert_exit(&out, 1, "chatctl on another user's socket");
    let line = error_line(&out);
    assert!(
        line.contains("permission denied: it is served by uid 0, not by you (uid 4343)"),
        "{line}"
    );
    // It connected (the kernel accepted it), then hung up without a word.
    listener.set_nonblocking(true).unwrap();
    let (mut conn, _) = listener.accept().expect("chatctl's connection is queued");
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let read = conn.read_to_end(&mut got).expect("read until chatctl's hang-up");
    assert_eq!(read, 0, "chatctl sent {got:?} to a stranger");
}

#[test]
fn history_survives_kill9_and_restart_of_the_receiver() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let mut wa = alice.watch();
    connect(&alice, &bob);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));

    let texts = ["one", "two", "three"];
    let mut ids = Vec::new();
    for text in texts {
        let (id, state) = send(&alice, &[text]);
        assert_eq!(state, "delivered");
        ids.push(id);
    }
    let (reply_id, state) = send(&bob, &["got them"]);
    assert_eq!(state, "delivered");
    // With no NAME: the current peer.
    match bob.ctl_json(&["history"]) {
        Value::Array(current) => assert_eq!(current.len(), 4, "{current:?}"),
        other => panic!("history printed {other}"),
    }

    bob.kill9();
    wa.wait_for("link_lost bob", Duration::from_secs(10), |e| e["event"] == "link_lost");
    // Same name, data dir and socket (the stale socket file is replaced);
    // the registration is still live, and bob reclaims it at once; alice,
    // who dialed, redials and the conversation resumes.
    bob.restart();
    wa.wait_for("resumed bob", Duration::from_secs(15), |e| e["event"] == "resumed");

    // After the restart, with no NAME: the peer whose history changed last.
    match bob.ctl_json(&["history"]) {
        Value::Array(last) => assert_eq!(last.len(), 4, "{last:?}"),
        other => panic!("history printed {other}"),
    }
    // Bob never had a display client: his first one after the restart is
    // shown the three messages, oldest first, and they become displayed.
    let mut wb = bob.watch();
    let shown = wb.collect("unseen message", 3, EVENT_TIMEOUT, |e| e["event"] == "message");
    let shown: Vec<&str> = shown.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(shown, texts);
    eventually("unseen messages marked displayed", EVENT_TIMEOUT, || {
        let h = history(&bob, "alice", 50);
        let displayed = h.iter().filter(|e| e["direction"] == "in" && e["state"] == "displayed");
        if displayed.count() == 3 { Ok(()) } else { Err(format!("{h:?}")) }
    });
    wb.stop();

    let entries = history(&bob, "alice", 50);
    let incoming: Vec<&Value> = entries.iter().filter(|e| e["direction"] == "in").collect();
    assert_eq!(incoming.len(), 3, "{entries:?}");
    for ((e, text), id) in incoming.iter().zip(texts).zip(&ids) {
        assert_eq!(e["text"], text, "{e}");
        assert_eq!(e["id"], id.as_str(), "{e}");
        assert_eq!(e["peer"], "alice", "{e}");
        assert!(e["state"].is_string(), "{e}");
        assert_rfc3339(&e["at"]);
    }
    let outgoing: Vec<&Value> = entries.iter().filter(|e| e["direction"] == "out").collect();
    assert_eq!(outgoing.len(), 1, "{entries:?}");
    assert_eq!(outgoing[0]["id"], reply_id.as_str());
    // Alice's watch showed it, so it may be displayed by now.
    assert!(
        outgoing[0]["state"] == "delivered" || outgoing[0]["state"] == "displayed",
        "{entries:?}"
    );

    // With no NAME: the current peer.
    match alice.ctl_json(&["history"]) {
        Value::Array(last) => assert_eq!(last.len(), 4, "{last:?}"),
        other => panic!("history printed {other}"),
    }
    // Bob's first watch after his restart showed them, in the resumed
    // conversation: alice hears they were displayed.
    eventually("alice's three marked displayed", EVENT_TIMEOUT, || {
        let sent = history(&alice, "bob", 50);
        let out: Vec<&Value> = sent.iter().filter(|e| e["direction"] == "out").collect();
        if out.len() == 3 && out.iter().all(|e| e["state"] == "displayed") {
            Ok(())
        } else {
            Err(format!("{sent:?}"))
        }
    });

    // Bob is back, at his new address, in the same conversation.
    let list = alice.list();
    let e = entry(&list, "bob").expect("bob listed");
    assert_eq!(e["address"], bob.addr().to_string(), "{list:?}");
    let (_, state) = send(&alice, &["welcome back"]);
    assert_eq!(state, "delivered");
}

#[test]
fn garbage_on_every_port_leaves_everyone_serving() {
    let mut dir = Directory::start(TTL);
    let mut alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");

    // Connections that stay open (and idle) while the others are served.
    let _idle_dir = TcpStream::connect(dir.addr()).unwrap();
    let _idle_peer = TcpStream::connect(alice.addr()).unwrap();
    let _idle_ctl = UnixStream::connect(alice.socket()).unwrap();

    for (what, bytes) in garbage_payloads() {
        eprintln!("throwing {what}");
        throw_garbage(tcp(dir.addr()), &bytes);
        throw_garbage(tcp(alice.addr()), &bytes);
        let ctl = UnixStream::connect(alice.socket()).unwrap();
        ctl.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        throw_garbage(ctl, &bytes);
    }

    dir.assert_running();
    alice.assert_running();
    let list = bob.list();
    assert_eq!(names(&list), HashSet::from(["alice".into(), "bob".into()]), "{list:?}");
    let mut wa = alice.watch();
    connect(&bob, &alice);
    wa.wait_for("connected bob", EVENT_TIMEOUT, ev::connected("bob"));
    let (_, state) = send(&bob, &["still", "standing"]);
    assert_eq!(state, "delivered");
    wa.wait_for("message", EVENT_TIMEOUT, ev::message("bob", "still standing"));
    let (_, state) = send(&alice, &["yes"]);
    assert_eq!(state, "delivered");
}

#[test]
fn chat_with_piped_stdin_sends_each_line() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let mut wb = bob.watch();

    let out = alice.ctl_with_input(&["chat", "bob"], b"hello\n/quit\n".to_vec());
    assert_exit(&out, 0, "chatctl chat bob");
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));
    wb.wait_for("hello", EVENT_TIMEOUT, ev::message("alice", "hello"));

    // A mistyped command is an `error:` line and the chat goes on; the
    // exit status then says that not everything went through.
    // So is a line that is not UTF-8: sent as typed or not at all, never
    // with its bytes replaced.
    let out = alice.ctl_with_input(&["chat"], b"/frob\n\xff\xfe bad\nagain\n".to_vec());
    assert_exit(&out, 1, "chatctl chat with a mistyped command");
    wb.wait_for("again", EVENT_TIMEOUT, ev::message("alice", "again"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: unknown command /frob (try /help)"), "{stderr}");
    assert!(stderr.contains("error: a line that is not UTF-8 text was not sent"), "{stderr}");
    assert!(stderr.contains("error: 2 of the lines given failed"), "{stderr}");
    let history = bob.ctl_json(&["history", "alice"]);
    let texts: Vec<&str> =
        history.as_array().expect("an array").iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["hello", "again"], "{history}");
}

/// Piped `chat` whose lines are still unconfirmed when it stops waiting
/// for them (bob frozen) exits 1 with `timed out`: a script must not take
/// them for delivered. They end as peerd decides (here delivered, once bob
/// thaws).
#[test]
fn piped_chat_with_lines_still_unconfirmed_at_the_end_exits_1() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    connect(&alice, &bob);
    let frozen = support::proc::Stopped::new(bob.pid());
    let started = Instant::now();
    let out = alice.ctl_with_input(&["chat"], b"one\ntwo\n".to_vec());
    assert_exit(&out, 1, "chat with bob frozen");
    assert!(started.elapsed() >= Duration::from_secs(10), "it waited {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: timed out: 2 message(s) not confirmed within 10 s"),
        "{stderr}"
    );
    drop(frozen);
    eventually("both delivered", Duration::from_secs(15), || {
        let entries = history(&alice, "bob", 50);
        let delivered = entries.iter().filter(|e| e["state"] == "delivered").count();
        if delivered == 2 { Ok(()) } else { Err(format!("{entries:?}")) }
    });
}

/// Interrupting piped `chat` (SIGINT, as Ctrl-C sends; SIGTERM alike)
/// while its lines are still unconfirmed exits 1 and says so: leaving does
/// not make them delivered. peerd goes on delivering them.
#[test]
fn interrupted_chat_with_lines_still_unconfirmed_exits_1() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    connect(&alice, &bob);
    let frozen = support::proc::Stopped::new(bob.pid());
    let logs = short_tempdir();
    let log = logs.path().join("chat.log");
    let mut cmd = chatctl(&alice.socket(), &["chat"]);
    // Its first line on stdout is the line it sent; then, at the end of
    // its input, it waits for the receipt bob cannot send.
    let (mut chat, sent) = support::proc::Proc::start_ready_with_input(
        "chatctl chat",
        &mut cmd,
        Some(b"one\n".to_vec()),
        &log,
        EVENT_TIMEOUT,
    );
    assert!(sent.contains("one"), "{sent}");
    let status = chat.signal_and_wait(libc::SIGINT, EVENT_TIMEOUT);
    let stderr = std::fs::read_to_string(&log).expect("chat's stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: interrupted: 1 message(s) not confirmed yet"), "{stderr}");
    drop(frozen);
    eventually("delivered all the same", Duration::from_secs(15), || {
        let entries = history(&alice, "bob", 50);
        match entries.iter().find(|e| e["text"] == "one") {
            Some(e) if e["state"] == "delivered" => Ok(()),
            _ => Err(format!("{entries:?}")),
        }
    });
}

/// `/disconnect` in `chat --json` shows the end at once, once, with the
/// daemon's reason (not an empty one), and the daemon's own event is not
/// printed a second time.
#[test]
fn chat_json_disconnect_shows_the_daemons_reason_once() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let mut wb = bob.watch();

    let out = alice
        .ctl_with_input(&["--json", "chat", "bob"], b"/help\nhi\n/disconnect\n/quit\n".to_vec());
    assert_exit(&out, 0, "chatctl --json chat bob");
    wb.wait_for("disconnected alice", EVENT_TIMEOUT, ev::disconnected("alice"));
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    // Every line is JSON, /help's text too goes to stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("/connect NAME"), "help on stderr");
    let ends: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .filter(|event: &Value| event["event"] == "disconnected")
        .collect();
    assert_eq!(ends.len(), 1, "one disconnected event:\n{stdout}");
    assert_eq!(ends[0]["peer"], "bob");
    assert_eq!(ends[0]["reason"], "you ended the conversation", "{stdout}");
    // The `delivered` of "hi", which the daemon had before it ended the
    // conversation (send waited for it), comes before the end, as `watch`
    // shows them.
    let kinds: Vec<String> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["state"] == "delivered" || e["event"] == "disconnected")
        .filter_map(|event| event["event"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(kinds, ["receipt", "disconnected"], "{stdout}");
}

#[test]
fn directory_serves_grpc_health() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let mut dir = Directory::start(TTL);
    let url = dir.url();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        health
            .check(HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner()
            .status
    });
    assert_eq!(status, ServingStatus::Serving as i32);
    dir.terminate(); // SIGTERM: a clean exit 0
}

#[test]
fn help_exits_zero_and_usage_errors_exit_two() {
    use support::bins::bin;
    use support::proc::{command, run};
    let t = Duration::from_secs(30);
    let helps: &[(&str, &[&str])] = &[
        ("directoryd", &["--help"]),
        ("peerd", &["--help"]),
        ("peerd", &["start", "--help"]),
        ("peerd", &["stop", "--help"]),
        ("chatctl", &["--help"]),
        ("chatctl", &["list", "--help"]),
        ("chatctl", &["connect", "--help"]),
        ("chatctl", &["send", "--help"]),
        ("chatctl", &["disconnect", "--help"]),
        ("chatctl", &["status", "--help"]),
        ("chatctl", &["watch", "--help"]),
        ("chatctl", &["history", "--help"]),
        ("chatctl", &["chat", "--help"]),
    ];
    for (name, args) in helps {
        let out = run(command(&bin(name)).args(*args), t);
        assert_exit(&out, 0, &format!("{name} {args:?}"));
        assert!(!out.stdout.is_empty(), "{name} {args:?} printed no help");
    }
    let home = short_tempdir();
    let socket = home.path().join("none.sock");
    for args in [&["frobnicate"][..], &["send", "x", "--wait", "sometimes"]] {
        let out = run(&mut chatctl(&socket, args), t);
        assert_exit(&out, 2, &format!("chatctl {args:?}"));
        // One `error:` line, as for every other error (asserted there).
        let line = error_line(&out);
        assert!(line.contains(args[args.len() - 1]), "names what is wrong: {line}");
    }
    // Every binary's usage errors are one `error:` line too: a missing
    // command, a bad flag or value, an argument that is not UTF-8.
    let not_utf8 = std::ffi::OsString::from_vec(vec![0xff, 0xfe]);
    let usage_errors: &[(&str, Vec<std::ffi::OsString>, &str)] = &[
        ("chatctl", vec![], "a command is required: list, connect, send"),
        ("peerd", vec![], "a command is required: start, stop"),
        ("peerd", vec!["frobnicate".into()], "frobnicate"),
        ("peerd", vec!["start".into(), "--bogus".into()], "--bogus"),
        ("directoryd", vec!["--ttl".into(), "0".into()], "--ttl"),
        ("chatctl", vec!["send".into(), not_utf8.clone()], "invalid UTF-8"),
        ("chatctl", vec![not_utf8.clone()], "unrecognized subcommand"),
        ("peerd", vec!["start".into(), "--name".into(), not_utf8], "invalid UTF-8"),
    ];
    for (name, args, words) in usage_errors {
        let out = run(command(&bin(name)).args(args).env("PEERCHAT_SOCKET", &socket), t);
        assert_exit(&out, 2, &format!("{name} {args:?}"));
        let line = error_line(&out);
        assert!(line.contains(words) && line.contains("(usage: "), "{name} {args:?}: {line}");
    }
}

#[test]
fn ping_measures_round_trips_over_the_chat_stream() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    assert_contains(&alice.ctl_err(&["ping"]), "not connected");
    connect(&alice, &bob);
    let out = alice.ctl_json(&["ping", "--count", "3", "--interval", "0.01"]);
    assert_eq!(out["peer"], "bob", "{out}");
    assert_eq!(out["count"], 3, "{out}");
    let rtts = out["rtt_ms"].as_array().expect("rtt_ms");
    assert_eq!(rtts.len(), 3);
    assert!(rtts.iter().all(|r| r.as_f64().is_some_and(|ms| ms > 0.0 && ms < 5_000.0)), "{out}");
    let text = alice.ctl_ok(&["ping", "--count", "1"]);
    assert!(text.contains("pong from bob") && text.contains("min/avg/max"), "{text}");
}
