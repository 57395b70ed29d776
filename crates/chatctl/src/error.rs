//! What can go wrong, as the one `error:` line on stderr and an exit status.
//!
//! Every failure of an operation exits 1 (usage errors exit 2, from clap).
//! The daemon puts the SPEC's words ("not online", "busy", "not connected",
//! "timed out", ...) in its status messages, so a [`tonic::Status`] is shown
//! as its message; this module only adds context where the status comes
//! from our side of the socket (a dropped connection) rather than from peerd.

use std::io;
use std::path::PathBuf;

use peerchat::transport::Broken;
use peerchat_core::{NameError, TextError};

/// A failed chatctl operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answers at the control socket (no file, or nobody listening).
    #[error(
        "peerd is not running at {} (start it with: {})",
        .path.display(),
        crate::client::start_command(.path)
    )]
    NotRunning { path: PathBuf },
    /// Something is at the socket but we may not use it.
    #[error("cannot connect to peerd at {}: {source}", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A name given on the command line breaks the name rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A message text that cannot be sent (empty, too long).
    #[error(transparent)]
    Text(#[from] TextError),
    /// peerd refused or failed the request.
    #[error("{}", status_line(.0))]
    Status(tonic::Status),
    /// peerd accepted the connection but did not answer in time.
    #[error("timed out after {secs} s waiting for peerd to {action}")]
    NoAnswer { action: &'static str, secs: u64 },
    /// peerd reported that a message we sent will never arrive.
    #[error("message {id} failed")]
    MessageFailed { id: String },
    /// The event stream ended: peerd shut down (or dropped us).
    #[error("peerd stopped{}", .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Stopped { detail: Option<String> },
    /// Writing to stdout failed (a closed pipe is handled quietly).
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] io::Error),
    /// Reading stdin failed (`chat`).
    #[error("cannot read stdin: {0}")]
    Stdin(#[source] io::Error),
    /// A `/command` in chat that is not one, or lacks its argument.
    #[error("{0}")]
    Mistyped(String),
    /// Lines given to chat that failed, each said on stderr as it failed.
    #[error("{0} of the lines given failed (each said why above)")]
    ChatFailures(usize),
    /// Messages chat sent that were neither delivered nor failed when it
    /// stopped waiting for them.
    #[error(
        "timed out: {count} message(s) not confirmed within {} s; peerd keeps trying \
         (`chatctl history` shows how they end)",
        within.as_secs()
    )]
    ChatUnconfirmed { count: usize, within: std::time::Duration },
    /// Messages chat sent that were neither delivered nor failed when it
    /// was interrupted (Ctrl-C, SIGTERM): leaving does not make them
    /// delivered, and a script must not take them for it.
    #[error(
        "interrupted: {count} message(s) not confirmed yet; peerd keeps trying \
         (`chatctl history` shows how they end)"
    )]
    ChatInterrupted { count: usize },
    /// The async runtime or a helper thread could not be started.
    #[error("cannot start: {0}")]
    Start(#[source] io::Error),
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        1
    }

    /// True when stdout was closed by its reader (`chatctl watch | head -1`):
    /// not worth a message, the reader got what it wanted.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// An error of a Watch stream: a status peerd sent is shown as is, a
    /// broken connection means the daemon went away.
    pub(crate) fn from_stream(status: tonic::Status) -> Error {
        if is_local(&status) {
            let detail = broken_words(&status).unwrap_or_else(|| one_line(status.message()));
            Error::Stopped { detail: Some(detail) }
        } else {
            Error::Status(status)
        }
    }
}

