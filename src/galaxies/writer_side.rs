//! The writer's narrow handle on the galaxies as a whole ([`WriterSide`]): list them,
//! evict a clean idle one, drop one lost to another daemon, and settle deletions. Only the
//! writer thread holds it; each call takes and releases the locks it needs inside.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cell::{GalaxyCell, Life};
use super::Galaxies;

/// What the writer may do with the galaxies as a whole.
#[derive(Clone)]
pub(crate) struct WriterSide(pub(super) Arc<Galaxies>);

impl WriterSide {
    /// Every live galaxy.
    pub(crate) fn all(&self) -> Vec<Arc<GalaxyCell>> {
        self.0.registry.all()
    }

    /// Evicts `cell` when it is live, clean, untouched since `now - idle`, and its tick is
    /// `saved_tick`; true when it did. Only the writer can decide this: it alone knows
    /// that a galaxy has no batch in flight (none is, between batches).
    pub(crate) fn evict_if_idle(
        &self,
        cell: &Arc<GalaxyCell>,
        now: Instant,
        idle: Duration,
        saved_tick: Option<u64>,
    ) -> bool {
        let mut state = cell.lock();
        let evict = state.life == Life::Live
            && state.galaxy.changes().is_empty()
            && now.saturating_duration_since(state.last_access) >= idle
            && saved_tick == Some(state.galaxy.tick());
        if evict {
            // Marked and unlisted under the cell's lock, so no order can slip in between.
            state.life = Life::Evicted;
            self.0.registry.remove_cell(cell);
        }
        evict
    }

    /// Another daemon took galaxy `name`: its cell (if live) leaves memory with its
    /// unsaved changes, which are dropped; a holder of the cell looks the name up again
    /// and finds the new owner. Returns the unsaved systems dropped (`None`: not in
    /// memory). Call after giving back any cut of it, so the count includes the batch
    /// that was refused.
    pub(crate) fn lose(&self, name: &str) -> Option<usize> {
        let Some(cell) = self.0.registry.get(name) else {
            // Out of memory for an archive, which is refused with it: its changes go too.
            return self.0.archiving.lock().get(name).copied();
        };
        let mut state = cell.lock();
        if state.life != Life::Live {
            return None;
        }
        let unsaved = state.unsaved();
        // Marked and unlisted under the cell's lock, so no order can slip in between.
        state.life = Life::Lost;
        state.dropped = unsaved;
        state.in_flight.clear();
        self.0.registry.remove_cell(&cell);
        Some(unsaved)
    }

    /// Galaxies with unsaved systems (those in a batch in flight included), and how many,
    /// sorted by name: what a shutdown reports.
    /// Galaxies out of memory for an archive not yet stored count with their unsaved
    /// systems then: a stop before their archive lands has not saved them.
    pub(crate) fn unsaved(&self) -> Vec<(String, usize)> {
        let mut unsaved: Vec<(String, usize)> = self
            .all()
            .into_iter()
            .filter_map(|cell| {
                let count = cell.unsaved();
                (count > 0).then(|| (cell.name().to_owned(), count))
            })
            .collect();
        for (name, &count) in self.0.archiving.lock().iter() {
            if count > 0 && !unsaved.iter().any(|(known, _)| known == name) {
                unsaved.push((name.clone(), count));
            }
        }
        unsaved.sort();
        unsaved
    }

    /// Deleted galaxies whose deletion is not committed yet, sorted.
    pub(crate) fn deleting(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.deleting.lock().iter().cloned().collect();
        names.sort();
        names
    }

    /// These deletions are committed: the names are free of their stale stored copies.
    pub(crate) fn deletions_committed<'n>(&self, names: impl IntoIterator<Item = &'n String>) {
        let mut deleting = self.0.deleting.lock();
        for name in names {
            deleting.remove(name);
        }
    }
}
