//! peerchat-redis-cluster: a real Redis Cluster on 127.0.0.1 for tests and
//! benchmarks (directoryd's store contract tests, the end-to-end suite,
//! `scripts/bench`), and the means to break it on purpose.
//!
//! ```no_run
//! use std::time::Duration;
//! use peerchat_redis_cluster::{Cluster, Error, Options};
//!
//! fn survives_a_master_crash() -> Result<(), Error> {
//!     let Some(mut cluster) = Cluster::start_or_skip(Options::default()) else {
//!         return Ok(());
//!     };
//!     let _store = cluster.store_url(); // redis://127.0.0.1:P1,redis://127.0.0.1:P2,...
//!     let master = cluster.master_for_key("user:alice")?;
//!     cluster.kill9(master)?;
//!     cluster.wait_failover(master, Duration::from_secs(15))?;
//!     cluster.restart(master)?;
//!     cluster.wait_healthy(Duration::from_secs(15))?;
//!     Ok(()) // dropping `cluster` stops every node and removes its files
//! }
//! ```
//!
//! Needs Redis 7's `redis-server` and `redis-cli` on `PATH` (Debian's
//! `redis-server` package). Where they are missing, [`Cluster::start`]
//! returns [`Error::NotInstalled`] and [`Cluster::start_or_skip`] skips,
//! unless `PEERCHAT_REDIS_REQUIRED=1` ([`required`]) says the test must run.
//! Set `PEERCHAT_KEEP_REDIS=1` to keep the data dir (nodes.conf, AOF,
//! redis.log of every node) for a post-mortem.
//!
//! # Why the nodes are owned children, not daemons
//!
//! Every redis-server is a [`std::process::Child`] of the test process,
//! never `--daemonize yes`. So each node is stopped by its pid and reaped
//! by us, and a pid can never have been reused by a stranger when we signal
//! it; nothing is ever killed by name, which on a shared machine would take
//! down other tests' nodes. Children are also spawned with
//! `PR_SET_PDEATHSIG=SIGKILL`, so that when the test process dies in a way
//! no `Drop` survives (SIGKILL, abort, a CI timeout) the kernel kills the
//! nodes too, rather than leaving them to hold ports and disk. A panic
//! unwinds and `Drop` stops the nodes: SIGTERM, then SIGKILL after a few
//! seconds.
//!
//! The API blocks (it runs `redis-cli` and sleeps between polls). From an
//! async test, call it in `spawn_blocking` or before the runtime starts:
//! which thread calls does not matter, since every child is forked by one
//! long-lived thread of this crate (`PR_SET_PDEATHSIG` fires when the
//! forking *thread* exits, and a pool thread may exit while the cluster
//! lives on).
//!
//! Every wait is bounded: each `redis-cli` call has a timeout and is killed
//! past it, and every loop polls against a deadline. A failure says what
//! was waited for, what was last seen, and ends with the node's log.
//!
//! # Layout
//! - [`cluster`](Cluster): start, queries (seeds, masters, key owners),
//!   faults (kill, restart) and the waits for the cluster to heal.
//! - `node`: one redis-server process, its ports, dir and arguments.
//! - `topology`: parsing `CLUSTER NODES`, `CLUSTER INFO`, `INFO`.
//! - `process`: spawning children that die with us; commands with deadlines.
//! - `ports`: picking free loopback ports.
//! - [`Error`]: what went wrong, with the command, status and log tail.

mod cluster;
mod error;
mod node;
mod ports;
mod process;
mod topology;

pub use cluster::{Cluster, KEEP_VAR, Options, REQUIRED_VAR, required};
pub use error::Error;
pub use process::pid_alive;
