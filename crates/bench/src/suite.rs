//! The peerd figures, in the order they are measured:
//!
//! 1. start directoryd, peerd alice and bob, serve-tcp and serve-grpc (twice:
//!    plain, and over TLS); alice opens a conversation with bob; both idle:
//!    `peerd_rss_idle`;
//! 2. rounds of tcp, link, gRPC and gRPC-over-TLS round trips in turn:
//!    `link_rtt_p50`, `link_rtt_p99`, `link_over_tls_grpc` (and the chart),
//!    and in the notes the TLS stream paced like the link (a diagnostic,
//!    not a goal's baseline: see [`Bidi::paced_round`]);
//! 3. rounds of `true`, `chatctl send`, `chatctl status`: `send_process`,
//!    `status_process`;
//! 4. rounds of the bare gRPC stream and peerd at full speed in turn:
//!    `throughput`; then the daemons' peak memory: `peerd_rss_load`.
//!
//! Latency comes before throughput so that a million stored messages do not
//! weigh on it, and memory under load is read last, when it is highest.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::baseline::{self, grpc::Bidi, tcp::Pinger, tls};
use crate::bins::Bins;
use crate::chart::Series;
use crate::control::{self, Control, LinkSamples};
use crate::daemons::{self, Daemon, Directory, Peer};
use crate::figure::{Figure, Goal};
use crate::plan::Plan;
use crate::report::number;
use crate::stats::Sorted;
use crate::{Measured, placement, process, procfs};

/// How long one round of any kind may take before the bench gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the daemons are left alone before their idle memory is read.
const SETTLE: Duration = Duration::from_secs(1);

fn progress(text: &str) {
    eprintln!("bench: {text}");
}

/// Everything the peerd figures run against. Fields drop in order: the
/// peers stop (and unregister) before the directory, and the temp dir goes
/// last.
#[derive(Debug)]
struct Cluster {
    alice: Peer,
    bob: Peer,
    tcp: (Daemon, SocketAddr),
    grpc: (Daemon, SocketAddr),
    grpc_tls: (Daemon, SocketAddr),
    /// How the bench's client trusts `grpc_tls`.
    tls: Arc<rustls::ClientConfig>,
    _directory: Directory,
    _home: TempDir,
}

impl Cluster {
    fn start(bins: &Bins) -> anyhow::Result<Cluster> {
        // In /tmp, not $TMPDIR: socket paths must stay under 108 bytes.
        let home = tempfile::Builder::new()
            .prefix("pcbench-")
            .tempdir_in("/tmp")
            .context("creating a temp dir in /tmp")?;
        let directory = Directory::start(&bins.directoryd, home.path())?;
        let alice = Peer::start(&bins.peerd, &home.path().join("a"), "alice", &directory.url())?;
        let bob = Peer::start(&bins.peerd, &home.path().join("b"), "bob", &directory.url())?;
        let tcp = baseline::start_server(&bins.me, "serve-tcp", &[])?;
        let grpc = baseline::start_server(&bins.me, "serve-grpc", &[])?;
        tls::write_identity(home.path())?;
        let tls = tls::client_config(home.path())?;
        let tls_args = [OsStr::new("--tls"), home.path().as_os_str()];
        let grpc_tls = baseline::start_server(&bins.me, "serve-grpc", &tls_args)?;
        Ok(Cluster { alice, bob, tcp, grpc, grpc_tls, tls, _directory: directory, _home: home })
    }
}

