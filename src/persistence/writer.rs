//! The writer thread: the only code that writes to the database.
//!
//! One dedicated OS thread owns the [`WriteStore`]. Game threads never wait on it:
//! they record changes in their galaxy (under the galaxy's lock) and, when a galaxy goes
//! from clean to dirty, send a marker through a crossbeam channel. The writer batches:
//! with coalescing on, a batch commits `coalescing_delay` after its first change; with it
//! off, as soon as the writer reaches the change (whatever queued meanwhile rides along).
//!
//! A batch is a consistent cut: for each galaxy with work, the writer locks it, takes its
//! change set and copies exactly those rows in the same lock hold, then unlocks; SQL runs
//! with no galaxy locked. A failed batch gives its changes back to their galaxies, so
//! nothing is dropped, and is retried with exponential backoff capped at the auto-save
//! interval. Shutdown always ends with a final flush bounded by its deadline.
//!
//! Creating and deleting whole galaxies are bulk jobs ([`super::jobs`]): a deletion is
//! committed by the next batch like any change (it marks the galaxy `deleting`), and the
//! rows of deletions and creations are written or removed one bounded chunk per turn of
//! the loop, after the batch that is due, so no galaxy's loss window waits behind another
//! galaxy's bulk work for more than a chunk. Messages (pings included) are read between
//! chunks, and shutdown stops a creation at a chunk boundary.
//!
//! The writer knows its database only through [`WriteStore`]: after each commit it gives
//! the store a turn for upkeep ([`WriteStore::after_commit`]; SQLite's asks its checkpoint
//! thread for a WAL checkpoint when due). Periodic work (every auto-save interval) saves
//! galaxy ticks that advanced, gives the store its periodic upkeep
//! ([`WriteStore::maintain`]), and evicts clean idle galaxies: only the writer can know
//! that a galaxy has no batch in flight. Lock order: a galaxy's lock, then (for
//! eviction) the registry's; never a galaxy lock during SQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::jobs::{Creation, CreationReply, Finished, Jobs};
use super::metrics::Metrics;
use super::store::{
    BusyDeadline, GalaxyJob, GalaxyRows, RowIds, StoreError, StoreFailure, StoreWork, WriteStats,
    WriteStore,
};
use crate::galaxies::{GalaxyCell, Settled, WriterSide};
use crate::model::{Changes, Galaxy};
use crate::settings::PersistenceSettings;

const LOG: &str = "galactic_war::persistence";

/// The first retry waits this long; each further failure doubles it, up to the auto-save
/// interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Why a flush, creation or shutdown did not save everything. A store's failure keeps its
/// kind ([`StoreFailure::kind`]: busy, full, file gone, inconsistent…) across the thread.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    #[error("saving failed: {0}")]
    Failed(StoreFailure),
    #[error("not everything was saved before the deadline (last error: {})", .last_error.as_ref().map_or("none", |e| e.message.as_str()))]
    TimedOut { last_error: Option<StoreFailure> },
    #[error("the persistence writer has stopped")]
    Stopped,
}

/// What the final flush left unsaved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Galaxies with unsaved systems, and how many, sorted by name.
    pub unsaved: Vec<(String, usize)>,
    /// Deletions that never reached the database.
    pub unsaved_deletions: Vec<String>,
    pub error: Option<PersistError>,
}

impl ShutdownReport {
    pub fn all_saved(&self) -> bool {
        self.unsaved.is_empty() && self.unsaved_deletions.is_empty() && self.error.is_none()
    }
}

pub(crate) enum Message {
    /// A galaxy went from clean to dirty at `since`.
    Dirty {
        cell: Arc<GalaxyCell>,
        since: Instant,
    },
    Create {
        galaxy: Box<Galaxy>,
        reply: CreationReply,
    },
    /// Refuse creations from now on, and the ones in progress (the daemon is stopping).
    StopCreating,
    /// The row ids a load read, for the cache (sent before the galaxy is in memory).
    AdoptIds {
        name: String,
        ids: RowIds,
    },
    Delete {
        name: String,
    },
    Flush {
        deadline: Option<Instant>,
        reply: Sender<Result<u64, PersistError>>,
    },
    Shutdown {
        deadline: Instant,
        reply: Sender<ShutdownReport>,
    },
    /// Work on the writer's store itself, between batches (maintenance, fault injection).
    Exec(StoreWork),
}

