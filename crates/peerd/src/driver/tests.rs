//! The driver on its own: real drivers, history in temp dirs, and links
//! made of in-process channels; dialing is a stand-in (a table of the
//! drivers in this test, or a dial that fails or never ends), so every
//! outcome the driver must answer can be set up without sockets.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use peerchat_core::session::{AcceptError, MessageState};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::link::callee::{Answer, Declined, KeyPin};
use crate::link::dial::{DialError, OnAsked};
use crate::link::duplex::outbox;
use api::{REQUEST_QUEUE, StreamStop};

/// Long enough for anything here to happen; a failing test stops here
/// rather than hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long requests to talk last here, unless a test says otherwise.
const ASK_FOR: Duration = Duration::from_secs(60);

fn name(s: &str) -> Name {
    Name::parse(s).expect("test names are valid")
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {PATIENCE:?}"),
    }
}

/// Drivers in this test, by name: where to offer them a link.
#[derive(Default, Clone)]
struct Switchboard {
    peers: Arc<Mutex<HashMap<Name, mpsc::Sender<Offer>>>>,
}

/// Dials through the switchboard, the way the real dialer does through
/// the network: offer a link, wait for the answer, read the welcome.
struct Wired {
    me: Name,
    board: Switchboard,
    /// When given, the callee's frames (after its welcome) reach us only
    /// while it says open: a slow network, in one direction.
    hold: Option<watch::Receiver<bool>>,
}

impl Dial for Wired {
    fn dial(
        &self,
        to: Name,
        kind: DialKind,
        asked: OnAsked,
    ) -> Pin<Box<dyn Future<Output = DialResult> + Send>> {
        let (me, board, hold) = (self.me.clone(), self.board.clone(), self.hold.clone());
        Box::pin(async move {
            let offers = board.peers.lock().expect("lock").get(&to).cloned();
            let Some(offers) = offers else { return Err(DialError::NotOnline(to)) };
            let (our_out, their_in) = outbox();
            let (their_out, our_in) = outbox();
            let theirs = Link::new(their_out, their_in);
            let (reply, answer) = oneshot::channel();
            let pin = KeyPin::none();
            let offer =
                Offer { peer: me, source: None, link: theirs, known: false, kind, pin, reply };
            if offers.send(offer).await.is_err() {
                return Err(DialError::NotOnline(to));
            }
            let declined = match answer.await {
                Ok(Answer::Accepted) => None,
                Ok(Answer::Asking(declined)) => {
                    asked(ASK_FOR);
                    Some(declined)
                }
                Ok(Answer::Refused(AcceptError::Busy { .. })) => return Err(DialError::Busy(to)),
                Ok(Answer::Refused(AcceptError::Ended { how, .. })) => {
                    return Err(DialError::Ended { name: to, how });
                }
                Ok(Answer::Refused(AcceptError::Crossed { .. })) => {
                    return Err(DialError::Crossed(to));
                }
                Ok(Answer::Refused(e)) => panic!("unexpected refusal {e:?}"),
                Err(_) => return Err(DialError::NotOnline(to)),
            };
            let mut our_in = our_in;
            let welcome = our_in.next().await;
            // Turned down after asking: the link ends, the verdict says why.
            if let (None, Some(declined)) = (&welcome, declined) {
                return Err(match declined.await {
                    Ok(Declined::NotAccepted) => DialError::NotAccepted(to),
                    Ok(Declined::Busy) => DialError::Busy(to),
                    Ok(Declined::ShuttingDown) | Err(_) => DialError::NotOnline(to),
                });
            }
            let w = match welcome {
                Some(Ok(pb::Frame { kind: Some(pb::frame::Kind::Welcome(w)) })) => w,
                // The callee ended the link first (it cannot store, say).
                None => {
                    let why = "the stream ended before the welcome".to_owned();
                    return Err(DialError::Broken { name: to, why });
                }
                other => panic!("the callee's first frame is not a welcome: {other:?}"),
            };
            assert_eq!(w.version, crate::link::PROTOCOL_VERSION, "the welcome's version");
            let callee = Name::parse(&w.name).expect("a valid name");
            let Some(mut hold) = hold else { return Ok((callee, Link::new(our_out, our_in))) };
            let (held_tx, held_rx) = mpsc::channel(1024);
            tokio::spawn(async move {
                while let Some(frame) = our_in.next().await {
                    if hold.wait_for(|open| *open).await.is_err()
                        || held_tx.send(frame).await.is_err()
                    {
                        return;
                    }
                }
            });
            Ok((callee, Link::new(our_out, ReceiverStream::new(held_rx))))
        })
    }
}

/// Dials through the switchboard once every dial sharing its barrier has
/// started: two peers dialing each other at the same moment.
struct Together {
    wired: Wired,
    barrier: Arc<tokio::sync::Barrier>,
}

impl Dial for Together {
    fn dial(
        &self,
        to: Name,
        kind: DialKind,
        asked: OnAsked,
    ) -> Pin<Box<dyn Future<Output = DialResult> + Send>> {
        let (barrier, dial) = (self.barrier.clone(), self.wired.dial(to, kind, asked));
        Box::pin(async move {
            barrier.wait().await;
            dial.await
        })
    }
}

