//! Protocol stories told with a deterministic two-party harness, in the
//! style of quinn-proto's `Pair`: two sessions joined by an in-memory
//! "wire", no sockets, no clock but the one the test moves.

use super::*;

const WINDOW: Duration = Duration::from_secs(30);

fn name(s: &str) -> Name {
    Name::parse(s).expect("test names are valid")
}

/// What one side has done to the outside world.
#[derive(Debug, Default)]
struct Side {
    events: Vec<Event>,
    stored: Vec<Record>,
    presence: Vec<Presence>,
    /// Frames on the wire towards the other side, oldest first.
    outbound: VecDeque<Frame>,
    /// Our half of the stream has ended (after `outbound` drains).
    closed_send: bool,
    dropped: bool,
    /// Redials asked for, newest last.
    redials: Vec<LinkId>,
    /// `connect`s answered by a crossing, and how.
    crossed: Vec<(LinkId, Crossing)>,
    /// The order in which effects happened, to check persist-before-ack.
    log: Vec<String>,
}

struct Pair {
    alice: Session,
    bob: Session,
    a: Side,
    b: Side,
    a_link: Option<LinkId>,
    b_link: Option<LinkId>,
    /// End of stream already reported to alice / bob.
    a_eof: bool,
    b_eof: bool,
    now: Instant,
    next_id: u64,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            alice: Session::new(name("alice"), WINDOW),
            bob: Session::new(name("Bob"), WINDOW),
            a: Side::default(),
            b: Side::default(),
            a_link: None,
            b_link: None,
            a_eof: false,
            b_eof: false,
            now: Instant::now(),
            next_id: 0,
        }
    }

    /// Alice dials bob and bob accepts: a live conversation.
    fn connected() -> Pair {
        let mut p = Pair::new();
        p.alice_dials_and_bob_accepts();
        p
    }

    /// Alice dials bob, bob accepts, and the new link carries what each
    /// has to say first.
    fn alice_dials_and_bob_accepts(&mut self) {
        let a_link = self.alice.connect(name("bob")).expect("alice may dial");
        let b_link = self.bob_accepts();
        self.alice.handle_dialed(a_link, name("Bob"));
        self.a_link = Some(a_link);
        self.b_link = Some(b_link);
        self.drive();
    }

    /// Bob accepts alice's Hello. The first frame he transmits on the new
    /// link must be his Welcome, under his own spelling of his name; it is
    /// taken off the wire here, because alice's handshake reads it, never
    /// her session.
    fn bob_accepts(&mut self) -> LinkId {
        self.bob_accepts_as(DialKind::Fresh)
    }

    /// Bob takes alice's dial of `kind` (a redial says so in its Hello).
    fn bob_accepts_as(&mut self, kind: DialKind) -> LinkId {
        Self::drain(&mut self.bob, &mut self.b);
        let before = self.b.outbound.len();
        let link = self.bob.handle_hello(name("alice"), kind).expect("bob accepts alice");
        Self::drain(&mut self.bob, &mut self.b);
        match self.b.outbound.remove(before) {
            Some(Frame::Welcome { name }) => assert_eq!(name.as_str(), "Bob"),
            other => panic!("bob's first frame on a new link is {other:?}, not his Welcome"),
        }
        link
    }

    fn send(&mut self, from_alice: bool, text: &str) -> String {
        self.next_id += 1;
        let id = format!("m{}", self.next_id);
        let s = if from_alice { &mut self.alice } else { &mut self.bob };
        s.send(id.as_str().into(), text.into(), 0).expect("send");
        id
    }

    fn drain(session: &mut Session, side: &mut Side) {
        while let Some(action) = session.poll_action() {
            match action {
                Action::Transmit { frame, .. } => {
                    assert!(!side.closed_send, "transmit after CloseSend: {frame:?}");
                    side.log.push(format!("transmit {frame:?}"));
                    side.outbound.push_back(frame);
                }
                Action::CloseSend { .. } => side.closed_send = true,
                Action::DropLink { .. } | Action::HangUp { .. } => side.dropped = true,
                Action::Redial { link, .. } => side.redials.push(link),
                Action::Crossed { link, outcome } => side.crossed.push((link, outcome)),
                Action::Persist(r) => {
                    side.log.push(format!("persist {r:?}"));
                    side.stored.push(r);
                }
                Action::Emit(e) => side.events.push(e),
                Action::Presence(p) => side.presence.push(p),
            }
        }
    }

    /// Alice's next frame reaches bob, and nothing else moves: what bob
    /// answers stays in his outbound queue.
    fn bob_takes_one_frame(&mut self) {
        Self::drain(&mut self.alice, &mut self.a);
        let frame = self.a.outbound.pop_front().expect("on the wire");
        self.bob.handle_frame(self.b_link.expect("linked"), frame, self.now);
        Self::drain(&mut self.bob, &mut self.b);
    }

    /// Moves everything until both sides are quiet.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            Self::drain(&mut self.alice, &mut self.a);
            Self::drain(&mut self.bob, &mut self.b);
            let mut moved = false;
            if let (Some(link), Some(f)) = (self.b_link, self.a.outbound.pop_front()) {
                self.bob.handle_frame(link, f, self.now);
                moved = true;
            }
            if let (Some(link), Some(f)) = (self.a_link, self.b.outbound.pop_front()) {
                self.alice.handle_frame(link, f, self.now);
                moved = true;
            }
            if self.a.closed_send && self.a.outbound.is_empty() && !self.b_eof {
                self.b_eof = true;
                if let Some(link) = self.b_link {
                    self.bob.handle_link_down(link, LinkDown::EndOfStream, self.now);
                }
                moved = true;
            }
            if self.b.closed_send && self.b.outbound.is_empty() && !self.a_eof {
                self.a_eof = true;
                if let Some(link) = self.a_link {
                    self.alice.handle_link_down(link, LinkDown::EndOfStream, self.now);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    /// The wire breaks: whatever was on it is lost and both ends hear of
    /// it.
    fn cut(&mut self, reason: &str) {
        self.a.outbound.clear();
        self.b.outbound.clear();
        if let Some(l) = self.a_link.take() {
            self.alice.handle_link_down(l, LinkDown::Error(reason.into()), self.now);
        }
        if let Some(l) = self.b_link.take() {
            self.bob.handle_link_down(l, LinkDown::Error(reason.into()), self.now);
        }
        self.drive();
    }

    /// Alice's latest redial reaches bob, who takes her back.
    fn redial_succeeds(&mut self) {
        let link = *self.a.redials.last().expect("alice asked to redial");
        let b_link = self.bob_accepts_as(DialKind::Redial);
        self.a_link = Some(link);
        self.b_link = Some(b_link);
        self.alice.handle_dialed(link, name("Bob"));
        self.drive();
    }

    /// Moves the clock to the earliest timer either side asked for, fires
    /// both sides' timers at that instant and lets everything settle;
    /// returns how far the clock moved. Time moves only as the sessions ask,
    /// so a test that checks *when* something happened catches a wrong
    /// timer.
    fn advance_to_next_timer(&mut self) -> Duration {
        let next = [self.alice.poll_timeout(), self.bob.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("neither side has a timer");
        // A timer already due would have been handled when it was set.
        assert!(next > self.now, "a timer {:?} overdue", self.now - next);
        let moved = next - self.now;
        self.now = next;
        self.alice.handle_timeout(self.now);
        self.bob.handle_timeout(self.now);
        self.drive();
        moved
    }

    /// Fires both sides' timers a millisecond before `deadline` and checks
    /// that nothing at all happens: the deadline is not early.
    fn nothing_happens_before(&mut self, deadline: Instant) {
        let at = deadline - Duration::from_millis(1);
        assert!(at >= self.now, "the deadline is already past");
        let before = self.footprint();
        self.now = at;
        self.alice.handle_timeout(self.now);
        self.bob.handle_timeout(self.now);
        self.drive();
        assert_eq!(self.footprint(), before, "something happened before the deadline");
    }

    /// Everything a timer could change, to compare before and after.
    fn footprint(&self) -> impl PartialEq + std::fmt::Debug + use<> {
        let side =
            |s: &Side| (s.events.len(), s.log.len(), s.presence.len(), s.redials.len(), s.dropped);
        (side(&self.a), side(&self.b), self.alice.phase(), self.bob.phase())
    }
}

fn messages(side: &Side) -> Vec<String> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message.text.to_string()),
            _ => None,
        })
        .collect()
}

/// The texts of the messages `side` stored, in order.
fn stored_texts(side: &Side) -> Vec<String> {
    side.stored
        .iter()
        .filter_map(|r| match r {
            Record::Message { message, .. } => Some(message.text.to_string()),
            _ => None,
        })
        .collect()
}

fn receipts(side: &Side, kind: ReceiptKind) -> Vec<String> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::Receipt { id, kind: k, .. } if *k == kind => Some(id.to_string()),
            _ => None,
        })
        .collect()
}

