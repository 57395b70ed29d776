//! The driver: the one task that owns the conversation [`Session`], the
//! history writer and the links, and carries out the session's actions.
//!
//! Everything that changes the conversation arrives here, so the session
//! needs no locks: a [`Request`] from the control service (see [`api`],
//! the driver's front door), an [`Offer`] of an inbound link, a finished
//! background job (a dial, a history read), or a frame or the end of a
//! link, which the driver reads from the links' streams itself. After each
//! batch the driver drains the session's actions: all `Persist`s of the
//! batch are written with one write (group commit), *then* the transmits,
//! events and presence changes follow in order. That order is what makes
//! `delivered` mean "stored".
//!
//! The driver does no blocking I/O of its own but that one write: history
//! is read (to recognise messages sent again) on tokio's blocking pool.

pub(crate) mod api;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::ids::IdBook;
use peerchat_core::session::{
    AcceptError, Action, CLOSE_TIMEOUT, ConnectError, ConnectRestored, Crossing, DialKind,
    DisconnectError, Event, Frame, Id, LinkDown, LinkId, OwnIdMap, Phase, Presence, ReceiptKind,
    SendError, Session,
};
use peerchat_core::source::Source;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::blocked::{Added, Blocked};
use crate::consent::{self, Policy, Requests};
use crate::deadline::sleep_until;
use crate::history::{self, History};
use crate::link::callee::{Answer, Declined, KeyPin, Offer};
use crate::link::dial::{Dial, DialError, DialResult, OnAsked};
use crate::link::duplex::{Link, SendFailed};
use api::{
    Blocking, ConnectFailed, ConsentFailed, Ended, EventRx, Outcome, PingReply, Request,
    SessionStatus, StreamNote, StreamSend, StreamTx, Undelivered, Wait, wire_state,
};

/// Offers of inbound links queued towards the driver at most (the callee
/// admits only a few dials at a time anyway).
pub(crate) const OFFER_QUEUE: usize = 16;
/// Events queued towards one watch client before it counts as stuck.
const WATCH_QUEUE: usize = 8192;
/// Pending `send --wait` answers before abandoned ones are swept.
const MAX_WAITERS: usize = 4096;
/// Inputs handled per batch before actions are run.
const BATCH: usize = 512;
/// Cancelled dials let run to say goodbye at most; past this the oldest is
/// dropped (the user would have to cancel dials faster than they finish).
const MAX_HUNG_UP: usize = 8;

/// The open links by id. Ids are ours (a counter), so a fast hash is safe:
/// a link is looked up for every frame sent, and SipHash was 0.5% of the
/// receiver's instructions a round trip.
type Links = HashMap<LinkId, Link, foldhash::fast::RandomState>;

/// Ids of a peer's messages that history holds, and whether each was
/// shown: what the session needs to recognise a message sent again.
type Seen = Vec<(Id, bool)>;

/// A background job the driver started, finished.
enum Done {
    /// A dial (and the read of the peer's history that went with it).
    Dialed { link: LinkId, seen: Option<Seen>, result: DialResult },
    /// An offer whose peer's history had to be read first.
    Offered { offer: Offer, seen: Option<Seen> },
}

/// What a batch starts with.
enum Next {
    Request(Request),
    Offer(Offer),
    Done(Done),
    Link(LinkId, Result<Frame, LinkDown>),
}

/// A dial waiting for the user's answer (consent): what taking it needs.
#[derive(Debug)]
struct Asked {
    link: Link,
    /// Told why, if the answer is no; dropped if yes.
    verdict: oneshot::Sender<Declined>,
    pin: KeyPin,
    seen: Option<Seen>,
}

/// Who may talk to us: the policy, the blocked peers, and the requests
/// waiting for an answer.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) policy: Policy,
    pub(crate) blocked: Blocked,
    /// How long a request waits for an answer: [`consent::ASK_TIMEOUT`]
    /// (the driver's tests use less).
    pub(crate) ask_for: Duration,
}

/// The first waiting request whose dialer gave up (its stream ended, or
/// it sent something before being welcomed, which it must not).
fn poll_asking(asking: &mut Requests<Asked>, cx: &mut Context<'_>) -> Poll<Name> {
    for r in asking.iter_mut() {
        if r.held.link.poll_frame(cx).is_ready() {
            return Poll::Ready(r.peer.clone());
        }
    }
    Poll::Pending
}

/// Ready when the client waiting for `connect`'s answer has gone away.
fn poll_abandoned(pending: &mut Option<PendingConnect>, cx: &mut Context<'_>) -> Poll<()> {
    match pending {
        Some(p) => p.reply.poll_closed(cx),
        None => Poll::Pending,
    }
}

/// A `connect` waiting for the dial on its link.
#[derive(Debug)]
struct PendingConnect {
    link: LinkId,
    /// Whom it asked for.
    peer: Name,
    reply: oneshot::Sender<Result<Name, ConnectFailed>>,
}

/// A dial in progress.
#[derive(Debug)]
struct Dialing {
    /// Its job, to abort it.
    job: AbortHandle,
    /// Whether the callee said it is asking its user.
    asked: bool,
}

/// The next frame (or end) from any open link. There are at most a few:
/// the conversation's, and one dialed or accepted while it ends.
fn poll_links(links: &mut Links, cx: &mut Context<'_>) -> Poll<(LinkId, Result<Frame, LinkDown>)> {
    for (id, link) in links.iter_mut() {
        if let Poll::Ready(r) = link.poll_frame(cx) {
            return Poll::Ready((*id, r));
        }
    }
    Poll::Pending
}

/// Who waits for a send's receipt: a `Send` call, or one send of a
/// `SendStream`.
#[derive(Debug)]
enum Asker {
    Call(oneshot::Sender<Outcome>),
    Stream { notes: StreamTx, seq: u64 },
}

impl Asker {
    fn tell(self, outcome: Outcome) {
        match self {
            Asker::Call(tx) => {
                let _ = tx.send(outcome);
            }
            Asker::Stream { notes, seq } => {
                let _ = notes.send(StreamNote::Settled { seq, outcome });
            }
        }
    }

    /// The asker stopped listening (its call or stream ended).
    fn gone(&self) -> bool {
        match self {
            Asker::Call(tx) => tx.is_closed(),
            Asker::Stream { notes, .. } => notes.is_closed(),
        }
    }
}

