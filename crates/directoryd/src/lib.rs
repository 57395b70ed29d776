//! directoryd: the peerchat directory, a gRPC service where online peers
//! register and which lists them. It is never in the path of a message.
//!
//! A registration is a lease: it lives `ttl` unless renewed by a heartbeat,
//! so a peer that dies without unregistering disappears on its own.
//!
//! A name belongs to the first ed25519 key that registers it, with proof of
//! possession (a signature over a directory-issued nonce); the binding
//! outlives restarts. Where the state lives is a [`StoreConfig`]: the
//! embedded store (the default: memory, bindings in `bindings.jsonl` in the
//! data dir; an operator releases a name with `directoryd forget NAME`
//! ([`forget`]) while the directory is stopped), or Redis Cluster, which
//! any number of identical replicas share.
//!
//! The directory has its own ed25519 key (`directory.key` in the data dir,
//! see [`directory_key`]) and speaks TLS 1.3 with it on the same port as
//! plaintext gRPC: `http://` clients keep working, and `https://` clients
//! can pin the key so that a wrong answer to a lookup cannot come from
//! anything but this directory.
//!
//! # Layout
//! - [`run`]: serves the directory, gRPC health and server reflection on a
//!   bound listener until the shutdown token fires.
//! - `model`: the vocabulary every part shares (claims, listings, pages,
//!   changes, refusals); a leaf.
//! - `store`: the `Store` trait, the one front door to the directory's
//!   state, and its two implementations, `store::memory` and
//!   `store::redis`.
//! - `registry`: the embedded store's pure in-memory map of leases (no
//!   I/O, `now` passed in): uniqueness, takeover by the same key, the cap
//!   per source, expiry, pagination.
//! - `bindings`: the embedded store's durable name → key map and its
//!   file; [`forget`].
//! - `challenges`: outstanding single-use nonces, bounded and shared
//!   fairly among sources (pure); the embedded store's, and each Redis
//!   replica's count of its own.
//! - `proof`: checks a registration's signature, nonce and clock (pure).
//! - `service`: `DirectoryService`, the tonic boundary; applies the rate
//!   limits (token buckets per source, from `peerchat_core::rate`),
//!   validates input and builds the statuses of its own refusals.
//! - `wire`: the store's answers as gRPC (`pb::Peer`, the one
//!   `StoreError` → `Status` mapping); a leaf.
//! - `watch`: the `WatchPeers` presence feed, a snapshot then changes.
//! - `reaper`: lets the store drop what expired, and drops idle rate-limit
//!   buckets, every second.
//! - `connections`: accepts TCP connections up to a ceiling, tells TLS
//!   from plaintext by the first byte, and coalesces responses into fewer
//!   writes.
//! - `tls`: the directory key file and the TLS server configuration.
//! - [`cli`]: flags, environment variables and the `forget` and `key`
//!   subcommands.

mod bindings;
mod challenges;
pub mod cli;
mod connections;
mod model;
mod proof;
mod reaper;
mod registry;
mod service;
mod store;
mod tls;
mod watch;
mod wire;

/// Where the Redis store keeps a name: for operators reading the cluster
/// with `redis-cli`, and for tests and benchmarks that kill exactly the
/// master serving a name.
pub mod redis_layout {
    pub use crate::store::redis::layout::{BUCKETS, bucket_key, bucket_of};
}

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::lease::DEFAULT_TTL;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::bindings::BindingStore;
pub use crate::bindings::{BindingsError, Forgotten};
use crate::service::{DirectoryService, Limits};
use crate::store::Store;
use crate::store::memory::MemoryStore;
pub use crate::store::redis::{RedisError, RedisOptions};
use crate::tls::DirectoryKey;
pub use crate::tls::KeyError;
use crate::watch::Watchers;
use peerchat_core::rate::{Rate, RateLimiter};

