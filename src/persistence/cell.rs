//! Galaxies in memory, shared by the game threads and the writer thread.
//!
//! Each galaxy sits in its own [`GalaxyCell`] behind its own lock, so galaxies never
//! contend with each other. The [`Registry`] maps names to cells; looking a name up takes
//! no lock (every order and read does it, and a shared lock word bounced between cores
//! cost more than the rest of an order). Lock order: a cell's lock may be held while the
//! registry is changed (the writer does so to evict), never the other way round: nothing
//! locks a cell while changing the registry. No lock here is ever held during SQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, MutexGuard};

use super::cut::{cut, Cut};
use crate::model::{Changes, Galaxy};

/// One galaxy and its lock, on cache lines of its own: the lock and the state it guards
/// are written by every order, and two galaxies played on two cores must not share a line
/// (128 bytes: CPUs fetch lines in adjacent pairs).
#[derive(Debug)]
#[repr(align(128))]
pub struct GalaxyCell {
    name: String,
    state: Mutex<CellState>,
}

/// What a cell's lock protects.
#[derive(Debug)]
pub struct CellState {
    pub galaxy: Galaxy,
    /// Set (under the lock) when the galaxy is deleted: a holder of a stale `Arc` must not
    /// play on, and the writer must not save it again.
    pub deleted: bool,
    /// Set (under the lock) when the writer evicted this clean, idle galaxy from memory: a
    /// holder of a stale `Arc` must look the name up again, which loads it afresh.
    pub evicted: bool,
    /// The last read or order, for eviction of idle galaxies.
    pub last_access: Instant,
    /// Indexes of the systems in the batch being written (taken from the change set but
    /// not yet committed), so the unsaved count counts each system once.
    pub in_flight: Vec<u32>,
}

