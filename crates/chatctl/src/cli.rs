//! The command line (SPEC §2), declared with clap.
//!
//! `--socket` and `--json` are global: they are accepted before or after the
//! subcommand. Usage errors exit 2 (clap's default).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::ArgValueCompleter;

use crate::completion;

/// Drive the local peerchat daemon (peerd).
#[derive(Debug, Parser)]
#[command(name = "chatctl", version, about, long_about = None)]
pub struct Cli {
    /// The control socket of peerd [default: $XDG_RUNTIME_DIR/peerchat/peerd.sock,
    /// or /tmp/peerchat-$UID/peerd.sock]
    #[arg(long, global = true, env = "PEERCHAT_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// One chatctl command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Who is online (from the directory, via peerd)
    List {
        /// Also show each peer's key fingerprint
        #[arg(long)]
        keys: bool,
        /// Then print each change as it happens (who comes online, changes
        /// status, goes offline) until interrupted
        #[arg(long)]
        watch: bool,
    },
    /// Open a conversation with NAME
    Connect {
        /// The peer to talk to
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::online_peers))]
        name: String,
    },
    /// Send a message in the current conversation
    Send(SendArgs),
    /// End the current conversation
    Disconnect,
    /// This daemon: name, addresses, directory state, current peer
    Status,
    /// Stream events (messages, receipts, connects, disconnects, peers
    /// coming online and going offline) until interrupted
    Watch,
    /// Round trips to the current peer over the chat stream
    Ping {
        /// How many pings
        #[arg(long, short = 'c', default_value_t = 4, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        count: u32,
        /// Seconds between pings
        #[arg(long, default_value = "0.2", value_name = "SECONDS", value_parser = parse_timeout)]
        interval: Duration,
    },
    /// The stored conversation with NAME (default: the current or last peer)
    History {
        /// The peer whose conversation to show
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::online_peers))]
        name: Option<String>,
        /// Show the newest N entries [default: all]; one answer holds at
        /// most 10,000 (more is cut to that, saying so on stderr)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Accept the key the directory now lists for NAME (after `key changed`)
    Trust {
        /// The peer whose new key to accept
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::online_peers))]
        name: String,
    },
    /// Take a waiting request to talk (peerd --accept known|ask): from
    /// NAME, or the oldest
    Accept {
        /// The peer whose request to take [default: the oldest]
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::requesting_peers))]
        name: Option<String>,
    },
    /// Turn down a waiting request to talk: from NAME, or the oldest (the
    /// dialer hears "did not accept")
    Reject {
        /// The peer whose request to turn down [default: the oldest]
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::requesting_peers))]
        name: Option<String>,
    },
    /// Block NAME: its dials are refused as if you were busy, you do not
    /// dial it, and a conversation with it ends; kept across restarts
    Block {
        /// The peer to block
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::online_peers))]
        name: String,
    },
    /// Unblock NAME
    Unblock {
        /// The peer to unblock
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::blocked_peers))]
        name: String,
    },
    /// The blocked peers
    Blocked,
    /// Interactive: connect if NAME is given, type a line + Enter to send;
    /// /list, /connect NAME, /disconnect, /quit
    Chat {
        /// The peer to connect to first
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::online_peers))]
        name: Option<String>,
    },
    /// Print the script that gives SHELL completion of chatctl's commands,
    /// flags and peer names (asked of the daemon as you type); e.g.
    /// `source <(chatctl completions bash)` in ~/.bashrc
    Completions {
        /// The shell
        #[arg(value_enum, value_name = "SHELL")]
        shell: completion::Shell,
    },
    /// Full-screen chat: who is online, the conversation with receipt
    /// marks, an input line; connects to NAME first if given (? for help)
    Tui {
        /// The peer to connect to first
        #[arg(value_name = "NAME", add = ArgValueCompleter::new(completion::online_peers))]
        name: Option<String>,
    },
}

/// `chatctl send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The message; the words are joined with single spaces (a word that
    /// starts with `-` is text, except `-h`; use `--` before text that
    /// starts with `--` or is `-h`)
    // Flags may follow the words (`send hi --wait none`); words that start
    // with a single `-` are made text before clap sees them
    // (`Cli::parse_args`).
    #[arg(value_name = "TEXT", required = true, num_args = 1.., allow_negative_numbers = true)]
    pub text: Vec<String>,
    /// What to wait for before returning
    #[arg(long, value_enum, default_value_t = Wait::Delivered, value_name = "WHAT")]
    pub wait: Wait,
    /// How long to wait, in seconds
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,
}

