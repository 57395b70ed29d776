//! `directoryd` and `peerd` as the tests see them: started on ephemeral
//! ports, awaited through their readiness line, stopped by a guard.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::bins::bin;
use super::proc::{self, Detached, Proc};
use super::watch::Watch;
use super::{READY_TIMEOUT, short_tempdir, tail};

/// How long one `chatctl` or `peerd stop` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `directoryd --listen 127.0.0.1:0 --data-dir <its temp dir>`:
/// every test has its own bindings file, so names never collide across
/// tests. Replicas on one shared store ([`Directory::start_sharing`]) have
/// a temp dir each (their logs) and one data dir (one directory key).
#[derive(Debug)]
pub(crate) struct Directory {
    home: TempDir,
    /// `--data-dir`: in `home`, or the one of the directory it shares.
    data_dir: PathBuf,
    /// The network namespace it runs in (`ip netns exec`), if not the
    /// test's own.
    netns: Option<String>,
    ttl: u32,
    /// Flags added to every start (e.g. `--register-rate 5`).
    extra: Vec<String>,
    addr: SocketAddr,
    proc: Option<Proc>,
}

impl Directory {
    /// Starts a directory with registrations living `ttl` seconds.
    pub(crate) fn start(ttl: u32) -> Directory {
        Self::start_with(ttl, &[])
    }

    /// Like [`Directory::start`], with `extra` flags on its command line
    /// (also on every restart).
    pub(crate) fn start_with(ttl: u32, extra: &[&str]) -> Directory {
        let home = short_tempdir();
        let data_dir = Self::data_dir_in(home.path());
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        let (proc, addr) = Self::spawn(None, home.path(), &data_dir, "127.0.0.1:0", ttl, &extra);
        Directory { home, data_dir, netns: None, ttl, extra, addr, proc: Some(proc) }
    }

    /// Another replica of `other`: the same `--data-dir` (so the same
    /// directory key) and ttl, its own address and log, and `extra` flags
    /// (which must name the store they share, e.g. `--store redis://...`:
    /// the embedded store would refuse a data dir another one holds).
    pub(crate) fn start_sharing(other: &Directory, extra: &[&str]) -> Directory {
        let home = short_tempdir();
        let data_dir = other.data_dir.clone();
        let extra: Vec<String> = extra.iter().map(|&a| a.to_owned()).collect();
        let (proc, addr) =
            Self::spawn(None, home.path(), &data_dir, "127.0.0.1:0", other.ttl, &extra);
        Directory { home, data_dir, netns: None, ttl: other.ttl, extra, addr, proc: Some(proc) }
    }

    /// Starts a directory inside the network namespace `netns`, listening
    /// on `listen` (an address of that namespace, port 0 or not).
    pub(crate) fn start_in(netns: &str, listen: &str, ttl: u32) -> Directory {
        let home = short_tempdir();
        let data_dir = Self::data_dir_in(home.path());
        let (proc, addr) = Self::spawn(Some(netns), home.path(), &data_dir, listen, ttl, &[]);
        Directory {
            home,
            data_dir,
            netns: Some(netns.to_owned()),
            ttl,
            extra: Vec::new(),
            addr,
            proc: Some(proc),
        }
    }

