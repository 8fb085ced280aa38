//! The server's public face: what a caller hands [`super::server::HttpServer`] (listeners,
//! endpoints, handlers, limits) and what a handler sees and answers (a [`Request`], a
//! [`Response`]). Plain types: nothing here reads a socket, starts a thread or knows how
//! the server is built, so every other file of the server can name them without naming
//! the server back.
//!
//! Invariant: a [`Response`] carries neither `Content-Length`, `Connection` nor `Date`;
//! the worker adds them when it writes the answer.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::json::ErrorJson;
use crate::settings::DEFAULT_MAX_CONNECTIONS;

/// Limits that keep a client from holding a worker, a connection slot or memory.
#[derive(Clone, Debug)]
pub struct Limits {
    pub workers: usize,
    /// Request line and headers together.
    pub max_head_bytes: usize,
    pub max_path_bytes: usize,
    /// The body as the handler sees it (after chunked decoding).
    pub max_body_bytes: usize,
    /// Time allowed to receive one whole request once its first byte arrived; also the
    /// time a response may go without progress to a client that reads slowly.
    pub request_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Open connections, all endpoints together but those with a cap of their own
    /// ([`Endpoint::own_max_connections`]); past it new ones are answered 503 and closed.
    pub max_connections: usize,
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A complete request.
#[derive(Clone, Debug)]
pub struct Request {
    /// As sent, except that a `HEAD` request is given to the handler as `GET` (the server
    /// drops the body of the answer).
    pub method: String,
    /// The path as sent, before `?`, not yet percent-decoded.
    pub path: String,
    /// What follows `?`, or empty.
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// The body, decoded when it was sent chunked.
    pub body: Vec<u8>,
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

/// A response; `Content-Length`, `Connection` and `Date` are added by the server.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        // Room for the usual answer up front, so it is not grown (see the module doc of
        // `server`).
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
        Response::json(status, &ErrorJson { error: message })
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

/// A handler's answer: now, or once something the handler waits for has happened.
#[derive(Debug)]
pub enum Reply {
    Now(Response),
    /// Built later, off the worker (see `super::waiting`): for answers that wait on
    /// something slow but cheap to wait for, such as a durable order's synced commit.
    Later(Later),
}

impl Reply {
    /// The response, made here by the calling thread if it comes later.
    #[cfg(test)]
    pub fn wait(self) -> Response {
        match self {
            Reply::Now(response) => response,
            Reply::Later(later) => later.answer(),
        }
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Now(response)
    }
}

/// An answer that blocks until it is ready, run by a thread of the server's waiting
/// room, not by a worker. It must return within a bound of its own.
pub struct Later(pub Box<dyn FnOnce() -> Response + Send>);

impl Later {
    pub fn new(answer: impl FnOnce() -> Response + Send + 'static) -> Later {
        Later(Box::new(answer))
    }

    /// Makes the answer, waiting for it; one that panics costs a 500.
    pub fn answer(self) -> Response {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(self.0)).unwrap_or_else(|_| {
            log::error!("a waiting answer panicked");
            Response::error(500, "internal error")
        })
    }
}

impl fmt::Debug for Later {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Later(..)")
    }
}

/// What the server calls for every complete request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request) -> Reply;
}

/// A listening socket, bound by the caller.
#[derive(Debug)]
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// One listening socket and the handler that serves what arrives on it.
pub struct Endpoint {
    pub listener: Listener,
    pub handler: Arc<dyn Handler>,
    /// `None`: the endpoint's connections count against [`Limits::max_connections`],
    /// shared with every other such endpoint. `Some(n)`: it has a cap of its own, and
    /// others filling theirs never lock it out (the admin listener, so that an operator
    /// can still reach a daemon whose public port is flooded).
    pub own_max_connections: Option<usize>,
}

/// Where an endpoint listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointAddr {
    Tcp(SocketAddr),
    /// The socket file's path (empty for an unnamed socket).
    Unix(PathBuf),
}

impl fmt::Display for EndpointAddr {
    /// `HOST:PORT`, or `unix:PATH` as `GWAR_ADMIN_LISTEN` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddr::Tcp(addr) => write!(f, "{addr}"),
            EndpointAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}
