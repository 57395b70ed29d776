//! The directory on a Redis Cluster (issue 11) as the tests see it: which
//! master holds a name, and [`DirectoryApi`], a raw gRPC client of one
//! replica that registers with its own key, lists and watches the presence
//! feed, so that a test can time a replica's answers with no peerd between.
//!
//! The cluster itself is `peerchat_redis_cluster::Cluster`, owned by the
//! test (its nodes are stopped when it is dropped).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pb::directory_client::DirectoryClient;
use pb::peer_event::Kind;
use peerchat::v1 as pb;
use rustls::SignatureScheme;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::sign::SigningKey;
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use peerchat_directoryd::redis_layout::bucket_of;

/// One gRPC call may take this long; the directory's own store calls give
/// up after 1.5 s, so a longer wait means the replica itself is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Bucket `index`'s key `pc:{TAG}:WHAT` (`bind`, `live`, ...): ask the
/// cluster who holds a name with
/// `cluster.master_for_key(&bucket_key(bucket_of(name), "live"))`.
pub(crate) fn bucket_key(index: usize, what: &str) -> String {
    peerchat_directoryd::redis_layout::bucket_key(index, what)
        .unwrap_or_else(|| panic!("no key {what} in bucket {index}"))
}

/// A name `{prefix}{k}` (the first k that fits) in one of `buckets`.
pub(crate) fn name_in(prefix: &str, buckets: &[usize]) -> String {
    (0..10_000)
        .map(|k| format!("{prefix}{k}"))
        .find(|name| buckets.contains(&bucket_of(name)))
        .unwrap_or_else(|| panic!("no {prefix}N in buckets {buckets:?}"))
}

/// An ed25519 key that registers names, as peerd's identity does.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    public: Vec<u8>,
    signer: Arc<dyn SigningKey>,
}

impl Identity {
    pub(crate) fn generate() -> Identity {
        let pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("generating an ed25519 key");
        let pkcs8 = PrivatePkcs8KeyDer::from(pair.serialize_der());
        let signer =
            rustls::crypto::ring::sign::any_eddsa_type(&pkcs8).expect("an ed25519 signing key");
        Identity { public: pair.public_key_raw().to_vec(), signer }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signer =
            self.signer.choose_scheme(&[SignatureScheme::ED25519]).expect("an ed25519 signer");
        signer.sign(message).expect("signing")
    }
}

/// A registration: what Heartbeat and Unregister present.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) name: String,
    pub(crate) token: String,
}

/// A blocking gRPC client of the Directory service of one replica, on its
/// own runtime.
#[derive(Debug)]
pub(crate) struct DirectoryApi {
    url: String,
    client: DirectoryClient<Channel>,
    rt: Runtime,
}

impl DirectoryApi {
    /// A client of the directory at `url` (`http://127.0.0.1:PORT`); it
    /// connects on its first call and reconnects by itself.
    pub(crate) fn new(url: &str) -> DirectoryApi {
        let rt = super::runtime();
        let channel = {
            let _entered = rt.enter();
            Endpoint::from_shared(url.to_owned())
                .unwrap_or_else(|e| panic!("directory URL {url}: {e}"))
                .connect_timeout(Duration::from_secs(2))
                .timeout(CALL_TIMEOUT)
                .connect_lazy()
        };
        DirectoryApi { url: url.to_owned(), client: DirectoryClient::new(channel), rt }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Challenge, then Register `name` for `key`, signed as peerd signs
    /// (`peerchat_core::identity::registration_payload`), listed at
    /// 127.0.0.1:`port`.
    pub(crate) fn register(&self, name: &str, key: &Identity, port: u32) -> Result<Lease, Status> {
        let mut client = self.client.clone();
        self.rt.block_on(async move {
            let nonce = client.challenge(pb::ChallengeRequest {}).await?.into_inner().nonce;
            let timestamp_ms = unix_millis();
            let advertise = format!("127.0.0.1:{port}");
            let payload = peerchat_core::identity::registration_payload(
                &nonce,
                timestamp_ms,
                port,
                name,
                &advertise,
            );
            let request = pb::RegisterRequest {
                name: name.to_owned(),
                advertise,
                port,
                status: pb::PeerStatus::Available.into(),
                public_key: key.public.clone(),
                nonce,
                timestamp_ms,
                signature: key.sign(&payload),
            };
            let response = client.register(request).await?.into_inner();
            Ok(Lease { name: name.to_owned(), token: response.lease })
        })
    }

    pub(crate) fn heartbeat(&self, lease: &Lease) -> Result<(), Status> {
        let mut client = self.client.clone();
        let request = pb::HeartbeatRequest {
            name: lease.name.clone(),
            lease: lease.token.clone(),
            status: pb::PeerStatus::Available.into(),
        };
        self.rt.block_on(async move { client.heartbeat(request).await.map(drop) })
    }

    pub(crate) fn unregister(&self, lease: &Lease) -> Result<(), Status> {
        let mut client = self.client.clone();
        let request =
            pb::UnregisterRequest { name: lease.name.clone(), lease: lease.token.clone() };
        self.rt.block_on(async move { client.unregister(request).await.map(drop) })
    }

    /// Every page of List: the names online, in the directory's order.
    pub(crate) fn names(&self) -> Result<Vec<String>, Status> {
        let mut client = self.client.clone();
        self.rt.block_on(async move {
            let mut names = Vec::new();
            let mut page_token = String::new();
            // Bounded: a test lists a handful of peers, 100 a page.
            for _ in 0..100 {
                let page =
                    client.list(pb::ListRequest { page_size: 100, page_token }).await?.into_inner();
                names.extend(page.peers.into_iter().map(|peer| peer.name));
                if page.next_page_token.is_empty() {
                    return Ok(names);
                }
                page_token = page.next_page_token;
            }
            panic!("List of {} did not end within 100 pages", self.url)
        })
    }

    /// Opens WatchPeers and returns once its first snapshot has ended, so
    /// that every change after this call is seen.
    pub(crate) fn watch(&self) -> Feed {
        let (tx, rx) = mpsc::channel();
        let mut client = self.client.clone();
        let url = self.url.clone();
        // The stream lives longer than one call's timeout.
        let request = tonic::Request::new(pb::WatchPeersRequest {});
        let task = self.rt.spawn(async move {
            let mut stream = match client.watch_peers(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = tx.send(Err(status));
                    return;
                }
            };
            loop {
                let item = match stream.message().await {
                    Ok(Some(event)) => Ok((Instant::now(), event)),
                    Ok(None) => Err(Status::unavailable(format!("{url}: the feed ended"))),
                    Err(status) => Err(status),
                };
                let end = item.is_err();
                if tx.send(item).is_err() || end {
                    return;
                }
            }
        });
        let mut feed = Feed { url: self.url.clone(), rx, seen: Vec::new(), taken: 0, task };
        feed.wait_for("the first SNAPSHOT_END", super::EVENT_TIMEOUT, |e| {
            e.kind() == Kind::SnapshotEnd
        });
        feed
    }
}

