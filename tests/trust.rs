//! Attacks on peerchat's trust (SPEC §5, the trust issue), each against
//! the real `directoryd`, `peerd` and `chatctl` binaries on 127.0.0.1:
//! impostors at a victim's address, a man in the middle replaying a
//! victim's certificate, names taken while their owner is offline, keys that
//! change, another uid on the control socket, an eavesdropper on the peer
//! link, a world-readable key file and a flood on the directory.
//!
//! Each test owns its directory, peers, temp dirs and processes; the network
//! attackers (TLS client and server, TCP relay, gRPC flood) run in a tokio
//! runtime the test owns, so they stop with it. Events are awaited through
//! `chatctl --json watch` or a channel from the attacker, state that can only
//! be polled with `eventually`; never a sleep.
#![allow(clippy::expect_used)]

mod support;

use std::fs;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use peerchat::v1::ChallengeRequest;
use peerchat::v1::directory_client::DirectoryClient;
use support::daemons::{assert_exit, error_line, peerd_start_detached};
use support::proc;
use support::tls::RecordServerCert;
use support::watch::ev;
use support::{Directory, EVENT_TIMEOUT, Peer, Watch, eventually, runtime, short_tempdir};

/// The directory's lease: long enough that no live registration expires
/// during a test.
const TTL: u32 = 15;

/// How long a test waits for a peer to re-register by itself after the
/// directory restarted (a heartbeat interval plus a backoff step or two).
const REREGISTER_TIMEOUT: Duration = Duration::from_secs(20);

/// ALPN of gRPC over TLS, as peerd speaks it.
const ALPN_H2: &[u8] = b"h2";

// ---------------------------------------------------------------- helpers

fn entry<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|p| p["name"] == name)
}

fn assert_contains(line: &str, words: &str) {
    assert!(line.contains(words), "expected {words:?} in: {line}");
}

/// The fingerprint `chatctl --json status` shows for `peer`.
fn key_of(peer: &Peer) -> String {
    let status = peer.status();
    let key = status["key"].as_str().unwrap_or_else(|| panic!("status has no key: {status}"));
    assert!(!key.is_empty(), "status has an empty key: {status}");
    key.to_owned()
}

/// Waits until `observer`'s list shows `name` at `address`, and returns that
/// entry.
fn listed_at(observer: &Peer, name: &str, address: &str) -> Value {
    eventually(&format!("{name} listed at {address}"), EVENT_TIMEOUT, || {
        let list = observer.list();
        match entry(&list, name) {
            Some(e) if e["address"] == address => Ok(e.clone()),
            _ => Err(format!("{list:?}")),
        }
    })
}

/// A free port on 127.0.0.1, for a daemon that must listen on a port the
/// test knows before it starts.
fn reserve_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Asserts the refusal of a peer that is not who the directory says, and
/// that the dialer is left without a conversation.
fn assert_did_not_prove(dialer: &Peer, name: &str) -> String {
    let err = dialer.ctl_err(&["connect", name]);
    assert_contains(&err, "did not prove");
    assert_eq!(dialer.status()["peer"], Value::Null, "{} is in a conversation", dialer.name());
    let err_send = dialer.ctl_err(&["send", "this must never leave"]);
    assert_contains(&err_send, "not connected");
    err
}

/// After a refused dial to `target`, proves that it never saw a
/// conversation: a control peer connects, and the `connected` event for it
/// is the only one `watch` has seen (events arrive in order, so anything
/// from the refused dial would have come first).
fn assert_only_connection_is(watch: &mut Watch, target: &Peer, control: &Peer) {
    let out = control.ctl_json(&["connect", target.name()]);
    assert_eq!(out["peer"], target.name(), "connect printed {out}");
    watch.wait_for(
        &format!("connected {}", control.name()),
        EVENT_TIMEOUT,
        ev::connected(control.name()),
    );
    let seen: Vec<&Value> = watch
        .seen()
        .iter()
        .filter(|e| e["event"] == "connected" || e["event"] == "message")
        .collect();
    assert_eq!(seen.len(), 1, "{} saw more than the control connection: {seen:?}", target.name());
    assert_eq!(seen[0]["peer"], control.name(), "{seen:?}");
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A fresh ed25519 key in PKCS#8, and a self-signed certificate for it.
fn throwaway_identity() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("generating an ed25519 key");
    let cert = rcgen::CertificateParams::new(vec!["peerchat".to_owned()])
        .expect("certificate params")
        .self_signed(&key)
        .expect("self-signing a certificate");
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), der)
}

