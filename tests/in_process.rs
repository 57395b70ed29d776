//! peerd inside the test process: its library's `run(config, token)` with
//! port 0 and temp dirs, beside an in-process directory, and a TCP relay
//! the test controls in front of bob's peer port. What the binaries cannot
//! pin cheaply: a connect that times out and leaves nothing behind, then
//! succeeds; `disconnect` cancelling a dial in progress; `--wait
//! displayed`; SendStream's deadlines; the control socket never reachable
//! by another user while the daemon starts.
//!
//! Every daemon and the relay stop when their test ends (a cancellation
//! token each, cancelled by a guard also on panic).
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use peerchat::v1 as pb;
use peerchat_chatctl::Control;
use peerchat_directoryd::StoreConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Code;
use tonic::transport::Channel;

/// Long enough for anything here; a failing test stops rather than hangs.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {PATIENCE:?}"),
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("pc-inproc").tempdir().expect("a temp dir")
}

/// A directory in this process, on memory.
struct Directory {
    url: String,
    addr: SocketAddr,
    _stop: DropGuard,
}

async fn directory() -> Directory {
    directory_limited(10_000).await
}

/// A directory whose registration bucket holds `register_rate` a second
/// (twice that in a burst): status changes are charged to it too.
async fn directory_limited(register_rate: u32) -> Directory {
    directory_with(|config| config.register_rate = register_rate).await
}

/// A directory with `change` made to the tests' usual configuration.
async fn directory_with(change: impl FnOnce(&mut peerchat_directoryd::Config)) -> Directory {
    let mut config = peerchat_directoryd::Config {
        listen: "127.0.0.1:0".parse().expect("an address"),
        ttl: Duration::from_secs(30),
        max_connections: 256,
        max_connections_per_source: 256,
        data_dir: None,
        register_rate: 10_000,
        list_rate: 10_000,
        max_per_source: 1_000,
        new_names_per_day: 1_000,
        max_challenges: 1_000,
        store: StoreConfig::Memory,
    };
    change(&mut config);
    let listener = peerchat_directoryd::bind(&config).await.expect("bind the directory");
    let addr = listener.local_addr().expect("its address");
    let token = CancellationToken::new();
    let (ready, is_ready) = oneshot::channel();
    let stop = token.clone();
    tokio::spawn(async move {
        let served = peerchat_directoryd::run(config, listener, stop, move || {
            let _ = ready.send(());
        });
        if let Err(e) = served.await {
            eprintln!("directory: {e}");
        }
    });
    within("the directory starts", is_ready).await.expect("the directory is ready");
    Directory { url: format!("http://{addr}"), addr, _stop: token.drop_guard() }
}

/// A peerd in this process.
struct Daemon {
    socket: PathBuf,
    token: CancellationToken,
    done: Option<tokio::task::JoinHandle<Result<(), peerchat_peerd::Error>>>,
    _home: tempfile::TempDir,
}

impl Daemon {
    async fn start(dir: &Directory, name: &str, advertise: Option<SocketAddr>) -> Daemon {
        let home = temp_dir();
        let config = config(dir, name, advertise, home.path());
        Daemon::run(config, home).await.0
    }

    /// Runs peerd with `config` until it is ready (and registered).
    async fn run(
        config: peerchat_peerd::Config,
        home: tempfile::TempDir,
    ) -> (Daemon, peerchat_peerd::Ready) {
        let name = config.name.clone();
        let (daemon, ready) = Daemon::launch(config, home).await;
        assert!(ready.registered, "{name} registered: {:?}", ready.directory_error);
        (daemon, ready)
    }

    /// Runs peerd with `config` until it is ready, registered or not.
    async fn launch(
        config: peerchat_peerd::Config,
        home: tempfile::TempDir,
    ) -> (Daemon, peerchat_peerd::Ready) {
        let socket = config.socket.clone();
        let token = CancellationToken::new();
        let (ready, is_ready) = oneshot::channel();
        let done = tokio::spawn(peerchat_peerd::run(config, token.clone(), move |r| {
            let _ = ready.send(r);
        }));
        let ready = within("peerd starts", is_ready).await.expect("peerd is ready");
        (Daemon { socket, token, done: Some(done), _home: home }, ready)
    }

    async fn control(&self) -> Control {
        peerchat_chatctl::connect(&self.socket).await.expect("the control socket")
    }

    async fn status(&self) -> pb::GetStatusResponse {
        let mut c = self.control().await;
        c.get_status(pb::GetStatusRequest {}).await.expect("status").into_inner()
    }

