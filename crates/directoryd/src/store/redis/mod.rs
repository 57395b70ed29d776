//! The Redis Cluster store: any number of identical `directoryd` replicas
//! share one cluster, so a peer registered through one is listed by all.
//!
//! Layout ([`keys`]): names are spread over [`keys::BUCKETS`] hash-tagged
//! buckets; each bucket's bindings, leases, listings, expiry index, name
//! index and change counter sit in one slot, so every operation on a name
//! is one Lua script ([`scripts`]) on one master: atomic, one round trip.
//! Expiry is a sorted set scored by lease expiry from the master's clock
//! (Redis 7.0 has no per-field TTLs), so replicas' clocks do not matter
//! and a lease is gone exactly at its ttl; reads filter on the score, and
//! the reaper only frees memory and announces departures.
//!
//! Durability: a *new* name binding is written pending, then `WAIT 1 100`
//! (400 ms more if the master has a replica that was slow)
//! must see a replica acknowledge it before the registration is answered
//! (else UNAVAILABLE, and the retry waits again); only then is it marked
//! confirmed. A promotion after a master dies therefore cannot lose an
//! acknowledged binding. Leases and presence are not waited for: a lost
//! renewal or registration heals itself (the next heartbeat gets NOT_FOUND
//! and peerd registers again).
//!
//! Failure: every call is bounded by [`client::CALL_TIMEOUT`]; a store
//! that does not answer is `StoreError::Unavailable` (UNAVAILABLE on the
//! wire, never NOT_FOUND), and [`client::Client::watchdog`] rebuilds a
//! stuck client.

mod client;
mod codec;
mod feed;
mod keys;
mod merge;
mod scripts;
mod wait;

/// The public view of [`keys`], re-exported as `crate::redis_layout`.
pub(crate) mod layout {
    /// Buckets the names are spread over.
    pub const BUCKETS: usize = super::keys::BUCKETS;

    /// The bucket a name (any case) belongs to, `0..BUCKETS`.
    pub fn bucket_of(name: &str) -> usize {
        super::keys::bucket_of(&name.to_ascii_lowercase())
    }

    /// Bucket `index`'s key `pc:{TAG}:WHAT`, WHAT one of `bind`, `live`,
    /// `info`, `exp`, `names`, `seq`; all of a bucket's keys share a slot,
    /// so `CLUSTER KEYSLOT` of any of them names its master. `None` for an
    /// index past [`BUCKETS`] or an unknown WHAT.
    pub fn bucket_key(index: usize, what: &str) -> Option<String> {
        let bucket = super::keys::buckets().into_iter().nth(index)?;
        Some(match what {
            "bind" => bucket.bind,
            "live" => bucket.live,
            "info" => bucket.info,
            "exp" => bucket.exp,
            "names" => bucket.names,
            "seq" => bucket.seq,
            _ => return None,
        })
    }
}

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use peerchat_core::Name;
use peerchat_core::source::Source;
use redis::Value;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::client::{Client, ConnectError};
use self::codec::Info;
use self::keys::Bucket;
use self::merge::{Merge, Query, Reply};
use self::scripts::Scripts;
use super::{FEED_CAPACITY, Nonce, Registered, Renewed, Store, StoreError};
use crate::bindings::{MAX_BINDINGS, hex};
use crate::challenges::{self, Challenges, NONCE_TTL};
use crate::lock;
use crate::model::{Change, Claim, Listing, Page, Presence, PublicKey, Refusal};

/// Registrations reaped per bucket per sweep at most, so that one script
/// stays short (about 10 ms for 1000 with their announcements).
const REAP_BATCH: usize = 500;
/// How [`RedisStore::count`] counts a name against its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    /// A registration just made.
    New,
    /// A recount of a live name: not if it was uncounted meanwhile.
    AgainIfStillCounted,
}

/// Old counts per source looked at again per registration from it, at
/// once: the work one Register can cause stays small, and a source with
/// more old counts has them looked at over its next registrations.
const RECOUNT_BATCH: usize = 16;

/// A nonce's value while it waits for its Register; once spent it holds
/// its spender's mark (see [`RedisStore::spend_nonce`]).
const ISSUED: &str = "1";

