//! One galaxy in memory: its state behind its own lock, and its life (live, deleted,
//! evicted) recorded under that same lock.
//!
//! The lock is private to [`super`]: game code reaches a galaxy through
//! [`super::Galaxies::with_live`], which hands it a [`Live`] guard only while the galaxy is
//! live; the writer holds the cell as its narrow handle and may only take a cut
//! (`cut.rs`), give a failed one back, mark one saved, and read what it needs to decide on
//! ticks and eviction. Galaxies never contend with each other: each has its own lock, and the cell is
//! on cache lines of its own.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

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

/// Where a cell is in the galaxy's life. A cell starts live and leaves that state once,
/// for good: a holder of a stale `Arc` then sees why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Life {
    /// In the registry: the galaxy's one state in memory.
    Live,
    /// Deleted: nobody may play on, and the writer must not save it again.
    Deleted,
    /// Dropped from memory while clean and idle: look the name up again, which loads
    /// the galaxy afresh.
    Evicted,
    /// Being archived, or archived: the galaxy left memory whole (unsaved changes
    /// included) for its archive; nobody may play on, the writer must not save it, and a
    /// holder of the stale cell looks the name up again (which waits for the archive and
    /// restores it, or finds it archived).
    Archived,
    /// Taken by another daemon (PostgreSQL, several daemons): its unsaved changes are
    /// dropped, the writer must not save it again, and a look-up finds its new owner.
    Lost,
}

impl Life {
    /// The cell will never be saved again: deleted, lost, or archived whole.
    pub(super) fn is_gone(self) -> bool {
        matches!(self, Life::Deleted | Life::Lost | Life::Archived)
    }
}

/// What a cell's lock protects.
#[derive(Debug)]
pub(super) struct CellState {
    pub(super) galaxy: Galaxy,
    pub(super) life: Life,
    /// The last read or order, for eviction of idle galaxies.
    pub(super) last_access: Instant,
    /// Indexes of the systems in the batch being written (taken from the change set but
    /// not yet committed), so the unsaved count counts each system once.
    pub(super) in_flight: Vec<u32>,
    /// Past this instant the daemon's lease on the galaxy may have run out (see
    /// `store::lease_deadline`): it is not served until a renewal moves
    /// this on. `None` when no other daemon shares the database.
    pub(super) lease_until: Option<Instant>,
    /// Unsaved systems dropped when the galaxy was lost to another daemon (see `Life::Lost`).
    pub(super) dropped: usize,
}

impl CellState {
    /// Systems with changes not yet committed, in memory and in the batch being written
    /// (a system changed again while its batch is written counts once).
    pub(super) fn unsaved(&self) -> usize {
        let changes = self.galaxy.changes();
        let only_in_flight = self
            .in_flight
            .iter()
            .filter(|index| changes.get(**index).is_none())
            .count();
        changes.len() + only_in_flight
    }
}

/// A galaxy's tick as the writer sees it when deciding whether to save it alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Deleted or evicted: nothing to save.
    Gone,
    /// It has unsaved changes: its tick goes with their rows.
    Dirty,
    /// Nothing unsaved; this is its tick.
    Clean(u64),
}

impl GalaxyCell {
    /// A live cell, last accessed `now`, served until `lease_until` (if it has a lease).
    pub(super) fn new(
        galaxy: Galaxy,
        now: Instant,
        lease_until: Option<Instant>,
    ) -> Arc<GalaxyCell> {
        Arc::new(GalaxyCell {
            name: galaxy.name().to_owned(),
            state: Mutex::new(CellState {
                galaxy,
                life: Life::Live,
                last_access: now,
                in_flight: Vec::new(),
                lease_until,
                dropped: 0,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock()
    }

    /// After a commit that held this galaxy's cut: its systems are saved.
    pub(crate) fn saved(&self) {
        self.lock().in_flight.clear();
    }

    /// After a failed commit: the cut's changes go back to the galaxy (unless it was
    /// deleted since), merged under any made meanwhile.
    pub(crate) fn give_back(&self, changes: Changes) {
        let mut state = self.lock();
        state.in_flight.clear();
        if !state.life.is_gone() {
            state.galaxy.restore_changes(changes);
        }
    }

    /// The writer renewed the daemon's lease on this galaxy: it is served until `until`.
    pub(crate) fn renew_lease(&self, until: Instant) {
        let mut state = self.lock();
        state.lease_until = Some(state.lease_until.map_or(until, |at| at.max(until)));
    }

    /// The galaxy's tick when it has nothing unsaved, or why not.
    pub(crate) fn settled_tick(&self) -> Settled {
        let state = self.lock();
        if state.life != Life::Live {
            Settled::Gone
        } else if !state.galaxy.changes().is_empty() {
            Settled::Dirty
        } else {
            Settled::Clean(state.galaxy.tick())
        }
    }

    /// Lost to another daemon with unsaved changes, which were dropped: a durable order
    /// on it is answered as lost, never as saved.
    pub(crate) fn lost_unsaved(&self) -> bool {
        let state = self.lock();
        state.life == Life::Lost && state.dropped > 0
    }

    /// Deleted, lost to another daemon or archived: a late dirty marker of it is dropped.
    pub(crate) fn is_gone(&self) -> bool {
        self.lock().life.is_gone()
    }

    /// Unsaved systems, in memory and in the batch being written (none once deleted or
    /// lost: they will never be saved from here).
    pub(crate) fn unsaved(&self) -> usize {
        let state = self.lock();
        match state.life {
            Life::Deleted | Life::Lost | Life::Archived => 0,
            Life::Live | Life::Evicted => state.unsaved(),
        }
    }

    /// A look at the galaxy whatever its life, touching nothing (for tests).
    #[cfg(test)]
    pub(crate) fn peek<T>(&self, look: impl FnOnce(&Galaxy) -> T) -> T {
        look(&self.lock().galaxy)
    }

    /// True once the writer evicted this cell (for tests).
    #[cfg(test)]
    pub(crate) fn is_evicted(&self) -> bool {
        self.lock().life == Life::Evicted
    }
}

/// A live galaxy, locked: what game code may use. Created only by
/// [`super::Galaxies::with_live`], which also records the access.
pub struct Live<'a> {
    cell: &'a Arc<GalaxyCell>,
    state: MutexGuard<'a, CellState>,
}

impl<'a> Live<'a> {
    pub(super) fn new(cell: &'a Arc<GalaxyCell>, state: MutexGuard<'a, CellState>) -> Live<'a> {
        Live { cell, state }
    }

    /// Releases the lock and returns the cell, to tell the writer the galaxy is dirty
    /// (after unlocking: the writer may want this lock for its cut). A reference: most
    /// orders leave a galaxy already dirty, and need no count of their own on the cell.
    pub fn unlock(self) -> &'a Arc<GalaxyCell> {
        let Live { cell, state } = self;
        drop(state);
        cell
    }
}

impl Deref for Live<'_> {
    type Target = Galaxy;
    fn deref(&self) -> &Galaxy {
        &self.state.galaxy
    }
}

impl DerefMut for Live<'_> {
    fn deref_mut(&mut self) -> &mut Galaxy {
        &mut self.state.galaxy
    }
}
