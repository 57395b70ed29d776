//! Hostile input against the real daemons (SPEC §4, the faults issue,
//! requirement 4): half-open TLS handshakes (slowloris), floods of
//! connections, oversize and malformed frames on peerd's peer port, and a
//! flood and oversize requests on the control socket. Each test keeps a
//! conversation going while it attacks and checks that the conversation
//! carries on, that the daemon answers new clients afterwards, and that its
//! memory stays bounded (`VmRSS` / `VmHWM` from `/proc/PID/status`, printed
//! so that the numbers can be quoted).
//!
//! The attackers run in a tokio runtime the test owns, so they stop with it;
//! the conversation is driven through `chatctl` from a scoped thread.
#![allow(clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

use pb::chat_client::ChatClient;
use peerchat::v1 as pb;
use support::control::control_client;
use support::proc;
use support::tls::RecordServerCert;
use support::watch::ev;
use support::{Directory, EVENT_TIMEOUT, Peer, Watch, eventually, random_bytes, runtime};

/// The directory's lease: no live registration expires during a test.
const TTL: u32 = 15;

/// ALPN of gRPC over TLS, as peerd speaks it.
const ALPN_H2: &[u8] = b"h2";

/// peerd's largest accepted frame: one maximal text (65,536 bytes) plus
/// 1,024 bytes of id and framing.
const MAX_FRAME_BYTES: usize = 65_536 + 1024;

/// peerd's TLS handshake timeout on the peer port: a half-open connection
/// holds a slot no longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much a daemon's resident memory may grow over an attack. Generous
/// (a debug build, allocator slack), yet far below what holding hundreds of
/// connections' buffers without bound would cost.
const RSS_GROWTH_LIMIT_KIB: u64 = 32 * 1024;

/// Inbound dials one source address may have waiting for their Hello.
const PENDING_DIALS_PER_SOURCE: usize = 2;

/// The chat protocol version in Hello.
const PROTOCOL_VERSION: u32 = 3;

// ---------------------------------------------------------------- memory

/// A process's resident memory now and at its peak, from /proc.
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
}

fn mem(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Mem { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:") }
}

/// How many descriptors (sockets, files) a process holds open, from /proc.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Prints the numbers and asserts that `after` grew less than
/// [`RSS_GROWTH_LIMIT_KIB`] over `before`, now and at the peak.
fn assert_memory_bounded(what: &str, before: Mem, after: Mem) {
    eprintln!(
        "{what}: VmRSS before {} KiB, after {} KiB (growth {} KiB); VmHWM before {} KiB, after {} KiB",
        before.rss_kib,
        after.rss_kib,
        after.rss_kib.saturating_sub(before.rss_kib),
        before.hwm_kib,
        after.hwm_kib,
    );
    let grew = after.rss_kib.saturating_sub(before.rss_kib);
    assert!(
        grew < RSS_GROWTH_LIMIT_KIB,
        "{what}: resident memory grew by {grew} KiB (limit {RSS_GROWTH_LIMIT_KIB} KiB): {before:?} -> {after:?}"
    );
    // The peak during the attack, against what the process used before it.
    let peak = after.hwm_kib.saturating_sub(before.rss_kib.max(before.hwm_kib));
    assert!(
        peak < RSS_GROWTH_LIMIT_KIB,
        "{what}: peak resident memory rose by {peak} KiB during the attack: {before:?} -> {after:?}"
    );
}

// ------------------------------------------------------------ conversation

/// One `chatctl send` made while an attack ran.
#[derive(Debug)]
struct Tick {
    text: String,
    code: Option<i32>,
    state: String,
    took: Duration,
    stderr: String,
}

/// Sends `tick N` from `from` every ~100 ms until `stop` is set (and at
/// least `min` times), each with `chatctl --json send` waiting for
/// delivery. Gives up after `CHATTER_LIMIT`, so that a test whose attack
/// side panicked before setting `stop` fails instead of hanging.
fn chatter(from: &Peer, label: &str, min: usize, stop: &AtomicBool) -> Vec<Tick> {
    const CHATTER_LIMIT: Duration = Duration::from_secs(180);
    let began = Instant::now();
    let mut ticks = Vec::new();
    let mut n = 0;
    while (ticks.len() < min || !stop.load(Ordering::Relaxed)) && began.elapsed() < CHATTER_LIMIT {
        n += 1;
        let text = format!("{label} tick {n:04}");
        let started = Instant::now();
        let out = from.ctl(&["--json", "send", &text]);
        let took = started.elapsed();
        let state = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_owned))
            .unwrap_or_default();
        ticks.push(Tick {
            text,
            code: out.status.code(),
            state,
            took,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
        if let Some(rest) = Duration::from_millis(100).checked_sub(took) {
            thread::sleep(rest);
        }
    }
    ticks
}

/// Every tick was `delivered` (exit 0) and the receiver showed each of them,
/// in order. Prints the send latencies.
fn assert_conversation_carried_on(what: &str, ticks: &[Tick], receiver: &mut Watch, from: &str) {
    for tick in ticks {
        assert!(
            tick.code == Some(0) && tick.state == "delivered",
            "{what}: `send {}` during the attack: exit {:?}, state {:?}, after {:?}: {}",
            tick.text,
            tick.code,
            tick.state,
            tick.took,
            tick.stderr
        );
    }
    let mut took: Vec<Duration> = ticks.iter().map(|t| t.took).collect();
    took.sort();
    eprintln!(
        "{what}: {} messages sent during the attack, all delivered; send took p50 {:?}, max {:?}",
        ticks.len(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    for tick in ticks {
        receiver.wait_for(&tick.text, EVENT_TIMEOUT, ev::message(from, &tick.text));
    }
    let shown: Vec<String> = receiver
        .seen()
        .iter()
        .filter(|e| e["event"] == "message" && e["from"] == from)
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .filter(|t| ticks.iter().any(|tick| &tick.text == t))
        .collect();
    let sent: Vec<String> = ticks.iter().map(|t| t.text.clone()).collect();
    assert_eq!(shown, sent, "{what}: the receiver showed the messages out of order or twice");
}

/// One more message each way, delivered.
fn assert_both_ways(a: &Peer, b: &Peer, what: &str) {
    for (from, to) in [(a, b), (b, a)] {
        let text = format!("{what}: {} to {}", from.name(), to.name());
        let sent = from.ctl_json(&["send", &text]);
        assert_eq!(sent["state"], "delivered", "{what}: {sent}");
    }
}

fn connect(from: &Peer, to: &Peer) {
    let out = from.ctl_json(&["connect", to.name()]);
    assert_eq!(out["peer"], to.name(), "connect printed {out}");
}

// ---------------------------------------------------------- the attackers

/// A self-signed certificate for the ed25519 key in `pkcs8`.
fn identity_from(pkcs8: &[u8]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::try_from(pkcs8).expect("an ed25519 PKCS#8 key");
    let cert = rcgen::CertificateParams::new(vec!["peerchat".to_owned()])
        .expect("certificate params")
        .self_signed(&key)
        .expect("self-signing a certificate");
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    (cert.der().clone(), der)
}

/// A fresh ed25519 key that nobody registered.
fn throwaway_pkcs8() -> Vec<u8> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .expect("generating an ed25519 key")
        .serialize_der()
}

/// A TLS 1.3 client config (ALPN h2) presenting a certificate for `pkcs8`.
fn tls_config(pkcs8: &[u8]) -> Arc<ClientConfig> {
    let (cert, key) = identity_from(pkcs8);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordServerCert::default()))
        .with_client_auth_cert(vec![cert], key)
        .expect("client certificate");
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Arc::new(config)
}

