//! `peerd start` without `--foreground`: run the daemon as a detached child
//! and return once it is ready.
//!
//! The child is this same program with `--foreground` and every setting
//! spelled out, in its own process group (a Ctrl-C at the terminal does not
//! reach it), stdin from /dev/null, stderr appended to the log file, and
//! stdout a pipe to us carrying exactly one line: the readiness line, or
//! `error: …` when it cannot start. We print that line and exit.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::config::Config;
use crate::error::Error;

/// Set in the child's environment: it reports its start on stdout as one
/// [`Started`] line, for the launching `peerd start` to read.
pub const DETACHED_ENV: &str = "PEERCHAT_DETACHED";

/// How a detached daemon's start went, as one tagged line on its stdout:
/// the launcher decides by the tag, never by the words after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The readiness line, to print.
    Ready(String),
    /// Why it could not start.
    Failed(String),
}

impl Started {
    const READY: &str = "ready";
    const FAILED: &str = "failed";

    /// The line the child writes.
    pub fn line(&self) -> String {
        match self {
            Started::Ready(text) => format!("{} {text}", Self::READY),
            Started::Failed(why) => format!("{} {why}", Self::FAILED),
        }
    }

    /// The line the launcher read; `None` for anything else.
    pub fn parse(line: &str) -> Option<Started> {
        let (tag, text) = line.trim_end().split_once(' ')?;
        match tag {
            Self::READY => Some(Started::Ready(text.to_owned())),
            Self::FAILED => Some(Started::Failed(text.to_owned())),
            _ => None,
        }
    }
}

/// How long the daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the daemon in the background; returns its readiness line.
pub fn detach(config: &Config) -> Result<String, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("peerd", "finding this program", e))?;
    let log = config.log_file();
    if let Some(dir) = log.parent() {
        crate::identity::ensure_private_dir(dir)?;
    }
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .map_err(|e| Error::io(&log, "opening the log file", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("start")
        .arg("--foreground")
        .arg("--name")
        .arg(config.name.as_str())
        .arg("--directory")
        .arg(config.directories.join(","))
        .arg("--listen")
        .arg(config.listen.to_string())
        .arg("--socket")
        .arg(&config.socket)
        .arg("--data-dir")
        .arg(&config.data_dir)
        .arg("--resume-window")
        .arg(config.resume_window.as_secs().to_string())
        .arg("--accept")
        .arg(config.accept.as_str());
    if let Some(k) = &config.directory_key {
        cmd.arg("--directory-key").arg(k);
    }
    if let Some(a) = config.advertise {
        cmd.arg("--advertise").arg(a.to_string());
    }
    let mut child = cmd
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io(&log, "starting the daemon", e))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(Error::Other("the daemon has no stdout".into()));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let see_log = format!("see the log at {}", log.display());
    match rx.recv_timeout(READY_TIMEOUT).map(|line| Started::parse(&line)) {
        Ok(Some(Started::Failed(why))) => {
            let _ = child.wait();
            Err(Error::Other(why))
        }
        Ok(Some(Started::Ready(line))) => Ok(line),
        Ok(None) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(Error::Other(format!("peerd exited during startup ({status}); {see_log}")))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Other(format!(
                "peerd did not become ready within {}s; {see_log}",
                READY_TIMEOUT.as_secs()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_line_says_what_happened_by_its_tag() {
        for started in [
            Started::Ready("peerd alice listening on 127.0.0.1:1 (pid 2)".into()),
            Started::Failed("error: the name alice is taken".into()),
        ] {
            assert_eq!(Started::parse(&format!("{}\n", started.line())), Some(started));
        }
        assert_eq!(Started::parse("error: something"), None, "untagged lines decide nothing");
        assert_eq!(Started::parse(""), None);
    }
}