/// Dials through the switchboard, then holds the outcome until `release`:
/// the callee has taken the call, and the dialer has not heard yet.
struct Held {
    wired: Wired,
    release: Arc<tokio::sync::Notify>,
}

impl Dial for Held {
    fn dial(
        &self,
        to: Name,
        kind: DialKind,
        asked: OnAsked,
    ) -> Pin<Box<dyn Future<Output = DialResult> + Send>> {
        let (release, dial) = (self.release.clone(), self.wired.dial(to, kind, asked));
        Box::pin(async move {
            let result = dial.await;
            release.notified().await;
            result
        })
    }
}

/// A dial that never ends; `started` hears when it starts, `dropped`
/// closes when it is abandoned.
struct Stalled {
    started: mpsc::UnboundedSender<()>,
    dropped: Mutex<Option<oneshot::Sender<()>>>,
}

impl Dial for Stalled {
    fn dial(
        &self,
        _: Name,
        _: DialKind,
        _: OnAsked,
    ) -> Pin<Box<dyn Future<Output = DialResult> + Send>> {
        let _ = self.started.send(());
        let guard = self.dropped.lock().expect("lock").take();
        Box::pin(async move {
            let _guard = guard;
            std::future::pending().await
        })
    }
}

/// A dial that fails with `0`.
struct Failing(DialError);

impl Dial for Failing {
    fn dial(
        &self,
        _: Name,
        _: DialKind,
        _: OnAsked,
    ) -> Pin<Box<dyn Future<Output = DialResult> + Send>> {
        let e = self.0.clone();
        Box::pin(async move { Err(e) })
    }
}

/// One driver under test.
struct Peer {
    requests: mpsc::Sender<Request>,
    token: CancellationToken,
    task: JoinHandle<()>,
    dir: PathBuf,
}

impl Peer {
    fn start(me: &str, board: &Switchboard, dialer: Option<Arc<dyn Dial>>) -> Peer {
        Peer::start_asking(me, board, dialer, Policy::All, ASK_FOR)
    }

    /// A driver with the accept policy `policy`, whose requests last
    /// `ask_for`.
    fn start_asking(
        me: &str,
        board: &Switchboard,
        dialer: Option<Arc<dyn Dial>>,
        policy: Policy,
        ask_for: Duration,
    ) -> Peer {
        let dir = std::env::temp_dir().join(format!("pcd-{}", uuid::Uuid::new_v4().simple()));
        Peer::start_in(dir, me, board, dialer, policy, ask_for)
    }