/// Reaped names uncounted from their sources at once, per sweep.
const FORGET_CONCURRENCY: usize = 64;
/// How long a replica gets to confirm a new binding, in ms: first
/// [`WAIT_MS`] (the design notes' figure; a replica on a quiet machine
/// answers within a millisecond), then, if the master does have a replica,
/// [`WAIT_MORE_MS`] more. With six clusters sharing two cores a replica
/// missed 100 ms and a registration was refused although it was there; a
/// master with no replica (just after a failover) must not make every new
/// name wait the longer time.
const WAIT_MS: u64 = 100;
const WAIT_MORE_MS: u64 = 400;
/// Entries of the per-source sets older than this are looked at again
/// (see `RedisStore::recount`): a replica that died between a registration and
/// its reaping cannot leave a source's allowance used up for good, and a
/// name kept alive longer still counts.
const SOURCE_WINDOW: Duration = Duration::from_secs(86_400);

/// Where the cluster is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Seed nodes, `redis://HOST:PORT` each; any one that answers will do,
    /// the client learns the rest of the cluster from it.
    pub seeds: Vec<String>,
}

/// A Redis store that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// `--store` is neither `memory` nor a list of `redis://` URLs.
    #[error("{0}")]
    BadStore(String),
    /// The cluster holds a directory of another layout.
    #[error(
        "the cluster holds {found:?}, this directoryd writes {expected:?}; refusing to mix them"
    )]
    Layout {
        /// What the cluster says.
        found: String,
        /// What this build writes.
        expected: String,
    },
    /// The cluster did not answer.
    #[error("{0}")]
    Unavailable(String),
}

impl FromStr for RedisOptions {
    type Err = RedisError;

    /// `redis://HOST:PORT[,redis://HOST:PORT...]`.
    fn from_str(raw: &str) -> Result<RedisOptions, RedisError> {
        let mut seeds = Vec::new();
        for seed in raw.split(',').map(str::trim) {
            let valid = seed
                .strip_prefix("redis://")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', '?', '@', ' ']));
            if !valid {
                return Err(RedisError::BadStore(format!(
                    "--store: {seed:?} is not a Redis node such as redis://127.0.0.1:7001"
                )));
            }
            seeds.push(seed.to_owned());
        }
        Ok(RedisOptions { seeds })
    }
}

/// The Redis Cluster store of one replica. Clones share everything.
#[derive(Debug, Clone)]
pub(crate) struct RedisStore {
    client: Arc<Client>,
    buckets: Arc<Vec<Bucket>>,
    scripts: Arc<Scripts>,
    ttl_ms: u64,
    max_per_source: usize,
    feed: broadcast::Sender<Change>,
    /// The challenges this replica handed out and has not seen spent,
    /// with who asked: as in the embedded store, at most
    /// [`challenges::MAX_OUTSTANDING`], shared fairly among sources. A
    /// nonce it lets go is dropped from Redis too, so one replica makes
    /// the cluster hold at most that many waiting nonces (about 100 bytes
    /// each there), however many sources ask. One spent through another
    /// replica stays counted here until it expires.
    challenges: Arc<Mutex<Challenges>>,
    /// Connections for `WAIT` ([`wait`]).
    waiters: Arc<wait::Waiters>,
}

impl RedisStore {
    /// Connects (or, if the cluster does not answer yet, starts without a
    /// connection and keeps trying), and starts the watchdog and the
    /// presence feed, which run until `stop`.
    pub(crate) async fn connect(
        options: &RedisOptions,
        ttl: Duration,
        max_per_source: usize,
        stop: &CancellationToken,
    ) -> Result<RedisStore, RedisError> {
        let conn = match client::connect(&options.seeds).await {
            Ok(conn) => Some(conn),
            Err(ConnectError::Layout { found, expected }) => {
                return Err(RedisError::Layout { found, expected });
            }
            Err(ConnectError::Unavailable(why)) => {
                tracing::warn!(%why, "Redis does not answer yet; serving UNAVAILABLE until it does");
                None
            }
        };
        let client = Arc::new(Client::new(options.seeds.clone(), conn));
        let buckets = Arc::new(keys::buckets());
        let scripts = Arc::new(Scripts::new());
        let feed = broadcast::channel(FEED_CAPACITY).0;
        let watchdog = client.clone();
        let stop_watchdog = stop.clone();
        tokio::spawn(async move { watchdog.watchdog(stop_watchdog).await });
        let presence = feed::Feed {
            seeds: options.seeds.clone(),
            buckets: buckets.clone(),
            client: client.clone(),
            scripts: scripts.clone(),
            changes: feed.clone(),
            replica: uuid::Uuid::new_v4().simple().to_string(),
        };
        tokio::spawn(presence.run(stop.clone()));
        Ok(RedisStore {
            client,
            buckets,
            scripts,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            max_per_source,
            feed,
            challenges: Arc::new(Mutex::new(Challenges::new(challenges::MAX_OUTSTANDING))),
            waiters: Arc::new(wait::Waiters::default()),
        })
    }

