//! One actor pushes hard on the writer while another must still be served (README, *Configuration*,
//! isolation): a large galaxy created or deleted beside play, with the loss window, the
//! watchdog and shutdown checked for the others.
//!
//! `GWAR_ISOLATION_SYSTEMS` sets the size of the large galaxy (500 000 by default, as in
//! CI: large enough to be unfinished after twice the loss window on a fast machine); a longer run is `GWAR_ISOLATION_SYSTEMS=1000000 cargo test --release --test daemon
//! isolation -- --nocapture`.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::{
    check_survivors, client, parse_reply, raw_exchange_for, sqlite, stored_metal, systems,
    wait_for, Daemon, Order, COUNTING_CONFIG,
};

const TOKEN: &str = "isolation-token";
const COALESCING_MS: u64 = 200;
/// Coalescing delay plus one commit, with room for a slow disk on a shared machine (as in
/// the crash loop).
const LOSS_WINDOW: Duration = Duration::from_millis(COALESCING_MS + 1000);

fn large_systems() -> u64 {
    std::env::var("GWAR_ISOLATION_SYSTEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000)
}

/// A cheap galaxy of `systems` systems: one structure each.
fn large_config(systems: u64) -> String {
    let side = (systems as f64).sqrt().ceil() as u64 * 2;
    format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.structures.colony]\nstarting_level = 1\n"
    )
}

fn env(socket: Option<&str>) -> Vec<(&str, &str)> {
    let mut env = vec![
        ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "200"),
        ("GWAR_ADMIN_TOKEN", TOKEN),
        ("RUST_LOG", "info,galactic_war::persistence=debug"),
    ];
    if let Some(socket) = socket {
        env.extend([("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", "400000")]);
    }
    env
}

/// Starts creating the large galaxy `name` as an admin caller, on a thread of its own
/// (the request returns only when the creation is done); the HTTP status.
fn create_large(daemon: &Daemon, name: &str) -> std::thread::JoinHandle<u16> {
    let addr = daemon.addr;
    let name = name.to_owned();
    let body = large_config(large_systems());
    std::thread::spawn(move || {
        let auth = format!("Bearer {TOKEN}");
        let request = format!(
            "POST /galaxies/{name}?seed=5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Authorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let reply = raw_exchange_for(addr, request.as_bytes(), Duration::from_secs(600));
        if reply.is_empty() {
            return 0; // the connection closed without an answer
        }
        parse_reply(&reply).status
    })
}

/// Systems of `galaxy` stored so far, and whether its creation or deletion is unfinished.
fn stored_progress(path: &std::path::Path, galaxy: &str) -> (i64, bool) {
    let conn = sqlite(path);
    let systems = conn
        .query_row(
            "SELECT count(*) FROM systems WHERE galaxy_name = ?1",
            [galaxy],
            |r| r.get(0),
        )
        .unwrap();
    let unfinished = conn
        .query_row(
            "SELECT count(*) FROM galaxy_jobs WHERE name = ?1",
            [galaxy],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    (systems, unfinished > 0)
}

/// Watchdog pings received on `socket` until `stop`, with their arrival times.
fn collect_pings(
    socket: UnixDatagram,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Instant>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut pings = Vec::new();
        let mut buffer = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            if let Ok(n) = socket.recv(&mut buffer) {
                if String::from_utf8_lossy(&buffer[..n])
                    .lines()
                    .any(|l| l == "WATCHDOG=1")
                {
                    pings.push(Instant::now());
                }
            }
        }
        pings
    })
}