// ------------------------------------------------- the attackers' tooling

/// Connects to the peerd at `addr` as a TLS 1.3 client with a throwaway
/// client certificate and returns the certificate it presented.
async fn capture_certificate(addr: SocketAddr) -> CertificateDer<'static> {
    let recorder = Arc::new(RecordServerCert::default());
    let (cert, key) = throwaway_identity();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_client_auth_cert(vec![cert], key)
        .expect("client certificate");
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connecting to bob");
    let name = ServerName::try_from("peerchat").expect("server name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with bob");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_H2), "bob does not speak h2");
    drop(tls);
    let seen = recorder.seen.lock().expect("cert lock").take();
    seen.expect("bob presented no certificate")
}

/// Always presents the same certificate and signs with the same key, which
/// need not belong together: rustls does not check that they do.
#[derive(Debug)]
struct Impersonate(Arc<CertifiedKey>);

impl ResolvesServerCert for Impersonate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// What happened to one connection the man in the middle accepted.
#[derive(Debug)]
enum MitmOutcome {
    /// The TLS handshake failed on its side, with this error.
    Refused(String),
    /// The handshake completed and the dialer sent this many bytes after it.
    Completed { bytes_after: usize },
}

/// A TLS 1.3 server (ALPN h2) showing `victim_cert` but signing with a key
/// of its own; reports each connection's outcome on `outcomes`.
async fn man_in_the_middle(
    listener: TcpListener,
    victim_cert: CertificateDer<'static>,
    outcomes: mpsc::UnboundedSender<MitmOutcome>,
) {
    let (_, own_key) = throwaway_identity();
    let provider = provider();
    let signer = provider.key_provider.load_private_key(own_key).expect("loading the MITM key");
    let certified = Arc::new(CertifiedKey::new(vec![victim_cert], signer));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Impersonate(certified)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let acceptor = acceptor.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let outcome = match acceptor.accept(tcp).await {
                Err(e) => MitmOutcome::Refused(e.to_string()),
                Ok(mut tls) => {
                    let mut buf = vec![0u8; 4096];
                    let read = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf));
                    let bytes_after = match read.await {
                        Ok(Ok(n)) => n,
                        _ => 0,
                    };
                    MitmOutcome::Completed { bytes_after }
                }
            };
            let _ = outcomes.send(outcome);
        });
    }
}

/// Every byte a relayed connection carried, each way.
#[derive(Debug, Default)]
struct Recording {
    to_callee: Mutex<Vec<u8>>,
    to_dialer: Mutex<Vec<u8>>,
}