/// The handle game threads use to reach the writer thread.
///
/// Only the writer thread touches the read-write connection. Sending never blocks (the
/// channel is unbounded, but a galaxy sends at most one marker per clean→dirty transition,
/// so its length is bounded by the number of galaxies plus pending requests). Dropping
/// every handle disconnects the channel, which the writer treats like a shutdown.
pub struct WriterHandle {
    tx: Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shutdown_timeout: Duration,
    /// Set at shutdown, so a batch waiting on a locked database gives up in time.
    busy_deadline: Arc<BusyDeadline>,
    /// What the final flush left unsaved, once it ran.
    report: Mutex<Option<ShutdownReport>>,
}

/// What the writer takes over from the engine that opened the database.
pub(crate) struct WriterDatabase {
    /// The store the writer thread owns.
    pub store: Box<dyn WriteStore>,
    /// Set at shutdown; the store's waits end there.
    pub busy_deadline: Arc<BusyDeadline>,
    /// Creations and deletions a previous run left unfinished.
    pub unfinished: Vec<GalaxyJob>,
}

impl WriterHandle {
    /// Starts the writer thread on `database`.
    pub(crate) fn spawn(
        database: WriterDatabase,
        settings: PersistenceSettings,
        galaxies: WriterSide,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<WriterHandle> {
        let WriterDatabase {
            store,
            busy_deadline,
            unfinished,
        } = database;
        let (tx, rx) = unbounded();
        let shutdown_timeout = settings.shutdown_timeout;
        let now = Instant::now();
        let mut jobs = Jobs::default();
        for job in unfinished {
            let name = match job {
                GalaxyJob::Creating(name) => {
                    log::warn!(target: LOG, "galaxy '{name}': its creation was interrupted; removing what was written");
                    name
                }
                GalaxyJob::Deleting(name) => {
                    log::info!(target: LOG, "galaxy '{name}': finishing its deletion");
                    name
                }
            };
            jobs.purge(name);
        }
        let writer = Writer {
            jobs,
            creating: true,
            next_interval: now + settings.auto_save_interval,
            store,
            rx,
            settings,
            galaxies,
            metrics,
            pending: HashMap::new(),
            deletions: Vec::new(),
            deleted_since: None,
            saved_ticks: HashMap::new(),
            tickets: Vec::new(),
            failure: None,
            job_failure: None,
            ticks_due: false,
            last_commit: None,
            exit: None,
        };
        let thread = std::thread::Builder::new()
            .name("gwar-writer".into())
            .spawn(move || writer.run())?;
        Ok(WriterHandle {
            tx,
            thread: Mutex::new(Some(thread)),
            shutdown_timeout,
            busy_deadline,
            report: Mutex::new(None),
        })
    }

    pub(crate) fn mark_dirty(&self, cell: Arc<GalaxyCell>, since: Instant) {
        if self.tx.send(Message::Dirty { cell, since }).is_err() {
            log::error!(target: LOG, "the writer has stopped; changes stay in memory unsaved");
        }
    }

    /// Writes a new galaxy, in chunks between other galaxies' batches, and returns it once
    /// its last chunk is committed (it is invisible in the database until then).
    pub(crate) fn create(&self, galaxy: Box<Galaxy>) -> Result<Box<Galaxy>, PersistError> {
        let (reply, answer) = bounded(1);
        self.tx
            .send(Message::Create { galaxy, reply })
            .map_err(|_| PersistError::Stopped)?;
        answer.recv().map_err(|_| PersistError::Stopped)?
    }

    /// Refuses creations from now on and stops those in progress at their next chunk, so
    /// that a stopping daemon's requests end; their rows are removed at the next start.
    pub fn stop_creating(&self) {
        let _ = self.tx.send(Message::StopCreating);
    }

    /// Hands the writer the row ids a load read for galaxy `name`, so that its first save
    /// needs no look-up. Send it before the galaxy can change, and never for a galaxy
    /// deleted since it was read (see [`super::LoadTicket::publish`]).
    pub(crate) fn adopt_ids(&self, name: String, ids: RowIds) {
        let _ = self.tx.send(Message::AdoptIds { name, ids });
    }

    pub(crate) fn delete(&self, name: String) {
        if self.tx.send(Message::Delete { name }).is_err() {
            log::error!(target: LOG, "the writer has stopped; a deletion was not saved");
        }
    }

    /// Returns once every change made before the call is committed (with the number of
    /// systems the answering batch wrote), or with the error that stopped it. Without a
    /// timeout, the first failed attempt answers; with one, it retries until then.
    pub fn flush(&self, timeout: Option<Duration>) -> Result<u64, PersistError> {
        let (reply, answer) = bounded(1);
        let deadline = timeout.map(|t| Instant::now() + t);
        self.tx
            .send(Message::Flush { deadline, reply })
            .map_err(|_| PersistError::Stopped)?;
        answer.recv().map_err(|_| PersistError::Stopped)?
    }

    /// Runs `work` on the writer thread with its store, between batches, and returns its
    /// result. For maintenance and fault injection; the store must be left as found.
    pub(crate) fn exec<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut dyn WriteStore) -> T + Send + 'static,
    ) -> Result<T, PersistError> {
        let (reply, answer) = bounded(1);
        let job = move |store: &mut dyn WriteStore| {
            let _ = reply.send(work(store));
        };
        self.tx
            .send(Message::Exec(Box::new(job)))
            .map_err(|_| PersistError::Stopped)?;
        answer.recv().map_err(|_| PersistError::Stopped)
    }

    /// True when the writer thread answers within `timeout`: it is alive and not stuck in
    /// a batch (a batch waits at most SQLite's busy timeout per attempt).
    pub fn ping(&self, timeout: Duration) -> bool {
        let (reply, answer) = bounded(1);
        let job = move |_: &mut dyn WriteStore| {
            let _ = reply.send(());
        };
        self.tx.send(Message::Exec(Box::new(job))).is_ok() && answer.recv_timeout(timeout).is_ok()
    }

    /// The final flush, bounded by the shutdown timeout, then the thread ends. Safe to
    /// call more than once: later calls (which wait for the first) return its report.
    pub fn shutdown(&self) -> ShutdownReport {
        let mut running = self.thread.lock();
        let Some(thread) = running.take() else {
            return self.report.lock().clone().unwrap_or_default();
        };
        let (reply, answer) = bounded(1);
        let deadline = Instant::now() + self.shutdown_timeout;
        self.busy_deadline.set(deadline);
        let report = match self.tx.send(Message::Shutdown { deadline, reply }) {
            Ok(()) => answer.recv().unwrap_or(ShutdownReport {
                error: Some(PersistError::Stopped),
                ..ShutdownReport::default()
            }),
            Err(_) => ShutdownReport {
                error: Some(PersistError::Stopped),
                ..ShutdownReport::default()
            },
        };
        if thread.join().is_err() {
            log::error!(target: LOG, "the writer thread panicked");
        }
        *self.report.lock() = Some(report.clone());
        report
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        if self.thread.lock().is_some() {
            self.shutdown();
        }
    }
}

