//! The HTTP edge (issue 14): idle and slow connections hold no worker, the connection cap
//! answers 503 and is counted, and HTTP/1.1 as clients speak it (HEAD, chunked bodies,
//! bare-LF heads, Host, pipelining, `Expect: 100-continue`, `Date`).
//!
//! Bounds are generous functional ones (a new client answered within seconds, not
//! milliseconds); nothing here measures speed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{wait_for, Daemon};

/// One response read off a connection that may stay open.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    stream
}

/// Reads one response; `head_only`: the answer to a HEAD, whose body is not sent.
/// `pending` holds bytes read past the previous response (pipelining).
fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Answer {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let status: u16 = head[9..12].parse().expect("a status");
            let mut answer = Answer {
                status,
                head,
                body: Vec::new(),
            };
            let length: usize = match answer.header("content-length") {
                Some(_) if head_only => 0,
                Some(v) => v.parse().unwrap(),
                None => 0,
            };
            if pending.len() >= end + 4 + length {
                answer.body = pending[end + 4..end + 4 + length].to_vec();
                pending.drain(..end + 4 + length);
                return answer;
            }
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|e| {
            panic!(
                "no answer ({e}); got {:?}",
                String::from_utf8_lossy(pending)
            )
        });
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn exchange(stream: &mut TcpStream, request: &[u8]) -> Answer {
    stream.write_all(request).unwrap();
    read_answer(stream, &mut Vec::new(), request.starts_with(b"HEAD "))
}

/// [`exchange`], or `None` when the server had closed the connection.
fn try_exchange(stream: &mut TcpStream, request: &[u8]) -> Option<u16> {
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.parse().unwrap());
            if answer.len() >= end + 4 + length {
                return head.get(9..12)?.parse().ok();
            }
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