    fn spawn(
        netns: Option<&str>,
        home: &Path,
        data_dir: &Path,
        listen: &str,
        ttl: u32,
        extra: &[String],
    ) -> (Proc, SocketAddr) {
        let mut cmd = proc::command_in(netns, &bin("directoryd"));
        cmd.args(["--listen", listen, "--ttl", &ttl.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        let (proc, line) =
            Proc::start_ready("directoryd", &mut cmd, &home.join("directoryd.log"), READY_TIMEOUT);
        let addr = line
            .strip_prefix("directoryd listening on ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .unwrap_or_else(|| {
                panic!("directoryd readiness line {line:?} is not `directoryd listening on ADDR`")
            });
        (proc, addr)
    }

    fn data_dir_in(home: &Path) -> PathBuf {
        home.join("data")
    }

    /// The fingerprint of the directory's own key (`directoryd key`).
    pub(crate) fn key(&self) -> String {
        let mut cmd = proc::command(&bin("directoryd"));
        cmd.arg("key").arg("--data-dir").arg(self.data_dir());
        let out = proc::run(&mut cmd, Duration::from_secs(30));
        assert!(out.status.success(), "directoryd key failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The directory's `--data-dir` (its name bindings), the same across
    /// restarts.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// `directoryd forget NAME --data-dir <this directory's data dir>`, the
    /// admin command that releases a name (run while it is stopped).
    pub(crate) fn forget(&self, name: &str) -> Output {
        let mut cmd = proc::command(&bin("directoryd"));
        cmd.args(["forget", name]).arg("--data-dir").arg(self.data_dir());
        proc::run(&mut cmd, COMMAND_TIMEOUT)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL peers are given: `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The running directoryd's process id (to read its memory use).
    pub(crate) fn pid(&self) -> u32 {
        self.proc.as_ref().expect("the directory is running").pid()
    }

    fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("the directory is running")
    }

    pub(crate) fn assert_running(&mut self) {
        self.proc().assert_running();
    }

    /// SIGKILL: the directory vanishes without a word.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// SIGTERM, asserting a clean exit 0.
    pub(crate) fn terminate(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate();
        }
    }

    /// Starts a new directoryd on the same address and data dir as the last
    /// one (which must be stopped).
    pub(crate) fn restart_on_same_port(&mut self) {
        assert!(self.proc.is_none(), "stop the directory before restarting it");
        let (proc, addr) = Self::spawn(
            self.netns.as_deref(),
            self.home.path(),
            &self.data_dir,
            &self.addr.to_string(),
            self.ttl,
            &self.extra,
        );
        assert_eq!(addr, self.addr, "the restarted directory is on another address");
        self.proc = Some(proc);
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- directoryd log ({}) -----\n{}",
                self.addr,
                tail(&self.home.path().join("directoryd.log"), 200)
            );
        }
    }
}

/// A running `peerd start --foreground`, in its own short temp dir holding
/// its socket (`a.sock`), data dir (`data`), state dir and logs.
#[derive(Debug)]
pub(crate) struct Peer {
    name: String,
    directory: String,
    home: TempDir,
    /// The network namespace it runs in (`ip netns exec`), if not the
    /// test's own.
    netns: Option<String>,
    /// `--listen`, `127.0.0.1:0` unless a test picks the port.
    listen: String,
    /// Flags added to the command line (e.g. `--advertise ADDR`).
    extra: Vec<String>,
    addr: SocketAddr,
    pid: u32,
    proc: Option<Proc>,
}

impl Peer {
    /// Starts the peer `name` registered in `dir`.
    pub(crate) fn start(dir: &Directory, name: &str) -> Peer {
        Self::start_with_directory(&dir.url(), name)
    }

    /// Starts the peer `name` against the directory at `url` (which may be
    /// unreachable).
    pub(crate) fn start_with_directory(url: &str, name: &str) -> Peer {
        Self::start_args(url, name, "127.0.0.1:0", &[])
    }

    /// Starts the peer `name` against the directory at `url` with `extra`
    /// flags (e.g. `["--directory-key", FINGERPRINT]`).
    pub(crate) fn start_with_directory_args(url: &str, name: &str, extra: &[&str]) -> Peer {
        Self::start_args(url, name, "127.0.0.1:0", extra)
    }

    /// Starts the peer `name` registered in `dir`, listening on `listen`
    /// and with `extra` flags (e.g. `["--advertise", "127.0.0.1:PORT"]`).
    pub(crate) fn start_with(dir: &Directory, name: &str, listen: &str, extra: &[&str]) -> Peer {
        Self::start_args(&dir.url(), name, listen, extra)
    }

    fn start_args(url: &str, name: &str, listen: &str, extra: &[&str]) -> Peer {
        let mut peer = Self::unstarted(url, name, extra);
        peer.listen = listen.to_owned();
        peer.spawn();
        peer
    }

    /// Starts the peer `name` inside the network namespace `netns`, against
    /// the directory at `url`, listening on `listen` (an address of that
    /// namespace) with `extra` flags. Restarts stay in that namespace.
    pub(crate) fn start_in(
        netns: &str,
        url: &str,
        name: &str,
        listen: &str,
        extra: &[&str],
    ) -> Peer {
        let mut peer = Self::unstarted(url, name, extra);
        peer.netns = Some(netns.to_owned());
        peer.listen = listen.to_owned();
        peer.spawn();
        peer
    }

    /// A peer that is not started yet, to run its `peerd start` by hand
    /// ([`Peer::start_command`]) and see it fail.
    pub(crate) fn unstarted(url: &str, name: &str, extra: &[&str]) -> Peer {
        Peer {
            name: name.to_owned(),
            directory: url.to_owned(),
            home: short_tempdir(),
            netns: None,
            listen: "127.0.0.1:0".to_owned(),
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            pid: 0,
            proc: None,
        }
    }

    /// The `peerd start --foreground ...` command this peer runs, for a test
    /// that wants to see a start fail.
    pub(crate) fn start_command(&self) -> Command {
        let mut cmd = proc::command_in(self.netns.as_deref(), &bin("peerd"));
        cmd.arg("start")
            .arg("--foreground")
            .args(["--name", &self.name])
            .args(["--directory", &self.directory])
            .args(["--listen", &self.listen])
            .arg("--socket")
            .arg(self.socket())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra);
        isolate_dirs(&mut cmd, self.home.path());
        cmd
    }

    fn spawn(&mut self) {
        let mut cmd = self.start_command();
        let (proc, line) = Proc::start_ready(
            &format!("peerd {}", self.name),
            &mut cmd,
            &self.log(),
            READY_TIMEOUT,
        );
        let (name, addr, pid) = parse_peerd_ready(&line);
        assert_eq!(name, self.name, "readiness line {line:?} names another peer");
        assert_eq!(pid, proc.pid(), "readiness line {line:?} has the wrong pid");
        self.addr = addr;
        self.pid = pid;
        self.proc = Some(proc);
    }

    /// Starts the daemon again after it stopped or was killed, with the same
    /// name, socket, data dir and directory.
    pub(crate) fn restart(&mut self) {
        assert!(self.proc.is_none(), "stop the peer before restarting it");
        self.spawn();
    }

    /// Like [`Peer::restart`] (same name, socket, data dir and so the same
    /// key), listening on `listen` with `extra` flags instead.
    pub(crate) fn restart_with(&mut self, listen: &str, extra: &[&str]) {
        self.listen = listen.to_owned();
        self.extra = extra.iter().map(|&a| a.to_owned()).collect();
        self.restart();
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The address peerd listens on for peers.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.home.path().join("a.sock")
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.home.path().join("peerd.log")
    }

    /// Everything peerd logged so far, for a test that checks what it did
    /// not do (after the fact, never to wait for something).
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("the peer is running")
    }

    pub(crate) fn assert_running(&mut self) {
        self.proc().assert_running();
    }

    /// SIGKILL: the daemon vanishes without goodbye or unregistering.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// SIGTERM, asserting a clean exit 0.
    pub(crate) fn terminate(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate();
        }
    }

    /// Waits for the daemon to exit by itself (after `peerd stop`).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = self.proc().wait_exit(timeout);
        match status {
            Some(status) => {
                self.proc = None;
                status
            }
            None => panic!(
                "peerd {} still running after {timeout:?}; its log:\n{}",
                self.name,
                tail(&self.log(), 100)
            ),
        }
    }

    /// `peerd stop --socket <this peer's socket>`.
    pub(crate) fn peerd_stop(&self) -> Output {
        let mut cmd = proc::command(&bin("peerd"));
        cmd.arg("stop").arg("--socket").arg(self.socket());
        isolate_dirs(&mut cmd, self.home.path());
        proc::run(&mut cmd, COMMAND_TIMEOUT)
    }

    /// Runs `chatctl --socket <this peer's socket> ARGS...`.
    pub(crate) fn ctl(&self, args: &[&str]) -> Output {
        proc::run(&mut chatctl(&self.socket(), args), COMMAND_TIMEOUT)
    }

    /// Like [`Peer::ctl`], with `input` piped to its stdin.
    pub(crate) fn ctl_with_input(&self, args: &[&str], input: Vec<u8>) -> Output {
        proc::run_with_input(&mut chatctl(&self.socket(), args), Some(input), COMMAND_TIMEOUT)
    }

    /// Runs chatctl, asserts exit 0 and returns its stdout.
    pub(crate) fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_exit(&out, 0, &format!("chatctl {args:?} on {}", self.name));
        String::from_utf8(out.stdout).expect("chatctl stdout is UTF-8")
    }

    /// Runs `chatctl --json ARGS...`, asserts exit 0 and parses its stdout
    /// as one JSON value.
    pub(crate) fn ctl_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let stdout = self.ctl_ok(&full);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("chatctl --json {args:?} printed no single JSON value ({e}):\n{stdout}")
        })
    }

