//! A small blocking HTTP/1.1 server: one acceptor thread and a fixed pool of workers.
//!
//! Written for this daemon's needs rather than taken from a crate because its limits are
//! the point: the request head is bounded (431), the path is bounded (414), the body is
//! bounded (413) and read only by `Content-Length`, and every read has a deadline (408),
//! so neither a slow nor a hostile client can hold a worker or memory for long. Parsing of
//! the head is `httparse`'s. A handler that panics costs one 500, never a worker.
//!
//! Allocation: answering the game's hot requests (a system, an order) allocates only
//! small blocks and never grows one (no `realloc`, nothing over 1 KiB). glibc serves such
//! blocks from a per-thread cache without a lock; a reallocation or a large block takes
//! the lock of an allocator arena, and glibc makes only 8 arenas per core, so on a small
//! machine the workers share them with each other and with the persistence threads. Before this rule, two idle threads
//! that had merely allocated made a server 2–10% slower (bench section 6); after it, 1%.
//!
//! Shutdown: the acceptor stops taking connections, workers finish the request in hand,
//! answer it with `Connection: close`, and exit; [`HttpServer::shutdown`] joins them.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, TrySendError};

use super::metrics::HttpMetrics;

/// Limits that keep a client from holding a worker or memory.
#[derive(Clone, Debug)]
pub struct Limits {
    pub workers: usize,
    /// Request line and headers together.
    pub max_head_bytes: usize,
    pub max_path_bytes: usize,
    pub max_body_bytes: usize,
    /// Time allowed to receive one whole request once its first byte arrived.
    pub request_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Accepted connections waiting for a worker before new ones get 503.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: 16,
            max_head_bytes: 16 * 1024,
            max_path_bytes: 2048,
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            // Well below the usual limit of 1024 open files.
            queue: 256,
        }
    }
}

/// Headers per request; more get 431.
const MAX_HEADERS: usize = 64;

/// A complete request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path as sent, before `?`, not yet percent-decoded.
    pub path: String,
    /// What follows `?`, or empty.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response; `Content-Length` and `Connection` are added by the server.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        // Room for the usual answer up front, so it is not grown (see the module doc).
        // Serialising our own plain structs cannot fail; the fallback keeps this total.
        let mut body = Vec::with_capacity(512);
        if serde_json::to_writer(&mut body, value).is_err() {
            body = b"{}".to_vec();
        }
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// What the server calls for every complete request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request) -> Response;
}

