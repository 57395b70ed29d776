//! A small LAN of network namespaces for the fault suite: a hub namespace
//! holding a bridge, and one namespace per host (`dir`, `a`, `b`, …) joined
//! to the bridge by a veth pair. Each host has one address in a private /24
//! that exists only inside these namespaces, so nothing is added to the
//! test machine's own network and parallel tests cannot clash (each has its
//! own namespaces; the subnet differs per test only to keep logs readable).
//!
//! Faults are made from inside the namespaces: a host's hub port taken down
//! ([`Lan::unplug`], a cable pulled: its packets vanish without an error)
//! or blackhole routes between two hosts ([`Lan::block`], both directions,
//! everything else untouched). [`Lan`] deletes every namespace it created
//! when dropped, also when the test panics; deleting a namespace destroys
//! the veth ends in it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Set this to make a test fail, rather than skip, where namespaces cannot
/// be made (for CI, which runs as root and must really run the suite).
pub(crate) const REQUIRE_VAR: &str = "PEERCHAT_FAULTS_REQUIRED";

/// One host of the LAN.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// Its short role name (`a`).
    pub(crate) role: String,
    /// Its network namespace, for `ip netns exec`.
    pub(crate) netns: String,
    /// Its one address.
    pub(crate) ip: Ipv4Addr,
    /// Its veth end in the hub.
    port: String,
}

/// The namespaces of one test. Dropping it deletes them.
#[derive(Debug)]
pub(crate) struct Lan {
    hub: String,
    hosts: Vec<Host>,
    /// Every namespace created so far, deleted on drop (also after a failed
    /// [`Lan::create`]).
    created: Vec<String>,
}

impl Lan {
    /// A LAN for `test` with one host per role, or `None` after saying on
    /// stderr why the test is skipped (not root, or `ip netns` refused),
    /// unless [`REQUIRE_VAR`] is set, which turns the skip into a failure.
    pub(crate) fn or_skip(test: &str, roles: &[&str]) -> Option<Lan> {
        let why = if euid() != 0 {
            format!("running as euid {}", euid())
        } else {
            match Lan::create(roles) {
                Ok(lan) => return Some(lan),
                Err(why) => why,
            }
        };
        let message = format!("skipping faults suite test {test}: needs root and ip netns ({why})");
        assert!(std::env::var_os(REQUIRE_VAR).is_none(), "{message}, but {REQUIRE_VAR} is set");
        // Straight to the process's stderr: the test harness captures
        // `eprintln!` of passing tests, and a skip must be seen.
        let _ = writeln!(std::io::stderr(), "{message}");
        None
    }

    /// Creates the hub and the hosts, each with `lo` up and its address.
    /// Roles are at most 3 characters (namespace names stay ≤ 15). `Err`
    /// only when no namespace can be made at all; once one could, any
    /// later failure is a bug of the test and panics.
    pub(crate) fn create(roles: &[&str]) -> Result<Lan, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        let (tag, mut lan) = loop {
            let tag = unique_tag(n, attempt);
            let hub = format!("{tag}-hub");
            match ip(&["netns", "add", &hub]) {
                Ok(()) => {
                    break (tag, Lan { hub: hub.clone(), hosts: Vec::new(), created: vec![hub] });
                }
                // A namespace of a crashed earlier run with the same name.
                Err(why) if why.contains("exists") && attempt < 5 => attempt += 1,
                Err(why) => return Err(why),
            }
        };
        let hub = lan.hub.clone();
        lan.ip_ok(&["-n", &hub, "link", "set", "lo", "up"]);
        lan.ip_ok(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        lan.ip_ok(&["-n", &hub, "link", "set", "br0", "up"]);
        let subnet = 1 + (n % 250) as u8;
        for (i, role) in roles.iter().enumerate() {
            assert!(role.len() <= 3, "role {role:?} longer than 3 characters");
            let netns = format!("{tag}-{role}");
            lan.ip_ok(&["netns", "add", &netns]);
            lan.created.push(netns.clone());
            let octet = u8::try_from(i + 1).expect("fewer than 255 hosts");
            let host_ip = Ipv4Addr::new(10, 77, subnet, octet);
            // The hub end is `p-ROLE` (a bare `a` would read as an `ip`
            // keyword), the host end `eth0`: interface names are per
            // namespace.
            let port = format!("p-{role}");
            lan.ip_ok(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ]);
            lan.ip_ok(&["-n", &hub, "link", "set", &port, "master", "br0"]);
            lan.ip_ok(&["-n", &hub, "link", "set", &port, "up"]);
            lan.ip_ok(&["-n", &netns, "link", "set", "lo", "up"]);
            lan.ip_ok(&["-n", &netns, "addr", "add", &format!("{host_ip}/24"), "dev", "eth0"]);
            lan.ip_ok(&["-n", &netns, "link", "set", "eth0", "up"]);
            lan.hosts.push(Host { role: (*role).to_owned(), netns, ip: host_ip, port });
        }
        Ok(lan)
    }

    pub(crate) fn host(&self, role: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .unwrap_or_else(|| panic!("no host {role:?} in this LAN"))
    }

    /// Takes `role`'s hub port down: its cable is pulled. Its packets are
    /// dropped without an error, as on a real network.
    pub(crate) fn unplug(&self, role: &str) {
        self.ip_ok(&["-n", &self.hub, "link", "set", &self.host(role).port, "down"]);
    }

    /// Puts `role`'s cable back.
    pub(crate) fn plug(&self, role: &str) {
        self.ip_ok(&["-n", &self.hub, "link", "set", &self.host(role).port, "up"]);
    }

    /// Cuts `x` and `y` apart, both directions (a blackhole route to the
    /// other on each), leaving every other path as it is.
    pub(crate) fn block(&self, x: &str, y: &str) {
        self.routes("add", x, y);
    }

    /// Undoes [`Lan::block`].
    pub(crate) fn unblock(&self, x: &str, y: &str) {
        self.routes("del", x, y);
    }

    fn routes(&self, verb: &str, x: &str, y: &str) {
        let (x, y) = (self.host(x), self.host(y));
        for (from, to) in [(x, y), (y, x)] {
            let to = format!("{}/32", to.ip);
            self.ip_ok(&["-n", &from.netns, "route", verb, "blackhole", &to]);
        }
    }

    fn ip_ok(&self, args: &[&str]) {
        if let Err(why) = ip(args) {
            panic!("{why}");
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Hosts first, the hub last; a namespace lives on until the last
        // process in it exits, which the daemons' guards see to.
        for netns in self.created.iter().rev() {
            if let Err(why) = ip(&["netns", "del", netns]) {
                eprintln!("cleaning up: {why}");
            }
        }
    }
}

/// Runs `ip ARGS...`, returning its stderr as the error.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `pc` + 5 hex digits from the pid, the clock and the attempt + 1 hex digit
/// of the per-process counter: 8 characters, so `TAG-hub` is 12.
fn unique_tag(n: u32, attempt: u32) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mix = std::process::id().wrapping_mul(0x9E37_79B9) ^ nanos ^ attempt.rotate_left(16);
    format!("pc{:05x}{:x}", mix & 0xf_ffff, n & 0xf)
}

fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
