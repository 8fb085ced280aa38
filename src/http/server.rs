//! A small HTTP/1.1 server: one poller thread that owns every socket, and a fixed pool of
//! workers that run the handler (plus two of its own for an endpoint with a connection
//! cap of its own, the admin listener). Synchronous and threaded; no async runtime.
//!
//! Written for this daemon's needs rather than taken from a crate because its limits are
//! the point: the request head is bounded (431), the path is bounded (414), the body is
//! bounded (413, `Content-Length` or chunked), a request must arrive whole within a deadline
//! once its first byte did (408), an idle keep-alive connection is closed after a while,
//! and the number of open connections is capped (503). A handler that panics costs one 500,
//! never a worker.
//!
//! Connection model (see [`super::poller`]): the poller holds every listening socket and
//! every connection that is idle or mid-request, in epoll through `mio`, with a deadline
//! each. An idle connection costs its socket and a slot of a couple of hundred bytes: no
//! thread and no buffer. Only once a whole request (head and body) has arrived is the
//! connection handed, with the parsed [`Request`](super::message::Request), to a worker
//! (see [`super::worker`]), which runs the handler, writes the response and hands the
//! connection back. A slow or silent client therefore holds no worker, however many of
//! them there are.
//!
//! Allocation: answering the game's hot requests (a system, an order) allocates only
//! small blocks on the worker and never grows one (no `realloc`, nothing over 1 KiB).
//! glibc serves such blocks from a per-thread cache without a lock; a reallocation or a
//! large block takes the lock of an allocator arena, and glibc makes only 8 arenas per
//! core, so on a small machine the workers share them with each other and with the
//! persistence threads, and any other thread that allocates slows the server down.
//! `tests/http_allocations.rs` holds the rule; what it was worth is in the README's
//! *Benchmarks* (section 6).
//!
//! Shutdown: the poller answers what waits in the listen backlog with 503 and stops
//! listening, closes idle connections, answers half-received requests and requests still
//! queued for a worker with 503, lets the requests in hand finish (answered with
//! `Connection: close`), and exits once every connection is closed; [`HttpServer::shutdown`]
//! joins it and the workers.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::answer::Answerer;
use super::message::{Endpoint, EndpointAddr, Handler, Limits, Listener};
use super::metrics::HttpMetrics;
use super::poller::Poller;
use super::waiting::WaitingRoom;
use super::worker;

/// Workers of their own for each endpoint with a connection cap of its own (the admin
/// listener): two, so that one long admin call (a backup) leaves another served.
const OWN_WORKERS: usize = 2;

/// A running server.
pub struct HttpServer {
    addresses: Vec<EndpointAddr>,
    stopping: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    poller: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// Disconnected once the poller and every worker have ended: each holds a sender,
    /// dropped with its thread (also by a panic), so a shutdown can wait for all of them
    /// with a bound.
    all_ended: crossbeam_channel::Receiver<()>,
}

impl HttpServer {
    /// Starts serving every endpoint, each with its own handler, from one poller and one
    /// pool of workers; `limits` hold for all of them together.
    pub fn start(
        endpoints: Vec<Endpoint>,
        limits: Limits,
        metrics: Arc<HttpMetrics>,
    ) -> io::Result<HttpServer> {
        let mut addresses = Vec::with_capacity(endpoints.len());
        let mut listeners = Vec::with_capacity(endpoints.len());
        let mut handlers = Vec::with_capacity(endpoints.len());
        let mut own_caps = Vec::with_capacity(endpoints.len());
        for Endpoint {
            listener,
            handler,
            own_max_connections,
        } in endpoints
        {
            addresses.push(match &listener {
                Listener::Tcp(l) => EndpointAddr::Tcp(l.local_addr()?),
                Listener::Unix(l) => EndpointAddr::Unix(
                    l.local_addr()?
                        .as_pathname()
                        .map(PathBuf::from)
                        .unwrap_or_default(),
                ),
            });
            listeners.push(listener);
            handlers.push(handler);
            own_caps.push(own_max_connections);
        }
        let limits = Arc::new(limits);
        let stopping = Arc::new(AtomicBool::new(false));
        // The shared pool's queue, and one of its own for each endpoint with a cap of its
        // own (the admin listener): players holding every shared worker (requests waiting
        // on a database that does not answer) never lock the operator out either.
        let (shared_jobs, shared_queue) = crossbeam_channel::unbounded();
        let mut jobs = Vec::with_capacity(own_caps.len());
        let mut queues = vec![(shared_queue, limits.workers.max(1))];
        for cap in &own_caps {
            if cap.is_some() {
                let (own_jobs, own_queue) = crossbeam_channel::unbounded();
                jobs.push(own_jobs);
                queues.push((own_queue, OWN_WORKERS));
            } else {
                jobs.push(shared_jobs.clone());
            }
        }
        drop(shared_jobs);
        // Bounded, so allocated once: an unbounded channel allocates a block of slots
        // every few dozen sends, on the worker, over 1 KiB (see the module doc). Workers
        // wait only if the poller falls this far behind.
        let (returns, returned) = crossbeam_channel::bounded(limits.workers.max(1) * 64);
        let poller = Poller::new(
            listeners,
            own_caps,
            limits.clone(),
            metrics.clone(),
            stopping.clone(),
            jobs,
            returned,
        )?;
        let waker = poller.waker();
        let handlers: Arc<[Arc<dyn Handler>]> = handlers.into();
        let (alive, all_ended) = crossbeam_channel::bounded::<()>(0);
        let answerer = Answerer {
            metrics: metrics.clone(),
            stopping: stopping.clone(),
            returns,
            waker: waker.clone(),
        };
        let workers = spawn_workers(queues, &handlers, answerer, &alive)?;
        let poller = std::thread::Builder::new()
            .name("gwar-http-poll".into())
            .spawn(move || {
                let _alive = alive;
                poller.run()
            })?;
        Ok(HttpServer {
            addresses,
            stopping,
            waker,
            poller: Some(poller),
            workers,
            all_ended,
        })
    }