fn disconnected(side: &Side) -> Vec<String> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn failed(side: &Side) -> Vec<String> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { id, .. } => Some(id.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn connect_makes_both_busy_and_tells_both_users() {
    let p = Pair::connected();
    assert_eq!(p.alice.phase(), Phase::Connected);
    assert_eq!(p.bob.phase(), Phase::Connected);
    assert_eq!(p.a.presence, [Presence::Busy]);
    assert_eq!(p.b.presence, [Presence::Busy]);
    assert_eq!(p.a.events, [Event::Connected { peer: name("Bob") }]);
    assert_eq!(p.b.events, [Event::Connected { peer: name("alice") }]);
    // The name shows as the callee registered it.
    assert_eq!(p.alice.peer().map(Name::as_str), Some("Bob"));
}

#[test]
fn refusals_name_their_cause() {
    let mut p = Pair::connected();
    assert_eq!(p.alice.connect(name("ALICE")), Err(ConnectError::Yourself));
    assert!(matches!(p.alice.connect(name("carol")), Err(ConnectError::AlreadyConnected { .. })));
    let busy =
        p.bob.handle_hello(name("carol"), DialKind::Fresh).expect_err("bob is in a conversation");
    assert!(busy.to_string().contains("busy"), "{busy}");
    let mut lone = Session::new(name("dave"), WINDOW);
    let err = lone.send("x".into(), "hi".into(), 0).expect_err("no conversation");
    assert!(err.to_string().contains("not connected"));
    assert!(lone.disconnect(p.now).expect_err("none").to_string().contains("not connected"));
    let err = p.alice.send("x".into(), "".into(), 0).expect_err("empty");
    assert!(err.to_string().contains("empty"));
    p.drive();
}

#[test]
fn a_dialing_session_is_busy_too_and_can_be_cancelled() {
    let mut s = Session::new(name("alice"), WINDOW);
    let link = s.connect(name("bob")).expect("dial");
    assert_eq!(s.phase(), Phase::Connecting);
    assert!(matches!(
        s.handle_hello(name("carol"), DialKind::Fresh),
        Err(AcceptError::Busy { .. })
    ));
    assert_eq!(s.disconnect(Instant::now()), Ok(name("bob")));
    assert_eq!(s.phase(), Phase::Idle);
    // Cancelled, not dropped: should it reach bob, he is told.
    assert_eq!(s.poll_action(), Some(Action::HangUp { link }));
    // The dial completing late is hung up, not adopted.
    s.handle_dialed(link, name("bob"));
    assert_eq!(s.poll_action(), Some(Action::DropLink { link }));
    assert_eq!(s.phase(), Phase::Idle);
}

#[test]
fn a_failed_dial_leaves_the_session_free() {
    let mut s = Session::new(name("alice"), WINDOW);
    let link = s.connect(name("bob")).expect("dial");
    // Nothing to send on yet, and the refusal says why.
    let early = s.send("m1".into(), "too soon".into(), 0);
    assert_eq!(early, Err(SendError::Connecting { peer: name("bob") }));
    assert_eq!(s.ping(1), Err(SendError::Connecting { peer: name("bob") }));
    s.handle_dial_failed(link, "refused", Instant::now());
    assert_eq!(s.phase(), Phase::Idle);
    assert!(s.connect(name("carol")).is_ok());
}

/// A dial answered at once changes nothing that is listed; one whose
/// callee asks its user shows us busy until it ends, however it ends.
#[test]
fn a_dial_shows_us_busy_while_the_callee_asks_its_user() {
    fn presence(s: &mut Session) -> Vec<Presence> {
        let mut side = Side::default();
        Pair::drain(s, &mut side);
        side.presence
    }
    let mut s = Session::new(name("alice"), WINDOW);
    let now = Instant::now();
    let link = s.connect(name("bob")).expect("dial");
    assert_eq!(presence(&mut s), []);
    s.handle_dial_failed(link, "refused", now);
    assert_eq!(presence(&mut s), [], "a quick failure is no flap");

    type End = fn(&mut Session, LinkId, Instant);
    let ends: [(&str, End); 4] = [
        ("failed", |s, link, now| s.handle_dial_failed(link, "refused", now)),
        ("cancelled", |s, _, now| {
            s.disconnect(now).expect("a dial to cancel");
        }),
        ("link down", |s, link, now| {
            s.handle_link_down(link, LinkDown::Error("reset".into()), now)
        }),
        ("shutdown", |s, _, now| s.shutdown(now)),
    ];
    for (how, end) in ends {
        let link = s.connect(name("bob")).expect("dial");
        s.handle_dial_asked(link);
        s.handle_dial_asked(link);
        s.handle_dial_asked(LinkId(999));
        assert_eq!(presence(&mut s), [Presence::Busy], "{how}: once, for this dial");
        end(&mut s, link, now);
        assert_eq!(s.phase(), Phase::Idle, "{how}");
        assert_eq!(presence(&mut s), [Presence::Available], "{how}");
    }
    // Taken: busy, as for any conversation.
    let link = s.connect(name("bob")).expect("dial");
    s.handle_dial_asked(link);
    s.handle_dialed(link, name("bob"));
    assert_eq!(presence(&mut s), [Presence::Busy, Presence::Busy]);
}

#[test]
fn duplex_exchange_arrives_in_order_exactly_once() {
    let mut p = Pair::connected();
    for i in 0..100 {
        p.send(true, &format!("a{i}"));
        p.send(false, &format!("b{i}"));
        if i % 7 == 0 {
            p.drive();
        }
    }
    p.drive();
    let want_b: Vec<_> = (0..100).map(|i| format!("a{i}")).collect();
    let want_a: Vec<_> = (0..100).map(|i| format!("b{i}")).collect();
    assert_eq!(messages(&p.b), want_b);
    assert_eq!(messages(&p.a), want_a);
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered).len(), 100);
    assert_eq!(p.alice.unacknowledged(), 0);
    assert_eq!(p.bob.unacknowledged(), 0);
}

#[test]
fn delivered_receipt_follows_the_store() {
    let mut p = Pair::connected();
    let id = p.send(true, "hi");
    p.drive();
    let stored = p.b.log.iter().position(|l| l.starts_with("persist") && l.contains("\"hi\""));
    let acked = p.b.log.iter().position(|l| l.contains("Receipt") && l.contains("Delivered"));
    assert!(stored.expect("stored") < acked.expect("acked"), "{:?}", p.b.log);
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered), std::slice::from_ref(&id));
    assert!(p.a.stored.contains(&Record::State {
        peer: name("bob"),
        id: id.into(),
        state: MessageState::Delivered
    }));
}

#[test]
fn displayed_waits_for_a_display_client() {
    let mut p = Pair::connected();
    let first = p.send(true, "one");
    let second = p.send(true, "two");
    p.drive();
    assert!(receipts(&p.a, ReceiptKind::Displayed).is_empty());
    let waiting: Vec<_> = p.bob.undisplayed().map(|(_, m)| m.text.to_string()).collect();
    assert_eq!(waiting, ["one", "two"]);
    p.bob.handle_displayed(&[first.as_str().into()]);
    p.drive();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), std::slice::from_ref(&first));
    // Showing it again does not send a second receipt.
    p.bob.handle_displayed(&[first.as_str().into(), second.as_str().into()]);
    p.bob.handle_displayed(&[first.as_str().into(), second.as_str().into()]);
    p.drive();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed).len(), 2);
    assert_eq!(p.bob.undisplayed().count(), 0);
}

/// A `displayed` receipt for a message an earlier run of ours sent (and
/// saw delivered) is believed after our restart, from the peer it went to
/// only.
#[test]
fn a_restarted_sender_believes_displayed_for_what_it_sent_before() {
    let mut p = Pair::connected();
    p.alice.restore_delivered_unshown(name("bob"), ["from-before".into()]);
    p.alice.restore_delivered_unshown(name("carol"), ["carols".into()]);
    let ids = vec!["from-before".into(), "carols".into(), "forged".into()];
    p.b.outbound.push_back(Frame::Receipt { ids, kind: ReceiptKind::Displayed });
    p.drive();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), ["from-before"]);
    let stored: Vec<&Record> =
        p.a.stored.iter().filter(|r| matches!(r, Record::State { .. })).collect();
    assert!(
        matches!(stored[..], [Record::State { id, state: MessageState::Displayed, .. }] if &**id == "from-before"),
        "{stored:?}"
    );
}

#[test]
fn receipts_for_unknown_ids_are_ignored() {
    let mut p = Pair::connected();
    p.b.outbound
        .push_back(Frame::Receipt { ids: vec!["forged".into()], kind: ReceiptKind::Delivered });
    p.b.outbound
        .push_back(Frame::Receipt { ids: vec!["forged".into()], kind: ReceiptKind::Displayed });
    p.drive();
    assert!(receipts(&p.a, ReceiptKind::Delivered).is_empty());
    assert!(receipts(&p.a, ReceiptKind::Displayed).is_empty());
}

/// Only the peer a message went to may say it was shown: a later peer
/// that guesses our ids (a per-run prefix and a counter) cannot mark an
/// earlier conversation's messages displayed.
#[test]
fn a_later_peer_cannot_mark_an_earlier_peers_message_displayed() {
    let mut p = Pair::connected();
    let id = p.send(true, "for bob's eyes");
    p.drive();
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered), std::slice::from_ref(&id));
    assert_eq!(p.alice.disconnect(p.now), Ok(name("bob")));
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Idle);

    let link = p.alice.connect(name("mallory")).expect("alice may dial");
    p.alice.handle_dialed(link, name("mallory"));
    let forged = Frame::Receipt { ids: vec![id.as_str().into()], kind: ReceiptKind::Displayed };
    p.alice.handle_frame(link, forged, p.now);
    Pair::drain(&mut p.alice, &mut p.a);
    assert!(receipts(&p.a, ReceiptKind::Displayed).is_empty(), "mallory marked it displayed");
    let marked =
        p.a.stored
            .iter()
            .any(|r| matches!(r, Record::State { state: MessageState::Displayed, .. }));
    assert!(!marked, "a displayed state was stored: {:?}", p.a.stored);
}

