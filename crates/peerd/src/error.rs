//! Why the daemon could not start or had to stop. Each says what was being
//! done, and to what.

use std::path::PathBuf;

/// Fatal errors of `peerd`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    InvalidName(#[from] peerchat_core::NameError),
    #[error("I/O error at {path} while {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("a peerd is already running at {0} (stop it with: peerd stop --socket {0})")]
    AlreadyRunning(PathBuf),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the name {0} is taken by another live peer in the directory")]
    Taken(String),
    #[error("peerd is not running at {0} (start it with: peerd start)")]
    NotRunning(PathBuf),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Error {
        Error::Io { path: path.into(), action, source }
    }
}
