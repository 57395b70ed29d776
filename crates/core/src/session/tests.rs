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
        let a_link = p.alice.connect(name("bob")).expect("alice may dial");
        let b_link = p.bob.handle_hello(name("alice")).expect("bob is free");
        p.alice.handle_dialed(a_link, name("Bob"));
        p.a_link = Some(a_link);
        p.b_link = Some(b_link);
        p.drive();
        p
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
                Action::DropLink { .. } => side.dropped = true,
                Action::Redial { link, .. } => side.redials.push(link),
                Action::Persist(r) => {
                    side.log.push(format!("persist {r:?}"));
                    side.stored.push(r);
                }
                Action::Emit(e) => side.events.push(e),
                Action::Presence(p) => side.presence.push(p),
            }
        }
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
        let b_link = self.bob.handle_hello(name("alice")).expect("bob takes alice back");
        self.a_link = Some(link);
        self.b_link = Some(b_link);
        self.alice.handle_dialed(link, name("Bob"));
        self.drive();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.alice.handle_timeout(self.now);
        self.bob.handle_timeout(self.now);
        self.drive();
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
    let busy = p.bob.handle_hello(name("carol")).expect_err("bob is in a conversation");
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
    assert!(matches!(s.handle_hello(name("carol")), Err(AcceptError::Busy { .. })));
    assert_eq!(s.disconnect(Instant::now()), Ok(name("bob")));
    assert_eq!(s.phase(), Phase::Idle);
    // The dial completing late is hung up, not adopted.
    s.poll_action();
    s.handle_dialed(link, name("bob"));
    assert_eq!(s.poll_action(), Some(Action::DropLink { link }));
    assert_eq!(s.phase(), Phase::Idle);
}

#[test]
fn a_failed_dial_leaves_the_session_free() {
    let mut s = Session::new(name("alice"), WINDOW);
    let link = s.connect(name("bob")).expect("dial");
    s.handle_dial_failed(link, Instant::now());
    assert_eq!(s.phase(), Phase::Idle);
    assert!(s.connect(name("carol")).is_ok());
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
    assert!(p.bob.handle_hello(name("dave")).is_ok());
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
    assert_eq!(link_lost(&p.a), ["link lost: connection reset"]);
    assert_eq!(link_lost(&p.b), ["link lost: connection reset"]);
    assert_eq!(p.alice.phase(), Phase::Reconnecting);
    assert_eq!(p.bob.phase(), Phase::Reconnecting);
    assert!(disconnected(&p.a).is_empty() && failed(&p.a).is_empty());
    // Still busy to others, and the dialer redials at once; the callee waits.
    assert!(matches!(p.bob.handle_hello(name("carol")), Err(AcceptError::Busy { .. })));
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
    let first = *p.a.redials.last().expect("redial");
    p.alice.handle_dial_failed(first, p.now);
    p.drive();
    assert_eq!(p.a.redials.len(), 1, "not again at once");
    p.advance(REDIAL_INITIAL);
    assert_eq!(p.a.redials.len(), 2, "again after the backoff");
    let second = *p.a.redials.last().expect("redial");
    p.alice.handle_dial_failed(second, p.now);
    p.advance(REDIAL_INITIAL);
    assert_eq!(p.a.redials.len(), 2, "the backoff doubled");
    p.advance(REDIAL_INITIAL);
    assert_eq!(p.a.redials.len(), 3);

    p.advance(WINDOW);
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert_eq!(p.bob.phase(), Phase::Idle);
    assert_eq!(failed(&p.a), [lost]);
    let reason = &disconnected(&p.a)[0];
    assert!(reason.contains("link lost") && reason.contains("30s"), "{reason}");
    assert_eq!(disconnected(&p.b).len(), 1);
    assert_eq!(p.a.presence.last(), Some(&Presence::Available));
    assert!(p.a.dropped, "the redial in progress is dropped");
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

#[test]
fn a_restarted_receiver_recognises_what_it_already_has() {
    let mut p = Pair::connected();
    p.send(true, "one");
    Pair::drain(&mut p.alice, &mut p.a);
    let frame = p.a.outbound.pop_front().expect("on the wire");
    p.bob.handle_frame(p.b_link.expect("linked"), frame, p.now);
    Pair::drain(&mut p.bob, &mut p.b);
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

#[test]
fn unacknowledged_messages_of_an_earlier_run_go_out_with_the_next_conversation() {
    let mut p = Pair::new();
    let old =
        Message { id: "old".into(), text: "from before the crash".into(), sent_at_ms: 1, seq: 7 };
    p.alice.restore_unacked(name("bob"), vec![old], p.now);
    let a_link = p.alice.connect(name("bob")).expect("dial");
    let b_link = p.bob.handle_hello(name("alice")).expect("accept");
    p.alice.handle_dialed(a_link, name("Bob"));
    p.a_link = Some(a_link);
    p.b_link = Some(b_link);
    p.drive();
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
    assert_eq!(link_lost(&p.b), ["link lost: the stream ended without a goodbye"]);
    assert_eq!(p.bob.phase(), Phase::Reconnecting);
}

#[test]
fn an_unanswered_goodbye_times_out() {
    let mut p = Pair::connected();
    p.send(true, "never acked");
    p.alice.disconnect(p.now).expect("connected");
    // The wire is dead: nothing reaches bob.
    Pair::drain(&mut p.alice, &mut p.a);
    let deadline = p.alice.poll_timeout().expect("closing has a deadline");
    p.alice.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(p.alice.phase(), Phase::Closing);
    p.alice.handle_timeout(deadline);
    Pair::drain(&mut p.alice, &mut p.a);
    assert_eq!(p.alice.phase(), Phase::Idle);
    assert!(p.a.dropped);
    assert_eq!(failed(&p.a).len(), 1);
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
