//! Start-up: bad environment values, a database in use, a corrupt database (memory-only
//! mode, which refuses what it cannot save), help, and the clean-shutdown marker that
//! spares a large database the whole-file check.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::GalaxyConfig;
use galactic_war::settings::{AdminListen, DatabaseUrl, PersistenceSettings, Settings};

use crate::util::{Daemon, BIN};

/// The log lines of the two start-up paths.
const SKIPPED: &str =
    "clean-shutdown marker matches: header and schema checked, full check skipped";
const WHOLE: &str = "checking the whole database";

#[test]
fn a_bad_environment_value_exits_78_naming_the_variable() {
    for (variable, value) in [
        ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "soon"),
        ("GWAR_PERSISTENCE_ENABLED", "perhaps"),
        ("GWAR_LISTEN", "not-an-address"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "postgres://db/x?sslmode=sometimes"),
        ("GWAR_PERSISTENCE_SYNCHRONOUS", "extra"),
        ("GWAR_ADMIN_LISTEN", "localhost:3051"),
        ("GWAR_MAX_TOTAL_SYSTEMS", "0"),
        ("GWAR_MIN_FREE_DISK", "lots"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(BIN)
            .current_dir(dir.path())
            .env(variable, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(variable) && stderr.contains(value),
            "{stderr}"
        );
        assert!(
            !dir.path().join("galactic_war.db").exists(),
            "nothing was created"
        );
    }
}

/// A taken address, of either listener, stops start-up before the database is opened:
/// nothing is created, and the log names the address and the listener.
#[test]
fn a_taken_port_stops_start_up_having_created_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (game, admin, variable) in [
        (taken_addr.as_str(), "127.0.0.1:0", "GWAR_LISTEN"),
        ("127.0.0.1:0", taken_addr.as_str(), "GWAR_ADMIN_LISTEN"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("GWAR_LISTEN", game)
            .env("GWAR_ADMIN_LISTEN", admin)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("cannot listen on {taken_addr}")) && stderr.contains(variable),
            "{stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "nothing was created: {left:?}");
    }
}

/// `unix:PATH` parses, but this build's HTTP server serves TCP only: start-up says so
/// and stops before anything is created.
/// One request over a Unix socket; the status.
fn unix_request(socket: &Path, request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    crate::util::parse_reply(&answer).status
}

#[test]
fn admin_calls_are_served_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("GWAR_LISTEN", "127.0.0.1:0")
        .env("GWAR_ADMIN_LISTEN", format!("unix:{}", socket.display()))
        .env("GWAR_ADMIN_TOKEN", "t0ken")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the admin socket never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let save = "POST /admin/save HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n";
    assert_eq!(
        unix_request(&socket, &format!("{save}Content-Length: 0\r\n\r\n")),
        401,
        "the token is required on the socket too"
    );
    assert_eq!(
        unix_request(
            &socket,
            &format!("{save}Authorization: Bearer t0ken\r\nContent-Length: 0\r\n\r\n")
        ),
        200
    );
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[test]
fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start(dir.path(), &[]);
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .env("GWAR_LISTEN", "127.0.0.1:0")
        .env("GWAR_ADMIN_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another galactic-war process"),
        "{stderr}"
    );
    assert_eq!(
        first.get("/healthz").status,
        200,
        "the first one is unharmed"
    );
}

/// Memory-only mode answers what it can and refuses what would be acknowledged and lost.
fn assert_refuses_what_it_cannot_save(daemon: &Daemon) {
    let created = daemon.post("/galaxies/temp?seed=1");
    assert_eq!(created.status, 503, "{}", created.body);
    assert!(
        created.json()["error"]
            .as_str()
            .unwrap()
            .contains("memory only"),
        "{}",
        created.body
    );
    let saved = daemon.admin_post("/admin/save");
    assert_eq!(saved.status, 503, "{}", saved.body);
    assert!(saved.json()["error"]
        .as_str()
        .unwrap()
        .contains("memory only"));
    assert_eq!(daemon.get("/galaxies/temp").status, 404);
    assert_eq!(daemon.get("/galaxies/temp/systems/0/0").status, 404);
    let listing = daemon.get("/galaxies");
    assert_eq!(listing.status, 200);
    assert_eq!(listing.json()["galaxies"], serde_json::json!([]));
}