/// The presence feed of one replica (WatchPeers), read by a task into a
/// channel; each event stamped with when it arrived.
#[derive(Debug)]
pub(crate) struct Feed {
    url: String,
    rx: Receiver<Result<(Instant, pb::PeerEvent), Status>>,
    /// Every event so far, in arrival order.
    seen: Vec<(Instant, pb::PeerEvent)>,
    /// How many of `seen` a `wait_for` has passed over.
    taken: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    /// The first event after those an earlier `wait_for` passed over that
    /// matches `pred`, and when it arrived; waits up to `timeout`, and
    /// panics with every event seen otherwise.
    pub(crate) fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&pb::PeerEvent) -> bool,
    ) -> (pb::PeerEvent, Instant) {
        if let Some(i) = self.seen[self.taken..].iter().position(|(_, e)| pred(e)) {
            self.taken += i + 1;
            let (at, event) = &self.seen[self.taken - 1];
            return (event.clone(), *at);
        }
        self.taken = self.seen.len();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Ok((at, event))) => {
                    let hit = pred(&event);
                    self.seen.push((at, event.clone()));
                    self.taken = self.seen.len();
                    if hit {
                        return (event, at);
                    }
                }
                Ok(Err(status)) => {
                    panic!(
                        "{}: the feed failed before {what}: {status:?}; seen:\n{}",
                        self.url,
                        self.dump()
                    )
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no {what} within {timeout:?}; seen:\n{}", self.url, self.dump())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: the feed task ended before {what}; seen:\n{}",
                        self.url,
                        self.dump()
                    )
                }
            }
        }
    }

    fn dump(&self) -> String {
        let first = self.seen.first().map(|(at, _)| *at);
        self.seen
            .iter()
            .map(|(at, e)| {
                let after = first.map(|f| at.duration_since(f)).unwrap_or_default();
                let name = e.peer.as_ref().map(|p| p.name.as_str()).unwrap_or("");
                format!("  +{after:?} {:?} {name}", e.kind())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `ONLINE name`.
pub(crate) fn online(name: &str) -> impl Fn(&pb::PeerEvent) -> bool + '_ {
    move |e| e.kind() == Kind::Online && e.peer.as_ref().is_some_and(|p| p.name == name)
}

/// `OFFLINE name`.
pub(crate) fn offline(name: &str) -> impl Fn(&pb::PeerEvent) -> bool + '_ {
    move |e| e.kind() == Kind::Offline && e.peer.as_ref().is_some_and(|p| p.name == name)
}

/// Asserts that `result` is an error with `code` whose message contains
/// `words`, and returns that message.
pub(crate) fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    words: &str,
    what: &str,
) -> String {
    match result {
        Err(status) if status.code() == code && status.message().contains(words) => {
            status.message().to_owned()
        }
        other => panic!("{what}: expected {code:?} containing {words:?}, got {other:?}"),
    }
}

fn unix_millis() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("a clock after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit i64")
}
