//! The directory in process, over real TCP on 127.0.0.1:0, through the
//! generated clients.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use pb::directory_client::DirectoryClient;
use peerchat::v1 as pb;
use peerchat_directoryd::{Config, run};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A directory this test owns; stopped when dropped.
struct Directory {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), peerchat_directoryd::Error>>>,
}

impl Directory {
    async fn start(ttl: Duration) -> Directory {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let config = Config { listen: addr, ttl, ..Config::default() };
        let task = tokio::spawn(run(config, listener, shutdown.clone()));
        Directory { addr, shutdown, task: Some(task) }
    }

    async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(&self) -> DirectoryClient<Channel> {
        DirectoryClient::new(self.channel().await)
    }

    /// Cancels and waits for `run` to return.
    async fn stop(mut self) -> Result<(), peerchat_directoryd::Error> {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("run did not stop")
            .unwrap()
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn register(name: &str, owner: &str, advertise: &str, port: u32) -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: name.into(),
        advertise: advertise.into(),
        port,
        status: pb::PeerStatus::Unspecified.into(),
        owner_token: format!("{owner:-<16}").into_bytes(),
    }
}

#[tokio::test]
async fn health_reports_serving_and_reflection_lists_the_directory() -> TestResult {
    let dir = Directory::start(Duration::from_secs(15)).await;
    let mut health = HealthClient::new(dir.channel().await);
    for service in ["", "peerchat.v1.Directory"] {
        let reply = health.check(HealthCheckRequest { service: service.into() }).await?;
        assert_eq!(reply.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(dir.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        reflection.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
    let reply = replies.message().await?.expect("a reflection reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"peerchat.v1.Directory".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    assert!(!names.contains(&"peerchat.v1.Chat".to_owned()), "not served here: {names:?}");
    drop(replies);
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn register_lookup_list_heartbeat_unregister() -> TestResult {
    let dir = Directory::start(Duration::from_secs(15)).await;
    let mut client = dir.client().await;

    // Empty advertise: the IP the directory saw, with the given port.
    let alice = client.register(register("Alice", "alice", "", 7400)).await?.into_inner();
    assert_eq!(alice.address, "127.0.0.1:7400");
    assert_eq!(alice.ttl_seconds, 15);
    assert!(!alice.lease.is_empty());
    let bob = client.register(register("bob", "bob", "10.9.8.7:7401", 0)).await?.into_inner();
    assert_eq!(bob.address, "10.9.8.7:7401");

    let found = client.lookup(pb::LookupRequest { name: "ALICE".into() }).await?.into_inner();
    let peer = found.peer.expect("a peer");
    assert_eq!((peer.name.as_str(), peer.address.as_str()), ("Alice", "127.0.0.1:7400"));
    assert_eq!(peer.status(), pb::PeerStatus::Available);

    let beat = client
        .heartbeat(pb::HeartbeatRequest {
            name: "alice".into(),
            lease: alice.lease.clone(),
            status: pb::PeerStatus::Busy.into(),
        })
        .await?
        .into_inner();
    assert_eq!(beat.ttl_seconds, 15);
    let list = client.list(pb::ListRequest::default()).await?.into_inner();
    let shown: Vec<_> = list.peers.iter().map(|p| (p.name.as_str(), p.status())).collect();
    assert_eq!(shown, [("Alice", pb::PeerStatus::Busy), ("bob", pb::PeerStatus::Available)]);
    assert!(list.next_page_token.is_empty());

    let err = client
        .heartbeat(pb::HeartbeatRequest { name: "alice".into(), lease: "forged".into(), status: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("register again"), "{}", err.message());

    let err = client
        .unregister(pb::UnregisterRequest { name: "alice".into(), lease: bob.lease.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    client
        .unregister(pb::UnregisterRequest { name: "alice".into(), lease: alice.lease.clone() })
        .await?;
    // Again: harmless.
    client.unregister(pb::UnregisterRequest { name: "alice".into(), lease: alice.lease }).await?;
    let err = client.lookup(pb::LookupRequest { name: "alice".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("not online"), "{}", err.message());

    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_live_name_is_taken_except_for_its_owner() -> TestResult {
    let dir = Directory::start(Duration::from_secs(15)).await;
    let mut client = dir.client().await;
    let first = client.register(register("bob", "owner-1", "", 7400)).await?.into_inner();

    let err = client.register(register("BOB", "owner-2", "", 7500)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("taken"), "{}", err.message());

    // The same owner (a restarted daemon) takes the name over at once.
    let second = client.register(register("Bob", "owner-1", "", 7600)).await?.into_inner();
    assert_ne!(first.lease, second.lease);
    let peer =
        client.lookup(pb::LookupRequest { name: "bob".into() }).await?.into_inner().peer.unwrap();
    assert_eq!((peer.name.as_str(), peer.address.as_str()), ("Bob", "127.0.0.1:7600"));
    let err = client
        .heartbeat(pb::HeartbeatRequest { name: "bob".into(), lease: first.lease, status: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_and_the_server_keeps_serving() -> TestResult {
    let dir = Directory::start(Duration::from_secs(15)).await;
    let mut client = dir.client().await;

    let cases = [
        (register("no spaces", "owner", "", 7400), "invalid name"),
        (register(&"x".repeat(33), "owner", "", 7400), "invalid name"),
        (register("bob", "owner", "", 0), "port"),
        (register("bob", "owner", "", 70_000), "port"),
        (register("bob", "owner", "not-an-address", 0), "advertise"),
        (register("bob", "owner", "10.0.0.1:0", 0), "advertise"),
        (
            pb::RegisterRequest { owner_token: b"short".to_vec(), ..register("bob", "o", "", 1) },
            "owner token",
        ),
        (
            pb::RegisterRequest { owner_token: vec![7; 129], ..register("bob", "o", "", 1) },
            "owner token",
        ),
        (pb::RegisterRequest { status: 99, ..register("bob", "owner", "", 1) }, "status"),
    ];
    for (request, words) in cases {
        let err = client.register(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{request:?}");
        assert!(err.message().contains(words), "{request:?}: {}", err.message());
    }
    let err = client
        .list(pb::ListRequest { page_size: 0, page_token: "x".repeat(100) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Oversize requests are cut off by the decoder.
    let huge =
        pb::RegisterRequest { advertise: "a".repeat(64 * 1024), ..register("bob", "owner", "", 1) };
    let err = client.register(huge).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);

    // Garbage and HTTP/1 on the port get a closed connection, nothing more.
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0xff; 4096][..]] {
        let mut raw = TcpStream::connect(dir.addr).await?;
        raw.write_all(junk).await?;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink)).await;
    }

    let ok = client.register(register("bob", "owner", "", 7400)).await?.into_inner();
    assert_eq!(ok.address, "127.0.0.1:7400");
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn list_pages_through_everyone_once() -> TestResult {
    let dir = Directory::start(Duration::from_secs(15)).await;
    let mut client = dir.client().await;
    let total = 250;
    for i in (0..total).rev() {
        client.register(register(&format!("Peer{i:03}"), &format!("owner{i}"), "", 7400)).await?;
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client.list(pb::ListRequest { page_size: 100, page_token }).await?.into_inner();
        assert!(page.peers.len() <= 100);
        seen.extend(page.peers.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected: Vec<_> = (0..total).map(|i| format!("Peer{i:03}")).collect();
    assert_eq!(seen, expected);

    // page_size 0 means the default of 100.
    let first = client.list(pb::ListRequest::default()).await?.into_inner();
    assert_eq!(first.peers.len(), 100);
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_peer_that_stops_heartbeating_disappears_within_ttl() -> TestResult {
    let ttl = Duration::from_secs(1);
    let dir = Directory::start(ttl).await;
    let mut client = dir.client().await;
    client.register(register("ghost", "ghost", "", 7400)).await?;
    assert_eq!(client.list(pb::ListRequest::default()).await?.into_inner().peers.len(), 1);

    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(client.list(pb::ListRequest::default()).await?.into_inner().peers.is_empty());
    let err = client.lookup(pb::LookupRequest { name: "ghost".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The name is free for someone else.
    client.register(register("ghost", "another", "", 7401)).await?;
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn run_returns_when_cancelled_even_with_an_open_health_watch() -> TestResult {
    let dir = Directory::start(Duration::from_secs(15)).await;
    let mut health = HealthClient::new(dir.channel().await);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await?.into_inner();
    assert_eq!(watch.message().await?.unwrap().status(), ServingStatus::Serving);
    dir.stop().await?;
    Ok(())
}