    async fn connect(&self, to: &str) -> Result<String, tonic::Status> {
        let mut c = self.control().await;
        let request = pb::OpenConversationRequest { name: to.into() };
        c.open_conversation(request).await.map(|r| r.into_inner().peer)
    }

    /// Polls `status` (state that can only be polled) until `phase`.
    async fn wait_phase(&self, phase: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.status().await.conversation;
            if now == phase {
                return;
            }
            assert!(Instant::now() < deadline, "never {phase}: still {now}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        self.token.cancel();
        if let Some(done) = self.done.take() {
            within("peerd stops", done).await.expect("the task").expect("a clean stop");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn config(
    dir: &Directory,
    name: &str,
    advertise: Option<SocketAddr>,
    home: &Path,
) -> peerchat_peerd::Config {
    peerchat_peerd::Config {
        name: peerchat_core::Name::parse(name).expect("a valid name"),
        directories: vec![dir.url.clone()],
        directory_key: None,
        listen: "127.0.0.1:0".parse().expect("an address"),
        advertise,
        socket: home.join("run").join("peerd.sock"),
        data_dir: home.join("data"),
        resume_window: Duration::from_secs(30),
        accept: peerchat_peerd::consent::Policy::All,
    }
}

/// A TCP relay in front of a peer port: it holds connections without a
/// word while closed, carries bytes both ways while open, and stops
/// carrying (keeping the connections) while frozen.
struct Relay {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    frozen: Arc<AtomicBool>,
    /// Reads swallowed while frozen: something was sent and goes unanswered.
    swallowed: Arc<AtomicUsize>,
    _stop: DropGuard,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let addr = listener.local_addr().expect("its address");
        let (open, open_rx) = watch::channel(false);
        let frozen = Arc::new(AtomicBool::new(false));
        let token = CancellationToken::new();
        let stop = token.clone();
        let freeze = frozen.clone();
        let swallowed = Arc::new(AtomicUsize::new(0));
        let swallow = swallowed.clone();
        tokio::spawn(async move {
            loop {
                let (inbound, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (mut open, stop, freeze) = (open_rx.clone(), stop.clone(), freeze.clone());
                let swallow = swallow.clone();
                tokio::spawn(async move {
                    // Closed: hold the connection, say nothing.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = open.wait_for(|o| *o) => if r.is_err() { return },
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = carry(ri, wo, freeze.clone(), swallow.clone()) => {}
                        _ = carry(ro, wi, freeze, swallow) => {}
                    }
                });
            }
        });
        Relay { addr, open, frozen, swallowed, _stop: token.drop_guard() }
    }
}

/// Copies `from` to `to`, dropping what arrives while `frozen`.
async fn carry(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    swallowed: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::Relaxed) {
            swallowed.fetch_add(1, Ordering::Relaxed);
            // Swallowed: nothing reaches the other side.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Alice, and bob behind a relay (listed at the relay's address).
async fn alice_and_bob_behind_a_relay(dir: &Directory) -> (Daemon, Daemon, Relay) {
    // A free port for bob, the relay in front of it, then bob on that
    // port, listed at the relay's address.
    let placeholder = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let bob_port = placeholder.local_addr().expect("its address");
    drop(placeholder);
    let relay = Relay::start(bob_port).await;
    let home = temp_dir();
    let mut config = config(dir, "bob", Some(relay.addr), home.path());
    config.listen = bob_port;
    let (bob, ready) = Daemon::run(config, home).await;
    assert_eq!(ready.listen, bob_port);
    let alice = Daemon::start(dir, "alice", None).await;
    (alice, bob, relay)
}

#[tokio::test]
async fn a_connect_that_times_out_leaves_nothing_behind_and_the_next_one_succeeds() {
    let dir = directory().await;
    let (alice, bob, relay) = alice_and_bob_behind_a_relay(&dir).await;

    // Bob's port takes the connection but never answers TLS.
    let started = Instant::now();
    let err = alice.connect("bob").await.expect_err("nobody answers");
    let took = started.elapsed();
    eprintln!("connect through a silent relay: {:?} after {took:?}: {}", err.code(), err.message());
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("does not answer"), "says what happened: {}", err.message());
    assert!(err.message().contains("timed out after 3 s"), "in plain words: {}", err.message());
    assert!(!err.message().contains("deadline"), "not tonic's words: {}", err.message());
    assert!(!err.message().contains("refused"), "nobody refused: {}", err.message());
    assert!(took < peerchat_core::timeouts::DIAL_TIMEOUT, "{took:?}");
    // Nothing goes on behind the user's back: both stay free.
    assert_eq!(alice.status().await.conversation, "idle");

    relay.open.send_replace(true);
    assert_eq!(alice.connect("bob").await.expect("bob answers now"), "bob");
    assert_eq!(alice.status().await.conversation, "connected");
    assert_eq!(bob.status().await.peer, "alice");
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn disconnect_cancels_a_dial_in_progress() {
    let dir = directory().await;
    let (alice, bob, _relay) = alice_and_bob_behind_a_relay(&dir).await;
    let mut control = alice.control().await;
    let dialing = tokio::spawn(async move {
        let request = pb::OpenConversationRequest { name: "bob".into() };
        control.open_conversation(request).await
    });
    alice.wait_phase("connecting").await;
    let mut c = alice.control().await;
    let ended = c.close_conversation(pb::CloseConversationRequest {}).await.expect("disconnect");
    let ended = ended.into_inner();
    assert_eq!(ended.peer, "bob");
    assert!(
        matches!(ended.ended, Some(pb::close_conversation_response::Ended::DialCancelled(_))),
        "a dial was cancelled, no conversation ended: {:?}",
        ended.ended
    );
    let answered = within("the connect's answer", dialing).await.expect("the task");
    let err = answered.expect_err("the dial was cancelled");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("cancelled by disconnect"), "{}", err.message());
    assert!(!err.message().contains("refused"), "nobody refused: {}", err.message());
    assert_eq!(alice.status().await.conversation, "idle");
    alice.stop().await;
    bob.stop().await;
}

/// Sends with `wait` on a fresh control connection, in a task.
fn send(
    mut control: Control,
    text: &str,
    wait: pb::WaitFor,
    timeout: Duration,
) -> tokio::task::JoinHandle<Result<pb::SendResponse, tonic::Status>> {
    let request = pb::SendRequest {
        text: text.into(),
        wait: wait as i32,
        timeout_ms: u32::try_from(timeout.as_millis()).expect("fits"),
    };
    tokio::spawn(async move { control.send(request).await.map(|r| r.into_inner()) })
}

#[tokio::test]
async fn wait_displayed_is_answered_when_the_peer_shows_the_message() {
    let dir = directory().await;
    let alice = Daemon::start(&dir, "alice", None).await;
    let bob = Daemon::start(&dir, "bob", None).await;
    assert_eq!(alice.connect("bob").await.expect("connected"), "bob");
    let mut bob_control = bob.control().await;
    let request = pb::WatchRequest { display: true, presence: false };
    let mut events = bob_control.watch(request).await.expect("watch").into_inner();

    let sent = send(alice.control().await, "look", pb::WaitFor::Displayed, PATIENCE);
    let id = loop {
        let ev = within("bob's event", events.message()).await.expect("ok").expect("an event");
        if let Some(pb::event::Kind::Message(m)) = ev.kind {
            assert_eq!(m.text, "look");
            break m.id;
        }
    };
    assert!(!sent.is_finished(), "answered before bob's user was shown the message");
    let mut c = bob.control().await;
    c.mark_displayed(pb::MarkDisplayedRequest { ids: vec![id.clone()] }).await.expect("marked");
    let answer = within("the send's answer", sent).await.expect("the task").expect("displayed");
    assert_eq!(answer.id, id);
    assert_eq!(answer.state, pb::MessageState::Displayed as i32);
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn send_stream_answers_a_wait_that_passes_its_deadline_with_timed_out() {
    let dir = directory().await;
    let (alice, bob, relay) = alice_and_bob_behind_a_relay(&dir).await;
    relay.open.send_replace(true);
    assert_eq!(alice.connect("bob").await.expect("connected"), "bob");
    // Nothing reaches bob any more, and no receipt comes back.
    relay.frozen.store(true, Ordering::Relaxed);

    let deadline = Duration::from_millis(300);
    let requests = vec![
        pb::SendRequest { text: "now".into(), wait: pb::WaitFor::None as i32, timeout_ms: 0 },
        pb::SendRequest {
            text: "never acknowledged".into(),
            wait: pb::WaitFor::Delivered as i32,
            timeout_ms: u32::try_from(deadline.as_millis()).expect("fits"),
        },
    ];
    let mut control = alice.control().await;
    let started = Instant::now();
    let mut answers = control
        .send_stream(tokio_stream::iter(requests))
        .await
        .expect("the stream opens")
        .into_inner();
    let first = within("the first answer", answers.message()).await.expect("ok").expect("one");
    assert_eq!(first.state, pb::MessageState::Sent as i32, "a send that waits for nothing");
    let second = within("the second answer", answers.message()).await;
    let took = started.elapsed();
    let status = second.expect_err("the wait passed its deadline");
    eprintln!("stream deadline: {:?} after {took:?}: {}", status.code(), status.message());
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("timed out"), "{}", status.message());
    assert!(took >= deadline, "answered before its deadline: {took:?}");
    assert!(took < deadline + Duration::from_secs(3), "long after its deadline: {took:?}");
    drop(answers);
    alice.stop().await;
    bob.stop().await;
}

/// The socket's mode, if it exists now.
fn socket_mode(path: &Path) -> Option<u32> {
    std::fs::symlink_metadata(path).ok().map(|m| m.permissions().mode() & 0o777)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_is_never_reachable_by_another_user_while_starting() {
    let dir = directory().await;
    for round in 0..10 {
        let home = temp_dir();
        let config = config(&dir, &format!("s{round}"), None, home.path());
        let path = config.socket.clone();
        // A thread that looks at the path as often as it can while peerd
        // starts, and remembers every mode it saw.
        let starting = Arc::new(AtomicBool::new(true));
        let looker = {
            let (path, starting) = (path.clone(), starting.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let deadline = Instant::now() + PATIENCE;
                while starting.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Some(mode) = socket_mode(&path)
                        && seen.last() != Some(&mode)
                    {
                        seen.push(mode);
                    }
                    if let Some(dir) = path.parent()
                        && let Ok(m) = std::fs::metadata(dir)
                    {
                        let mode = m.permissions().mode() & 0o777;
                        assert_eq!(mode & 0o077, 0, "the socket's folder is open: {mode:o}");
                    }
                }
                seen
            })
        };
        let (daemon, _) = Daemon::run(config, home).await;
        starting.store(false, Ordering::Relaxed);
        let seen = looker.join().expect("the looking thread");
        for mode in &seen {
            assert_eq!(mode & 0o077, 0, "round {round}: the socket was {mode:o} at some point");
        }
        assert_eq!(socket_mode(&path), Some(0o600));
        daemon.stop().await;
        assert_eq!(socket_mode(&path), None, "the socket is removed on stop");
    }
}

/// `status` shows `--advertise` while no directory has confirmed it: the
/// address others dial does not go away with the directory.
#[tokio::test]
async fn status_shows_the_advertised_address_while_the_directory_is_away() {
    // A port that refuses: bound, then closed.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = gone.local_addr().expect("its address");
    let away = Directory {
        url: format!("http://{addr}"),
        addr,
        _stop: CancellationToken::new().drop_guard(),
    };
    drop(gone);
    let home = temp_dir();
    let advertise: SocketAddr = "127.0.0.9:4000".parse().expect("an address");
    let config = config(&away, "alice", Some(advertise), home.path());
    let (alice, ready) = Daemon::launch(config, home).await;
    assert!(!ready.registered && ready.directory_error.is_some(), "{ready:?}");
    let status = alice.status().await;
    assert_eq!(status.directory_state, "unreachable");
    assert!(!status.directory_error.is_empty(), "{status:?}");
    assert_eq!(status.advertise, advertise.to_string());
    alice.stop().await;
}

/// `status` says why the daemon is not registered, not only that it is
/// not: a directory that answers no after the start (here the replica
/// peerd moves on to counts alice as a new name over its quota) is
/// `refused`, with the directory's own words.
#[tokio::test]
async fn status_says_why_a_directory_refused_the_registration_after_the_start() {
    // alice renews her lease every second (ttl/3) on the first replica.
    let first = directory_with(|config| config.ttl = Duration::from_secs(3)).await;
    let second = directory_with(|config| config.new_names_per_day = 1).await;
    // carol spends the second replica's quota of new names for this host.
    let carol = Daemon::start(&second, "carol", None).await;
    let home = temp_dir();
    let mut config = config(&first, "alice", None, home.path());
    config.directories.push(second.url.clone());
    let (alice, _) = Daemon::run(config, home).await;
    let status = alice.status().await;
    assert_eq!(
        (status.directory_state.as_str(), status.directory_error.as_str()),
        ("registered", "")
    );

    // The first replica goes; the second does not know alice's lease, and
    // registering her there is over its quota.
    drop(first);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let status = alice.status().await;
        if status.directory_state != "registered" {
            break status;
        }
        assert!(Instant::now() < deadline, "alice stayed registered: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.directory_state, "refused", "{status:?}");
    assert_eq!(status.directory, second.url, "{status:?}");
    assert!(status.directory_error.contains("too many new names from 127.0.0.1"), "{status:?}");
    alice.stop().await;
    carol.stop().await;
}

async fn directory_client(dir: &Directory) -> pb::directory_client::DirectoryClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(dir.url.clone())
        .expect("the directory's url")
        .connect()
        .await
        .expect("the directory answers");
    pb::directory_client::DirectoryClient::new(channel)
}

/// The status `name` has in the directory's list.
async fn listed_status(dir: &Directory, name: &str) -> pb::PeerStatus {
    let mut client = directory_client(dir).await;
    let page = client.list(pb::ListRequest::default()).await.expect("a list").into_inner();
    page.peers.iter().find(|p| p.name == name).map_or(pb::PeerStatus::Unspecified, |p| p.status())
}

#[tokio::test]
async fn a_status_change_the_directory_held_back_is_sent_again_within_seconds() {
    let dir = directory_limited(2).await;
    let alice = Daemon::start(&dir, "alice", None).await;
    let bob = Daemon::start(&dir, "bob", None).await;
    assert_eq!(listed_status(&dir, "alice").await, pb::PeerStatus::Available);
    // Spend the bucket (2 a second) that this host's status changes are
    // charged to, so the directory keeps both "available" for now.
    let mut client = directory_client(&dir).await;
    for _ in 0..100 {
        if client.challenge(pb::ChallengeRequest {}).await.is_err() {
            break;
        }
    }
    assert!(client.challenge(pb::ChallengeRequest {}).await.is_err(), "the bucket is spent");
    assert_eq!(alice.connect("bob").await.expect("bob answers"), "bob");
    // Each asks again a second later instead of at its next renewal
    // (ttl/3 = 10 s), by when the bucket has refilled.
    let deadline = Instant::now() + Duration::from_secs(6);
    for name in ["alice", "bob"] {
        while listed_status(&dir, name).await != pb::PeerStatus::Busy {
            assert!(Instant::now() < deadline, "{name} is still listed available");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn a_new_name_over_the_quota_fails_the_start_and_says_why() {
    let dir = directory_with(|config| config.new_names_per_day = 1).await;
    let alice = Daemon::start(&dir, "alice", None).await;
    // Bob is a new name from the same host: the directory refuses it for
    // the day, and peerd says so instead of retrying as if it were away.
    let home = temp_dir();
    let token = CancellationToken::new();
    let _stop = token.clone().drop_guard();
    let started = peerchat_peerd::run(config(&dir, "bob", None, home.path()), token, |_| {});
    let err = within("bob's start ends", started).await.expect_err("bob's name is refused");
    let err = err.to_string();
    assert!(err.contains("the directory refused the registration"), "{err}");
    assert!(err.contains("too many new names from 127.0.0.1"), "{err}");
    assert_eq!(alice.status().await.directory_state, "registered");
    alice.stop().await;
}

/// A directory that stops answering while a renewal is on its way does
/// not hold up stopping by that renewal's time limit: only the
/// unregister's own (it cannot be told, and says so in the log).
#[tokio::test]
async fn stopping_does_not_wait_out_a_renewal_the_directory_never_answers() {
    // ttl 3 s: a renewal every second.
    let dir = directory_with(|c| c.ttl = Duration::from_secs(3)).await;
    let relay = Relay::start(dir.addr).await;
    relay.open.send_replace(true);
    let home = temp_dir();
    let mut config = config(&dir, "alice", None, home.path());
    config.directories = vec![format!("http://{}", relay.addr)];
    let (alice, _) = Daemon::run(config, home).await;
    relay.frozen.store(true, Ordering::Relaxed);
    within("a renewal reaches the frozen directory", async {
        while relay.swallowed.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let stopping = Instant::now();
    alice.stop().await;
    let took = stopping.elapsed();
    // The unregister gives up after 3 s. Waiting out the renewal first
    // made it 4 s here.
    assert!(took < Duration::from_millis(3600), "stopping took {took:?}");
    assert!(took >= Duration::from_secs(2), "the unregister was not even tried: {took:?}");
}