/// A completed TLS handshake with the peerd at `addr`.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls_over(tcp, config).await
}

/// A completed TLS handshake with the peerd at `addr`, from the loopback
/// address `from` (so that many sources can be played from one machine).
async fn tls_connect_from(
    addr: SocketAddr,
    from: std::net::Ipv4Addr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    tls_over(socket.connect(addr).await?, config).await
}

async fn tls_over(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("peerchat").expect("server name");
    TlsConnector::from(config).connect(name, tcp).await
}

/// A Chat client over one TLS connection to `addr`, as a hostile peer would
/// build it from the .proto; it encodes frames of any size.
async fn chat_client(addr: SocketAddr, config: Arc<ClientConfig>) -> ChatClient<Channel> {
    let connect = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tls_connect(addr, config).await?)) }
    });
    // The scheme only tells tonic not to do TLS itself: the connector does.
    let channel = Endpoint::from_static("http://peer.invalid")
        .connect_with_connector(connect)
        .await
        .expect("connecting to the peer port over TLS");
    ChatClient::new(channel).max_decoding_message_size(4 * 1024 * 1024)
}

/// Like [`chat_client`], from the loopback address `from`; `None` if the
/// connection failed (bob's port full, say).
async fn chat_client_from(
    addr: SocketAddr,
    from: std::net::Ipv4Addr,
    config: Arc<ClientConfig>,
) -> Option<ChatClient<Channel>> {
    let connect = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tls_connect_from(addr, from, config).await?)) }
    });
    let channel =
        Endpoint::from_static("http://peer.invalid").connect_with_connector(connect).await.ok()?;
    Some(ChatClient::new(channel))
}

fn hello(name: &str, to: &str) -> pb::Frame {
    pb::Frame {
        kind: Some(pb::frame::Kind::Hello(pb::Hello {
            name: name.to_owned(),
            to: to.to_owned(),
            version: PROTOCOL_VERSION,
            redial: false,
            restarted: false,
        })),
    }
}

fn message_frame(text: String) -> pb::Frame {
    pb::Frame {
        kind: Some(pb::frame::Kind::Message(pb::ChatMessage {
            id: "0123456789abcdef0123456789abcdef".to_owned(),
            text,
            sent_at_ms: 1,
            seq: 1,
        })),
    }
}

/// Opens a Converse stream whose only frame is `first` (the client half
/// stays open) and returns what the callee answered: an error status, or
/// its first frame.
async fn converse_once(
    client: &mut ChatClient<Channel>,
    first: pb::Frame,
) -> Result<Option<pb::Frame>, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(first).await.expect("queueing the first frame");
    let response =
        tokio::time::timeout(Duration::from_secs(15), client.converse(ReceiverStream::new(rx)))
            .await
            .expect("no answer to the first frame within 15 s")?;
    let mut inbound = response.into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(15), inbound.message())
        .await
        .expect("no frame or status within 15 s");
    drop(tx);
    reply
}

fn assert_refused(
    what: &str,
    got: Result<Option<pb::Frame>, tonic::Status>,
    codes: &[Code],
    words: &str,
) -> tonic::Status {
    let status = match got {
        Err(status) => status,
        Ok(frame) => panic!("{what}: accepted, answered {frame:?}"),
    };
    eprintln!("{what}: {:?}: {}", status.code(), status.message());
    assert!(codes.contains(&status.code()), "{what}: expected one of {codes:?}, got {status:?}");
    assert!(
        status.message().to_lowercase().contains(words),
        "{what}: {:?} does not say {words:?}",
        status.message()
    );
    status
}

/// The typed reason a refusal carries in its status details.
fn refusal_of(status: &tonic::Status) -> pb::Refusal {
    use prost::Message as _;
    pb::Refusal::decode(status.details()).expect("a refusal carries its reason in the details")
}

/// Reads from `stream` until the other side closes it (EOF or an error);
/// returns how long that took, or `None` if it stayed open for `limit`.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok().map(|()| started.elapsed())
}

/// The start of a TLS 1.2/1.3 ClientHello record (a record header announcing
/// 512 bytes, a handshake header and the version), and nothing after.
const PARTIAL_CLIENT_HELLO: &[u8] =
    &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// The slowloris attackers, alternately: a stalled ClientHello, and nothing.
const SLOWLORIS: &[&[u8]] = &[PARTIAL_CLIENT_HELLO, b""];

/// `n` TCP connections to `addr`, the i-th sending `payloads[i % len]`
/// (maybe nothing) and then waiting. Reports, per connection, its payload's
/// index and how long the server took to close it (`None`: still open
/// after `limit`).
async fn half_open(
    addr: SocketAddr,
    n: usize,
    payloads: &'static [&'static [u8]],
    limit: Duration,
) -> mpsc::UnboundedReceiver<(usize, Option<Duration>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..n {
        let mut tcp = TcpStream::connect(addr).await.expect("connecting an attacker");
        let tx = tx.clone();
        let kind = i % payloads.len();
        tokio::spawn(async move {
            let _ = tcp.write_all(payloads[kind]).await;
            let _ = tx.send((kind, until_closed(&mut tcp, limit).await));
        });
    }
    rx
}

/// How the server treated a batch of half-open connections.
#[derive(Debug, Default, Clone)]
struct Closings {
    /// Closed within a second: refused for want of a slot.
    at_once: usize,
    /// Held for a while (a slot, until the handshake timeout).
    after_timeout: usize,
    max: Duration,
    /// Still open when the attacker gave up.
    never: usize,
}

/// Collects the reports of `n` connections from [`half_open`], per payload.
async fn closings(
    mut rx: mpsc::UnboundedReceiver<(usize, Option<Duration>)>,
    n: usize,
    kinds: usize,
) -> Vec<Closings> {
    let mut all = vec![Closings::default(); kinds];
    for _ in 0..n {
        let (kind, closed) = rx.recv().await.expect("an attacker's report");
        let c = &mut all[kind];
        match closed {
            None => c.never += 1,
            Some(t) => {
                c.max = c.max.max(t);
                if t < Duration::from_secs(1) {
                    c.at_once += 1;
                } else {
                    c.after_timeout += 1;
                }
            }
        }
    }
    all
}