pub(crate) async fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<Measured> {
    progress("starting directoryd, peerd alice and bob, serve-tcp and serve-grpc (plain, TLS)");
    let cluster = Cluster::start(bins)?;
    let mut notes = Vec::new();

    let mut control = control::connect(&cluster.alice.socket).await?;
    let before = rss_pair(&cluster, "VmRSS")?;
    control::open_conversation(&mut control, &cluster.bob.name).await?;
    tokio::time::sleep(SETTLE).await;
    let idle = rss_pair(&cluster, "VmRSS")?;
    notes.push(format!(
        "VmRSS idle (alice, bob): started {:.2}, {:.2} MiB; in a conversation {:.2}, {:.2} MiB",
        before.0, before.1, idle.0, idle.1
    ));

    let latency = latency(&cluster, &mut control, plan).await?;
    let processes = processes(bins, &cluster, plan).await?;
    let rates = throughput(&cluster, plan, &mut notes).await?;
    let peak = rss_pair(&cluster, "VmHWM")?;
    let after = rss_pair(&cluster, "VmRSS")?;
    notes.push(format!(
        "after throughput (alice, bob): VmHWM {:.2}, {:.2} MiB; VmRSS still {:.2}, {:.2} MiB",
        peak.0, peak.1, after.0, after.1
    ));
    progress("stopping the daemons");
    drop(control);
    drop(cluster);

    let tcp = &latency.tcp;
    let link = &latency.link;
    let grpc = &latency.grpc;
    let grpc_tls = &latency.grpc_tls;
    let paced = &latency.grpc_tls_paced;
    let call = &latency.send_call;
    notes.push(format!(
        "round trips p50/p99 (us): tcp {}/{}, grpc_bidi {}/{}, grpc_bidi over TLS {}/{}, \
         the same paced like the link {}/{}, link {}/{}, whole Control.Send call {}/{}; \
         {} samples each",
        number(tcp.median()),
        number(tcp.percentile(99.0)),
        number(grpc.median()),
        number(grpc.percentile(99.0)),
        number(grpc_tls.median()),
        number(grpc_tls.percentile(99.0)),
        number(paced.median()),
        number(paced.percentile(99.0)),
        number(link.median()),
        number(link.percentile(99.0)),
        number(call.median()),
        number(call.percentile(99.0)),
        link.len()
    ));
    if let Some([alice, bob, server]) = latency.cpu_per_trip {
        notes.push(format!(
            "CPU per round trip over the rounds: alice {} us (her Control.Send call included), \
             bob {} us; serve-grpc (TLS) {} us",
            number(alice),
            number(bob),
            number(server)
        ));
    }
    notes.push(format!(
        "the link's rhythm: {} us idle between round trips; grpc_bidi over TLS paced so is \
         {:.2}x itself unpaced, and the link {:.2}x the paced stream",
        number(latency.gap.as_secs_f64() * 1e6),
        paced.median() / grpc_tls.median(),
        link.median() / paced.median(),
    ));
    notes.push(pinned_note(&latency.pinned));
    let true_ms = processes.true_.median();
    notes.push(format!(
        "process medians (ms): true {}, chatctl send {}, chatctl status {}; {} each",
        number(true_ms),
        number(processes.send.median()),
        number(processes.status.median()),
        processes.true_.len()
    ));

    let figures = vec![
        Figure {
            name: "link_rtt_p50",
            value: link.median(),
            unit: "us",
            baseline: Some(("tcp_rtt_p50", tcp.median())),
            goal: Goal::RatioAtMost(2.0),
        },
        Figure {
            name: "link_rtt_p99",
            value: link.percentile(99.0),
            unit: "us",
            baseline: Some(("tcp_rtt_p99", tcp.percentile(99.0))),
            goal: Goal::RatioAtMost(2.5),
        },
        // Against the floor this design has: the same bidirectional
        // stream over TLS, bare. What the link adds to it is peerd's own.
        Figure {
            name: "link_over_tls_grpc",
            value: link.median(),
            unit: "us",
            baseline: Some(("grpc_bidi_tls_rtt_p50", grpc_tls.median())),
            goal: Goal::RatioAtMost(1.15),
        },
        Figure {
            name: "throughput",
            value: rates.peerd,
            unit: "msg/s",
            baseline: Some(("grpc_bidi_throughput", rates.grpc)),
            goal: Goal::RatioAtLeast(0.30),
        },
        Figure {
            name: "send_process",
            value: processes.send.median(),
            unit: "ms",
            baseline: Some(("true_process", true_ms)),
            goal: Goal::RatioAtMost(3.5),
        },
        Figure {
            name: "status_process",
            value: processes.status.median(),
            unit: "ms",
            baseline: Some(("true_process", true_ms)),
            goal: Goal::RatioAtMost(3.0),
        },
        Figure {
            name: "peerd_rss_idle",
            value: idle.0.max(idle.1),
            unit: "MiB",
            baseline: None,
            goal: Goal::AtMost(8.0),
        },
        Figure {
            name: "peerd_rss_load",
            value: peak.0.max(peak.1),
            unit: "MiB",
            baseline: None,
            goal: Goal::AtMost(48.0),
        },
    ];
    let series =
        |name: &str, samples: &Sorted| Series { name: name.to_owned(), samples: samples.clone() };
    Ok(Measured {
        figures,
        latency: vec![
            series("link_rtt (in peerd)", link),
            series("tcp_rtt", tcp),
            series("grpc_bidi_rtt", grpc),
            series("grpc_bidi_rtt over TLS", grpc_tls),
            series("grpc_bidi_rtt over TLS, paced like the link", paced),
            series("Control.Send call (client side)", call),
        ],
        notes,
    })
}

