//! Every galaxy's life, decided in one place: which galaxies exist in memory, which are
//! being created, loaded or deleted, and when one may leave memory.
//!
//! # A galaxy's life
//! ```text
//!   (stored)  --miss--> loading --published--> live --deleted--> deleting --committed--> gone
//!   (nothing) --create: reserved (creating) --saved--> live          ^
//!                                       live --idle, clean, saved--> evicted --miss--> loading
//! ```
//! - **creating**: the name is reserved ([`Galaxies::reserve`]) while the writer saves the
//!   new galaxy; nobody sees it (loads find nothing, listings skip it, a second creation
//!   is refused) until [`Reservation::publish`] makes it live.
//! - **loading**: one flight per name ([`flights`]); the leader reads the stored galaxy
//!   through the [`Backing`] holding no lock, and publishes it under the catalog lock
//!   unless a deletion superseded the flight meanwhile.
//! - **live**: in the registry; game code reaches it only through [`Galaxies::with_live`].
//! - **deleting**: gone from memory at once, but the stored copy is stale until the
//!   writer commits the deletion ([`WriterSide::deletions_committed`]): loads, look-ups
//!   and listings treat the name as absent meanwhile.
//! - **evicted**: the writer drops a clean, idle galaxy whose tick is saved
//!   ([`WriterSide::evict_if_idle`]); a holder of the stale cell looks the name up again.
//!
//! The writer's handle is narrow: a dirty galaxy's [`GalaxyCell`] (take a cut, give back a
//! failed one, mark one saved) and the [`WriterSide`] (list, evict, settle deletions).
//!
//! # Locks
//! Every lock of the game and the engine, outermost first; a lock may be taken while
//! holding only locks above it:
//! 1. **catalog** (here): creations start and end, deletions, a load's publishing. Short:
//!    its only SQL is a look-up in the `galaxies` table (through a reader connection);
//!    never a load, a creation's writing, or an order.
//! 2. **a cell's lock** ([`cell`]): orders and reads on one galaxy, the writer's cut.
//!    Never held during SQL.
//! 3. **the registry's change lock** ([`registry`]): publishing a changed map.
//!
//! Leaves, taken under any of the above and taking nothing themselves: the deleting set
//! (here), the flights map and a flight's outcome ([`flights`]), the engine's reader pool
//! (`persistence::loads`), the metrics' last error (`persistence::metrics`), and the
//! backup lock (`crate::app`, held alone for a whole backup). The writer thread holds no
//! lock during its SQL; looking a name up in the registry takes no lock at all.

pub(crate) mod cell;
mod cut;
mod flights;
mod registry;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use cell::Life;
pub(crate) use cell::Settled;
pub use cell::{GalaxyCell, Live};
use flights::{Boarding, Flights, Landed};
use registry::Registry;

use crate::model::Galaxy;
use crate::persistence::store::{RowIds, StoreError};

/// Galaxy names: 1–64 characters of `A-Z a-z 0-9 _ -`.
pub fn valid_galaxy_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a galaxy could not be found, created or deleted.
#[derive(Debug, thiserror::Error)]
pub enum LifeError {
    #[error("galaxy '{0}' not found")]
    Unknown(String),
    #[error("galaxy '{0}' already exists")]
    Exists(String),
    #[error("there are already {limit} galaxies, the most this server holds")]
    TooMany { limit: usize },
    #[error("database error: {0}")]
    Store(#[from] StoreError),
}

/// Where galaxies that are not in memory are stored: the persistence engine, or nothing.
pub(crate) trait Backing {
    /// False when nothing is ever stored (persistence off): no load, no deleting state.
    fn persists(&self) -> bool;
    /// Reads a stored galaxy and the row ids of its systems.
    fn read(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError>;
    /// A read galaxy goes into memory: the writer gets its row ids (before it can change).
    fn published(&self, name: &str, ids: RowIds);
    fn is_stored(&self, name: &str) -> Result<bool, StoreError>;
    fn stored_names(&self) -> Result<Vec<String>, StoreError>;
}

/// The galaxies of one game: see the module documentation.
pub struct Galaxies {
    registry: Registry,
    /// The catalog lock; it guards the names being created.
    catalog: Mutex<HashSet<String>>,
    /// Deleted, the deletion not yet committed: the stored copy is stale. A leaf lock.
    deleting: Mutex<HashSet<String>>,
    flights: Flights,
    max_galaxies: usize,
}

impl Galaxies {
    /// No galaxy in memory; at most `max_galaxies` may exist (`GWAR_MAX_GALAXIES`).
    pub fn new(max_galaxies: usize) -> Galaxies {
        Galaxies {
            registry: Registry::default(),
            catalog: Mutex::new(HashSet::new()),
            deleting: Mutex::new(HashSet::new()),
            flights: Flights::default(),
            max_galaxies,
        }
    }