/// `total` connect-then-close cycles against `addr`, `parallel` at a time.
async fn connect_close_cycles(addr: SocketAddr, total: usize, parallel: usize) -> usize {
    let mut refused = 0;
    let mut set: JoinSet<bool> = JoinSet::new();
    for i in 0..total {
        if i >= parallel
            && let Some(done) = set.join_next().await
        {
            refused += usize::from(!done.expect("a connect task"));
        }
        set.spawn(async move { TcpStream::connect(addr).await.is_ok() });
    }
    while let Some(done) = set.join_next().await {
        refused += usize::from(!done.expect("a connect task"));
    }
    refused
}

// ------------------------------------------------------------------ tests

/// 300 connections that send a few bytes of a ClientHello and stall, and
/// 300 that send nothing, against bob's peer port while alice talks to him.
/// The attackers fill bob's 64 connection slots; each holds one for at most
/// the 5 s handshake timeout and the rest are closed at once. Tested: the
/// conversation carries on throughout; every attacker connection is closed
/// by bob within the timeout (plus slack); once the timeout has freed the
/// slots a new dial is answered while the attackers' sockets are still
/// open; after they are gone a new conversation starts; bob's memory stays
/// bounded.
#[test]
fn slowloris_on_the_peer_port_does_not_stop_the_conversation() {
    const EACH: usize = 300;
    let rt = runtime();
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let carol = Peer::start(&dir, "carol");
    let mut bob_watch = bob.watch();
    connect(&alice, &bob);
    assert_both_ways(&alice, &bob, "warm-up");
    let before = mem(bob.pid());
    let addr = bob.addr();

    let stop = AtomicBool::new(false);
    let (ticks, closed) = thread::scope(|s| {
        let talk = s.spawn(|| chatter(&alice, "slowloris", 20, &stop));
        let attackers = rt.block_on(half_open(addr, 2 * EACH, SLOWLORIS, HANDSHAKE_TIMEOUT * 3));
        // During the attack, once the handshake timeout has freed the slots
        // (the attackers' sockets are still open on this side): a new dial
        // gets through TLS and Hello to bob, who answers that he is busy.
        let config = tls_config(&throwaway_pkcs8());
        let started = Instant::now();
        eventually(
            "a TLS handshake with bob during the attack",
            HANDSHAKE_TIMEOUT * 3,
            || match rt.block_on(tls_connect(addr, config.clone())) {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        );
        eprintln!("slowloris: a new TLS handshake got through after {:?}", started.elapsed());
        let err = carol.ctl_err(&["connect", "bob"]);
        assert!(err.contains("busy"), "carol's dial during the attack: {err}");
        let closed = rt.block_on(closings(attackers, 2 * EACH, SLOWLORIS.len()));
        stop.store(true, Ordering::Relaxed);
        (talk.join().expect("the chatter thread"), closed)
    });
    bob.assert_running();
    for (what, c) in ["partial ClientHello", "silent"].iter().zip(&closed) {
        eprintln!("slowloris: {EACH} {what} connections: {c:?}");
        assert_eq!(c.never, 0, "{what}: bob kept connections open past 15 s: {c:?}");
        assert!(
            c.max < HANDSHAKE_TIMEOUT + Duration::from_secs(4),
            "{what}: bob held a half-open connection for {:?}",
            c.max
        );
    }
    // Only bob's free slots (64 less alice's connection) were held, until
    // the handshake timeout; every other attacker was closed at once.
    let held: usize = closed.iter().map(|c| c.after_timeout).sum();
    assert!(held <= 64, "bob held {held} half-open connections at once: {closed:?}");
    assert_conversation_carried_on("slowloris", &ticks, &mut bob_watch, "alice");

    // After the attack: a new conversation with a new peer.
    assert_both_ways(&alice, &bob, "after the attack");
    alice.ctl_ok(&["disconnect"]);
    bob_watch.wait_for("disconnected alice", EVENT_TIMEOUT, ev::disconnected("alice"));
    connect(&carol, &bob);
    assert_both_ways(&carol, &bob, "a new conversation after the attack");
    assert_memory_bounded("slowloris: bob", before, mem(bob.pid()));
}

/// 2,000 connect/close cycles against bob's peer port and 2,000 against the
/// directory's port (50 at a time), 300 completed TLS handshakes against
/// bob, and 1,000 silent connections held open on the directory at once,
/// while alice talks to bob. Both keep serving: the conversation carries
/// on, the directory lists everyone during and after, and neither process's
/// memory runs away.
#[test]
fn connection_floods_on_the_peer_and_directory_ports() {
    const CYCLES: usize = 2000;
    const HELD: usize = 1000;
    let rt = runtime();
    let mut dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let mut bob_watch = bob.watch();
    connect(&alice, &bob);
    assert_both_ways(&alice, &bob, "warm-up");
    let dir_pid = dir.pid();
    let (bob_before, dir_before) = (mem(bob.pid()), mem(dir_pid));
    let (bob_addr, dir_addr) = (bob.addr(), dir.addr());

    let stop = AtomicBool::new(false);
    let ticks = thread::scope(|s| {
        let talk = s.spawn(|| chatter(&alice, "flood", 20, &stop));
        let started = Instant::now();
        let refused = rt.block_on(connect_close_cycles(bob_addr, CYCLES, 50));
        eprintln!(
            "flood: {CYCLES} connect/close cycles on bob's port in {:?} ({refused} refused)",
            started.elapsed()
        );
        let started = Instant::now();
        let refused = rt.block_on(connect_close_cycles(dir_addr, CYCLES, 50));
        eprintln!(
            "flood: {CYCLES} connect/close cycles on the directory in {:?} ({refused} refused)",
            started.elapsed()
        );

        // Full handshakes cost bob the most: a key exchange and a signature
        // check each. Sixteen at a time from eight source addresses: one
        // source may hold only eight of bob's connections.
        let started = Instant::now();
        let config = tls_config(&throwaway_pkcs8());
        let completed = rt.block_on(async {
            let mut set: JoinSet<bool> = JoinSet::new();
            let mut completed = 0;
            for i in 0..300 {
                if i >= 16
                    && let Some(done) = set.join_next().await
                {
                    completed += usize::from(done.expect("a handshake task"));
                }
                let config = config.clone();
                let from = std::net::Ipv4Addr::new(127, 0, 1, 1 + (i % 8) as u8);
                set.spawn(async move { tls_connect_from(bob_addr, from, config).await.is_ok() });
            }
            while let Some(done) = set.join_next().await {
                completed += usize::from(done.expect("a handshake task"));
            }
            completed
        });
        eprintln!("flood: {completed} of 300 TLS handshakes with bob in {:?}", started.elapsed());
        assert!(completed >= 290, "bob completed only {completed} of 300 TLS handshakes");

        // Silent connections held on the directory; a peer still lists.
        let held = rt.block_on(half_open(dir_addr, HELD, &[b""], Duration::from_secs(15)));
        let listed = alice.list();
        assert!(listed.iter().any(|p| p["name"] == "bob"), "bob missing from {listed:?}");
        let held = rt.block_on(closings(held, HELD, 1)).remove(0);
        eprintln!("flood: {HELD} silent connections on the directory: {held:?}");
        assert_eq!(held.never, 0, "the directory held silent connections past 15 s: {held:?}");
        stop.store(true, Ordering::Relaxed);
        talk.join().expect("the chatter thread")
    });
    bob.assert_running();
    dir.assert_running();
    assert_conversation_carried_on("flood", &ticks, &mut bob_watch, "alice");
    assert_both_ways(&alice, &bob, "after the flood");
    let listed = alice.list();
    for name in ["alice", "bob"] {
        assert!(listed.iter().any(|p| p["name"] == name), "{name} missing from {listed:?}");
    }
    assert_memory_bounded("flood: bob", bob_before, mem(bob.pid()));
    assert_memory_bounded("flood: directoryd", dir_before, mem(dir_pid));
}

/// Frames that break the rules, sent to bob's peer port by a client that
/// built its own Chat client from the .proto, while alice talks to bob: a
/// hello from a name nobody registered, to the wrong name, or too long; a
/// first frame over the size limit (just over, and 1 MiB); a dial that
/// never says hello; garbage after a completed TLS handshake. And from a
/// registered peer (mallory's own key) after carol welcomed it: an oversize
/// frame and a text over the limit. Each gets its status or a closed
/// stream; bob and carol keep serving.
#[test]
fn malformed_and_oversize_frames_on_the_peer_port() {
    let rt = runtime();
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let mut carol = Peer::start_with(&dir, "carol", "127.0.0.1:0", &["--resume-window", "2"]);
    let mallory = Peer::start(&dir, "mallory");
    let mut bob_watch = bob.watch();
    let mut carol_watch = carol.watch();
    connect(&alice, &bob);
    assert_both_ways(&alice, &bob, "warm-up");
    let before = mem(bob.pid());
    let (bob_addr, carol_addr) = (bob.addr(), carol.addr());
    let stranger = tls_config(&throwaway_pkcs8());

    let stop = AtomicBool::new(false);
    let ticks = thread::scope(|s| {
        let talk = s.spawn(|| chatter(&alice, "frames", 20, &stop));
        rt.block_on(async {
            let mut client = chat_client(bob_addr, stranger.clone()).await;
            let denied = [Code::PermissionDenied];
            let got = converse_once(&mut client, hello("nobody", "bob")).await;
            // One answer for every failed check: which one failed is ours
            // to know (a changed key would say whom bob talked to).
            let words = "cannot verify you as nobody";
            assert_refused("hello from an unregistered name", got, &denied, words);
            // A registered name, but not the key that proves it.
            let got = converse_once(&mut client, hello("mallory", "bob")).await;
            let words = "cannot verify you as mallory";
            assert_refused("hello as mallory with another key", got, &denied, words);
            let got = converse_once(&mut client, hello("nobody", "zed")).await;
            let status = assert_refused(
                "hello to the wrong name",
                got,
                &[Code::FailedPrecondition],
                "not zed",
            );
            assert_eq!(refusal_of(&status).reason(), pb::refusal::Reason::WrongPeer);
            // Another version is refused by its reason, which names ours.
            let mut old = hello("nobody", "bob");
            if let Some(pb::frame::Kind::Hello(h)) = &mut old.kind {
                h.version = 1;
            }
            let got = converse_once(&mut client, old).await;
            let words = "unsupported protocol version 1";
            let status =
                assert_refused("a hello of version 1", got, &[Code::InvalidArgument], words);
            let refusal = refusal_of(&status);
            assert_eq!(refusal.reason(), pb::refusal::Reason::UnsupportedVersion);
            assert_eq!(
                refusal.version, PROTOCOL_VERSION,
                "the refusal says which version bob speaks"
            );
            let got = converse_once(&mut client, hello(&"n".repeat(60_000), "bob")).await;
            assert_refused("hello with a 60 KB name", got, &[Code::InvalidArgument], "name");
            let got = converse_once(&mut client, message_frame("hi".to_owned())).await;
            assert_refused("a message before hello", got, &[Code::InvalidArgument], "hello");

            let too_big = [Code::OutOfRange, Code::ResourceExhausted];
            for size in [MAX_FRAME_BYTES + 1, 1024 * 1024] {
                // A fresh connection each: a refusal may close the old one.
                let mut client = chat_client(bob_addr, stranger.clone()).await;
                let got = converse_once(&mut client, hello(&"x".repeat(size), "bob")).await;
                assert_refused(&format!("a {size}-byte first frame"), got, &too_big, "too large");
            }

            // Dials that never say hello hold no pending-dial slot: with
            // more of them open than this source has slots, a dial that
            // says hello still gets its real answer at once (nobody is not
            // registered, as above), and the silent ones end at the
            // handshake timeout.
            let mut silent = Vec::new();
            for _ in 0..=PENDING_DIALS_PER_SOURCE {
                let mut client = chat_client(bob_addr, stranger.clone()).await;
                silent.push(tokio::spawn(async move { silent_dial(&mut client).await }));
            }
            let mut one_more = chat_client(bob_addr, stranger.clone()).await;
            let got = converse_once(&mut one_more, hello("nobody", "bob")).await;
            let words = "cannot verify you as nobody";
            let status = assert_refused("a dial beside silent ones", got, &denied, words);
            assert_eq!(refusal_of(&status).reason(), pb::refusal::Reason::Unverified);
            for task in silent {
                let (got, took) = task.await.expect("a silent dial");
                let status = got.expect_err("a dial that never said hello was answered");
                eprintln!("a dial without hello: {:?} after {took:?}", status.code());
                assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
                assert!(took < HANDSHAKE_TIMEOUT + Duration::from_secs(4), "held {took:?}");
            }

            // Garbage after a completed TLS handshake: bob closes it.
            for (what, bytes) in garbage_after_tls() {
                let mut tls = tls_connect(bob_addr, stranger.clone()).await.expect("TLS to bob");
                let _ = tls.write_all(&bytes).await;
                let _ = tls.flush().await;
                let took = until_closed(&mut tls, Duration::from_secs(15)).await;
                eprintln!("{what} after TLS: closed after {took:?}");
                assert!(took.is_some(), "{what} after TLS: bob kept the connection open");
            }
        });
        stop.store(true, Ordering::Relaxed);
        talk.join().expect("the chatter thread")
    });
    bob.assert_running();
    assert_conversation_carried_on("frames", &ticks, &mut bob_watch, "alice");

    // Mallory's raw client, with mallory's own registered key, is welcomed
    // by carol, then breaks the rules inside the conversation.
    let pkcs8 = std::fs::read(mallory.data_dir().join("identity.key")).expect("mallory's key");
    let as_mallory = tls_config(&pkcs8);
    let oversize = message_frame("y".repeat(1024 * 1024));
    let long_text = message_frame("z".repeat(MAX_FRAME_BYTES - 600));
    // Each ends the stream with a status that says why, not a clean end
    // mallory would take for a lost link.
    let cases = [
        ("a 1 MiB frame", oversize, "OutOfRange: Error, decoded message length too large"),
        ("a text over 64 KiB", long_text, "InvalidArgument: protocol violation: message too long"),
    ];
    for (what, frame, expected) in cases {
        let outcome = rt.block_on(async {
            let mut client = chat_client(carol_addr, as_mallory.clone()).await;
            let (tx, rx) = mpsc::channel(4);
            tx.send(hello("mallory", "carol")).await.expect("queueing hello");
            let response = client.converse(ReceiverStream::new(rx)).await.expect("carol answers");
            let mut inbound = response.into_inner();
            let welcome = inbound.message().await.expect("a welcome").expect("a frame");
            assert!(
                matches!(welcome.kind, Some(pb::frame::Kind::Welcome(_))),
                "carol answered {welcome:?}"
            );
            tx.send(frame).await.expect("queueing the bad frame");
            // Carol ends the stream; whatever she sends first is no receipt.
            let mut frames = Vec::new();
            let end = loop {
                match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
                    Err(_) => panic!("{what}: carol kept the stream open for 15 s: {frames:?}"),
                    Ok(Ok(Some(f))) => frames.push(f),
                    Ok(Ok(None)) => break "end of stream".to_owned(),
                    Ok(Err(s)) => break format!("{:?}: {}", s.code(), s.message()),
                }
            };
            let receipts =
                frames.iter().filter(|f| matches!(f.kind, Some(pb::frame::Kind::Receipt(_))));
            assert_eq!(receipts.count(), 0, "{what}: carol acknowledged it: {frames:?}");
            end
        });
        eprintln!("mallory sent {what} to carol: {outcome}");
        assert!(outcome.starts_with(expected), "{what}: carol ended with {outcome}");
        carol_watch.wait_for("connected mallory", EVENT_TIMEOUT, ev::connected("mallory"));
        // Carol waits out her 2 s resume window for mallory, then is free.
        carol_watch.wait_for("disconnected mallory", EVENT_TIMEOUT, ev::disconnected("mallory"));
        let about: Vec<String> = carol_watch
            .seen()
            .iter()
            .filter(|e| e["peer"] == "mallory")
            .map(|e| format!("{}({})", e["event"], e["reason"]))
            .collect();
        eprintln!("carol's events so far about mallory: {}", about.join(", "));
        let texts: Vec<&Value> =
            carol_watch.seen().iter().filter(|e| e["event"] == "message").collect();
        assert!(texts.is_empty(), "{what}: carol showed {texts:?}");
    }
    carol.assert_running();
    // Carol still talks to a well-behaved peer (bob is busy with alice, so
    // mallory's own daemon).
    connect(&mallory, &carol);
    assert_both_ways(&mallory, &carol, "carol after the bad frames");

    assert_both_ways(&alice, &bob, "after the bad frames");
    assert_memory_bounded("frames: bob", before, mem(bob.pid()));
}

