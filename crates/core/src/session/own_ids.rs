//! Sets and maps keyed by message ids *we* made, which the sending daemon
//! touches several times per message: the unacknowledged set, the ids that
//! may still be `displayed`, the driver's waiting sends.
//!
//! Every id this software makes is 32 lowercase hex digits: a prefix drawn
//! once per run, then a counter ([`crate::ids`]). Ids are made, sent and
//! acknowledged nearly in counter order, so these tables keep the ids of
//! one prefix in a window: slot `counter - base` of a deque, the oldest at
//! the front. Insert, lookup and removal are an index, touch memory that
//! was touched a moment ago, and need no hashing. Keyed by the `Arc<str>`
//! in hash tables, a profile of the sender at full throughput had a
//! quarter of its samples here, nearly all of them cache misses at random
//! places in tables of thousands of entries.
//!
//! Everything else is kept exactly, in hash tables beside the window: an
//! id of another prefix (an earlier run's, restored from history), one
//! behind the window, the oldest entries when the window would span more
//! than its limit (one entry that is never removed must not make the
//! window grow without end), and any id that is not 32 lowercase hex
//! digits (membership is exactly string equality). Those tables hash with
//! foldhash, seeded per process; ids a peer chooses (`RecentIds`) stay on
//! the std hasher, which is built to resist collision floods.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::types::Id;
use super::window::Window;

/// `id` as the number its 32 lowercase hex digits spell, or `None` for
/// anything else (so two different strings never share a number).
///
/// Eight digits at a time in a u64 ("SWAR"), without a branch until the
/// end: the sender packs every id about eight times over its life (the
/// unacknowledged set, the waits, the ids awaiting `displayed`), and a
/// digit at a time through a table was most of these tables' share of its
/// profile. 11 ns against 24 ns an id (a loop of 10 million on this
/// machine); a test checks both ways agree on every byte at every place.
pub(super) fn pack(id: &str) -> Option<u128> {
    let b: &[u8; 32] = id.as_bytes().try_into().ok()?;
    let word = |i: usize| {
        u64::from_be_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ])
    };
    let (w0, bad0) = eight_digits(word(0));
    let (w1, bad1) = eight_digits(word(8));
    let (w2, bad2) = eight_digits(word(16));
    let (w3, bad3) = eight_digits(word(24));
    let n = u128::from(w0 << 32 | w1) << 64 | u128::from(w2 << 32 | w3);
    (bad0 | bad1 | bad2 | bad3 == 0).then_some(n)
}

/// `x` repeated in every byte of a u64.
const fn every_byte(x: u8) -> u64 {
    0x0101_0101_0101_0101 * x as u64
}

const HIGH_BITS: u64 = every_byte(0x80);

/// The eight hex digits in `x` (the first in the top byte) as 32 bits, and
/// a mask that is not zero when any byte is not `0-9a-f`.
fn eight_digits(x: u64) -> (u64, u64) {
    // For bytes below 0x80, adding 0x80 - c sets a byte's top bit exactly
    // when the byte is at least c, and never carries into the next byte.
    let at_least = |c: u8| x.wrapping_add(every_byte(0x80 - c)) & HIGH_BITS;
    let letter = at_least(b'a') & !at_least(b'f' + 1);
    let digit = at_least(b'0') & !at_least(b'9' + 1);
    // A byte with its top bit set (not ASCII) is bad whatever the sums say.
    let bad = (x | !(digit | letter)) & HIGH_BITS;
    // '0'-'9' and 'a'-'f' end in their value (letters less 9).
    let mut v = (x & every_byte(0x0f)) + (letter >> 7) * 9;
    // One nibble a byte, gathered into the low 32 bits.
    v = (v | v >> 4) & 0x00ff_00ff_00ff_00ff;
    v = (v | v >> 8) & 0x0000_ffff_0000_ffff;
    v = (v | v >> 16) & 0x0000_0000_ffff_ffff;
    (v, bad)
}

/// A map from our ids. See the module.
#[derive(Debug)]
pub struct OwnIdMap<V> {
    window: Window<V>,
    /// How many of `window`'s slots hold a value.
    live: usize,
    /// The most slots the window may span.
    span: usize,
    /// Packed ids outside the window.
    packed: HashMap<u128, V, RandomState>,
    /// Ids that do not pack.
    other: HashMap<Id, V, RandomState>,
}