/// True when tonic built this status on our side (a transport failure)
/// rather than decoding it from peerd's answer: only local statuses carry
/// a source error.
fn is_local(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// How the connection to peerd broke, from the typed cause behind a
/// status our transport made (tonic's own text says "h2 protocol error"
/// whatever happened).
fn broken_words(status: &tonic::Status) -> Option<String> {
    Some(match Broken::of(status)? {
        Broken::Closed | Broken::Dropped => "it closed the connection without a goodbye".to_owned(),
        Broken::Reset => "the connection was reset".to_owned(),
        Broken::Ended { reason, .. } => format!("it ended the call: HTTP/2 {reason}"),
    })
}

/// The text after `error: ` for a status: peerd's message, made one line.
pub(crate) fn status_line(status: &tonic::Status) -> String {
    let message = broken_words(status).unwrap_or_else(|| one_line(status.message()));
    let message = if message.is_empty() { status.code().description().to_owned() } else { message };
    if is_local(status) {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal => {
                format!("lost the connection to peerd: {message}")
            }
            _ => message,
        }
    } else {
        message
    }
}

/// Collapses line breaks so that an error stays one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn daemon_statuses_show_their_message_verbatim() {
        let table = [
            (Code::NotFound, "bob is not online"),
            (Code::FailedPrecondition, "bob is busy"),
            (Code::FailedPrecondition, "already connected to carol"),
            (Code::InvalidArgument, "you cannot connect to yourself"),
            (Code::FailedPrecondition, "not connected"),
            (Code::InvalidArgument, "message too long: 70000 bytes, the limit is 65536 bytes"),
            (Code::InvalidArgument, "empty message"),
            (Code::InvalidArgument, "invalid name \"a b\""),
            (Code::DeadlineExceeded, "timed out waiting for delivered after 10 s"),
        ];
        for (code, message) in table {
            let err = Error::Status(Status::new(code, message));
            assert_eq!(err.to_string(), message);
            assert_eq!(err.exit_code(), 1);
        }
    }

    #[test]
    fn empty_and_multiline_messages_become_one_line() {
        assert_eq!(Error::Status(Status::new(Code::Internal, "")).to_string(), "Internal error");
        assert_eq!(
            Error::Status(Status::new(Code::Internal, "first\nsecond\r\n")).to_string(),
            "first; second"
        );
    }

    #[test]
    fn transport_failures_say_the_connection_was_lost() {
        let status = Status::from_error(Box::new(io::Error::other("connection reset")));
        assert!(Error::Status(status).to_string().starts_with("lost the connection to peerd"));
        let status = Status::from_error(Box::new(io::Error::other("reset")));
        assert!(Error::from_stream(status).to_string().starts_with("peerd stopped"));
        let status = Status::new(Code::Internal, "boom");
        assert_eq!(Error::from_stream(status).to_string(), "boom");
    }

    /// tonic's words are the same whatever broke; the typed cause behind
    /// them is what the user is told.
    #[test]
    fn a_daemon_that_went_away_is_said_plainly() {
        let gone = |kind: io::ErrorKind| {
            let mut status = Status::unknown("h2 protocol error: error reading a body");
            status.set_source(std::sync::Arc::new(io::Error::new(kind, "as h2 says it")));
            status
        };
        for kind in [io::ErrorKind::BrokenPipe, io::ErrorKind::UnexpectedEof] {
            assert_eq!(
                Error::from_stream(gone(kind)).to_string(),
                "peerd stopped (it closed the connection without a goodbye)"
            );
        }
        assert_eq!(
            Error::Status(gone(io::ErrorKind::ConnectionReset)).to_string(),
            "lost the connection to peerd: the connection was reset"
        );
    }

    #[test]
    fn not_running_names_the_socket_and_the_remedy() {
        let err = Error::NotRunning { path: "/tmp/nope.sock".into() };
        assert_eq!(
            err.to_string(),
            "peerd is not running at /tmp/nope.sock (start it with: peerd start --socket /tmp/nope.sock)"
        );
        let err = Error::NotRunning { path: crate::client::builtin_socket() };
        assert!(err.to_string().ends_with("(start it with: peerd start)"), "{err}");
    }

    #[test]
    fn a_closed_pipe_is_quiet() {
        assert!(Error::Stdout(io::ErrorKind::BrokenPipe.into()).is_broken_pipe());
        assert!(!Error::Stdout(io::ErrorKind::Other.into()).is_broken_pipe());
        assert!(!Error::Stopped { detail: None }.is_broken_pipe());
    }
}
