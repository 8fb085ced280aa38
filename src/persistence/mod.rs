//! The write-behind persistence engine (CONTRACT §2–§3).
//!
//! - [`store`]: the schema, migrations and SQL; one connection per [`store::Store`].
//! - [`writer`]: the writer thread, the only writer of the database; its decisions are
//!   timed by a [`crate::clock::Clock`] (the system's here).
//! - [`checkpoint`]: the thread that copies the WAL back into the database file.
//! - [`cell`]: galaxies in memory, one lock each, shared by game threads and the writer.
//! - `loads`: the pool of read-only connections and single-flight loads on a cache miss.
//! - `cut`: the consistent cut the writer takes of a galaxy, in one hold of its lock.
//! - `jobs`: creations and deletions of whole galaxies, in chunks between batches.
//! - [`metrics`]: counters and health as atomics.
//! - [`lock`]: one daemon per database file.
//! - [`backup`]: online backups through SQLite's backup API.
//! - [`reading`]: opening a database file only to read it (check, backups), leaving no
//!   `-wal`/`-shm` behind.
//! - [`clean`]: the clean-shutdown marker, which spares a start-up after a clean stop
//!   the whole-file check.
//!
//! [`Engine`] ties them together: it holds the database lock, the writer, and the pool of
//! read-only connections that load galaxies on a cache miss ([`loads::READERS`] of them,
//! one flight per galaxy, so a big load holds up neither small loads nor anything else).
//! Everything here logs under the target `galactic_war::persistence`.
//!
//! Lock order, outermost first (a lock may be taken while holding only locks above it):
//! the application's catalog lock (`crate::app`; short sections, whose only SQL is a
//! look-up in the `galaxies` table) → a galaxy cell's lock → the registry's change lock;
//! the tombstones and the map of loads in flight are taken alone (under the catalog lock
//! at most). The reader pool's lock and a load's outcome lock are leaves. A load holds no
//! lock while it reads, and the writer holds none during its SQL.

pub mod backup;
pub mod cell;
pub mod checkpoint;
pub mod clean;
mod cut;
mod jobs;
mod loads;
pub mod lock;
pub mod metrics;
pub mod reading;
pub mod store;
pub(crate) mod time;
pub mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::model::Galaxy;
use crate::settings::{DatabaseUrl, PersistenceSettings};
use cell::{GalaxyCell, Registry};
use checkpoint::Checkpointer;
use clean::CleanShutdown;
pub(crate) use loads::Landed;
use loads::{Boarding, Flight, Flights, Purpose, ReaderPool};
use lock::DatabaseLock;
use metrics::Metrics;
use store::{BusyDeadline, RowIds, StartupCheck, Store, StoreError};
use writer::{ShutdownReport, WriterDatabase, WriterHandle};

/// A running persistence engine on one database.
pub struct Engine {
    // Field order is drop order: the writer's final flush runs before the lock is released.
    writer: WriterHandle,
    /// Loads on a cache miss; `None` for an in-memory database, which only the writer's
    /// connection can see (and whose galaxies never leave memory anyway).
    readers: Option<ReaderPool>,
    /// Loads in progress, one per galaxy.
    flights: Flights,
    tombstones: Arc<Mutex<HashSet<String>>>,
    metrics: Arc<Metrics>,
    /// The database file; `None` for an in-memory database.
    path: Option<PathBuf>,
    /// Writes the clean-shutdown marker; `None` for an in-memory database.
    clean: Option<CleanShutdown>,
    _lock: Option<DatabaseLock>,
}