/// A `/proc/PID/status` memory field of alice and of bob, in MiB.
fn rss_pair(cluster: &Cluster, field: &str) -> anyhow::Result<(f64, f64)> {
    Ok((
        procfs::status_mib(cluster.alice.pid(), field)?,
        procfs::status_mib(cluster.bob.pid(), field)?,
    ))
}

/// Pooled round-trip samples, in microseconds.
#[derive(Debug)]
struct Latency {
    tcp: Sorted,
    link: Sorted,
    grpc: Sorted,
    grpc_tls: Sorted,
    /// `grpc_tls` with [`Latency::gap`] before each message.
    grpc_tls_paced: Sorted,
    send_call: Sorted,
    /// How long the link sits idle between two of its round trips: a
    /// whole `Control.Send` call less the link's part (medians of the
    /// warm-up).
    gap: Duration,
    /// Microseconds on a CPU per round trip of its kind, over the rounds:
    /// alice and bob per link round trip, the TLS server per round trip of
    /// its own (paced and unpaced). Each of them works only in its own
    /// rounds. `None` where `/proc/PID/schedstat` cannot be read.
    cpu_per_trip: Option<[f64; 3]>,
    /// The pinned rounds, or why there were none.
    pinned: Result<Pinned, String>,
}

/// Medians (µs) of the pinned rounds: the link, the bare stream over TLS,
/// the same paced like the link.
#[derive(Debug)]
struct Pinned {
    /// Every process of the rounds on one CPU.
    one_cpu: [f64; 3],
    /// The far end (bob, the TLS server) on another CPU than the near end
    /// (alice and the bench); `None` with one CPU allowed.
    two_cpus: Option<[f64; 3]>,
    /// Samples of each kind per placement.
    samples: usize,
}

/// Run times of `pids` now, if all can be read.
fn run_times<const N: usize>(pids: [u32; N]) -> Option<[std::time::Duration; N]> {
    let mut out = [std::time::Duration::ZERO; N];
    for (slot, pid) in out.iter_mut().zip(pids) {
        *slot = procfs::run_time(pid).ok()?;
    }
    Some(out)
}