#[test]
fn a_large_creation_beside_play_keeps_the_loss_window_and_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut daemon = Daemon::start(dir.path(), &env(Some(socket_path.to_str().unwrap())));
    let path = daemon.database();
    // Two galaxies in play, one client each, so each galaxy's orders have one order.
    let played = ["play1", "play2"];
    let mut coords = Vec::new();
    for galaxy in played {
        let created = daemon.request(
            "POST",
            &format!("/galaxies/{galaxy}?seed=7"),
            COUNTING_CONFIG,
        );
        assert_eq!(created.status, 201, "{}", created.body);
        coords.push(systems(&daemon, galaxy));
    }
    let baselines: Vec<Vec<i64>> = played
        .iter()
        .map(|g| stored_metal(&path, g).expect("created"))
        .collect();
    let clients: Vec<_> = played
        .iter()
        .zip(&coords)
        .enumerate()
        .map(|(i, (galaxy, coords))| {
            let (addr, galaxy, coords) = (daemon.addr, *galaxy, coords.clone());
            std::thread::spawn(move || client(addr, galaxy, coords, 0x5EED ^ i as u64))
        })
        .collect();
    let stop_pings = Arc::new(AtomicBool::new(false));
    let pings = collect_pings(socket, stop_pings.clone());

    let creation = create_large(&daemon, "huge");
    assert!(
        wait_for(Duration::from_secs(120), || stored_progress(&path, "huge")
            .0
            > 0),
        "the creation began"
    );
    let began = Instant::now();
    // Let the creation and the orders run side by side well past the loss window, then
    // kill the daemon while the creation is still unfinished.
    let total = large_systems() as i64;
    wait_for(LOSS_WINDOW * 2, || {
        stored_progress(&path, "huge").0 >= total * 4 / 5
    });
    let (written, unfinished) = stored_progress(&path, "huge");
    let killed_at = Instant::now();
    daemon.kill9();
    let ran_beside = killed_at - began;
    stop_pings.store(true, Ordering::SeqCst);
    let pings = pings.join().unwrap();
    let histories: Vec<Vec<Order>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(
        creation.join().unwrap(),
        0,
        "no answer: the daemon was killed"
    );
    assert!(
        unfinished && written < total,
        "the kill came while the creation was unfinished ({written} of {total} written)"
    );

    // The watchdog kept being pinged while the creation ran (period 200 ms).
    let in_creation: Vec<Instant> = pings
        .into_iter()
        .filter(|t| *t >= began && *t <= killed_at)
        .collect();
    let longest_gap = in_creation
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain(in_creation.first().map(|first| *first - began))
        .chain(in_creation.last().map(|last| killed_at - *last))
        .max()
        .unwrap_or(ran_beside);
    assert!(
        longest_gap < Duration::from_secs(2),
        "the watchdog went {longest_gap:?} without a ping during the creation"
    );

    let integrity: String = sqlite(&path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    for ((galaxy, baseline), orders) in played.iter().zip(&baselines).zip(&histories) {
        let must_survive =
            check_survivors(&path, galaxy, baseline, orders, killed_at, LOSS_WINDOW).must_survive;
        assert!(
            must_survive > 0,
            "{galaxy}: orders were acknowledged during the creation"
        );
        eprintln!(
            "{galaxy}: creation ran {ran_beside:?} beside play ({written} of {total} systems \
             written); {must_survive} orders acknowledged before the loss window, all stored"
        );
    }

    // After a restart the unfinished galaxy does not exist, and its rows go.
    let daemon = Daemon::start(dir.path(), &env(None));
    assert_eq!(daemon.get("/galaxies/huge").status, 404);
    let listed = daemon.get("/galaxies").json();
    assert!(
        !listed.to_string().contains("huge"),
        "the unfinished galaxy is not listed: {listed}"
    );
    assert!(
        wait_for(Duration::from_secs(120), || stored_progress(&path, "huge")
            == (0, false)),
        "the unfinished creation's rows are removed"
    );
    assert!(
        daemon.log().contains("creation was interrupted"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        daemon.order("play1", coords[0][0], "colony").status,
        201,
        "play goes on"
    );
}

#[test]
fn a_deletion_is_on_disk_within_the_loss_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &env(None));
    let path = daemon.database();
    // Large enough that removing its rows takes many chunks.
    let config = large_config(20_000);
    let auth = format!("Bearer {TOKEN}");
    let created = daemon.request_with(
        "POST",
        "/galaxies/doomed?seed=1",
        &[("Authorization", &auth)],
        config.as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        daemon
            .request("POST", "/galaxies/play?seed=7", COUNTING_CONFIG)
            .status,
        201
    );
    let deleted = daemon.admin_request_with(
        "DELETE",
        "/galaxies/doomed",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    // No save, no waiting for the auto-save interval (30 s): the loss window, then a crash.
    std::thread::sleep(LOSS_WINDOW);
    daemon.kill9();

    let daemon = Daemon::start(dir.path(), &env(None));
    assert_eq!(
        daemon.get("/galaxies/doomed").status,
        404,
        "it stays deleted"
    );
    assert_eq!(daemon.get("/galaxies/play").status, 200);
    assert!(
        wait_for(Duration::from_secs(60), || stored_progress(&path, "doomed")
            == (0, false)),
        "its rows are removed"
    );
    // The name is free again.
    assert_eq!(daemon.post("/galaxies/doomed?seed=2").status, 201);
}

