//! Protocol stories told with a deterministic two-party harness, in the
//! style of quinn-proto's `Pair`: two sessions joined by an in-memory
//! "wire", no sockets, no clock but the one the test moves.

use super::*;

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
            alice: Session::new(name("alice")),
            bob: Session::new(name("Bob")),
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
        s.send(id.clone(), text.to_owned(), 0).expect("send");
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
                    self.bob.handle_link_down(link, LinkDown::EndOfStream);
                }
                moved = true;
            }
            if self.b.closed_send && self.b.outbound.is_empty() && !self.a_eof {
                self.a_eof = true;
                if let Some(link) = self.a_link {
                    self.alice.handle_link_down(link, LinkDown::EndOfStream);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    fn cut(&mut self, reason: &str) {
        self.a.outbound.clear();
        self.b.outbound.clear();
        if let Some(l) = self.a_link {
            self.alice.handle_link_down(l, LinkDown::Error(reason.into()));
        }
        if let Some(l) = self.b_link {
            self.bob.handle_link_down(l, LinkDown::Error(reason.into()));
        }
        self.drive();
    }
}

fn messages(side: &Side) -> Vec<String> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message.text.clone()),
            _ => None,
        })
        .collect()
}

fn receipts(side: &Side, kind: ReceiptKind) -> Vec<String> {
    side.events
        .iter()
        .filter_map(|e| match e {
            Event::Receipt { id, kind: k, .. } if *k == kind => Some(id.clone()),
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
            Event::Failed { id, .. } => Some(id.clone()),
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
    let mut lone = Session::new(name("dave"));
    let err = lone.send("x".into(), "hi".into(), 0).expect_err("no conversation");
    assert!(err.to_string().contains("not connected"));
    assert!(lone.disconnect(p.now).expect_err("none").to_string().contains("not connected"));
    let err = p.alice.send("x".into(), String::new(), 0).expect_err("empty");
    assert!(err.to_string().contains("empty"));
    p.drive();
}

#[test]
fn a_dialing_session_is_busy_too_and_can_be_cancelled() {
    let mut s = Session::new(name("alice"));
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
    let mut s = Session::new(name("alice"));
    let link = s.connect(name("bob")).expect("dial");
    s.handle_dial_failed(link);
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
        id,
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
    let waiting: Vec<_> = p.bob.undisplayed().map(|(_, m)| m.text.clone()).collect();
    assert_eq!(waiting, ["one", "two"]);
    p.bob.handle_displayed(std::slice::from_ref(&first));
    p.drive();
    assert_eq!(receipts(&p.a, ReceiptKind::Displayed), std::slice::from_ref(&first));
    // Showing it again does not send a second receipt.
    p.bob.handle_displayed(&[first.clone(), second.clone()]);
    p.bob.handle_displayed(&[first, second.clone()]);
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

#[test]
fn a_lost_link_fails_every_unacknowledged_message() {
    let mut p = Pair::connected();
    let delivered = p.send(true, "made it");
    p.drive();
    let lost1 = p.send(true, "lost 1");
    let lost2 = p.send(true, "lost 2");
    assert_eq!(p.alice.unacknowledged(), 2);
    p.cut("connection reset");
    assert_eq!(failed(&p.a), [lost1, lost2]);
    assert!(!failed(&p.a).contains(&delivered));
    assert_eq!(disconnected(&p.a), ["link lost: connection reset"]);
    assert_eq!(disconnected(&p.b), ["link lost: connection reset"]);
    assert_eq!(p.alice.phase(), Phase::Idle);
    let failed_stored =
        p.a.stored
            .iter()
            .filter(|r| matches!(r, Record::State { state: MessageState::Failed, .. }))
            .count();
    assert_eq!(failed_stored, 2);
}

#[test]
fn end_of_stream_without_goodbye_is_a_lost_link() {
    let mut p = Pair::connected();
    let link = p.b_link.expect("linked");
    p.bob.handle_link_down(link, LinkDown::EndOfStream);
    p.drive();
    assert_eq!(disconnected(&p.b), ["link lost: the stream ended without a goodbye"]);
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
    p.cut("reset");
    let old = p.a_link.expect("had a link");
    let new = p.alice.connect(name("bob")).expect("free again");
    p.alice.handle_dialed(new, name("bob"));
    p.alice.handle_link_down(old, LinkDown::Error("late".into()));
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
    let waiting: Vec<_> = p.bob.undisplayed().map(|(_, m)| m.text.clone()).collect();
    assert_eq!(waiting, ["from before", "new"]);
    p.bob.handle_displayed(&["old".to_owned()]);
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
