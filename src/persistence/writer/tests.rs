//! The writer's policies on a manual clock: a [`Writer`] built on a channel and a real
//! SQLite file, driven one turn (or one phase) at a time, with time moved by hand. What
//! the integration tests once proved by sleeping through coalescing windows, backoffs,
//! intervals and idle periods is proved here in milliseconds, and exactly at the edges.
//!
//! Ownership (several daemons) is proved on a [`Fenced`] store: the SQLite store wrapped
//! in a fence a test controls (which galaxies another daemon took, whether renewals fail),
//! that records the ownership calls the writer makes.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::Mutex;

use super::message::{Message, WriterDatabase};
use super::report::{ArchiveRefused, FlushReport, PersistError};
use super::state::Writer;
use crate::clock::Clock;
use crate::galaxies::{Backing, Galaxies, GalaxyCell, LifeError};
use crate::model::{Galaxy, GalaxyConfig, RowMask, StructureKind};
use crate::persistence::metrics::{Metrics, PersistenceState};
use crate::settings::{DatabaseUrl, PersistenceSettings, Synchronous};
use crate::store::sqlite::{SqliteReader, SqliteWriter};
use crate::store::{
    BusyDeadline, CreationProgress, Epoch, FailureKind, GalaxyJob, GalaxyRows, LostGalaxy,
    NewGalaxy, ReadStore, RowIds, StoreError, WriteStats, WriteStore,
};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// A writer on a temporary database file, its channel, and everything it shares.
struct Rig {
    writer: Writer,
    tx: Sender<Message>,
    clock: Clock,
    galaxies: Arc<Galaxies>,
    metrics: Arc<Metrics>,
    dir: tempfile::TempDir,
}

/// The galaxies' backing as the writer's tests need it: nothing is ever read back (every
/// galaxy a test plays is created through the writer and stays in memory).
struct WriterOnly;

impl Backing for WriterOnly {
    type Ids = ();
    fn persists(&self) -> bool {
        true
    }
    fn read(&self, _: &str) -> Result<Option<(Galaxy, ())>, StoreError> {
        Ok(None)
    }
    fn published(&self, _: &str, _: (), _: Option<crate::store::Epoch>) {}
    fn is_stored(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    fn stored_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

/// What the [`Fenced`] store is told by a test, and what it saw.
#[derive(Default)]
struct Fence {
    /// Taken by another daemon: the next write or renewal that covers one of these is
    /// refused with `Lost` (and the name forgotten, as a store forgets what it lost).
    taken: HashSet<String>,
    /// Taken by another daemon while their rows were being removed (checked by removals
    /// only, so that the deletion itself commits).
    taken_while_purged: HashSet<String>,
    /// Renewals fail (the database cannot be reached) while set.
    renewals_fail: bool,
    renewals: u32,
    /// Calls of `write_batch` and of `write_final_batch`.
    writes: u32,
    finals: u32,
    released: Vec<String>,
    /// Galaxies no longer renewed (evicted, created for a caller that has gone).
    disowned: Vec<String>,
    owned: HashMap<String, Epoch>,
    /// What the next `orphaned_jobs` hands over (taken: owned from then on), and how
    /// many times the writer asked.
    orphaned: Vec<GalaxyJob>,
    orphan_asks: u32,
}

/// The rig's SQLite store behind a fence: a store with a lease, as PostgreSQL's is when
/// several daemons share the database.
struct Fenced {
    inner: SqliteWriter,
    lease: Duration,
    fence: Arc<Mutex<Fence>>,
}

impl Fenced {
    /// `Lost` for those of `names` another daemon took.
    fn check<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), StoreError> {
        let mut fence = self.fence.lock();
        let mut lost = Vec::new();
        for name in names {
            if fence.taken.remove(name) {
                let epoch = fence.owned.remove(name).unwrap_or(1);
                lost.push(LostGalaxy {
                    name: name.to_owned(),
                    epoch,
                    current: Some(epoch + 1),
                });
            }
        }
        if lost.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Lost(lost))
        }
    }

    fn check_batch(&self, deletions: &[String], galaxies: &[GalaxyRows]) -> Result<(), StoreError> {
        let names = deletions.iter().chain(galaxies.iter().map(|g| &g.name));
        self.check(names.map(String::as_str))
    }
}

impl WriteStore for Fenced {
    fn on_writer_thread(&mut self) {
        self.inner.on_writer_thread()
    }
    fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        self.inner.unfinished_jobs()
    }
    fn write_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        self.fence.lock().writes += 1;
        self.check_batch(deletions, galaxies)?;
        self.inner.write_batch(deletions, galaxies)
    }
    fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError> {
        self.fence.lock().owned.insert(galaxy.name.to_owned(), 1);
        self.inner.create_chunk(galaxy, progress, max_systems)
    }
    fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError> {
        if self.fence.lock().taken_while_purged.remove(name) {
            let lost = LostGalaxy {
                name: name.to_owned(),
                epoch: 1,
                current: Some(2),
            };
            return Err(StoreError::Lost(vec![lost]));
        }
        self.inner.purge_chunk(name, max_systems)
    }
    fn write_archive(
        &mut self,
        archive: &crate::store::ArchiveRow<'_>,
    ) -> Result<WriteStats, StoreError> {
        self.check([archive.name])?;
        self.inner.write_archive(archive)
    }
    fn delete_archive(&mut self, name: &str) -> Result<bool, StoreError> {
        self.inner.delete_archive(name)
    }
    fn prune_history(&mut self, older_than: Duration, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune_history(older_than, limit)
    }
    fn adopt_ids(&mut self, name: &str, ids: RowIds) {
        self.inner.adopt_ids(name, ids)
    }
    fn forget_ids(&mut self, name: &str) {
        self.inner.forget_ids(name)
    }
    fn after_commit(&mut self) {
        self.inner.after_commit()
    }
    fn maintain(&mut self, idle: bool) {
        self.inner.maintain(idle)
    }
    fn finish(&mut self, all_saved: bool) {
        self.inner.finish(all_saved)
    }
    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }
    fn own(&mut self, name: &str, epoch: Epoch) {
        self.fence.lock().owned.insert(name.to_owned(), epoch);
    }
    fn owns(&self, name: &str) -> bool {
        self.fence.lock().owned.contains_key(name)
    }
    fn orphaned_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        let mut fence = self.fence.lock();
        fence.orphan_asks += 1;
        let jobs = std::mem::take(&mut fence.orphaned);
        for job in &jobs {
            let (GalaxyJob::Creating(name) | GalaxyJob::Deleting(name)) = job;
            fence.owned.insert(name.clone(), 2);
        }
        Ok(jobs)
    }
    fn renew_leases(&mut self) -> Result<Vec<LostGalaxy>, StoreError> {
        let mut fence = self.fence.lock();
        fence.renewals += 1;
        if fence.renewals_fail {
            return Err(StoreError::Inconsistent {
                galaxy: "(ownership)".into(),
                reason: "injected: the database cannot be reached".into(),
            });
        }
        let taken: Vec<String> = fence.taken.iter().cloned().collect();
        drop(fence);
        match self.check(taken.iter().map(String::as_str)) {
            Ok(()) => Ok(Vec::new()),
            Err(StoreError::Lost(lost)) => Ok(lost),
            Err(error) => Err(error),
        }
    }
    fn disown(&mut self, names: &[String]) {
        let mut fence = self.fence.lock();
        for name in names {
            fence.owned.remove(name);
        }
        fence.disowned.extend(names.iter().cloned());
    }
    fn write_final_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        self.fence.lock().finals += 1;
        self.check_batch(deletions, galaxies)?;
        let stats = if deletions.is_empty() && galaxies.is_empty() {
            WriteStats::default()
        } else {
            self.inner.write_batch(deletions, galaxies)?
        };
        let mut fence = self.fence.lock();
        let owned: Vec<String> = fence.owned.drain().map(|(name, _)| name).collect();
        fence.released.extend(owned);
        Ok(stats)
    }
}

/// What a test tells the [`Probed`] store, and what it saw.
#[derive(Default)]
struct Reach {
    /// The database does not answer: probes fail (writes are broken apart, by
    /// `break_writes`, so a test can also break them while probes succeed).
    down: bool,
    /// The store cannot spare room for bulk work: `room_for_bulk` refuses.
    no_room: bool,
    probes: u32,
    room_checks: u32,
    /// The store's calls that decide durability, in order: `synced` and `ordinary`
    /// (`set_synced`), `write` (a batch), `sync`.
    calls: Vec<&'static str>,
}

/// The rig's SQLite store whose probe and room for bulk work a test decides.
struct Probed {
    inner: SqliteWriter,
    reach: Arc<Mutex<Reach>>,
}

impl WriteStore for Probed {
    fn on_writer_thread(&mut self) {
        self.inner.on_writer_thread()
    }
    fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        self.inner.unfinished_jobs()
    }
    fn write_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        self.reach.lock().calls.push("write");
        self.inner.write_batch(deletions, galaxies)
    }
    fn set_synced(&mut self, synced: bool) -> Result<(), StoreError> {
        let call = if synced { "synced" } else { "ordinary" };
        self.reach.lock().calls.push(call);
        self.inner.set_synced(synced)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.reach.lock().calls.push("sync");
        self.inner.sync()
    }
    fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError> {
        self.reach.lock().calls.push("create");
        self.inner.create_chunk(galaxy, progress, max_systems)
    }
    fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError> {
        self.inner.purge_chunk(name, max_systems)
    }
    fn write_archive(
        &mut self,
        archive: &crate::store::ArchiveRow<'_>,
    ) -> Result<WriteStats, StoreError> {
        self.inner.write_archive(archive)
    }
    fn delete_archive(&mut self, name: &str) -> Result<bool, StoreError> {
        self.inner.delete_archive(name)
    }
    fn prune_history(&mut self, older_than: Duration, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune_history(older_than, limit)
    }
    fn adopt_ids(&mut self, name: &str, ids: RowIds) {
        self.inner.adopt_ids(name, ids)
    }
    fn forget_ids(&mut self, name: &str) {
        self.inner.forget_ids(name)
    }
    fn after_commit(&mut self) {
        self.inner.after_commit()
    }
    fn maintain(&mut self, idle: bool) {
        self.inner.maintain(idle)
    }
    fn finish(&mut self, all_saved: bool) {
        self.inner.finish(all_saved)
    }
    fn probe(&mut self) -> Result<(), StoreError> {
        let mut reach = self.reach.lock();
        reach.probes += 1;
        if reach.down {
            return Err(StoreError::Unreachable("injected".into()));
        }
        Ok(())
    }
    fn room_for_bulk(&mut self) -> Result<(), StoreError> {
        let mut reach = self.reach.lock();
        reach.room_checks += 1;
        if reach.no_room {
            return Err(StoreError::LowSpace {
                path: "injected".into(),
                available: 0,
                needed: 1,
                what: "kept for saving orders (injected)",
            });
        }
        Ok(())
    }
}

