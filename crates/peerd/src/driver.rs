//! The driver: the one task that owns the conversation [`Session`], the
//! history writer and the links, and runs the session's actions.
//!
//! Everything that changes the conversation arrives here, so the session
//! needs no locks: an [`Input`] on one channel (control requests, inbound
//! hellos, dial results), or a frame or the end of a link, which the driver
//! reads from the links' streams itself. After each batch of inputs
//! the driver drains the session's actions: all `Persist`s of the batch are
//! written with one write (group commit), *then* the transmits, events and
//! presence changes follow in order. That order is what makes `delivered`
//! mean "stored".

use std::collections::HashMap;
use std::path::PathBuf;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerchat::v1 as pb;
use peerchat_core::Name;
use peerchat_core::ids::IdGen;
use peerchat_core::session::{
    AcceptError, Action, Event, Frame, Id, LinkDown, LinkId, MessageState, OwnIdMap, Phase,
    Presence, ReceiptKind, Session,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::control::error::ControlError;
use crate::control::stream::{StreamNote, StreamSend, StreamTx};
use crate::history::{self, History};
use crate::link::inbound::Inbound;
use crate::link::{self, dial::Dialer, frames};

/// Inputs queued towards the driver at most.
pub(crate) const INPUT_QUEUE: usize = 4096;
/// Events queued towards one watch client before it counts as stuck.
const WATCH_QUEUE: usize = 8192;
/// Pending `send --wait` answers before abandoned ones are swept.
const MAX_WAITERS: usize = 4096;
/// Inputs handled per batch before actions are run.
const BATCH: usize = 512;

/// A channel to the driver.
pub(crate) type DriverTx = mpsc::Sender<Input>;

/// The open links by id. Ids are ours (a counter), so a fast hash is safe:
/// a link is looked up for every frame sent, and SipHash was 0.5% of the
/// receiver's instructions a round trip.
type Links = HashMap<LinkId, LinkEntry, foldhash::fast::RandomState>;

/// What to wait for after a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Delivered,
    Displayed,
}

/// The state `status` reports.
#[derive(Debug, Clone)]
pub(crate) struct SessionStatus {
    pub(crate) peer: Option<Name>,
    pub(crate) phase: Phase,
    pub(crate) unacknowledged: usize,
    pub(crate) last_peer: Option<Name>,
}

/// Who answered a ping, and how long it took.
pub(crate) type PingReply = oneshot::Sender<Result<(Name, Duration), ControlError>>;

/// A sent message's final fate, for `send --wait`, and how long after its
/// hand-off to the link the receipt came.
pub(crate) type Outcome = Result<(MessageState, Duration), ControlError>;

/// Everything the driver reacts to.
#[derive(Debug)]
pub(crate) enum Input {
    Connect {
        name: Name,
        reply: oneshot::Sender<Result<Name, ControlError>>,
    },
    Send {
        text: String,
        /// Answered with the new message's id at once.
        accepted: oneshot::Sender<Result<Id, ControlError>>,
        /// Answered when the receipt waited for arrives (or never comes).
        wait: Option<(Wait, oneshot::Sender<Outcome>)>,
    },
    /// Sends of one `SendStream`, in order: each is noted on `notes` as
    /// accepted (or refused) at once, and settled when its receipt comes.
    SendBatch {
        sends: Vec<StreamSend>,
        notes: StreamTx,
    },
    Disconnect {
        reply: oneshot::Sender<Result<Name, ControlError>>,
    },
    Status {
        reply: oneshot::Sender<SessionStatus>,
    },
    Watch {
        display: bool,
        reply: oneshot::Sender<mpsc::Receiver<Result<pb::Event, Status>>>,
    },
    Displayed {
        ids: Vec<Id>,
    },
    /// One round trip to the peer; answered with the time it took.
    Ping {
        reply: PingReply,
    },
    /// A dialer said hello on an inbound stream.
    Hello {
        peer: Name,
        out: mpsc::Sender<pb::Frame>,
        inbound: Inbound,
        reply: oneshot::Sender<Result<(), AcceptError>>,
    },
    /// Our dial finished its handshake (or failed).
    Dialed {
        link: LinkId,
        result: Result<(Name, mpsc::Sender<pb::Frame>, Inbound), ControlError>,
    },
}

