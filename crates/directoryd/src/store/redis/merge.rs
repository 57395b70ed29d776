//! One page of the list, merged from the buckets. Pure; no I/O.
//!
//! Each bucket is asked for a small quota of live names after the page's
//! start (about its share of the page); it answers with what it found and
//! how far it looked (its cursor). Every bucket's names up to its cursor
//! are known, so the merged names up to the *smallest* cursor of the
//! buckets that have more are final. The page is decided once more than
//! `limit` names are final (the extra one says there is a next page), or
//! every bucket is exhausted. Otherwise only the buckets holding the
//! smallest cursor are asked again, with twice the quota. Usually one
//! round suffices; each further round moves at least one cursor forward.

use crate::model::{Listing, Page};

/// What one bucket answered.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// No names past `cursor` in this bucket.
    pub(crate) done: bool,
    /// The last name looked at (or the query's `after`).
    pub(crate) cursor: String,
    /// Live listings with their case-folded names, in name order.
    pub(crate) entries: Vec<(String, Listing)>,
}

/// A query to send to one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) bucket: usize,
    pub(crate) after: String,
    pub(crate) quota: usize,
}

#[derive(Debug)]
struct Run {
    cursor: String,
    done: bool,
    quota: usize,
}

/// A page being merged.
#[derive(Debug)]
pub(crate) struct Merge {
    limit: usize,
    runs: Vec<Run>,
    entries: Vec<(String, Listing)>,
}

impl Merge {
    pub(crate) fn new(buckets: usize, after: Option<&str>, limit: usize) -> Merge {
        let limit = limit.max(1);
        // Its share of the page and a margin, so that one round usually does.
        let quota = (limit.div_ceil(buckets) * 5 / 4 + 4).min(limit + 1);
        let start = after.unwrap_or_default().to_owned();
        let runs =
            (0..buckets).map(|_| Run { cursor: start.clone(), done: false, quota }).collect();
        Merge { limit, runs, entries: Vec::new() }
    }

    /// The first round: every bucket.
    pub(crate) fn first_queries(&self) -> Vec<Query> {
        self.runs
            .iter()
            .enumerate()
            .map(|(bucket, run)| Query { bucket, after: run.cursor.clone(), quota: run.quota })
            .collect()
    }

    /// Takes a bucket's answer to its query.
    pub(crate) fn feed(&mut self, bucket: usize, reply: Reply) {
        let Some(run) = self.runs.get_mut(bucket) else { return };
        // A cursor never moves back: a reply to a stale query adds nothing.
        if !run.cursor.is_empty() && reply.cursor <= run.cursor && !reply.done {
            return;
        }
        run.done = reply.done;
        if reply.cursor > run.cursor {
            run.cursor = reply.cursor;
        }
        self.entries.extend(reply.entries);
    }

