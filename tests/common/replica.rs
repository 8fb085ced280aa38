//! A throwaway pair of PostgreSQL servers, a primary and a streaming standby, for the
//! tests and benchmarks of failover: [`Pair::start`] initialises the primary
//! (`wal_level=replica`), copies it with `pg_basebackup -R -X stream` into a standby on
//! another port, and waits until the primary reports the standby `sync` (with
//! [`Replication::Sync`]: `synchronous_standby_names = '*'`) or `async`. Then a test kills
//! the primary ([`Pair::kill_primary`], `kill -9` of its postmaster), promotes the standby
//! ([`Pair::promote`]), and makes a new standby of the new primary on the dead one's port
//! ([`Pair::rebuild_standby`]), as often as it likes: the two ports never change, so one
//! URL naming both ([`Pair::url`]) stays right through every cycle.
//!
//! Each server's data directory has its own temporary directory and its own supervisor,
//! the pattern of tests/common/postgres.rs (whose helpers this file includes as a private
//! module, so that it compiles the same wherever it is included): a shell in its own
//! process group that waits for end-of-file on a pipe from the test process, then stops
//! the server (`pg_ctl stop -m immediate`) and removes the directory. So the servers go
//! when the test process ends however it ends, or when the pair (or a replaced server) is
//! dropped. As root every server command runs through `runuser -u postgres --`.
//!
//! `synchronous_standby_names` lives in the primary's `postgresql.auto.conf` (`ALTER
//! SYSTEM`) and is removed from every standby's copy: a promoted standby therefore
//! commits alone (as an HA manager makes it do while it has no standby) until
//! [`Pair::rebuild_standby`] gives it a synchronous standby again.
#![allow(dead_code, unused_imports)]

// The same file may also be included beside this one (as `postgres_cluster` in the
// tests, `pg_cluster` in the benchmarks): a second copy, so this file names no module
// outside itself.
#[allow(clippy::duplicate_mod)]
#[path = "postgres.rs"]
mod single;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether this run is CI, where PostgreSQL tests must run.
pub use single::under_ci;

/// How the primary waits for its standby at commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// `synchronous_standby_names = '*'`: a commit answers once the standby has it.
    Sync,
    /// A commit answers at once; the standby follows as fast as it can.
    Async,
}

/// How long the harness waits for a server to start, a standby to catch up, and such.
const PATIENCE: Duration = Duration::from_secs(120);

/// One server: its directory (data in `data/`, log, Unix socket) and supervisor.
struct Server {
    dir: PathBuf,
    port: u16,
    /// Its stdin is the pipe whose end-of-file tells it to clean up.
    supervisor: Option<Child>,
}

impl Server {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// A primary and (but between [`Pair::promote`] and [`Pair::rebuild_standby`]) a
/// streaming standby on loopback.
pub struct Pair {
    bin: PathBuf,
    /// The uid and gid of `postgres` when the tests run as root (commands go through
    /// `runuser`); `None` otherwise.
    owner: Option<(u32, u32)>,
    /// `fsync` and `synchronous_commit` on (the benchmarks'), rather than `fsync=off`.
    durable: bool,
    mode: Replication,
    /// The two servers in the URL's order; `None` once a dead one has been cleared away.
    servers: [Option<Server>; 2],
    /// The two ports, fixed for the pair's life.
    ports: [u16; 2],
    primary: usize,
    /// Whether the other server is a standby following the primary.
    has_standby: bool,
}

impl Pair {
    /// A pair for a test (`fsync=off`: the tests crash servers, never the machine);
    /// `None` (with a notice) when PostgreSQL is missing outside CI.
    pub fn start(mode: Replication) -> Option<Pair> {
        Pair::start_with(mode, false)
    }

    /// A pair whose commits reach the disk as a production server's do (`fsync` and
    /// `synchronous_commit` on), for the benchmarks.
    pub fn start_durable(mode: Replication) -> Option<Pair> {
        Pair::start_with(mode, true)
    }

    fn start_with(mode: Replication, durable: bool) -> Option<Pair> {
        let bin = match single::bindir() {
            Ok(bin) => bin,
            Err(reason) => return single::missing(&reason),
        };
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let owner = root.then(|| (postgres_id("-u"), postgres_id("-g")));
        let mut pair = Pair {
            bin,
            owner,
            durable,
            mode,
            servers: [None, None],
            ports: [0, 0],
            primary: 0,
            has_standby: false,
        };
        pair.init_primary();
        pair.make_standby(1, None);
        Some(pair)
    }