#[test]
fn a_replayed_message_is_acknowledged_but_not_shown_twice() {
    let mut p = Pair::connected();
    p.send(true, "once");
    Pair::drain(&mut p.alice, &mut p.a);
    let frame = p.a.outbound.front().cloned();
    p.drive();
    p.a.outbound.push_back(frame.expect("the message was on the wire"));
    p.drive();
    assert_eq!(messages(&p.b), ["once"]);
    let stored_in = p.b.stored.iter().filter(|r| matches!(r, Record::Message { .. })).count();
    assert_eq!(stored_in, 1);
}

#[test]
fn disconnect_by_alice_ends_cleanly_for_both() {
    let mut p = Pair::connected();
    let id = p.send(true, "last words");
    p.send(false, "crossing");
    assert_eq!(p.alice.disconnect(p.now), Ok(name("bob")));
    assert_eq!(p.alice.phase(), Phase::Closing);
    assert!(p.alice.send("x".into(), "late".into(), 0).is_err());
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(p.bob.phase(), Phase::Idle);
    assert_eq!(disconnected(&p.a), ["you ended the conversation"]);
    assert_eq!(disconnected(&p.b), ["alice ended the conversation"]);
    // Messages in flight when the goodbye crossed were still delivered.
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered), [id]);
    assert_eq!(messages(&p.a), ["crossing"]);
    assert!(failed(&p.a).is_empty() && failed(&p.b).is_empty());
    assert_eq!(p.a.presence.last(), Some(&Presence::Available));
    assert_eq!(p.b.presence.last(), Some(&Presence::Available));
    // Both may talk to someone else now.
    assert!(p.alice.connect(name("carol")).is_ok());
    assert!(p.bob.handle_hello(name("dave"), DialKind::Fresh).is_ok());
}

#[test]
fn disconnect_by_the_callee_ends_cleanly_for_both() {
    let mut p = Pair::connected();
    let id = p.send(false, "bye from bob");
    p.send(true, "crossing");
    assert!(p.bob.disconnect(p.now).is_ok());
    p.drive();
    assert_eq!(disconnected(&p.b), ["you ended the conversation"]);
    assert_eq!(disconnected(&p.a), ["Bob ended the conversation"]);
    assert_eq!(receipts(&p.b, ReceiptKind::Delivered), [id]);
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered).len(), 1);
    assert!(failed(&p.a).is_empty() && failed(&p.b).is_empty());
}

#[test]
fn both_disconnecting_at_once_still_ends_cleanly() {
    let mut p = Pair::connected();
    p.alice.disconnect(p.now).expect("alice");
    p.bob.disconnect(p.now).expect("bob");
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(p.bob.phase(), Phase::Idle);
    assert_eq!(disconnected(&p.a).len(), 1);
    assert_eq!(disconnected(&p.b).len(), 1);
}

fn link_lost(side: &Side) -> Vec<String> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::LinkLost { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn resumed(side: &Side) -> usize {
    side.events.iter().filter(|e| matches!(e, Event::Resumed { .. })).count()
}

#[test]
fn a_lost_link_is_reconnecting_not_the_end() {
    let mut p = Pair::connected();
    p.send(true, "in flight");
    p.cut("connection reset");
    assert_eq!(link_lost(&p.a), ["connection reset"]);
    assert_eq!(link_lost(&p.b), ["connection reset"]);
    assert_eq!(p.alice.phase(), Phase::Reconnecting);
    assert_eq!(p.bob.phase(), Phase::Reconnecting);
    assert!(disconnected(&p.a).is_empty() && failed(&p.a).is_empty());
    // Still busy to others, and the dialer redials at once; the callee waits.
    assert!(matches!(
        p.bob.handle_hello(name("carol"), DialKind::Fresh),
        Err(AcceptError::Busy { .. })
    ));
    assert!(p.a.presence.ends_with(&[Presence::Busy]));
    assert_eq!(p.a.redials.len(), 1);
    assert!(p.b.redials.is_empty());
    assert_eq!(p.alice.unacknowledged(), 1);
}

#[test]
fn resuming_sends_everything_unacknowledged_again_in_order_and_nothing_twice() {
    let mut p = Pair::connected();
    let delivered = p.send(true, "made it");
    p.drive();
    // These reach bob, but their receipts die with the link.
    let got_there = p.send(true, "stored, receipt lost");
    Pair::drain(&mut p.alice, &mut p.a);
    let frame = p.a.outbound.pop_front().expect("on the wire");
    p.bob.handle_frame(p.b_link.expect("linked"), frame, p.now);
    Pair::drain(&mut p.bob, &mut p.b);
    // This one never leaves alice.
    let lost = p.send(true, "lost on the wire");
    p.cut("reset");
    // Sent while reconnecting: queued.
    let queued = p.send(true, "queued while reconnecting");
    assert_eq!(p.alice.unacknowledged(), 3);

    p.redial_succeeds();
    assert_eq!(resumed(&p.a), 1);
    assert_eq!(resumed(&p.b), 1);
    assert_eq!(p.alice.phase(), Phase::Connected);
    assert_eq!(
        messages(&p.b),
        ["made it", "stored, receipt lost", "lost on the wire", "queued while reconnecting"]
    );
    let stored_in = p.b.stored.iter().filter(|r| matches!(r, Record::Message { .. })).count();
    assert_eq!(stored_in, 4, "stored once each");
    let mut acked = receipts(&p.a, ReceiptKind::Delivered);
    acked.sort();
    let mut want = vec![delivered, got_there, lost, queued];
    want.sort();
    assert_eq!(acked, want);
    assert_eq!(p.alice.unacknowledged(), 0);
    assert!(failed(&p.a).is_empty());
}

#[test]
fn a_failed_redial_is_retried_with_backoff_until_the_window_passes() {
    let mut p = Pair::connected();
    let lost = p.send(true, "never delivered");
    p.cut("reset");
    let lost_at = p.now;
    // The first redial goes out at once; while it is in progress the only
    // timer is the end of the resume window (the same for both sides).
    assert_eq!(p.a.redials.len(), 1);
    assert_eq!(p.alice.poll_timeout(), Some(lost_at + WINDOW));
    assert_eq!(p.bob.poll_timeout(), Some(lost_at + WINDOW));
    // Each failure waits before the next try: REDIAL_INITIAL, doubling up
    // to REDIAL_MAX.
    let mut wait = REDIAL_INITIAL;
    let mut waits = Vec::new();
    while p.now + wait < lost_at + WINDOW {
        let dial = *p.a.redials.last().expect("a redial in progress");
        p.alice.handle_dial_failed(dial, "bob is busy in another conversation", p.now);
        p.drive();
        let due = p.now + wait;
        let redials = p.a.redials.len();
        p.nothing_happens_before(due);
        p.advance_to_next_timer();
        assert_eq!(p.now, due, "redial number {} is late or early", redials + 1);
        assert_eq!(p.a.redials.len(), redials + 1, "a redial at {:?}", due - lost_at);
        waits.push(wait);
        wait = (wait * 2).min(REDIAL_MAX);
    }
    assert_eq!(waits[..4], [REDIAL_INITIAL, REDIAL_INITIAL * 2, REDIAL_INITIAL * 4, REDIAL_MAX]);
    assert!(p.b.redials.is_empty(), "the callee waits to be called");
    assert_eq!(p.alice.phase(), Phase::Reconnecting);

    // The last redial hangs: the conversation fails exactly when the
    // window ends, on both sides.
    p.nothing_happens_before(lost_at + WINDOW);
    p.advance_to_next_timer();
    assert_eq!(p.now, lost_at + WINDOW);
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(p.bob.phase(), Phase::Idle);
    assert_eq!(failed(&p.a), [lost]);
    let reason = &disconnected(&p.a)[0];
    assert!(reason.contains("link lost") && reason.contains("30s"), "{reason}");
    // Not only the loss, long ago: what the redials last heard.
    assert!(reason.ends_with("; last redial: bob is busy in another conversation)"), "{reason}");
    assert_eq!(disconnected(&p.b).len(), 1);
    assert_eq!(p.a.presence.last(), Some(&Presence::Available));
    assert!(p.a.dropped, "the redial in progress is dropped");
    assert_eq!(p.alice.poll_timeout(), None);
    assert_eq!(p.bob.poll_timeout(), None);
}

#[test]
fn a_redial_the_callee_asks_its_user_about_says_so_when_the_window_passes() {
    let mut p = Pair::connected();
    p.cut("reset");
    let lost_at = p.now;
    let dial = *p.a.redials.last().expect("a redial in progress");
    p.alice.handle_dial_failed(dial, "bob is not online: it does not answer", p.now);
    p.drive();
    p.advance_to_next_timer();
    // The callee restarted under --accept ask: its user is asked.
    let dial = *p.a.redials.last().expect("the next redial");
    p.alice.handle_dial_asked(dial);
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Reconnecting, "still reconnecting");
    assert_eq!(p.alice.gives_up_at(), Some(lost_at + WINDOW), "the asking ends there");
    p.nothing_happens_before(lost_at + WINDOW);
    p.advance_to_next_timer();
    assert_eq!(p.alice.phase(), Phase::Idle);
    let reason = &disconnected(&p.a)[0];
    assert!(reason.ends_with("; last redial: Bob's user was asked to accept it)"), "{reason}");
}