/// A TCP relay: each connection to `listener` is forwarded to `upstream`,
/// and every byte is recorded on its way through.
async fn recording_relay(listener: TcpListener, upstream: SocketAddr, rec: Arc<Recording>) {
    loop {
        let Ok((dialer, _)) = listener.accept().await else { return };
        let rec = rec.clone();
        tokio::spawn(async move {
            let Ok(callee) = TcpStream::connect(upstream).await else { return };
            let (dialer_read, dialer_write) = dialer.into_split();
            let (callee_read, callee_write) = callee.into_split();
            let up = tokio::spawn(pump(dialer_read, callee_write, rec.clone(), true));
            pump(callee_read, dialer_write, rec, false).await;
            let _ = up.await;
        });
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, rec: Arc<Recording>, up: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let log = if up { &rec.to_callee } else { &rec.to_dialer };
        log.lock().expect("recording lock").extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What a flood of Challenge calls got back.
#[derive(Debug, Default)]
struct FloodResult {
    ok: usize,
    /// The first nonce handed out.
    first: Option<Vec<u8>>,
    /// `(code, message)` of every refused call.
    refused: Vec<(tonic::Code, String)>,
}

/// Calls Challenge as fast as it can from source address `from` until at
/// least `min_calls` calls are done and `stop` is set; says on `throttled`
/// when the first call is refused.
async fn flood_challenges(
    directory: SocketAddr,
    from: &'static str,
    min_calls: usize,
    stop: Arc<AtomicBool>,
    throttled: std::sync::mpsc::Sender<()>,
) -> FloodResult {
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(from.parse().map_err(std::io::Error::other)?)?;
        let stream = socket.connect(directory).await?;
        // As tonic's own connector does: no Nagle delay on each small call.
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{directory}"))
        .expect("directory URL")
        .connect_with_connector(connector)
        .await
        .expect("connecting to the directory from 127.0.0.2");
    let mut client = DirectoryClient::new(channel);
    let mut result = FloodResult::default();
    let mut calls = 0;
    while calls < min_calls || !stop.load(Ordering::Relaxed) {
        calls += 1;
        match client.challenge(ChallengeRequest {}).await {
            Ok(answer) => {
                result.ok += 1;
                result.first.get_or_insert(answer.into_inner().nonce);
            }
            Err(status) => {
                if result.refused.is_empty() {
                    let _ = throttled.send(());
                }
                result.refused.push((status.code(), status.message().to_owned()));
            }
        }
    }
    result
}

// ------------------------------------------------------------------ tests

#[test]
fn impostor_given_bobs_address_is_refused_and_bob_sees_nothing() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    let carol = Peer::start(&dir, "carol");
    let mut bob_watch = bob.watch();
    let bob_addr = bob.addr().to_string();

    // Mallory registers her own name with her own key, but has the
    // directory list bob's address for it.
    let mallory = Peer::start_with(&dir, "mallory", "127.0.0.1:0", &["--advertise", &bob_addr]);
    listed_at(&alice, "mallory", &bob_addr);

    // Alice dials bob's address expecting mallory's key; bob answers with
    // his own.
    let err = assert_did_not_prove(&alice, "mallory");
    assert_contains(&err, "peer key mismatch");
    assert_eq!(mallory.status()["peer"], Value::Null);
    match alice.ctl_json(&["history", "mallory"]) {
        Value::Array(h) => assert!(h.is_empty(), "something was stored as sent: {h:?}"),
        other => panic!("history printed {other}"),
    }

    assert_only_connection_is(&mut bob_watch, &bob, &carol);
}

#[test]
fn fake_bob_answering_with_another_key_is_refused() {
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let eve = Peer::start(&dir, "eve");
    let carol = Peer::start(&dir, "carol");
    let mut eve_watch = eve.watch();
    let eve_addr = eve.addr().to_string();

    // The directory lists bob (bob's key) at eve's address: whoever answers
    // there is not bob.
    let bob = Peer::start_with(&dir, "bob", "127.0.0.1:0", &["--advertise", &eve_addr]);
    let listed = listed_at(&alice, "bob", &eve_addr);
    assert_eq!(listed["key"], key_of(&bob).as_str(), "the directory lists bob with another key");

    let err = assert_did_not_prove(&alice, "bob");
    assert_contains(&err, "peer key mismatch");
    assert_eq!(bob.status()["peer"], Value::Null);

    assert_only_connection_is(&mut eve_watch, &eve, &carol);
}

#[test]
fn man_in_the_middle_replaying_bobs_certificate_is_refused() {
    let rt = runtime();
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let bob_key = key_of(&bob);

    // The attacker collects bob's certificate like any client could.
    let bob_cert = rt.block_on(capture_certificate(bob.addr()));

    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("binding the MITM");
    let mitm_addr = listener.local_addr().expect("local_addr").to_string();
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    rt.spawn(man_in_the_middle(listener, bob_cert, tx));

    // Bob, with the same key, now has the directory send dialers to the
    // man in the middle (as a hijacked route or a lying DNS would).
    bob.terminate();
    bob.restart_with("127.0.0.1:0", &["--advertise", &mitm_addr]);
    let listed = listed_at(&alice, "bob", &mitm_addr);
    assert_eq!(listed["key"], bob_key.as_str(), "bob's key changed across a restart");

    let err = assert_did_not_prove(&alice, "bob");
    // The pinned key matched (the certificate is bob's): what failed is the
    // proof that the other end holds bob's private key.
    assert!(!err.contains("peer key mismatch"), "refused for the wrong reason: {err}");
    assert!(err.to_lowercase().contains("signature"), "the error does not say why: {err}");

    let first = rt
        .block_on(async { tokio::time::timeout(EVENT_TIMEOUT, outcomes.recv()).await })
        .expect("the man in the middle saw no connection")
        .expect("the man in the middle stopped");
    let mut all = vec![first];
    while let Ok(more) = outcomes.try_recv() {
        all.push(more);
    }
    for outcome in &all {
        match outcome {
            MitmOutcome::Refused(why) => eprintln!("the man in the middle was refused: {why}"),
            MitmOutcome::Completed { bytes_after } => panic!(
                "the dialer completed a handshake with the man in the middle \
                 ({bytes_after} bytes after it): {all:?}"
            ),
        }
    }
}

#[test]
fn a_name_stays_bound_to_its_key_across_a_directory_restart() {
    let mut dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let bob_key = key_of(&bob);
    let old_addr = bob.addr();
    let listed = listed_at(&alice, "bob", &old_addr.to_string());
    assert_eq!(listed["key"], bob_key.as_str());

    let out = bob.peerd_stop();
    assert_exit(&out, 0, "peerd stop bob");
    bob.wait_exit(Duration::from_secs(10));
    eventually("bob gone from the list", EVENT_TIMEOUT, || {
        let list = alice.list();
        if entry(&list, "bob").is_none() { Ok(()) } else { Err(format!("{list:?}")) }
    });

    // Someone else, with a new key, while bob is offline.
    let thief = short_tempdir();
    let url = dir.url();
    let try_steal = |when: &str| {
        let (out, _guard) = peerd_start_detached(&url, "--name=bob", thief.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{when}: another key took bob: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_contains(&stderr, "taken");
    };
    try_steal("bob offline");

    dir.terminate();
    dir.restart_on_same_port();
    try_steal("after a directory restart");

    // The rightful key, from a new port.
    let new_port = loop {
        let port = reserve_port();
        if port != old_addr.port() {
            break port;
        }
    };
    bob.restart_with(&format!("127.0.0.1:{new_port}"), &[]);
    assert_eq!(bob.addr().port(), new_port);
    let listed = listed_at(&alice, "bob", &bob.addr().to_string());
    assert_eq!(listed["key"], bob_key.as_str(), "bob came back with another key");
    assert_eq!(key_of(&bob), bob_key);
}

#[test]
fn changed_key_is_refused_until_trusted() {
    // A short lease: alice notices the restarted directory sooner.
    let mut dir = Directory::start(6);
    let alice = Peer::start(&dir, "alice");
    let mut old_bob = Peer::start(&dir, "bob");
    let old_key = key_of(&old_bob);

    // Alice talks to bob once and so pins his key.
    let mut wa = alice.watch();
    let out = alice.ctl_json(&["connect", "bob"]);
    assert_eq!(out["peer"], "bob", "{out}");
    let sent = alice.ctl_json(&["send", "hello old bob"]);
    assert_eq!(sent["state"], "delivered", "{sent}");
    alice.ctl_ok(&["disconnect"]);
    wa.wait_for("disconnected bob", EVENT_TIMEOUT, ev::disconnected("bob"));

    // The operator releases "bob" and a new key takes it.
    old_bob.terminate();
    dir.terminate();
    let out = dir.forget("bob");
    assert_exit(&out, 0, "directoryd forget bob");
    dir.restart_on_same_port();
    // Alice's status may still say `registered` from before the restart:
    // only the new directory's list shows that she registered again (bob
    // checks her key there when she dials him).
    eventually("alice registered in the new directory", REREGISTER_TIMEOUT, || {
        let list = alice.list();
        let status = alice.status();
        match entry(&list, "alice") {
            Some(_) if status["directory_state"] == "registered" => Ok(()),
            _ => Err(format!("list {list:?}, status {status}")),
        }
    });
    let new_bob = Peer::start(&dir, "bob");
    let new_key = key_of(&new_bob);
    assert_ne!(new_key, old_key, "a new data dir made the same key");
    let mut wb = new_bob.watch();

    let err = alice.ctl_err(&["connect", "bob"]);
    assert_contains(&err, "key changed");
    assert_contains(&err, "chatctl trust bob");
    assert_eq!(alice.status()["peer"], Value::Null);

    let trusted = alice.ctl_json(&["trust", "bob"]);
    assert_eq!(trusted["peer"], "bob", "{trusted}");
    assert_eq!(trusted["key"], new_key.as_str(), "{trusted}");
    assert_eq!(trusted["previous"], old_key.as_str(), "{trusted}");

    let out = alice.ctl_json(&["connect", "bob"]);
    assert_eq!(out["peer"], "bob", "{out}");
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));
    let sent = alice.ctl_json(&["send", "hello new bob"]);
    assert_eq!(sent["state"], "delivered", "{sent}");
    wb.wait_for("the message", EVENT_TIMEOUT, ev::message("alice", "hello new bob"));
}

