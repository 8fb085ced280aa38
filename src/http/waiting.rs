//! The waiting room: threads that hold answers a handler made to wait ([`Reply::Later`]),
//! so that no worker waits on them. A durable order's synced commit takes a disk flush;
//! had its worker waited, a few clients sending durable orders would hold every worker,
//! and every other player would wait behind their flushes — and the writer would see no
//! more durable requests per commit than there are workers.
//!
//! A parked answer goes to an idle waiter, or to a new one up to [`MAX_WAITERS`]; past
//! that the worker runs it itself, as if there were no waiting room. A waiter idle for
//! [`IDLE_EXIT`] ends. Each waiting answer bounds its own wait (the durable order's is the
//! save timeout), and its connection stays with the server's busy ones until the waiter
//! hands it back: pipelined requests behind it wait, a stop waits for it like for a worker.
//!
//! [`Reply::Later`]: super::message::Reply::Later

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::answer::{Answerer, Finished};
use super::message::Later;

/// Waiting answers held at once by threads of their own; more wait on their workers. A
/// waiter is a parked thread: its stack's touched pages, a few KiB.
pub(super) const MAX_WAITERS: usize = 1024;

/// A waiter with nothing to hold for this long ends.
const IDLE_EXIT: Duration = Duration::from_secs(30);

/// A waiter's stack: it only waits on a channel and then builds one small JSON answer, so
/// a fraction of the default 2 MiB keeps a full room's address space small.
const WAITER_STACK: usize = 256 * 1024;

/// An answer waiting, with what its connection needs once it is made.
pub(super) struct Parked {
    pub later: Later,
    pub finished: Finished,
}

pub(super) struct WaitingRoom {
    queue: Sender<Parked>,
    parked: Receiver<Parked>,
    /// Waiters waiting for a job, less the jobs sent to them and not yet taken.
    idle: AtomicUsize,
    /// Waiter threads alive.
    threads: AtomicUsize,
    answerer: Answerer,
}

impl WaitingRoom {
    pub(super) fn new(answerer: Answerer) -> Arc<WaitingRoom> {
        let (queue, parked) = crossbeam_channel::unbounded();
        Arc::new(WaitingRoom {
            queue,
            parked,
            idle: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            answerer,
        })
    }

    /// Hands `parked` to a waiter; gives it back when every waiter is busy and no more
    /// may start (the caller then waits for it itself).
    pub(super) fn park(self: &Arc<Self>, parked: Parked) -> Option<Parked> {
        let reserved = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if reserved.is_ok() {
            // An idle waiter is counted out for it. The room holds a receiver, so the
            // send cannot fail.
            return self.queue.send(parked).err().map(|error| error.0);
        }
        let started = self
            .threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITERS).then_some(n + 1)
            });
        if started.is_err() {
            return Some(parked);
        }
        let room = self.clone();
        let (first, for_waiter) = crossbeam_channel::bounded(1);
        let kept = for_waiter.clone();
        // A channel of one, empty, with a receiver: the send cannot fail or block.
        let _ = first.send(parked);
        let spawned = std::thread::Builder::new()
            .name("gwar-http-wait".into())
            .stack_size(WAITER_STACK)
            .spawn(move || room.wait(for_waiter));
        match spawned {
            Ok(_) => None,
            Err(error) => {
                log::warn!(
                    "cannot start a thread for a waiting answer ({error}); its worker waits"
                );
                self.threads.fetch_sub(1, Ordering::AcqRel);
                // No thread took it: it is still in the channel.
                kept.try_recv().ok()
            }
        }
    }

    /// A waiter's life: its first answer, then those parked for idle waiters, until it
    /// has been idle for [`IDLE_EXIT`] with none reserved for it.
    fn wait(self: Arc<Self>, first: Receiver<Parked>) {
        if let Ok(parked) = first.recv() {
            self.answer(parked);
        }
        loop {
            self.idle.fetch_add(1, Ordering::AcqRel);
            let parked = loop {
                match self.parked.recv_timeout(IDLE_EXIT) {
                    Ok(parked) => break parked,
                    Err(RecvTimeoutError::Timeout) => {
                        // Leave only if no job is on its way to this idle waiter.
                        let left =
                            self.idle
                                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                                    n.checked_sub(1)
                                });
                        if left.is_ok() {
                            self.threads.fetch_sub(1, Ordering::AcqRel);
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            self.answer(parked);
        }
    }

    fn answer(&self, parked: Parked) {
        let Parked { later, finished } = parked;
        self.answerer.finish(finished, later.answer());
    }
}
