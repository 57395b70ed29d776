//! `peerd start` / `peerd stop`. The work is in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use peerchat_peerd::cli::{Cli, Command, StartArgs};
use peerchat_peerd::{Config, Error, launch, logging};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mimalloc, not the system allocator: at full speed a message is still a
/// handful of allocations at the protobuf edges, and glibc's malloc/free
/// were a fifth of the sending daemon's instructions (consolidating its
/// fast bins after every burst). scripts/bench: throughput +15%, link_rtt
/// -7%, for ~0.35 MiB more idle memory. Called through our own
/// [`MiMalloc`](peerchat_peerd::allocator::MiMalloc), not the `mimalloc`
/// crate's: see that module.
#[global_allocator]
static ALLOC: peerchat_peerd::allocator::MiMalloc = peerchat_peerd::allocator::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Start(args) => start(&args),
        Command::Stop(args) => {
            let socket = peerchat_peerd::config::socket_path(args.socket.as_deref());
            match runtime().and_then(|rt| rt.block_on(peerchat_peerd::stop::stop(&socket))) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, false),
            }
        }
    }
}

fn start(args: &StartArgs) -> ExitCode {
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e @ Error::Usage(_)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => return fail(&e, false),
    };
    if !args.foreground {
        return match launch::detach(&config) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, false),
        };
    }
    let detached = std::env::var_os(launch::DETACHED_ENV).is_some();
    let (filter, warning) = logging::filter(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(!detached))
        .init();
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let token = CancellationToken::new();
            tokio::spawn(cancel_on_signal(token.clone()));
            peerchat_peerd::run(config, token, |ready| {
                let mut out = std::io::stdout().lock();
                let line = if detached {
                    launch::Started::Ready(ready.line()).line()
                } else {
                    ready.line()
                };
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
                if let Some(why) = &ready.directory_error {
                    tracing::warn!(%why, "the directory is unreachable; will keep trying");
                }
            })
            .await
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, detached),
    }
}

fn fail(e: &Error, detached: bool) -> ExitCode {
    eprintln!("error: {e}");
    if detached {
        // The launching `peerd start` reads our stdout, not the log.
        println!("{}", launch::Started::Failed(e.to_string()).line());
    }
    ExitCode::FAILURE
}

/// One thread. A daemon holds one conversation; everything on its hot path
/// (the connection's task, the driver, the link's writer) hands work to the
/// next task, and on one thread a hand-off is a queue push, not a
/// cross-thread wake-up.
/// Measured with `scripts/bench`: `link_rtt` fell from ~5x to ~3.7x raw TCP
/// and idle memory by 0.4 MiB, at equal throughput. Blocking work (reading
/// history for `history`) still goes to tokio's blocking pool.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))
}

/// SIGINT and SIGTERM both mean a clean shutdown.
async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT"),
        _ = term.recv() => tracing::info!("SIGTERM"),
    }
    token.cancel();
}