#[test]
fn another_uid_cannot_use_the_control_socket_even_when_its_mode_is_opened() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: switching to another uid needs root");
        return;
    }
    let has_setpriv =
        Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    if !has_setpriv {
        eprintln!("skipping: setpriv (util-linux) is not installed");
        return;
    }
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let socket = alice.socket();

    // Open everything by hand: the socket, its folder, and a copy of
    // chatctl that uid 65534 may run.
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).expect("chmod the socket");
    let folder = socket.parent().expect("the socket has a folder");
    fs::set_permissions(folder, fs::Permissions::from_mode(0o755)).expect("chmod its folder");
    let tools = short_tempdir();
    fs::set_permissions(tools.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let chatctl = tools.path().join("chatctl");
    fs::copy(support::bins::bin("chatctl"), &chatctl).expect("copying chatctl");
    fs::set_permissions(&chatctl, fs::Permissions::from_mode(0o755)).expect("chmod chatctl");

    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&chatctl)
            .env_remove("RUST_LOG")
            .current_dir("/")
            .args(args);
        proc::run(&mut cmd, Duration::from_secs(20))
    };
    // The copy runs as that uid. Both ends refuse: chatctl talks only to
    // a daemon of its own user, and the daemon only to clients of its own
    // (`same_user`, whose decision its unit test pins).
    assert_exit(&as_nobody(&["--help"]), 0, "chatctl --help as uid 65534");

    let socket_arg = socket.to_str().expect("UTF-8 socket path");
    for args in [["--socket", socket_arg, "status"], ["--socket", socket_arg, "list"]] {
        let out = as_nobody(&args);
        assert_exit(&out, 1, &format!("chatctl {args:?} as uid 65534"));
        let err = error_line(&out);
        assert_contains(&err, "permission denied");
    }
    // The daemon's own uid still gets in.
    assert_eq!(alice.status()["name"], "alice");
}

