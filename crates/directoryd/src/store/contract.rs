//! The store contract: one suite, run against the embedded store and
//! against the Redis store on a real 6-node cluster (skipped, saying so,
//! where redis-server is not installed, unless PEERCHAT_REDIS_REQUIRED=1).
//! What a peer sees must not depend on which store the directory has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peerchat_core::Name;
use peerchat_redis_cluster::{Cluster, Options};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::memory::MemoryStore;
use super::redis::{RedisOptions, RedisStore};
use super::{Renewed, Store, StoreError};
use crate::bindings::BindingStore;
use crate::model::{Change, Claim, Presence, PublicKey, Refusal, Source};
use crate::redis_layout::{bucket_key, bucket_of};

/// Short, for the cases about expiry.
const TTL: Duration = Duration::from_secs(2);
/// Long enough that nothing expires while a case registers many peers.
const LONG_TTL: Duration = Duration::from_secs(120);
const MAX_PER_SOURCE: usize = 5;
const KEY_A: PublicKey = [0xaa; 32];
const KEY_B: PublicKey = [0xbb; 32];

fn name(s: &str) -> Name {
    Name::parse(s).expect("a valid test name")
}

fn source(ip: &str) -> Source {
    Source::of(Some(format!("{ip}:1").parse().expect("a test address")))
}

fn claim(n: &str, key: PublicKey, lease: &str) -> Claim {
    Claim {
        name: name(n),
        address: "127.0.0.1:7400".to_owned(),
        presence: Presence::Available,
        public_key: key,
        lease_token: lease.to_owned(),
        source: source("10.0.0.1"),
        may_bind: true,
    }
}

fn refusal(result: Result<impl std::fmt::Debug, StoreError>) -> Refusal {
    match result {
        Err(StoreError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Polls `check` every 20 ms until it holds, for at most `within`.
async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {within:?}");
}

/// The next change on the feed (resyncs aside), within a few seconds.
async fn next_change(feed: &mut broadcast::Receiver<Change>) -> Change {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, feed.recv()).await {
            Ok(Ok(Change::Resync { .. })) => continue,
            Ok(Ok(change)) => return change,
            Ok(Err(err)) => panic!("the feed failed: {err}"),
            Err(_) => panic!("no change on the feed within 5 s"),
        }
    }
}

async fn registration_and_lookup(store: &dyn Store) {
    let registered = store.register(claim("Bob", KEY_A, "l1")).await.expect("bob registers");
    assert!(registered.new_binding);
    let bob = store.lookup(&name("BOB")).await.expect("bob is online");
    assert_eq!((bob.name.as_str(), bob.address.as_str()), ("Bob", "127.0.0.1:7400"));
    assert_eq!((bob.presence, bob.public_key), (Presence::Available, KEY_A));
    // Another key cannot take the name, in any case.
    let taken = refusal(store.register(claim("bOB", KEY_B, "l2")).await);
    assert_eq!(taken, Refusal::Taken { name: "bOB".into() });
    // The same key takes over a live name: the old lease is dead.
    let again = store.register(claim("bob", KEY_A, "l3")).await.expect("bob again");
    assert!(!again.new_binding);
    assert!(matches!(
        refusal(store.renew(&name("bob"), "l1", Some(Presence::Available)).await),
        Refusal::UnknownLease { .. }
    ));
    store.renew(&name("bob"), "l3", Some(Presence::Available)).await.expect("the new lease renews");
    assert!(matches!(refusal(store.lookup(&name("nobody")).await), Refusal::NotOnline { .. }));
}

