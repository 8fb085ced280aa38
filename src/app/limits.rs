//! When orders (and creations) are refused (503) rather than acknowledged: the oldest
//! unsaved change too old (`GWAR_PERSISTENCE_MAX_UNSAVED_SECS`), or the writer's calls
//! failing or hanging too long (`GWAR_PERSISTENCE_MAX_STALL_MS`). Reads only the engine's
//! metrics (atomics): never blocks.

use std::time::Duration;

use super::error::AppError;
use crate::persistence::metrics::Metrics;

/// When orders are refused (503) rather than acknowledged: the persistence settings'
/// `max_unsaved` and `max_stall`.
#[derive(Default)]
pub(super) struct OrderLimits {
    pub(super) max_unsaved: Option<Duration>,
    pub(super) max_stall: Option<Duration>,
}

impl OrderLimits {
    pub(super) fn check(&self, metrics: &Metrics) -> Result<(), AppError> {
        // Each limit is looked at only when set: the clock is read on the order path only
        // for a limit that needs it.
        if let Some(limit) = self.max_unsaved {
            match metrics.oldest_unsaved_age() {
                Some(age) if age > limit => return Err(AppError::UnsavedTooOld { age, limit }),
                _ => {}
            }
        }
        self.check_stall(metrics)
    }

    /// Refuses while the writer's calls have failed or hung past `max_stall`.
    pub(super) fn check_stall(&self, metrics: &Metrics) -> Result<(), AppError> {
        if let Some(limit) = self.max_stall {
            match metrics.stalled_for() {
                Some(stalled) if stalled > limit => {
                    return Err(AppError::SavingStalled { stalled, limit })
                }
                _ => {}
            }
        }
        Ok(())
    }
}
