//! chatctl: the command-line client of peerd. It drives the local daemon
//! over the Control gRPC service on its Unix socket and never talks to the
//! directory or to other peers itself.
//!
//! # Layout
//! - [`cli`]: the command line (clap), exactly as SPEC §2 has it.
//! - `client`: connecting to the socket ([`connect`], also used by the
//!   benchmark and the tests), time limits, paging helpers.
//! - `commands`: one module per command (`list`, `connect`, `send`,
//!   `disconnect`, `status`, `watch`, `history`, `chat`).
//! - `format`: pure rendering of answers and events, human and JSON.
//! - `output`: writing lines to stdout without panicking on a closed pipe.
//! - `marker`: reporting shown messages (MarkDisplayed) off the display path.
//! - `signals`: Ctrl-C / SIGTERM for the long-running commands.
//! - [`completion`]: shell completion, with peer names from the daemon.
//! - `tui`: the full-screen chat (`chatctl tui`, and `chat` at a terminal).
//! - [`error`]: the one-line `error:` messages and exit statuses.
//!
//! Exit status: 0 success, 1 the operation failed, 2 usage error.

pub mod cli;
mod client;
mod commands;
pub mod completion;
pub mod error;
mod format;
mod marker;
mod output;
mod signals;
mod tui;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::CommandFactory;
use peerchat_core::usage::usage_error;

pub use cli::{Cli, Command};
pub use client::{Control, connect};
pub use error::Error;

/// Runs one chatctl command to completion.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let socket = cli
        .socket
        .filter(|path| !path.as_os_str().is_empty())
        .unwrap_or_else(client::default_socket);
    let json = cli.json;
    match &cli.command {
        Command::List { keys, watch: false } => commands::list::run(&socket, json, *keys).await,
        Command::List { keys, watch: true } => commands::list::follow(&socket, json, *keys).await,
        Command::Trust { name } => commands::trust::run(&socket, json, name).await,
        Command::Connect { name } => commands::connect::run(&socket, json, name).await,
        Command::Send(args) => commands::send::run(&socket, json, args).await,
        Command::Disconnect => commands::disconnect::run(&socket, json).await,
        Command::Status => commands::status::run(&socket, json).await,
        Command::Ping { count, interval } => {
            commands::ping::run(&socket, json, *count, *interval).await
        }
        Command::Watch => commands::watch::run(&socket, json).await,
        Command::History { name, limit } => {
            commands::history::run(&socket, json, name.as_deref(), *limit).await
        }
        Command::Accept { name } => commands::consent::accept(&socket, json, name.as_deref()).await,
        Command::Reject { name } => commands::consent::reject(&socket, json, name.as_deref()).await,
        Command::Block { name } => commands::consent::block(&socket, json, name).await,
        Command::Unblock { name } => commands::consent::unblock(&socket, json, name).await,
        Command::Blocked => commands::consent::blocked(&socket, json).await,
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            completion::write_script(*shell, &mut out).map_err(Error::Stdout)
        }
        Command::Chat { name } => commands::chat::run(&socket, json, name.as_deref()).await,
        Command::Tui { name } => tui::run(&socket, name.as_deref()).await,
    }
}

/// The whole program: parses the command line, runs the command on a
/// single-threaded runtime (fast to start), and turns the outcome into an
/// exit status and at most one `error:` line on stderr.
pub fn main_entry() -> ExitCode {
    // The completion script's call back: answered, and exits.
    completion::complete_if_asked();
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::parse_args(args.clone()) {
        Ok(cli) => cli,
        Err(err) => {
            // A usage error (a bare `chatctl` too) is one `error:` line,
            // like every other error; --help and --version (stdout, status
            // 0) are printed as clap prints them.
            match usage_error(&err, &Cli::command(), &args) {
                Some(line) => output::note(&line),
                None => {
                    let _ = err.print();
                }
            }
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&Error::Start(err)),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is_broken_pipe() => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &Error) -> ExitCode {
    // An error may quote a peer or the directory (a refusal's words): on
    // one line, escaped, like everything else from the network.
    output::note(&format!("error: {}", format::clean_line(&err.to_string())));
    ExitCode::from(err.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_for(args: &[&str]) -> String {
        let argv: Vec<OsString> =
            std::iter::once("chatctl").chain(args.iter().copied()).map(OsString::from).collect();
        let err = Cli::parse_args(&argv).expect_err("a usage error");
        usage_error(&err, &Cli::command(), &argv).expect("an error line")
    }

    #[test]
    fn usage_errors_are_one_error_line_with_the_usage() {
        let missing = line_for(&["send"]);
        assert!(!missing.contains('\n'), "{missing}");
        assert!(missing.starts_with("error: the following required arguments"), "{missing}");
        assert!(
            missing.contains("<TEXT>") && missing.contains("(usage: chatctl send"),
            "{missing}"
        );
        let bad_value = line_for(&["send", "x", "--wait", "sometimes"]);
        assert!(!bad_value.contains('\n'), "{bad_value}");
        assert!(
            bad_value.contains("'sometimes'") && bad_value.contains("delivered"),
            "{bad_value}"
        );
        // A value out of range: clap renders no usage; the line has it.
        let zero = line_for(&["--json", "history", "--limit", "0"]);
        assert!(zero.starts_with("error: invalid value '0' for '--limit <N>'"), "{zero}");
        assert!(zero.ends_with("(usage: chatctl history [OPTIONS] [NAME]; see --help)"), "{zero}");
        let unknown = line_for(&["frobnicate"]);
        assert!(unknown.starts_with("error: unrecognized subcommand 'frobnicate'"), "{unknown}");
    }

    #[test]
    fn a_bare_chatctl_names_the_commands_on_one_line() {
        let line = line_for(&[]);
        assert!(line.starts_with("error: a command is required: list, connect, send,"), "{line}");
        assert!(line.ends_with("(usage: chatctl [OPTIONS] <COMMAND>; see --help)"), "{line}");
    }
}
