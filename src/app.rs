//! Application state: the in-memory galaxy cache and every game operation on it.
//!
//! [`AppState`] is a cheap-to-clone handle. Game operations find a galaxy's cell in the
//! registry, lock that one galaxy, apply the operation, unlock, and only then (if the
//! galaxy went from clean to dirty) signal the writer: no game thread ever waits on disk.
//! The slow paths — loading a galaxy on a cache miss, creating and deleting — are
//! serialised by one catalog lock, taken before any galaxy lock and never during an order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;

use crate::model::{
    Build, ConfigError, Galaxy, GalaxyConfig, GameError, RowMask, StructureDetails, StructureKind,
    SystemDetails, SystemSummary,
};
use crate::persistence::backup::{backup_database, timestamped_path, BackupError};
use crate::persistence::cell::{CellState, GalaxyCell, Registry};
use crate::persistence::metrics::{Metrics, MetricsSnapshot, PersistenceState};
use crate::persistence::store::{NewGalaxy, StoreError};
use crate::persistence::writer::{PersistError, ShutdownReport, WriterHandle};
use crate::persistence::Engine;
use crate::settings::Settings;

/// Why an application operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid galaxy name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 _ -")]
    BadName(String),
    #[error("galaxy '{0}' not found")]
    UnknownGalaxy(String),
    #[error("galaxy '{0}' already exists")]
    GalaxyExists(String),
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
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// `POST /galaxies/{name}`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreatedGalaxy {
    pub name: String,
    pub tick: u64,
    pub systems: usize,
}

/// `GET /galaxies/{name}`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GalaxyDetails {
    pub name: String,
    pub tick: u64,
    pub system_count: usize,
    pub systems: Vec<SystemSummary>,
}

/// One entry of `GET /galaxies`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GalaxyListing {
    pub name: String,
    pub loaded: bool,
}

/// `GET /healthz`'s persistence part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PersistenceHealth {
    pub state: PersistenceState,
    pub dirty_systems: u64,
    pub last_error: Option<String>,
}

/// `GET /healthz`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    /// Serialises loads, creations and deletions. Never held while waiting for a galaxy
    /// lock that an order holds for long: orders never take it.
    catalog: Mutex<()>,
    max_unsaved: Option<Duration>,
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
            return Ok(AppState::without_engine(PersistenceState::Disabled, None));
        }
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new(PersistenceState::Healthy));
        let engine = Engine::open(
            &settings.database,
            &settings.persistence,
            registry.clone(),
            metrics.clone(),
        )?;
        Ok(AppState::assemble(
            registry,
            metrics,
            Some(engine),
            settings.persistence.max_unsaved,
        ))
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
                max_unsaved,
                wall_clock: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Creates a galaxy from `config` and returns once it is saved (with persistence on).
    /// `seed` picks the map; without one, a random seed is drawn.
    pub fn create_galaxy(
        &self,
        name: &str,
        config: GalaxyConfig,
        seed: Option<u64>,
        tick: u64,
    ) -> Result<CreatedGalaxy, AppError> {
        if !valid_galaxy_name(name) {
            return Err(AppError::BadName(name.to_owned()));
        }
        let shared = &self.shared;
        let _catalog = shared.catalog.lock();
        let stored = match &shared.engine {
            Some(engine) => engine.is_stored(name)?,
            None => false,
        };
        if stored || shared.registry.get(name).is_some() {
            return Err(AppError::GalaxyExists(name.to_owned()));
        }
        let mut galaxy = Galaxy::create(name, config, seed.unwrap_or_else(random_seed), tick)?;
        // Creation writes every row of the new galaxy, so nothing is left to save after it.
        galaxy.take_changes();
        if let Some(engine) = &shared.engine {
            engine.writer().create(NewGalaxy {
                name: name.to_owned(),
                config_toml: galaxy.config().to_toml(),
                tick: galaxy.tick(),
                systems: galaxy.systems().to_vec(),
                rows: RowMask::new_system(galaxy.rules()),
            })?;
        } else {
            log::info!(
                "galaxy '{name}' created in memory ({} systems)",
                galaxy.systems().len()
            );
        }
        let created = CreatedGalaxy {
            name: name.to_owned(),
            tick: galaxy.tick(),
            systems: galaxy.systems().len(),
        };
        shared.registry.insert(GalaxyCell::new(galaxy));
        Ok(created)
    }

    /// The cell of a galaxy, loading it from the database on a cache miss. Two threads
    /// missing on the same galaxy load it once: the second finds it after the catalog lock.
    fn cell(&self, name: &str) -> Result<Arc<GalaxyCell>, AppError> {
        let shared = &self.shared;
        if let Some(cell) = shared.registry.get(name) {
            return Ok(cell);
        }
        let unknown = || AppError::UnknownGalaxy(name.to_owned());
        let Some(engine) = &shared.engine else {
            return Err(unknown());
        };
        if !valid_galaxy_name(name) {
            return Err(unknown());
        }
        let _catalog = shared.catalog.lock();
        if let Some(cell) = shared.registry.get(name) {
            return Ok(cell);
        }
        let started = Instant::now();
        let galaxy = engine.load(name)?.ok_or_else(unknown)?;
        log::info!(target: "galactic_war::persistence",
            "galaxy '{name}' loaded ({} systems, {:?})", galaxy.systems().len(), started.elapsed());
        shared
            .metrics
            .galaxies_loaded_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cell = GalaxyCell::new(galaxy);
        shared.registry.insert(cell.clone());
        Ok(cell)
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

    pub fn galaxy_details(&self, name: &str, tick: u64) -> Result<GalaxyDetails, AppError> {
        self.read(name, tick, |galaxy, tick| {
            let systems = galaxy.summaries(tick)?;
            Ok(GalaxyDetails {
                name: galaxy.name().to_owned(),
                tick: galaxy.tick(),
                system_count: systems.len(),
                systems,
            })
        })
    }

    /// Stored and in-memory galaxies, sorted by name.
    pub fn list(&self) -> Result<Vec<GalaxyListing>, AppError> {
        let shared = &self.shared;
        let mut listing: BTreeMap<String, bool> = BTreeMap::new();
        if let Some(engine) = &shared.engine {
            for name in engine.stored_names()? {
                if !engine.is_deleted(&name) {
                    listing.insert(name, false);
                }
            }
        }
        for cell in shared.registry.all() {
            listing.insert(cell.name().to_owned(), true);
        }
        Ok(listing
            .into_iter()
            .map(|(name, loaded)| GalaxyListing { name, loaded })
            .collect())
    }

    /// Deletes a galaxy from memory now and from the database within the loss window.
    pub fn delete(&self, name: &str) -> Result<(), AppError> {
        let shared = &self.shared;
        let _catalog = shared.catalog.lock();
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
    /// the answering batch wrote. Without persistence there is nothing to save (0).
    pub fn save_all(&self) -> Result<u64, AppError> {
        match &self.shared.engine {
            Some(engine) => Ok(engine.writer().flush(None)?),
            None => Ok(0),
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
    /// committed before it started.
    pub fn backup(&self, dir: Option<&Path>) -> Result<PathBuf, AppError> {
        let source = self
            .shared
            .engine
            .as_ref()
            .and_then(Engine::path)
            .ok_or(AppError::NoDatabase)?;
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => source
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("backups"),
        };
        let target = timestamped_path(&dir, std::time::SystemTime::now());
        let started = Instant::now();
        backup_database(source, &target)?;
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
            PersistenceState::Retrying | PersistenceState::MemoryOnly
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
