//! Harness: spawn the daemon, talk HTTP to it, signal it, read its log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_galactic-war");

/// A running daemon; killed on drop if still running.
pub struct Daemon {
    child: Child,
    /// The game listener (`GWAR_LISTEN`).
    pub addr: SocketAddr,
    /// The admin listener (`GWAR_ADMIN_LISTEN`).
    pub admin_addr: SocketAddr,
    pub dir: PathBuf,
    log: Arc<Mutex<String>>,
}

/// A daemon started but not yet listening ([`Daemon::spawn`]); killed on drop.
pub struct Starting {
    /// `None` once handed to the [`Daemon`].
    child: Option<Child>,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
    addr: crossbeam_channel::Receiver<String>,
    admin_addr: crossbeam_channel::Receiver<String>,
}

impl Starting {
    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not yet handed over");
        matches!(child.try_wait(), Ok(None))
    }

    /// Sends it SIGTERM and waits up to `timeout` for it to exit; its status, or `None`
    /// when it still runs.
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("not yet handed over");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` until it listens on both listeners; panics with its log
    /// when it does not (or exits).
    pub fn listening(mut self, timeout: Duration) -> Daemon {
        let addr = self.wait_listening(&self.addr.clone(), timeout);
        let admin_addr = self.wait_listening(&self.admin_addr.clone(), timeout);
        let child = self.child.take().expect("not yet handed over");
        Daemon {
            child,
            addr,
            admin_addr,
            dir: self.dir.clone(),
            log: self.log.clone(),
        }
    }

    fn wait_listening(
        &mut self,
        found: &crossbeam_channel::Receiver<String>,
        timeout: Duration,
    ) -> SocketAddr {
        match found.recv_timeout(timeout) {
            Ok(addr) => addr.parse().expect("a socket address"),
            Err(_) => {
                if let Some(child) = self.child.as_mut() {
                    let _ = child.kill();
                }
                panic!("the daemon did not start listening; log:\n{}", self.log());
            }
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Daemon {
    /// Starts the daemon in `dir` (its working directory, so the default database lands
    /// there) with `env` added, and waits until it listens.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_command(Command::new(BIN), dir, env)
    }

    /// [`Daemon::start`] with `command`, which runs the daemon's binary in its own way
    /// (through `unshare`, say) and keeps the process id: it `exec`s the binary.
    pub fn start_command(command: Command, dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(command, dir, env).listening(Duration::from_secs(60))
    }

    /// Starts the daemon as [`Daemon::start_command`] does without waiting until it
    /// listens: for a start-up that waits (for a primary, say) before serving.
    pub fn spawn(mut command: Command, dir: &Path, env: &[(&str, &str)]) -> Starting {
        let mut child = command
            .current_dir(dir)
            .env_remove("DATABASE_URL")
            .env("GWAR_LISTEN", "127.0.0.1:0")
            .env("GWAR_ADMIN_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, addr) = crossbeam_channel::bounded(1);
        let (found_admin, admin_addr) = crossbeam_channel::bounded(1);
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let _ = found.try_send(rest.trim().to_owned());
                    }
                    if let Some(rest) = line.split("admin on http://").nth(1) {
                        let _ = found_admin.try_send(rest.trim().to_owned());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Starting {
            child: Some(child),
            dir: dir.to_path_buf(),
            log,
            addr,
            admin_addr,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn request(&self, method: &str, path: &str, body: &str) -> Reply {
        self.request_with(method, path, &[], body.as_bytes())
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, "")
    }

    pub fn post(&self, path: &str) -> Reply {
        self.request("POST", path, "")
    }

    /// Orders a build of `structure` in the system at `(x, y)`.
    pub fn order(&self, galaxy: &str, (x, y): (u64, u64), structure: &str) -> Reply {
        self.post(&format!(
            "/galaxies/{galaxy}/systems/{x}/{y}/build/{structure}"
        ))
    }

    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request_at(self.addr, method, path, headers, body)
    }

    /// A request to the admin listener.
    pub fn admin_request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request_at(self.admin_addr, method, path, headers, body)
    }

    /// A request to the admin listener, without a token.
    pub fn admin_request(&self, method: &str, path: &str, body: &str) -> Reply {
        self.admin_request_with(method, path, &[], body.as_bytes())
    }

    /// A `POST` to the admin listener, without a token (`/admin/save`, say).
    pub fn admin_post(&self, path: &str) -> Reply {
        self.admin_request("POST", path, "")
    }

    /// Sends raw bytes and returns everything the server answered before closing.
    pub fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        raw_exchange(self.addr, bytes)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the daemon did not exit in {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait(Duration::from_secs(60))
    }

    /// SIGKILL: no chance to save anything.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// The value of an unlabelled counter or gauge of `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find_map(|line| {
                let (metric, value) = line.split_once(' ')?;
                (metric == name).then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    pub fn database(&self) -> PathBuf {
        self.dir.join("galactic_war.db")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request on a connection of its own.
pub fn request_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut raw = format!(
        // The address asked, as a client names it: the admin listener takes no other.
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    parse_reply(&raw_exchange(addr, &raw))
}

pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_exchange_for(addr, bytes, Duration::from_secs(30))
}

/// [`raw_exchange`], waiting up to `timeout` for the answer.
pub fn raw_exchange_for(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(timeout)).unwrap();
    // The server may answer and close before reading everything (413, 431): ignore
    // errors writing the rest.
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The coordinates of every system of a galaxy, in the API's (x, y) order.
pub fn systems(daemon: &Daemon, galaxy: &str) -> Vec<(u64, u64)> {
    daemon.get(&format!("/galaxies/{galaxy}")).json()["systems"]
        .as_array()
        .expect("a galaxy's systems")
        .iter()
        .map(|s| (s["x"].as_u64().unwrap(), s["y"].as_u64().unwrap()))
        .collect()
}

/// The coordinates of the first system of a galaxy.
pub fn first_system(daemon: &Daemon, galaxy: &str) -> (u64, u64) {
    systems(daemon, galaxy)[0]
}

/// Polls until `condition` holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

pub fn sqlite(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("the database opens")
}

/// Number of build events stored for a galaxy.
pub fn stored_events(path: &Path, galaxy: &str) -> i64 {
    sqlite(path)
        .query_row(
            "SELECT count(*) FROM events e JOIN systems s ON s.id = e.system_id WHERE s.galaxy_name = ?1",
            [galaxy],
            |r| r.get(0),
        )
        .expect("counts")
}

/// One acknowledged (or at least sent) order.
#[derive(Clone, Copy)]
pub struct Order {
    pub system: usize,
    pub acknowledged: Option<Instant>,
}

/// Metal per system of a galaxy stored in PostgreSQL database `db`, in (x, y) order
/// (empty when it is not stored).
pub fn stored_metal_pg(db: &crate::postgres_cluster::Database<'_>, galaxy: &str) -> Vec<i64> {
    stored_metal_on(&mut db.client(), galaxy)
}

/// [`stored_metal_pg`] through a connection of the caller's (to one server of a pair, say).
pub fn stored_metal_on(client: &mut postgres::Client, galaxy: &str) -> Vec<i64> {
    client
        .query(
            "SELECT metal FROM systems WHERE galaxy_name = $1 ORDER BY x, y",
            &[&galaxy],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Metal per system of a galaxy, as stored, in (x, y) order; `None` before creation.
pub fn stored_metal(path: &std::path::Path, galaxy: &str) -> Option<Vec<i64>> {
    let conn = sqlite(path);
    let mut stmt = conn
        .prepare("SELECT metal FROM systems WHERE galaxy_name = ?1 ORDER BY x, y")
        .unwrap();
    let metal: Vec<i64> = stmt
        .query_map([galaxy], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (!metal.is_empty()).then_some(metal)
}

/// Places orders of a colony on random systems of one galaxy until the daemon stops
/// answering; panics on a refused order (use a galaxy where every order succeeds).
pub fn client(
    daemon_addr: std::net::SocketAddr,
    galaxy: &'static str,
    systems: Vec<(u64, u64)>,
    seed: u64,
) -> Vec<Order> {
    let mut orders = Vec::new();
    let mut rng = seed | 1;
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let system = (rng % systems.len() as u64) as usize;
        let (x, y) = systems[system];
        let request = format!(
            "POST /galaxies/{galaxy}/systems/{x}/{y}/build/colony HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        orders.push(Order {
            system,
            acknowledged: None,
        });
        let Ok(mut stream) = std::net::TcpStream::connect(daemon_addr) else {
            return orders;
        };
        use std::io::{Read, Write};
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        if stream.write_all(request.as_bytes()).is_err() {
            return orders;
        }
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        if reply.starts_with(b"HTTP/1.1 201") {
            orders.last_mut().unwrap().acknowledged = Some(Instant::now());
        } else if !reply.is_empty() {
            panic!("an order was refused: {}", String::from_utf8_lossy(&reply));
        } else {
            return orders;
        }
    }
}

/// A galaxy where every order succeeds and costs its system one metal, and nothing else
/// changes metal (no production): stored metal counts the orders that survived.
pub const COUNTING_CONFIG: &str = "system_count = 40\n[size]\nx = 9\ny = 9\n\
    [systems.resources]\nmetal = 1000000000\ncrew = 0\nwater = 0\n\
    [systems.structures.colony]\nstarting_level = 1\n\
    [systems.structures.colony.cost]\nmetal = 1\ntime = 0\n";

/// What survived a kill of one galaxy's orders (one client, so in acknowledgement order).
pub struct Survivors {
    /// Orders found on disk.
    pub survived: usize,
    /// Orders acknowledged more than the loss window before the kill.
    pub must_survive: usize,
}

/// Checks the promises of the README's *What is guaranteed, in plain words* on a galaxy of [`COUNTING_CONFIG`] after a kill at
/// `killed_at`: the survivors are exactly the first orders sent (the consistent cut), no
/// more than were sent, and include every order acknowledged more than `window` before.
pub fn check_survivors(
    path: &Path,
    galaxy: &str,
    baseline: &[i64],
    orders: &[Order],
    killed_at: Instant,
    window: Duration,
) -> Survivors {
    let metal = stored_metal(path, galaxy).expect("still stored");
    check_survivors_of(metal, galaxy, baseline, orders, killed_at, window)
}

/// [`check_survivors`] on the metal per system as stored, in (x, y) order, read from
/// whichever store holds it.
pub fn check_survivors_of(
    metal: Vec<i64>,
    galaxy: &str,
    baseline: &[i64],
    orders: &[Order],
    killed_at: Instant,
    window: Duration,
) -> Survivors {
    let survived: Vec<i64> = baseline.iter().zip(&metal).map(|(b, m)| b - m).collect();
    assert!(survived.iter().all(|&n| n >= 0), "{galaxy}: metal went up");
    let k = survived.iter().sum::<i64>() as usize;
    assert!(
        k <= orders.len(),
        "{galaxy}: {k} orders survived but only {} were sent",
        orders.len()
    );
    let mut prefix = vec![0i64; metal.len()];
    for order in &orders[..k] {
        prefix[order.system] += 1;
    }
    assert_eq!(prefix, survived, "{galaxy}: the survivors are not a prefix");
    let must_survive = orders
        .iter()
        .filter_map(|o| o.acknowledged)
        .filter(|at| killed_at.duration_since(*at) > window)
        .count();
    assert!(
        k >= must_survive,
        "{galaxy}: {} orders acknowledged more than {window:?} before the kill were lost \
         ({k} survived)",
        must_survive - k
    );
    Survivors {
        survived: k,
        must_survive,
    }
}

/// Runs the binary with `args`, `DATABASE_URL` as `env` says (never the caller's).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

/// A command's status and output, for an assertion's message.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
