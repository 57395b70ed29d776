//! Where each name lives in the cluster: the buckets, their hash tags and
//! key names. Pure; no I/O.
//!
//! A name's bucket is FNV-1a of its case-folded form modulo [`BUCKETS`].
//! All keys of a bucket share one hash tag, so they sit in one slot and
//! every operation on a name is one script on one master. The tags are
//! chosen so that bucket `i`'s slot falls in the `i`-th sixteenth of the
//! slot space: `redis-cli --cluster create` hands out contiguous slot
//! ranges, so the buckets spread evenly over the masters (naive tags such
//! as `{000}`..`{015}` landed 4/8/4 on three masters).

/// Buckets per deployment. Fixed: every replica must agree, and it is
/// recorded in the cluster ([`META`]) so a replica built with another
/// number refuses to start rather than split the directory.
pub(crate) const BUCKETS: usize = 16;

/// Redis Cluster's slot count.
const SLOTS: u16 = 16_384;

/// Records the layout version and bucket count.
pub(crate) const META: &str = "pc:meta";

/// What [`META`] holds for this layout.
pub(crate) fn meta_value() -> String {
    format!("peerchat directory layout 1, {BUCKETS} buckets")
}

/// The keys and channel of one bucket.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// name_key → key hex, `*` appended until a replica confirmed it.
    pub(crate) bind: String,
    /// name_key → presence byte + lease hash.
    pub(crate) live: String,
    /// name_key → packed listing ([`super::codec`]).
    pub(crate) info: String,
    /// zset: name_key scored by lease expiry (ms, the master's clock).
    pub(crate) exp: String,
    /// zset, all scores 0: name_keys in lexical order, for paging.
    pub(crate) names: String,
    /// The bucket's change counter, for gap detection in the feed.
    pub(crate) seq: String,
    /// A counter written only to give `WAIT` a write to wait for
    /// ([`super::wait`]).
    pub(crate) wait_mark: String,
    /// The shard channel its changes are published on.
    pub(crate) channel: String,
    /// The slot all of the above hash to.
    pub(crate) slot: u16,
}

impl Bucket {
    /// Every key of the bucket, in the order the scripts take them
    /// (`lua/prelude.lua`).
    pub(crate) fn keys(&self) -> [&str; 6] {
        [&self.bind, &self.live, &self.info, &self.exp, &self.names, &self.seq]
    }
}

/// Every bucket, by index.
pub(crate) fn buckets() -> Vec<Bucket> {
    (0..BUCKETS).map(bucket).collect()
}

fn bucket(index: usize) -> Bucket {
    let tag = tag_for(index);
    let key = |what: &str| format!("pc:{{{tag}}}:{what}");
    Bucket {
        bind: key("bind"),
        live: key("live"),
        info: key("info"),
        exp: key("exp"),
        names: key("names"),
        seq: key("seq"),
        wait_mark: key("wait"),
        channel: key("ev"),
        slot: slot(tag.as_bytes()),
    }
}

/// The first tag `b<index>.<k>` whose slot falls in the bucket's share of
/// the slot space. Bounded: CRC16 spreads so evenly that a share of 1/16
/// is hit within a few dozen tries; the fallback is only for the type
/// checker.
fn tag_for(index: usize) -> String {
    let share = usize::from(SLOTS) / BUCKETS;
    let range = index * share..(index + 1) * share;
    (0..10_000)
        .map(|k| format!("b{index}.{k}"))
        .find(|tag| range.contains(&usize::from(slot(tag.as_bytes()))))
        .unwrap_or_else(|| format!("b{index}"))
}

/// The bucket a case-folded name belongs to.
pub(crate) fn bucket_of(name_key: &str) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name_key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash as usize) % BUCKETS
}

/// The nonce key: no hash tag, so nonces spread over the masters.
pub(crate) fn nonce(nonce: &[u8]) -> String {
    format!("pc:nonce:{}", crate::bindings::hex(nonce))
}

/// The per-source set of names registered from one address, for the cap
/// per source.
pub(crate) fn source(source: &str) -> String {
    format!("pc:src:{{{source}}}")
}

/// The cluster slot of `key` (hash tags honoured), as Redis computes it.
pub(crate) fn slot(key: &[u8]) -> u16 {
    crc16(hashtag(key).unwrap_or(key)) % SLOTS
}

fn hashtag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_what_redis_computes() {
        // `redis-cli cluster keyslot` on 7.0.15.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"), "empty tag: the whole key");
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn a_bucket_keeps_all_its_keys_in_its_own_share_of_slots() {
        let all = buckets();
        assert_eq!(all.len(), BUCKETS);
        let share = SLOTS / BUCKETS as u16;
        for (i, b) in all.iter().enumerate() {
            for key in [&b.bind, &b.live, &b.info, &b.exp, &b.names, &b.seq, &b.channel] {
                assert_eq!(slot(key.as_bytes()), b.slot, "{key}");
            }
            assert_eq!(usize::from(b.slot / share), i, "bucket {i} at slot {}", b.slot);
        }
    }

    #[test]
    fn names_spread_over_buckets() {
        let mut counts = [0usize; BUCKETS];
        for i in 0..16_000 {
            counts[bucket_of(&format!("peer{i}"))] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        assert_eq!(bucket_of("bob"), bucket_of("bob"));
    }
}
