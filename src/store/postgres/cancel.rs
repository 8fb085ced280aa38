//! The shutdown's deadline for the writer's calls: a thread that cancels the writer's
//! running statement once the deadline has passed, so the final flush cannot outlast it.
//!
//! It only ever cancels a call the writer said is running, once per call, and never
//! touches the writer's session otherwise (a cancel goes over a connection of its own).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::postgres::{CancelToken, NoTls};
use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::super::{BusyDeadline, StoreError};
use super::error::{describe, LOG};

/// What the canceller's thread sees of the writer: the session's cancel token, and
/// whether a call is running.
#[derive(Default)]
struct Calls {
    token: Option<CancelToken>,
    running: bool,
    cancelled: bool,
}

/// The shutdown's deadline for the writer's calls. At shutdown the writer thread is
/// inside a call (a statement waiting on a lock, say) when the deadline is set, and the
/// final flush must not outlast it; so this thread watches the deadline and, once it
/// has passed, asks the server to cancel the running statement (which then fails as
/// busy). A server that cannot be reached at all is bounded by the connection's
/// timeouts and keepalives instead.
pub(super) struct Canceller {
    calls: Arc<Mutex<Calls>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How often the canceller looks at the deadline: a small share of any shutdown timeout.
const CANCEL_POLL: Duration = Duration::from_millis(50);

impl Canceller {
    pub(super) fn spawn(deadline: Arc<BusyDeadline>) -> Result<Canceller, StoreError> {
        let calls = Arc::new(Mutex::new(Calls::default()));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let watched = calls.clone();
        let thread = std::thread::Builder::new()
            .name("gwar-pg-deadline".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CANCEL_POLL) {
                    if !deadline.passed(Instant::now()) {
                        continue;
                    }
                    let token = {
                        let mut calls = watched.lock();
                        match (calls.running && !calls.cancelled, &calls.token) {
                            (true, Some(token)) => {
                                let token = token.clone();
                                calls.cancelled = true;
                                Some(token)
                            }
                            _ => None,
                        }
                    };
                    if let Some(token) = token {
                        log::warn!(target: LOG, "the shutdown deadline passed: cancelling the writer's statement");
                        if let Err(error) = token.cancel_query(NoTls) {
                            log::debug!(target: LOG, "cancelling the writer's statement: {}", describe(&error));
                        }
                    }
                }
            })
            .map_err(|source| StoreError::Thread {
                name: "PostgreSQL deadline",
                source,
            })?;
        Ok(Canceller {
            calls,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The writer starts a call on the session whose token is `token`: from now until
    /// [`Canceller::call_ends`], a deadline passed cancels it (once).
    pub(super) fn call_starts(&self, token: CancelToken) {
        let mut calls = self.calls.lock();
        calls.token = Some(token);
        calls.running = true;
        calls.cancelled = false;
    }

    /// The writer's call returned: nothing to cancel until the next one starts.
    pub(super) fn call_ends(&self) {
        self.calls.lock().running = false;
    }
}

impl Drop for Canceller {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!(target: LOG, "the PostgreSQL deadline thread panicked");
            }
        }
    }
}