/// A running server.
pub struct HttpServer {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts serving `listener` with `handler`.
    pub fn start(
        listener: TcpListener,
        handler: Arc<dyn Handler>,
        limits: Limits,
        metrics: Arc<HttpMetrics>,
    ) -> io::Result<HttpServer> {
        let local_addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (queue, connections) = bounded::<TcpStream>(limits.queue);
        let limits = Arc::new(limits);
        let mut workers = Vec::with_capacity(limits.workers);
        for n in 0..limits.workers.max(1) {
            let connections: Receiver<TcpStream> = connections.clone();
            let worker = Worker {
                handler: handler.clone(),
                limits: limits.clone(),
                metrics: metrics.clone(),
                stopping: stopping.clone(),
            };
            workers.push(
                std::thread::Builder::new()
                    .name(format!("gwar-http-{n}"))
                    .spawn(move || {
                        // Ends when the acceptor drops the queue's sender and it drains.
                        for mut stream in connections {
                            if worker.stopping.load(Ordering::SeqCst) {
                                // Accepted but not started: a new request, refused quickly.
                                let response = Response::error(503, "shutting down");
                                let _ = write_response(
                                    &mut stream,
                                    &response,
                                    false,
                                    Duration::from_secs(1),
                                );
                                continue;
                            }
                            worker.serve(stream);
                        }
                    })?,
            );
        }
        let acceptor = {
            let stopping = stopping.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("gwar-http-accept".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else {
                            // Out of file descriptors, say: wait rather than spin.
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        };
                        if let Err(TrySendError::Full(mut stream)) = queue.try_send(stream) {
                            let response = Response::error(503, "server busy, try again");
                            metrics.record(response.status, Duration::ZERO);
                            let _ = write_response(
                                &mut stream,
                                &response,
                                false,
                                Duration::from_secs(1),
                            );
                        }
                    }
                })?
        };
        Ok(HttpServer {
            local_addr,
            stopping,
            acceptor: Some(acceptor),
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish, and joins every thread.
    pub fn shutdown(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor from its blocking accept with a connection of our own.
        let wake_ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let wake = SocketAddr::new(wake_ip, self.local_addr.port());
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

struct Worker {
    handler: Arc<dyn Handler>,
    limits: Arc<Limits>,
    metrics: Arc<HttpMetrics>,
    stopping: Arc<AtomicBool>,
}

/// Why a connection stops before a complete request was read.
enum ReadFailure {
    /// Nothing more to do: closed, idle timeout, or I/O error.
    Close,
    /// Tell the client why, then close.
    Reply(Response),
}

impl Worker {
    fn serve(&self, mut stream: TcpStream) {
        let Ok(peer) = stream.peer_addr() else { return };
        let _ = stream.set_nodelay(true);
        let write_within = self.limits.request_timeout;
        let mut buffer = Vec::new();
        loop {
            let started = Instant::now();
            let (request, keep_alive) = match self.read_request(&mut stream, &mut buffer, peer) {
                Ok(parsed) => parsed,
                Err(ReadFailure::Close) => return,
                Err(ReadFailure::Reply(response)) => {
                    self.metrics.record(response.status, started.elapsed());
                    let _ = write_response(&mut stream, &response, false, write_within);
                    return;
                }
            };
            let response = catch_unwind(AssertUnwindSafe(|| self.handler.handle(&request)))
                .unwrap_or_else(|_| {
                    log::error!("handler panicked on {} {}", request.method, request.path);
                    Response::error(500, "internal error")
                });
            self.metrics.record(response.status, started.elapsed());
            let keep_alive = keep_alive && !self.stopping.load(Ordering::SeqCst);
            if write_response(&mut stream, &response, keep_alive, write_within).is_err()
                || !keep_alive
            {
                return;
            }
        }
    }

    /// Reads one request; `buffer` carries bytes already received beyond the last one.
    fn read_request(
        &self,
        stream: &mut TcpStream,
        buffer: &mut Vec<u8>,
        peer: SocketAddr,
    ) -> Result<(Request, bool), ReadFailure> {
        let limits = &self.limits;
        // Wait for the first byte under the idle timeout, then the whole request under
        // the request timeout.
        let mut deadline = Instant::now() + limits.idle_timeout;
        let mut first_byte_seen = !buffer.is_empty();
        if first_byte_seen {
            deadline = Instant::now() + limits.request_timeout;
        }
        let head_len = loop {
            if let Some(end) = find_head_end(buffer) {
                break end;
            }
            if buffer.len() > limits.max_head_bytes {
                return Err(reply(431, "request head too large"));
            }
            let read = read_some(stream, buffer, deadline, first_byte_seen, &self.stopping)?;
            if read > 0 && !first_byte_seen {
                first_byte_seen = true;
                deadline = Instant::now() + limits.request_timeout;
            }
        };
        if head_len > limits.max_head_bytes {
            return Err(reply(431, "request head too large"));
        }

        // On the stack: a 2 KiB heap block per request takes the allocator's slow path,
        // locked and consolidating small free blocks (see the module doc).
        let mut header_slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut header_slots);
        match parsed.parse(&buffer[..head_len]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(reply(400, "malformed request head")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(reply(431, "too many request headers"))
            }
            Err(e) => return Err(reply(400, &format!("malformed request: {e}"))),
        }
        let method = parsed.method.unwrap_or_default().to_owned();
        let target = parsed.path.unwrap_or_default();
        if target.len() > limits.max_path_bytes {
            return Err(reply(414, "request path too long"));
        }
        let http_10 = parsed.version == Some(0);
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), query.to_owned()),
            None => (target.to_owned(), String::new()),
        };
        let mut headers = Vec::with_capacity(parsed.headers.len());
        for header in parsed.headers.iter() {
            let Ok(value) = std::str::from_utf8(header.value) else {
                return Err(reply(400, "header values must be UTF-8"));
            };
            headers.push((header.name.to_owned(), value.trim().to_owned()));
        }
        let request_header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if request_header("transfer-encoding").is_some() {
            return Err(reply(
                411,
                "send the body with Content-Length, not a transfer encoding",
            ));
        }
        let lengths: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.as_str())
            .collect();
        // Exactly one, digits only: anything looser is how requests get smuggled.
        let body_len = match lengths.as_slice() {
            [] => 0,
            [value] if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => value
                .parse::<usize>()
                .map_err(|_| reply(413, "request body larger than 1 MiB"))?,
            _ => return Err(reply(400, "invalid Content-Length")),
        };
        if body_len > limits.max_body_bytes {
            return Err(reply(413, "request body larger than 1 MiB"));
        }
        let connection = request_header("connection").map(str::to_ascii_lowercase);
        let keep_alive = match connection.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => !http_10,
        };
        let expects_continue =
            request_header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));

        buffer.drain(..head_len);
        if expects_continue && buffer.len() < body_len {
            stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|_| ReadFailure::Close)?;
        }
        while buffer.len() < body_len {
            read_some(stream, buffer, deadline, true, &self.stopping)?;
        }
        let body: Vec<u8> = buffer.drain(..body_len).collect();
        Ok((
            Request {
                method,
                path,
                query,
                headers,
                body,
                peer,
            },
            keep_alive,
        ))
    }
}

