//! The persistence engine's counters and health, kept as atomics.
//!
//! The writer thread is the only writer of most counters; game threads read them (and
//! publish the time of a new unsaved change) without taking any lock. Only `last_error`
//! sits behind a mutex, touched on failures and recoveries, never on the hot path. Ages
//! (of the oldest unsaved change) are read on the engine's [`Clock`], the one its writer
//! decides by, so a test with a manual clock sees the unsaved-age policy move with it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::slow::{SlowCalls, SlowKind};
use crate::clock::Clock;
use crate::store::Replication;

/// What the persistence engine is doing, as `/healthz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistenceState {
    /// Every batch so far committed.
    Healthy,
    /// The last batch failed; its changes are kept and retried.
    Retrying,
    /// The database could not be opened; the game runs from memory only.
    MemoryOnly,
    /// Persistence is switched off by configuration.
    Disabled,
    /// Batches commit, but the oldest unsaved change is older than a few coalescing
    /// delays: the writer is not keeping up (derived, never stored).
    Lagging,
}

impl PersistenceState {
    fn from_u8(value: u8) -> PersistenceState {
        match value {
            0 => PersistenceState::Healthy,
            1 => PersistenceState::Retrying,
            2 => PersistenceState::MemoryOnly,
            _ => PersistenceState::Disabled,
            // `Lagging` is derived in `Metrics::state`, never stored.
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PersistenceState::Healthy => "healthy",
            PersistenceState::Retrying => "retrying",
            PersistenceState::MemoryOnly => "memory-only",
            PersistenceState::Disabled => "disabled",
            PersistenceState::Lagging => "lagging",
        }
    }
}

const NONE: u64 = u64::MAX;

/// Counters of the persistence engine. Durations are kept in microseconds.
#[derive(Debug)]
pub struct Metrics {
    clock: Clock,
    epoch: Instant,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    pub(crate) batches_committed: AtomicU64,
    pub(crate) batch_errors: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) systems_written: AtomicU64,
    pub(crate) rows_written: AtomicU64,
    pub(crate) last_batch_micros: AtomicU64,
    pub(crate) max_batch_micros: AtomicU64,
    pub(crate) total_batch_micros: AtomicU64,
    pub(crate) max_lock_hold_micros: AtomicU64,
    pub(crate) last_lock_hold_micros: AtomicU64,
    pub(crate) galaxies_loaded_total: AtomicU64,
    galaxies_archived_total: AtomicU64,
    galaxies_restored_total: AtomicU64,
    pub(crate) galaxies_evicted_total: AtomicU64,
    /// Galaxies another daemon took from this one, their unsaved changes dropped.
    pub(crate) galaxies_lost_total: AtomicU64,
    /// Loads from the database running now (raised by the thread that reads, once per
    /// galaxy however many threads wait for it).
    pub(crate) loads_in_progress: AtomicU64,
    /// Milliseconds since `epoch` of the oldest unsaved change, or `NONE`.
    oldest_unsaved_ms: AtomicU64,
    /// An unsaved change older than this makes a healthy engine `Lagging`; `NONE`: never.
    lagging_after_ms: AtomicU64,
    /// Milliseconds since `epoch` when the writer began the first store call that has not
    /// been answered with success since (a commit failing or hanging), or `NONE`.
    stalled_since_ms: AtomicU64,
    /// Durable requests (`?durable=1`) and the synced commits that answered them.
    pub(crate) durable: DurableStats,
    /// The PostgreSQL primary's replication, as the writer last read it.
    replication: Mutex<Option<Replication>>,
    /// Store calls slower than `GWAR_SLOW_QUERY_MS`, by kind.
    pub(crate) slow: SlowCalls,
}

