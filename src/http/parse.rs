//! Request parsing for the poller: the head (with `httparse`) and the body, by
//! `Content-Length` or chunked (RFC 9112 §7.1), both incremental over a connection's
//! buffer of received bytes.
//!
//! Invariants: nothing here reads a socket or waits; a refusal is a [`Response`] with the
//! status the module doc of [`super::server`] promises (400, 413, 414, 431, 501); the body
//! handed on is never larger than `max_body_bytes`, and the bytes held for a request are
//! bounded by the head and body limits plus one read (chunked framing is consumed as it
//! arrives, so a body sent in tiny chunks does not hold more than its data).

use super::message::{Limits, Request, Response};

/// Headers per request; more get 431.
const MAX_HEADERS: usize = 64;
/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 1024;

/// A request whose head has been read, waiting for its body.
#[derive(Debug)]
pub(super) struct Pending {
    /// The request without its body yet.
    pub request: Request,
    pub keep_alive: bool,
    /// Sent as `HEAD`: answer as `GET`, without the body.
    pub head_only: bool,
    /// `Expect: 100-continue` not yet answered.
    pub expects_continue: bool,
    pub body: Body,
}

/// How the body is framed.
#[derive(Debug)]
pub(super) enum Body {
    Length(usize),
    Chunked(Chunked),
}

/// The head's outcome.
pub(super) enum Head {
    /// More bytes are needed.
    Partial,
    /// The head took this many bytes of the buffer.
    Complete(Box<Pending>, usize),
    Refused(Response),
}

fn refuse(status: u16, message: &str) -> Response {
    Response::error(status, message)
}