impl Cli {
    /// Parses a command line (`args` starts with the program's name), with
    /// `send`'s words that start with a single `-` taken as text (see
    /// [`send_words_as_text`]).
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Cli::try_parse_from(send_words_as_text(args.into_iter().map(Into::into).collect()))
    }
}

/// The options of `send` (its own and the global ones) that take a value
/// in the next word.
const SEND_VALUE_OPTIONS: [&str; 3] = ["--socket", "--wait", "--timeout"];

/// `send - buy milk`, `send -_-`, `send -hi`: a word of `send` that starts
/// with a single `-` (other than `-h`) is text. clap alone refuses `- buy`
/// and reads `-hi` as `-h`: it prints the help and exits 0, so a script's
/// `chatctl send "$line"` would not send that line and not fail either.
/// Words that start with `--` stay options, so a mistyped `--wiat` is a
/// usage error, not a message; `--` still makes everything after it text.
/// Options may follow the words (SPEC §2: `send TEXT... [--wait …]`), so
/// the rewrite puts the options first and every word after one `--`, in
/// their order. Any other command line is returned as it is.
fn send_words_as_text(args: Vec<OsString>) -> Vec<OsString> {
    let dash = |a: &OsString| a.as_encoded_bytes().starts_with(b"-");
    let double_dash = |a: &OsString| a.as_encoded_bytes().starts_with(b"--");
    // The subcommand: the first word that is neither an option nor the
    // value of `--socket`.
    let mut at = 1;
    while at < args.len() && dash(&args[at]) {
        if args[at] == "--" {
            return args;
        }
        at += if args[at] == "--socket" { 2 } else { 1 };
    }
    if args.get(at).is_none_or(|word| word != "send") {
        return args;
    }
    let (mut options, mut words) = (Vec::new(), Vec::new());
    let mut moved = false;
    let mut rest = args[at + 1..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            words.extend(rest.by_ref().cloned());
        } else if arg == "-h" || double_dash(arg) {
            options.push(arg.clone());
            if SEND_VALUE_OPTIONS.iter().any(|o| arg == *o) {
                options.extend(rest.next().cloned());
            }
        } else {
            moved |= dash(arg);
            words.push(arg.clone());
        }
    }
    if !moved {
        return args;
    }
    let mut out = args[..=at].to_vec();
    out.extend(options);
    out.push("--".into());
    out.extend(words);
    out
}

/// How far `send` waits for its message to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wait {
    /// The peer's daemon stored the message
    Delivered,
    /// The peer's user was shown the message
    Displayed,
    /// Return once peerd accepted the message
    None,
}

/// The longest `--timeout`: the longest wait peerd takes (it refuses
/// more, rather than answer sooner than asked).
const MAX_TIMEOUT: Duration = peerchat_core::timeouts::MAX_SEND_WAIT;