async fn latency(cluster: &Cluster, control: &mut Control, plan: &Plan) -> anyhow::Result<Latency> {
    let mut pinger = Pinger::connect(cluster.tcp.1)?;
    let mut bidi = Bidi::connect(cluster.grpc.1, None).await?;
    let mut bidi_tls = Bidi::connect(cluster.grpc_tls.1, Some(cluster.tls.clone())).await?;
    let (mut tcp, mut link, mut grpc) = (Vec::new(), LinkSamples::default(), Vec::new());
    let (mut grpc_tls, mut paced) = (Vec::new(), Vec::new());

    progress(&format!("latency: warm-up, {} round trips of each kind", plan.warmup));
    let (p, _) = tcp_round(pinger, plan.warmup, Vec::new()).await?;
    pinger = p;
    let mut warm = LinkSamples::default();
    within(control::link_round(control, plan.warmup, &mut warm)).await?;
    let gap = Sorted::new(warm.send_call).median() - Sorted::new(warm.link_rtt).median();
    let gap = Duration::from_secs_f64(gap.max(0.0) / 1e6);
    within(bidi.rtt_round(plan.warmup, &mut Vec::new())).await?;
    within(bidi_tls.rtt_round(plan.warmup, &mut Vec::new())).await?;
    within(bidi_tls.paced_round(plan.warmup, gap, &mut Vec::new())).await?;
    let cpu_pids = [cluster.alice.pid(), cluster.bob.pid(), cluster.grpc_tls.0.pid()];
    let cpu_before = run_times(cpu_pids);

    for round in 1..=plan.latency_rounds {
        if round == 1 || round % 10 == 0 {
            progress(&format!(
                "latency: round {round}/{}, {} round trips each of tcp, link, grpc, grpc over \
                 TLS (unpaced and paced)",
                plan.latency_rounds, plan.latency_round
            ));
        }
        let (p, t) = tcp_round(pinger, plan.latency_round, tcp).await?;
        (pinger, tcp) = (p, t);
        within(control::link_round(control, plan.latency_round, &mut link)).await?;
        within(bidi.rtt_round(plan.latency_round, &mut grpc)).await?;
        within(bidi_tls.rtt_round(plan.latency_round, &mut grpc_tls)).await?;
        within(bidi_tls.paced_round(plan.latency_round, gap, &mut paced)).await?;
    }
    let cpu_per_trip = cpu_before.zip(run_times(cpu_pids)).map(|(before, after)| {
        let per = |i: usize, trips: usize| {
            after[i].saturating_sub(before[i]).as_secs_f64() * 1e6 / trips.max(1) as f64
        };
        let link_trips = link.link_rtt.len();
        [per(0, link_trips), per(1, link_trips), per(2, grpc_tls.len() + paced.len())]
    });
    let pinned = pinned_rounds(cluster, control, &mut bidi_tls, plan, gap)
        .await
        .map_err(|e| format!("{e:#}"));
    Ok(Latency {
        tcp: Sorted::new(tcp),
        link: Sorted::new(link.link_rtt),
        grpc: Sorted::new(grpc),
        grpc_tls: Sorted::new(grpc_tls),
        grpc_tls_paced: Sorted::new(paced),
        send_call: Sorted::new(link.send_call),
        gap,
        cpu_per_trip,
        pinned,
    })
}

/// The link and the bare stream over TLS, both with their processes pinned
/// to one CPU, then with the far end on a second CPU (see `placement`).
async fn pinned_rounds(
    cluster: &Cluster,
    control: &mut Control,
    bidi_tls: &mut Bidi,
    plan: &Plan,
    gap: Duration,
) -> anyhow::Result<Pinned> {
    let cpus = placement::allowed_cpus().context("reading the bench's CPU affinity")?;
    let Some(&near) = cpus.first() else { bail!("no CPU allowed") };
    let alice = Some(cluster.alice.pid());
    let far = [Some(cluster.bob.pid()), Some(cluster.grpc_tls.0.pid())];
    progress(&format!(
        "latency: {} rounds pinned to one CPU, then to two (link, grpc over TLS)",
        plan.pinned_rounds
    ));
    let mut one_cpu = None;
    let mut two_cpus = None;
    for (far_cpu, out) in [(Some(near), &mut one_cpu), (cpus.get(1).copied(), &mut two_cpus)] {
        let Some(far_cpu) = far_cpu else { continue };
        let _pinned =
            placement::pin(&[(None, near), (alice, near), (far[0], far_cpu), (far[1], far_cpu)])
                .context("pinning the processes")?;
        *out = Some(pinned_samples(control, bidi_tls, plan, gap).await?);
    }
    Ok(Pinned {
        one_cpu: one_cpu.context("no samples on one CPU")?,
        two_cpus,
        samples: plan.pinned_rounds * plan.latency_round,
    })
}

/// Medians of a few alternating rounds, after a short warm-up in place.
async fn pinned_samples(
    control: &mut Control,
    bidi_tls: &mut Bidi,
    plan: &Plan,
    gap: Duration,
) -> anyhow::Result<[f64; 3]> {
    let warmup = plan.warmup / 5;
    within(control::link_round(control, warmup, &mut LinkSamples::default())).await?;
    within(bidi_tls.rtt_round(warmup, &mut Vec::new())).await?;
    let (mut link, mut tls, mut paced) = (LinkSamples::default(), Vec::new(), Vec::new());
    for _ in 0..plan.pinned_rounds {
        within(control::link_round(control, plan.latency_round, &mut link)).await?;
        within(bidi_tls.rtt_round(plan.latency_round, &mut tls)).await?;
        within(bidi_tls.paced_round(plan.latency_round, gap, &mut paced)).await?;
    }
    Ok([
        Sorted::new(link.link_rtt).median(),
        Sorted::new(tls).median(),
        Sorted::new(paced).median(),
    ])
}