/// The rig's SQLite store standing in for a server store that loses the answers to
/// creation chunks' commits: the chunk commits, and the call fails as over a broken
/// connection, the creation's progress as before the commit and unsettled; the next call
/// reads the chunk back, as the PostgreSQL store does (`store/postgres/jobs.rs`).
struct LosesAnswers {
    inner: SqliteWriter,
    lose: Arc<Mutex<Lose>>,
    /// The creation's progress as the database has it, while an answer is lost.
    committed: Option<CreationProgress>,
}

/// Which answers [`LosesAnswers`] loses, and what it saw.
#[derive(Default)]
struct Lose {
    /// The next chunk's answer is lost.
    next: bool,
    /// The answer to a creation's last chunk (the one that makes the galaxy exist).
    last: bool,
    lost: u32,
    settled: u32,
}

impl WriteStore for LosesAnswers {
    fn on_writer_thread(&mut self) {
        self.inner.on_writer_thread()
    }
    fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        self.inner.unfinished_jobs()
    }
    fn write_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        self.inner.write_batch(deletions, galaxies)
    }
    fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError> {
        if progress.is_unsettled() {
            if let Some(committed) = self.committed.take() {
                self.lose.lock().settled += 1;
                let systems = (committed.written - progress.written) as u64;
                *progress = committed;
                return Ok(WriteStats {
                    systems,
                    rows: systems,
                });
            }
        }
        let before = progress.written;
        let stats = self.inner.create_chunk(galaxy, progress, max_systems)?;
        let mut lose = self.lose.lock();
        let last = progress.written == galaxy.systems.len();
        if !(std::mem::take(&mut lose.next) || (lose.last && last)) {
            return Ok(stats);
        }
        lose.lost += 1;
        let to = progress.written;
        self.committed = Some(std::mem::take(progress));
        progress.written = before;
        progress.set_unsettled(Some(to));
        Err(StoreError::Unreachable(
            "injected: the commit's answer was lost".into(),
        ))
    }
    fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError> {
        self.inner.purge_chunk(name, max_systems)
    }
    fn write_archive(
        &mut self,
        archive: &crate::store::ArchiveRow<'_>,
    ) -> Result<WriteStats, StoreError> {
        self.inner.write_archive(archive)
    }
    fn delete_archive(&mut self, name: &str) -> Result<bool, StoreError> {
        self.inner.delete_archive(name)
    }
    fn prune_history(&mut self, older_than: Duration, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune_history(older_than, limit)
    }
    fn adopt_ids(&mut self, name: &str, ids: RowIds) {
        self.inner.adopt_ids(name, ids)
    }
    fn forget_ids(&mut self, name: &str) {
        self.inner.forget_ids(name)
    }
    fn after_commit(&mut self) {
        self.inner.after_commit()
    }
    fn maintain(&mut self, idle: bool) {
        self.inner.maintain(idle)
    }
    fn finish(&mut self, all_saved: bool) {
        self.inner.finish(all_saved)
    }
}

/// A rig whose store loses the answers the returned [`Lose`] says.
fn losing_rig(settings: PersistenceSettings) -> (Rig, Arc<Mutex<Lose>>) {
    let dir = tempfile::tempdir().unwrap();
    let lose = Arc::new(Mutex::new(Lose::default()));
    let store = LosesAnswers {
        inner: sqlite_store(&dir),
        lose: lose.clone(),
        committed: None,
    };
    (rig_on(settings, dir, Box::new(store)), lose)
}

fn rig(settings: PersistenceSettings) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    rig_on(settings, dir, Box::new(store))
}

/// A rig whose store holds its galaxies under `lease` behind the returned fence.
fn fenced_rig(settings: PersistenceSettings, lease: Duration) -> (Rig, Arc<Mutex<Fence>>) {
    let dir = tempfile::tempdir().unwrap();
    let fence = Arc::new(Mutex::new(Fence::default()));
    let store = Fenced {
        inner: sqlite_store(&dir),
        lease,
        fence: fence.clone(),
    };
    (rig_on(settings, dir, Box::new(store)), fence)
}

/// A rig whose store's probe and room for bulk work the returned [`Reach`] decides.
fn probed_rig(settings: PersistenceSettings) -> (Rig, Arc<Mutex<Reach>>) {
    let dir = tempfile::tempdir().unwrap();
    let reach = Arc::new(Mutex::new(Reach::default()));
    let store = Probed {
        inner: sqlite_store(&dir),
        reach: reach.clone(),
    };
    (rig_on(settings, dir, Box::new(store)), reach)
}

fn sqlite_store(dir: &tempfile::TempDir) -> SqliteWriter {
    let url = DatabaseUrl::File(dir.path().join("writer.db"));
    SqliteWriter::open(&url, Synchronous::Normal).unwrap()
}

fn rig_on(
    settings: PersistenceSettings,
    dir: tempfile::TempDir,
    store: Box<dyn WriteStore>,
) -> Rig {
    let clock = Clock::manual();
    let galaxies = Arc::new(Galaxies::new(100, clock.clone()));
    let metrics = Arc::new(Metrics::with_clock(
        PersistenceState::Healthy,
        clock.clone(),
    ));
    metrics.set_lagging_after(settings.lagging_after());
    let (tx, rx) = unbounded();
    let database = WriterDatabase {
        store,
        busy_deadline: BusyDeadline::new(),
        unfinished: Vec::new(),
    };
    let writer = Writer::new(
        database,
        settings,
        galaxies.writer_side(),
        metrics.clone(),
        clock.clone(),
        rx,
    );
    Rig {
        writer,
        tx,
        clock,
        galaxies,
        metrics,
        dir,
    }
}

/// Settings whose timers are far apart, so that each test moves only the one it tests.
fn settings(change: impl FnOnce(&mut PersistenceSettings)) -> PersistenceSettings {
    let mut settings = PersistenceSettings {
        coalescing_delay: Duration::from_secs(3),
        auto_save_interval: Duration::from_secs(3600),
        ..PersistenceSettings::default()
    };
    change(&mut settings);
    settings
}

/// Cheap orders (cost 1, no build time) everywhere, and plenty to pay for them.
fn config(systems: u64) -> GalaxyConfig {
    let side = (systems as f64).sqrt().ceil() as u64 * 2;
    let text = format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.resources]\nmetal = 1000000000\ncrew = 1000000000\nwater = 1000000000\n\
         [systems.structures.colony]\nstarting_level = 1\n\
         [systems.structures.colony.cost]\nmetal = 1\ncrew = 1\nwater = 1\ntime = 0\n"
    );
    GalaxyConfig::from_toml(&text).unwrap().0
}

impl Rig {
    /// Creates galaxy `name` through the writer (as the app does) and puts it in memory.
    fn create(&mut self, name: &str, systems: u64) -> Arc<GalaxyCell> {
        self.create_as(name, systems, false)
    }

    /// [`Rig::create`], durable (`?durable=1`) or not.
    fn create_as(&mut self, name: &str, systems: u64, durable: bool) -> Arc<GalaxyCell> {
        let mut galaxy = Galaxy::create(name, config(systems), 1, 0).unwrap();
        galaxy.take_changes();
        let (reply, answer) = bounded(1);
        self.tx
            .send(Message::Create {
                galaxy: Box::new(galaxy),
                durable,
                restoring: false,
                reply,
            })
            .unwrap();
        let created = loop {
            self.turn();
            if let Ok(created) = answer.try_recv() {
                break created.unwrap();
            }
        };
        let reserved = self.galaxies.reserve(&WriterOnly, name).unwrap();
        reserved.publish(*created.galaxy, created.lease_until);
        self.cell(name)
    }

    /// The live cell of galaxy `name`.
    fn cell(&self, name: &str) -> Arc<GalaxyCell> {
        let live = self.galaxies.writer_side().all();
        live.into_iter().find(|c| c.name() == name).expect("live")
    }

