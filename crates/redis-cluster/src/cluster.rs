//! The cluster: starting it, asking it who serves what, breaking it on
//! purpose, and waiting for it to heal.

use std::env;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::node::Node;
use crate::process::{self, Output};
use crate::topology::{self, SLOTS};
use crate::{Error, ports};

/// Set to a value other than `0` to make [`Cluster::start_or_skip`] fail
/// rather than skip where redis-server is missing (for CI, which must
/// really run the Redis tests).
pub const REQUIRED_VAR: &str = "PEERCHAT_REDIS_REQUIRED";

/// Set (to anything) to keep the cluster's data dir after it is dropped;
/// its path is printed on stderr when the cluster starts.
pub const KEEP_VAR: &str = "PEERCHAT_KEEP_REDIS";

/// Between two looks at the cluster while waiting for it.
const POLL: Duration = Duration::from_millis(50);

/// One `redis-cli` query on loopback takes milliseconds; this long means
/// the node is stuck, and the wait that asked moves on.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// From spawn (or restart) until a node answers `PING`, AOF loading
/// included. A test's AOF is small.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `redis-cli --cluster create` assigns slots and waits for the nodes to
/// meet; seconds normally.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// From a created cluster until every node agrees and every replica has
/// synced.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node gets to exit after SIGTERM before it is SIGKILLed.
/// Flushing a test's AOF takes milliseconds; a Redis 7 master may also wait
/// for lagging replicas, which it need not here.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Whether a missing redis-server must fail the test rather than skip it:
/// [`REQUIRED_VAR`] set to anything but empty or `0`.
pub fn required() -> bool {
    env::var_os(REQUIRED_VAR).is_some_and(|value| !value.is_empty() && value != "0")
}

/// The shape of the cluster to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How many masters share the 16384 slots; at least 3
    /// (`redis-cli --cluster create` refuses fewer). Default 3.
    pub masters: usize,
    /// Replicas of each master. Default 1, so that any one master can be
    /// killed and the cluster fails over.
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a node may be unreachable before it
    /// is failed over. A failover takes about twice this. Default 2000.
    pub node_timeout_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self { masters: 3, replicas_per_master: 1, node_timeout_ms: 2000 }
    }
}

/// A running Redis Cluster on 127.0.0.1 whose nodes are child processes of
/// this one. Dropping it stops every node (SIGTERM, then SIGKILL) and
/// removes its data dir.
///
/// Nodes are named by their client port everywhere: that is what
/// [`Cluster::seeds`] hands to a client and what `CLUSTER NODES` shows.
#[derive(Debug)]
pub struct Cluster {
    /// Every node, up or down, in port-picking order. Declared before
    /// `dir` so that on drop the processes go before their files.
    nodes: Vec<Node>,
    /// What it was started with.
    options: Options,
    /// The redis-server found on `PATH`, for restarts.
    server: PathBuf,
    /// The redis-cli found on `PATH`.
    cli: PathBuf,
    /// One subdirectory per node, named by its port.
    dir: TempDir,
}

impl Cluster {
    /// Starts `masters * (1 + replicas_per_master)` nodes, creates the
    /// cluster, and returns once every node reports `cluster_state:ok`,
    /// agrees on who serves every slot and every replica has synced.
    ///
    /// On any error the nodes started so far are stopped. A missing
    /// redis-server or redis-cli is [`Error::NotInstalled`].
    pub fn start(options: Options) -> Result<Self, Error> {
        if options.masters < 3 {
            return Err(Error::InvalidOptions(format!(
                "{} masters: redis-cli --cluster create needs at least 3",
                options.masters
            )));
        }
        if options.node_timeout_ms == 0 {
            return Err(Error::InvalidOptions("node_timeout_ms must be positive".into()));
        }
        let server = find_program("redis-server")?;
        let cli = find_program("redis-cli")?;

        let keep = env::var_os(KEEP_VAR).is_some();
        let dir = tempfile::Builder::new()
            .prefix("peerchat-redis-")
            .disable_cleanup(keep)
            .tempdir()
            .map_err(|source| Error::Os { action: "creating the cluster's temp dir", source })?;
        if keep {
            eprintln!(
                "peerchat-redis-cluster: keeping {} ({KEEP_VAR} is set)",
                dir.path().display()
            );
        }

        let count = options.masters * (1 + options.replicas_per_master);
        let ports = ports::pick(2 * count)?;
        let (client_ports, bus_ports) = ports.split_at(count);
        let mut cluster = Self { nodes: Vec::with_capacity(count), options, server, cli, dir };
        for (&port, &bus_port) in client_ports.iter().zip(bus_ports) {
            cluster.nodes.push(Node::new(cluster.dir.path(), port, bus_port)?);
        }
        // From here an early return drops `cluster`, which stops the nodes.
        for node in &mut cluster.nodes {
            node.spawn(&cluster.server, options.node_timeout_ms)?;
        }
        cluster.wait_answering(client_ports, "starting")?;
        cluster.create()?;
        cluster.wait_until("a new cluster to converge".into(), CONVERGE_TIMEOUT, true)?;
        Ok(cluster)
    }

