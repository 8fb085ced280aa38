//! The handle game threads use to reach the writer thread ([`WriterHandle`]): it starts
//! the thread, sends it messages and waits for the answers that have one (a creation, a
//! flush, a shutdown). It never touches the store; what the thread does with a message is
//! `run.rs`'s. A shutdown's report comes from the writer, or, when the writer cannot
//! answer in time, from what memory still holds unsaved.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::jobs::Created;
use super::message::{Message, WriterDatabase};
use super::report::{ArchiveRefused, FlushReport, PersistError, LOG};
use super::state::{Losses, Writer};
use crate::clock::Clock;
use crate::galaxies::{GalaxyCell, WriterSide};
use crate::model::Galaxy;
use crate::persistence::metrics::Metrics;
use crate::settings::PersistenceSettings;
use crate::store::{BusyDeadline, Epoch, RowIds, WriteStore};

/// How long past the shutdown timeout a shutdown waits for the writer's own report.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a save (`POST /admin/save`) waits for the writer: the batch in flight when
/// it arrives ends within one call timeout (answered, or abandoned by the store), the
/// save's own first attempt within another (a reconnect included: opening a session is
/// a call too), and a second covers the writer's work between them. SQLite's calls are
/// bounded by its busy timeout (5 s), inside the same sum at the default.
pub(crate) fn save_timeout(db_call_timeout: Duration) -> Duration {
    db_call_timeout * 2 + Duration::from_secs(1)
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
    /// How long [`WriterHandle::save`] waits for its answer.
    save_timeout: Duration,
    /// Set at shutdown, so a batch waiting on a locked database gives up in time.
    busy_deadline: Arc<BusyDeadline>,
    /// What the final flush left unsaved, once it ran.
    report: Mutex<Option<FlushReport>>,
    /// Set when the shutdown left the writer thread behind, stuck in a database call: it
    /// may still hold the database, so the stop is not a clean one for the file.
    left_behind: std::sync::atomic::AtomicBool,
    /// Set while a caller polls for its answer (see `spin.rs`).
    spinner: Arc<std::sync::atomic::AtomicBool>,
    /// The writer's clock, for the deadlines of flushes and shutdown.
    clock: Clock,
    /// What a shutdown reports when the writer cannot answer.
    galaxies: WriterSide,
    /// The writer's record of galaxies lost with unsaved changes, for the same.
    losses: Losses,
    /// The engine's counters (durable orders given up on by their callers).
    metrics: Arc<Metrics>,
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
        let save_timeout = save_timeout(settings.db_call_timeout);
        let busy_deadline = database.busy_deadline.clone();
        let writer = Writer::new(
            database,
            settings,
            galaxies.clone(),
            metrics.clone(),
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
            save_timeout,
            busy_deadline,
            report: Mutex::new(None),
            left_behind: std::sync::atomic::AtomicBool::new(false),
            spinner: Arc::default(),
            clock,
            galaxies,
            losses,
            metrics,
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
    /// `durable`: its last chunk commits synced to stable storage, so the galaxy survives
    /// a power loss once this returns.
    pub(crate) fn create(
        &self,
        galaxy: Box<Galaxy>,
        durable: bool,
    ) -> Result<Created, PersistError> {
        self.send_creation(galaxy, durable, false)
    }

    /// [`WriterHandle::create`] of a galaxy decoded from its archive: the commit that
    /// makes it exist deletes the archive.
    pub(crate) fn restore(&self, galaxy: Box<Galaxy>) -> Result<Created, PersistError> {
        self.send_creation(galaxy, false, true)
    }

    fn send_creation(
        &self,
        galaxy: Box<Galaxy>,
        durable: bool,
        restoring: bool,
    ) -> Result<Created, PersistError> {
        let (reply, answer) = bounded(1);
        self.tx
            .send(Message::Create {
                galaxy,
                durable,
                restoring,
                reply,
            })
            .map_err(|_| PersistError::Stopped)?;
        answer.recv().map_err(|_| PersistError::Stopped)?
    }

    /// Stores the archive `body` of galaxy `name` (taken out of memory: see
    /// `persistence/archives.rs`) between batches, in the transaction that marks its live
    /// rows deleted; answers once it is committed or refused.
    pub(crate) fn write_archive(
        &self,
        name: &str,
        systems: u64,
        body: Arc<[u8]>,
    ) -> Result<(), ArchiveRefused> {
        let (reply, answer) = bounded(1);
        let name = name.to_owned();
        self.tx
            .send(Message::Archive {
                name,
                systems,
                body,
                reply,
            })
            .map_err(|_| ArchiveRefused::Stopped)?;
        answer.recv().map_err(|_| ArchiveRefused::Stopped)?
    }

    /// Deletes the archive of galaxy `name`; false when there was none.
    pub(crate) fn delete_archive(&self, name: &str) -> Result<bool, PersistError> {
        let (reply, answer) = bounded(1);
        let name = name.to_owned();
        self.tx
            .send(Message::DeleteArchive { name, reply })
            .map_err(|_| PersistError::Stopped)?;
        let answered = answer.recv().map_err(|_| PersistError::Stopped)?;
        answered.map_err(PersistError::Failed)
    }

    /// How long a save's answer is awaited ([`save_timeout`]).
    pub(crate) fn save_bound(&self) -> Duration {
        self.save_timeout
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
    /// (The daemon's saves go through [`WriterHandle::save`], which bounds the wait.)
    #[cfg(any(test, feature = "testing"))]
    pub fn flush(&self, timeout: Option<Duration>) -> Result<u64, PersistError> {
        let (reply, answer) = bounded(1);
        let deadline = timeout.map(|t| self.clock.now() + t);
        self.tx
            .send(Message::Flush {
                deadline,
                durable: None,
                reply,
            })
            .map_err(|_| PersistError::Stopped)?;
        answer.recv().map_err(|_| PersistError::Stopped)?
    }

    /// [`WriterHandle::flush`] without a timeout, whose answer is awaited at most the
    /// save's own bound ([`save_timeout`]): past it the caller gets
    /// [`PersistError::TimedOut`] (the flush stays queued, and its changes are saved by the
    /// writer's retries as any others).
    pub fn save(&self) -> Result<u64, PersistError> {
        self.send_flush(None)?.wait()
    }

    /// [`WriterHandle::save`] for a durable order on galaxy `cell` (`?durable=1`), sent
    /// now and waited for with [`FlushWait::wait`]: it answers once every change made
    /// before this call is committed and synced to stable storage, sharing that commit
    /// with every change and durable order waiting when it starts (group commit). The
    /// writer starts it at once, with no coalescing delay. An error means the order is
    /// not known to be durable; it stays queued and is saved like any change (unless
    /// [`PersistError::Lost`]: the galaxy went to another daemon with it).
    pub(crate) fn request_durable(&self, cell: Arc<GalaxyCell>) -> Result<FlushWait, PersistError> {
        let mut wait = self.send_flush(Some(cell))?;
        wait.durable = Some(self.metrics.clone());
        Ok(wait)
    }

    fn send_flush(&self, durable: Option<Arc<GalaxyCell>>) -> Result<FlushWait, PersistError> {
        let (reply, answer) = bounded(1);
        self.tx
            .send(Message::Flush {
                deadline: None,
                durable,
                reply,
            })
            .map_err(|_| PersistError::Stopped)?;
        Ok(FlushWait {
            answer,
            timeout: self.save_timeout,
            spinner: self.spinner.clone(),
            durable: None,
        })
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
    pub fn shutdown(&self) -> FlushReport {
        self.shutdown_within(self.shutdown_timeout)
    }

    /// [`WriterHandle::shutdown`] with `budget` for the final flush instead of the
    /// shutdown timeout (a daemon's stop spent some of it on requests in flight).
    pub fn shutdown_within(&self, budget: Duration) -> FlushReport {
        let mut running = self.thread.lock();
        let Some(thread) = running.take() else {
            return self.report.lock().clone().unwrap_or_default();
        };
        let (reply, answer) = bounded(1);
        let deadline = self.clock.now() + budget;
        // SQLite's busy wait runs on the real clock.
        self.busy_deadline.set(Instant::now() + budget);
        let report = match self.tx.send(Message::Shutdown { deadline, reply }) {
            // The writer answers by the deadline unless a database call outlives it (a
            // stalled server); past a grace period it is left behind, and what memory
            // still holds unsaved is reported without it.
            Ok(()) => match answer.recv_timeout(budget + SHUTDOWN_GRACE) {
                Ok(report) => {
                    if thread.join().is_err() {
                        log::error!(target: LOG, "the writer thread panicked");
                    }
                    report
                }
                Err(RecvTimeoutError::Timeout) => {
                    log::error!(target: LOG, "the writer did not finish within the shutdown timeout and {SHUTDOWN_GRACE:?} (a database call is stuck); leaving it behind");
                    self.left_behind
                        .store(true, std::sync::atomic::Ordering::SeqCst);
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
    /// Memory holding nothing unsaved (a batch in flight counts as unsaved) means nothing
    /// was lost, whatever the writer was stuck on (a lease's release, say): no error then,
    /// so a stop with everything saved before a stalled network exits 0 — unless the
    /// writer ended without a report (it panicked), which is never a clean stop.
    fn report_without_writer(&self, error: PersistError) -> FlushReport {
        let panicked = matches!(error, PersistError::Stopped);
        let mut report = FlushReport {
            unsaved: self.galaxies.unsaved(),
            unsaved_deletions: self.galaxies.deleting(),
            lost: self.losses.lock().clone(),
            error: None,
        };
        if panicked
            || !(report.unsaved.is_empty()
                && report.unsaved_deletions.is_empty()
                && report.lost.is_empty())
        {
            report.error = Some(error);
        }
        report
    }
}

/// A flush sent to the writer, its answer still to come: the committed systems, or why
/// not. Waited for at most the save's bound ([`save_timeout`]): past it the answer is
/// [`PersistError::TimedOut`], and the flush stays queued, its changes saved by the
/// writer's retries as any others.
pub struct FlushWait {
    answer: crossbeam_channel::Receiver<Result<u64, PersistError>>,
    timeout: Duration,
    spinner: Arc<std::sync::atomic::AtomicBool>,
    /// A durable order's: the metrics that count one given up on here.
    durable: Option<Arc<Metrics>>,
}

impl FlushWait {
    pub fn wait(self) -> Result<u64, PersistError> {
        if let Some(answer) = super::spin::spin_recv(&self.answer, &self.spinner) {
            return answer;
        }
        let answer = match self.answer.recv_timeout(self.timeout) {
            Ok(answer) => return answer,
            Err(RecvTimeoutError::Timeout) => Err(PersistError::TimedOut { last_error: None }),
            Err(RecvTimeoutError::Disconnected) => Err(PersistError::Stopped),
        };
        if let Some(metrics) = &self.durable {
            metrics.durable.given_up();
        }
        answer
    }
}

impl WriterHandle {
    /// Whether the shutdown left the writer thread behind (see `left_behind`).
    pub(crate) fn left_behind(&self) -> bool {
        self.left_behind.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        if self.thread.lock().is_some() {
            self.shutdown();
        }
    }
}