    /// The page, once decided; else the queries for the next round.
    pub(crate) fn step(&mut self) -> Result<Page, Vec<Query>> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.entries.dedup_by(|a, b| a.0 == b.0);
        let bound = self.runs.iter().filter(|r| !r.done).map(|r| r.cursor.as_str()).min();
        let final_count = match bound {
            Some(bound) => self.entries.partition_point(|(key, _)| key.as_str() <= bound),
            None => self.entries.len(),
        };
        if final_count > self.limit {
            let next = self.entries[self.limit - 1].0.clone();
            let peers = self.entries.drain(..self.limit).map(|(_, l)| l).collect();
            return Ok(Page { peers, next: Some(next) });
        }
        let Some(bound) = bound.map(str::to_owned) else {
            let peers = self.entries.drain(..).map(|(_, l)| l).collect();
            return Ok(Page { peers, next: None });
        };
        let limit = self.limit;
        let queries = self
            .runs
            .iter_mut()
            .enumerate()
            .filter(|(_, run)| !run.done && run.cursor == bound)
            .map(|(bucket, run)| {
                run.quota = (run.quota * 2).min(limit + 1);
                Query { bucket, after: run.cursor.clone(), quota: run.quota }
            })
            .collect();
        Err(queries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Presence;

    fn listing(name: &str) -> Listing {
        Listing {
            name: name.to_owned(),
            address: "127.0.0.1:1".into(),
            presence: Presence::Available,
            public_key: [1; 32],
        }
    }

    /// Answers queries the way list.lua does, from sorted buckets, with a
    /// scan bound of four times the quota.
    fn answer(bucket: &[String], q: &Query) -> Reply {
        let scan = q.quota * 4;
        let past: Vec<&String> = bucket.iter().filter(|n| **n > q.after).take(scan).collect();
        let mut cursor = q.after.clone();
        let mut entries = Vec::new();
        let mut looked = 0;
        for name in &past {
            cursor = (*name).clone();
            looked += 1;
            // Names starting with "x" are expired.
            if !name.starts_with('x') {
                entries.push(((*name).clone(), listing(name)));
                if entries.len() >= q.quota {
                    break;
                }
            }
        }
        let done = looked == past.len() && past.len() < scan;
        Reply { done, cursor, entries }
    }

    fn list_all(buckets: &[Vec<String>], limit: usize) -> (Vec<String>, usize) {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut rounds = 0;
        for _page in 0..10_000 {
            let mut merge = Merge::new(buckets.len(), after.as_deref(), limit);
            let mut queries = merge.first_queries();
            let page = loop {
                rounds += 1;
                for q in &queries {
                    merge.feed(q.bucket, answer(&buckets[q.bucket], q));
                }
                match merge.step() {
                    Ok(page) => break page,
                    Err(next) => queries = next,
                }
                assert!(rounds < 100_000, "runaway");
            };
            assert!(page.peers.len() <= limit);
            seen.extend(page.peers.iter().map(|l| l.name.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => return (seen, rounds),
            }
        }
        panic!("too many pages");
    }

    fn spread(names: &[String], b: usize) -> Vec<Vec<String>> {
        let mut buckets = vec![Vec::new(); b];
        for n in names {
            buckets[super::super::keys::bucket_of(n) % b].push(n.clone());
        }
        for bucket in &mut buckets {
            bucket.sort();
        }
        buckets
    }

    #[test]
    fn every_live_name_once_in_order_whatever_the_page_size() {
        let names: Vec<String> = (0..2_345).map(|i| format!("p{i:05}")).collect();
        let buckets = spread(&names, 16);
        for limit in [1, 7, 100, 1000] {
            let (seen, _) = list_all(&buckets, limit);
            assert_eq!(seen, names, "limit {limit}");
        }
    }

    #[test]
    fn expired_names_are_skipped_and_a_full_last_page_is_the_last() {
        let mut names: Vec<String> = (0..40).map(|i| format!("a{i:03}")).collect();
        names.extend((0..5_000).map(|i| format!("x{i:05}")));
        let buckets = spread(&names, 16);
        let (seen, _) = list_all(&buckets, 20);
        assert_eq!(seen, names[..40].to_vec());
        // 40 live names in pages of 20: two pages, the second says it is last.
        let mut merge = Merge::new(16, Some("a019"), 20);
        let mut queries = merge.first_queries();
        let page = loop {
            for q in &queries {
                merge.feed(q.bucket, answer(&buckets[q.bucket], q));
            }
            match merge.step() {
                Ok(page) => break page,
                Err(next) => queries = next,
            }
        };
        assert_eq!(page.peers.len(), 20);
        assert_eq!(page.next, None);
    }

    #[test]
    fn a_skewed_bucket_takes_more_rounds_but_nothing_is_lost() {
        let mut buckets = vec![Vec::new(); 16];
        buckets[3] = (0..500).map(|i| format!("n{i:04}")).collect();
        buckets[9] = vec!["a".into(), "zz".into()];
        let (seen, rounds) = list_all(&buckets, 100);
        assert_eq!(seen.len(), 502);
        assert_eq!(seen.first().map(String::as_str), Some("a"));
        assert_eq!(seen.last().map(String::as_str), Some("zz"));
        assert!(rounds < 60, "{rounds} rounds");
    }

    #[test]
    fn empty_directory_is_one_empty_page() {
        let (seen, rounds) = list_all(&vec![Vec::new(); 16], 100);
        assert!(seen.is_empty());
        assert_eq!(rounds, 1);
    }
}