    /// A driver on the data dir `dir`, as it is (a restart).
    fn start_in(
        dir: PathBuf,
        me: &str,
        board: &Switchboard,
        dialer: Option<Arc<dyn Dial>>,
        policy: Policy,
        ask_for: Duration,
    ) -> Peer {
        let history = History::open(&dir).expect("history");
        let recovered = history::recover(&dir);
        let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
        let (offer_tx, offers) = mpsc::channel(OFFER_QUEUE);
        board.peers.lock().expect("lock").insert(name(me), offer_tx);
        let dialer = dialer
            .unwrap_or_else(|| Arc::new(Wired { me: name(me), board: board.clone(), hold: None }));
        let (presence, _) = watch::channel(Presence::Available);
        let wiring = Wiring { requests: requests_rx, offers, dialer, presence };
        let gate = Gate { policy, blocked: Blocked::default(), ask_for };
        let driver = Driver::new(
            name(me),
            Duration::from_secs(30),
            (history, recovered),
            dir.clone(),
            gate,
            wiring,
        );
        let token = CancellationToken::new();
        let task = tokio::spawn(driver.run(token.clone()));
        Peer { requests, token, task, dir }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> T {
        let (tx, rx) = oneshot::channel();
        self.requests.send(make(tx)).await.expect("the driver runs");
        within("an answer", rx).await.expect("the driver answers")
    }

    async fn connect(&self, to: &str) -> Result<Name, ConnectFailed> {
        self.ask(|reply| Request::Connect { name: name(to), reply }).await
    }

    async fn status(&self) -> SessionStatus {
        self.ask(|reply| Request::Status { reply }).await
    }

    /// Sends `text`, waiting for `wait`: the id, and the outcome to come.
    async fn send(&self, text: &str, wait: Wait) -> (Id, oneshot::Receiver<Outcome>) {
        let (outcome_tx, outcome) = oneshot::channel();
        let id = self
            .ask(|accepted| Request::Send {
                text: text.into(),
                accepted,
                wait: Some((wait, outcome_tx)),
            })
            .await
            .expect("accepted");
        (id, outcome)
    }

    async fn watch(&self, display: bool) -> EventRx {
        self.ask(|reply| Request::Watch { display, reply }).await
    }

    async fn stop(self) {
        self.token.cancel();
        within("the driver stops", self.task).await.expect("the driver task");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The next message event on `events`: its id and text.
async fn next_message(events: &mut EventRx) -> (String, String) {
    loop {
        let ev = within("an event", events.recv()).await.expect("events").expect("ok");
        if let Some(pb::event::Kind::Message(m)) = ev.kind {
            return (m.id, m.text);
        }
    }
}

/// A send of a `SendStream` the session refuses ends that stream: the
/// sends after it, in its batch or a later one, are refused too and go
/// nowhere (before, a later one that fitted went out first, and its client
/// never learned its id).
#[tokio::test]
async fn after_a_refused_stream_send_nothing_more_of_the_stream_goes_out() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start("bob", &board, None);
    let mut bob_sees = bob.watch(false).await;
    alice.connect("bob").await.expect("connected");
    let (notes, mut noted) = mpsc::unbounded_channel();
    let stop = StreamStop::default();
    let batch = |texts: &[&str], first: u64| Request::SendBatch {
        sends: texts
            .iter()
            .zip(first..)
            .map(|(text, seq)| StreamSend { seq, text: (*text).into(), wait: None })
            .collect(),
        notes: notes.clone(),
        stop: stop.clone(),
    };
    let accepted = |note: Option<StreamNote>| match note {
        Some(StreamNote::Accepted { results }) => {
            results.into_iter().map(|(seq, r)| (seq, r.is_ok())).collect::<Vec<_>>()
        }
        other => panic!("not the batch's note: {other:?}"),
    };
    // The empty text is refused by the session (the stream's reader
    // would have refused it first; any refusal will do).
    alice.requests.send(batch(&["one", "", "three"], 1)).await.expect("runs");
    let note = within("the batch's note", noted.recv()).await;
    assert_eq!(accepted(note), [(1, true), (2, false), (3, false)]);
    alice.requests.send(batch(&["four"], 4)).await.expect("runs");
    let note = within("the next batch's note", noted.recv()).await;
    assert_eq!(accepted(note), [(4, false)]);
    // Only "one" reached bob: a message after it would come next.
    assert_eq!(next_message(&mut bob_sees).await.1, "one");
    let (_, delivered) = alice.send("after the stream", Wait::Delivered).await;
    within("delivered", delivered).await.expect("told").expect("delivered");
    assert_eq!(next_message(&mut bob_sees).await.1, "after the stream");
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn two_drivers_talk_and_receipts_answer_the_waits() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start("bob", &board, None);
    let mut bob_sees = bob.watch(false).await;

    assert_eq!(alice.connect("bob").await.expect("connected"), name("bob"));
    assert_eq!(alice.status().await.phase, Phase::Connected);
    assert_eq!(bob.status().await.peer, Some(name("alice")));

    let (id, delivered) = alice.send("hi bob", Wait::Delivered).await;
    let (state, _) = within("delivered", delivered).await.expect("told").expect("delivered");
    assert_eq!(state, MessageState::Delivered);
    assert_eq!(next_message(&mut bob_sees).await, (id.to_string(), "hi bob".to_owned()));

    // `--wait displayed` is answered only once bob's user is shown it.
    let (id, mut displayed) = alice.send("look", Wait::Displayed).await;
    let (shown_id, _) = next_message(&mut bob_sees).await;
    assert_eq!(shown_id, id.to_string());
    tokio::task::yield_now().await;
    assert!(displayed.try_recv().is_err(), "displayed before anyone saw it");
    bob.requests.send(Request::Displayed { ids: vec![id.clone()] }).await.expect("runs");
    let (state, _) = within("displayed", displayed).await.expect("told").expect("displayed");
    assert_eq!(state, MessageState::Displayed);

    // Both directions at once, and the conversation ends for both.
    let mut alice_sees = alice.watch(false).await;
    let (from_bob, _) = bob.send("hi alice", Wait::Delivered).await;
    assert_eq!(next_message(&mut alice_sees).await.0, from_bob.to_string());
    // Delivered, never shown: its `--wait displayed` learns just that.
    let (unseen, never_shown) = alice.send("unseen", Wait::Displayed).await;
    assert_eq!(next_message(&mut bob_sees).await.0, unseen.to_string());
    let ended = alice.ask(|reply| Request::Disconnect { reply }).await.expect("disconnected");
    let reason = "you ended the conversation".to_owned();
    assert_eq!(ended, Ended::Conversation { peer: name("bob"), reason });
    match within("the wait's end", never_shown).await.expect("told") {
        Err(Undelivered::NotDisplayed { id, .. }) => assert_eq!(id, unseen),
        other => panic!("not displayed, not failed: {other:?}"),
    }
    assert_eq!(alice.status().await.phase, Phase::Idle);
    loop {
        let ev = within("bob hears", bob_sees.recv()).await.expect("events").expect("ok");
        if matches!(ev.kind, Some(pb::event::Kind::Disconnected(_))) {
            break;
        }
    }
    assert_eq!(bob.status().await.phase, Phase::Idle);
    alice.stop().await;
    bob.stop().await;
}

/// Bob cannot write his history (a directory sits where the file goes):
/// he acknowledges nothing, but the rest still happens. His user can end
/// the conversation and is told so, and he is free again.
#[tokio::test]
async fn a_history_that_cannot_be_written_still_lets_the_conversation_end() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start("bob", &board, None);
    std::fs::create_dir_all(bob.dir.join("history").join("alice.jsonl")).expect("in the way");
    let mut bob_sees = bob.watch(false).await;
    alice.connect("bob").await.expect("connected");
    let (_, delivered) = alice.send("hi", Wait::Delivered).await;
    let lost = within("bob drops the link he cannot store for", async {
        loop {
            let ev = bob_sees.recv().await.expect("events").expect("ok");
            if matches!(ev.kind, Some(pb::event::Kind::LinkLost(_))) {
                return ev;
            }
        }
    });
    lost.await;
    let ended = bob.ask(|reply| Request::Disconnect { reply }).await.expect("ended");
    assert_eq!(ended.peer(), &name("alice"));
    assert_eq!(bob.status().await.phase, Phase::Idle);
    drop(delivered);
    alice.stop().await;
    bob.stop().await;
}

/// Lines bob could not write to carol's file (a folder in the way) wait,
/// but do not stop his next conversation: alice's messages are stored in
/// her file and acknowledged.
#[tokio::test]
async fn another_peers_file_that_cannot_be_written_does_not_stop_this_conversation() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start("bob", &board, None);
    let carol = Peer::start("carol", &board, None);
    std::fs::create_dir_all(bob.dir.join("history").join("carol.jsonl")).expect("in the way");
    let mut bob_sees = bob.watch(false).await;
    carol.connect("bob").await.expect("connected");
    let (_, not_stored) = carol.send("hi", Wait::Delivered).await;
    drop(not_stored);
    let lost = |k| matches!(k, pb::event::Kind::LinkLost(_)).then_some(());
    next_event(&mut bob_sees, lost).await;
    bob.ask(|reply| Request::Disconnect { reply }).await.expect("bob ends it");
    carol.stop().await;

