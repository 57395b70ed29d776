//! Who counts as one source of traffic, and a count of what each source
//! holds. The directory and the peer port share both, so that "one host"
//! means the same thing in every limit.
//!
//! A source is an IPv4 address (also when mapped into IPv6) or an IPv6
//! /64: one host is usually given a whole /64 and could otherwise take a
//! fresh share of every per-address limit from each of its 2^64 addresses.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Where traffic comes from, as far as limits are concerned. Ordered (in
/// no meaningful order) so that tables can keep sources sorted by what
/// they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    V4([u8; 4]),
    /// The upper 64 bits of the address.
    V6Net(u64),
    /// An IPv6 /48, as [`Source::site`] makes it: the upper 64 bits of the
    /// address with the lower 16 of them zero.
    V6Site(u64),
    /// No peer address (not on TCP): all such traffic shares one budget.
    Unknown,
}

impl Source {
    /// The source of a connection from `remote`, if it has an address.
    pub fn of(remote: Option<SocketAddr>) -> Source {
        remote.map_or(Source::Unknown, |remote| Source::of_ip(remote.ip()))
    }

    pub fn of_ip(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => Source::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }

    /// The site this source belongs to, for quotas on what lasts (names):
    /// an IPv6 /48, which is what one customer site is usually given
    /// (65,536 /64s, each a source of its own for rates), else the source
    /// itself.
    pub fn site(self) -> Source {
        match self {
            Source::V6Net(net) => Source::V6Site(net & !0xffff),
            other => other,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Source::V4(octets) => write!(f, "{}", IpAddr::from(octets)),
            Source::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from(u128::from(net) << 64)),
            Source::V6Site(net) => write!(f, "{}/48", Ipv6Addr::from(u128::from(net) << 64)),
            Source::Unknown => f.write_str("an unknown address"),
        }
    }
}

/// Counts what each source holds (connections, pending dials, watchers),
/// up to `max` each, so that one host cannot take every slot of a shared
/// ceiling and lock everyone else out. The map only holds sources that
/// hold something, so it is never larger than the ceiling it guards.
#[derive(Debug, Clone)]
pub struct PerSource {
    held: Arc<Mutex<HashMap<Source, usize>>>,
    max: usize,
}

/// One slot of one source; given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    owner: PerSource,
    source: Source,
}

impl PerSource {
    pub fn new(max: usize) -> PerSource {
        PerSource { held: Arc::new(Mutex::new(HashMap::new())), max }
    }

    /// What each source may hold at most.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `source`, unless it holds `max` already.
    pub fn try_take(&self, source: Source) -> Option<SourceSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.get(&source).copied().unwrap_or(0);
        if n >= self.max {
            return None;
        }
        held.insert(source, n + 1);
        Some(SourceSlot { owner: self.clone(), source })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Source {
        Source::of(Some(s.parse().expect("a socket address")))
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(src("[2001:db8:1:2::1]:5"), src("[2001:db8:1:2:ffff::9]:6"));
        assert_ne!(src("[2001:db8:1:2::1]:5"), src("[2001:db8:1:3::1]:5"));
        assert_eq!(src("[2001:db8:1:2::1]:5").to_string(), "2001:db8:1:2::/64");
        assert_eq!(src("[::ffff:10.0.0.1]:5"), src("10.0.0.1:9"));
        assert_eq!(src("10.0.0.1:9").to_string(), "10.0.0.1");
        assert_eq!(Source::of(None).to_string(), "an unknown address");
    }

    #[test]
    fn a_site_is_an_ipv6_slash_48_and_any_other_source_itself() {
        let a = src("[2001:db8:1:2::1]:5").site();
        assert_eq!(a, src("[2001:db8:1:ffff::9]:6").site());
        assert_ne!(a, src("[2001:db8:2:2::1]:5").site());
        assert_eq!(a.to_string(), "2001:db8:1::/48");
        assert_eq!(src("10.0.0.1:9").site(), src("10.0.0.1:9"));
        assert_eq!(a.site(), a);
    }

    #[test]
    fn each_source_gets_its_share_and_gives_it_back() {
        let limit = PerSource::new(2);
        let (a, b) = (src("10.0.0.1:1"), src("10.0.0.2:1"));
        let s1 = limit.try_take(a).expect("first");
        let _s2 = limit.try_take(a).expect("second");
        assert!(limit.try_take(a).is_none(), "a third from one source");
        assert!(limit.try_take(b).is_some(), "another source is not affected");
        assert!(limit.try_take(src("[::ffff:10.0.0.1]:7")).is_none(), "mapped is the same source");
        drop(s1);
        assert!(limit.try_take(a).is_some(), "a slot given back");
        assert_eq!(limit.held.lock().expect("lock").len(), 1, "empty entries are removed");
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let limit = PerSource::new(1);
        let _held = limit.try_take(src("[2001:db8:1:2::1]:1")).expect("first");
        assert!(limit.try_take(src("[2001:db8:1:2:ffff::7]:1")).is_none(), "same /64");
        assert!(limit.try_take(src("[2001:db8:1:3::1]:1")).is_some(), "another /64");
    }

    #[test]
    fn a_limit_of_zero_refuses_everyone_and_keeps_nothing() {
        let limit = PerSource::new(0);
        assert!(limit.try_take(src("10.0.0.1:1")).is_none());
        assert!(limit.held.lock().expect("lock").is_empty());
    }
}
