//! The Redis Cluster connection, never trusted to time out by itself.
//!
//! redis-rs follows MOVED and ASK and refreshes its slot map after a
//! failover, but in measurements it sometimes stopped for good during a
//! failover (slot refresh begun, never finished; no request returned, not
//! even at its own `overall_response_timeout`). So every call here runs
//! under directoryd's own deadline, and a watchdog drops the connection and
//! builds a new one when calls have been failing and nothing has succeeded
//! for [`WATCHDOG`]. A connection that cannot be made at start is made by
//! the watchdog later: the directory starts, answers UNAVAILABLE, and
//! recovers by itself when Redis comes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use tokio_util::sync::CancellationToken;

use super::keys;
use crate::lock;
use crate::store::StoreError;

/// One store call at most, retries inside the client included. peerd gives
/// a directory call 3 s; this leaves room for the rest of the request.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// Calls failing with no success for this long: the connection is rebuilt.
pub(crate) const WATCHDOG: Duration = Duration::from_secs(4);

/// Making a connection (slot map included) at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The client's own settings. Its defaults do not fit a directory: no
/// response timeout in cluster mode, 16 retries, and a retry wait that
/// starts at 1.28 s. These give up within the call deadline and retry
/// quickly enough to follow a failover (about 3-4 s on loopback).
pub(crate) fn builder(seeds: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .overall_response_timeout(Some(CALL_TIMEOUT))
        .retries(6)
        .min_retry_wait(50)
        .max_retry_wait(400)
}

#[derive(Debug)]
struct Health {
    last_ok: Instant,
    /// A call failed since `last_ok`.
    failing: bool,
}

impl Health {
    /// Calls have been failing, and none has succeeded for [`WATCHDOG`]. A
    /// quiet connection (no calls) is not stuck, however long ago its last
    /// success: nothing says it would fail.
    fn stuck(&self, now: Instant) -> bool {
        self.failing && now.saturating_duration_since(self.last_ok) >= WATCHDOG
    }
}

/// The shared connection and its health.
pub(crate) struct Client {
    seeds: Vec<String>,
    conn: Mutex<Option<ClusterConnection>>,
    health: Mutex<Health>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("seeds", &self.seeds).finish_non_exhaustive()
    }
}

/// Why no connection was made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The cluster did not answer (in time): try again later.
    Unavailable(String),
    /// The cluster holds a directory of another layout: never use it.
    Layout { found: String, expected: String },
}

/// Connects, and checks (or, on a new cluster, records) the layout, so
/// that no replica ever writes a layout other replicas cannot read.
pub(crate) async fn connect(seeds: &[String]) -> Result<ClusterConnection, ConnectError> {
    let unavailable = |why: String| ConnectError::Unavailable(why);
    let client: ClusterClient =
        builder(seeds).build().map_err(|err| unavailable(err.to_string()))?;
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection()).await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => return Err(unavailable(err.to_string())),
        Err(_) => return Err(unavailable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    };
    let expected = keys::meta_value();
    let check = async {
        redis::cmd("SET")
            .arg(keys::META)
            .arg(&expected)
            .arg("NX")
            .query_async::<Option<String>>(&mut conn)
            .await?;
        redis::cmd("GET").arg(keys::META).query_async::<String>(&mut conn).await
    };
    let found = match tokio::time::timeout(CALL_TIMEOUT, check).await {
        Ok(Ok(found)) => found,
        Ok(Err(err)) => return Err(unavailable(err.to_string())),
        Err(_) => return Err(unavailable("Redis did not answer".to_owned())),
    };
    if found != expected {
        return Err(ConnectError::Layout { found, expected });
    }
    Ok(conn)
}

impl Client {
    pub(crate) fn new(seeds: Vec<String>, conn: Option<ClusterConnection>) -> Client {
        Client {
            seeds,
            conn: Mutex::new(conn),
            health: Mutex::new(Health { last_ok: Instant::now(), failing: false }),
        }
    }

    /// Runs `call` on the connection within [`CALL_TIMEOUT`]; any failure
    /// is [`StoreError::Unavailable`] saying what happened.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(conn) = lock(&self.conn).clone() else {
            return Err(StoreError::Unavailable { why: "not connected to Redis yet".to_owned() });
        };
        let why = match tokio::time::timeout(CALL_TIMEOUT, call(conn)).await {
            Ok(Ok(value)) => {
                let mut health = lock(&self.health);
                health.last_ok = Instant::now();
                health.failing = false;
                return Ok(value);
            }
            Ok(Err(err)) => format!("{what}: {err}"),
            Err(_) => format!("{what}: no answer from Redis within {CALL_TIMEOUT:?}"),
        };
        lock(&self.health).failing = true;
        tracing::debug!(%why, "store call failed");
        Err(StoreError::Unavailable { why })
    }

    /// The first seed: how to reach a node (credentials, TLS) when a call
    /// needs a connection of its own.
    pub(crate) fn seed(&self) -> &str {
        self.seeds.first().map_or("", String::as_str)
    }

    /// Whether the watchdog should rebuild the connection now.
    fn stuck(&self, now: Instant) -> bool {
        lock(&self.health).stuck(now)
    }

    /// Connects when there is no connection, and rebuilds a stuck one,
    /// until `stop`.
    pub(crate) async fn watchdog(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let missing = lock(&self.conn).is_none();
            if !missing && !self.stuck(Instant::now()) {
                continue;
            }
            if !missing {
                tracing::warn!(
                    "no Redis call has succeeded for {WATCHDOG:?}; rebuilding the Redis client"
                );
            }
            match connect(&self.seeds).await {
                Ok(conn) => {
                    *lock(&self.conn) = Some(conn);
                    let mut health = lock(&self.health);
                    health.last_ok = Instant::now();
                    health.failing = false;
                    tracing::info!("connected to Redis");
                }
                Err(ConnectError::Unavailable(why)) => {
                    tracing::warn!(%why, "cannot connect to Redis");
                }
                Err(ConnectError::Layout { found, expected }) => tracing::error!(
                    %found,
                    %expected,
                    "the Redis cluster holds a directory of another layout; not using it"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failing_calls_with_no_success_for_the_watchdog_period_are_stuck() {
        let t0 = Instant::now();
        let quiet = Health { last_ok: t0, failing: false };
        assert!(!quiet.stuck(t0 + WATCHDOG * 10), "no calls, nothing to rebuild");
        let failing = Health { last_ok: t0, failing: true };
        assert!(!failing.stuck(t0 + WATCHDOG - Duration::from_millis(1)));
        assert!(failing.stuck(t0 + WATCHDOG));
        assert!(!failing.stuck(t0 - Duration::from_secs(1)), "a clock read before last_ok");
    }
}