    /// Runs `f` on the live galaxy `name` as game code does (recording an access).
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Galaxy) -> T) -> T {
        self.galaxies
            .with_live(&WriterOnly, name, |mut live| {
                Ok::<_, LifeError>(f(&mut live))
            })
            .unwrap()
    }

    /// A read of galaxy `name` as game code makes it, or why it was refused.
    fn try_read(&self, name: &str) -> Result<u64, LifeError> {
        self.galaxies
            .with_live(&WriterOnly, name, |live| Ok(live.tick()))
    }

    /// Asks the writer to stop, as the daemon does at shutdown.
    fn shutdown(&self, deadline: Duration) -> Receiver<FlushReport> {
        let (reply, report) = bounded(1);
        let deadline = self.clock.now() + deadline;
        self.tx.send(Message::Shutdown { deadline, reply }).unwrap();
        report
    }

    fn lost(&self) -> u64 {
        self.metrics.galaxies_lost_total.load(Relaxed)
    }

    /// An order on the `index`th system at `tick`, signalled as the app signals it.
    fn order(&self, cell: &Arc<GalaxyCell>, index: usize, tick: u64) {
        let (cell, newly_dirty) = self
            .galaxies
            .with_live(&WriterOnly, cell.name(), |mut live| {
                let was_clean = live.changes().is_empty();
                let system = live.systems()[index];
                live.build(
                    tick,
                    system.x.into(),
                    system.y.into(),
                    StructureKind::Colony,
                )
                .unwrap();
                let newly_dirty = was_clean && !live.changes().is_empty();
                Ok::<_, LifeError>((live.unlock().clone(), newly_dirty))
            })
            .unwrap();
        if newly_dirty {
            let since = self.clock.now();
            self.metrics.note_unsaved_since(since);
            self.tx.send(Message::Dirty { cell, since }).unwrap();
        }
    }

    /// One turn of the writer's loop at the clock's time; true once it has stopped.
    fn turn(&mut self) -> bool {
        self.writer.turn()
    }

    /// Moves the clock by `by`, then takes a turn.
    fn after(&mut self, by: Duration) {
        self.clock.advance(by);
        self.turn();
    }

    /// Rows of `systems` in the rig's database file, of every galaxy.
    fn system_rows(&self) -> i64 {
        rusqlite::Connection::open(self.dir.path().join("writer.db"))
            .unwrap()
            .query_row("SELECT COUNT(*) FROM systems", [], |r| r.get(0))
            .unwrap()
    }

    /// Turns (a chunk each) until no system rows are left, or 100 turns.
    fn turn_until_purged(&mut self) {
        for _ in 0..100 {
            if self.system_rows() == 0 {
                break;
            }
            self.turn();
        }
    }

    fn batches(&self) -> u64 {
        self.metrics.batches_committed.load(Relaxed)
    }

    fn errors(&self) -> u64 {
        self.metrics.batch_errors.load(Relaxed)
    }

    fn stored(&self, name: &str) -> Option<Galaxy> {
        SqliteReader::open(&self.dir.path().join("writer.db"))
            .unwrap()
            .load_galaxy_with_ids(name)
            .map(|loaded| loaded.map(|(galaxy, _)| galaxy))
            .unwrap()
    }

    fn assert_stored_as_in_memory(&self, cell: &GalaxyCell) {
        let stored = self.stored(cell.name()).expect("stored");
        cell.peek(|galaxy| {
            assert_eq!(stored.systems(), galaxy.systems());
            assert_eq!(stored.tick(), galaxy.tick());
        });
    }

    /// From now on every batch fails (a trigger on the writer's own connection).
    fn break_writes(&mut self) {
        self.connection()
            .execute_batch(
                "CREATE TEMP TRIGGER fail_systems BEFORE UPDATE ON main.systems
                   BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
                 CREATE TEMP TRIGGER fail_galaxies BEFORE UPDATE ON main.galaxies
                   BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .unwrap();
    }

    fn mend_writes(&mut self) {
        self.connection()
            .execute_batch("DROP TRIGGER fail_systems; DROP TRIGGER fail_galaxies;")
            .unwrap();
    }

    /// The writer's own SQLite connection, for fault injection.
    fn connection(&mut self) -> &rusqlite::Connection {
        let fenced = (self.writer.store.as_ref() as &dyn Any).is::<Fenced>();
        let probed = (self.writer.store.as_ref() as &dyn Any).is::<Probed>();
        let store = self.writer.store.as_mut() as &mut dyn Any;
        let sqlite = if fenced {
            store.downcast_mut::<Fenced>().map(|f| &mut f.inner)
        } else if probed {
            store.downcast_mut::<Probed>().map(|p| &mut p.inner)
        } else {
            store.downcast_mut::<SqliteWriter>()
        };
        sqlite.expect("a SQLite store").connection()
    }

    fn flush(&self, deadline: Option<Duration>) -> Receiver<Result<u64, PersistError>> {
        let (reply, answer) = bounded(1);
        let deadline = deadline.map(|d| self.clock.now() + d);
        let flush = Message::Flush {
            deadline,
            durable: None,
            reply,
        };
        self.tx.send(flush).unwrap();
        answer
    }

    /// A durable order's flush on `cell` (`?durable=1`), as `request_durable` sends it.
    fn durable(&self, cell: &Arc<GalaxyCell>) -> Receiver<Result<u64, PersistError>> {
        let (reply, answer) = bounded(1);
        let flush = Message::Flush {
            deadline: None,
            durable: Some(cell.clone()),
            reply,
        };
        self.tx.send(flush).unwrap();
        answer
    }
}

#[test]
fn a_batch_commits_the_coalescing_delay_after_its_first_change_writing_each_system_once() {
    let mut rig = rig(settings(|_| {}));
    let cell = rig.create("c", 10);
    let before = rig.batches();
    let written = rig.metrics.systems_written.load(Relaxed);
    for round in 0..100 {
        rig.order(&cell, round % 3, 0);
    }
    rig.turn();
    rig.after(2_999 * MS);
    for round in 0..100 {
        rig.order(&cell, round % 3, 0);
    }
    rig.turn();
    assert_eq!(rig.batches(), before, "nothing before the delay is up");
    rig.after(MS);
    assert_eq!(rig.batches(), before + 1, "one batch, at the delay");
    assert_eq!(
        rig.metrics.systems_written.load(Relaxed),
        written + 3,
        "each system written once"
    );
    rig.assert_stored_as_in_memory(&cell);
    for _ in 0..5 {
        rig.after(3 * SEC);
    }
    assert_eq!(rig.batches(), before + 1, "and no second batch");
    assert_eq!(cell.unsaved(), 0);
    assert_eq!(rig.metrics.oldest_unsaved_age(), None);
}

