//! `peerchat-bench dir-load`: the directory's peers, in a process of their
//! own. Registers every peer (its own ed25519 key each, Challenge + signed
//! Register), then heartbeats them round-robin with a fixed number of
//! requests in flight over a few shared HTTP/2 connections. Steps on the
//! parent's word (see the parent module for the protocol).

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser as _;
use pb::directory_client::DirectoryClient;
use peerchat::v1 as pb;
use peerchat_core::identity::registration_payload;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// A probe's p99 is short (a second or two) and noisy: the window chosen
/// from it should have met the goal with this much to spare, so that the
/// longer measurement meets it too.
const P99_MARGIN: f64 = 0.8;
/// Registrations in flight at once: enough to keep both sides' cores busy
/// with signing and verifying.
const REGISTER_WINDOW: usize = 64;

/// The `dir-load` arguments.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dir-load")]
pub(super) struct LoadArgs {
    /// The directory; with several (comma-separated), the connections are
    /// spread over them in turn, as over replicas sharing one store.
    #[arg(long, value_delimiter = ',', required = true)]
    addr: Vec<SocketAddr>,
    /// Peers to register.
    #[arg(long)]
    pub(super) peers: usize,
    /// HTTP/2 connections shared by all requests.
    #[arg(long)]
    connections: usize,
    /// Heartbeats in flight to try, each for `probe_ms`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(super) windows: Vec<usize>,
    /// How long each window is tried.
    #[arg(long)]
    probe_ms: u64,
    /// How long the chosen window is measured.
    #[arg(long)]
    measure_ms: u64,
    /// Windows whose p99 is above this are not chosen.
    #[arg(long)]
    p99_goal_ms: f64,
}

impl LoadArgs {
    /// Parses the arguments after `dir-load` (a leading `dir-load` is
    /// skipped too).
    pub(super) fn parse(args: Vec<String>) -> anyhow::Result<LoadArgs> {
        let rest = args.into_iter().skip_while(|arg| arg == "dir-load");
        LoadArgs::try_parse_from(std::iter::once("dir-load".to_owned()).chain(rest))
            .context("dir-load arguments")
    }
}

/// Entry for the load-generator child process, run as
/// `peerchat-bench dir-load ARGS...`.
pub fn load_main(args: Vec<String>) -> anyhow::Result<()> {
    let args = LoadArgs::parse(args)?;
    if args.peers == 0 || args.connections == 0 || args.windows.contains(&0) {
        bail!("dir-load needs at least one peer, connection and request in flight");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the dir-load runtime")?;
    let channels = runtime.block_on(connect(&args.addr, args.connections))?;
    say("ready")?;

    wait_for("register")?;
    let started = Instant::now();
    let peers = runtime.block_on(register_all(&channels, args.peers))?;
    say(&format!("registered {} {:.3}", peers.len(), started.elapsed().as_secs_f64()))?;

    wait_for("heartbeat")?;
    // The heartbeats run on one thread, over connections of their own: the
    // load generator shares the machine's cores with the directory, and a
    // single-threaded client spends less CPU a request (no work stealing,
    // no wake-ups across threads), which leaves more to what is measured.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the heartbeat runtime")?;
    let report = single.block_on(async {
        let channels = connect(&args.addr, args.connections).await?;
        heartbeat_all(&channels, Arc::new(peers), &args).await
    })?;
    say(&report.to_string())
}

/// One line to the parent.
fn say(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).context("writing to the parent")
}

/// Blocks until the parent says `word`.
fn wait_for(word: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).context("reading from the parent")? == 0 {
        bail!("the parent closed stdin before saying {word}");
    }
    if line.trim() != word {
        bail!("the parent said {:?}, expected {word}", line.trim());
    }
    Ok(())
}