async fn renewal_and_status(store: &dyn Store) {
    store.register(claim("carol", KEY_A, "c1")).await.expect("carol registers");
    assert!(matches!(
        refusal(store.renew(&name("carol"), "wrong", Some(Presence::Busy)).await),
        Refusal::UnknownLease { .. }
    ));
    assert!(matches!(
        refusal(store.renew(&name("dave"), "c1", Some(Presence::Busy)).await),
        Refusal::UnknownLease { .. }
    ));
    let busy = store.renew(&name("Carol"), "c1", Some(Presence::Busy)).await.expect("busy");
    assert_eq!(busy, Renewed { presence: Presence::Busy, changed: true });
    assert_eq!(store.lookup(&name("carol")).await.expect("carol").presence, Presence::Busy);
    let page = store.list(None, 10).await.expect("a page");
    assert_eq!(page.peers.len(), 1);
    assert_eq!(page.peers[0].presence, Presence::Busy);
    let again = store.renew(&name("carol"), "c1", Some(Presence::Busy)).await.expect("again");
    assert_eq!(again, Renewed { presence: Presence::Busy, changed: false });
    // `None` renews and keeps what is listed, whatever the caller wanted.
    let kept = store.renew(&name("carol"), "c1", None).await.expect("kept");
    assert_eq!(kept, Renewed { presence: Presence::Busy, changed: false });
    assert_eq!(store.lookup(&name("carol")).await.expect("carol").presence, Presence::Busy);
    assert!(matches!(
        refusal(store.renew(&name("carol"), "wrong", None).await),
        Refusal::UnknownLease { .. }
    ));
}

async fn a_claim_that_may_not_bind_takes_only_an_owned_name(store: &dyn Store) {
    let no_new =
        |n: &str, key: PublicKey, lease: &str| Claim { may_bind: false, ..claim(n, key, lease) };
    let refused = refusal(store.register(no_new("kim", KEY_A, "k1")).await);
    assert!(matches!(refused, Refusal::NewNames { .. }), "{refused:?}");
    assert!(refused.to_string().contains("new names"), "{refused}");
    assert!(store.lookup(&name("kim")).await.is_err(), "nothing registered");
    // Nothing was bound either: any key may still claim it.
    let bound = store.register(claim("kim", KEY_B, "k2")).await.expect("kim is bound now");
    assert!(bound.new_binding);
    // Its owner takes it again without a new binding; others hear `taken`.
    let again = store.register(no_new("KIM", KEY_B, "k3")).await.expect("kim's key");
    assert!(!again.new_binding);
    let taken = refusal(store.register(no_new("kim", KEY_A, "k4")).await);
    assert!(matches!(taken, Refusal::Taken { .. }), "{taken:?}");
}

async fn unregistering_keeps_the_binding(store: &dyn Store) {
    store.register(claim("erin", KEY_A, "e1")).await.expect("erin registers");
    assert!(matches!(
        refusal(store.unregister(&name("erin"), "other").await),
        Refusal::WrongLease { .. }
    ));
    assert!(store.lookup(&name("erin")).await.is_ok());
    store.unregister(&name("ERIN"), "e1").await.expect("erin unregisters");
    store.unregister(&name("erin"), "e1").await.expect("again: idempotent");
    assert!(store.lookup(&name("erin")).await.is_err());
    assert!(store.list(None, 10).await.expect("a page").peers.is_empty());
    // Offline, the name still belongs to its key.
    let taken = refusal(store.register(claim("erin", KEY_B, "e2")).await);
    assert!(matches!(taken, Refusal::Taken { .. }));
    store.register(claim("erin", KEY_A, "e3")).await.expect("erin's key takes it back");
}

async fn leases_expire_at_their_ttl(store: &dyn Store) {
    let started = Instant::now();
    store.register(claim("frank", KEY_A, "f1")).await.expect("frank registers");
    assert!(store.lookup(&name("frank")).await.is_ok());
    // Frank and others fill their source's places.
    for i in 1..MAX_PER_SOURCE {
        store.register(claim(&format!("f{i}"), KEY_A, "x")).await.expect("within the cap");
    }
    eventually(TTL + Duration::from_secs(2), "frank expires", async || {
        store.lookup(&name("frank")).await.is_err()
    })
    .await;
    assert!(started.elapsed() >= TTL - Duration::from_millis(100), "{:?}", started.elapsed());
    // The others, registered a moment later, expire a moment later.
    eventually(TTL, "everyone expires", async || {
        store.list(None, 10).await.expect("a page").peers.is_empty()
    })
    .await;
    assert!(matches!(
        refusal(store.renew(&name("frank"), "f1", Some(Presence::Available)).await),
        Refusal::UnknownLease { .. }
    ));
    // Once swept, every expired registration gives its place back.
    store.sweep().await;
    for i in 0..MAX_PER_SOURCE {
        store.register(claim(&format!("g{i}"), KEY_A, "x")).await.expect("a place is free");
    }
}

