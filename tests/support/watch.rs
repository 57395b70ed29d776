//! `chatctl --json watch`: the way tests await events.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemons::chatctl;
use super::tail;

/// One line of the watch's stdout.
#[derive(Debug)]
enum Line {
    Event(Value),
    NotJson(String),
}

/// A running `chatctl --json watch` (a display client) whose events are read
/// by a thread into a channel. Killed when dropped.
#[derive(Debug)]
pub(crate) struct Watch {
    what: String,
    child: Child,
    log: PathBuf,
    rx: Receiver<Line>,
    /// Every event so far, in arrival order.
    seen: Vec<Value>,
    /// Which of `seen` a `wait_for` already returned.
    taken: Vec<bool>,
}

impl Watch {
    /// Starts `chatctl --socket SOCKET --json watch` and returns once it is
    /// subscribed: chatctl says `watching …` on stderr only after peerd has
    /// answered the Watch call, which it does after subscribing it.
    pub(crate) fn start(peer: &str, socket: &Path, home: &Path) -> Watch {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let log = home.join(format!("watch-{n}.log"));
        let mut log_file = File::create(&log).expect("creating the watch log");
        let mut child = chatctl(socket, &["--json", "watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chatctl watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_file, "{line}");
                if line.starts_with("watching ") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let parsed = match serde_json::from_str::<Value>(&line) {
                    Ok(value @ Value::Object(_)) => Line::Event(value),
                    _ => Line::NotJson(line),
                };
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        let mut watch = Watch {
            what: format!("chatctl watch on {peer}"),
            child,
            log,
            rx,
            seen: Vec::new(),
            taken: Vec::new(),
        };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let status = watch.child.try_wait().ok().flatten();
            panic!(
                "{} did not start watching within 10 s ({status:?}); stderr:\n{}",
                watch.what,
                tail(&watch.log, 50)
            );
        }
        watch
    }

    /// Returns the first event, in arrival order, that matches `pred` and
    /// that no earlier `wait_for` returned, waiting up to `timeout` for it.
    /// Panics with every event seen so far otherwise.
    pub(crate) fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        for (i, event) in self.seen.iter().enumerate() {
            if !self.taken[i] && pred(event) {
                self.taken[i] = true;
                return event.clone();
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Line::Event(event)) => {
                    let hit = pred(&event);
                    self.seen.push(event.clone());
                    self.taken.push(hit);
                    if hit {
                        return event;
                    }
                }
                Ok(Line::NotJson(line)) => {
                    panic!("{} printed a line that is not a JSON object: {line:?}", self.what)
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {what} within {timeout:?}; events seen:\n{}",
                        self.what,
                        self.dump()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "{} ended ({status:?}) before {what}; events seen:\n{}\nstderr:\n{}",
                        self.what,
                        self.dump(),
                        tail(&self.log, 50)
                    )
                }
            }
        }
    }

    /// Waits for `n` events matching `pred` and returns them in arrival
    /// order; `timeout` is for all of them together.
    pub(crate) fn collect(
        &mut self,
        what: &str,
        n: usize,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        for i in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.wait_for(&format!("{what} #{} of {n}", i + 1), left, &mut pred);
            got.push(event);
        }
        got
    }

    /// Every event received so far (without waiting), in arrival order.
    pub(crate) fn seen(&mut self) -> &[Value] {
        while let Ok(line) = self.rx.try_recv() {
            match line {
                Line::Event(event) => {
                    self.seen.push(event);
                    self.taken.push(false);
                }
                Line::NotJson(line) => {
                    panic!("{} printed a line that is not a JSON object: {line:?}", self.what)
                }
            }
        }
        &self.seen
    }

    /// Stops the watch (Ctrl-C, as a user would) and waits for it.
    pub(crate) fn stop(mut self) {
        super::proc::signal(self.child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Drop kills it.
    }

    /// Stops the watch (Ctrl-C, unless it already ended because its daemon
    /// died) and returns every event it printed, in arrival order, including
    /// the ones still in the pipe: the reader runs to the end of the output.
    pub(crate) fn finish(mut self) -> Vec<Value> {
        if let Ok(None) = self.child.try_wait() {
            super::proc::signal(self.child.id(), libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // The child has exited, so its stdout reaches end of file and the
        // reader thread hangs up after the last line.
        loop {
            match self.rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Line::Event(event)) => {
                    self.seen.push(event);
                    self.taken.push(false);
                }
                Ok(Line::NotJson(line)) => {
                    panic!("{} printed a line that is not a JSON object: {line:?}", self.what)
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: its output did not end 5 s after it exited", self.what)
                }
            }
        }
        std::mem::take(&mut self.seen)
    }

    fn dump(&self) -> String {
        let lines: Vec<String> = self.seen.iter().map(Value::to_string).collect();
        if lines.len() > 60 {
            format!(
                "{}\n… {} more …\n{}",
                lines[..20].join("\n"),
                lines.len() - 40,
                lines[lines.len() - 20..].join("\n")
            )
        } else {
            lines.join("\n")
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Predicate helpers for [`Watch::wait_for`].
pub(crate) mod ev {
    use serde_json::Value;

    pub(crate) fn connected(peer: &str) -> impl Fn(&Value) -> bool + '_ {
        move |e| e["event"] == "connected" && e["peer"] == peer
    }

    pub(crate) fn disconnected(peer: &str) -> impl Fn(&Value) -> bool + '_ {
        move |e| e["event"] == "disconnected" && e["peer"] == peer
    }

    pub(crate) fn message(from: &str, text: &str) -> impl Fn(&Value) -> bool {
        let (from, text) = (from.to_owned(), text.to_owned());
        move |e| e["event"] == "message" && e["from"] == from.as_str() && e["text"] == text.as_str()
    }

    pub(crate) fn receipt<'a>(id: &'a str, state: &'a str) -> impl Fn(&Value) -> bool + 'a {
        move |e| e["event"] == "receipt" && e["id"] == id && e["state"] == state
    }
}