    alice.connect("bob").await.expect("connected");
    let (_, delivered) = alice.send("hello bob", Wait::Delivered).await;
    let (state, _) = within("delivered", delivered).await.expect("told").expect("delivered");
    assert_eq!(state, MessageState::Delivered);
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn a_busy_callee_refuses_a_second_dialer() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start("bob", &board, None);
    let carol = Peer::start("carol", &board, None);
    alice.connect("bob").await.expect("connected");
    match carol.connect("bob").await {
        Err(ConnectFailed::Dial(DialError::Busy(who))) => assert_eq!(who, name("bob")),
        other => panic!("carol should hear bob is busy: {other:?}"),
    }
    assert_eq!(carol.status().await.phase, Phase::Idle, "a failed dial frees the session");
    for p in [alice, bob, carol] {
        p.stop().await;
    }
}

#[tokio::test]
async fn disconnect_cancels_a_dial_in_progress() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (dropped_tx, dropped) = oneshot::channel::<()>();
    let stalled = Stalled { started: started_tx, dropped: Mutex::new(Some(dropped_tx)) };
    let alice = Peer::start("alice", &Switchboard::default(), Some(Arc::new(stalled)));
    let (reply, connected) = oneshot::channel();
    alice.requests.send(Request::Connect { name: name("bob"), reply }).await.expect("runs");
    within("the dial starts", started.recv()).await.expect("started");
    assert_eq!(alice.status().await.phase, Phase::Connecting);

    let ended = alice.ask(|reply| Request::Disconnect { reply }).await.expect("cancelled");
    assert_eq!(ended, Ended::Dial { peer: name("bob") });
    match within("the connect's answer", connected).await.expect("answered") {
        Err(ConnectFailed::Cancelled { peer }) => assert_eq!(peer, name("bob")),
        other => panic!("the connect should say it was cancelled: {other:?}"),
    }
    // Free at once; the dial itself is left to finish (bounded by its own
    // timeout) so that, should it get through, the callee is told, and
    // stopping drops it.
    assert_eq!(alice.status().await.phase, Phase::Idle);
    alice.stop().await;
    assert!(within("the dial is dropped", dropped).await.is_err());
}

#[tokio::test]
async fn a_failed_dial_says_why_and_a_new_one_may_start() {
    let refused = DialError::WrongKey {
        name: name("bob"),
        address: "127.0.0.1:9".into(),
        why: "another key".into(),
    };
    let alice = Peer::start("alice", &Switchboard::default(), Some(Arc::new(Failing(refused))));
    for _ in 0..2 {
        match alice.connect("bob").await {
            Err(ConnectFailed::Dial(DialError::WrongKey { .. })) => {}
            other => panic!("the dial's own error should come back: {other:?}"),
        }
        assert_eq!(alice.status().await.phase, Phase::Idle);
    }
    match alice.connect("alice").await {
        Err(ConnectFailed::Session(_)) => {}
        other => panic!("dialing yourself is the session's refusal: {other:?}"),
    }
    alice.stop().await;
}

#[tokio::test]
async fn shutdown_answers_a_connect_still_dialing() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let stalled = Stalled { started: started_tx, dropped: Mutex::new(None) };
    let alice = Peer::start("alice", &Switchboard::default(), Some(Arc::new(stalled)));
    let (reply, connected) = oneshot::channel();
    alice.requests.send(Request::Connect { name: name("bob"), reply }).await.expect("runs");
    within("the dial starts", started.recv()).await.expect("started");
    alice.token.cancel();
    match within("the connect's answer", connected).await.expect("answered") {
        Err(ConnectFailed::ShuttingDown) => {}
        other => panic!("the connect should hear of the shutdown: {other:?}"),
    }
    alice.stop().await;
}