struct Pending {
    cell: Arc<GalaxyCell>,
    since: Instant,
}

enum TicketReply {
    Flush(Sender<Result<u64, PersistError>>),
    Shutdown(Sender<ShutdownReport>),
}

struct Ticket {
    deadline: Option<Instant>,
    reply: TicketReply,
}

/// The two kinds of transaction the writer makes, each with its own backoff: a removal
/// that keeps failing must not hold up the batches of orders, nor a chunk that commits
/// hide that they are failing.
#[derive(Clone, Copy)]
enum Lane {
    /// Batches of changes (orders, ticks, deletion marks).
    Batches,
    /// Chunks of creations and removals.
    Jobs,
}

impl Lane {
    fn what(self) -> &'static str {
        match self {
            Lane::Batches => "saving",
            Lane::Jobs => "writing or removing a whole galaxy",
        }
    }

    /// What happens to the work of a failed transaction.
    fn kept(self) -> &'static str {
        match self {
            Lane::Batches => "changes kept in memory and retried",
            Lane::Jobs => "a creation is refused and what it wrote removed, a removal retried",
        }
    }
}

struct Failure {
    attempts: u32,
    retry_at: Instant,
    error: StoreFailure,
}

struct Writer {
    store: Box<dyn WriteStore>,
    jobs: Jobs,
    /// False once the daemon is stopping: creations are refused.
    creating: bool,
    rx: Receiver<Message>,
    settings: PersistenceSettings,
    /// The writer's narrow handle on the galaxies in memory.
    galaxies: WriterSide,
    metrics: Arc<Metrics>,
    /// Galaxies with changes not yet taken into a committed batch.
    pending: HashMap<String, Pending>,
    deletions: Vec<String>,
    /// When the oldest uncommitted deletion was made: it starts the coalescing timer like
    /// any change (a deletion must reach the disk within the loss window).
    deleted_since: Option<Instant>,
    /// The galaxy tick last committed, to save ticks only when they advanced.
    saved_ticks: HashMap<String, u64>,
    /// Flushes waiting for the next batch that starts after them.
    tickets: Vec<Ticket>,
    failure: Option<Failure>,
    /// Bulk work's own failure: see [`Lane`].
    job_failure: Option<Failure>,
    next_interval: Instant,
    ticks_due: bool,
    /// When a batch last wrote something, to tell an idle database from a busy one.
    last_commit: Option<Instant>,
    exit: Option<Sender<ShutdownReport>>,
}

