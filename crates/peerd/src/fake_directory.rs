//! An in-process fake directory for peerd's unit tests: it lists and looks
//! up what the test puts in `listed`, counts lookups, and hands each
//! WatchPeers stream to the test (or answers UNIMPLEMENTED).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerchat::v1 as pb;
use peerchat::v1::directory_server::{Directory, DirectoryServer};
use peerchat_core::Name;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::directory::Directories;

pub(crate) type EventTx = mpsc::Sender<Result<pb::PeerEvent, Status>>;

#[derive(Clone, Default)]
pub(crate) struct Fake {
    /// Where WatchPeers streams go; `None`: WatchPeers is UNIMPLEMENTED.
    pub(crate) streams: Option<mpsc::UnboundedSender<EventTx>>,
    pub(crate) listed: Arc<Mutex<Vec<pb::Peer>>>,
    pub(crate) lookups: Arc<AtomicUsize>,
}

impl Fake {
    /// Serves on a loopback port until the returned task is aborted (or
    /// the test's runtime ends).
    pub(crate) async fn serve(self) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(DirectoryServer::new(self))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        (addr, server)
    }

    fn listed(&self) -> Result<Vec<pb::Peer>, Status> {
        Ok(self.listed.lock().map_err(|_| Status::internal("poisoned"))?.clone())
    }
}

#[tonic::async_trait]
impl Directory for Fake {
    async fn challenge(
        &self,
        _: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::ChallengeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn unregister(
        &self,
        _: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Ok(Response::new(pb::ListResponse {
            peers: self.listed()?,
            next_page_token: String::new(),
        }))
    }
    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let name = request.into_inner().name;
        let peer = self.listed()?.into_iter().find(|p| p.name == name);
        match peer {
            Some(peer) => Ok(Response::new(pb::LookupResponse { peer: Some(peer) })),
            None => Err(Status::not_found(format!("{name} is not online"))),
        }
    }

    type WatchPeersStream = ReceiverStream<Result<pb::PeerEvent, Status>>;

    async fn watch_peers(
        &self,
        _: Request<pb::WatchPeersRequest>,
    ) -> Result<Response<Self::WatchPeersStream>, Status> {
        let Some(streams) = &self.streams else {
            return Err(Status::unimplemented("no presence feed here"));
        };
        let (tx, rx) = mpsc::channel(64);
        streams.send(tx).map_err(|_| Status::internal("test over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Directories for one plaintext directory at `addr`.
pub(crate) fn directories(addr: SocketAddr) -> Directories {
    let config = Config {
        name: Name::parse("me").expect("name"),
        directories: vec![format!("http://{addr}")],
        directory_key: None,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise: None,
        socket: "/nonexistent/s.sock".into(),
        data_dir: "/nonexistent".into(),
        resume_window: Duration::from_secs(30),
        accept: crate::consent::Policy::All,
    };
    Directories::connect(&config).expect("directories")
}
