//! The command line: flags, their environment variables and defaults, and
//! the `forget` and `key` admin subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use peerchat_core::Name;
use peerchat_core::lease::DEFAULT_TTL;

use crate::{Config, RedisOptions, StoreConfig};

/// Longest accepted `--ttl`: a day. Longer leases would keep dead peers
/// listed for longer than anyone wants, and bound the `Instant` arithmetic.
const MAX_TTL_SECONDS: u64 = 86_400;

/// `directoryd [--listen ADDR] [--ttl SECONDS] [...]` serves;
/// `directoryd forget NAME [--data-dir DIR]` releases a name;
/// `directoryd key [--data-dir DIR]` prints the directory key's fingerprint.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "directoryd",
    version,
    about = "The peerchat directory: online peers register here and find each other.",
    // Serving takes no subcommand, so that `directoryd --listen ADDR` stays
    // what it always was; serving flags before a subcommand are an error.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// An admin task instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// How to serve, when there is no subcommand.
    #[command(flatten)]
    pub serve: Serve,
}

/// The serving flags.
#[derive(Debug, Clone, Args)]
pub struct Serve {
    /// Address to serve gRPC on.
    #[arg(
        long,
        env = "PEERCHAT_DIRECTORY_LISTEN",
        default_value = "0.0.0.0:7300",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// How long a registration lives without a heartbeat, in seconds.
    #[arg(
        long,
        env = "PEERCHAT_TTL",
        default_value_t = DEFAULT_TTL.as_secs(),
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_SECONDS),
    )]
    pub ttl: u64,

    /// Where name → key bindings (bindings.jsonl) and the directory key
    /// (directory.key) are kept, across restarts; created 0700. Without it
    /// both live in memory only: names are bound, and the key is fixed, for
    /// this run alone. Give one for any directory people rely on.
    #[arg(long, env = "PEERCHAT_DIRECTORY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Challenge and Register calls, and status changes by Heartbeat, a
    /// second per source IP (IPv6: per /64), with bursts of twice that.
    #[arg(
        long,
        env = "PEERCHAT_REGISTER_RATE",
        default_value_t = 20,
        value_name = "PER_SEC",
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    pub register_rate: u32,

    /// List and Lookup calls a second per source IP (IPv6: per /64), with
    /// bursts of twice that.
    #[arg(
        long,
        env = "PEERCHAT_LIST_RATE",
        default_value_t = 100,
        value_name = "PER_SEC",
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    pub list_rate: u32,

    /// Live registrations per source IP (IPv6: per /64) at most, and as
    /// many presence watchers (WatchPeers streams).
    #[arg(
        long,
        env = "PEERCHAT_MAX_PER_SOURCE",
        default_value_t = 256,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=1_000_000),
    )]
    pub max_per_source: u64,

    /// New names (bound to a key for the first time) per source IP (IPv6:
    /// per /48) and day at most, all at once if the day's were not used.
    /// A binding lasts for good, so this keeps one host from claiming
    /// every name; an owner registering its own name again is never
    /// counted.
    #[arg(
        long,
        env = "PEERCHAT_NEW_NAMES_PER_DAY",
        default_value_t = 64,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
    )]
    pub new_names_per_day: u32,

    /// Open connections per source IP (IPv6: per /64) at most; further ones
    /// from it are closed at once. All sources together share 16,384.
    #[arg(
        long,
        env = "PEERCHAT_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 1_024,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=1_000_000),
    )]
    pub max_connections_per_source: u64,

    /// Challenge nonces waiting for their Register at most (each
    /// replica's own, over Redis; a nonce takes about 220 bytes here). When
    /// all are taken a Challenge is still answered: the oldest nonce of
    /// the source holding the most is let go, so a flood from many
    /// addresses costs the flooders their own nonces, not everyone's.
    #[arg(
        long,
        env = "PEERCHAT_MAX_CHALLENGES",
        default_value_t = 100_000,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=10_000_000),
    )]
    pub max_challenges: u64,

    /// Where the directory's state lives: `memory` (this process alone;
    /// bindings in --data-dir), or a Redis Cluster by its seed nodes,
    /// `redis://HOST:PORT[,redis://HOST:PORT...]`. Any number of
    /// directoryd replicas may share one cluster; give them all the same
    /// directory key (the same directory.key in their --data-dir).
    #[arg(
        long,
        env = "PEERCHAT_STORE",
        default_value = "memory",
        value_name = "STORE",
        value_parser = parse_store,
    )]
    pub store: StoreConfig,

    /// Threads serving requests. One serves well over 50,000 heartbeats a
    /// second (a peer sends one every ttl/3 seconds); more cost CPU per
    /// request in hand-offs between threads, and pay off only on a machine
    /// with cores to spare.
    #[arg(
        long,
        env = "PEERCHAT_DIRECTORY_THREADS",
        default_value_t = 1,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=256),
    )]
    pub threads: u16,
}

