//! The workers: each takes a connection whose whole request has arrived from the poller's
//! queue, runs the endpoint's handler, writes the response and hands the connection back
//! (`answer`); an answer the handler made to wait goes to the waiting room (`waiting`)
//! instead. A worker therefore never waits on a client, reading or writing, nor on a
//! durable order's commit.
//!
//! Invariants: every job taken is handed back, by the worker or by the waiting room (a
//! panicking handler costs one 500, never the connection's slot or the worker).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::answer::{Answerer, Finished};
use super::conn::Conn;
use super::message::{Handler, Reply, Request, Response};
use super::waiting::{Parked, WaitingRoom};

/// A connection with a whole request, for a worker.
pub(super) struct Job {
    pub token: mio::Token,
    pub conn: Conn,
    pub request: Request,
    pub keep_alive: bool,
    /// Sent as `HEAD`: the same answer without the body.
    pub head_only: bool,
    /// When the request's first byte arrived.
    pub started: Instant,
}

pub(super) struct Worker {
    pub handlers: Arc<[Arc<dyn Handler>]>,
    pub answerer: Answerer,
    /// Where answers that wait go, so that this worker does not wait for them.
    pub waiting: Arc<WaitingRoom>,
}

impl Worker {
    /// Serves jobs until the poller drops the queue's sender.
    pub fn run(self, jobs: Receiver<Job>) {
        for job in jobs {
            self.serve(job);
        }
    }

    fn serve(&self, job: Job) {
        let Job {
            token,
            conn,
            request,
            keep_alive,
            head_only,
            started,
        } = job;
        // Queued before the stop but not started: a new request, refused quickly.
        let stopping = self.answerer.stopping.load(Ordering::SeqCst);
        let reply = match self.handlers.get(conn.endpoint) {
            _ if stopping => Response::error(503, "shutting down").into(),
            Some(handler) => catch_unwind(AssertUnwindSafe(|| handler.handle(&request)))
                .unwrap_or_else(|_| {
                    log::error!("handler panicked on {} {}", request.method, request.path);
                    Response::error(500, "internal error").into()
                }),
            None => Response::error(500, "no handler for this listener").into(),
        };
        drop(request);
        let finished = Finished {
            token,
            conn,
            keep_alive,
            head_only,
            started,
        };
        let response = match reply {
            Reply::Now(response) => response,
            Reply::Later(later) => match self.waiting.park(Parked { later, finished }) {
                None => return,
                // Every waiter is busy: this worker waits, as if there were none.
                Some(Parked { later, finished }) => {
                    self.answerer.finish(finished, later.answer());
                    return;
                }
            },
        };
        self.answerer.finish(finished, response);
    }
}
