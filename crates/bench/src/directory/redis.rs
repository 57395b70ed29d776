//! The directory over Redis Cluster: a 6-node cluster on loopback (3
//! masters, 3 replicas, `cluster-node-timeout 3000`), two directoryd
//! replicas on it, and the same load generator as the embedded store's
//! figures, its connections spread over both replicas.
//!
//! - `dir_redis_heartbeats`: heartbeats/s sustained with every peer
//!   registered, p99 at most 20 ms (goal at least 25,000/s).
//! - `dir_redis_list_100k`: a full paginated list through one replica
//!   (goal at most 2 s; scaled from the peers registered in `--quick`).
//! - `dir_failover`: seconds from `kill -9` of a Redis master to the first
//!   successful registration through every replica (goal at most 6 s).
//!
//! Skipped, saying so, where redis-server is not installed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use pb::directory_client::DirectoryClient;
use peerchat::v1 as pb;
use peerchat_directoryd::redis_layout::{bucket_key, bucket_of};
use peerchat_redis_cluster::{Cluster, Error as ClusterError, Options};
use ring::rand::SystemRandom;
use serde_json::Value;

use super::{DirOptions, Directoryd, FULL_PEERS, Load, Plan, parse_registered, time_listings};
use crate::figure::{Figure, Goal};

/// The p99 a heartbeat may take for its rate to count as sustained.
const P99_GOAL_MS: f64 = 20.0;
/// As the issue and the design notes ask; the tests use 2000.
const NODE_TIMEOUT_MS: u64 = 3000;
/// Failover attempts are made this often through each replica.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// A failover slower than this is a failure, not a figure.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// Runs the Redis figures, or returns none where Redis is not installed.
pub async fn run(opts: &DirOptions) -> anyhow::Result<Vec<Figure>> {
    let options = Options { node_timeout_ms: NODE_TIMEOUT_MS, ..Options::default() };
    let mut cluster = match Cluster::start(options) {
        Ok(cluster) => cluster,
        Err(ClusterError::NotInstalled { .. }) => {
            eprintln!(
                "directory: redis-server is not installed; the dir_redis figures are skipped"
            );
            return Ok(Vec::new());
        }
        Err(err) => return Err(err).context("starting a Redis Cluster"),
    };
    let plan = Plan::new(opts.quick);
    let store = cluster.store_url();
    let mut replicas = [
        Directoryd::start(&opts.directoryd, plan.peers, Some(&store))?,
        Directoryd::start(&opts.directoryd, plan.peers, Some(&store))?,
    ];
    let measured = measure(&plan, &replicas, &mut cluster).await;
    for replica in &mut replicas {
        replica.daemon.stop();
    }
    cluster.stop_all();
    measured
}