/// Opens a Converse stream and never says hello. Returns how the stream
/// ended and how long it lasted.
async fn silent_dial(client: &mut ChatClient<Channel>) -> (Result<(), tonic::Status>, Duration) {
    let (tx, rx) = mpsc::channel::<pb::Frame>(1);
    let started = Instant::now();
    let got = client.converse(ReceiverStream::new(rx)).await;
    drop(tx);
    (got.map(|_| ()), started.elapsed())
}

/// Dials with a hello whose name bob must ask the directory about, while
/// the directory is stopped: each holds one of bob's pending-dial slots
/// until his lookup times out. Returns the first frame or the refusal.
async fn dial_held_by_the_lookup(
    client: &mut ChatClient<Channel>,
    name: &str,
) -> Result<Option<pb::Frame>, tonic::Status> {
    converse_once(client, hello(name, "bob")).await
}

/// What a client may send after the TLS handshake instead of HTTP/2.
fn garbage_after_tls() -> Vec<(&'static str, Vec<u8>)> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut huge_frame = PREFACE.to_vec();
    // A frame header announcing 16 MiB of SETTINGS.
    huge_frame.extend_from_slice(&[0xff, 0xff, 0xff, 4, 0, 0, 0, 0, 0]);
    huge_frame.extend_from_slice(&random_bytes(1024));
    vec![
        ("64 KiB of random bytes", random_bytes(64 * 1024)),
        ("an HTTP/1.1 request", b"GET / HTTP/1.1\r\nHost: bob\r\n\r\n".to_vec()),
        ("a 16 MiB HTTP/2 frame header", huge_frame),
    ]
}

