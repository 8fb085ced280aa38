//! Every galaxy's life, decided in one place: which galaxies exist in memory, which are
//! being created, loaded or deleted, and when one may leave memory.
//!
//! # A galaxy's life
//! ```text
//!   (stored)  --miss--> loading --published--> live --deleted--> deleting --committed--> gone
//!   (nothing) --create: reserved (creating) --saved--> live          ^
//!                                       live --idle, clean, saved--> evicted --miss--> loading
//!                                       live --archived (writer)--> archived --miss--> restoring --> live
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
//! - **archived** ([`archiving`]): the writer takes the galaxy out of memory whole and
//!   stores it as an archive, holding its load flight meanwhile; a miss on an archived
//!   name restores it under the name's reservation (or answers [`LifeError::Archived`]).
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
//!    Short: its only SQL is a look-up in the `galaxies` or `galaxy_sizes` table (through
//!    a reader connection) or, for a deletion of a galaxy evicted in the instant before, one take
//!    of its ownership; never a load's take or read, a creation's writing, or an order.
//! 2. **a cell's lock** ([`cell`]): orders and reads on one galaxy, the writer's cut.
//!    Never held during SQL.
//! 3. **the registry's change lock** ([`registry`]): publishing a changed map.
//!
//! Leaves, taken under any of the above and taking nothing themselves: the deleting and
//! archiving sets (here), the flights map and a flight's outcome ([`flights`]), the
//! engine's reader pool (`persistence::loads`), and the metrics' last error
//! (`persistence::metrics`).
//!
//! Held alone, never under another lock: the backup lock (`crate::app`, for a whole
//! backup) and the writer handle's shutdown lock (`persistence::writer`, while the writer
//! thread makes its final flush, which takes the locks above). The writer thread holds no
//! lock during its SQL; looking a name up in the registry takes no lock at all.

mod archiving;
pub(crate) mod cell;
mod cut;
pub(crate) use cut::Cut;
mod flights;
mod listing;
mod registry;
mod sizes;
mod writer_side;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub(crate) use archiving::Restore;
use cell::Life;
pub(crate) use cell::Settled;
pub use cell::{GalaxyCell, Live};
use flights::{Boarding, Flights, Landed};
use registry::Registry;
pub(crate) use writer_side::WriterSide;

use crate::clock::Clock;
use crate::model::Galaxy;
use crate::store::{Epoch, Owner, StoreError};

/// How long a request waits for another's load or restore of the same galaxy before it is
/// answered [`LifeError::Busy`] (503, try again): a restore of a large galaxy takes
/// seconds, and every request waiting holds an HTTP worker.
const FOLLOW_BOUND: Duration = Duration::from_secs(10);

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
    /// Archived, and restored only on an admin's word (`GWAR_ARCHIVE_RESTORE=explicit`).
    #[error(
        "galaxy '{0}' is archived; an admin restores it with POST /admin/galaxies/{0}/restore"
    )]
    Archived(String),
    /// Its archive does not decode: kept as it is, for an operator to look at.
    #[error("galaxy '{name}' is archived, and its archive is damaged ({reason}); it is kept as it is: see `galactic-war check`")]
    DamagedArchive { name: String, reason: String },
    /// Its restore could not be saved now (the database is failing, say): still archived.
    #[error("galaxy '{name}' is archived and could not be restored now: {reason}")]
    RestoreFailed { name: String, reason: String },
    /// Being loaded, restored or archived right now: ask again in a moment.
    #[error("galaxy '{0}' is being loaded, archived or restored; try again shortly")]
    Busy(String),
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
    /// A take under `epoch` whose galaxy did not go into memory (see [`TakenUnused`]).
    fn taken_unused(&self, _name: &str, _epoch: Epoch) {}
    fn is_stored(&self, name: &str) -> Result<bool, StoreError>;
    fn stored_names(&self) -> Result<Vec<String>, StoreError>;
    /// Every stored galaxy row (unfinished creations and deletions included) with its
    /// number of systems. Without a database: none.
    fn stored_sizes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }
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
    /// True when an archive of `name` is stored.
    fn is_archived(&self, _name: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Names of the stored archives, sorted.
    fn archived_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Whether a request for an archived galaxy restores it (else only an admin does).
    fn restores_on_demand(&self) -> bool {
        true
    }
    /// Restores archived galaxy `name`: read, decoded, and created again through the
    /// writer (the commit that makes it exist deletes its archive); the galaxy back, saved,
    /// with its lease's deadline. `None` when it has no archive (any more).
    fn restore(&self, name: &str) -> Result<Option<(Galaxy, Option<Instant>)>, LifeError> {
        let _ = name;
        Ok(None)
    }
}

