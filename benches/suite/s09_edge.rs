//! Section 9: the HTTP edge. Many keep-alive clients against 16, persistence on against
//! off, the daemon against nginx serving a static file as large as its answer; new
//! clients' GETs beside thousands of idle connections, and what each idle connection
//! costs the daemon in resident memory.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::daemon::{exchange, http_load, read_reply, serve, Served, HTTP_CLIENTS};
use crate::harness::{median, paired_ratio, percentile, resident_bytes_of, row, Run};

/// Keep-alive clients of section 9's many-clients measurements.
const EDGE_CLIENTS: usize = 1000;
/// Client threads driving section 9's connections, 16 or 1 000 alike (see [`http_load`]):
/// only the number of connections differs between the two.
const EDGE_THREADS: usize = HTTP_CLIENTS;
/// Idle connections held open in section 9.
const EDGE_IDLE: usize = 10_000;

/// Raises this process's soft open-files limit to its hard limit, for the connections
/// section 9 holds (the daemons it starts inherit it, and raise their own to what
/// `GWAR_MAX_CONNECTIONS` needs anyway); the soft limit in force afterwards.
fn raise_own_open_files() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The nginx binary, if installed (`/usr/sbin` is not on every user's `PATH`); as in
/// tests/daemon/nginx.rs.
fn nginx_binary() -> Option<PathBuf> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|bin| {
            Command::new(bin)
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// An nginx master process serving one static file, `/system.json`, with a prefix
/// directory of its own; stopped when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    /// Its configuration, the file, logs and temporary files; removed after it stopped.
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free loopback port, serving `body` as `/system.json`.
    fn start(bin: &Path, body: &str) -> Nginx {
        // The port is free when we look; another process could take it before nginx binds
        // it, so a failed start is tried again on another port (as the tests do).
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::create_dir(dir.path().join("www")).expect("www");
            std::fs::write(dir.path().join("www/system.json"), body).expect("the file");
            std::fs::write(
                dir.path().join("nginx.conf"),
                nginx_config(dir.path(), addr),
            )
            .expect("the config");
            let mut child = Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .args(["-c", "nginx.conf", "-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            let listening = loop {
                if !matches!(child.try_wait(), Ok(None)) {
                    break false;
                }
                if TcpStream::connect(addr).is_ok() {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            if listening {
                return Nginx {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start; its error log:\n{last_log}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits; SIGKILL if it does not.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx as an operator would run it for static files: Debian's defaults (`nginx.conf`
/// and `sites-available/default`: `worker_processes auto`, `sendfile on`,
/// `tcp_nopush on`, no access log here so that neither side writes a log per request),
/// every path it writes inside `dir`. The template of tests/daemon/nginx.rs (benches
/// cannot import tests), serving a file instead of proxying.
///
/// `worker_processes auto` is one worker per core, two on this project's 2-core machine:
/// what Debian ships, and as many cores as the daemon's poller and 16 workers can use.
/// `keepalive_requests` is raised from its default of 1 000 (after which nginx closes a
/// keep-alive connection) so that the clients' connections, like the daemon's, stay open
/// for the whole measurement; `worker_connections` from 768 so that 1 000 clients fit.
fn nginx_config(dir: &Path, listen: SocketAddr) -> String {
    use std::os::unix::fs::MetadataExt;
    // As root, nginx's workers would switch to an unprivileged user that cannot enter the
    // private temporary directory; /proc/self belongs to our effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let dir = dir.display();
    format!(
        "{user}worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000000;
    default_type application/json;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {listen};
        root {dir}/www;
    }}
}}
",
        user = if root { "user root;\n" } else { "" },
    )
}

/// Section 9's throughput, as medians of req/s per load, and ratios paired within rounds.
struct EdgeResult {
    /// Persistence on, at 16 and at [`EDGE_CLIENTS`] clients.
    on: [f64; 2],
    /// Persistence off, and the control (off again), at [`EDGE_CLIENTS`].
    off: f64,
    control: f64,
    /// nginx at 16 and at [`EDGE_CLIENTS`], when installed.
    nginx: Option<[f64; 2]>,
    /// On at many clients / on at 16.
    many_ratio: f64,
    /// On / off and control / off, at many clients.
    on_ratio: f64,
    control_ratio: f64,
    /// On / nginx at 16 and at many clients.
    nginx_ratio: Option<[f64; 2]>,
    /// The size of the answers' bodies (nginx's file's size).
    body_bytes: usize,
}

/// GET of one system (the game's hot read) with 16 and [`EDGE_CLIENTS`] keep-alive
/// clients: three daemons (persistence on, off, off again as the control) and nginx
/// serving a file as large as the daemon's answer, `rounds` rounds of every load, each
/// load going first in turn.
fn edge_throughput(dir: &Path, duration: Duration, rounds: usize) -> EdgeResult {
    let servers = [
        serve(dir, "edge-on", true, &[]),
        serve(dir, "edge-off", false, &[]),
        serve(dir, "edge-control", false, &[]),
    ];
    let (status, body) = exchange(servers[0].addr, "GET", &servers[0].get[0], "");
    assert_eq!(status, 200, "{body}");
    let nginx = match nginx_binary() {
        Some(bin) => Some(Nginx::start(&bin, &body)),
        None => {
            println!("9. nginx is not installed here: the nginx rows are skipped");
            None
        }
    };
    let file = Arc::new(vec!["/system.json".to_owned()]);
    // (address, paths, clients) of each load: on at 16 and many, off and control at many,
    // nginx at 16 and many.
    let mut loads = vec![
        (servers[0].addr, servers[0].get.clone(), HTTP_CLIENTS),
        (servers[0].addr, servers[0].get.clone(), EDGE_CLIENTS),
        (servers[1].addr, servers[1].get.clone(), EDGE_CLIENTS),
        (servers[2].addr, servers[2].get.clone(), EDGE_CLIENTS),
    ];
    if let Some(nginx) = &nginx {
        loads.push((nginx.addr, file.clone(), HTTP_CLIENTS));
        loads.push((nginx.addr, file, EDGE_CLIENTS));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); loads.len()];
    for round in 0..rounds {
        for turn in 0..loads.len() {
            let side = (round + turn) % loads.len();
            let (addr, paths, clients) = &loads[side];
            samples[side].push(http_load(
                *addr,
                *clients,
                EDGE_THREADS,
                duration,
                "GET",
                paths.clone(),
                200,
            ));
        }
    }
    drop(nginx);
    drop(servers);
    let ratio = |a: usize, b: usize| paired_ratio(&samples[a], &samples[b]);
    EdgeResult {
        on: [median(samples[0].clone()), median(samples[1].clone())],
        off: median(samples[2].clone()),
        control: median(samples[3].clone()),
        nginx: (samples.len() > 4)
            .then(|| [median(samples[4].clone()), median(samples[5].clone())]),
        many_ratio: ratio(1, 0),
        on_ratio: ratio(1, 2),
        control_ratio: ratio(3, 2),
        nginx_ratio: (samples.len() > 4).then(|| [ratio(0, 4), ratio(1, 5)]),
        body_bytes: body.len(),
    }
}

/// One new client's GET: connect, send the request, read the whole answer; its time.
fn fresh_get(addr: SocketAddr, path: &str) -> Duration {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    (&stream)
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
        .expect("writes");
    let status = read_reply(&mut BufReader::new(&stream));
    let took = started.elapsed();
    assert_eq!(status, 200);
    took
}

/// `count` new clients' GETs one after another, stopping early at `until`; their times.
fn fresh_gets(served: &Served, count: usize, until: Instant) -> Vec<Duration> {
    (0..count)
        .take_while(|_| Instant::now() < until)
        .map(|i| fresh_get(served.addr, &served.get[i % served.get.len()]))
        .collect()
}

/// `count` connections to `served`, each having made one request (answered), then left
/// idle; opened by a few threads at once.
fn open_idle(served: &Served, count: usize) -> Vec<TcpStream> {
    let threads = 4;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, paths) = (served.addr, served.get.clone());
            std::thread::spawn(move || {
                (t..count)
                    .step_by(threads)
                    .map(|c| {
                        let stream = TcpStream::connect(addr).expect("connects");
                        let path = &paths[c % paths.len()];
                        (&stream)
                            .write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
                            .expect("writes");
                        assert_eq!(read_reply(&mut BufReader::new(&stream)), 200);
                        stream
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("joins"))
        .collect()
}

/// The daemon's `gwar_http_connections_open` (the admin connection asking included).
fn open_connections(served: &Served) -> u64 {
    let (status, metrics) = exchange(served.admin, "GET", "/metrics", "");
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("gwar_http_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the open connections gauge")
}

/// Section 9's idle connections: new clients' GET times with none open and with `idle`
/// open (pooled over `rounds`), and the daemon's resident memory before and after the
/// first `idle` were opened.
struct IdleResult {
    none: Vec<Duration>,
    with: Vec<Duration>,
    rss_before: u64,
    rss_after: u64,
    /// The fewest connections the daemon had open at the end of a round's probes.
    open_at_end: u64,
    /// The longest it took to open the idle connections.
    opening: Duration,
}

/// The wait between opening the idle connections and the GETs beside them.
const IDLE_SETTLE: Duration = Duration::from_millis(500);

/// New clients' GETs with no connection open, then with `idle` idle ones, `rounds` times,
/// on a fresh daemon (persistence on) whose cap leaves room for the probes beside the
/// idle connections (the default cap is 10 000: a 10 001st connection would be refused).
///
/// The daemon closes a connection idle for 5 s (not configurable), so each round's probes
/// with idle connections start [`IDLE_SETTLE`] after the last was opened and stop 4 s
/// after the first was, and the open-connections gauge is read at their end to show that
/// all were still open.
fn edge_idle(dir: &Path, idle: usize, rounds: usize, probes: usize) -> IdleResult {
    let cap = (idle + 100).to_string();
    let served = serve(dir, "edge-idle", true, &[("GWAR_MAX_CONNECTIONS", &cap)]);
    let pid = served.daemon.id().to_string();
    let far = Instant::now() + Duration::from_secs(3600);
    // Warm: every path read once, the daemon's per-request allocations made.
    fresh_gets(&served, served.get.len(), far);
    let mut result = IdleResult {
        none: Vec::new(),
        with: Vec::new(),
        rss_before: 0,
        rss_after: 0,
        open_at_end: u64::MAX,
        opening: Duration::ZERO,
    };
    for round in 0..rounds {
        result.none.extend(fresh_gets(&served, probes, far));
        let before = resident_bytes_of(&pid);
        let opening = Instant::now();
        let held = open_idle(&served, idle);
        result.opening = result.opening.max(opening.elapsed());
        let after = resident_bytes_of(&pid);
        if round == 0 {
            (result.rss_before, result.rss_after) = (before, after);
        }
        // Held, not being opened: in the first few hundred milliseconds after a burst of
        // 10 000 connects, new clients' GETs came in bursts of slow ones (up to 4 ms),
        // none later and none periodic (the poller's 100 ms deadline sweep would be).
        std::thread::sleep(IDLE_SETTLE);
        result.with.extend(fresh_gets(
            &served,
            probes,
            opening + Duration::from_secs(4),
        ));
        result.open_at_end = result.open_at_end.min(open_connections(&served));
        drop(held);
        // Until the daemon has closed them all (it sees each client's close), so the next
        // round's "none" has none.
        let deadline = Instant::now() + Duration::from_secs(30);
        while open_connections(&served) > 1 {
            assert!(Instant::now() < deadline, "idle connections not closed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    result
}

fn throughput_rows(e: &EdgeResult) {
    row(
        &format!("9. HTTP GET system, req/s, {EDGE_CLIENTS} vs 16 keep-alive clients"),
        format!("{:.0}", e.on[1]),
        format!("{:.0}", e.on[0]),
        Some(e.many_ratio),
        "≥ 0.9",
    );
    row(
        &format!("9. HTTP GET system, req/s, persistence on vs off, {EDGE_CLIENTS} clients"),
        format!("{:.0}", e.on[1]),
        format!("{:.0}", e.off),
        Some(e.on_ratio),
        "≥ 0.95",
    );
    row(
        &format!("9. HTTP GET system, req/s, control: two servers with persistence off, {EDGE_CLIENTS} clients"),
        format!("{:.0}", e.control),
        format!("{:.0}", e.off),
        Some(e.control_ratio),
        "1 ± resolution",
    );
    if let (Some(nginx), Some(ratio)) = (e.nginx, e.nginx_ratio) {
        for (i, clients) in [16, EDGE_CLIENTS].into_iter().enumerate() {
            row(
                &format!(
                    "9. HTTP GET system vs nginx's static file of {} B, req/s, {clients} clients",
                    e.body_bytes
                ),
                format!("{:.0}", e.on[i]),
                format!("{:.0}", nginx[i]),
                Some(ratio[i]),
                "≥ 0.8",
            );
        }
    }
}

/// Section 9: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir) = (run.quick, run.dir.as_path());
    let limit = raise_own_open_files();
    // The idle connections, the daemon's connections to them, a few spare.
    let idle = EDGE_IDLE.min(limit.saturating_sub(200) as usize);
    if idle < EDGE_IDLE {
        println!(
            "9. the open-files limit is {limit}: holding {idle} idle connections, not {EDGE_IDLE}"
        );
    }
    let (rounds, duration, idle_rounds, probes) = if quick {
        (3, Duration::from_millis(200), 1, 1000)
    } else {
        (18, Duration::from_millis(300), 3, 2000)
    };
    let e = edge_throughput(dir, duration, rounds);
    throughput_rows(&e);
    let l = edge_idle(dir, idle, idle_rounds, probes);
    let (mut none, mut with) = (l.none.clone(), l.with.clone());
    none.sort();
    with.sort();
    let (none_p50, none_p99) = (percentile(&none, 0.5), percentile(&none, 0.99));
    let (with_p50, with_p99) = (percentile(&with, 0.5), percentile(&with, 0.99));
    row(
        &format!(
            "9. new client's GET p50, {idle} idle connections open vs none ({} and {} GETs)",
            with.len(),
            none.len()
        ),
        format!("{with_p50:?}"),
        format!("{none_p50:?}"),
        Some(with_p50.as_secs_f64() / none_p50.as_secs_f64()),
        "",
    );
    row(
        &format!("9. new client's GET p99, {idle} idle connections open vs none"),
        format!("{with_p99:?}"),
        format!("{none_p99:?}"),
        Some(with_p99.as_secs_f64() / none_p99.as_secs_f64()),
        "≤ 2",
    );
    let per_connection = l.rss_after.saturating_sub(l.rss_before) as f64 / idle as f64;
    row(
        &format!(
            "9. daemon's resident bytes per idle connection ({idle} opened in {:?}, {} open at the end)",
            l.opening, l.open_at_end
        ),
        format!("{per_connection:.0} B"),
        format!(
            "{:.1} → {:.1} MiB",
            l.rss_before as f64 / 1048576.0,
            l.rss_after as f64 / 1048576.0
        ),
        None,
        "≤ 4096 B",
    );
    out.insert(
        "edge".into(),
        json!({"clients": EDGE_CLIENTS, "client_threads": EDGE_THREADS,
               "get_on_16": e.on[0], "get_on_many": e.on[1], "get_off_many": e.off,
               "get_control_many": e.control, "many_vs_16_ratio": e.many_ratio,
               "on_off_ratio": e.on_ratio, "control_ratio": e.control_ratio,
               "nginx_16": e.nginx.map(|n| n[0]), "nginx_many": e.nginx.map(|n| n[1]),
               "vs_nginx_16_ratio": e.nginx_ratio.map(|n| n[0]),
               "vs_nginx_many_ratio": e.nginx_ratio.map(|n| n[1]),
               "body_bytes": e.body_bytes, "idle": idle, "open_at_end": l.open_at_end,
               "fresh_p50_none_ns": none_p50.as_nanos() as u64, "fresh_p99_none_ns": none_p99.as_nanos() as u64,
               "fresh_p50_idle_ns": with_p50.as_nanos() as u64, "fresh_p99_idle_ns": with_p99.as_nanos() as u64,
               "p99_ratio": with_p99.as_secs_f64() / none_p99.as_secs_f64(),
               "opening_ms": l.opening.as_millis() as u64, "rss_before": l.rss_before, "rss_after": l.rss_after,
               "rss_bytes_per_idle_connection": per_connection}),
    );
}
