//! A connection: its socket and what the poller keeps for it between events (the bytes
//! received but not yet consumed, the answer still to send, the request whose head has
//! arrived, one deadline), and the assembling of a whole request from the bytes received.
//!
//! Nothing here waits: a read or a write that would block says so and returns. Nothing
//! here knows of the poller's table of connections, of workers or of handlers; the poller
//! decides what a connection's state means (idle, mid-request, answering) and when it
//! times out.
//!
//! Invariants: an idle connection holds no heap block (`buf` and `out` are empty `Vec`s,
//! no request pending); the bytes held for a request are bounded as `parse` promises.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::message::{Limits, Response};
use super::parse::{parse_head, Body, Head, Pending};

/// A connected socket of either kind.
pub(super) enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}

/// One connection, owned by the poller or, while its request is served, by a worker.
pub(super) struct Conn {
    stream: Stream,
    /// Which endpoint accepted it: the index of its handler.
    pub endpoint: usize,
    /// Received, not yet consumed.
    pub buf: Vec<u8>,
    /// How much of `buf` has been looked at for a byte worth parsing the head for (see
    /// [`advance`]): a head sent a byte at a time costs linear time, not quadratic.
    head_scanned: usize,
    /// To send, from `out_at` on.
    pub out: Vec<u8>,
    pub out_at: usize,
    /// The request whose head has arrived, waiting for its body.
    pending: Option<Box<Pending>>,
    /// When the first byte of the request being received arrived; `None` between requests.
    pub started: Option<Instant>,
    pub deadline: Instant,
    /// The socket may have bytes to read: set by events, cleared when a read would block.
    pub readable: bool,
    pub close_after_flush: bool,
    /// A write failed: close without more ado.
    pub failed: bool,
}

impl Conn {
    /// A connection just accepted on `endpoint`, idle until `deadline`.
    pub fn new(stream: Stream, endpoint: usize, deadline: Instant) -> Conn {
        Conn {
            stream,
            endpoint,
            buf: Vec::new(),
            head_scanned: 0,
            out: Vec::new(),
            out_at: 0,
            pending: None,
            started: None,
            deadline,
            // Registering reports data that is already there as an event.
            readable: false,
            close_after_flush: false,
            failed: false,
        }
    }

    /// Reads what the socket holds, up to `buf`'s length, without blocking.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    /// Writes what is queued without blocking; `Ok(true)` once all of it has left.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Sent: the buffer goes, so that an idle connection holds none.
        self.out = Vec::new();
        self.out_at = 0;
        Ok(true)
    }

    /// An answer is still leaving.
    pub fn sending(&self) -> bool {
        self.out_at < self.out.len()
    }

    /// Drops what was received of the request being refused, so that nothing more of it
    /// is parsed and no buffer is held for it.
    pub fn discard_request(&mut self) {
        self.pending = None;
        self.buf = Vec::new();
        self.head_scanned = 0;
    }
}

/// What the bytes received so far make of a request.
pub(super) enum Advance {
    NeedMore,
    Ready(Box<Pending>),
    Refused(Response),
    /// The head asked for `100 Continue` and the body has not all arrived.
    SendContinue,
}

/// The bytes that empty lines (CRLF or bare LF) take at the start of `buf`.
fn blank_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match &buf[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [b'\n', ..] => at += 1,
            _ => return at,
        }
    }
}

/// What the bytes in `conn.buf` make of a request; consumes what it uses.
pub(super) fn advance(conn: &mut Conn, limits: &Limits) -> Advance {
    if conn.pending.is_none() {
        // Empty lines before a request line are ignored (RFC 9112 §2.2) and dropped here,
        // so that a stream of them never piles up to be parsed again and again.
        let blank = blank_lines(&conn.buf);
        if blank > 0 {
            conn.buf.drain(..blank);
            conn.head_scanned = 0;
        }
        // The head is parsed again only once a control byte arrives: a line ending (so
        // the head may be complete), or a byte no head may hold (NUL, a bare CR, a TLS
        // handshake), which is refused at once rather than at the request timeout. A
        // valid head holds two such bytes a line and at most `MAX_HEADERS` lines before
        // it completes or is refused, so the parses are bounded too.
        let fresh = &conn.buf[conn.head_scanned.min(conn.buf.len())..];
        let worth_parsing = fresh.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
        conn.head_scanned = conn.buf.len();
        if !worth_parsing && conn.buf.len() <= limits.max_head_bytes {
            return Advance::NeedMore;
        }
        match parse_head(&conn.buf, limits) {
            Head::Partial => return Advance::NeedMore,
            Head::Refused(response) => return Advance::Refused(response),
            Head::Complete(pending, head_len) => {
                conn.buf.drain(..head_len);
                conn.head_scanned = 0;
                conn.pending = Some(pending);
            }
        }
    }
    let Some(pending) = conn.pending.as_mut() else {
        return Advance::NeedMore;
    };
    let whole = match &mut pending.body {
        Body::Length(len) => conn.buf.len() >= *len,
        Body::Chunked(chunked) => match chunked.advance(&conn.buf, limits) {
            Ok((used, done)) => {
                conn.buf.drain(..used);
                done
            }
            Err(response) => return Advance::Refused(response),
        },
    };
    if !whole {
        if pending.expects_continue {
            pending.expects_continue = false;
            return Advance::SendContinue;
        }
        return Advance::NeedMore;
    }
    let Some(mut pending) = conn.pending.take() else {
        return Advance::NeedMore;
    };
    pending.request.body = match &mut pending.body {
        Body::Length(len) if *len == conn.buf.len() => std::mem::take(&mut conn.buf),
        Body::Length(len) => conn.buf.drain(..*len).collect(),
        Body::Chunked(chunked) => std::mem::take(&mut chunked.body),
    };
    if conn.buf.is_empty() {
        // No heap block kept for an idle connection.
        conn.buf = Vec::new();
    }
    Advance::Ready(pending)
}
