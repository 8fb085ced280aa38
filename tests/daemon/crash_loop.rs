//! The crash loop: start the real daemon, let several clients order across galaxies,
//! SIGKILL it at a random moment (sometimes during start-up), restart, and check the
//! promises of the README's *What is guaranteed, in plain words* on what survived.
//!
//! `GWAR_CRASH_CYCLES` sets the number of cycles (20 by default, as in CI); a soak run is
//! `GWAR_CRASH_CYCLES=300 cargo test --release --test daemon crash_loop -- --nocapture`.
//!
//! The same loop runs on both stores: `crash_loop` on a SQLite file, `crash_loop_postgres`
//! on a database of the test binary's PostgreSQL cluster (the integrity check there is the
//! daemon's own `check` command: PostgreSQL's transactions are the server's to keep).
//!
//! Each galaxy has one client, so its orders are applied in the order they are
//! acknowledged. Every order costs its system one metal and nothing else changes metal
//! (no production), so the metal stored per system counts the orders that survived, and
//! the checks are exact: the survivors must be a prefix of the galaxy's orders (the
//! consistent cut), may include only orders that were sent, and must include every order
//! acknowledged earlier than the loss window before the kill.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres_cluster::{self as pg, Database};
use crate::util::{
    check_survivors_of, client, sqlite, stored_metal, stored_metal_pg, Daemon, Order, BIN,
    COUNTING_CONFIG,
};

const GALAXIES: [&str; 3] = ["alpha", "beta", "gamma"];
const COALESCING_MS: u64 = 50;
/// Coalescing delay plus one commit, with room for a slow disk on a shared machine.
const LOSS_WINDOW: Duration = Duration::from_millis(COALESCING_MS + 1000);

const ENV: [(&str, &str); 2] = [
    ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "50"),
    ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
];

#[derive(Default)]
struct Tally {
    cycles: u64,
    startup_kills: u64,
    acknowledged: u64,
    lost_inside_window: u64,
}

/// Where the daemon keeps its galaxies, and how the test reads them behind its back.
enum Store<'c> {
    /// `galactic_war.db` in the daemon's working directory (the default `DATABASE_URL`).
    Sqlite(PathBuf),
    Postgres(Database<'c>),
}

impl Store<'_> {
    /// `DATABASE_URL` for the daemon, when not the default.
    fn url(&self) -> Option<String> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(db) => Some(db.url()),
        }
    }

    /// Metal per system of a galaxy, as stored, in (x, y) order; `None` before creation.
    fn stored_metal(&self, galaxy: &str) -> Option<Vec<i64>> {
        match self {
            Store::Sqlite(path) => stored_metal(path, galaxy),
            Store::Postgres(db) => {
                let metal = stored_metal_pg(db, galaxy);
                (!metal.is_empty()).then_some(metal)
            }
        }
    }

    fn assert_integrity(&self) {
        match self {
            Store::Sqlite(path) => assert_integrity(path),
            Store::Postgres(db) => {
                let out = Command::new(BIN)
                    .args(["check", "--database", &db.url()])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "galactic-war check failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

#[test]
fn crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Sqlite(dir.path().join("galactic_war.db"));
    run(dir.path(), &store);
}

#[test]
fn crash_loop_postgres() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &Store::Postgres(cluster.database()));
}

/// The loop, with the daemon in `dir` on `store`.
fn run(dir: &Path, store: &Store<'_>) {
    let cycles: u64 = std::env::var("GWAR_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let url = store.url();
    let mut env: Vec<(&str, &str)> = ENV.to_vec();
    if let Some(url) = &url {
        env.push(("DATABASE_URL", url));
    }
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut random = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    let mut tally = Tally::default();
    // The coordinates of each galaxy's systems, in (x, y) order, once created.
    let mut coords: Vec<Vec<(u64, u64)>> = Vec::new();

    for cycle in 0..cycles {
        tally.cycles += 1;
        if cycle > 0 && cycle % 5 == 0 {
            // A kill during start-up: before, during or after migrations and binding.
            let before: Vec<_> = GALAXIES.iter().map(|g| store.stored_metal(g)).collect();
            let mut child = Command::new(BIN)
                .current_dir(dir)
                .env_remove("DATABASE_URL")
                .env("GWAR_LISTEN", "127.0.0.1:0")
                .env("GWAR_ADMIN_LISTEN", "127.0.0.1:0")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(random(40)));
            child.kill().unwrap();
            child.wait().unwrap();
            tally.startup_kills += 1;
            store.assert_integrity();
            let after: Vec<_> = GALAXIES.iter().map(|g| store.stored_metal(g)).collect();
            assert_eq!(before, after, "a start-up changed stored state");
            continue;
        }

        let mut daemon = Daemon::start(dir, &env);
        let health = daemon.get("/healthz").json();
        assert_eq!(health["status"], "ok", "cycle {cycle}: {health}");
        if coords.is_empty() {
            for galaxy in GALAXIES {
                let created = daemon.request(
                    "POST",
                    &format!("/galaxies/{galaxy}?seed=7"),
                    COUNTING_CONFIG,
                );
                assert_eq!(created.status, 201, "{}", created.body);
                coords.push(crate::util::systems(&daemon, galaxy));
            }
        }
        let baseline: Vec<Vec<i64>> = GALAXIES
            .iter()
            .map(|g| store.stored_metal(g).expect("created"))
            .collect();

        let clients: Vec<_> = GALAXIES
            .iter()
            .zip(&coords)
            .enumerate()
            .map(|(i, (galaxy, systems))| {
                let (addr, systems, seed) =
                    (daemon.addr, systems.clone(), random(u64::MAX) ^ i as u64);
                std::thread::spawn(move || client(addr, galaxy, systems, seed))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200 + random(1300)));
        let killed_at = Instant::now();
        daemon.kill9();
        let histories: Vec<Vec<Order>> = clients.into_iter().map(|c| c.join().unwrap()).collect();

        store.assert_integrity();
        for (g, galaxy) in GALAXIES.iter().enumerate() {
            let survivors = check_survivors_of(
                store.stored_metal(galaxy).expect("still stored"),
                galaxy,
                &baseline[g],
                &histories[g],
                killed_at,
                LOSS_WINDOW,
            );
            let acknowledged = histories[g]
                .iter()
                .filter(|o| o.acknowledged.is_some())
                .count() as u64;
            tally.acknowledged += acknowledged;
            tally.lost_inside_window += acknowledged.saturating_sub(survivors.survived as u64);
        }
    }
    eprintln!(
        "crash loop: {} cycles ({} killed during start-up), {} orders acknowledged, \
         {} lost inside the loss window (allowed), 0 lost outside it",
        tally.cycles, tally.startup_kills, tally.acknowledged, tally.lost_inside_window
    );
    assert!(tally.acknowledged > 0, "no order was ever acknowledged");
}

fn assert_integrity(path: &Path) {
    let result: String = sqlite(path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok");
}
