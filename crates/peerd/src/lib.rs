//! peerd: one long-lived daemon per user. It owns the user's listening
//! socket, keeps the user registered in the directory, and holds one
//! conversation at a time over a duplex gRPC stream to another peerd.
//!
//! # Layout
//! - [`run`]: wires the parts together and owns shutdown.
//! - `driver`: the one task that owns the conversation session (from
//!   `peerchat-core`), the history writer and the links; `driver::api` is
//!   its front door (the requests it takes, the answers it gives).
//! - `link`: the peer-to-peer `Chat` stream — the bounded listener, the
//!   callee's checks, dialing, frame checks, typed refusals. It knows
//!   nothing of the driver: it hands out links and offers.
//! - `presence`: registration, heartbeats and status in the directory;
//!   `directory`: the (optionally TLS, key-pinned) channels to its
//!   replicas, which one is in use, lookups.
//! - `roster`: who else is online, followed live from the directory's
//!   presence feed while a control client watches (and only then).
//! - `control`: the `Control` service chatctl uses; `control_socket`: its
//!   Unix socket file.
//! - `served`: the one connection type both gRPC servers take (so their
//!   server code is compiled once).
//! - `history`: the per-peer history files.
//! - [`consent`]: the accept policy and the requests waiting for the
//!   user's answer; `blocked`: the peers the user blocked (on disk).
//! - `data_lock`: one daemon per data dir; `identity`: the ed25519 key
//!   pair; `tls`: certificates from it and the pinning verifiers;
//!   `known_peers`: the keys we have talked to.
//! - [`config`]: flags, environment, config file and defaults, resolved;
//!   [`service`]: `peerd install-service`'s systemd user unit;
//!   [`completions`]: `peerd completions`' scripts (generated, as text).
//! - [`launch`] and [`stop`]: `peerd start` (detaching) and `peerd stop`;
//!   [`logging`]: which log lines `RUST_LOG` asks for.
//!
//! # Shutdown
//! One `CancellationToken` reaches every task. On cancellation the driver
//! says goodbye to the peer and waits (bounded) for the close, the presence
//! task unregisters, the roster's feed closes its stream to the directory,
//! the servers finish their streams, and the socket file is removed.

pub mod allocator;
mod blocked;
pub mod cli;
pub mod completions;
pub mod config;
pub mod consent;
mod control;
mod control_socket;
mod data_lock;
mod deadline;
mod directory;
mod driver;
pub mod error;
#[cfg(test)]
mod fake_directory;
pub mod fuzzing;
mod history;
mod identity;
mod known_peers;
pub mod launch;
mod link;
pub mod logging;
mod presence;
mod roster;
mod served;
pub mod service;
pub mod stop;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat_core::session::Presence;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

pub use config::Config;
pub use error::Error;

use crate::blocked::Blocked;
use crate::control::{ControlService, Facts};
use crate::driver::api::REQUEST_QUEUE;
use crate::driver::{Driver, Gate, OFFER_QUEUE, Wiring};
use crate::identity::Identity;
use crate::known_peers::KnownPeers;
use crate::link::callee::ChatService;
use crate::link::dial::Dialer;
use crate::presence::{DirectoryState, FirstAttempt, PresenceTask};
use crate::roster::Roster;
use crate::served::ConnInfo;
use crate::tls::Credentials;

/// Largest control request: a maximal message plus room; larger ones get
/// tonic's RESOURCE_EXHAUSTED before any handler runs.
const MAX_CONTROL_REQUEST: usize = 1024 * 1024;
/// How long the servers may take to finish after the driver is done.
const SERVER_GRACE: Duration = Duration::from_secs(3);

/// What a started daemon reports once it is ready.
#[derive(Debug, Clone)]
pub struct Ready {
    pub name: String,
    pub listen: SocketAddr,
    pub pid: u32,
    /// False when the directory could not be reached at start (peerd keeps
    /// trying in the background).
    pub registered: bool,
    pub directory_error: Option<String>,
}

impl Ready {
    /// The readiness line on stdout, which scripts and tests wait for.
    pub fn line(&self) -> String {
        format!("peerd {} listening on {} (pid {})", self.name, self.listen, self.pid)
    }
}

