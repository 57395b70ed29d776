//! The feed against an in-process fake directory: when the upstream stream
//! opens and closes, reconnecting, polling a directory without WatchPeers,
//! shutdown. (The diffing itself is tested in `known`, without sockets.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerchat::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::*;
use crate::fake_directory::{EventTx, Fake, directories};

/// Long enough for anything that should happen at once on a loaded
/// machine; only reached when a test fails.
const SOON: Duration = Duration::from_secs(10);

/// A running fake and a roster following it.
struct Setup {
    roster: Roster,
    shutdown: CancellationToken,
    streams: mpsc::UnboundedReceiver<EventTx>,
    listed: Arc<Mutex<Vec<pb::Peer>>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn setup(watch_peers: bool) -> Setup {
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let fake = Fake { streams: watch_peers.then_some(streams_tx), ..Fake::default() };
    let listed = fake.listed.clone();
    let (addr, server) = fake.serve().await;
    let shutdown = CancellationToken::new();
    let roster = Roster::new(directories(addr), Duration::from_millis(20), shutdown.clone())
        .with_resync_grace(Duration::from_millis(200));
    Setup { roster, shutdown, streams, listed, _server: server }
}

fn peer(name: &str, status: pb::PeerStatus) -> pb::Peer {
    pb::Peer {
        name: name.into(),
        address: "127.0.0.1:4000".into(),
        status: status as i32,
        public_key: vec![3; 32],
    }
}

fn available(name: &str) -> pb::Peer {
    peer(name, pb::PeerStatus::Available)
}

fn event(kind: pb::peer_event::Kind, peer: Option<pb::Peer>) -> Result<pb::PeerEvent, Status> {
    Ok(pb::PeerEvent { kind: kind as i32, peer })
}

async fn send_snapshot(stream: &EventTx, peers: &[pb::Peer]) {
    use pb::peer_event::Kind;
    stream.send(event(Kind::SnapshotBegin, None)).await.expect("begin");
    for p in peers {
        stream.send(event(Kind::Online, Some(p.clone()))).await.expect("online");
    }
    stream.send(event(Kind::SnapshotEnd, None)).await.expect("end");
}

impl Setup {
    /// The next WatchPeers stream the roster opens.
    async fn opened(&mut self) -> EventTx {
        tokio::time::timeout(SOON, self.streams.recv())
            .await
            .expect("the roster opened no WatchPeers stream")
            .expect("fake alive")
    }
}

async fn next(sub: &mut Subscription) -> Change {
    tokio::time::timeout(SOON, sub.next())
        .await
        .expect("no change in time")
        .expect("not lagged")
        .expect("feed running")
}

async fn closed(stream: &EventTx) {
    tokio::time::timeout(SOON, stream.closed())
        .await
        .expect("the roster kept its WatchPeers stream open");
}

#[tokio::test]
async fn the_feed_opens_with_the_first_subscriber_and_closes_with_the_last() {
    let mut s = setup(true).await;
    let mut first = s.roster.subscribe().expect("subscribe");
    let stream = s.opened().await;
    send_snapshot(&stream, &[available("alice")]).await;
    assert_eq!(&*first.synced(SOON).await.expect("synced"), [available("alice")]);

    // A second subscriber shares the stream and gets the list at once.
    let mut second = s.roster.subscribe().expect("subscribe");
    assert_eq!(&*second.synced(Duration::ZERO).await.expect("known"), [available("alice")]);
    stream.send(event(pb::peer_event::Kind::Online, Some(available("bob")))).await.expect("bob");
    assert_eq!(next(&mut first).await, Change::Online(available("bob")));
    assert_eq!(next(&mut second).await, Change::Online(available("bob")));
    assert!(s.streams.try_recv().is_err(), "one stream for both");

    drop(first);
    stream
        .send(event(pb::peer_event::Kind::Online, Some(peer("bob", pb::PeerStatus::Busy))))
        .await
        .expect("the stream stays while one subscriber is left");
    assert_eq!(next(&mut second).await, Change::Changed(peer("bob", pb::PeerStatus::Busy)));
    drop(second);
    closed(&stream).await;

    // The next subscriber starts over: a new stream, a new baseline.
    let mut again = s.roster.subscribe().expect("subscribe");
    let stream = s.opened().await;
    send_snapshot(&stream, &[available("carol")]).await;
    assert_eq!(&*again.synced(SOON).await.expect("synced"), [available("carol")]);
}

#[tokio::test]
async fn after_a_break_the_fresh_snapshot_tells_only_what_changed() {
    let mut s = setup(true).await;
    let mut sub = s.roster.subscribe().expect("subscribe");
    let stream = s.opened().await;
    send_snapshot(&stream, &[available("alice"), available("bob")]).await;
    sub.synced(SOON).await.expect("synced");

    // The directory goes away mid-snapshot; the roster reconnects.
    stream.send(event(pb::peer_event::Kind::SnapshotBegin, None)).await.expect("begin");
    drop(stream);
    let stream = s.opened().await;
    send_snapshot(&stream, &[peer("alice", pb::PeerStatus::Busy), available("carol")]).await;
    assert_eq!(next(&mut sub).await, Change::Changed(peer("alice", pb::PeerStatus::Busy)));
    assert_eq!(next(&mut sub).await, Change::Online(available("carol")));
    // Bob, missing from the fresh snapshot, is told offline once the grace
    // (here 200 ms) passes without him listed again: the feed's own timer.
    assert_eq!(next(&mut sub).await, Change::Offline("bob".into()));
}

/// A page longer than asked for is read only as far as asked: a directory
/// cannot make a polled roster hold more than it meant to.
#[tokio::test]
async fn a_polled_page_longer_than_asked_for_is_cut() {
    let s = setup(false).await;
    let many: Vec<pb::Peer> = (0..1500).map(|i| available(&format!("p{i:04}"))).collect();
    *s.listed.lock().expect("lock") = many;
    let mut sub = s.roster.subscribe().expect("subscribe");
    let listed = sub.synced(SOON).await.expect("synced");
    assert_eq!(listed.len(), feed::PAGE_SIZE as usize, "only the page asked for");
}

#[tokio::test]
async fn a_directory_without_watch_peers_is_polled_for_the_same_changes() {
    let s = setup(false).await;
    s.listed.lock().expect("lock").push(available("alice"));
    let mut sub = s.roster.subscribe().expect("subscribe");
    assert_eq!(&*sub.synced(SOON).await.expect("synced"), [available("alice")]);
    s.listed.lock().expect("lock").push(available("bob"));
    assert_eq!(next(&mut sub).await, Change::Online(available("bob")));
    s.listed.lock().expect("lock").remove(0);
    assert_eq!(next(&mut sub).await, Change::Offline("alice".into()));
}

#[tokio::test]
async fn shutdown_ends_the_feed_and_every_subscription() {
    let mut s = setup(true).await;
    let mut sub = s.roster.subscribe().expect("subscribe");
    let stream = s.opened().await;
    send_snapshot(&stream, &[]).await;
    sub.synced(SOON).await.expect("synced");
    s.shutdown.cancel();
    let end = tokio::time::timeout(SOON, sub.next()).await.expect("the subscription ended");
    assert_eq!(end, Ok(None));
    closed(&stream).await;
    assert_eq!(s.roster.subscribe().err(), Some(ShuttingDown));
}

#[tokio::test]
async fn an_unreachable_directory_is_reported_to_whoever_waits_for_the_list() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let roster = Roster::new(directories(port), POLL_INTERVAL, CancellationToken::new());
    let mut sub = roster.subscribe().expect("subscribe");
    let outcome = sub.synced(SOON).await;
    assert!(outcome.is_err(), "nobody listens at {port}: {outcome:?}");
}
