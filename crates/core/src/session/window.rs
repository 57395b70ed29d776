//! Ids of one run in a window by counter: the fast path of both tables of
//! message ids, our own ([`super::own_ids`]) and a peer's
//! ([`super::recent`]). An id of this software is a per-run prefix and a
//! counter, as one number ([`n_of`]); ids come nearly in counter order, so
//! an id of the window's prefix lives in slot `counter - base` of a deque,
//! and finding, adding or dropping one is an index into memory touched a
//! moment ago. What does not fit is each table's own business (their hash
//! tables beside the window).

use std::collections::VecDeque;

/// A packed id's prefix and counter: its high and low 64 bits.
pub(super) fn split(n: u128) -> (u64, u64) {
    // Truncation is the point: the high and the low 64 bits.
    ((n >> 64) as u64, n as u64)
}

/// The packed id of `prefix` and `counter`.
pub(super) fn n_of(prefix: u64, counter: u64) -> u128 {
    u128::from(prefix) << 64 | u128::from(counter)
}

/// Values by counter for ids of one prefix. The front slot holds a value
/// whenever the window is not empty, and `base` only ever moves onto a
/// slot, so it never passes the largest counter placed (no overflow at
/// u64::MAX, whatever counters a peer chooses).
#[derive(Debug)]
pub(super) struct Window<V> {
    /// The prefix of the ids here (meaningless while empty).
    prefix: u64,
    /// The counter of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<V>>,
}

impl<V> Window<V> {
    pub(super) fn new() -> Window<V> {
        Window { prefix: 0, base: 0, slots: VecDeque::new() }
    }

    /// Slots, empty ones included.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The prefix of the ids here; `None` while empty.
    pub(super) fn prefix(&self) -> Option<u64> {
        (!self.slots.is_empty()).then_some(self.prefix)
    }

    /// Whether an id packed to `n` would go in the window's run: its prefix
    /// and at or ahead of the front (`Some(how far ahead)`), or anything
    /// while the window is empty (`Some(0)`).
    pub(super) fn ahead(&self, n: u128) -> Option<u64> {
        let (prefix, counter) = split(n);
        if self.slots.is_empty() {
            return Some(0);
        }
        (prefix == self.prefix && counter >= self.base).then(|| counter - self.base)
    }

    /// `n`'s slot, if the window covers it.
    fn slot(&self, n: u128) -> Option<usize> {
        let (prefix, counter) = split(n);
        if self.slots.is_empty() || prefix != self.prefix || counter < self.base {
            return None;
        }
        let i = usize::try_from(counter - self.base).ok()?;
        (i < self.slots.len()).then_some(i)
    }

    pub(super) fn get(&self, n: u128) -> Option<&V> {
        self.slot(n).and_then(|i| self.slots[i].as_ref())
    }

    pub(super) fn get_mut(&mut self, n: u128) -> Option<&mut V> {
        self.slot(n).and_then(|i| self.slots[i].as_mut())
    }

    /// Takes `n`'s value out.
    pub(super) fn take(&mut self, n: u128) -> Option<V> {
        let i = self.slot(n)?;
        let v = self.slots[i].take()?;
        self.trim();
        Some(v)
    }

    /// Puts `value` in `n`'s slot, which must be empty and in the window's
    /// run ([`Window::ahead`]). Past `span` slots the front moves on, and
    /// the values it leaves behind go to `spill`.
    pub(super) fn put(&mut self, n: u128, value: V, span: usize, mut spill: impl FnMut(u128, V)) {
        let (prefix, counter) = split(n);
        if self.slots.is_empty() {
            (self.prefix, self.base) = (prefix, counter);
        }
        let mut ahead = counter - self.base;
        while ahead >= span as u64 {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            if let Some(v) = slot {
                spill(n_of(self.prefix, self.base), v);
            }
            self.base += 1;
            ahead -= 1;
        }
        self.trim();
        if self.slots.is_empty() {
            self.base = counter;
        }
        // Below the span, so a usize.
        let i = (counter - self.base) as usize;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(value);
    }

    /// Takes out the front slot's value, the lowest counter's, with its id.
    pub(super) fn pop_front(&mut self) -> Option<(u128, V)> {
        let v = self.slots.pop_front()??;
        let n = n_of(self.prefix, self.base);
        self.trim_after(1);
        Some((n, v))
    }

    /// Every value, mutably (empty the ones to drop, then [`Window::trim`]).
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Option<V>> {
        self.slots.iter_mut()
    }

    /// Takes every value out, with its id.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (u128, V)> + use<V> {
        let (prefix, base) = (self.prefix, self.base);
        // `base + i`, not a `base..` range: a range would step past the
        // last slot's counter, which overflows at u64::MAX.
        std::mem::take(&mut self.slots)
            .into_iter()
            .enumerate()
            .filter_map(move |(i, slot)| slot.map(|v| (n_of(prefix, base + i as u64), v)))
    }

    /// The counter of the front slot (for tests).
    #[cfg(test)]
    pub(super) fn base(&self) -> u64 {
        self.base
    }

    /// Whether the front slot holds a value, as it must unless empty.
    #[cfg(test)]
    pub(super) fn front_holds_value(&self) -> bool {
        self.slots.front().is_none_or(Option::is_some)
    }

    /// Drops the empty slots at the front.
    pub(super) fn trim(&mut self) {
        self.trim_after(0);
    }

    /// Moves `base` past `popped` slots already taken off the front, and
    /// past the empty ones now there.
    fn trim_after(&mut self, popped: usize) {
        let empty = self.slots.iter().take_while(|slot| slot.is_none()).count();
        self.slots.drain(..empty);
        if !self.slots.is_empty() {
            self.base += (popped + empty) as u64;
        }
    }
}