/// 200 `chatctl status` at once, 500 raw connections to the control socket
/// (half of them sending garbage), and Send requests over the limits from a
/// Control client of our own: a text over 1 MiB (over the request limit)
/// and one of 100 KB (over the text limit). Each gets a clear status; bob
/// keeps serving alice and his own user.
#[test]
fn control_socket_flood_and_oversize_requests() {
    const STATUS_CALLS: usize = 200;
    let rt = runtime();
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let mut bob = Peer::start(&dir, "bob");
    let mut alice_watch = alice.watch();
    connect(&alice, &bob);
    assert_both_ways(&alice, &bob, "warm-up");
    let before = mem(bob.pid());

    let started = Instant::now();
    let outs: Vec<(Option<i32>, Value, String)> = thread::scope(|s| {
        let calls: Vec<_> = (0..STATUS_CALLS)
            .map(|_| {
                s.spawn(|| {
                    let out = bob.ctl(&["--json", "status"]);
                    let json = serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null);
                    (out.status.code(), json, String::from_utf8_lossy(&out.stderr).into_owned())
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("a status thread")).collect()
    });
    eprintln!("control: {STATUS_CALLS} concurrent `chatctl status` in {:?}", started.elapsed());
    let mut failures: HashMap<String, usize> = HashMap::new();
    for (code, json, stderr) in &outs {
        if *code != Some(0) || json["name"] != "bob" {
            *failures.entry(format!("exit {code:?}: {}", stderr.trim())).or_default() += 1;
        }
    }
    assert!(failures.is_empty(), "`chatctl status` failed under the flood: {failures:?}");

    let socket = bob.socket();
    rt.block_on(async {
        // Raw connections: half close at once, half send garbage first.
        let garbage = random_bytes(4096);
        let mut set = JoinSet::new();
        for i in 0..500 {
            let (socket, garbage) = (socket.clone(), garbage.clone());
            set.spawn(async move {
                let Ok(mut unix) = UnixStream::connect(&socket).await else { return false };
                if i % 2 == 0 {
                    let _ = unix.write_all(&garbage).await;
                    until_closed(&mut unix, Duration::from_secs(15)).await.is_some()
                } else {
                    true
                }
            });
        }
        let mut closed = 0;
        while let Some(done) = set.join_next().await {
            closed += usize::from(done.expect("a raw control connection"));
        }
        assert_eq!(closed, 500, "bob left garbage connections open on the control socket");

        let mut client = control_client(socket.clone()).await;
        let request = |text: String| pb::SendRequest { text, ..Default::default() };
        let err = client
            .send(request("a".repeat(1024 * 1024 + 1)))
            .await
            .expect_err("a send over 1 MiB was accepted");
        eprintln!("control: a 1 MiB + 1 byte send: {:?}: {}", err.code(), err.message());
        assert!(
            matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
            "a send over 1 MiB: {err:?}"
        );
        assert!(err.message().contains("too large"), "{err:?}");
        let err = client
            .send(request("b".repeat(100_000)))
            .await
            .expect_err("a send of 100 KB was accepted");
        eprintln!("control: a 100 KB send: {:?}: {}", err.code(), err.message());
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("too long"), "{err:?}");
        // The same client still works after the refusals.
        let status = client.get_status(pb::GetStatusRequest {}).await.expect("status");
        assert_eq!(status.into_inner().name, "bob");
    });
    bob.assert_running();
    let texts: Vec<&Value> = alice_watch
        .seen()
        .iter()
        .filter(|e| e["event"] == "message" && e["from"] == "bob")
        .filter(|e| e["text"].as_str().is_some_and(|t| t.starts_with('a') || t.starts_with('b')))
        .filter(|e| e["text"].as_str().is_some_and(|t| t.len() > 1000))
        .collect();
    assert!(texts.is_empty(), "an oversize text reached alice: {} of them", texts.len());
    assert_both_ways(&alice, &bob, "after the control flood");
    alice_watch.wait_for("bob's last message", EVENT_TIMEOUT, |e| {
        e["event"] == "message" && e["text"] == "after the control flood: bob to alice"
    });
    assert_memory_bounded("control: bob", before, mem(bob.pid()));
}

/// A script that opens control connections and never closes them cannot
/// grow bob without bound: past peerd's ceiling it stops accepting (the
/// rest wait in the kernel's listen queue) until some close, and once they
/// go chatctl is answered again. Before, bob took every one (13,000 of
/// them cost 217 MB).
#[test]
fn control_connections_held_open_are_capped() {
    const CEILING: usize = 256;
    const HELD: usize = 400;
    let rt = runtime();
    let dir = Directory::start(TTL);
    let alice = Peer::start(&dir, "alice");
    let bob = Peer::start(&dir, "bob");
    connect(&alice, &bob);
    let base = open_fds(bob.pid());
    let socket = bob.socket();
    let held: Vec<UnixStream> = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..HELD {
            match UnixStream::connect(&socket).await {
                Ok(unix) => held.push(unix),
                // The listen queue is full: as good as held.
                Err(e) => eprintln!("connection {} refused: {e}", held.len() + 1),
            }
        }
        held
    });
    assert!(held.len() > CEILING, "only {} control connections opened", held.len());
    // Near it: `base` may have counted a descriptor bob has closed since.
    eventually("bob to take connections up to his ceiling", Duration::from_secs(10), || {
        let taken = open_fds(bob.pid()).saturating_sub(base);
        if taken >= CEILING - 8 { Ok(()) } else { Err(format!("{taken} more fds")) }
    });
    // A negative: nothing to await, so a moment for bob to take more if
    // he would.
    std::thread::sleep(Duration::from_millis(500));
    let taken = open_fds(bob.pid()).saturating_sub(base);
    eprintln!("bob holds {taken} more fds with {} control connections open", held.len());
    assert!(taken <= CEILING + 8, "bob took {taken} of {} connections", held.len());
    rt.block_on(async { drop(held) });
    eventually("chatctl status once they closed", Duration::from_secs(10), || {
        let out = bob.ctl(&["status"]);
        if out.status.success() { Ok(()) } else { Err(error_line_of(&out)) }
    });
    assert_both_ways(&alice, &bob, "after the held control connections");
}