#[test]
fn the_delay_counts_from_the_first_change_not_the_last() {
    let mut rig = rig(settings(|_| {}));
    let cell = rig.create("c", 10);
    let before = rig.batches();
    rig.order(&cell, 0, 0);
    rig.turn();
    rig.after(2 * SEC);
    rig.order(&cell, 1, 0);
    rig.after(SEC);
    assert_eq!(rig.batches(), before + 1, "3 s after the first change");
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn without_coalescing_a_change_commits_at_the_next_turn() {
    let mut rig = rig(settings(|s| {
        s.write_coalescing = false;
        s.coalescing_delay = Duration::from_secs(60);
    }));
    let cell = rig.create("p", 10);
    let before = rig.batches();
    rig.order(&cell, 0, 0);
    rig.turn();
    assert_eq!(rig.batches(), before + 1);
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn the_auto_save_interval_caps_the_coalescing_delay() {
    let mut rig = rig(settings(|s| {
        s.coalescing_delay = Duration::from_secs(60);
        s.auto_save_interval = Duration::from_secs(5);
    }));
    let cell = rig.create("cap", 10);
    let before = rig.batches();
    rig.order(&cell, 0, 0);
    rig.after(4_999 * MS);
    assert_eq!(rig.batches(), before);
    rig.after(MS);
    assert_eq!(
        rig.batches(),
        before + 1,
        "no change waits past the interval"
    );
}

#[test]
fn the_interval_saves_ticks_that_advanced_and_nothing_when_none_did() {
    let mut rig = rig(settings(|s| s.auto_save_interval = Duration::from_secs(10)));
    let cell = rig.create("t", 20);
    // A read at a later tick moves the galaxy's tick and dirties nothing.
    rig.with("t", |galaxy| galaxy.summaries(12_345).unwrap());
    assert_eq!(cell.unsaved(), 0);
    let (batches, rows, systems) = (
        rig.batches(),
        rig.metrics.rows_written.load(Relaxed),
        rig.metrics.systems_written.load(Relaxed),
    );
    rig.after(9_999 * MS);
    assert_eq!(rig.batches(), batches, "not before the interval");
    rig.after(MS);
    assert_eq!(rig.stored("t").unwrap().tick(), 12_345);
    assert_eq!(rig.batches(), batches + 1);
    assert_eq!(
        rig.metrics.rows_written.load(Relaxed),
        rows + 1,
        "only the galaxy row"
    );
    assert_eq!(rig.metrics.systems_written.load(Relaxed), systems);
    // Later intervals with nothing new write nothing, and open no transaction.
    for _ in 0..3 {
        rig.after(10 * SEC);
    }
    assert_eq!(rig.batches(), batches + 1);
    assert_eq!(rig.metrics.rows_written.load(Relaxed), rows + 1);
}

#[test]
fn a_flush_commits_at_once_with_the_ticks() {
    let mut rig = rig(settings(|_| {}));
    let cell = rig.create("f", 10);
    rig.order(&cell, 0, 5);
    rig.with("f", |galaxy| galaxy.summaries(7).unwrap());
    let answer = rig.flush(None);
    rig.turn();
    assert_eq!(
        answer.try_recv().unwrap(),
        Ok(1),
        "without waiting for the delay"
    );
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn retries_back_off_exponentially_up_to_the_interval() {
    let mut rig = rig(settings(|s| s.auto_save_interval = Duration::from_secs(1)));
    let cell = rig.create("slow", 10);
    rig.break_writes();
    rig.order(&cell, 0, 1);
    rig.after(SEC);
    assert_eq!(rig.errors(), 1, "the first attempt, at the delay");
    assert_eq!(rig.metrics.state(), PersistenceState::Retrying);
    assert_eq!(cell.unsaved(), 1, "its change went back to the galaxy");
    // 50 ms, doubling, capped at the interval (1 s).
    for (wait, attempts) in [
        (50, 2),
        (100, 3),
        (200, 4),
        (400, 5),
        (800, 6),
        (1000, 7),
        (1000, 8),
    ] {
        rig.after((wait - 1) * MS);
        assert_eq!(rig.errors(), attempts - 1, "not before {wait} ms");
        rig.after(MS);
        assert_eq!(rig.errors(), attempts, "after {wait} ms");
    }
    assert_eq!(rig.metrics.retries.load(Relaxed), rig.errors() - 1);
    // The game went on meanwhile; everything is saved once the database works again.
    rig.order(&cell, 1, 2);
    rig.mend_writes();
    rig.after(SEC);
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
    assert_eq!(rig.metrics.last_error(), None);
    assert_eq!(cell.unsaved(), 0);
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn a_flush_waits_through_failures_until_its_deadline() {
    let mut rig = rig(settings(|_| {}));
    let cell = rig.create("f", 10);
    rig.break_writes();
    rig.order(&cell, 0, 1);
    let without = rig.flush(None);
    let with = rig.flush(Some(2 * SEC));
    rig.turn();
    assert!(
        matches!(without.try_recv(), Ok(Err(PersistError::Failed(e))) if e.message.contains("injected")),
        "a flush without a deadline gets the first failure"
    );
    assert!(with.try_recv().is_err(), "one with a deadline waits");
    rig.after(1_999 * MS);
    assert!(with.try_recv().is_err());
    rig.after(MS);
    assert!(matches!(
        with.try_recv(),
        Ok(Err(PersistError::TimedOut { last_error: Some(e) })) if e.message.contains("injected")
    ));
    // A flush that outlives the failure is answered by the batch that commits.
    let later = rig.flush(Some(10 * SEC));
    rig.turn();
    rig.mend_writes();
    rig.after(SEC);
    assert_eq!(later.try_recv().unwrap(), Ok(1));
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn the_oldest_unsaved_change_ages_with_the_clock_until_it_is_committed() {
    // What `AppState::build` refuses orders by (GWAR_PERSISTENCE_MAX_UNSAVED_SECS), and
    // what health reads as lagging.
    let mut rig = rig(settings(|s| {
        s.coalescing_delay = Duration::from_millis(100)
    }));
    let cell = rig.create("aged", 10);
    assert_eq!(rig.metrics.oldest_unsaved_age(), None);
    rig.break_writes();
    rig.order(&cell, 0, 1);
    rig.after(100 * MS);
    assert_eq!(rig.errors(), 1);
    rig.after(300 * MS);
    rig.order(&cell, 1, 1);
    rig.turn();
    assert_eq!(
        rig.metrics.oldest_unsaved_age(),
        Some(400 * MS),
        "the first change's age, however many came after"
    );
    rig.clock.advance(SEC);
    assert_eq!(rig.metrics.oldest_unsaved_age(), Some(1_400 * MS));
    assert_eq!(
        rig.metrics.state(),
        PersistenceState::Retrying,
        "a failure says more"
    );
    rig.mend_writes();
    rig.after(SEC);
    assert_eq!(rig.metrics.oldest_unsaved_age(), None, "saved");
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn an_idle_clean_galaxy_is_evicted_at_the_first_interval_after_its_idle_time() {
    let mut rig = rig(settings(|s| {
        s.auto_save_interval = Duration::from_secs(10);
        s.galaxy_idle = Some(Duration::from_secs(25));
    }));
    let idle = rig.create("idle", 10);
    let busy = rig.create("busy", 10);
    rig.order(&idle, 0, 7);
    rig.after(10 * SEC);
    rig.after(10 * SEC);
    assert_eq!(rig.galaxies.len(), 2, "20 s idle: kept");
    rig.order(&busy, 0, 30);
    rig.after(10 * SEC);
    assert!(!rig.galaxies.is_live("idle"), "30 s idle: evicted");
    assert!(idle.is_evicted());
    assert!(rig.galaxies.is_live("busy"), "touched 10 s ago");
    assert_eq!(rig.metrics.galaxies_evicted_total.load(Relaxed), 1);
    rig.assert_stored_as_in_memory(&idle);
}

#[test]
fn a_dirty_galaxy_is_never_evicted_before_it_is_saved() {
    let mut rig = rig(settings(|s| {
        s.auto_save_interval = Duration::from_secs(1);
        s.galaxy_idle = Some(Duration::from_secs(1));
    }));
    let cell = rig.create("busy", 10);
    rig.break_writes();
    rig.order(&cell, 0, 5);
    for _ in 0..60 {
        rig.after(SEC);
    }
    assert!(rig.errors() > 1);
    assert!(rig.galaxies.is_live("busy"), "a minute idle, unsaved: kept");
    assert_eq!(cell.unsaved(), 1);
    rig.mend_writes();
    rig.after(SEC);
    assert_eq!(cell.unsaved(), 0, "saved first");
    rig.assert_stored_as_in_memory(&cell);
    rig.after(SEC);
    assert!(!rig.galaxies.is_live("busy"), "then evicted");
}

#[test]
fn a_deletion_reaches_the_disk_after_the_coalescing_delay_and_its_rows_go() {
    let mut rig = rig(settings(|_| {}));
    let cell = rig.create("doomed", 50);
    rig.order(&cell, 0, 1);
    // As the app deletes: gone from memory, deleting, and the writer told.
    rig.galaxies
        .delete(&WriterOnly, "doomed", |epoch| {
            rig.tx
                .send(Message::Delete {
                    name: "doomed".to_owned(),
                    epoch,
                })
                .unwrap()
        })
        .unwrap();
    assert!(cell.is_gone());
    rig.turn();
    rig.after(2_999 * MS);
    assert!(rig.galaxies.is_deleting("doomed"), "not committed yet");
    assert!(
        rig.metrics.oldest_unsaved_age().is_some(),
        "a deletion is unsaved too"
    );
    rig.after(MS);
    assert!(
        !rig.galaxies.is_deleting("doomed"),
        "committed at the delay"
    );
    assert_eq!(rig.metrics.oldest_unsaved_age(), None);
    assert!(rig.stored("doomed").is_none());
    // Its rows go in chunks, one per turn.
    rig.turn_until_purged();
    assert_eq!(rig.system_rows(), 0);
}

#[test]
fn the_phases_give_a_failed_cut_back_and_save_it_on_the_next_commit() {
    let mut rig = rig(settings(|_| {}));
    let cell = rig.create("phases", 10);
    rig.order(&cell, 0, 1);
    rig.order(&cell, 1, 1);
    rig.writer.drain();
    let collected = rig.writer.collect();
    assert_eq!(collected.galaxies.len(), 1);
    assert_eq!(collected.galaxies[0].systems.len(), 2);
    assert!(cell.peek(|g| g.changes().is_empty()), "the cut took them");
    assert_eq!(cell.unsaved(), 2, "in flight, still unsaved");
    // A change after the cut is not in it.
    rig.order(&cell, 2, 2);
    rig.break_writes();
    let result = rig.writer.commit(&collected);
    assert!(result.is_err());
    rig.writer.settle(collected, result);
    assert_eq!(cell.unsaved(), 3, "given back beside the later change");
    rig.mend_writes();
    rig.writer.drain();
    let collected = rig.writer.collect();
    assert_eq!(collected.galaxies[0].systems.len(), 3);
    let result = rig.writer.commit(&collected);
    assert!(result.is_ok());
    rig.writer.settle(collected, result);
    assert_eq!(cell.unsaved(), 0);
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn shutdown_reports_the_unsaved_galaxies_when_its_deadline_passes() {
    let mut rig = rig(settings(|_| {}));
    let one = rig.create("one", 10);
    let two = rig.create("two", 10);
    rig.create("clean", 10);
    rig.break_writes();
    rig.order(&one, 0, 1);
    rig.order(&two, 0, 1);
    rig.order(&two, 1, 1);
    let (reply, report) = bounded(1);
    rig.tx
        .send(Message::Shutdown {
            deadline: rig.clock.now() + 2 * SEC,
            reply,
        })
        .unwrap();
    assert!(!rig.turn());
    rig.clock.advance(2 * SEC);
    assert!(rig.turn(), "the writer stops at the deadline");
    let report = report.try_recv().unwrap();
    assert_eq!(
        report.unsaved,
        [("one".to_owned(), 1), ("two".to_owned(), 2)]
    );
    assert!(!report.all_saved());
}

#[test]
fn a_galaxy_the_database_cannot_take_is_held_back_and_the_others_are_saved() {
    let mut rig = rig(settings(|s| {
        s.coalescing_delay = SEC;
        s.auto_save_interval = 10 * SEC;
    }));
    let good = rig.create("good", 10);
    let bad = rig.create("bad", 10);
    // Its stored rows no longer match memory, and its cached ids are gone.
    rig.connection()
        .execute_batch("UPDATE systems SET x = x + 1000 WHERE galaxy_name = 'bad'")
        .unwrap();
    rig.writer.store.forget_ids("bad");
    rig.order(&good, 0, 1);
    rig.order(&bad, 0, 1);
    rig.after(SEC);
    assert_eq!(
        rig.errors(),
        1,
        "inconsistent once: a suspect, retried with fresh ids"
    );
    rig.after(super::lanes::FIRST_BACKOFF);
    assert_eq!(rig.errors(), 2, "inconsistent again: held back");
    rig.turn();
    rig.assert_stored_as_in_memory(&good);
    assert_eq!(good.unsaved(), 0, "the others are saved at once");
    assert_eq!(bad.unsaved(), 1, "its change stays in memory");
    assert_eq!(rig.metrics.state(), PersistenceState::Retrying);
    assert!(rig.metrics.last_error().unwrap().contains("bad"));
    // Later changes of the others are saved as usual; a flush says not all is saved.
    rig.order(&good, 1, 2);
    let answer = rig.flush(None);
    rig.turn();
    assert!(matches!(
        answer.try_recv(),
        Ok(Err(PersistError::Failed(_)))
    ));
    assert_eq!(good.unsaved(), 0);
    let batches = rig.batches();
    for _ in 0..5 {
        rig.turn();
    }
    assert_eq!(rig.batches(), batches, "no batch loop for the held galaxy");
    // Repaired, it is taken back at the next interval.
    rig.connection()
        .execute_batch("UPDATE systems SET x = x - 1000 WHERE galaxy_name = 'bad'")
        .unwrap();
    rig.after(10 * SEC);
    assert_eq!(bad.unsaved(), 0);
    rig.assert_stored_as_in_memory(&bad);
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
}

#[test]
fn a_batch_with_a_lost_galaxy_saves_the_others_at_once_and_drops_it_from_memory() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 60 * SEC);
    let kept = rig.create("kept", 10);
    let taken = rig.create("taken", 10);
    let stored_before = rig.stored("taken").unwrap();
    rig.order(&kept, 0, 1);
    rig.order(&taken, 0, 1);
    rig.order(&taken, 1, 1);
    fence.lock().taken.insert("taken".to_owned());
    let (batches, writes) = (rig.batches(), fence.lock().writes);
    let answer = rig.flush(None);
    rig.turn();
    assert_eq!(
        answer.try_recv().unwrap(),
        Err(PersistError::Lost(vec!["taken".to_owned()])),
        "the flush rode on the retry, which saved the other galaxy, but not everything \
         made before it was saved"
    );
    assert_eq!(
        fence.lock().writes,
        writes + 2,
        "refused, then retried at once"
    );
    assert_eq!(rig.batches(), batches + 1);
    rig.assert_stored_as_in_memory(&kept);
    assert_eq!(kept.unsaved(), 0);
    assert_eq!(
        rig.stored("taken").unwrap().systems(),
        stored_before.systems(),
        "nothing of the lost galaxy was written"
    );
    assert!(taken.is_gone() && !rig.galaxies.is_live("taken"));
    assert_eq!(taken.unsaved(), 0, "its changes are dropped");
    assert!(
        matches!(rig.try_read("taken"), Err(LifeError::Unknown(_))),
        "looked up afresh, not found in the lost cell"
    );
    assert_eq!(rig.lost(), 1);
    assert_eq!(rig.errors(), 0, "not a failure");
    assert!(rig.writer.failure.is_none(), "no backoff");
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
    assert_eq!(rig.metrics.oldest_unsaved_age(), None);
    // The other galaxy's later changes are saved as usual.
    rig.order(&kept, 1, 2);
    rig.after(3 * SEC);
    assert_eq!(kept.unsaved(), 0);
    rig.assert_stored_as_in_memory(&kept);
}

#[test]
fn leases_are_renewed_every_third_of_the_lease_and_a_lapsed_one_is_refused_until_renewed() {
    // A 6 s lease: renewals every 2 s, a galaxy served 4.8 s after a renewal was sent.
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 6 * SEC);
    let cell = rig.create("r", 10);
    assert_eq!(fence.lock().renewals, 0);
    rig.after(1_999 * MS);
    assert_eq!(fence.lock().renewals, 0, "not before a third of the lease");
    rig.after(MS);
    assert_eq!(fence.lock().renewals, 1, "at 2 s: served until 6.8 s");
    fence.lock().renewals_fail = true;
    rig.after(2 * SEC);
    assert_eq!(fence.lock().renewals, 2, "at 4 s, failed");
    rig.after(999 * MS);
    assert_eq!(fence.lock().renewals, 2);
    rig.after(MS);
    assert_eq!(fence.lock().renewals, 3, "retried after 1 s, not 2 s");
    rig.after(SEC);
    assert_eq!(fence.lock().renewals, 4);
    rig.after(799 * MS);
    assert!(rig.try_read("r").is_ok(), "at 6.799 s, still served");
    rig.clock.advance(MS);
    assert!(
        matches!(rig.try_read("r"), Err(LifeError::LeaseLapsed(_))),
        "at 6.8 s, the deadline of the last renewal that succeeded"
    );
    assert!(rig.galaxies.is_live("r"), "kept in memory meanwhile");
    assert_eq!(rig.errors(), 0, "failed renewals are no failed batches");
    assert!(rig.writer.failure.is_none());
    fence.lock().renewals_fail = false;
    rig.after(200 * MS);
    assert_eq!(fence.lock().renewals, 5);
    assert!(rig.try_read("r").is_ok(), "served again after a renewal");
    // A renewal that finds the galaxy taken drops it.
    fence.lock().taken.insert("r".to_owned());
    rig.after(2 * SEC);
    assert!(cell.is_gone() && !rig.galaxies.is_live("r"));
    assert_eq!(rig.lost(), 1);
}

#[test]
fn a_committed_batch_renews_the_leases_of_its_galaxies() {
    let (mut rig, fence) = fenced_rig(settings(|s| s.coalescing_delay = SEC), 6 * SEC);
    fence.lock().renewals_fail = true;
    let played = rig.create("played", 10);
    rig.create("idle", 10);
    rig.order(&played, 0, 1);
    rig.after(SEC);
    assert_eq!(played.unsaved(), 0, "committed at 1 s: served until 5.8 s");
    rig.after(3_800 * MS);
    assert!(
        matches!(rig.try_read("idle"), Err(LifeError::LeaseLapsed(_))),
        "4.8 s: the creation's lease, never renewed"
    );
    assert!(rig.try_read("played").is_ok());
    rig.clock.advance(SEC);
    assert!(matches!(
        rig.try_read("played"),
        Err(LifeError::LeaseLapsed(_))
    ));
}

#[test]
fn a_shutdown_on_an_interval_takes_no_job_back_after_its_final_batch() {
    let (mut rig, fence) = fenced_rig(settings(|s| s.auto_save_interval = 10 * SEC), 60 * SEC);
    let cell = rig.create("s", 10);
    rig.order(&cell, 0, 1);
    let asks = fence.lock().orphan_asks;
    // The final batch falls on the interval: its periodic work would run in that turn.
    rig.clock.advance(10 * SEC);
    let report = rig.shutdown(2 * SEC);
    assert!(rig.turn(), "the writer stops");
    assert!(report.try_recv().unwrap().all_saved());
    let fence = fence.lock();
    assert_eq!(fence.finals, 1);
    assert_eq!(fence.orphan_asks, asks, "no job taken after the release");
}

#[test]
fn the_final_batch_releases_every_galaxy_also_with_nothing_to_write() {
    for with_change in [false, true] {
        let (mut rig, fence) = fenced_rig(settings(|_| {}), 60 * SEC);
        let cell = rig.create("s", 10);
        if with_change {
            rig.order(&cell, 0, 1);
        }
        let writes = fence.lock().writes;
        let report = rig.shutdown(2 * SEC);
        assert!(rig.turn(), "the writer stops");
        assert!(report.try_recv().unwrap().all_saved());
        let fence = fence.lock();
        assert_eq!(
            fence.finals, 1,
            "one final batch (with a change: {with_change})"
        );
        assert_eq!(fence.writes, writes, "and no ordinary one");
        assert_eq!(fence.released, ["s"]);
        drop(fence);
        rig.assert_stored_as_in_memory(&cell);
    }
    // Without a lease (SQLite), nothing to write opens no transaction, as before.
    let mut rig = rig(settings(|_| {}));
    rig.create("s", 10);
    let batches = rig.batches();
    let report = rig.shutdown(2 * SEC);
    assert!(rig.turn());
    assert!(report.try_recv().unwrap().all_saved());
    assert_eq!(rig.batches(), batches);
}

#[test]
fn an_evicted_galaxy_is_no_longer_renewed() {
    let (mut rig, fence) = fenced_rig(
        settings(|s| {
            s.auto_save_interval = 10 * SEC;
            s.galaxy_idle = Some(15 * SEC);
        }),
        60 * SEC,
    );
    rig.create("idle", 10);
    rig.after(10 * SEC);
    assert!(fence.lock().disowned.is_empty());
    rig.after(10 * SEC);
    assert!(!rig.galaxies.is_live("idle"));
    assert_eq!(fence.lock().disowned, ["idle"]);
    assert!(
        fence.lock().released.is_empty(),
        "not released: its lease runs out"
    );
    assert!(!fence.lock().owned.contains_key("idle"));
}

#[test]
fn a_deletion_of_a_galaxy_another_daemon_took_is_dropped_with_its_removal() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 60 * SEC);
    rig.create("d", 10);
    rig.galaxies
        .delete(&WriterOnly, "d", |_| {
            rig.tx
                .send(Message::Delete {
                    name: "d".to_owned(),
                    epoch: Some(7),
                })
                .unwrap()
        })
        .unwrap();
    rig.turn();
    assert_eq!(
        fence.lock().owned.get("d"),
        Some(&7),
        "owned under the epoch the deletion took"
    );
    fence.lock().taken.insert("d".to_owned());
    rig.after(3 * SEC);
    assert!(
        !rig.galaxies.is_deleting("d"),
        "the name is no longer hidden: it is the other daemon's"
    );
    assert!(rig.writer.deletions.is_empty());
    assert!(rig.writer.jobs.is_empty(), "its removal is cancelled");
    assert_eq!(rig.lost(), 1);
    assert_eq!(rig.errors(), 0);
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
    assert_eq!(rig.metrics.oldest_unsaved_age(), None);
    for _ in 0..5 {
        rig.turn();
    }
    assert!(
        rig.stored("d").is_some(),
        "its rows are left to their owner"
    );
}

#[test]
fn the_removal_of_a_galaxy_another_daemon_took_is_dropped_not_retried() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 60 * SEC);
    rig.create("gone", 10);
    fence.lock().taken_while_purged.insert("gone".to_owned());
    rig.galaxies
        .delete(&WriterOnly, "gone", |_| {
            rig.tx
                .send(Message::Delete {
                    name: "gone".to_owned(),
                    epoch: None,
                })
                .unwrap()
        })
        .unwrap();
    rig.turn();
    rig.after(3 * SEC);
    assert!(!rig.galaxies.is_deleting("gone"), "the deletion committed");
    assert!(
        rig.writer.jobs.is_empty(),
        "its removal met the loss and was dropped"
    );
    assert!(
        rig.writer.job_failure.is_none(),
        "not a failure of bulk work"
    );
    assert_eq!((rig.lost(), rig.errors()), (1, 0));
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
}