/// Locks one part of the state. A panic while holding a lock cannot leave a
/// map half-updated in a way that matters more than refusing all service,
/// so a poisoned lock is used as is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Requests are a few names and addresses; nothing legitimate is bigger.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Server pings find connections whose client vanished (cable pulled).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUESTS_PER_CONNECTION: usize = 32;
const STREAMS_PER_CONNECTION: u32 = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Long-lived streams (health `Watch`, reflection) would hold a graceful
/// shutdown open forever; after this long they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How to run the directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where [`bind`] listens.
    pub listen: SocketAddr,
    /// How long a registration lives without a heartbeat.
    pub ttl: Duration,
    /// Open connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections from one source address (IPv6: one /64) at most;
    /// further ones from it are closed at once.
    pub max_connections_per_source: usize,
    /// Where the name → key bindings and the directory key live (created
    /// 0700). `None`: in memory, for this run only.
    pub data_dir: Option<PathBuf>,
    /// Challenge + Register calls, and status changes by Heartbeat, a
    /// second per source (bursts of twice). Heartbeat + Unregister calls
    /// have a rate derived from `ttl`, `max_per_source` and `list_rate`.
    pub register_rate: u32,
    /// List + Lookup calls a second per source (bursts of twice).
    pub list_rate: u32,
    /// Live registrations per source address at most, and as many
    /// presence watchers (`WatchPeers`), one for each peer it may register.
    pub max_per_source: usize,
    /// Names bound for the first time per site (an IPv4 address, an IPv6
    /// /48) and day at most
    /// (all at once if the day's were not used). A name's owner registering
    /// it again costs nothing.
    pub new_names_per_day: u32,
    /// Challenge nonces waiting for their Register at most (each replica's
    /// own, over Redis). A Challenge that finds them all taken is still
    /// answered: the oldest nonce of the source holding the most is let go
    /// (see `challenges`).
    pub max_challenges: usize,
    /// Where the directory's state lives.
    pub store: StoreConfig,
}

/// Where the directory's state lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process; bindings in the data dir. One directory process.
    #[default]
    Memory,
    /// A Redis Cluster, by its seed nodes (`redis://HOST:PORT` each). Any
    /// number of directory replicas may share it; each needs the same
    /// directory key (the same `directory.key` in its data dir).
    Redis(RedisOptions),
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 7300)),
            ttl: DEFAULT_TTL,
            max_connections: 16_384,
            // A sixteenth of the whole: one host cannot take them all, and
            // a NAT with a thousand peerchat users behind it still fits.
            max_connections_per_source: 1_024,
            data_dir: None,
            register_rate: 20,
            list_rate: 100,
            max_per_source: 256,
            new_names_per_day: 64,
            max_challenges: challenges::MAX_OUTSTANDING,
            store: StoreConfig::Memory,
        }
    }
}

impl StoreConfig {
    /// For logs: `memory`, or the Redis seeds.
    fn describe(&self) -> String {
        match self {
            StoreConfig::Memory => "memory".to_owned(),
            StoreConfig::Redis(options) => options.seeds.join(","),
        }
    }
}

/// Releases `name` from the key it is bound to, in the bindings file of a
/// stopped directory on `data_dir`; the next key to register it owns it.
/// `Ok(None)` when the name has no binding. Refused with
/// [`BindingsError::Locked`] while a directory runs on `data_dir`: it keeps its
/// bindings in memory and would not notice.
pub fn forget(data_dir: &Path, name: &Name) -> Result<Option<Forgotten>, BindingsError> {
    bindings::forget(data_dir, name)
}

/// Releases `name` from its key in the Redis store, also while directory
/// replicas run (they keep nothing of it in memory); ends any registration
/// under it. `Ok(None)` when the name has no binding.
pub async fn forget_in_redis(
    store: &RedisOptions,
    name: &Name,
) -> Result<Option<[u8; peerchat_core::identity::PUBLIC_KEY_LEN]>, RedisError> {
    store::redis::forget(store, name).await
}

/// The directory's public key in `data_dir` (raw ed25519, 32 bytes),
/// creating the key if there is none. Format it for people with
/// `peerchat_core::identity::fingerprint`. Blocking I/O; safe while a
/// directory runs on `data_dir` (the key file is only ever replaced whole).
pub fn directory_key(
    data_dir: &Path,
) -> Result<[u8; peerchat_core::identity::PUBLIC_KEY_LEN], KeyError> {
    Ok(DirectoryKey::load_or_create(data_dir)?.public_key())
}