#[test]
fn the_peer_link_carries_no_plaintext() {
    const TEXT: &str = "the-eagle-lands-at-midnight-7f3a9c";
    let rt = runtime();
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");

    let bob_port = reserve_port();
    let bob_listen = SocketAddr::from(([127, 0, 0, 1], bob_port));
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("binding the relay");
    let relay_addr = listener.local_addr().expect("local_addr").to_string();
    let rec = Arc::new(Recording::default());
    rt.spawn(recording_relay(listener, bob_listen, rec.clone()));

    let bob = Peer::start_with(&dir, "bob", &bob_listen.to_string(), &["--advertise", &relay_addr]);
    assert_eq!(bob.addr(), bob_listen);
    listed_at(&alice, "bob", &relay_addr);

    let mut wb = bob.watch();
    let out = alice.ctl_json(&["connect", "bob"]);
    assert_eq!(out["peer"], "bob", "{out}");
    let sent = alice.ctl_json(&["send", TEXT]);
    assert_eq!(sent["state"], "delivered", "{sent}");
    wb.wait_for("the message", EVENT_TIMEOUT, ev::message("alice", TEXT));

    let to_callee = rec.to_callee.lock().expect("recording lock").clone();
    let to_dialer = rec.to_dialer.lock().expect("recording lock").clone();
    for (way, bytes) in [("alice → bob", &to_callee), ("bob → alice", &to_dialer)] {
        assert!(!bytes.is_empty(), "{way}: nothing went through the relay");
        assert_eq!(bytes[0], 0x16, "{way}: the stream does not start with a TLS handshake record");
        assert!(!contains(bytes, TEXT.as_bytes()), "{way}: the message text is in clear");
        assert!(!contains(bytes, b"PRI * HTTP/2.0"), "{way}: the HTTP/2 preface is in clear");
        assert!(!contains(bytes, b"alice"), "{way}: alice's name is in clear");
    }
}