/// Opens `count` connections, spread over `addrs` in turn, and makes one
/// request on each, so that neither side's connection setup is counted
/// later.
async fn connect(addrs: &[SocketAddr], count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for addr in addrs.iter().cycle().take(count) {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to the directory at {addr}"))?;
        let probe = pb::HeartbeatRequest {
            name: "warm-up".to_owned(),
            lease: String::new(),
            status: pb::PeerStatus::Available.into(),
        };
        match DirectoryClient::new(channel.clone()).heartbeat(probe).await {
            Err(status) if status.code() == Code::NotFound => {}
            other => bail!("a heartbeat without a registration got {other:?}"),
        }
        channels.push(channel);
    }
    Ok(channels)
}

/// A registered peer, as its heartbeats need it.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    name: String,
    lease: String,
}

fn unix_millis() -> anyhow::Result<i64> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH)?;
    Ok(i64::try_from(since.as_millis())?)
}

/// Registers peers `0..count`, [`REGISTER_WINDOW`] at a time.
async fn register_all(channels: &[Channel], count: usize) -> anyhow::Result<Vec<Peer>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for worker in 0..REGISTER_WINDOW {
        let mut client = DirectoryClient::new(channels[worker % channels.len()].clone());
        let next = next.clone();
        tasks.spawn(async move {
            let rng = SystemRandom::new();
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(done);
                }
                done.push((i, register(&mut client, &rng, i).await?));
            }
        });
    }
    let mut peers: Vec<Option<Peer>> = vec![None; count];
    while let Some(done) = tasks.join_next().await {
        for (i, peer) in done.context("a registration task")?? {
            peers[i] = Some(peer);
        }
    }
    peers
        .into_iter()
        .enumerate()
        .map(|(i, peer)| peer.ok_or_else(|| anyhow!("peer {i} was never registered")))
        .collect()
}

/// Peer `i`: a fresh key, Challenge, then Register signed by it.
async fn register(
    client: &mut DirectoryClient<Channel>,
    rng: &SystemRandom,
    i: usize,
) -> anyhow::Result<Peer> {
    register_as(client, rng, format!("bench-{i:06}"), i).await
}

/// Registers `name` with a fresh key, listed at port `1 + i`.
pub(super) async fn register_as(
    client: &mut DirectoryClient<Channel>,
    rng: &SystemRandom,
    name: String,
    i: usize,
) -> anyhow::Result<Peer> {
    let mut seed = [0u8; 32];
    rng.fill(&mut seed).map_err(|_| anyhow!("no randomness for a key"))?;
    let key = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|err| anyhow!("making a key from a seed: {err:?}"))?;
    let nonce = client
        .challenge(pb::ChallengeRequest {})
        .await
        .with_context(|| format!("Challenge for {name}"))?
        .into_inner()
        .nonce;
    // All from one address, a port each, as behind one NAT.
    let port = u32::try_from(1 + i % 65_535)?;
    let timestamp_ms = unix_millis()?;
    let payload = registration_payload(&nonce, timestamp_ms, port, &name, "");
    let request = pb::RegisterRequest {
        name: name.clone(),
        advertise: String::new(),
        port,
        status: pb::PeerStatus::Available.into(),
        public_key: key.public_key().as_ref().to_vec(),
        nonce,
        timestamp_ms,
        signature: key.sign(&payload).as_ref().to_vec(),
    };
    let lease = client
        .register(request)
        .await
        .with_context(|| format!("Register {name}"))?
        .into_inner()
        .lease;
    Ok(Peer { name, lease })
}

/// One stretch of heartbeats at a fixed window.
#[derive(Debug, Clone)]
struct Run {
    window: usize,
    heartbeats: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: usize,
    first_error: Option<String>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.heartbeats as f64 / self.seconds.max(1e-9)
    }
}