/// Parses the head at the start of `buffer`. Bare-LF line endings are accepted, as RFC
/// 9112 §2.2 allows (httparse takes them), so such a head completes at once.
pub(super) fn parse_head(buffer: &[u8], limits: &Limits) -> Head {
    // On the stack: a 2 KiB heap block per request takes the allocator's slow path,
    // locked and consolidating small free blocks (see the module doc of `server`).
    let mut header_slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut header_slots);
    let head_len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_head_bytes => len,
        Ok(httparse::Status::Complete(_)) => {
            return Head::Refused(refuse(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) if buffer.len() > limits.max_head_bytes => {
            return Head::Refused(refuse(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Refused(refuse(431, "too many request headers"))
        }
        Err(e) => return Head::Refused(refuse(400, &format!("malformed request: {e}"))),
    };
    match head(&parsed, limits) {
        Ok(pending) => Head::Complete(Box::new(pending), head_len),
        Err(response) => Head::Refused(response),
    }
}

fn head(parsed: &httparse::Request, limits: &Limits) -> Result<Pending, Response> {
    let target = parsed.path.unwrap_or_default();
    if target.len() > limits.max_path_bytes {
        return Err(refuse(414, "request path too long"));
    }
    let sent_method = parsed.method.unwrap_or_default();
    let head_only = sent_method == "HEAD";
    let method = if head_only { "GET" } else { sent_method }.to_owned();
    let http_10 = parsed.version == Some(0);
    let (path, query) = match origin_form(target).split_once('?') {
        Some((path, query)) => (path, query),
        None => (origin_form(target), ""),
    };
    // `http://host` and `http://host?q` name the root.
    let path = if path.is_empty() { "/" } else { path }.to_owned();
    let query = query.to_owned();
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else {
            return Err(refuse(400, "header values must be UTF-8"));
        };
        headers.push((header.name.to_owned(), value.trim().to_owned()));
    }
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request.
    match named("host").count() {
        0 if !http_10 => return Err(refuse(400, "an HTTP/1.1 request needs a Host header")),
        0 | 1 => {}
        _ => return Err(refuse(400, "more than one Host header")),
    }
    let lengths: Vec<&str> = named("content-length").collect();
    let mut codings = named("transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .peekable();
    let body = if codings.peek().is_some() {
        transfer_coded(&codings.collect::<Vec<_>>(), !lengths.is_empty(), http_10)?
    } else {
        // Exactly one, digits only: anything looser is how requests get smuggled.
        match lengths.as_slice() {
            [] => Body::Length(0),
            [value] if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                match value.parse::<usize>() {
                    Ok(len) if len <= limits.max_body_bytes => Body::Length(len),
                    _ => return Err(refuse(413, "request body larger than 1 MiB")),
                }
            }
            _ => return Err(refuse(400, "invalid Content-Length")),
        }
    };
    let keep_alive = match named("connection").next().map(str::to_ascii_lowercase) {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => !http_10,
    };
    // An HTTP/1.0 client cannot expect 100 Continue, and must not be sent one (RFC 9110
    // §10.1.1).
    let expects_continue = !http_10
        && named("expect")
            .next()
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    Ok(Pending {
        request: Request {
            method,
            path,
            query,
            headers,
            body: Vec::new(),
        },
        keep_alive,
        head_only,
        expects_continue,
        body,
    })
}

/// The framing of a body sent with `Transfer-Encoding: codings`: chunked, alone.
fn transfer_coded(codings: &[&str], has_length: bool, http_10: bool) -> Result<Body, Response> {
    // Both framings, or chunked not last: how requests get smuggled (RFC 9112 §6.1, §6.3).
    if has_length {
        return Err(refuse(400, "both Transfer-Encoding and Content-Length"));
    }
    if http_10 {
        return Err(refuse(400, "Transfer-Encoding in an HTTP/1.0 request"));
    }
    let chunked = |c: &&str| c.eq_ignore_ascii_case("chunked");
    match codings {
        [only] if chunked(only) => Ok(Body::Chunked(Chunked::default())),
        // Chunked twice is malformed, not an unsupported coding (RFC 9112 §6.1: a sender
        // must not apply it more than once).
        [first @ .., _] if first.iter().any(chunked) => Err(refuse(
            400,
            "the chunked transfer coding is applied only once",
        )),
        [.., last] if chunked(last) => {
            Err(refuse(501, "only the chunked transfer coding is supported"))
        }
        _ => Err(refuse(
            400,
            "a request body's last transfer coding must be chunked",
        )),
    }
}

/// The path and query of a request target in absolute form (`http://host/path?query`),
/// which a server must accept (RFC 9112 §3.2.2); any other target as it is. The authority
/// is dropped: no handler looks at the host, and which routes a request may reach depends
/// on the listener alone, never on anything the client names.
fn origin_form(target: &str) -> &str {
    let scheme = ["http://", "https://"].into_iter().find(|scheme| {
        target
            .get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    });
    let Some(scheme) = scheme else {
        return target;
    };
    let rest = &target[scheme.len()..];
    rest.find(['/', '?']).map_or("", |at| &rest[at..])
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Default)]
enum ChunkState {
    /// At the start of a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this much still to come.
    Data(usize),
    /// After a chunk's data, before its line ending.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; this many bytes so far.
    Trailers(usize),
}

/// A chunked body being decoded as it arrives.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: ChunkState,
    pub body: Vec<u8>,
}

/// The line at the start of `buffer`, without its ending (CRLF or bare LF), and the bytes
/// it takes with its ending; `None` while its end has not arrived.
fn line(buffer: &[u8]) -> Option<(&[u8], usize)> {
    let end = buffer.iter().position(|&b| b == b'\n')?;
    let text = &buffer[..end];
    Some((text.strip_suffix(b"\r").unwrap_or(text), end + 1))
}

