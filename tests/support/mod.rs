//! The process harness of the end-to-end tests: real `directoryd`, `peerd`
//! and `chatctl` binaries, each test with its own directory on
//! `127.0.0.1:0`, its own temp dirs and its own processes.
//!
//! # Layout
//! - [`bins`]: builds the workspace binaries once per test run and finds them.
//! - [`control`]: a raw gRPC client of a peerd's control socket.
//! - [`proc`]: running a command with a deadline; the [`proc::Proc`] guard
//!   that stops a daemon when the test ends, even when it panics.
//! - [`daemons`]: [`Directory`] and [`Peer`], started and awaited through
//!   the readiness line they print (never a sleep).
//! - [`watch`]: [`Watch`], a `chatctl --json watch` whose events a test
//!   awaits with [`Watch::wait_for`].
//! - [`tls`]: the attackers' TLS client verifier (accepts anyone, keeps
//!   the certificate).
//! - [`netns`]: [`netns::Lan`], network namespaces joined by a bridge, for
//!   the multi-host fault suite.
//! - [`redis`]: the directory on a Redis Cluster: which master holds a
//!   name, and [`redis::DirectoryApi`], a raw gRPC client of one replica
//!   (register with its own key, list, the presence feed).
//!
//! Rules the tests rely on: every wait has a deadline and fails with what was
//! seen; polling ([`eventually`]) is used only for state that can only be
//! polled (the directory's list, a daemon's status), never as a stand-in for
//! an event.

// Each test binary (`e2e`, `trust`) compiles this module and uses a
// different part of it.
#![allow(dead_code)]

pub(crate) mod bins;
pub(crate) mod control;
pub(crate) mod daemons;
pub(crate) mod netns;
pub(crate) mod proc;
pub(crate) mod redis;
pub(crate) mod tls;
pub(crate) mod watch;

use std::path::Path;
use std::time::{Duration, Instant};

// Not every test binary names both.
#[allow(unused_imports)]
pub(crate) use daemons::{Directory, Peer};
// Not every test binary names the type.
#[allow(unused_imports)]
pub(crate) use watch::Watch;

/// How long a test waits for a process to print its readiness line.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a test waits for an event that should come at once.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A short temp dir, `/tmp/pc-XXXXXX`: Unix socket paths are limited to 108
/// bytes, so never under a long `$TMPDIR`.
pub(crate) fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pc-")
        .tempdir_in("/tmp")
        .expect("creating a temp dir under /tmp")
}

/// Readiness check for state that can only be polled: calls `probe` every
/// 50 ms until it returns `Ok`, and panics with the last `Err` (what was
/// observed) once `timeout` has passed.
pub(crate) fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Whether the process `pid` is gone (no such process, or a zombie nobody
/// reaped yet: a container's pid 1 may not reap adopted daemons).
pub(crate) fn pid_is_gone(pid: u32) -> bool {
    let pid_t = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid_t, 0) } == 0;
    if !alive {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
        Err(_) => true,
    }
}

/// The last `max_lines` lines of a log file, for failure messages.
pub(crate) fn tail(path: &Path, max_lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(max_lines);
            lines[start..].join("\n")
        }
        Err(err) => format!("<cannot read {}: {err}>", path.display()),
    }
}

/// A tokio runtime for a test's async side (attackers, raw gRPC clients):
/// two workers, so that a test's own tasks run beside each other.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

/// Pseudo-random bytes (xorshift), different on every run.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut x = Instant::now().elapsed().as_nanos() as u64
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
