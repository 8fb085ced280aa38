//! What follows a transaction of the writer, whether a batch or a chunk of bulk work
//! committed or failed: health and metrics, the log, the lane's retry backoff, and the
//! probes that end a backoff early once the database answers again.
//!
//! Each lane backs off on its own (a removal that keeps failing must not hold up the
//! batches of orders, nor a chunk that commits hide that they are failing). A failure
//! waits [`FIRST_BACKOFF`], doubling with each further failure, capped at the auto-save
//! interval; the lane's next commit clears it, and health is healthy again once neither
//! lane is failing.
//!
//! The backoff spares the database the full batch, not a look at it: while a lane is
//! failing, the store is probed every [`PROBE_INTERVAL`] ([`WriteStore::probe`], plus
//! [`WriteStore::room_for_bulk`] for bulk work), which costs a round trip or a system
//! call. Right after a failure one probe tells a store that is down (or out of room) from
//! a batch it refuses (a lock, a bad row): the failure is "seen down" when the probe
//! fails, or at once when the failure itself says the database could not be reached.
//! The first probe that finds a store seen down answering again brings the lane's retry
//! forward to that moment, so saving resumes within about [`PROBE_INTERVAL`] of the
//! database's return (plus a probe's own time) whatever the backoff had reached. A store
//! that answers while refusing the batch is never seen down, and its batch keeps its
//! backoff.
//!
//! [`WriteStore::probe`]: crate::store::WriteStore::probe
//! [`WriteStore::room_for_bulk`]: crate::store::WriteStore::room_for_bulk

use std::time::{Duration, Instant};

use super::report::LOG;
use super::state::{Failure, Writer};
use crate::store::{FailureKind, StoreError, WriteStats};

/// The first retry waits this long; each further failure doubles it, up to the auto-save
/// interval.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// How often a failing lane probes its store (see the module's doc).
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The two kinds of transaction the writer makes, each with its own backoff.
#[derive(Clone, Copy)]
pub(super) enum Lane {
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

/// How long to wait after the `attempts`-th failure in a row.
pub(super) fn backoff(attempts: u32, cap: Duration) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(cap)
}

impl Writer {
    /// The failure a lane is backing off from, if any.
    fn failure_of(&mut self, lane: Lane) -> &mut Option<Failure> {
        match lane {
            Lane::Batches => &mut self.failure,
            Lane::Jobs => &mut self.job_failure,
        }
    }

    /// Bookkeeping after any commit: health, metrics, and the store's upkeep.
    pub(super) fn saved(&mut self, lane: Lane, duration: Duration, stats: WriteStats) {
        if let Some(failure) = self.failure_of(lane).take() {
            // This commit was a retry, and it succeeded.
            self.metrics
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::info!(target: LOG, "{} recovered after {} failed attempt(s)", lane.what(), failure.attempts);
            // Healthy once neither lane is failing and every galaxy can be saved; while
            // the other lane is, health shows its error.
            if self.failure.is_none() && self.job_failure.is_none() && self.quarantine.is_empty() {
                self.metrics.set_recovered();
            } else if let Some(other) = self.failure.as_ref().or(self.job_failure.as_ref()) {
                self.metrics.set_failed(other.error.message.clone());
            }
        }
        if stats != WriteStats::default() {
            self.store.after_commit();
            self.last_commit = Some(self.clock.now());
            self.metrics
                .record_batch(duration, stats.systems, stats.rows);
        }
    }

    /// Bookkeeping after a failed transaction: metrics, the log, and the lane's backoff.
    pub(super) fn failed(&mut self, lane: Lane, error: &StoreError) {
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
        let backoff = backoff(attempts, self.settings.auto_save_interval);
        let what = lane.what();
        if attempts == 1 {
            log::error!(target: LOG, "{what} failed, {}: {message}", lane.kept());
        } else {
            log::warn!(target: LOG, "{what} failed again (attempt {attempts}, next in {backoff:?}): {message}");
        }
        // Only a failure that says the database could not be reached is known to be the
        // store's without a look.
        let seen_down = failure.kind == FailureKind::Unavailable || !self.probe_lane(lane);
        let now = self.clock.now();
        *self.failure_of(lane) = Some(Failure {
            attempts,
            retry_at: now + backoff,
            error: failure,
            probe_at: now + PROBE_INTERVAL,
            seen_down,
        });
    }

    /// True when the store says a transaction of `lane` could succeed now.
    fn probe_lane(&mut self, lane: Lane) -> bool {
        // A probe is a call like any other: one that hangs holds the batches behind it,
        // and counts as a stall until the store answers. Only bulk work's probe may end
        // one: the batches' own failure is ended by a batch.
        self.metrics.note_call_started();
        let reached = self.store.probe();
        if reached.is_ok() && matches!(lane, Lane::Jobs) {
            self.answered_outside_batches();
        }
        let answer = match lane {
            Lane::Batches => reached,
            Lane::Jobs => reached.and_then(|()| self.store.room_for_bulk()),
        };
        match answer {
            Ok(()) => true,
            Err(error) => {
                log::debug!(target: LOG, "probe for {}: {error}", lane.what());
                false
            }
        }
    }

    /// When the next probe is due: the earliest of the failing lanes' probes that come
    /// before their retries.
    pub(super) fn probe_due(&self) -> Option<Instant> {
        [&self.failure, &self.job_failure]
            .into_iter()
            .flatten()
            .filter(|f| f.probe_at < f.retry_at)
            .map(|f| f.probe_at)
            .min()
    }

    /// Probes the store for each failing lane whose probe is due before its retry; a lane
    /// seen down whose probe succeeds is retried at once.
    pub(super) fn probe(&mut self, now: Instant) {
        for lane in [Lane::Batches, Lane::Jobs] {
            let due = self
                .failure_of(lane)
                .as_ref()
                .is_some_and(|f| f.probe_at <= now && now < f.retry_at);
            if !due {
                continue;
            }
            let up = self.probe_lane(lane);
            let now = self.clock.now();
            let Some(failure) = self.failure_of(lane).as_mut() else {
                continue;
            };
            failure.probe_at = now + PROBE_INTERVAL;
            if !up {
                failure.seen_down = true;
            } else if std::mem::take(&mut failure.seen_down) {
                failure.retry_at = now;
                log::info!(target: LOG, "the database answers again: {} is retried at once", lane.what());
            }
        }
    }

    /// Bulk work's failure, once no job is left to retry (the one that failed was dropped,
    /// or refused): nothing of that lane is failing any more.
    pub(super) fn drop_idle_job_failure(&mut self) {
        if !self.jobs.is_empty() || self.job_failure.take().is_none() {
            return;
        }
        if self.failure.is_none() && self.quarantine.is_empty() {
            self.metrics.set_recovered();
        }
    }
}
