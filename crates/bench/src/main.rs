//! `peerchat-bench`: the command line. The work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Measure peerchat against baselines taken in the same run.
///
/// Starts its own directoryd and two peerd daemons (alice and bob) on
/// 127.0.0.1, measures each figure in rounds alternating with its baseline
/// (raw TCP ping-pong, a bare tonic bidi stream, spawning `true`), stops
/// everything it started, and prints one line per figure: value, baseline,
/// ratio, goal, and whether the goal is met. Missed goals do not make it
/// fail; only a benchmark that cannot run does.
///
/// Expects peerd, directoryd and chatctl beside its own executable
/// (`scripts/bench` builds them all in release and runs this).
#[derive(Debug, Parser)]
#[command(
    name = "peerchat-bench",
    version,
    override_usage = "peerchat-bench [--quick] [--json] [--out DIR]",
    disable_help_subcommand = true
)]
struct Cli {
    /// Fewer samples: the whole run takes under a minute (the full one under ten)
    #[arg(long)]
    quick: bool,
    /// Print the report as one JSON object on stdout (progress stays on stderr)
    #[arg(long)]
    json: bool,
    /// Where to write report.json, report.txt and latency-cdf.svg
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    out: PathBuf,
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// The bench re-executes itself as these, so that each baseline and load
/// generator is a process of its own.
#[derive(Debug, Subcommand)]
enum Helper {
    /// Raw TCP ping-pong server: prints its address, answers each 64-byte
    /// message with an 8-byte ack.
    #[command(hide = true)]
    ServeTcp,
    /// Bare tonic bidi server: prints its address, answers each Frame with a
    /// Receipt.
    #[command(hide = true)]
    ServeGrpc {
        /// Over TLS, with the certificate and key the bench wrote here.
        #[arg(long, value_name = "DIR")]
        tls: Option<PathBuf>,
    },
    /// The directory benchmark's load generator.
    #[command(hide = true)]
    DirLoad {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.helper {
        Some(Helper::ServeTcp) => peerchat_bench::serve_tcp(),
        Some(Helper::ServeGrpc { tls }) => peerchat_bench::serve_grpc(tls.as_deref()),
        Some(Helper::DirLoad { args }) => peerchat_bench::directory::load_main(args),
        None => peerchat_bench::run(&peerchat_bench::Config {
            quick: cli.quick,
            json: cli.json,
            out: cli.out,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
