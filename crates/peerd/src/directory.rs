//! The connections to the directory's replicas, which one is in use, and
//! looking names up.
//!
//! `--directory` names one directory or several replicas of it (sharing one
//! store and one key). Each URL gets its own lazily connected channel, and
//! one of them is *current*: every caller uses the current one, and a caller
//! that finds it unreachable moves everybody on to the next (round-robin).
//! peerd does not go back to the first one when it returns: any replica
//! serves the same directory, and staying put avoids flapping.
//!
//! Only *unreachable* outcomes move on (see [`Verdict`]): a replica that
//! answers NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT or PERMISSION_DENIED
//! has answered for the whole directory, and asking the next would only get
//! the same answer.
//!
//! `http://` URLs are plain gRPC (the default, as SPEC has it). `https://`
//! URLs are TLS 1.3 with the directory's key pinned: the fingerprint given
//! with `--directory-key` (for every replica: they share the directory's
//! key), else the key recorded in `<data-dir>/known_directories` for that
//! URL's authority the first time (trust on first use). A replica that shows
//! another key is not talked to at all, so it cannot hand out wrong peer
//! keys; peerd moves on to the next one.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use peerchat::v1 as pb;
use peerchat::v1::directory_client::DirectoryClient;
use prost::Message as _;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

use crate::config::Config;
use crate::error::{Error, with_causes};
use crate::tls::{self, DirectoryPin};

/// How long one directory call may take.
pub(crate) const DIRECTORY_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long connecting to the directory may take.
const DIRECTORY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings while a call is open (the presence feed is one for as long
/// as someone watches): a directory that vanished without closing the
/// connection (host down, cable pulled) would otherwise leave the feed
/// silent, and presence stale, for as long as TCP takes to notice. Ours
/// is a tonic server, which does not punish pings.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer taken from a directory. A page of List holds at most
/// 1,000 peers of well under 400 bytes each; a directory that sends more
/// (a few MiB of two-byte entries would be millions of peers in memory)
/// gets a clear error instead.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The directory's replicas and which one is in use; cheap to clone, and
/// every clone shares the choice.
#[derive(Debug, Clone)]
pub(crate) struct Directories {
    replicas: Arc<[Replica]>,
    current: Arc<Cursor>,
}

#[derive(Debug)]
struct Replica {
    url: String,
    client: DirectoryClient<Channel>,
}

impl Directories {
    /// One lazily connected channel per URL of `config`; nothing is dialed
    /// until the first call.
    pub(crate) fn connect(config: &Config) -> Result<Directories, Error> {
        let replicas = config
            .directories
            .iter()
            .map(|url| {
                let channel = channel(url, config)?;
                let client =
                    DirectoryClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
                Ok(Replica { url: url.clone(), client })
            })
            .collect::<Result<Arc<[Replica]>, Error>>()?;
        if replicas.is_empty() {
            return Err(Error::Usage("--directory names no directory".into()));
        }
        let current = Arc::new(Cursor::new(replicas.len()));
        Ok(Directories { replicas, current })
    }

    /// How many replicas there are (at least one).
    pub(crate) fn len(&self) -> usize {
        self.replicas.len()
    }

    /// The replica in use, by index (for [`Directories::failed`]) and
    /// client.
    pub(crate) fn current(&self) -> (usize, DirectoryClient<Channel>) {
        let index = self.current.get();
        (index, self.replicas[index].client.clone())
    }

    /// The URL of the replica at `index` (an index from
    /// [`Directories::current`]).
    pub(crate) fn url(&self, index: usize) -> &str {
        &self.replicas[index % self.replicas.len()].url
    }

    /// The URL of the replica in use, for `chatctl status`.
    pub(crate) fn current_url(&self) -> &str {
        self.url(self.current.get())
    }

    /// The replica at `index` did not answer: moves on to the next one,
    /// unless someone already did. Returns the index now in use.
    pub(crate) fn failed(&self, index: usize) -> usize {
        self.current.advance_from(index)
    }

    /// Runs `call` on the current replica and, while replicas are
    /// unreachable, on the next ones: each at most once, all within
    /// `budget`.
    ///
    /// A replica gets at most an even share of what is left of the budget,
    /// so that one that hangs (instead of refusing the connection) leaves
    /// time to ask the others. With a single URL that share is the whole
    /// budget, as before there were replicas.
    pub(crate) async fn call<T, F, Fut>(&self, budget: Duration, mut call: F) -> Result<T, Failed>
    where
        F: FnMut(DirectoryClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + budget;
        let mut last = String::from("the directory did not answer in time");
        for tried in 0..self.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let (index, client) = self.current();
            let share = left / u32::try_from(self.len() - tried).unwrap_or(u32::MAX);
            let why = match tokio::time::timeout(share, call(client)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => match Verdict::of(&status) {
                    Verdict::Answer => return Err(Failed::Answer(status)),
                    Verdict::Unreachable | Verdict::WrongKey => reason(&status),
                },
                Err(_) => "the directory did not answer in time".to_owned(),
            };
            let next = self.failed(index);
            if tried + 1 < self.len() {
                tracing::info!(%why, "directory {} unreachable; trying {}", self.url(index), self.url(next));
            }
            last = self.labelled(index, why);
        }
        Err(Failed::Unreachable(last))
    }

    /// `why` about the replica at `index`, naming it when there are several
    /// (with one, the user knows which).
    pub(crate) fn labelled(&self, index: usize, why: String) -> String {
        if self.len() > 1 { format!("{}: {why}", self.url(index)) } else { why }
    }
}

