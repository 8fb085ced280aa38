//! The poller: one thread that owns every listening socket and every connection that is
//! idle, mid-request, or finishing a response a slow client reads slowly, through epoll
//! (`mio`, edge-triggered).
//!
//! A connection is a [`Conn`] in a slot of a slab (its index is its `mio::Token`): the
//! socket, the bytes received but not yet consumed (empty, and without a heap block, while
//! the connection is idle), the bytes still to send, the request whose head has arrived,
//! and one deadline. Once a whole request has arrived the connection moves, with the
//! parsed request, to a worker through the job queue; its slot stays reserved (`Busy`) and
//! the worker hands it back through a channel and the [`mio::Waker`]. Events for a busy
//! connection are ignored: when it comes back it is read again until the socket would
//! block, which is what edge-triggered readiness requires anyway.
//!
//! Deadlines are checked by a sweep of the slab every [`SWEEP`] (a sweep is cheap beside
//! the requests it guards, even with the connection cap full): an idle connection is closed after `idle_timeout`;
//! a request not whole `request_timeout` after its first byte gets 408 and the connection
//! closes; a response not sent within `request_timeout` (within [`REFUSAL_LINGER`] once the
//! server is stopping) closes the connection. So neither a silent nor a slow client ever
//! holds a worker, nor the shutdown for long.
//!
//! Invariants: at most one request per connection is with a worker at a time, so pipelined
//! requests are answered in order; `open` counts every connection, busy ones included;
//! the connections of the endpoints without a cap of their own never exceed
//! `max_connections`, and an endpoint's with one never exceed it, so that neither locks
//! the other out; the poller exits only once every connection it
//! handed to a worker has come back and been closed.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::event::Source;
use mio::{Events, Interest, Poll, Token, Waker};

use super::answer::{serialize, Back};
use super::conn::{advance, Advance, Conn, Stream};
use super::message::{Limits, Listener, Response};
use super::metrics::HttpMetrics;
use super::parse::Pending;
use super::worker::Job;

/// How often deadlines are checked.
const SWEEP: Duration = Duration::from_millis(100);
/// Tokens from here on are listeners; below, connections' slots.
const LISTENER_BASE: usize = usize::MAX / 2;
const WAKER: Token = Token(usize::MAX);
/// Bytes read from a socket at a time (one buffer for the poller, not per connection).
const READ_CHUNK: usize = 32 * 1024;
/// How long the answer to a refused request may take to leave before the connection is
/// closed anyway; also how long any answer may take to leave once the server is stopping,
/// so that a client that does not read holds the shutdown this long at most.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// A listening socket of either kind.
enum ListenSocket {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl ListenSocket {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            ListenSocket::Tcp(l) => l.accept().map(|(stream, _)| {
                // Small answers leave at once rather than wait for an acknowledgement.
                let _ = stream.set_nodelay(true);
                Stream::Tcp(stream)
            }),
            ListenSocket::Unix(l) => l.accept().map(|(stream, _)| Stream::Unix(stream)),
        }
    }
}

enum Slot {
    Free,
    Open(Conn),
    /// With a worker.
    Busy,
}

/// What to do with a connection after [`Poller::step`].
enum Next {
    /// Keep it until an event or its deadline.
    Wait,
    Close,
    /// Hand it to a worker with this request.
    Dispatch(Box<Pending>, Instant),
}

pub(super) struct Poller {
    poll: Poll,
    waker: Arc<Waker>,
    listeners: Vec<Option<ListenSocket>>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Connections open, busy ones included.
    open: usize,
    /// Per endpoint: its own cap, if it has one.
    own_caps: Vec<Option<usize>>,
    /// Per endpoint: its connections open; the shared cap's count is the sum over the
    /// endpoints without a cap of their own.
    open_at: Vec<usize>,
    limits: Arc<Limits>,
    metrics: Arc<HttpMetrics>,
    stopping: Arc<AtomicBool>,
    /// Per endpoint: the queue of the workers that serve it (the shared pool's, or its
    /// own); emptied once every job came back, which ends the workers' loops.
    jobs: Vec<Sender<Job>>,
    returned: Receiver<Back>,
    scratch: Box<[u8]>,
    /// An accept failed (out of file descriptors, say): retried at each sweep.
    accept_failed: bool,
    last_accept_warning: Option<Instant>,
}

