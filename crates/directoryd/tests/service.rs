//! The directory in process, over real TCP on 127.0.0.1:0, through the
//! generated clients, with a temporary data dir per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use pb::directory_client::DirectoryClient;
use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::identity::{fingerprint, registration_payload};
use peerchat_directoryd::{Config, run};
use prost::Message as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A directory this test owns; stopped when dropped.
struct Directory {
    addr: SocketAddr,
    data_dir: PathBuf,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), peerchat_directoryd::Error>>>,
}

/// Limits high enough that only the tests about them meet them.
fn config(ttl: Duration, data_dir: &Path) -> Config {
    Config {
        ttl,
        data_dir: Some(data_dir.to_owned()),
        register_rate: 100_000,
        list_rate: 100_000,
        new_names_per_day: 100_000,
        ..Config::default()
    }
}

impl Directory {
    async fn start(ttl: Duration, data_dir: &Path) -> Directory {
        Directory::start_with(config(ttl, data_dir)).await
    }

    async fn start_with(mut config: Config) -> Directory {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let data_dir = config.data_dir.clone().unwrap_or_default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, listener, shutdown.clone(), || {}));
        Directory { addr, data_dir, shutdown, task: Some(task) }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }

    async fn client(&self) -> DirectoryClient<Channel> {
        DirectoryClient::new(self.channel().await)
    }

    /// A client whose connection comes from `local_ip` (any 127.0.0.0/8
    /// address is loopback on Linux): another source, as the directory sees it.
    async fn client_from(&self, local_ip: &str) -> DirectoryClient<Channel> {
        let local: SocketAddr = format!("{local_ip}:0").parse().unwrap();
        let addr = self.addr;
        let connector = tower::service_fn(move |_: Uri| async move {
            let socket = TcpSocket::new_v4()?;
            socket.bind(local)?;
            let stream = socket.connect(addr).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        });
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector(connector)
            .await
            .unwrap();
        DirectoryClient::new(channel)
    }

    /// A client over TLS, and the verifier that saw the directory's
    /// certificate.
    async fn tls_client(&self) -> (DirectoryClient<Channel>, Arc<RecordingVerifier>) {
        let verifier = Arc::new(RecordingVerifier::default());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let addr = self.addr;
        let connect = tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = ServerName::try_from("peerchat-directory").unwrap();
                let tls = connector.connect(name, tcp).await?;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        // The scheme only tells tonic not to do TLS itself: the connector does.
        let channel =
            Endpoint::from_static("http://directory.invalid").connect_with_connector(connect).await;
        (DirectoryClient::new(channel.unwrap()), verifier)
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

/// Accepts any certificate whose key signs the handshake, and records it:
/// the tests then look at the key, as a pinning peer would.
#[derive(Debug)]
struct RecordingVerifier {
    seen: Mutex<Vec<CertificateDer<'static>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Default for RecordingVerifier {
    fn default() -> RecordingVerifier {
        RecordingVerifier {
            seen: Mutex::default(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl RecordingVerifier {
    /// The ed25519 key in the one certificate seen.
    fn key(&self) -> Vec<u8> {
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one handshake");
        let (rest, cert) = x509_parser::parse_x509_certificate(seen[0].as_ref()).unwrap();
        assert!(rest.is_empty());
        let spki = cert.public_key();
        assert_eq!(spki.algorithm.algorithm, x509_parser::oid_registry::OID_SIG_ED25519);
        spki.subject_public_key.data.to_vec()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.seen.lock().unwrap().push(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        panic!("TLS 1.2 was negotiated");
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The proof that the server holds the key in its certificate.
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// What `directoryd key --data-dir DIR` prints.
fn key_subcommand(data_dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_directoryd"))
        .args(["key", "--data-dir"])
        .arg(data_dir)
        .env_remove("PEERCHAT_DIRECTORY_DATA_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// A peer's identity key.
struct Key(Ed25519KeyPair);

impl Key {
    fn generate() -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Key(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn public(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }

    /// A Register request signed with this key.
    fn request(
        &self,
        nonce: Vec<u8>,
        timestamp_ms: i64,
        name: &str,
        advertise: &str,
        port: u32,
    ) -> pb::RegisterRequest {
        let payload = registration_payload(&nonce, timestamp_ms, port, name, advertise);
        pb::RegisterRequest {
            name: name.into(),
            advertise: advertise.into(),
            port,
            status: pb::PeerStatus::Unspecified.into(),
            public_key: self.public(),
            nonce,
            timestamp_ms,
            signature: self.0.sign(&payload).as_ref().to_vec(),
        }
    }

    /// Challenge, then a correctly signed Register.
    async fn register(
        &self,
        client: &mut DirectoryClient<Channel>,
        name: &str,
        advertise: &str,
        port: u32,
    ) -> Result<pb::RegisterResponse, Status> {
        let nonce = challenge(client).await?;
        let request = self.request(nonce, now_ms(), name, advertise, port);
        Ok(client.register(request).await?.into_inner())
    }
}

async fn challenge(client: &mut DirectoryClient<Channel>) -> Result<Vec<u8>, Status> {
    Ok(client.challenge(pb::ChallengeRequest {}).await?.into_inner().nonce)
}

async fn lookup(client: &mut DirectoryClient<Channel>, name: &str) -> Result<pb::Peer, Status> {
    let reply = client.lookup(pb::LookupRequest { name: name.into() }).await?.into_inner();
    Ok(reply.peer.expect("a peer"))
}

fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, words: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.code(), code, "{}", err.message());
    assert!(err.message().contains(words), "{:?} lacks {words:?}", err.message());
}

#[tokio::test]
async fn health_reports_serving_and_reflection_lists_the_directory() -> TestResult {
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
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
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut client = dir.client().await;
    let (alice_key, bob_key) = (Key::generate(), Key::generate());

    let nonce = challenge(&mut client).await?;
    assert_eq!(nonce.len(), 32);
    assert_ne!(nonce, challenge(&mut client).await?, "nonces are fresh");

    // Empty advertise: the IP the directory saw, with the given port.
    let alice = alice_key.register(&mut client, "Alice", "", 7400).await?;
    assert_eq!(alice.address, "127.0.0.1:7400");
    assert_eq!(alice.ttl_seconds, 15);
    assert!(!alice.lease.is_empty());
    let bob = bob_key.register(&mut client, "bob", "10.9.8.7:7401", 0).await?;
    assert_eq!(bob.address, "10.9.8.7:7401");

    let peer = lookup(&mut client, "ALICE").await?;
    assert_eq!((peer.name.as_str(), peer.address.as_str()), ("Alice", "127.0.0.1:7400"));
    assert_eq!(peer.status(), pb::PeerStatus::Available);
    assert_eq!(peer.public_key, alice_key.public());

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
    let keys: Vec<_> = list.peers.iter().map(|p| p.public_key.clone()).collect();
    assert_eq!(keys, [alice_key.public(), bob_key.public()]);
    assert!(list.next_page_token.is_empty());

    let err = client
        .heartbeat(pb::HeartbeatRequest { name: "alice".into(), lease: "forged".into(), status: 0 })
        .await;
    assert_status(err, Code::NotFound, "register again");

    let err = client
        .unregister(pb::UnregisterRequest { name: "alice".into(), lease: bob.lease.clone() })
        .await;
    assert_status(err, Code::PermissionDenied, "different lease");
    client
        .unregister(pb::UnregisterRequest { name: "alice".into(), lease: alice.lease.clone() })
        .await?;
    // Again: harmless.
    client.unregister(pb::UnregisterRequest { name: "alice".into(), lease: alice.lease }).await?;
    assert_status(lookup(&mut client, "alice").await, Code::NotFound, "not online");

    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn registration_needs_a_proof_of_possession() -> TestResult {
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut client = dir.client().await;
    let (key, other) = (Key::generate(), Key::generate());
    let denied = Code::PermissionDenied;
    let prefix = "registration proof failed:";

    // No proof at all.
    let bare = pb::RegisterRequest { name: "bob".into(), port: 7400, ..Default::default() };
    assert_status(client.register(bare).await, denied, "public key");

    // Signed by another key than the one claimed.
    let nonce = challenge(&mut client).await?;
    let forged = pb::RegisterRequest {
        public_key: key.public(),
        ..other.request(nonce, now_ms(), "bob", "", 7400)
    };
    assert_status(client.register(forged).await, denied, "signature does not verify");

    // A signature over other fields than those sent (the address changed on the way).
    let nonce = challenge(&mut client).await?;
    let moved = pb::RegisterRequest {
        advertise: "10.6.6.6:7400".into(),
        ..key.request(nonce, now_ms(), "bob", "", 7400)
    };
    assert_status(client.register(moved).await, denied, "signature does not verify");

    // A nonce the directory never issued, and one used already.
    let invented = key.request(vec![7; 32], now_ms(), "bob", "", 7400);
    assert_status(client.register(invented).await, denied, "nonce");
    let nonce = challenge(&mut client).await?;
    let first = key.request(nonce.clone(), now_ms(), "bob", "", 7400);
    let accepted = client.register(first.clone()).await?.into_inner();
    let err = client.register(first).await.unwrap_err();
    assert_eq!(err.code(), denied);
    assert!(err.message().starts_with(prefix), "{}", err.message());
    assert!(err.message().contains("nonce"), "{}", err.message());

    // A timestamp from ten minutes ago, and one from ten minutes ahead.
    for skew in [-600_000, 600_000] {
        let nonce = challenge(&mut client).await?;
        let stale = key.request(nonce, now_ms() + skew, "bob", "", 7400);
        assert_status(client.register(stale).await, denied, "timestamp");
    }

    // A nonce is spent even by a request refused for something else.
    let nonce = challenge(&mut client).await?;
    let bad_name = key.request(nonce.clone(), now_ms(), "b b", "", 7400);
    assert_status(client.register(bad_name).await, Code::InvalidArgument, "invalid name");
    let retry = key.request(nonce, now_ms(), "bob", "", 7400);
    assert_status(client.register(retry).await, denied, "nonce");

    // Nothing refused replaced the accepted registration.
    let bob = lookup(&mut client, "bob").await?;
    assert_eq!(bob.public_key, key.public());
    client
        .heartbeat(pb::HeartbeatRequest { name: "bob".into(), lease: accepted.lease, status: 0 })
        .await?;
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_name_stays_bound_to_its_first_key_across_restarts() -> TestResult {
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut client = dir.client().await;
    let (owner, intruder) = (Key::generate(), Key::generate());

    let first = owner.register(&mut client, "bob", "", 7400).await?;
    // Live, in any case.
    assert_status(
        intruder.register(&mut client, "BOB", "", 7500).await,
        Code::AlreadyExists,
        "taken",
    );

    // The owner registers again from another port: it replaces the live
    // registration, and the old lease is dead.
    let second = owner.register(&mut client, "Bob", "", 7600).await?;
    assert_ne!(first.lease, second.lease);
    let peer = lookup(&mut client, "bob").await?;
    assert_eq!((peer.name.as_str(), peer.address.as_str()), ("Bob", "127.0.0.1:7600"));
    let old = client
        .heartbeat(pb::HeartbeatRequest { name: "bob".into(), lease: first.lease, status: 0 })
        .await;
    assert_status(old, Code::NotFound, "register again");

    // Offline, the name is still the owner's.
    client.unregister(pb::UnregisterRequest { name: "bob".into(), lease: second.lease }).await?;
    assert_status(
        intruder.register(&mut client, "bob", "", 7500).await,
        Code::AlreadyExists,
        "taken",
    );
    dir.stop().await?;

    // And after a restart on the same data dir.
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut client = dir.client().await;
    assert_status(
        intruder.register(&mut client, "bob", "", 7500).await,
        Code::AlreadyExists,
        "taken",
    );
    owner.register(&mut client, "bob", "", 7700).await?;
    assert_eq!(lookup(&mut client, "bob").await?.address, "127.0.0.1:7700");
    dir.stop().await?;

    let file = std::fs::read_to_string(data.path().join("bindings.jsonl"))?;
    assert_eq!(file.lines().count(), 1, "one binding, written once: {file}");
    assert!(file.contains("\"name\":\"bob\""), "{file}");
    Ok(())
}

#[tokio::test]
async fn forget_frees_a_name_for_another_key() -> TestResult {
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut client = dir.client().await;
    let (old_key, new_key) = (Key::generate(), Key::generate());
    old_key.register(&mut client, "bob", "", 7400).await?;
    old_key.register(&mut client, "alice", "", 7401).await?;

    let bob = Name::parse("Bob")?;
    // Refused while the directory runs: it would not notice.
    let err = peerchat_directoryd::forget(&dir.data_dir, &bob).unwrap_err();
    assert!(err.to_string().contains("running directory"), "{err}");
    dir.stop().await?;

    let forgotten = peerchat_directoryd::forget(data.path(), &bob)?.expect("a binding");
    assert_eq!(forgotten.key.to_vec(), old_key.public());
    assert_eq!(peerchat_directoryd::forget(data.path(), &bob)?, None);

    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut client = dir.client().await;
    new_key.register(&mut client, "bob", "", 7500).await?;
    assert_eq!(lookup(&mut client, "bob").await?.public_key, new_key.public());
    // Other names are untouched.
    assert_status(
        new_key.register(&mut client, "alice", "", 7501).await,
        Code::AlreadyExists,
        "taken",
    );
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_and_the_server_keeps_serving() -> TestResult {
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut client = dir.client().await;
    let key = Key::generate();
    let request = |name: &str, advertise: &str, port: u32| {
        key.request(vec![0; 32], now_ms(), name, advertise, port)
    };

    let cases = [
        (request("no spaces", "", 7400), "invalid name"),
        (request(&"x".repeat(33), "", 7400), "invalid name"),
        (request("bob", "", 0), "port"),
        (request("bob", "", 70_000), "port"),
        (request("bob", "not-an-address", 0), "advertise"),
        (request("bob", "10.0.0.1:0", 0), "advertise"),
        (pb::RegisterRequest { status: 99, ..request("bob", "", 1) }, "status"),
    ];
    for (request, words) in cases {
        let err = client.register(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{request:?}");
        assert!(err.message().contains(words), "{request:?}: {}", err.message());
    }
    let err = client.list(pb::ListRequest { page_size: 0, page_token: "x".repeat(100) }).await;
    assert_status(err, Code::InvalidArgument, "page token");

    // Oversize requests are cut off by the decoder.
    let huge = pb::RegisterRequest { advertise: "a".repeat(64 * 1024), ..request("bob", "", 1) };
    let err = client.register(huge).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);

    // Garbage and HTTP/1 on the port get a closed connection, nothing more.
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0xff; 4096][..]] {
        let mut raw = TcpStream::connect(dir.addr).await?;
        raw.write_all(junk).await?;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink)).await;
    }

    let ok = key.register(&mut client, "bob", "", 7400).await?;
    assert_eq!(ok.address, "127.0.0.1:7400");
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn list_pages_through_everyone_once() -> TestResult {
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut client = dir.client().await;
    // One key may own many names.
    let key = Key::generate();
    let total = 250;
    for i in (0..total).rev() {
        key.register(&mut client, &format!("Peer{i:03}"), "", 7400).await?;
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
    let data = tempfile::tempdir()?;
    let dir = Directory::start(ttl, data.path()).await;
    let mut client = dir.client().await;
    let key = Key::generate();
    key.register(&mut client, "ghost", "", 7400).await?;
    assert_eq!(client.list(pb::ListRequest::default()).await?.into_inner().peers.len(), 1);

    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(client.list(pb::ListRequest::default()).await?.into_inner().peers.is_empty());
    assert_status(lookup(&mut client, "ghost").await, Code::NotFound, "not online");
    // Gone from the list, but the name is still bound to its key.
    let other = Key::generate();
    assert_status(
        other.register(&mut client, "ghost", "", 7401).await,
        Code::AlreadyExists,
        "taken",
    );
    key.register(&mut client, "ghost", "", 7402).await?;
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_register_flood_is_throttled_while_another_source_still_registers() -> TestResult {
    let data = tempfile::tempdir()?;
    let config = Config { register_rate: 5, ..config(Duration::from_secs(15), data.path()) };
    let dir = Directory::start_with(config).await;
    let mut flooder = dir.client().await;
    let key = Key::generate();

    // Burst of 10 at 5/s: well before 60 calls the bucket is empty.
    let mut throttled = 0;
    for i in 0..30 {
        match key.register(&mut flooder, &format!("flood{i}"), "", 7400).await {
            Ok(_) => {}
            Err(err) => {
                assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
                assert!(err.message().contains("rate limit"), "{}", err.message());
                assert!(err.message().contains("127.0.0.1"), "{}", err.message());
                // A rate limit passes in moments: no reason to give up.
                assert!(err.details().is_empty(), "{:?}", err.details());
                throttled += 1;
            }
        }
    }
    assert!(throttled >= 20, "only {throttled} of 30 throttled");

    // A well-behaved peer on another address is not affected.
    let mut neighbour = dir.client_from("127.0.0.2").await;
    let carol = Key::generate().register(&mut neighbour, "carol", "", 7401).await?;
    assert_eq!(carol.address, "127.0.0.2:7401");
    // Heartbeats need a lease, not tokens: the flooding source still renews.
    let mut renewed = 0;
    for _ in 0..20 {
        let beat =
            pb::HeartbeatRequest { name: "carol".into(), lease: carol.lease.clone(), status: 0 };
        flooder.heartbeat(beat).await?;
        renewed += 1;
    }
    assert_eq!(renewed, 20);
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn presence_flips_cost_registration_tokens_and_never_the_lease() -> TestResult {
    let data = tempfile::tempdir()?;
    // A burst of 6 tokens; Challenge and Register take two of them.
    let config = Config { register_rate: 3, ..config(Duration::from_secs(15), data.path()) };
    let dir = Directory::start_with(config).await;
    let mut flipper = dir.client().await;
    let bob = Key::generate().register(&mut flipper, "bob", "", 7400).await?;
    let mut watcher = dir.client_from("127.0.0.3").await;
    let mut events = watcher.watch_peers(pb::WatchPeersRequest {}).await?.into_inner();
    while events.message().await?.expect("the snapshot").kind() != pb::peer_event::Kind::SnapshotEnd
    {
    }
    let beat = |status: pb::PeerStatus| pb::HeartbeatRequest {
        name: "bob".into(),
        lease: bob.lease.clone(),
        status: status.into(),
    };

    // Renewing without a change is free: forty of them spend no token.
    for _ in 0..40 {
        let reply = flipper.heartbeat(beat(pb::PeerStatus::Available)).await?.into_inner();
        assert_eq!(reply.status(), pb::PeerStatus::Available);
    }
    // Flipping is not: after the bucket's few tokens the directory keeps
    // the status it lists, says so, and still renews the lease.
    let (mut taken, mut kept) = (0, 0);
    let mut listed = pb::PeerStatus::Available;
    for i in 0..40 {
        // Always the other status: every one of these asks for a change.
        let wanted = match listed {
            pb::PeerStatus::Busy => pb::PeerStatus::Available,
            _ => pb::PeerStatus::Busy,
        };
        let reply = flipper.heartbeat(beat(wanted)).await?.into_inner();
        if reply.status() == wanted {
            taken += 1;
        } else {
            assert_eq!(reply.status(), listed, "flip {i}: only the old status may stay");
            kept += 1;
        }
        listed = reply.status();
    }
    assert!(taken >= 3, "the bucket's tokens buy changes: only {taken}");
    assert!(kept >= 20, "only {kept} of 40 flips held back");
    assert_eq!(lookup(&mut flipper, "bob").await?.status(), listed, "the directory lists it");

    // Watchers heard exactly the changes that were taken: a marker from
    // another source comes after all of them.
    Key::generate().register(&mut dir.client_from("127.0.0.2").await, "marker", "", 7401).await?;
    let mut heard = 0;
    loop {
        let event = events.message().await?.expect("an event");
        let kind = event.kind();
        let peer = event.peer.expect("a peer");
        if peer.name == "marker" {
            break;
        }
        assert_eq!((kind, peer.name.as_str()), (pb::peer_event::Kind::Online, "bob"));
        heard += 1;
    }
    assert_eq!(heard, taken);
    // Another source changes its own presence at once.
    let mut neighbour = dir.client_from("127.0.0.4").await;
    let carol = Key::generate().register(&mut neighbour, "carol", "", 7402).await?;
    let busy = pb::HeartbeatRequest { name: "carol".into(), lease: carol.lease, status: 2 };
    assert_eq!(neighbour.heartbeat(busy).await?.into_inner().status(), pb::PeerStatus::Busy);
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_heartbeat_flood_is_throttled_and_other_sources_still_renew() -> TestResult {
    let data = tempfile::tempdir()?;
    // Two leases renewed every 5 s need less than the list rate: 1 a
    // second, bursts of 2, for Heartbeat and Unregister together.
    let config =
        Config { list_rate: 1, max_per_source: 2, ..config(Duration::from_secs(15), data.path()) };
    let dir = Directory::start_with(config).await;
    let mut flooder = dir.client().await;
    let bob = Key::generate().register(&mut flooder, "bob", "", 7400).await?;
    let beat = pb::HeartbeatRequest { name: "bob".into(), lease: bob.lease.clone(), status: 0 };
    let mut throttled = 0;
    for _ in 0..30 {
        match flooder.heartbeat(beat.clone()).await {
            Ok(_) => {}
            Err(err) => {
                assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
                assert!(err.message().contains("rate limit"), "{}", err.message());
                throttled += 1;
            }
        }
    }
    assert!(throttled >= 20, "only {throttled} of 30 throttled");
    // Unregister shares the bucket; wrong leases cost the same as right ones.
    let leave = pb::UnregisterRequest { name: "bob".into(), lease: "not-a-lease".into() };
    assert_status(flooder.unregister(leave).await, Code::ResourceExhausted, "rate limit");
    // Another source renews bob's lease (it is the lease that counts).
    let mut neighbour = dir.client_from("127.0.0.2").await;
    neighbour.heartbeat(beat).await?;
    assert_eq!(lookup(&mut neighbour, "bob").await?.name, "bob");
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn new_names_are_a_daily_quota_per_source_and_owned_names_are_free() -> TestResult {
    let data = tempfile::tempdir()?;
    let config = Config { new_names_per_day: 3, ..config(Duration::from_secs(15), data.path()) };
    let dir = Directory::start_with(config).await;
    let mut client = dir.client().await;
    let key = Key::generate();
    key.register(&mut client, "n1", "", 7400).await?;
    // Registering a name the key owns costs nothing, again and again.
    for _ in 0..5 {
        key.register(&mut client, "n1", "", 7400).await?;
    }
    for name in ["n2", "n3"] {
        key.register(&mut client, name, "", 7400).await?;
    }
    let over = key.register(&mut client, "n4", "", 7400).await;
    let refusal = |status: &Status| {
        let details = pb::DirectoryRefusal::decode(status.details()).unwrap_or_default();
        details.reason()
    };
    let quota = pb::directory_refusal::Reason::NewNameQuota;
    assert_eq!(over.as_ref().map_err(refusal).unwrap_err(), quota, "typed, for peerd");
    assert_status(over, Code::ResourceExhausted, "too many new names from 127.0.0.1");
    // Refused names are not bound: another source's key takes n4.
    let mut neighbour = dir.client_from("127.0.0.2").await;
    Key::generate().register(&mut neighbour, "n4", "", 7401).await?;
    // With the quota spent, owned names still register.
    for _ in 0..5 {
        key.register(&mut client, "n1", "", 7400).await?;
        assert_status(
            key.register(&mut client, "n4", "", 7400).await,
            Code::AlreadyExists,
            "taken",
        );
    }
    assert_status(
        key.register(&mut client, "n5", "", 7400).await,
        Code::ResourceExhausted,
        "new names",
    );
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn registrations_per_source_are_capped_and_listing_is_rate_limited() -> TestResult {
    let data = tempfile::tempdir()?;
    let config =
        Config { max_per_source: 2, list_rate: 2, ..config(Duration::from_secs(15), data.path()) };
    let dir = Directory::start_with(config).await;
    let mut client = dir.client().await;
    let key = Key::generate();
    key.register(&mut client, "one", "", 7400).await?;
    key.register(&mut client, "two", "", 7400).await?;
    let third = key.register(&mut client, "three", "", 7400).await;
    assert_status(third, Code::ResourceExhausted, "too many registrations from 127.0.0.1");
    // Registering a name again from the same source does not count twice.
    key.register(&mut client, "two", "", 7401).await?;
    // Another source has its own allowance.
    let mut neighbour = dir.client_from("127.0.0.2").await;
    key.register(&mut neighbour, "three", "", 7400).await?;
    // The refused claim left no binding: another key may take "four" later.
    let before = std::fs::read_to_string(data.path().join("bindings.jsonl"))?;
    assert_status(
        key.register(&mut client, "four", "", 7400).await,
        Code::ResourceExhausted,
        "too many",
    );
    let after = std::fs::read_to_string(data.path().join("bindings.jsonl"))?;
    assert_eq!(before, after);

    // List and Lookup share a bucket of 2/s, bursts of 4.
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(client.list(pb::ListRequest::default()).await.map(|_| ()));
        results.push(lookup(&mut client, "one").await.map(|_| ()));
    }
    let refused: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(!refused.is_empty());
    for err in refused {
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("rate limit"), "{}", err.message());
    }
    assert_eq!(lookup(&mut neighbour, "one").await?.address, "127.0.0.1:7400");
    dir.stop().await?;
    Ok(())
}

/// A fresh plaintext client from 127.0.0.1 whose List is answered, trying
/// again (at most 5 s) while the directory has not yet noticed a closed
/// connection and given its slot back.
async fn client_once_a_slot_is_free(addr: SocketAddr) -> DirectoryClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = async {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
            let mut client = DirectoryClient::new(channel);
            client.list(pb::ListRequest::default()).await?;
            Ok::<_, Box<dyn std::error::Error>>(client)
        };
        match attempt.await {
            Ok(client) => return client,
            Err(err) => assert!(Instant::now() < deadline, "no slot came back: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_per_source_are_capped_and_other_sources_still_connect() -> TestResult {
    let data = tempfile::tempdir()?;
    let config =
        Config { max_connections_per_source: 3, ..config(Duration::from_secs(15), data.path()) };
    let dir = Directory::start_with(config).await;
    // 127.0.0.1 holds three: a client that has been answered, two silent.
    let mut client = dir.client().await;
    client.list(pb::ListRequest::default()).await?;
    let silent = [TcpStream::connect(dir.addr).await?, TcpStream::connect(dir.addr).await?];

    // A fourth from it is closed at once, not after the 5 s a silent
    // connection is given, and nothing is said on it.
    let mut over = TcpStream::connect(dir.addr).await?;
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), over.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a fourth connection from one source was kept open");
    assert!(sink.is_empty(), "something was sent on it: {sink:?}");

    // Another source connects; the connections held are still served.
    let mut neighbour = dir.client_from("127.0.0.2").await;
    neighbour.list(pb::ListRequest::default()).await?;
    client.list(pb::ListRequest::default()).await?;

    // Slots come back when connections close.
    drop(silent);
    let mut again = client_once_a_slot_is_free(dir.addr).await;
    again.list(pb::ListRequest::default()).await?;
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn presence_watchers_per_source_are_capped_like_registrations() -> TestResult {
    let data = tempfile::tempdir()?;
    let config = Config { max_per_source: 2, ..config(Duration::from_secs(15), data.path()) };
    let dir = Directory::start_with(config).await;
    let mut client = dir.client().await;
    let watch = pb::WatchPeersRequest {};
    let mut first = client.watch_peers(watch).await?.into_inner();
    let begin = first.message().await?.expect("a snapshot");
    assert_eq!(begin.kind(), pb::peer_event::Kind::SnapshotBegin);
    let _second = client.watch_peers(watch).await?.into_inner();
    assert_status(
        client.watch_peers(watch).await,
        Code::ResourceExhausted,
        "too many presence watchers from 127.0.0.1: at most 2",
    );
    // Another source has its own allowance.
    let mut neighbour = dir.client_from("127.0.0.2").await;
    neighbour.watch_peers(watch).await?;

    // A watcher that goes away gives its slot back (its feed notices the
    // stream is gone), at most 5 s later.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let _third = loop {
        match client.watch_peers(watch).await {
            Ok(stream) => break stream,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "the slot never came back: {status}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
    dir.stop().await?;
    Ok(())
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header field as an HPACK literal without indexing (short strings).
fn hpack(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    for s in [name, value] {
        out.push(u8::try_from(s.len()).unwrap());
        out.extend_from_slice(s.as_bytes());
    }
}

/// A client that gives the server every HTTP/2 window it could want, asks
/// for many full pages of List, and then reads nothing: the answers would
/// wait in the server's memory for as long as the connection lives. The
/// directory closes a connection whose writes stay blocked.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed() -> TestResult {
    let config = Config {
        ttl: Duration::from_secs(600),
        register_rate: 100_000,
        list_rate: 100_000,
        max_per_source: 10_000,
        new_names_per_day: 10_000,
        ..Config::default()
    };
    let dir = Directory::start_with(config).await;
    let mut client = dir.client().await;
    let key = Key::generate();
    // Pages of 1,000 peers of ~120 bytes: 64 of them are far more than the
    // kernel's socket buffers hold.
    let advertise = "[1111:2222:3333:4444:5555:6666:7777:8888]:65535";
    for i in 0..1000 {
        key.register(&mut client, &format!("{}{i:04}", "p".repeat(28)), advertise, 0).await?;
    }

    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut tcp = socket.connect(dir.addr).await?;
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut settings = vec![0, 4]; // SETTINGS_INITIAL_WINDOW_SIZE
    settings.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    hello.extend(h2_frame(4, 0, 0, &settings));
    hello.extend(h2_frame(8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    hello.extend(h2_frame(4, 1, 0, &[])); // ACK of the server's SETTINGS
    tcp.write_all(&hello).await?;
    let list = [0u8, 0, 0, 0, 3, 0x08, 0xe8, 0x07]; // ListRequest { page_size: 1000 }
    for i in 0..64u32 {
        let mut headers = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/peerchat.v1.Directory/List"),
            (":authority", "directory"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            hpack(&mut headers, name, value);
        }
        let id = 1 + 2 * i;
        let mut request = h2_frame(1, 4, id, &headers);
        request.extend(h2_frame(0, 1, id, &list));
        tcp.write_all(&request).await?;
    }

    // Reading nothing for the stall timeout (10 s) and a margin; then the
    // connection must have been closed: reading drains what the kernel
    // holds and ends. An open one would be served on, and closed only
    // when HTTP/2 keepalive gives up on its unanswered ping (at 20 s).
    tokio::time::sleep(Duration::from_secs(13)).await;
    let mut sink = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink)).await;
    assert!(ended.is_ok(), "the connection was kept open ({} bytes read)", sink.len());
    // The directory still serves others.
    client.list(pb::ListRequest::default()).await?;
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn run_returns_when_cancelled_even_with_an_open_health_watch() -> TestResult {
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let mut health = HealthClient::new(dir.channel().await);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await?.into_inner();
    assert_eq!(watch.message().await?.unwrap().status(), ServingStatus::Serving);
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn run_fails_with_context_when_the_data_dir_is_in_use() -> TestResult {
    let data = tempfile::tempdir()?;
    let first = Directory::start(Duration::from_secs(15), data.path()).await;
    // Wait until the first one serves, so that it holds the bindings file.
    first.client().await.list(pb::ListRequest::default()).await?;
    let second = Directory::start(Duration::from_secs(15), data.path()).await;
    let err = second.stop().await.unwrap_err();
    assert!(err.to_string().contains("bindings"), "{err}");
    assert!(err.to_string().contains("running directory"), "{err}");
    first.stop().await?;
    Ok(())
}

#[tokio::test]
async fn tls_and_plaintext_share_the_port_and_tls_shows_the_directory_key() -> TestResult {
    let data = tempfile::tempdir()?;
    // Made before the directory starts, as an operator would: the
    // directory then uses this key instead of making one.
    let printed = key_subcommand(data.path());
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let (mut tls, verifier) = dir.tls_client().await;
    let mut plain = dir.client().await;
    let (alice, bob) = (Key::generate(), Key::generate());

    // Over TLS; the observed address is still the TCP peer's.
    let registered = alice.register(&mut tls, "alice", "", 7400).await?;
    assert_eq!(registered.address, "127.0.0.1:7400");
    // In plaintext on the same port.
    bob.register(&mut plain, "bob", "", 7401).await?;
    for client in [&mut tls, &mut plain] {
        let list = client.list(pb::ListRequest::default()).await?.into_inner();
        let names: Vec<_> = list.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
    }

    let key = verifier.key();
    let reported = peerchat_directoryd::directory_key(data.path())?;
    assert_eq!(key, reported);
    assert_eq!(printed, format!("{}\n", fingerprint(&key)));
    let path = data.path().join("directory.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    dir.stop().await?;

    // A restart on the same data dir keeps the key (the certificate is new).
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let (mut tls, verifier) = dir.tls_client().await;
    assert_eq!(lookup(&mut tls, "alice").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(verifier.key(), key);
    assert_eq!(key_subcommand(data.path()), printed, "also while it runs");
    dir.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_key_subcommand_creates_a_key_once() -> TestResult {
    let data = tempfile::tempdir()?;
    let fresh = data.path().join("new");
    let first = key_subcommand(&fresh);
    assert_eq!(key_subcommand(&fresh), first);
    assert_eq!(first.trim_end(), fingerprint(&peerchat_directoryd::directory_key(&fresh)?));
    Ok(())
}

#[tokio::test]
async fn a_key_others_may_read_stops_the_directory_with_advice() -> TestResult {
    use std::os::unix::fs::PermissionsExt as _;
    let data = tempfile::tempdir()?;
    peerchat_directoryd::directory_key(data.path())?;
    let path = data.path().join("directory.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let err = dir.stop().await.unwrap_err().to_string();
    assert!(err.contains(&format!("chmod 600 {}", path.display())), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_silent_connection_blocks_nobody_and_is_dropped() -> TestResult {
    let data = tempfile::tempdir()?;
    let dir = Directory::start(Duration::from_secs(15), data.path()).await;
    let opened = Instant::now();
    let mut silent = TcpStream::connect(dir.addr).await?;

    // Others are served at once, over both protocols.
    let prompt = Duration::from_secs(2);
    let mut plain = tokio::time::timeout(prompt, dir.client()).await?;
    tokio::time::timeout(prompt, plain.list(pb::ListRequest::default())).await??;
    let (mut tls, _) = tokio::time::timeout(prompt, dir.tls_client()).await?;
    tokio::time::timeout(prompt, tls.list(pb::ListRequest::default())).await??;

    // The silent one is closed after the first-byte timeout (5 s).
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "still open after 10 s");
    assert!(sink.is_empty(), "nothing was sent to it: {sink:?}");
    assert!(opened.elapsed() >= Duration::from_secs(4), "closed early: {:?}", opened.elapsed());
    dir.stop().await?;
    Ok(())
}