#[test]
fn a_loss_with_unsaved_changes_fails_the_waiting_flushes_and_shows_in_the_shutdown_report() {
    // A 6 s lease: renewals every 2 s.
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 6 * SEC);
    let kept = rig.create("kept", 10);
    let taken = rig.create("taken", 10);
    rig.create("idle", 10);
    rig.order(&kept, 0, 1);
    rig.order(&taken, 0, 1);
    rig.order(&taken, 1, 1);
    // The renewal finds both taken: one with unsaved changes, one with none.
    fence
        .lock()
        .taken
        .extend(["taken".to_owned(), "idle".to_owned()]);
    let waiting = rig.flush(Some(10 * SEC));
    rig.after(2 * SEC);
    assert_eq!(rig.lost(), 2);
    assert_eq!(
        waiting.try_recv().unwrap(),
        Err(PersistError::Lost(vec!["taken".to_owned()])),
        "a flush waiting when changes were dropped is told, though its batch committed"
    );
    rig.assert_stored_as_in_memory(&kept);
    // A later flush is not: nothing made before it was dropped.
    rig.order(&kept, 1, 2);
    let later = rig.flush(None);
    rig.turn();
    assert_eq!(later.try_recv().unwrap(), Ok(1));
    let report = rig.shutdown(2 * SEC);
    assert!(rig.turn());
    let report = report.try_recv().unwrap();
    assert_eq!(
        report.lost,
        [("taken".to_owned(), 2)],
        "only the loss that dropped changes"
    );
    assert!(report.unsaved.is_empty() && report.unsaved_deletions.is_empty());
    assert_eq!(
        report.error,
        Some(PersistError::Lost(vec!["taken".to_owned()]))
    );
    assert!(!report.all_saved(), "acknowledged changes were dropped");
    assert!(taken.is_gone());
}