impl Poller {
    pub fn new(
        listeners: Vec<Listener>,
        own_caps: Vec<Option<usize>>,
        limits: Arc<Limits>,
        metrics: Arc<HttpMetrics>,
        stopping: Arc<AtomicBool>,
        jobs: Vec<Sender<Job>>,
        returned: Receiver<Back>,
    ) -> io::Result<Poller> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut sockets = Vec::with_capacity(listeners.len());
        for (n, listener) in listeners.into_iter().enumerate() {
            let token = Token(LISTENER_BASE + n);
            let socket = match listener {
                Listener::Tcp(l) => {
                    l.set_nonblocking(true)?;
                    let mut l = mio::net::TcpListener::from_std(l);
                    poll.registry()
                        .register(&mut l, token, Interest::READABLE)?;
                    ListenSocket::Tcp(l)
                }
                Listener::Unix(l) => {
                    l.set_nonblocking(true)?;
                    let mut l = mio::net::UnixListener::from_std(l);
                    poll.registry()
                        .register(&mut l, token, Interest::READABLE)?;
                    ListenSocket::Unix(l)
                }
            };
            sockets.push(Some(socket));
        }
        Ok(Poller {
            poll,
            waker,
            listeners: sockets,
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            open_at: vec![0; own_caps.len()],
            own_caps,
            limits,
            metrics,
            stopping,
            jobs,
            returned,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            accept_failed: false,
            last_accept_warning: None,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The event loop; returns once stopping and every connection is closed.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP;
        let mut draining = false;
        loop {
            let timeout = (self.open > 0 || self.accept_failed)
                .then(|| next_sweep.saturating_duration_since(Instant::now()));
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    log::error!("HTTP poller: {error}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                if token.0 >= LISTENER_BASE {
                    self.accept_all(token.0 - LISTENER_BASE);
                    continue;
                }
                if let Some(Slot::Open(conn)) = self.slots.get_mut(token.0) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        conn.readable = true;
                    }
                    self.drive(token.0);
                }
            }
            while let Ok(back) = self.returned.try_recv() {
                self.take_back(back);
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
                if self.accept_failed {
                    self.accept_failed = false;
                    for n in 0..self.listeners.len() {
                        self.accept_all(n);
                    }
                }
            }
            if self.stopping.load(Ordering::SeqCst) {
                if !draining {
                    draining = true;
                    self.stop_listening();
                    let linger = Instant::now() + REFUSAL_LINGER;
                    for index in 0..self.slots.len() {
                        if let Slot::Open(conn) = &mut self.slots[index] {
                            conn.deadline = conn.deadline.min(linger);
                        }
                        self.drive(index);
                    }
                }
                if self.open == 0 {
                    break;
                }
            }
        }
        // Every job came back: the workers' loops end with the queues.
        self.jobs.clear();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// What waits in the backlogs is answered 503; then the sockets close.
    fn stop_listening(&mut self) {
        for n in 0..self.listeners.len() {
            self.accept_all(n);
            if let Some(mut listener) = self.listeners[n].take() {
                let registry = self.poll.registry();
                let _ = match &mut listener {
                    ListenSocket::Tcp(l) => l.deregister(registry),
                    ListenSocket::Unix(l) => l.deregister(registry),
                };
            }
        }
    }

    fn accept_all(&mut self, n: usize) {
        loop {
            let Some(Some(listener)) = self.listeners.get(n) else {
                return;
            };
            match listener.accept() {
                Ok(stream) => self.admit(n, stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors, say: retried at the next sweep, logged at
                    // most once a minute.
                    self.accept_failed = true;
                    let now = Instant::now();
                    if self
                        .last_accept_warning
                        .is_none_or(|at| now.duration_since(at) > Duration::from_secs(60))
                    {
                        self.last_accept_warning = Some(now);
                        log::warn!("cannot accept connections: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// Whether `endpoint` is at its cap: its own, or the one it shares.
    fn full(&self, endpoint: usize) -> bool {
        match self.own_caps.get(endpoint).copied().flatten() {
            Some(cap) => self.open_at.get(endpoint).copied().unwrap_or(0) >= cap,
            None => {
                let shared: usize = (0..self.open_at.len())
                    .filter(|&n| self.own_caps.get(n).copied().flatten().is_none())
                    .map(|n| self.open_at[n])
                    .sum();
                shared >= self.limits.max_connections
            }
        }
    }

    fn admit(&mut self, endpoint: usize, mut stream: Stream) {
        let stopping = self.stopping();
        if stopping || self.full(endpoint) {
            let response = if stopping {
                Response::error(503, "shutting down")
            } else {
                self.metrics.record_refused_connection();
                Response::error(503, "too many connections, try again")
            };
            self.metrics.record(response.status, Duration::ZERO);
            let mut out = Vec::new();
            serialize(&mut out, &response, false, false);
            // Best effort, never waited for. What the client sent already is read first,
            // so that closing sends a FIN after the answer rather than a reset before it.
            let _ = stream.read(&mut self.scratch);
            let _ = stream.write(&out);
            return;
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::Free);
            self.slots.len() - 1
        });
        if let Err(error) = self.poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot watch a new connection: {error}");
            self.free.push(index);
            return;
        }
        self.slots[index] = Slot::Open(Conn::new(
            stream,
            endpoint,
            Instant::now() + self.limits.idle_timeout,
        ));
        self.open += 1;
        self.open_at[endpoint] += 1;
        self.metrics.set_open_connections(self.open);
    }

    fn take_back(&mut self, back: Back) {
        let Back { token, mut conn } = back;
        conn.readable = true;
        conn.deadline = Instant::now()
            + if self.stopping() {
                REFUSAL_LINGER
            } else if conn.sending() {
                self.limits.request_timeout
            } else {
                self.limits.idle_timeout
            };
        if let Some(slot) = self.slots.get_mut(token.0) {
            *slot = Slot::Open(conn);
            self.drive(token.0);
        }
    }

    /// Moves the connection in slot `index` on as far as it can go without waiting.
    fn drive(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Slot::Open(mut conn) = std::mem::replace(slot, Slot::Busy) else {
            return;
        };
        match self.step(&mut conn) {
            Next::Wait => self.slots[index] = Slot::Open(conn),
            Next::Close => self.close(index, conn),
            Next::Dispatch(pending, started) => {
                let Pending {
                    request,
                    keep_alive,
                    head_only,
                    ..
                } = *pending;
                let job = Job {
                    token: Token(index),
                    conn,
                    request,
                    keep_alive,
                    head_only,
                    started,
                };
                // The slot is `Busy` already. The workers live as long as the server;
                // should the queue be gone, the connection just closes.
                let unsent = match self.jobs.get(job.conn.endpoint) {
                    Some(jobs) => jobs.send(job).err().map(|error| error.into_inner()),
                    None => Some(job),
                };
                if let Some(job) = unsent {
                    self.close(index, job.conn);
                }
            }
        }
    }

    fn close(&mut self, index: usize, conn: Conn) {
        let conn_endpoint = conn.endpoint;
        // Closing the socket removes it from epoll.
        drop(conn);
        self.slots[index] = Slot::Free;
        self.free.push(index);
        self.open -= 1;
        if let Some(open) = self.open_at.get_mut(conn_endpoint) {
            *open -= 1;
        }
        self.metrics.set_open_connections(self.open);
    }

    fn step(&mut self, conn: &mut Conn) -> Next {
        let limits = self.limits.clone();
        let stopping = self.stopping();
        loop {
            if conn.failed {
                return Next::Close;
            }
            if conn.sending() {
                let answer = conn.started.is_none();
                let sent_before = conn.out_at;
                match conn.flush() {
                    Ok(true) if answer => conn.deadline = Instant::now() + limits.idle_timeout,
                    Ok(true) => {}
                    Ok(false) => {
                        // A slow reader that keeps reading is not cut: an answer's
                        // deadline counts from its last progress (nginx's send_timeout),
                        // not from its start. Not while a next request is being read
                        // (that has its own deadline), nor once stopping.
                        if answer && !stopping && conn.out_at > sent_before {
                            conn.deadline = Instant::now() + limits.request_timeout;
                        }
                        return Next::Wait;
                    }
                    Err(_) => return Next::Close,
                }
            }
            if conn.close_after_flush {
                return Next::Close;
            }
            if conn.started.is_none() {
                if conn.buf.is_empty() {
                    if stopping {
                        return Next::Close;
                    }
                } else {
                    // Pipelined bytes that came with the last request: a new request.
                    conn.started = Some(Instant::now());
                    conn.deadline = Instant::now() + limits.request_timeout;
                }
            }
            if let Some(started) = conn.started {
                if stopping {
                    self.refuse(conn, Response::error(503, "shutting down"));
                    continue;
                }
                match advance(conn, &limits) {
                    Advance::Ready(pending) => {
                        // Between requests from here on, until the next one's first byte.
                        conn.started = None;
                        return Next::Dispatch(pending, started);
                    }
                    Advance::Refused(response) => {
                        self.refuse(conn, response);
                        continue;
                    }
                    Advance::SendContinue => {
                        conn.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        continue;
                    }
                    Advance::NeedMore => {}
                }
            }
            if !conn.readable {
                return Next::Wait;
            }
            match conn.read(&mut self.scratch) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    if conn.started.is_none() {
                        conn.started = Some(Instant::now());
                        conn.deadline = Instant::now() + limits.request_timeout;
                    }
                    conn.buf.extend_from_slice(&self.scratch[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Next::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// Answers the request being received with `response`, then closes.
    fn refuse(&self, conn: &mut Conn, response: Response) {
        let started = conn.started.unwrap_or_else(Instant::now);
        self.metrics.record(response.status, started.elapsed());
        serialize(&mut conn.out, &response, false, false);
        conn.close_after_flush = true;
        conn.discard_request();
        conn.deadline = Instant::now() + self.limits.request_timeout.min(REFUSAL_LINGER);
    }

    /// Closes idle connections past their time, answers requests past theirs with 408,
    /// and gives up on answers that do not leave in time.
    fn sweep(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            if !matches!(&self.slots[index], Slot::Open(conn) if conn.deadline <= now) {
                continue;
            }
            let Slot::Open(mut conn) = std::mem::replace(&mut self.slots[index], Slot::Busy) else {
                continue;
            };
            if conn.sending() || conn.close_after_flush || conn.started.is_none() {
                self.close(index, conn);
                continue;
            }
            self.metrics.record_timed_out();
            self.refuse(
                &mut conn,
                Response::error(408, "request not received in time"),
            );
            self.slots[index] = Slot::Open(conn);
            self.drive(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_a_small_slot() {
        // What the README promises an idle connection costs beside its socket: the slot,
        // with no buffer behind it (`buf` and `out` are empty `Vec`s, `pending` is `None`).
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 200, "{size} bytes");
    }
}
