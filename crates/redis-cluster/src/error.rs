//! What can go wrong while starting, probing or stopping a cluster.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Every failure names what was being done, and to what: a test that fails
/// in CI has only this message to go on (the data dir is gone by then unless
/// `PEERCHAT_KEEP_REDIS` was set).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program this harness needs is not on `PATH`. The one error a test
    /// may turn into a skip (see [`crate::Cluster::start_or_skip`]).
    #[error("{program} not found on PATH (Debian: apt-get install redis-server)")]
    NotInstalled {
        /// `redis-server` or `redis-cli`.
        program: &'static str,
    },

    /// The options cannot make a cluster (`redis-cli --cluster create` wants
    /// at least three masters).
    #[error("invalid cluster options: {0}")]
    InvalidOptions(String),

    /// A file or directory operation failed.
    #[error("I/O error at {path} while {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, as "while …" reads.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An I/O error with no path (binding the listeners that pick ports,
    /// starting the spawner thread).
    #[error("I/O error while {action}: {source}")]
    Os {
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A command could not be started at all.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A command ran but failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stdout and stderr.
        output: String,
    },

    /// A command did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// How long it was given.
        timeout: Duration,
    },

    /// A command answered something this harness cannot read.
    #[error("unexpected reply to `{command}`: {reason}:\n{output}")]
    Reply {
        /// The command line.
        command: String,
        /// What was wrong with it.
        reason: String,
        /// The reply as printed.
        output: String,
    },

    /// A node's process exited when it should have been serving.
    #[error(
        "redis-server on port {port} exited ({status}) while {action}; its log ends:\n{log_tail}"
    )]
    NodeExited {
        /// The node's client port.
        port: u16,
        /// Its exit status.
        status: String,
        /// What the harness was doing.
        action: &'static str,
        /// The last lines of the node's log.
        log_tail: String,
    },

    /// A bounded wait ran out.
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout {
        /// The condition waited for.
        what: String,
        /// How long the wait lasted.
        waited: Duration,
        /// Why the condition did not hold at the last look, with the log
        /// tail of the node that held it up where there is one.
        last: String,
    },

    /// Every node is down, so there is no one to ask.
    #[error("every node of the cluster is down")]
    AllDown,

    /// No node of this cluster has that client port.
    #[error("no node of this cluster listens on port {port}")]
    UnknownPort {
        /// The port asked for.
        port: u16,
    },

    /// The node is not in the state the operation needs (killing a node
    /// that is down, restarting one that is up, waiting for the failover of
    /// a master that is still running).
    #[error("node on port {port} is {state}; cannot {action}")]
    NodeState {
        /// The node's client port.
        port: u16,
        /// `up` or `down`.
        state: &'static str,
        /// What was asked.
        action: &'static str,
    },
}
