//! The peerchat benchmark. Every figure is reported as a ratio to a
//! baseline measured in the same run on the same machine, because absolute
//! numbers from a shared two-core box mean little; a figure and its baseline
//! are measured in alternating rounds so that noise hits both alike.
//!
//! # Layout
//!
//! - [`figure`]: one reported figure, its baseline and its goal.
//! - [`directory`]: the directoryd figures (their own directoryd and load
//!   generator).
//! - `suite`: the peerd figures: starts the daemons and the baselines, runs
//!   the rounds in order, hands back figures and samples.
//! - `plan`: how many samples and rounds a quick and a full run take.
//! - `daemons`: the processes the bench starts, each behind a guard that
//!   stops it by pid; `bins` finds their binaries.
//! - `baseline`: the hand-written baselines (raw TCP, bare tonic bidi, and
//!   the same over TLS as a diagnostic), each served by this binary
//!   re-executed as a hidden subcommand.
//! - `control`: alice's control API as the bench drives it (`link_rtt`,
//!   `throughput`).
//! - `placement`: pinning a round's processes to chosen CPUs (the pinned
//!   latency rounds).
//! - `process`: wall time of whole processes (`true`, `chatctl`).
//! - `procfs`: memory and CPU of a process, from `/proc`.
//! - `stats`, `chart`, `report`: percentiles, the latency CDF (SVG), and the
//!   table and JSON written at the end.

pub mod directory;
pub mod figure;

mod baseline;
mod bins;
mod chart;
mod control;
mod daemons;
mod placement;
mod plan;
mod process;
mod procfs;
mod report;
mod stats;
mod suite;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, anyhow};

pub use baseline::grpc::serve as serve_grpc;
pub use baseline::tcp::serve as serve_tcp;

/// What a run of the benchmark does.
#[derive(Debug, Clone)]
pub struct Config {
    /// Fewer samples and rounds: the whole run takes under a minute.
    pub quick: bool,
    /// Print the report as one JSON object on stdout instead of the table.
    pub json: bool,
    /// Where `report.json`, `report.txt` and `latency-cdf.svg` go.
    pub out: PathBuf,
}

/// Runs every figure, prints the report on stdout and writes it to
/// `config.out`. Progress goes to stderr. Missed goals are reported, not
/// failures: only a benchmark that cannot run is an error.
pub fn run(config: &Config) -> anyhow::Result<()> {
    let started = Instant::now();
    // One thread: the machine has few cores and the daemons under test need
    // them more than the bench does. Everything the bench starts is spawned
    // from this thread (see `daemons`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let measured = runtime.block_on(async {
        tokio::select! {
            result = measure(config) => result,
            signal = interrupted() => Err(anyhow!("interrupted by {}", signal?)),
        }
    })?;
    let report =
        report::Report::new(config.quick, started.elapsed(), measured.figures, measured.notes);
    let svg = chart::latency_cdf(&measured.latency);
    report.write(&config.out, &svg)?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.table());
    }
    eprintln!(
        "bench: wrote {} (report.json, report.txt, latency-cdf.svg) in {:.0} s",
        config.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the measurements hand to the report.
#[derive(Debug)]
struct Measured {
    figures: Vec<figure::Figure>,
    /// Latency samples for the chart, by series name.
    latency: Vec<chart::Series>,
    /// Observations worth a line in `report.txt` (CPU shares, baselines).
    notes: Vec<String>,
}

async fn measure(config: &Config) -> anyhow::Result<Measured> {
    let bins = bins::Bins::beside_this_executable()?;
    let plan = plan::Plan::new(config.quick);
    // The peerd figures first, then the directory's: each set starts and
    // stops its own processes, so neither loads the machine under the other.
    let mut measured = suite::run(&bins, &plan).await?;
    eprintln!("bench: directory figures");
    let options = directory::DirOptions { quick: config.quick, directoryd: bins.directoryd };
    measured.figures.extend(directory::run(&options).await?);
    eprintln!("bench: directory figures over Redis Cluster");
    measured.figures.extend(directory::run_redis(&options).await?);
    Ok(measured)
}

/// Waits for SIGINT or SIGTERM, so that the measurement future is dropped and
/// every guard stops its process before the bench exits.
async fn interrupted() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}