#[test]
fn world_readable_key_file_stops_peerd() {
    let dir = Directory::start(TTL);
    let mut bob = Peer::start(&dir, "bob");
    let key = bob.data_dir().join("identity.key");
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600, "{} was created readable by others", key.display());
    assert_eq!(mode(&bob.data_dir()), 0o700, "the data dir was created open to others");
    bob.terminate();

    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let out = proc::run(&mut bob.start_command(), Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "peerd started with a world-readable key:\n{stderr}");
    assert_contains(&stderr, &key.display().to_string());
    assert_contains(&stderr, "chmod 600");
}

#[test]
fn challenge_flood_is_throttled_while_a_well_behaved_peer_registers() {
    let rt = runtime();
    let dir = Directory::start_with(TTL, &["--register-rate", "5"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (throttled_tx, throttled) = std::sync::mpsc::channel();
    let flood =
        rt.spawn(flood_challenges(dir.addr(), "127.0.0.2:0", 200, stop.clone(), throttled_tx));
    throttled.recv_timeout(EVENT_TIMEOUT).expect("the flood from 127.0.0.2 was never throttled");

    // While 127.0.0.2 is still flooding, a peer on 127.0.0.1 starts (its
    // readiness line comes after its registration) and is listed.
    let alice = Peer::start(&dir, "alice");
    listed_at(&alice, "alice", &alice.addr().to_string());
    stop.store(true, Ordering::Relaxed);

    let result = rt.block_on(flood).expect("the flood task");
    eprintln!(
        "flood from 127.0.0.2: {} calls got through, {} refused",
        result.ok,
        result.refused.len()
    );
    assert!(result.ok >= 1, "no Challenge call from 127.0.0.2 got through: {result:?}");
    assert!(result.refused.len() > result.ok, "the flood was barely throttled: {result:?}");
    for (code, message) in &result.refused {
        assert_eq!(*code, tonic::Code::ResourceExhausted, "{message}");
        assert_contains(message, "rate limit");
    }
}

/// Challenge nonces wait for their Register in one bounded table (64
/// here). Four hosts flooding it, each at its own rate limit, keep it
/// full; a peer starting on a fifth still registers, because a full table
/// lets go the oldest nonce of the source holding the most, never the
/// newcomer's only one. (It used to refuse every Challenge until nonces
/// expired: a few dozen hosts kept every new peer out.)
#[test]
fn a_challenge_flood_from_many_hosts_leaves_room_for_a_new_peer() {
    let rt = runtime();
    let dir = Directory::start_with(TTL, &["--max-challenges", "64"]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut floods = Vec::new();
    for from in ["127.0.0.2:0", "127.0.0.3:0", "127.0.0.4:0", "127.0.0.5:0"] {
        let (throttled_tx, throttled) = std::sync::mpsc::channel();
        // Past the burst (40 each): 160 or more asked for, 64 kept.
        let flood = flood_challenges(dir.addr(), from, 60, stop.clone(), throttled_tx);
        floods.push((from, rt.spawn(flood), throttled));
    }
    for (from, _, throttled) in &floods {
        throttled.recv_timeout(EVENT_TIMEOUT).unwrap_or_else(|_| panic!("{from} never throttled"));
    }

    // While the four still flood, a peer on 127.0.0.1 starts (its
    // readiness line comes after its registration) and is listed.
    let alice = Peer::start(&dir, "alice");
    listed_at(&alice, "alice", &alice.addr().to_string());
    stop.store(true, Ordering::Relaxed);

    let mut firsts = Vec::new();
    for (from, flood, _) in floods {
        let result = rt.block_on(flood).expect("the flood task");
        assert!(result.ok >= 40, "{from}: a full table refused a Challenge: {result:?}");
        for (code, message) in &result.refused {
            assert_eq!(*code, tonic::Code::ResourceExhausted, "{message}");
            assert_contains(message, "rate limit");
        }
        firsts.push(result.first.expect("a nonce"));
    }
    // The table was full: each flooder's first nonce was let go. (A nonce
    // still there would fail later, at the clock check.)
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", dir.addr()))
            .expect("directory URL")
            .connect()
            .await
            .expect("connecting to the directory");
        let mut client = DirectoryClient::new(channel);
        for nonce in firsts {
            let request = peerchat::v1::RegisterRequest {
                name: "mallory".to_owned(),
                port: 9,
                status: peerchat::v1::PeerStatus::Available.into(),
                public_key: vec![7; 32],
                nonce,
                signature: vec![0; 64],
                ..Default::default()
            };
            let status = client.register(request).await.expect_err("a nonce let go");
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
            assert_contains(status.message(), "registration proof failed: the nonce");
        }
    });
}

/// A challenge table of one, flooded from 127.0.0.2 by 32 connections
/// asking at once: every nonce alice gets is let go before her Register
/// uses it. The directory says so by a typed reason, and peerd asks again
/// and then backs off, as from a directory that fails; it starts, and
/// registers once the flood stops. (It used to take the refusal as final:
/// `peerd start` failed.)
#[test]
fn a_nonce_let_go_before_its_register_is_asked_for_again() {
    let rt = runtime();
    let args = ["--max-challenges", "1", "--register-rate", "1000000"];
    let dir = Directory::start_with(TTL, &args);
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..32)
        .map(|_| {
            let (never, _) = std::sync::mpsc::channel();
            rt.spawn(flood_challenges(dir.addr(), "127.0.0.2:0", 100, stop.clone(), never))
        })
        .collect();

    let alice = Peer::start(&dir, "alice");
    stop.store(true, Ordering::Relaxed);
    let mut asked = 0;
    for flood in floods {
        let result = rt.block_on(flood).expect("the flood task");
        assert!(result.refused.is_empty(), "{result:?}");
        asked += result.ok;
    }
    eprintln!("the flood asked for {asked} challenges");
    listed_at(&alice, "alice", &alice.addr().to_string());
}

