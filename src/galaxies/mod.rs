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
//! - **loading**: one flight per name ([`flights`]); the leader takes the galaxy for this
//!   daemon where daemons share the database ([`Backing::take`]) and reads the stored
//!   galaxy through the [`Backing`], both holding no lock, and publishes it
//!   under the catalog lock unless a deletion superseded the flight meanwhile. A galaxy
//!   another live daemon owns lands as [`Landed::Elsewhere`] for every waiter.
//! - **owned elsewhere** (PostgreSQL, several daemons): never in this daemon's memory;
//!   every access, and a deletion, is answered with its owner ([`LifeError::Elsewhere`]).
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
//! 1. **catalog** (here): creations start and end, deletions, a load's publishing.
//!    Short: its only SQL is a look-up in the `galaxies` table (through a reader
//!    connection) or, for a deletion of a galaxy evicted in the instant before, one take
//!    of its ownership; never a load's take or read, a creation's writing, or an order.
//! 2. **a cell's lock** ([`cell`]): orders and reads on one galaxy, the writer's cut.
//!    Never held during SQL.
//! 3. **the registry's change lock** ([`registry`]): publishing a changed map.
//!
//! Leaves, taken under any of the above and taking nothing themselves: the deleting set
//! (here), the flights map and a flight's outcome ([`flights`]), the engine's reader pool
//! (`persistence::loads`), and the metrics' last error (`persistence::metrics`).
//!
//! Held alone, never under another lock: the backup lock (`crate::app`, for a whole
//! backup) and the writer handle's shutdown lock (`persistence::writer`, while the writer
//! thread makes its final flush, which takes the locks above). The writer thread holds no
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

use crate::clock::Clock;
use crate::model::Galaxy;
use crate::persistence::store::{Epoch, Owner, StoreError};

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
    /// Another live daemon owns it (PostgreSQL, several daemons): ask that one.
    #[error("galaxy '{name}' is served by another daemon, at {}", .owner.url)]
    Elsewhere { name: String, owner: Owner },
    /// This daemon's lease on it may have run out and is not renewed yet.
    #[error("galaxy '{0}' is not served for a moment: this daemon's lease on it is being renewed; try again shortly")]
    LeaseLapsed(String),
}

/// What taking a stored galaxy for this daemon found ([`Backing::take`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// No other daemon can own it (SQLite, or no database): it is ours if it is stored.
    Unfenced,
    /// Ours under `epoch` (the writer's batches are fenced by it), served until
    /// `lease_until` unless a renewal moves that on.
    Ours { epoch: Epoch, lease_until: Instant },
    /// Another live daemon owns it.
    Elsewhere(Owner),
    /// Not stored, or its creation or deletion is unfinished.
    Missing,
}

/// Where galaxies that are not in memory are stored: the persistence engine, or nothing.
pub(crate) trait Backing {
    /// What a read hands the writer along with the galaxy (the row ids of its systems).
    type Ids;
    /// False when nothing is ever stored (persistence off): no load, no deleting state.
    fn persists(&self) -> bool;
    /// Takes stored galaxy `name` for this daemon, before it is read or deleted. A take
    /// of a galaxy this daemon owns already keeps its epoch, so it never fences this
    /// daemon's own writer (a creation not yet published, a copy in memory). Without
    /// other daemons: [`Taken::Unfenced`].
    fn take(&self, _name: &str) -> Result<Taken, StoreError> {
        Ok(Taken::Unfenced)
    }
    /// Reads a stored galaxy and the row ids of its systems.
    fn read(&self, name: &str) -> Result<Option<(Galaxy, Self::Ids)>, StoreError>;
    /// A read galaxy goes into memory: the writer gets its row ids and the epoch it was
    /// taken under (before it can change).
    fn published(&self, name: &str, ids: Self::Ids, epoch: Option<Epoch>);
    fn is_stored(&self, name: &str) -> Result<bool, StoreError>;
    fn stored_names(&self) -> Result<Vec<String>, StoreError>;
    /// Every stored galaxy with the advertised URL of the live daemon that owns it, if
    /// any. Without other daemons: nobody's.
    fn stored_owners(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        Ok(self
            .stored_names()?
            .into_iter()
            .map(|name| (name, None))
            .collect())
    }
    /// This daemon's advertised URL where daemons share the database (the owner of every
    /// galaxy in its memory); `None` without other daemons.
    fn own_url(&self) -> Option<&str> {
        None
    }
}

