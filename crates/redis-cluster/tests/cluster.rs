//! The harness against a real redis-server: a write survives its master's
//! SIGKILL, the old master rejoins, the whole cluster comes back from its
//! AOFs, and dropping the cluster leaves no node running. Skips (passing, saying why on stderr) where redis-server is
//! missing, unless PEERCHAT_REDIS_REQUIRED=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use peerchat_redis_cluster::{Cluster, Error, Options, pid_alive};

/// Twice a failover at the default node timeout, with room for a slow CI.
const FAILOVER: Duration = Duration::from_secs(20);

#[test]
fn a_write_survives_the_sigkill_of_its_master() {
    let started = Instant::now();
    let Some(mut cluster) = Cluster::start_or_skip(Options::default()) else { return };
    eprintln!("started 3+3 in {:?}", started.elapsed());

    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    assert_eq!(cluster.seeds().len(), 6);
    assert_eq!(
        cluster.store_url(),
        ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    );
    assert_eq!(cluster.masters().unwrap().len(), 3);

    // Written through any node: -c follows the MOVED to the key's master.
    assert_eq!(cluster.cli(ports[0], &["-c", "set", "k", "v"]).unwrap(), "OK");
    let master = cluster.master_for_key("k").unwrap();
    assert!(cluster.masters().unwrap().contains(&master));
    assert_eq!(cluster.cli(master, &["get", "k"]).unwrap(), "v");
    // Replication is asynchronous: without this the kill could beat it.
    cluster.wait_replicated(master, Duration::from_secs(5)).unwrap();

    let killed_at = Instant::now();
    cluster.kill9(master).unwrap();
    cluster.wait_failover(master, FAILOVER).unwrap();
    eprintln!("failed over in {:?}", killed_at.elapsed());
    let successor = cluster.master_for_key("k").unwrap();
    assert_ne!(successor, master);
    assert_eq!(cluster.cli(successor, &["get", "k"]).unwrap(), "v");
    assert!(!cluster.masters().unwrap().contains(&master));

    let restarted_at = Instant::now();
    cluster.restart(master).unwrap();
    cluster.wait_healthy(FAILOVER).unwrap();
    eprintln!("rejoined and synced in {:?}", restarted_at.elapsed());
    // It came back as its successor's replica, with the key.
    assert_eq!(cluster.master_for_key("k").unwrap(), successor);
    assert_eq!(cluster.cli(master, &["-c", "get", "k"]).unwrap(), "v");

    // The whole store down at once, then back from the AOFs.
    let crashed_at = Instant::now();
    cluster.kill9_all();
    assert!(cluster.pids().is_empty());
    assert!(matches!(cluster.kill9(master), Err(Error::NodeState { .. })));
    cluster.restart_all().unwrap();
    cluster.wait_healthy(FAILOVER).unwrap();
    eprintln!("whole cluster back in {:?}", crashed_at.elapsed());
    assert_eq!(cluster.cli(ports[0], &["-c", "get", "k"]).unwrap(), "v");
    assert!(matches!(cluster.restart(master), Err(Error::NodeState { .. })));

    let pids = cluster.pids();
    assert_eq!(pids.len(), 6);
    let dir = cluster.dir().to_owned();
    let stopping_at = Instant::now();
    drop(cluster);
    eprintln!("stopped in {:?}", stopping_at.elapsed());
    let alive: Vec<u32> = pids.into_iter().filter(|&pid| pid_alive(pid)).collect();
    assert!(alive.is_empty(), "still running after drop: {alive:?}");
    if std::env::var_os(peerchat_redis_cluster::KEEP_VAR).is_none() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    eprintln!("whole test in {:?}", started.elapsed());
}