#[test]
fn shutdown_during_a_large_creation_stops_it_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &env(None));
    let path = daemon.database();
    assert_eq!(
        daemon
            .request("POST", "/galaxies/play?seed=7", COUNTING_CONFIG)
            .status,
        201
    );
    let (x, y) = systems(&daemon, "play")[0];
    let creation = create_large(&daemon, "huge");
    assert!(
        wait_for(Duration::from_secs(120), || stored_progress(&path, "huge")
            .0
            > 0),
        "the creation began"
    );
    assert_eq!(daemon.order("play", (x, y), "colony").status, 201);
    daemon.signal("INT");
    let status = daemon.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "everything acknowledged was saved; log:\n{}",
        daemon.log()
    );
    let answer = creation.join().unwrap();
    assert!(
        answer == 503 || answer == 0,
        "the creation was not reported done (status {answer})"
    );
    let (_, unfinished) = stored_progress(&path, "huge");
    assert!(unfinished, "the creation stopped before its end");

    let daemon = Daemon::start(dir.path(), &env(None));
    assert_eq!(daemon.get("/galaxies/huge").status, 404, "not kept");
    assert!(
        wait_for(Duration::from_secs(120), || stored_progress(&path, "huge")
            == (0, false)),
        "its rows are removed"
    );
    let system = daemon
        .get(&format!("/galaxies/play/systems/{x}/{y}"))
        .json();
    assert_eq!(
        system["structures"]["colony"], 2,
        "the order was saved: {system}"
    );
}

#[test]
fn public_callers_may_not_create_past_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("GWAR_MAX_GALAXY_SYSTEMS", "1000"),
            ("GWAR_MAX_GALAXIES", "2"),
            ("GWAR_ADMIN_TOKEN", TOKEN),
        ],
    );
    let config = large_config(1_001);
    let refused = daemon.request("POST", "/galaxies/big", &config);
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("GWAR_MAX_GALAXY_SYSTEMS"),
        "{}",
        refused.body
    );
    assert_eq!(
        daemon.get("/galaxies/big").status,
        404,
        "nothing was created"
    );
    let auth = format!("Bearer {TOKEN}");
    let admin = daemon.request_with(
        "POST",
        "/galaxies/big",
        &[("Authorization", &auth)],
        config.as_bytes(),
    );
    assert_eq!(
        admin.status, 201,
        "the admin token lifts the limit: {}",
        admin.body
    );
    assert_eq!(daemon.post("/galaxies/second").status, 201);
    let third = daemon.post("/galaxies/third");
    assert_eq!(third.status, 422, "{}", third.body);
    assert!(third.json()["error"]
        .as_str()
        .unwrap()
        .contains("GWAR_MAX_GALAXIES"));
    let deleted = daemon.admin_request_with(
        "DELETE",
        "/galaxies/second",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(deleted.status, 204);
    assert_eq!(
        daemon.post("/galaxies/third").status,
        201,
        "a deletion frees a place"
    );
}

#[test]
fn health_reads_lagging_while_a_backlog_ages() {
    let dir = tempfile::tempdir().unwrap();
    // Coalescing 50 ms: lagging after 1 s (five delays, at least a second).
    let daemon = Daemon::start(
        dir.path(),
        &[("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "50")],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let (x, y) = systems(&daemon, "g")[0];
    // Another process holds the write lock: the batch waits (up to SQLite's 5 s busy
    // timeout) before it fails, and meanwhile the order's change ages.
    let locker = sqlite(&daemon.database());
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert_eq!(daemon.order("g", (x, y), "hatchery").status, 201);
    let mut seen = Vec::new();
    let lagging = wait_for(Duration::from_secs(20), || {
        let health = daemon.get("/healthz").json();
        seen.push(
            health["persistence"]["state"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
        health["persistence"]["state"] == "lagging" && health["status"] == "degraded"
    });
    locker.execute_batch("ROLLBACK").unwrap();
    assert!(lagging, "states seen: {seen:?}");
    assert!(
        wait_for(Duration::from_secs(30), || {
            let health = daemon.get("/healthz").json();
            health["persistence"]["state"] == "healthy"
                && health["persistence"]["dirty_systems"] == 0
                && health["persistence"]["last_error"].is_null()
        }),
        "healthy again once saved, with no error left over: {}",
        daemon.get("/healthz").body
    );
}

#[test]
fn shutdown_with_a_locked_database_keeps_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            ("GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT", "1"),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
        ],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let (x, y) = systems(&daemon, "g")[0];
    let locker = sqlite(&daemon.database());
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert_eq!(daemon.order("g", (x, y), "hatchery").status, 201);
    // The batch is now waiting on the lock, for up to SQLite's 5 s busy timeout.
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(30));
    let took = signalled.elapsed();
    locker.execute_batch("ROLLBACK").unwrap();
    assert!(!status.success(), "an order was not saved");
    // 1 s of flush; without the deadline reaching the busy wait, about 5.
    assert!(
        took < Duration::from_millis(3_500),
        "the shutdown took {took:?} with a 1 s timeout; log:\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("galaxy 'g': 1 systems were not saved"),
        "{}",
        daemon.log()
    );
}
