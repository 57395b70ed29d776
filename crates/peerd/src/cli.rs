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
    /// Print the configuration `start` would use with these flags, and
    /// where each value comes from (flag, environment, config file, default).
    Config(ConfigArgs),
    /// Write a systemd user unit that runs peerd (`~/.config/systemd/user/peerd.service`)
    /// and print the line that enables it.
    InstallService(InstallServiceArgs),
    /// Print the script that gives SHELL completion of peerd's commands and
    /// flags, e.g. `source <(peerd completions bash)` in ~/.bashrc.
    Completions {
        /// The shell
        #[arg(value_enum, value_name = "SHELL")]
        shell: crate::completions::Shell,
    },
}

#[derive(Debug, Clone, Args)]
pub struct InstallServiceArgs {
    /// Print the unit instead of writing it.
    #[arg(long)]
    pub print: bool,
    /// The config file the service reads [default: the usual one]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print one JSON object (`{"path", "written", "enable"}`, and `unit`
    /// with --print) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// Stay attached and log to stderr (for systemd, containers and tests).
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// Print one JSON object instead of aligned lines.
    #[arg(long)]
    pub json: bool,
}

/// The daemon's settings. Each comes from its flag, else its environment
/// variable, else the config file, else its default (`peerd config` shows
/// which); the defaults are applied in `config`, not here, so that a value
/// the user did not give can come from the file.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// The config file [default: $XDG_CONFIG_HOME/peerchat/config.toml]
    #[arg(long, env = "PEERCHAT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Your name: 1-32 ASCII letters, digits, '_', '-', '.', starting with a
    /// letter or digit. [default: your login name]
    #[arg(long, env = "PEERCHAT_NAME")]
    pub name: Option<String>,
    /// The directory's URL, or the URLs of its replicas separated by
    /// commas: peerd uses the first that answers and moves to the next when
    /// it stops answering. [default: http://127.0.0.1:7300]
    #[arg(long, env = "PEERCHAT_DIRECTORY", value_name = "URL[,URL...]")]
    pub directory: Option<String>,
    /// For an https:// directory: the fingerprint its key must have
    /// (`directoryd key` prints it). Without it the key seen first is
    /// trusted and remembered.
    #[arg(long, env = "PEERCHAT_DIRECTORY_KEY")]
    pub directory_key: Option<String>,
    /// Where to listen for peers. [default: 0.0.0.0:0]
    #[arg(long, env = "PEERCHAT_LISTEN")]
    pub listen: Option<SocketAddr>,
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
    /// fail. [default: 30]
    #[arg(long, env = "PEERCHAT_RESUME_WINDOW", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_RESUME_WINDOW))]
    pub resume_window: Option<u64>,
    /// Who may open a conversation without asking you: `all` (anyone the
    /// directory verified), `known` (peers you have talked to before; you
    /// are asked about the rest), or `ask` (you are asked about everyone:
    /// `chatctl accept` / `chatctl reject`). [default: all]
    #[arg(long, env = "PEERCHAT_ACCEPT", value_enum, value_name = "POLICY")]
    pub accept: Option<Policy>,
}

/// The longest `--resume-window`, in seconds.
pub const MAX_RESUME_WINDOW: u64 = 86_400;

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// The control socket of the daemon to stop [default: as `start`'s,
    /// from the config file or the default location]
    #[arg(long, env = "PEERCHAT_SOCKET")]
    pub socket: Option<PathBuf>,
    /// The config file, for its `socket`
    #[arg(long, env = "PEERCHAT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}
