//! A bounded memory of the message ids received from one peer, and whether
//! each was shown: how a message sent again after a lost link (or across a
//! restart, loaded from history) is recognised, acknowledged again, and not
//! stored or shown twice.

use std::collections::{HashMap, VecDeque};

use super::types::Id;

/// The newest `cap` ids, oldest forgotten first.
#[derive(Debug)]
pub(crate) struct RecentIds {
    displayed: HashMap<Id, bool>,
    order: VecDeque<Id>,
    cap: usize,
}

impl RecentIds {
    pub(crate) fn new(cap: usize) -> RecentIds {
        RecentIds { displayed: HashMap::new(), order: VecDeque::new(), cap: cap.max(1) }
    }

    /// `Some(displayed)` for an id we have.
    pub(crate) fn get(&self, id: &str) -> Option<bool> {
        self.displayed.get(id).copied()
    }

    pub(crate) fn insert(&mut self, id: Id, displayed: bool) {
        if self.displayed.insert(id.clone(), displayed).is_some() {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.displayed.remove(&old);
            }
        }
    }

    pub(crate) fn mark_displayed(&mut self, id: &str) {
        if let Some(d) = self.displayed.get_mut(id) {
            *d = true;
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