#[test]
fn a_corrupt_database_is_left_intact_and_the_daemon_serves_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("galactic_war.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    let health = daemon.get("/healthz").json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["persistence"]["state"], "memory-only");
    assert!(health["persistence"]["last_error"]
        .as_str()
        .unwrap()
        .contains("not a database"));
    assert_refuses_what_it_cannot_save(&daemon);
    assert_eq!(
        daemon.get("/healthz").json(),
        health,
        "refusals change nothing"
    );
    daemon.terminate();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file is untouched"
    );
}

#[test]
fn with_persistence_disabled_creation_and_save_go_on_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("GWAR_PERSISTENCE_ENABLED", "false")]);
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let saved = daemon.admin_post("/admin/save");
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.json(), serde_json::json!({ "saved_systems": 0 }));
}

#[test]
fn help_and_version_work() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("DATABASE_URL")
            && text.contains("GWAR_LISTEN")
            && text.contains("GWAR_ADMIN_LISTEN"),
        "{text}"
    );
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let unknown = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(unknown.status.code(), Some(64));
}

#[test]
fn a_damaged_page_is_found_at_start_up_and_the_file_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("galactic_war.db");
    {
        let mut daemon = Daemon::start(dir.path(), &[]);
        assert_eq!(daemon.post("/galaxies/g?seed=1&preset=classic").status, 201);
        assert!(daemon.terminate().success());
    }
    // Garbage over a page in the middle of the file; the header stays valid.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    let middle = bytes.len() / page / 2 * page;
    for (i, byte) in bytes[middle..middle + page].iter_mut().enumerate() {
        *byte = (i * 37 % 251) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    // The clean stop left a marker; the damage, same size, changed the file's mtime.
    assert!(
        daemon.log().contains("its modification time changed"),
        "{}",
        daemon.log()
    );
    let health = daemon.get("/healthz").json();
    assert_eq!(health["persistence"]["state"], "memory-only", "{health}");
    assert!(
        health["persistence"]["last_error"]
            .as_str()
            .unwrap()
            .contains("corrupt"),
        "{health}"
    );
    assert_refuses_what_it_cannot_save(&daemon);
    drop(daemon);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file is untouched"
    );
}

fn marker(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".clean");
    PathBuf::from(name)
}