impl GalaxyCell {
    pub fn new(galaxy: Galaxy) -> Arc<GalaxyCell> {
        Arc::new(GalaxyCell {
            name: galaxy.name().to_owned(),
            state: Mutex::new(CellState {
                galaxy,
                deleted: false,
                evicted: false,
                last_access: Instant::now(),
                in_flight: Vec::new(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock()
    }

    // What the writer may do with a cell: these and nothing else, so the galaxy's life
    // can change hands without the writer noticing.

    /// The consistent cut; `None` when the galaxy was deleted.
    pub(crate) fn cut(&self) -> Option<Cut> {
        cut(self)
    }

    /// After a commit that held this galaxy's cut.
    pub(crate) fn saved(&self) {
        self.lock().in_flight.clear();
    }

    /// After a failed commit: the cut's changes go back (not into a deleted galaxy).
    pub(crate) fn give_back(&self, changes: Changes) {
        let mut state = self.lock();
        state.in_flight.clear();
        if !state.deleted {
            state.galaxy.restore_changes(changes);
        }
    }

    /// Its tick when nothing is unsaved; or why not.
    pub(crate) fn settled_tick(&self) -> Settled {
        let state = self.lock();
        if state.deleted {
            Settled::Gone
        } else if !state.galaxy.changes().is_empty() {
            Settled::Dirty
        } else {
            Settled::Clean(state.galaxy.tick())
        }
    }

    /// Deleted (a late dirty marker of it is dropped).
    pub(crate) fn is_gone(&self) -> bool {
        self.lock().deleted
    }

    /// Unsaved systems (0 when deleted), for the shutdown report.
    pub(crate) fn unsaved(&self) -> usize {
        let state = self.lock();
        if state.deleted {
            return 0;
        }
        let changes = state.galaxy.changes();
        // A system changed again while its batch is written is counted once.
        let only_in_flight = state
            .in_flight
            .iter()
            .filter(|index| changes.get(**index).is_none())
            .count();
        changes.len() + only_in_flight
    }
}

/// What [`GalaxyCell::settled_tick`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Deleted.
    Gone,
    /// Has changes not yet cut.
    Dirty,
    /// Nothing unsaved; its tick.
    Clean(u64),
}

/// The galaxies in memory, by name: a map published whole, read without locking, and
/// replaced by a changed copy on the rare change (a galaxy created, loaded, evicted or
/// deleted), so a change costs a copy of the map, in proportion to the galaxies in memory.
#[derive(Debug, Default)]
pub struct Registry {
    cells: ArcSwap<HashMap<String, Arc<GalaxyCell>>>,
    /// Serialises changes, so none is lost to another made from the same old map.
    changing: Mutex<()>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<GalaxyCell>> {
        self.cells.load().get(name).cloned()
    }

    /// Applies `edit` to a copy of the map and publishes the copy.
    fn change<T>(&self, edit: impl FnOnce(&mut HashMap<String, Arc<GalaxyCell>>) -> T) -> T {
        let _changing = self.changing.lock();
        let mut cells = HashMap::clone(&self.cells.load());
        let result = edit(&mut cells);
        self.cells.store(Arc::new(cells));
        result
    }

    pub fn insert(&self, cell: Arc<GalaxyCell>) {
        self.change(|cells| cells.insert(cell.name().to_owned(), cell));
    }

    pub fn remove(&self, name: &str) -> Option<Arc<GalaxyCell>> {
        self.change(|cells| cells.remove(name))
    }

    /// Removes `cell` if its name still maps to it (and not to a newer cell).
    pub fn remove_cell(&self, cell: &Arc<GalaxyCell>) {
        self.change(|cells| {
            if cells.get(cell.name()).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                cells.remove(cell.name());
            }
        });
    }

    /// Every cell, copied out of the published map (whose guard is for brief use).
    pub fn all(&self) -> Vec<Arc<GalaxyCell>> {
        self.cells.load().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.cells.load().len()
    }

    /// Evicts `cell` when it is live, clean, untouched since `now - idle`, and its tick is
    /// `saved_tick`; true when it did (the cell is marked evicted and unlisted).
    pub(crate) fn evict_if_idle(
        &self,
        cell: &Arc<GalaxyCell>,
        now: Instant,
        idle: Duration,
        saved_tick: Option<u64>,
    ) -> bool {
        let mut state = cell.lock();
        let keep = state.deleted
            || state.evicted
            || !state.galaxy.changes().is_empty()
            || now.saturating_duration_since(state.last_access) < idle
            || saved_tick != Some(state.galaxy.tick());
        if keep {
            return false;
        }
        // Marked and unlisted under the cell's lock, so no order can slip in between:
        // a holder of this cell sees `evicted` and looks the name up again.
        state.evicted = true;
        self.remove_cell(cell);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GalaxyConfig;

    fn cell(name: &str) -> Arc<GalaxyCell> {
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        GalaxyCell::new(Galaxy::create(name, config, 1, 0).unwrap())
    }

    #[test]
    fn remove_cell_leaves_a_newer_cell_of_the_same_name() {
        let registry = Registry::default();
        let old = cell("g");
        registry.insert(old.clone());
        let new = cell("g");
        registry.insert(new.clone());
        registry.remove_cell(&old);
        assert!(Arc::ptr_eq(&registry.get("g").unwrap(), &new));
        registry.remove_cell(&new);
        assert!(registry.get("g").is_none() && registry.is_empty());
    }

    #[test]
    fn concurrent_changes_are_all_kept() {
        let registry = Registry::default();
        let cells: Vec<_> = (0..400).map(|n| cell(&format!("g{n}"))).collect();
        std::thread::scope(|scope| {
            for chunk in cells.chunks(100) {
                let registry = &registry;
                scope.spawn(move || {
                    for cell in chunk {
                        registry.insert(cell.clone());
                    }
                });
            }
        });
        assert_eq!(registry.len(), 400, "no insert lost to another");
        assert!(registry.remove("g3").is_some());
        assert_eq!(registry.all().len(), 399);
    }
}
