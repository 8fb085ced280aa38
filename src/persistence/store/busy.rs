//! The writer connection's busy handler: SQLite's busy timeout, ended early by a deadline.
//!
//! With the database locked by another process, every statement waits up to
//! [`BUSY_TIMEOUT`] before it fails. At shutdown that wait must not outlast the final
//! flush's deadline (`GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT`), yet the writer thread is inside
//! SQLite, waiting, when the deadline is set. So the deadline lives in a [`BusyDeadline`]
//! shared with the thread that sets it, and the handler, which SQLite calls on the
//! writer's thread between sleeps, checks it. SQLite takes a plain function, so the
//! handler finds its state in a thread-local that [`BusyDeadline::install`] sets on the
//! writer's thread; anywhere else it behaves as the plain busy timeout.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{Context, StoreError, BUSY_TIMEOUT};

/// A deadline one thread sets and the writer's busy waits obey.
#[derive(Debug)]
pub struct BusyDeadline {
    base: Instant,
    /// Milliseconds after `base`, or `u64::MAX` for none.
    at_ms: AtomicU64,
}

struct Waiting {
    deadline: Arc<BusyDeadline>,
    /// When the current wait began (SQLite's attempt 0).
    since: Instant,
}

thread_local! {
    static WAITING: RefCell<Option<Waiting>> = const { RefCell::new(None) };
}

/// SQLite's own sleeps between attempts, in milliseconds, then 100 ms each.
const SLEEPS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

fn busy(attempt: i32) -> bool {
    let now = Instant::now();
    let (since, deadline_passed) = WAITING.with_borrow_mut(|waiting| match waiting {
        Some(waiting) => {
            if attempt == 0 {
                waiting.since = now;
            }
            (waiting.since, waiting.deadline.passed(now))
        }
        None => (now, false),
    });
    let waited = now.saturating_duration_since(since);
    if deadline_passed || (attempt > 0 && waited >= BUSY_TIMEOUT) {
        return false;
    }
    let step = usize::try_from(attempt).unwrap_or(0);
    let sleep = Duration::from_millis(*SLEEPS_MS.get(step).unwrap_or(&100));
    std::thread::sleep(sleep.min(BUSY_TIMEOUT.saturating_sub(waited)));
    true
}

impl BusyDeadline {
    pub fn new() -> Arc<BusyDeadline> {
        Arc::new(BusyDeadline {
            base: Instant::now(),
            at_ms: AtomicU64::new(u64::MAX),
        })
    }

    /// From now on, busy waits end at `at` (or at the busy timeout, if sooner).
    pub fn set(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.base).as_millis();
        self.at_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX - 1), Ordering::SeqCst);
    }

    fn passed(&self, now: Instant) -> bool {
        match self.at_ms.load(Ordering::SeqCst) {
            u64::MAX => false,
            at => now.saturating_duration_since(self.base).as_millis() >= u128::from(at),
        }
    }

    /// Makes `conn`'s busy waits obey this deadline; call it on the thread that will use
    /// `conn` (the handler finds the deadline through that thread's local state).
    pub fn install(self: &Arc<Self>, conn: &Connection) -> Result<(), StoreError> {
        WAITING.set(Some(Waiting {
            deadline: self.clone(),
            since: Instant::now(),
        }));
        conn.busy_handler(Some(busy))
            .context("setting the busy handler")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_wait_ends_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
            .unwrap();
        let writer = Connection::open(&path).unwrap();
        let deadline = BusyDeadline::new();
        deadline.install(&writer).unwrap();
        let setter = {
            let deadline = deadline.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                deadline.set(Instant::now());
            })
        };
        let started = Instant::now();
        let result = writer.execute("INSERT INTO t VALUES (2)", []);
        setter.join().unwrap();
        assert!(result.is_err(), "the database is locked");
        // Without the deadline this waits out BUSY_TIMEOUT (5 s).
        assert!(
            started.elapsed() < BUSY_TIMEOUT,
            "the wait ended at the deadline, not the busy timeout"
        );
    }
}
