//! A galaxy leaving memory for its archive, and coming back from it.
//!
//! - **Archiving** ([`Galaxies::take_for_archive`]): the archiver boards the galaxy's load
//!   flight and holds it until the archive is committed or refused: a request for the
//!   name meanwhile waits for that flight, then looks again — and finds the galaxy live
//!   (refused: put back) or archived (restored, or answered as archived). The cell is
//!   marked [`Life::Archived`] and emptied under its lock, so no order slips in after the
//!   galaxy was taken: its whole state, unsaved changes included, goes into the archive.
//!   A batch may be writing a cut of it at that moment: committed, it changes nothing
//!   (the archive supersedes the rows); failed, its changes are not given back to the
//!   emptied cell — so a galaxy taken with a cut in flight is marked changed in full if
//!   it is put back, and nothing is lost. While it is out, it is marked archiving (under
//!   the catalog lock): a deletion waits it out (refused, [`LifeError::Busy`]), and a
//!   stop counts its unsaved systems as unsaved.
//! - **Restoring** ([`Galaxies::restore_leading`]): the leader of a load that found no
//!   stored galaxy asks the backing for an archive; it restores it (on a request, or on an
//!   admin's word only, see [`Restore`]) under the name's reservation, as a creation, and
//!   publishes the result for every waiter of its flight: one restore per name at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::cell::{GalaxyCell, Life};
use super::flights::{Boarding, Landed, Leading};
use super::{Backing, Galaxies, LifeError, Reservation};
use crate::model::Galaxy;

/// When a load that finds an archive restores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Restore {
    /// As the backing says (`GWAR_ARCHIVE_RESTORE`), at most [`MAX_RESTORES_ON_REQUEST`]
    /// at once.
    OnRequest,
    /// Always: an admin's restore.
    Now,
    /// Never: an archive is answered as [`LifeError::Archived`] (archiving it again).
    Never,
}

/// Restores on request running at once, at most: each holds its request (and the
/// requests following its flight) for as long as its rows take to write, and runs one
/// after the other on the writer, so more would only hold more of the game's workers.
/// Past it, a request is answered [`LifeError::Busy`] (503, try again).
pub(crate) const MAX_RESTORES_ON_REQUEST: usize = 2;

/// A galaxy taken out of memory to be archived. Dropped, it lands its flight: waiters
/// look the name up again. Refused, [`Archiving::put_back`] makes it live again.
pub(crate) struct Archiving<'a> {
    galaxies: &'a Galaxies,
    _flight: Leading<'a>,
    galaxy: Galaxy,
    lease_until: Option<Instant>,
    /// A batch held a cut of it when it was taken (see the module comment).
    cut_in_flight: bool,
}

impl Archiving<'_> {
    /// The galaxy as it left memory, unsaved changes included.
    pub(crate) fn galaxy(&self) -> &Galaxy {
        &self.galaxy
    }

    /// The archive was not stored: the galaxy is live again, in a new cell (its old one is
    /// archived for good), with its unsaved changes — every row of it when a batch held
    /// its cut (see the module comment) — for the caller to send to the writer as dirty.
    pub(crate) fn put_back(mut self) -> Arc<GalaxyCell> {
        let galaxies = self.galaxies;
        let mut galaxy = self.galaxy.take_all();
        if self.cut_in_flight {
            galaxy.mark_all_changed();
        }
        let _catalog = galaxies.catalog.lock();
        let cell = GalaxyCell::new(galaxy, galaxies.clock.now(), self.lease_until);
        galaxies.registry.insert(cell.clone());
        galaxies.archiving.lock().remove(self.galaxy.name());
        cell
    }
}

impl Drop for Archiving<'_> {
    /// Stored or put back: no longer out of memory.
    fn drop(&mut self) {
        let galaxies = self.galaxies;
        let _catalog = galaxies.catalog.lock();
        galaxies.archiving.lock().remove(self.galaxy.name());
    }
}

