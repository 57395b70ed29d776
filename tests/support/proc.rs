//! Running processes with deadlines, and the guard that stops them.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::tail;

/// The environment variables that configure peerchat: removed from every
/// process a test starts, so a developer's shell cannot change a test.
const PEERCHAT_VARS: &[&str] = &[
    "PEERCHAT_NAME",
    "PEERCHAT_DIRECTORY",
    "PEERCHAT_LISTEN",
    "PEERCHAT_ADVERTISE",
    "PEERCHAT_SOCKET",
    "PEERCHAT_DATA_DIR",
    "PEERCHAT_DIRECTORY_LISTEN",
    "PEERCHAT_DIRECTORY_DATA_DIR",
    "PEERCHAT_REGISTER_RATE",
    "PEERCHAT_LIST_RATE",
    "PEERCHAT_MAX_PER_SOURCE",
    "PEERCHAT_TTL",
    "PEERCHAT_STORE",
    "PEERCHAT_DIRECTORY_THREADS",
    "PEERCHAT_DIRECTORY_KEY",
    "PEERCHAT_RESUME_WINDOW",
    "PEERCHAT_ACCEPT",
    "PEERCHAT_CONFIG",
];

/// Where the binaries look for the user's config file in tests: nowhere
/// (a developer's own `~/.config/peerchat/config.toml` must not change
/// what a test sees). Tests of the config file set their own.
pub(crate) const NO_CONFIG_HOME: &str = "/nonexistent/peerchat-tests/config";

/// A command for the binary at `path` with a clean peerchat environment and
/// logging at `info` unless the developer set `RUST_LOG` (the Redis
/// client's own reconnect warnings at `error` only: during an outage they
/// would push everything else out of the log tail a failing test prints).
pub(crate) fn command(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    for var in PEERCHAT_VARS {
        cmd.env_remove(var);
    }
    cmd.env("XDG_CONFIG_HOME", NO_CONFIG_HOME);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info,redis=error");
    }
    cmd
}

/// Like [`command`], run inside the network namespace `netns` when there is
/// one: `ip netns exec NETNS PATH`. `ip` joins the namespace and then execs
/// the binary in place, so the child's pid is the binary's own.
pub(crate) fn command_in(netns: Option<&str>, path: &Path) -> Command {
    let Some(netns) = netns else { return command(path) };
    let mut cmd = command(Path::new("ip"));
    cmd.args(["netns", "exec", netns]).arg(path);
    cmd
}

/// Runs `cmd` to completion with no stdin, collecting its output; kills it
/// and panics if it takes longer than `timeout`.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Output {
    run_with_input(cmd, None, timeout)
}

/// Like [`run`], writing `input` to its stdin and then closing it.
pub(crate) fn run_with_input(
    cmd: &mut Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Output {
    let described = format!("{cmd:?}");
    // Keep failure messages readable when an argument is 64 KiB long.
    let described: String = if described.chars().count() > 300 {
        described.chars().take(300).chain(['…']).collect()
    } else {
        described
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    let pid = child.id();
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A writer thread: the child may fill its stdout before reading all
        // of its stdin.
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for {described}: {e}")),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            let output = rx.recv().expect("waiter thread").expect("output");
            panic!(
                "{described} did not finish within {timeout:?} (killed); stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Sends `sig` to the process `pid`.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: plain kill(2); the pid is one this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A process stopped (SIGSTOP, as a frozen host looks) until this is
/// dropped (SIGCONT), also when the test panics.
#[derive(Debug)]
pub(crate) struct Stopped(u32);

impl Stopped {
    pub(crate) fn new(pid: u32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// A daemon the test started, stopped with SIGKILL when dropped (also when
/// the test panics) unless it already exited.
#[derive(Debug)]
pub(crate) struct Proc {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout piped and stderr appended to `log`, and
    /// returns once it printed its first stdout line (its readiness line),
    /// with that line. Panics with the log if it exits first or takes
    /// longer than `timeout`. Later stdout lines are drained and dropped.
    pub(crate) fn start_ready(
        what: &str,
        cmd: &mut Command,
        log: &Path,
        timeout: Duration,
    ) -> (Proc, String) {
        Proc::start_ready_with_input(what, cmd, None, log, timeout)
    }

    /// Like [`Proc::start_ready`], with `input` written to its stdin, which
    /// is then closed (`None`: no stdin at all).
    pub(crate) fn start_ready_with_input(
        what: &str,
        cmd: &mut Command,
        input: Option<Vec<u8>>,
        log: &Path,
        timeout: Duration,
    ) -> (Proc, String) {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(stderr);
        let mut child =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // A writer thread, as in `run_with_input`.
            thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let mut proc = Proc { what: what.to_owned(), child, log: log.to_owned() };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep draining after the test stopped listening.
                let _ = tx.send(line);
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(line) => (proc, line),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = proc.wait_exit(Duration::from_secs(5));
                panic!(
                    "{what} exited ({status:?}) without printing its readiness line; its log:\n{}",
                    tail(log, 100)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                proc.kill9();
                panic!(
                    "{what} printed no readiness line within {timeout:?}; its log:\n{}",
                    tail(log, 100)
                );
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics if the process has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "{} exited unexpectedly ({status}); its log:\n{}",
                self.what,
                tail(&self.log, 100)
            );
        }
    }

    /// Sends `sig` and returns the exit status, panicking if the process is
    /// still running after `timeout`.
    pub(crate) fn signal_and_wait(&mut self, sig: libc::c_int, timeout: Duration) -> ExitStatus {
        signal(self.pid(), sig);
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => {
                self.kill9();
                panic!(
                    "{} still running {timeout:?} after signal {sig}; its log:\n{}",
                    self.what,
                    tail(&self.log, 100)
                );
            }
        }
    }

    /// SIGTERM, then asserts a clean exit 0.
    pub(crate) fn terminate(&mut self) {
        let status = self.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM, expected 0; its log:\n{}",
            self.what,
            tail(&self.log, 100)
        );
    }

    /// SIGKILL, and reaps it.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself, up to `timeout`. The bounded
    /// poll is on process exit only (`try_wait`), which has no other signal.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A daemon that detached from the test (`peerd start` without
/// `--foreground`): not our child, so it is killed by pid when dropped.
#[derive(Debug)]
pub(crate) struct Detached {
    pub(crate) pid: u32,
}

impl Drop for Detached {
    fn drop(&mut self) {
        if !super::pid_is_gone(self.pid) {
            signal(self.pid, libc::SIGKILL);
        }
    }
}