fn metric(daemon: &Daemon, name: &str) -> f64 {
    let text = daemon.get("/metrics").body;
    sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// [`metric`], or `None` while `/metrics` itself is refused: at the connection cap, until
/// the server has seen the closes that free it.
fn metric_once_served(daemon: &Daemon, name: &str) -> Option<f64> {
    let reply = daemon.get("/metrics");
    (reply.status == 200).then(|| sample(&reply.body, name))?
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Raises this test process's own soft limit on open files to `wanted` (up to the hard
/// limit); the number in force afterwards.
fn raise_own_open_files(wanted: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft >= wanted {
        return soft;
    }
    let target = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, target, hard).unwrap();
    target
}

/// Threads of a process, from /proc.
fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn two_hundred_polling_clients_do_not_lock_out_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/alpha?seed=1").status, 201);
    let addr = daemon.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    // 200 keep-alive clients, 25 per thread, each polling the galaxy once a second.
    let pollers: Vec<_> = (0..8)
        .map(|_| {
            let (stop, polls) = (stop.clone(), polls.clone());
            std::thread::spawn(move || {
                let mut clients: Vec<TcpStream> = (0..25)
                    .map(|_| connect(addr, Duration::from_secs(10)))
                    .collect();
                while !stop.load(Ordering::SeqCst) {
                    let round = Instant::now();
                    for client in &mut clients {
                        let answer = exchange(client, &get("/galaxies/alpha"));
                        assert_eq!(answer.status, 200);
                        polls.fetch_add(1, Ordering::SeqCst);
                    }
                    let rest = Duration::from_secs(1).saturating_sub(round.elapsed());
                    std::thread::sleep(rest);
                }
            })
        })
        .collect();
    // Wait until all of them hold a connection and have polled at least once.
    assert!(wait_for(Duration::from_secs(20), || polls
        .load(Ordering::SeqCst)
        >= 200));
    // New clients meanwhile, spread over more than the 5 s idle timeout: each is answered.
    for n in 0..14 {
        let mut client = connect(addr, Duration::from_secs(5));
        let answer = exchange(&mut client, &get("/healthz"));
        assert_eq!(answer.status, 200, "new client {n}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let open = metric(&daemon, "gwar_http_connections_open");
    assert!(open >= 200.0, "{open} connections open");
    stop.store(true, Ordering::SeqCst);
    for poller in pollers {
        poller.join().expect("every poll answered 200");
    }
}

#[test]
fn thousands_of_idle_connections_cost_no_thread() {
    const IDLE: usize = 2000;
    let limit = raise_own_open_files(IDLE as u64 + 256);
    assert!(
        limit > IDLE as u64,
        "open-files limit {limit} too low for the test"
    );
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| connect(daemon.addr, Duration::from_secs(5)))
        .collect();
    // Each asks once and so is known to be held; one closed by its idle timeout (5 s) while
    // the others were still connecting on a loaded machine is opened again.
    for stream in &mut idle {
        if try_exchange(stream, &get("/healthz")) != Some(200) {
            *stream = connect(daemon.addr, Duration::from_secs(5));
            assert_eq!(exchange(stream, &get("/healthz")).status, 200);
        }
    }
    let open = metric(&daemon, "gwar_http_connections_open");
    assert!(open >= IDLE as f64, "{open} connections open");
    let mut client = connect(daemon.addr, Duration::from_secs(5));
    assert_eq!(exchange(&mut client, &get("/healthz")).status, 200);
    // 16 workers, the poller, persistence and housekeeping: nowhere near one per connection.
    let threads = threads_of(daemon.pid());
    assert!(threads < 100, "{threads} threads for {IDLE} connections");
    drop(client);
    // Idle past the keep-alive timeout (5 s): closed by the server.
    assert!(wait_for(Duration::from_secs(20), || metric(
        &daemon,
        "gwar_http_connections_open"
    ) <= 1.0));
    let mut rest = Vec::new();
    let _ = idle[0].read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "closed quietly: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Opens `cap` connections to the game listener and checks that one more is refused: the
/// backlog is accepted in order, so it is past the cap, answered without having to send
/// anything (503 with a JSON error), and closed. The connections held.
fn fill_to_the_cap(daemon: &Daemon, cap: usize) -> Vec<TcpStream> {
    let held: Vec<TcpStream> = (0..cap)
        .map(|_| connect(daemon.addr, Duration::from_secs(5)))
        .collect();
    let mut refused = connect(daemon.addr, Duration::from_secs(5));
    let mut answer = Vec::new();
    let _ = refused.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("\"error\""), "{answer:?}");
    held
}

#[test]
fn past_the_connection_cap_new_connections_get_503_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("GWAR_MAX_CONNECTIONS", "50")]);
    let held = fill_to_the_cap(&daemon, 50);
    drop(held);
    // Room again once they are gone (the first look may still meet the cap: the server
    // sees the closes when it next polls); the refusal was counted.
    assert!(wait_for(Duration::from_secs(10), || metric_once_served(
        &daemon,
        "gwar_http_connections_open"
    )
    .is_some_and(|open| open <= 1.0)));
    assert!(metric(&daemon, "gwar_http_connections_refused_total") >= 1.0);
    assert_eq!(daemon.get("/healthz").status, 200);
}

/// Bug: both listeners shared one cap, so anyone able to open `GWAR_MAX_CONNECTIONS` idle
/// connections to the public port locked the operator out of the admin listener (503 on
/// `/healthz`, `/admin/save`, `/admin/backup`). The admin listener has a cap of its own.
#[test]
fn a_full_game_listener_does_not_lock_out_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("GWAR_MAX_CONNECTIONS", "20")]);
    let held = fill_to_the_cap(&daemon, 20);
    // The game listener is full; the admin listener still serves.
    assert_eq!(daemon.admin_request("GET", "/healthz", "").status, 200);
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    drop(held);
}