#[test]
fn a_redial_that_fails_at_once_is_not_retried_at_once() {
    let mut p = Pair::connected();
    p.cut("reset");
    let first = *p.a.redials.last().expect("redial");
    p.alice.handle_dial_failed(first, "refused", p.now);
    p.drive();
    assert_eq!(p.a.redials.len(), 1, "not again at once");
    assert_eq!(p.advance_to_next_timer(), REDIAL_INITIAL);
    assert_eq!(p.a.redials.len(), 2, "again after the backoff");
    // And the second redial succeeding resumes the conversation.
    p.redial_succeeds();
    assert_eq!(p.alice.phase(), Phase::Connected);
    assert_eq!(p.bob.phase(), Phase::Connected);
    assert_eq!(p.alice.poll_timeout(), None);
    assert_eq!(p.bob.poll_timeout(), None);
}

#[test]
fn disconnect_while_reconnecting_ends_at_once() {
    let mut p = Pair::connected();
    let lost = p.send(true, "never delivered");
    p.cut("reset");
    assert_eq!(p.alice.disconnect(p.now), Ok(name("bob")));
    Pair::drain(&mut p.alice, &mut p.a);
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(failed(&p.a), [lost]);
    assert_eq!(disconnected(&p.a).len(), 1);
    assert!(p.a.dropped, "the redial in progress is dropped");
}

/// The callee ends a conversation whose link is down: the dialer could not
/// hear a goodbye, so its redial is refused (and it ends there too), not
/// taken as a new conversation the callee's user never asked for.
#[test]
fn a_callee_that_ended_while_reconnecting_refuses_the_redial() {
    let mut p = Pair::connected();
    let lost = p.send(true, "never delivered");
    p.cut("reset");
    assert_eq!(p.bob.disconnect(p.now), Ok(name("alice")));
    p.drive();
    assert_eq!(p.bob.phase(), Phase::Idle);
    assert_eq!(disconnected(&p.b).len(), 1);

    // Alice's redial is refused, within the window and only then...
    let refusal = p.bob.refuses_redial(&name("ALICE"), DialKind::Redial);
    assert_eq!(refusal, Some(AcceptError::Ended { me: name("Bob"), how: EndedHow::ByUser }));
    assert_eq!(p.bob.refuses_redial(&name("carol"), DialKind::Redial), None, "only alice's");
    assert_eq!(p.bob.refuses_redial(&name("alice"), DialKind::Fresh), None, "only redials");
    // ...and she ends the conversation on it, failing what she had queued.
    let redial = *p.a.redials.last().expect("alice redials");
    p.alice.handle_redial_refused_ended(redial, EndedHow::ByUser, p.now);
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(failed(&p.a), [lost]);
    let reason = &disconnected(&p.a)[0];
    assert_eq!(reason, "Bob ended the conversation while the link was down");
    assert_eq!(p.a.presence.last(), Some(&Presence::Available));
    assert_eq!(p.alice.poll_timeout(), None, "no more redials");

    // A conversation her user asks for is no redial: bob takes it, and
    // forgets the ended one.
    let link = p.alice.connect(name("bob")).expect("alice may dial again");
    p.bob_accepts();
    p.alice.handle_dialed(link, name("Bob"));
    p.drive();
    assert_eq!(p.bob.phase(), Phase::Connected);
    assert_eq!(p.bob.refuses_redial(&name("alice"), DialKind::Redial), None);
}

/// The same when the callee's resume window passed first: the dialer's may
/// be longer (or it was frozen through it), and its redial must not start
/// a conversation the callee's user was told had ended.
#[test]
fn a_callee_whose_window_passed_refuses_the_late_redial() {
    let mut bob = Session::new(name("Bob"), Duration::from_secs(5));
    let link = bob.handle_hello(name("alice"), DialKind::Fresh).expect("bob is free");
    let now = Instant::now();
    bob.handle_link_down(link, LinkDown::Error("reset".into()), now);
    assert_eq!(bob.phase(), Phase::Reconnecting);
    bob.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(bob.phase(), Phase::Idle);
    let late = bob.refuses_redial(&name("alice"), DialKind::Redial);
    let window_passed = AcceptError::Ended { me: name("Bob"), how: EndedHow::WindowPassed };
    assert_eq!(late, Some(window_passed.clone()));
    // What the dialer is told: not that bob's user ended it.
    assert_eq!(
        window_passed.to_string(),
        "Bob stopped waiting for the link: its resume window passed"
    );
    assert_eq!(bob.refuses_redial(&name("alice"), DialKind::Fresh), None);
}

/// Only the callee remembers: a dialer that gives up reconnecting simply
/// stops redialing.
#[test]
fn a_dialer_that_ended_while_reconnecting_refuses_nothing() {
    let mut p = Pair::connected();
    p.cut("reset");
    assert_eq!(p.alice.disconnect(p.now), Ok(name("bob")));
    p.drive();
    assert_eq!(p.alice.refuses_redial(&name("bob"), DialKind::Redial), None);
    // And a redial refusal for a dial nobody is waiting for changes nothing.
    p.alice.handle_redial_refused_ended(LinkId(999), EndedHow::ByUser, p.now);
    p.drive();
    assert_eq!(disconnected(&p.a).len(), 1);
}

fn connected_events(side: &Side) -> usize {
    side.events.iter().filter(|e| matches!(e, Event::Connected { .. })).count()
}

/// Alice and bob dial each other at the same moment. "alice" sorts first,
/// so her dial wins on both ends, whatever order the hellos arrive in:
/// one conversation, alice its dialer, and both users' `connect` answered.
#[test]
fn two_peers_dialing_each_other_at_once_end_up_in_one_conversation() {
    let mut p = Pair::new();
    let a_dial = p.alice.connect(name("bob")).expect("alice dials");
    let b_dial = p.bob.connect(name("alice")).expect("bob dials");
    // Bob's hello reaches alice: she refuses it, her own dial being the one.
    let refused = p.alice.handle_hello(name("Bob"), DialKind::Fresh);
    assert_eq!(refused, Err(AcceptError::Crossed { me: name("alice") }));
    assert_eq!(p.alice.phase(), Phase::Connecting);
    // Alice's reaches bob: he takes it and drops his own dial; his user's
    // `connect` is answered by it.
    let b_link = p.bob_accepts();
    assert_eq!(p.b.crossed, [(b_dial, Crossing::Connected(name("alice")))]);
    assert!(p.b.dropped, "bob's own dial is dropped");
    // Alice's refusal of his dial reaches him after that: nothing changes.
    p.bob.handle_dial_crossed(b_dial, p.now);
    p.alice.handle_dialed(a_dial, name("Bob"));
    p.a_link = Some(a_dial);
    p.b_link = Some(b_link);
    p.drive();
    assert_eq!((p.alice.phase(), p.bob.phase()), (Phase::Connected, Phase::Connected));
    assert_eq!((connected_events(&p.a), connected_events(&p.b)), (1, 1));
    assert!(p.a.crossed.is_empty(), "alice's connect is answered by her own dial");
    p.send(true, "hi bob");
    p.send(false, "hi alice");
    p.drive();
    assert_eq!(messages(&p.b), ["hi bob"]);
    assert_eq!(messages(&p.a), ["hi alice"]);
    // Bob's dropped dial may still reach alice late: it does not replace
    // the link their conversation runs on.
    let late = p.alice.handle_hello(name("Bob"), DialKind::Fresh);
    assert_eq!(late, Err(AcceptError::Crossed { me: name("alice") }));
    assert_eq!(p.alice.link(), Some(a_dial));
    // A redial is still taken back, though (a lost link, as ever).
    assert!(p.alice.handle_hello(name("Bob"), DialKind::Redial).is_ok());
}

/// The losing end hears its dial refused before the winner's hello comes:
/// it waits for that call, busy to others, for [`CROSSED_WAIT`] and no
/// longer.
#[test]
fn the_losing_dialer_waits_for_the_winners_call_and_no_longer() {
    let mut p = Pair::new();
    let _a_dial = p.alice.connect(name("bob")).expect("alice dials");
    let b_dial = p.bob.connect(name("alice")).expect("bob dials");
    p.bob.handle_dial_crossed(b_dial, p.now);
    assert_eq!(p.bob.phase(), Phase::Connecting);
    assert_eq!(p.bob.poll_timeout(), Some(p.now + CROSSED_WAIT));
    assert!(matches!(
        p.bob.handle_hello(name("carol"), DialKind::Fresh),
        Err(AcceptError::Busy { .. })
    ));
    let mut late = Pair::new();
    late.alice.connect(name("bob")).expect("alice dials");
    let b_dial_late = late.bob.connect(name("alice")).expect("bob dials");
    late.bob.handle_dial_crossed(b_dial_late, late.now);

    // In time: alice's call is the conversation.
    p.bob_accepts();
    assert_eq!(p.b.crossed, [(b_dial, Crossing::Connected(name("alice")))]);
    assert_eq!(p.bob.phase(), Phase::Connected);

    // Not in time: bob's connect fails, and he is free again.
    let waited_from = late.now;
    late.nothing_happens_before(waited_from + CROSSED_WAIT);
    late.advance_to_next_timer();
    assert_eq!(late.now, waited_from + CROSSED_WAIT);
    Pair::drain(&mut late.bob, &mut late.b);
    assert_eq!(late.b.crossed, [(b_dial_late, Crossing::NotCalled(name("alice")))]);
    assert_eq!(late.bob.phase(), Phase::Idle);
    assert_eq!(late.bob.poll_timeout(), None);
}

/// What `side` last noted as the conversation to redial after a crash.
fn resumable(side: &Side) -> Option<Option<Name>> {
    side.stored.iter().rev().find_map(|r| match r {
        Record::Resumable { peer } => Some(peer.clone()),
        _ => None,
    })
}

