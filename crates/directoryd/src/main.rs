//! `directoryd`: parses flags, sets up logging and signals, and runs the
//! library until SIGINT or SIGTERM; or runs the `forget` or `key` admin
//! subcommand.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use peerchat_core::Name;
use peerchat_directoryd::RedisOptions;
use peerchat_directoryd::cli::{Cli, Command, Forget, Key};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// `info`, except the Redis client's own reconnect warnings: while Redis is
/// unreachable it logs about a thousand lines a second, which would bury
/// directoryd's own account of the outage (`RUST_LOG` overrides).
const DEFAULT_LOG: &str = "info,redis=error";

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // A usage error is one `error:` line, exit 2; --help and
            // --version are printed as clap prints them, exit 0.
            use clap::CommandFactory as _;
            match peerchat_core::usage::usage_error(&e, &Cli::command(), &args) {
                Some(line) => eprintln!("{line}"),
                None => {
                    let _ = e.print();
                }
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match runtime(cli.serve.threads) {
        Ok(runtime) => runtime.block_on(serve_or_admin(cli)),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// One thread by default (`--threads`). Measured with `scripts/bench` on
/// two cores shared with the load generator, in paired runs: a heartbeat
/// cost directoryd 20-23.5 us of CPU on tokio's default two worker threads
/// and 13.6-16.4 us on this one (no wake-ups and work stealing across
/// threads), and the sustained rate rose from 43-52k/s to 58-67k/s.
fn runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(threads))
            .enable_all()
            .build()
    }
}

async fn serve_or_admin(cli: Cli) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match &cli.command {
        Some(Command::Forget(forget)) => return forget_name(forget).await,
        Some(Command::Key(key)) => return print_key(key),
        None => {}
    }

    let shutdown = CancellationToken::new();
    // Installed before the readiness line, so that a signal sent as soon as
    // the line appears is a clean shutdown rather than a kill.
    if let Err(err) = cancel_on_signal(shutdown.clone()) {
        eprintln!("error: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }

    let config = cli.config();
    let listener = match peerchat_directoryd::bind(&config).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("error: cannot read the bound address: {err}");
            return ExitCode::FAILURE;
        }
    };
    let ready = move || announce(&format!("directoryd listening on {addr}"));
    match peerchat_directoryd::run(config, listener, shutdown, ready).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `directoryd forget NAME`: what it did on stdout; `no binding for NAME`
/// on stderr with exit status 1 when there was nothing to release.
async fn forget_name(args: &Forget) -> ExitCode {
    let name = &args.name;
    let data_dir = match (&args.data_dir, &args.store) {
        (_, Some(store)) => return forget_in_redis(store, name).await,
        (Some(data_dir), None) => data_dir,
        // clap requires one of the two.
        (None, None) => return ExitCode::from(2),
    };
    match peerchat_directoryd::forget(data_dir, name) {
        Ok(Some(forgotten)) => {
            println!(
                "forgot {name}: removed its binding to key {} from {}; the next key to register {name} will own it",
                peerchat_core::identity::fingerprint(&forgotten.key),
                forgotten.path.display(),
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("no binding for {name} in {}", data_dir.display());
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: cannot forget {name}: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn forget_in_redis(store: &RedisOptions, name: &Name) -> ExitCode {
    match peerchat_directoryd::forget_in_redis(store, name).await {
        Ok(Some(key)) => {
            println!(
                "forgot {name}: removed its binding to key {} from the Redis store; the next key to register {name} will own it",
                peerchat_core::identity::fingerprint(&key),
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("no binding for {name} in the Redis store");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: cannot forget {name}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `directoryd key`: the fingerprint alone on stdout, so that scripts can
/// take it as it is.
fn print_key(args: &Key) -> ExitCode {
    match peerchat_directoryd::directory_key(&args.data_dir) {
        Ok(key) => {
            println!("{}", peerchat_core::identity::fingerprint(&key));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the readiness line. A launcher that closed our stdout does not
/// stop the directory, so a failed write is only logged.
fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        tracing::warn!(%err, "cannot print the readiness line");
    }
}

fn cancel_on_signal(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = which, "stopping");
        shutdown.cancel();
    });
    Ok(())
}
