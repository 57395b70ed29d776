//! Command-line flags of `peerd`, each with its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::consent::Policy;

/// peerd: your peerchat daemon. It keeps you registered in the directory
/// and holds one conversation at a time; drive it with `chatctl`.
#[derive(Debug, Parser)]
#[command(name = "peerd", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the daemon (detached unless --foreground); returns once it is ready.
    Start(StartArgs),
    /// Stop the daemon cleanly: goodbye to the peer, unregister, remove the socket.
    Stop(StopArgs),
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Your name: 1-32 ASCII letters, digits, '_', '-', '.', starting with a
    /// letter or digit. Default: your login name.
    #[arg(long, env = "PEERCHAT_NAME")]
    pub name: Option<String>,
    /// The directory's URL, or the URLs of its replicas separated by
    /// commas: peerd uses the first that answers and moves to the next when
    /// it stops answering.
    #[arg(long, env = "PEERCHAT_DIRECTORY", default_value = "http://127.0.0.1:7300")]
    pub directory: String,
    /// For an https:// directory: the fingerprint its key must have
    /// (`directoryd key` prints it). Without it the key seen first is
    /// trusted and remembered.
    #[arg(long, env = "PEERCHAT_DIRECTORY_KEY")]
    pub directory_key: Option<String>,
    /// Where to listen for peers.
    #[arg(long, env = "PEERCHAT_LISTEN", default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// The address other peers dial. Default: the listening port on the IP
    /// address the directory sees us coming from.
    #[arg(long, env = "PEERCHAT_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// The control socket chatctl talks to. Default:
    /// $XDG_RUNTIME_DIR/peerchat/peerd.sock, or /tmp/peerchat-$UID/peerd.sock.
    #[arg(long, env = "PEERCHAT_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Conversation history and other state. Default:
    /// <user data dir>/peerchat/<name>.
    #[arg(long, env = "PEERCHAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How long a lost link may take to come back (the dialer redials with
    /// backoff) before the conversation ends and unacknowledged messages
    /// fail.
    #[arg(long, env = "PEERCHAT_RESUME_WINDOW", default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub resume_window: u64,
    /// Who may open a conversation without asking you: `all` (anyone the
    /// directory verified), `known` (peers you have talked to before; you
    /// are asked about the rest), or `ask` (you are asked about everyone:
    /// `chatctl accept` / `chatctl reject`).
    #[arg(long, env = "PEERCHAT_ACCEPT", value_enum, default_value_t = Policy::All, value_name = "POLICY")]
    pub accept: Policy,
    /// Stay attached and log to stderr (for systemd, containers and tests).
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// The control socket of the daemon to stop.
    #[arg(long, env = "PEERCHAT_SOCKET")]
    pub socket: Option<PathBuf>,
}