#[tokio::test]
async fn sends_without_a_conversation_are_refused_at_once() {
    let alice = Peer::start("alice", &Switchboard::default(), None);
    let answer =
        alice.ask(|accepted| Request::Send { text: "hello?".into(), accepted, wait: None }).await;
    assert!(matches!(answer, Err(SendError::NotConnected)), "{answer:?}");
    let ping = alice.ask(|reply| Request::Ping { reply }).await;
    assert!(matches!(ping, Err(SendError::NotConnected)), "{ping:?}");
    alice.stop().await;
}

/// The next event on `events` that `pick` takes.
async fn next_event<T>(events: &mut EventRx, pick: impl Fn(pb::event::Kind) -> Option<T>) -> T {
    loop {
        let ev = within("an event", events.recv()).await.expect("events").expect("ok");
        if let Some(t) = ev.kind.and_then(&pick) {
            return t;
        }
    }
}

fn request_from(kind: pb::event::Kind) -> Option<String> {
    match kind {
        pb::event::Kind::Request(r) => Some(r.peer),
        _ => None,
    }
}

fn request_ended(kind: pb::event::Kind) -> Option<(String, Outcome_)> {
    match kind {
        pb::event::Kind::RequestEnded(r) => Some((r.peer.clone(), r.outcome())),
        _ => None,
    }
}

/// Starts `alice`'s connect to `to` without waiting for its answer.
async fn start_connect(alice: &Peer, to: &str) -> oneshot::Receiver<Result<Name, ConnectFailed>> {
    let (reply, connected) = oneshot::channel();
    alice.requests.send(Request::Connect { name: name(to), reply }).await.expect("runs");
    connected
}

/// Alice dialing bob, whose user is being asked about it: bob has seen the
/// request, alice has been told she waits for bob's answer.
struct Asked {
    alice: Peer,
    bob: Peer,
    bob_sees: EventRx,
    connected: oneshot::Receiver<Result<Name, ConnectFailed>>,
}

async fn alice_asks_bob(board: &Switchboard) -> Asked {
    let alice = Peer::start("alice", board, None);
    let bob = Peer::start_asking("bob", board, None, Policy::Ask, ASK_FOR);
    let mut bob_sees = bob.watch(false).await;
    let mut alice_sees = alice.watch(false).await;
    let connected = start_connect(&alice, "bob").await;
    assert_eq!(next_event(&mut bob_sees, request_from).await, "alice");
    let asking = |k| matches!(k, pb::event::Kind::Asking(_)).then_some(());
    next_event(&mut alice_sees, asking).await;
    Asked { alice, bob, bob_sees, connected }
}

#[tokio::test]
async fn asking_waits_for_the_users_yes() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start_asking("bob", &board, None, Policy::Ask, ASK_FOR);
    let mut bob_sees = bob.watch(false).await;
    let mut alice_sees = alice.watch(false).await;
    let mut connected = start_connect(&alice, "bob").await;
    assert_eq!(next_event(&mut bob_sees, request_from).await, "alice");
    // Alice is told why her connect waits.
    let asking = |k| match k {
        pb::event::Kind::Asking(a) => Some(a.peer),
        _ => None,
    };
    assert_eq!(next_event(&mut alice_sees, asking).await, "bob");
    // Asked, not taken: both still free, and alice still waiting.
    let s = bob.status().await;
    assert_eq!((s.phase, s.requests.len()), (Phase::Idle, 1));
    assert_eq!(s.requests[0].0, name("alice"));
    assert!(connected.try_recv().is_err(), "alice was answered before bob's user");
    // A client that attaches now hears of the request too.
    let mut late = bob.watch(false).await;
    assert_eq!(next_event(&mut late, request_from).await, "alice");

    assert_eq!(bob.ask(|reply| Request::Accept { name: None, reply }).await, Ok(name("alice")));
    let answer = within("alice's connect", connected).await.expect("answered");
    assert_eq!(answer.expect("connected"), name("bob"));
    assert_eq!(
        next_event(&mut bob_sees, request_ended).await,
        ("alice".into(), Outcome_::Accepted)
    );
    assert_eq!(bob.status().await.peer, Some(name("alice")));
    assert!(bob.status().await.requests.is_empty());
    // Nothing left to accept.
    let again = bob.ask(|reply| Request::Accept { name: Some(name("alice")), reply }).await;
    assert_eq!(again, Err(ConsentFailed::NoRequest(Some(name("alice")))));
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn a_rejected_or_unanswered_request_is_not_accepted() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start_asking("bob", &board, None, Policy::Ask, Duration::from_millis(300));
    let mut bob_sees = bob.watch(false).await;
    let mut alice_sees = alice.watch(false).await;
    let failed = |k| match k {
        pb::event::Kind::ConnectFailed(f) => Some((f.peer, f.reason)),
        _ => None,
    };

    let connected = start_connect(&alice, "bob").await;
    next_event(&mut bob_sees, request_from).await;
    let rejected = bob.ask(|reply| Request::Reject { name: Some(name("ALICE")), reply }).await;
    assert_eq!(rejected, Ok(name("alice")));
    match within("alice's connect", connected).await.expect("answered") {
        Err(ConnectFailed::Dial(DialError::NotAccepted(who))) => assert_eq!(who, name("bob")),
        other => panic!("alice should hear bob did not accept: {other:?}"),
    }
    // Her watchers hear it too, not only the connect that waited.
    assert_eq!(
        next_event(&mut alice_sees, failed).await,
        ("bob".into(), "bob did not accept".into())
    );
    assert_eq!(
        next_event(&mut bob_sees, request_ended).await,
        ("alice".into(), Outcome_::Rejected)
    );

    // Nobody answers: the request lapses, with the same words for alice.
    let connected = start_connect(&alice, "bob").await;
    next_event(&mut bob_sees, request_from).await;
    assert_eq!(next_event(&mut bob_sees, request_ended).await, ("alice".into(), Outcome_::Expired));
    match within("alice's connect", connected).await.expect("answered") {
        Err(ConnectFailed::Dial(DialError::NotAccepted(_))) => {}
        other => panic!("alice should hear bob did not accept: {other:?}"),
    }
    assert_eq!(
        next_event(&mut alice_sees, failed).await,
        ("bob".into(), "bob did not accept".into())
    );
    assert_eq!(alice.status().await.phase, Phase::Idle);
    assert_eq!(bob.status().await.phase, Phase::Idle);
    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn a_blocked_peer_hears_busy_and_is_not_dialed() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start("bob", &board, None);
    let blocked = bob.ask(|reply| Request::Block { name: name("Alice"), reply }).await;
    assert_eq!(blocked, Ok(Blocking { already: false, disconnected: false }));
    match alice.connect("bob").await {
        Err(ConnectFailed::Dial(DialError::Busy(_))) => {}
        other => panic!("a blocked dialer hears busy: {other:?}"),
    }
    match bob.connect("alice").await {
        Err(ConnectFailed::Blocked(who)) => assert_eq!(who, name("alice")),
        other => panic!("bob does not dial whom he blocked: {other:?}"),
    }
    let names = bob.ask(|reply| Request::Blocked { reply }).await;
    assert_eq!(names, vec![name("Alice")]);
    assert_eq!(bob.ask(|reply| Request::Unblock { name: name("alice"), reply }).await, Ok(true));
    assert_eq!(bob.ask(|reply| Request::Unblock { name: name("alice"), reply }).await, Ok(false));
    alice.connect("bob").await.expect("unblocked: connected");

    // Blocking the current peer ends the conversation.
    let mut bob_sees = bob.watch(false).await;
    let blocked = bob.ask(|reply| Request::Block { name: name("alice"), reply }).await;
    assert_eq!(blocked, Ok(Blocking { already: false, disconnected: true }));
    next_event(&mut bob_sees, |k| matches!(k, pb::event::Kind::Disconnected(_)).then_some(()))
        .await;
    alice.stop().await;
    bob.stop().await;
}

