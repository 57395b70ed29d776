//! The directory figures: how many heartbeats a second one directoryd
//! sustains from 100,000 registered peers (and their p99), how long paging
//! through all of them takes, and how much memory each one costs; then the
//! same over two replicas sharing a 6-node Redis Cluster (see [`redis`]),
//! and how long a killed Redis master keeps registrations away.
//!
//! One directoryd child serves all three, in memory (no `--data-dir`), with
//! a lease long enough that nothing expires during the run. The peers live
//! in another process, this binary re-executed as `dir-load` (see
//! [`load_main`]), so that the load generator's CPU and memory are never
//! counted as the directory's. The two talk over the child's stdin and
//! stdout, one line each way per step:
//!
//! ```text
//! child:  ready                     connections open and warm
//! parent: register                  (after reading directoryd's VmRSS)
//! child:  registered N SECONDS
//! parent: heartbeat                 (after VmRSS again and the listings)
//! child:  {"heartbeats": ..., "p99_ms": ...}   one JSON line, then exits
//! ```

mod load;
mod redis;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use pb::directory_client::DirectoryClient;
use peerchat::v1 as pb;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::daemons::{self, Daemon};
use crate::figure::{Figure, Goal};
use crate::procfs;

pub use self::load::load_main;
pub use self::redis::run as run_redis;

/// Peers registered in a full run; the figures are defined at this size.
const FULL_PEERS: usize = 100_000;
/// Peers registered with `--quick`.
const QUICK_PEERS: usize = 10_000;
/// Longer than the whole run: no registration expires while measured.
const TTL_SECONDS: u64 = 600;
/// The largest page the directory serves.
const PAGE_SIZE: u32 = 1000;
/// Full listings timed; the median is reported (the first one also opens
/// the connection).
const LISTINGS: usize = 3;
/// A heartbeat slower than this at the 99th percentile does not count as
/// sustained.
const HEARTBEAT_P99_GOAL_MS: f64 = 10.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct DirOptions {
    /// A small run (10,000 peers, short heartbeat phase) for a quick look.
    pub quick: bool,
    /// The directoryd binary.
    pub directoryd: PathBuf,
}

/// The sizes of one run.
#[derive(Debug, Clone)]
struct Plan {
    peers: usize,
    /// HTTP/2 connections the load generator shares among its requests.
    connections: usize,
    /// Heartbeats in flight at once that the load generator tries, each
    /// for `probe`; the best one whose p99 meets the goal is then measured
    /// for `measure`.
    windows: Vec<usize>,
    probe: Duration,
    measure: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                peers: QUICK_PEERS,
                connections: 8,
                windows: vec![64, 128],
                probe: Duration::from_millis(700),
                measure: Duration::from_secs(2),
            }
        } else {
            Plan {
                peers: FULL_PEERS,
                connections: 8,
                windows: vec![64, 128, 192, 256],
                probe: Duration::from_millis(1500),
                measure: Duration::from_secs(8),
            }
        }
    }

    /// The `dir-load` arguments for this plan against `addrs`, counting
    /// windows whose p99 is above `p99_goal_ms` as not sustained.
    fn load_args(&self, addrs: &[SocketAddr], p99_goal_ms: f64) -> Vec<String> {
        let windows: Vec<String> = self.windows.iter().map(usize::to_string).collect();
        let addrs: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        vec![
            "--addr".to_owned(),
            addrs.join(","),
            "--peers".to_owned(),
            self.peers.to_string(),
            "--connections".to_owned(),
            self.connections.to_string(),
            "--windows".to_owned(),
            windows.join(","),
            "--probe-ms".to_owned(),
            self.probe.as_millis().to_string(),
            "--measure-ms".to_owned(),
            self.measure.as_millis().to_string(),
            "--p99-goal-ms".to_owned(),
            p99_goal_ms.to_string(),
        ]
    }
}

/// Runs the directory figures: `dir_heartbeats`, `dir_heartbeat_p99`,
/// `dir_list_100k` and `dir_rss_per_peer`.
pub async fn run(opts: &DirOptions) -> anyhow::Result<Vec<Figure>> {
    let plan = Plan::new(opts.quick);
    let mut directory = Directoryd::start(&opts.directoryd, plan.peers, None)?;
    let measured = measure(&plan, &directory).await;
    directory.daemon.stop();
    let figures = measured?;
    if opts.quick {
        eprintln!(
            "directory: quick run with {} peers, not {FULL_PEERS}: dir_list_100k is the \
             measured listing time scaled by {}; heartbeats and memory are as measured",
            plan.peers,
            FULL_PEERS / plan.peers
        );
    }
    Ok(figures)
}