/// Systems in the start-up test's database: CI size by default, more with
/// `GWAR_TEST_STARTUP_SYSTEMS`.
fn startup_systems() -> u64 {
    std::env::var("GWAR_TEST_STARTUP_SYSTEMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300_000)
}

/// Builds a database of `systems` systems in `galaxies` galaxies through the library, and
/// stops it cleanly (which leaves the marker).
fn build_database(path: &Path, systems: u64, galaxies: u64) {
    let settings = Settings {
        database: DatabaseUrl::File(path.to_path_buf()),
        persistence: PersistenceSettings::default(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: AdminListen::Tcp("127.0.0.1:0".parse().unwrap()),
        ..Settings::default()
    };
    let app = AppState::open(&settings).expect("the engine opens");
    let each = systems / galaxies;
    let side = (each as f64).sqrt().ceil() as u64 * 2;
    let config = format!(
        "system_count = {each}\n[size]\nx = {side}\ny = {side}\n\
         [systems.resources]\nmetal = 100\ncrew = 100\nwater = 100\n\
         [systems.structures.colony]\nstarting_level = 1\n\
         [systems.structures.colony.cost]\nmetal = 1\ncrew = 1\nwater = 1\ntime = 1\n"
    );
    for n in 0..galaxies {
        let (config, _) = GalaxyConfig::from_toml(&config).expect("a valid config");
        app.create_galaxy(&format!("big{n}"), config, Some(n), 0)
            .expect("created");
    }
    assert!(app.shutdown().all_saved());
}

/// A stand-in for systemd's notify socket, and what it received.
struct NotifySocket {
    socket: UnixDatagram,
    path: String,
    messages: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            socket,
            path: path.to_str().unwrap().to_owned(),
            messages: Vec::new(),
        }
    }

    /// Receives until a message has a line `line`; panics after a minute.
    fn until(&mut self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buffer = [0u8; 4096];
        while !self.messages.iter().any(|m| m.lines().any(|l| l == line)) {
            assert!(Instant::now() < deadline, "no {line}: {:?}", self.messages);
            if let Ok(n) = self.socket.recv(&mut buffer) {
                self.messages
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        }
    }

    fn position(&self, prefix: &str) -> Option<usize> {
        self.messages
            .iter()
            .position(|m| m.lines().any(|l| l.starts_with(prefix)))
    }
}

#[test]
fn a_large_database_after_a_clean_stop_starts_without_the_whole_file_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("galactic_war.db");
    build_database(&path, startup_systems(), 3);
    assert!(marker(&path).exists(), "a clean stop leaves the marker");

    // Clean start: the header and the schema only, READY, and no marker while it runs.
    let mut notify = NotifySocket::bind(dir.path());
    let socket_path = notify.path.clone();
    let env = [("NOTIFY_SOCKET", socket_path.as_str())];
    let mut daemon = Daemon::start(dir.path(), &env);
    notify.until("READY=1");
    let log = daemon.log();
    assert!(log.contains(SKIPPED) && !log.contains(WHOLE), "{log}");
    assert_eq!(
        notify.position("EXTEND_TIMEOUT_USEC="),
        None,
        "{:?}",
        notify.messages
    );
    assert!(
        !marker(&path).exists(),
        "the marker is gone while the daemon runs"
    );
    let listing = daemon.get("/galaxies").json();
    assert_eq!(
        listing["galaxies"].as_array().unwrap().len(),
        3,
        "{listing}"
    );
    assert_eq!(daemon.get("/healthz").json()["status"], "ok");

    // After kill -9 there is no marker: the whole file is checked, with more start-up
    // time asked for before READY.
    daemon.kill9();
    assert!(!marker(&path).exists());
    drop(notify);
    std::fs::remove_file(dir.path().join("notify.sock")).unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    // The check reads the WAL too, and says so (it once said 0.0 MB with 28 MB there).
    let size = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::fs::metadata(name).map_or(0, |m| m.len())
    };
    let checked = format!("{WHOLE} ({:.1} MB", (size("") + size("-wal")) as f64 / 1e6);
    let mut daemon = Daemon::start(dir.path(), &env);
    notify.until("READY=1");
    let log = daemon.log();
    assert!(
        log.contains("no clean-shutdown marker") && log.contains(&checked),
        "{checked}: {log}"
    );
    assert!(log.contains("whole-database check passed"), "{log}");
    assert!(!log.contains(SKIPPED), "{log}");
    let extended = notify
        .position("EXTEND_TIMEOUT_USEC=")
        .expect("more start-up time");
    assert!(
        extended < notify.position("READY=1").unwrap(),
        "{:?}",
        notify.messages
    );
    assert_eq!(daemon.get("/healthz").json()["status"], "ok");

    // A clean stop leaves the marker again.
    assert!(daemon.terminate().success());
    assert!(marker(&path).exists(), "{}", daemon.log());
}

#[test]
fn a_damaged_database_is_refused_with_a_stale_marker_or_without_one() {
    for with_marker in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("galactic_war.db");
        {
            let mut daemon = Daemon::start(dir.path(), &[]);
            assert_eq!(daemon.post("/galaxies/g?seed=1&preset=classic").status, 201);
            assert!(daemon.terminate().success());
        }
        assert!(marker(&path).exists());
        if !with_marker {
            std::fs::remove_file(marker(&path)).unwrap();
        }
        // Garbage over a page in the middle of the file, and a page more: what a torn or
        // misdirected write leaves. The header stays valid.
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        let middle = bytes.len() / page / 2 * page;
        for (i, byte) in bytes[middle..middle + page].iter_mut().enumerate() {
            *byte = (i * 37 % 251) as u8;
        }
        bytes.extend((0..page).map(|i| (i * 13 % 251) as u8));
        std::fs::write(&path, &bytes).unwrap();

        let daemon = Daemon::start(dir.path(), &[]);
        let log = daemon.log();
        let why = if with_marker {
            "the clean-shutdown marker does not match the database (its size changed)"
        } else {
            "no clean-shutdown marker"
        };
        assert!(log.contains(why) && log.contains(WHOLE), "{log}");
        let health = daemon.get("/healthz").json();
        assert_eq!(health["persistence"]["state"], "memory-only", "{health}");
        assert!(!marker(&path).exists(), "a stale marker is removed");
        drop(daemon);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file is untouched"
        );
    }
}