    /// A new directory for a server, owned by `postgres` when running as root, with its
    /// supervisor already watching (so whatever fails after is cleaned up too).
    fn new_server(&self, port: u16) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("gwar-pair-")
            .tempdir_in("/tmp")
            .expect("a temporary directory")
            .keep();
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("the directory is given to postgres");
        }
        let mut stop = self.pg_command("pg_ctl", &dir);
        stop.args(["stop", "-D"])
            .arg(dir.join("data"))
            .args(["-m", "immediate"]);
        let mut argv: Vec<String> = vec![stop.get_program().to_string_lossy().into()];
        argv.extend(stop.get_args().map(|a| a.to_string_lossy().into_owned()));
        let supervisor = Command::new("sh")
            .arg("-c")
            .arg(r#"dir=$1; shift; cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf "$dir""#)
            .arg("gwar-pair-supervisor")
            .arg(&dir)
            .args(argv)
            .current_dir("/")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the supervisor starts");
        Server {
            dir,
            port,
            supervisor: Some(supervisor),
        }
    }

    /// A command of PostgreSQL's, run as `postgres` when the tests run as root.
    fn pg_command(&self, program: &str, dir: &std::path::Path) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.owner.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command
            .current_dir(dir)
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        command
    }

    /// Server 0: `initdb`, the replication settings, started on a free port.
    fn init_primary(&mut self) {
        let server = self.new_server(0);
        run(self
            .pg_command("initdb", &server.dir)
            .arg("-D")
            .arg(server.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync"));
        // Settings every copy shares (pg_basebackup copies this file); the port and
        // socket directory are each server's own, given on its command line. A standby
        // whose primary died retries it every `wal_retrieve_retry_interval`, and a
        // promotion may wait out one such pause (5 s by default).
        let sync = if self.durable {
            "fsync = on\nsynchronous_commit = on\n"
        } else {
            "fsync = off\n"
        };
        let settings = format!(
            "\n# gwar-pair\nlisten_addresses = '127.0.0.1'\nmax_connections = 300\n\
             wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\n\
             wal_keep_size = '512MB'\nwal_sender_timeout = '10s'\n\
             wal_receiver_status_interval = '1s'\nwal_retrieve_retry_interval = '200ms'\n{sync}"
        );
        append(&server.data().join("postgresql.conf"), &settings);
        self.servers[0] = Some(server);
        self.start_on_free_port(0);
        self.primary = 0;
    }

    /// Starts server `i` on a free port, taking another one if someone else took it first.
    fn start_on_free_port(&mut self, i: usize) {
        for attempt in 1.. {
            self.ports[i] = single::free_port();
            if let Some(server) = self.servers[i].as_mut() {
                server.port = self.ports[i];
            }
            match self.try_start(i) {
                Ok(()) => return,
                Err(log) if attempt < 5 && log.contains("could not") => continue,
                Err(log) => panic!("PostgreSQL did not start: {log}"),
            }
        }
    }

    /// Starts server `i` on its fixed port, retrying while the port is still held (by a
    /// killed postmaster's last children, say).
    fn start_on_its_port(&self, i: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.try_start(i) {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline => {
                    eprintln!("starting PostgreSQL failed, retrying: {log}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(log) => panic!("PostgreSQL did not start: {log}"),
            }
        }
    }

    /// `pg_ctl start -w` of server `i`, waiting until it accepts connections; the logs
    /// when it does not.
    fn try_start(&self, i: usize) -> Result<(), String> {
        let server = self.server(i);
        let options = format!("-p {} -k {}", server.port, server.dir.display());
        single::pg_ctl_start(
            self.pg_command("pg_ctl", &server.dir),
            &server.dir,
            &options,
        )
        .and_then(|()| {
            single::wait_ready(&self.bin, server.port, PATIENCE)
                .then_some(())
                .ok_or_else(|| "not ready in time".to_owned())
        })
        .map_err(|ctl| format!("pg_ctl: {ctl}\nserver log:\n{}", server.log()))
    }

    fn server(&self, i: usize) -> &Server {
        self.servers[i]
            .as_ref()
            .unwrap_or_else(|| panic!("server {i} has been cleared away"))
    }

    /// Server `i` (an empty slot): a base backup of the primary, started as its standby
    /// on `port` (a free one when `None`); waits until the primary reports it streaming
    /// in the configured mode.
    fn make_standby(&mut self, i: usize, port: Option<u16>) {
        let server = self.new_server(port.unwrap_or(0));
        let mut backup = self.pg_command("pg_basebackup", &server.dir);
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.ports[self.primary].to_string(),
            ])
            .args(["-U", "postgres", "-D"])
            .arg(server.data())
            .args(["-R", "-X", "stream", "-c", "fast"]);
        if !self.durable {
            backup.arg("--no-sync");
        }
        run(&mut backup);
        // The standby must not wait for a standby of its own once promoted.
        let auto = server.data().join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&auto).expect("pg_basebackup -R wrote it");
        let kept: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("synchronous_standby_names"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&auto, kept).expect("postgresql.auto.conf is written");
        self.servers[i] = Some(server);
        match port {
            Some(_) => self.start_on_its_port(i),
            None => self.start_on_free_port(i),
        }
        self.has_standby = true;
        self.wait_streaming("async");
        if self.mode == Replication::Sync {
            self.set_sync_names("'*'");
            self.wait_streaming("sync");
        }
    }

    /// `ALTER SYSTEM SET synchronous_standby_names` on the primary, reloaded.
    fn set_sync_names(&self, value: &str) {
        // Two statements: ALTER SYSTEM refuses to run in a multi-statement batch's
        // implicit transaction.
        let mut client = self.client("postgres");
        client
            .batch_execute(&format!(
                "ALTER SYSTEM SET synchronous_standby_names = {value}"
            ))
            .expect("synchronous_standby_names is set");
        client
            .batch_execute("SELECT pg_reload_conf()")
            .expect("the configuration is reloaded");
    }

    /// Polls `pg_stat_replication` on the primary until the standby streams with
    /// `sync_state` `want`.
    fn wait_streaming(&self, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut client = self.client("postgres");
        loop {
            let states: Vec<(String, String)> = client
                .query(
                    "SELECT coalesce(state, ''), coalesce(sync_state, '') \
                     FROM pg_stat_replication",
                    &[],
                )
                .expect("pg_stat_replication")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if states.iter().any(|(s, m)| s == "streaming" && m == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the standby is not streaming {want}: {states:?}\nstandby log:\n{}",
                self.server(1 - self.primary).log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The configured replication mode.
    pub fn mode(&self) -> Replication {
        self.mode
    }

    /// The two ports, in the URL's order (fixed for the pair's life).
    pub fn ports(&self) -> [u16; 2] {
        self.ports
    }

    /// Index (0 or 1, the URL's order) of the current primary.
    pub fn primary_index(&self) -> usize {
        self.primary
    }

    pub fn primary_port(&self) -> u16 {
        self.ports[self.primary]
    }

    /// The standby's port, while there is one.
    pub fn standby_port(&self) -> Option<u16> {
        self.has_standby.then(|| self.ports[1 - self.primary])
    }

    /// `postgres://postgres@127.0.0.1:P0,127.0.0.1:P1/db?target_session_attrs=read-write`:
    /// both servers in their fixed order, whichever is the primary now.
    pub fn url(&self, db: &str) -> String {
        url_of(&self.ports, db)
    }

    /// The URL of one server alone (port `port`).
    pub fn server_url(port: u16, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{db}")
    }

    /// A superuser connection to database `db` on the current primary.
    pub fn client(&self, db: &str) -> postgres::Client {
        client_at(self.primary_port(), db)
    }

    /// A superuser connection to database `db` on the standby.
    pub fn standby_client(&self, db: &str) -> postgres::Client {
        let port = self.standby_port().expect("the pair has a standby");
        client_at(port, db)
    }

    /// `CREATE DATABASE` on the primary, and on the standby by replication: returns once
    /// the standby has replayed it (a synchronous commit waits only for the standby's
    /// flush), so that a session on either server finds it.
    pub fn create_database(&self, name: &str) {
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        if self.has_standby {
            self.wait_replayed();
        }
    }

    /// Waits until the standby has replayed everything the primary had written when
    /// called.
    pub fn wait_replayed(&self) {
        let mut primary = self.client("postgres");
        let mut standby = self.standby_client("postgres");
        let target: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .expect("pg_current_wal_lsn")
            .get(0);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let caught_up: bool = standby
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&target],
                )
                .expect("pg_last_wal_replay_lsn")
                .get(0);
            if caught_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the standby did not replay up to {target}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` of the primary's postmaster (as a crash would), then waits until its
    /// port refuses connections. The standby stays a standby until [`Pair::promote`].
    pub fn kill_primary(&mut self) {
        let server = self.server(self.primary);
        let pid_file = server.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
        let pid = text.lines().next().unwrap_or_default().trim().to_string();
        assert!(
            pid.parse::<u32>().is_ok(),
            "postmaster.pid starts with a pid: {text:?}"
        );
        run(Command::new("kill").args(["-9", &pid]));
        let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {} still answers",
                server.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pg_ctl promote -w` on the standby, which becomes the primary; returns how long
    /// promotion took. The old primary (killed, or only cut off) is left as it is until
    /// [`Pair::rebuild_standby`].
    pub fn promote(&mut self) -> Duration {
        assert!(self.has_standby, "there is no standby to promote");
        let standby = 1 - self.primary;
        let server = self.server(standby);
        let started = Instant::now();
        run(self
            .pg_command("pg_ctl", &server.dir)
            .args(["promote", "-w", "-t", "120", "-D"])
            .arg(server.data()));
        let took = started.elapsed();
        self.primary = standby;
        self.has_standby = false;
        took
    }

    /// After a promotion: stops and removes the old primary (if still running), and makes
    /// a new standby of the new primary on the old primary's port, in the configured mode.
    pub fn rebuild_standby(&mut self) {
        assert!(!self.has_standby, "the pair still has its standby");
        let old = 1 - self.primary;
        if let Some(server) = self.servers[old].take() {
            // A server only cut off still runs; a killed one's stop fails harmlessly.
            let _ = self
                .pg_command("pg_ctl", &server.dir)
                .args(["stop", "-w", "-m", "immediate", "-D"])
                .arg(server.data())
                .stdin(Stdio::null())
                .output();
            drop(server);
        }
        self.make_standby(old, Some(self.ports[old]));
    }

    /// Stops the standby (`pg_ctl stop -m fast`), keeping its data: with synchronous
    /// replication the primary's commits then wait for it.
    pub fn stop_standby(&mut self) {
        assert!(self.has_standby, "there is no standby to stop");
        let server = self.server(1 - self.primary);
        run(self
            .pg_command("pg_ctl", &server.dir)
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(server.data())
            .stdin(Stdio::null()));
    }

    /// Starts the standby [`Pair::stop_standby`] stopped, and waits until it streams again.
    pub fn start_standby(&mut self) {
        self.start_on_its_port(1 - self.primary);
        self.wait_streaming(match self.mode {
            Replication::Sync => "sync",
            Replication::Async => "async",
        });
    }

    /// The log of the server on `port`, for failure messages.
    pub fn server_log(&self, port: u16) -> String {
        self.servers
            .iter()
            .flatten()
            .find(|s| s.port == port)
            .map(Server::log)
            .unwrap_or_default()
    }
}

/// `postgres://postgres@127.0.0.1:P0,127.0.0.1:P1,…/db?target_session_attrs=read-write`.
pub fn url_of(ports: &[u16], db: &str) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!(
        "postgres://postgres@{}/{db}?target_session_attrs=read-write",
        hosts.join(",")
    )
}

/// A superuser connection to database `db` on the server at `port`.
pub fn client_at(port: u16, db: &str) -> postgres::Client {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(db)
        .application_name("gwar-tests")
        .connect_timeout(Duration::from_secs(30))
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to database {db} on port {port}: {e}"))
}

/// `id -u postgres` or `id -g postgres`.
fn postgres_id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id runs");
    assert!(
        out.status.success(),
        "running as root, PostgreSQL needs the `postgres` user, which is missing"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number")
}

/// Runs a command to completion, panicking with its output when it fails.
fn run(command: &mut Command) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Appends `text` to a file.
fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
}