    /// [`Cluster::start`] for a test that can do without Redis: `None`,
    /// after printing why, where redis-server or redis-cli is missing and
    /// [`required`] is false. Panics with the reason on any other error,
    /// and on a missing program when [`required`] is true.
    pub fn start_or_skip(options: Options) -> Option<Self> {
        match Self::start(options) {
            Ok(cluster) => Some(cluster),
            Err(e @ Error::NotInstalled { .. }) if !required() => {
                eprintln!("skipping: redis-server not installed ({e})");
                None
            }
            Err(e @ Error::NotInstalled { .. }) => {
                panic!("{e}, and {REQUIRED_VAR} is set: this test must run here")
            }
            Err(e) => panic!("could not start a Redis Cluster: {e}"),
        }
    }

    /// `redis://127.0.0.1:P` for every node, up or down, in a fixed order.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|node| format!("redis://127.0.0.1:{}", node.port)).collect()
    }

    /// The seeds joined by commas: the value of `directoryd --store`.
    pub fn store_url(&self) -> String {
        self.seeds().join(",")
    }

    /// The client port of every node, up or down, in the order of
    /// [`Cluster::seeds`].
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// The pids of the nodes that are up, for checking after a stop that
    /// none is left (see [`crate::pid_alive`]).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }

    /// The cluster's data dir: one subdirectory per node, named by port,
    /// holding its nodes.conf, AOF and redis.log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `redis-cli -p PORT ARGS...` (with a timeout) and returns what it
    /// printed, trailing newline trimmed. Options may lead the args:
    /// `cluster.cli(port, &["-c", "set", "k", "v"])` follows redirects.
    ///
    /// Note that redis-cli exits 0 on an error reply and prints it like any
    /// other (`ERR ...`, `MOVED ...`): check the answer.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String, Error> {
        self.node(port)?;
        self.query(port, args)
    }

    /// The client ports of the masters that serve slots, sorted, as one
    /// live node sees it. Right after a kill that view may be stale: call
    /// [`Cluster::wait_failover`] or [`Cluster::wait_healthy`] first.
    pub fn masters(&self) -> Result<Vec<u16>, Error> {
        let (_, nodes) = self.view()?;
        let mut masters: Vec<u16> = nodes
            .iter()
            .filter(|node| node.master && !node.failed && !node.slots.is_empty())
            .map(|node| node.port)
            .collect();
        masters.sort_unstable();
        Ok(masters)
    }

    /// The client port of the master serving `key`'s slot, as one live node
    /// sees it (see [`Cluster::masters`] on staleness).
    pub fn master_for_key(&self, key: &str) -> Result<u16, Error> {
        let (port, nodes) = self.view()?;
        let args = ["cluster", "keyslot", key];
        let reply = self.query(port, &args)?;
        let slot: u16 = reply.trim().parse().map_err(|_| Error::Reply {
            command: process::display(&self.cli, &args),
            reason: "not a slot number".into(),
            output: reply.clone(),
        })?;
        topology::owner(&topology::slot_map(&nodes), slot).ok_or_else(|| Error::Reply {
            command: format!("redis-cli -p {port} cluster nodes"),
            reason: format!("no master serves slot {slot}"),
            output: format!("{nodes:?}"),
        })
    }

    /// SIGKILLs the node by its pid and reaps it, as a crash would leave
    /// it: no AOF flush beyond `appendfsync everysec`.
    pub fn kill9(&mut self, port: u16) -> Result<(), Error> {
        let node = self.node_mut(port)?;
        if node.poll_exit().is_some() || !node.is_up() {
            return Err(Error::NodeState { port, state: "down", action: "kill it" });
        }
        node.kill9();
        Ok(())
    }

    /// SIGSTOPs the node: it holds its connections and answers nothing,
    /// as a frozen host or a long pause would. [`Cluster::resume`] lets it
    /// go on; stopping the cluster does too.
    pub fn pause(&mut self, port: u16) -> Result<(), Error> {
        let node = self.node_mut(port)?;
        if node.poll_exit().is_some() || !node.is_up() {
            return Err(Error::NodeState { port, state: "down", action: "pause it" });
        }
        node.signal(libc::SIGSTOP);
        Ok(())
    }

    /// SIGCONTs a node [`Cluster::pause`] stopped.
    pub fn resume(&mut self, port: u16) -> Result<(), Error> {
        self.node_mut(port)?.signal(libc::SIGCONT);
        Ok(())
    }

    /// The client ports of `master`'s replicas, as it reports them
    /// (`INFO replication`).
    pub fn replicas_of(&self, master: u16) -> Result<Vec<u16>, Error> {
        let text = self.cli(master, &["info", "replication"])?;
        Ok(text
            .lines()
            .filter(|line| line.starts_with("slave"))
            .filter_map(|line| line.split(',').find_map(|field| field.strip_prefix("port=")))
            .filter_map(|port| port.trim().parse().ok())
            .collect())
    }

    /// SIGKILLs every node that is up: the whole store down at once.
    pub fn kill9_all(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
    }

    /// Starts a node that is down again, with its ports, dir, nodes.conf
    /// and AOF, and returns once it answers `PING`. A master that was
    /// failed over comes back as a replica of its successor; wait with
    /// [`Cluster::wait_healthy`] for that to settle.
    pub fn restart(&mut self, port: u16) -> Result<(), Error> {
        let (server, timeout) = (self.server.clone(), self.options.node_timeout_ms);
        let node = self.node_mut(port)?;
        node.poll_exit();
        if node.is_up() {
            return Err(Error::NodeState { port, state: "up", action: "restart it" });
        }
        node.spawn(&server, timeout)?;
        self.wait_answering(&[port], "restarting")
    }

    /// Restarts every node that is down, all at once (a whole-store restart
    /// comes back from the AOFs), and returns once each answers `PING`.
    /// Then [`Cluster::wait_healthy`].
    pub fn restart_all(&mut self) -> Result<(), Error> {
        let (server, timeout) = (self.server.clone(), self.options.node_timeout_ms);
        let mut started = Vec::new();
        for node in &mut self.nodes {
            node.poll_exit();
            if !node.is_up() {
                node.spawn(&server, timeout)?;
                started.push(node.port);
            }
        }
        self.wait_answering(&started, "restarting")
    }

    /// Waits until the slots of `old_master`, which must be down, are served
    /// by another node: every live node reports `cluster_state:ok`, all
    /// 16384 slots ok, and the same live owner for every slot.
    pub fn wait_failover(&mut self, old_master: u16, timeout: Duration) -> Result<(), Error> {
        let node = self.node_mut(old_master)?;
        node.poll_exit();
        if node.is_up() {
            return Err(Error::NodeState {
                port: old_master,
                state: "up",
                action: "wait for its failover",
            });
        }
        let what = format!("the slots of 127.0.0.1:{old_master} to fail over");
        self.wait_until(what, timeout, false)
    }

    /// Waits until the live nodes are all well: what
    /// [`Cluster::wait_failover`] waits for, the same master for every
    /// replica in every live node's view, and every replica synced
    /// (`master_link_status:up`). Needed before a second failover: a
    /// replica that has not synced cannot take over.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), Error> {
        self.wait_until("the cluster to be healthy".into(), timeout, true)
    }

    /// Waits until every replica of `master` has acknowledged all that the
    /// master has written, so that a write made before this call survives
    /// the master's SIGKILL. Replicas acknowledge about once a second, so
    /// this takes up to a second. Times out if `master` has no replica.
    pub fn wait_replicated(&mut self, master: u16, timeout: Duration) -> Result<(), Error> {
        let node = self.node_mut(master)?;
        node.poll_exit();
        if !node.is_up() {
            return Err(Error::NodeState {
                port: master,
                state: "down",
                action: "wait for its replicas",
            });
        }
        let started = Instant::now();
        loop {
            let reason = match self.query(master, &["info", "replication"]) {
                Ok(text) => match replicated(&text) {
                    Ok(None) => return Ok(()),
                    Ok(Some(reason)) => reason,
                    Err(reason) => {
                        return Err(Error::Reply {
                            command: format!("redis-cli -p {master} info replication"),
                            reason,
                            output: text,
                        });
                    }
                },
                Err(e @ (Error::Command { .. } | Error::CommandTimeout { .. })) => e.to_string(),
                Err(e) => return Err(e),
            };
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("the replicas of 127.0.0.1:{master} to catch up"),
                    waited: started.elapsed(),
                    last: reason,
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Stops every node that is up: SIGTERM to all (each flushes its AOF),
    /// then SIGKILL to any still running after a few seconds; all reaped.
    /// Also what dropping the cluster does.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.terminate();
        }
        let deadline = Instant::now() + STOP_GRACE;
        // Every node is looked at each round (so none waits behind another).
        // Bounded: reap_by SIGKILLs whatever is left at the deadline.
        while self.nodes.iter_mut().map(|node| node.reap_by(deadline)).filter(|done| !done).count()
            > 0
        {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts `redis-cli --cluster create` over every node.
    fn create(&self) -> Result<(), Error> {
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(self.nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)));
        args.extend([
            "--cluster-replicas".into(),
            self.options.replicas_per_master.to_string(),
            "--cluster-yes".into(),
        ]);
        let output = process::run_ok(&self.cli, &args, CREATE_TIMEOUT)?;
        if !output.stdout.contains("All 16384 slots covered") {
            return Err(Error::Reply {
                command: process::display(&self.cli, &args),
                reason: "no \"All 16384 slots covered\"".into(),
                output: output.both(),
            });
        }
        Ok(())
    }

    /// Waits until each of `ports` answers `PONG` (not `LOADING`). Fails at
    /// once with the log if one of them exits.
    fn wait_answering(&mut self, ports: &[u16], action: &'static str) -> Result<(), Error> {
        let started = Instant::now();
        let mut waiting = ports.to_vec();
        loop {
            let mut last = String::new();
            let mut answered = Vec::new();
            for &port in &waiting {
                let node = self.node_mut(port)?;
                if let Some(status) = node.poll_exit() {
                    return Err(Error::NodeExited {
                        port,
                        status: status.to_string(),
                        action,
                        log_tail: node.log_tail(),
                    });
                }
                match self.query(port, &["ping"]) {
                    Ok(reply) if reply == "PONG" => answered.push(port),
                    Ok(reply) => last = format!("127.0.0.1:{port} answered {reply:?}"),
                    Err(e @ (Error::Command { .. } | Error::CommandTimeout { .. })) => {
                        last = e.to_string();
                    }
                    Err(e) => return Err(e),
                }
            }
            waiting.retain(|port| !answered.contains(port));
            let Some(&first) = waiting.first() else { return Ok(()) };
            if started.elapsed() >= ANSWER_TIMEOUT {
                let log = self.node(first).map(Node::log_tail).unwrap_or_default();
                return Err(Error::Timeout {
                    what: format!("{waiting:?} to answer PING while {action}"),
                    waited: started.elapsed(),
                    last: format!("{last}\n{log}"),
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Polls [`Cluster::check`] until it passes or `timeout` runs out.
    fn wait_until(&mut self, what: String, timeout: Duration, synced: bool) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let Some(blocker) = self.check(synced)? else { return Ok(()) };
            if started.elapsed() >= timeout {
                let log = blocker.port.and_then(|port| self.node(port).ok()).map(Node::log_tail);
                return Err(Error::Timeout {
                    what,
                    waited: started.elapsed(),
                    last: match log {
                        Some(log) => format!("{}\n{log}", blocker.reason),
                        None => blocker.reason,
                    },
                });
            }
            thread::sleep(POLL);
        }
    }

    /// One look at every live node: `None` if all is well, else the first
    /// thing that is not. `synced` adds the replica checks. A node that
    /// exited on its own is an error: nothing will heal that.
    fn check(&mut self, synced: bool) -> Result<Option<Blocker>, Error> {
        for node in &mut self.nodes {
            if let Some(status) = node.poll_exit() {
                return Err(Error::NodeExited {
                    port: node.port,
                    status: status.to_string(),
                    action: "waiting for the cluster",
                    log_tail: node.log_tail(),
                });
            }
        }
        let live: Vec<u16> =
            self.nodes.iter().filter(|node| node.is_up()).map(|node| node.port).collect();
        if live.is_empty() {
            return Ok(Some(Blocker { port: None, reason: "no node is up".into() }));
        }
        let blocked = |port: u16, reason: String| -> Result<Option<Blocker>, Error> {
            Ok(Some(Blocker { port: Some(port), reason }))
        };

        let mut agreed = None;
        for &port in &live {
            let info = match self.probe(port, &["cluster", "info"])? {
                Ok(text) => text,
                Err(reason) => return blocked(port, reason),
            };
            let fields = topology::info_fields(&info);
            let field = |name: &str| fields.get(name).copied().unwrap_or("?");
            if field("cluster_state") != "ok" {
                return blocked(port, format!(":{port} cluster_state:{}", field("cluster_state")));
            }
            if field("cluster_slots_ok") != SLOTS.to_string() {
                return blocked(
                    port,
                    format!(":{port} cluster_slots_ok:{}", field("cluster_slots_ok")),
                );
            }
            if field("cluster_known_nodes") != self.nodes.len().to_string() {
                return blocked(
                    port,
                    format!(":{port} cluster_known_nodes:{}", field("cluster_known_nodes")),
                );
            }

            let text = match self.probe(port, &["cluster", "nodes"])? {
                Ok(text) => text,
                Err(reason) => return blocked(port, reason),
            };
            let nodes = topology::parse_nodes(&text).map_err(|reason| Error::Reply {
                command: format!("redis-cli -p {port} cluster nodes"),
                reason,
                output: text.clone(),
            })?;
            let map = topology::slot_map(&nodes);
            if topology::covered(&map) != SLOTS {
                return blocked(port, format!(":{port} assigns {} slots", topology::covered(&map)));
            }
            if let Some(down) = map.values().find(|owner| !live.contains(owner)) {
                return blocked(
                    port,
                    format!(":{port} has slots served by :{down}, which is down"),
                );
            }
            let mut roles = topology::roles(&nodes);
            roles.retain(|port, _| live.contains(port));
            let view = (map, roles);
            match &agreed {
                None => agreed = Some((port, view)),
                Some((first, seen)) if *seen != view => {
                    return blocked(
                        port,
                        format!(":{first} sees {seen:?}\nbut :{port} sees {view:?}"),
                    );
                }
                Some(_) => {}
            }

            if synced {
                let text = match self.probe(port, &["info", "replication"])? {
                    Ok(text) => text,
                    Err(reason) => return blocked(port, reason),
                };
                let fields = topology::info_fields(&text);
                let field = |name: &str| fields.get(name).copied().unwrap_or("?");
                if field("role") == "slave"
                    && (field("master_link_status") != "up"
                        || field("master_sync_in_progress") != "0")
                {
                    return blocked(
                        port,
                        format!(
                            ":{port} replicates :{} with master_link_status:{} \
                             master_sync_in_progress:{}",
                            field("master_port"),
                            field("master_link_status"),
                            field("master_sync_in_progress")
                        ),
                    );
                }
            }
        }
        Ok(None)
    }

    /// A query whose failure to answer is a reason to wait, not an error.
    fn probe(&self, port: u16, args: &[&str]) -> Result<Result<String, String>, Error> {
        match self.query(port, args) {
            Ok(text) => Ok(Ok(text)),
            Err(e @ (Error::Command { .. } | Error::CommandTimeout { .. })) => {
                Ok(Err(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// `redis-cli -h 127.0.0.1 -p PORT ARGS...` with [`QUERY_TIMEOUT`].
    fn query(&self, port: u16, args: &[&str]) -> Result<String, Error> {
        let port = port.to_string();
        let mut full = vec!["-h", "127.0.0.1", "-p", port.as_str()];
        full.extend_from_slice(args);
        let Output { stdout, .. } = process::run_ok(&self.cli, &full, QUERY_TIMEOUT)?;
        Ok(stdout.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// `CLUSTER NODES` from the first live node that answers, and its port.
    fn view(&self) -> Result<(u16, Vec<topology::NodeLine>), Error> {
        let mut last = None;
        for node in self.nodes.iter().filter(|node| node.is_up()) {
            let text = match self.query(node.port, &["cluster", "nodes"]) {
                Ok(text) => text,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let nodes = topology::parse_nodes(&text).map_err(|reason| Error::Reply {
                command: format!("redis-cli -p {} cluster nodes", node.port),
                reason,
                output: text.clone(),
            })?;
            return Ok((node.port, nodes));
        }
        Err(last.unwrap_or(Error::AllDown))
    }

    fn node(&self, port: u16) -> Result<&Node, Error> {
        self.nodes.iter().find(|node| node.port == port).ok_or(Error::UnknownPort { port })
    }

    fn node_mut(&mut self, port: u16) -> Result<&mut Node, Error> {
        self.nodes.iter_mut().find(|node| node.port == port).ok_or(Error::UnknownPort { port })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What holds a wait up, and at which node (whose log the error carries).
#[derive(Debug)]
struct Blocker {
    port: Option<u16>,
    reason: String,
}

/// From a master's `INFO replication`: `None` if it has replicas and all
/// have acknowledged its whole offset, else what is missing. `Err` if the
/// reply cannot be read.
fn replicated(text: &str) -> Result<Option<String>, String> {
    let fields = topology::info_fields(text);
    if fields.get("role") != Some(&"master") {
        return Ok(Some(format!("role:{}", fields.get("role").unwrap_or(&"?"))));
    }
    let offset: u64 = fields
        .get("master_repl_offset")
        .and_then(|offset| offset.parse().ok())
        .ok_or("no master_repl_offset")?;
    let replicas = topology::replicas(&fields)?;
    if replicas.is_empty() {
        return Ok(Some("no replica is connected".into()));
    }
    Ok(replicas.iter().find(|replica| replica.state != "online" || replica.offset < offset).map(
        |replica| {
            format!(
                "replica :{} is {} at offset {} of {offset}",
                replica.port, replica.state, replica.offset
            )
        },
    ))
}

/// The executable `name` in a directory of `PATH`.
fn find_program(name: &'static str) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or(Error::NotInstalled { program: name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_three_masters_with_one_replica_each() {
        assert_eq!(
            Options::default(),
            Options { masters: 3, replicas_per_master: 1, node_timeout_ms: 2000 }
        );
    }

    #[test]
    fn fewer_than_three_masters_is_refused_before_anything_starts() {
        let result = Cluster::start(Options { masters: 2, ..Options::default() });
        assert!(matches!(result, Err(Error::InvalidOptions(_))), "{result:?}");
    }

    #[test]
    fn a_missing_program_is_not_installed() {
        assert!(matches!(
            find_program("peerchat-no-such-program"),
            Err(Error::NotInstalled { program: "peerchat-no-such-program" })
        ));
        assert!(find_program("sh").is_ok());
    }

    #[test]
    fn replication_is_complete_only_when_every_replica_has_the_offset() {
        let caught_up = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
                         slave0:ip=127.0.0.1,port=7004,state=online,offset=98,lag=0\r\n\
                         master_repl_offset:98\r\n";
        assert_eq!(replicated(caught_up), Ok(None));
        let behind = caught_up.replace("offset=98", "offset=14");
        assert!(matches!(replicated(&behind), Ok(Some(reason)) if reason.contains(":7004")));
        let syncing = caught_up.replace("online", "wait_bgsave");
        assert!(matches!(replicated(&syncing), Ok(Some(_))));
        let alone = "role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:98\r\n";
        assert!(matches!(replicated(alone), Ok(Some(reason)) if reason.contains("no replica")));
        assert!(matches!(replicated("role:slave\r\n"), Ok(Some(_))));
        assert!(replicated("role:master\r\n").is_err());
    }
}