async fn measure(plan: &Plan, directory: &Directoryd) -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe().context("finding this executable to re-run as dir-load")?;
    let mut load = Load::start(&exe, &plan.load_args(&[directory.addr], HEARTBEAT_P99_GOAL_MS))?;

    load.expect_line("ready", Duration::from_secs(30)).await?;
    let rss_before = directory.rss_kib()?;
    load.send("register").await?;
    let registered = load.expect_line("registered", Duration::from_secs(300)).await?;
    let rss_after = directory.rss_kib()?;
    let (count, register_secs) = parse_registered(&registered)?;
    if count != plan.peers {
        bail!("dir-load registered {count} peers, not {}", plan.peers);
    }
    eprintln!(
        "directory: {count} peers registered in {register_secs:.1} s ({:.0}/s); \
         VmRSS {rss_before:.0} KiB -> {rss_after:.0} KiB",
        count as f64 / register_secs.max(1e-9)
    );

    let listing = time_listings(directory.addr, plan.peers).await?;
    let scale = FULL_PEERS as f64 / plan.peers as f64;

    let cpu_before = (procfs::cpu_time(Some(directory.pid()))?, procfs::cpu_time(Some(load.pid))?);
    load.send("heartbeat").await?;
    let report_line =
        load.expect_line("{", plan.measure + plan.probe * 8 + Duration::from_secs(60)).await?;
    let cpu_after = (procfs::cpu_time(Some(directory.pid()))?, procfs::cpu_time(Some(load.pid))?);
    load.finish().await?;
    let report: Value = serde_json::from_str(&report_line)
        .with_context(|| format!("dir-load's report is not JSON: {report_line}"))?;
    let field = |name: &str| {
        report[name].as_f64().ok_or_else(|| anyhow!("dir-load's report has no {name}: {report}"))
    };
    let errors = field("errors")?;
    if errors > 0.0 {
        bail!("{errors} heartbeats failed: {report}");
    }
    let (rate, p50, p99) = (field("rate")?, field("p50_ms")?, field("p99_ms")?);
    let all = field("all_heartbeats")?.max(1.0);
    eprintln!(
        "directory: CPU per heartbeat (probes included): directoryd {:.1} us, dir-load {:.1} us",
        cpu_after.0.saturating_sub(cpu_before.0).as_secs_f64() * 1e6 / all,
        cpu_after.1.saturating_sub(cpu_before.1).as_secs_f64() * 1e6 / all,
    );
    eprintln!(
        "directory: {rate:.0} heartbeats/s from {} peers at a window of {} over {} \
         connections: p50 {p50:.2} ms, p99 {p99:.2} ms (probes: {})",
        plan.peers, report["window"], plan.connections, report["probes"]
    );

    let grown = (rss_after - rss_before).max(0.0);
    Ok(vec![
        Figure {
            name: "dir_heartbeats",
            value: rate,
            unit: "hb/s",
            baseline: None,
            goal: Goal::AtLeast(50_000.0),
        },
        Figure {
            name: "dir_heartbeat_p99",
            value: p99,
            unit: "ms",
            baseline: None,
            goal: Goal::AtMost(HEARTBEAT_P99_GOAL_MS),
        },
        Figure {
            name: "dir_list_100k",
            value: listing.as_secs_f64() * scale,
            unit: "s",
            baseline: None,
            goal: Goal::AtMost(1.0),
        },
        Figure {
            name: "dir_rss_per_peer",
            value: grown / plan.peers as f64,
            unit: "KiB",
            baseline: None,
            goal: Goal::AtMost(1.0),
        },
    ])
}

/// `registered N SECONDS` → (N, SECONDS).
fn parse_registered(line: &str) -> anyhow::Result<(usize, f64)> {
    let mut words = line.split_whitespace().skip(1);
    let parsed = (|| Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?)))();
    parsed.ok_or_else(|| anyhow!("dir-load said {line:?}, not `registered N SECONDS`"))
}

/// Pages through the whole list [`LISTINGS`] times on a fresh connection;
/// the median time. Each listing must hold exactly `expected` peers.
async fn time_listings(addr: SocketAddr, expected: usize) -> anyhow::Result<Duration> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to the directory at {addr} to list"))?;
    let mut client = DirectoryClient::new(channel);
    let mut times = Vec::with_capacity(LISTINGS);
    for _ in 0..LISTINGS {
        let started = Instant::now();
        let (mut peers, mut token) = (0, String::new());
        loop {
            let request = pb::ListRequest { page_size: PAGE_SIZE, page_token: token };
            let page = client.list(request).await.context("listing the directory")?.into_inner();
            peers += page.peers.len();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        times.push(started.elapsed());
        if peers != expected {
            bail!("a full listing held {peers} peers, not the {expected} registered");
        }
    }
    times.sort();
    eprintln!("directory: full listings of {expected} peers took {times:?}");
    Ok(times[times.len() / 2])
}

