//! What follows a transaction of the writer, whether a batch or a chunk of bulk work
//! committed or failed: health and metrics, the log, and the lane's retry backoff.
//!
//! Each lane backs off on its own (a removal that keeps failing must not hold up the
//! batches of orders, nor a chunk that commits hide that they are failing). A failure
//! waits [`FIRST_BACKOFF`], doubling with each further failure, capped at the auto-save
//! interval; the lane's next commit clears it, and health is healthy again once neither
//! lane is failing.

use std::time::Duration;

use super::report::LOG;
use super::state::{Failure, Writer};
use crate::store::{StoreError, WriteStats};

/// The first retry waits this long; each further failure doubles it, up to the auto-save
/// interval.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(50);

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
            // Healthy once neither lane is failing and every galaxy can be saved.
            if self.failure.is_none() && self.job_failure.is_none() && self.quarantine.is_empty() {
                self.metrics.set_recovered();
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
        let retry_at = self.clock.now() + backoff;
        *self.failure_of(lane) = Some(Failure {
            attempts,
            retry_at,
            error: failure,
        });
    }
}