    /// The address of the first TCP endpoint (`0.0.0.0:0` for a server without one).
    pub fn local_addr(&self) -> SocketAddr {
        self.addresses
            .iter()
            .find_map(|a| match a {
                EndpointAddr::Tcp(addr) => Some(*addr),
                EndpointAddr::Unix(_) => None,
            })
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Every endpoint's address, in the order the endpoints were given to [`Self::start`].
    pub fn addresses(&self) -> &[EndpointAddr] {
        &self.addresses
    }

    /// Stops listening, lets in-flight requests finish, and joins every thread.
    #[cfg(any(test, feature = "testing"))]
    pub fn shutdown(self) {
        self.shutdown_within(None);
    }

    /// [`HttpServer::shutdown`], waiting at most `limit` for the requests in hand (`None`:
    /// as long as they take). A request still running then (one waiting on a database
    /// that does not answer) is left behind with its thread, unanswered, so that a stop
    /// stays bounded whatever the network does; false when one was.
    pub fn shutdown_within(mut self, limit: Option<std::time::Duration>) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        if let Err(error) = self.waker.wake() {
            log::error!("cannot wake the HTTP poller to stop it: {error}");
        }
        if let Some(limit) = limit {
            if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                self.all_ended.recv_timeout(limit)
            {
                log::warn!("requests still running after {limit:?} of the shutdown are left behind unanswered");
                return false;
            }
        }
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        // The poller dropped the job queue's sender: the workers' loops end.
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        true
    }
}

/// Starts `count` workers on each queue of `queues`, answering through `answerer` and
/// parking answers that wait in one waiting room they share; each holds a clone of
/// `alive` for as long as it runs.
fn spawn_workers(
    queues: Vec<(crossbeam_channel::Receiver<worker::Job>, usize)>,
    handlers: &Arc<[Arc<dyn Handler>]>,
    answerer: Answerer,
    alive: &crossbeam_channel::Sender<()>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let waiting = WaitingRoom::new(answerer.clone());
    let mut workers = Vec::new();
    for (queue, count) in queues {
        for _ in 0..count {
            let worker = worker::Worker {
                handlers: handlers.clone(),
                answerer: answerer.clone(),
                waiting: waiting.clone(),
            };
            let queued = queue.clone();
            let alive = alive.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("gwar-http-{}", workers.len()))
                    .spawn(move || {
                        let _alive = alive;
                        worker.run(queued)
                    })?,
            );
        }
    }
    Ok(workers)
}

