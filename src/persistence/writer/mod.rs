//! The writer thread: the only code that writes to the database. This file owns the
//! handle game threads use ([`WriterHandle`]), the messages they send, and the writer's
//! loop: waiting for work, reading messages, and deciding by the [`Clock`] when a batch,
//! a chunk of bulk work, the periodic work or a flush's deadline is due.
//!
//! One dedicated OS thread owns the [`WriteStore`]. Game threads never wait on it:
//! they record changes in their galaxy (under the galaxy's lock) and, when a galaxy goes
//! from clean to dirty, send a marker through a crossbeam channel. The writer batches:
//! with coalescing on, a batch commits `coalescing_delay` after its first change; with it
//! off, as soon as the writer reaches the change (whatever queued meanwhile rides along).
//!
//! - `batch`: one batch in three phases, collect (the consistent cuts) → commit (one
//!   transaction, no galaxy locked) → settle (ok: mark saved, answer flushes; failed: give
//!   the changes back, keep the flushes that may wait).
//! - `lanes`: what follows any commit or failure: health, metrics, and the retry backoff
//!   (exponential, capped at the auto-save interval), one per lane (batches, bulk jobs).
//! - `ownership` (PostgreSQL, several daemons): the lease on this daemon's galaxies,
//!   renewed every third of it, and galaxies lost to another daemon, dropped from memory.
//!
//! Creating and deleting whole galaxies are bulk jobs (`jobs`): a deletion is
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
//! that a galaxy has no batch in flight.
//!
//! The writer knows galaxies only through the narrow handle of [`crate::galaxies`]: a dirty
//! galaxy's [`GalaxyCell`] (take a cut, give it back, mark it saved) and the
//! [`WriterSide`] (list, evict, settle deletions). Each call takes and releases the
//! galaxy's lock inside, so none is ever held during SQL.
//!
//! Time: every decision reads the writer's [`Clock`] (the system's in the daemon, a manual
//! one in the unit tests of `tests.rs`, which drive the phases and the loop's turns without
//! a thread and without sleeping). How long a batch or a chunk took is measured on the
//! real clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::metrics::Metrics;
use crate::clock::Clock;
use crate::galaxies::{GalaxyCell, WriterSide};
use crate::model::Galaxy;
use crate::settings::PersistenceSettings;
use crate::store::{
    BusyDeadline, Epoch, GalaxyJob, RowIds, StoreError, StoreFailure, StoreWork, WriteStore,
};
use jobs::{Created, Creation, CreationReply, Finished, Jobs};
use lanes::{Failure, Lane};

mod batch;
pub(crate) mod jobs;
mod lanes;
mod ownership;
mod quarantine;
#[cfg(test)]
mod tests;

const LOG: &str = "galactic_war::persistence";

/// How long past the shutdown timeout a shutdown waits for the writer's own report.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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
    /// Another daemon took these galaxies (this daemon's lease on them had run out) before
    /// their changes were saved: the changes are dropped, and cannot be saved by a retry.
    #[error("changes to galaxies taken by another daemon were dropped: {}", .0.join(", "))]
    Lost(Vec<String>),
}

/// What the final flush left unsaved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Galaxies with unsaved systems, and how many, sorted by name.
    pub unsaved: Vec<(String, usize)>,
    /// Deletions that never reached the database.
    pub unsaved_deletions: Vec<String>,
    /// Galaxies taken by another daemon since this one started, while they held unsaved
    /// changes here (a deletion counts, with 0 systems), and the unsaved systems dropped
    /// with them, in the order they were lost.
    pub lost: Vec<(String, usize)>,
    pub error: Option<PersistError>,
}

