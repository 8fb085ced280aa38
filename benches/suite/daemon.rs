//! `galactic-war` daemons and their clients over loopback, for sections 6, 7, 9 and 11:
//! starting the binary operators run, one-off requests, and the keep-alive load generator.
//! Every daemon started here is killed when its handle drops, so none outlives the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{config, rate_in_window};

/// The daemon's binary, built by `cargo bench` for the bench.
pub const DAEMON: &str = env!("CARGO_BIN_EXE_galactic-war");

/// `command` (the daemon, or a command that runs it) set up as every section runs it: in
/// `dir`, both listeners on free loopback ports, `info` logs on a pipe the caller must
/// drain, and only the variables set here and by the caller.
pub fn daemon_command<'c>(command: &'c mut Command, dir: &Path) -> &'c mut Command {
    command
        .current_dir(dir)
        // Only what is set here: nothing from the caller's environment tunes the servers.
        .env_clear()
        .env("GWAR_LISTEN", "127.0.0.1:0")
        .env("GWAR_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
}

/// Keep-alive client connections of the HTTP measurement.
pub const HTTP_CLIENTS: usize = 16;

/// Requests/s from `clients` keep-alive connections driven by `threads` client threads
/// over `duration`, counted only after a warm-up with every connection open and busy, so
/// that neither connecting nor the previous measurement's teardown lands in the window;
/// every answer must be `expect`.
///
/// Each thread owns `clients / threads` connections (one more for the first few) and keeps
/// one request in flight on each: it sends a request on all of them, then goes round them
/// in order, reading one answer and at once sending that connection's next request. With
/// one connection per thread (section 6) that is a plain synchronous client; with many
/// (section 9: 1 000 connections on 16 threads) the server always holds about `clients`
/// requests, and a thread rarely waits, since by the time it comes back to a connection
/// its answer has usually arrived: a request costs the load generator one `write` and one
/// `read` either way, so the generator is not what changes between 16 and 1 000 clients.
/// It shares the machine's cores with the server, as any client on the same host does:
/// measured from /proc/PID/stat, the bench took 36-44% of the CPU time the two processes
/// used, at 16 connections and at 1 000 alike (on loopback, most of a `write`'s cost is
/// the kernel delivering the segment to the receiving socket), with both cores busy.
pub fn http_load(
    addr: SocketAddr,
    clients: usize,
    threads: usize,
    duration: Duration,
    method: &str,
    paths: Arc<Vec<String>>,
    expect: u16,
) -> f64 {
    let threads = threads.clamp(1, clients);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, done, connected) = (stop.clone(), done.clone(), connected.clone());
            let paths = paths.clone();
            let method = method.to_owned();
            std::thread::spawn(move || {
                // One `write` a request (`write!` on a socket would make one per piece).
                let request = |c: usize, sent: usize, writer: &mut TcpStream| {
                    let path = &paths[(sent * 7 + c) % paths.len()];
                    let request =
                        format!("{method} {path} HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n");
                    writer
                        .write_all(request.as_bytes())
                        .unwrap_or_else(|error| {
                            panic!("connection {c} of {clients} to {addr}: {error}")
                        });
                };
                // Connection `c` (of all the measurement's) is this thread's if c % threads
                // == t; its index picks its paths, as with one thread per connection. Each
                // makes one request before the next connects, so that connections arrive
                // no faster than the server accepts them: a burst of a thousand connects
                // overflows the daemon's listen backlog (128, Rust's default), and a
                // connection dropped from it is answered late or not at all.
                let mut conns: Vec<(usize, TcpStream, BufReader<TcpStream>)> = (t..clients)
                    .step_by(threads)
                    .map(|c| {
                        let mut stream = TcpStream::connect(addr).expect("connects");
                        stream.set_nodelay(true).expect("nodelay");
                        stream
                            .set_read_timeout(Some(Duration::from_secs(30)))
                            .expect("a timeout");
                        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                        request(c, 0, &mut stream);
                        assert_eq!(read_reply(&mut reader), expect);
                        (c, stream, reader)
                    })
                    .collect();
                connected.wait();
                for (c, writer, _) in &mut conns {
                    request(*c, 1, writer);
                }
                let mut sent = 2usize;
                'run: loop {
                    for (c, writer, reader) in &mut conns {
                        let status = read_reply(reader);
                        assert_eq!(status, expect, "answered {status}, not {expect}");
                        done.fetch_add(1, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break 'run;
                        }
                        request(*c, sent, writer);
                    }
                    sent += 1;
                }
            })
        })
        .collect();
    connected.wait();
    rate_in_window(&done, &stop, handles, HTTP_WARM_UP, duration)
}

