//! One redis-server process: its ports and dir, which outlive the process
//! so that it can be restarted as the same node.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use crate::{Error, process};

/// How many lines of a node's log an error carries.
const LOG_TAIL_LINES: usize = 25;

/// A node of the cluster, up or down.
#[derive(Debug)]
pub(crate) struct Node {
    /// Its client port, also how callers name it.
    pub(crate) port: u16,
    /// Its cluster bus port (`--cluster-port`).
    bus_port: u16,
    /// Its own directory: nodes.conf, the AOF, redis.log, stdio.log.
    dir: PathBuf,
    /// The running process; `None` while down. Never waited on by anyone
    /// else, so its pid cannot be reused while this is `Some`.
    child: Option<Child>,
}

impl Node {
    /// A node that is not started yet; creates its directory.
    pub(crate) fn new(root: &Path, port: u16, bus_port: u16) -> Result<Self, Error> {
        let dir = root.join(port.to_string());
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            action: "creating a node's directory",
            source,
        })?;
        Ok(Self { port, bus_port, dir, child: None })
    }

    /// The arguments of its redis-server. The same on every start, so a
    /// restart finds its nodes.conf and AOF and rejoins as the same node.
    fn args(&self, node_timeout_ms: u64) -> Vec<OsString> {
        let dir = self.dir.as_os_str();
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |key: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            args.push(format!("--{key}").into());
            args.push(value.as_ref().to_owned());
        };
        push("port", &self.port.to_string());
        push("cluster-port", &self.bus_port.to_string());
        push("bind", &"127.0.0.1");
        push("cluster-enabled", &"yes");
        push("cluster-config-file", &self.dir.join("nodes.conf"));
        push("cluster-node-timeout", &node_timeout_ms.to_string());
        // A test that kills one master still wants the other slots served.
        push("cluster-require-full-coverage", &"no");
        // The AOF is what a whole-store restart comes back from.
        push("appendonly", &"yes");
        push("appendfsync", &"everysec");
        push("save", &"");
        // A full sync otherwise waits 5 s for more replicas to share it;
        // each master here has its replicas already, and a rejoining old
        // master would make every failover test 5 s slower.
        push("repl-diskless-sync-delay", &"0");
        push("dir", &dir);
        push("logfile", &self.dir.join("redis.log"));
        push("protected-mode", &"no");
        push("daemonize", &"no");
        args
    }

    /// Starts its redis-server. Does not wait for it to answer.
    pub(crate) fn spawn(&mut self, server: &Path, node_timeout_ms: u64) -> Result<(), Error> {
        // Before --logfile takes effect (a bad argument, say) the server
        // writes to stderr: keep that too.
        let stdio_path = self.dir.join("stdio.log");
        let stdio =
            File::options().create(true).append(true).open(&stdio_path).map_err(|source| {
                Error::Io { path: stdio_path.clone(), action: "opening a node's stdio log", source }
            })?;
        let stdio_err = stdio.try_clone().map_err(|source| Error::Io {
            path: stdio_path.clone(),
            action: "opening a node's stdio log",
            source,
        })?;
        let args = self.args(node_timeout_ms);
        let mut command = Command::new(server);
        command
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio_err);
        let child = process::spawn(command).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                Error::NotInstalled { program: "redis-server" }
            } else {
                Error::Spawn { command: process::display(server, &args), source }
            }
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether its process is running. Reaps it if it exited on its own,
    /// and then returns the status once.
    pub(crate) fn poll_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            Ok(None) | Err(_) => None,
        }
    }

    /// Whether the process is running (as far as we know without reaping).
    pub(crate) fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Its pid while up.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL by pid, then reap. Does nothing to a node that is down.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it has already exited; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (redis-server flushes its AOF and exits); [`Self::reap_by`]
    /// collects it. A paused node is let go on first, so that it can.
    pub(crate) fn terminate(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to the process by its pid, if it is up.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child
            && let Ok(pid) = libc::pid_t::try_from(child.id())
        {
            // SAFETY: kill(2) on our own unreaped child: the pid is still
            // that process (or its zombie), never a stranger's.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Reaps the node if it has exited by `deadline`; SIGKILLs it then
    /// otherwise. Polls, so that several nodes can share one deadline.
    pub(crate) fn reap_by(&mut self, deadline: Instant) -> bool {
        if self.poll_exit().is_some() || self.child.is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            self.kill9();
            return true;
        }
        false
    }

    /// The last lines of its log (and of its stdio, where the server
    /// complains before the log is open), for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let mut tail = String::new();
        for name in ["stdio.log", "redis.log"] {
            let Ok(text) = fs::read(self.dir.join(name)) else { continue };
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            tail.push_str(&format!("--- {}/{name}\n", self.dir.display()));
            for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
                tail.push_str(line);
                tail.push('\n');
            }
        }
        if tail.is_empty() {
            tail.push_str("(no log written)");
        }
        tail
    }
}

impl Drop for Node {
    /// The last line of defence; [`crate::Cluster`] stops nodes gently
    /// before this runs.
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_keep_the_node_in_its_dir_on_its_ports() {
        let node = Node { port: 7001, bus_port: 9001, dir: "/d/7001".into(), child: None };
        let args: Vec<String> =
            node.args(2000).into_iter().map(|arg| arg.to_string_lossy().into_owned()).collect();
        let pairs: Vec<(&str, &str)> =
            args.chunks(2).map(|pair| (pair[0].as_str(), pair[1].as_str())).collect();
        for expected in [
            ("--port", "7001"),
            ("--cluster-port", "9001"),
            ("--bind", "127.0.0.1"),
            ("--cluster-config-file", "/d/7001/nodes.conf"),
            ("--cluster-node-timeout", "2000"),
            ("--save", ""),
            ("--dir", "/d/7001"),
            ("--logfile", "/d/7001/redis.log"),
            ("--daemonize", "no"),
        ] {
            assert!(pairs.contains(&expected), "{expected:?} missing from {args:?}");
        }
    }
}
