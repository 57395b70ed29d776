//! The connection to peerd: gRPC over its Unix control socket.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use peerchat::v1 as pb;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::Error;

/// A Control client on an open channel. Cheap to clone (one connection).
pub type Control = pb::control_client::ControlClient<Channel>;

/// Big enough for any answer of the daemon: a `history` answer holds at
/// most 32 MiB of text (and at most 10,000 entries) with room for its
/// other fields.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long an ordinary request may take before we give up on peerd.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `connect` may take: the daemon's longest dial, the callee's
/// user's time to accept, and margins, so that what we print is always the
/// daemon's own answer.
pub(crate) const CONNECT_ANSWER_TIMEOUT: Duration = peerchat_core::timeouts::CONNECT_ANSWER_TIMEOUT;

/// The socket to use when `--socket`/`PEERCHAT_SOCKET` is not given: the
/// same rule peerd applies: the config file's `socket` (the file named by
/// `PEERCHAT_CONFIG`, or `$XDG_CONFIG_HOME/peerchat/config.toml`), else
/// the default location (both ask `dirs` for the runtime dir).
pub(crate) fn default_socket() -> PathBuf {
    use peerchat_core::config_file;
    let named = std::env::var_os("PEERCHAT_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
    let file = named.clone().or_else(|| config_file::default_path(dirs::config_dir().as_deref()));
    match file.as_deref().map(config_file::load) {
        Some(Ok(Some(settings))) => {
            if let Some(socket) = settings.socket.filter(|s| !s.value.is_empty()) {
                return PathBuf::from(socket.value);
            }
        }
        // peerd refuses to start with such a file and says why; here it
        // only means the default place.
        Some(Err(e)) => crate::output::note(&format!("warning: {e}")),
        Some(Ok(None)) => {
            if let Some(path) = &named {
                let path = path.display();
                crate::output::note(&format!(
                    "warning: the config file {path} (PEERCHAT_CONFIG) does not exist"
                ));
            }
        }
        None => {}
    }
    builtin_socket()
}

/// The socket's place when neither a flag, the environment nor a config
/// file names one.
pub(crate) fn builtin_socket() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    peerchat_core::paths::default_socket(dirs::runtime_dir().as_deref(), uid)
}

/// How to start the peerd that `chatctl` looked for at `socket`: a plain
/// `peerd start` listens elsewhere unless `socket` is the usual place.
pub(crate) fn start_command(socket: &Path) -> String {
    if socket == builtin_socket() {
        "peerd start".to_owned()
    } else {
        format!("peerd start --socket {}", socket.display())
    }
}

/// Connects to peerd at `path`. A missing socket or nobody listening is
/// [`Error::NotRunning`].
pub async fn connect(path: &Path) -> Result<Control, Error> {
    let target = path.to_owned();
    // The URI is required by the API but unused: the connector ignores it.
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(target).await?;
                served_by_us(&stream)?;
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|err| connect_error(path, &err))?;
    Ok(pb::control_client::ControlClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// Whether the process at the other end of `stream` runs as this user.
/// Another user's process there (one that took the socket's place in a
/// folder it could write to) would read every message we send it; peerd
/// checks its clients the same way.
fn served_by_us(stream: &tokio::net::UnixStream) -> io::Result<()> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = unsafe { libc::getuid() };
    let theirs = stream.peer_cred()?.uid();
    if theirs == me {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("permission denied: it is served by uid {theirs}, not by you (uid {me})"),
    ))
}

/// Classifies a failed connect by the I/O error underneath it.
fn connect_error(path: &Path, err: &(dyn std::error::Error + 'static)) -> Error {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            if io_err.kind() == io::ErrorKind::PermissionDenied {
                return Error::Connect {
                    path: path.to_owned(),
                    source: io::Error::new(io_err.kind(), io_err.to_string()),
                };
            }
            // EAGAIN on a Unix socket: a daemon is there, with its listen
            // queue full (it takes so many connections at once).
            if io_err.kind() == io::ErrorKind::WouldBlock {
                let why = "its queue of new connections is full (too many open); try again shortly";
                return Error::Connect {
                    path: path.to_owned(),
                    source: io::Error::new(io_err.kind(), why),
                };
            }
            break;
        }
        source = e.source();
    }
    Error::NotRunning { path: path.to_owned() }
}

/// Runs one request with a time limit, unwrapping its answer.
pub(crate) async fn call<T>(
    action: &'static str,
    limit: Duration,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Error::Status(status)),
        Err(_) => Err(Error::NoAnswer { action, secs: limit.as_secs() }),
    }
}

/// Every peer online: pages through ListPeers. Returns the peers and this
/// daemon's own name.
pub(crate) async fn list_all(client: &mut Control) -> Result<(Vec<pb::Peer>, String), Error> {
    let mut peers = Vec::new();
    let mut you = String::new();
    let mut token = String::new();
    loop {
        let request = pb::ListPeersRequest { page_size: 1000, page_token: token.clone() };
        let page = call("list the peers", ANSWER_TIMEOUT, client.list_peers(request)).await?;
        peers.extend(page.peers);
        if !page.you.is_empty() {
            you = page.you;
        }
        // A token that does not move would loop forever.
        if page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    Ok((peers, you))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_and_a_refusal_are_not_said_to_be_no_daemon() {
        let path = Path::new("/run/x/peerd.sock");
        let said = |kind: io::ErrorKind| connect_error(path, &io::Error::from(kind)).to_string();
        assert!(said(io::ErrorKind::NotFound).contains("not running"));
        assert!(said(io::ErrorKind::ConnectionRefused).contains("not running"));
        let full = said(io::ErrorKind::WouldBlock);
        assert!(full.contains("queue of new connections is full"), "{full}");
        assert!(!full.contains("not running"), "{full}");
        assert!(said(io::ErrorKind::PermissionDenied).starts_with("cannot connect to peerd at"));
    }
}