/// `pinned (p50 us): all on one CPU: link 61, grpc_bidi over TLS 22.9
/// (the link 2.66x), paced 34.6 (1.76x); ...`.
fn pinned_note(pinned: &Result<Pinned, String>) -> String {
    let p = match pinned {
        Ok(p) => p,
        Err(why) => return format!("pinned rounds skipped: {why}"),
    };
    let one = |[link, tls, paced]: [f64; 3]| {
        format!(
            "link {}, grpc_bidi over TLS {} (the link {:.2}x), paced like the link {} ({:.2}x)",
            number(link),
            number(tls),
            link / tls,
            number(paced),
            link / paced
        )
    };
    let mut note =
        format!("pinned by the bench (p50 us): everything on one CPU: {}", one(p.one_cpu));
    if let Some(two) = p.two_cpus {
        note.push_str(&format!(
            "; alice and the bench on one CPU, bob and the TLS server on another: {}",
            one(two)
        ));
    }
    note.push_str(&format!("; {} samples each", p.samples));
    note
}

/// A round of blocking TCP round trips, off the runtime's thread.
async fn tcp_round(
    mut pinger: Pinger,
    n: usize,
    mut out: Vec<f64>,
) -> anyhow::Result<(Pinger, Vec<f64>)> {
    tokio::task::spawn_blocking(move || {
        pinger.round(n, &mut out)?;
        Ok((pinger, out))
    })
    .await
    .context("the TCP round's thread failed")?
}

/// Runs a round with [`ROUND_TIMEOUT`].
async fn within<T>(round: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(ROUND_TIMEOUT, round)
        .await
        .with_context(|| format!("a round took longer than {ROUND_TIMEOUT:?}"))?
}

/// Wall times of whole processes, in milliseconds.
#[derive(Debug)]
struct Processes {
    true_: Sorted,
    send: Sorted,
    status: Sorted,
}

async fn processes(bins: &Bins, cluster: &Cluster, plan: &Plan) -> anyhow::Result<Processes> {
    progress(&format!(
        "processes: {} rounds of true, chatctl send, chatctl status",
        plan.process_rounds
    ));
    let chatctl = bins.chatctl.clone();
    let socket = cluster.alice.socket.clone();
    let rounds = plan.process_rounds;
    tokio::task::spawn_blocking(move || {
        let ctl = |args: &[&str]| {
            let mut cmd = daemons::command(&chatctl);
            // Nothing on stderr but a failure.
            cmd.env_remove("RUST_LOG").arg("--socket").arg(&socket).args(args);
            cmd
        };
        // The first of each loads the binary into the page cache.
        process::time(&mut Command::new("true"))?;
        process::time(&mut ctl(&["send", "hi"]))?;
        process::time(&mut ctl(&["status"]))?;
        let (mut true_, mut send, mut status) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            true_.push(process::time(&mut Command::new("true"))?);
            send.push(process::time(&mut ctl(&["send", "hi"]))?);
            status.push(process::time(&mut ctl(&["status"]))?);
        }
        Ok(Processes {
            true_: Sorted::new(true_),
            send: Sorted::new(send),
            status: Sorted::new(status),
        })
    })
    .await
    .context("the process round's thread failed")?
}

/// Pooled rates, in messages a second.
#[derive(Debug)]
struct Rates {
    peerd: f64,
    grpc: f64,
}