struct Watcher {
    tx: mpsc::Sender<Result<pb::Event, Status>>,
    /// A display client: it shows the messages it is sent.
    display: bool,
}

/// What the driver is wired to: built by `run`, or by a test.
pub(crate) struct Wiring {
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) offers: mpsc::Receiver<Offer>,
    pub(crate) dialer: Arc<dyn Dial>,
    /// Where our availability goes (the presence task publishes it).
    pub(crate) presence: watch::Sender<Presence>,
}

/// How far a message whose receipt is waited for has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Sent,
    Delivered,
}

/// The driver's state. Built by `run`, consumed by [`Driver::run`].
pub(crate) struct Driver {
    /// Makes the ids of the messages we send.
    ids: IdBook,
    session: Session,
    history: History,
    /// Where history is read from, to recognise messages sent again.
    data_dir: PathBuf,
    requests: mpsc::Receiver<Request>,
    offers: mpsc::Receiver<Offer>,
    dialer: Arc<dyn Dial>,
    links: Links,
    /// Dials and history reads in progress.
    jobs: JoinSet<Done>,
    /// The dial of each link being dialed.
    dialing: HashMap<LinkId, Dialing>,
    /// Dials the user cancelled that may still reach the callee (see
    /// `Action::HangUp`), oldest first, at most [`MAX_HUNG_UP`].
    hung_up: Vec<LinkId>,
    /// Links of such dials that we said goodbye on, until the callee ends
    /// them or [`CLOSE_TIMEOUT`] passes.
    closing: Vec<(LinkId, Instant)>,
    watchers: Vec<Watcher>,
    pending_connect: Option<PendingConnect>,
    pending_disconnect: Vec<oneshot::Sender<Result<Ended, DisconnectError>>>,
    /// Sends waiting for a receipt: id → handed to the link when, what,
    /// how far it got, who asked.
    waiters: OwnIdMap<(Instant, Wait, Got, Asker)>,
    /// Waits of this batch's sends, which join `waiters` once the batch is
    /// stored and its messages handed to the link.
    new_waiters: Vec<(Id, Wait, Asker)>,
    /// When the batch being handled arrived: a receipt in it arrived then.
    batch_at: Instant,
    /// Pings in flight: nonce → when sent, who asked.
    pings: HashMap<u64, (Instant, PingReply)>,
    next_nonce: u64,
    presence: watch::Sender<Presence>,
    /// Links found dead while running actions, handled after them.
    broken: Vec<(LinkId, String)>,
    /// The session's actions being run (kept to reuse its allocation).
    actions: Vec<Action>,
    shutting_down: bool,
    gate: Gate,
    /// Dials waiting for the user's answer.
    asking: Requests<Asked>,
    /// Our dials whose callee is asking its user: which, and for how long
    /// (the dial jobs send, the driver reads).
    dial_asked_tx: mpsc::UnboundedSender<(LinkId, Duration)>,
    dial_asked: mpsc::UnboundedReceiver<(LinkId, Duration)>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("me", self.session.me()).finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `me`, with what an earlier run left in `data_dir`
    /// (`recovered`, read with [`history::recover`]: messages nobody has
    /// seen yet, ours nobody has acknowledged, and the conversation it was
    /// dialer of, if it stopped without ending it).
    pub(crate) fn new(
        me: Name,
        resume_window: Duration,
        (history, recovered): (History, history::Recovered),
        data_dir: PathBuf,
        gate: Gate,
        wiring: Wiring,
    ) -> Driver {
        let mut session = Session::new(me, resume_window);
        for (from, message) in recovered.unseen {
            session.restore_undisplayed(from, message);
        }
        let now = Instant::now();
        for (peer, ids) in recovered.delivered_unshown {
            session.restore_delivered_unshown(peer, ids);
        }
        for (peer, messages) in recovered.unacked {
            tracing::info!(%peer, count = messages.len(), "unacknowledged messages from before the restart");
            session.restore_unacked(peer, messages, now);
        }
        if let Some(peer) = recovered.resumable {
            tracing::info!(%peer, "resuming the conversation this daemon dialed before it stopped");
            session.restore_conversation(peer, now);
        }
        let Wiring { requests, offers, dialer, presence } = wiring;
        let (dial_asked_tx, dial_asked) = mpsc::unbounded_channel();
        Driver {
            ids: IdBook::default(),
            data_dir,
            session,
            history,
            requests,
            offers,
            dialer,
            links: Links::default(),
            jobs: JoinSet::new(),
            dialing: HashMap::new(),
            hung_up: Vec::new(),
            closing: Vec::new(),
            watchers: Vec::new(),
            pending_connect: None,
            pending_disconnect: Vec::new(),
            waiters: OwnIdMap::with_span(2 * MAX_WAITERS),
            new_waiters: Vec::new(),
            batch_at: Instant::now(),
            pings: HashMap::new(),
            next_nonce: 1,
            presence,
            broken: Vec::new(),
            actions: Vec::new(),
            shutting_down: false,
            asking: Requests::lasting(gate.ask_for),
            dial_asked_tx,
            dial_asked,
            gate,
        }
    }