    fn is_deleting(&self, name: &str) -> bool {
        self.deleting.lock().contains(name)
    }

    /// Stored, and not being deleted.
    fn is_stored(&self, backing: &impl Backing, name: &str) -> Result<bool, StoreError> {
        Ok(backing.persists() && !self.is_deleting(name) && backing.is_stored(name)?)
    }

    /// Runs `f` on the live galaxy `name`, loading it on a miss, and records the access.
    /// A deleted galaxy is unknown; an evicted cell is a stale copy, so the name is looked
    /// up again (which loads the galaxy afresh).
    pub(crate) fn with_live<T, E: From<LifeError>>(
        &self,
        backing: &impl Backing,
        name: &str,
        f: impl FnOnce(Live<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        loop {
            let cell = self.live_or_load(backing, name)?;
            let mut state = cell.lock();
            match state.life {
                Life::Deleted => return Err(LifeError::Unknown(name.to_owned()).into()),
                Life::Evicted => continue,
                Life::Live => {
                    state.last_access = Instant::now();
                    return f(Live::new(&cell, state));
                }
            }
        }
    }

    /// The cell of a galaxy, loading it on a cache miss. Two threads missing on the same
    /// galaxy load it once; loads of different galaxies run side by side, and none holds
    /// the catalog lock while it reads.
    fn live_or_load(
        &self,
        backing: &impl Backing,
        name: &str,
    ) -> Result<Arc<GalaxyCell>, LifeError> {
        let unknown = || LifeError::Unknown(name.to_owned());
        loop {
            if let Some(cell) = self.registry.get(name) {
                return Ok(cell);
            }
            if !backing.persists() || !valid_galaxy_name(name) {
                return Err(unknown());
            }
            match self.load_once(backing, name)? {
                Landed::Cell(cell) => return Ok(cell),
                Landed::Missing => return Err(unknown()),
                // Deleted while it was read (the next look-up finds it deleting, or the
                // galaxy created since under the same name), or the leader's read failed.
                Landed::Again => continue,
            }
        }
    }

    /// One flight of a load: the first thread (the leader) reads, the others wait for what
    /// it lands. A failed read is the leader's error; the others see [`Landed::Again`].
    fn load_once(&self, backing: &impl Backing, name: &str) -> Result<Landed, StoreError> {
        let leading = match self.flights.board(name) {
            Boarding::Follow(flight) => return Ok(Flights::follow(&flight)),
            Boarding::Lead(leading) => leading,
        };
        // A previous flight publishes before it lands, so a cell it published is seen.
        if let Some(cell) = self.registry.get(name) {
            return Ok(leading.land(Landed::Cell(cell)));
        }
        // Boarded first, checked second: a deletion after this check supersedes the flight.
        if self.is_deleting(name) {
            return Ok(leading.land(Landed::Missing));
        }
        let Some((galaxy, ids)) = backing.read(name)? else {
            return Ok(leading.land(Landed::Missing));
        };
        // Published under the catalog lock, which a deletion holds while it marks the
        // name deleting and supersedes this flight: the deletion is wholly before this
        // (superseded) or wholly after (it finds the cell).
        let landed = {
            let creating = self.catalog.lock();
            if leading.flight().superseded() || self.is_deleting(name) {
                Landed::Again
            } else if let Some(cell) = self.registry.get(name) {
                // A creation put one there: that one is the galaxy's live state.
                Landed::Cell(cell)
            } else if creating.contains(name) {
                // Its last chunk has committed, but the creation is not reported yet:
                // until its creator publishes it, it is not there for anyone else.
                Landed::Missing
            } else {
                // Before the galaxy can change: a deletion then comes after this.
                backing.published(name, ids);
                let cell = GalaxyCell::new(galaxy);
                self.registry.insert(cell.clone());
                Landed::Cell(cell)
            }
        };
        Ok(leading.land(landed))
    }

    /// Reserves `name` for a creation: refused when the galaxy exists, is being created,
    /// or the galaxy limit is reached. The reservation ends when the guard drops, or
    /// becomes the live galaxy with [`Reservation::publish`].
    pub(crate) fn reserve(
        &self,
        backing: &impl Backing,
        name: &str,
    ) -> Result<Reservation<'_>, LifeError> {
        let mut creating = self.catalog.lock();
        if self.registry.get(name).is_some()
            || creating.contains(name)
            || self.is_stored(backing, name)?
        {
            return Err(LifeError::Exists(name.to_owned()));
        }
        // With a database file every galaxy in memory is stored; without one (persistence
        // off, an in-memory database) the registry is all there is. Deletions not yet
        // committed are left out, as the listing leaves them out.
        let stored = if backing.persists() {
            let names = backing.stored_names()?;
            let deleting = self.deleting.lock();
            names
                .iter()
                .filter(|name| !deleting.contains(*name))
                .count()
        } else {
            0
        };
        if stored.max(self.registry.len()) + creating.len() >= self.max_galaxies {
            return Err(LifeError::TooMany {
                limit: self.max_galaxies,
            });
        }
        creating.insert(name.to_owned());
        Ok(Reservation {
            galaxies: self,
            name: name.to_owned(),
        })
    }

