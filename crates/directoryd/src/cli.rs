//! The command line: flags, their environment variables and defaults.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use peerchat_core::lease::DEFAULT_TTL;

use crate::Config;

/// Longest accepted `--ttl`: a day. Longer leases would keep dead peers
/// listed for longer than anyone wants, and bound the `Instant` arithmetic.
const MAX_TTL_SECONDS: u64 = 86_400;

/// `directoryd [--listen ADDR] [--ttl SECONDS]`
#[derive(Debug, Clone, Parser)]
#[command(
    name = "directoryd",
    version,
    about = "The peerchat directory: online peers register here and find each other."
)]
pub struct Cli {
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
}

impl Cli {
    /// The daemon configuration these flags ask for.
    pub fn config(&self) -> Config {
        Config { listen: self.listen, ttl: Duration::from_secs(self.ttl), ..Config::default() }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_zero_ttl_is_refused() {
        let cli =
            Cli::try_parse_from(["directoryd", "--listen", "127.0.0.1:0", "--ttl", "3"]).unwrap();
        let config = cli.config();
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.ttl, Duration::from_secs(3));
        assert!(Cli::try_parse_from(["directoryd", "--ttl", "0"]).is_err());
        assert!(Cli::try_parse_from(["directoryd", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