/// Why [`Directories::call`] has no response.
#[derive(Debug)]
pub(crate) enum Failed {
    /// A replica answered with this error (an answer for the whole
    /// directory, not a reason to ask another replica).
    Answer(Status),
    /// No replica answered; the last one's reason.
    Unreachable(String),
}

/// Which replica is in use: an index that only moves forward, round-robin.
/// Kept apart from the channels so that the switching rule is plain data.
#[derive(Debug)]
struct Cursor {
    index: AtomicUsize,
    len: usize,
}

impl Cursor {
    fn new(len: usize) -> Cursor {
        Cursor { index: AtomicUsize::new(0), len: len.max(1) }
    }

    fn get(&self) -> usize {
        self.index.load(Ordering::Acquire)
    }

    /// Moves past `failed` only if it is still the one in use: callers that
    /// saw the same replica fail at the same time move on once, not once
    /// each (which would skip the next replica without asking it).
    fn advance_from(&self, failed: usize) -> usize {
        let next = (failed + 1) % self.len;
        match self.index.compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => next,
            Err(now) => now,
        }
    }
}

/// What a failed directory call says about the replica that was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The directory answered: the same answer is due from any replica.
    Answer,
    /// No answer from this replica (transport error, deadline,
    /// UNAVAILABLE): another may answer.
    Unreachable,
    /// This replica showed a key other than the pinned one: not to be
    /// talked to, but another may be the real thing.
    WrongKey,
}

impl Verdict {
    /// Decided from the status code and the typed errors behind it, never
    /// from the message. A status that carries a source error was made by
    /// our own transport (the directory sends only code and message), so it
    /// means no answer whatever its code (a connection cut mid-call can come
    /// back as UNKNOWN or INTERNAL).
    pub(crate) fn of(status: &Status) -> Verdict {
        if tls::is_directory_key_mismatch(status) {
            return Verdict::WrongKey;
        }
        match status.code() {
            // CANCELLED is what tonic makes of its own per-call timeout.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Verdict::Unreachable,
            _ if status.source().is_some() => Verdict::Unreachable,
            _ => Verdict::Answer,
        }
    }
}

/// The typed reason a directory's refusal carries in its details, if any
/// (`Unspecified` for none, or for one this version does not know).
pub(crate) fn refusal_reason(status: &Status) -> pb::directory_refusal::Reason {
    let details = pb::DirectoryRefusal::decode(status.details()).unwrap_or_default();
    pb::directory_refusal::Reason::try_from(details.reason).unwrap_or_default()
}

/// A status on one line with the causes behind it ("transport error: tcp
/// connect error: Connection refused"), for the user and the log.
pub(crate) fn reason(status: &Status) -> String {
    with_causes(status.message().to_owned(), status.source())
}

