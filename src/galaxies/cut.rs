//! The consistent cut: a galaxy's unsaved changes and the rows they name, taken in one
//! hold of the galaxy's lock.
//!
//! Taking the change set and copying its rows under the same lock hold is what makes a
//! batch store each galaxy as it was at one instant. Everything that can happen outside
//! the lock does: buffers are sized and their memory touched before the lock is taken
//! (page faults under the lock would otherwise be most of the hold), and rows are sorted
//! after it is released. When a quarter or more of the galaxy is dirty, the whole
//! system table is copied in one sequential `memcpy` instead of row by row in hash order,
//! which is faster there and still bounded by four times the dirty rows' size.
//!
//! [`GalaxyCell::cut`] is defined here, not beside the cell, so that the files point one
//! way: this one names the cell's, and the cell's names nothing of this one.

use std::time::{Duration, Instant};

use super::cell::GalaxyCell;
use crate::model::{Changes, Resources, RowMask, System};
use crate::store::SystemRow;

/// What a cut took from one galaxy.
pub(crate) struct Cut {
    /// The changed rows, in system-index (= row-id) order.
    pub rows: Vec<SystemRow>,
    /// The change set itself, to give back if the batch fails.
    pub changes: Changes,
    pub tick: u64,
    /// How long the galaxy's lock was held.
    pub hold: Duration,
}

const PLACEHOLDER: System = System {
    x: 0,
    y: 0,
    resources: Resources::ZERO,
    tick: 0,
    levels: [0; 5],
    build: None,
};

/// A vector with room for `capacity` items whose memory has been written once.
fn touched<T: Clone>(capacity: usize, placeholder: T) -> Vec<T> {
    let mut buffer = Vec::with_capacity(capacity);
    buffer.resize(capacity, placeholder);
    buffer.clear();
    buffer
}

impl GalaxyCell {
    /// The writer's consistent cut of the galaxy; `None` once it was deleted, lost or
    /// archived.
    pub(crate) fn cut(&self) -> Option<Cut> {
        // A first, brief look to size the buffers. The numbers may grow before the cut;
        // the margin absorbs most of that and pushing past it only regrows.
        let (dirty, total) = {
            let state = self.lock();
            (state.galaxy.changes().len(), state.galaxy.systems().len())
        };
        let whole = dirty * 4 >= total && dirty > 0;
        let margin = |n: usize| n + n / 8 + 16;
        let mut all = if whole {
            touched(margin(total), PLACEHOLDER)
        } else {
            Vec::new()
        };
        let mut rows = if whole {
            Vec::new()
        } else {
            touched(
                margin(dirty),
                SystemRow {
                    index: 0,
                    rows: RowMask::default(),
                    system: PLACEHOLDER,
                },
            )
        };

        let mut state = self.lock();
        if state.life.is_gone() {
            return None;
        }
        let hold = Instant::now();
        let changes = state.galaxy.take_changes();
        if whole {
            all.extend_from_slice(state.galaxy.systems());
        } else {
            for (index, mask) in changes.iter() {
                if let Some(system) = state.galaxy.system(index) {
                    rows.push(SystemRow {
                        index,
                        rows: mask,
                        system: *system,
                    });
                }
            }
        }
        let tick = state.galaxy.tick();
        drop(state);
        let hold = hold.elapsed();

        if whole {
            rows = changes
                .iter()
                .filter_map(|(index, mask)| {
                    all.get(index as usize).map(|system| SystemRow {
                        index,
                        rows: mask,
                        system: *system,
                    })
                })
                .collect();
        }
        rows.sort_unstable_by_key(|row| row.index);
        // For the unsaved-systems gauge only; it may undercount for this instant.
        self.lock().in_flight = rows.iter().map(|row| row.index).collect();
        Some(Cut {
            rows,
            changes,
            tick,
            hold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::cell::Life;
    use super::*;
    use crate::model::{Galaxy, GalaxyConfig, StructureKind};

    /// A blitz galaxy (200 systems) with the first `dirty` of them ordered in at tick 10.
    fn cell_with(dirty: usize) -> std::sync::Arc<GalaxyCell> {
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        let mut galaxy = Galaxy::create("g", config, 1, 0).unwrap();
        galaxy.take_changes();
        let coords: Vec<_> = galaxy.systems().iter().map(|s| (s.x, s.y)).collect();
        for &(x, y) in coords.iter().take(dirty) {
            galaxy
                .build(10, x.into(), y.into(), StructureKind::Hatchery)
                .unwrap();
        }
        GalaxyCell::new(galaxy, std::time::Instant::now(), None)
    }

    #[test]
    fn both_ways_of_cutting_take_exactly_the_changed_rows_in_order() {
        // 10 of 200 dirty copies row by row; 150 of 200 copies the whole table.
        for dirty in [0, 10, 150, 200] {
            let cell = cell_with(dirty);
            let expected: Vec<_> = {
                let state = cell.lock();
                let mut indexes: Vec<u32> = state.galaxy.changes().iter().map(|(i, _)| i).collect();
                indexes.sort_unstable();
                indexes
                    .into_iter()
                    .map(|i| (i, *state.galaxy.system(i).unwrap()))
                    .collect()
            };
            let cut = cell.cut().unwrap();
            let got: Vec<_> = cut.rows.iter().map(|r| (r.index, r.system)).collect();
            assert_eq!(got, expected, "{dirty} dirty");
            assert_eq!(cut.changes.len(), dirty);
            assert!(
                cell.lock().galaxy.changes().is_empty(),
                "the cut took the changes"
            );
            assert_eq!(cut.tick, if dirty > 0 { 10 } else { 0 });
        }
    }

    #[test]
    fn a_deleted_galaxy_is_not_cut() {
        let cell = cell_with(5);
        cell.lock().life = Life::Deleted;
        assert!(cell.cut().is_none());
    }
}