/// The dialer notes its conversation while it lasts; the callee, who
/// would not redial, notes nothing.
#[test]
fn the_dialer_notes_its_conversation_until_it_ends() {
    let mut p = Pair::connected();
    assert_eq!(resumable(&p.a), Some(Some(name("Bob"))));
    assert_eq!(resumable(&p.b), None);
    p.alice.disconnect(p.now).expect("connected");
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(resumable(&p.a), Some(None));
    // Stopping the daemon is ending it too, even before the goodbye is
    // answered.
    let mut p = Pair::connected();
    p.alice.shutdown(p.now);
    Pair::drain(&mut p.alice, &mut p.a);
    assert_eq!(resumable(&p.a), Some(None));
}

/// Alice's daemon crashed in a conversation she dialed, with a message
/// unacknowledged. Restarted, she redials at once, saying she restarted;
/// bob, still reconnecting, takes her back, and the message arrives once.
#[test]
fn a_restarted_dialer_resumes_its_conversation() {
    let mut p = Pair::connected();
    let lost = p.send(true, "sent before the crash");
    p.a.outbound.clear();
    p.cut("alice crashed");
    // Alice restarts: a new session, told what her history and her note hold.
    p.alice = Session::new(name("alice"), WINDOW);
    p.a = Side::default();
    let unacked = vec![Message {
        id: lost.as_str().into(),
        text: "sent before the crash".into(),
        sent_at_ms: 0,
        seq: 1,
    }];
    p.alice.restore_unacked(name("bob"), unacked, p.now);
    p.alice.restore_conversation(name("bob"), p.now);
    Pair::drain(&mut p.alice, &mut p.a);
    assert_eq!(p.alice.phase(), Phase::Reconnecting);
    assert_eq!(p.alice.unacknowledged(), 1);
    assert_eq!(p.a.redials.len(), 1, "at once");
    assert_eq!(p.a.presence.last(), Some(&Presence::Busy));
    let link = *p.a.redials.last().expect("alice redials");
    Pair::drain(&mut p.bob, &mut p.b);
    let before = p.b.outbound.len();
    let b_link = p.bob.handle_hello(name("alice"), DialKind::AfterRestart).expect("taken back");
    Pair::drain(&mut p.bob, &mut p.b);
    assert!(matches!(p.b.outbound.remove(before), Some(Frame::Welcome { .. })));
    p.a_link = Some(link);
    p.b_link = Some(b_link);
    p.alice.handle_dialed(link, name("Bob"));
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Connected);
    assert_eq!(p.bob.phase(), Phase::Connected);
    assert_eq!(messages(&p.b), ["sent before the crash"]);
    assert_eq!(p.alice.unacknowledged(), 0);
    assert_eq!((resumed(&p.a), resumed(&p.b)), (1, 1));
}

/// After the restart, alice's user runs `connect bob`, the conversation
/// the daemon came back in: it answers (redialing now, or at once when it
/// is on again), where a conversation of this run says "already
/// connected".
#[test]
fn connect_to_the_peer_of_a_restored_conversation_is_answered_by_it() {
    let mut p = Pair::connected();
    assert_eq!(p.alice.connect_restored(&name("bob")), None, "started by this run");
    p.cut("alice crashed");
    p.alice = Session::new(name("alice"), WINDOW);
    p.a = Side::default();
    p.alice.restore_conversation(name("bob"), p.now);
    Pair::drain(&mut p.alice, &mut p.a);
    assert_eq!(p.alice.connect_restored(&name("carol")), None, "another peer");
    let Some(ConnectRestored::Dial(link)) = p.alice.connect_restored(&name("BOB")) else {
        panic!("a redial for the connect");
    };
    Pair::drain(&mut p.alice, &mut p.a);
    assert!(p.a.dropped, "the restarted daemon's own redial makes way");
    let b_link = p.bob_accepts();
    p.a_link = Some(link);
    p.b_link = Some(b_link);
    p.alice.handle_dialed(link, name("Bob"));
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Connected);
    assert_eq!(resumed(&p.a), 1);
    assert_eq!(p.alice.connect_restored(&name("bob")), Some(ConnectRestored::Live));
}

/// A restarted dialer's redial reaches a callee with no conversation with
/// it (its window passed, or it talks to someone else): refused as ended,
/// never a new conversation nobody asked for; the dialer ends it and fails
/// what was unacknowledged.
#[test]
fn a_restarted_dialer_is_refused_by_a_callee_that_moved_on() {
    let mut bob = Session::new(name("bob"), WINDOW);
    let now = Instant::now();
    // Refused before bob's user would be asked about it...
    let early = bob.refuses_redial(&name("alice"), DialKind::AfterRestart);
    assert_eq!(early, Some(AcceptError::Ended { me: name("bob"), how: EndedHow::NotHere }));
    assert_eq!(bob.refuses_redial(&name("alice"), DialKind::Fresh), None);
    // ...and by the session itself.
    let ended = bob.handle_hello(name("alice"), DialKind::AfterRestart);
    assert_eq!(ended, Err(AcceptError::Ended { me: name("bob"), how: EndedHow::NotHere }));
    assert_eq!(bob.phase(), Phase::Idle);
    bob.handle_hello(name("carol"), DialKind::Fresh).expect("bob talks to carol");
    let busy_elsewhere = bob.handle_hello(name("alice"), DialKind::AfterRestart);
    assert_eq!(busy_elsewhere, Err(AcceptError::Ended { me: name("bob"), how: EndedHow::NotHere }));
    // An ordinary redial to an idle callee is still taken (the callee is
    // the one that restarted).
    let mut fresh = Session::new(name("bob"), WINDOW);
    assert!(fresh.handle_hello(name("alice"), DialKind::Redial).is_ok());

    let mut alice = Session::new(name("alice"), WINDOW);
    let m = Message { id: "m1".into(), text: "hello?".into(), sent_at_ms: 0, seq: 1 };
    alice.restore_unacked(name("bob"), vec![m], now);
    alice.restore_conversation(name("bob"), now);
    let mut a = Side::default();
    Pair::drain(&mut alice, &mut a);
    let dial = *a.redials.last().expect("a redial");
    alice.handle_redial_refused_ended(dial, EndedHow::NotHere, now);
    Pair::drain(&mut alice, &mut a);
    assert_eq!(alice.phase(), Phase::Idle);
    assert_eq!(resumable(&a), Some(None));
    assert_eq!(disconnected(&a).len(), 1);
    // Nothing failed: the message waits, as it did before the restore,
    // for a next conversation with bob within the window.
    assert!(failed(&a).is_empty());
    assert_eq!(alice.unacknowledged(), 1);
    let link = alice.connect(name("bob")).expect("alice may connect");
    let mut bob = Session::new(name("bob"), WINDOW);
    bob.handle_hello(name("alice"), DialKind::Fresh).expect("bob is free");
    alice.handle_dialed(link, name("bob"));
    Pair::drain(&mut alice, &mut a);
    assert!(
        a.outbound.iter().any(|f| matches!(f, Frame::Message(m) if &*m.id == "m1")),
        "sent with the new conversation"
    );
}

#[test]
fn a_restarted_receiver_recognises_what_it_already_has() {
    let mut p = Pair::connected();
    p.send(true, "one");
    p.bob_takes_one_frame();
    let shown = p.bob.undisplayed().next().expect("shown").1.id.clone();
    p.bob.handle_displayed(&[shown]);
    let seen: Vec<(Id, bool)> =
        p.b.stored
            .iter()
            .filter_map(|r| match r {
                Record::Message { message, .. } => Some((message.id.clone(), true)),
                _ => None,
            })
            .collect();
    p.cut("bob crashed");
    // Bob restarts: a new session, told what history holds.
    p.bob = Session::new(name("Bob"), WINDOW);
    p.b = Side::default();
    assert!(p.bob.needs_seen(&name("alice")));
    p.bob.load_seen(name("alice"), seen);
    p.redial_succeeds();
    // A fresh conversation for bob, a resumed one for alice.
    assert_eq!(p.b.events.first(), Some(&Event::Connected { peer: name("alice") }));
    assert_eq!(resumed(&p.a), 1);
    assert!(messages(&p.b).is_empty(), "not shown again");
    assert!(p.b.stored.is_empty(), "not stored again");
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered).len(), 1);
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed).len(), 1, "its display is told again");
}

/// A third peer dialing while bob talks to alice is turned away busy; the
/// history the driver read for it must not replace what bob remembers of
/// alice, or her message resent after a resume is stored twice.
#[test]
fn a_busy_refusal_keeps_the_current_peers_seen_ids() {
    let mut p = Pair::connected();
    p.send(true, "one");
    p.bob_takes_one_frame();
    // Bob's `delivered` is lost with the link, below.
    p.b.outbound.clear();

    p.bob.load_seen(name("mallory"), Vec::new());
    assert!(matches!(
        p.bob.handle_hello(name("mallory"), DialKind::Fresh),
        Err(AcceptError::Busy { .. })
    ));
    assert!(!p.bob.needs_seen(&name("alice")), "bob still knows alice's ids");
    p.send(true, "two");
    p.drive();
    p.cut("reset");
    p.redial_succeeds();
    let stored = stored_texts(&p.b);
    assert_eq!(stored, ["one", "two"], "each stored once");
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered).len(), 2);
}