impl Engine {
    /// Locks the database against other daemons, opens and migrates it, and starts the
    /// writer thread. Fails without starting anything when any step fails.
    pub fn open(
        url: &DatabaseUrl,
        settings: &PersistenceSettings,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, StoreError> {
        let lock = match url {
            DatabaseUrl::Memory => None,
            DatabaseUrl::File(path) => {
                store::create_parent_dir(path)?;
                Some(DatabaseLock::acquire(path)?)
            }
        };
        // Under the lock and before anything writes: the marker is read and removed here.
        let check = match url {
            DatabaseUrl::File(path) => clean::take(path),
            DatabaseUrl::Memory => StartupCheck::Whole {
                why: "in memory".to_owned(),
            },
        };
        let mut store = Store::open_writer_checked(url, settings.synchronous, check)?;
        let unfinished = store.unfinished_jobs()?;
        let clean = match url {
            DatabaseUrl::File(path) => {
                Some(
                    CleanShutdown::opened(path).map_err(|source| StoreError::Lock {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            DatabaseUrl::Memory => None,
        };
        let readers = match url {
            DatabaseUrl::Memory => None,
            DatabaseUrl::File(path) => Some(ReaderPool::open(path)?),
        };
        // Set at shutdown: the busy waits of the writer and the checkpointer end there.
        let busy_deadline = BusyDeadline::new();
        let checkpointer = match url {
            DatabaseUrl::Memory => None,
            DatabaseUrl::File(path) => Some(Checkpointer::spawn(
                path,
                settings.synchronous,
                settings.checkpoint_pages,
                busy_deadline.clone(),
            )?),
        };
        let tombstones = Arc::new(Mutex::new(HashSet::new()));
        metrics.set_lagging_after(settings.lagging_after());
        let database = WriterDatabase {
            store,
            checkpointer,
            busy_deadline,
            unfinished,
        };
        let writer = WriterHandle::spawn(
            database,
            settings.clone(),
            registry,
            metrics.clone(),
            tombstones.clone(),
            Clock::system(),
        )
        .map_err(|source| StoreError::Thread {
            name: "writer",
            source,
        })?;
        log::info!(target: "galactic_war::persistence",
            "persistence on {} (coalescing {}, auto-save every {:?}, synchronous {})",
            match url {
                DatabaseUrl::File(path) => path.display().to_string(),
                DatabaseUrl::Memory => ":memory:".to_owned(),
            },
            if settings.write_coalescing { format!("{:?}", settings.coalescing_delay) } else { "off".to_owned() },
            settings.auto_save_interval,
            settings.synchronous.pragma_value().to_ascii_lowercase());
        Ok(Engine {
            writer,
            readers,
            flights: Flights::default(),
            tombstones,
            metrics,
            path: match url {
                DatabaseUrl::File(path) => Some(path.clone()),
                DatabaseUrl::Memory => None,
            },
            clean,
            _lock: lock,
        })
    }

    /// The database file, if the database is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    /// The final flush, bounded by the shutdown timeout; once the writer thread has ended
    /// with everything saved, the clean-shutdown marker (see [`clean`]). Safe to call more
    /// than once; later calls report nothing new and write nothing.
    pub fn shutdown(&self) -> ShutdownReport {
        let report = self.writer.shutdown();
        if let Some(clean) = &self.clean {
            clean.after_shutdown(&report);
        }
        report
    }

    /// True while a deletion of `name` is not yet committed: the stored copy is stale.
    pub(crate) fn is_deleted(&self, name: &str) -> bool {
        self.tombstones.lock().contains(name)
    }

    /// Marks `name` deleted until the writer commits the deletion. Call it under the
    /// catalog lock: a load of `name` in flight is superseded, and its leader checks that
    /// under the same lock before it publishes, so the load cannot bring the galaxy back.
    pub(crate) fn tombstone(&self, name: &str) {
        self.tombstones.lock().insert(name.to_owned());
        self.flights.supersede(name);
    }

    /// Loads a stored galaxy once however many threads ask at the same time. The first
    /// (the leader) reads it through a pooled read-only connection, holding no lock, and
    /// hands it to `publish`, which puts it in the registry under the catalog lock
    /// (refusing when [`LoadTicket::superseded`]); the others wait for the leader's
    /// [`Landed`]. A failed read is the leader's error; the others see [`Landed::Again`].
    /// `loaded` finds the galaxy's cell if it is in memory already: a leader asks it after
    /// boarding, since a previous leader may have published and landed between the
    /// caller's own look-up and this flight.
    pub(crate) fn load_once(
        &self,
        name: &str,
        loaded: impl FnOnce() -> Option<Arc<GalaxyCell>>,
        publish: impl FnOnce(Galaxy, LoadTicket<'_>) -> Landed,
    ) -> Result<Landed, StoreError> {
        let Some(readers) = &self.readers else {
            return Ok(Landed::Missing);
        };
        let leading = match self.flights.board(name) {
            Boarding::Follow(flight) => return Ok(Flights::follow(&flight)),
            Boarding::Lead(leading) => leading,
        };
        // A previous flight publishes before it lands, so a cell published by it is seen.
        if let Some(cell) = loaded() {
            return Ok(leading.land(Landed::Cell(cell)));
        }
        // Boarded first, checked second: a deletion after this check supersedes the flight.
        if self.is_deleted(name) {
            return Ok(leading.land(Landed::Missing));
        }
        let started = std::time::Instant::now();
        let galaxy = {
            let _in_progress = InProgress::start(&self.metrics);
            readers.with(Purpose::Load, |store| store.load_galaxy_with_ids(name))?
        };
        let Some((galaxy, ids)) = galaxy else {
            return Ok(leading.land(Landed::Missing));
        };
        log::info!(target: "galactic_war::persistence",
            "galaxy '{name}' loaded ({} systems, {:?})", galaxy.systems().len(), started.elapsed());
        self.metrics
            .galaxies_loaded_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ticket = LoadTicket {
            engine: self,
            name,
            flight: leading.flight(),
            ids,
        };
        let landed = publish(galaxy, ticket);
        Ok(leading.land(landed))
    }

    pub(crate) fn stored_names(&self) -> Result<Vec<String>, StoreError> {
        match &self.readers {
            Some(readers) => readers.with(Purpose::Lookup, Store::galaxy_names),
            None => Ok(Vec::new()),
        }
    }

    pub(crate) fn is_stored(&self, name: &str) -> Result<bool, StoreError> {
        match &self.readers {
            Some(readers) if !self.is_deleted(name) => {
                readers.with(Purpose::Lookup, |store| store.galaxy_exists(name))
            }
            _ => Ok(false),
        }
    }
}

/// What a load's leader may publish: see [`Engine::load_once`].
pub(crate) struct LoadTicket<'a> {
    engine: &'a Engine,
    name: &'a str,
    flight: &'a Flight,
    ids: RowIds,
}

impl LoadTicket<'_> {
    /// True when the galaxy was deleted after the load began (or is being deleted): what
    /// was read must not go back into memory. Meaningful under the catalog lock.
    pub(crate) fn superseded(&self) -> bool {
        self.flight.superseded() || self.engine.is_deleted(self.name)
    }

    /// The galaxy goes into memory: the writer gets the row ids that were read with it.
    /// Call it under the catalog lock, after [`LoadTicket::superseded`] said no and before
    /// the galaxy can change: a deletion then sends its own message after this one, and
    /// no save of the galaxy comes before it.
    pub(crate) fn publish(self) {
        self.engine.writer.adopt_ids(self.name.to_owned(), self.ids);
    }
}

/// The loads-in-progress gauge, raised for as long as this lives (also on unwinding).
struct InProgress<'a>(&'a Metrics);

impl<'a> InProgress<'a> {
    fn start(metrics: &'a Metrics) -> InProgress<'a> {
        metrics
            .loads_in_progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InProgress(metrics)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0
            .loads_in_progress
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
