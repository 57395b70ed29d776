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
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::config::Config;
use crate::error::Error;

/// Set in the child's environment: report fatal errors on stdout too.
pub const DETACHED_ENV: &str = "PEERCHAT_DETACHED";

/// How long the daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the daemon in the background; returns its readiness line.
pub fn detach(config: &Config) -> Result<String, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("peerd", "finding this program", e))?;
    let log = config.log_file();
    if let Some(dir) = log.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, "creating the log folder", e))?;
    }
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
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
        .arg(config.resume_window.as_secs().to_string());
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
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) if line.starts_with("error:") => {
            let _ = child.wait();
            Err(Error::Other(line.trim_end().trim_start_matches("error:").trim().to_owned()))
        }
        Ok(line) if !line.is_empty() => Ok(line.trim_end().to_owned()),
        Ok(_) => {
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