/// A history read of the current peer's ids that started before their
/// latest message arrived (the losing dial of two crossing ones, say)
/// must not replace what bob remembers either: that message, resent after
/// a resume, would be stored twice.
#[test]
fn a_stale_read_of_the_current_peers_ids_keeps_what_came_since() {
    let mut p = Pair::connected();
    p.send(true, "one");
    p.bob_takes_one_frame();
    // Bob's `delivered` is lost with the link, below.
    p.b.outbound.clear();

    p.bob.load_seen(name("alice"), Vec::new());
    p.cut("reset");
    p.redial_succeeds();
    let stored = stored_texts(&p.b);
    assert_eq!(stored, ["one"], "stored once");
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered).len(), 1);
}

#[test]
fn displayed_receipts_owed_during_an_outage_are_paid_on_resume() {
    let mut p = Pair::connected();
    let id = p.send(true, "hi");
    p.drive();
    p.cut("reset");
    p.bob.handle_displayed(&[id.as_str().into()]);
    p.drive();
    assert!(receipts(&p.a, ReceiptKind::Displayed).is_empty());
    p.redial_succeeds();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), [id]);
}

/// The dialer ended a conversation while its link was down (so the callee
/// never heard) and then ran `connect` again: the callee does not take
/// that as a resume. The old conversation ends (disconnected, saying so)
/// and a new one starts (connected), carrying what it had not got
/// acknowledged.
#[test]
fn a_fresh_dial_from_the_peer_of_a_reconnecting_callee_is_a_new_conversation() {
    let mut p = Pair::connected();
    p.cut("reset");
    p.alice.disconnect(p.now).expect("alice gives up reconnecting");
    let queued = p.send(false, "bob wrote this while the link was down");
    p.drive();
    p.b.events.clear();
    p.alice_dials_and_bob_accepts();
    assert_eq!(disconnected(&p.b), ["alice started a new conversation"]);
    let order: Vec<&str> =
        p.b.events
            .iter()
            .filter_map(|e| match e {
                Event::Disconnected { .. } => Some("disconnected"),
                Event::Connected { .. } => Some("connected"),
                Event::Resumed { .. } => Some("resumed"),
                _ => None,
            })
            .collect();
    assert_eq!(order, ["disconnected", "connected"]);
    assert_eq!(messages(&p.a), ["bob wrote this while the link was down"]);
    assert_eq!(receipts(&p.b, ReceiptKind::Delivered), [queued]);
    assert_eq!(p.bob.peer().map(Name::as_str), Some("alice"));
}

/// Alice's link comes back (at `t0 + 1 s`, its loss at `t0`) and is lost
/// again `after` the loss: is she still reconnecting at `t0 + WINDOW`?
fn reconnecting_at_the_first_windows_end(after: Duration) -> bool {
    let mut p = Pair::connected();
    let t0 = p.now;
    p.cut("reset");
    p.now = t0 + Duration::from_secs(1);
    p.redial_succeeds();
    p.now = t0 + after;
    p.cut("reset again");
    p.now = t0 + WINDOW;
    p.alice.handle_timeout(p.now);
    Pair::drain(&mut p.alice, &mut p.a);
    p.alice.phase() == Phase::Reconnecting
}

/// A link that breaks as soon as it is back (a peer that resets each new
/// link, a disk that cannot take what it carries) must not keep a
/// conversation reconnecting for ever: lost within PROVEN_AFTER of coming
/// back, it keeps the window it came back from, and its redials back off.
#[test]
fn a_link_lost_again_at_once_keeps_the_window_it_came_back_from() {
    assert!(!reconnecting_at_the_first_windows_end(Duration::from_secs(3)));
    // One that lasted earns a new window.
    assert!(reconnecting_at_the_first_windows_end(PROVEN_AFTER + Duration::from_secs(2)));

    // And the redial after a quick loss is not at once.
    let mut p = Pair::connected();
    p.cut("reset");
    p.redial_succeeds();
    let redials = p.a.redials.len();
    p.cut("reset again");
    assert_eq!(p.a.redials.len(), redials, "no redial at once");
    let next = p.alice.poll_timeout().expect("a redial timer");
    assert!(next > p.now, "{:?}", next - p.now);
}

/// The same the other way round: bob (the callee) gave up while the link
/// was down and dials alice afresh before her redial reached him. Alice,
/// still reconnecting as the dialer, starts the new conversation as its
/// callee instead of resuming the old one, and stops redialing.
#[test]
fn a_fresh_dial_from_the_peer_of_a_reconnecting_dialer_is_a_new_conversation() {
    let mut p = Pair::connected();
    p.cut("reset");
    p.bob.disconnect(p.now).expect("bob gives up");
    p.drive();
    p.a.events.clear();
    let dropped_before = p.a.dropped;
    let link = p.alice.handle_hello(name("Bob"), DialKind::Fresh).expect("alice takes it");
    Pair::drain(&mut p.alice, &mut p.a);
    assert_eq!(disconnected(&p.a), ["Bob started a new conversation"]);
    assert!(p.a.events.iter().any(|e| matches!(e, Event::Connected { .. })), "{:?}", p.a.events);
    assert!(!p.a.events.iter().any(|e| matches!(e, Event::Resumed { .. })), "{:?}", p.a.events);
    assert!(p.a.dropped || dropped_before, "her redial is dropped");
    assert!(p.a.stored.contains(&Record::Resumable { peer: None }), "no longer hers to redial");
    assert_eq!(p.alice.link(), Some(link));
    assert!(matches!(p.a.outbound.front(), Some(Frame::Welcome { .. })), "{:?}", p.a.outbound);
}

/// Bob takes alice back on a new link before he saw the old one die: a
/// `displayed` receipt he sent on the old one may be lost with it, and is
/// sent again on the new one.
#[test]
fn a_take_back_over_a_link_not_yet_seen_dead_sends_its_receipts_again() {
    let mut p = Pair::connected();
    let id = p.send(true, "hi");
    p.drive();
    p.bob.handle_displayed(&[id.as_str().into()]);
    Pair::drain(&mut p.bob, &mut p.b);
    // The wire breaks; only alice notices, and redials.
    p.a.outbound.clear();
    p.b.outbound.clear();
    let old = p.a_link.take().expect("a link");
    p.alice.handle_link_down(old, LinkDown::Error("reset".into()), p.now);
    p.b_link = None;
    p.drive();
    p.redial_succeeds();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), [id]);
}

/// Blocking the peer ends the conversation; our user is told it was the
/// block, the peer only that it ended (it is not told it was blocked).
#[test]
fn blocking_the_peer_says_so_to_us_only() {
    let mut p = Pair::connected();
    p.alice.disconnect_blocked(p.now).expect("alice blocks bob");
    p.drive();
    assert_eq!(disconnected(&p.a), ["you blocked Bob"], "as bob spells his name");
    assert_eq!(disconnected(&p.b), ["alice ended the conversation"]);

    // While reconnecting, too.
    let mut p = Pair::connected();
    p.cut("reset");
    p.alice.disconnect_blocked(p.now).expect("alice blocks bob");
    Pair::drain(&mut p.alice, &mut p.a);
    assert_eq!(disconnected(&p.a), ["you blocked Bob while it was reconnecting"]);
}

impl Pair {
    /// Alice dials bob again (after a conversation ended), and he takes it.
    fn reconnect(&mut self) {
        // A new stream both ways.
        for side in [&mut self.a, &mut self.b] {
            side.closed_send = false;
            side.outbound.clear();
        }
        (self.a_eof, self.b_eof) = (false, false);
        self.alice_dials_and_bob_accepts();
    }
}

/// A message bob's user first sees after the conversation ended is
/// reported `displayed` to alice when they next talk (SPEC §3: shown, and
/// only then reported displayed), whoever dials; not a second time.
#[test]
fn a_message_shown_after_its_conversation_ended_is_reported_in_the_next() {
    let mut p = Pair::connected();
    let id = p.send(true, "read me later");
    p.drive();
    p.alice.disconnect(p.now).expect("alice ends it");
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Idle);
    p.bob.handle_displayed(&[id.as_str().into()]);
    p.drive();
    assert!(receipts(&p.a, ReceiptKind::Displayed).is_empty(), "no conversation to carry it");
    p.reconnect();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), std::slice::from_ref(&id));
    assert!(p.a.stored.contains(&Record::State {
        peer: name("bob"),
        id: id.as_str().into(),
        state: MessageState::Displayed
    }));
    p.alice.disconnect(p.now).expect("alice ends it");
    p.drive();
    p.reconnect();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), [id], "paid once");
}

/// A `displayed` receipt sent on a link that died before it got there
/// (nothing acknowledges a receipt) is sent again when the link is back:
/// the message is no longer unacknowledged, so nothing else would ask.
#[test]
fn displayed_receipts_lost_with_the_link_are_sent_again_on_resume() {
    let mut p = Pair::connected();
    let id = p.send(true, "hi");
    p.drive();
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered), std::slice::from_ref(&id));
    p.bob.handle_displayed(&[id.as_str().into()]);
    Pair::drain(&mut p.bob, &mut p.b);
    assert_eq!(p.b.outbound.len(), 1, "the receipt is on its way");
    p.cut("reset");
    assert!(receipts(&p.a, ReceiptKind::Displayed).is_empty(), "lost with the link");
    p.redial_succeeds();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), std::slice::from_ref(&id));
    // Sent once more after another loss (it may have been lost again):
    // the sender tells its user once.
    p.cut("reset");
    p.redial_succeeds();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), [id]);
}