async fn pages_cover_everyone_once_in_order(store: &dyn Store) {
    let total = 230;
    let mut expected = Vec::new();
    for i in (0..total).rev() {
        let n = if i % 2 == 0 { format!("Peer{i:04}") } else { format!("peer{i:04}") };
        let claim = Claim {
            source: source(&format!("10.1.{}.{}", i / 250, i % 250)),
            ..claim(&n, KEY_A, &n)
        };
        store.register(claim).await.expect("a peer registers");
        expected.push(format!("peer{i:04}"));
    }
    expected.sort();
    for limit in [1, 7, 100, 1000] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..=total {
            let page = store.list(after.as_deref(), limit).await.expect("a page");
            assert!(page.peers.len() <= limit);
            seen.extend(page.peers.iter().map(|p| p.name.to_ascii_lowercase()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "pages of {limit}");
    }
}

async fn nonces_are_spent_once(store: &dyn Store) {
    let nonce = [7u8; peerchat_core::identity::NONCE_LEN];
    store.issue_nonce(nonce, source("192.0.2.1")).await.expect("a nonce");
    assert!(store.consume_nonce(&nonce).await.expect("spent"));
    assert!(!store.consume_nonce(&nonce).await.expect("spent again"));
    assert!(!store.consume_nonce(&[8u8; 32]).await.expect("never issued"));
    assert!(!store.consume_nonce(&[1, 2, 3]).await.expect("wrong length"));
}

/// `store` holds at most 4 nonces.
async fn a_full_challenge_table_takes_from_the_heaviest_source(store: &dyn Store) {
    let flood = source("192.0.2.66");
    let host = source("192.0.2.7");
    let nonce = |i: u8| [i; peerchat_core::identity::NONCE_LEN];
    for i in 0..4 {
        store.issue_nonce(nonce(i), flood).await.expect("room for the first four");
    }
    store.issue_nonce(nonce(50), host).await.expect("a full table is not a refusal");
    for i in 4..10 {
        store.issue_nonce(nonce(i), flood).await.expect("a full table is not a refusal");
    }
    assert!(store.consume_nonce(&nonce(50)).await.expect("spending"), "the host's outlived it");
    for i in 0..7 {
        assert!(!store.consume_nonce(&nonce(i)).await.expect("spending"), "{i} was let go");
    }
    assert!(store.consume_nonce(&nonce(9)).await.expect("spending"), "the newest is kept");
}

async fn registrations_per_source_are_capped(store: &dyn Store) {
    for i in 0..MAX_PER_SOURCE {
        store.register(claim(&format!("s{i}"), KEY_A, "x")).await.expect("within the cap");
    }
    let over = refusal(store.register(claim("s-over", KEY_A, "x")).await);
    assert!(matches!(over, Refusal::TooManyFromSource { max: MAX_PER_SOURCE, .. }), "{over:?}");
    // Re-registering a name the source holds is free; unregistering frees a slot.
    store.register(claim("s0", KEY_A, "y")).await.expect("s0 again");
    store.unregister(&name("s1"), "x").await.expect("s1 leaves");
    store.register(claim("s-over", KEY_A, "x")).await.expect("room again");
}

async fn racing_keys_end_with_one_owner(store: Arc<dyn Store>) {
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let store = store.clone();
        let claim =
            Claim { source: source(&format!("10.9.0.{i}")), ..claim("grace", [i; 32], "g") };
        racers.spawn(async move { store.register(claim).await.map(|_| i) });
    }
    let mut winners = Vec::new();
    while let Some(result) = racers.join_next().await {
        match result.expect("a racer") {
            Ok(i) => winners.push(i),
            Err(StoreError::Refused(Refusal::Taken { .. })) => {}
            Err(other) => panic!("a racer failed: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let owner = store.lookup(&name("grace")).await.expect("grace is online");
    assert_eq!(owner.public_key, [winners[0]; 32]);
}

async fn the_feed_tells_every_change(store: &dyn Store) {
    let mut feed = store.changes();
    store.register(claim("heidi", KEY_A, "h1")).await.expect("heidi registers");
    let Change::Up(up) = next_change(&mut feed).await else { panic!("not up") };
    assert_eq!((up.name.as_str(), up.presence), ("heidi", Presence::Available));
    store.renew(&name("heidi"), "h1", Some(Presence::Available)).await.expect("no change");
    store.renew(&name("heidi"), "h1", None).await.expect("kept");
    store.renew(&name("heidi"), "h1", Some(Presence::Busy)).await.expect("busy");
    let Change::Up(busy) = next_change(&mut feed).await else { panic!("not up") };
    assert_eq!(busy.presence, Presence::Busy, "a renewal without a change says nothing");
    store.unregister(&name("heidi"), "h1").await.expect("heidi leaves");
    assert_eq!(next_change(&mut feed).await, Change::Down { name: "heidi".into() });
    store.register(claim("ivan", KEY_A, "i1")).await.expect("ivan registers");
    assert!(matches!(next_change(&mut feed).await, Change::Up(_)));
    // Expired: announced by the sweep.
    let deadline = Instant::now() + TTL + Duration::from_secs(3);
    loop {
        store.sweep().await;
        let change = tokio::time::timeout(Duration::from_millis(200), feed.recv()).await;
        if let Ok(Ok(Change::Down { name })) = change
            && name == "ivan"
        {
            break;
        }
        assert!(Instant::now() < deadline, "ivan's expiry was never announced");
    }
}

/// A registration that expired is listed by watchers until it is
/// announced gone. Released (by anyone: its lease is dead) before a sweep
/// found it, the release announces it, or nothing ever would.
async fn an_expired_registration_released_is_announced(store: &dyn Store) {
    store.register(claim("judy", KEY_A, "j1")).await.expect("judy registers");
    let mut feed = store.changes();
    eventually(TTL + Duration::from_secs(2), "judy expires", async || {
        store.lookup(&name("judy")).await.is_err()
    })
    .await;
    store.unregister(&name("judy"), "not judy's").await.expect("a dead lease is anyone's");
    assert_eq!(next_change(&mut feed).await, Change::Down { name: "judy".into() });
    store.sweep().await;
    store.register(claim("karl", KEY_A, "k1")).await.expect("karl registers");
    let next = next_change(&mut feed).await;
    assert!(matches!(&next, Change::Up(up) if up.name == "karl"), "judy went once: {next:?}");
}

/// A Register whose caller goes away mid-claim (a client's short
/// grpc-timeout) may or may not take effect; if it did, it was announced.
/// Polls `call` once, then drops it (unless it was done by then): a
/// caller that went away, as a reset gRPC request does.
async fn left_after_one_poll(call: impl Future) {
    tokio::select! {
        biased;
        _ = call => {}
        () = std::future::ready(()) => {}
    }
}

/// Waits until `name` is online (`true`) or not.
async fn until_online(store: &dyn Store, who: &str, online: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.lookup(&name(who)).await.is_ok() != online {
        assert!(Instant::now() < deadline, "{who} never became online={online}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_claim_or_release_left_midway_goes_on(store: &dyn Store) {
    let mut feed = store.changes();
    left_after_one_poll(store.register(claim("judy", KEY_A, "j1"))).await;
    until_online(store, "judy", true).await;
    let Change::Up(up) = next_change(&mut feed).await else { panic!("not up") };
    assert_eq!(up.name, "judy");
    // It counts against its source: judy and MAX_PER_SOURCE - 1 more fill
    // it. (A Redis claim counts a moment after its name is live: one more
    // name may get in meanwhile, and is taken out again.)
    for i in 1..MAX_PER_SOURCE {
        store.register(claim(&format!("j{i}"), KEY_A, "x")).await.expect("within the cap");
    }
    eventually(Duration::from_secs(5), "judy counts against her source", async || {
        match store.register(claim("j-over", KEY_A, "x")).await {
            Err(StoreError::Refused(Refusal::TooManyFromSource { .. })) => true,
            Ok(_) => {
                store.unregister(&name("j-over"), "x").await.expect("j-over leaves");
                false
            }
            Err(err) => panic!("{err}"),
        }
    })
    .await;
    // A release goes on too, and gives judy's place back (a moment after
    // her name is down, again).
    left_after_one_poll(store.unregister(&name("judy"), "j1")).await;
    until_online(store, "judy", false).await;
    eventually(Duration::from_secs(5), "judy's place is free", async || {
        store.register(claim("j-over", KEY_A, "x")).await.is_ok()
    })
    .await;
}

/// Makes a fresh, empty store for each case.
trait Fresh {
    async fn fresh_with(&mut self, ttl: Duration) -> Arc<dyn Store>;

    /// A fresh store holding at most `max` challenge nonces.
    async fn fresh_with_max_nonces(&mut self, max: usize) -> Arc<dyn Store>;

    async fn fresh(&mut self) -> Arc<dyn Store> {
        self.fresh_with(TTL).await
    }
}

async fn keeps_the_contract(stores: &mut impl Fresh) {
    registration_and_lookup(stores.fresh().await.as_ref()).await;
    renewal_and_status(stores.fresh().await.as_ref()).await;
    unregistering_keeps_the_binding(stores.fresh().await.as_ref()).await;
    a_claim_that_may_not_bind_takes_only_an_owned_name(stores.fresh().await.as_ref()).await;
    leases_expire_at_their_ttl(stores.fresh().await.as_ref()).await;
    pages_cover_everyone_once_in_order(stores.fresh_with(LONG_TTL).await.as_ref()).await;
    nonces_are_spent_once(stores.fresh().await.as_ref()).await;
    a_full_challenge_table_takes_from_the_heaviest_source(
        stores.fresh_with_max_nonces(4).await.as_ref(),
    )
    .await;
    registrations_per_source_are_capped(stores.fresh().await.as_ref()).await;
    racing_keys_end_with_one_owner(stores.fresh().await).await;
    the_feed_tells_every_change(stores.fresh().await.as_ref()).await;
    an_expired_registration_released_is_announced(stores.fresh().await.as_ref()).await;
    a_claim_or_release_left_midway_goes_on(stores.fresh().await.as_ref()).await;
}

struct Memory;

impl Fresh for Memory {
    async fn fresh_with(&mut self, ttl: Duration) -> Arc<dyn Store> {
        Arc::new(MemoryStore::new(BindingStore::in_memory(), ttl, MAX_PER_SOURCE))
    }

    async fn fresh_with_max_nonces(&mut self, max: usize) -> Arc<dyn Store> {
        Arc::new(
            MemoryStore::new(BindingStore::in_memory(), TTL, MAX_PER_SOURCE).with_max_nonces(max),
        )
    }
}

struct Redis {
    cluster: Cluster,
    /// Stops the previous case's store's tasks.
    stop: CancellationToken,
}

impl Fresh for Redis {
    async fn fresh_with(&mut self, ttl: Duration) -> Arc<dyn Store> {
        Arc::new(self.fresh_redis(ttl).await)
    }

    async fn fresh_with_max_nonces(&mut self, max: usize) -> Arc<dyn Store> {
        Arc::new(self.fresh_redis(TTL).await.with_max_nonces(max))
    }
}

impl Redis {
    async fn fresh_redis(&mut self, ttl: Duration) -> RedisStore {
        self.stop.cancel();
        self.stop = CancellationToken::new();
        for master in self.cluster.masters().expect("the masters") {
            self.cluster.cli(master, &["FLUSHALL"]).expect("flushing a master");
        }
        let options = RedisOptions { seeds: self.cluster.seeds() };
        let store = RedisStore::connect(&options, ttl, MAX_PER_SOURCE, &self.stop)
            .await
            .expect("the Redis store connects");
        let mut feed = store.changes();
        // The feed is live once it has subscribed (its first Resync).
        let subscribed = tokio::time::timeout(Duration::from_secs(10), feed.recv()).await;
        assert!(matches!(subscribed, Ok(Ok(Change::Resync { .. }))), "{subscribed:?}");
        store
    }
}

/// The first name `PREFIX<i>` (i from 1) of the Redis bucket `bucket`.
fn name_in_bucket(prefix: &str, bucket: usize) -> String {
    (1..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| bucket_of(n) == bucket)
        .expect("a name in the bucket")
}

/// A replica that answers nothing holds up the new names of its master's
/// buckets (they wait for it, then are refused as not durable), never the
/// other calls to that master: Redis answers nothing else on a connection
/// whose `WAIT` blocks, so the wait has a connection of its own.
async fn a_stalled_replica_holds_up_only_new_names(redis: &mut Redis) {
    let store = redis.fresh_redis(LONG_TTL).await;
    let bucket = bucket_of("steady");
    let new = name_in_bucket("new", bucket);
    store.register(claim("steady", KEY_A, "s1")).await.expect("steady registers");
    let key = bucket_key(bucket, "bind").expect("the bucket's key");
    let master = redis.cluster.master_for_key(&key).expect("the bucket's master");
    let replica = *redis.cluster.replicas_of(master).expect("its replicas").first().expect("one");
    redis.cluster.pause(replica).expect("pausing the replica");
    let registering = std::sync::atomic::AtomicBool::new(true);
    let register = async {
        let registered = store.register(claim(&new, KEY_B, "n1")).await;
        registering.store(false, std::sync::atomic::Ordering::Relaxed);
        registered
    };
    let heartbeats = async {
        // For as long as the new name waits (100 + 400 ms), and bounded.
        let until = Instant::now() + Duration::from_secs(5);
        let (mut slowest, mut beats) = (Duration::ZERO, 0);
        while registering.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
            let started = Instant::now();
            store.renew(&name("steady"), "s1", None).await?;
            slowest = slowest.max(started.elapsed());
            beats += 1;
        }
        Ok::<_, StoreError>((slowest, beats))
    };
    let started = Instant::now();
    let (registered, heartbeats) = tokio::join!(register, heartbeats);
    let waited = started.elapsed();
    redis.cluster.resume(replica).expect("resuming the replica");
    assert!(matches!(registered, Err(StoreError::NotDurable)), "{registered:?}");
    assert!(waited >= Duration::from_millis(500), "the new name waited its two waits: {waited:?}");
    let (slowest, beats) = heartbeats.expect("every heartbeat answered");
    // Behind the shared connection's WAIT a heartbeat waited out the 400 ms
    // one (401 ms measured); on a connection of its own, a few ms.
    assert!(slowest < Duration::from_millis(300), "a heartbeat waited {slowest:?} ({beats} beats)");
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    keeps_the_contract(&mut Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_the_contract() {
    let Some(cluster) = Cluster::start_or_skip(Options::default()) else { return };
    let mut redis = Redis { cluster, stop: CancellationToken::new() };
    keeps_the_contract(&mut redis).await;

    // Counts older than a day are looked at again: names still live from
    // their source count on, the rest (a ghost whose uncounting was lost)
    // are dropped.
    let store = redis.fresh_redis(LONG_TTL).await;
    let from = source("10.0.0.1");
    for i in 0..MAX_PER_SOURCE - 1 {
        store.register(claim(&format!("old{i}"), KEY_A, "x")).await.expect("within the cap");
        store.count_long_ago(&format!("old{i}"), &from).await;
    }
    store.count_long_ago("ghost", &from).await;
    store.register(claim("new0", KEY_A, "x")).await.expect("the ghost's place is free");
    let over = refusal(store.register(claim("new1", KEY_A, "x")).await);
    assert!(matches!(over, Refusal::TooManyFromSource { .. }), "old names count: {over:?}");
    // A ghost under the very name being claimed does not let it past the
    // cap as if the source held that name.
    store.count_long_ago("new2", &from).await;
    let over = refusal(store.register(claim("new2", KEY_A, "x")).await);
    assert!(matches!(over, Refusal::TooManyFromSource { .. }), "a ghost is not held: {over:?}");

    // Spending a nonce is idempotent for its spender: the client resends
    // a command whose answer it lost, and the resend must not find the
    // nonce already spent.
    let nonce = [7; peerchat_core::identity::NONCE_LEN];
    store.issue_nonce(nonce, source("192.0.2.1")).await.expect("a nonce");
    assert!(store.spend_nonce(&nonce, "spent a").await.expect("spending"));
    assert!(store.spend_nonce(&nonce, "spent a").await.expect("resent"), "a resend spends it");
    assert!(!store.spend_nonce(&nonce, "spent b").await.expect("again"), "once only");
    assert!(!store.consume_nonce(&nonce).await.expect("again"), "once only");
    assert!(!store.spend_nonce(&[8; 32], "spent c").await.expect("spending"), "never issued");

    a_stalled_replica_holds_up_only_new_names(&mut redis).await;

    // A connection kept for waiting that died meanwhile (here the master
    // closes every client's) is replaced, not answered UNAVAILABLE.
    let store = redis.fresh_redis(LONG_TTL).await;
    let bucket = bucket_of("kept0");
    let second = name_in_bucket("kept", bucket);
    store.register(claim("kept0", KEY_A, "k0")).await.expect("a new name: a wait");
    let key = bucket_key(bucket, "bind").expect("the bucket's key");
    let master = redis.cluster.master_for_key(&key).expect("the bucket's master");
    redis.cluster.cli(master, &["CLIENT", "KILL", "TYPE", "normal"]).expect("killing clients");
    store.register(claim(&second, KEY_A, "k1")).await.expect("a new connection for the wait");

    // A new binding the bucket's master no longer has when it is confirmed
    // (a failover promoted a replica that never got it) is not answered OK.
    let store = redis.fresh_redis(LONG_TTL).await;
    store.register(claim("lost", KEY_A, "l1")).await.expect("lost registers");
    store.confirm_binding(&name("lost"), &KEY_A).await.expect("bound and confirmed");
    let bind = bucket_key(bucket_of("lost"), "bind").expect("the bucket's key");
    let master = redis.cluster.master_for_key(&bind).expect("the bucket's master");
    redis.cluster.cli(master, &["HDEL", &bind, "lost"]).expect("dropping the binding");
    let lost = store.confirm_binding(&name("lost"), &KEY_A).await;
    assert!(
        matches!(&lost, Err(StoreError::Unavailable { why }) if why.contains("lost in a Redis failover")),
        "{lost:?}"
    );

    // A nonce let go from a full table while it was spent through another
    // replica keeps its spender's mark: the spender's resend must find it.
    let store = redis.fresh_redis(TTL).await.with_max_nonces(1);
    let options = RedisOptions { seeds: redis.cluster.seeds() };
    let other = RedisStore::connect(&options, TTL, MAX_PER_SOURCE, &redis.stop)
        .await
        .expect("a second replica connects");
    let nonce = [11; peerchat_core::identity::NONCE_LEN];
    store.issue_nonce(nonce, source("192.0.2.1")).await.expect("a nonce");
    assert!(other.spend_nonce(&nonce, "spent d").await.expect("spending"));
    store.issue_nonce([12; 32], source("192.0.2.1")).await.expect("lets the first go");
    assert!(other.spend_nonce(&nonce, "spent d").await.expect("resent"), "the mark stayed");
    redis.stop.cancel();
}
