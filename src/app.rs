//! Application state: the in-memory galaxy cache and every game operation on it.
//!
//! [`AppState`] is a cheap-to-clone handle. Game operations find a galaxy's cell in the
//! registry, lock that one galaxy, apply the operation, unlock, and only then (if the
//! galaxy went from clean to dirty) signal the writer: no game thread ever waits on disk.
//! The catalog lock guards the short steps that change which galaxies exist: reserving a
//! name for a creation and publishing the result, a deletion, publishing a load. It is
//! taken before any galaxy lock and never during an order. A creation builds its galaxy
//! and waits for the writer to save it (in chunks, between other galaxies' batches)
//! holding no lock; its reserved name keeps it invisible meanwhile. A load on a cache
//! miss reads the database holding no lock at all (the engine's pool of read-only
//! connections, one flight per galaxy) and takes the catalog lock only to publish what
//! it read, so a load of millions of systems
//! holds up neither other loads nor creations and deletions.
//!
//! Lock order, outermost first: catalog → a galaxy cell's lock → the registry's change
//! lock; then the engine's own (see `crate::persistence`). The only SQL under the catalog
//! lock is a look-up in the `galaxies` table, never a load; a deletion must tombstone the galaxy while it holds the catalog
//! lock, which is what keeps a load in flight from bringing it back (`publish_loaded`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::model::{
    Build, ConfigError, Galaxy, GalaxyConfig, GameError, StructureDetails, StructureKind,
    SystemDetails, SystemSummary,
};
use crate::persistence::backup::{backup_into, default_dir, BackupError};
use crate::persistence::cell::{CellState, GalaxyCell, Registry};
use crate::persistence::metrics::{Metrics, MetricsSnapshot, PersistenceState};
use crate::persistence::store::StoreError;
use crate::persistence::writer::{PersistError, ShutdownReport, WriterHandle};
use crate::persistence::{Engine, Landed, LoadTicket};
use crate::settings::{GalaxyLimits, Settings};

/// Why an application operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid galaxy name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 _ -")]
    BadName(String),
    #[error("galaxy '{0}' not found")]
    UnknownGalaxy(String),
    #[error("galaxy '{0}' already exists")]
    GalaxyExists(String),
    #[error("there are already {limit} galaxies, the most this server holds (GWAR_MAX_GALAXIES)")]
    TooManyGalaxies { limit: usize },
    #[error(transparent)]
    Game(#[from] GameError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("orders are paused: the oldest unsaved change is {age:?} old, above the limit of {limit:?}; the database is not keeping up")]
    UnsavedTooOld { age: Duration, limit: Duration },
    #[error(transparent)]
    Persistence(#[from] PersistError),
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    #[error("there is no database file to back up (persistence is off or in memory)")]
    NoDatabase,
    #[error("a backup is already running; try again when it has finished")]
    BackupInProgress,
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("running from memory only: the database could not be opened at start-up (see /healthz), so nothing can be saved; creating galaxies and saving are refused until the daemon restarts on a sound database")]
    MemoryOnly,
}

/// `POST /galaxies/{name}`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedGalaxy {
    pub name: String,
    pub tick: u64,
    pub systems: usize,
}

/// `GET /galaxies/{name}`'s answer: one page of the galaxy's systems.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GalaxyDetails {
    pub name: String,
    pub tick: u64,
    /// All of the galaxy's systems, whatever the page.
    pub system_count: usize,
    /// At most `limit` systems from the `offset`-th, in `(x, y)` order.
    pub systems: Vec<SystemSummary>,
    pub offset: usize,
    pub limit: usize,
}

/// One entry of `GET /galaxies`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GalaxyListing {
    pub name: String,
    pub loaded: bool,
}

/// `GET /galaxies`'s answer: one page of the galaxies, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GalaxyPage {
    pub galaxies: Vec<GalaxyListing>,
    /// All galaxies, whatever the page.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// `GET /healthz`'s persistence part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistenceHealth {
    pub state: PersistenceState,
    pub dirty_systems: u64,
    pub last_error: Option<String>,
}

/// `GET /healthz`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `ok`, or `degraded` while saving fails or the game runs from memory only.
    pub status: &'static str,
    pub persistence: PersistenceHealth,
}

