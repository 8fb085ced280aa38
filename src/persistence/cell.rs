//! Galaxies in memory, shared by the game threads and the writer thread.
//!
//! Each galaxy sits in its own [`GalaxyCell`] behind its own lock, so galaxies never
//! contend with each other. The [`Registry`] maps names to cells. Lock order: a cell's
//! lock may be held while the registry's is taken (the writer does so to evict), never
//! the other way round: nothing locks a cell while holding the registry. No lock here is
//! ever held during SQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::model::Galaxy;

/// One galaxy and its lock.
#[derive(Debug)]
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
}

/// The galaxies in memory, by name.
#[derive(Debug, Default)]
pub struct Registry {
    cells: RwLock<HashMap<String, Arc<GalaxyCell>>>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<Arc<GalaxyCell>> {
        self.cells.read().get(name).cloned()
    }

    pub fn insert(&self, cell: Arc<GalaxyCell>) {
        self.cells.write().insert(cell.name().to_owned(), cell);
    }

    pub fn remove(&self, name: &str) -> Option<Arc<GalaxyCell>> {
        self.cells.write().remove(name)
    }

    /// Removes `cell` if its name still maps to it (and not to a newer cell).
    pub fn remove_cell(&self, cell: &Arc<GalaxyCell>) {
        let mut cells = self.cells.write();
        if cells.get(cell.name()).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            cells.remove(cell.name());
        }
    }

    /// Every cell, copied out so the registry's lock is released before any cell is locked.
    pub fn all(&self) -> Vec<Arc<GalaxyCell>> {
        self.cells.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.cells.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