#[test]
fn a_lost_deletion_shows_in_the_shutdown_report() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 60 * SEC);
    rig.create("d", 10);
    rig.galaxies
        .delete(&WriterOnly, "d", |epoch| {
            rig.tx
                .send(Message::Delete {
                    name: "d".to_owned(),
                    epoch,
                })
                .unwrap()
        })
        .unwrap();
    fence.lock().taken.insert("d".to_owned());
    let answer = rig.flush(None);
    rig.turn();
    assert_eq!(
        answer.try_recv().unwrap(),
        Err(PersistError::Lost(vec!["d".to_owned()]))
    );
    let report = rig.shutdown(2 * SEC);
    assert!(rig.turn());
    let report = report.try_recv().unwrap();
    assert_eq!(report.lost, [("d".to_owned(), 0)]);
    assert!(!report.all_saved());
}

#[test]
fn an_empty_cut_does_not_move_the_lease_deadline() {
    let (mut rig, fence) = fenced_rig(settings(|s| s.coalescing_delay = SEC), 6 * SEC);
    fence.lock().renewals_fail = true;
    let cell = rig.create("e", 10);
    // A marker with nothing to cut (its changes gone, its tick saved): the batch's fence
    // covers no galaxy, so no lease was renewed.
    let writes = fence.lock().writes;
    let since = rig.clock.now();
    rig.tx.send(Message::Dirty { cell, since }).unwrap();
    rig.after(SEC);
    assert_eq!(
        fence.lock().writes,
        writes + 1,
        "the empty cut was committed"
    );
    rig.after(3_799 * MS);
    assert!(rig.try_read("e").is_ok(), "4.799 s: the creation's lease");
    rig.clock.advance(MS);
    assert!(
        matches!(rig.try_read("e"), Err(LifeError::LeaseLapsed(_))),
        "4.8 s: not moved to 5.8 s by the empty cut"
    );
}

#[test]
fn a_renewal_moves_only_the_deadlines_of_galaxies_the_store_owns() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 6 * SEC);
    rig.create("owned", 10);
    rig.create("slipped", 10);
    // The store no longer owns it (released, say), though it is still in memory.
    fence.lock().owned.remove("slipped");
    rig.after(2 * SEC);
    assert_eq!(fence.lock().renewals, 1, "at 2 s: served until 6.8 s");
    rig.after(2_800 * MS);
    assert!(rig.try_read("owned").is_ok());
    assert!(
        matches!(rig.try_read("slipped"), Err(LifeError::LeaseLapsed(_))),
        "4.8 s: the creation's lease, not renewed"
    );
    rig.after(2 * SEC);
    assert!(rig.try_read("owned").is_ok(), "renewed again");
}

#[test]
fn a_creation_whose_caller_has_gone_is_no_longer_renewed() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 60 * SEC);
    let mut galaxy = Galaxy::create("orphan", config(10), 1, 0).unwrap();
    galaxy.take_changes();
    let (reply, answer) = bounded(1);
    rig.tx
        .send(Message::Create {
            galaxy: Box::new(galaxy),
            durable: false,
            restoring: false,
            reply,
        })
        .unwrap();
    drop(answer);
    for _ in 0..100 {
        rig.turn();
        if rig.writer.jobs.is_empty() {
            break;
        }
    }
    assert!(rig.writer.jobs.is_empty());
    assert!(rig.stored("orphan").is_some(), "created");
    let fence = fence.lock();
    assert_eq!(
        fence.disowned,
        ["orphan"],
        "so another daemon can take it once its lease runs out"
    );
    assert!(!fence.owned.contains_key("orphan"));
}

#[test]
fn jobs_other_daemons_left_are_taken_over_every_interval() {
    let (mut rig, fence) = fenced_rig(settings(|s| s.auto_save_interval = 10 * SEC), 60 * SEC);
    // Another daemon's creation, killed after its first chunk: rows and a mark.
    let half = Galaxy::create("half", config(100), 1, 0).unwrap();
    let config_toml = half.config().to_toml();
    let new = NewGalaxy {
        name: half.name(),
        config_toml: &config_toml,
        tick: half.tick(),
        systems: half.systems(),
        rows: RowMask::new_system(half.rules()),
        restoring: false,
    };
    let mut progress = CreationProgress::default();
    rig.writer
        .store
        .create_chunk(&new, &mut progress, 10)
        .unwrap();
    let path = rig.dir.path().join("writer.db");
    let rows = |name: &str| -> i64 {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM systems WHERE galaxy_name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(rows("half"), 10);
    // This writer's own creation in progress, which the store hands over too (a slip a
    // real store never makes): left to its own job.
    let mut mine = Galaxy::create("mine", config(10_000), 1, 0).unwrap();
    mine.take_changes();
    let (reply, answer) = bounded(1);
    rig.tx
        .send(Message::Create {
            galaxy: Box::new(mine),
            durable: false,
            restoring: false,
            reply,
        })
        .unwrap();
    rig.turn();
    assert!(answer.try_recv().is_err(), "in progress");
    fence.lock().orphaned = vec![
        GalaxyJob::Creating("half".to_owned()),
        GalaxyJob::Creating("mine".to_owned()),
    ];
    rig.after(9 * SEC);
    assert_eq!(fence.lock().orphan_asks, 0, "not before the interval");
    rig.after(SEC);
    assert_eq!(fence.lock().orphan_asks, 1);
    assert_eq!(rig.writer.jobs.purges().collect::<Vec<_>>(), ["half"]);
    let created = loop {
        rig.turn();
        if let Ok(created) = answer.try_recv() {
            break created;
        }
    };
    assert!(created.is_ok(), "the creation went on");
    for _ in 0..100 {
        if rig.writer.jobs.is_empty() {
            break;
        }
        rig.turn();
    }
    assert_eq!(rows("half"), 0, "the abandoned creation's rows are gone");
    assert_eq!(rows("mine"), 10_000);
    rig.after(10 * SEC);
    assert_eq!(fence.lock().orphan_asks, 2, "asked every interval");
}

#[test]
fn a_take_a_load_did_not_keep_is_disowned_unless_the_galaxy_is_held() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 60 * SEC);
    rig.create("held", 10);
    for (name, epoch) in [("gone", 4), ("held", 1)] {
        rig.tx
            .send(Message::TakenUnused {
                name: name.to_owned(),
                epoch,
            })
            .unwrap();
    }
    rig.turn();
    let fence = fence.lock();
    assert_eq!(
        fence.disowned,
        ["gone"],
        "released by a clean stop, not renewed"
    );
    assert!(!fence.owned.contains_key("gone"));
    assert!(fence.owned.contains_key("held"), "in memory: still renewed");
}

/// A store failure keeps its kind and shows as it did, in the writer's errors too.
#[test]
fn a_failure_shows_as_the_error_did_and_keeps_its_kind() {
    let error = StoreError::Inconsistent {
        galaxy: "g".into(),
        reason: "no stored row for system (1, 2)".into(),
    };
    let failure = error.failure();
    assert_eq!(failure.kind, FailureKind::Inconsistent);
    let failed = PersistError::Failed(failure.clone());
    assert_eq!(
            failed.to_string(),
            "saving failed: galaxy 'g' in the database is inconsistent: no stored row for system (1, 2)"
        );
    let timed_out = PersistError::TimedOut {
        last_error: Some(failure),
    };
    assert_eq!(
        timed_out.to_string(),
        "not everything was saved before the deadline (last error: galaxy 'g' in the \
             database is inconsistent: no stored row for system (1, 2))"
    );
    let never = PersistError::TimedOut { last_error: None };
    assert_eq!(
        never.to_string(),
        "not everything was saved before the deadline (last error: none)"
    );
}

#[test]
fn saving_counts_as_stalled_from_the_first_failed_attempt_until_a_commit() {
    let mut rig = rig(settings(|s| s.coalescing_delay = SEC));
    let cell = rig.create("stall", 10);
    assert_eq!(rig.metrics.stalled_for(), None, "the creation was answered");
    rig.break_writes();
    rig.order(&cell, 0, 1);
    rig.after(SEC);
    assert_eq!(rig.errors(), 1);
    assert_eq!(rig.metrics.stalled_for(), Some(Duration::ZERO));
    rig.after(300 * MS);
    assert!(rig.errors() > 1, "retried meanwhile");
    assert_eq!(
        rig.metrics.stalled_for(),
        Some(300 * MS),
        "from the first attempt, not the last"
    );
    rig.mend_writes();
    rig.after(SEC);
    assert_eq!(cell.unsaved(), 0);
    assert_eq!(rig.metrics.stalled_for(), None, "a commit ends the stall");
}

impl Rig {
    /// Asks the writer to create galaxy `name` of `systems` systems; the answer comes on
    /// the returned channel.
    fn send_create(
        &self,
        name: &str,
        systems: u64,
    ) -> Receiver<Result<super::jobs::Created, PersistError>> {
        let mut galaxy = Galaxy::create(name, config(systems), 1, 0).unwrap();
        galaxy.take_changes();
        let (reply, answer) = bounded(1);
        let galaxy = Box::new(galaxy);
        self.tx
            .send(Message::Create {
                galaxy,
                durable: false,
                restoring: false,
                reply,
            })
            .unwrap();
        answer
    }

