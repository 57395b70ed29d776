//! How an HTTP/2 stream broke under us, read from the typed errors behind a
//! tonic status (tonic → hyper → h2 → io), never from their text.
//!
//! Every such status says "h2 protocol error: error reading a body from
//! connection" whatever happened, and that is what users saw when a peer
//! crashed or stopped answering. The cause is in the chain, but h2's error
//! does not hand it on through `Error::source`: it is reached only through
//! `h2::Error::get_io` and `reason`, which is why this crate names h2.

use std::error::Error;
use std::io;

/// The typed cause of a transport failure under a call or stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The other end's connection ended mid-stream with no goodbye at all
    /// (an end of file without TLS's close_notify): its process stopped
    /// or crashed, or its machine went away.
    Closed,
    /// The connection ended while the stream was still open, with no error
    /// of its own: closed here after its keepalive pings went unanswered,
    /// or by the other end without an HTTP/2 goodbye. On a TLS link the
    /// second is rare (a vanished end is [`Broken::Closed`]), so there it
    /// means the other end stopped answering.
    Dropped,
    /// The other end's system reset or aborted the connection.
    Reset,
    /// The other end ended the stream (`RST_STREAM`) or the whole
    /// connection (`GOAWAY`) with an HTTP/2 error code.
    Ended {
        /// The HTTP/2 error code it sent.
        reason: h2::Reason,
        /// Whether it ended the whole connection (`GOAWAY`).
        connection: bool,
    },
}

impl Broken {
    /// The cause behind `status`, when our own transport made it from a
    /// failure it can name; `None` for a status the other end sent, or a
    /// failure of another kind.
    pub fn of(status: &tonic::Status) -> Option<Broken> {
        Broken::in_chain(status.source())
    }

    /// The first cause this can name along `err`'s chain of sources.
    pub fn in_chain(mut err: Option<&(dyn Error + 'static)>) -> Option<Broken> {
        while let Some(e) = err {
            if let Some(h2) = e.downcast_ref::<h2::Error>() {
                if let Some(io) = h2.get_io() {
                    return Broken::of_io(io);
                }
                return match h2.reason() {
                    Some(reason) if h2.is_remote() => {
                        Some(Broken::Ended { reason, connection: h2.is_go_away() })
                    }
                    _ => None,
                };
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return Broken::of_io(io);
            }
            err = e.source();
        }
        None
    }

    fn of_io(io: &io::Error) -> Option<Broken> {
        match io.kind() {
            io::ErrorKind::UnexpectedEof => Some(Broken::Closed),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                Some(Broken::Reset)
            }
            // h2 gives its open streams a BrokenPipe of its own making
            // (no OS error behind it) when the connection under them ends;
            // EPIPE from the system is a write to a socket the other end
            // closed.
            io::ErrorKind::BrokenPipe if io.raw_os_error().is_none() => Some(Broken::Dropped),
            io::ErrorKind::BrokenPipe => Some(Broken::Closed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as tonic makes it from a transport failure, `cause` behind it.
    fn local(cause: impl Error + Send + Sync + 'static) -> tonic::Status {
        let mut status = tonic::Status::unknown("h2 protocol error: error reading a body");
        status.set_source(std::sync::Arc::new(cause));
        status
    }

    /// An error like the ones h2 makes itself, with no OS error behind it.
    fn h2s(kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, "stream closed because of a broken pipe")
    }

    #[test]
    fn an_end_of_file_without_close_notify_is_closed() {
        assert_eq!(Broken::of(&local(h2s(io::ErrorKind::UnexpectedEof))), Some(Broken::Closed));
    }

    #[test]
    fn h2s_own_broken_pipe_is_dropped_and_the_systems_is_closed() {
        assert_eq!(Broken::of(&local(h2s(io::ErrorKind::BrokenPipe))), Some(Broken::Dropped));
        // EPIPE, 32 on every Unix this builds for.
        assert_eq!(Broken::of(&local(io::Error::from_raw_os_error(32))), Some(Broken::Closed));
    }

    #[test]
    fn resets_and_aborts_are_reset() {
        for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::ConnectionAborted] {
            assert_eq!(Broken::of(&local(h2s(kind))), Some(Broken::Reset), "{kind:?}");
        }
    }

    #[test]
    fn the_cause_is_found_further_down_the_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error reading a body from connection")
            }
        }
        impl Error for Wrapper {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let status = local(Wrapper(h2s(io::ErrorKind::ConnectionReset)));
        assert_eq!(Broken::of(&status), Some(Broken::Reset));
    }

    #[test]
    fn what_it_cannot_name_is_none() {
        // One the other end sent: no source.
        assert_eq!(Broken::of(&tonic::Status::unavailable("busy")), None);
        assert_eq!(Broken::of(&local(h2s(io::ErrorKind::Other))), None);
        // A reason h2 gave itself, not one the other end sent.
        assert_eq!(Broken::of(&local(h2::Error::from(h2::Reason::PROTOCOL_ERROR))), None);
    }
}
