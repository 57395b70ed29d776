//! The baselines, written here so that they are simple enough to trust:
//! what the machine does with no peerchat logic in the way. Each server is
//! this binary re-executed as a hidden subcommand (`serve-tcp`,
//! `serve-grpc`) that prints its address on stdout, so that, like alice and
//! bob, the two ends are separate processes.

pub(crate) mod grpc;
pub(crate) mod tcp;
pub(crate) mod tls;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::anyhow;

use crate::daemons::{Daemon, command};

/// Starts `me SUBCOMMAND ARGS…` and returns it with the address it printed.
pub(crate) fn start_server(
    me: &Path,
    subcommand: &str,
    args: &[&OsStr],
) -> anyhow::Result<(Daemon, SocketAddr)> {
    let mut cmd = command(me);
    cmd.arg(subcommand).args(args);
    let (daemon, line) = Daemon::start_ready(subcommand, &mut cmd, None)?;
    let addr = line
        .trim()
        .parse()
        .map_err(|_| anyhow!("{subcommand} printed {line:?}, not its address"))?;
    Ok((daemon, addr))
}

/// The message every baseline and peerd carry: 64 bytes of text.
pub(crate) const MESSAGE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
