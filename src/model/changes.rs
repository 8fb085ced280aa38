//! Change tracking: which rows of which systems an operation changed.
//!
//! A galaxy owns one [`Changes`] and updates it in the same call that applies a change, so
//! "what is unsaved" is always exactly what was done, with no scan of the galaxy. The set is
//! keyed by system index and holds a small row mask per system: its size is bounded by the
//! number of systems, however many operations touched them. It also carries the history
//! entries of those operations (`history.rs`), which are saved, given back and dropped
//! with the rows they explain.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::config::Rules;
use super::history::{HistoryLog, OrderRecord};
use super::structure::StructureKind;

/// Which rows of one system changed since it was last taken for saving.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RowMask(u8);

impl RowMask {
    /// The `systems` row: resources and `current_tick`.
    pub const SYSTEM: RowMask = RowMask(1);
    /// The system's `events` rows (the build in flight).
    pub const EVENTS: RowMask = RowMask(2);
    /// Every row a system can have: itself, its events, all five structures.
    #[cfg(test)]
    pub const ALL: RowMask = RowMask(0b111_1111);

    /// The rows of a new system: itself, its events, and one row per configured structure.
    pub fn new_system(rules: &Rules) -> RowMask {
        rules
            .configured()
            .fold(RowMask::SYSTEM | RowMask::EVENTS, |mask, (kind, _)| {
                mask | RowMask::structure(kind)
            })
    }

    /// The `structures` row of one structure.
    pub fn structure(kind: StructureKind) -> RowMask {
        RowMask(4 << kind.index())
    }

    pub fn contains(self, other: RowMask) -> bool {
        self.0 & other.0 == other.0
    }

    /// The structures whose rows this mask covers.
    pub fn structures(self) -> impl Iterator<Item = StructureKind> {
        StructureKind::ALL
            .into_iter()
            .filter(move |kind| self.contains(RowMask::structure(*kind)))
    }
}

impl std::ops::BitOr for RowMask {
    type Output = RowMask;
    fn bitor(self, rhs: RowMask) -> RowMask {
        RowMask(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for RowMask {
    fn bitor_assign(&mut self, rhs: RowMask) {
        self.0 |= rhs.0;
    }
}

/// Unsaved changes of one galaxy: system index → changed rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    rows: HashMap<u32, RowMask, BuildHasherDefault<IndexHasher>>,
    /// What the changes were, in the order they were made.
    history: HistoryLog,
}

/// Hashes a system index with one multiplication (Fibonacci hashing), cheaper per order
/// than the default SipHash (README, *Benchmarks*, section 3). SipHash defends against
/// keys chosen to collide; these keys are a galaxy's own system indexes, distinct small
/// integers that this spreads evenly over any table size.
#[derive(Clone, Copy, Debug, Default)]
struct IndexHasher(u64);

/// 2^64 divided by the golden ratio, odd: multiplying by it permutes and mixes.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IndexHasher {
    fn write_u32(&mut self, index: u32) {
        self.0 = u64::from(index).wrapping_mul(GOLDEN);
    }

    // Only `u32` keys are hashed; this keeps any other use correct, if slower.
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(GOLDEN);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Number of systems with unsaved changes.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn mark(&mut self, index: u32, rows: RowMask) {
        *self.rows.entry(index).or_default() |= rows;
    }

    /// Records what a change was (with the rows it marks).
    pub(crate) fn record(&mut self, order: OrderRecord) {
        self.history.push(order);
    }

    /// The orders of these changes, oldest first.
    pub(crate) fn history(&self) -> &HistoryLog {
        &self.history
    }

    /// Empties the set; its memory is kept.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.history.clear();
    }

    /// Puts back changes taken earlier (after a failed save); a system changed again in the
    /// meantime keeps the union of both masks, and the earlier history goes first.
    pub fn merge(&mut self, earlier: Changes) {
        self.history.prepend(earlier.history);
        if self.rows.is_empty() {
            self.rows = earlier.rows;
            return;
        }
        for (index, rows) in earlier.rows {
            self.mark(index, rows);
        }
    }

    /// `(system index, changed rows)` in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, RowMask)> + '_ {
        self.rows.iter().map(|(index, rows)| (*index, *rows))
    }

    pub fn get(&self, index: u32) -> Option<RowMask> {
        self.rows.get(&index).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_combine_and_list_structures() {
        let mask = RowMask::SYSTEM | RowMask::structure(StructureKind::Hatchery);
        assert!(mask.contains(RowMask::SYSTEM));
        assert!(!mask.contains(RowMask::EVENTS));
        assert_eq!(
            mask.structures().collect::<Vec<_>>(),
            [StructureKind::Hatchery]
        );
        assert_eq!(RowMask::ALL.structures().count(), 5);
    }

    #[test]
    fn a_system_changed_many_times_is_one_entry() {
        let mut changes = Changes::default();
        for _ in 0..1000 {
            changes.mark(3, RowMask::SYSTEM);
        }
        changes.mark(3, RowMask::EVENTS);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes.get(3), Some(RowMask::SYSTEM | RowMask::EVENTS));
    }

    #[test]
    fn clear_forgets_everything() {
        let mut changes = Changes::default();
        for index in 0..100 {
            changes.mark(index * 7919, RowMask::SYSTEM);
        }
        assert_eq!(changes.len(), 100);
        assert_eq!(changes.get(7919), Some(RowMask::SYSTEM));
        changes.clear();
        assert!(changes.is_empty());
        assert_eq!(changes.get(7919), None);
    }

    #[test]
    fn merge_keeps_the_union() {
        let mut now = Changes::default();
        now.mark(1, RowMask::EVENTS);
        let mut earlier = Changes::default();
        earlier.mark(1, RowMask::SYSTEM);
        earlier.mark(2, RowMask::ALL);
        now.merge(earlier);
        assert_eq!(now.len(), 2);
        assert_eq!(now.get(1), Some(RowMask::SYSTEM | RowMask::EVENTS));
        assert_eq!(now.get(2), Some(RowMask::ALL));
    }
}