/// Tries each window, then measures the one with the highest rate among
/// those whose p99 met the goal with [`P99_MARGIN`] to spare (else among
/// those that met it; else the one with the lowest p99).
async fn heartbeat_all(
    channels: &[Channel],
    peers: Arc<Vec<Peer>>,
    args: &LoadArgs,
) -> anyhow::Result<Value> {
    let next = Arc::new(AtomicUsize::new(0));
    let probe = Duration::from_millis(args.probe_ms);
    let mut probes = Vec::with_capacity(args.windows.len());
    for &window in &args.windows {
        probes.push(drive(channels, &peers, &next, window, probe).await?);
    }
    let fastest_within = |limit_ms: f64| {
        probes
            .iter()
            .filter(|run| run.p99_ms <= limit_ms && run.errors == 0)
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
    };
    let best = fastest_within(args.p99_goal_ms * P99_MARGIN)
        .or_else(|| fastest_within(args.p99_goal_ms))
        .or_else(|| probes.iter().min_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms)))
        .ok_or_else(|| anyhow!("no window to try"))?;
    let window = best.window;
    let run =
        drive(channels, &peers, &next, window, Duration::from_millis(args.measure_ms)).await?;
    let errors = run.errors + probes.iter().map(|p| p.errors).sum::<usize>();
    let first_error =
        run.first_error.clone().or_else(|| probes.iter().find_map(|p| p.first_error.clone()));
    let all = run.heartbeats + probes.iter().map(|p| p.heartbeats).sum::<usize>();
    let tried: Vec<Value> = probes
        .iter()
        .map(|p| json!({"window": p.window, "rate": p.rate().round(), "p99_ms": p.p99_ms}))
        .collect();
    Ok(json!({
        "window": window,
        "heartbeats": run.heartbeats,
        "seconds": run.seconds,
        "rate": run.rate(),
        "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms,
        "max_ms": run.max_ms,
        "all_heartbeats": all,
        "errors": errors,
        "first_error": first_error,
        "probes": tried,
    }))
}

/// What one heartbeating task saw.
#[derive(Debug, Default)]
struct Seen {
    /// Microseconds per successful heartbeat.
    latencies: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
}

/// `window` tasks spread over `channels`, each heartbeating the next peer
/// (round-robin over all of them) as soon as its previous reply is in,
/// until `duration` is over.
async fn drive(
    channels: &[Channel],
    peers: &Arc<Vec<Peer>>,
    next: &Arc<AtomicUsize>,
    window: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for worker in 0..window {
        let mut client = DirectoryClient::new(channels[worker % channels.len()].clone());
        let (peers, next) = (peers.clone(), next.clone());
        tasks.spawn(async move {
            let mut seen = Seen::default();
            while Instant::now() < deadline {
                let peer = &peers[next.fetch_add(1, Ordering::Relaxed) % peers.len()];
                let request = pb::HeartbeatRequest {
                    name: peer.name.clone(),
                    lease: peer.lease.clone(),
                    status: pb::PeerStatus::Available.into(),
                };
                let sent = Instant::now();
                match client.heartbeat(request).await {
                    Ok(_) => {
                        let micros = sent.elapsed().as_micros();
                        seen.latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    Err(status) => {
                        seen.errors += 1;
                        seen.first_error.get_or_insert_with(|| format!("{}: {status}", peer.name));
                    }
                }
            }
            seen
        });
    }
    let mut all = Seen::default();
    while let Some(seen) = tasks.join_next().await {
        let mut seen = seen.context("a heartbeat task")?;
        all.latencies.append(&mut seen.latencies);
        all.errors += seen.errors;
        all.first_error = all.first_error.or(seen.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = all.latencies;
    latencies.sort_unstable();
    Ok(Run {
        window,
        heartbeats: latencies.len(),
        seconds,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        max_ms: percentile_ms(&latencies, 1.0),
        errors: all.errors,
        first_error: all.first_error,
    })
}

/// The `p` quantile of sorted microseconds, in milliseconds (0 if empty).
fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[at.min(sorted.len() - 1)]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let v: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.0), 1.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&v, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn a_leading_subcommand_word_is_skipped() -> anyhow::Result<()> {
        let args: Vec<String> = [
            "dir-load",
            "--addr",
            "127.0.0.1:1",
            "--peers",
            "3",
            "--connections",
            "1",
            "--windows",
            "8,16",
            "--probe-ms",
            "1",
            "--measure-ms",
            "2",
            "--p99-goal-ms",
            "10",
        ]
        .map(str::to_owned)
        .to_vec();
        let parsed = LoadArgs::parse(args)?;
        assert_eq!((parsed.peers, parsed.windows), (3, vec![8, 16]));
        Ok(())
    }
}
