//! Application state: the in-memory galaxy cache and every game operation on it.
//!
//! [`AppState`] is a cheap-to-clone handle. Game operations reach one live galaxy through
//! `crate::galaxies` (which decides every step of a galaxy's life and holds the lock
//! order), apply the operation under that galaxy's lock, unlock, and only then (if the
//! galaxy went from clean to dirty) signal the writer: no game thread ever waits on disk.
//! A creation builds its galaxy and waits for the writer to save it (in chunks, between
//! other galaxies' batches) holding no lock; its reserved name keeps it invisible
//! meanwhile. A load on a cache miss reads the database holding no lock at all (the
//! engine's pool of read-only connections), so a load of millions of systems holds up
//! neither other loads nor creations and deletions.
//!
//! Several daemons on one database (PostgreSQL): a galaxy is taken for this daemon before
//! it is loaded or deleted (`crate::galaxies` decides when, the engine's claims session
//! does it); one that another live daemon owns is `AppError::OwnedElsewhere`, which the
//! HTTP layer turns into a redirect to that daemon.

mod archives;
mod create;
mod durable;
mod error;
mod history;
mod limits;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::Clock;
pub use crate::galaxies::valid_galaxy_name;
use crate::galaxies::{Galaxies, GalaxyCell, LifeError, Listed, Live};
use crate::model::{
    Build, Galaxy, GameError, StructureDetails, StructureKind, SystemDetails, SystemSummary,
};
use crate::persistence::backup::{backup_into, default_dir};
use crate::persistence::budget::CreationBudget;
use crate::persistence::metrics::Metrics;
use crate::persistence::writer::WriterHandle;
use crate::persistence::Engine;
use crate::settings::{GalaxyLimits, Settings};
use crate::systemd::Notifier;

// The engine's errors and answers, as `AppState` hands them out: the engine itself is not
// public.
pub use crate::persistence::backup::BackupError;
pub use crate::persistence::budget::{BudgetSnapshot, OverBudget};
pub use crate::persistence::metrics::{MetricsSnapshot, PersistenceState};
pub use crate::persistence::writer::{ArchivedGalaxy, FlushReport, PersistError};
use crate::store::StoreError;
pub use crate::store::{FailureKind, Owner, Storage, StoreFailure};
pub use archives::RestoredGalaxy;
pub use durable::{CreateOptions, Durability, DurableTicket};
pub use error::AppError;
pub use history::HistoryPage;
use limits::OrderLimits;

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
    /// In this daemon's memory.
    pub loaded: bool,
    /// Stored as an archive (README, *Archives and moving a deployment*).
    pub archived: bool,
    /// The advertised URL of the daemon whose lease on it has not run out (this one's for
    /// a galaxy in its memory), where several daemons share the database; `None` when
    /// nobody holds it, and always without other daemons (SQLite).
    pub owner: Option<String>,
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
    /// The PostgreSQL primary's replication, where known.
    pub replication: Option<crate::store::Replication>,
}

/// `GET /healthz`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `ok`, or `degraded` while saving fails or the game runs from memory only.
    pub status: &'static str,
    pub persistence: PersistenceHealth,
    /// Whether a creation without the admin token can pass the budgets: `open`,
    /// `closed: disk` or `closed: systems`.
    pub creation: &'static str,
}

/// The game's state: galaxies in memory and the engine that persists them.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

struct Shared {
    galaxies: Arc<Galaxies>,
    metrics: Arc<Metrics>,
    /// `None`: persistence disabled, or memory-only after the database could not open.
    engine: Option<Engine>,
    /// When orders are refused: see [`OrderLimits`].
    order_limits: OrderLimits,
    /// `GWAR_MAX_TOTAL_SYSTEMS` and `GWAR_MIN_FREE_DISK`.
    budget: CreationBudget,
    /// Held for the whole of a backup: backups run one at a time.
    backup: Mutex<()>,
    /// See [`AppState::use_wall_clock`].
    wall_clock: std::sync::atomic::AtomicBool,
    /// The storage figures of `/metrics`, counted off the request's thread.
    storage: archives::StorageGauge,
}

