//! The presence feed as a user sees it (issue 11), over the real binaries:
//! `chatctl list --watch` prints who is online and then each change as it
//! happens; `chatctl watch` shows peers coming and going among its other
//! events. peerd relays the directory's WatchPeers feed; these check that
//! the changes arrive promptly, once each, and as the right kind (a peer
//! coming online is not a peer changing status).
//!
//! Every wait has a deadline and no sleep stands in for an event: the
//! list watch is ready once it printed its `synced` line (or its table),
//! and `chatctl watch` once it said `watching`.
#![allow(clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::daemons::{assert_exit, chatctl};
use support::{Directory, EVENT_TIMEOUT, Peer};

const TTL: u32 = 15;

/// The bound for a peer coming or going to show.
const PROMPTLY: Duration = Duration::from_secs(1);

/// A running `chatctl list --watch` (its stdout lines read by a thread).
/// Killed when dropped, so it never outlives a failed test.
struct ListWatch {
    what: String,
    child: Child,
    rx: Receiver<String>,
    /// Every line so far, in order.
    seen: Vec<String>,
    /// Which of `seen` a wait already returned.
    taken: Vec<bool>,
}

impl ListWatch {
    /// `chatctl --socket <peer's> ARGS...` (the args include `list --watch`).
    fn start(peer: &Peer, args: &[&str]) -> ListWatch {
        let mut child = chatctl(&peer.socket(), args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chatctl list --watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ListWatch {
            what: format!("chatctl {args:?} on {}", peer.name()),
            child,
            rx,
            seen: vec![],
            taken: vec![],
        }
    }

    /// The first line, in order, for which `pred` holds and that no earlier
    /// wait returned, waiting up to `timeout` for it; panics with every line
    /// seen otherwise.
    fn wait_line(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        if let Some(i) = (0..self.seen.len()).find(|&i| !self.taken[i] && pred(&self.seen[i])) {
            self.taken[i] = true;
            return self.seen[i].clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.seen.push(line.clone());
                    self.taken.push(hit);
                    if hit {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {what} within {timeout:?}; lines seen:\n{}",
                    self.what,
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{} ended ({:?}) before {what}; lines seen:\n{}",
                    self.what,
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Like [`ListWatch::wait_line`] for `--json` output: every line must be
    /// one JSON object.
    fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let line = self.wait_line(what, timeout, |line| pred(&parse(line)));
        parse(&line)
    }

    /// Every `--json` line so far, parsed.
    fn events(&self) -> Vec<Value> {
        self.seen.iter().map(|line| parse(line)).collect()
    }

    /// Ctrl-C, as a user would; its exit status.
    fn interrupt(mut self) -> ExitStatus {
        support::proc::signal(self.child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} ignored Ctrl-C for 10 s", self.what);
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ListWatch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse(line: &str) -> Value {
    match serde_json::from_str::<Value>(line) {
        Ok(value @ Value::Object(_)) => value,
        _ => panic!("a --json line that is not one JSON object: {line:?}"),
    }
}

fn is(kind: &'static str, name: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == kind && e["name"] == name
}

/// `peerd stop` on `peer`; returns when the stop was asked, and how long
/// from then an event may take to be prompt. (The daemon is reaped later,
/// with [`Peer::wait_exit`], so that its exit does not hide a late event.)
fn stop(peer: &Peer) -> Duration {
    let asked = Instant::now();
    let out = peer.peerd_stop();
    assert_exit(&out, 0, &format!("peerd stop on {}", peer.name()));
    PROMPTLY.saturating_sub(asked.elapsed()).max(Duration::from_millis(1))
}

/// How long a stopped daemon may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn list_watch_json_starts_with_the_list_then_tells_each_change_once() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let carol = Peer::start(&dir, "carol");
    let mut lw = ListWatch::start(&alice, &["--json", "list", "--watch"]);
    lw.wait_event("synced", EVENT_TIMEOUT, |e| e["event"] == "synced");

    // The list first, as peer_online lines, "you" marked, fields as `list`.
    let first = lw.events();
    let (listed, after) = first.split_at(first.len() - 1);
    assert_eq!(after[0], serde_json::json!({"event": "synced"}));
    assert!(listed.iter().all(|e| e["event"] == "peer_online"), "{listed:?}");
    let names: Vec<&str> = listed.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["alice", "carol"], "everyone online, by name");
    assert_eq!(listed[0]["you"], true);
    assert_eq!(listed[1]["you"], false);
    assert_eq!(listed[1]["status"], "available");
    assert_eq!(listed[1]["address"], carol.addr().to_string());

    // bob comes online.
    let mut bob = Peer::start(&dir, "bob");
    let online = lw.wait_event("peer_online bob", PROMPTLY, is("peer_online", "bob"));
    assert_eq!(online["status"], "available", "{online}");
    assert_eq!(online["you"], false, "{online}");
    assert_eq!(online["address"], bob.addr().to_string(), "{online}");

    // bob talks to carol: both are busy now, which is a status change,
    // not a peer coming online.
    bob.ctl_ok(&["connect", "carol"]);
    let busy =
        |name: &'static str| move |e: &Value| is("peer_status", name)(e) && e["status"] == "busy";
    lw.wait_event("bob busy", EVENT_TIMEOUT, busy("bob"));
    lw.wait_event("carol busy", EVENT_TIMEOUT, busy("carol"));

    // bob stops: offline, promptly; carol is free again.
    let left = stop(&bob);
    let gone = lw.wait_event("peer_offline bob", left, is("peer_offline", "bob"));
    assert_eq!(gone["you"], false, "{gone}");
    bob.wait_exit(EXIT_TIMEOUT);
    lw.wait_event("carol available", EVENT_TIMEOUT, |e| {
        is("peer_status", "carol")(e) && e["status"] == "available"
    });

    let events = lw.events();
    let count = |kind: &str, name: &str| {
        events.iter().filter(|e| e["event"] == kind && e["name"] == name).count()
    };
    assert_eq!(count("peer_online", "bob"), 1, "bob came online once: {events:?}");
    assert_eq!(count("peer_offline", "bob"), 1, "{events:?}");
    assert_eq!(count("peer_online", "carol"), 1, "carol only in the first list: {events:?}");
    assert_eq!(events.iter().filter(|e| e["event"] == "synced").count(), 1, "{events:?}");

    assert!(lw.interrupt().success(), "Ctrl-C ends list --watch with exit 0");
}

#[test]
fn list_watch_for_people_prints_the_table_then_a_line_per_change() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut lw = ListWatch::start(&alice, &["list", "--watch"]);
    lw.wait_line("the table's header", EVENT_TIMEOUT, |l| l.starts_with("NAME"));
    let me = lw.wait_line("alice's row", EVENT_TIMEOUT, |l| l.starts_with("alice"));
    assert!(me.starts_with("alice (you)") && me.ends_with("available"), "{me:?}");
    lw.wait_line("the table's end", EVENT_TIMEOUT, |l| l == "nobody else is online");

    let mut dave = Peer::start(&dir, "dave");
    let line = lw.wait_line("+ dave", PROMPTLY, |l| l.contains("+ dave "));
    assert!(line.ends_with(&format!("+ dave {} available", dave.addr())), "{line:?}");
    let left = stop(&dave);
    let line = lw.wait_line("- dave", left, |l| l.contains("- dave"));
    assert!(line.ends_with("- dave offline"), "{line:?}");
    dave.wait_exit(EXIT_TIMEOUT);
}

#[test]
fn watch_json_shows_peers_coming_and_going_among_its_events() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let _carol = Peer::start(&dir, "carol");
    let mut wa = alice.watch();

    let mut bob = Peer::start(&dir, "bob");
    let online = wa.wait_for("peer_online bob", PROMPTLY, is("peer_online", "bob"));
    assert_eq!(online["status"], "available", "{online}");
    assert_eq!(online["address"], bob.addr().to_string(), "{online}");

    // The usual events still come, presence beside them; status changes
    // (alice and carol busy) are `list --watch`'s, not watch's.
    let mut la = ListWatch::start(&alice, &["--json", "list", "--watch"]);
    la.wait_event("synced", EVENT_TIMEOUT, |e| e["event"] == "synced");
    alice.ctl_ok(&["connect", "carol"]);
    wa.wait_for("connected carol", EVENT_TIMEOUT, |e| {
        e["event"] == "connected" && e["peer"] == "carol"
    });
    let me = la.wait_event("alice busy", EVENT_TIMEOUT, |e| {
        is("peer_status", "alice")(e) && e["status"] == "busy"
    });
    assert_eq!(me["you"], true, "{me}");

    let left = stop(&bob);
    wa.wait_for("peer_offline bob", left, is("peer_offline", "bob"));
    bob.wait_exit(EXIT_TIMEOUT);
    // list --watch told alice busy before bob left, so watch had it too.
    let seen = wa.seen().to_vec();
    assert!(!seen.iter().any(|e| e["event"] == "peer_status"), "{seen:?}");

    // `watch` tells changes only, never who was online already.
    let seen = wa.seen().to_vec();
    let told_online: Vec<&str> = seen
        .iter()
        .filter(|e| e["event"] == "peer_online")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(told_online, ["bob"], "{seen:?}");
}

#[test]
fn list_watch_without_a_directory_fails_like_list() {
    // Nothing listens on port 1: the directory is unreachable from the start.
    let alice = Peer::start_with_directory("http://127.0.0.1:1", "alice");
    let out = alice.ctl(&["list", "--watch"]);
    assert_exit(&out, 1, "list --watch with no directory");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error:") && stderr.contains("unreachable"), "{stderr}");
}

/// A directory restarted on memory lists nobody at first, and everyone
/// registers again within a renewal (5 s here). `list --watch` must not
/// show them all going offline and coming back: peers missing from the
/// fresh list are held for a grace, and they are back well within it.
#[test]
fn a_directory_restart_is_not_everyone_going_offline() {
    let mut dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let _bob = Peer::start(&dir, "bob");
    let mut lw = ListWatch::start(&alice, &["--json", "list", "--watch"]);
    lw.wait_event("synced", EVENT_TIMEOUT, |e| e["event"] == "synced");

    dir.kill9();
    dir.restart_on_same_port();
    support::eventually("both listed again", Duration::from_secs(20), || {
        let out = alice.ctl(&["--json", "list"]);
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let names: Vec<&str> = list.iter().filter_map(|e| e["name"].as_str()).collect();
        if names == ["alice", "bob"] { Ok(()) } else { Err(format!("{list:?}")) }
    });
    // A newcomer's arrival shows the feed is following the new directory.
    let _carol = Peer::start(&dir, "carol");
    lw.wait_event("peer_online carol", EVENT_TIMEOUT, is("peer_online", "carol"));
    let events = lw.events();
    // After the first list (up to `synced`): nothing but carol.
    let first_list = events.iter().take_while(|e| e["event"] != "synced").count();
    let flaps: Vec<&Value> = events[first_list..]
        .iter()
        .filter(|e| {
            e["event"] == "peer_offline" || e["event"] == "peer_online" && e["name"] != "carol"
        })
        .collect();
    assert!(flaps.is_empty(), "went offline and came back: {flaps:?}");
}
