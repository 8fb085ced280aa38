//! Section 7: start-up to READY (on a notify socket of the bench's own) on a large
//! database built once: after a clean stop (the marker: header and schema only) and after
//! `kill -9` (the whole file checked).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use serde_json::{json, Map, Value};

use crate::daemon::{daemon_command, DAEMON};
use crate::harness::{config, row, settings, Run};

/// Builds a database of `systems` systems (in galaxies of at most 1 000 000) through the
/// library and stops it cleanly, which leaves the clean-shutdown marker.
fn startup_database(path: &Path, systems: u64) {
    let app = AppState::open(&settings(path, |_| {})).expect("opens");
    let mut left = systems;
    for n in 0.. {
        if left == 0 {
            break;
        }
        let size = left.min(1_000_000);
        app.create_galaxy(&format!("start{n}"), config(size, 100), Some(n), 0)
            .expect("created");
        left -= size;
    }
    assert!(app.shutdown().all_saved());
}

/// Starts the daemon on `path` and times it from spawn to READY=1 on a notify socket of
/// its own; the daemon (still running) and that time.
fn start_to_ready(dir: &Path, path: &Path) -> (Child, Duration, String) {
    let socket_path = dir.join("startup-notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("binds");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("a timeout");
    let started = Instant::now();
    let mut daemon = daemon_command(&mut Command::new(DAEMON), dir)
        .env("DATABASE_URL", format!("sqlite:{}", path.display()))
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn()
        .expect("the daemon starts");
    let mut buffer = [0u8; 4096];
    let ready = loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no READY=1 within 10 minutes"
        );
        if let Ok(n) = socket.recv(&mut buffer) {
            if String::from_utf8_lossy(&buffer[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break started.elapsed();
            }
        }
    };
    // The start-up lines, then a thread drains the rest so the daemon never blocks.
    let mut lines = BufReader::new(daemon.stderr.take().expect("piped")).lines();
    let mut log = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        log += &line;
        log.push('\n');
        if line.contains("listening on http://") {
            break;
        }
    }
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    (daemon, ready, log)
}

fn stop_cleanly(mut daemon: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert!(daemon.wait().expect("waits").success(), "a clean stop");
}

/// Start-up to READY after a clean stop (the marker) and after `kill -9` (no marker:
/// the whole file is checked), `rounds` of each; the medians, and the database's size.
fn startup(dir: &Path, systems: u64, rounds: usize) -> (Duration, Duration, u64) {
    let path = dir.join("startup.db");
    startup_database(&path, systems);
    let (mut clean, mut unclean) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (daemon, ready, log) = start_to_ready(dir, &path);
        assert!(log.contains("full check skipped"), "{log}");
        clean.push(ready);
        let mut daemon = daemon;
        daemon.kill().expect("SIGKILL");
        let _ = daemon.wait();
        let (daemon, ready, log) = start_to_ready(dir, &path);
        assert!(log.contains("checking the whole database"), "{log}");
        unclean.push(ready);
        stop_cleanly(daemon);
    }
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    (median(clean), median(unclean), bytes)
}

/// Section 7: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir) = (run.quick, run.dir.as_path());
    let (systems, rounds) = if quick { (200_000, 1) } else { (1_000_000, 3) };
    let (clean, unclean, bytes) = startup(dir, systems, rounds);
    row(
        &format!(
            "7. start-up to READY, {systems} systems ({} MB), after a clean stop",
            bytes / 1_000_000
        ),
        format!("{clean:?}"),
        String::new(),
        None,
        "≤ 1 s",
    );
    row(
        "7. start-up to READY, the same after kill -9 (whole-file check)",
        format!("{unclean:?}"),
        String::new(),
        None,
        "",
    );
    out.insert(
        "startup".into(),
        json!({"systems": systems, "database_bytes": bytes,
               "clean_us": clean.as_micros() as u64, "unclean_us": unclean.as_micros() as u64}),
    );
}
