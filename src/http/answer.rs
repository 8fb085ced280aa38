//! Writing an answer: the status line, the headers (with their `Date`) and the body, into
//! the connection's buffer, and the connection handed back to the poller. Shared by the
//! workers and the waiting room's threads (`waiting`), which answer the same way.
//!
//! Writing happens without blocking (the socket stays non-blocking). A game's answer is a
//! few KiB and fits in the socket's send buffer, so it leaves in one `write` from the
//! thread that built it, with no further hand-off; whatever a slow reader leaves unsent
//! travels back to the poller with the connection, which finishes it as the socket
//! drains, under the request timeout. A response is built into one buffer allocated once
//! at its final size (see the module doc of `server`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::conn::Conn;
use super::message::Response;
use super::metrics::HttpMetrics;
use crate::time::UtcTime;

/// A connection handed back to the poller, its response written or queued in `conn`.
pub(super) struct Back {
    pub token: mio::Token,
    pub conn: Conn,
}

/// What a connection needs to be answered once its response is made: by its worker, or
/// by the waiting room's thread for an answer that waited.
pub(super) struct Finished {
    pub token: mio::Token,
    pub conn: Conn,
    pub keep_alive: bool,
    pub head_only: bool,
    pub started: Instant,
}

/// Writes responses and hands their connections back to the poller.
#[derive(Clone)]
pub(super) struct Answerer {
    pub metrics: Arc<HttpMetrics>,
    pub stopping: Arc<AtomicBool>,
    pub returns: Sender<Back>,
    pub waker: Arc<mio::Waker>,
}

impl Answerer {
    /// Writes `response` (what the socket takes now; the poller sends the rest) and
    /// hands the connection back to the poller.
    pub(super) fn finish(&self, finished: Finished, response: Response) {
        let Finished {
            token,
            mut conn,
            keep_alive,
            head_only,
            started,
        } = finished;
        self.metrics.record(response.status, started.elapsed());
        let keep_alive = keep_alive && !self.stopping.load(Ordering::SeqCst);
        serialize(&mut conn.out, &response, keep_alive, head_only);
        drop(response);
        conn.close_after_flush |= !keep_alive;
        if conn.flush().is_err() {
            conn.failed = true;
        }
        // The poller outlives every job it queued (it waits for them before exiting), so
        // the send fails only if it died; then the connection just closes here.
        if self.returns.send(Back { token, conn }).is_ok() {
            if let Err(error) = self.waker.wake() {
                log::error!("cannot wake the HTTP poller: {error}");
            }
        }
    }
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        307 => "Temporary Redirect",
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

/// Appends the whole response to `out`, which grows once to its final size (see the
/// module doc of `server`). `head_only`: the headers of the answer, `Content-Length`
/// included, without its body (RFC 9110 §9.3.2).
pub(super) fn serialize(out: &mut Vec<u8>, response: &Response, keep_alive: bool, head_only: bool) {
    let body: &[u8] = if head_only { &[] } else { &response.body };
    let extra: usize = response
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum();
    out.reserve_exact(160 + extra + response.content_type.len() + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nConnection: {}\r\nDate: ",
        response.status,
        reason(response.status),
        if keep_alive { "keep-alive" } else { "close" },
    );
    out.extend_from_slice(&http_date());
    out.extend_from_slice(b"\r\n");
    // A 204 carries no body and, by RFC 9110, no Content-Length either.
    if response.status != 204 {
        let _ = write!(
            out,
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            response.content_type,
            response.body.len()
        );
    }
    for (name, value) in &response.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Length of an IMF-fixdate: `Sun, 29 Nov 2026 06:00:00 GMT`.
const DATE_LEN: usize = 29;

thread_local! {
    /// The last second formatted by this thread, and its text: formatted once a second,
    /// in place, without allocating.
    static DATE: std::cell::Cell<(u64, [u8; DATE_LEN])> =
        const { std::cell::Cell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Now, as the `Date` header spells it (RFC 9110 §5.6.7).
pub(super) fn http_date() -> [u8; DATE_LEN] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let (second, text) = cached.get();
        if second == now {
            return text;
        }
        let text = imf_fixdate(now);
        cached.set((now, text));
        text
    })
}

fn imf_fixdate(unix_secs: u64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let t = UtcTime::from_unix(unix_secs);
    // 1970-01-01 was a Thursday.
    let weekday = ((unix_secs / 86_400 + 4) % 7) as usize;
    let mut out = [b' '; DATE_LEN];
    out[..3].copy_from_slice(DAYS[weekday]);
    out[3] = b',';
    let two = |n: u64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    out[5..7].copy_from_slice(&two(t.day as u64));
    out[8..11].copy_from_slice(MONTHS[(t.month as usize).clamp(1, 12) - 1]);
    let year = t.year.clamp(0, 9999) as u64;
    out[12..14].copy_from_slice(&two(year / 100));
    out[14..16].copy_from_slice(&two(year));
    out[17..19].copy_from_slice(&two(t.hour));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(t.minute));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(t.second));
    out[26..29].copy_from_slice(b"GMT");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &imf_fixdate(1_795_932_000),
            b"Sun, 29 Nov 2026 06:00:00 GMT"
        );
        assert_eq!(&imf_fixdate(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn head_answers_keep_the_length_and_drop_the_body() {
        let response = Response::error(404, "nope");
        let mut full = Vec::new();
        serialize(&mut full, &response, true, false);
        let mut head = Vec::new();
        serialize(&mut head, &response, true, true);
        let length = format!("Content-Length: {}\r\n", response.body.len());
        let (full, head) = (
            String::from_utf8(full).unwrap(),
            String::from_utf8(head).unwrap(),
        );
        assert!(head.contains(&length) && full.contains(&length));
        assert!(head.ends_with("\r\n\r\n"));
        assert_eq!(
            full,
            format!("{head}{}", String::from_utf8_lossy(&response.body))
        );
    }
}
