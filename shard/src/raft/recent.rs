//! The newest log entries, kept in memory after they are appended: the
//! leader sends each entry to every follower and every replica applies it,
//! and those reads would otherwise go back to RocksDB and decode it again.
//! Proposals are shared (`Arc`), so handing out an entry is a reference
//! count. Bounded by entries and bytes; older ones are read from RocksDB.

use std::collections::VecDeque;

use super::Entry;

/// Most entries kept.
const MAX_ENTRIES: usize = 4096;
/// Most encoded bytes kept (entries can carry file chunks).
const MAX_BYTES: usize = 64 << 20;

/// Consecutive entries ending with the last one appended.
#[derive(Default)]
pub struct RecentEntries {
    /// `(entry, encoded size)`, indexes consecutive.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl RecentEntries {
    /// Adds entries just appended to the log (in index order). An entry that
    /// does not follow the last one kept replaces what is kept from its index
    /// on (a follower overwrote a conflicting suffix) or, after a gap, all of it.
    pub fn append(&mut self, appended: impl IntoIterator<Item = (Entry, usize)>) {
        for (entry, size) in appended {
            let index = entry.log_id.index;
            match self.next_index() {
                Some(next) if index < next => self.truncate(index),
                Some(next) if index > next => self.clear(),
                _ => {}
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    /// Entries with index in `[start, end)` when all of them are kept.
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        let next = self.next_index()?;
        if start < first || end > next || start > end {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(self.entries.range(from..to).map(|(entry, _)| entry.clone()).collect())
    }

    /// Entries from `start` to `end` (unbounded: the last kept) when all of
    /// them are kept.
    pub fn get_range(&self, start: u64, end: std::ops::Bound<u64>) -> Option<Vec<Entry>> {
        let end = match end {
            std::ops::Bound::Included(x) => x.saturating_add(1),
            std::ops::Bound::Excluded(x) => x,
            std::ops::Bound::Unbounded => self.next_index()?,
        };
        self.get(start, end)
    }

    /// The index after the last entry kept.
    pub fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|(entry, _)| entry.log_id.index + 1)
    }

    /// Forgets entries with index `index` and later (the log was truncated).
    pub fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(entry, _)| entry.log_id.index >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries with index `index` and earlier (the log was purged).
    pub fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(entry, _)| entry.log_id.index <= index) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn entry(term: u64, index: u64) -> (Entry, usize) {
        let log_id = LogId::new(CommittedLeaderId::new(term, 1), index);
        (Entry { log_id, payload: EntryPayload::Blank }, 10)
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|e| e.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect())
    }

    #[test]
    fn test_serves_only_ranges_it_holds_whole() {
        let mut recent = RecentEntries::default();
        recent.append((5..10).map(|i| entry(1, i)));
        assert_eq!(indexes(recent.get(6, 9)), Some(vec![(1, 6), (1, 7), (1, 8)]));
        assert_eq!(indexes(recent.get(5, 10)).map(|v| v.len()), Some(5));
        assert_eq!(recent.get(4, 8), None, "starts before the first kept");
        assert_eq!(recent.get(8, 11), None, "ends after the last kept");
        assert_eq!(indexes(recent.get(7, 7)), Some(vec![]));
        let unbounded = recent.get_range(7, std::ops::Bound::Unbounded);
        assert_eq!(indexes(unbounded), Some(vec![(1, 7), (1, 8), (1, 9)]));
        assert_eq!(indexes(recent.get_range(8, std::ops::Bound::Included(9))), Some(vec![(1, 8), (1, 9)]));
    }

    #[test]
    fn test_a_conflicting_suffix_replaces_the_old_one_and_a_gap_clears() {
        let mut recent = RecentEntries::default();
        recent.append((1..6).map(|i| entry(1, i)));
        recent.append([entry(2, 4)]);
        assert_eq!(indexes(recent.get(1, 5)), Some(vec![(1, 1), (1, 2), (1, 3), (2, 4)]));
        assert_eq!(recent.next_index(), Some(5));
        recent.append([entry(2, 9)]);
        assert_eq!(recent.get(1, 2), None, "a gap drops the older entries");
        assert_eq!(indexes(recent.get(9, 10)), Some(vec![(2, 9)]));
    }

    #[test]
    fn test_truncate_purge_and_the_bounds() {
        let mut recent = RecentEntries::default();
        recent.append((1..=10).map(|i| entry(1, i)));
        recent.truncate(8);
        recent.purge(3);
        assert_eq!(indexes(recent.get(4, 8)).map(|v| v.len()), Some(4));
        assert_eq!(recent.get(3, 5), None);
        assert_eq!(recent.next_index(), Some(8));
        recent.append((8..8 + MAX_ENTRIES as u64).map(|i| entry(1, i)));
        assert_eq!(recent.entries.len(), MAX_ENTRIES);
        assert_eq!(recent.bytes, MAX_ENTRIES * 10);
    }
}