    /// Deletes galaxy `name` as the app does: gone from memory, and the writer told.
    fn delete(&self, name: &str) {
        self.galaxies
            .delete(&WriterOnly, name, |epoch| {
                let name = name.to_owned();
                self.tx.send(Message::Delete { name, epoch }).unwrap()
            })
            .unwrap();
    }

    /// Systems stored for galaxy `name`, whatever its state.
    fn stored_systems(&self, name: &str) -> i64 {
        rusqlite::Connection::open(self.dir.path().join("writer.db"))
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM systems WHERE galaxy_name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
    }
}

#[test]
fn a_store_seen_down_is_probed_often_and_retried_as_soon_as_it_answers() {
    // The default cap of the backoff: 30 s, the auto-save interval.
    let (mut rig, reach) = probed_rig(settings(|s| s.auto_save_interval = Duration::from_secs(30)));
    let cell = rig.create("g", 10);
    rig.break_writes();
    reach.lock().down = true;
    rig.order(&cell, 0, 1);
    rig.after(3 * SEC);
    assert_eq!(rig.errors(), 1);
    assert_eq!(rig.metrics.state(), PersistenceState::Retrying);
    // 40 s down: the batch backs off towards 30 s, the probe keeps its half second.
    for _ in 0..400 {
        rig.after(100 * MS);
    }
    let attempts = rig.errors();
    let probes = reach.lock().probes;
    assert!(
        attempts <= 10,
        "the full batch backs off: {attempts} attempts"
    );
    assert!(probes >= 60, "probed about every 500 ms: {probes} probes");
    let retry_at = rig.writer.failure.as_ref().unwrap().retry_at;
    let now = rig.clock.now();
    // The database answers again; the batch's own retry is seconds away.
    reach.lock().down = false;
    rig.mend_writes();
    let mut waited = Duration::ZERO;
    while cell.unsaved() > 0 {
        assert!(
            waited < SEC,
            "not saved within a second of the database's return"
        );
        rig.after(10 * MS);
        waited += 10 * MS;
    }
    assert!(
        waited <= super::lanes::PROBE_INTERVAL,
        "saved at the next probe, {waited:?} after the return"
    );
    assert!(
        retry_at > rig.clock.now(),
        "before the backoff's retry, {:?} after the return",
        retry_at - now
    );
    assert_eq!(rig.errors(), attempts, "no failed attempt on the way");
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
    assert_eq!(rig.metrics.last_error(), None);
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn a_store_that_answers_while_refusing_the_batch_keeps_the_backoff() {
    let (mut rig, reach) = probed_rig(settings(|s| s.auto_save_interval = Duration::from_secs(30)));
    let cell = rig.create("g", 10);
    rig.break_writes();
    rig.order(&cell, 0, 1);
    rig.after(3 * SEC);
    for _ in 0..400 {
        rig.after(100 * MS);
    }
    // 50 ms doubling: attempts at 0.05, 0.15, 0.35, 0.75, 1.55, 3.15, 6.35, 12.75 and
    // 25.55 s after the first, the next at 51.15 s.
    assert_eq!(rig.errors(), 10, "the backoff's schedule, no more");
    assert!(reach.lock().probes >= 60, "probed all along");
    assert_eq!(cell.unsaved(), 1);
    rig.mend_writes();
    for _ in 0..120 {
        rig.after(100 * MS);
    }
    assert_eq!(cell.unsaved(), 0, "at the backoff's retry");
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
}

#[test]
fn bulk_work_waits_for_room_while_orders_keep_saving_and_creations_are_answered() {
    let (mut rig, reach) = probed_rig(settings(|_| {}));
    let cell = rig.create("a", 10);
    rig.create("b", 10);
    reach.lock().no_room = true;
    // A creation while there is no room: refused at once, nothing written.
    let refused = rig.send_create("c", 10);
    rig.turn();
    match refused.try_recv() {
        Ok(Err(PersistError::Failed(failure))) => {
            assert_eq!(failure.kind, FailureKind::Full, "{failure}");
            assert!(
                failure.message.contains("kept for saving orders"),
                "{failure}"
            );
        }
        other => panic!("refused at once, not {other:?}"),
    }
    assert_eq!(rig.stored_systems("c"), 0);
    assert!(rig.writer.job_failure.is_none(), "nothing left waiting");
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);

    // A removal waits for room; its lane shows why.
    rig.delete("b");
    rig.turn();
    rig.after(3 * SEC);
    assert!(
        rig.stored("b").is_none(),
        "the deletion itself is a batch: committed"
    );
    rig.turn();
    assert_eq!(rig.stored_systems("b"), 10, "its rows wait");
    assert_eq!(rig.metrics.state(), PersistenceState::Retrying);
    assert!(rig
        .metrics
        .last_error()
        .unwrap()
        .contains("kept for saving orders"));
    // Orders keep saving meanwhile, and a creation gets its answer.
    let waiting = rig.send_create("d", 10);
    rig.order(&cell, 0, 1);
    rig.turn();
    rig.after(3 * SEC);
    assert_eq!(cell.unsaved(), 0, "orders first");
    rig.assert_stored_as_in_memory(&cell);
    assert!(matches!(
        waiting.try_recv(),
        Ok(Err(PersistError::Failed(f))) if f.kind == FailureKind::Full
    ));
    assert_eq!(rig.stored_systems("b"), 10, "still waiting");

    // Room again: the removal runs at the next probe, and health is healthy.
    reach.lock().no_room = false;
    let mut waited = Duration::ZERO;
    while rig.stored_systems("b") > 0 {
        assert!(
            waited < SEC,
            "the removal did not run within a second of the room's return"
        );
        rig.after(10 * MS);
        waited += 10 * MS;
    }
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
    assert_eq!(rig.metrics.last_error(), None);
    rig.create("e", 10);
}

#[test]
fn a_creation_that_runs_out_of_room_midway_is_refused_and_its_rows_removed_later() {
    let (mut rig, reach) = probed_rig(settings(|_| {}));
    // Chunks start at 1 000 systems: this creation takes three.
    let answer = rig.send_create("big", 2_500);
    rig.turn();
    let written = rig.stored_systems("big");
    assert!(written > 0 && written < 2_500, "one chunk in: {written}");
    reach.lock().no_room = true;
    rig.turn();
    assert!(matches!(
        answer.try_recv(),
        Ok(Err(PersistError::Failed(f))) if f.kind == FailureKind::Full
    ));
    for _ in 0..10 {
        rig.after(100 * MS);
    }
    assert_eq!(
        rig.stored_systems("big"),
        written,
        "its removal waits for room"
    );
    reach.lock().no_room = false;
    for _ in 0..100 {
        rig.after(10 * MS);
    }
    assert_eq!(rig.stored_systems("big"), 0);
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
}

#[test]
fn a_creation_whose_chunks_answers_were_lost_is_settled_and_succeeds() {
    let (mut rig, lose) = losing_rig(settings(|_| {}));
    // Chunks start at 1 000 systems and at most double: this creation takes at least
    // four, so the second is not the last.
    let answer = rig.send_create("big", 10_000);
    rig.turn();
    assert!(rig.stored_systems("big") > 0, "one chunk in");
    // A middle chunk's answer is lost, and the last one's (the galaxy then exists).
    {
        let mut lose = lose.lock();
        lose.next = true;
        lose.last = true;
    }
    for _ in 0..200 {
        if !answer.is_empty() {
            break;
        }
        rig.after(100 * MS);
    }
    assert_eq!(
        lose.lock().lost,
        2,
        "a middle chunk's answer and the last one's"
    );
    assert_eq!(lose.lock().settled, 2, "each settled by the next call");
    let created = answer.try_recv().unwrap();
    assert!(
        created.is_ok(),
        "created, never refused: {:?}",
        created.err()
    );
    assert!(rig.writer.jobs.is_empty(), "no removal queued");
    for _ in 0..10 {
        rig.after(100 * MS);
    }
    assert_eq!(rig.stored_systems("big"), 10_000, "kept whole");
    assert!(rig.stored("big").is_some(), "it exists");
    assert_eq!(rig.metrics.state(), PersistenceState::Healthy);
}

#[test]
fn a_creation_whose_only_chunks_answer_was_lost_is_not_refused_for_lack_of_room() {
    let (mut rig, lose) = losing_rig(settings(|_| {}));
    lose.lock().last = true;
    let answer = rig.send_create("small", 10);
    rig.turn();
    assert_eq!(lose.lock().lost, 1);
    assert!(
        answer.is_empty(),
        "not answered while its outcome is unknown"
    );
    // Creations not begun are refused while bulk work lacks room; this one may exist.
    let failure = StoreError::Unreachable("injected".into()).failure();
    assert_eq!(rig.writer.jobs.refuse_waiting_creations(&failure), 0);
    lose.lock().last = false;
    for _ in 0..20 {
        if !answer.is_empty() {
            break;
        }
        rig.after(100 * MS);
    }
    assert!(answer.try_recv().unwrap().is_ok(), "created");
    assert_eq!(rig.stored_systems("small"), 10);
}

#[test]
fn durable_requests_commit_at_once_in_one_synced_commit_with_every_waiting_change() {
    let (mut rig, reach) = probed_rig(settings(|_| {}));
    let a = rig.create("a", 10);
    let b = rig.create("b", 10);
    rig.order(&a, 0, 1);
    rig.order(&b, 0, 1);
    reach.lock().calls.clear();
    // Two durable requests waiting together, long before the coalescing delay.
    let first = rig.durable(&a);
    let second = rig.durable(&b);
    rig.turn();
    assert_eq!(
        first.try_recv().unwrap(),
        Ok(2),
        "both galaxies, one commit"
    );
    assert_eq!(second.try_recv().unwrap(), Ok(2));
    assert_eq!(reach.lock().calls, ["synced", "write", "sync", "ordinary"]);
    rig.assert_stored_as_in_memory(&a);
    rig.assert_stored_as_in_memory(&b);
    let durable = rig.metrics.snapshot().durable;
    assert_eq!((durable.requests, durable.commits), (2, 1));
    assert_eq!((durable.per_commit_sum, durable.per_commit[1]), (2, 1));
    assert_eq!((durable.wait_count, durable.failed), (2, 0));

    // An ordinary change after them waits for its delay, unsynced, as ever.
    reach.lock().calls.clear();
    rig.order(&a, 1, 2);
    rig.turn();
    assert!(reach.lock().calls.is_empty(), "nothing before the delay");
    rig.after(3 * SEC);
    assert_eq!(reach.lock().calls, ["write"]);
}