/// Alice and bob run `connect` for each other at the same moment: both
/// calls succeed, with one conversation between them, where each alone
/// would have found the other busy.
#[tokio::test]
async fn two_drivers_dialing_each_other_at_once_both_connect() {
    let board = Switchboard::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let together = |me: &str| -> Arc<dyn Dial> {
        let wired = Wired { me: name(me), board: board.clone(), hold: None };
        Arc::new(Together { wired, barrier: barrier.clone() })
    };
    let alice = Peer::start("alice", &board, Some(together("alice")));
    let bob = Peer::start("bob", &board, Some(together("bob")));
    let mut bob_sees = bob.watch(false).await;

    let (a, b) = tokio::join!(alice.connect("bob"), bob.connect("alice"));
    assert_eq!(a.expect("alice's connect"), name("bob"));
    assert_eq!(b.expect("bob's connect"), name("alice"));
    assert_eq!(alice.status().await.phase, Phase::Connected);
    assert_eq!(bob.status().await.phase, Phase::Connected);

    let (id, delivered) = alice.send("we crossed", Wait::Delivered).await;
    let (state, _) = within("delivered", delivered).await.expect("told").expect("delivered");
    assert_eq!(state, MessageState::Delivered);
    assert_eq!(next_message(&mut bob_sees).await, (id.to_string(), "we crossed".to_owned()));
    alice.stop().await;
    bob.stop().await;
}

/// Alice's dial waits for bob's user (`--accept ask`), who runs `connect
/// alice` instead of `accept`: that is his yes. Both connects succeed into
/// one conversation (where bob's own dial would have crossed hers, lost,
/// and waited for a call that was already waiting for him).
#[tokio::test]
async fn connecting_to_a_peer_whose_request_waits_accepts_it() {
    let board = Switchboard::default();
    let alice = Peer::start("alice", &board, None);
    let bob = Peer::start_asking("bob", &board, None, Policy::Ask, ASK_FOR);
    let mut bob_sees = bob.watch(false).await;
    let connected = start_connect(&alice, "bob").await;
    assert_eq!(next_event(&mut bob_sees, request_from).await, "alice");
    assert_eq!(bob.connect("ALICE").await.expect("bob's connect"), name("alice"));
    let answer = within("alice's connect", connected).await.expect("answered");
    assert_eq!(answer.expect("connected"), name("bob"));
    assert_eq!(
        next_event(&mut bob_sees, request_ended).await,
        ("alice".into(), Outcome_::Accepted)
    );
    let s = bob.status().await;
    assert_eq!((s.phase, s.peer, s.requests.len()), (Phase::Connected, Some(name("alice")), 0));
    alice.stop().await;
    bob.stop().await;
}

