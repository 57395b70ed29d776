//! directoryd: the peerchat directory, a gRPC service where online peers
//! register and which lists them. It is never in the path of a message.
//!
//! A registration is a lease: it lives `ttl` unless renewed by a heartbeat,
//! so a peer that dies without unregistering disappears on its own.
//!
//! # Layout
//! - [`run`]: serves the directory, gRPC health and server reflection on a
//!   bound listener until the shutdown token fires.
//! - `registry`: the pure in-memory map of leases (no I/O, `now` passed
//!   in): uniqueness, owner-token takeover, expiry, pagination.
//! - `service`: `DirectoryService`, the tonic boundary; validates input and
//!   is the one place a gRPC `Status` is built.
//! - `reaper`: drops expired registrations every second.
//! - `connections`: accepts TCP connections up to a ceiling.
//! - [`cli`]: flags and environment variables.

pub mod cli;
mod connections;
mod reaper;
mod registry;
mod service;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat_core::lease::DEFAULT_TTL;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::registry::Registry;
use crate::service::DirectoryService;

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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 7300)),
            ttl: DEFAULT_TTL,
            max_connections: 16_384,
        }
    }
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
/// is already bound.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // Everything spawned here stops with `stop`, also when serving fails.
    let stop = shutdown.child_token();
    let _stop_on_return = stop.clone().drop_guard();

    let registry = Arc::new(Mutex::new(Registry::new(config.ttl)));
    tokio::spawn(reaper::run(registry.clone(), stop.clone()));

    let directory =
        pb::directory_server::DirectoryServer::new(DirectoryService::new(registry, config.ttl))
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

    let incoming = connections::accept(listener, config.max_connections, stop.clone());
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

    tracing::info!(ttl = ?config.ttl, "directory serving");
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

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("peerchat.v1.Directory")
        .with_service_name("grpc.health.v1.Health")
}
