//! `peerd start` / `peerd stop`. The work is in the library.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use peerchat_peerd::cli::{Cli, Command, ConfigArgs, InstallServiceArgs, StartArgs};
use peerchat_peerd::config::{Given, Resolved};
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = Cli::command()
        .try_get_matches_from(&args)
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return usage_error(&e, &args),
    };
    // Which settings the command line or the environment gave: clap knows.
    let sub = matches.subcommand().map(|(_, m)| m.clone()).unwrap_or_default();
    let given = move |id: &str| given(&sub, id);
    match cli.command {
        Command::Start(args) => start(&args, &given),
        Command::Config(args) => print_config(&args, &given),
        Command::InstallService(args) => install_service(&args),
        Command::Completions { shell } => {
            // `peerd completions bash | head` closes the pipe early: fine.
            let _ = std::io::stdout().lock().write_all(shell.file().1.as_bytes());
            ExitCode::SUCCESS
        }
        Command::Stop(args) => {
            let socket = match peerchat_peerd::config::stop_socket(
                args.socket.as_deref(),
                args.config.as_deref(),
            ) {
                Ok(s) => s,
                Err(e) => return fail(&e, false),
            };
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

/// Did the command line or the environment give the setting `id`?
fn given(matches: &ArgMatches, id: &str) -> Option<Given> {
    match matches.try_get_raw(id).ok().flatten().and(matches.value_source(id)) {
        Some(ValueSource::CommandLine) => Some(Given::Flag),
        Some(ValueSource::EnvVariable) => Some(Given::Env),
        _ => None,
    }
}

/// Resolves the settings, printing the config file's warnings; a usage
/// error exits 2, any other 1.
fn resolve(
    settings: &peerchat_peerd::cli::Settings,
    given: &dyn Fn(&str) -> Option<Given>,
) -> Result<Resolved, ExitCode> {
    match Config::resolve(settings, given) {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            Ok(r)
        }
        Err(e @ Error::Usage(_)) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
        Err(e) => Err(fail(&e, false)),
    }
}

/// `peerd config`: the resolved settings and where each came from.
fn print_config(args: &ConfigArgs, given: &dyn Fn(&str) -> Option<Given>) -> ExitCode {
    let resolved = match resolve(&args.settings, given) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let text = if args.json {
        peerchat_peerd::config::resolved_json(&resolved).to_string()
    } else {
        peerchat_peerd::config::resolved_text(&resolved)
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    ExitCode::SUCCESS
}

/// `peerd install-service`: writes (or prints) the systemd user unit.
fn install_service(args: &InstallServiceArgs) -> ExitCode {
    use peerchat_peerd::service;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(&Error::Other(format!("cannot find this program: {e}")), false),
    };
    let text = service::unit_text(&exe, args.config.as_deref());
    let Some(path) = service::unit_path(dirs::config_dir().as_deref()) else {
        return fail(
            &Error::Other("this system has no config folder for user units".into()),
            false,
        );
    };
    if !args.print
        && let Err(e) = service::install(&path, &text)
    {
        return fail(&e, false);
    }
    let out = if args.json {
        let mut v = serde_json::json!({
            "path": path.display().to_string(),
            "written": !args.print,
            "enable": service::ENABLE,
        });
        if args.print {
            v["unit"] = text.into();
        }
        v.to_string()
    } else if args.print {
        text.trim_end().to_owned()
    } else {
        format!("wrote {}\nnow run: {}", path.display(), service::ENABLE)
    };
    let _ = writeln!(std::io::stdout().lock(), "{out}");
    ExitCode::SUCCESS
}

fn start(args: &StartArgs, given: &dyn Fn(&str) -> Option<Given>) -> ExitCode {
    let config = match resolve(&args.settings, given) {
        Ok(r) => r.config,
        Err(code) => return code,
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
    // Colours only for a person at a terminal: a log file or a journal
    // (`--foreground` under systemd, or stderr redirected) gets plain text.
    let detached = std::env::var_os(launch::DETACHED_ENV).is_some();
    let ansi = !detached && std::io::stderr().is_terminal();
    let (filter, warning) = logging::filter(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
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

/// A usage error (a bare `peerd` too) is one `error:` line, exit 2;
/// --help and --version are printed as clap prints them, exit 0.
fn usage_error(e: &clap::Error, args: &[std::ffi::OsString]) -> ExitCode {
    match peerchat_core::usage::usage_error(e, &Cli::command(), args) {
        Some(line) => eprintln!("{line}"),
        None => {
            let _ = e.print();
        }
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
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