    /// Runs chatctl, asserts exit 1 and one stderr line starting `error:`,
    /// and returns that line.
    pub(crate) fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_exit(&out, 1, &format!("chatctl {args:?} on {}", self.name));
        error_line(&out)
    }

    /// `chatctl --json list`, as an array.
    pub(crate) fn list(&self) -> Vec<Value> {
        match self.ctl_json(&["list"]) {
            Value::Array(peers) => peers,
            other => panic!("`chatctl --json list` printed {other}, not an array"),
        }
    }

    /// `chatctl --json status`.
    pub(crate) fn status(&self) -> Value {
        self.ctl_json(&["status"])
    }

    /// Starts a `chatctl --json watch` on this peer.
    pub(crate) fn watch(&self) -> Watch {
        Watch::start(&self.name, &self.socket(), self.home.path())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- peerd {} log ({}) -----\n{}",
                self.name,
                self.addr,
                tail(&self.log(), 200)
            );
        }
    }
}

/// `chatctl --socket SOCKET ARGS...` with a clean environment.
pub(crate) fn chatctl(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = proc::command(&bin("chatctl"));
    // stderr is for the one `error:` line; no logs there.
    cmd.env_remove("RUST_LOG");
    cmd.arg("--socket").arg(socket).args(args);
    cmd
}

