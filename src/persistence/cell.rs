//! Galaxies in memory, shared by the game threads and the writer thread.
//!
//! Each galaxy sits in its own [`GalaxyCell`] behind its own lock, so galaxies never
//! contend with each other. The [`Registry`] maps names to cells. Lock order: the
//! registry's lock is held only to find, insert or remove a cell, never together with a
//! cell's lock, and no lock here is ever held during SQL.

use std::collections::HashMap;
use std::sync::Arc;

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
}

impl GalaxyCell {
    pub fn new(galaxy: Galaxy) -> Arc<GalaxyCell> {
        Arc::new(GalaxyCell {
            name: galaxy.name().to_owned(),
            state: Mutex::new(CellState {
                galaxy,
                deleted: false,
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