/// What the galaxies hold, as a creation's budget counts it ([`Galaxies::reserve_counted`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// The systems of every galaxy: stored (evicted ones included), live, being created
    /// (in full, from the moment the name is reserved) or being deleted (until its rows
    /// are purged).
    pub(crate) systems: u64,
    /// Of those, the systems of the creations in progress in this daemon.
    pub(crate) creating: u64,
}

/// One galaxy of [`Galaxies::listing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    /// In this daemon's memory.
    pub(crate) loaded: bool,
    /// Stored as an archive, not live.
    pub(crate) archived: bool,
    /// The advertised URL of the daemon that owns it (this one's for a galaxy in memory),
    /// where daemons share the database.
    pub(crate) owner: Option<String>,
}

/// The galaxies of one game: see the module documentation.
pub struct Galaxies {
    registry: Registry,
    /// The catalog lock; it guards the names being created, with their systems.
    catalog: Mutex<HashMap<String, u64>>,
    /// Deleted, the deletion not yet committed: the stored copy is stale. A leaf lock.
    deleting: Mutex<HashSet<String>>,
    /// Galaxies taken out of memory to be archived, not yet stored or put back, with
    /// their unsaved systems then. Changed under the catalog lock; a leaf lock.
    archiving: Mutex<HashMap<String, usize>>,
    /// Restores on request running (see [`archiving::MAX_RESTORES_ON_REQUEST`]).
    restores_on_request: std::sync::atomic::AtomicUsize,
    flights: Flights,
    max_galaxies: usize,
    /// `GWAR_HISTORY`: orders on the galaxies record their history.
    history: bool,
    /// Times accesses, which the writer's idle eviction compares with its own clock.
    clock: Clock,
}

impl Galaxies {
    /// No galaxy in memory; at most `max_galaxies` may exist (`GWAR_MAX_GALAXIES`);
    /// accesses timed by `clock` (the writer's).
    pub fn new(max_galaxies: usize, clock: Clock) -> Galaxies {
        Galaxies {
            registry: Registry::default(),
            catalog: Mutex::new(HashMap::new()),
            deleting: Mutex::new(HashSet::new()),
            archiving: Mutex::new(HashMap::new()),
            restores_on_request: std::sync::atomic::AtomicUsize::new(0),
            flights: Flights::default(),
            max_galaxies,
            history: true,
            clock,
        }
    }

    /// With `on` false (`GWAR_HISTORY=false`), orders on the galaxies that come into
    /// memory from now on record no history.
    pub fn keep_history(mut self, on: bool) -> Galaxies {
        self.history = on;
        self
    }

    /// A galaxy coming into memory, set to record history or not.
    fn admitted(&self, mut galaxy: Galaxy) -> Galaxy {
        galaxy.keep_history(self.history);
        galaxy
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
        self.with_live_restoring(backing, name, Restore::OnRequest, f)
    }

