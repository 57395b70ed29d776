//! A bounded memory of the message ids received from one peer, and whether
//! each was shown: how a message sent again after a lost link (or across a
//! restart, loaded from history) is recognised, acknowledged again, and not
//! stored or shown twice.
//!
//! It remembers exactly the newest `cap` ids, the oldest forgotten first,
//! whatever ids the peer chooses. The receiving daemon inserts one id and
//! forgets one per message, so the common case is made cheap: a peer
//! running this software numbers its ids (a prefix per run, then a counter,
//! see [`crate::ids`]), so they are kept in a [`super::window`] by counter, as
//! our own are ([`super::own_ids`]). In hash tables keyed by the `Arc<str>`
//! (SipHash, a miss at a random place per insert and per forget, and the
//! forgotten id's text read back from a cold allocation) this was a fifth
//! of the receiver's samples at full throughput. Every other id (another
//! prefix, behind the window, far ahead of it, not 32 hex digits) is kept
//! in hash tables beside it, on the std hasher: the peer chooses these
//! ids, and SipHash with a per-process key resists collision floods.

use std::collections::{HashMap, VecDeque};

use super::own_ids::{pack, unpack};
use super::types::Id;
use super::window::{Window, split};

/// An id further ahead of the window's end than this starts a new window
/// (the old one's ids move to the tables): a gap is usually messages the
/// peer sent to someone else, and filling it slot by slot would let a
/// peer make every insert cost a long run of empty slots.
const MAX_GAP: u64 = 64;

/// The newest `cap` ids, oldest forgotten first. Each id is in exactly one
/// of `window`, `packed` and `text`.
#[derive(Debug)]
pub(crate) struct RecentIds {
    /// Every id, in the order it was first inserted: what to forget next.
    order: VecDeque<Key>,
    cap: usize,
    /// The most slots `window` may have.
    span: usize,
    /// Whether each id was shown, for the ids of one run.
    window: Window<bool>,
    /// Ids that pack, outside the window.
    packed: HashMap<u128, bool>,
    /// Ids that do not pack.
    text: HashMap<Id, bool>,
}

/// Where an id is in `order`: its number, or its text if it has none.
#[derive(Debug)]
enum Key {
    Packed(u128),
    Text(Id),
}

impl RecentIds {
    pub(crate) fn new(cap: usize) -> RecentIds {
        let cap = cap.max(1);
        RecentIds {
            order: VecDeque::new(),
            cap,
            span: cap.saturating_mul(2),
            window: Window::new(),
            packed: HashMap::new(),
            text: HashMap::new(),
        }
    }

    /// `Some(displayed)` for an id we have.
    pub(crate) fn get(&self, id: &str) -> Option<bool> {
        match pack(id) {
            Some(n) => self.window.get(n).or_else(|| self.packed.get(&n)).copied(),
            None => self.text.get(id).copied(),
        }
    }

    /// Remembers `id` (the newest), or sets what is known of it.
    pub(crate) fn insert(&mut self, id: Id, displayed: bool) {
        let n = pack(&id);
        if let Some(d) = self.value_mut(n, &id) {
            *d = displayed;
            return;
        }
        if self.order.len() >= self.cap {
            self.forget_oldest();
        }
        match n {
            Some(n) => {
                self.place(n, displayed);
                self.order.push_back(Key::Packed(n));
            }
            None => {
                self.text.insert(id.clone(), displayed);
                self.order.push_back(Key::Text(id));
            }
        }
    }

    /// The newest `n` ids, oldest first.
    pub(crate) fn newest(&self, n: usize) -> Vec<Id> {
        let skip = self.order.len().saturating_sub(n);
        self.order
            .iter()
            .skip(skip)
            .map(|key| match key {
                Key::Packed(n) => unpack(*n),
                Key::Text(id) => id.clone(),
            })
            .collect()
    }

