//! The writer thread's state ([`Writer`]) and the bookkeeping it holds: galaxies pending,
//! flushes waiting (tickets), each lane's failure, the lease's renewal. Only the writer
//! thread owns a `Writer`; what it does each turn is in `run.rs`, a batch in `batch.rs`,
//! the aftermath of a transaction in `lanes.rs`, the lease in `ownership.rs`. The types
//! those files share live here so that the files point one way: each of them names this
//! one, and this one names none of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::jobs::Jobs;
use super::message::{Message, WriterDatabase};
use super::quarantine::Quarantine;
use super::report::{FlushReport, PersistError, LOG};
use crate::clock::Clock;
use crate::galaxies::{GalaxyCell, WriterSide};
use crate::persistence::metrics::Metrics;
use crate::settings::PersistenceSettings;
use crate::store::{GalaxyJob, StoreError, StoreFailure, WriteStore};

/// Galaxies lost to another daemon with unsaved changes, and how many systems each
/// dropped: kept by the writer, read by the handle when the writer cannot report.
pub(super) type Losses = Arc<Mutex<Vec<(String, usize)>>>;

pub(super) struct Pending {
    pub(super) cell: Arc<GalaxyCell>,
    pub(super) since: Instant,
}

pub(super) enum TicketReply {
    Flush(Sender<Result<u64, PersistError>>),
    Shutdown(Sender<FlushReport>),
}

pub(super) struct Ticket {
    pub(super) deadline: Option<Instant>,
    pub(super) reply: TicketReply,
    /// Galaxies lost with unsaved changes while this ticket waited: their changes, made
    /// before it, were dropped, so it cannot be answered `Ok`.
    pub(super) lost: Vec<String>,
    /// A durable order's, on this galaxy: the commit that answers it is synced to stable
    /// storage, and it is answered for its own galaxy alone (lost, held or saved).
    pub(super) durable: Option<Arc<GalaxyCell>>,
    /// When the writer read it (real time: the durable wait's histogram).
    pub(super) arrived: Instant,
}

impl Ticket {
    pub(super) fn new(deadline: Option<Instant>, reply: TicketReply) -> Ticket {
        Ticket {
            deadline,
            reply,
            lost: Vec::new(),
            durable: None,
            arrived: Instant::now(),
        }
    }

    /// A durable order's ticket (see [`Ticket::durable`]).
    pub(super) fn durable(
        cell: Arc<GalaxyCell>,
        reply: Sender<Result<u64, PersistError>>,
    ) -> Ticket {
        Ticket {
            durable: Some(cell),
            ..Ticket::new(None, TicketReply::Flush(reply))
        }
    }
}

/// A lane's failure: how many attempts failed in a row, and when to try again; when to
/// probe the store next, and whether it was seen down since the failure (see `lanes.rs`).
pub(super) struct Failure {
    pub(super) attempts: u32,
    pub(super) retry_at: Instant,
    pub(super) error: StoreFailure,
    pub(super) probe_at: Instant,
    /// The store did not answer (or had no room) since this failure: the first probe that
    /// finds it answering again brings the retry forward to that moment.
    pub(super) seen_down: bool,
}

/// The lease this daemon holds its galaxies under, and when to renew it next.
pub(super) struct Renewal {
    pub(super) lease: Duration,
    pub(super) next_at: Instant,
}

impl Renewal {
    /// The first renewal is due a third of the lease after `now`.
    pub(super) fn new(lease: Duration, now: Instant) -> Renewal {
        Renewal {
            lease,
            next_at: now + lease / 3,
        }
    }
}

pub(super) struct Writer {
    pub(super) store: Box<dyn WriteStore>,
    pub(super) jobs: Jobs,
    /// False once the daemon is stopping: creations are refused.
    pub(super) creating: bool,
    pub(super) rx: Receiver<Message>,
    pub(super) settings: PersistenceSettings,
    /// The writer's narrow handle on the galaxies in memory.
    pub(super) galaxies: WriterSide,
    pub(super) metrics: Arc<Metrics>,
    pub(super) clock: Clock,
    /// Galaxies with changes not yet taken into a committed batch.
    pub(super) pending: HashMap<String, Pending>,
    pub(super) deletions: Vec<String>,
    /// When the oldest uncommitted deletion was made: it starts the coalescing timer like
    /// any change (a deletion must reach the disk within the loss window).
    pub(super) deleted_since: Option<Instant>,
    /// Galaxies the database cannot take, left out of batches (see `quarantine`).
    pub(super) quarantine: Quarantine,
    /// The galaxy tick last committed, to save ticks only when they advanced.
    pub(super) saved_ticks: HashMap<String, u64>,
    /// Flushes waiting for the next batch that starts after them.
    pub(super) tickets: Vec<Ticket>,
    pub(super) failure: Option<Failure>,
    /// Bulk work's own failure: see `Lane` (`lanes.rs`).
    pub(super) job_failure: Option<Failure>,
    /// The lease on this daemon's galaxies and when to renew it next (`None`: the store
    /// shares the database with no other daemon).
    pub(super) renewal: Option<Renewal>,
    pub(super) next_interval: Instant,
    pub(super) ticks_due: bool,
    /// When a batch last wrote something, to tell an idle database from a busy one.
    pub(super) last_commit: Option<Instant>,
    /// Every galaxy lost with unsaved changes since the start (see `ownership`).
    pub(super) losses: Losses,
    pub(super) exit: Option<Sender<FlushReport>>,
}

impl Writer {
    /// A writer on `database` that reads its messages from `rx`; [`Writer::run`] is its
    /// thread's body, and tests drive `Writer::turn` instead.
    pub(super) fn new(
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
        let renewal = store.lease().map(|lease| Renewal::new(lease, clock.now()));
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
            quarantine: Quarantine::default(),
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
}

/// Runs `write` on `store`, its commits synced to stable storage when `durable` (see
/// [`WriteStore::set_synced`]), and puts the store back to ordinary commits after it.
pub(super) fn synced_if<T>(
    store: &mut dyn WriteStore,
    durable: bool,
    write: impl FnOnce(&mut dyn WriteStore) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if !durable {
        return write(store);
    }
    store.set_synced(true)?;
    let result = write(store);
    if let Err(error) = store.set_synced(false) {
        log::warn!(target: LOG, "back to ordinary commits after a durable one: {error}");
    }
    result
}