/// peerd's limit on a peer-port connection that carries no Chat stream.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections that finish TLS and then say nothing, from eight sources at
/// eight each, hold every one of bob's 64 connection slots: each is closed
/// once idle for IDLE_TIMEOUT (not before: a dialer may be slow to ask),
/// and then carol can dial bob. Before the limit they were held for good.
#[test]
fn connections_that_carry_no_chat_stream_are_closed_when_idle() {
    let rt = runtime();
    let dir = Directory::start(TTL);
    let bob = Peer::start(&dir, "bob");
    let carol = Peer::start(&dir, "carol");
    let closed = rt.block_on(async {
        let config = tls_config(&throwaway_pkcs8());
        let mut held = JoinSet::new();
        for source in 1..=8u8 {
            for _ in 0..8 {
                let from = std::net::Ipv4Addr::new(127, 0, 1, source);
                let mut tls = tls_connect_from(bob.addr(), from, config.clone())
                    .await
                    .expect("a TLS connection while slots are free");
                let opened = Instant::now();
                held.spawn(async move {
                    until_closed(&mut tls, IDLE_TIMEOUT * 3).await.map(|_| opened.elapsed())
                });
            }
        }
        held.join_all().await
    });
    let never = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(never, 0, "{never} of 64 idle connections still open after {:?}", IDLE_TIMEOUT * 3);
    let times: Vec<Duration> = closed.into_iter().flatten().collect();
    let (first, last) = (times.iter().min().copied(), times.iter().max().copied());
    eprintln!("64 idle connections closed after {first:?} .. {last:?}");
    assert!(
        first.is_some_and(|t| t >= IDLE_TIMEOUT - Duration::from_millis(500)),
        "closed before the idle limit: {first:?}"
    );
    assert!(last.is_some_and(|t| t < IDLE_TIMEOUT + Duration::from_secs(5)), "{last:?}");
    let out = carol.ctl(&["connect", "bob"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

// ------------------------------------- regressions of gaps found by attack

/// Eight hosts hold all 64 of bob's slots with connections that carry
/// nothing (half a ClientHello, or a finished TLS handshake and silence),
/// reopening each as soon as bob closes it. A dial from carol still gets
/// through, at once: a full port ends an idle connection of the address
/// holding the most for the newest. Before, every dial failed with "does
/// not answer" for as long as the attack went on.
/// Eight hosts (127.0.`net`.1 to .8), eight connections each: every one of
/// bob's 64 slots. Each of the 64 runs `attempt` (its host's address, its
/// number among the host's eight) again and again until `stop`; an attempt
/// holds what it opened until bob ends it (or it failed), then returns.
fn eight_hosts<F, Fut>(
    rt: &tokio::runtime::Runtime,
    net: u8,
    stop: &Arc<AtomicBool>,
    attempt: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(std::net::Ipv4Addr, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    (1..=8u8)
        .flat_map(|host| (0..8).map(move |i| (host, i)))
        .map(|(host, i)| {
            let (stop, attempt) = (stop.clone(), attempt.clone());
            rt.spawn(async move {
                let from = std::net::Ipv4Addr::new(127, 0, net, host);
                while !stop.load(Ordering::Relaxed) {
                    attempt(from, i).await;
                }
            })
        })
        .collect()
}

/// What the "every slot held" tests start from: bob and carol online,
/// bob's open descriptors before the attack, and the attackers' shared
/// count of connections held and their stop flag.
/// Fields drop in order: the peers first, then the directory, then the
/// runtime the attackers ran on.
struct Siege {
    bob: Peer,
    carol: Peer,
    _dir: Directory,
    rt: tokio::runtime::Runtime,
    base: usize,
    stop: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

impl Siege {
    fn start() -> Siege {
        let rt = runtime();
        let dir = Directory::start(TTL);
        let bob = Peer::start(&dir, "bob");
        let carol = Peer::start(&dir, "carol");
        let base = open_fds(bob.pid());
        Siege {
            bob,
            carol,
            _dir: dir,
            rt,
            base,
            stop: Arc::new(AtomicBool::new(false)),
            held: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// What each attacker task needs: the count to keep, where bob is, and
    /// a TLS identity of nobody.
    fn for_attackers(&self) -> (Arc<AtomicUsize>, SocketAddr, Arc<ClientConfig>) {
        (self.held.clone(), self.bob.addr(), tls_config(&throwaway_pkcs8()))
    }

    /// Waits until the attackers hold all 64 of bob's connections (taken by
    /// bob, not only queued by the kernel: near 64 descriptors, as `base` may
    /// count one bob has closed since), so that a connection from another host
    /// is answered only by an eviction; then carol dials bob three times, the
    /// attack stops, and every dial must have got in, in normal time.
    fn carol_dials_while_all_slots_are_held(&self, attackers: Vec<tokio::task::JoinHandle<()>>) {
        let (bob, carol, base, held, stop) =
            (&self.bob, &self.carol, self.base, &*self.held, &*self.stop);
        let deadline = Instant::now() + Duration::from_secs(20);
        while held.load(Ordering::SeqCst) < 64 || open_fds(bob.pid()).saturating_sub(base) < 60 {
            assert!(Instant::now() < deadline, "the attackers never held all 64 connections");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let out = carol.ctl(&["connect", "bob"]);
            outcomes.push((out.status.code(), started.elapsed(), error_line_of(&out)));
            if out.status.code() == Some(0) {
                carol.ctl(&["disconnect"]);
            }
        }
        stop.store(true, Ordering::Relaxed);
        for a in attackers {
            a.abort();
        }
        eprintln!("carol's dials during the attack: {outcomes:?}");
        for (code, took, err) in &outcomes {
            assert_eq!(*code, Some(0), "carol could not dial bob during the attack: {err}");
            assert!(*took < Duration::from_secs(5), "the dial took {took:?}");
        }
    }
}

#[test]
fn hosts_holding_every_slot_with_idle_connections_do_not_keep_a_dialer_out() {
    let siege = Siege::start();
    // Attackers' connections open (TLS finished, or half a hello written),
    // not yet closed by bob.
    let (held_by, bob_addr, config) = siege.for_attackers();
    let attackers = eight_hosts(&siege.rt, 2, &siege.stop, move |from, i| {
        let (config, held) = (config.clone(), held_by.clone());
        async move {
            if i % 2 == 0 {
                let Ok(mut tls) = tls_connect_from(bob_addr, from, config).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return;
                };
                held.fetch_add(1, Ordering::SeqCst);
                let _ = until_closed(&mut tls, Duration::from_secs(30)).await;
                held.fetch_sub(1, Ordering::SeqCst);
            } else {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else { return };
                if socket.bind(SocketAddr::from((from, 0))).is_err() {
                    return;
                }
                let Ok(mut tcp) = socket.connect(bob_addr).await else { return };
                if tcp.write_all(PARTIAL_CLIENT_HELLO).await.is_err() {
                    return;
                }
                held.fetch_add(1, Ordering::SeqCst);
                let _ = until_closed(&mut tcp, Duration::from_secs(30)).await;
                held.fetch_sub(1, Ordering::SeqCst);
            }
        }
    });
    // All 64 open: 8 per address, bob's limit, so none was refused.
    siege.carol_dials_while_all_slots_are_held(attackers);
}

/// Eight hosts holding all 64 connection slots, each connection carrying a
/// Chat stream that never says hello (reopened as soon as bob ends it):
/// such a stream neither keeps its connection from being ended for a
/// newcomer nor holds a pending-dial slot, so a dialer still gets in. (It
/// once did both, and eight addresses kept every dialer out.)
#[test]
fn hosts_holding_every_slot_with_silent_streams_do_not_keep_a_dialer_out() {
    let siege = Siege::start();
    // Attackers' connections with a silent stream open on them.
    let (held_by, bob_addr, config) = siege.for_attackers();
    let attackers = eight_hosts(&siege.rt, 3, &siege.stop, move |from, _| {
        let (config, held) = (config.clone(), held_by.clone());
        async move {
            let Some(mut client) = chat_client_from(bob_addr, from, config).await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                return;
            };
            held.fetch_add(1, Ordering::SeqCst);
            // One silent stream after another on this connection, until
            // bob ends the connection.
            loop {
                let (got, _) = silent_dial(&mut client).await;
                match got {
                    Err(s) if s.code() == Code::DeadlineExceeded => {}
                    _ => break,
                }
            }
            held.fetch_sub(1, Ordering::SeqCst);
        }
    });
    siege.carol_dials_while_all_slots_are_held(attackers);
}

/// A flood of connections that say nothing, from 250 addresses at once,
/// each held open until bob closes it: once the 64 slots are taken each
/// newcomer ends an idle one and waits for its slot, but at most 8 wait
/// at a time and the rest are closed at once, so bob never holds many more
/// sockets than his slots.
#[test]
fn a_flood_on_a_full_peer_port_holds_no_more_sockets_than_the_slots() {
    const SLOTS: usize = 64;
    const WAITING: usize = 8;
    let rt = runtime();
    let dir = Directory::start(TTL);
    let mut bob = Peer::start(&dir, "bob");
    let (bob_addr, pid) = (bob.addr(), bob.pid());
    let base = open_fds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..500u32)
        .map(|i| {
            let stop = stop.clone();
            rt.spawn(async move {
                let from = std::net::Ipv4Addr::new(127, 0, 3, (i % 250) as u8 + 1);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(socket) = tokio::net::TcpSocket::new_v4() else { return };
                    if socket.bind(SocketAddr::from((from, 0))).is_err() {
                        return;
                    }
                    let Ok(mut tcp) = socket.connect(bob_addr).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = until_closed(&mut tcp, Duration::from_secs(30)).await;
                }
            })
        })
        .collect();
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        most = most.max(open_fds(pid).saturating_sub(base));
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.abort();
    }
    eprintln!("bob held at most {most} more descriptors during the flood");
    assert!(most >= SLOTS, "the flood never filled the port ({most})");
    assert!(most <= SLOTS + WAITING + 8, "bob held {most} sockets for {SLOTS} slots");
    bob.assert_running();
}

fn error_line_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// Half an HTTP/2 preface (`PRI * HTTP/2.0\r\n` and no more) to the
/// directory is closed within the preface limit (5 s), as a silent client
/// is; before, hyper waited for the rest for good, so that sixteen hosts
/// holding a thousand each took the directory from everyone.
#[test]
fn a_half_sent_preface_to_the_directory_is_closed_in_seconds() {
    let rt = runtime();
    let dir = Directory::start(TTL);
    let closed = rt.block_on(async {
        let mut tcp = TcpStream::connect(dir.addr()).await.expect("connecting");
        tcp.write_all(b"PRI * HTTP/2.0\r\n").await.expect("sending half a preface");
        until_closed(&mut tcp, Duration::from_secs(30)).await
    });
    let closed = closed.expect("still open after 30 s");
    eprintln!("half a preface: closed after {closed:?}");
    assert!(closed >= Duration::from_secs(4), "closed before the limit: {closed:?}");
    assert!(closed < Duration::from_secs(10), "{closed:?}");
    // Clients that send it whole are served as ever.
    let alice = Peer::start(&dir, "alice");
    assert_eq!(alice.list().len(), 1, "alice lists herself");
}

/// A slowloris that reconnects: `n` connections from source address
/// `from`, each sending a partial ClientHello and reconnecting as soon as
/// the server drops it, until `stop`.
async fn persistent_slowloris(
    addr: SocketAddr,
    from: &'static str,
    n: usize,
    stop: Arc<AtomicBool>,
) {
    let from: SocketAddr = from.parse().expect("a source address");
    let mut set = JoinSet::new();
    for _ in 0..n {
        let stop = stop.clone();
        set.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else { continue };
                if socket.bind(from).is_err() {
                    continue;
                }
                let Ok(mut tcp) = socket.connect(addr).await else { continue };
                let _ = tcp.write_all(PARTIAL_CLIENT_HELLO).await;
                let _ = until_closed(&mut tcp, Duration::from_secs(30)).await;
            }
        });
    }
    set.join_all().await;
}

