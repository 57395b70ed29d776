//! The long-lived processes the bench starts (directoryd, peerd, the
//! baseline servers), each behind a [`Daemon`] guard that stops it by pid
//! when dropped: on success, on error (`?` unwinds the stack of guards) and
//! on panic alike.
//!
//! Each runs in its own process group, so a Ctrl-C at the terminal reaches
//! only the bench, which then stops them in order (peers before the
//! directory they unregister from). As a last resort each also gets
//! `PR_SET_PDEATHSIG`: killed outright, the bench still takes them along.
//! That signal fires when the *thread* that spawned the child exits, which is
//! why everything is spawned from the runtime's one thread, never from a
//! blocking-pool thread.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// How long a daemon may take to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variables that configure peerchat: removed so that the
/// caller's shell cannot change what is measured.
const PEERCHAT_VARS: &[&str] = &[
    "PEERCHAT_NAME",
    "PEERCHAT_DIRECTORY",
    "PEERCHAT_DIRECTORY_KEY",
    "PEERCHAT_LISTEN",
    "PEERCHAT_ADVERTISE",
    "PEERCHAT_SOCKET",
    "PEERCHAT_DATA_DIR",
    "PEERCHAT_RESUME_WINDOW",
    "PEERCHAT_DIRECTORY_LISTEN",
    "PEERCHAT_DIRECTORY_DATA_DIR",
    "PEERCHAT_REGISTER_RATE",
    "PEERCHAT_LIST_RATE",
    "PEERCHAT_MAX_PER_SOURCE",
    "PEERCHAT_TTL",
];

/// A command for `path` with a clean peerchat environment. Logging is
/// pinned to `warn`: info lines per message would measure the logger.
pub(crate) fn command(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    for var in PEERCHAT_VARS {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// A running child process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub(crate) struct Daemon {
    what: String,
    child: Child,
    /// Where its stderr goes, shown when it fails to start.
    log: Option<PathBuf>,
}

impl Daemon {
    /// Starts `cmd` with stdout piped and stderr appended to `log` (or
    /// inherited), and returns once it printed its first stdout line, with
    /// that line. Later stdout lines are read and dropped so that the child
    /// never blocks on a full pipe.
    pub(crate) fn start_ready(
        what: &str,
        cmd: &mut Command,
        log: Option<&Path>,
    ) -> anyhow::Result<(Daemon, String)> {
        let stderr = match log {
            Some(path) => Stdio::from(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            None => Stdio::inherit(),
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).process_group(0);
        // SAFETY: prctl is async-signal-safe and touches nothing of the
        // parent; this runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {what} ({cmd:?})"))?;
        let stdout = child.stdout.take().context("the child's stdout is not piped")?;
        let mut daemon = Daemon { what: what.to_owned(), child, log: log.map(Path::to_owned) };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep draining after the first line was taken.
                let _ = tx.send(line);
            }
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => Ok((daemon, line)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let log = daemon.log_tail();
                daemon.stop();
                bail!("{what} printed no readiness line within {READY_TIMEOUT:?}{log}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = daemon.child.wait().map(|s| s.to_string()).unwrap_or_default();
                bail!("{what} exited before it was ready ({status}){}", daemon.log_tail())
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, a few seconds to exit cleanly, then SIGKILL. Idempotent.
    pub(crate) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
        eprintln!("bench: {} did not stop within {STOP_TIMEOUT:?}; killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log, as a suffix for an error message.
    fn log_tail(&self) -> String {
        let Some(log) = &self.log else { return String::new() };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("; the end of its log ({}):\n{tail}", log.display())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `sig` to the process `pid` (one the bench started).
fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: plain kill(2) on a child of ours that has not been reaped, so
    // the pid cannot have been reused.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// `directoryd --listen 127.0.0.1:0`, in memory.
#[derive(Debug)]
pub(crate) struct Directory {
    pub(crate) addr: SocketAddr,
    /// Held only to be stopped when dropped.
    _daemon: Daemon,
}

impl Directory {
    pub(crate) fn start(bin: &Path, home: &Path) -> anyhow::Result<Directory> {
        let mut cmd = command(bin);
        cmd.args(["--listen", "127.0.0.1:0"]);
        let (daemon, line) =
            Daemon::start_ready("directoryd", &mut cmd, Some(&home.join("directoryd.log")))?;
        let addr = line
            .strip_prefix("directoryd listening on ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .ok_or_else(|| anyhow!("directoryd's readiness line {line:?} has no address"))?;
        Ok(Directory { addr, _daemon: daemon })
    }

    /// The URL peers are given.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `peerd start --foreground` for one name, with its socket, data dir and
/// state dirs inside `home`.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) name: String,
    pub(crate) socket: PathBuf,
    daemon: Daemon,
}

impl Peer {
    pub(crate) fn start(
        bin: &Path,
        home: &Path,
        name: &str,
        directory: &str,
    ) -> anyhow::Result<Peer> {
        std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
        // Short: Unix socket paths are limited to 108 bytes.
        let socket = home.join("s");
        let mut cmd = command(bin);
        cmd.arg("start")
            .arg("--foreground")
            .args(["--name", name])
            .args(["--directory", directory])
            .args(["--listen", "127.0.0.1:0"])
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(home.join("data"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_DATA_HOME", home.join("share"))
            .env("XDG_RUNTIME_DIR", home);
        let what = format!("peerd {name}");
        let (daemon, line) = Daemon::start_ready(&what, &mut cmd, Some(&home.join("peerd.log")))?;
        // `peerd NAME listening on ADDR (pid N)`
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["peerd", said, "listening", "on", _, "(pid", pid] = words.as_slice() else {
            bail!("{what}'s readiness line {line:?} is not `peerd NAME listening on ADDR (pid N)`");
        };
        if *said != name || pid.trim_end_matches(')') != daemon.pid().to_string() {
            bail!("{what}'s readiness line {line:?} names another peer or pid");
        }
        Ok(Peer { name: name.to_owned(), socket, daemon })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.daemon.pid()
    }
}