/// Parses `--timeout` (and ping's `--interval`): positive seconds,
/// fractions allowed, at most [`MAX_TIMEOUT`].
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT.as_secs_f64()) {
        return Err(format!("must be more than 0 and at most {} seconds", MAX_TIMEOUT.as_secs()));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_args(std::iter::once("chatctl").chain(args.iter().copied()))
    }

    fn send_args(args: &[&str]) -> SendArgs {
        match parse(args).map(|cli| cli.command) {
            Ok(Command::Send(send)) => send,
            other => panic!("not a send: {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_takes_words_flags_and_hyphens() {
        let send = send_args(&["send", "hello", "world"]);
        assert_eq!(send.text, ["hello", "world"]);
        assert_eq!(send.wait, Wait::Delivered);
        assert_eq!(send.timeout, Duration::from_secs(10));

        let send = send_args(&["send", "hi", "--wait", "none", "--timeout", "2.5"]);
        assert_eq!(send.text, ["hi"]);
        assert_eq!(send.wait, Wait::None);
        assert_eq!(send.timeout, Duration::from_millis(2500));

        let send = send_args(&["send", "--wait=displayed", "--", "-x", "--y"]);
        assert_eq!(send.text, ["-x", "--y"]);
        assert_eq!(send.wait, Wait::Displayed);

        let send = send_args(&["send", "-5", "degrees"]);
        assert_eq!(send.text, ["-5", "degrees"]);

        assert!(parse(&["send"]).is_err());
        assert!(parse(&["send", "x", "--timeout", "0"]).is_err());
        // The cap is peerd's: what chatctl accepts, the daemon waits for.
        let most = MAX_TIMEOUT.as_secs().to_string();
        assert_eq!(send_args(&["send", "x", "--timeout", &most]).timeout, MAX_TIMEOUT);
        let over = (MAX_TIMEOUT.as_secs() + 1).to_string();
        assert!(parse(&["send", "x", "--timeout", &over]).is_err());
        assert!(parse(&["send", "x", "--wait", "forever"]).is_err());
    }

    #[test]
    fn send_words_that_start_with_one_dash_are_text() {
        // What clap alone refused, or took for `-h` (help, exit 0).
        for word in ["-hi", "-_-", "- buy milk", "-", "-x", "-wait"] {
            assert_eq!(send_args(&["send", word]).text, [word], "{word}");
        }
        // In their order, with options before, between and after them;
        // `--socket`'s value is neither the command nor text.
        let send = send_args(&[
            "--socket", "send", "send", "-", "milk", "--wait", "none", "-and", "--json", "bread",
        ]);
        assert_eq!(send.text, ["-", "milk", "-and", "bread"]);
        assert_eq!(send.wait, Wait::None);
        let cli =
            parse(&["--json", "send", "-1", "--timeout", "3", "--", "--x", "-y"]).expect("parses");
        assert!(cli.json);
        assert_eq!(cli.socket, None);
        match cli.command {
            Command::Send(send) => {
                assert_eq!(send.text, ["-1", "--x", "-y"]);
                assert_eq!(send.timeout, Duration::from_secs(3));
            }
            other => panic!("not a send: {other:?}"),
        }
        let cli = parse(&["--socket=/s", "send", "-hi"]).expect("parses");
        assert_eq!(cli.socket, Some(PathBuf::from("/s")));
        // A value is still the option's: this timeout is refused.
        assert!(parse(&["send", "hi", "--timeout", "-5"]).is_err());
        // `-h` asks for help; a mistyped long option is an error.
        let help = parse(&["send", "-x", "-h"]).expect_err("help");
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let typo = parse(&["send", "-x", "--wiat", "none"]).expect_err("unknown option");
        assert_eq!(typo.kind(), clap::error::ErrorKind::UnknownArgument);
        assert_eq!(typo.exit_code(), 2);
        // Only send's words: other commands are parsed as clap has them.
        assert!(parse(&["history", "-x"]).is_err());
    }

    #[test]
    fn the_send_options_that_take_a_value_are_all_known() {
        let mut cli = Cli::command();
        cli.build();
        let send = cli.find_subcommand("send").expect("send");
        let mut taking: Vec<String> = send
            .get_arguments()
            .filter(|a| a.get_action().takes_values() && !a.is_positional())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        taking.sort();
        let mut known = SEND_VALUE_OPTIONS.map(String::from).to_vec();
        known.sort();
        assert_eq!(taking, known);
        // Nor does send have short options other than -h, which would
        // need the same care.
        assert!(send.get_arguments().all(|a| a.get_short().is_none_or(|c| c == 'h')));
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let cli = parse(&["--json", "status", "--socket", "/s"]).expect("parses");
        assert!(cli.json);
        assert_eq!(cli.socket, Some(PathBuf::from("/s")));
        let cli = parse(&["list", "--json"]).expect("parses");
        assert!(cli.json);
        let cli = parse(&["list", "--watch", "--json", "--keys"]).expect("parses");
        assert!(cli.json);
        assert!(matches!(cli.command, Command::List { keys: true, watch: true }));
    }

    #[test]
    fn usage_errors_exit_2() {
        let err = parse(&["bogus"]).expect_err("unknown command");
        assert_eq!(err.exit_code(), 2);
        let err = parse(&["history", "--limit", "0"]).expect_err("limit 0");
        assert_eq!(err.exit_code(), 2);
        // More than one answer holds is not a usage error (the answer is
        // cut, with a note).
        assert!(matches!(
            parse(&["history", "--limit", "50000"]).map(|c| c.command),
            Ok(Command::History { limit: Some(50_000), .. })
        ));
    }
}
