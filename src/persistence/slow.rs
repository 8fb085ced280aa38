//! Slow store calls (`GWAR_SLOW_QUERY_MS`): a call into the store that took longer than
//! the threshold is logged at warn with its kind, its duration and its rows, and counted
//! by kind (`gwar_slow_queries_total{kind}` on `/metrics`).
//!
//! The unit is the store call (a batch, a chunk, a load, a take), not the statement: it is
//! what the engine waits for and what a player's latency or the writer's loss window pays,
//! commit and fsync included, which no single statement shows; and it is measured here,
//! above the store, with one pair of `Instant::now` per call and nothing per row, so the
//! store names nothing of the engine (ARCHITECTURE, *Layers*). Which statement of a slow
//! call is to blame, the plan test (`store/*/plans.rs`) and the database's own
//! statistics say.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::logging::PERSISTENCE as LOG;
use crate::store::WriteStats;

/// What a store call did: a fixed set, so the counter family's labels stay bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowKind {
    /// A batch of orders (the final one of a stop included).
    Batch,
    /// A chunk of a galaxy's creation (or restore).
    CreateChunk,
    /// A chunk of a galaxy's removal.
    PurgeChunk,
    /// Unfinished or orphaned jobs taken.
    Jobs,
    /// The leases of this daemon's galaxies renewed (PostgreSQL).
    Renew,
    /// A galaxy taken for this daemon (PostgreSQL).
    Take,
    /// A galaxy loaded on a cache miss.
    Load,
    /// A galaxy archived.
    ArchiveWrite,
    /// An archive read back (a restore, an export).
    ArchiveRead,
    /// Archives listed, idle galaxies found, or the storage measured.
    Lookup,
}

impl SlowKind {
    /// Every kind, in the exposition's order.
    pub const ALL: [SlowKind; 10] = [
        SlowKind::Batch,
        SlowKind::CreateChunk,
        SlowKind::PurgeChunk,
        SlowKind::Jobs,
        SlowKind::Renew,
        SlowKind::Take,
        SlowKind::Load,
        SlowKind::ArchiveWrite,
        SlowKind::ArchiveRead,
        SlowKind::Lookup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SlowKind::Batch => "batch",
            SlowKind::CreateChunk => "create_chunk",
            SlowKind::PurgeChunk => "purge_chunk",
            SlowKind::Jobs => "jobs",
            SlowKind::Renew => "renew",
            SlowKind::Take => "take",
            SlowKind::Load => "load",
            SlowKind::ArchiveWrite => "archive_write",
            SlowKind::ArchiveRead => "archive_read",
            SlowKind::Lookup => "lookup",
        }
    }
}

/// No threshold: nothing is logged or counted.
const OFF: u64 = u64::MAX;

/// The threshold and the counts of slow calls by kind, shared by every thread that calls
/// the store.
#[derive(Debug)]
pub(crate) struct SlowCalls {
    /// Microseconds, or [`OFF`].
    threshold_micros: AtomicU64,
    counts: [AtomicU64; SlowKind::ALL.len()],
}

impl Default for SlowCalls {
    fn default() -> Self {
        SlowCalls {
            threshold_micros: AtomicU64::new(OFF),
            counts: Default::default(),
        }
    }
}

impl SlowCalls {
    /// From now on, calls longer than `threshold` are slow (`None`: none is).
    pub(crate) fn set_threshold(&self, threshold: Option<Duration>) {
        let micros = threshold.map_or(OFF, |t| u64::try_from(t.as_micros()).unwrap_or(OFF - 1));
        self.threshold_micros.store(micros, Relaxed);
    }

    /// Runs the store call `call` of kind `kind`; when it took longer than the threshold,
    /// logs it with the rows `rows` reads from its result, and counts it.
    pub(crate) fn time<T>(
        &self,
        kind: SlowKind,
        call: impl FnOnce() -> T,
        rows: impl FnOnce(&T) -> u64,
    ) -> T {
        let started = Instant::now();
        let result = call();
        let took = started.elapsed();
        let threshold = self.threshold_micros.load(Relaxed);
        if threshold != OFF && took.as_micros() >= u128::from(threshold) {
            self.counts[kind as usize].fetch_add(1, Relaxed);
            log::warn!(target: LOG,
                "slow store call: {} took {:.1} ms, {} rows (GWAR_SLOW_QUERY_MS={})",
                kind.as_str(), took.as_secs_f64() * 1000.0, rows(&result), threshold / 1000);
        }
        result
    }

    /// Slow calls of each kind so far, in the order of [`SlowKind::ALL`].
    pub(crate) fn counts(&self) -> [u64; SlowKind::ALL.len()] {
        std::array::from_fn(|at| self.counts[at].load(Relaxed))
    }
}

/// The rows a store call that writes reports; 0 for a failure.
pub(crate) fn written<E>(result: &Result<WriteStats, E>) -> u64 {
    result.as_ref().map_or(0, |stats| stats.rows)
}

/// The items a store call that lists returns; 0 for a failure.
pub(crate) fn listed<T, E>(result: &Result<Vec<T>, E>) -> u64 {
    result.as_ref().map_or(0, |items| items.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_past_the_threshold_is_counted_by_kind_and_none_without_one() {
        let slow = SlowCalls::default();
        assert_eq!(slow.time(SlowKind::Load, || 7, |&n| n), 7);
        assert_eq!(slow.counts(), [0; 10], "off by default");
        slow.set_threshold(Some(Duration::ZERO));
        slow.time(SlowKind::Load, || (), |_| 0);
        slow.time(SlowKind::Take, || (), |_| 0);
        let counts = slow.counts();
        assert_eq!(counts[SlowKind::Load as usize], 1);
        assert_eq!(counts[SlowKind::Take as usize], 1);
        assert_eq!(counts.iter().sum::<u64>(), 2);
        slow.set_threshold(None);
        slow.time(SlowKind::Load, || (), |_| 0);
        assert_eq!(slow.counts()[SlowKind::Load as usize], 1);
    }
}