/// Reads one whole answer (head, then a body of its `Content-Length`) and returns its
/// status.
pub fn read_reply(reader: &mut impl BufRead) -> u16 {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("reads");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line, not {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("reads");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    status
}

/// Unmeasured running time before each HTTP measurement.
const HTTP_WARM_UP: Duration = Duration::from_millis(60);

/// A `galactic-war` daemon (the binary operators run, built by `cargo bench`) serving one
/// galaxy. Each server is its own process, as in production: the load generator's
/// threads and allocations share nothing with it. Killed when dropped, also when the
/// bench panics, so no daemon outlives the run.
pub struct Served {
    pub daemon: Child,
    pub addr: SocketAddr,
    /// The admin listener, for `/metrics`.
    pub admin: SocketAddr,
    pub get: Arc<Vec<String>>,
    pub post: Arc<Vec<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// Starts a daemon on `http-LABEL.db` in `dir` with the contract's defaults (1 s
/// coalescing), persistence on or off and the variables of `env`, and creates the same
/// 1000-system galaxy in it.
pub fn serve(dir: &Path, label: &str, enabled: bool, env: &[(&str, &str)]) -> Served {
    let mut daemon = daemon_command(&mut Command::new(DAEMON), dir)
        .env("DATABASE_URL", format!("sqlite:http-{label}.db"))
        .env("GWAR_PERSISTENCE_ENABLED", enabled.to_string())
        .envs(env.iter().copied())
        .spawn()
        .expect("the daemon starts");
    let (listening, addresses) = crossbeam_channel::bounded(2);
    let log = daemon.stderr.take().expect("piped");
    // Reads the log to its end, so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            // The admin listener's line comes first.
            for prefix in ["admin on http://", "listening on http://"] {
                if let Some(addr) = line.split(prefix).nth(1) {
                    let _ = listening.try_send(addr.trim().to_owned());
                }
            }
        }
    });
    let address = || -> SocketAddr {
        addresses
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon listens")
            .parse()
            .expect("an address")
    };
    let (admin, addr) = (address(), address());
    // Dropped (so killed) if anything below fails.
    let mut served = Served {
        daemon,
        addr,
        admin,
        get: Arc::default(),
        post: Arc::default(),
    };
    let created = exchange(
        addr,
        "POST",
        "/galaxies/web?seed=1",
        &config(1000, 0).to_toml(),
    );
    assert_eq!(created.0, 201, "{}", created.1);
    let (status, listing) = exchange(addr, "GET", "/galaxies/web", "");
    assert_eq!(status, 200, "{listing}");
    let listing: Value = serde_json::from_str(&listing).expect("JSON");
    let places: Vec<(u64, u64)> = listing["systems"]
        .as_array()
        .expect("systems")
        .iter()
        .map(|s| (s["x"].as_u64().expect("x"), s["y"].as_u64().expect("y")))
        .collect();
    let paths = |suffix: &str| {
        Arc::new(
            places
                .iter()
                .map(|(x, y)| format!("/galaxies/web/systems/{x}/{y}{suffix}"))
                .collect(),
        )
    };
    served.get = paths("");
    served.post = paths("/build/colony");
    served
}

/// One request on its own connection: the status and the body.
pub fn exchange(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reads");
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}
