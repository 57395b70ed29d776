//! Slots per source address: so that one host cannot take every connection
//! (or every pending dial) of the peer port and lock everyone else out. The
//! global ceilings stay; these keep one source's share of them small.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Counts what each source address holds, up to `max` each.
#[derive(Debug, Clone)]
pub(crate) struct PerSource {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

/// One slot of one source; given back when dropped.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    owner: PerSource,
    ip: IpAddr,
}

impl PerSource {
    pub(crate) fn new(max: usize) -> PerSource {
        PerSource { held: Arc::new(Mutex::new(HashMap::new())), max }
    }

    /// A slot for `ip`, unless it holds `max` already.
    pub(crate) fn try_take(&self, ip: IpAddr) -> Option<SourceSlot> {
        let ip = canonical(ip);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot { owner: self.clone(), ip })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Who counts as one source: an IPv4 address (also when mapped into IPv6),
/// or an IPv6 /64, the block one host usually gets, so that a host cannot
/// take a fresh share from each of its 2^64 addresses (the directory counts
/// sources the same way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_gets_its_share_and_gives_it_back() {
        let limit = PerSource::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let s1 = limit.try_take(a).expect("first");
        let _s2 = limit.try_take(a).expect("second");
        assert!(limit.try_take(a).is_none(), "a third from one source");
        assert!(limit.try_take(b).is_some(), "another source is not affected");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert!(limit.try_take(mapped).is_none(), "mapped counts as the same source");
        drop(s1);
        assert!(limit.try_take(a).is_some(), "a slot given back");
        assert_eq!(limit.held.lock().expect("lock").len(), 1, "empty entries are removed");
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let limit = PerSource::new(1);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_net: IpAddr = "2001:db8:1:2:ffff::7".parse().expect("ip");
        let other_net: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        let _held = limit.try_take(one).expect("first");
        assert!(limit.try_take(same_net).is_none(), "another address of the same /64");
        assert!(limit.try_take(other_net).is_some(), "another /64");
    }
}