    /// [`Galaxies::with_live`], restoring an archived galaxy as `mode` says.
    pub(crate) fn with_live_restoring<T, E: From<LifeError>>(
        &self,
        backing: &impl Backing,
        name: &str,
        mode: Restore,
        f: impl FnOnce(Live<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        loop {
            let cell = self.live_or_load(backing, name, mode)?;
            let mut state = cell.lock();
            match state.life {
                Life::Deleted => return Err(LifeError::Unknown(name.to_owned()).into()),
                Life::Evicted | Life::Lost | Life::Archived => continue,
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
        mode: Restore,
    ) -> Result<Arc<GalaxyCell>, LifeError> {
        let unknown = || LifeError::Unknown(name.to_owned());
        loop {
            if let Some(cell) = self.registry.get(name) {
                return Ok(cell);
            }
            if !backing.persists() || !valid_galaxy_name(name) {
                return Err(unknown());
            }
            match self.load_once(backing, name, mode)? {
                Landed::Cell(cell) => return Ok(cell),
                Landed::Missing => return Err(unknown()),
                Landed::Archived => return Err(LifeError::Archived(name.to_owned())),
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
    /// A galaxy not stored may be archived: the leader restores it as `mode` says.
    fn load_once(
        &self,
        backing: &impl Backing,
        name: &str,
        mode: Restore,
    ) -> Result<Landed, LifeError> {
        let leading = match self.flights.board(name) {
            Boarding::Follow(flight) => {
                return Flights::follow(&flight, FOLLOW_BOUND)
                    .ok_or_else(|| LifeError::Busy(name.to_owned()))
            }
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
            Taken::Missing => return self.restore_leading(backing, name, mode, leading),
        };
        let mut unused = TakenUnused {
            backing,
            name,
            epoch,
        };
        let Some((galaxy, ids)) = backing.read(name)? else {
            drop(unused);
            return self.restore_leading(backing, name, mode, leading);
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
                // A creation put one there: that one is the galaxy's live state (and the
                // writer holds it under the epoch taken, which a take of ours keeps).
                unused.epoch = None;
                Landed::Cell(cell)
            } else if creating.contains_key(name) {
                // Its last chunk has committed, but the creation is not reported yet:
                // until its creator publishes it, it is not there for anyone else.
                Landed::Missing
            } else {
                // Before the galaxy can change: a deletion then comes after this.
                unused.epoch = None;
                backing.published(name, ids, epoch);
                let galaxy = self.admitted(galaxy);
                let cell = GalaxyCell::new(galaxy, self.clock.now(), lease_until);
                self.registry.insert(cell.clone());
                Landed::Cell(cell)
            }
        };
        Ok(leading.land(landed))
    }

    /// [`Galaxies::reserve_counted`] of a galaxy that counts for nothing.
    #[cfg(test)]
    pub(crate) fn reserve(
        &self,
        backing: &impl Backing,
        name: &str,
    ) -> Result<Reservation<'_>, LifeError> {
        self.reserve_counted(backing, name, 0, |_| Ok::<(), LifeError>(()))
    }

    /// Reserves `name` for a creation of `systems` systems: refused when the galaxy
    /// exists, is being created, the galaxy limit is reached, or `admit` refuses what the
    /// galaxies hold now (counted under the catalog lock, creations in progress included,
    /// so that concurrent creations are admitted one after the other). The reservation
    /// ends when the guard drops, or becomes the live galaxy with [`Reservation::publish`].
    pub(crate) fn reserve_counted<E: From<LifeError>>(
        &self,
        backing: &impl Backing,
        name: &str,
        systems: u64,
        admit: impl FnOnce(Usage) -> Result<(), E>,
    ) -> Result<Reservation<'_>, E> {
        let mut creating = self.catalog.lock();
        if self.registry.get(name).is_some()
            || creating.contains_key(name)
            || self.is_stored(backing, name).map_err(LifeError::from)?
            || backing.is_archived(name).map_err(LifeError::from)?
        {
            return Err(LifeError::Exists(name.to_owned()).into());
        }
        // With a database file every galaxy in memory is stored; without one (persistence
        // off, an in-memory database) the registry is all there is. Deletions not yet
        // committed are left out, as the listing leaves them out, and so are creations whose
        // last chunk is committed (they count once, as being created).
        let stored = if backing.persists() {
            let names = backing.stored_names().map_err(LifeError::from)?;
            let deleting = self.deleting.lock();
            let live = names
                .iter()
                .filter(|name| !deleting.contains(*name) && !creating.contains_key(*name))
                .count();
            // Archived galaxies count too: any request may bring one back.
            let archived = backing.archived_names().map_err(LifeError::from)?;
            live + archived
                .iter()
                .filter(|name| !creating.contains_key(*name))
                .count()
        } else {
            0
        };
        if stored.max(self.registry.len()) + creating.len() >= self.max_galaxies {
            return Err(LifeError::TooMany {
                limit: self.max_galaxies,
            }
            .into());
        }
        let usage = self.usage(backing, &creating).map_err(LifeError::from)?;
        admit(usage)?;
        creating.insert(name.to_owned(), systems);
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
        if creating.contains_key(name) {
            // Saved perhaps, but not yet reported: until its creator publishes it, it is
            // not there to delete (deleting it now would leave its creator publishing a
            // galaxy whose rows are being removed).
            return Err(unknown());
        }
        if self.archiving.lock().contains_key(name) {
            // Out of memory but not yet archived: whether it ends archived or back in
            // memory, a deletion now would be undone by one or the other.
            return Err(LifeError::Busy(name.to_owned()));
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

/// A galaxy a load took for this daemon and has not (yet) put in memory: if the load ends
/// otherwise (its read found nothing or failed, a deletion or a creation overtook it),
/// the backing is told on drop, so that a clean stop releases the galaxy rather than
/// leaving other daemons to wait out its lease.
struct TakenUnused<'a, B: Backing> {
    backing: &'a B,
    name: &'a str,
    /// Cleared once the galaxy is in memory.
    epoch: Option<Epoch>,
}

impl<B: Backing> Drop for TakenUnused<'_, B> {
    fn drop(&mut self) {
        if let Some(epoch) = self.epoch.take() {
            self.backing.taken_unused(self.name, epoch);
        }
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
    pub(crate) fn publish(self, galaxy: Galaxy, lease_until: Option<Instant>) -> Arc<GalaxyCell> {
        let mut creating = self.galaxies.catalog.lock();
        let now = self.galaxies.clock.now();
        let galaxy = self.galaxies.admitted(galaxy);
        let cell = GalaxyCell::new(galaxy, now, lease_until);
        self.galaxies.registry.insert(cell.clone());
        creating.remove(&self.name);
        cell
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.galaxies.catalog.lock().remove(&self.name);
    }
}

#[cfg(test)]
mod tests;