/// Alice cancels her dial just as bob takes it: bob is in a conversation
/// with her and would wait a whole resume window for a redial. Her dial,
/// left to finish, says goodbye instead, and bob is free at once.
#[tokio::test]
async fn a_cancelled_dial_that_got_through_says_goodbye() {
    let board = Switchboard::default();
    let release = Arc::new(tokio::sync::Notify::new());
    let held = Held {
        wired: Wired { me: name("alice"), board: board.clone(), hold: None },
        release: release.clone(),
    };
    let alice = Peer::start("alice", &board, Some(Arc::new(held)));
    let bob = Peer::start("bob", &board, None);
    let mut bob_sees = bob.watch(false).await;
    let connected = start_connect(&alice, "bob").await;
    let taken = |k| matches!(k, pb::event::Kind::Connected(_)).then_some(());
    next_event(&mut bob_sees, taken).await;

    let ended = alice.ask(|reply| Request::Disconnect { reply }).await.expect("cancelled");
    assert_eq!(ended, Ended::Dial { peer: name("bob") });
    assert!(matches!(within("answer", connected).await, Ok(Err(ConnectFailed::Cancelled { .. }))));
    release.notify_one();
    let gone = |k| match k {
        pb::event::Kind::Disconnected(d) => Some(d.reason),
        _ => None,
    };
    assert_eq!(next_event(&mut bob_sees, gone).await, "alice ended the conversation");
    assert_eq!(bob.status().await.phase, Phase::Idle);
    assert_eq!(alice.status().await.phase, Phase::Idle);
    alice.stop().await;
    bob.stop().await;
}

/// Alice cancels her dial while bob's user is being asked about it: the
/// request is withdrawn on bob's side at once, not left for bob to accept
/// into a conversation alice no longer wants.
#[tokio::test]
async fn a_cancelled_dial_withdraws_the_request_its_callee_is_asking_about() {
    let board = Switchboard::default();
    let Asked { alice, bob, mut bob_sees, connected } = alice_asks_bob(&board).await;

    let ended = alice.ask(|reply| Request::Disconnect { reply }).await.expect("cancelled");
    assert_eq!(ended, Ended::Dial { peer: name("bob") });
    assert!(matches!(within("answer", connected).await, Ok(Err(ConnectFailed::Cancelled { .. }))));
    assert_eq!(
        next_event(&mut bob_sees, request_ended).await,
        ("alice".into(), Outcome_::Withdrawn)
    );
    assert!(bob.status().await.requests.is_empty());
    let late = bob.ask(|reply| Request::Accept { name: Some(name("alice")), reply }).await;
    assert_eq!(late, Err(ConsentFailed::NoRequest(Some(name("alice")))));
    assert_eq!(alice.status().await.phase, Phase::Idle);
    alice.stop().await;
    bob.stop().await;
}

/// The client waiting for alice's `connect` goes away (her user pressed
/// Ctrl-C) while bob's user is being asked: that cancels the dial, as
/// `disconnect` does, and withdraws the request, instead of leaving alice
/// busy for the rest of the ask.
#[tokio::test]
async fn a_connect_abandoned_by_its_caller_cancels_the_dial() {
    let board = Switchboard::default();
    let Asked { alice, bob, mut bob_sees, connected } = alice_asks_bob(&board).await;
    assert_eq!(alice.status().await.phase, Phase::Connecting);

    drop(connected);
    assert_eq!(
        next_event(&mut bob_sees, request_ended).await,
        ("alice".into(), Outcome_::Withdrawn)
    );
    assert_eq!(alice.status().await.phase, Phase::Idle);
    // Alice may dial again (bob asks again).
    let _again = start_connect(&alice, "bob").await;
    assert_eq!(next_event(&mut bob_sees, request_from).await, "alice");
    alice.stop().await;
    bob.stop().await;
}

