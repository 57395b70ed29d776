//! The command line (SPEC §2), declared with clap.
//!
//! `--socket` and `--json` are global: they are accepted before or after the
//! subcommand. Usage errors exit 2 (clap's default).

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
        /// Show the newest N entries [default: all, up to 10,000]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
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
    /// The message; the words are joined with single spaces
    /// (use `--` before a message that starts with `-`)
    // Flags may follow the words (`send hi --wait none`), so words that
    // look like flags need `--` first; negative numbers need nothing.
    #[arg(value_name = "TEXT", required = true, num_args = 1.., allow_negative_numbers = true)]
    pub text: Vec<String>,
    /// What to wait for before returning
    #[arg(long, value_enum, default_value_t = Wait::Delivered, value_name = "WHAT")]
    pub wait: Wait,
    /// How long to wait, in seconds
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,
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
        Cli::try_parse_from(std::iter::once("chatctl").chain(args.iter().copied()))
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
    }
}
