//! Time as the writer's policies see it: a [`Clock`] gives `now()`, from the system (the
//! daemon, and anything linking the library) or from a hand that moves it (tests).
//!
//! Everything the writer decides by time — when a coalesced batch is due, when a failed
//! one is retried, when the auto-save interval comes round, which galaxies have idled long
//! enough to leave memory, how old the oldest unsaved change is — reads this clock, so a
//! test can drive those decisions by [`Clock::advance`] instead of sleeping. Measurements
//! (how long a batch or a lock hold took) read the real clock: they describe work done,
//! not a decision. A manual clock never goes backwards, and all clones of it share one
//! time.

#[cfg(test)]
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(test)]
use parking_lot::Mutex;

/// A cheap-to-clone source of `Instant`s: the system's, or a manual one.
#[derive(Clone, Debug)]
pub struct Clock(Source);

#[derive(Clone, Debug)]
enum Source {
    System,
    /// Starts at the real time it was made, then moves only by `advance` (the crate's
    /// unit tests).
    #[cfg(test)]
    Manual(Arc<Mutex<Instant>>),
}

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// A clock that stands still until [`Clock::advance`] moves it (for tests).
    #[cfg(test)]
    pub fn manual() -> Clock {
        Clock(Source::Manual(Arc::new(Mutex::new(Instant::now()))))
    }

    pub fn now(&self) -> Instant {
        match &self.0 {
            Source::System => Instant::now(),
            #[cfg(test)]
            Source::Manual(now) => *now.lock(),
        }
    }

    /// Moves a manual clock (and its clones) forward by `by`; the system clock moves by
    /// itself, so there this does nothing.
    #[cfg(test)]
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(now) = &self.0 {
            let mut now = now.lock();
            *now += by;
        }
    }

    /// How long from now until `at` (zero once it has passed).
    pub fn until(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.now())
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_follow() {
        let clock = Clock::manual();
        let clone = clock.clone();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(30));
        assert_eq!(clone.now(), start + Duration::from_secs(30));
        assert_eq!(
            clone.until(start + Duration::from_secs(31)),
            Duration::from_secs(1)
        );
        assert_eq!(clone.until(start), Duration::ZERO);
    }

    #[test]
    fn the_system_clock_is_not_moved_by_hand() {
        let clock = Clock::system();
        let before = Instant::now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() < before + Duration::from_secs(3600));
    }
}