/// Admin subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Releases NAME from its key.
    ///
    /// The next key to register NAME then owns it: for a user who lost their
    /// key, or who moves the name to a new one. With --data-dir (the
    /// embedded store) only while the directory is stopped: a running one
    /// keeps its bindings in memory, so this refuses while one runs on DIR.
    /// With --store redis://... at any time, also while replicas run.
    Forget(Forget),
    /// Prints the fingerprint of the directory key, creating the key if
    /// there is none.
    ///
    /// Hand it to users so that they can pin this directory:
    /// `peerd start --directory https://HOST:7300 --directory-key FINGERPRINT`.
    /// Safe while the directory runs.
    Key(Key),
}

/// `directoryd key [--data-dir DIR]`
#[derive(Debug, Clone, Args)]
pub struct Key {
    /// The data dir of the directory whose key to show.
    #[arg(long, env = "PEERCHAT_DIRECTORY_DATA_DIR", value_name = "DIR", required = true)]
    pub data_dir: PathBuf,
}

/// `directoryd forget NAME (--data-dir DIR | --store redis://...)`
#[derive(Debug, Clone, Args)]
pub struct Forget {
    /// The name to release (any case).
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub name: Name,

    /// The data dir of the (stopped) directory whose binding to remove.
    #[arg(long, value_name = "DIR", required_unless_present = "store")]
    pub data_dir: Option<PathBuf>,

    /// The Redis Cluster of the directory whose binding to remove.
    #[arg(long, value_name = "STORE", value_parser = parse_redis, conflicts_with = "data_dir")]
    pub store: Option<RedisOptions>,
}

fn parse_name(raw: &str) -> Result<Name, peerchat_core::NameError> {
    Name::parse(raw)
}

fn parse_store(raw: &str) -> Result<StoreConfig, crate::RedisError> {
    if raw == "memory" {
        return Ok(StoreConfig::Memory);
    }
    Ok(StoreConfig::Redis(raw.parse()?))
}

fn parse_redis(raw: &str) -> Result<RedisOptions, crate::RedisError> {
    raw.parse()
}

