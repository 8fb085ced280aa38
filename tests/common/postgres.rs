//! A throwaway PostgreSQL cluster for the tests that need a real server.
//!
//! One cluster per test binary ([`shared`]), started by the first test that asks and
//! shared by the rest; each test gets a fresh database of its own ([`Cluster::database`]).
//! A test that stops the whole server starts a [`Cluster::private`] one instead, so it
//! never pulls the server from under another test.
//!
//! Lifetime: Rust never drops a static, and a test binary may die of a panic, a signal or
//! `kill -9`, so the cluster is not stopped by a destructor. Each cluster has a supervisor,
//! a small shell started in its own process group whose stdin is a pipe from the test
//! process (not inherited by anything else: the standard library opens pipes close-on-exec).
//! The supervisor waits for end-of-file on that pipe, which the kernel delivers whenever
//! the test process ends, however it ends, or when a private cluster is dropped; then it
//! stops the server (`pg_ctl stop -m immediate`) and removes the directory. The server
//! itself runs detached (pg_ctl starts it in its own session), with its data, log and
//! Unix socket in that directory, listening on 127.0.0.1 only.
//!
//! PostgreSQL refuses to run as root: as root, every server command goes through
//! `runuser -u postgres` and the directory belongs to `postgres`; as another user the
//! commands run directly. The cluster trusts local connections (`-A trust`) and runs with
//! `fsync=off`: the tests crash the server process, never the machine, and a commit
//! written to the kernel survives a server crash. The benchmarks, which measure what a
//! commit costs, start theirs with [`Cluster::private_durable`] instead: `fsync` and
//! `synchronous_commit` on, as a production server runs.
//!
//! PostgreSQL missing: under `CI` (the variable set) that is a failure with a clear
//! message, never a skip; elsewhere the test prints a notice and returns.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The application name the engine's connections carry, by which a test finds them (the
/// writer's is `galactic-war-writer`: match with `LIKE 'galactic-war%'`).
pub const APPLICATION_NAME: &str = "galactic-war";

/// Whether this run is CI, where PostgreSQL tests must run.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// PostgreSQL could not be found: a failure under CI, a notice elsewhere.
pub fn missing<T>(reason: &str) -> Option<T> {
    if under_ci() {
        panic!("PostgreSQL tests must run under CI, but {reason}");
    }
    eprintln!("skipped (PostgreSQL missing; under CI this fails): {reason}");
    None
}

/// The folder holding `initdb`, `pg_ctl` and `pg_isready`: `pg_config --bindir`, else
/// Debian's folder for PostgreSQL 15, else Debian's newest.
pub fn bindir() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            tried.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    tried.push(PathBuf::from("/usr/lib/postgresql/15/bin"));
    // Debian's other versions, newest first (the folder names are major versions).
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort();
    tried.extend(versions.into_iter().rev().map(|(_, bin)| bin));
    tried
        .iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no initdb and pg_ctl in {tried:?} (`pg_config --bindir` or the Debian \
                 default); install Debian's `postgresql` (bash .ci/run does)"
            )
        })
}

/// The cluster this test binary shares, started on first use; `None` (with a notice)
/// when PostgreSQL is missing outside CI.
pub fn shared() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match SHARED.get_or_init(|| bindir().map(|bin| Cluster::start(bin, false))) {
        Ok(cluster) => Some(cluster),
        Err(reason) => missing(reason),
    }
}

/// A running cluster. Dropping it stops it and removes its directory (a shared one is
/// never dropped; its supervisor does the same when the process ends).
pub struct Cluster {
    bin: PathBuf,
    /// Data (`data/`), logs and the Unix socket.
    dir: PathBuf,
    port: u16,
    /// Server commands go through `runuser -u postgres` (the tests run as root).
    as_postgres: bool,
    /// `fsync` on (the benchmarks' clusters), rather than the tests' `fsync=off`.
    durable: bool,
    /// Its stdin is the pipe whose end-of-file tells it to clean up.
    supervisor: Mutex<Option<Child>>,
    databases: AtomicU64,
}

impl Cluster {
    /// A cluster of the calling test's own (to stop and start the server at will); `None`
    /// (with a notice) when PostgreSQL is missing outside CI.
    pub fn private() -> Option<Cluster> {
        match bindir() {
            Ok(bin) => Some(Cluster::start(bin, false)),
            Err(reason) => missing(&reason),
        }
    }

    /// A private cluster whose commits reach the disk as a production server's do
    /// (`fsync` and `synchronous_commit` on), for measuring what a commit costs; `None`
    /// (with a notice) when PostgreSQL is missing outside CI.
    pub fn private_durable() -> Option<Cluster> {
        match bindir() {
            Ok(bin) => Some(Cluster::start(bin, true)),
            Err(reason) => missing(&reason),
        }
    }