    /// Runs until `shutdown`, then says goodbye to the peer and waits (a
    /// bounded time) for the conversation to close before returning.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut give_up_at: Option<tokio::time::Instant> = None;
        // The control server holds the only senders of requests and stops
        // on the same token, maybe at once: a closed channel is not a
        // reason to stop waiting for the peer's answer to our goodbye.
        let mut requests_open = true;
        // Made once, not per turn of the loop: each one registers with the
        // token, under its lock.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        // What the restored state asked for already (a restored
        // conversation's redial).
        self.run_actions();
        loop {
            let timer = self.session.poll_timeout().map(tokio::time::Instant::from_std);
            let closing = self.closing.first().map(|(_, at)| tokio::time::Instant::from_std(*at));
            let lapse = self.asking.next_expiry().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                _ = &mut cancelled, if !self.shutting_down => {
                    self.shutting_down = true;
                    self.session.shutdown(Instant::now());
                    give_up_at = Some(tokio::time::Instant::now() + crate::link::CLOSE_GRACE);
                }
                request = self.requests.recv(), if requests_open => match request {
                    Some(request) => self.handle_batch(Next::Request(request)),
                    None => requests_open = false,
                },
                (link, r) = std::future::poll_fn(|cx| poll_links(&mut self.links, cx)) => {
                    self.handle_batch(Next::Link(link, r));
                }
                Some(offer) = self.offers.recv() => self.handle_batch(Next::Offer(offer)),
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    // An aborted job (a cancelled dial) was dealt with when
                    // it was aborted.
                    if let Ok(done) = done {
                        self.handle_batch(Next::Done(done));
                    }
                }
                _ = sleep_until(timer), if timer.is_some() => {
                    self.session.handle_timeout(Instant::now());
                }
                peer = std::future::poll_fn(|cx| poll_asking(&mut self.asking, cx)),
                    if !self.asking.is_empty() =>
                {
                    tracing::info!(%peer, "the peer gave up asking");
                    if let Some(r) = self.asking.take(Some(&peer)) {
                        self.end_request(r, None, Outcome_::Withdrawn);
                    }
                }
                Some((link, wait)) = self.dial_asked.recv() => self.on_dial_asked(link, wait),
                () = std::future::poll_fn(|cx| poll_abandoned(&mut self.pending_connect, cx)),
                    if self.pending_connect.is_some() =>
                {
                    self.on_connect_abandoned(Instant::now());
                }
                _ = sleep_until(lapse), if lapse.is_some() => {
                    for r in self.asking.expire(Instant::now()) {
                        tracing::info!(peer = %r.peer, "nobody answered the request in time");
                        self.end_request(r, Some(Declined::NotAccepted), Outcome_::Expired);
                    }
                }
                _ = sleep_until(closing), if closing.is_some() => {
                    let now = Instant::now();
                    while let Some(&(link, _)) = self.closing.first().filter(|(_, at)| *at <= now) {
                        self.closing.remove(0);
                        self.links.remove(&link);
                    }
                }
                _ = sleep_until(give_up_at), if give_up_at.is_some() => break,
            }
            self.run_actions();
            if self.shutting_down && self.session.phase() == Phase::Idle {
                break;
            }
        }
        self.run_actions();
        // Everything still open ends here: requests, links, dials, watch
        // streams, waiters.
        for r in self.asking.drain() {
            let _ = r.held.verdict.send(Declined::ShuttingDown);
        }
        self.links.clear();
        self.jobs.abort_all();
        self.watchers.clear();
        if let Some(p) = self.pending_connect.take() {
            let _ = p.reply.send(Err(ConnectFailed::ShuttingDown));
        }
        self.hand_off_waits();
        for (_, (_, _, _, asker)) in self.waiters.drain() {
            asker.tell(Err(Undelivered::ShuttingDown));
        }
        tracing::debug!("driver stopped");
    }

    /// Handles `first` and whatever else is ready (requests and frames), up
    /// to [`BATCH`], as one batch.
    fn handle_batch(&mut self, first: Next) {
        // One clock reading per batch: a batch is handled in microseconds,
        // and at full speed the clock was read several times per message.
        let now = Now { at: Instant::now(), ms: now_ms() };
        self.batch_at = now.at;
        self.handle_next(first, now);
        // The links are polled here with a waker that does nothing: one
        // found not ready is polled again, with the task's own waker, by
        // the next `select!` before the task sleeps.
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 1..BATCH {
            let next = match self.requests.try_recv() {
                Ok(request) => Next::Request(request),
                Err(_) => match poll_links(&mut self.links, &mut cx) {
                    Poll::Ready((link, r)) => Next::Link(link, r),
                    Poll::Pending => break,
                },
            };
            self.handle_next(next, now);
        }
    }

    fn handle_next(&mut self, next: Next, now: Now) {
        match next {
            Next::Request(request) => self.handle(request, now),
            Next::Offer(offer) => self.on_offer(offer),
            Next::Done(Done::Dialed { link, seen, result }) => {
                self.on_dialed(link, seen, result, now.at);
            }
            Next::Done(Done::Offered { offer, seen }) => self.take_offer(offer, seen),
            Next::Link(link, Ok(frame)) => self.session.handle_frame(link, frame, now.at),
            Next::Link(link, Err(why)) => {
                self.closing.retain(|(l, _)| *l != link);
                self.session.handle_link_down(link, why, now.at);
                self.broken.push((link, String::new()));
            }
        }
    }

    fn handle(&mut self, request: Request, now: Now) {
        match request {
            Request::Connect { name, reply } => self.on_connect(name, reply),
            Request::Send { text, accepted, wait } => {
                let wait = wait.map(|(w, tx)| (w, Asker::Call(tx)));
                let _ = accepted.send(self.send(text, wait, now));
            }
            Request::SendBatch { sends, notes, stop } => {
                let mut results = Vec::with_capacity(sends.len());
                for StreamSend { seq, text, wait } in sends {
                    let result = match stop.get() {
                        Some(refused) => Err(refused.clone()),
                        None => {
                            let wait =
                                wait.map(|w| (w, Asker::Stream { notes: notes.clone(), seq }));
                            self.send(text, wait, now)
                        }
                    };
                    if let Err(e) = &result {
                        let _ = stop.set(e.clone());
                    }
                    results.push((seq, result));
                }
                let _ = notes.send(StreamNote::Accepted { results });
            }
            Request::Disconnect { reply } => {
                let dialing = self.session.phase() == Phase::Connecting;
                match self.session.disconnect(now.at) {
                    Ok(peer) if dialing => {
                        // A dial was cancelled: nothing to wait for.
                        if let Some(p) = self.pending_connect.take() {
                            let _ =
                                p.reply.send(Err(ConnectFailed::Cancelled { peer: peer.clone() }));
                        }
                        self.connect_failed(&peer, "cancelled by disconnect".into());
                        let _ = reply.send(Ok(Ended::Dial { peer }));
                    }
                    // Answered by the `disconnected` event, with its reason:
                    // at once when the conversation was reconnecting (the
                    // event is among the actions just queued), else after
                    // the goodbye.
                    Ok(_) => self.pending_disconnect.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Status { reply } => {
                let _ = reply.send(SessionStatus {
                    peer: self.session.peer().cloned(),
                    phase: self.session.phase(),
                    unacknowledged: self.session.unacknowledged(),
                    last_peer: self.session.current_or_last_peer().cloned(),
                    policy: self.gate.policy,
                    requests: self
                        .asking
                        .iter()
                        .map(|r| (r.peer.clone(), r.expires_at_ms))
                        .collect(),
                });
            }
            Request::Watch { display, reply } => self.on_watch(display, reply),
            Request::Displayed { ids } => self.session.handle_displayed(&ids),
            Request::Ping { reply } => {
                let nonce = self.next_nonce;
                self.next_nonce += 1;
                match self.session.ping(nonce) {
                    Ok(()) => {
                        // Answers that never come (the link died) are swept
                        // once the asker gave up.
                        self.pings.retain(|_, (_, tx)| !tx.is_closed());
                        self.pings.insert(nonce, (now.at, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Accept { name, reply } => {
                let _ = reply.send(self.accept(name.as_ref()));
            }
            Request::Reject { name, reply } => {
                let answer = match self.asking.take(name.as_ref()) {
                    None => Err(ConsentFailed::NoRequest(name)),
                    Some(r) => {
                        let peer = r.peer.clone();
                        tracing::info!(%peer, "request rejected");
                        self.end_request(r, Some(Declined::NotAccepted), Outcome_::Rejected);
                        Ok(peer)
                    }
                };
                let _ = reply.send(answer);
            }
            Request::Block { name, reply } => {
                let _ = reply.send(self.block(name, now));
            }
            Request::Unblock { name, reply } => {
                let _ = reply.send(self.gate.blocked.remove(&name).map_err(|e| e.to_string()));
            }
            Request::Blocked { reply } => {
                let _ = reply.send(self.gate.blocked.names().cloned().collect());
            }
        }
    }

    /// Takes `name`'s request (`None`: the oldest): the conversation is on.
    fn accept(&mut self, name: Option<&Name>) -> Result<Name, ConsentFailed> {
        let Some(r) = self.asking.take(name) else {
            return Err(ConsentFailed::NoRequest(name.cloned()));
        };
        let peer = r.peer.clone();
        let Asked { link, verdict, pin, seen } = r.held;
        if let Some(seen) = seen {
            self.session.load_seen(peer.clone(), seen);
        }
        // Only an idle daemon asks its user, so this is no redial.
        match self.session.handle_hello(peer.clone(), DialKind::Fresh) {
            Ok(id) => {
                tracing::info!(%peer, "request accepted");
                self.links.insert(id, link);
                pin.record();
                drop(verdict);
                self.broadcast(request_ended(&peer, Outcome_::Accepted));
                Ok(peer)
            }
            Err(_) => {
                let _ = verdict.send(Declined::Busy);
                self.broadcast(request_ended(&peer, Outcome_::Withdrawn));
                Err(ConsentFailed::Busy { with: self.session.peer().cloned() })
            }
        }
    }

    /// Ends a waiting request: the dialer is told `why` (nothing: its
    /// stream just ends), watchers the outcome.
    fn end_request(
        &mut self,
        r: consent::Request<Asked>,
        why: Option<Declined>,
        outcome: Outcome_,
    ) {
        if let Some(why) = why {
            let _ = r.held.verdict.send(why);
        }
        self.broadcast(request_ended(&r.peer, outcome));
    }

    /// Blocks `name`; ends the conversation with it, and its request.
    fn block(&mut self, name: Name, now: Now) -> Result<Blocking, String> {
        let added = self.gate.blocked.add(&name).map_err(|e| e.to_string())?;
        tracing::info!(peer = %name, "blocked");
        if let Some(r) = self.asking.take(Some(&name)) {
            // As busy: the blocked peer is not told.
            self.end_request(r, Some(Declined::Busy), Outcome_::Rejected);
        }
        let current = self.session.peer().is_some_and(|p| *p == name);
        let disconnected = current && self.session.disconnect_blocked(now.at).is_ok();
        if disconnected && self.session.phase() == Phase::Idle {
            // It was a dial in progress: cancelled.
            self.connect_failed(&name, format!("you blocked {name}"));
            if let Some(p) = self.pending_connect.take() {
                let _ = p.reply.send(Err(ConnectFailed::Blocked(name)));
            }
        }
        Ok(Blocking { already: added == Added::Already, disconnected })
    }

    /// A verified dialer offers a link. Its history is read first (off
    /// this thread) if the session needs it to recognise repeats.
    fn on_offer(&mut self, offer: Offer) {
        // Turned down before its history is read: a blocked peer must not
        // cost a file read per dial. (`take_offer` checks again: a block
        // or a shutdown may come while the history is read.)
        if self.turns_down(&offer.peer) {
            let _ = offer.reply.send(self.busy());
            return;
        }
        // Talking to someone else: the session answers busy, and the
        // dialer's history is of no use (nor worth a read per dial).
        if self.session.peer().is_some_and(|current| *current != offer.peer) {
            self.take_offer(offer, None);
            return;
        }
        match self.read_seen(&offer.peer) {
            None => self.take_offer(offer, None),
            Some(read) => {
                self.jobs.spawn(async move { Done::Offered { offer, seen: read.await } });
            }
        }
    }

    /// Whether a dialer hears "busy" whatever the session's state: it is
    /// blocked (and hears what a busy peer would), or we are stopping.
    fn turns_down(&self, peer: &Name) -> bool {
        self.shutting_down || self.gate.blocked.contains(peer)
    }

    /// What a dialer hears when we are busy (or pretend to be).
    fn busy(&self) -> Answer {
        Answer::Refused(AcceptError::Busy { me: self.session.me().clone() })
    }

    fn take_offer(&mut self, offer: Offer, seen: Option<Seen>) {
        let Offer { peer, source, link, known, kind, pin, reply } = offer;
        if self.turns_down(&peer) {
            let _ = reply.send(self.busy());
            return;
        }
        // Only a new conversation is asked about: a peer we are talking to
        // (resuming) is taken back, and while busy everyone else is busy.
        if self.session.peer().is_none() && self.gate.policy.must_ask(known) {
            // Not a redial of a conversation that is over for us, though:
            // the session would refuse it, so nobody is asked about it.
            match self.session.refuses_redial(&peer, kind) {
                Some(ended) => {
                    let _ = reply.send(Answer::Refused(ended));
                }
                None => self.ask(peer, source, link, pin, seen, reply),
            }
            return;
        }
        if let Some(seen) = seen {
            self.session.load_seen(peer.clone(), seen);
        }
        match self.session.handle_hello(peer, kind) {
            Ok(id) => {
                // The session's first action on the link is its welcome.
                self.links.insert(id, link);
                pin.record();
                let _ = reply.send(Answer::Accepted);
            }
            Err(e) => {
                let _ = reply.send(Answer::Refused(e));
            }
        }
    }

    /// Queues `peer`'s dial (its `link`) for the user's answer, and tells
    /// the callee and the watchers.
    fn ask(
        &mut self,
        peer: Name,
        source: Option<Source>,
        link: Link,
        pin: KeyPin,
        seen: Option<Seen>,
        reply: oneshot::Sender<Answer>,
    ) {
        let (verdict, declined) = oneshot::channel();
        let asked = Asked { link, verdict, pin, seen };
        match self.asking.add(peer.clone(), source, asked, Instant::now(), now_ms()) {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    // The same peer asks again: its old dial is stale.
                    let _ = old.held.verdict.send(Declined::Busy);
                }
                let _ = reply.send(Answer::Asking(declined));
                let expires_at_ms = self.asking.iter().last().map_or(0, |r| r.expires_at_ms);
                tracing::info!(%peer, "asking the user whether to talk");
                self.broadcast(pb::event::Kind::Request(pb::RequestEvent {
                    peer: peer.to_string(),
                    expires_at_ms,
                }));
            }
            Err((consent::Full::TooMany | consent::Full::TooManyFromSource, _)) => {
                let _ = reply
                    .send(Answer::Refused(AcceptError::Busy { me: self.session.me().clone() }));
            }
        }
    }

    /// Reads which of `peer`'s messages history holds, on the blocking
    /// pool, if the session does not know yet; `None` when it does.
    fn read_seen(&self, peer: &Name) -> Option<impl Future<Output = Option<Seen>> + use<>> {
        if !self.session.needs_seen(peer) {
            return None;
        }
        let (dir, peer) = (self.data_dir.clone(), peer.clone());
        let read = tokio::task::spawn_blocking(move || history::recent_ids(&dir, &peer));
        Some(async move {
            match read.await {
                Ok(seen) => Some(seen),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read history to recognise repeats");
                    None
                }
            }
        })
    }

    /// Sends `text`; with `wait`, `asker` is told when that receipt comes.
    fn send(
        &mut self,
        text: String,
        wait: Option<(Wait, Asker)>,
        now: Now,
    ) -> Result<Id, SendError> {
        // With no peer the session refuses the send; the id is not used.
        let peer = self.session.peer().map_or("", Name::as_str);
        let id = self.ids.next_for(peer, random_u64);
        self.session.send(id.clone(), text.into(), now.ms)?;
        if let Some((w, asker)) = wait {
            self.new_waiters.push((id.clone(), w, asker));
        }
        Ok(id)
    }

    /// The batch's messages are stored and about to be handed to the link:
    /// their waits start now (`link_rtt` is the link's round trip, not our
    /// own history write).
    fn hand_off_waits(&mut self) {
        if self.new_waiters.is_empty() {
            return;
        }
        let handed = Instant::now();
        for (id, w, asker) in self.new_waiters.drain(..) {
            // Waits whose client gave up (timed out) stay until their
            // receipt; sweep them now and then so a peer that never
            // displays cannot grow this.
            if self.waiters.len() >= MAX_WAITERS {
                self.waiters.retain(|(_, _, _, asker)| !asker.gone());
            }
            self.waiters.insert(&id, (handed, w, Got::Sent, asker));
        }
    }

    fn on_connect(&mut self, name: Name, reply: oneshot::Sender<Result<Name, ConnectFailed>>) {
        if self.shutting_down {
            let _ = reply.send(Err(ConnectFailed::ShuttingDown));
            return;
        }
        if self.gate.blocked.contains(&name) {
            let _ = reply.send(Err(ConnectFailed::Blocked(name)));
            return;
        }
        // The peer's own dial waits for our user's answer: connecting to
        // it is a yes (their dials crossed while its call was being asked
        // about).
        if self.asking.iter().any(|r| r.peer == name)
            && let Ok(peer) = self.accept(Some(&name))
        {
            let _ = reply.send(Ok(peer));
            return;
        }
        // A connect already waits on its dial of this peer (a restored
        // conversation redialed at a user's asking): a second one is told
        // so, rather than starting another dial in its place and leaving
        // the first caller without an answer.
        if self.pending_connect.is_some()
            && let Some(peer) = self.session.peer().filter(|p| **p == name)
        {
            let peer = peer.clone();
            let _ =
                reply.send(Err(ConnectFailed::Session(ConnectError::AlreadyConnecting { peer })));
            return;
        }
        match self.session.connect_restored(&name) {
            Some(ConnectRestored::Live) => {
                let _ = reply.send(Ok(self.session.peer().cloned().unwrap_or(name)));
                return;
            }
            Some(ConnectRestored::Dial(link)) => {
                tracing::info!(peer = %name, "connect: redialing the restored conversation now");
                self.dial(link, name.clone(), DialKind::Redial);
                self.pending_connect = Some(PendingConnect { link, peer: name, reply });
                return;
            }
            None => {}
        }
        match self.session.connect(name.clone()) {
            Ok(link) => {
                self.dial(link, name.clone(), DialKind::Fresh);
                self.pending_connect = Some(PendingConnect { link, peer: name, reply });
            }
            Err(e) => {
                let _ = reply.send(Err(ConnectFailed::Session(e)));
            }
        }
    }

    /// Starts a dial of `peer` on `link`, and the read of its history that
    /// the session needs, side by side; they report back as one job.
    /// `kind`: what the dial is for.
    fn dial(&mut self, link: LinkId, peer: Name, kind: DialKind) {
        let read = self.read_seen(&peer);
        let tx = self.dial_asked_tx.clone();
        let asked: OnAsked = Box::new(move |wait| {
            let _ = tx.send((link, wait));
        });
        let dial = self.dialer.dial(peer, kind, asked);
        let job = self.jobs.spawn(async move {
            let (seen, result) = match read {
                Some(read) => tokio::join!(read, dial),
                None => (None, dial.await),
            };
            Done::Dialed { link, seen, result }
        });
        self.dialing.insert(link, Dialing { job, asked: false });
    }

    /// Our dial on `link` waits for the callee's user: watchers (and the
    /// `chatctl connect` waiting) are told.
    fn on_dial_asked(&mut self, link: LinkId, wait: Duration) {
        let Some(dial) = self.dialing.get_mut(&link) else {
            return;
        };
        dial.asked = true;
        if let Some(i) = self.hung_up.iter().position(|l| *l == link) {
            // Cancelled: the callee's user is not to be asked any more.
            self.hung_up.remove(i);
            self.abort_dial(link);
            return;
        }
        self.session.handle_dial_asked(link);
        let Some(peer) = self.session.peer().cloned() else { return };
        // A redial waits no longer than its conversation's window.
        let wait = match self.session.gives_up_at() {
            Some(at) => wait.min(at.saturating_duration_since(Instant::now())),
            None => wait,
        };
        let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        self.broadcast(pb::event::Kind::Asking(pb::AskingEvent {
            peer: peer.to_string(),
            expires_at_ms: now_ms().saturating_add(ms),
        }));
    }

    /// The `connect` waiting for a dial went away before its answer (its
    /// user pressed Ctrl-C): for a fresh dial that is a cancel, as
    /// `disconnect` is. A restored conversation's redial goes on: that
    /// conversation is not the connect's to end.
    fn on_connect_abandoned(&mut self, now: Instant) {
        let Some(PendingConnect { link, .. }) = self.pending_connect.take() else { return };
        if self.session.phase() != Phase::Connecting || self.session.link() != Some(link) {
            return;
        }
        if let Ok(peer) = self.session.disconnect(now) {
            tracing::info!(%peer, "the connect was abandoned by its caller; dial cancelled");
            self.connect_failed(&peer, "cancelled: the connect was interrupted".into());
        }
    }

    /// Stops the dial on `link`, if it is still running.
    fn abort_dial(&mut self, link: LinkId) {
        if let Some(dial) = self.dialing.remove(&link) {
            dial.job.abort();
        }
    }

    fn on_dialed(&mut self, link: LinkId, seen: Option<Seen>, result: DialResult, now: Instant) {
        self.dialing.remove(&link);
        if let Some(i) = self.hung_up.iter().position(|l| *l == link) {
            self.hung_up.remove(i);
            if let Ok((peer, opened)) = result {
                self.say_goodbye_on(link, peer, opened);
            }
            return;
        }
        let reply = self.pending_connect.take_if(|p| p.link == link);
        // A user's dial (not a redial): its failure is told to watchers.
        let fresh = (self.session.phase() == Phase::Connecting
            && self.session.link() == Some(link))
        .then(|| self.session.peer().cloned())
        .flatten();
        match result {
            Ok((peer, opened)) => {
                if let Some(seen) = seen {
                    self.session.load_seen(peer.clone(), seen);
                }
                self.links.insert(link, opened);
                self.session.handle_dialed(link, peer.clone());
                // Answered once the session's actions have run (see
                // `settle_connect`): it may not have taken the link. (A
                // connect waiting on another link stays as it was.)
                if reply.is_some() {
                    self.pending_connect = reply;
                }
            }
            Err(DialError::Crossed(peer)) => {
                // The peer is dialing us too, and its dial wins: the
                // session waits for it and answers the connect then
                // (`Action::Crossed`).
                self.session.handle_dial_crossed(link, now);
                match reply {
                    Some(p) if self.session.link() == Some(link) => {
                        self.pending_connect = Some(p);
                    }
                    Some(p) => {
                        let _ = p.reply.send(Err(ConnectFailed::Dial(DialError::Crossed(peer))));
                    }
                    None => {}
                }
            }
            Err(e) => {
                if let DialError::Ended { how, .. } = e {
                    self.session.handle_redial_refused_ended(link, how, now);
                } else {
                    self.session.handle_dial_failed(link, &e.to_string(), now);
                }
                if let Some(peer) = fresh {
                    self.connect_failed(&peer, e.to_string());
                }
                if let Some(p) = reply {
                    let _ = p.reply.send(Err(ConnectFailed::Dial(e)));
                }
            }
        }
    }

    /// A dial the user cancelled reached `peer` after all, which now waits
    /// in a conversation with us: say goodbye on it and end our half, so
    /// that it ends the conversation at once (not after a resume window).
    fn say_goodbye_on(&mut self, link: LinkId, peer: Name, mut opened: Link) {
        let goodbye = Frame::Goodbye { reason: "the dial was cancelled".into() };
        if opened.try_send(goodbye).is_err() {
            return;
        }
        tracing::info!(%peer, "a cancelled dial got through; saying goodbye on it");
        opened.close_send();
        self.links.insert(link, opened);
        self.closing.push((link, Instant::now() + CLOSE_TIMEOUT));
    }

    fn on_watch(&mut self, display: bool, reply: oneshot::Sender<EventRx>) {
        let mut backlog: Vec<pb::Event> = if display {
            let let_go = self.session.attach_display().into_iter().map(|(from, count)| {
                event(pb::event::Kind::Unshown(pb::UnshownEvent {
                    // Empty: other senders, past the ones counted by name.
                    peer: from.map(|f| f.to_string()).unwrap_or_default(),
                    count: u32::try_from(count).unwrap_or(u32::MAX),
                }))
            });
            let_go
                .chain(self.session.undisplayed().map(|(from, m)| {
                    event(pb::event::Kind::Message(pb::MessageEvent {
                        id: m.id.to_string(),
                        from: from.to_string(),
                        text: m.text.to_string(),
                        at_ms: m.sent_at_ms,
                        waited: true,
                    }))
                }))
                .collect()
        } else {
            Vec::new()
        };
        // Requests still waiting: a client that attaches now can answer.
        backlog.extend(self.asking.iter().map(|r| {
            event(pb::event::Kind::Request(pb::RequestEvent {
                peer: r.peer.to_string(),
                expires_at_ms: r.expires_at_ms,
            }))
        }));
        let (tx, rx) = mpsc::channel(WATCH_QUEUE + backlog.len());
        for ev in backlog {
            let _ = tx.try_send(Ok(ev));
        }
        if reply.send(rx).is_ok() {
            self.watchers.push(Watcher { tx, display });
            self.note_display_clients();
        }
    }

    /// Tells the session whether a display client is attached (see
    /// `Session::set_display_attached`); after every change of watchers.
    fn note_display_clients(&mut self) {
        let attached = self.watchers.iter().any(|w| w.display && !w.tx.is_closed());
        self.session.set_display_attached(attached);
    }

    /// Drains the session's actions: persists first (one write), then the
    /// rest in order. Repeats while handling a broken link makes more.
    fn run_actions(&mut self) {
        // One buffer for the whole run: a batch is hundreds of actions, and
        // growing a new vector for each showed in profiles.
        let mut actions = std::mem::take(&mut self.actions);
        while self.run_round(&mut actions) {}
        self.actions = actions;
        self.settle_connect();
    }

    /// Answers the `connect` waiting on a dial once that dial is over and
    /// the session has had its say: connected when the conversation with
    /// its peer is on (its dial got through, or the peer dialed us first
    /// and we took it back), else how it ended (the session refused the
    /// link, the resume window passed, a `disconnect`), rather than
    /// leaving it to its caller's time limit, or telling it "connected"
    /// when the session did not take the link.
    fn settle_connect(&mut self) {
        let Some(p) = &self.pending_connect else { return };
        if self.dialing.contains_key(&p.link) {
            return; // Its dial still runs: `on_dialed` comes.
        }
        if self.shutting_down {
            return; // Told so when the driver stops.
        }
        let on_with_peer = self.session.peer().filter(|peer| **peer == p.peer).cloned();
        let answer = match (self.session.phase(), on_with_peer) {
            // Our dial was crossed by the peer's: `Action::Crossed` answers.
            (Phase::Connecting, Some(_)) if self.session.link() == Some(p.link) => return,
            (Phase::Connected, Some(peer)) => Ok(peer),
            // Still waiting for its link (a restored conversation whose
            // redial failed and is tried again): answered when it is back.
            (Phase::Reconnecting, Some(_)) => return,
            _ => Err(ConnectFailed::Ended { peer: p.peer.clone() }),
        };
        if let Some(p) = self.pending_connect.take() {
            let _ = p.reply.send(answer);
        }
    }

    /// One round of [`Driver::run_actions`], `actions` empty before and
    /// after; false when there was nothing to run.
    fn run_round(&mut self, actions: &mut Vec<Action>) -> bool {
        actions.extend(std::iter::from_fn(|| self.session.poll_action()));
        if actions.is_empty() && self.broken.is_empty() {
            return false;
        }
        for a in actions.iter() {
            if let Action::Persist(record) = a {
                self.history.append(record);
            }
        }
        let flushed = self.history.flush();
        self.hand_off_waits();
        if let Err(stuck) = flushed {
            let e = &stuck.error;
            // Acknowledging what we could not store would be a lie: nothing
            // goes on the wire this round, and the link ends (with the
            // links broken anyway, below), so the sender sends again
            // later. Everything else still happens (events, presence,
            // dropped links, redials): a conversation must still be able
            // to end while the disk is full. (The lines stay queued and
            // are written once the disk takes them.) Only the current
            // peer's lines matter for that: what goes on its link is about
            // its file alone, so another peer's file that cannot be
            // written (a folder in its way, say) does not stop this one.
            // The last peer too: a conversation that ended this round may
            // still have its goodbye's answer to send.
            let current =
                self.session.current_or_last_peer().is_some_and(|p| stuck.peers.contains(p));
            tracing::error!(error = %e, peers = ?stuck.peers, "cannot write history");
            if current {
                actions
                    .retain(|a| !matches!(a, Action::Transmit { .. } | Action::CloseSend { .. }));
                if let Some(link) = self.session.link() {
                    self.broken.push((link, e.to_string()));
                }
            }
        }
        for a in actions.drain(..) {
            self.execute(a);
        }
        for (link, why) in std::mem::take(&mut self.broken) {
            if !why.is_empty() {
                self.session.handle_link_down(link, LinkDown::Error(why), Instant::now());
            }
            self.links.remove(&link);
        }
        true
    }

    fn transmit(&mut self, id: LinkId, frame: Frame) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        match link.try_send(frame) {
            Ok(()) => {}
            Err(SendFailed::Full) => {
                self.broken.push((id, "the peer is not reading (send queue full)".into()));
                link.close_send();
            }
            // The stream is gone; its inbound half reports why.
            Err(SendFailed::Closed) => {}
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Persist(_) => {}
            Action::Transmit { link, frame } => self.transmit(link, frame),
            Action::CloseSend { link } => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.close_send();
                }
            }
            Action::DropLink { link } => {
                self.links.remove(&link);
                self.abort_dial(link);
            }
            Action::HangUp { link } => match self.dialing.get(&link) {
                // The callee's user is being asked: dropping the dial
                // withdraws the request there (its stream ends).
                Some(dial) if dial.asked => self.abort_dial(link),
                Some(_) => {
                    if self.hung_up.len() >= MAX_HUNG_UP {
                        let oldest = self.hung_up.remove(0);
                        self.abort_dial(oldest);
                    }
                    self.hung_up.push(link);
                }
                None => {}
            },
            Action::Redial { link, peer, kind } => {
                tracing::info!(%peer, ?kind, "redialing to resume the conversation");
                self.dial(link, peer, kind);
            }
            Action::Crossed { link, outcome } => {
                let answer = match outcome {
                    Crossing::Connected(peer) => {
                        tracing::info!(%peer, "our dials crossed; the peer's is the conversation");
                        Ok(peer)
                    }
                    Crossing::NotCalled(peer) => {
                        let crossed = DialError::Crossed(peer.clone());
                        self.connect_failed(&peer, crossed.to_string());
                        Err(ConnectFailed::Dial(crossed))
                    }
                };
                if let Some(p) = self.pending_connect.take_if(|p| p.link == link) {
                    let _ = p.reply.send(answer);
                }
            }
            Action::Presence(p) => {
                self.presence.send_replace(p);
            }
            Action::Emit(ev) => self.emit(ev),
        }
    }

    fn emit(&mut self, ev: Event) {
        // What the daemon itself does with an event: answer waiting sends
        // and disconnects, log.
        match &ev {
            Event::Receipt { id, kind, .. } => {
                // One lookup for the usual case (a wait for `delivered`);
                // a wait for `displayed` told of delivery goes back.
                if let Some((handed, wait, _, asker)) = self.waiters.remove(id) {
                    if wait == Wait::Displayed && *kind != ReceiptKind::Displayed {
                        self.waiters.insert(id, (handed, wait, Got::Delivered, asker));
                    } else {
                        // Until the receipt arrived, not until now: the
                        // batch's own history write is not the link's.
                        let took = self.batch_at.saturating_duration_since(handed);
                        asker.tell(Ok(((*kind).into(), took)));
                    }
                }
            }
            Event::Failed { id, reason, .. } => {
                if let Some((_, _, _, asker)) = self.waiters.remove(id) {
                    asker.tell(Err(Undelivered::Failed { id: id.clone(), reason: reason.clone() }));
                }
            }
            Event::LinkLost { peer, reason } => {
                tracing::warn!(%peer, %reason, "link lost; reconnecting");
            }
            Event::Resumed { peer } => tracing::info!(%peer, "conversation resumed"),
            Event::Disconnected { peer, reason } => {
                for tx in self.pending_disconnect.drain(..) {
                    let _ = tx.send(Ok(Ended::Conversation {
                        peer: peer.clone(),
                        reason: reason.clone(),
                    }));
                }
                // The receipt waited for can no longer come. A message
                // still waiting was delivered (and waits to be displayed),
                // or was kept for a next conversation: the ones that
                // failed were told so just before.
                for (id, (_, _, got, asker)) in self.waiters.drain() {
                    let reason = reason.clone();
                    asker.tell(Err(match got {
                        Got::Delivered => Undelivered::NotDisplayed { id, reason },
                        Got::Sent => Undelivered::Kept { id, peer: peer.clone(), reason },
                    }));
                }
            }
            Event::Pong { nonce } => {
                if let (Some((sent, tx)), Some(peer)) =
                    (self.pings.remove(nonce), self.session.peer().cloned())
                {
                    let _ = tx.send(Ok((peer, sent.elapsed())));
                }
                return;
            }
            Event::Connected { peer } => {
                // `history` with no name shows this conversation, also
                // after a restart, whether or not a message is sent in it.
                self.history.touch(peer);
                // Busy now: whoever else asked is turned down as busy.
                let waiting: Vec<_> = self.asking.drain().collect();
                for r in waiting {
                    self.end_request(r, Some(Declined::Busy), Outcome_::Withdrawn);
                }
            }
            Event::Message { .. } => {}
        }
        // Only then the wire form, and only for someone to send it to: at
        // full speed nobody may be watching, and then there is nothing to
        // build.
        if self.watchers.is_empty() {
            return;
        }
        let Some(kind) = wire_event(ev) else { return };
        self.broadcast(kind);
    }

    /// Tells watchers that a `connect` of ours ended without a
    /// conversation, and why (the words its caller got).
    fn connect_failed(&mut self, peer: &Name, reason: String) {
        tracing::info!(%peer, %reason, "connect failed");
        self.broadcast(pb::event::Kind::ConnectFailed(pb::ConnectFailedEvent {
            peer: peer.to_string(),
            reason,
        }));
    }

    /// Sends an event to every watch client.
    fn broadcast(&mut self, kind: pb::event::Kind) {
        if self.watchers.is_empty() {
            return;
        }
        let ev = event(kind);
        let mut stuck_display = false;
        self.watchers.retain(|w| {
            if w.tx.capacity() <= 1 {
                // Stuck client: tell it why (the last slot is for that) and
                // let it go; its unshown messages wait for the next one.
                let _ = w.tx.try_send(Err(Status::resource_exhausted(
                    "watch fell behind; attach again to see what was missed",
                )));
                stuck_display |= w.display;
                return false;
            }
            w.tx.try_send(Ok(ev.clone())).is_ok()
        });
        self.note_display_clients();
        if stuck_display && !self.watchers.iter().any(|w| w.display) {
            self.session.display_dropped_unread();
        }
    }
}