#[test]
fn a_durable_request_whose_change_an_ordinary_commit_carried_syncs_that_commit() {
    let (mut rig, reach) = probed_rig(settings(|_| {}));
    let cell = rig.create("s", 10);
    rig.order(&cell, 0, 1);
    rig.after(3 * SEC);
    assert_eq!(cell.unsaved(), 0, "committed, unsynced");
    reach.lock().calls.clear();
    let wal = rig.dir.path().join("writer.db-wal");
    let before = std::fs::metadata(&wal).unwrap().len();
    let answer = rig.durable(&cell);
    rig.turn();
    assert_eq!(answer.try_recv().unwrap(), Ok(0));
    assert_eq!(reach.lock().calls, ["synced", "write", "sync", "ordinary"]);
    // The batch had only an empty cut, which writes nothing to the WAL: the sync wrote
    // (and synced) a commit of its own.
    assert!(std::fs::metadata(&wal).unwrap().len() > before);
}

#[test]
fn a_failed_durable_commit_is_answered_at_once_and_its_change_saved_later() {
    let (mut rig, reach) = probed_rig(settings(|_| {}));
    let cell = rig.create("f", 10);
    rig.break_writes();
    rig.order(&cell, 0, 1);
    let answer = rig.durable(&cell);
    rig.turn();
    assert!(
        matches!(answer.try_recv(), Ok(Err(PersistError::Failed(e))) if e.message.contains("injected")),
        "the first failure answers"
    );
    assert_eq!(rig.metrics.snapshot().durable.failed, 1);
    assert_eq!(cell.unsaved(), 1, "kept in memory");
    assert_eq!(
        reach.lock().calls.last(),
        Some(&"ordinary"),
        "back to ordinary"
    );
    rig.mend_writes();
    rig.after(3 * SEC);
    assert_eq!(cell.unsaved(), 0, "saved by a retry, at its delay");
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn a_durable_creation_commits_its_chunks_synced_and_an_ordinary_one_does_not() {
    let (mut rig, reach) = probed_rig(settings(|_| {}));
    rig.create_as("plain", 10, false);
    assert_eq!(reach.lock().calls, ["create"]);
    reach.lock().calls.clear();
    let cell = rig.create_as("durable", 10, true);
    assert_eq!(reach.lock().calls, ["synced", "create", "ordinary"]);
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn a_durable_order_whose_dirty_marker_is_still_on_its_way_is_in_the_commit_that_answers_it() {
    let (mut rig, reach) = probed_rig(settings(|_| {}));
    let cell = rig.create("race", 10);
    // Another thread made the galaxy dirty and has not sent its marker yet; the durable
    // order's own change finds it dirty, so it sends none: only its flush arrives.
    rig.with("race", |galaxy| {
        let system = galaxy.systems()[0];
        let (x, y) = (system.x.into(), system.y.into());
        galaxy.build(1, x, y, StructureKind::Colony).unwrap();
    });
    reach.lock().calls.clear();
    let answer = rig.durable(&cell);
    rig.turn();
    assert_eq!(
        answer.try_recv().unwrap(),
        Ok(1),
        "the change rode the synced commit"
    );
    assert_eq!(reach.lock().calls, ["synced", "write", "sync", "ordinary"]);
    assert_eq!(cell.unsaved(), 0);
    rig.assert_stored_as_in_memory(&cell);
}

#[test]
fn a_durable_order_is_answered_for_its_own_galaxy_when_another_is_lost() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 60 * SEC);
    let kept = rig.create("kept", 10);
    let taken = rig.create("taken", 10);
    rig.order(&kept, 0, 1);
    rig.order(&taken, 0, 1);
    fence.lock().taken.insert("taken".to_owned());
    let on_kept = rig.durable(&kept);
    let on_taken = rig.durable(&taken);
    rig.turn();
    assert_eq!(
        on_kept.try_recv().unwrap(),
        Ok(1),
        "saved and synced: a 201"
    );
    assert_eq!(
        on_taken.try_recv().unwrap(),
        Err(PersistError::Lost(vec!["taken".to_owned()])),
        "dropped with its galaxy: never a 201"
    );
    // A durable order that reaches the writer after its galaxy was lost with it.
    let late = rig.durable(&taken);
    rig.turn();
    assert_eq!(
        late.try_recv().unwrap(),
        Err(PersistError::Lost(vec!["taken".to_owned()]))
    );
}

/// Archives galaxy `name` as the engine does: taken out of memory and encoded, then
/// stored by the writer in the turn that reads the message; put back when refused (but
/// not when another daemon took it).
fn archive(rig: &mut Rig, name: &str) -> Result<(), ArchiveRefused> {
    let galaxies = rig.galaxies.clone();
    let archiving = galaxies.take_for_archive(name)?;
    let galaxy = archiving.galaxy();
    let body: Arc<[u8]> = crate::archive::encode(galaxy).into();
    let systems = galaxy.systems().len() as u64;
    let (reply, answer) = bounded(1);
    let name = name.to_owned();
    let message = Message::Archive {
        name,
        systems,
        body,
        reply,
    };
    rig.tx.send(message).unwrap();
    rig.turn();
    let stored = answer
        .try_recv()
        .expect("answered in the turn that read it");
    let lost = matches!(&stored, Err(ArchiveRefused::Failed { failure, .. })
        if failure.kind == FailureKind::Lost);
    if stored.is_err() && !lost {
        let cell = archiving.put_back();
        let since = rig.clock.now();
        rig.tx.send(Message::Dirty { cell, since }).unwrap();
    }
    stored
}

fn stored_archive(rig: &Rig, name: &str) -> Option<Galaxy> {
    let reader = SqliteReader::open(&rig.dir.path().join("writer.db")).unwrap();
    let body = reader.read_archive(name).unwrap()?;
    Some(crate::archive::decode(&body).unwrap())
}

#[test]
fn an_archive_holds_the_unsaved_orders_its_rows_go_and_a_restore_brings_it_back() {
    let mut rig = rig(settings(|_| {}));
    let cell = rig.create("old", 50);
    rig.order(&cell, 3, 7);
    let in_memory = cell.peek(Galaxy::clone);
    archive(&mut rig, "old").unwrap();
    assert!(cell.is_gone() && rig.try_read("old").is_err());
    assert!(
        rig.stored("old").is_none(),
        "invisible from the archive's commit"
    );
    let kept = stored_archive(&rig, "old").expect("archived");
    assert_eq!(
        kept.systems(),
        in_memory.systems(),
        "the unsaved order included"
    );
    assert_eq!(kept.tick(), 7);
    assert_eq!(
        rig.metrics.oldest_unsaved_age(),
        None,
        "nothing left to save"
    );
    rig.turn_until_purged();
    assert_eq!(rig.system_rows(), 0, "its live rows are purged");
    // The restore: a creation whose last chunk deletes the archive.
    let (reply, answer) = bounded(1);
    let galaxy = Box::new(kept);
    let restore = Message::Create {
        galaxy,
        durable: false,
        restoring: true,
        reply,
    };
    rig.tx.send(restore).unwrap();
    let restored = loop {
        rig.turn();
        if let Ok(created) = answer.try_recv() {
            break created.unwrap();
        }
    };
    assert_eq!(restored.galaxy.systems(), in_memory.systems());
    assert_eq!(rig.stored("old").unwrap().systems(), in_memory.systems());
    assert!(
        stored_archive(&rig, "old").is_none(),
        "the archive went with it"
    );
}

#[test]
fn a_refused_archive_leaves_the_galaxy_live_and_its_orders_are_saved() {
    let mut rig = rig(settings(|_| {}));
    let cell = rig.create("kept", 20);
    rig.order(&cell, 0, 5);
    rig.connection()
        .execute_batch(
            "CREATE TEMP TRIGGER fail_archives BEFORE INSERT ON main.galaxy_archives
               BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let refused = archive(&mut rig, "kept");
    assert!(
        matches!(refused, Err(ArchiveRefused::Failed { .. })),
        "{refused:?}"
    );
    assert!(stored_archive(&rig, "kept").is_none());
    assert_eq!(
        rig.try_read("kept").unwrap(),
        5,
        "live again, its order kept"
    );
    // Within the loss window of the order, as if nothing had happened.
    rig.after(3 * Duration::from_secs(1));
    let cell = rig.cell("kept");
    rig.assert_stored_as_in_memory(&cell);
    assert!(matches!(
        archive(&mut rig, "missing"),
        Err(ArchiveRefused::Life(LifeError::Unknown(_)))
    ));
}

#[test]
fn an_archive_of_a_galaxy_another_daemon_took_is_lost_and_its_changes_reported() {
    let (mut rig, fence) = fenced_rig(settings(|_| {}), 6 * SEC);
    let taken = rig.create("taken", 10);
    rig.order(&taken, 0, 1);
    fence.lock().taken.insert("taken".to_owned());
    let refused = archive(&mut rig, "taken");
    assert!(
        matches!(&refused, Err(ArchiveRefused::Failed { failure, .. }) if failure.kind == FailureKind::Lost),
        "{refused:?}"
    );
    assert_eq!(rig.lost(), 1);
    let report = rig.shutdown(2 * SEC);
    assert!(rig.turn());
    let report = report.try_recv().unwrap();
    assert_eq!(
        report.lost,
        [("taken".to_owned(), 1)],
        "its order was dropped"
    );
    assert!(!report.all_saved());
}