/// Files the daemon keeps open beside its connections: the database and its journal
/// files, read connections, backups, listeners, the poller's own descriptors, logs, and
/// the admin listener's connections (a cap of their own, far below this).
pub const FILES_BESIDE_CONNECTIONS: u64 = 256;

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) so that `max_connections`
/// connections fit beside the daemon's other files, up to the hard limit, and says in the
/// log what it did or why it could not. Returns the soft limit in force afterwards.
pub fn raise_open_files_limit(max_connections: usize) -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wanted = (max_connections as u64).saturating_add(FILES_BESIDE_CONNECTIONS);
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            log::warn!("cannot read the open-files limit (RLIMIT_NOFILE): {error}");
            return None;
        }
    };
    if soft >= wanted {
        return Some(soft);
    }
    let target = wanted.min(hard);
    if target > soft {
        if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            log::warn!(
                "cannot raise the open-files limit from {soft} to {target}: {error}; \
                 connections past about {} will fail",
                soft.saturating_sub(FILES_BESIDE_CONNECTIONS)
            );
            return Some(soft);
        }
    }
    if target < wanted {
        log::warn!(
            "the open-files limit is {target} (hard limit {hard}), below the {wanted} that \
             GWAR_MAX_CONNECTIONS={max_connections} needs: connections past about {} will \
             fail (raise LimitNOFILE, or lower GWAR_MAX_CONNECTIONS)",
            target.saturating_sub(FILES_BESIDE_CONNECTIONS)
        );
    } else {
        log::info!("raised the open-files limit from {soft} to {target}");
    }
    Some(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::message::{Later, Reply, Request, Response};
    use std::io::{Read, Write};

    /// Answers with its name.
    struct Named(&'static str);

    impl Handler for Named {
        fn handle(&self, request: &Request) -> Reply {
            if request.path == "/panic" {
                panic!("on purpose");
            }
            Response::json(
                200,
                &serde_json::json!({
                    "endpoint": self.0,
                    "method": request.method,
                }),
            )
            .into()
        }
    }

    /// Answers `/later` once the test opens its gate, off the worker; anything else now.
    struct Gated(crossbeam_channel::Receiver<()>);

    impl Handler for Gated {
        fn handle(&self, request: &Request) -> Reply {
            let answer = Response::json(200, &serde_json::json!({ "path": request.path }));
            if request.path != "/later" {
                return answer.into();
            }
            let gate = self.0.clone();
            Reply::Later(Later::new(move || {
                let _ = gate.recv();
                answer
            }))
        }
    }

    fn ask(mut stream: impl Read + Write, request: &str) -> String {
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn one_server_serves_a_tcp_and_a_unix_endpoint_each_with_its_handler() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let endpoints = vec![
            Endpoint {
                listener: Listener::Tcp(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
                handler: Arc::new(Named("game")),
                own_max_connections: None,
            },
            Endpoint {
                listener: Listener::Unix(std::os::unix::net::UnixListener::bind(&socket).unwrap()),
                handler: Arc::new(Named("admin")),
                own_max_connections: Some(8),
            },
        ];
        let server = HttpServer::start(
            endpoints,
            Limits {
                workers: 2,
                ..Limits::default()
            },
            Arc::new(HttpMetrics::default()),
        )
        .unwrap();
        let tcp = server.local_addr();
        assert_eq!(server.addresses()[0], EndpointAddr::Tcp(tcp));
        assert_eq!(server.addresses()[1], EndpointAddr::Unix(socket.clone()));
        assert_eq!(
            server.addresses()[1].to_string(),
            format!("unix:{}", socket.display())
        );
        let request = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let game = ask(std::net::TcpStream::connect(tcp).unwrap(), request);
        assert!(game.starts_with("HTTP/1.1 200"), "{game}");
        assert!(
            game.ends_with(r#"{"endpoint":"game","method":"GET"}"#),
            "{game}"
        );
        let admin = ask(
            std::os::unix::net::UnixStream::connect(&socket).unwrap(),
            request,
        );
        assert!(
            admin.ends_with(r#"{"endpoint":"admin","method":"GET"}"#),
            "{admin}"
        );
        // A panicking handler costs one 500; the server goes on.
        let panicked = ask(
            std::os::unix::net::UnixStream::connect(&socket).unwrap(),
            "GET /panic HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(panicked.starts_with("HTTP/1.1 500"), "{panicked}");
        let again = ask(std::net::TcpStream::connect(tcp).unwrap(), request);
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        server.shutdown();
        assert!(
            std::net::TcpStream::connect(tcp).is_err(),
            "no longer listening"
        );
    }

    #[test]
    fn answers_that_wait_hold_no_worker_and_keep_their_order_on_the_connection() {
        let (open, gate) = crossbeam_channel::unbounded();
        let endpoints = vec![Endpoint {
            listener: Listener::Tcp(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
            handler: Arc::new(Gated(gate)),
            own_max_connections: None,
        }];
        let limits = Limits {
            workers: 1,
            ..Limits::default()
        };
        let server =
            HttpServer::start(endpoints, limits, Arc::new(HttpMetrics::default())).unwrap();
        let tcp = server.local_addr();
        // Three waiting answers, the last pipelined behind a quick one on its connection.
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let mut stream = std::net::TcpStream::connect(tcp).unwrap();
            stream
                .write_all(b"POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            waiting.push(stream);
        }
        let mut pipelined = std::net::TcpStream::connect(tcp).unwrap();
        pipelined
            .write_all(b"POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\nGET /now HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        // The one worker is free for others while all three wait.
        let request = "GET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let other = ask(std::net::TcpStream::connect(tcp).unwrap(), request);
        assert!(other.ends_with(r#"{"path":"/other"}"#), "{other}");
        for _ in 0..3 {
            open.send(()).unwrap();
        }
        for stream in waiting {
            let answer = ask(stream, "");
            assert!(answer.ends_with(r#"{"path":"/later"}"#), "{answer}");
        }
        let both = ask(pipelined, "");
        let later = both
            .find(r#"{"path":"/later"}"#)
            .expect("the waiting answer");
        let now = both.find(r#"{"path":"/now"}"#).expect("the pipelined one");
        assert!(later < now, "in the order asked: {both}");
        server.shutdown();
    }
}