impl Writer {
    fn run(mut self) {
        log::debug!(target: LOG, "writer started (batch delay {:?})", self.settings.batch_delay());
        self.store.on_writer_thread();
        loop {
            let wake = self.next_wake();
            match self.rx.recv_deadline(wake) {
                Ok(message) => {
                    self.handle(message);
                    // Whatever queued meanwhile joins this batch.
                    while let Ok(message) = self.rx.try_recv() {
                        self.handle(message);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if !self.has_work() && self.tickets.is_empty() {
                        break;
                    }
                    // recv no longer waits once disconnected: wait here until work is due.
                    std::thread::sleep(wake.saturating_duration_since(Instant::now()));
                    // Every handle is gone: save what is left, as at shutdown.
                    if !self
                        .tickets
                        .iter()
                        .any(|t| matches!(t.reply, TicketReply::Shutdown(_)))
                    {
                        let (reply, _ignored) = bounded(1);
                        self.tickets.push(Ticket {
                            deadline: Some(Instant::now() + self.settings.shutdown_timeout),
                            reply: TicketReply::Shutdown(reply),
                        });
                    }
                }
            }
            self.work(Instant::now());
            if let Some(reply) = self.exit.take() {
                self.jobs.cancel_creations();
                for name in self.jobs.purges() {
                    log::info!(target: LOG, "galaxy '{name}' is deleted; its remaining rows are removed at the next start");
                }
                let report = self.report();
                self.store.finish(report.all_saved());
                let _ = reply.send(report);
                break;
            }
        }
        log::debug!(target: LOG, "writer stopped");
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Dirty { cell, since } => {
                // A late marker of a galaxy deleted since is dropped; a marker of a newer
                // cell under the same name (recreated) replaces the stale one, or the new
                // cell's changes would never be cut.
                if cell.is_gone() {
                    return;
                }
                match self.pending.get_mut(cell.name()) {
                    Some(pending) if Arc::ptr_eq(&pending.cell, &cell) => {}
                    Some(pending) => *pending = Pending { cell, since },
                    None => {
                        let name = cell.name().to_owned();
                        self.pending.insert(name, Pending { cell, since });
                    }
                }
                self.publish_oldest();
            }
            Message::Create { galaxy, reply } => {
                if self.creating {
                    self.jobs.create(Creation::new(galaxy, reply));
                } else {
                    let _ = reply.send(Err(PersistError::Stopped));
                }
            }
            Message::AdoptIds { name, ids } => self.store.adopt_ids(&name, ids),
            Message::StopCreating => {
                self.creating = false;
                self.jobs.cancel_creations();
            }
            Message::Delete { name } => {
                self.pending.remove(&name);
                self.saved_ticks.remove(&name);
                self.store.forget_ids(&name);
                if !self.deletions.contains(&name) {
                    self.deletions.push(name.clone());
                }
                self.deleted_since.get_or_insert_with(Instant::now);
                self.publish_oldest();
                // Its rows go once the batch that marks it deleted has committed.
                self.jobs.purge(name);
            }
            Message::Flush { deadline, reply } => self.tickets.push(Ticket {
                deadline,
                reply: TicketReply::Flush(reply),
            }),
            Message::Shutdown { deadline, reply } => self.tickets.push(Ticket {
                deadline: Some(deadline),
                reply: TicketReply::Shutdown(reply),
            }),
            Message::Exec(job) => job(self.store.as_mut()),
        }
    }

