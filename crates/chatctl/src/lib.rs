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

use std::process::ExitCode;

use clap::CommandFactory;
use clap::error::ErrorKind;

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
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            // A usage error: one line, like every other error. --help and
            // --version (stdout, status 0) are printed as clap prints them;
            // a bare `chatctl` gets its `error:` line, then the help.
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                output::note("error: a command is required (see the commands below)");
                let _ = err.print();
            } else if err.use_stderr() {
                let args: Vec<String> = std::env::args().collect();
                output::note(&usage_error_line(&err.render().to_string(), &args));
            } else {
                let _ = err.print();
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

/// clap's rendering of a usage error (`error: …`, maybe a value list or a
/// tip, `Usage: …`, `For more information…`, on several lines) as the one
/// `error:` line SPEC asks of every error: the message, then the usage
/// (for a bad value clap gives none: then the usage of the command `args`
/// name).
fn usage_error_line(rendered: &str, args: &[String]) -> String {
    let mut parts = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage:") {
            usage = Some(u.trim());
        } else if !line.starts_with("For more information") {
            parts.push(line);
        }
    }
    let mut out = parts.join(" ");
    if !out.starts_with("error:") {
        out.insert_str(0, "error: ");
    }
    let usage = usage.map(str::to_owned).unwrap_or_else(|| usage_of(args));
    out.push_str(&format!(" (usage: {usage}; see --help)"));
    out
}

/// The usage line of the subcommand `args` names, or chatctl's.
fn usage_of(args: &[String]) -> String {
    let mut cli = Cli::command();
    cli.build();
    let named = args.iter().skip(1).find_map(|a| cli.find_subcommand(a)).map(|c| c.get_name());
    let mut command = match named.map(str::to_owned) {
        Some(name) => cli.find_subcommand_mut(&name).cloned().unwrap_or(cli),
        None => cli,
    };
    let rendered = command.render_usage().to_string();
    rendered.trim().trim_start_matches("Usage:").trim().to_owned()
}

fn fail(err: &Error) -> ExitCode {
    // An error may quote a peer or the directory (a refusal's words): on
    // one line, escaped, like everything else from the network.
    output::note(&format!("error: {}", format::clean_line(&err.to_string())));
    ExitCode::from(err.exit_code())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn line_for(args: &[&str]) -> String {
        let argv: Vec<String> =
            std::iter::once("chatctl").chain(args.iter().copied()).map(String::from).collect();
        let err = Cli::try_parse_from(&argv).expect_err("a usage error");
        assert!(err.use_stderr(), "{err}");
        usage_error_line(&err.render().to_string(), &argv)
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
    fn a_bare_chatctl_is_answered_with_its_help_not_folded() {
        let err = Cli::try_parse_from(["chatctl"]).expect_err("no command");
        assert_eq!(err.kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
    }
}