impl Galaxies {
    /// Takes live galaxy `name` out of memory to archive it (see the module comment).
    /// Refused when it is not in memory ([`LifeError::Unknown`]), is being loaded or
    /// restored ([`LifeError::Busy`]), or its lease may have run out.
    pub(crate) fn take_for_archive(&self, name: &str) -> Result<Archiving<'_>, LifeError> {
        let galaxies = self;
        let leading = match galaxies.flights.board(name) {
            Boarding::Lead(leading) => leading,
            Boarding::Follow(_) => return Err(LifeError::Busy(name.to_owned())),
        };
        let cell = galaxies
            .registry
            .get(name)
            .ok_or_else(|| LifeError::Unknown(name.to_owned()))?;
        // The catalog lock, then the cell's: a deletion is wholly before (the cell is
        // deleted) or wholly after (it finds the name archiving).
        let _catalog = galaxies.catalog.lock();
        let mut state = cell.lock();
        if state.life != Life::Live {
            return Err(LifeError::Unknown(name.to_owned()));
        }
        if state
            .lease_until
            .is_some_and(|until| galaxies.clock.now() >= until)
        {
            return Err(LifeError::LeaseLapsed(name.to_owned()));
        }
        // Marked, emptied and unlisted under the cell's lock: no order slips in between.
        state.life = Life::Archived;
        let unsaved = state.unsaved();
        let cut_in_flight = !state.in_flight.is_empty();
        let galaxy = state.galaxy.take_all();
        let lease_until = state.lease_until;
        state.in_flight.clear();
        galaxies.registry.remove_cell(&cell);
        galaxies.archiving.lock().insert(name.to_owned(), unsaved);
        Ok(Archiving {
            galaxies,
            _flight: leading,
            galaxy,
            lease_until,
            cut_in_flight,
        })
    }

    /// True when galaxy `name` is live in memory.
    pub(crate) fn is_live(&self, name: &str) -> bool {
        self.registry.get(name).is_some()
    }

    /// True when galaxy `name` is in memory and was read or ordered within `idle`.
    pub(crate) fn accessed_within(&self, name: &str, idle: std::time::Duration) -> bool {
        let Some(cell) = self.registry.get(name) else {
            return false;
        };
        let last_access = cell.lock().last_access;
        self.clock.now().saturating_duration_since(last_access) < idle
    }

    /// The leader of a load of `name` found no stored galaxy: restores its archive if it
    /// has one and `mode` allows, under the name's reservation (a creation or a deletion
    /// of the name waits it out); else the galaxy is missing, or archived.
    pub(super) fn restore_leading(
        &self,
        backing: &impl Backing,
        name: &str,
        mode: Restore,
        leading: Leading<'_>,
    ) -> Result<Landed, LifeError> {
        if !backing.is_archived(name)? {
            return Ok(leading.land(Landed::Missing));
        }
        let on_request = mode == Restore::OnRequest;
        if mode == Restore::Never || (on_request && !backing.restores_on_demand()) {
            return Ok(leading.land(Landed::Archived));
        }
        let _slot = match on_request {
            true => Some(
                RestoreSlot::take(&self.restores_on_request)
                    .ok_or_else(|| LifeError::Busy(name.to_owned()))?,
            ),
            false => None,
        };
        let reservation = {
            let mut creating = self.catalog.lock();
            if self.registry.get(name).is_some() {
                return Ok(leading.land(Landed::Again));
            }
            if creating.contains_key(name) || self.is_deleting(name) {
                return Err(LifeError::Busy(name.to_owned()));
            }
            creating.insert(name.to_owned(), 0);
            Reservation {
                galaxies: self,
                name: name.to_owned(),
            }
        };
        let Some((galaxy, lease_until)) = backing.restore(name)? else {
            return Ok(leading.land(Landed::Missing));
        };
        let cell = reservation.publish(galaxy, lease_until);
        Ok(leading.land(Landed::Cell(cell)))
    }
}

/// One of the [`MAX_RESTORES_ON_REQUEST`] restores on request, released on drop.
struct RestoreSlot<'a>(&'a AtomicUsize);

impl<'a> RestoreSlot<'a> {
    fn take(running: &'a AtomicUsize) -> Option<RestoreSlot<'a>> {
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_RESTORES_ON_REQUEST).then_some(n + 1)
            })
            .ok()
            .map(|_| RestoreSlot(running))
    }
}

impl Drop for RestoreSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