    /// Deletes `name` from memory now; `commit_later` (run under the catalog lock, so no
    /// load can publish the old copy in between) tells the writer to delete it from the
    /// database. Until the writer says the deletion is committed, the name is deleting.
    pub(crate) fn delete(
        &self,
        backing: &impl Backing,
        name: &str,
        commit_later: impl FnOnce(),
    ) -> Result<(), LifeError> {
        let creating = self.catalog.lock();
        if creating.contains(name) {
            // Saved perhaps, but not yet reported: until its creator publishes it, it is
            // not there to delete (deleting it now would leave its creator publishing a
            // galaxy whose rows are being removed).
            return Err(LifeError::Unknown(name.to_owned()));
        }
        let stored = self.is_stored(backing, name)?;
        let cell = self.registry.remove(name);
        if cell.is_none() && !stored {
            return Err(LifeError::Unknown(name.to_owned()));
        }
        if let Some(cell) = cell {
            cell.lock().life = Life::Deleted;
        }
        if backing.persists() {
            self.deleting.lock().insert(name.to_owned());
            self.flights.supersede(name);
            commit_later();
        }
        Ok(())
    }

    /// Stored and in-memory galaxies by name, with whether each is in memory.
    pub(crate) fn listing(
        &self,
        backing: &impl Backing,
    ) -> Result<BTreeMap<String, bool>, LifeError> {
        let mut listing = BTreeMap::new();
        if backing.persists() {
            let stored = backing.stored_names()?;
            // A creation's last chunk committed but not yet reported is not there yet.
            let creating = self.catalog.lock();
            let deleting = self.deleting.lock();
            for name in stored {
                if !deleting.contains(&name) && !creating.contains(&name) {
                    listing.insert(name, false);
                }
            }
        }
        for cell in self.registry.all() {
            listing.insert(cell.name().to_owned(), true);
        }
        Ok(listing)
    }

    /// Galaxies in memory.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registry.is_empty()
    }

    /// Systems of the galaxies in memory.
    pub fn systems(&self) -> usize {
        let cells = self.registry.all();
        cells
            .iter()
            .map(|cell| cell.lock().galaxy.systems().len())
            .sum()
    }

    /// Systems with changes not yet committed, in memory and in the batch being written.
    pub fn unsaved_systems(&self) -> u64 {
        let cells = self.registry.all();
        cells.iter().map(|cell| cell.lock().unsaved() as u64).sum()
    }

    /// The writer's handle.
    pub(crate) fn writer_side(self: &Arc<Galaxies>) -> WriterSide {
        WriterSide(self.clone())
    }
}

/// A name reserved for a creation in progress; released on drop.
pub(crate) struct Reservation<'a> {
    galaxies: &'a Galaxies,
    name: String,
}

impl Reservation<'_> {
    /// The created (and saved) galaxy becomes live.
    pub(crate) fn publish(self, galaxy: Galaxy) {
        let mut creating = self.galaxies.catalog.lock();
        self.galaxies.registry.insert(GalaxyCell::new(galaxy));
        creating.remove(&self.name);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.galaxies.catalog.lock().remove(&self.name);
    }
}

/// What the writer may do with the galaxies as a whole.
#[derive(Clone)]
pub(crate) struct WriterSide(Arc<Galaxies>);

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

    /// These deletions are committed: the names are free of their stale stored copies.
    pub(crate) fn deletions_committed<'n>(&self, names: impl IntoIterator<Item = &'n String>) {
        let mut deleting = self.0.deleting.lock();
        for name in names {
            deleting.remove(name);
        }
    }
}