    /// Initialises a cluster in a new temporary directory and starts it on a free port;
    /// panics (with the server's log) when that fails.
    fn start(bin: PathBuf, durable: bool) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("gwar-pg-")
            .tempdir_in("/tmp")
            .expect("a temporary directory")
            .keep();
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if as_postgres {
            let id = |flag: &str| -> u32 {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .expect("id runs");
                assert!(
                    out.status.success(),
                    "running as root, PostgreSQL needs the `postgres` user, which is missing"
                );
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            std::os::unix::fs::chown(&dir, Some(id("-u")), Some(id("-g")))
                .expect("the directory is given to postgres");
        }
        let mut cluster = Cluster {
            bin,
            dir,
            port: 0,
            as_postgres,
            durable,
            supervisor: Mutex::new(None),
            databases: AtomicU64::new(0),
        };
        // The supervisor first, so that whatever fails below is cleaned up too.
        let mut stop = cluster.pg_command("pg_ctl");
        stop.args(["stop", "-D"])
            .arg(cluster.data())
            .args(["-m", "immediate"]);
        let mut argv: Vec<String> = vec![stop.get_program().to_string_lossy().into()];
        argv.extend(stop.get_args().map(|a| a.to_string_lossy().into_owned()));
        let supervisor = Command::new("sh")
            .arg("-c")
            .arg(r#"dir=$1; shift; cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf "$dir""#)
            .arg("gwar-pg-supervisor")
            .arg(&cluster.dir)
            .args(argv)
            .current_dir("/")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the supervisor starts");
        *cluster.supervisor.lock().unwrap() = Some(supervisor);

        let out = cluster
            .pg_command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A free port can be taken by someone else before the server binds it: try again.
        for attempt in 1.. {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("could not") => continue,
                Err(log) => panic!("PostgreSQL did not start: {log}"),
            }
        }
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command of PostgreSQL's, run as `postgres` when the tests run as root.
    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command
            .current_dir(&self.dir)
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        command
    }

    /// `pg_ctl start` on this cluster's port, waiting until it accepts connections; the
    /// log's tail when it does not.
    fn try_start(&self) -> Result<(), String> {
        let sync = if self.durable {
            "-c fsync=on -c synchronous_commit=on"
        } else {
            "-c fsync=off"
        };
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {sync} -c max_connections=300",
            self.port,
            self.dir.display()
        );
        pg_ctl_start(self.pg_command("pg_ctl"), &self.dir, &options)
            .and_then(|()| {
                wait_ready(&self.bin, self.port, Duration::from_secs(60))
                    .then_some(())
                    .ok_or_else(|| "not ready in time".to_owned())
            })
            .map_err(|ctl| format!("pg_ctl: {ctl}\nserver log:\n{}", self.server_log()))
    }

    /// The server's log, for failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        let out = self
            .pg_command("pg_ctl")
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.data())
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the stopped server again on the same port (after crash recovery).
    pub fn restart(&self) {
        // The port is ours while the server is down only by convention: retry a while.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.try_start() {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline => {
                    eprintln!("restarting PostgreSQL failed, retrying: {log}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(log) => panic!("PostgreSQL did not start again: {log}"),
            }
        }
    }

    /// A new, empty database of the calling test's own.
    pub fn database(&self) -> Database<'_> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{}_{n}", std::process::id());
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        Database {
            cluster: self,
            name,
        }
    }

    /// The URL of database `name`, as `DATABASE_URL` takes it.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A superuser connection to database `name`.
    pub fn client(&self, name: &str) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(name)
            .application_name("gwar-tests")
            .connect_timeout(Duration::from_secs(30))
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to database {name}: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let supervisor = self.supervisor.get_mut().map(Option::take);
        if let Ok(Some(mut child)) = supervisor {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// A database of one test's own on a cluster.
pub struct Database<'c> {
    pub cluster: &'c Cluster,
    pub name: String,
}

impl Database<'_> {
    /// `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// A superuser connection to this database.
    pub fn client(&self) -> postgres::Client {
        self.cluster.client(&self.name)
    }

    /// Runs statements as the superuser, in this database.
    pub fn execute(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first row of a query whose columns are all integers.
    pub fn query_i64s(&self, sql: &str) -> Vec<i64> {
        let row = self
            .client()
            .query_one(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        (0..row.len()).map(|i| row.get::<_, i64>(i)).collect()
    }

    /// Terminates every session of the engine on this database (the writer's above all),
    /// as an operator's `pg_terminate_backend` would; returns how many there were.
    pub fn terminate_engine_sessions(&self) -> i64 {
        self.query_i64s(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name LIKE '{APPLICATION_NAME}%' AND datname = '{}'",
            self.name
        ))[0]
    }

    /// Sessions of the engine now connected to this database.
    pub fn engine_sessions(&self) -> i64 {
        self.query_i64s(&format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name LIKE '{APPLICATION_NAME}%' AND datname = '{}'",
            self.name
        ))[0]
    }

    /// Sets this database's default `statement_timeout` (new sessions take it).
    pub fn set_statement_timeout(&self, timeout: Duration) {
        self.execute(&format!(
            "ALTER DATABASE {} SET statement_timeout = {}",
            self.name,
            timeout.as_millis()
        ));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The cluster's directory, for tests of the harness.
pub fn dir_of(cluster: &Cluster) -> &Path {
    &cluster.dir
}

/// `pg_ctl start -w` (the command given, run as the right user) of the cluster whose data
/// is `dir/data`, logging to `dir/server.log`, with the server `options`; `pg_ctl`'s own
/// output when it fails.
pub fn pg_ctl_start(mut pg_ctl: Command, dir: &Path, options: &str) -> Result<(), String> {
    let ctl_log = dir.join("pg_ctl.log");
    let status = pg_ctl
        .args(["start", "-w", "-t", "120", "-D"])
        .arg(dir.join("data"))
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-o", options])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&ctl_log).expect("a log file"))
        .stderr(Stdio::null())
        .status()
        .expect("pg_ctl runs");
    if status.success() {
        Ok(())
    } else {
        Err(std::fs::read_to_string(&ctl_log).unwrap_or_default())
    }
}

/// Polls `pg_isready` (in `bin`) until the server on `port` accepts connections or
/// `timeout` passes.
pub fn wait_ready(bin: &Path, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
