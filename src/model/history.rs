//! What happened to a galaxy, one entry per event (README, *History*): every order applied
//! and every build completed, with its tick, system, structure and the level it brings.
//!
//! A build's completion is certain from the moment it is ordered (nothing cancels one), so
//! both entries are recorded by the order itself: the completion carries its completion
//! tick, and a reader asking for the history up to a tick leaves out those still ahead.
//! Entries ride the galaxy's change set (`changes.rs`), as one compact [`OrderRecord`] per
//! order, so they are saved in the same transaction as the state they produced, given back
//! with it when a save fails, and dropped with it where nothing is saved.

use super::structure::StructureKind;

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HistoryKind {
    /// A build was ordered (its resources paid).
    Ordered,
    /// A build completed: the structure reached `level`.
    Completed,
}

impl HistoryKind {
    pub fn name(self) -> &'static str {
        match self {
            HistoryKind::Ordered => "build",
            HistoryKind::Completed => "completed",
        }
    }
}

/// One event of a galaxy's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HistoryEntry {
    pub tick: u64,
    pub x: u32,
    pub y: u32,
    pub kind: HistoryKind,
    pub structure: StructureKind,
    /// The level the build brings the structure to.
    pub level: u32,
}

/// One order as the change set keeps it until it is saved: both its entries (the order
/// and its completion) in one record of 32 bytes, its system by index. Orders are the
/// game's hottest path, and a record is all an order adds to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OrderRecord {
    pub tick: u64,
    pub completion: u64,
    pub index: u32,
    pub level: u32,
    pub structure: StructureKind,
}

impl OrderRecord {
    /// The two entries of this order, its system at `(x, y)`.
    pub(crate) fn entries(&self, (x, y): (u32, u32)) -> [HistoryEntry; 2] {
        let entry = |kind, tick| HistoryEntry {
            tick,
            x,
            y,
            kind,
            structure: self.structure,
            level: self.level,
        };
        [
            entry(HistoryKind::Ordered, self.tick),
            entry(HistoryKind::Completed, self.completion),
        ]
    }
}

/// The records of unsaved orders, in the order they were made, in chunks of fixed
/// capacity: a log that grows by millions of orders between two saves never moves what
/// it holds (a single vector would copy itself whole, under the galaxy's lock, each time
/// it doubled).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HistoryLog {
    chunks: Vec<Vec<OrderRecord>>,
}

/// Records per chunk: 32 KiB.
const CHUNK: usize = 1024;

impl HistoryLog {
    pub(crate) fn push(&mut self, record: OrderRecord) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(record),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(record);
                self.chunks.push(chunk);
            }
        }
    }

    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// Empties the log, keeping its first chunk's memory: with nothing saved (persistence
    /// off) the log is cleared after every order, which must not cost an allocation each.
    pub(crate) fn clear(&mut self) {
        self.chunks.truncate(1);
        if let Some(first) = self.chunks.first_mut() {
            first.clear();
        }
    }

    /// Puts `earlier` (taken before this log began) in front of it.
    pub(crate) fn prepend(&mut self, mut earlier: HistoryLog) {
        earlier.chunks.append(&mut self.chunks);
        self.chunks = earlier.chunks;
    }

    /// Every record, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &OrderRecord> {
        self.chunks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Galaxy, GalaxyConfig};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// The history is what happened: replaying its orders on the galaxy as created
        /// gives the same systems, and every order's completion is recorded with the
        /// build's own tick and level.
        #[test]
        fn replaying_the_history_rebuilds_the_galaxy(
            seed in any::<u64>(),
            orders in proptest::collection::vec((0u64..400, any::<usize>(), 0usize..5), 1..120),
        ) {
            let (config, _) = GalaxyConfig::preset("blitz").unwrap();
            let mut live = Galaxy::create("g", config.clone(), seed, 0).unwrap();
            live.take_changes();
            let mut rebuilt = live.clone();
            let mut tick = 0;
            for (wait, pick, kind) in orders {
                tick += wait;
                let (x, y) = live.systems()[pick % live.systems().len()].coords();
                let _ = live.build(tick, x.into(), y.into(), StructureKind::ALL[kind]);
            }
            let changes = live.take_changes();
            let history: Vec<HistoryEntry> = changes
                .history()
                .iter()
                .flat_map(|r| r.entries(live.systems()[r.index as usize].coords()))
                .collect();
            let ordered: Vec<_> = history.iter().filter(|e| e.kind == HistoryKind::Ordered).collect();
            let completed: Vec<_> = history.iter().filter(|e| e.kind == HistoryKind::Completed).collect();
            prop_assert_eq!(ordered.len(), completed.len());
            for (order, done) in ordered.iter().zip(&completed) {
                let build = rebuilt
                    .build(order.tick, order.x.into(), order.y.into(), order.structure)
                    .expect("an order in the history succeeds again");
                prop_assert_eq!((done.tick, done.x, done.y), (build.completion_tick, order.x, order.y));
                prop_assert_eq!((done.structure, done.level), (order.structure, order.level));
            }
            prop_assert_eq!(rebuilt.systems(), live.systems());
        }
    }
}