    pub(crate) fn mark_displayed(&mut self, id: &str) {
        if let Some(d) = self.value_mut(pack(id), id) {
            *d = true;
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    fn value_mut(&mut self, n: Option<u128>, id: &str) -> Option<&mut bool> {
        match n {
            Some(n) => match self.window.get_mut(n) {
                Some(d) => Some(d),
                None => self.packed.get_mut(&n),
            },
            None => self.text.get_mut(id),
        }
    }

    /// Puts a new id that packs to `n` in the window if it fits there (the
    /// same prefix, at or ahead of its front, not far past its end), else
    /// in `packed`. An id of another prefix, or far ahead, starts a new
    /// window: the old one's ids move to `packed`.
    fn place(&mut self, n: u128, displayed: bool) {
        let restart = match self.window.ahead(n) {
            // Behind the front, of this run.
            None if self.window.prefix() == Some(split(n).0) => {
                self.packed.insert(n, displayed);
                return;
            }
            None => true,
            Some(ahead) => ahead >= self.window.len() as u64 + MAX_GAP,
        };
        if restart {
            self.packed.extend(self.window.drain());
        }
        let packed = &mut self.packed;
        self.window.put(n, displayed, self.span, |m, d| {
            packed.insert(m, d);
        });
    }

    fn forget_oldest(&mut self) {
        match self.order.pop_front() {
            Some(Key::Packed(n)) => {
                let _ = self.window.take(n).or_else(|| self.packed.remove(&n));
            }
            Some(Key::Text(id)) => {
                self.text.remove(&id);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn remembers_the_newest_and_their_display_state() {
        let mut r = RecentIds::new(2);
        r.insert("a".into(), false);
        r.insert("b".into(), true);
        r.insert("a".into(), false);
        assert_eq!(r.len(), 2);
        r.mark_displayed("a");
        assert_eq!(r.get("a"), Some(true));
        r.insert("c".into(), false);
        assert_eq!(r.get("a"), None, "the oldest is forgotten");
        assert_eq!(r.get("b"), Some(true));
        assert_eq!(r.len(), 2);
    }

    fn id(prefix: u64, counter: u64) -> Id {
        Id::from(format!("{prefix:016x}{counter:016x}"))
    }

    #[test]
    fn numbered_ids_stay_in_the_window() {
        let mut r = RecentIds::new(100);
        for c in 0..1000 {
            r.insert(id(7, c), c % 2 == 0);
        }
        assert_eq!(r.len(), 100);
        assert!(r.packed.is_empty() && r.text.is_empty(), "nothing left the window");
        assert_eq!(r.window.len(), 100, "forgotten slots are dropped");
        assert_eq!(r.get(&id(7, 899)), None);
        assert_eq!(r.get(&id(7, 900)), Some(true));
        assert_eq!(r.get(&id(7, 901)), Some(false));
        assert_eq!(r.get(&id(8, 901)), None, "another prefix");
    }

    #[test]
    fn a_new_prefix_or_a_long_gap_starts_a_new_window() {
        let mut r = RecentIds::new(100);
        r.insert(id(1, 5), false);
        r.insert(id(1, 6), true);
        r.insert(id(2, 0), false);
        assert_eq!(r.packed.len(), 2, "the old window's ids moved out");
        r.insert(id(2, 1 + MAX_GAP + 1), false);
        assert_eq!(r.packed.len(), 3);
        assert_eq!(r.window.len(), 1);
        for (i, want) in [(id(1, 5), false), (id(1, 6), true), (id(2, 0), false)] {
            assert_eq!(r.get(&i), Some(want), "{i}");
        }
        // A short gap is kept in the window.
        r.insert(id(2, 1 + MAX_GAP + 1 + MAX_GAP), false);
        assert_eq!(r.window.len() as u64, MAX_GAP + 1);
    }

    #[test]
    fn counters_at_the_very_end_do_not_overflow() {
        let mut r = RecentIds::new(2);
        r.insert(id(1, u64::MAX - 1), false);
        r.insert(id(1, u64::MAX), true);
        r.insert(id(1, 0), false); // behind the window
        r.insert(id(2, u64::MAX), false); // another prefix: the window moves out
        assert_eq!(r.get(&id(1, u64::MAX)), None, "forgotten, the oldest but one");
        assert_eq!(r.get(&id(1, 0)), Some(false));
        assert_eq!(r.get(&id(2, u64::MAX)), Some(false));
        r.insert(id(2, u64::MAX - 1), false);
        r.insert(id(3, 1), false);
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(&id(2, u64::MAX - 1)), Some(false));
    }

    /// What the window must behave like: the plain first-in, first-out
    /// memory it replaced.
    struct Model {
        map: HashMap<Id, bool>,
        order: VecDeque<Id>,
        cap: usize,
    }

    impl Model {
        fn insert(&mut self, id: Id, displayed: bool) {
            if self.map.insert(id.clone(), displayed).is_some() {
                return;
            }
            self.order.push_back(id);
            if self.order.len() > self.cap
                && let Some(old) = self.order.pop_front()
            {
                self.map.remove(&old);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Id, bool),
        Display(Id),
    }

    /// Ids as peers make them: numbered in a few runs (in order, with
    /// gaps, repeated, going back), any 32 hex digits, or any text.
    fn any_id() -> impl Strategy<Value = Id> {
        prop_oneof![
            6 => (0u64..3, 0u64..300).prop_map(|(p, c)| id(p, c)),
            1 => (0u64..3, any::<u64>()).prop_map(|(p, c)| id(p, c)),
            1 => (0u64..3, u64::MAX - 3..=u64::MAX).prop_map(|(p, c)| id(p, c)),
            1 => "[0-9a-f]{32}".prop_map(Id::from),
            1 => "[a-z]{1,3}".prop_map(Id::from),
        ]
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any_id(), any::<bool>()).prop_map(|(i, d)| Op::Insert(i, d)),
            1 => any_id().prop_map(Op::Display),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_first_in_first_out(
            cap in 1usize..40,
            ops in proptest::collection::vec(any_op(), 0..400),
        ) {
            let mut r = RecentIds::new(cap);
            let mut m = Model { map: HashMap::new(), order: VecDeque::new(), cap };
            let mut asked = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(i, d) => {
                        r.insert(i.clone(), d);
                        m.insert(i.clone(), d);
                        asked.push(i);
                    }
                    Op::Display(i) => {
                        r.mark_displayed(&i);
                        if let Some(d) = m.map.get_mut(&i) {
                            *d = true;
                        }
                        asked.push(i);
                    }
                }
                prop_assert_eq!(r.len(), m.order.len());
                prop_assert!(r.window.len() <= r.span);
                prop_assert!(r.window.front_holds_value());
            }
            for i in asked {
                prop_assert_eq!(r.get(&i), m.map.get(&i).copied(), "{}", i);
            }
        }
    }
}