async fn measure(
    plan: &Plan,
    replicas: &[Directoryd; 2],
    cluster: &mut Cluster,
) -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe().context("finding this executable to re-run as dir-load")?;
    let addrs = [replicas[0].addr, replicas[1].addr];
    let mut load = Load::start(&exe, &plan.load_args(&addrs, P99_GOAL_MS))?;
    load.expect_line("ready", Duration::from_secs(30)).await?;
    load.send("register").await?;
    let registered = load.expect_line("registered", Duration::from_secs(600)).await?;
    let (count, register_secs) = parse_registered(&registered)?;
    eprintln!(
        "directory (redis): {count} peers registered through 2 replicas in {register_secs:.1} s \
         ({:.0}/s)",
        count as f64 / register_secs.max(1e-9)
    );
    let listing = time_listings(replicas[0].addr, plan.peers).await?;
    load.send("heartbeat").await?;
    let report_line =
        load.expect_line("{", plan.measure + plan.probe * 8 + Duration::from_secs(60)).await?;
    load.finish().await?;
    let report: Value = serde_json::from_str(&report_line)
        .with_context(|| format!("dir-load's report is not JSON: {report_line}"))?;
    let field = |name: &str| {
        report[name].as_f64().ok_or_else(|| anyhow!("dir-load's report has no {name}: {report}"))
    };
    if field("errors")? > 0.0 {
        bail!("heartbeats through the Redis store failed: {report}");
    }
    let (rate, p50, p99) = (field("rate")?, field("p50_ms")?, field("p99_ms")?);
    eprintln!(
        "directory (redis): {rate:.0} heartbeats/s from {} peers through 2 replicas at a window \
         of {}: p50 {p50:.2} ms, p99 {p99:.2} ms",
        plan.peers, report["window"]
    );
    let failover = failover(cluster, &addrs).await?;
    let scale = FULL_PEERS as f64 / plan.peers as f64;
    Ok(vec![
        Figure {
            name: "dir_redis_heartbeats",
            value: rate,
            unit: "hb/s",
            baseline: None,
            goal: Goal::AtLeast(25_000.0),
        },
        Figure {
            name: "dir_redis_heartbeat_p99",
            value: p99,
            unit: "ms",
            baseline: None,
            goal: Goal::AtMost(P99_GOAL_MS),
        },
        Figure {
            name: "dir_redis_list_100k",
            value: listing.as_secs_f64() * scale,
            unit: "s",
            baseline: None,
            goal: Goal::AtMost(2.0),
        },
        Figure {
            name: "dir_failover",
            value: failover.as_secs_f64(),
            unit: "s",
            baseline: None,
            goal: Goal::AtMost(6.0),
        },
    ])
}

/// Kills the master serving the names of one bucket, then starts a
/// registration of a new name of that bucket through each replica every
/// [`RETRY_EVERY`], without waiting for the ones in flight (an attempt that
/// meets the dead master can take the directory's whole call deadline, and
/// waiting for it would measure that deadline, not the failover): the time
/// from the kill to the first success through each replica, the later of
/// the two. Names in other buckets register throughout, on other masters.
async fn failover(cluster: &mut Cluster, addrs: &[SocketAddr]) -> anyhow::Result<Duration> {
    let bucket = bucket_of("failover-0");
    let key = bucket_key(bucket, "live").ok_or_else(|| anyhow!("no bucket {bucket}"))?;
    let victim = cluster.master_for_key(&key).context("finding a bucket's master")?;
    let attempts = (FAILOVER_LIMIT.as_millis() / RETRY_EVERY.as_millis()) as usize;
    // New names that land in the same bucket, hence on the killed master.
    let mut names = (1..10_000_000)
        .map(|n| format!("failover-{n}"))
        .filter(|n| bucket_of(n) == bucket)
        .take(attempts * addrs.len());
    let mut replicas = Vec::new();
    for addr in addrs {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .timeout(Duration::from_secs(3))
            .connect()
            .await
            .with_context(|| format!("connecting to the replica at {addr}"))?;
        let names: Vec<String> = names.by_ref().take(attempts).collect();
        replicas.push((DirectoryClient::new(channel), names));
    }
    cluster.kill9(victim).context("killing a Redis master")?;
    let killed = Instant::now();
    let tries = replicas.into_iter().enumerate().map(|(i, (client, names))| async move {
        let rng = SystemRandom::new();
        let mut in_flight = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(RETRY_EVERY);
        let mut names = names.into_iter().enumerate();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let Some((attempt, name)) = names.next() else {
                        bail!("no registration through replica {i} within {FAILOVER_LIMIT:?}");
                    };
                    let (mut client, rng) = (client.clone(), rng.clone());
                    in_flight.spawn(async move {
                        super::load::register_as(&mut client, &rng, name, attempt).await
                    });
                }
                Some(done) = in_flight.join_next() => {
                    if matches!(done, Ok(Ok(_))) {
                        return Ok(killed.elapsed());
                    }
                }
            }
        }
    });
    let times = futures_util::future::try_join_all(tries).await?;
    eprintln!(
        "directory (redis): after kill -9 of master :{victim}, registrations back in {times:?}"
    );
    Ok(times.into_iter().max().unwrap_or_default())
}