impl ShutdownReport {
    pub fn all_saved(&self) -> bool {
        self.unsaved.is_empty()
            && self.unsaved_deletions.is_empty()
            && self.lost.is_empty()
            && self.error.is_none()
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
    /// The row ids a load read, for the cache (sent before the galaxy is in memory), and
    /// the epoch its take got, when the database is shared with other daemons.
    AdoptIds {
        name: String,
        ids: RowIds,
        epoch: Option<Epoch>,
    },
    /// A galaxy deleted; `epoch` when it was taken for the deletion (it was not in memory).
    Delete { name: String, epoch: Option<Epoch> },
    /// A galaxy a load took under `epoch` that never reached memory (its read found
    /// nothing or failed, a deletion overtook it): not renewed, but released by a clean
    /// stop like the galaxies that left memory.
    TakenUnused { name: String, epoch: Epoch },
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
    /// The writer's clock, for the deadlines of flushes and shutdown.
    clock: Clock,
    /// What a shutdown reports when the writer cannot answer.
    galaxies: WriterSide,
    /// The writer's record of galaxies lost with unsaved changes, for the same.
    losses: Losses,
}

/// Galaxies lost to another daemon with unsaved changes, and how many systems each
/// dropped: kept by the writer, read by the handle when the writer cannot report.
type Losses = Arc<Mutex<Vec<(String, usize)>>>;

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
    /// Starts the writer thread on `database`, its decisions timed by `clock`.
    pub(crate) fn spawn(
        database: WriterDatabase,
        settings: PersistenceSettings,
        galaxies: WriterSide,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> std::io::Result<WriterHandle> {
        let (tx, rx) = unbounded();
        let shutdown_timeout = settings.shutdown_timeout;
        let busy_deadline = database.busy_deadline.clone();
        let writer = Writer::new(
            database,
            settings,
            galaxies.clone(),
            metrics,
            clock.clone(),
            rx,
        );
        let losses = writer.losses.clone();
        let thread = std::thread::Builder::new()
            .name("gwar-writer".into())
            .spawn(move || writer.run())?;
        Ok(WriterHandle {
            tx,
            thread: Mutex::new(Some(thread)),
            shutdown_timeout,
            busy_deadline,
            report: Mutex::new(None),
            clock,
            galaxies,
            losses,
        })
    }

    pub(crate) fn mark_dirty(&self, cell: Arc<GalaxyCell>, since: Instant) {
        if self.tx.send(Message::Dirty { cell, since }).is_err() {
            log::error!(target: LOG, "the writer has stopped; changes stay in memory unsaved");
        }
    }

    /// Writes a new galaxy, in chunks between other galaxies' batches, and returns it once
    /// its last chunk is committed (it is invisible in the database until then), with the
    /// deadline of this daemon's lease on it when the database is shared.
    pub(crate) fn create(&self, galaxy: Box<Galaxy>) -> Result<Created, PersistError> {
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
    /// deleted since it was read (`crate::galaxies` publishes under its catalog lock).
    /// `epoch`: what taking the galaxy got (several daemons); its writes are fenced by it.
    pub(crate) fn adopt_ids(&self, name: String, ids: RowIds, epoch: Option<Epoch>) {
        let _ = self.tx.send(Message::AdoptIds { name, ids, epoch });
    }

    /// Galaxy `name` was taken under `epoch` by a load that did not put it in memory.
    pub(crate) fn taken_unused(&self, name: String, epoch: Epoch) {
        let _ = self.tx.send(Message::TakenUnused { name, epoch });
    }

    /// Deletes galaxy `name` from the database within the loss window; `epoch` when it
    /// was taken for the deletion (several daemons, a galaxy not in memory).
    pub(crate) fn delete(&self, name: String, epoch: Option<Epoch>) {
        if self.tx.send(Message::Delete { name, epoch }).is_err() {
            log::error!(target: LOG, "the writer has stopped; a deletion was not saved");
        }
    }

    /// Returns once every change made before the call is committed (with the number of
    /// systems the answering batch wrote), or with the error that stopped it. Without a
    /// timeout, the first failed attempt answers; with one, it retries until then.
    pub fn flush(&self, timeout: Option<Duration>) -> Result<u64, PersistError> {
        let (reply, answer) = bounded(1);
        let deadline = timeout.map(|t| self.clock.now() + t);
        self.tx
            .send(Message::Flush { deadline, reply })
            .map_err(|_| PersistError::Stopped)?;
        answer.recv().map_err(|_| PersistError::Stopped)?
    }

    /// Runs `work` on the writer thread with its store, between batches, and returns its
    /// result. For fault injection in the crate's tests; the store must be left as found.
    #[cfg(any(test, feature = "testing"))]
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
        let deadline = self.clock.now() + self.shutdown_timeout;
        // SQLite's busy wait runs on the real clock.
        self.busy_deadline
            .set(Instant::now() + self.shutdown_timeout);
        let report = match self.tx.send(Message::Shutdown { deadline, reply }) {
            // The writer answers by the deadline unless a database call outlives it (a
            // stalled server); past a grace period it is left behind, and what memory
            // still holds unsaved is reported without it.
            Ok(()) => match answer.recv_timeout(self.shutdown_timeout + SHUTDOWN_GRACE) {
                Ok(report) => {
                    if thread.join().is_err() {
                        log::error!(target: LOG, "the writer thread panicked");
                    }
                    report
                }
                Err(RecvTimeoutError::Timeout) => {
                    log::error!(target: LOG, "the writer did not finish within the shutdown timeout and {SHUTDOWN_GRACE:?} (a database call is stuck); leaving it behind");
                    self.report_without_writer(PersistError::TimedOut { last_error: None })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    log::error!(target: LOG, "the writer thread ended without a report");
                    self.report_without_writer(PersistError::Stopped)
                }
            },
            Err(_) => self.report_without_writer(PersistError::Stopped),
        };
        *self.report.lock() = Some(report.clone());
        report
    }

    /// What memory still holds unsaved, when the writer cannot say: the galaxies with
    /// changes (those in a batch in flight included) and the deletions not committed.
    fn report_without_writer(&self, error: PersistError) -> ShutdownReport {
        ShutdownReport {
            unsaved: self.galaxies.unsaved(),
            unsaved_deletions: self.galaxies.deleting(),
            lost: self.losses.lock().clone(),
            error: Some(error),
        }
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
    /// Galaxies lost with unsaved changes while this ticket waited: their changes, made
    /// before it, were dropped, so it cannot be answered `Ok`.
    lost: Vec<String>,
}

impl Ticket {
    fn new(deadline: Option<Instant>, reply: TicketReply) -> Ticket {
        Ticket {
            deadline,
            reply,
            lost: Vec::new(),
        }
    }
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
    clock: Clock,
    /// Galaxies with changes not yet taken into a committed batch.
    pending: HashMap<String, Pending>,
    deletions: Vec<String>,
    /// When the oldest uncommitted deletion was made: it starts the coalescing timer like
    /// any change (a deletion must reach the disk within the loss window).
    deleted_since: Option<Instant>,
    /// Galaxies the database cannot take, left out of batches (see `quarantine`).
    quarantine: quarantine::Quarantine,
    /// The galaxy tick last committed, to save ticks only when they advanced.
    saved_ticks: HashMap<String, u64>,
    /// Flushes waiting for the next batch that starts after them.
    tickets: Vec<Ticket>,
    failure: Option<Failure>,
    /// Bulk work's own failure: see [`Lane`].
    job_failure: Option<Failure>,
    /// The lease on this daemon's galaxies and when to renew it next (`None`: the store
    /// shares the database with no other daemon).
    renewal: Option<ownership::Renewal>,
    next_interval: Instant,
    ticks_due: bool,
    /// When a batch last wrote something, to tell an idle database from a busy one.
    last_commit: Option<Instant>,
    /// Every galaxy lost with unsaved changes since the start (see `ownership`).
    losses: Losses,
    exit: Option<Sender<ShutdownReport>>,
}

impl Writer {
    /// A writer on `database` that reads its messages from `rx`; [`Writer::run`] is its
    /// thread's body, and tests drive `Writer::turn` instead.
    fn new(
        database: WriterDatabase,
        settings: PersistenceSettings,
        galaxies: WriterSide,
        metrics: Arc<Metrics>,
        clock: Clock,
        rx: Receiver<Message>,
    ) -> Writer {
        let WriterDatabase {
            store,
            busy_deadline: _,
            unfinished,
        } = database;
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
        let renewal = store
            .lease()
            .map(|lease| ownership::Renewal::new(lease, clock.now()));
        Writer {
            renewal,
            jobs,
            creating: true,
            next_interval: clock.now() + settings.auto_save_interval,
            store,
            rx,
            settings,
            galaxies,
            metrics,
            clock,
            pending: HashMap::new(),
            deletions: Vec::new(),
            deleted_since: None,
            quarantine: quarantine::Quarantine::default(),
            saved_ticks: HashMap::new(),
            tickets: Vec::new(),
            failure: None,
            job_failure: None,
            ticks_due: false,
            last_commit: None,
            losses: Losses::default(),
            exit: None,
        }
    }

    fn run(mut self) {
        log::debug!(target: LOG, "writer started (batch delay {:?})", self.settings.batch_delay());
        self.store.on_writer_thread();
        loop {
            let wake = self.next_wake();
            match self.rx.recv_timeout(self.clock.until(wake)) {
                Ok(message) => {
                    self.handle(message);
                    // Whatever queued meanwhile joins this batch.
                    self.drain();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if !self.has_work() && self.tickets.is_empty() {
                        break;
                    }
                    // recv no longer waits once disconnected: wait here until work is due.
                    std::thread::sleep(self.clock.until(wake));
                    // Every handle is gone: save what is left, as at shutdown.
                    if !self
                        .tickets
                        .iter()
                        .any(|t| matches!(t.reply, TicketReply::Shutdown(_)))
                    {
                        let (reply, _ignored) = bounded(1);
                        let deadline = self.clock.now() + self.settings.shutdown_timeout;
                        self.tickets
                            .push(Ticket::new(Some(deadline), TicketReply::Shutdown(reply)));
                    }
                }
            }
            self.work(self.clock.now());
            if let Some(reply) = self.exit.take() {
                self.finish(reply);
                break;
            }
        }
        log::debug!(target: LOG, "writer stopped");
    }

    /// Handles every message already queued.
    fn drain(&mut self) {
        while let Ok(message) = self.rx.try_recv() {
            self.handle(message);
        }
    }

    /// One turn of the loop without its wait: the queued messages, then whatever work the
    /// clock says is due. True once the writer has answered a shutdown (its thread would
    /// end here).
    #[cfg(test)]
    fn turn(&mut self) -> bool {
        self.drain();
        self.work(self.clock.now());
        match self.exit.take() {
            Some(reply) => {
                self.finish(reply);
                true
            }
            None => false,
        }
    }

    /// The end of the thread: creations stop, the report goes out.
    fn finish(&mut self, reply: Sender<ShutdownReport>) {
        self.jobs.cancel_creations();
        for name in self.jobs.purges() {
            log::info!(target: LOG, "galaxy '{name}' is deleted; its remaining rows are removed at the next start");
        }
        let report = self.report();
        self.store.finish(report.all_saved());
        let _ = reply.send(report);
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
            Message::AdoptIds { name, ids, epoch } => {
                if let Some(epoch) = epoch {
                    self.store.own(&name, epoch);
                }
                self.store.adopt_ids(&name, ids);
            }
            // Owned already: in memory after all (another load, a creation), under the
            // epoch the store has.
            Message::TakenUnused { name, epoch } if !self.store.owns(&name) => {
                self.store.own(&name, epoch);
                self.store.disown(&[name]);
            }
            Message::TakenUnused { .. } => {}
            Message::StopCreating => {
                self.creating = false;
                self.jobs.cancel_creations();
            }
            Message::Delete { name, epoch } => {
                // Fenced like any write: the batch that marks it deleted checks the epoch.
                if let Some(epoch) = epoch {
                    self.store.own(&name, epoch);
                }
                self.pending.remove(&name);
                self.saved_ticks.remove(&name);
                self.store.forget_ids(&name);
                if !self.deletions.contains(&name) {
                    self.deletions.push(name.clone());
                }
                let now = self.clock.now();
                self.deleted_since.get_or_insert(now);
                self.publish_oldest();
                // Its rows go once the batch that marks it deleted has committed.
                self.jobs.purge(name);
            }
            Message::Flush { deadline, reply } => self
                .tickets
                .push(Ticket::new(deadline, TicketReply::Flush(reply))),
            Message::Shutdown { deadline, reply } => self
                .tickets
                .push(Ticket::new(Some(deadline), TicketReply::Shutdown(reply))),
            Message::Exec(job) => job(self.store.as_mut()),
        }
    }

    fn has_work(&self) -> bool {
        !self.pending.is_empty() || !self.deletions.is_empty() || !self.jobs.is_empty()
    }

    /// When the loop must wake up without a message.
    fn next_wake(&self) -> Instant {
        let mut wake = self.next_interval;
        if let Some(renewal) = &self.renewal {
            wake = wake.min(renewal.next_at);
        }
        let now = self.clock.now();
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
            // A held galaxy's changes wait for the interval, not for a batch of their own.
            let pending = self.pending.iter();
            let waiting = pending.filter(|(name, _)| !self.quarantine.is_held(name));
            let oldest = waiting
                .map(|(_, p)| p.since)
                .chain(self.deleted_since)
                .min();
            oldest.map(|since| since + self.settings.batch_delay())
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
        // Every chunk renews the lease on its galaxy (several daemons) from its start.
        let sent = self.clock.now();
        let job = self.jobs.next_name().map(str::to_owned);
        match self.jobs.step(self.store.as_mut()) {
            Ok((stats, finished)) => {
                self.saved(Lane::Jobs, started.elapsed(), stats);
                match finished {
                    Some(Finished::Created(creation)) => {
                        let (name, tick) = (creation.name().to_owned(), creation.tick());
                        let lease_until = self.lease_until(sent);
                        if creation.answer(lease_until) {
                            self.saved_ticks.insert(name, tick);
                        } else {
                            // Its caller's thread is gone: the galaxy is stored but no
                            // one holds it; it loads on its next access, here or, once
                            // its lease runs out, on another daemon.
                            self.store.forget_ids(&name);
                            self.store.disown(std::slice::from_ref(&name));
                        }
                    }
                    Some(Finished::Purged) | None => {}
                }
            }
            // Another daemon took the job's galaxy: the job is dropped, not retried.
            Err(StoreError::Lost(lost))
                if job
                    .as_deref()
                    .is_some_and(|job| lost.iter().any(|l| l.name == job)) =>
            {
                self.lose(lost);
            }
            Err(error) => self.failed(Lane::Jobs, &error),
        }
    }

    /// What is due at `now`: the interval's periodic work, a batch, one chunk of bulk
    /// work, and the flushes whose deadline passed.
    fn work(&mut self, now: Instant) {
        // First, so that a lost galaxy is out of memory before a batch is cut.
        if self.renewal.as_ref().is_some_and(|r| r.next_at <= now) {
            self.renew();
        }
        let now = self.clock.now();
        if now >= self.next_interval {
            self.ticks_due = true;
            self.quarantine.interval();
            while self.next_interval <= now {
                self.next_interval += self.settings.auto_save_interval;
            }
        }
        if self.batch_due(now).is_some_and(|due| due <= now) {
            let periodic = self.ticks_due;
            self.batch();
            // Not after the final batch: it released this daemon's galaxies and jobs for
            // others to take at once, and the interval's work would take jobs back.
            if periodic && self.failure.is_none() && self.exit.is_none() {
                self.periodic();
            }
        }
        // One chunk of bulk work per turn, after the batch that was due: under constant
        // orders, batches and chunks alternate, and neither starves the other.
        let now = self.clock.now();
        if self.exit.is_none() && self.chunk_due(now).is_some_and(|due| due <= now) {
            self.chunk();
        }
        self.expire_tickets(self.clock.now());
    }

    /// After the interval's batch committed: idle galaxies leave memory, jobs other
    /// daemons left behind are taken over, and the store gets its periodic upkeep
    /// (SQLite: a WAL checkpoint).
    fn periodic(&mut self) {
        let now = self.clock.now();
        if let Some(idle) = self.settings.galaxy_idle {
            self.evict_idle(now, idle);
        }
        if self.renewal.is_some() {
            self.adopt_orphaned_jobs();
        }
        // Idle for a whole interval: the store may give space back (SQLite truncates its
        // WAL); busy: only upkeep that never waits on readers.
        let idle = self
            .last_commit
            .is_none_or(|at| now.saturating_duration_since(at) >= self.settings.auto_save_interval);
        self.store.maintain(idle);
    }

    fn answer(&mut self, ticket: Ticket, result: Result<u64, PersistError>) {
        // Saved, but not everything it covered: some was dropped with a lost galaxy.
        let result = match result {
            Ok(_) if !ticket.lost.is_empty() => Err(PersistError::Lost(ticket.lost)),
            result => result,
        };
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
    /// batch in flight (none is, between batches) and that its tick is saved. With several
    /// daemons, they are no longer renewed (see [`WriteStore::disown`]).
    fn evict_idle(&mut self, now: Instant, idle: Duration) {
        let mut evicted = Vec::new();
        for cell in self.galaxies.all() {
            let name = cell.name();
            if self.pending.contains_key(name) {
                continue;
            }
            let saved_tick = self.saved_ticks.get(name).copied();
            if !self.galaxies.evict_if_idle(&cell, now, idle, saved_tick) {
                continue;
            }
            self.store.forget_ids(name);
            self.saved_ticks.remove(name);
            self.metrics
                .galaxies_evicted_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::debug!(target: LOG, "galaxy '{name}' evicted after {idle:?} idle");
            evicted.push(name.to_owned());
        }
        if !evicted.is_empty() {
            self.store.disown(&evicted);
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

    /// What is still unsaved (every galaxy whose change set is not empty), and what was
    /// dropped with galaxies another daemon took.
    fn report(&self) -> ShutdownReport {
        let unsaved = self.galaxies.unsaved();
        let lost = self.losses.lock().clone();
        let error = if !unsaved.is_empty() || !self.deletions.is_empty() {
            Some(PersistError::TimedOut {
                last_error: self.failure.as_ref().map(|f| f.error.clone()),
            })
        } else if !lost.is_empty() {
            Some(PersistError::Lost(
                lost.iter().map(|(name, _)| name.clone()).collect(),
            ))
        } else {
            None
        };
        ShutdownReport {
            unsaved,
            unsaved_deletions: self.deletions.clone(),
            lost,
            error,
        }
    }
}
