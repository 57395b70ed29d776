//! Usage errors as one line, for every binary.
//!
//! SPEC §2: an error is one line on stderr that starts with `error:`.
//! clap renders a usage error on several lines (the message, maybe a tip,
//! `Usage: …`, `For more information…`), and answers a command line that
//! lacks its subcommand with the whole help. [`usage_error`] turns either
//! into the one line, with the usage of the (sub)command it was about, so
//! that directoryd, peerd and chatctl all say it the same way.

use std::ffi::OsString;

use clap::error::ErrorKind;

/// The one `error:` line for clap's answer `err` to the command line
/// `args` (the program's name first) of `command`; `None` when the answer
/// is not an error (`--help`, `--version`: the caller prints it as clap
/// does, to stdout).
pub fn usage_error(
    err: &clap::Error,
    command: &clap::Command,
    args: &[OsString],
) -> Option<String> {
    // clap says the first when nothing at all was given, the second when
    // a flag (or its environment variable) was.
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
    ) {
        return Some(missing_command(command, args));
    }
    if !err.use_stderr() {
        return None;
    }
    let rendered = err.render().to_string();
    let mut parts = Vec::new();
    // A command that runs with or without a subcommand has two usages, the
    // second on a line of its own.
    let mut usages: Vec<&str> = Vec::new();
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage:") {
            usages.push(u.trim());
        } else if line.starts_with("For more information") {
            break;
        } else if usages.is_empty() {
            parts.push(line);
        } else {
            usages.push(line);
        }
    }
    let mut out = parts.join(" ");
    if !out.starts_with("error:") {
        out.insert_str(0, "error: ");
    }
    // For a bad value clap gives no usage: then that of the command `args`
    // name.
    let usage = if usages.is_empty() { usage_of(command, args) } else { usages.join(" | ") };
    out.push_str(&format!(" (usage: {usage}; see --help)"));
    Some(out)
}

/// `peerd` or `chatctl` alone: which commands there are, on one line.
fn missing_command(command: &clap::Command, args: &[OsString]) -> String {
    let mut command = named(command, args);
    let names: Vec<String> = command
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(|c| c.get_name().to_owned())
        .collect();
    let usage = usage_line(&mut command);
    format!("error: a command is required: {} (usage: {usage}; see --help)", names.join(", "))
}

/// The usage of the subcommand `args` name, or of `command`.
fn usage_of(command: &clap::Command, args: &[OsString]) -> String {
    usage_line(&mut named(command, args))
}

/// `command`'s usage on one line (several usages separated by ` | `).
fn usage_line(command: &mut clap::Command) -> String {
    let rendered = command.render_usage().to_string();
    let lines = rendered.trim().trim_start_matches("Usage:").lines().map(str::trim);
    lines.filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

/// The subcommand `args` name (the first word that is one), or `command`.
fn named(command: &clap::Command, args: &[OsString]) -> clap::Command {
    let mut command = command.clone();
    command.build();
    let sub = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find_map(|a| command.find_subcommand(a))
        .map(|c| c.get_name().to_owned());
    match sub {
        Some(name) => command.find_subcommand(&name).cloned().unwrap_or(command),
        None => command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("tool")
            .subcommand_required(true)
            .arg_required_else_help(true)
            .subcommand(
                clap::Command::new("send").arg(clap::Arg::new("text").required(true)).arg(
                    clap::Arg::new("limit")
                        .long("limit")
                        .value_parser(clap::value_parser!(u32).range(1..=9)),
                ),
            )
            .subcommand(clap::Command::new("list"))
            .subcommand(clap::Command::new("secret").hide(true))
    }

    fn line_for(args: &[&str]) -> Option<String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let err = cli().try_get_matches_from(&args).expect_err("not a valid command line");
        usage_error(&err, &cli(), &args)
    }

    #[test]
    fn a_usage_error_is_one_line_with_the_usage() {
        let missing = line_for(&["tool", "send"]).expect("an error");
        assert!(missing.starts_with("error: the following required arguments"), "{missing}");
        assert!(missing.ends_with("(usage: tool send <text>; see --help)"), "{missing}");
        assert!(!missing.contains('\n'), "{missing}");
        // A value out of range: clap renders no usage; the line has send's.
        let bad = line_for(&["tool", "send", "x", "--limit", "0"]).expect("an error");
        assert!(bad.starts_with("error: invalid value '0' for '--limit <limit>'"), "{bad}");
        assert!(bad.ends_with("(usage: tool send [OPTIONS] <text>; see --help)"), "{bad}");
        let unknown = line_for(&["tool", "frob"]).expect("an error");
        assert!(unknown.starts_with("error: unrecognized subcommand 'frob'"), "{unknown}");
    }

    #[test]
    fn no_command_names_the_commands_on_one_line() {
        let line = line_for(&["tool"]).expect("an error");
        assert_eq!(
            line,
            "error: a command is required: send, list (usage: tool <COMMAND>; see --help)"
        );
        // With a flag but no command clap gives another kind of error.
        let flagged = || cli().arg(clap::Arg::new("quiet").long("quiet").num_args(0));
        let args: Vec<OsString> = ["tool", "--quiet"].iter().map(OsString::from).collect();
        let err = flagged().try_get_matches_from(&args).expect_err("no command");
        let line = usage_error(&err, &flagged(), &args).expect("an error");
        assert!(
            line.starts_with("error: a command is required: send, list (usage: tool"),
            "{line}"
        );
    }

    #[test]
    fn two_usages_are_put_on_one_line() {
        let tool = || {
            clap::Command::new("server")
                .args_conflicts_with_subcommands(true)
                .arg(clap::Arg::new("ttl").long("ttl").value_parser(clap::value_parser!(u8)))
                .subcommand(clap::Command::new("forget").arg(clap::Arg::new("name").required(true)))
        };
        for args in [&["server", "--ttl", "x"][..], &["server", "--bogus"]] {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            let err = tool().try_get_matches_from(&args).expect_err("not valid");
            let line = usage_error(&err, &tool(), &args).expect("an error");
            assert!(!line.contains('\n'), "{line}");
            assert!(
                line.ends_with("(usage: server [OPTIONS] | server <COMMAND>; see --help)"),
                "{line}"
            );
        }
    }

    #[test]
    fn help_and_version_are_not_errors() {
        assert_eq!(line_for(&["tool", "--help"]), None);
        assert_eq!(line_for(&["tool", "send", "-h"]), None);
    }

    #[test]
    fn words_that_are_not_utf8_are_passed_over() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![OsString::from("tool"), OsString::from_vec(vec![0xff, 0xfe])];
        let err = cli().try_get_matches_from(&args).expect_err("not UTF-8");
        let line = usage_error(&err, &cli(), &args).expect("an error");
        assert!(line.starts_with("error: ") && !line.contains('\n'), "{line}");
    }
}