/// Runs the daemon until `shutdown` is cancelled. `ready` is called once
/// the control socket answers and the first registration attempt is done.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(Ready),
) -> Result<(), Error> {
    // Our own token, so that a failed start can stop what it started.
    let token = shutdown.child_token();
    identity::ensure_private_dir(&config.data_dir)?;
    // Held until `run` returns: before the key is read or made, so that a
    // second daemon on this data dir neither makes a key nor takes the name.
    // (Off the runtime's thread: a refused start waits a moment for the
    // holder's note.)
    let (dir, name) = (config.data_dir.clone(), config.name.clone());
    let data_dir_lock = tokio::task::spawn_blocking(move || data_lock::lock(&dir, &name))
        .await
        .map_err(|e| Error::Other(format!("locking the data dir: {e}")))??;
    let identity = Arc::new(Identity::load_or_create(&config.data_dir)?);
    let credentials = Credentials::new(&identity)?;
    let known = KnownPeers::load(&config.data_dir)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.listen, source })?;
    let listen =
        listener.local_addr().map_err(|source| Error::Listen { addr: config.listen, source })?;
    let (control_listener, socket_file) = control_socket::bind(&config.socket)?;
    let history = history::History::open(&config.data_dir)?;

    let directory = directory::Directories::connect(&config)?;

    let (wanted_tx, wanted_rx) = watch::channel(Presence::Available);
    let (published_tx, published_rx) = watch::channel(None);
    let (state_tx, state_rx) = watch::channel(DirectoryState::Registering);
    let (first_tx, first_rx) = oneshot::channel();
    let presence = tokio::spawn(
        PresenceTask {
            directories: directory.clone(),
            name: config.name.to_string(),
            identity: identity.clone(),
            advertise: config.advertise,
            port: listen.port(),
            wanted: wanted_rx,
            published: published_tx,
            state: state_tx,
            first: Some(first_tx),
        }
        .run(token.clone()),
    );

    let (driver_tx, requests) = mpsc::channel(REQUEST_QUEUE);
    let (offer_tx, offers) = mpsc::channel(OFFER_QUEUE);
    let dialer = Dialer {
        me: config.name.clone(),
        directory: directory.clone(),
        credentials: credentials.clone(),
        known: known.clone(),
        reached: Default::default(),
    };
    let wiring = Wiring { requests, offers, dialer: Arc::new(dialer), presence: wanted_tx };
    let gate = Gate {
        policy: config.accept,
        blocked: Blocked::load(&config.data_dir)?,
        ask_for: consent::ASK_TIMEOUT,
    };
    // What an earlier run left: up to 256 MiB of each history file read,
    // so off the runtime's thread.
    let dir = config.data_dir.clone();
    let recovered = tokio::task::spawn_blocking(move || history::recover(&dir))
        .await
        .map_err(|e| Error::Other(format!("reading back the history: {e}")))?;
    let driver = Driver::new(
        config.name.clone(),
        config.resume_window,
        (history, recovered),
        config.data_dir.clone(),
        gate,
        wiring,
    );
    let driver = tokio::spawn(driver.run(token.clone()));

    let chat = ChatService::new(offer_tx, config.name.clone(), directory.clone(), known.clone());
    let chat_server = Server::builder()
        .http2_keepalive_interval(Some(link::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(link::KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(link::MAX_STREAMS_PER_CONNECTION))
        .add_service(
            pb::chat_server::ChatServer::new(chat)
                .max_decoding_message_size(link::MAX_FRAME_BYTES)
                .max_encoding_message_size(link::MAX_FRAME_BYTES),
        )
        .serve_with_incoming_shutdown(
            link::listener::connections(
                listener,
                credentials.server_config()?,
                link::MAX_CONNECTIONS,
                link::MAX_CONNECTIONS_PER_SOURCE,
                token.clone(),
            ),
            wait_for_driver(token.clone()),
        );
    let chat_server = tokio::spawn(chat_server);

    let control = ControlService {
        me: Facts {
            name: config.name.clone(),
            listen: listen.to_string(),
            data_dir: config.data_dir.clone(),
            key: identity.fingerprint(),
            advertise: config.advertise,
        },
        driver: driver_tx,
        directory: directory.clone(),
        directory_state: state_rx,
        published: published_rx,
        shutdown: token.clone(),
        known: known.clone(),
        roster: Roster::new(directory, roster::POLL_INTERVAL, token.clone()),
    };
    let owner = config::uid();
    let control_server = Server::builder()
        .add_service(InterceptedService::new(
            pb::control_server::ControlServer::new(control)
                .max_decoding_message_size(MAX_CONTROL_REQUEST)
                .max_encoding_message_size(usize::MAX),
            move |request: tonic::Request<()>| same_user(request, owner),
        ))
        .serve_with_incoming_shutdown(
            control_socket::connections(control_listener, control_socket::MAX_CONNECTIONS),
            wait_for_driver(token.clone()),
        );
    let control_server = tokio::spawn(control_server);

    let started = tokio::select! {
        first = first_rx => first.ok(),
        _ = token.cancelled() => None,
    };
    let outcome = match started {
        Some(FirstAttempt::Taken) => Err(Error::Taken(config.name.to_string())),
        Some(FirstAttempt::Rejected(why)) => {
            Err(Error::Other(format!("the directory refused the registration: {why}")))
        }
        Some(FirstAttempt::Registered) => {
            ready(Ready {
                name: config.name.to_string(),
                listen,
                pid: std::process::id(),
                registered: true,
                directory_error: None,
            });
            Ok(())
        }
        Some(FirstAttempt::Unreachable(why)) => {
            ready(Ready {
                name: config.name.to_string(),
                listen,
                pid: std::process::id(),
                registered: false,
                directory_error: Some(why),
            });
            Ok(())
        }
        // Cancelled before the first attempt finished.
        None => Ok(()),
    };
    if outcome.is_ok() {
        token.cancelled().await;
    }
    token.cancel();
    tracing::info!("shutting down");

    let grace = link::CLOSE_GRACE + Duration::from_secs(1);
    let driver_stopped = tokio::time::timeout(grace, driver).await.is_ok();
    if !driver_stopped {
        tracing::warn!("the driver did not stop in time");
    }
    let _ =
        tokio::time::timeout(directory::DIRECTORY_CALL_TIMEOUT + Duration::from_secs(1), presence)
            .await;
    for (name, server) in [("chat", chat_server), ("control", control_server)] {
        match tokio::time::timeout(SERVER_GRACE, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(server = name, error = %e, "server error"),
            Ok(Err(e)) => tracing::warn!(server = name, error = %e, "server task failed"),
            Err(_) => tracing::warn!(server = name, "server did not stop in time"),
        }
    }
    // The data dir is free before the socket goes: `peerd stop` returns
    // once the socket is gone, and a start right after must find the dir
    // free too. Not while the driver may still write the history.
    if driver_stopped {
        drop(data_dir_lock);
    }
    drop(socket_file);
    tracing::info!("stopped");
    outcome
}

/// Only the daemon's own user may use the control socket. The 0600 socket
/// in a 0700 folder already says so; this checks the connecting process's
/// uid (SO_PEERCRED) as well, so that a loosened file mode, or root, does
/// not open the daemon to anyone else.
fn same_user(request: tonic::Request<()>, owner: u32) -> Result<tonic::Request<()>, tonic::Status> {
    let uid = match request.extensions().get::<ConnInfo>() {
        Some(ConnInfo::Local { uid }) => *uid,
        _ => None,
    };
    match uid {
        Some(uid) if uid == owner => Ok(request),
        Some(uid) => Err(tonic::Status::permission_denied(format!(
            "permission denied: this peerd belongs to uid {owner}, not uid {uid}"
        ))),
        None => Err(tonic::Status::permission_denied(
            "permission denied: cannot tell who is connecting",
        )),
    }
}

/// The servers stop once shutdown starts; their streams end when the driver
/// drops them, which it does after saying goodbye.
async fn wait_for_driver(token: CancellationToken) {
    token.cancelled().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owners_uid_gets_through_the_control_socket() {
        let asking = |info: Option<ConnInfo>| {
            let mut request = tonic::Request::new(());
            if let Some(info) = info {
                request.extensions_mut().insert(info);
            }
            same_user(request, 1000).map(|_| ()).map_err(|s| (s.code(), s.message().to_owned()))
        };
        assert!(asking(Some(ConnInfo::Local { uid: Some(1000) })).is_ok());
        let (code, message) = asking(Some(ConnInfo::Local { uid: Some(0) })).expect_err("root");
        assert_eq!(code, tonic::Code::PermissionDenied);
        assert!(message.contains("belongs to uid 1000, not uid 0"), "{message}");
        assert!(asking(Some(ConnInfo::Local { uid: None })).is_err(), "unknown uid");
        assert!(asking(None).is_err(), "no connection info");
    }
}