/// directoryd for this benchmark: in memory, with abuse limits above the
/// load, stopped by pid when dropped.
#[derive(Debug)]
struct Directoryd {
    daemon: Daemon,
    addr: SocketAddr,
    /// Holds directoryd's log; removed after it stopped (fields drop in order).
    _home: TempDir,
}

impl Directoryd {
    /// `store`: a `--store` value (the Redis seeds), or the default.
    fn start(binary: &Path, peers: usize, store: Option<&str>) -> anyhow::Result<Directoryd> {
        let home = tempfile::Builder::new()
            .prefix("pcbench-dir-")
            .tempdir_in("/tmp")
            .context("creating a temp dir in /tmp")?;
        let mut cmd = daemons::command(binary);
        cmd.args(["--listen", "127.0.0.1:0", "--ttl", &TTL_SECONDS.to_string()])
            // One source registers every peer: the defaults (20 and 100
            // calls a second, 256 peers per source) would refuse the load.
            .args(["--register-rate", "1000000", "--list-rate", "1000000"])
            .args(["--new-names-per-day", "4000000000"])
            .args(["--max-per-source", &(2 * peers).to_string()]);
        if let Some(store) = store {
            cmd.args(["--store", store]);
        }
        let log = home.path().join("directoryd.log");
        let (daemon, line) = Daemon::start_ready("directoryd", &mut cmd, Some(&log))?;
        let addr = line
            .strip_prefix("directoryd listening on ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .ok_or_else(|| anyhow!("directoryd's readiness line {line:?} has no address"))?;
        Ok(Directoryd { daemon, addr, _home: home })
    }

    fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// VmRSS in KiB.
    fn rss_kib(&self) -> anyhow::Result<f64> {
        Ok(procfs::status_mib(self.pid(), "VmRSS")? * 1024.0)
    }
}

/// The `dir-load` child.
#[derive(Debug)]
struct Load {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Load {
    fn start(exe: &Path, args: &[String]) -> anyhow::Result<Load> {
        let mut child = Command::new(exe)
            .arg("dir-load")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A Ctrl-C at the terminal reaches only the bench, which then
            // stops this child; were the bench killed outright, the child
            // exits on its own when its stdin or stdout closes.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} dir-load", exe.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("dir-load exited at once"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("dir-load has no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("dir-load has no stdout"))?;
        Ok(Load { child, pid, stdin, stdout: BufReader::new(stdout).lines() })
    }

    async fn send(&mut self, word: &str) -> anyhow::Result<()> {
        self.stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .with_context(|| format!("telling dir-load to {word}"))?;
        self.stdin.flush().await.with_context(|| format!("telling dir-load to {word}"))
    }

    /// The next line, which must start with `prefix`.
    async fn expect_line(&mut self, prefix: &str, within: Duration) -> anyhow::Result<String> {
        let line = tokio::time::timeout(within, self.stdout.next_line())
            .await
            .map_err(|_| anyhow!("dir-load said nothing within {within:?} (waiting for {prefix})"))?
            .context("reading dir-load's stdout")?;
        match line {
            Some(line) if line.starts_with(prefix) => Ok(line),
            Some(line) => bail!("dir-load said {line:?}, expected {prefix}..."),
            None => {
                let status = self.child.wait().await?;
                bail!("dir-load exited ({status}) while we waited for {prefix}")
            }
        }
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .map_err(|_| anyhow!("dir-load did not exit after its report"))??;
        if !status.success() {
            bail!("dir-load failed: {status}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registered_line_parses() -> anyhow::Result<()> {
        assert_eq!(parse_registered("registered 100000 12.5")?, (100_000, 12.5));
        assert!(parse_registered("registered lots").is_err());
        Ok(())
    }

    #[test]
    fn the_load_arguments_round_trip() -> anyhow::Result<()> {
        let plan = Plan::new(true);
        let args = plan.load_args(&[SocketAddr::from(([127, 0, 0, 1], 7300))], 10.0);
        let parsed = load::LoadArgs::parse(args)?;
        assert_eq!(parsed.peers, QUICK_PEERS);
        assert_eq!(parsed.windows, plan.windows);
        Ok(())
    }
}