/// The game's state: galaxies in memory and the engine that persists them.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// `None`: persistence disabled, or memory-only after the database could not open.
    engine: Option<Engine>,
    /// Serialises the start and end of creations, deletions, and a load's publishing of
    /// what it read. Short: the only SQL under it is a look-up in the `galaxies` table
    /// (does a name exist, how many are there), never a load or a creation's writing.
    /// Never held while waiting for a galaxy lock that an order holds for long: orders
    /// never take it.
    catalog: Mutex<()>,
    /// Names being created: reserved (a second creation is refused, a load finds
    /// nothing) until the creation is saved and in the registry, or has failed. Taken
    /// under the catalog lock, or alone.
    creating: Mutex<HashSet<String>>,
    max_galaxies: usize,
    max_unsaved: Option<Duration>,
    /// Held for the whole of a backup: backups run one at a time.
    backup: Mutex<()>,
    /// See [`AppState::use_wall_clock`].
    wall_clock: std::sync::atomic::AtomicBool,
}

/// Galaxy names: 1–64 characters of `A-Z a-z 0-9 _ -`.
pub fn valid_galaxy_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl AppState {
    /// Opens the database of `settings` and starts persistence, or a memory-only state when
    /// persistence is disabled. Errors leave nothing running.
    pub fn open(settings: &Settings) -> Result<AppState, StoreError> {
        if !settings.persistence.enabled {
            let mut app = AppState::without_engine(PersistenceState::Disabled, None);
            app.set_max_galaxies(settings.galaxy_limits.max_galaxies);
            return Ok(app);
        }
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new(PersistenceState::Healthy));
        let engine = Engine::open(
            &settings.database,
            &settings.persistence,
            registry.clone(),
            metrics.clone(),
        )?;
        let mut app = AppState::assemble(
            registry,
            metrics,
            Some(engine),
            settings.persistence.max_unsaved,
        );
        app.set_max_galaxies(settings.galaxy_limits.max_galaxies);
        Ok(app)
    }

    /// At most `limit` galaxies may exist (`GWAR_MAX_GALAXIES`); only for a state not yet
    /// shared.
    pub fn set_max_galaxies(&mut self, limit: usize) {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.max_galaxies = limit;
        }
    }

    /// A state that keeps everything in memory: `Disabled` by configuration, or
    /// `MemoryOnly` with the reason the database could not be used.
    pub fn without_engine(state: PersistenceState, reason: Option<String>) -> AppState {
        let metrics = Metrics::new(state);
        if let Some(reason) = reason {
            metrics.set_memory_only(reason);
        }
        AppState::assemble(Arc::default(), Arc::new(metrics), None, None)
    }

    fn assemble(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        engine: Option<Engine>,
        max_unsaved: Option<Duration>,
    ) -> AppState {
        AppState {
            shared: Arc::new(Shared {
                registry,
                metrics,
                engine,
                catalog: Mutex::new(()),
                creating: Mutex::new(HashSet::new()),
                max_galaxies: GalaxyLimits::default().max_galaxies,
                max_unsaved,
                backup: Mutex::new(()),
                wall_clock: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Refuses what must be saved when nothing can be: in memory-only mode (the database
    /// could not be opened at start-up) a creation or a save would be acknowledged and
    /// then lost. Persistence disabled by configuration is a choice, not a failure: there
    /// both go on, in memory.
    fn refuse_if_memory_only(&self) -> Result<(), AppError> {
        if self.shared.metrics.state() == PersistenceState::MemoryOnly {
            return Err(AppError::MemoryOnly);
        }
        Ok(())
    }

    /// Creates a galaxy from `config` and returns once it is saved (with persistence on).
    /// `seed` picks the map; without one, a random seed is drawn.
    ///
    /// The name is reserved first; the galaxy is made in memory without any lock held,
    /// then written by the writer in chunks between other galaxies' batches. Until the
    /// last chunk commits nobody can see it: loads find nothing and a second creation of
    /// the name is refused. Only then does it enter the registry.
    pub fn create_galaxy(
        &self,
        name: &str,
        config: GalaxyConfig,
        seed: Option<u64>,
        tick: u64,
    ) -> Result<CreatedGalaxy, AppError> {
        self.refuse_if_memory_only()?;
        if !valid_galaxy_name(name) {
            return Err(AppError::BadName(name.to_owned()));
        }
        let shared = &self.shared;
        let _reserved = self.reserve(name)?;
        let mut galaxy = Galaxy::create(name, config, seed.unwrap_or_else(random_seed), tick)?;
        // Creation writes every row of the new galaxy, so nothing is left to save after it.
        galaxy.take_changes();
        let galaxy = match &shared.engine {
            Some(engine) => *engine.writer().create(Box::new(galaxy))?,
            None => {
                log::info!(
                    "galaxy '{name}' created in memory ({} systems)",
                    galaxy.systems().len()
                );
                galaxy
            }
        };
        let created = CreatedGalaxy {
            name: name.to_owned(),
            tick: galaxy.tick(),
            systems: galaxy.systems().len(),
        };
        let _catalog = shared.catalog.lock();
        shared.registry.insert(GalaxyCell::new(galaxy));
        Ok(created)
    }

    /// Reserves `name` for a creation: refused when the galaxy exists, is being created,
    /// or the galaxy limit is reached. The reservation ends when the guard drops.
    fn reserve(&self, name: &str) -> Result<Reservation<'_>, AppError> {
        let shared = &self.shared;
        let _catalog = shared.catalog.lock();
        let stored = match &shared.engine {
            Some(engine) => engine.is_stored(name)?,
            None => false,
        };
        if stored || shared.registry.get(name).is_some() || shared.creating.lock().contains(name) {
            return Err(AppError::GalaxyExists(name.to_owned()));
        }
        // With a database file every galaxy in memory is stored; without one (persistence
        // off, an in-memory database) the registry is all there is. Deletions not yet
        // committed are left out, as the listing leaves them out.
        let stored = match &shared.engine {
            Some(engine) => engine
                .stored_names()?
                .iter()
                .filter(|name| !engine.is_deleted(name))
                .count(),
            None => 0,
        };
        let existing = stored.max(shared.registry.len());
        let mut creating = shared.creating.lock();
        if existing + creating.len() >= shared.max_galaxies {
            return Err(AppError::TooManyGalaxies {
                limit: shared.max_galaxies,
            });
        }
        creating.insert(name.to_owned());
        Ok(Reservation {
            creating: &shared.creating,
            name: name.to_owned(),
        })
    }

    /// The cell of a galaxy, loading it from the database on a cache miss. Two threads
    /// missing on the same galaxy load it once (the engine's single flight); loads of
    /// different galaxies run side by side, and none holds the catalog lock while it reads.
    fn cell(&self, name: &str) -> Result<Arc<GalaxyCell>, AppError> {
        let shared = &self.shared;
        let unknown = || AppError::UnknownGalaxy(name.to_owned());
        loop {
            if let Some(cell) = shared.registry.get(name) {
                return Ok(cell);
            }
            let Some(engine) = &shared.engine else {
                return Err(unknown());
            };
            if !valid_galaxy_name(name) {
                return Err(unknown());
            }
            let loaded = || shared.registry.get(name);
            match engine.load_once(name, loaded, |galaxy, ticket| {
                self.publish_loaded(galaxy, ticket)
            })? {
                Landed::Cell(cell) => return Ok(cell),
                Landed::Missing => return Err(unknown()),
                // Deleted while it was read (the next look-up finds the tombstone, or the
                // galaxy created since under the same name), or the leader's read failed.
                Landed::Again => continue,
            }
        }
    }

    /// Puts a galaxy just read from the database into the registry, unless it was deleted
    /// meanwhile. Under the catalog lock, which deletion holds while it tombstones, so a
    /// deletion is either wholly before this (superseded) or wholly after (it finds the cell).
    fn publish_loaded(&self, galaxy: Galaxy, ticket: LoadTicket<'_>) -> Landed {
        let shared = &self.shared;
        let _catalog = shared.catalog.lock();
        if ticket.superseded() {
            return Landed::Again;
        }
        // A cell under the name already (nothing else loads it, but a creation could have
        // put one there): that one is the galaxy's live state.
        if let Some(cell) = shared.registry.get(galaxy.name()) {
            return Landed::Cell(cell);
        }
        if shared.creating.lock().contains(galaxy.name()) {
            // Its last chunk has committed, but the creation is not reported yet: until
            // its creator puts it in the registry, it is not there for anyone else.
            return Landed::Missing;
        }
        ticket.publish();
        let cell = GalaxyCell::new(galaxy);
        shared.registry.insert(cell.clone());
        Landed::Cell(cell)
    }

    /// Runs `f` on a galaxy's cell with its lock held, the galaxy loaded on a miss. A
    /// deleted galaxy is unknown; an evicted cell is a stale copy, so the name is looked up
    /// again (which loads the galaxy afresh).
    fn with_live_cell<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Arc<GalaxyCell>, MutexGuard<'_, CellState>) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let mut f = Some(f);
        loop {
            let cell = self.cell(name)?;
            let mut state = cell.lock();
            if state.deleted {
                return Err(AppError::UnknownGalaxy(name.to_owned()));
            }
            if state.evicted {
                continue;
            }
            state.last_access = Instant::now();
            // Every path that reaches this line returns, so `f` is taken once.
            let f = f.take().expect("runs once");
            return f(&cell, state);
        }
    }

    /// Runs a read on a galaxy under its lock. Reads never dirty anything.
    fn read<T>(
        &self,
        name: &str,
        tick: u64,
        read: impl FnOnce(&mut Galaxy, u64) -> Result<T, GameError>,
    ) -> Result<T, AppError> {
        self.with_live_cell(name, |_, mut state| {
            let tick = self.effective_tick(tick, &state.galaxy);
            Ok(read(&mut state.galaxy, tick)?)
        })
    }

    /// With the wall clock, a tick behind the galaxy's (a request that read the clock
    /// just before another took the lock, or a clock stepped back) means "now", not
    /// "out of order": players must not see errors for the server's own races.
    fn effective_tick(&self, tick: u64, galaxy: &Galaxy) -> u64 {
        if self
            .shared
            .wall_clock
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            tick.max(galaxy.tick())
        } else {
            tick
        }
    }

    /// Ticks come from the wall clock (the daemon's Unix seconds): see
    /// [`AppState::effective_tick`]. Without this, an older tick is refused as out of order.
    pub fn use_wall_clock(&self) {
        self.shared
            .wall_clock
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A copy of a galaxy as it is in memory (loading it on a miss). Costs time and memory
    /// in proportion to the galaxy: for tools and tests, not for the game's hot path.
    pub fn galaxy_copy(&self, name: &str) -> Result<Galaxy, AppError> {
        self.read(name, 0, |galaxy, _| Ok(galaxy.clone()))
    }

    /// The persistence engine's write connection, for maintenance (see
    /// [`WriterHandle::with_connection`]); `None` without persistence.
    pub fn writer(&self) -> Option<&WriterHandle> {
        self.shared.engine.as_ref().map(Engine::writer)
    }

    /// Schedules every row of a galaxy to be written again by the next batch (maintenance,
    /// and the benchmarks' "every row changed" workload).
    pub fn rewrite_galaxy(&self, name: &str) -> Result<(), AppError> {
        self.change(name, 0, |galaxy, _| {
            galaxy.mark_all_changed();
            Ok(())
        })
    }

    /// Orders a build (CONTRACT §1) and schedules the change for saving.
    pub fn build(
        &self,
        name: &str,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
    ) -> Result<Build, AppError> {
        let shared = &self.shared;
        if let Some(limit) = shared.max_unsaved {
            match shared.metrics.oldest_unsaved_age() {
                Some(age) if age > limit => return Err(AppError::UnsavedTooOld { age, limit }),
                _ => {}
            }
        }
        self.change(name, tick, |galaxy, tick| {
            galaxy.build(tick, x, y, structure)
        })
    }

    /// Applies a change to a galaxy under its lock and, if the galaxy went from clean to
    /// dirty, tells the writer (after unlocking). Without an engine the change set is
    /// emptied at once: nothing would ever save it.
    fn change<T>(
        &self,
        name: &str,
        tick: u64,
        change: impl FnOnce(&mut Galaxy, u64) -> Result<T, GameError>,
    ) -> Result<T, AppError> {
        let shared = &self.shared;
        self.with_live_cell(name, |cell, mut state| {
            let was_clean = state.galaxy.changes().is_empty();
            let tick = self.effective_tick(tick, &state.galaxy);
            let result = change(&mut state.galaxy, tick)?;
            match &shared.engine {
                None => state.galaxy.forget_changes(),
                Some(engine) => {
                    let newly_dirty = was_clean && !state.galaxy.changes().is_empty();
                    // Unlock before signalling: the writer may want this lock for its cut.
                    drop(state);
                    if newly_dirty {
                        let now = Instant::now();
                        shared.metrics.note_unsaved_since(now);
                        engine.writer().mark_dirty(cell.clone(), now);
                    }
                }
            }
            Ok(result)
        })
    }

    pub fn system_details(
        &self,
        name: &str,
        tick: u64,
        x: u64,
        y: u64,
    ) -> Result<SystemDetails, AppError> {
        self.read(name, tick, |galaxy, tick| galaxy.system_details(tick, x, y))
    }

    pub fn structure_details(
        &self,
        name: &str,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
    ) -> Result<StructureDetails, AppError> {
        self.read(name, tick, |galaxy, tick| {
            galaxy.structure_details(tick, x, y, structure)
        })
    }

    /// The galaxy with every system's summary (see [`AppState::galaxy_page`]).
    pub fn galaxy_details(&self, name: &str, tick: u64) -> Result<GalaxyDetails, AppError> {
        self.galaxy_page(name, tick, 0, usize::MAX)
    }

    /// The galaxy with the summaries of at most `limit` systems from the `offset`-th:
    /// the galaxy's lock is held for the page's systems only.
    pub fn galaxy_page(
        &self,
        name: &str,
        tick: u64,
        offset: usize,
        limit: usize,
    ) -> Result<GalaxyDetails, AppError> {
        self.read(name, tick, |galaxy, tick| {
            let systems = galaxy.summaries_in(tick, offset, limit)?;
            Ok(GalaxyDetails {
                name: galaxy.name().to_owned(),
                tick: galaxy.tick(),
                system_count: galaxy.systems().len(),
                systems,
                offset,
                limit,
            })
        })
    }

    /// Stored and in-memory galaxies, sorted by name.
    pub fn list(&self) -> Result<Vec<GalaxyListing>, AppError> {
        Ok(self.list_page(0, usize::MAX)?.galaxies)
    }

    /// At most `limit` of the stored and in-memory galaxies from the `offset`-th, sorted
    /// by name, and how many there are.
    pub fn list_page(&self, offset: usize, limit: usize) -> Result<GalaxyPage, AppError> {
        let shared = &self.shared;
        let mut listing: BTreeMap<String, bool> = BTreeMap::new();
        if let Some(engine) = &shared.engine {
            let stored = engine.stored_names()?;
            // A creation's last chunk committed but not yet reported is not there yet.
            let creating = shared.creating.lock();
            for name in stored {
                if !engine.is_deleted(&name) && !creating.contains(&name) {
                    listing.insert(name, false);
                }
            }
        }
        for cell in shared.registry.all() {
            listing.insert(cell.name().to_owned(), true);
        }
        let total = listing.len();
        let galaxies = listing
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(name, loaded)| GalaxyListing { name, loaded })
            .collect();
        Ok(GalaxyPage {
            galaxies,
            total,
            offset,
            limit,
        })
    }

    /// Deletes a galaxy from memory now and from the database within the loss window.
    pub fn delete(&self, name: &str) -> Result<(), AppError> {
        let shared = &self.shared;
        let _catalog = shared.catalog.lock();
        if shared.creating.lock().contains(name) {
            // Saved perhaps, but not yet reported: until its creator publishes it, it is
            // not there to delete (deleting it now would leave its creator publishing a
            // galaxy whose rows are being removed).
            return Err(AppError::UnknownGalaxy(name.to_owned()));
        }
        let stored = match &shared.engine {
            Some(engine) => engine.is_stored(name)?,
            None => false,
        };
        let cell = shared.registry.remove(name);
        if cell.is_none() && !stored {
            return Err(AppError::UnknownGalaxy(name.to_owned()));
        }
        if let Some(cell) = cell {
            cell.lock().deleted = true;
        }
        if let Some(engine) = &shared.engine {
            engine.tombstone(name);
            engine.writer().delete(name.to_owned());
        }
        log::info!("galaxy '{name}' deleted");
        Ok(())
    }

    /// Returns once every change made before the call is committed: the number of systems
    /// the answering batch wrote. With persistence disabled there is nothing to save (0);
    /// in memory-only mode nothing can be saved (`MemoryOnly`).
    pub fn save_all(&self) -> Result<u64, AppError> {
        self.refuse_if_memory_only()?;
        match &self.shared.engine {
            Some(engine) => Ok(engine.writer().flush(None)?),
            None => Ok(0),
        }
    }

    /// Refuses creations from now on and stops those in progress at a chunk boundary (the
    /// daemon is stopping: their requests must end, and the galaxies are not kept).
    pub fn stop_creating(&self) {
        if let Some(engine) = &self.shared.engine {
            engine.writer().stop_creating();
        }
    }

    /// The final flush, bounded by the shutdown timeout; what was left unsaved. After a
    /// clean one, the engine leaves the clean-shutdown marker that spares the next
    /// start-up a whole-file check. Safe to call more than once.
    pub fn shutdown(&self) -> ShutdownReport {
        match &self.shared.engine {
            Some(engine) => engine.shutdown(),
            None => ShutdownReport::default(),
        }
    }

    /// An online backup of the database into `dir` (default: `backups/` beside the
    /// database) under a timestamped name; the path written. It holds every change
    /// committed before it started. One backup at a time: while one runs, another is
    /// refused at once (`BackupInProgress`) rather than queued — a second copy taken
    /// right after the first adds nothing, and a caller waiting for it would hold an
    /// HTTP worker for as long as a copy of the whole database takes.
    pub fn backup(&self, dir: Option<&Path>) -> Result<PathBuf, AppError> {
        let source = self
            .shared
            .engine
            .as_ref()
            .and_then(Engine::path)
            .ok_or(AppError::NoDatabase)?;
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => default_dir(source),
        };
        let _one_at_a_time = self
            .shared
            .backup
            .try_lock()
            .ok_or(AppError::BackupInProgress)?;
        let started = Instant::now();
        let target = backup_into(source, &dir, std::time::SystemTime::now())?;
        // Absolute, so the answer means the same to a client as to the daemon.
        let target = std::fs::canonicalize(&target).unwrap_or(target);
        log::info!(target: "galactic_war::persistence",
            "backup written to {} in {:?}", target.display(), started.elapsed());
        Ok(target)
    }

    /// Systems with changes not yet committed, in memory and in the batch being written.
    pub fn dirty_systems(&self) -> u64 {
        let unsaved = |state: &CellState| {
            let changes = state.galaxy.changes();
            // A system changed again while its batch is written is counted once.
            let only_in_flight = state
                .in_flight
                .iter()
                .filter(|index| changes.get(**index).is_none())
                .count();
            changes.len() + only_in_flight
        };
        let cells = self.shared.registry.all();
        cells.iter().map(|cell| unsaved(&cell.lock()) as u64).sum()
    }

    pub fn health(&self) -> Health {
        let metrics = &self.shared.metrics;
        let state = metrics.state();
        let degraded = matches!(
            state,
            PersistenceState::Retrying | PersistenceState::Lagging | PersistenceState::MemoryOnly
        );
        Health {
            status: if degraded { "degraded" } else { "ok" },
            persistence: PersistenceHealth {
                state,
                dirty_systems: self.dirty_systems(),
                last_error: metrics.last_error(),
            },
        }
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Galaxies in memory.
    pub fn galaxies_loaded(&self) -> usize {
        self.shared.registry.len()
    }

    /// Systems of the galaxies in memory.
    pub fn systems_loaded(&self) -> usize {
        self.shared
            .registry
            .all()
            .iter()
            .map(|cell| cell.lock().galaxy.systems().len())
            .sum()
    }
}

/// A name reserved for a creation in progress; released on drop.
struct Reservation<'a> {
    creating: &'a Mutex<HashSet<String>>,
    name: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.creating.lock().remove(&self.name);
    }
}

/// A seed for galaxies created without one: the clock mixed with the process's random
/// hash keys, so two creations in the same nanosecond still differ.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}