    /// The same store holding at most `max` challenges of its own.
    pub(crate) fn with_max_nonces(mut self, max: usize) -> RedisStore {
        self.challenges = Arc::new(Mutex::new(Challenges::new(max)));
        self
    }

    fn bucket(&self, name_key: &str) -> &Bucket {
        &self.buckets[keys::bucket_of(name_key)]
    }

    /// Refuses a claim that would take its source over the cap. Approximate
    /// across replicas (two racing registrations may both pass), as the
    /// embedded store's is across a second.
    ///
    /// The same round trip reads up to [`RECOUNT_BATCH`] of the names
    /// counted against the source more than [`SOURCE_WINDOW`] ago, which
    /// are then looked at again (see [`RedisStore::recount`]).
    async fn admit_source(&self, claim: &Claim, name_key: &str) -> Result<(), StoreError> {
        let source = claim.source.to_string();
        let key = keys::source(&source);
        let window_start = now_ms().saturating_sub(SOURCE_WINDOW.as_millis() as u64);
        let set: &str = &key;
        let (stale, count, held): (Vec<(String, u64)>, usize, Option<f64>) = self
            .client
            .call("checking the cap per source", |mut conn| async move {
                redis::pipe()
                    .cmd("ZRANGE")
                    .arg(set)
                    .arg("-inf")
                    .arg(window_start)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(RECOUNT_BATCH)
                    .arg("WITHSCORES")
                    .cmd("ZCARD")
                    .arg(set)
                    .cmd("ZSCORE")
                    .arg(set)
                    .arg(name_key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let dropped =
            if stale.is_empty() { Vec::new() } else { self.recount(&key, &source, stale).await };
        // A name of the claim's own that was just dropped is not held.
        let held = held.is_some() && !dropped.iter().any(|dropped| dropped == name_key);
        if !held && count.saturating_sub(dropped.len()) >= self.max_per_source {
            return Err(Refusal::TooManyFromSource {
                from: claim.source,
                max: self.max_per_source,
            }
            .into());
        }
        Ok(())
    }

    /// Looks again at old counts against `source`: a name still live from
    /// there counts on (from now), one that is not is dropped. So a name
    /// kept alive for days keeps counting, and one whose uncounting was
    /// lost (a replica died between taking a name down and uncounting it)
    /// stops counting within a day. Each entry is looked at about once a
    /// day; a failure only leaves it for the next registration. Returns
    /// the names dropped.
    async fn recount(&self, key: &str, source: &str, stale: Vec<(String, u64)>) -> Vec<String> {
        futures_util::stream::iter(stale)
            .map(|(name_key, score)| async move {
                match self.still_counts(&name_key, source).await {
                    Ok(true) => self.count(key, &name_key, Counting::AgainIfStillCounted).await,
                    Ok(false) => {
                        if self.uncount_stale(key, &name_key, score).await {
                            return Some(name_key);
                        }
                    }
                    Err(err) => tracing::debug!(%err, "cannot recount a registration"),
                }
                None
            })
            .buffer_unordered(RECOUNT_BATCH)
            .filter_map(std::future::ready)
            .collect()
            .await
    }

    /// Whether `name_key` is live and registered from `source`.
    async fn still_counts(&self, name_key: &str, source: &str) -> Result<bool, StoreError> {
        let reply: Vec<Value> = self
            .eval("looking up", &self.scripts.lookup, self.bucket(name_key), |call| {
                call.arg(name_key);
            })
            .await?;
        Ok(match reply.as_slice() {
            [_, info] => text(info)
                .as_deref()
                .and_then(codec::decode_info)
                .is_some_and(|info| info.source == source),
            _ => false,
        })
    }

    /// Drops a stale count, unless it was counted again since it was read.
    /// True if it was dropped.
    async fn uncount_stale(&self, key: &str, name_key: &str, score: u64) -> bool {
        let script = &self.scripts.uncount_stale;
        let dropped = self
            .client
            .call("dropping an old count", |mut conn| async move {
                script.key(key).arg(name_key).arg(score).invoke_async::<i64>(&mut conn).await
            })
            .await;
        match dropped {
            Ok(n) => n == 1,
            Err(err) => {
                tracing::debug!(%err, "cannot drop an old count");
                false
            }
        }
    }

    /// Counts `name_key` against its new source, and off its old one.
    async fn move_source(&self, name_key: &str, new: &str, old: Option<&str>) {
        self.count(&keys::source(new), name_key, Counting::New).await;
        if let Some(old) = old.filter(|old| *old != new) {
            self.forget_source(name_key, old).await;
        }
    }

    /// Counts `name_key` against `source` as if two days ago, for tests of
    /// what becomes of old counts.
    #[cfg(test)]
    pub(crate) async fn count_long_ago(&self, name_key: &str, source: &crate::model::Source) {
        let key = keys::source(&source.to_string());
        self.client
            .call("backdating a count", |mut conn| async move {
                redis::cmd("ZADD").arg(&key).arg(0).arg(name_key).query_async::<()>(&mut conn).await
            })
            .await
            .expect("backdated");
    }

    /// Counts `name_key` in the source set `key`, from now.
    async fn count(&self, key: &str, name_key: &str, counting: Counting) {
        // No expiry on the set: names kept alive for days must go on
        // counting; an empty set is gone by itself, and a count left
        // behind is dropped by the next recount.
        let now = now_ms();
        let counted = self
            .client
            .call("counting a registration", |mut conn| async move {
                let mut zadd = redis::cmd("ZADD");
                zadd.arg(key);
                if counting == Counting::AgainIfStillCounted {
                    zadd.arg("XX");
                }
                zadd.arg(now).arg(name_key).query_async::<i64>(&mut conn).await
            })
            .await;
        if let Err(err) = counted {
            tracing::warn!(%err, ?counting, "cannot count a registration against its source");
        }
    }

    async fn forget_source(&self, name_key: &str, source: &str) {
        let key = keys::source(source);
        let removed = self
            .client
            .call("uncounting a registration", |mut conn| async move {
                redis::cmd("ZREM").arg(&key).arg(name_key).query_async::<i64>(&mut conn).await
            })
            .await;
        if let Err(err) = removed {
            tracing::debug!(%err, "cannot uncount a registration");
        }
    }

    /// Waits for a replica of the bucket's master to have every write so
    /// far, the new binding among them, and marks the binding confirmed.
    async fn confirm(
        &self,
        bucket: &Bucket,
        name_key: &str,
        key_hex: &str,
    ) -> Result<(), StoreError> {
        if self.wait_for_replica(bucket, WAIT_MS).await? < 1 {
            if self.replicas_of(bucket).await? > 0 {
                if self.wait_for_replica(bucket, WAIT_MORE_MS).await? < 1 {
                    tracing::warn!(bucket = %bucket.bind, "no replica confirmed a new name binding");
                    return Err(StoreError::NotDurable);
                }
                return self.mark_confirmed(bucket, name_key, key_hex).await;
            }
            // A shard whose master has no replica at all (its replica was
            // promoted when the old master died, and nothing has rejoined
            // yet) cannot confirm anything: refusing every new name there
            // until an operator restores a replica would be an outage. The
            // binding then rests on that master's AOF alone, as everything
            // in the shard does; it stays marked pending, so the next
            // registration of the name waits for a replica again.
            // Unless this master is a replica promoted without it.
            if !self.holds_binding(bucket, name_key, key_hex).await? {
                return Err(lost_binding());
            }
            tracing::warn!(
                bucket = %bucket.bind,
                "the bucket's master has no replica: a new name binding rests on it alone"
            );
            return Ok(());
        }
        self.mark_confirmed(bucket, name_key, key_hex).await
    }

    /// A replica has the binding: marks it confirmed, if the master still
    /// holds it.
    async fn mark_confirmed(
        &self,
        bucket: &Bucket,
        name_key: &str,
        key_hex: &str,
    ) -> Result<(), StoreError> {
        let held = self
            .eval::<i64>("confirming a binding", &self.scripts.confirm, bucket, |call| {
                call.arg(name_key).arg(key_hex);
            })
            .await?;
        if held != 1 {
            return Err(lost_binding());
        }
        Ok(())
    }

    /// [`Self::confirm`] for a name and key, for the store's tests.
    #[cfg(test)]
    pub(in crate::store) async fn confirm_binding(
        &self,
        name: &Name,
        key: &PublicKey,
    ) -> Result<(), StoreError> {
        let name_key = name.key();
        self.confirm(self.bucket(&name_key), &name_key, &hex(key)).await
    }

    /// Whether `name_key` is bound to `key_hex` (confirmed or pending) on
    /// the bucket's master now.
    async fn holds_binding(
        &self,
        bucket: &Bucket,
        name_key: &str,
        key_hex: &str,
    ) -> Result<bool, StoreError> {
        let key = bucket.bind.clone();
        let bound: Option<String> = self
            .client
            .call("reading a binding", |mut conn| async move {
                redis::cmd("HGET").arg(&key).arg(name_key).query_async(&mut conn).await
            })
            .await?;
        Ok(bound.is_some_and(|b| b.strip_suffix('*').unwrap_or(&b) == key_hex))
    }

    /// Runs `script` on `bucket`'s keys, with the arguments `args` adds,
    /// within the call deadline.
    async fn eval<T: redis::FromRedisValue>(
        &self,
        what: &str,
        script: &redis::Script,
        bucket: &Bucket,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, StoreError> {
        self.client
            .call(what, |mut conn| async move {
                let mut call = script.prepare_invoke();
                for key in bucket.keys() {
                    call.key(key);
                }
                args(&mut call);
                call.invoke_async(&mut conn).await
            })
            .await
    }

    /// `WAIT 1 timeout_ms` on the master of `bucket`, on a connection of
    /// its own ([`wait`]): how many replicas have every write made so far.
    async fn wait_for_replica(&self, bucket: &Bucket, timeout_ms: u64) -> Result<i64, StoreError> {
        let route = master_of(bucket);
        let nodes: String = self
            .client
            .call("finding the bucket's master", |mut conn| async move {
                let value =
                    conn.route_command(redis::cmd("CLUSTER").arg("NODES").clone(), route).await?;
                redis::from_redis_value(value).map_err(redis::RedisError::from)
            })
            .await?;
        let master = wait::own_address(&nodes)
            .ok_or_else(|| unavailable("the bucket's master did not say its address"))?;
        let waited =
            self.waiters.for_replica(self.client.seed(), master, &bucket.wait_mark, timeout_ms);
        match tokio::time::timeout(client::CALL_TIMEOUT, waited).await {
            Ok(Ok(replicas)) => Ok(replicas),
            Ok(Err(err)) => Err(unavailable(&format!("waiting for a replica: {err}"))),
            Err(_) => Err(unavailable("waiting for a replica: no answer from Redis in time")),
        }
    }

    /// How many replicas the master of `bucket` has connected now. An answer from a node
    /// that is not a master (the client's map of the cluster lags a
    /// failover) says nothing about that: UNAVAILABLE, to be retried,
    /// rather than "no replica", which would let a binding rest on one node.
    async fn replicas_of(&self, bucket: &Bucket) -> Result<u64, StoreError> {
        let route = master_of(bucket);
        let info: String = self
            .client
            .call("asking for the replicas", |mut conn| async move {
                let value = conn
                    .route_command(redis::cmd("INFO").arg("replication").clone(), route)
                    .await?;
                redis::from_redis_value(value).map_err(redis::RedisError::from)
            })
            .await?;
        if !is_master(&info) {
            return Err(unavailable("the bucket's master has just moved"));
        }
        Ok(connected_replicas(&info))
    }

    /// Asks one bucket for a page's worth of its names.
    async fn list_bucket(&self, query: &Query) -> Result<Reply, StoreError> {
        let bucket = &self.buckets[query.bucket];
        let reply: Vec<Value> = self
            .eval("listing", &self.scripts.list, bucket, |call| {
                call.arg(&query.after).arg(query.quota).arg(query.quota.saturating_mul(4).max(64));
            })
            .await?;
        let malformed = || unavailable("an unreadable list reply");
        let (done, cursor, entries) = match reply.as_slice() {
            [done, cursor, Value::Array(entries)] => (int(done), text(cursor), entries),
            _ => return Err(malformed()),
        };
        let (Some(done), Some(cursor)) = (done, cursor) else { return Err(malformed()) };
        let mut listed = Vec::with_capacity(entries.len() / 3);
        for triple in entries.chunks_exact(3) {
            let (Some(key), Some(live), Some(info)) =
                (text(&triple[0]), text(&triple[1]), text(&triple[2]))
            else {
                return Err(malformed());
            };
            match codec::listing(&live, &info) {
                Some(listing) => listed.push((key, listing)),
                None => tracing::warn!(name = %key, "skipped an unreadable listing"),
            }
        }
        Ok(Reply { done: done == 1, cursor, entries: listed })
    }

    async fn reap_bucket(&self, bucket: &Bucket) -> Result<Vec<(String, String)>, StoreError> {
        let reply: Vec<Value> = self
            .eval("reaping", &self.scripts.reap, bucket, |call| {
                call.arg(REAP_BATCH).arg(&bucket.channel);
            })
            .await?;
        Ok(reply
            .chunks_exact(2)
            .filter_map(|pair| Some((text(&pair[0])?, text(&pair[1])?)))
            .collect())
    }

    /// [`Store::register`], to the end.
    async fn claim(&self, claim: Claim) -> Result<Registered, StoreError> {
        let name_key = claim.name.key();
        self.admit_source(&claim, &name_key).await?;
        let bucket = self.bucket(&name_key);
        let key_hex = hex(&claim.public_key);
        let source = claim.source.to_string();
        let info = codec::encode_info(&Info {
            public_key: claim.public_key,
            source: source.clone(),
            name: claim.name.as_str().to_owned(),
            address: claim.address.clone(),
        });
        let per_bucket = MAX_BINDINGS.div_ceil(keys::BUCKETS);
        let (name_key, key_hex, info) = (&name_key, &key_hex, &info);
        let reply: Vec<Value> = self
            .eval("registering", &self.scripts.register, bucket, |call| {
                call.arg(name_key)
                    .arg(key_hex)
                    .arg(lease_hash(&claim.lease_token))
                    .arg(codec::presence_byte(claim.presence))
                    .arg(info)
                    .arg(self.ttl_ms)
                    .arg(&bucket.channel)
                    .arg(per_bucket)
                    .arg(if claim.may_bind { "1" } else { "0" });
            })
            .await?;
        let name = || claim.name.as_str().to_owned();
        let (pending, old, new) = match reply.as_slice() {
            [word, pending, old, new] if text(word).as_deref() == Some("ok") => {
                (int(pending), text(old), int(new))
            }
            [word] if text(word).as_deref() == Some("taken") => {
                return Err(Refusal::Taken { name: name() }.into());
            }
            [word] if text(word).as_deref() == Some("full") => {
                return Err(Refusal::Full { max: MAX_BINDINGS }.into());
            }
            [word] if text(word).as_deref() == Some("quota") => {
                return Err(Refusal::NewNames { from: claim.source.site() }.into());
            }
            _ => return Err(unavailable("an unreadable register reply")),
        };
        let old_source = old.as_deref().and_then(codec::decode_info).map(|i| i.source);
        self.move_source(name_key, &source, old_source.as_deref()).await;
        // Pending is also an older binding whose confirmation never came:
        // it is confirmed now, but it is not new.
        if pending == Some(1) {
            self.confirm(bucket, name_key, key_hex).await?;
        }
        Ok(Registered { new_binding: new == Some(1) })
    }

    /// [`Store::unregister`], to the end.
    async fn release(&self, name: &Name, lease: &str) -> Result<(), StoreError> {
        let name_key = &name.key();
        let bucket = self.bucket(name_key);
        let reply: Vec<Value> = self
            .eval("unregistering", &self.scripts.unregister, bucket, |call| {
                call.arg(name_key).arg(lease_hash(lease)).arg(&bucket.channel);
            })
            .await?;
        match reply.as_slice() {
            [word] if text(word).as_deref() == Some("wrong") => {
                Err(Refusal::WrongLease { name: name.as_str().to_owned() }.into())
            }
            [word, info] if text(word).as_deref() == Some("ok") => {
                if let Some(info) = text(info).as_deref().and_then(codec::decode_info) {
                    self.forget_source(name_key, &info.source).await;
                }
                Ok(())
            }
            _ => Err(unavailable("an unreadable unregister reply")),
        }
    }
}

impl RedisStore {
    /// Spends `nonce` for `spender`, a token of this one attempt. The
    /// client resends a command whose answer it lost (a response timeout,
    /// a dropped connection), so spending must be idempotent: it marks the
    /// nonce with the spender (keeping its expiry) rather than deleting
    /// it, and a resend that finds its own mark has spent it. A `DEL`
    /// resent would find nothing, and a good registration would be refused
    /// as a replay.
    pub(crate) async fn spend_nonce(
        &self,
        nonce: &[u8],
        spender: &str,
    ) -> Result<bool, StoreError> {
        if nonce.len() != peerchat_core::identity::NONCE_LEN {
            return Ok(false);
        }
        let key = keys::nonce(nonce);
        let before: Option<String> = self
            .client
            .call("spending a challenge", |mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(spender)
                    .arg("XX")
                    .arg("KEEPTTL")
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(matches!(before.as_deref(), Some(b) if b == ISSUED || b == spender))
    }

    /// Drops `nonce` from Redis if it still waits for its Register; one
    /// already spent keeps its spender's mark (a resent spend must find
    /// it) until it expires. Best effort: one not dropped expires anyway.
    async fn drop_waiting_nonce(&self, nonce: &Nonce) {
        let key = keys::nonce(nonce);
        let script = &self.scripts.drop_waiting_nonce;
        let dropped = self
            .client
            .call("dropping a challenge", |mut conn| async move {
                script.key(&key).arg(ISSUED).invoke_async::<i64>(&mut conn).await
            })
            .await;
        if let Err(err) = dropped {
            tracing::debug!(%err, "cannot drop a challenge let go");
        }
    }
}

#[tonic::async_trait]
impl Store for RedisStore {
    async fn issue_nonce(&self, nonce: Nonce, source: Source) -> Result<(), StoreError> {
        let let_go = lock(&self.challenges).issue(nonce, source, Instant::now());
        let key = keys::nonce(&nonce);
        let ttl = NONCE_TTL.as_millis() as u64;
        let stored = self.client.call("storing a challenge", |mut conn| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(ISSUED)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async::<Option<String>>(&mut conn)
                .await
        });
        // Side by side: a full table costs the Challenge no second wait.
        let dropped = async {
            if let Some(old) = let_go {
                self.drop_waiting_nonce(&old).await;
            }
        };
        let (stored, ()) = tokio::join!(stored, dropped);
        if let Err(err) = stored {
            // Not handed out: not counted either.
            lock(&self.challenges).consume(&nonce, Instant::now());
            return Err(err);
        }
        Ok(())
    }

    async fn consume_nonce(&self, nonce: &[u8]) -> Result<bool, StoreError> {
        // Redis decides; this replica only stops counting it.
        lock(&self.challenges).consume(nonce, Instant::now());
        let spender = format!("spent {}", uuid::Uuid::new_v4().simple());
        self.spend_nonce(nonce, &spender).await
    }

    // A claim and a release run to their end without their caller: once
    // the script has run, the count per source must follow it, and a
    // client that resets its request must not be able to skip that (nor
    // the confirmation of a new binding). Each step has its own deadline.

    async fn register(&self, claim: Claim) -> Result<Registered, StoreError> {
        let store = self.clone();
        finish(tokio::spawn(async move { store.claim(claim).await })).await
    }

    async fn renew(
        &self,
        name: &Name,
        lease: &str,
        presence: Option<Presence>,
    ) -> Result<Renewed, StoreError> {
        let name_key = name.key();
        let bucket = self.bucket(&name_key);
        let reply: Vec<Value> = self
            .eval("renewing", &self.scripts.renew, bucket, |call| {
                call.arg(&name_key)
                    .arg(lease_hash(lease))
                    .arg(presence.map_or("", codec::presence_byte))
                    .arg(self.ttl_ms)
                    .arg(&bucket.channel);
            })
            .await?;
        match reply.as_slice() {
            [] => Err(Refusal::UnknownLease { name: name.as_str().to_owned() }.into()),
            [listed, changed] => {
                let presence = text(listed)
                    .as_deref()
                    .and_then(codec::presence_of)
                    .ok_or_else(|| unavailable("an unreadable renew reply"))?;
                Ok(Renewed { presence, changed: text(changed).as_deref() == Some("1") })
            }
            _ => Err(unavailable("an unreadable renew reply")),
        }
    }

    async fn unregister(&self, name: &Name, lease: &str) -> Result<(), StoreError> {
        let (store, name, lease) = (self.clone(), name.clone(), lease.to_owned());
        finish(tokio::spawn(async move { store.release(&name, &lease).await })).await
    }

    async fn lookup(&self, name: &Name) -> Result<Listing, StoreError> {
        let name_key = name.key();
        let bucket = self.bucket(&name_key);
        let reply: Vec<Value> = self
            .eval("looking up", &self.scripts.lookup, bucket, |call| {
                call.arg(&name_key);
            })
            .await?;
        let not_online = || Refusal::NotOnline { name: name.as_str().to_owned() };
        match reply.as_slice() {
            [] => Err(not_online().into()),
            [live, info] => {
                let (Some(live), Some(info)) = (text(live), text(info)) else {
                    return Err(unavailable("an unreadable lookup reply"));
                };
                codec::listing(&live, &info).ok_or_else(|| unavailable("an unreadable listing"))
            }
            _ => Err(unavailable("an unreadable lookup reply")),
        }
    }

    async fn list(&self, after: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let mut merge = Merge::new(self.buckets.len(), after, limit);
        let mut queries = merge.first_queries();
        // Bounded: every round moves at least one bucket's cursor forward,
        // and the whole page has one call's deadline.
        let page = async {
            loop {
                let replies =
                    futures_util::future::join_all(queries.iter().map(|q| self.list_bucket(q)))
                        .await;
                for (query, reply) in queries.iter().zip(replies) {
                    merge.feed(query.bucket, reply?);
                }
                match merge.step() {
                    Ok(page) => return Ok(page),
                    Err(next) => queries = next,
                }
            }
        };
        match tokio::time::timeout(client::CALL_TIMEOUT * 2, page).await {
            Ok(page) => page,
            Err(_) => Err(unavailable("a list page took too long")),
        }
    }

    async fn sweep(&self) {
        // Redis expires the nonces themselves; this is the local count, a
        // batch per lock as in the embedded store.
        let now = Instant::now();
        while lock(&self.challenges).sweep(now) >= challenges::SWEEP_BATCH {}
        let reaped =
            futures_util::future::join_all(self.buckets.iter().map(|b| self.reap_bucket(b))).await;
        let gone: Vec<(String, String)> = reaped.into_iter().flatten().flatten().collect();
        let count = gone.len();
        // Up to REAP_BATCH per bucket: one at a time they could hold the
        // next sweep back for seconds.
        futures_util::stream::iter(gone)
            .for_each_concurrent(FORGET_CONCURRENCY, |(name_key, info)| async move {
                if let Some(info) = codec::decode_info(&info) {
                    self.forget_source(&name_key, &info.source).await;
                }
            })
            .await;
        if count > 0 {
            tracing::debug!(reaped = count, "expired registrations dropped");
        }
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
}

/// Releases `name` from its key in the cluster (and ends any registration
/// under it), while directories run: for a user who lost their key.
/// `Ok(None)` when the name has no binding.
pub(crate) async fn forget(
    options: &RedisOptions,
    name: &Name,
) -> Result<Option<PublicKey>, RedisError> {
    let mut conn = client::connect(&options.seeds).await.map_err(|err| match err {
        ConnectError::Unavailable(why) => RedisError::Unavailable(why),
        ConnectError::Layout { found, expected } => RedisError::Layout { found, expected },
    })?;
    let name_key = name.key();
    let bucket = &keys::buckets()[keys::bucket_of(&name_key)];
    let scripts = Scripts::new();
    let mut invocation = scripts.forget.prepare_invoke();
    for key in bucket.keys() {
        invocation.key(key);
    }
    invocation.arg(&name_key).arg(&bucket.channel);
    let call = invocation.invoke_async::<String>(&mut conn);
    let bound = match tokio::time::timeout(client::CALL_TIMEOUT, call).await {
        Ok(Ok(bound)) => bound,
        Ok(Err(err)) => return Err(RedisError::Unavailable(err.to_string())),
        Err(_) => return Err(RedisError::Unavailable("Redis did not answer".to_owned())),
    };
    Ok(codec::unhex(&bound))
}

/// Routes a command to the master serving `bucket`.
fn master_of(bucket: &Bucket) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        bucket.slot,
        SlotAddr::Master,
    )))
}

/// `role:master` in `INFO replication`.
fn is_master(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "role:master")
}