async fn throughput(
    cluster: &Cluster,
    plan: &Plan,
    notes: &mut Vec<String>,
) -> anyhow::Result<Rates> {
    let mut controls = Vec::new();
    for _ in 0..plan.control_connections {
        controls.push(control::connect(&cluster.alice.socket).await?);
    }
    let mut bidi = Bidi::connect(cluster.grpc.1, None).await?;
    let warmup = plan.in_flight * 4;
    progress(&format!("throughput: warm-up, {warmup} messages each"));
    within(bidi.throughput(warmup, plan.in_flight)).await?;
    within(control::throughput(&controls, warmup, plan.in_flight)).await?;

    let peerd_cpu =
        [("alice", Some(cluster.alice.pid())), ("bob", Some(cluster.bob.pid())), ("bench", None)];
    let grpc_cpu = [("serve-grpc", Some(cluster.grpc.0.pid())), ("bench", None)];
    let mut peerd = CpuShare::new(&peerd_cpu);
    let mut grpc = CpuShare::new(&grpc_cpu);
    for round in 1..=plan.throughput_rounds {
        progress(&format!(
            "throughput: round {round}/{}, {} messages over gRPC then {} through peerd \
             ({} in flight)",
            plan.throughput_rounds, plan.grpc_round, plan.throughput_round, plan.in_flight
        ));
        grpc.measure(within(bidi.throughput(plan.grpc_round, plan.in_flight))).await?;
        peerd
            .measure(within(control::throughput(&controls, plan.throughput_round, plan.in_flight)))
            .await?;
    }
    let rounds = plan.throughput_rounds as f64;
    let rates = Rates {
        peerd: plan.throughput_round as f64 * rounds / peerd.wall.as_secs_f64(),
        grpc: plan.grpc_round as f64 * rounds / grpc.wall.as_secs_f64(),
    };
    progress(&format!(
        "throughput: peerd {:.0} msg/s, bare gRPC {:.0} msg/s",
        rates.peerd, rates.grpc
    ));
    notes.push(format!(
        "throughput: {} messages through peerd in {:.1} s, {} over bare gRPC in {:.1} s",
        plan.throughput_round * plan.throughput_rounds,
        peerd.wall.as_secs_f64(),
        plan.grpc_round * plan.throughput_rounds,
        grpc.wall.as_secs_f64()
    ));
    notes.push(format!("CPU cores busy during peerd throughput: {}", peerd.summary()));
    notes.push(format!("CPU cores busy during gRPC throughput: {}", grpc.summary()));
    Ok(rates)
}

/// CPU time a few processes spend during timed rounds, as cores busy.
#[derive(Debug)]
struct CpuShare<'a> {
    /// Name and pid (`None`: the bench itself).
    who: &'a [(&'a str, Option<u32>)],
    busy: Vec<Duration>,
    wall: Duration,
}

impl<'a> CpuShare<'a> {
    fn new(who: &'a [(&'a str, Option<u32>)]) -> CpuShare<'a> {
        CpuShare { who, busy: vec![Duration::ZERO; who.len()], wall: Duration::ZERO }
    }

    /// Runs `round` (which returns its own duration) and adds the CPU time
    /// each process spent meanwhile.
    async fn measure(
        &mut self,
        round: impl Future<Output = anyhow::Result<Duration>>,
    ) -> anyhow::Result<()> {
        let before = self.times()?;
        self.wall += round.await?;
        let after = self.times()?;
        for ((busy, after), before) in self.busy.iter_mut().zip(after).zip(before) {
            *busy += after.saturating_sub(before);
        }
        Ok(())
    }

    /// Run time of each one's main thread, where peerd, the baseline
    /// server and the bench each run their one runtime: exact to the
    /// nanosecond, where `/proc/PID/stat` counts 10 ms ticks and a quick
    /// run's rounds last a few tens of milliseconds (the bench read 0.00).
    fn times(&self) -> anyhow::Result<Vec<Duration>> {
        self.who
            .iter()
            .map(|(_, pid)| procfs::run_time(pid.unwrap_or_else(std::process::id)))
            .collect()
    }

    /// `alice 1.10, bob 0.60, bench 0.30`.
    fn summary(&self) -> String {
        let wall = self.wall.as_secs_f64().max(1e-9);
        let parts: Vec<String> = self
            .who
            .iter()
            .zip(&self.busy)
            .map(|((name, _), busy)| format!("{name} {:.2}", busy.as_secs_f64() / wall))
            .collect();
        parts.join(", ")
    }
}