#[test]
fn slow_clients_hold_no_worker_and_are_cut_with_408() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let addr = daemon.addr;
    // 32 that send their head a byte a second, 32 their body; 64 > 16 workers.
    let mut slow: Vec<TcpStream> = Vec::new();
    for n in 0..32 {
        let mut header = connect(addr, Duration::from_secs(30));
        header
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .unwrap();
        slow.push(header);
        let mut body = connect(addr, Duration::from_secs(30));
        body.write_all(
            format!("POST /galaxies/slow{n} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        slow.push(body);
    }
    let first_byte = Instant::now();
    let dripping = {
        let mut streams: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            for _ in 0..14 {
                std::thread::sleep(Duration::from_secs(1));
                // Writes fail once the server has answered and closed: that is the end.
                streams.retain_mut(|s| s.write_all(b"a").is_ok());
            }
        })
    };
    // Normal requests keep being served meanwhile, on new and kept connections.
    let mut kept = connect(addr, Duration::from_secs(5));
    while first_byte.elapsed() < Duration::from_secs(8) {
        assert_eq!(exchange(&mut kept, &get("/healthz")).status, 200);
        let mut new = connect(addr, Duration::from_secs(5));
        assert_eq!(exchange(&mut new, &get("/galaxies")).status, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Each slow one is cut with 408 once its 10 s are up (not before).
    for stream in &mut slow {
        let answer = read_answer(stream, &mut Vec::new(), false);
        assert_eq!(answer.status, 408, "{}", answer.head);
        assert_eq!(answer.header("connection"), Some("close"));
    }
    let cut_after = first_byte.elapsed();
    assert!(
        cut_after >= Duration::from_secs(9),
        "cut after {cut_after:?}"
    );
    dripping.join().unwrap();
    assert!(metric(&daemon, "gwar_http_requests_timed_out_total") >= 64.0);
    assert_eq!(
        daemon.get("/galaxies").json()["total"],
        0,
        "nothing created"
    );
}

#[test]
fn head_answers_like_get_without_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let mut stream = connect(daemon.addr, Duration::from_secs(10));
    for path in ["/galaxies/g", "/healthz", "/galaxies/nope", "/metrics"] {
        let got = exchange(&mut stream, &get(path));
        let head = exchange(
            &mut stream,
            format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        assert_eq!(head.status, got.status, "{path}");
        assert_eq!(head.header("content-type"), got.header("content-type"));
        if path != "/metrics" {
            // The metrics' text changes between the two requests; the others do not.
            assert_eq!(
                head.header("content-length").unwrap(),
                got.body.len().to_string(),
                "{path}"
            );
        }
        assert!(head.body.is_empty());
    }
    // No body bytes were left behind on the connection: the next answer parses.
    assert_eq!(exchange(&mut stream, &get("/healthz")).status, 200);
}

#[test]
fn chunked_bodies_are_decoded_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let config = "system_count = 2\n[size]\nx = 1\ny = 1\n[systems]\n";
    let (a, b) = config.split_at(10);
    let chunked = format!(
        "POST /galaxies/chunky?seed=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut stream = connect(daemon.addr, Duration::from_secs(10));
    let created = exchange(&mut stream, chunked.as_bytes());
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let galaxy: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    assert_eq!(galaxy["systems"], 2, "the decoded TOML was used");
    // The connection stays usable after a chunked request.
    assert_eq!(exchange(&mut stream, &get("/galaxies/chunky")).status, 200);

    let malformed = daemon.raw(
        b"POST /galaxies/m HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\nab\r\n0\r\n\r\n",
    );
    assert!(
        malformed.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&malformed)
    );

    // Over 1 MiB in 64 KiB chunks: refused with 413 once past the limit.
    let mut big =
        b"POST /galaxies/big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let piece = vec![b'#'; 64 * 1024];
    for _ in 0..17 {
        big.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        big.extend_from_slice(&piece);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    let refused = daemon.raw(&big);
    assert!(
        refused.starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&refused[..refused.len().min(200)])
    );
    let names = daemon.get("/galaxies").json()["total"].clone();
    assert_eq!(names, 1, "only the chunky galaxy exists");
}

