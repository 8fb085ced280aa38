//! The writer connection's busy handler: SQLite's busy timeout, ended early by a deadline.
//!
//! With the database locked by another process, every statement waits up to
//! [`BUSY_TIMEOUT`] before it fails. At shutdown that wait must not outlast the final
//! flush's deadline (`GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT`), yet the writer thread is inside
//! SQLite, waiting, when the deadline is set. So the deadline lives in a [`BusyDeadline`]
//! shared with the thread that sets it, and the handler, which SQLite calls on the
//! writer's thread between sleeps, checks it. SQLite takes a plain function, so the
//! handler finds its state in a thread-local that [`install`] sets on the writer's
//! thread; anywhere else it behaves as the plain busy timeout.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::super::{BusyDeadline, StoreError};
use super::db::{Context, BUSY_TIMEOUT};

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

/// Makes `conn`'s busy waits obey `deadline`; call it on the thread that will use `conn`
/// (the handler finds the deadline through that thread's local state).
pub(super) fn install(deadline: &Arc<BusyDeadline>, conn: &Connection) -> Result<(), StoreError> {
    WAITING.set(Some(Waiting {
        deadline: deadline.clone(),
        since: Instant::now(),
    }));
    conn.busy_handler(Some(busy))
        .context("setting the busy handler")
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
        install(&deadline, &writer).unwrap();
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
