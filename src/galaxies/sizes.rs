//! Counting the systems of every galaxy for a creation's budget (`GWAR_MAX_TOTAL_SYSTEMS`,
//! README, *Configuration*): the database's `galaxy_sizes` rows, the live galaxies it does
//! not hold (no database, or one only the writer sees), and the creations in progress.
//!
//! Invariant: each galaxy counts once, by name, whichever of the three holds it; counted
//! under the catalog lock, so a creation admitted is in the count of the next.

use std::collections::HashMap;

use super::{Backing, Galaxies, Usage};
use crate::store::StoreError;

impl Galaxies {
    /// What the galaxies hold now; `creating` is the catalog lock's map (so the caller
    /// holds that lock). One query of `galaxy_sizes`; a live galaxy's lock is taken only
    /// when the database does not know it.
    pub(super) fn usage(
        &self,
        backing: &impl Backing,
        creating: &HashMap<String, u64>,
    ) -> Result<Usage, StoreError> {
        Ok(self.tally(&stored_sizes(backing)?, creating))
    }

    /// What the galaxies hold, given the database's sizes (`stored`) and the catalog
    /// lock's map of creations (`creating`).
    fn tally(&self, stored: &HashMap<String, u64>, creating: &HashMap<String, u64>) -> Usage {
        let mut systems = stored.values().fold(0u64, |sum, n| sum.saturating_add(*n));
        for cell in self.registry.all() {
            if !stored.contains_key(cell.name()) {
                let count = cell.lock().galaxy.systems().len();
                systems = systems.saturating_add(u64::try_from(count).unwrap_or(u64::MAX));
            }
        }
        let mut in_progress = 0u64;
        for (name, count) in creating {
            in_progress = in_progress.saturating_add(*count);
            // Counted at least at its own size: the database may still hold another
            // galaxy's rows under the name (a deletion being purged, a dead daemon's
            // creation taken over), or this creation's own row once its first chunk
            // committed.
            if self.registry.get(name).is_none() {
                let known = stored.get(name).copied().unwrap_or(0);
                systems = systems.saturating_add(count.saturating_sub(known));
            }
        }
        Usage {
            systems,
            creating: in_progress,
        }
    }

    /// [`Galaxies::usage`] for a reading of the budget outside a creation (`/metrics`):
    /// the database asked first, holding no lock (a query may wait on a slow server, and
    /// loads publish under the catalog lock), then the tally under it. A creation admitted
    /// meanwhile is in the catalog's map or, finished, in memory: it still counts once.
    pub(crate) fn count_usage(&self, backing: &impl Backing) -> Result<Usage, StoreError> {
        let stored = stored_sizes(backing)?;
        let creating = self.catalog.lock();
        Ok(self.tally(&stored, &creating))
    }
}

/// The database's size of each galaxy it holds (none without a database).
fn stored_sizes(backing: &impl Backing) -> Result<HashMap<String, u64>, StoreError> {
    Ok(if backing.persists() {
        backing.stored_sizes()?.into_iter().collect()
    } else {
        HashMap::new()
    })
}