#[test]
fn heads_with_bare_lf_or_without_host_are_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    // Within a few seconds, far from the 10 s request timeout.
    let timeout = Duration::from_secs(5);
    let bare = crate::util::raw_exchange_for(
        daemon.addr,
        b"GET /healthz HTTP/1.1\nHost: t\nConnection: close\n\n",
        timeout,
    );
    assert!(
        bare.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&bare)
    );
    let no_host = crate::util::raw_exchange_for(
        daemon.addr,
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        timeout,
    );
    let no_host = crate::util::parse_reply(&no_host);
    assert_eq!(no_host.status, 400);
    assert!(no_host.json()["error"].as_str().unwrap().contains("Host"));
    // HTTP/1.0 has no Host requirement.
    let old = crate::util::raw_exchange_for(daemon.addr, b"GET /healthz HTTP/1.0\r\n\r\n", timeout);
    assert!(
        old.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&old)
    );
}

/// Bug: a head that could never become valid but held no empty line (a bare CR, NUL
/// bytes, a TLS handshake sent to the plain port) was parsed only once an empty line
/// arrived, so it waited for the 10 s request timeout and got 408 instead of a 400.
#[test]
fn malformed_heads_without_an_empty_line_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let tls_hello: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00";
    for raw in [
        &b"GET /healthz HTTP/1.1\rHost: t\r\r"[..],
        b"\x00\x00\x00",
        tls_hello,
        b"GET /healthz HTTP/1.1\r\nHost: t\x00",
    ] {
        // The connection stays open for writing: the answer must not wait for the client.
        let mut stream = connect(daemon.addr, Duration::from_secs(5));
        stream.write_all(raw).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400"), "{raw:?}: {text:?}");
    }
    // Empty lines before a request line are ignored, however many.
    let mut stream = connect(daemon.addr, Duration::from_secs(5));
    let mut blank_first = b"\r\n\n".repeat(10_000);
    blank_first.extend_from_slice(&get("/healthz"));
    assert_eq!(exchange(&mut stream, &blank_first).status, 200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut stream = connect(daemon.addr, Duration::from_secs(10));
    // Five requests in one write, a creation among them.
    let mut requests = Vec::new();
    requests.extend_from_slice(&get("/healthz"));
    requests.extend_from_slice(
        b"POST /galaxies/p?seed=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    requests.extend_from_slice(&get("/galaxies/p"));
    requests.extend_from_slice(&get("/nope"));
    requests.extend_from_slice(b"HEAD /galaxies HTTP/1.1\r\nHost: t\r\n\r\n");
    stream.write_all(&requests).unwrap();
    let mut pending = Vec::new();
    let statuses: Vec<u16> = [false, false, false, false, true]
        .into_iter()
        .map(|head| read_answer(&mut stream, &mut pending, head).status)
        .collect();
    assert_eq!(statuses, [200, 201, 200, 404, 200]);
    assert!(pending.is_empty(), "nothing more: {pending:?}");
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let body = "system_count = 1\n[size]\nx = 0\ny = 0\n[systems]\n";
    let mut stream = connect(daemon.addr, Duration::from_secs(10));
    stream
        .write_all(
            format!(
                "POST /galaxies/e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let mut pending = Vec::new();
    let interim = read_answer(&mut stream, &mut pending, false);
    assert_eq!(interim.status, 100, "{}", interim.head);
    stream.write_all(body.as_bytes()).unwrap();
    let created = read_answer(&mut stream, &mut pending, false);
    assert_eq!(created.status, 201);
}

#[test]
fn every_response_carries_a_date() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let is_imf_fixdate = |date: &str| {
        let b = date.as_bytes();
        date.len() == 29
            && date.ends_with(" GMT")
            && ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&&date[..3])
            && b[3] == b','
            && [5, 6, 12, 13, 14, 15, 17, 18, 20, 21, 23, 24]
                .iter()
                .all(|&i| b[i].is_ascii_digit())
            && [b[19], b[22]] == [b':', b':']
    };
    for reply in [
        daemon.get("/healthz"),
        daemon.get("/nope"),
        daemon.request("DELETE", "/galaxies/none", ""),
        crate::util::parse_reply(&daemon.raw(b"garbage\r\n\r\n")),
    ] {
        let date = reply
            .header("date")
            .unwrap_or_else(|| panic!("no Date: {reply:?}"));
        assert!(is_imf_fixdate(date), "{date:?}");
    }
}
