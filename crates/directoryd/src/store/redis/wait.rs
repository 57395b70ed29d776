//! `WAIT` on a connection of its own.
//!
//! Redis answers nothing else a client sends while that client's `WAIT`
//! blocks, and the cluster client sends every call to a node over one
//! shared connection: a `WAIT` there held up every heartbeat, lookup and
//! list page going to that master for as long as its replica took to
//! answer — up to half a second per new name, for as long as a stalled
//! replica still counted as connected (a minute, by default). So the wait
//! runs on a connection to the bucket's master kept for waiting: taken
//! from a small pool per master ([`Waiters`]) for one wait at a time, so
//! that waits do not queue behind each other either, and put back after
//! (a connection per wait would leave a socket in TIME_WAIT per new name).
//!
//! `WAIT` counts the replicas that have its own client's last write, so
//! that connection first writes a counter of the bucket (`INCR`): the
//! replication stream is in order, and a replica that has that write has
//! every write the master made before it, the new binding among them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult,
};

use crate::lock;

/// Idle connections kept per master: enough for the new names that wait
/// at the same moment on one master, which are few (a daily quota).
const POOL_PER_MASTER: usize = 4;

/// Making a connection for waiting, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Idle connections for waiting, by master address.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    idle: Mutex<HashMap<(String, u16), Vec<MultiplexedConnection>>>,
}

impl Waiters {
    /// On a connection of its own to the master at `(host, port)`
    /// (reached as `seed` says): a write to `mark` (a key of the bucket,
    /// so a node that no longer serves it answers MOVED), then `WAIT 1
    /// timeout_ms`. Returns how many replicas have that write.
    pub(crate) async fn for_replica(
        &self,
        seed: &str,
        master: (String, u16),
        mark: &str,
        timeout_ms: u64,
    ) -> RedisResult<i64> {
        let idle = lock(&self.idle).get_mut(&master).and_then(Vec::pop);
        let (conn, replicas) = match idle {
            // An idle connection may have died meanwhile (the master
            // restarted, the server or a middlebox closed it): one that
            // fails for that is replaced, once.
            Some(mut conn) => match wait_on(&mut conn, mark, timeout_ms).await {
                Ok(replicas) => (conn, replicas),
                Err(err) if err.is_io_error() || err.is_connection_dropped() => {
                    let mut conn = connect(seed, &master, timeout_ms).await?;
                    let replicas = wait_on(&mut conn, mark, timeout_ms).await?;
                    (conn, replicas)
                }
                Err(err) => return Err(err),
            },
            None => {
                let mut conn = connect(seed, &master, timeout_ms).await?;
                let replicas = wait_on(&mut conn, mark, timeout_ms).await?;
                (conn, replicas)
            }
        };
        // Only a connection that answered goes back; a failed one is dropped.
        let mut idle = lock(&self.idle);
        let pool = idle.entry(master).or_default();
        if pool.len() < POOL_PER_MASTER {
            pool.push(conn);
        }
        Ok(replicas)
    }
}

/// The host and port of the node that answered `CLUSTER NODES`: its
/// `myself` line (`<id> <host:port@bus[,hostname]> myself,master ...`).
pub(crate) fn own_address(nodes: &str) -> Option<(String, u16)> {
    nodes.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let addr = fields.nth(1)?;
        let flags = fields.next()?;
        if !flags.split(',').any(|flag| flag == "myself") {
            return None;
        }
        let addr = addr.split(['@', ',']).next()?;
        let (host, port) = addr.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    })
}

/// A new connection to `master` for waiting up to `timeout_ms`.
async fn connect(
    seed: &str,
    master: &(String, u16),
    timeout_ms: u64,
) -> RedisResult<MultiplexedConnection> {
    let node = info_for(seed, master.0.clone(), master.1)?;
    // The wait's own timeout, with room: not the client's default (500
    // ms), which a 400 ms WAIT can reach.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_millis(timeout_ms + 1_000)));
    redis::Client::open(node)?.get_multiplexed_async_connection_with_config(&config).await
}

/// The write, then the wait, on `conn`.
async fn wait_on(
    conn: &mut MultiplexedConnection,
    mark: &str,
    timeout_ms: u64,
) -> RedisResult<i64> {
    redis::cmd("INCR").arg(mark).query_async::<i64>(conn).await?;
    redis::cmd("WAIT").arg(1).arg(timeout_ms).query_async(conn).await
}

/// How to reach `host:port` with the seed's settings (credentials, TLS).
pub(crate) fn info_for(seed: &str, host: String, port: u16) -> RedisResult<ConnectionInfo> {
    let info = seed.into_connection_info()?;
    let addr = match info.addr().clone() {
        ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
            ConnectionAddr::TcpTls { host, port, insecure, tls_params }
        }
        _ => ConnectionAddr::Tcp(host, port),
    };
    Ok(info.set_addr(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_that_answered_is_found_by_its_myself_flag() {
        let nodes = "\
07c3 127.0.0.1:7002@17002 master - 0 1 2 connected 5461-10922
e7d1 127.0.0.1:7001@17001,host-a myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:7004@17004 slave e7d1 0 1 1 connected
";
        assert_eq!(own_address(nodes), Some(("127.0.0.1".to_owned(), 7001)));
        assert_eq!(
            own_address("e7d1 ::1:7001@17001 myself,master - 0"),
            Some(("::1".into(), 7001))
        );
        assert_eq!(own_address("07c3 127.0.0.1:7002@17002 master - 0"), None);
        assert_eq!(own_address("e7d1 nonsense myself,master"), None);
        assert_eq!(own_address(""), None);
    }

    #[test]
    fn another_node_is_reached_with_the_seed_settings() {
        let info = info_for("redis://user:secret@127.0.0.1:7001/", "10.0.0.2".into(), 7005)
            .expect("a valid seed");
        assert!(matches!(info.addr(), ConnectionAddr::Tcp(h, 7005) if h == "10.0.0.2"));
        let seed = "redis://user:secret@127.0.0.1:7001/".into_connection_info().expect("valid");
        assert_eq!(info.redis_settings().password(), seed.redis_settings().password());
        assert!(info_for("not a url", "h".into(), 1).is_err());
    }
}