/// Why the directory could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listen address failed (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The name bindings could not be loaded.
    #[error("cannot load the name bindings: {0}")]
    Bindings(#[from] BindingsError),
    /// The Redis store could not be set up.
    #[error("cannot use the Redis store: {0}")]
    Redis(#[from] RedisError),
    /// The directory key could not be loaded or made into a certificate.
    #[error("cannot load the directory key: {0}")]
    Key(#[from] KeyError),
    /// The embedded descriptor set could not be loaded for reflection.
    #[error("cannot set up server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed while serving.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Binds `config.listen`, so that the caller can report the bound address
/// (port 0 picks a free one) before calling [`run`].
pub async fn bind(config: &Config) -> Result<TcpListener, Error> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind { addr: config.listen, source })
}

/// Serves the directory, gRPC health and server reflection on `listener`
/// until `shutdown` is cancelled. `config.listen` is not used: the listener
/// is already bound. `ready` is called once the bindings and the directory
/// key are loaded, just before serving: a readiness line printed any
/// earlier would let `directoryd key` race the first start to create the
/// key.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    // Everything spawned here stops with `stop`, also when serving fails.
    let stop = shutdown.child_token();
    let _stop_on_return = stop.clone().drop_guard();

    let (store, _close_on_return): (Arc<dyn Store>, Option<CloseOnDrop>) = match &config.store {
        StoreConfig::Memory => {
            // Blocking read at start-up, before anything is served.
            let bindings = match &config.data_dir {
                Some(dir) => BindingStore::open(dir)?,
                None => {
                    tracing::warn!(
                        "no --data-dir: name bindings and the directory key last for this run only"
                    );
                    BindingStore::in_memory()
                }
            };
            let store = MemoryStore::new(bindings, config.ttl, config.max_per_source)
                .with_max_nonces(config.max_challenges);
            let store = Arc::new(store);
            (store.clone(), Some(CloseOnDrop(store)))
        }
        StoreConfig::Redis(options) => {
            let store = store::redis::RedisStore::connect(
                options,
                config.ttl,
                config.max_per_source,
                &stop,
            )
            .await?
            .with_max_nonces(config.max_challenges);
            (Arc::new(store), None)
        }
    };
    // After the bindings: their lock already keeps a second directory off
    // this data dir, so two first starts never race to create the key.
    // Replicas over one Redis store share one data dir's key, or copies of it.
    let key = match &config.data_dir {
        Some(dir) => DirectoryKey::load_or_create(dir)?,
        None => DirectoryKey::ephemeral()?,
    };
    let tls = key.server_config()?;
    tracing::info!(key = %key.fingerprint(), "directory key");
    let limits = Arc::new(Limits {
        register: Mutex::new(RateLimiter::new(config.register_rate, service::MAX_SOURCES)),
        list: Mutex::new(RateLimiter::new(config.list_rate, service::MAX_SOURCES)),
        new_names: Mutex::new(RateLimiter::with_rate(
            Rate::per_day(config.new_names_per_day),
            service::MAX_NAMING_SOURCES,
        )),
        leases: Mutex::new(RateLimiter::new(
            service::lease_rate(config.ttl, config.max_per_source, config.list_rate),
            service::MAX_SOURCES,
        )),
    });
    tokio::spawn(reaper::run(store.clone(), limits.clone(), stop.clone()));

    let watchers = Watchers::new(watch::MAX_WATCHERS, config.max_per_source, stop.clone());
    let service = DirectoryService::new(store, limits, watchers, config.ttl);
    let directory = pb::directory_server::DirectoryServer::new(service)
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<pb::directory_server::DirectoryServer<DirectoryService>>().await;
    let health = health.max_decoding_message_size(MAX_REQUEST_BYTES);
    let reflection_v1 = reflection()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()?
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let reflection_v1alpha = reflection()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()?
        .max_decoding_message_size(MAX_REQUEST_BYTES);

    let ceiling = connections::Ceiling {
        total: config.max_connections,
        per_source: config.max_connections_per_source,
    };
    let incoming = connections::accept(listener, ceiling, tls, stop.clone());
    let serve = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .concurrency_limit_per_connection(REQUESTS_PER_CONNECTION)
        .max_concurrent_streams(STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_REQUEST_BYTES as u32)
        .timeout(REQUEST_TIMEOUT)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(directory)
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());

    ready();
    tracing::info!(
        ttl = ?config.ttl,
        data_dir = ?config.data_dir,
        register_rate = config.register_rate,
        list_rate = config.list_rate,
        max_per_source = config.max_per_source,
        max_connections_per_source = config.max_connections_per_source,
        store = config.store.describe(),
        "directory serving"
    );
    let cut_off = async {
        stop.cancelled().await;
        tracing::info!("shutting down");
        health_reporter
            .set_not_serving::<pb::directory_server::DirectoryServer<DirectoryService>>()
            .await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serve => served?,
        () = cut_off => tracing::warn!("open streams outlived the shutdown grace; cut"),
    }
    tracing::info!("directory stopped");
    Ok(())
}

/// Closes the embedded store's bindings file when `run` returns, however
/// it returns: connections that outlive the shutdown grace may still hold
/// the service, and must not keep the file locked against the next
/// directory.
#[derive(Debug)]
struct CloseOnDrop(Arc<MemoryStore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("peerchat.v1.Directory")
        .with_service_name("grpc.health.v1.Health")
}
