//! Free loopback ports for the nodes.

use std::net::{Ipv4Addr, TcpListener};

use crate::Error;

/// `count` distinct ports that were free on 127.0.0.1 a moment ago.
///
/// Every listener is held until all are bound, so the kernel cannot hand
/// out the same port twice; they are closed before returning so that
/// redis-server can bind them. Another process may take one in between:
/// the node then fails to start and says so in its log, which the start
/// error carries.
pub(crate) fn pick(count: usize) -> Result<Vec<u16>, Error> {
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|source| Error::Os { action: "binding a loopback port to pick it", source })?;
        listeners.push(listener);
    }
    listeners
        .iter()
        .map(|listener| {
            listener.local_addr().map(|addr| addr.port()).map_err(|source| Error::Os {
                action: "reading the port of a loopback listener",
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn ports_are_distinct_nonzero_and_free_again() {
        let Ok(ports) = pick(12) else { panic!("could not pick ports") };
        assert_eq!(ports.len(), 12);
        assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), 12, "{ports:?}");
        assert!(ports.iter().all(|&port| port != 0));
        // Closed again: bindable. Not always at once: a child another test
        // in this binary forks (process.rs) holds copies of every open fd
        // until it execs, which under load takes a while; and any outgoing
        // connection on the machine may take one of the ports for good.
        // So: polled for a bounded time, and two of twelve may stay taken.
        // Listeners left open by `pick` would hold all twelve for good.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut held = ports;
        loop {
            held.retain(|&port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err());
            if held.len() <= 2 || std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(held.len() <= 2, "ports still held: {held:?}");
    }
}