/// One galaxy of [`Galaxies::listing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    /// In this daemon's memory.
    pub(crate) loaded: bool,
    /// The advertised URL of the daemon that owns it (this one's for a galaxy in memory),
    /// where daemons share the database.
    pub(crate) owner: Option<String>,
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
    /// Times accesses, which the writer's idle eviction compares with its own clock.
    clock: Clock,
}

impl Galaxies {
    /// No galaxy in memory; at most `max_galaxies` may exist (`GWAR_MAX_GALAXIES`);
    /// accesses timed by `clock` (the writer's).
    pub fn new(max_galaxies: usize, clock: Clock) -> Galaxies {
        Galaxies {
            registry: Registry::default(),
            catalog: Mutex::new(HashSet::new()),
            deleting: Mutex::new(HashSet::new()),
            flights: Flights::default(),
            max_galaxies,
            clock,
        }
    }

    /// True while `name` is deleted and its deletion not yet committed.
    pub(crate) fn is_deleting(&self, name: &str) -> bool {
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
                Life::Evicted | Life::Lost => continue,
                Life::Live => {
                    let now = self.clock.now();
                    if state.lease_until.is_some_and(|until| now >= until) {
                        return Err(LifeError::LeaseLapsed(name.to_owned()).into());
                    }
                    state.last_access = now;
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
                Landed::Elsewhere(owner) => {
                    return Err(LifeError::Elsewhere {
                        name: name.to_owned(),
                        owner,
                    })
                }
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
        // Taken holding no lock (a take is a round trip to the database, which may be
        // slow or gone): a take of a galaxy this daemon owns already keeps its epoch, so
        // it cannot fence this daemon's own creation of the name or a copy in memory,
        // and publishing below re-checks both under the catalog lock.
        let taken_at = self.clock.now();
        let (epoch, lease_until) = match backing.take(name)? {
            Taken::Unfenced => (None, None),
            Taken::Ours { epoch, lease_until } => (Some(epoch), Some(lease_until)),
            Taken::Elsewhere(owner) => return Ok(leading.land(Landed::Elsewhere(owner))),
            Taken::Missing => return Ok(leading.land(Landed::Missing)),
        };
        let Some((galaxy, ids)) = backing.read(name)? else {
            return Ok(leading.land(Landed::Missing));
        };
        // A read long beside the lease (a huge galaxy, a slow link): the deadline may be
        // near, and the lease in the database too. Taken again for a fresh one (the same
        // epoch: it is ours), or read again if another daemon took it meanwhile.
        let lease_until = match (epoch, lease_until) {
            (Some(epoch), Some(until))
                if self.clock.now() >= taken_at + until.saturating_duration_since(taken_at) / 2 =>
            {
                match backing.take(name)? {
                    Taken::Ours {
                        epoch: again,
                        lease_until,
                    } if again == epoch => Some(lease_until),
                    _ => return Ok(leading.land(Landed::Again)),
                }
            }
            _ => lease_until,
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
                backing.published(name, ids, epoch);
                let cell = GalaxyCell::new(galaxy, self.clock.now(), lease_until);
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
        // committed are left out, as the listing leaves them out, and so are creations whose
        // last chunk is committed (they count once, as being created).
        let stored = if backing.persists() {
            let names = backing.stored_names()?;
            let deleting = self.deleting.lock();
            names
                .iter()
                .filter(|name| !deleting.contains(*name) && !creating.contains(*name))
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
    /// database, with the epoch it was taken under when it was not in memory (one in
    /// memory is this daemon's already, and the writer knows its epoch). Until the writer
    /// says the deletion is committed, the name is deleting. A galaxy another live daemon
    /// owns is refused ([`LifeError::Elsewhere`]), and nothing changes.
    pub(crate) fn delete(
        &self,
        backing: &impl Backing,
        name: &str,
        commit_later: impl FnOnce(Option<Epoch>),
    ) -> Result<(), LifeError> {
        let unknown = || LifeError::Unknown(name.to_owned());
        // A galaxy not in memory is taken before the catalog lock, holding no lock (a take
        // is a round trip to a database that may be slow or gone). A take of a galaxy this
        // daemon owns keeps its epoch, so one that turns out to be in memory by the time
        // the lock is held (published meanwhile) has changed nothing.
        let look_in_memory = || self.registry.get(name).is_some() || self.is_deleting(name);
        let taken = if backing.persists() && !look_in_memory() {
            Some(backing.take(name)?)
        } else {
            None
        };
        let creating = self.catalog.lock();
        if creating.contains(name) {
            // Saved perhaps, but not yet reported: until its creator publishes it, it is
            // not there to delete (deleting it now would leave its creator publishing a
            // galaxy whose rows are being removed).
            return Err(unknown());
        }
        // Marked deleted under the cell's lock, so the writer cannot evict it meanwhile:
        // a galaxy it evicted is no longer renewed here, so it is taken like any galaxy
        // not in memory. Past its lease's deadline it is refused as an order is: another
        // daemon may own it by now.
        let now = self.clock.now();
        let mut lapsed = false;
        let live = self.registry.get(name).filter(|cell| {
            let mut state = cell.lock();
            if state.life != Life::Live {
                return false;
            }
            if state.lease_until.is_some_and(|until| now >= until) {
                lapsed = true;
                return false;
            }
            state.life = Life::Deleted;
            true
        });
        if lapsed {
            return Err(LifeError::LeaseLapsed(name.to_owned()));
        }
        if let Some(cell) = &live {
            self.registry.remove_cell(cell);
        }
        let epoch = match live {
            Some(_) => None,
            None if !backing.persists() || self.is_deleting(name) => return Err(unknown()),
            // (Taken under the lock only when it was in memory a moment ago: evicted since.)
            None => match taken.map_or_else(|| backing.take(name), Ok)? {
                Taken::Unfenced if backing.is_stored(name)? => None,
                Taken::Unfenced | Taken::Missing => return Err(unknown()),
                Taken::Ours { epoch, .. } => Some(epoch),
                Taken::Elsewhere(owner) => {
                    return Err(LifeError::Elsewhere {
                        name: name.to_owned(),
                        owner,
                    })
                }
            },
        };
        if backing.persists() {
            self.deleting.lock().insert(name.to_owned());
            self.flights.supersede(name);
            commit_later(epoch);
        }
        Ok(())
    }

    /// Stored and in-memory galaxies by name, with whether each is in memory and which
    /// daemon owns it (where daemons share the database).
    pub(crate) fn listing(
        &self,
        backing: &impl Backing,
    ) -> Result<BTreeMap<String, Listed>, LifeError> {
        let mut listing = BTreeMap::new();
        if backing.persists() {
            let stored = backing.stored_owners()?;
            // A creation's last chunk committed but not yet reported is not there yet.
            let creating = self.catalog.lock();
            let deleting = self.deleting.lock();
            for (name, owner) in stored {
                if !deleting.contains(&name) && !creating.contains(&name) {
                    let loaded = false;
                    listing.insert(name, Listed { loaded, owner });
                }
            }
        }
        let ours = backing.own_url().map(str::to_owned);
        for cell in self.registry.all() {
            let (loaded, owner) = (true, ours.clone());
            listing.insert(cell.name().to_owned(), Listed { loaded, owner });
        }
        Ok(listing)
    }

    /// True when galaxy `name` is live in memory.
    #[cfg(test)]
    pub(crate) fn is_loaded(&self, name: &str) -> bool {
        self.registry.get(name).is_some()
    }

    /// Galaxies in memory.
    pub fn len(&self) -> usize {
        self.registry.len()
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
    /// The created (and saved) galaxy becomes live, served until `lease_until` unless a
    /// renewal moves that on (`None`: no other daemon shares the database).
    pub(crate) fn publish(self, galaxy: Galaxy, lease_until: Option<Instant>) {
        let mut creating = self.galaxies.catalog.lock();
        let now = self.galaxies.clock.now();
        self.galaxies
            .registry
            .insert(GalaxyCell::new(galaxy, now, lease_until));
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

    /// Another daemon took galaxy `name`: its cell (if live) leaves memory with its
    /// unsaved changes, which are dropped; a holder of the cell looks the name up again
    /// and finds the new owner. Returns the unsaved systems dropped (`None`: not in
    /// memory). Call after giving back any cut of it, so the count includes the batch
    /// that was refused.
    pub(crate) fn lose(&self, name: &str) -> Option<usize> {
        let cell = self.0.registry.get(name)?;
        let mut state = cell.lock();
        if state.life != Life::Live {
            return None;
        }
        let unsaved = state.unsaved();
        // Marked and unlisted under the cell's lock, so no order can slip in between.
        state.life = Life::Lost;
        state.in_flight.clear();
        self.0.registry.remove_cell(&cell);
        Some(unsaved)
    }

    /// Galaxies with unsaved systems (those in a batch in flight included), and how many,
    /// sorted by name: what a shutdown reports.
    pub(crate) fn unsaved(&self) -> Vec<(String, usize)> {
        let mut unsaved: Vec<(String, usize)> = self
            .all()
            .into_iter()
            .filter_map(|cell| {
                let count = cell.unsaved();
                (count > 0).then(|| (cell.name().to_owned(), count))
            })
            .collect();
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crossbeam_channel::{bounded, Receiver, Sender};

    use super::*;
    use crate::model::GalaxyConfig;

    /// Stored galaxies in a map; a read may be held at a gate to interleave a deletion.
    /// With `takes` set, the galaxies are shared with other daemons, as on PostgreSQL.
    #[derive(Default)]
    struct Stored {
        galaxies: Mutex<HashMap<String, Galaxy>>,
        /// When set, a read says it started and waits for the go.
        gate: Mutex<Option<(Sender<()>, Receiver<()>)>>,
        /// Each galaxy published, and the epoch it was published with, in order.
        published: Mutex<Vec<String>>,
        epochs: Mutex<Vec<Option<Epoch>>>,
        /// `Some`: what a take of each galaxy finds (a stored galaxy not listed is ours,
        /// under the next epoch, with this lease deadline); every take is recorded.
        takes: Mutex<Option<(HashMap<String, Taken>, Instant)>>,
        taken: Mutex<Vec<String>>,
        reads: Mutex<usize>,
    }

    impl Stored {
        fn with(names: &[&str]) -> Stored {
            let stored = Stored::default();
            for name in names {
                stored
                    .galaxies
                    .lock()
                    .insert(name.to_string(), galaxy(name));
            }
            stored
        }
    }

    impl Backing for Stored {
        type Ids = ();
        fn persists(&self) -> bool {
            true
        }
        fn take(&self, name: &str) -> Result<Taken, StoreError> {
            let takes = self.takes.lock();
            let Some((found, lease_until)) = takes.as_ref() else {
                return Ok(Taken::Unfenced);
            };
            self.taken.lock().push(name.to_owned());
            let gate = self.gate.lock().clone();
            if let Some((started, go)) = gate {
                started.send(()).unwrap();
                go.recv().unwrap();
            }
            Ok(match found.get(name) {
                Some(taken) => taken.clone(),
                // Every take of a stored galaxy gets epoch 3 here.
                None if self.galaxies.lock().contains_key(name) => Taken::Ours {
                    epoch: 3,
                    lease_until: *lease_until,
                },
                None => Taken::Missing,
            })
        }
        fn read(&self, name: &str) -> Result<Option<(Galaxy, ())>, StoreError> {
            *self.reads.lock() += 1;
            let gate = self.gate.lock().clone();
            if let Some((started, go)) = gate {
                started.send(()).unwrap();
                go.recv().unwrap();
            }
            Ok(self.galaxies.lock().get(name).cloned().map(|g| (g, ())))
        }
        fn published(&self, name: &str, _: (), epoch: Option<Epoch>) {
            self.published.lock().push(name.to_owned());
            self.epochs.lock().push(epoch);
        }
        fn is_stored(&self, name: &str) -> Result<bool, StoreError> {
            Ok(self.galaxies.lock().contains_key(name))
        }
        fn stored_names(&self) -> Result<Vec<String>, StoreError> {
            Ok(self.galaxies.lock().keys().cloned().collect())
        }
    }

    fn galaxy(name: &str) -> Galaxy {
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        let mut galaxy = Galaxy::create(name, config, 1, 0).unwrap();
        galaxy.take_changes();
        galaxy
    }

    fn tick_of(galaxies: &Galaxies, stored: &Stored, name: &str) -> Result<u64, LifeError> {
        galaxies.with_live(stored, name, |live| Ok(live.tick()))
    }

    #[test]
    fn a_miss_loads_once_and_publishes_the_ids() {
        let (galaxies, stored) = (Galaxies::new(10, Clock::system()), Stored::with(&["a"]));
        assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
        assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
        assert_eq!(*stored.published.lock(), ["a"], "read and published once");
        assert!(matches!(
            tick_of(&galaxies, &stored, "b"),
            Err(LifeError::Unknown(_))
        ));
        assert_eq!(galaxies.len(), 1);
    }

    #[test]
    fn a_deletion_during_a_load_keeps_the_read_copy_out_of_memory() {
        let (galaxies, stored) = (
            Arc::new(Galaxies::new(10, Clock::system())),
            Stored::with(&["a"]),
        );
        let (started_tx, started) = bounded(1);
        let (go, go_rx) = bounded(1);
        *stored.gate.lock() = Some((started_tx, go_rx));
        std::thread::scope(|scope| {
            let loading = scope.spawn(|| tick_of(&galaxies, &stored, "a"));
            started.recv().unwrap();
            let mut told_writer = false;
            galaxies
                .delete(&stored, "a", |_| told_writer = true)
                .unwrap();
            assert!(told_writer);
            *stored.gate.lock() = None;
            go.send(()).unwrap();
            // The superseded load looks again and finds the name deleting.
            assert!(matches!(
                loading.join().unwrap(),
                Err(LifeError::Unknown(_))
            ));
        });
        assert!(galaxies.len() == 0 && stored.published.lock().is_empty());
        assert!(!galaxies.listing(&stored).unwrap().contains_key("a"));
        // Until the writer commits the deletion, the stale stored copy stays hidden.
        assert!(matches!(
            tick_of(&galaxies, &stored, "a"),
            Err(LifeError::Unknown(_))
        ));
        stored.galaxies.lock().remove("a");
        galaxies
            .writer_side()
            .deletions_committed(&["a".to_owned()]);
        assert!(galaxies.deleting.lock().is_empty());
    }

    #[test]
    fn a_reserved_name_is_invisible_until_published_and_free_again_if_dropped() {
        let (galaxies, stored) = (Galaxies::new(2, Clock::system()), Stored::default());
        let reserved = galaxies.reserve(&stored, "a").unwrap();
        assert!(matches!(
            galaxies.reserve(&stored, "a"),
            Err(LifeError::Exists(_))
        ));
        // Saved by its last chunk, but not yet reported: nobody else sees it.
        stored.galaxies.lock().insert("a".into(), galaxy("a"));
        assert!(matches!(
            tick_of(&galaxies, &stored, "a"),
            Err(LifeError::Unknown(_))
        ));
        assert!(galaxies.listing(&stored).unwrap().is_empty());
        assert!(matches!(
            galaxies.delete(&stored, "a", |_| {}),
            Err(LifeError::Unknown(_))
        ));
        let other = galaxies.reserve(&stored, "b").unwrap();
        assert!(matches!(
            galaxies.reserve(&stored, "c"),
            Err(LifeError::TooMany { limit: 2 })
        ));
        drop(other);
        reserved.publish(galaxy("a"), None);
        assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
        assert!(galaxies.catalog.lock().is_empty());
    }

    #[test]
    fn only_a_clean_idle_saved_galaxy_is_evicted_and_a_stale_holder_loads_afresh() {
        let (galaxies, stored) = (
            Arc::new(Galaxies::new(10, Clock::system())),
            Stored::with(&["a"]),
        );
        let writer = galaxies.writer_side();
        tick_of(&galaxies, &stored, "a").unwrap();
        let cell = writer.all().pop().unwrap();
        let idle = Duration::from_secs(60);
        let later = || Instant::now() + idle;
        assert!(
            !writer.evict_if_idle(&cell, Instant::now(), idle, Some(0)),
            "not idle"
        );
        assert!(
            !writer.evict_if_idle(&cell, later(), idle, None),
            "tick not saved"
        );
        galaxies
            .with_live(&stored, "a", |mut live| {
                live.mark_all_changed();
                Ok::<_, LifeError>(())
            })
            .unwrap();
        assert!(
            !writer.evict_if_idle(&cell, later(), idle, Some(0)),
            "dirty"
        );
        assert_eq!(cell.settled_tick(), Settled::Dirty);
        let cut = cell.cut().unwrap();
        cell.saved();
        drop(cut);
        assert!(writer.evict_if_idle(&cell, later(), idle, Some(0)));
        assert!(galaxies.len() == 0 && cell.settled_tick() == Settled::Gone);
        // The holder of the evicted cell is sent to load the galaxy again.
        assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
        assert_eq!(stored.published.lock().len(), 2);
    }

    #[test]
    fn a_failed_cut_goes_back_unless_the_galaxy_was_deleted() {
        let (galaxies, stored) = (
            Galaxies::new(10, Clock::system()),
            Stored::with(&["a", "b"]),
        );
        for name in ["a", "b"] {
            galaxies
                .with_live(&stored, name, |mut live| {
                    live.mark_all_changed();
                    Ok::<_, LifeError>(())
                })
                .unwrap();
        }
        let cells: HashMap<String, Arc<GalaxyCell>> = galaxies
            .registry
            .all()
            .into_iter()
            .map(|c| (c.name().to_owned(), c))
            .collect();
        let (a, b) = (cells["a"].clone(), cells["b"].clone());
        let (cut_a, cut_b) = (a.cut().unwrap(), b.cut().unwrap());
        assert_eq!(
            galaxies.unsaved_systems(),
            400,
            "in flight counts as unsaved"
        );
        galaxies.delete(&stored, "b", |_| {}).unwrap();
        a.give_back(cut_a.changes);
        b.give_back(cut_b.changes);
        assert_eq!(a.unsaved(), 200);
        assert_eq!((b.unsaved(), b.is_gone()), (0, true));
        assert!(b.cut().is_none());
    }

    #[test]
    fn a_lapsed_lease_is_refused_until_renewed_and_a_lost_galaxy_leaves_memory() {
        let clock = Clock::manual();
        let (galaxies, stored) = (
            Arc::new(Galaxies::new(10, clock.clone())),
            Stored::default(),
        );
        let writer = galaxies.writer_side();
        let second = Duration::from_secs(1);
        let reserved = galaxies.reserve(&stored, "a").unwrap();
        reserved.publish(galaxy("a"), Some(clock.now() + second));
        assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
        clock.advance(second);
        assert!(matches!(
            tick_of(&galaxies, &stored, "a"),
            Err(LifeError::LeaseLapsed(_))
        ));
        let cell = writer.all().pop().unwrap();
        cell.renew_lease(clock.now() + second);
        cell.renew_lease(clock.now());
        assert_eq!(
            tick_of(&galaxies, &stored, "a").unwrap(),
            0,
            "renewed; an older deadline never moves it back"
        );
        galaxies
            .with_live(&stored, "a", |mut live| {
                live.mark_all_changed();
                Ok::<_, LifeError>(())
            })
            .unwrap();
        let cut = cell.cut().unwrap();
        cell.give_back(cut.changes);
        assert_eq!(writer.lose("a"), Some(200), "its unsaved systems, dropped");
        assert!(cell.is_gone() && cell.unsaved() == 0 && cell.cut().is_none());
        assert_eq!(galaxies.len(), 0);
        assert_eq!(writer.lose("a"), None, "once");
        // A holder of the lost cell looks the name up again (here: stored nowhere).
        assert!(matches!(
            tick_of(&galaxies, &stored, "a"),
            Err(LifeError::Unknown(_))
        ));
    }

    /// Polls `condition` until it holds (a generous deadline: the machine may be busy).
    fn wait_for(condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(Instant::now() < deadline, "condition never held");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn elsewhere() -> Owner {
        Owner {
            id: "other:1".into(),
            url: "http://10.0.0.5:3050".into(),
        }
    }

    /// `stored` shares its galaxies with another daemon, which owns `theirs`; takes of
    /// the others succeed with a lease until `lease_until`.
    fn shared(stored: &Stored, theirs: &[&str], lease_until: Instant) {
        let found = theirs
            .iter()
            .map(|name| (name.to_string(), Taken::Elsewhere(elsewhere())))
            .collect();
        *stored.takes.lock() = Some((found, lease_until));
    }

    #[test]
    fn a_galaxy_owned_elsewhere_is_never_read_and_every_waiter_learns_its_owner() {
        let (galaxies, stored) = (
            Galaxies::new(10, Clock::system()),
            Stored::with(&["theirs", "ours"]),
        );
        let later = Instant::now() + Duration::from_secs(60);
        shared(&stored, &["theirs"], later);
        let elsewhere_err = |result: Result<u64, LifeError>| match result {
            Err(LifeError::Elsewhere { name, owner }) => name == "theirs" && owner == elsewhere(),
            _ => false,
        };
        // The leader's take is held at the gate until a second thread follows its
        // flight: both learn the owner from the one take.
        let (started_tx, started) = bounded(1);
        let (go, go_rx) = bounded(1);
        *stored.gate.lock() = Some((started_tx, go_rx));
        std::thread::scope(|scope| {
            let leader = scope.spawn(|| tick_of(&galaxies, &stored, "theirs"));
            started.recv().unwrap();
            *stored.gate.lock() = None;
            let follower = scope.spawn(|| tick_of(&galaxies, &stored, "theirs"));
            wait_for(|| galaxies.flights.followers("theirs") == Some(1));
            go.send(()).unwrap();
            assert!(elsewhere_err(leader.join().unwrap()));
            assert!(elsewhere_err(follower.join().unwrap()));
        });
        assert_eq!(*stored.taken.lock(), ["theirs"], "one take for both");
        assert_eq!(*stored.reads.lock(), 0, "nothing was read");
        assert!(!galaxies.is_loaded("theirs"));
        // Asked again, it is taken again: its owner may have let it go meanwhile.
        assert!(elsewhere_err(tick_of(&galaxies, &stored, "theirs")));
        // A galaxy taken is published with its epoch and served under its lease.
        assert_eq!(tick_of(&galaxies, &stored, "ours").unwrap(), 0);
        assert_eq!(*stored.published.lock(), ["ours"]);
        assert_eq!(*stored.epochs.lock(), [Some(3)]);
        let cell = galaxies.registry.all().pop().unwrap();
        assert_eq!(cell.lock().lease_until, Some(later));
        // In memory it is ours: no take of it again.
        assert_eq!(tick_of(&galaxies, &stored, "ours").unwrap(), 0);
        assert_eq!(*stored.taken.lock(), ["theirs", "theirs", "ours"]);
        // A missing galaxy is unknown, whoever might own it.
        assert!(matches!(
            tick_of(&galaxies, &stored, "nowhere"),
            Err(LifeError::Unknown(_))
        ));
    }

    #[test]
    fn a_galaxy_owned_elsewhere_is_not_deleted_and_nothing_changes() {
        let (galaxies, stored) = (
            Galaxies::new(10, Clock::system()),
            Stored::with(&["theirs", "ours", "stored"]),
        );
        shared(
            &stored,
            &["theirs"],
            Instant::now() + Duration::from_secs(60),
        );
        tick_of(&galaxies, &stored, "ours").unwrap();
        let mut told = Vec::new();
        let result = galaxies.delete(&stored, "theirs", |epoch| told.push(epoch));
        assert!(
            matches!(result, Err(LifeError::Elsewhere { .. })),
            "{result:?}"
        );
        assert!(told.is_empty() && !galaxies.is_deleting("theirs"));
        assert!(galaxies.listing(&stored).unwrap().contains_key("theirs"));
        // In memory: ours, deleted without a take (the writer knows its epoch).
        galaxies
            .delete(&stored, "ours", |epoch| told.push(epoch))
            .unwrap();
        assert_eq!(*stored.taken.lock(), ["ours", "theirs"]);
        // Stored, not in memory: taken first, and the epoch goes to the writer.
        galaxies
            .delete(&stored, "stored", |epoch| told.push(epoch))
            .unwrap();
        assert_eq!(*stored.taken.lock(), ["ours", "theirs", "stored"]);
        assert_eq!(told, [None, Some(3)]);
        assert!(galaxies.is_deleting("stored") && galaxies.is_deleting("ours"));
        assert!(matches!(
            galaxies.delete(&stored, "nowhere", |epoch| told.push(epoch)),
            Err(LifeError::Unknown(_))
        ));
        assert_eq!(told.len(), 2);
    }

    #[test]
    fn a_read_long_beside_the_lease_takes_the_galaxy_again_or_reads_it_again() {
        for taken_meanwhile in [false, true] {
            let clock = Clock::manual();
            let (galaxies, stored) = (Galaxies::new(10, clock.clone()), Stored::with(&["big"]));
            shared(&stored, &[], clock.now() + Duration::from_secs(12));
            let (started_tx, started) = bounded(1);
            let (go, go_rx) = bounded(1);
            *stored.gate.lock() = Some((started_tx, go_rx));
            std::thread::scope(|scope| {
                let leader = scope.spawn(|| tick_of(&galaxies, &stored, "big"));
                started.recv().unwrap(); // the take
                go.send(()).unwrap();
                started.recv().unwrap(); // the read, which outlasts half the lease
                clock.advance(Duration::from_secs(7));
                let theirs: &[&str] = if taken_meanwhile { &["big"] } else { &[] };
                shared(&stored, theirs, clock.now() + Duration::from_secs(12));
                *stored.gate.lock() = None;
                go.send(()).unwrap();
                let result = leader.join().unwrap();
                if taken_meanwhile {
                    assert!(
                        matches!(result, Err(LifeError::Elsewhere { .. })),
                        "{result:?}"
                    );
                } else {
                    assert_eq!(result.unwrap(), 0);
                }
            });
            if taken_meanwhile {
                assert!(!galaxies.is_loaded("big"), "not published: no longer ours");
                assert!(stored.published.lock().is_empty());
            } else {
                assert_eq!(*stored.taken.lock(), ["big", "big"], "taken again");
                let cell = galaxies.registry.all().pop().unwrap();
                assert_eq!(
                    cell.lock().lease_until,
                    Some(clock.now() + Duration::from_secs(12)),
                    "served under the fresh lease"
                );
            }
        }
    }

    #[test]
    fn past_its_lease_a_galaxy_is_refused_until_a_renewal() {
        let clock = Clock::manual();
        let (galaxies, stored) = (Galaxies::new(10, clock.clone()), Stored::with(&["a"]));
        shared(&stored, &[], clock.now() + Duration::from_secs(12));
        assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
        clock.advance(Duration::from_secs(12));
        assert!(matches!(
            tick_of(&galaxies, &stored, "a"),
            Err(LifeError::LeaseLapsed(name)) if name == "a"
        ));
        assert_eq!(galaxies.len(), 1, "still in memory, only not served");
        assert!(matches!(
            galaxies.delete(&stored, "a", |_| panic!("not deleted")),
            Err(LifeError::LeaseLapsed(_))
        ));
        let cell = galaxies.registry.all().pop().unwrap();
        cell.renew_lease(clock.now() + Duration::from_secs(12));
        assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
    }

    #[test]
    fn the_listing_names_each_owner() {
        struct Owners(Stored);
        impl Backing for Owners {
            type Ids = ();
            fn persists(&self) -> bool {
                true
            }
            fn read(&self, name: &str) -> Result<Option<(Galaxy, ())>, StoreError> {
                self.0.read(name)
            }
            fn published(&self, _: &str, _: (), _: Option<Epoch>) {}
            fn is_stored(&self, name: &str) -> Result<bool, StoreError> {
                self.0.is_stored(name)
            }
            fn stored_names(&self) -> Result<Vec<String>, StoreError> {
                self.0.stored_names()
            }
            fn stored_owners(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
                Ok(vec![
                    ("free".into(), None),
                    ("mine".into(), Some("http://me:1".into())),
                    ("theirs".into(), Some("http://them:2".into())),
                ])
            }
            fn own_url(&self) -> Option<&str> {
                Some("http://me:1")
            }
        }
        let galaxies = Galaxies::new(10, Clock::system());
        let owners = Owners(Stored::with(&["free", "mine", "theirs"]));
        galaxies
            .with_live(&owners, "mine", |_| Ok::<_, LifeError>(()))
            .unwrap();
        let listing = galaxies.listing(&owners).unwrap();
        let listed = |loaded, owner: Option<&str>| Listed {
            loaded,
            owner: owner.map(str::to_owned),
        };
        assert_eq!(listing["free"], listed(false, None));
        assert_eq!(listing["mine"], listed(true, Some("http://me:1")));
        assert_eq!(listing["theirs"], listed(false, Some("http://them:2")));
        // Without other daemons, nobody owns anything.
        let alone = Stored::with(&["free"]);
        assert_eq!(
            galaxies.listing(&alone).unwrap()["free"],
            listed(false, None)
        );
    }
}