/// Points every per-user dir a daemon might touch into `home`.
pub(crate) fn isolate_dirs(cmd: &mut Command, home: &Path) {
    cmd.env("XDG_STATE_HOME", home.join("state")).env("XDG_DATA_HOME", home.join("share"));
}

/// `peerd start NAME_ARG` (e.g. `--name=alice`) without `--foreground`,
/// so it detaches: socket `x.sock`, data dir `data-x` and state dir in
/// `home`. Returns the launcher's output
/// and, if it started a daemon, a guard that kills that daemon.
pub(crate) fn peerd_start_detached(
    url: &str,
    name_arg: &str,
    home: &Path,
) -> (Output, Option<Detached>) {
    peerd_start_detached_on(url, name_arg, home, &home.join("data-x"))
}

/// [`peerd_start_detached`] with the data dir `data_dir`.
pub(crate) fn peerd_start_detached_on(
    url: &str,
    name_arg: &str,
    home: &Path,
    data_dir: &Path,
) -> (Output, Option<Detached>) {
    let mut cmd = proc::command(&bin("peerd"));
    cmd.arg("start")
        .arg(name_arg)
        .args(["--directory", url])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--socket")
        .arg(home.join("x.sock"))
        .arg("--data-dir")
        .arg(data_dir);
    isolate_dirs(&mut cmd, home);
    // The launcher must exit, and must not leave its stdout/stderr held open
    // by the daemon: `run` reads both to the end.
    let out = proc::run(&mut cmd, COMMAND_TIMEOUT);
    let guard = if out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or_default();
        let (_, _, pid) = parse_peerd_ready(line);
        Some(Detached { pid })
    } else {
        None
    };
    (out, guard)
}

/// Parses `peerd NAME listening on 127.0.0.1:PORT (pid N)`.
pub(crate) fn parse_peerd_ready(line: &str) -> (String, SocketAddr, u32) {
    let bad =
        || panic!("peerd readiness line {line:?} is not `peerd NAME listening on ADDR (pid N)`");
    let words: Vec<&str> = line.split_whitespace().collect();
    let ["peerd", name, "listening", "on", addr, "(pid", pid] = words.as_slice() else { bad() };
    let addr = addr.parse::<SocketAddr>().unwrap_or_else(|_| bad());
    let pid = pid.strip_suffix(')').and_then(|p| p.parse::<u32>().ok()).unwrap_or_else(|| bad());
    ((*name).to_owned(), addr, pid)
}

/// Asserts an exit code, showing the output otherwise.
pub(crate) fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}, got {}; stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SPEC's error shape: stderr is one line starting `error:`.
pub(crate) fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error:"),
        "stderr is not one line starting `error:`:\n{stderr}"
    );
    lines[0].to_owned()
}
