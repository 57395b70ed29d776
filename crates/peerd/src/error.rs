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
    #[error("the name {0} is taken: the directory has it bound to another key")]
    Taken(String),
    /// Another daemon of this user already runs as `name` on this data dir.
    #[error(
        "the name {name} is taken: peerd {name} (pid {pid}) is already running with the data dir {}",
        .data_dir.display()
    )]
    TakenHere { name: String, pid: u32, data_dir: PathBuf },
    #[error("the data dir {} is in use by {holder}; give this peerd its own --data-dir", .data_dir.display())]
    DataDirInUse { data_dir: PathBuf, holder: String },
    #[error(
        "the identity key {} is readable by other users (mode {mode:o}); fix it with: chmod 600 {}",
        .path.display(),
        .path.display()
    )]
    KeyFileMode { path: PathBuf, mode: u32 },
    /// `usual`: the socket is the default one, where a plain `peerd
    /// start` listens (else the hint names `--socket`).
    #[error("peerd is not running at {} (start it with: {})", .path.display(), start_command(.path, *.usual))]
    NotRunning { path: PathBuf, usual: bool },
    /// The config file cannot be used: it names the file, line and key.
    #[error(transparent)]
    ConfigFile(#[from] peerchat_core::config_file::FileError),
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

/// How to start the peerd that `peerd stop` looked for at `socket`: a
/// plain `peerd start` listens elsewhere unless `socket` is the `usual`
/// place (as chatctl says it).
fn start_command(socket: &std::path::Path, usual: bool) -> String {
    if usual {
        "peerd start".to_owned()
    } else {
        format!("peerd start --socket {}", socket.display())
    }
}

/// `first`, then every cause behind it, on one line
/// ("transport error: tcp connect error: Connection refused"). A cause
/// whose words are already on the line is left out: tonic, hyper and the
/// I/O error under them often say the same thing at two or three levels.
pub(crate) fn with_causes(first: String, mut cause: Option<&dyn std::error::Error>) -> String {
    let mut s = first;
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !s.contains(&text) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error saying `text`, caused by `source`.
    #[derive(Debug)]
    struct Said(&'static str, Option<Box<Said>>);

    impl std::fmt::Display for Said {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Said {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|s| s as _)
        }
    }

    #[test]
    fn not_running_says_how_to_start_one_there() {
        let path = std::path::PathBuf::from("/tmp/x/p.sock");
        let elsewhere = Error::NotRunning { path: path.clone(), usual: false }.to_string();
        assert_eq!(
            elsewhere,
            "peerd is not running at /tmp/x/p.sock (start it with: peerd start --socket \
             /tmp/x/p.sock)"
        );
        let usual = Error::NotRunning { path, usual: true }.to_string();
        assert_eq!(usual, "peerd is not running at /tmp/x/p.sock (start it with: peerd start)");
    }

    #[test]
    fn each_cause_is_said_once() {
        let chain = Said(
            "transport error",
            Some(Box::new(Said(
                "tcp connect error",
                Some(Box::new(Said(
                    "tcp connect error",
                    Some(Box::new(Said("Connection refused", None))),
                ))),
            ))),
        );
        let line = with_causes("tcp connect error".into(), Some(&chain));
        assert_eq!(line, "tcp connect error: transport error: Connection refused");
        assert_eq!(with_causes("x".into(), None), "x");
        assert_eq!(with_causes(String::new(), Some(&Said("only", None))), "only");
    }
}