impl Cli {
    /// The daemon configuration the serving flags ask for.
    pub fn config(&self) -> Config {
        let serve = &self.serve;
        Config {
            listen: serve.listen,
            ttl: Duration::from_secs(serve.ttl),
            data_dir: serve.data_dir.clone(),
            register_rate: serve.register_rate,
            list_rate: serve.list_rate,
            max_per_source: usize::try_from(serve.max_per_source).unwrap_or(usize::MAX),
            new_names_per_day: serve.new_names_per_day,
            max_connections_per_source: usize::try_from(serve.max_connections_per_source)
                .unwrap_or(usize::MAX),
            max_challenges: usize::try_from(serve.max_challenges).unwrap_or(usize::MAX),
            store: serve.store.clone(),
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_zero_ttl_is_refused() {
        let cli =
            Cli::try_parse_from(["directoryd", "--listen", "127.0.0.1:0", "--ttl", "3"]).unwrap();
        assert!(cli.command.is_none());
        let config = cli.config();
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.ttl, Duration::from_secs(3));
        assert!(Cli::try_parse_from(["directoryd", "--ttl", "0"]).is_err());
        assert!(Cli::try_parse_from(["directoryd", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn limits_and_data_dir_parse() {
        let cli = Cli::try_parse_from([
            "directoryd",
            "--data-dir",
            "/srv/dir",
            "--register-rate",
            "5",
            "--list-rate",
            "7",
            "--max-per-source",
            "3",
            "--max-connections-per-source",
            "9",
            "--new-names-per-day",
            "11",
        ])
        .unwrap();
        let config = cli.config();
        assert_eq!(config.data_dir, Some(PathBuf::from("/srv/dir")));
        assert_eq!((config.register_rate, config.list_rate, config.max_per_source), (5, 7, 3));
        assert_eq!(config.max_connections_per_source, 9);
        assert_eq!(config.new_names_per_day, 11);
        let defaults = Cli::try_parse_from(["directoryd"]).unwrap().config();
        assert_eq!(defaults.new_names_per_day, Config::default().new_names_per_day);
        assert_eq!(
            defaults.max_connections_per_source,
            Config::default().max_connections_per_source
        );
        for zero in [
            "--register-rate",
            "--list-rate",
            "--max-per-source",
            "--max-connections-per-source",
            "--new-names-per-day",
            "--threads",
        ] {
            assert!(Cli::try_parse_from(["directoryd", zero, "0"]).is_err(), "{zero}");
        }
    }

    #[test]
    fn forget_takes_a_valid_name_and_its_own_data_dir() {
        let cli = Cli::try_parse_from(["directoryd", "forget", "Bob", "--data-dir", "/d"]).unwrap();
        let Some(Command::Forget(forget)) = cli.command else {
            panic!("no forget subcommand");
        };
        assert_eq!(forget.name.as_str(), "Bob");
        assert_eq!(forget.data_dir, Some(PathBuf::from("/d")));
        assert!(Cli::try_parse_from(["directoryd", "forget", "b b"]).is_err());
        assert!(Cli::try_parse_from(["directoryd", "forget"]).is_err());
        assert!(Cli::try_parse_from(["directoryd", "forget", "bob"]).is_err(), "no store");
        let both = ["directoryd", "forget", "bob", "--data-dir", "/d", "--store", "redis://h:1"];
        assert!(Cli::try_parse_from(both).is_err());
        let cli =
            Cli::try_parse_from(["directoryd", "forget", "bob", "--store", "redis://h:1"]).unwrap();
        let Some(Command::Forget(forget)) = cli.command else {
            panic!("no forget subcommand");
        };
        assert_eq!(forget.store.unwrap().seeds, ["redis://h:1"]);
        // Serving flags do not mix with a subcommand.
        assert!(Cli::try_parse_from(["directoryd", "--ttl", "3", "forget", "bob"]).is_err());
    }

    #[test]
    fn key_takes_its_own_data_dir() {
        let cli = Cli::try_parse_from(["directoryd", "key", "--data-dir", "/d"]).unwrap();
        let Some(Command::Key(key)) = cli.command else {
            panic!("no key subcommand");
        };
        assert_eq!(key.data_dir, PathBuf::from("/d"));
        assert!(Cli::try_parse_from(["directoryd", "key", "extra"]).is_err());
        assert!(Cli::try_parse_from(["directoryd", "--listen", "127.0.0.1:1", "key"]).is_err());
    }

    #[test]
    fn the_store_is_memory_or_redis_seeds() {
        let cli = Cli::try_parse_from(["directoryd"]).unwrap();
        assert_eq!(cli.config().store, StoreConfig::Memory);
        let cli = Cli::try_parse_from([
            "directoryd",
            "--store",
            "redis://127.0.0.1:7001,redis://[::1]:7002",
        ])
        .unwrap();
        let StoreConfig::Redis(options) = cli.config().store else { panic!("not redis") };
        assert_eq!(options.seeds.len(), 2);
        let err = Cli::try_parse_from(["directoryd", "--store", "mysql://x"]).unwrap_err();
        assert!(err.to_string().contains("is not a Redis node"), "{err}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
