//! The directory as replicas (issue 11): `peerd --directory URL1,URL2`
//! uses the first directory that answers and moves to the next when it
//! stops answering, registering there without the user noticing, while any
//! conversation goes on.
//!
//! The replicas here are two independent `directoryd` processes with
//! in-memory registrations: they share nothing, so after a switch peerd's
//! lease is unknown to the second one (NOT_FOUND) and it registers afresh.
//! Replicas on a shared store accept the same lease and spare even that.
//!
//! Each test owns its directories, peers, temp dirs and processes; events
//! are awaited through `chatctl --json watch`, the directory's list and a
//! daemon's status (which can only be polled) with `eventually`.
#![allow(clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use support::daemons::{assert_exit, error_line};
use support::watch::ev;
use support::{Directory, EVENT_TIMEOUT, Peer, eventually, proc};

/// A short lease, so that a switch is seen quickly (peerd renews every
/// ttl/3 = 1 s, and that renewal is what finds the directory gone).
const TTL: u32 = 3;

fn entry<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|p| p["name"] == name)
}

/// Two directories and the `--directory` value naming both, first one first.
fn two_directories() -> (Directory, Directory, String) {
    let first = Directory::start(TTL);
    let second = Directory::start(TTL);
    let urls = format!("{},{}", first.url(), second.url());
    (first, second, urls)
}

/// Waits until `by`'s `chatctl list` (answered by whichever directory it
/// uses now) shows every one of `names` with `status`; returns how long
/// after `since` that was.
fn listed(by: &Peer, names: &[&str], status: &str, since: Instant) -> Duration {
    eventually(&format!("{names:?} listed {status}"), Duration::from_secs(20), || {
        let asked = since.elapsed();
        let out = by.ctl(&["--json", "list"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let all = names.iter().all(|n| entry(&list, n).is_some_and(|e| e["status"] == status));
        if all { Ok(asked) } else { Err(format!("{list:?}")) }
    })
}

/// `peer`'s status once it is registered in the directory at `url`.
fn registered_in(peer: &Peer, url: &str) -> Value {
    eventually(&format!("{} registered in {url}", peer.name()), EVENT_TIMEOUT, || {
        let status = peer.status();
        if status["directory"] == url && status["directory_state"] == "registered" {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
}

#[test]
fn peers_move_to_the_second_directory_within_a_lease_when_the_first_dies() {
    let (mut first, second, urls) = two_directories();
    let alice = Peer::start_with_directory_args(&urls, "alice", &[]);
    let bob = Peer::start_with_directory_args(&urls, "bob", &[]);
    // Both use the first directory, which answers.
    registered_in(&alice, &first.url());
    registered_in(&bob, &first.url());
    assert!(entry(&alice.list(), "bob").is_some());

    let killed = Instant::now();
    first.kill9();
    let took = listed(&alice, &["alice", "bob"], "available", killed);
    eprintln!("both listed by the second directory {took:?} after kill -9 of the first");
    assert!(
        took <= Duration::from_secs(u64::from(TTL)),
        "the peers took {took:?} to move, more than one lease ({TTL} s)"
    );
    registered_in(&alice, &second.url());
    registered_in(&bob, &second.url());

    // Connecting looks bob up in the second directory; bob checks alice
    // there too.
    let mut wb = bob.watch();
    let out = alice.ctl_json(&["connect", "bob"]);
    assert_eq!(out["peer"], "bob", "connect printed {out}");
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));
    let sent = alice.ctl_json(&["send", "via", "the", "second", "directory"]);
    assert_eq!(sent["state"], "delivered", "send printed {sent}");
    wb.wait_for("message", EVENT_TIMEOUT, ev::message("alice", "via the second directory"));
}

#[test]
fn a_conversation_goes_on_while_the_first_directory_dies() {
    let (mut first, second, urls) = two_directories();
    let alice = Peer::start_with_directory_args(&urls, "alice", &[]);
    let bob = Peer::start_with_directory_args(&urls, "bob", &[]);
    let mut wa = alice.watch();
    let mut wb = bob.watch();
    let out = alice.ctl_json(&["connect", "bob"]);
    assert_eq!(out["peer"], "bob", "connect printed {out}");
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));

    let killed = Instant::now();
    first.kill9();
    let sent = alice.ctl_json(&["send", "is", "the", "directory", "gone?"]);
    assert_eq!(sent["state"], "delivered", "send printed {sent}");
    wb.wait_for("message", EVENT_TIMEOUT, ev::message("alice", "is the directory gone?"));

    // Both register in the second directory as they are: busy.
    let took = listed(&bob, &["alice", "bob"], "busy", killed);
    eprintln!("both listed busy by the second directory {took:?} after kill -9 of the first");
    registered_in(&alice, &second.url());
    let status = alice.status();
    assert_eq!(status["peer"], "bob", "{status}");

    let sent = bob.ctl_json(&["send", "we", "did", "not", "notice"]);
    assert_eq!(sent["state"], "delivered", "send printed {sent}");
    wa.wait_for("message", EVENT_TIMEOUT, ev::message("bob", "we did not notice"));
    // No link was lost on the way.
    assert!(
        !wa.seen().iter().any(|e| e["event"] == "link_lost" || e["event"] == "disconnected"),
        "alice's events: {:?}",
        wa.seen()
    );
}

#[test]
fn a_first_directory_that_is_down_at_start_is_skipped() {
    let (mut first, second, urls) = two_directories();
    first.kill9();
    let alice = Peer::start_with_directory_args(&urls, "alice", &[]);
    // Registered by the time it is ready (the readiness line comes after the
    // first registration attempt, which went around to the second).
    let status = alice.status();
    assert_eq!(status["directory_state"], "registered", "{status}");
    assert_eq!(status["directory"], second.url(), "{status}");
    assert!(entry(&alice.list(), "alice").is_some());
}

#[test]
fn a_bad_directory_list_is_a_usage_error_naming_the_entry() {
    for (urls, words) in [
        ("http://127.0.0.1:1,,http://127.0.0.1:2", "entry 2 is empty"),
        ("http://127.0.0.1:1, 127.0.0.1:2", "entry 2 \"127.0.0.1:2\""),
    ] {
        let peer = Peer::unstarted(urls, "alice", &[]);
        let out = proc::run(&mut peer.start_command(), Duration::from_secs(30));
        assert_exit(&out, 2, &format!("peerd start --directory {urls:?}"));
        let line = error_line(&out);
        assert!(line.contains(words), "expected {words:?} in: {line}");
    }
}

/// `--directory-key` is the key of every replica (they share the
/// directory's). A URL whose server shows another key is a refusal for that
/// URL: peerd moves on to the next; only when every one refuses does the
/// start fail, naming the mismatch.
#[test]
fn a_replica_showing_another_key_is_passed_over_and_all_of_them_is_a_refusal() {
    let (impostor, real) = (Directory::start(TTL), Directory::start(TTL));
    let (impostor_url, real_url) =
        (format!("https://{}", impostor.addr()), format!("https://{}", real.addr()));
    let urls = format!("{impostor_url},{real_url}");

    let alice = Peer::start_with_directory_args(&urls, "alice", &["--directory-key", &real.key()]);
    let status = registered_in(&alice, &real_url);
    assert_eq!(status["directory"], real_url.as_str(), "{status}");

    let wrong = "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA";
    let carol = Peer::unstarted(&urls, "carol", &["--directory-key", wrong]);
    let out = proc::run(&mut carol.start_command(), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "peerd trusted replicas with the wrong key:\n{stderr}");
    assert!(stderr.contains("directory key mismatch"), "{stderr}");
}