impl Chunked {
    /// Decodes what `buffer` holds; returns the bytes consumed (the caller drops them) and
    /// whether the body, trailers included, is complete.
    pub fn advance(&mut self, buffer: &[u8], limits: &Limits) -> Result<(usize, bool), Response> {
        let mut at = 0;
        loop {
            let rest = &buffer[at..];
            match self.state {
                ChunkState::Size => {
                    let Some((text, taken)) = line(rest) else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(refuse(400, "malformed chunk size"));
                        }
                        return Ok((at, false));
                    };
                    if text.len() > MAX_CHUNK_LINE {
                        return Err(refuse(400, "malformed chunk size"));
                    }
                    // Extensions (`;name=value`) are allowed and ignored.
                    let size = text.split(|&b| b == b';').next().unwrap_or_default();
                    let size = size.trim_ascii_end();
                    let size = match std::str::from_utf8(size) {
                        Ok(hex)
                            if !hex.is_empty()
                                && hex.len() <= 16
                                && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
                        {
                            u64::from_str_radix(hex, 16)
                                .map_err(|_| refuse(400, "malformed chunk size"))?
                        }
                        _ => return Err(refuse(400, "malformed chunk size")),
                    };
                    at += taken;
                    if size == 0 {
                        self.state = ChunkState::Trailers(0);
                        continue;
                    }
                    let total = (self.body.len() as u64).saturating_add(size);
                    if total > limits.max_body_bytes as u64 {
                        return Err(refuse(413, "request body larger than 1 MiB"));
                    }
                    // Bounded by the check above.
                    let size = size as usize;
                    if self.body.capacity() == 0 {
                        self.body.reserve_exact(size);
                    }
                    self.state = ChunkState::Data(size);
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok((at, false));
                    }
                    let take = left.min(rest.len());
                    self.body.extend_from_slice(&rest[..take]);
                    at += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        self.state = ChunkState::Size;
                    }
                    [b'\n', ..] => {
                        at += 1;
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => return Ok((at, false)),
                    _ => return Err(refuse(400, "chunk data longer than its size")),
                },
                ChunkState::Trailers(seen) => {
                    let Some((text, taken)) = line(rest) else {
                        if seen + rest.len() > limits.max_head_bytes {
                            return Err(refuse(431, "request trailers too large"));
                        }
                        return Ok((at, false));
                    };
                    at += taken;
                    if text.is_empty() {
                        return Ok((at, true));
                    }
                    if seen + taken > limits.max_head_bytes {
                        return Err(refuse(431, "request trailers too large"));
                    }
                    self.state = ChunkState::Trailers(seen + taken);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: Head) -> u16 {
        match head {
            Head::Partial => 0,
            Head::Complete(..) => 200,
            Head::Refused(r) => r.status,
        }
    }

    #[test]
    fn heads_with_bare_lf_complete() {
        let limits = Limits::default();
        let Head::Complete(pending, len) =
            parse_head(b"GET /a?b HTTP/1.1\nHost: x\n\nNEXT", &limits)
        else {
            panic!("not complete");
        };
        assert_eq!(len, 27);
        assert_eq!(pending.request.path, "/a");
        assert_eq!(pending.request.query, "b");
        assert!(pending.keep_alive);
    }

