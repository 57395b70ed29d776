//! Message ids: 32 lowercase hex digits (the shape of a simple UUID), made
//! of a random 64-bit prefix drawn once per daemon run and a counter.
//!
//! Why not a random UUID per message: that is one `getrandom` system call
//! and a few allocations per message on the hot path, for no gain. Ids must
//! never repeat for a sender (the receiver drops a repeated id as a
//! duplicate, also across restarts): within a run the counter sees to that,
//! and two runs collide only if they draw the same 64-bit prefix.
//!
//! Each peer gets ids of its own ([`IdBook`]): a prefix drawn for it and a
//! counter of the messages sent to it. With one counter for everyone, a
//! peer could read in the gaps between our ids how many messages we sent
//! to others meanwhile.

use std::collections::HashMap;
use std::sync::Arc;

use crate::session::Id;

/// How many peers' id makers are kept; past it they are all dropped, and a
/// peer's next id starts a new prefix (its receiver starts a new window).
const MAX_PEERS: usize = 1024;

/// One [`IdGen`] per peer, made on first use.
#[derive(Debug, Default)]
pub struct IdBook {
    peers: HashMap<String, IdGen>,
}

impl IdBook {
    /// The next id of a message to `peer`; `seed` draws a random prefix
    /// when the peer has none yet. (Spelled another way, a name is another
    /// entry: a new prefix, which is as good.)
    pub fn next_for(&mut self, peer: &str, seed: impl FnOnce() -> u64) -> Id {
        // No allocation on the way of every message.
        if let Some(ids) = self.peers.get_mut(peer) {
            return ids.next_id();
        }
        if self.peers.len() >= MAX_PEERS {
            self.peers.clear();
        }
        self.peers.entry(peer.to_owned()).or_insert_with(|| IdGen::new(seed())).next_id()
    }
}

/// Makes the ids of one daemon run.
#[derive(Debug, Clone)]
pub struct IdGen {
    /// The prefix, already in hex: only the counter changes per id.
    hex: [u8; 32],
    next: u64,
}

impl IdGen {
    /// `seed` must be random (the caller draws it: this crate does no I/O).
    pub fn new(seed: u64) -> IdGen {
        let mut hex = [b'0'; 32];
        write_hex(&mut hex[..16], seed);
        IdGen { hex, next: 0 }
    }

    /// The next id.
    pub fn next_id(&mut self) -> Id {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        write_hex(&mut self.hex[16..], n);
        // Only ASCII hex digits were written.
        Arc::from(std::str::from_utf8(&self.hex).unwrap_or_default())
    }
}

/// `v` as 16 lowercase hex digits into `out` (16 bytes), a byte at a time.
fn write_hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_32_hex_digits_and_never_repeat_within_a_run() {
        let mut ids = IdGen::new(0xdead_beef_0123_4567);
        let made: Vec<Id> = (0..10_000).map(|_| ids.next_id()).collect();
        assert!(made.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        assert_eq!(made.iter().collect::<HashSet<_>>().len(), made.len());
        assert_eq!(&*made[0], "deadbeef012345670000000000000000");
        assert_eq!(&*made[0x1234], "deadbeef012345670000000000001234");
        let mut other = IdGen::new(1);
        assert_ne!(other.next_id(), made[0], "another run's prefix differs");
    }

    /// What bob sees of our ids says nothing of what we sent carol.
    #[test]
    fn each_peer_counts_only_its_own_messages() {
        let mut book = IdBook::default();
        let mut seeds = [0xb0b, 0xca201].into_iter();
        let mut next = |peer: &str| book.next_for(peer, || seeds.next().unwrap_or(0));
        let to_bob = next("bob");
        for _ in 0..5 {
            next("carol");
        }
        let again = next("bob");
        assert_eq!(&*to_bob, "0000000000000b0b0000000000000000");
        assert_eq!(&*again, "0000000000000b0b0000000000000001");
        assert_eq!(&*next("carol"), "00000000000ca2010000000000000005");
    }
}