/// Upper bounds of the buckets of durable requests per synced commit.
pub const PER_COMMIT_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Upper bounds (seconds) of the buckets of a durable request's wait for its commit.
pub const WAIT_BUCKETS: [f64; 11] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Durable requests and their commits, counted by the writer thread (group commit: how
/// many requests each synced commit answered, and how long each request waited for it).
#[derive(Debug, Default)]
pub(crate) struct DurableStats {
    requests: AtomicU64,
    failed: AtomicU64,
    commits: AtomicU64,
    per_commit: [AtomicU64; PER_COMMIT_BUCKETS.len()],
    per_commit_sum: AtomicU64,
    waits: [AtomicU64; WAIT_BUCKETS.len()],
    wait_count: AtomicU64,
    wait_sum_micros: AtomicU64,
}

impl DurableStats {
    /// The writer read a durable request.
    pub(crate) fn requested(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// A synced commit answered `requests` durable requests.
    pub(crate) fn committed(&self, requests: usize) {
        let requests = requests as u64;
        self.commits.fetch_add(1, Relaxed);
        self.per_commit_sum.fetch_add(requests, Relaxed);
        if let Some(bucket) = PER_COMMIT_BUCKETS.iter().position(|b| requests <= *b) {
            self.per_commit[bucket].fetch_add(1, Relaxed);
        }
    }

    /// A durable order's caller stopped waiting (the save's bound passed, or the writer
    /// stopped): it was answered without durability, whatever the writer says later.
    pub(crate) fn given_up(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    /// A durable request was answered after `waited`, durable (`ok`) or not.
    pub(crate) fn answered(&self, waited: Duration, ok: bool) {
        if !ok {
            self.failed.fetch_add(1, Relaxed);
        }
        let seconds = waited.as_secs_f64();
        if let Some(bucket) = WAIT_BUCKETS.iter().position(|b| seconds <= *b) {
            self.waits[bucket].fetch_add(1, Relaxed);
        }
        self.wait_count.fetch_add(1, Relaxed);
        let micros = waited.as_micros().min(u128::from(u64::MAX)) as u64;
        self.wait_sum_micros.fetch_add(micros, Relaxed);
    }

    fn snapshot(&self) -> DurableSnapshot {
        let load = |counts: &[AtomicU64]| counts.iter().map(|c| c.load(Relaxed)).collect();
        DurableSnapshot {
            requests: self.requests.load(Relaxed),
            failed: self.failed.load(Relaxed),
            commits: self.commits.load(Relaxed),
            per_commit: load(&self.per_commit),
            per_commit_sum: self.per_commit_sum.load(Relaxed),
            waits: load(&self.waits),
            wait_count: self.wait_count.load(Relaxed),
            wait_sum_micros: self.wait_sum_micros.load(Relaxed),
        }
    }
}

/// A copy of [`DurableStats`]; bucket counts are per bucket (not cumulative), in the
/// order of [`PER_COMMIT_BUCKETS`] and [`WAIT_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableSnapshot {
    /// Durable requests the writer received.
    pub requests: u64,
    /// Those answered without durability (the commit failed, a galaxy was lost).
    pub failed: u64,
    /// Synced commits that answered durable requests.
    pub commits: u64,
    pub per_commit: Vec<u64>,
    pub per_commit_sum: u64,
    pub waits: Vec<u64>,
    pub wait_count: u64,
    pub wait_sum_micros: u64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub state: PersistenceState,
    pub last_error: Option<String>,
    pub batches_committed: u64,
    pub batch_errors: u64,
    pub retries: u64,
    pub systems_written: u64,
    pub rows_written: u64,
    pub last_batch_micros: u64,
    pub max_batch_micros: u64,
    pub total_batch_micros: u64,
    pub max_lock_hold_micros: u64,
    /// Longest galaxy-lock hold of the last batch.
    pub last_lock_hold_micros: u64,
    /// Galaxies loaded from the database on a cache miss.
    pub galaxies_loaded_total: u64,
    pub galaxies_archived_total: u64,
    pub galaxies_restored_total: u64,
    /// Clean, idle galaxies evicted from memory.
    pub galaxies_evicted_total: u64,
    /// Galaxies another daemon took from this one (PostgreSQL, several daemons).
    pub galaxies_lost_total: u64,
    /// Galaxies being read from the database at this moment.
    pub loads_in_progress: u64,
    /// Age of the oldest change not yet committed, if any.
    pub oldest_unsaved_ms: Option<u64>,
    /// How long the writer's calls have been failing or hanging, if they are.
    pub stalled_ms: Option<u64>,
    /// Durable requests and their synced commits.
    pub durable: DurableSnapshot,
    /// The PostgreSQL primary's replication, where known.
    pub replication: Option<Replication>,
    /// Store calls slower than `GWAR_SLOW_QUERY_MS`, in the order of [`SlowKind::ALL`].
    pub slow_calls: [u64; SlowKind::ALL.len()],
}

impl Metrics {
    pub(crate) fn new(state: PersistenceState) -> Metrics {
        Metrics::with_clock(state, Clock::system())
    }

    /// Metrics whose ages are read on `clock`.
    pub(crate) fn with_clock(state: PersistenceState, clock: Clock) -> Metrics {
        Metrics {
            epoch: clock.now(),
            clock,
            state: AtomicU8::new(state as u8),
            last_error: Mutex::new(None),
            batches_committed: AtomicU64::new(0),
            batch_errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            systems_written: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            last_batch_micros: AtomicU64::new(0),
            max_batch_micros: AtomicU64::new(0),
            total_batch_micros: AtomicU64::new(0),
            max_lock_hold_micros: AtomicU64::new(0),
            last_lock_hold_micros: AtomicU64::new(0),
            galaxies_loaded_total: AtomicU64::new(0),
            galaxies_archived_total: AtomicU64::new(0),
            galaxies_restored_total: AtomicU64::new(0),
            galaxies_evicted_total: AtomicU64::new(0),
            galaxies_lost_total: AtomicU64::new(0),
            loads_in_progress: AtomicU64::new(0),
            oldest_unsaved_ms: AtomicU64::new(NONE),
            lagging_after_ms: AtomicU64::new(NONE),
            stalled_since_ms: AtomicU64::new(NONE),
            durable: DurableStats::default(),
            replication: Mutex::new(None),
            slow: SlowCalls::default(),
        }
    }

    /// From now on, an unsaved change older than `limit` reads as `Lagging`.
    /// A galaxy archived.
    pub(crate) fn archived(&self) {
        self.galaxies_archived_total.fetch_add(1, Relaxed);
    }

    /// A galaxy restored from its archive.
    pub(crate) fn restored(&self) {
        self.galaxies_restored_total.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_lagging_after(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(NONE);
        self.lagging_after_ms.store(ms, Relaxed);
    }

    /// The state, with `Healthy` read as `Lagging` while the oldest unsaved change is
    /// older than the limit, whatever the writer is doing (a batch or a chunk that does
    /// not end, a disk that slowed down).
    pub fn state(&self) -> PersistenceState {
        let stored = PersistenceState::from_u8(self.state.load(Relaxed));
        let limit = self.lagging_after_ms.load(Relaxed);
        let lagging = limit != NONE
            && self
                .oldest_unsaved_age()
                .is_some_and(|age| age.as_millis() > u128::from(limit));
        match stored {
            PersistenceState::Healthy if lagging => PersistenceState::Lagging,
            state => state,
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    pub(crate) fn set_failed(&self, error: String) {
        self.state.store(PersistenceState::Retrying as u8, Relaxed);
        *self.last_error.lock() = Some(error);
    }

    pub(crate) fn set_memory_only(&self, reason: String) {
        self.state
            .store(PersistenceState::MemoryOnly as u8, Relaxed);
        *self.last_error.lock() = Some(reason);
    }

    /// Back to healthy: a retry committed. The error is cleared, since `/healthz` shows
    /// what is wrong now; the log and `gwar_persistence_errors_total` keep the history.
    pub(crate) fn set_replication(&self, replication: Option<Replication>) {
        *self.replication.lock() = replication;
    }

    /// The PostgreSQL primary's replication, where known.
    pub fn replication(&self) -> Option<Replication> {
        *self.replication.lock()
    }

    pub(crate) fn set_recovered(&self) {
        self.state.store(PersistenceState::Healthy as u8, Relaxed);
        *self.last_error.lock() = None;
    }

    pub(crate) fn record_batch(&self, duration: Duration, systems: u64, rows: u64) {
        let micros = duration.as_micros().min(u128::from(u64::MAX)) as u64;
        self.batches_committed.fetch_add(1, Relaxed);
        self.systems_written.fetch_add(systems, Relaxed);
        self.rows_written.fetch_add(rows, Relaxed);
        self.last_batch_micros.store(micros, Relaxed);
        self.max_batch_micros.fetch_max(micros, Relaxed);
        self.total_batch_micros.fetch_add(micros, Relaxed);
    }

    /// The longest galaxy-lock hold of one batch.
    pub(crate) fn record_lock_hold(&self, held: Duration) {
        let micros = held.as_micros().min(u128::from(u64::MAX)) as u64;
        self.last_lock_hold_micros.store(micros, Relaxed);
        self.max_lock_hold_micros.fetch_max(micros, Relaxed);
    }

    pub(crate) fn millis_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// A game thread made the first unsaved change of a galaxy at `at`.
    pub(crate) fn note_unsaved_since(&self, at: Instant) {
        self.oldest_unsaved_ms
            .fetch_min(self.millis_since_epoch(at), Relaxed);
    }

    /// The writer's view of the oldest change it has not committed.
    pub(crate) fn set_oldest_unsaved(&self, at: Option<Instant>) {
        let value = at.map_or(NONE, |at| self.millis_since_epoch(at));
        self.oldest_unsaved_ms.store(value, Relaxed);
    }

    /// How long the oldest unsaved change has waited, if there is one.
    pub fn oldest_unsaved_age(&self) -> Option<Duration> {
        match self.oldest_unsaved_ms.load(Relaxed) {
            NONE => None,
            since => {
                let now = self.millis_since_epoch(self.clock.now());
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    /// The writer begins a call that writes (a batch, a chunk, a renewal): from now on,
    /// until the store answers one with success, saving counts as stalled.
    pub(crate) fn note_call_started(&self) {
        let now = self.millis_since_epoch(self.clock.now());
        // Only the first unanswered call sets it: a stall is measured from its start.
        let _ = self
            .stalled_since_ms
            .compare_exchange(NONE, now, Relaxed, Relaxed);
    }

    /// The store answered a writing call with success: saving is not stalled.
    pub(crate) fn note_call_answered(&self) {
        self.stalled_since_ms.store(NONE, Relaxed);
    }

    /// How long the writer's calls have been failing or hanging, if they are: the time
    /// since the start of the first call not answered with success since.
    pub fn stalled_for(&self) -> Option<Duration> {
        match self.stalled_since_ms.load(Relaxed) {
            NONE => None,
            since => {
                let now = self.millis_since_epoch(self.clock.now());
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            state: self.state(),
            last_error: self.last_error(),
            batches_committed: self.batches_committed.load(Relaxed),
            batch_errors: self.batch_errors.load(Relaxed),
            retries: self.retries.load(Relaxed),
            systems_written: self.systems_written.load(Relaxed),
            rows_written: self.rows_written.load(Relaxed),
            last_batch_micros: self.last_batch_micros.load(Relaxed),
            max_batch_micros: self.max_batch_micros.load(Relaxed),
            total_batch_micros: self.total_batch_micros.load(Relaxed),
            max_lock_hold_micros: self.max_lock_hold_micros.load(Relaxed),
            last_lock_hold_micros: self.last_lock_hold_micros.load(Relaxed),
            galaxies_loaded_total: self.galaxies_loaded_total.load(Relaxed),
            galaxies_archived_total: self.galaxies_archived_total.load(Relaxed),
            galaxies_restored_total: self.galaxies_restored_total.load(Relaxed),
            galaxies_evicted_total: self.galaxies_evicted_total.load(Relaxed),
            galaxies_lost_total: self.galaxies_lost_total.load(Relaxed),
            loads_in_progress: self.loads_in_progress.load(Relaxed),
            oldest_unsaved_ms: self.oldest_unsaved_age().map(|age| age.as_millis() as u64),
            stalled_ms: self.stalled_for().map(|d| d.as_millis() as u64),
            durable: self.durable.snapshot(),
            replication: *self.replication.lock(),
            slow_calls: self.slow.counts(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_reads_lagging_while_an_unsaved_change_is_older_than_the_limit() {
        let clock = Clock::manual();
        let metrics = Metrics::with_clock(PersistenceState::Healthy, clock.clone());
        metrics.set_lagging_after(Duration::from_secs(1));
        let now = clock.now();
        metrics.note_unsaved_since(now);
        assert_eq!(metrics.state(), PersistenceState::Healthy);
        clock.advance(Duration::from_millis(1_001));
        assert_eq!(
            metrics.oldest_unsaved_age(),
            Some(Duration::from_millis(1_001))
        );
        assert_eq!(metrics.state(), PersistenceState::Lagging);
        assert_eq!(metrics.snapshot().state, PersistenceState::Lagging);
        metrics.set_oldest_unsaved(None);
        assert_eq!(metrics.state(), PersistenceState::Healthy, "saved");
        metrics.note_unsaved_since(now);
        metrics.set_failed("disk full".into());
        assert_eq!(
            metrics.state(),
            PersistenceState::Retrying,
            "a failure says more"
        );
        metrics.set_recovered();
        assert_eq!(metrics.last_error(), None, "recovery clears the error");
    }

    #[test]
    fn a_stall_is_measured_from_the_first_unanswered_call() {
        let clock = Clock::manual();
        let metrics = Metrics::with_clock(PersistenceState::Healthy, clock.clone());
        assert_eq!(metrics.stalled_for(), None);
        metrics.note_call_started();
        clock.advance(Duration::from_millis(700));
        metrics.note_call_started();
        clock.advance(Duration::from_millis(600));
        assert_eq!(metrics.stalled_for(), Some(Duration::from_millis(1_300)));
        metrics.note_call_answered();
        assert_eq!(metrics.stalled_for(), None);
    }
}