    #[test]
    fn heads_are_checked() {
        let limits = Limits::default();
        let parse = |raw: &[u8]| status(parse_head(raw, &limits));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), 0);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), 400, "no Host");
        assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n"), 200, "1.0 needs no Host");
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            400
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        for twice in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip, Chunked\r\n\r\n",
        ] {
            assert_eq!(parse(twice), 400, "{}", String::from_utf8_lossy(twice));
        }
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n"),
            413
        );
        let Head::Complete(pending, _) = parse_head(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", &limits)
        else {
            panic!()
        };
        assert!(pending.head_only);
        assert_eq!(pending.request.method, "GET");
    }

    #[test]
    fn heads_that_cannot_become_valid_are_refused_before_they_end() {
        // The poller parses a partial head whenever a control byte arrives (see
        // `poller::advance`); each of these must be refused then, not left waiting.
        let limits = Limits::default();
        let parse = |raw: &[u8]| status(parse_head(raw, &limits));
        assert_eq!(parse(b"GET /healthz HTTP/1.1\rHost: x\r\r"), 400, "bare CR");
        assert_eq!(parse(b"\x00\x00\x00"), 400, "NUL");
        assert_eq!(parse(b"\x16\x03\x01\x02\x00\x01\x00"), 400, "TLS");
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: x\x00"),
            400,
            "NUL in a value"
        );
        // Too many headers is known before the head ends: this bounds how often a
        // partial head is parsed.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for n in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{n}: y\r\n").as_bytes());
        }
        assert_eq!(parse(&many), 431);
    }

    /// Bug: a request target in absolute form (`GET http://host/path`), which RFC 9112
    /// §3.2.2 says a server must accept, was answered 400 ("must start with /").
    #[test]
    fn absolute_form_targets_are_accepted() {
        let limits = Limits::default();
        let target = |raw: &[u8]| match parse_head(raw, &limits) {
            Head::Complete(pending, _) => (pending.request.path, pending.request.query),
            _ => panic!("refused"),
        };
        let of = |t: &str| target(format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let owned = |p: &str, q: &str| (p.to_owned(), q.to_owned());
        assert_eq!(
            of("http://a/galaxies/x?limit=2"),
            owned("/galaxies/x", "limit=2")
        );
        assert_eq!(of("HTTPS://a:8080/healthz"), owned("/healthz", ""));
        assert_eq!(of("http://a"), owned("/", ""));
        assert_eq!(of("http://a?x=1"), owned("/", "x=1"));
        assert_eq!(of("/plain?x"), owned("/plain", "x"));
        // Not absolute form: left for the router to refuse.
        assert_eq!(of("ftp://a/b"), owned("ftp://a/b", ""));
    }

    /// Bug: an HTTP/1.0 request with `Expect: 100-continue` was sent `100 Continue`, which
    /// RFC 9110 §10.1.1 forbids (an HTTP/1.0 client cannot read it).
    #[test]
    fn http_10_requests_get_no_100_continue() {
        let limits = Limits::default();
        let expects = |raw: &[u8]| match parse_head(raw, &limits) {
            Head::Complete(pending, _) => pending.expects_continue,
            _ => panic!("refused"),
        };
        assert!(expects(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!expects(
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
        ));
    }

    fn decode(raw: &[u8], limits: &Limits) -> Result<Option<Vec<u8>>, u16> {
        // Fed one byte at a time, as the slowest client would.
        let mut chunked = Chunked::default();
        let mut buffer = Vec::new();
        for &b in raw {
            buffer.push(b);
            let (used, done) = chunked.advance(&buffer, limits).map_err(|r| r.status)?;
            buffer.drain(..used);
            if done {
                return Ok(Some(std::mem::take(&mut chunked.body)));
            }
        }
        Ok(None)
    }

    #[test]
    fn chunked_bodies_decode() {
        let limits = Limits::default();
        assert_eq!(
            decode(
                b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
                &limits
            ),
            Ok(Some(b"hello world".to_vec()))
        );
        assert_eq!(decode(b"3\nabc\n0\n\n", &limits), Ok(Some(b"abc".to_vec())));
        assert_eq!(decode(b"0\r\n\r\n", &limits), Ok(Some(Vec::new())));
        assert_eq!(decode(b"A\r\n0123456789", &limits), Ok(None));
        assert_eq!(decode(b"zz\r\n", &limits), Err(400));
        assert_eq!(decode(b"-1\r\n", &limits), Err(400));
        assert_eq!(decode(b"\r\n", &limits), Err(400));
        assert_eq!(decode(b"3\r\nabcd\r\n", &limits), Err(400));
        assert_eq!(decode(b"fffffffffffffffff\r\n", &limits), Err(400));
        let small = Limits {
            max_body_bytes: 4,
            ..Limits::default()
        };
        assert_eq!(decode(b"3\r\nabc\r\n2\r\nde\r\n", &small), Err(413));
        assert_eq!(decode(b"ffffffffffffffff\r\n", &small), Err(413));
    }
}