impl AppState {
    /// Opens the database of `settings` and starts persistence, or a memory-only state when
    /// persistence is disabled. Errors leave nothing running.
    pub fn open(settings: &Settings) -> Result<AppState, StoreFailure> {
        AppState::open_notifying(settings, &Notifier::none()).map_err(|e| e.failure())
    }

    /// [`AppState::open`], telling `notifier` (systemd) that a long start-up check of the
    /// database is still making progress.
    pub(crate) fn open_notifying(
        settings: &Settings,
        notifier: &Notifier,
    ) -> Result<AppState, StoreError> {
        if !settings.persistence.enabled {
            let mut app = AppState::without_engine(PersistenceState::Disabled, None);
            app.set_limits(settings);
            return Ok(app);
        }
        let galaxies = Galaxies::new(settings.galaxy_limits.max_galaxies, Clock::system());
        let galaxies = Arc::new(galaxies.keep_history(settings.persistence.history));
        let metrics = Arc::new(Metrics::new(PersistenceState::Healthy));
        let engine = Engine::open(
            &settings.database,
            &settings.persistence,
            galaxies.writer_side(),
            metrics.clone(),
            notifier,
        )?;
        let app = AppState::assemble(
            galaxies,
            metrics,
            Some(engine),
            OrderLimits {
                max_unsaved: settings.persistence.max_unsaved,
                max_stall: settings.persistence.max_stall,
            },
            CreationBudget::new(settings),
        );
        // A first count, so that health says at once when the budget is spent.
        let shared = &app.shared;
        if let Err(error) = shared.budget.recount(&shared.galaxies, &shared.engine) {
            log::warn!(target: crate::logging::PERSISTENCE, "cannot count the galaxies' systems: {error}");
        }
        log::info!(target: crate::logging::PERSISTENCE, "{}", shared.budget.describe());
        Ok(app)
    }