/// An event as watch clients get it (`Pong` is not for them).
fn wire_event(ev: Event) -> Option<pb::event::Kind> {
    let kind = match ev {
        Event::Message { from, message } => pb::event::Kind::Message(pb::MessageEvent {
            id: String::from(&*message.id),
            from: from.to_string(),
            text: String::from(&*message.text),
            at_ms: message.sent_at_ms,
            waited: false,
        }),
        Event::Receipt { peer, id, kind } => pb::event::Kind::Receipt(pb::ReceiptEvent {
            id: String::from(&*id),
            state: wire_state(kind.into()) as i32,
            peer: peer.to_string(),
        }),
        Event::Failed { peer, id, reason } => pb::event::Kind::Failed(pb::FailedEvent {
            id: String::from(&*id),
            reason,
            peer: peer.to_string(),
        }),
        Event::Connected { peer } => {
            pb::event::Kind::Connected(pb::ConnectedEvent { peer: peer.to_string() })
        }
        Event::LinkLost { peer, reason } => {
            pb::event::Kind::LinkLost(pb::LinkLostEvent { peer: peer.to_string(), reason })
        }
        Event::Resumed { peer } => {
            pb::event::Kind::Resumed(pb::ResumedEvent { peer: peer.to_string() })
        }
        Event::Disconnected { peer, reason } => {
            pb::event::Kind::Disconnected(pb::DisconnectedEvent { peer: peer.to_string(), reason })
        }
        Event::Pong { .. } => return None,
    };
    Some(kind)
}

fn event(kind: pb::event::Kind) -> pb::Event {
    pb::Event { kind: Some(kind) }
}

/// How a request ended, as watch clients are told.
use pb::request_ended_event::Outcome as Outcome_;

fn request_ended(peer: &Name, outcome: Outcome_) -> pb::event::Kind {
    pb::event::Kind::RequestEnded(pb::RequestEndedEvent {
        peer: peer.to_string(),
        outcome: outcome as i32,
    })
}

/// The time a batch of inputs is handled at: for timers and waits, and
/// for the `sent_at_ms` of messages sent in it.
#[derive(Debug, Clone, Copy)]
struct Now {
    at: Instant,
    ms: i64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A random seed for message ids. The system's random source failing is
/// not expected; the clock then still gives every run its own prefix.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos() & u128::from(u64::MAX)).unwrap_or(u64::MAX)
}