#[test]
fn unacknowledged_messages_of_an_earlier_run_go_out_with_the_next_conversation() {
    let mut p = Pair::new();
    let old =
        Message { id: "old".into(), text: "from before the crash".into(), sent_at_ms: 1, seq: 7 };
    p.alice.restore_unacked(name("bob"), vec![old], p.now);
    p.alice_dials_and_bob_accepts();
    assert_eq!(messages(&p.b), ["from before the crash"]);
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered), ["old"]);
    // And the next message does not reuse its sequence number.
    p.send(true, "new");
    p.drive();
    assert_eq!(messages(&p.b), ["from before the crash", "new"]);
}

#[test]
fn unacknowledged_messages_of_an_earlier_run_fail_when_their_peer_never_comes() {
    let mut s = Session::new(name("alice"), WINDOW);
    let t0 = Instant::now();
    let old = Message { id: "old".into(), text: "x".into(), sent_at_ms: 1, seq: 1 };
    s.restore_unacked(name("bob"), vec![old], t0);
    assert_eq!(s.unacknowledged(), 1, "status counts them");
    assert_eq!(s.poll_timeout(), Some(t0 + WINDOW));
    s.handle_timeout(t0 + WINDOW);
    let mut side = Side::default();
    Pair::drain(&mut s, &mut side);
    assert_eq!(failed(&side), ["old"]);
    assert!(side.stored.contains(&Record::State {
        peer: name("bob"),
        id: "old".into(),
        state: MessageState::Failed
    }));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_link_lost_while_closing_ends_the_conversation() {
    let mut p = Pair::connected();
    p.send(true, "unacked");
    p.alice.disconnect(p.now).expect("connected");
    Pair::drain(&mut p.alice, &mut p.a);
    p.a.outbound.clear();
    p.cut("reset");
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(failed(&p.a).len(), 1);
}

#[test]
fn end_of_stream_without_goodbye_is_a_lost_link() {
    let mut p = Pair::connected();
    let link = p.b_link.expect("linked");
    p.bob.handle_link_down(link, LinkDown::EndOfStream, p.now);
    p.drive();
    assert_eq!(link_lost(&p.b), ["the stream ended without a goodbye"]);
    assert_eq!(p.bob.phase(), Phase::Reconnecting);
    // The callee does not redial: it waits the resume window, then ends.
    assert_eq!(p.advance_to_next_timer(), WINDOW);
    assert!(p.b.redials.is_empty());
    assert_eq!(p.bob.phase(), Phase::Idle);
}

#[test]
fn an_unanswered_goodbye_times_out() {
    let mut p = Pair::connected();
    p.send(true, "never acked");
    let said_at = p.now;
    p.alice.disconnect(p.now).expect("connected");
    // The wire is dead: nothing reaches bob.
    Pair::drain(&mut p.alice, &mut p.a);
    p.a.outbound.clear();
    p.nothing_happens_before(said_at + CLOSE_TIMEOUT);
    assert_eq!(p.alice.phase(), Phase::Closing);
    assert!(!p.a.dropped);
    p.advance_to_next_timer();
    assert_eq!(p.now, said_at + CLOSE_TIMEOUT);
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert!(p.a.dropped);
    assert_eq!(failed(&p.a).len(), 1);
    assert_eq!(disconnected(&p.a), ["the goodbye was not answered in time"]);
    // Bob heard nothing and still thinks the conversation is on.
    assert_eq!(p.bob.phase(), Phase::Connected);
}

#[test]
fn an_answered_goodbye_leaves_no_timer() {
    let mut p = Pair::connected();
    p.alice.disconnect(p.now).expect("connected");
    p.drive();
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(p.alice.poll_timeout(), None);
    assert_eq!(p.bob.poll_timeout(), None);
}

#[test]
fn events_of_an_old_link_are_ignored() {
    let mut p = Pair::connected();
    let old = p.a_link.expect("had a link");
    p.cut("reset");
    p.redial_succeeds();
    p.alice.handle_link_down(old, LinkDown::Error("late".into()), p.now);
    p.alice.handle_frame(
        old,
        Frame::Message(Message { id: "x".into(), text: "ghost".into(), sent_at_ms: 0, seq: 1 }),
        p.now,
    );
    assert_eq!(p.alice.phase(), Phase::Connected);
    Pair::drain(&mut p.alice, &mut p.a);
    assert_eq!(messages(&p.a), Vec::<String>::new());
}

#[test]
fn undisplayed_memory_is_bounded() {
    let mut p = Pair::connected();
    let big = "x".repeat(crate::MAX_TEXT_BYTES);
    for _ in 0..(MAX_UNDISPLAYED_BYTES / crate::MAX_TEXT_BYTES + 10) {
        p.send(true, &big);
        p.drive();
    }
    let kept: usize = p.bob.undisplayed().map(|(_, m)| m.text.len()).sum();
    assert!(kept <= MAX_UNDISPLAYED_BYTES);
    assert!(kept > MAX_UNDISPLAYED_BYTES - 2 * crate::MAX_TEXT_BYTES);
    // Those let go are counted for the next display client, once.
    let sent = MAX_UNDISPLAYED_BYTES / crate::MAX_TEXT_BYTES + 10;
    let let_go = sent - p.bob.undisplayed().count();
    assert!(let_go >= 10, "{let_go}");
    assert_eq!(p.bob.attach_display(), [(Some(name("alice")), let_go)]);
    assert_eq!(p.bob.attach_display(), []);
    // With a display client attached, what it was sent is not news when
    // it is let go before the client reports it shown.
    p.bob.set_display_attached(true);
    for _ in 0..10 {
        p.send(true, &big);
        p.drive();
    }
    assert_eq!(p.bob.attach_display(), []);
    // Unless that client was dropped unread: then they count again.
    p.bob.display_dropped_unread();
    p.bob.set_display_attached(false);
    for _ in 0..3 {
        p.send(true, &big);
        p.drive();
    }
    assert_eq!(p.bob.attach_display(), [(Some(name("alice")), 3)]);
}

#[test]
fn senders_of_messages_let_go_are_counted_within_a_bound() {
    let mut bob = Session::new(name("bob"), WINDOW);
    let text = "x".repeat(MAX_UNDISPLAYED_BYTES / 4);
    for i in 0..(MAX_LET_GO_SENDERS + 10) {
        let message = Message {
            id: format!("m{i}").into(),
            text: text.as_str().into(),
            sent_at_ms: 0,
            seq: 1,
        };
        bob.restore_undisplayed(name(&format!("p{i}")), message);
    }
    let let_go = bob.attach_display();
    assert_eq!(let_go.len(), MAX_LET_GO_SENDERS + 1, "{let_go:?}");
    assert_eq!(let_go[0], (Some(name("p0")), 1));
    let others = let_go.iter().find(|(from, _)| from.is_none()).map(|(_, n)| *n);
    // Four fit in the cap; the other 70 were let go, 64 of them by name.
    assert_eq!(bob.undisplayed().count(), 4);
    assert_eq!(others, Some(6));
}

#[test]
fn ping_is_answered_with_pong() {
    let mut p = Pair::connected();
    p.alice.ping(42).expect("connected");
    p.drive();
    assert!(p.a.events.contains(&Event::Pong { nonce: 42 }));
}

#[test]
fn shutdown_says_goodbye() {
    let mut p = Pair::connected();
    p.bob.shutdown(p.now);
    p.drive();
    assert_eq!(disconnected(&p.a), ["Bob ended the conversation"]);
    assert_eq!(p.bob.phase(), Phase::Idle);
}

#[test]
fn messages_restored_from_an_earlier_run_wait_for_a_display_client() {
    let mut p = Pair::connected();
    let old = Message { id: "old".into(), text: "from before".into(), sent_at_ms: 1, seq: 0 };
    p.bob.restore_undisplayed(name("alice"), old);
    p.send(true, "new");
    p.drive();
    let waiting: Vec<_> = p.bob.undisplayed().map(|(_, m)| m.text.to_string()).collect();
    assert_eq!(waiting, ["from before", "new"]);
    p.bob.handle_displayed(&["old".into()]);
    p.drive();
    // Stored as displayed; alice, who does not know that id in this run,
    // ignores the receipt.
    assert!(p.b.stored.contains(&Record::State {
        peer: name("alice"),
        id: "old".into(),
        state: MessageState::Displayed
    }));
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), Vec::<String>::new());
}