/// `connected_slaves:N` from `INFO replication`; 0 when absent.
fn connected_replicas(info: &str) -> u64 {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// What the store keeps of a lease: a hash, so that a dump of the cluster
/// gives no one a lease to heartbeat or unregister with.
fn lease_hash(lease: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, lease.as_bytes());
    hex(&digest.as_ref()[..16])
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The outcome of a store task that runs without its caller.
async fn finish<T>(task: tokio::task::JoinHandle<Result<T, StoreError>>) -> Result<T, StoreError> {
    task.await
        .map_err(|err| StoreError::Unavailable { why: format!("a store task failed: {err}") })?
}

/// A new binding the master no longer has: a failover promoted a replica
/// that never got it. Not answered OK; the peer's retry binds it anew.
fn lost_binding() -> StoreError {
    unavailable("the new name binding was lost in a Redis failover")
}

fn unavailable(why: &str) -> StoreError {
    StoreError::Unavailable { why: why.to_owned() }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_and_bad_ones_say_why() {
        let options: RedisOptions =
            "redis://127.0.0.1:7001, redis://127.0.0.1:7002".parse().unwrap();
        assert_eq!(options.seeds, ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]);
        for bad in ["", "redis://", "http://x:1", "redis://a:1,", "redis://u:p@h:1", "memory"] {
            let err = bad.parse::<RedisOptions>().unwrap_err();
            assert!(err.to_string().contains("is not a Redis node"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn connected_replicas_are_read_from_info() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1\r\n";
        assert_eq!(connected_replicas(info), 1);
        assert_eq!(connected_replicas("role:master\r\nconnected_slaves:0\r\n"), 0);
        assert_eq!(connected_replicas("garbage"), 0);
        assert!(is_master(info));
        assert!(!is_master("# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n"));
        assert!(!is_master("garbage"));
    }

    #[test]
    fn leases_are_kept_as_short_hashes() {
        let h = lease_hash("a lease");
        assert_eq!(h.len(), 32);
        assert_eq!(h, lease_hash("a lease"));
        assert_ne!(h, lease_hash("another"));
    }
}