/// One host that keeps 70 half-open handshakes going (reconnecting each
/// time bob drops one) must not hold all of bob's connection slots: a
/// regression test of the per-source cap. Before it, 0 of ~150 TLS
/// handshakes from another address got through in 15 s, and `chatctl
/// connect bob` said "bob is not online … does not answer".
#[test]
fn a_persistent_slowloris_from_one_host_does_not_lock_out_other_dialers() {
    let rt = runtime();
    let dir = Directory::start(TTL);
    let bob = Peer::start(&dir, "bob");
    let carol = Peer::start(&dir, "carol");
    let stop = Arc::new(AtomicBool::new(false));
    let attack = rt.spawn(persistent_slowloris(bob.addr(), "127.0.0.2:0", 70, stop.clone()));
    // The attack fills the slots at once; give it a moment to.
    std::thread::sleep(Duration::from_secs(1));
    let out = carol.ctl(&["connect", "bob"]);
    let verdict = String::from_utf8_lossy(&out.stderr).into_owned();
    stop.store(true, Ordering::Relaxed);
    let _ = rt.block_on(attack);
    assert_eq!(out.status.code(), Some(0), "carol could not dial bob during the attack: {verdict}");
}

/// Dials that bob must check with a directory that does not answer (it is
/// stopped) hold his pending-dial slots, each until his lookup gives up;
/// one more from their address waits a moment for a slot and is refused
/// with its own reason, `too many dials`, which no dialer may take for
/// `busy` (a regression once did), and bob stays in no conversation.
#[test]
fn a_full_pending_dial_queue_is_refused_as_too_many_dials() {
    use pb::refusal::Reason;
    let rt = runtime();
    let dir = Directory::start(TTL);
    let bob = Peer::start(&dir, "bob");
    let stranger = tls_config(&throwaway_pkcs8());
    let addr = bob.addr();
    let mut probe = rt.block_on(chat_client(addr, stranger.clone()));
    let stopped = proc::Stopped::new(dir.pid());
    // The held dials say hello first; should the probe still win a slot,
    // it is held by a lookup too, and all are answered after it: another
    // round, with new names (a name bob could not check is remembered).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    let status = loop {
        round += 1;
        let mut held = Vec::new();
        for i in 0..PENDING_DIALS_PER_SOURCE {
            let mut client = rt.block_on(chat_client(addr, stranger.clone()));
            let name = format!("held{round}x{i}");
            held.push(rt.spawn(async move { dial_held_by_the_lookup(&mut client, &name).await }));
        }
        let got = rt.block_on(dial_held_by_the_lookup(&mut probe, &format!("probe{round}")));
        for task in held {
            let got = rt.block_on(task).expect("a held dial");
            let status = got.expect_err("a dial bob could not check was taken");
            let reason = refusal_of(&status).reason();
            assert!(matches!(reason, Reason::CannotVerify | Reason::TooManyDials), "{status:?}");
        }
        match got {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            other => assert!(Instant::now() < deadline, "never refused for slots: {other:?}"),
        }
    };
    eprintln!("refused for slots in round {round}");
    assert_eq!(refusal_of(&status).reason(), Reason::TooManyDials);
    assert!(status.message().contains("too many dials in progress"), "{status:?}");
    drop(stopped);
    assert_eq!(bob.status()["conversation"], "idle");
}