fn reply(status: u16, message: &str) -> ReadFailure {
    ReadFailure::Reply(Response::error(status, message))
}

/// Reads what is available into `buffer` before `deadline`; fails with 408 when the
/// deadline passes mid-request, or closes quietly when an idle connection times out or
/// the server is stopping (an idle wait is sliced so that shutdown is not held up).
fn read_some(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    deadline: Instant,
    mid_request: bool,
    stopping: &AtomicBool,
) -> Result<usize, ReadFailure> {
    let timed_out = || {
        if mid_request {
            reply(408, "request not received in time")
        } else {
            ReadFailure::Close
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    if !mid_request && stopping.load(Ordering::SeqCst) {
        return Err(ReadFailure::Close);
    }
    let slice = if mid_request {
        left
    } else {
        left.min(Duration::from_millis(200))
    };
    let _ = stream.set_read_timeout(Some(slice));
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk) {
        Ok(0) => Err(ReadFailure::Close),
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            if mid_request || Instant::now() >= deadline {
                Err(timed_out())
            } else {
                Ok(0) // one idle slice passed; the caller loops
            }
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(_) => Err(ReadFailure::Close),
    }
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes the response within `within` in all, however slowly the client reads: a write
/// timeout alone bounds each send, not the whole.
fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    keep_alive: bool,
    within: Duration,
) -> io::Result<()> {
    // One buffer, allocated once at its final size (see the module doc).
    let mut out = Vec::with_capacity(256 + response.body.len());
    write!(
        out,
        "HTTP/1.1 {} {}\r\nConnection: {}\r\n",
        response.status,
        reason(response.status),
        if keep_alive { "keep-alive" } else { "close" },
    )?;
    // A 204 carries no body and, by RFC 9110, no Content-Length either.
    if response.status != 204 {
        write!(
            out,
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            response.content_type,
            response.body.len()
        )?;
    }
    for (name, value) in &response.headers {
        write!(out, "{name}: {value}\r\n")?;
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&response.body);
    let deadline = Instant::now() + within;
    for chunk in out.chunks(64 * 1024) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        stream.write_all(chunk)?;
    }
    stream.flush()
}