/// The window's limit for [`Default`].
const DEFAULT_SPAN: usize = 1 << 15;

impl<V> Default for OwnIdMap<V> {
    fn default() -> Self {
        OwnIdMap::with_span(DEFAULT_SPAN)
    }
}

impl<V> OwnIdMap<V> {
    /// A map whose window spans at most `span` counters (at least one):
    /// about twice the entries it holds at a time.
    pub fn with_span(span: usize) -> OwnIdMap<V> {
        OwnIdMap {
            window: Window::new(),
            live: 0,
            span: span.max(1),
            packed: HashMap::default(),
            other: HashMap::default(),
        }
    }

    /// Sets `id`'s value; the value it had, if any. (By reference: only
    /// an id that does not pack is kept as text.)
    pub fn insert(&mut self, id: &Id, value: V) -> Option<V> {
        match pack(id) {
            Some(n) => self.insert_packed(n, value),
            None => self.other.insert(id.clone(), value),
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<V> {
        match pack(id) {
            Some(n) => self.remove_packed(n),
            None if self.other.is_empty() => None,
            None => self.other.remove(id),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.contains_as(pack(id), id)
    }

    pub fn get(&self, id: &str) -> Option<&V> {
        match pack(id) {
            Some(n) => self.window.get(n).or_else(|| self.packed.get(&n)),
            None => self.other.get(id),
        }
    }

    /// Sets `id`'s value if it has none, first taking out the oldest entry
    /// ([`OwnIdMap::pop_oldest`]) if the map already holds `max`; `false`,
    /// and nothing changed, if `id` has a value. The id is read once, where
    /// `contains` and then `insert` would read it twice.
    pub fn insert_new_within(&mut self, id: &Id, value: V, max: usize) -> bool {
        let n = pack(id);
        if self.contains_as(n, id) {
            return false;
        }
        if self.len() >= max {
            self.pop_oldest();
        }
        match n {
            Some(n) => self.insert_packed(n, value),
            None => self.other.insert(id.clone(), value),
        };
        true
    }

    /// `contains`, with `id` already packed (`n`).
    fn contains_as(&self, n: Option<u128>, id: &str) -> bool {
        match n {
            Some(n) => {
                self.window.get(n).is_some()
                    || (!self.packed.is_empty() && self.packed.contains_key(&n))
            }
            None => !self.other.is_empty() && self.other.contains_key(id),
        }
    }

    pub fn len(&self) -> usize {
        self.live + self.packed.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the values `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        for slot in self.window.values_mut() {
            if let Some(v) = slot
                && !keep(v)
            {
                *slot = None;
                self.live -= 1;
            }
        }
        self.window.trim();
        self.packed.retain(|_, v| keep(v));
        self.other.retain(|_, v| keep(v));
    }

    /// Takes every entry out, with its id.
    pub fn drain(&mut self) -> impl Iterator<Item = (Id, V)> + use<V> {
        self.live = 0;
        let windowed = self.window.drain().map(|(n, v)| (unpack(n), v));
        let packed = std::mem::take(&mut self.packed).into_iter().map(|(n, v)| (unpack(n), v));
        windowed.chain(packed).chain(std::mem::take(&mut self.other))
    }

    fn insert_packed(&mut self, n: u128, value: V) -> Option<V> {
        if let Some(v) = self.window.get_mut(n) {
            return Some(std::mem::replace(v, value));
        }
        // A window that comes to cover an id left in the table takes it
        // over.
        let old = if self.packed.is_empty() { None } else { self.packed.remove(&n) };
        if self.window.ahead(n).is_none() {
            self.packed.insert(n, value);
            return old;
        }
        // Ahead of the window: past its span, the oldest entries move to
        // the table.
        let (live, packed) = (&mut self.live, &mut self.packed);
        self.window.put(n, value, self.span, |m, v| {
            *live -= 1;
            packed.insert(m, v);
        });
        self.live += 1;
        old
    }

    fn remove_packed(&mut self, n: u128) -> Option<V> {
        if let Some(v) = self.window.take(n) {
            self.live -= 1;
            return Some(v);
        }
        if self.packed.is_empty() { None } else { self.packed.remove(&n) }
    }

    /// Takes out the oldest entry: one outside the window (an earlier run's,
    /// or one the window left behind) if there is one, else the window's
    /// front, the lowest counter.
    pub fn pop_oldest(&mut self) -> Option<V> {
        if let Some(&n) = self.packed.keys().next() {
            return self.packed.remove(&n);
        }
        if let Some(id) = self.other.keys().next().cloned() {
            return self.other.remove(&id);
        }
        let (_, v) = self.window.pop_front()?;
        self.live -= 1;
        Some(v)
    }
}

/// A set of our ids: an [`OwnIdMap`] to nothing.
#[derive(Debug, Default)]
pub struct OwnIdSet {
    map: OwnIdMap<()>,
}

impl OwnIdSet {
    /// See [`OwnIdMap::with_span`].
    pub fn with_span(span: usize) -> OwnIdSet {
        OwnIdSet { map: OwnIdMap::with_span(span) }
    }

    /// Adds `id`; `false` if it was there.
    pub fn insert(&mut self, id: &Id) -> bool {
        self.map.insert(id, ()).is_none()
    }

    /// Takes `id` out; `false` if it was not there.
    pub fn remove(&mut self, id: &str) -> bool {
        self.map.remove(id).is_some()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.map.contains(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets the oldest id (see [`OwnIdMap::pop_oldest`]).
    pub fn forget_oldest(&mut self) {
        self.map.pop_oldest();
    }

    /// Adds `id` if it is not there, forgetting the oldest first if the set
    /// holds `max` already; `false` if it was there.
    pub fn insert_new_within(&mut self, id: &Id, max: usize) -> bool {
        self.map.insert_new_within(id, (), max)
    }
}

/// The id that packs to `n`.
pub(super) fn unpack(n: u128) -> Id {
    Id::from(format!("{n:032x}"))
}

#[cfg(test)]
mod tests {
    use super::super::window::n_of;
    use super::*;
    use crate::ids::IdGen;

    /// A digit at a time: what [`pack`] must agree with.
    fn pack_slowly(id: &str) -> Option<u128> {
        if id.len() != 32 {
            return None;
        }
        id.bytes().try_fold(0u128, |n, b| {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => return None,
            };
            Some(n << 4 | u128::from(d))
        })
    }

    #[test]
    fn packs_as_a_digit_at_a_time_would_every_byte_at_every_place() {
        let digits = *b"0123456789abcdef0123456789abcdef";
        for place in 0..32 {
            for byte in 0..=u8::MAX {
                let mut id = digits;
                id[place] = byte;
                // Only strings reach `pack`; a lone byte above 0x7f is
                // tried inside a two-byte character below.
                if let Ok(id) = std::str::from_utf8(&id) {
                    assert_eq!(pack(id), pack_slowly(id), "{id:?}");
                }
            }
        }
        for c in ['é', 'ÿ', 'Ā', '\u{80}'] {
            for place in 0..31 {
                let mut id = String::from_utf8(digits[..place].to_vec()).expect("ascii");
                id.push(c);
                id.push_str(std::str::from_utf8(&digits[place + 2..]).expect("ascii"));
                assert_eq!(id.len(), 32);
                assert_eq!(pack(&id), None, "{id:?}");
            }
        }
    }

    #[test]
    fn only_32_lowercase_hex_digits_pack_and_each_to_its_own_number() {
        assert_eq!(pack("00000000000000000000000000000000"), Some(0));
        assert_eq!(pack("ffffffffffffffffffffffffffffffff"), Some(u128::MAX));
        assert_eq!(
            pack("deadbeef012345670000000000001234"),
            Some(0xdeadbeef012345670000000000001234)
        );
        for other in [
            "DEADBEEF012345670000000000001234", // upper case is another string
            "deadbeef01234567000000000000123",  // 31 digits
            "deadbeef0123456700000000000012345", // 33
            "deadbeef01234567000000000000123g",
            "deadbeef01234567000000000000123:",
            "deadbeef0123456700000000000012é",
            "",
        ] {
            assert_eq!(pack(other), None, "{other:?}");
        }
        let mut ids = IdGen::new(0x0123_4567_89ab_cdef);
        for _ in 0..1000 {
            let id = ids.next_id();
            assert_eq!(pack(&id).map(|n| format!("{n:032x}")).as_deref(), Some(&*id));
        }
    }

    #[test]
    fn a_set_holds_exactly_the_strings_put_in_packed_or_not() {
        let mut set = OwnIdSet::default();
        let ours: Id = "deadbeef012345670000000000000001".into();
        let old: Id = "an id of another shape".into();
        assert!(set.insert(&ours) && set.insert(&old));
        assert!(!set.insert(&ours), "already there");
        assert_eq!(set.len(), 2);
        assert!(set.contains("deadbeef012345670000000000000001"));
        assert!(!set.contains("DEADBEEF012345670000000000000001"));
        assert!(set.contains("an id of another shape"));
        assert!(!set.contains("an id of another shapE"));
        assert!(set.remove(&old) && !set.remove(&old));
        assert!(set.remove(&ours));
        assert!(set.is_empty());
    }

    #[test]
    fn get_finds_values_in_the_window_behind_it_and_unpacked() {
        let mut map: OwnIdMap<u32> = OwnIdMap::with_span(4);
        let mut ids = IdGen::new(7);
        let all: Vec<Id> = (0..10).map(|_| ids.next_id()).collect();
        for (i, id) in all.iter().enumerate() {
            map.insert(id, i as u32);
        }
        let odd: Id = "an id of another shape".into();
        map.insert(&odd, 99);
        // The first ids have left a window of four for the packed map.
        for (i, id) in all.iter().enumerate() {
            assert_eq!(map.get(id), Some(&(i as u32)), "{id}");
        }
        assert_eq!(map.get(&odd), Some(&99));
        assert_eq!(map.get("deadbeef012345670000000000000001"), None);
        assert_eq!(map.remove(&all[0]), Some(0));
        assert_eq!(map.get(&all[0]), None);
    }

    #[test]
    fn the_window_follows_the_counter_and_moves_what_it_leaves_behind() {
        let id = |counter: u64| unpack(n_of(7, counter));
        let mut map = OwnIdMap::with_span(4);
        for c in 0..4 {
            map.insert(&id(c), c);
        }
        assert_eq!((map.live, map.packed.len()), (4, 0), "all in the window");
        assert_eq!(map.remove(&id(1)), Some(1), "out of order");
        assert_eq!(map.remove(&id(0)), Some(0));
        assert_eq!((map.window.base(), map.window.len()), (2, 2), "the front moved past both");
        // 2 stays: a new id too far ahead moves it to the table.
        map.remove(&id(3));
        map.insert(&id(9), 9);
        assert_eq!((map.live, map.packed.len(), map.window.base()), (1, 1, 9));
        assert_eq!(map.remove(&id(2)), Some(2), "found in the table");
        assert_eq!(map.pop_oldest(), Some(9));
        assert!(map.is_empty());
        // The first id into an empty map starts the window, whatever its
        // run; another run's ids go to the table.
        map.insert(&unpack(n_of(8, 1)), 81);
        map.insert(&id(100), 100);
        assert_eq!((map.live, map.packed.len(), map.window.base()), (1, 1, 1));
        assert!(map.contains(&id(100)) && map.contains(&unpack(n_of(8, 1))));
    }

    #[test]
    fn counters_at_the_very_end_do_not_overflow() {
        let last = unpack(n_of(3, u64::MAX));
        let mut set = OwnIdSet::with_span(4);
        assert!(set.insert(&last));
        assert!(set.remove(&last));
        assert!(set.insert(&last));
        set.forget_oldest();
        assert!(set.is_empty());
        let mut map = OwnIdMap::with_span(4);
        map.insert(&unpack(n_of(3, u64::MAX - 1)), 1);
        map.insert(&last, 2);
        let mut drained: Vec<(Id, i32)> = map.drain().collect();
        drained.sort();
        assert_eq!(drained, [(unpack(n_of(3, u64::MAX - 1)), 1), (last, 2)]);
    }

    #[test]
    fn a_map_keeps_values_and_ids_for_drain_and_retain() {
        let mut map = OwnIdMap::default();
        let a: Id = "00000000000000000000000000000001".into();
        let b: Id = "00000000000000000000000000000002".into();
        let odd: Id = "odd".into();
        assert_eq!(map.insert(&a, 1), None);
        assert_eq!(map.insert(&a, 10), Some(1));
        map.insert(&b, 2);
        map.insert(&odd, 3);
        assert_eq!(map.len(), 3);
        assert_eq!(map.remove("0000000000000000000000000000000a"), None);
        assert_eq!(map.remove("odd"), Some(3));
        map.insert(&odd, 3);
        map.retain(|v| {
            *v += 1;
            *v != 3
        });
        let mut left: Vec<(Id, i32)> = map.drain().collect();
        left.sort();
        assert_eq!(left, vec![(a, 11), (odd, 4)]);
        let _ = b;
        assert!(map.is_empty());
    }

    mod model {
        use std::collections::HashMap;

        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Insert(usize),
            Remove(usize),
            Contains(usize),
            /// `insert_new_within` with a `max` of 1 to 8.
            InsertNewWithin(usize, usize),
            PopOldest,
            Retain(u32),
            Drain,
        }

        /// Ids of two runs (one with many counters), and two of other shapes.
        fn ids() -> Vec<Id> {
            let mut ids: Vec<Id> = (0..40).map(|c| unpack(n_of(0xa, c))).collect();
            ids.extend((0..5).map(|c| unpack(n_of(0xb, c))));
            ids.extend(["x".into(), "DEADBEEF012345670000000000000001".into()]);
            ids
        }

        fn op() -> impl Strategy<Value = Op> {
            let n = ids().len();
            prop_oneof![
                6 => (0..n).prop_map(Op::Insert),
                4 => (0..n).prop_map(Op::Remove),
                2 => (0..n).prop_map(Op::Contains),
                2 => (0..n, 1..9usize).prop_map(|(i, max)| Op::InsertNewWithin(i, max)),
                1 => Just(Op::PopOldest),
                1 => (2..5u32).prop_map(Op::Retain),
                1 => Just(Op::Drain),
            ]
        }

        proptest! {
            /// Whatever the order, the map holds exactly what a plain
            /// string-keyed map would (small spans, so that entries move).
            #[test]
            fn behaves_as_a_string_keyed_map(span in 1..10usize, ops in proptest::collection::vec(op(), 1..200)) {
                let ids = ids();
                let mut map: OwnIdMap<(Id, u32)> = OwnIdMap::with_span(span);
                let mut model: HashMap<Id, u32> = HashMap::new();
                for (step, op) in ops.into_iter().enumerate() {
                    let step = step as u32;
                    match op {
                        Op::Insert(i) => {
                            let got = map.insert(&ids[i], (ids[i].clone(), step));
                            prop_assert_eq!(got.map(|(_, v)| v), model.insert(ids[i].clone(), step));
                        }
                        Op::Remove(i) => {
                            prop_assert_eq!(map.remove(&ids[i]).map(|(_, v)| v), model.remove(&ids[i]));
                        }
                        Op::Contains(i) => {
                            prop_assert_eq!(map.contains(&ids[i]), model.contains_key(&ids[i]));
                        }
                        Op::InsertNewWithin(i, max) => {
                            let had = model.contains_key(&ids[i]);
                            let full = !had && model.len() >= max;
                            let added = map.insert_new_within(&ids[i], (ids[i].clone(), step), max);
                            prop_assert_eq!(added, !had);
                            if full {
                                // One entry made room: the model forgets it too.
                                let gone: Vec<Id> =
                                    model.keys().filter(|id| !map.contains(id)).cloned().collect();
                                prop_assert_eq!(gone.len(), 1, "exactly one forgotten");
                                model.remove(&gone[0]);
                            }
                            if !had {
                                model.insert(ids[i].clone(), step);
                            }
                        }
                        Op::PopOldest => match map.pop_oldest() {
                            Some((id, v)) => prop_assert_eq!(model.remove(&id), Some(v)),
                            None => prop_assert!(model.is_empty()),
                        },
                        Op::Retain(m) => {
                            map.retain(|(_, v)| *v % m != 0);
                            model.retain(|_, v| *v % m != 0);
                        }
                        Op::Drain => {
                            for (id, (own, v)) in map.drain() {
                                prop_assert_eq!(&id, &own, "drain gives each entry's own id");
                                prop_assert_eq!(model.remove(&id), Some(v));
                            }
                            prop_assert!(model.is_empty());
                        }
                    }
                    prop_assert_eq!(map.len(), model.len());
                    prop_assert!(map.window.len() <= span);
                    prop_assert!(map.window.front_holds_value(), "front holds a value");
                }
            }
        }
    }
}