/// An `https://` directory is pinned by its key: the fingerprint given with
/// `--directory-key`, or the one seen first (recorded in the peer's
/// `known_directories`). A directory showing another key is not talked to,
/// so it cannot hand out peer keys.
#[test]
fn an_https_directory_is_pinned_by_its_key() {
    let dir = Directory::start(TTL);
    let https = format!("https://{}", dir.addr());
    let fingerprint = dir.key();
    assert_eq!(fingerprint.split('-').count(), 8, "odd fingerprint {fingerprint:?}");

    // Trust on first use: alice records the key she saw.
    let mut alice = Peer::start_with_directory(&https, "alice");
    let known = alice.data_dir().join("known_directories");
    let recorded = fs::read_to_string(&known).expect("alice recorded the directory's key");
    assert_contains(&recorded, &fingerprint);
    // Given: bob is told the key.
    let bob = Peer::start_with_directory_args(&https, "bob", &["--directory-key", &fingerprint]);
    assert_eq!(bob.status()["directory_state"], "registered");

    // The whole path works over the TLS directory.
    let out = alice.ctl_json(&["connect", "bob"]);
    assert_eq!(out["peer"], "bob");
    let sent = alice.ctl_json(&["send", "over a pinned directory"]);
    assert_eq!(sent["state"], "delivered");

    // Told a different key: refused at start, naming the mismatch.
    let wrong = "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA";
    let carol = Peer::unstarted(&https, "carol", &["--directory-key", wrong]);
    let out = proc::run(&mut carol.start_command(), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "peerd trusted a directory with the wrong key:\n{stderr}");
    assert_contains(&stderr, "directory key mismatch");

    // A recorded key that no longer matches: refused too.
    alice.terminate();
    fs::write(&known, format!("{} {wrong}\n", dir.addr())).expect("tampering with the record");
    let out = proc::run(&mut alice.start_command(), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "peerd ignored its recorded directory key:\n{stderr}");
    assert_contains(&stderr, "directory key mismatch");
}