#[test]
fn the_callee_welcomes_before_it_sends_anything_again() {
    let mut p = Pair::connected();
    p.send(false, "from bob, lost");
    Pair::drain(&mut p.bob, &mut p.b);
    p.cut("reset");
    let link = p.bob.handle_hello(name("alice"), DialKind::Fresh).expect("bob takes alice back");
    let mut on_link = Vec::new();
    while let Some(action) = p.bob.poll_action() {
        if let Action::Transmit { link: l, frame } = action
            && l == link
        {
            on_link.push(frame);
        }
    }
    match &on_link[..] {
        [Frame::Welcome { name }, Frame::Message(m)] => {
            assert_eq!(name.as_str(), "Bob");
            assert_eq!(&*m.text, "from bob, lost");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_welcome_inside_the_conversation_ends_the_link() {
    let mut p = Pair::connected();
    let link = p.a_link.expect("linked");
    p.alice.handle_frame(link, Frame::Welcome { name: name("Bob") }, p.now);
    Pair::drain(&mut p.alice, &mut p.a);
    assert!(p.a.dropped, "the link is hung up");
    assert_eq!(link_lost(&p.a), ["unexpected welcome"]);
    // Like any lost link: the dialer redials to resume.
    assert_eq!(p.alice.phase(), Phase::Reconnecting);
    assert_eq!(p.a.redials.len(), 1);
}

/// Bob, accepting alice, with everything so far polled.
fn callee() -> (Session, LinkId) {
    let mut bob = Session::new(name("Bob"), WINDOW);
    let link = bob.handle_hello(name("alice"), DialKind::Fresh).expect("bob is free");
    while bob.poll_action().is_some() {}
    (bob, link)
}

fn message(n: usize) -> Frame {
    Frame::Message(Message {
        id: format!("m{n}").into(),
        text: "x".into(),
        sent_at_ms: 0,
        seq: n as u64,
    })
}

fn ids(range: std::ops::Range<usize>) -> Vec<Id> {
    range.map(|n| Id::from(format!("m{n}"))).collect()
}

/// Everything the session does now, in order.
fn poll_all(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn frames(actions: &[Action]) -> Vec<&Frame> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transmit { frame, .. } => Some(frame),
            _ => None,
        })
        .collect()
}

#[test]
fn a_burst_of_messages_is_acknowledged_with_one_frame_after_all_are_stored() {
    let (mut bob, link) = callee();
    for n in 1..=50 {
        bob.handle_frame(link, message(n), Instant::now());
    }
    let actions = poll_all(&mut bob);
    assert_eq!(
        frames(&actions),
        [&Frame::Receipt { ids: ids(1..51), kind: ReceiptKind::Delivered }]
    );
    let receipt = actions.iter().position(|a| matches!(a, Action::Transmit { .. }));
    let last_store = actions.iter().rposition(|a| matches!(a, Action::Persist(_)));
    assert!(last_store < receipt, "acknowledged before stored: {actions:?}");
    // The local actions keep their order: 50 stores and 50 events.
    let events = actions.iter().filter(|a| matches!(a, Action::Emit(_))).count();
    assert_eq!(events, 50);
}

#[test]
fn a_message_between_receipts_breaks_the_row() {
    let (mut bob, link) = callee();
    bob.handle_frame(link, message(1), Instant::now());
    bob.send("r1".into(), "reply".into(), 0).expect("connected");
    bob.handle_frame(link, message(2), Instant::now());
    bob.handle_frame(link, message(3), Instant::now());
    let actions = poll_all(&mut bob);
    match &frames(&actions)[..] {
        [
            Frame::Receipt { ids: first, kind: ReceiptKind::Delivered },
            Frame::Message(reply),
            Frame::Receipt { ids: rest, kind: ReceiptKind::Delivered },
        ] => {
            assert_eq!(*first, ids(1..2));
            assert_eq!(&*reply.text, "reply");
            assert_eq!(*rest, ids(2..4));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_receipt_already_polled_is_not_added_to() {
    let (mut bob, link) = callee();
    bob.handle_frame(link, message(1), Instant::now());
    let first = poll_all(&mut bob);
    bob.handle_frame(link, message(2), Instant::now());
    bob.handle_frame(link, message(3), Instant::now());
    let second = poll_all(&mut bob);
    assert_eq!(frames(&first), [&Frame::Receipt { ids: ids(1..2), kind: ReceiptKind::Delivered }]);
    assert_eq!(frames(&second), [&Frame::Receipt { ids: ids(2..4), kind: ReceiptKind::Delivered }]);
}

#[test]
fn receipts_are_split_at_the_most_one_frame_may_carry() {
    let (mut bob, link) = callee();
    let n = MAX_RECEIPT_IDS + 10;
    for i in 1..=n {
        bob.handle_frame(link, message(i), Instant::now());
    }
    let actions = poll_all(&mut bob);
    assert_eq!(
        frames(&actions),
        [
            &Frame::Receipt { ids: ids(1..MAX_RECEIPT_IDS + 1), kind: ReceiptKind::Delivered },
            &Frame::Receipt { ids: ids(MAX_RECEIPT_IDS + 1..n + 1), kind: ReceiptKind::Delivered },
        ]
    );
    // One big receipt (all shown at once) is split the same way.
    bob.handle_displayed(&ids(1..n + 1));
    let actions = poll_all(&mut bob);
    assert_eq!(
        frames(&actions),
        [
            &Frame::Receipt { ids: ids(1..MAX_RECEIPT_IDS + 1), kind: ReceiptKind::Displayed },
            &Frame::Receipt { ids: ids(MAX_RECEIPT_IDS + 1..n + 1), kind: ReceiptKind::Displayed },
        ]
    );
}

#[test]
fn receipts_of_another_kind_are_not_merged() {
    let (mut bob, link) = callee();
    bob.handle_frame(link, message(1), Instant::now());
    bob.handle_displayed(&ids(1..2));
    bob.handle_frame(link, message(2), Instant::now());
    let actions = poll_all(&mut bob);
    assert_eq!(
        frames(&actions),
        [
            &Frame::Receipt { ids: ids(1..2), kind: ReceiptKind::Delivered },
            &Frame::Receipt { ids: ids(1..2), kind: ReceiptKind::Displayed },
            &Frame::Receipt { ids: ids(2..3), kind: ReceiptKind::Delivered },
        ]
    );
}

#[test]
fn a_kept_failure_is_cut_at_a_character_boundary() {
    assert_eq!(bounded("héllo", 2), "h");
    assert_eq!(bounded("héllo", 3), "hé");
    assert_eq!(bounded("short", 200), "short");
}

/// A message whose receipt was lost with the link, and which its sender
/// then reported failed (the window passed), is delivered after all when
/// the two talk again: a conversation that ended without a clean goodbye
/// leaves the receiver owing `delivered` for the newest ids it had.
#[test]
fn a_message_failed_for_want_of_its_receipt_is_delivered_when_they_talk_again() {
    let mut p = Pair::connected();
    let id = p.send(true, "did it arrive?");
    p.bob_takes_one_frame();
    assert_eq!(messages(&p.b), ["did it arrive?"]);
    p.cut("cable pulled");
    for _ in 0..100 {
        if p.alice.phase() == Phase::Idle && p.bob.phase() == Phase::Idle {
            break;
        }
        p.advance_to_next_timer();
    }
    assert_eq!(failed(&p.a), [id.as_str()]);
    assert!(receipts(&p.a, ReceiptKind::Delivered).is_empty());

    p.alice_dials_and_bob_accepts();
    assert_eq!(receipts(&p.a, ReceiptKind::Delivered), [id.as_str()]);
    let delivered =
        Record::State { peer: name("Bob"), id: id.as_str().into(), state: MessageState::Delivered };
    assert_eq!(p.a.stored.last(), Some(&delivered));
    // Once: bob owes the same receipts again after every end (he cannot
    // know that alice read them), and alice takes them as nothing new.
    let before = p.a.events.len();
    let stored_before = p.a.stored.len();
    p.alice.disconnect(p.now).expect("connected");
    p.drive();
    assert_eq!((p.alice.phase(), p.bob.phase()), (Phase::Idle, Phase::Idle));
    p.reconnect();
    let receipts_since =
        p.a.events[before..].iter().filter(|e| matches!(e, Event::Receipt { .. })).count();
    assert_eq!(receipts_since, 0, "{:?}", &p.a.events[before..]);
    assert!(
        !p.a.stored[stored_before..].iter().any(|r| matches!(r, Record::State { .. })),
        "{:?}",
        &p.a.stored[stored_before..]
    );
    let receipts_sent =
        p.b.log
            .iter()
            .filter(|l| l.starts_with("transmit Receipt") && l.contains(id.as_str()))
            .count();
    // On the link that was cut, then at the start of each conversation.
    assert_eq!(receipts_sent, 3, "{:?}", p.b.log);
}

/// Only the peer a failed message went to may say it had it after all;
/// a `displayed` receipt, late, implies `delivered` and says so first.
#[test]
fn a_late_receipt_is_believed_only_from_the_failed_messages_peer() {
    let t0 = Instant::now();
    let old = || Message { id: "old".into(), text: "x".into(), sent_at_ms: 1, seq: 1 };
    let late = |kind| Frame::Receipt { ids: vec!["old".into()], kind };
    for (from, believed) in [("carol", false), ("bob", true)] {
        let mut s = Session::new(name("alice"), WINDOW);
        s.restore_unacked(name("bob"), vec![old()], t0);
        s.handle_timeout(t0 + WINDOW);
        let mut side = Side::default();
        Pair::drain(&mut s, &mut side);
        assert_eq!(failed(&side), ["old"]);
        let link = s.handle_hello(name(from), DialKind::Fresh).expect("alice takes the dial");
        s.handle_frame(link, late(ReceiptKind::Displayed), t0 + WINDOW);
        s.handle_frame(link, late(ReceiptKind::Delivered), t0 + WINDOW);
        Pair::drain(&mut s, &mut side);
        let states: Vec<MessageState> = side
            .stored
            .iter()
            .filter_map(|r| match r {
                Record::State { id, state, .. } if id.as_ref() == "old" => Some(*state),
                _ => None,
            })
            .collect();
        if believed {
            assert_eq!(receipts(&side, ReceiptKind::Delivered), ["old"], "{from}");
            assert_eq!(receipts(&side, ReceiptKind::Displayed), ["old"], "{from}");
            let expected = [MessageState::Failed, MessageState::Delivered, MessageState::Displayed];
            assert_eq!(states, expected, "{from}");
        } else {
            assert!(receipts(&side, ReceiptKind::Delivered).is_empty(), "{from}");
            assert!(receipts(&side, ReceiptKind::Displayed).is_empty(), "{from}");
            assert_eq!(states, [MessageState::Failed], "{from}");
        }
    }
}