    /// The limits of `settings` (`GWAR_MAX_GALAXIES`, the creation budgets); only for a
    /// state not yet shared.
    fn set_limits(&mut self, settings: &Settings) {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.budget = CreationBudget::new(settings);
            if let Some(galaxies) = Arc::get_mut(&mut shared.galaxies) {
                let limit = settings.galaxy_limits.max_galaxies;
                // Nothing is saved here: no history either.
                *galaxies = Galaxies::new(limit, Clock::system()).keep_history(false);
            }
        }
    }

    /// A state that keeps everything in memory: `Disabled` by configuration, or
    /// `MemoryOnly` with the reason the database could not be used.
    pub fn without_engine(state: PersistenceState, reason: Option<String>) -> AppState {
        let metrics = Metrics::new(state);
        if let Some(reason) = reason {
            metrics.set_memory_only(reason);
        }
        let galaxies = Galaxies::new(GalaxyLimits::default().max_galaxies, Clock::system())
            .keep_history(false);
        let mut settings = Settings::default();
        settings.persistence.enabled = false;
        let budget = CreationBudget::new(&settings);
        AppState::assemble(
            Arc::new(galaxies),
            Arc::new(metrics),
            None,
            OrderLimits::default(),
            budget,
        )
    }

    fn assemble(
        galaxies: Arc<Galaxies>,
        metrics: Arc<Metrics>,
        engine: Option<Engine>,
        order_limits: OrderLimits,
        budget: CreationBudget,
    ) -> AppState {
        AppState {
            shared: Arc::new(Shared {
                galaxies,
                metrics,
                engine,
                order_limits,
                budget,
                backup: Mutex::new(()),
                wall_clock: std::sync::atomic::AtomicBool::new(false),
                storage: archives::StorageGauge::default(),
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

    /// Runs a read on a galaxy under its lock. Reads never dirty anything.
    fn read<T>(
        &self,
        name: &str,
        tick: u64,
        read: impl FnOnce(&mut Galaxy, u64) -> Result<T, GameError>,
    ) -> Result<T, AppError> {
        let shared = &self.shared;
        shared.galaxies.with_live(&shared.engine, name, |mut live| {
            let tick = self.effective_tick(tick, &live);
            Ok(read(&mut live, tick)?)
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

    /// Ticks come from the wall clock (the daemon's Unix seconds): a tick behind the
    /// galaxy's then means "now" (another request took the lock first, or the clock
    /// stepped back). Without this, an older tick is refused as out of order.
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

    /// The persistence engine's writer (the watchdog pings it); `None` without
    /// persistence.
    pub(crate) fn writer(&self) -> Option<&WriterHandle> {
        self.shared.engine.as_ref().map(Engine::writer)
    }

    /// Orders a build (README, *The game model in brief*) and schedules the change for saving.
    pub fn build(
        &self,
        name: &str,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
    ) -> Result<Build, AppError> {
        self.build_in(name, tick, x, y, structure, false)
            .map(|(build, _)| build)
    }

    /// [`AppState::build`], also returning the galaxy's cell when an engine saves it and
    /// `keep_cell` asks for it (see [`AppState::change_in`]).
    fn build_in(
        &self,
        name: &str,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
        keep_cell: bool,
    ) -> Result<(Build, Option<Arc<GalaxyCell>>), AppError> {
        let order = |galaxy: &mut Galaxy, tick| galaxy.build(tick, x, y, structure);
        self.shared.order_limits.check(&self.shared.metrics)?;
        self.change_in(name, tick, order, keep_cell)
    }

    /// Applies a change to a galaxy under its lock and, if the galaxy went from clean to
    /// dirty, tells the writer (after unlocking). Without an engine the change set is
    /// emptied at once: nothing would ever save it. Crate-visible for the test hooks
    /// (`crate::testing`), which rewrite a whole galaxy through it.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn change<T>(
        &self,
        name: &str,
        tick: u64,
        change: impl FnOnce(&mut Galaxy, u64) -> Result<T, GameError>,
    ) -> Result<T, AppError> {
        self.change_in(name, tick, change, false)
            .map(|(result, _)| result)
    }

    /// [`AppState::change`], also returning the galaxy's cell when an engine saves it and
    /// `keep_cell` asks for it (a durable order names it to the writer; the others do not
    /// pay for the reference).
    fn change_in<T>(
        &self,
        name: &str,
        tick: u64,
        change: impl FnOnce(&mut Galaxy, u64) -> Result<T, GameError>,
        keep_cell: bool,
    ) -> Result<(T, Option<Arc<GalaxyCell>>), AppError> {
        let shared = &self.shared;
        shared
            .galaxies
            .with_live(&shared.engine, name, |mut live: Live<'_>| {
                let was_clean = live.changes().is_empty();
                let tick = self.effective_tick(tick, &live);
                let result = change(&mut live, tick)?;
                let Some(engine) = &shared.engine else {
                    live.forget_changes();
                    return Ok((result, None));
                };
                let newly_dirty = was_clean && !live.changes().is_empty();
                // Unlock before signalling: the writer may want this lock for its cut.
                let cell = live.unlock();
                if newly_dirty {
                    let now = Instant::now();
                    shared.metrics.note_unsaved_since(now);
                    engine.writer().mark_dirty(cell.clone(), now);
                }
                Ok((result, keep_cell.then(|| cell.clone())))
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
        let listing = shared.galaxies.listing(&shared.engine)?;
        let total = listing.len();
        let galaxies = listing
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(name, listed)| {
                let Listed {
                    loaded,
                    archived,
                    owner,
                } = listed;
                GalaxyListing {
                    name,
                    loaded,
                    archived,
                    owner,
                }
            })
            .collect();
        Ok(GalaxyPage {
            galaxies,
            total,
            offset,
            limit,
        })
    }

    /// Deletes a galaxy from memory now and from the database within the loss window.
    /// Where daemons share the database, a galaxy not in memory is taken first: one that
    /// another live daemon owns is refused (`OwnedElsewhere`).
    pub fn delete(&self, name: &str) -> Result<(), AppError> {
        let shared = &self.shared;
        let deleted = shared.galaxies.delete(&shared.engine, name, |epoch| {
            if let Some(engine) = &shared.engine {
                engine.writer().delete(name.to_owned(), epoch);
            }
        });
        match deleted {
            Ok(()) => {}
            // Not live: its archive, if it has one, is what is deleted.
            Err(LifeError::Unknown(_)) if self.delete_archive(name)? => {}
            Err(error) => return Err(error.into()),
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
            Some(engine) => Ok(engine.writer().save()?),
            None => Ok(0),
        }
    }

    /// Refuses creations and archives from now on and stops creations in progress at a
    /// chunk boundary (the daemon is stopping: their requests must end, and the galaxies
    /// are not kept).
    pub(crate) fn stop_creating(&self) {
        if let Some(engine) = &self.shared.engine {
            engine.stop_bulk();
        }
    }

    /// The final flush, bounded by the shutdown timeout; what was left unsaved. After a
    /// clean one, the engine leaves the clean-shutdown marker that spares the next
    /// start-up a whole-file check. Safe to call more than once.
    pub fn shutdown(&self) -> FlushReport {
        self.shutdown_within(None)
    }

    /// [`AppState::shutdown`] with `budget` for the final flush instead of the shutdown
    /// timeout (`None`: the timeout): a daemon's stop gives it what is left of the
    /// timeout after the requests in flight.
    pub fn shutdown_within(&self, budget: Option<Duration>) -> FlushReport {
        match &self.shared.engine {
            Some(engine) => engine.shutdown(budget),
            None => FlushReport::default(),
        }
    }

    /// An online backup of the database into `dir` (default: `backups/` beside the
    /// database) under a timestamped name; the path written. It holds every change
    /// committed before it started. One backup at a time: while one runs, another is
    /// refused at once (`BackupInProgress`) rather than queued — a second copy taken
    /// right after the first adds nothing, and a caller waiting for it would hold an
    /// HTTP worker for as long as a copy of the whole database takes.
    pub fn backup(&self, dir: Option<&Path>) -> Result<PathBuf, AppError> {
        if let Some(server) = self.shared.engine.as_ref().and_then(Engine::server) {
            return Err(AppError::ServerBackup(server.to_owned()));
        }
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
        log::info!(target: crate::logging::PERSISTENCE,
            "backup written to {} in {:?}", target.display(), started.elapsed());
        Ok(target)
    }

    /// Systems with changes not yet committed, in memory and in the batch being written.
    pub fn dirty_systems(&self) -> u64 {
        self.shared.galaxies.unsaved_systems()
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
                replication: metrics.replication(),
            },
            creation: self.shared.budget.creation(),
        }
    }

    /// The creation budgets and their use, as last counted (at start-up, at each
    /// creation, and by the count this call starts: one query of the stored galaxies'
    /// sizes on a thread of its own, so that `/metrics` answers at once even while the
    /// database does not).
    pub fn budget(&self) -> BudgetSnapshot {
        let shared = &self.shared;
        if shared.budget.begin_count() {
            self.count_aside(
                "gwar-budget-count",
                |app| {
                    let shared = &app.shared;
                    if let Err(error) = shared.budget.recount(&shared.galaxies, &shared.engine) {
                        log::debug!(target: crate::logging::PERSISTENCE, "counting the galaxies' systems: {error}");
                    }
                },
                |app| app.shared.budget.counted(),
            );
        }
        shared.budget.snapshot()
    }

    /// Runs `count` on a thread of its own, then `done` however it ends (a panic
    /// included, or no thread to be had), so that the next count can begin.
    fn count_aside(&self, name: &str, count: fn(&AppState), done: fn(&AppState)) {
        struct Done(AppState, fn(&AppState));
        impl Drop for Done {
            fn drop(&mut self) {
                (self.1)(&self.0);
            }
        }
        let finished = Done(self.clone(), done);
        // Without a thread, the closure (and `finished` with it) is dropped: done.
        let _ = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || count(&finished.0));
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Galaxies in memory.
    pub fn galaxies_loaded(&self) -> usize {
        self.shared.galaxies.len()
    }

    /// Systems of the galaxies in memory.
    pub fn systems_loaded(&self) -> usize {
        self.shared.galaxies.systems()
    }
}