/// A lazily connected channel to the directory at `url`; it reconnects by
/// itself when the directory comes back.
fn channel(url: &str, config: &Config) -> Result<Channel, Error> {
    let bad = |e: &dyn std::fmt::Display| Error::Usage(format!("--directory {url}: {e}"));
    let uri: Uri = url.parse().map_err(|e| bad(&e))?;
    let Some(rest) = url.strip_prefix("https://") else {
        return Ok(Endpoint::from(uri)
            .connect_timeout(DIRECTORY_CONNECT_TIMEOUT)
            .timeout(DIRECTORY_CALL_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy());
    };
    let host = uri.host().ok_or_else(|| bad(&"no host"))?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let authority = format!("{}:{port}", uri.host().unwrap_or_default());
    let pin = DirectoryPin {
        authority: authority.clone(),
        given: config.directory_key.clone(),
        known_file: config.data_dir.join("known_directories"),
    };
    let tls = TlsConnector::from(tls::directory_client_config(pin)?);
    let server_name = ServerName::try_from(host.clone()).map_err(|e| bad(&e))?;
    // The scheme only matters to tonic's own TLS, which we do not use: the
    // connector below does the handshake.
    let endpoint = Endpoint::from_shared(format!("http://{}", rest.trim_end_matches('/')))
        .map_err(|e| bad(&e))?
        .connect_timeout(DIRECTORY_CONNECT_TIMEOUT)
        .timeout(DIRECTORY_CALL_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, host, name) = (tls.clone(), host.clone(), server_name.clone());
        async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// What the directory says about one name.
#[derive(Debug)]
pub(crate) enum Listing {
    Online(pb::Peer),
    NotOnline,
    /// No answer, or an error: the reason.
    Unknown(String),
}

/// Looks `name` up in the directory (moving on from replicas that do not
/// answer), within the call timeout.
pub(crate) async fn lookup(directories: &Directories, name: &str) -> Listing {
    let request = pb::LookupRequest { name: name.to_owned() };
    let asked = directories
        .call(DIRECTORY_CALL_TIMEOUT, |mut client| {
            let request = request.clone();
            async move { client.lookup(request).await }
        })
        .await;
    match asked {
        Ok(resp) => match resp.peer {
            Some(peer) => Listing::Online(peer),
            None => Listing::NotOnline,
        },
        Err(Failed::Answer(s)) if s.code() == Code::NotFound => Listing::NotOnline,
        Err(Failed::Answer(s)) => Listing::Unknown(s.message().to_owned()),
        Err(Failed::Unreachable(why)) => Listing::Unknown(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_replica_moves_the_choice_to_the_next_round_robin() {
        let cursor = Cursor::new(3);
        assert_eq!(cursor.get(), 0, "the first URL is tried first");
        assert_eq!(cursor.advance_from(0), 1);
        assert_eq!(cursor.advance_from(1), 2);
        assert_eq!(cursor.advance_from(2), 0, "after the last comes the first");
        assert_eq!(cursor.get(), 0);
    }

    #[test]
    fn concurrent_failures_of_one_replica_move_on_once() {
        let cursor = Cursor::new(3);
        // Three callers all saw replica 0 fail.
        assert_eq!(cursor.advance_from(0), 1);
        assert_eq!(cursor.advance_from(0), 1, "a stale failure does not skip replica 1");
        assert_eq!(cursor.advance_from(0), 1);
        assert_eq!(cursor.get(), 1);
    }

    #[test]
    fn a_single_directory_stays_chosen() {
        let cursor = Cursor::new(1);
        assert_eq!(cursor.advance_from(0), 0);
        assert_eq!(cursor.get(), 0);
    }

    #[test]
    fn only_no_answer_is_a_reason_to_ask_another_replica() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled] {
            assert_eq!(Verdict::of(&Status::new(code, "x")), Verdict::Unreachable, "{code:?}");
        }
        for code in [
            Code::NotFound,
            Code::AlreadyExists,
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
        ] {
            assert_eq!(Verdict::of(&Status::new(code, "unavailable")), Verdict::Answer, "{code:?}");
        }
    }

    #[test]
    fn a_local_transport_failure_is_no_answer_whatever_its_code() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let status = Status::from_error(Box::new(reset));
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(Verdict::of(&status), Verdict::Unreachable);
    }
}