/// Stopping: the control server, which holds the only senders of
/// requests, stops on the same token and may be gone at once. The driver
/// still waits for the peer to answer its goodbye, so a receipt already
/// on its way is taken: the message is stored `delivered`, not left
/// `sent` to be sent again or failed after a restart.
#[tokio::test]
async fn stopping_waits_for_the_goodbye_also_once_the_requests_have_stopped() {
    let board = Switchboard::default();
    // What bob sends alice waits until the test opens the way.
    let (open, hold) = watch::channel(false);
    let wired = Wired { me: name("alice"), board: board.clone(), hold: Some(hold) };
    let alice = Peer::start("alice", &board, Some(Arc::new(wired)));
    let bob = Peer::start("bob", &board, None);
    let mut bob_sees = bob.watch(false).await;
    alice.connect("bob").await.expect("connected");
    let id = alice
        .ask(|accepted| Request::Send { text: "last words".into(), accepted, wait: None })
        .await
        .expect("accepted");

    // Bob stores it and acknowledges; the receipt is on its way.
    assert_eq!(next_message(&mut bob_sees).await.1, "last words");
    // Alice stops, and her requests' channel closes, as when the control
    // server is gone; then the receipt and bob's answer to the goodbye
    // arrive.
    let Peer { requests, token, task, dir } = alice;
    token.cancel();
    drop(requests);
    open.send_replace(true);
    within("alice stops", task).await.expect("the driver task");

    let read = history::read(&dir, &name("bob"), 10).expect("alice's history");
    let entry = read.entries.iter().find(|e| e.id == id.to_string()).expect("the message");
    assert_eq!(entry.state, MessageState::Delivered, "{:?}", read.entries);
    loop {
        let ev = within("bob hears", bob_sees.recv()).await.expect("events").expect("ok");
        if let Some(pb::event::Kind::Disconnected(d)) = ev.kind {
            assert_eq!(d.reason, "alice ended the conversation");
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    bob.stop().await;
}

/// Alice and bob in a conversation alice dialed, then alice crashes: her
/// driver is gone without a goodbye. Bob, and alice's data dir.
async fn alice_crashes_talking_to_bob(board: &Switchboard) -> (Peer, PathBuf) {
    let alice = Peer::start("alice", board, None);
    let bob = Peer::start("bob", board, None);
    alice.connect("bob").await.expect("connected");
    let Peer { requests, token, task, dir } = alice;
    task.abort();
    let _ = task.await;
    drop((requests, token));
    (bob, dir)
}

/// Alice restarted on her data dir `dir`, whose dials' outcomes wait for
/// the returned notify: she is back in the restored conversation,
/// redialing it.
async fn alice_restarts_held(
    dir: PathBuf,
    board: &Switchboard,
) -> (Peer, Arc<tokio::sync::Notify>) {
    let release = Arc::new(tokio::sync::Notify::new());
    let held = Held {
        wired: Wired { me: name("alice"), board: board.clone(), hold: None },
        release: release.clone(),
    };
    let alice = Peer::start_in(dir, "alice", board, Some(Arc::new(held)), Policy::All, ASK_FOR);
    assert_eq!(alice.status().await.phase, Phase::Reconnecting);
    (alice, release)
}

/// Alice crashed in a conversation she dialed; bob ended it while she was
/// down. Restarted, she redials it, and a send waiting for `delivered`
/// meanwhile is told, when bob refuses the redial, that its message was
/// not delivered and is kept (it neither failed nor was delivered), not
/// that it was "delivered but not displayed".
#[tokio::test]
async fn a_wait_on_a_restored_conversation_the_peer_ended_is_told_the_message_is_kept() {
    let board = Switchboard::default();
    let (bob, dir) = alice_crashes_talking_to_bob(&board).await;
    let deadline = Instant::now() + PATIENCE;
    while bob.status().await.phase != Phase::Reconnecting {
        assert!(Instant::now() < deadline, "bob never noticed the link was lost");
        tokio::task::yield_now().await;
    }
    bob.ask(|reply| Request::Disconnect { reply }).await.expect("bob ends it");

    // Restarted on her data dir, she redials; bob's refusal is held back
    // until alice has sent.
    let (alice, release) = alice_restarts_held(dir, &board).await;
    let (id, outcome) = alice.send("while redialing", Wait::Delivered).await;
    release.notify_one();
    match within("the wait's end", outcome).await.expect("told") {
        Err(Undelivered::Kept { id: kept, peer, .. }) => {
            assert_eq!((kept, peer), (id, name("bob")));
        }
        other => panic!("not told the message is kept: {other:?}"),
    }
    assert_eq!(alice.status().await.phase, Phase::Idle);
    alice.stop().await;
    bob.stop().await;
}

/// A `connect` waiting on the redial of a restored conversation is
/// answered when that conversation ends before the redial gets through
/// (here her own `disconnect`): the dial is dropped, and before, nothing
/// ever answered the connect.
#[tokio::test]
async fn a_connect_waiting_on_a_redial_is_answered_when_the_conversation_ends() {
    let board = Switchboard::default();
    let (bob, dir) = alice_crashes_talking_to_bob(&board).await;
    let (alice, _release) = alice_restarts_held(dir, &board).await;
    let connected = start_connect(&alice, "bob").await;
    alice.ask(|reply| Request::Disconnect { reply }).await.expect("alice ends it");
    match within("the connect's answer", connected).await.expect("answered") {
        Err(ConnectFailed::Ended { peer }) => assert_eq!(peer, name("bob")),
        other => panic!("not told the conversation ended: {other:?}"),
    }
    assert_eq!(alice.status().await.phase, Phase::Idle);
    alice.stop().await;
    bob.stop().await;
}

/// A second `connect` while the first one's redial of a restored
/// conversation is still on its way is told the dial is in progress; the
/// first one gets its answer (before, the second took its place and the
/// first was answered "shutting down").
#[tokio::test]
async fn a_second_connect_to_a_restored_conversation_waits_its_turn() {
    let board = Switchboard::default();
    let (bob, dir) = alice_crashes_talking_to_bob(&board).await;
    let (alice, release) = alice_restarts_held(dir, &board).await;
    let first = start_connect(&alice, "bob").await;
    match alice.connect("bob").await {
        Err(ConnectFailed::Session(ConnectError::AlreadyConnecting { peer })) => {
            assert_eq!(peer, name("bob"));
        }
        other => panic!("the second connect was not told to wait: {other:?}"),
    }
    release.notify_one();
    let answer = within("the first connect's answer", first).await.expect("answered");
    assert_eq!(answer.expect("connected"), name("bob"));
    alice.stop().await;
    bob.stop().await;
}
