//! What happened to a galaxy, one entry per event (README, *History*): every order applied
//! and every build completed, with its tick, system, structure and the level it brings.
//!
//! A build's completion is certain from the moment it is ordered (nothing cancels one), so
//! both entries are recorded by the order itself: the completion carries its completion
//! tick, and a reader asking for the history up to a tick leaves out those still ahead.
//! Entries ride the galaxy's change set (`changes.rs`), so they are saved in the same
//! transaction as the state they produced, given back with it when a save fails, and
//! dropped with it where nothing is saved.

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
            let history = live.take_changes().history().to_vec();
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