    fn checkpoint_if_due(&mut self) {
        self.store.after_commit();
    }

    fn has_work(&self) -> bool {
        !self.pending.is_empty() || !self.deletions.is_empty() || !self.jobs.is_empty()
    }

    /// When the loop must wake up without a message.
    fn next_wake(&self) -> Instant {
        let mut wake = self.next_interval;
        let now = Instant::now();
        for due in [self.batch_due(now), self.chunk_due(now)]
            .into_iter()
            .flatten()
        {
            wake = wake.min(due);
        }
        for ticket in &self.tickets {
            if let Some(deadline) = ticket.deadline {
                wake = wake.min(deadline);
            }
        }
        wake
    }

    /// When the next batch should commit, if there is anything to commit; `now` when it
    /// should commit at once.
    fn batch_due(&self, now: Instant) -> Option<Instant> {
        let due = if !self.tickets.is_empty() || self.ticks_due {
            Some(now)
        } else {
            self.oldest_unsaved()
                .map(|since| since + self.settings.batch_delay())
        }?;
        Some(match &self.failure {
            Some(failure) => due.max(failure.retry_at),
            None => due,
        })
    }

    /// When the next chunk of a bulk job may run: at once, unless bulk work is backing
    /// off after a failure, or the job is the removal of a galaxy whose deletion is not
    /// committed yet (the next batch commits it).
    fn chunk_due(&self, now: Instant) -> Option<Instant> {
        let name = self.jobs.next_name()?;
        if self.deletions.iter().any(|deleted| deleted == name) {
            return None;
        }
        Some(
            self.job_failure
                .as_ref()
                .map_or(now, |f| f.retry_at.max(now)),
        )
    }

    /// Runs one chunk of the oldest bulk job, in its own transaction.
    fn chunk(&mut self) {
        let started = Instant::now();
        match self.jobs.step(self.store.as_mut()) {
            Ok((stats, finished)) => {
                self.saved(Lane::Jobs, started.elapsed(), stats);
                match finished {
                    Some(Finished::Created(creation)) => {
                        let (name, tick) = (creation.name().to_owned(), creation.tick());
                        if creation.answer() {
                            self.saved_ticks.insert(name, tick);
                        } else {
                            // Its caller's thread is gone: the galaxy is stored but no
                            // one holds it; it loads on its next access.
                            self.store.forget_ids(&name);
                        }
                    }
                    Some(Finished::Purged) | None => {}
                }
            }
            Err(error) => self.failed(Lane::Jobs, &error),
        }
    }

    /// The failure a lane is backing off from, if any.
    fn failure_of(&mut self, lane: Lane) -> &mut Option<Failure> {
        match lane {
            Lane::Batches => &mut self.failure,
            Lane::Jobs => &mut self.job_failure,
        }
    }

    /// Bookkeeping after any commit: health, metrics, and a checkpoint when due.
    fn saved(&mut self, lane: Lane, duration: Duration, stats: WriteStats) {
        if let Some(failure) = self.failure_of(lane).take() {
            // This commit was a retry, and it succeeded.
            self.metrics
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::info!(target: LOG, "{} recovered after {} failed attempt(s)", lane.what(), failure.attempts);
            // Healthy once neither lane is failing.
            if self.failure.is_none() && self.job_failure.is_none() {
                self.metrics.set_recovered();
            }
        }
        if stats != WriteStats::default() {
            self.checkpoint_if_due();
            self.last_commit = Some(Instant::now());
            self.metrics
                .record_batch(duration, stats.systems, stats.rows);
        }
    }