/// What a batch starts with: an input, or something from a link.
enum Next {
    Input(Input),
    Link(LinkId, Result<Frame, LinkDown>),
}

/// One open link: where its frames go, where the peer's come from, and
/// the dial in progress.
#[derive(Debug)]
struct LinkEntry {
    /// `None` once our half is closed.
    out: Option<mpsc::Sender<pb::Frame>>,
    /// `None` until the handshake is done.
    inbound: Option<Inbound>,
    dialing: Option<AbortHandle>,
}

impl Drop for LinkEntry {
    fn drop(&mut self) {
        if let Some(d) = &self.dialing {
            d.abort();
        }
    }
}

/// The next frame (or end) from any open link. There are at most a few:
/// the conversation's, and one dialed or accepted while it ends.
fn poll_links(links: &mut Links, cx: &mut Context<'_>) -> Poll<(LinkId, Result<Frame, LinkDown>)> {
    for (link, entry) in links.iter_mut() {
        if let Some(Poll::Ready(r)) = entry.inbound.as_mut().map(|i| i.poll_frame(cx)) {
            return Poll::Ready((*link, r));
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
}

/// The driver's state. Built by `run`, consumed by [`Driver::run`].
pub(crate) struct Driver {
    /// Makes the ids of the messages we send.
    ids: IdGen,
    session: Session,
    history: History,
    /// Where history is read from, to recognise messages sent again.
    data_dir: PathBuf,
    rx: mpsc::Receiver<Input>,
    tx: DriverTx,
    dialer: Dialer,
    links: Links,
    watchers: Vec<Watcher>,
    pending_connect: Option<(LinkId, oneshot::Sender<Result<Name, ControlError>>)>,
    pending_disconnect: Vec<oneshot::Sender<Result<Name, ControlError>>>,
    /// Sends waiting for a receipt: id → handed to the link when, what,
    /// who asked.
    waiters: OwnIdMap<(Instant, Wait, Asker)>,
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
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("me", self.session.me()).finish_non_exhaustive()
    }
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: Name,
        resume_window: Duration,
        history: History,
        data_dir: PathBuf,
        rx: mpsc::Receiver<Input>,
        tx: DriverTx,
        dialer: Dialer,
        presence: watch::Sender<Presence>,
    ) -> Driver {
        let mut session = Session::new(me, resume_window);
        // What an earlier run left: messages nobody has seen yet, and ours
        // nobody has acknowledged.
        let recovered = history::recover(&data_dir);
        for (from, message) in recovered.unseen {
            session.restore_undisplayed(from, message);
        }
        for (peer, messages) in recovered.unacked {
            tracing::info!(%peer, count = messages.len(), "unacknowledged messages from before the restart");
            session.restore_unacked(peer, messages, Instant::now());
        }
        Driver {
            ids: IdGen::new(random_u64()),
            data_dir,
            session,
            history,
            rx,
            tx,
            dialer,
            links: Links::default(),
            watchers: Vec::new(),
            pending_connect: None,
            pending_disconnect: Vec::new(),
            waiters: OwnIdMap::default(),
            new_waiters: Vec::new(),
            batch_at: Instant::now(),
            pings: HashMap::new(),
            next_nonce: 1,
            presence,
            broken: Vec::new(),
            actions: Vec::new(),
            shutting_down: false,
        }
    }

    /// Runs until `shutdown`, then says goodbye to the peer and waits (a
    /// bounded time) for the conversation to close before returning.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut give_up_at: Option<tokio::time::Instant> = None;
        // Made once, not per turn of the loop: each one registers with the
        // token, under its lock.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            let timer = self.session.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                _ = &mut cancelled, if !self.shutting_down => {
                    self.shutting_down = true;
                    self.session.shutdown(Instant::now());
                    give_up_at = Some(tokio::time::Instant::now() + link::CLOSE_GRACE);
                }
                input = self.rx.recv() => {
                    let Some(input) = input else { break };
                    self.handle_batch(Next::Input(input));
                }
                (link, r) = std::future::poll_fn(|cx| poll_links(&mut self.links, cx)) => {
                    self.handle_batch(Next::Link(link, r));
                }
                _ = sleep_until(timer), if timer.is_some() => {
                    self.session.handle_timeout(Instant::now());
                }
                _ = sleep_until(give_up_at), if give_up_at.is_some() => break,
            }
            self.run_actions();
            if self.shutting_down && self.session.phase() == Phase::Idle {
                break;
            }
        }
        self.run_actions();
        // Everything still open ends here: links, watch streams, waiters.
        self.links.clear();
        self.watchers.clear();
        self.hand_off_waits();
        for (_, (_, _, asker)) in self.waiters.drain() {
            asker.tell(Err(ControlError::ShuttingDown));
        }
        tracing::debug!("driver stopped");
    }

    /// Handles `first` and whatever else is ready (inputs and frames), up
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
            let next = match self.rx.try_recv() {
                Ok(input) => Next::Input(input),
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
            Next::Input(input) => self.handle(input, now),
            Next::Link(link, Ok(frame)) => self.session.handle_frame(link, frame, now.at),
            Next::Link(link, Err(why)) => {
                self.session.handle_link_down(link, why, now.at);
                self.broken.push((link, String::new()));
            }
        }
    }

    fn handle(&mut self, input: Input, now: Now) {
        match input {
            Input::Connect { name, reply } => self.on_connect(name, reply),
            Input::Send { text, accepted, wait } => {
                let wait = wait.map(|(w, tx)| (w, Asker::Call(tx)));
                let _ = accepted.send(self.send(text, wait, now));
            }
            Input::SendBatch { sends, notes } => {
                let mut results = Vec::with_capacity(sends.len());
                for StreamSend { seq, text, wait } in sends {
                    let wait = wait.map(|w| (w, Asker::Stream { notes: notes.clone(), seq }));
                    results.push((seq, self.send(text, wait, now)));
                }
                let _ = notes.send(StreamNote::Accepted { results });
            }
            Input::Disconnect { reply } => match self.session.disconnect(now.at) {
                Ok(peer) => {
                    if self.session.phase() == Phase::Idle {
                        // A dial was cancelled: nothing to wait for.
                        if let Some((_, tx)) = self.pending_connect.take() {
                            let _ = tx.send(Err(ControlError::Refused {
                                name: peer.to_string(),
                                why: "cancelled by disconnect".into(),
                            }));
                        }
                        let _ = reply.send(Ok(peer));
                    } else {
                        self.pending_disconnect.push(reply);
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Input::Status { reply } => {
                let _ = reply.send(SessionStatus {
                    peer: self.session.peer().cloned(),
                    phase: self.session.phase(),
                    unacknowledged: self.session.unacknowledged(),
                    last_peer: self.session.current_or_last_peer().cloned(),
                });
            }
            Input::Watch { display, reply } => self.on_watch(display, reply),
            Input::Displayed { ids } => self.session.handle_displayed(&ids),
            Input::Ping { reply } => {
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
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Input::Hello { peer, out, inbound, reply } => {
                if self.shutting_down {
                    let _ = reply.send(Err(AcceptError::Busy { me: self.session.me().clone() }));
                    return;
                }
                self.load_seen(&peer);
                match self.session.handle_hello(peer) {
                    Ok(link) => {
                        let welcome = pb::Frame {
                            kind: Some(pb::frame::Kind::Welcome(pb::Welcome {
                                name: self.session.me().to_string(),
                            })),
                        };
                        // The queue is new and empty: this cannot be full.
                        let _ = out.try_send(welcome);
                        let entry =
                            LinkEntry { out: Some(out), inbound: Some(inbound), dialing: None };
                        self.links.insert(link, entry);
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Input::Dialed { link, result } => self.on_dialed(link, result, now.at),
        }
    }

    /// Sends `text`; with `wait`, `asker` is told when that receipt comes.
    fn send(
        &mut self,
        text: String,
        wait: Option<(Wait, Asker)>,
        now: Now,
    ) -> Result<Id, ControlError> {
        let id = self.ids.next_id();
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
                self.waiters.retain(|_, (_, _, asker)| !asker.gone());
            }
            self.waiters.insert(id, (handed, w, asker));
        }
    }

    fn on_connect(&mut self, name: Name, reply: oneshot::Sender<Result<Name, ControlError>>) {
        if self.shutting_down {
            let _ = reply.send(Err(ControlError::ShuttingDown));
            return;
        }
        let link = match self.session.connect(name.clone()) {
            Ok(link) => link,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        self.load_seen(&name);
        self.dial(link, name, false);
        self.pending_connect = Some((link, reply));
    }

    /// Starts a dial of `peer` on `link`; it reports back as `Dialed`.
    fn dial(&mut self, link: LinkId, peer: Name, resume: bool) {
        let me = self.session.me().clone();
        let task = tokio::spawn(self.dialer.clone().dial(link, peer, me, resume, self.tx.clone()));
        let entry = LinkEntry { out: None, inbound: None, dialing: Some(task.abort_handle()) };
        self.links.insert(link, entry);
    }

    /// Tells the session which messages from `peer` history already holds,
    /// so that one sent again is recognised (also after our restart).
    fn load_seen(&mut self, peer: &Name) {
        if self.session.needs_seen(peer) {
            let ids = history::recent_ids(&self.data_dir, peer);
            self.session.load_seen(peer.clone(), ids);
        }
    }

    fn on_dialed(
        &mut self,
        link: LinkId,
        result: Result<(Name, mpsc::Sender<pb::Frame>, Inbound), ControlError>,
        now: Instant,
    ) {
        let reply = match self.pending_connect.take() {
            Some((l, tx)) if l == link => Some(tx),
            other => {
                self.pending_connect = other;
                None
            }
        };
        match result {
            Ok((peer, out, inbound)) => {
                if let Some(entry) = self.links.get_mut(&link) {
                    entry.out = Some(out);
                    entry.inbound = Some(inbound);
                }
                self.session.handle_dialed(link, peer.clone());
                if let Some(tx) = reply {
                    let _ = tx.send(Ok(peer));
                }
            }
            Err(e) => {
                self.session.handle_dial_failed(link, now);
                self.links.remove(&link);
                if let Some(tx) = reply {
                    let _ = tx.send(Err(e));
                }
            }
        }
    }

    fn on_watch(
        &mut self,
        display: bool,
        reply: oneshot::Sender<mpsc::Receiver<Result<pb::Event, Status>>>,
    ) {
        let backlog: Vec<pb::Event> = if display {
            self.session
                .undisplayed()
                .map(|(from, m)| {
                    event(pb::event::Kind::Message(pb::MessageEvent {
                        id: m.id.to_string(),
                        from: from.to_string(),
                        text: m.text.to_string(),
                        at_ms: m.sent_at_ms,
                    }))
                })
                .collect()
        } else {
            Vec::new()
        };
        let (tx, rx) = mpsc::channel(WATCH_QUEUE + backlog.len());
        for ev in backlog {
            let _ = tx.try_send(Ok(ev));
        }
        if reply.send(rx).is_ok() {
            self.watchers.push(Watcher { tx });
        }
    }

    /// Drains the session's actions: persists first (one write), then the
    /// rest in order. Repeats while handling a broken link makes more.
    fn run_actions(&mut self) {
        // One buffer for the whole run: a batch is hundreds of actions, and
        // growing a new vector for each showed in profiles.
        let mut actions = std::mem::take(&mut self.actions);
        while self.run_round(&mut actions) {}
        self.actions = actions;
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
        if let Err(e) = flushed {
            // Acknowledging what we could not store would be a lie:
            // end the link instead, so the sender reports failures.
            tracing::error!(error = %e, "cannot write history");
            if let Some(link) = self.session.link() {
                self.links.remove(&link);
                self.session.handle_link_down(
                    link,
                    LinkDown::Error(format!("{e}")),
                    Instant::now(),
                );
            }
            actions.clear();
            return true;
        }
        let mut receipts: Option<(LinkId, ReceiptKind, Vec<Id>)> = None;
        for a in actions.drain(..) {
            // Receipts of one kind in a row travel as one frame. Local
            // actions between them (an event for the watchers, a
            // history line already written, presence) do not touch the
            // wire, so they do not break the row: a batch of received
            // messages is acknowledged with one frame, not one each.
            match a {
                Action::Emit(_) | Action::Persist(_) | Action::Presence(_) => self.execute(a),
                Action::Transmit { link, frame: Frame::Receipt { mut ids, kind } } => {
                    match &mut receipts {
                        Some((l, k, acc)) if *l == link && *k == kind => acc.append(&mut ids),
                        _ => {
                            self.flush_receipts(receipts.take());
                            receipts = Some((link, kind, ids));
                        }
                    }
                }
                a => {
                    self.flush_receipts(receipts.take());
                    self.execute(a);
                }
            }
        }
        self.flush_receipts(receipts.take());
        for (link, why) in std::mem::take(&mut self.broken) {
            if !why.is_empty() {
                self.session.handle_link_down(link, LinkDown::Error(why), Instant::now());
            }
            self.links.remove(&link);
        }
        true
    }

    fn flush_receipts(&mut self, batch: Option<(LinkId, ReceiptKind, Vec<Id>)>) {
        if let Some((link, kind, mut ids)) = batch {
            while ids.len() > frames::MAX_RECEIPT_IDS {
                let rest = ids.split_off(frames::MAX_RECEIPT_IDS);
                self.transmit(link, Frame::Receipt { ids, kind });
                ids = rest;
            }
            self.transmit(link, Frame::Receipt { ids, kind });
        }
    }

    fn transmit(&mut self, link: LinkId, frame: Frame) {
        let Some(out) = self.links.get(&link).and_then(|e| e.out.as_ref()) else {
            return;
        };
        match out.try_send(frames::to_wire(frame)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.broken.push((link, "the peer is not reading (send queue full)".into()));
                if let Some(e) = self.links.get_mut(&link) {
                    e.out = None;
                }
            }
            // The stream is gone; its inbound half reports why.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Persist(_) => {}
            Action::Transmit { link, frame } => self.transmit(link, frame),
            Action::CloseSend { link } => {
                if let Some(e) = self.links.get_mut(&link) {
                    e.out = None;
                }
            }
            Action::DropLink { link } => {
                self.links.remove(&link);
            }
            Action::Redial { link, peer } => {
                tracing::info!(%peer, "redialing to resume the conversation");
                self.dial(link, peer, true);
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
                if let Some((handed, wait, asker)) = self.waiters.remove(id) {
                    if wait == Wait::Displayed && *kind != ReceiptKind::Displayed {
                        self.waiters.insert(id.clone(), (handed, wait, asker));
                    } else {
                        // Until the receipt arrived, not until now: the
                        // batch's own history write is not the link's.
                        let took = self.batch_at.saturating_duration_since(handed);
                        asker.tell(Ok(((*kind).into(), took)));
                    }
                }
            }
            Event::Failed { id, reason, .. } => {
                if let Some((_, _, asker)) = self.waiters.remove(id) {
                    asker.tell(Err(ControlError::Failed {
                        id: id.to_string(),
                        reason: reason.clone(),
                    }));
                }
            }
            Event::LinkLost { peer, reason } => {
                tracing::warn!(%peer, %reason, "link lost; reconnecting");
            }
            Event::Resumed { peer } => tracing::info!(%peer, "conversation resumed"),
            Event::Disconnected { peer, reason } => {
                for tx in self.pending_disconnect.drain(..) {
                    let _ = tx.send(Ok(peer.clone()));
                }
                // Waiting for `displayed` of a delivered message: the
                // receipt can no longer come.
                for (id, (_, _, asker)) in self.waiters.drain() {
                    asker.tell(Err(ControlError::Failed {
                        id: id.to_string(),
                        reason: format!(
                            "the conversation ended before it was displayed ({reason})"
                        ),
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
            Event::Message { .. } | Event::Connected { .. } => {}
        }
        // Only then the wire form, and only for someone to send it to: at
        // full speed nobody may be watching, and then there is nothing to
        // build.
        if self.watchers.is_empty() {
            return;
        }
        let Some(kind) = wire_event(ev) else { return };
        let ev = event(kind);
        self.watchers.retain(|w| {
            if w.tx.capacity() <= 1 {
                // Stuck client: tell it why (the last slot is for that) and
                // let it go; its unshown messages wait for the next one.
                let _ = w.tx.try_send(Err(Status::resource_exhausted(
                    "watch fell behind; attach again to see what was missed",
                )));
                return false;
            }
            w.tx.try_send(Ok(ev.clone())).is_ok()
        });
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

pub(crate) fn wire_state(s: MessageState) -> pb::MessageState {
    match s {
        MessageState::Sent => pb::MessageState::Sent,
        MessageState::Delivered => pb::MessageState::Delivered,
        MessageState::Displayed => pb::MessageState::Displayed,
        MessageState::Failed => pb::MessageState::Failed,
    }
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

/// Sleeps until `at`; never wakes for `None` (a `select!` arm with no
/// deadline).
pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