    /// Bookkeeping after a failed transaction: metrics, the log, and the lane's backoff.
    fn failed(&mut self, lane: Lane, error: &StoreError) {
        let failure = error.failure();
        let message = failure.message.clone();
        let attempts = self.failure_of(lane).as_ref().map_or(0, |f| f.attempts) + 1;
        if attempts > 1 {
            // This attempt was a retry of an earlier failure.
            self.metrics
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.metrics
            .batch_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.set_failed(message.clone());
        let backoff = FIRST_BACKOFF
            .saturating_mul(1u32 << (attempts - 1).min(20))
            .min(self.settings.auto_save_interval);
        let what = lane.what();
        if attempts == 1 {
            log::error!(target: LOG, "{what} failed, {}: {message}", lane.kept());
        } else {
            log::warn!(target: LOG, "{what} failed again (attempt {attempts}, next in {backoff:?}): {message}");
        }
        *self.failure_of(lane) = Some(Failure {
            attempts,
            retry_at: Instant::now() + backoff,
            error: failure,
        });
    }

    fn work(&mut self, now: Instant) {
        if now >= self.next_interval {
            self.ticks_due = true;
            while self.next_interval <= now {
                self.next_interval += self.settings.auto_save_interval;
            }
        }
        if self.batch_due(now).is_some_and(|due| due <= now) {
            let periodic = self.ticks_due;
            self.batch(now);
            if periodic && self.failure.is_none() {
                if let Some(idle) = self.settings.galaxy_idle {
                    self.evict_idle(idle);
                }
                let idle = self
                    .last_commit
                    .is_none_or(|at| at.elapsed() >= self.settings.auto_save_interval);
                self.store.maintain(idle);
            }
        }
        // One chunk of bulk work per turn, after the batch that was due: under constant
        // orders, batches and chunks alternate, and neither starves the other.
        let now = Instant::now();
        if self.exit.is_none() && self.chunk_due(now).is_some_and(|due| due <= now) {
            self.chunk();
        }
        self.expire_tickets(Instant::now());
    }

    /// Takes a consistent cut of every galaxy with work and commits it in one transaction.
    fn batch(&mut self, started: Instant) {
        let riding: Vec<Ticket> = std::mem::take(&mut self.tickets);
        let with_ticks = self.ticks_due || !riding.is_empty();
        let mut galaxies = Vec::new();
        let mut taken: Vec<(Arc<GalaxyCell>, Changes)> = Vec::new();
        let mut longest_hold = Duration::ZERO;
        for pending in self.pending.values() {
            let Some(cut) = pending.cell.cut() else {
                continue;
            };
            longest_hold = longest_hold.max(cut.hold);
            let name = pending.cell.name();
            galaxies.push(GalaxyRows {
                name: name.to_owned(),
                tick: (self.saved_ticks.get(name) != Some(&cut.tick)).then_some(cut.tick),
                systems: cut.rows,
            });
            taken.push((pending.cell.clone(), cut.changes));
        }
        if !taken.is_empty() {
            self.metrics.record_lock_hold(longest_hold);
        }
        let mut strays = Vec::new();
        if with_ticks {
            for cell in self.galaxies.all() {
                if self.pending.contains_key(cell.name()) {
                    continue;
                }
                let tick = match cell.settled_tick() {
                    Settled::Gone => continue,
                    Settled::Dirty => {
                        // Changed since the cut began: its marker is on its way, and its
                        // tick belongs with those rows, in the next batch. (Also a safety
                        // net: a galaxy with changes is always made pending.)
                        strays.push(cell.clone());
                        continue;
                    }
                    Settled::Clean(tick) => tick,
                };
                if self.saved_ticks.get(cell.name()) != Some(&tick) {
                    galaxies.push(GalaxyRows {
                        name: cell.name().to_owned(),
                        tick: Some(tick),
                        systems: Vec::new(),
                    });
                }
            }
        }
        let strays_since = Instant::now();

        // Periodic work with nothing to save opens no transaction and counts no batch.
        let nothing_to_write = galaxies.is_empty() && self.deletions.is_empty();
        let result = if nothing_to_write {
            Ok(WriteStats::default())
        } else {
            self.store.write_batch(&self.deletions, &galaxies)
        };
        match result {
            Ok(stats) => {
                let duration = started.elapsed();
                self.saved(Lane::Batches, duration, stats);
                if !nothing_to_write {
                    log::debug!(target: LOG, "batch committed: {} systems, {} rows, {} galaxies, {} deletions in {duration:?}",
                        stats.systems, stats.rows, galaxies.len(), self.deletions.len());
                }
                self.galaxies.deletions_committed(&self.deletions);
                self.deletions.clear();
                self.deleted_since = None;
                for galaxy in &galaxies {
                    if let Some(tick) = galaxy.tick {
                        self.saved_ticks.insert(galaxy.name.clone(), tick);
                    }
                }
                for (cell, _) in &taken {
                    cell.saved();
                }
                // Changes made after the cut sent a fresh marker, still queued behind us.
                self.pending.clear();
                for cell in strays.drain(..) {
                    let name = cell.name().to_owned();
                    self.pending.entry(name).or_insert(Pending {
                        cell,
                        since: strays_since,
                    });
                }
                self.ticks_due = false;
                self.publish_oldest();
                for ticket in riding {
                    self.answer(ticket, Ok(stats.systems));
                }
            }
            Err(error) => {
                for cell in strays.drain(..) {
                    let name = cell.name().to_owned();
                    self.pending.entry(name).or_insert(Pending {
                        cell,
                        since: strays_since,
                    });
                }
                for (cell, changes) in taken {
                    cell.give_back(changes);
                }
                if let StoreError::Inconsistent { galaxy, .. } = &error {
                    self.store.forget_ids(galaxy);
                }
                self.failed(Lane::Batches, &error);
                let failure = error.failure();
                for ticket in riding {
                    if ticket.deadline.is_some() {
                        self.tickets.push(ticket);
                    } else {
                        self.answer(ticket, Err(PersistError::Failed(failure.clone())));
                    }
                }
            }
        }
    }

    fn answer(&mut self, ticket: Ticket, result: Result<u64, PersistError>) {
        match ticket.reply {
            TicketReply::Flush(reply) => {
                let _ = reply.send(result);
            }
            TicketReply::Shutdown(reply) => {
                if let Err(error) = result {
                    log::warn!(target: LOG, "final flush incomplete: {error}");
                }
                self.exit = Some(reply);
            }
        }
    }

    fn expire_tickets(&mut self, now: Instant) {
        let (expired, waiting): (Vec<Ticket>, Vec<Ticket>) = std::mem::take(&mut self.tickets)
            .into_iter()
            .partition(|t| t.deadline.is_some_and(|d| d <= now));
        self.tickets = waiting;
        for ticket in expired {
            let last_error = self.failure.as_ref().map(|f| f.error.clone());
            self.answer(ticket, Err(PersistError::TimedOut { last_error }));
        }
    }

    /// Drops clean galaxies nobody touched for `idle` from memory; they load again on their
    /// next access. Only the writer can do this safely: it alone knows that a galaxy has no
    /// batch in flight (none is, between batches) and that its tick is saved.
    fn evict_idle(&mut self, idle: Duration) {
        let now = Instant::now();
        for cell in self.galaxies.all() {
            let name = cell.name();
            if self.pending.contains_key(name)
                || !self.galaxies.evict_if_idle(
                    &cell,
                    now,
                    idle,
                    self.saved_ticks.get(name).copied(),
                )
            {
                continue;
            }
            self.store.forget_ids(name);
            self.saved_ticks.remove(name);
            self.metrics
                .galaxies_evicted_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::debug!(target: LOG, "galaxy '{name}' evicted after {idle:?} idle");
        }
    }

    /// When the oldest change (or deletion) not yet committed was made.
    fn oldest_unsaved(&self) -> Option<Instant> {
        let changes = self.pending.values().map(|p| p.since);
        changes.chain(self.deleted_since).min()
    }

    /// The oldest change this writer has not committed, for the unsaved-age policy.
    fn publish_oldest(&self) {
        self.metrics.set_oldest_unsaved(self.oldest_unsaved());
    }

    /// What is still unsaved: every galaxy whose change set is not empty.
    fn report(&self) -> ShutdownReport {
        let mut unsaved: Vec<(String, usize)> = self
            .galaxies
            .all()
            .into_iter()
            .filter_map(|cell| {
                let count = cell.unsaved();
                (count > 0).then(|| (cell.name().to_owned(), count))
            })
            .collect();
        unsaved.sort();
        let error =
            (!unsaved.is_empty() || !self.deletions.is_empty()).then(|| PersistError::TimedOut {
                last_error: self.failure.as_ref().map(|f| f.error.clone()),
            });
        ShutdownReport {
            unsaved,
            unsaved_deletions: self.deletions.clone(),
            error,
        }
    }
}
