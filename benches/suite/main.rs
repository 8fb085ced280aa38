//! The benchmark suite: the engine against floors written here, side by side in one run.
//!
//! `cargo bench` for the full run, `cargo bench -- --quick` for a smaller one that
//! finishes in under two minutes. Prints a table of ratios (absolute numbers as context) and
//! one JSON object on the last line.
//!
//! Floors are what plain rusqlite does with no engine at all: the same schema (the
//! project's own migration), the same pragmas, prepared statements, cached row ids, one
//! transaction per batch. Section 10's floors on PostgreSQL are the same on the `postgres`
//! crate: the project's PostgreSQL migrations, set-based statements (arrays expanded by
//! `unnest`, one statement per table) prepared once, one transaction per batch, on a
//! throwaway cluster of the bench's own with `fsync` and `synchronous_commit` on (the
//! tests' harness, `tests/common/postgres.rs`); without PostgreSQL the section is skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::{Galaxy, GalaxyConfig, StructureKind, System};
use galactic_war::settings::CHECKPOINT_PAGES;
use galactic_war::settings::{AdminListen, DatabaseUrl, PersistenceSettings, Settings};
use galactic_war::testing::{AppInternals, ReadStore, SqliteReader, WRITER_PRAGMAS};
use rusqlite::{params, Connection};
use serde_json::{json, Value};

/// The tests' throwaway PostgreSQL cluster, for section 10 (started with `fsync` on).
#[path = "../../tests/common/postgres.rs"]
mod pg_cluster;

const SCHEMA: &str = include_str!("../../sql/sqlite/0001_initial.sql");
const KINDS: [StructureKind; 5] = StructureKind::ALL;

/// Every structure configured; builds complete after `build_time` ticks.
fn config(systems: u64, build_time: u64) -> GalaxyConfig {
    let side = ((systems as f64).sqrt().ceil() as u64) * 2;
    let mut text = format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.resources]\nmetal = 1000000000\ncrew = 1000000000\nwater = 1000000000\n"
    );
    for kind in KINDS {
        text += &format!(
            "[systems.structures.{kind}]\nstarting_level = 1\nmultiplier = 1.0\n\
             [systems.structures.{kind}.production]\nmetal = 10\n\
             [systems.structures.{kind}.storage]\nmetal = 1000000000000\n\
             [systems.structures.{kind}.cost]\nmetal = 1\ncrew = 1\nwater = 1\ntime = {build_time}\n"
        );
    }
    GalaxyConfig::from_toml(&text).expect("valid").0
}

fn settings(path: &Path, tweak: impl FnOnce(&mut PersistenceSettings)) -> Settings {
    let mut persistence = PersistenceSettings {
        coalescing_delay: Duration::from_secs(3600),
        auto_save_interval: Duration::from_secs(3600),
        ..PersistenceSettings::default()
    };
    tweak(&mut persistence);
    Settings {
        database: DatabaseUrl::File(path.to_path_buf()),
        persistence,
        listen: "127.0.0.1:0".parse().expect("valid"),
        admin_listen: AdminListen::Tcp("127.0.0.1:0".parse().unwrap()),
        ..Settings::default()
    }
}

fn coords(app: &AppState, name: &str) -> Vec<(u64, u64)> {
    app.galaxy_copy(name)
        .expect("exists")
        .systems()
        .iter()
        .map(|s| (u64::from(s.x), u64::from(s.y)))
        .collect()
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------------------------------
// The raw-rusqlite floor.

struct Floor {
    conn: Connection,
    galaxy: String,
    ids: Vec<i64>,
}

impl Floor {
    /// A fresh database holding `galaxy` exactly as the engine stores it.
    fn create(path: &Path, galaxy: &Galaxy) -> Floor {
        let mut conn = Connection::open(path).expect("opens");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .expect("pragmas");
        // The engine's writer's pragmas, exactly, and SQLite's automatic checkpoint at the
        // size at which the engine's writer asks its checkpoint thread for one.
        conn.execute_batch(WRITER_PRAGMAS).expect("cache");
        conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES};"))
            .expect("checkpoint threshold");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn.execute_batch(SCHEMA).expect("schema");
        let tx = conn.transaction().expect("tx");
        tx.execute(
            "INSERT INTO galaxies (name, config_file, tick) VALUES (?1, ?2, 0)",
            params![galaxy.name(), galaxy.config().to_toml()],
        )
        .expect("galaxy");
        let mut ids = Vec::with_capacity(galaxy.systems().len());
        for system in galaxy.systems() {
            tx.execute(
                "INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick) VALUES (?1, ?2, ?3, 0, 0, 0, 0)",
                params![galaxy.name(), system.x, system.y],
            )
            .expect("system");
            let id = tx.last_insert_rowid();
            for kind in KINDS {
                tx.execute(
                    "INSERT INTO structures (system_id, structure_type, level) VALUES (?1, ?2, 1)",
                    params![id, kind.as_str()],
                )
                .expect("structure");
            }
            ids.push(id);
        }
        tx.commit().expect("commit");
        Floor {
            conn,
            galaxy: galaxy.name().to_owned(),
            ids,
        }
    }

    /// Writes full systems in one transaction with the plain statements of a
    /// save-everything design: one system upsert, five structure upserts (by cached system
    /// id), delete and insert of its event.
    fn save_full(&mut self, systems: &[(usize, &System)]) {
        let tx = self.conn.transaction().expect("tx");
        {
            let mut update = tx
                .prepare_cached(
                    "INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (galaxy_name, x, y) DO UPDATE SET metal = excluded.metal,
                     crew = excluded.crew, water = excluded.water,
                     current_tick = excluded.current_tick, updated_at = CURRENT_TIMESTAMP",
                )
                .expect("prepare");
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO structures (system_id, structure_type, level) VALUES (?1, ?2, ?3)
                     ON CONFLICT (system_id, structure_type) DO UPDATE SET level = excluded.level, updated_at = CURRENT_TIMESTAMP",
                )
                .expect("prepare");
            let mut delete = tx
                .prepare_cached("DELETE FROM events WHERE system_id = ?1")
                .expect("prepare");
            let mut insert = tx
                .prepare_cached("INSERT INTO events (system_id, completion_tick, action_type, structure_type) VALUES (?1, ?2, 'build', ?3)")
                .expect("prepare");
            for (index, system) in systems {
                let id = self.ids[*index];
                let r = system.resources;
                update
                    .execute(params![
                        self.galaxy,
                        system.x,
                        system.y,
                        r.metal as i64,
                        r.crew as i64,
                        r.water as i64,
                        system.tick as i64
                    ])
                    .expect("upsert");
                for kind in KINDS {
                    upsert
                        .execute(params![id, kind.as_str(), system.levels[kind.index()]])
                        .expect("upsert");
                }
                delete.execute([id]).expect("delete");
                if let Some(build) = system.build {
                    insert
                        .execute(params![
                            id,
                            build.completion_tick as i64,
                            build.structure.as_str()
                        ])
                        .expect("insert");
                }
            }
        }
        tx.commit().expect("commit");
    }
}

// ---------------------------------------------------------------------------------------
// 1. Save throughput, every row changed.

struct SaveResult {
    batch: u64,
    engine: f64,
    floor: f64,
}

fn save_throughput(dir: &Path, batch: u64, rounds: u64) -> SaveResult {
    let engine_db = dir.join(format!("save-engine-{batch}.db"));
    let (engine, galaxy) = engine_save(&settings(&engine_db, |_| {}), batch, rounds);

    let mut floor = Floor::create(&dir.join(format!("save-floor-{batch}.db")), &galaxy);
    let mut systems: Vec<System> = galaxy.systems().to_vec();
    let started = Instant::now();
    for round in 0..rounds {
        for system in &mut systems {
            system.resources.metal = round;
        }
        let rows: Vec<(usize, &System)> = systems.iter().enumerate().collect();
        floor.save_full(&rows);
    }
    let floor = per_sec(batch * rounds, started.elapsed());
    SaveResult {
        batch,
        engine,
        floor,
    }
}

/// The engine's side of section 1 (and 10), on the store `settings` names: systems/s
/// saving every row of a `batch`-system galaxy `rounds` times, and the galaxy as saved.
fn engine_save(settings: &Settings, batch: u64, rounds: u64) -> (f64, Galaxy) {
    let name = "save";
    let app = save_app(settings, name, batch);
    let started = Instant::now();
    for _ in 0..rounds {
        app.rewrite_galaxy(name).expect("marked");
        app.save_all().expect("saved");
    }
    let engine = per_sec(batch * rounds, started.elapsed());
    (engine, app.galaxy_copy(name).expect("exists"))
}

// ---------------------------------------------------------------------------------------
// 2. Order throughput: the same order stream, persisted in batches.

fn order_throughput(dir: &Path, systems: u64, orders: u64, batch: u64) -> (f64, f64) {
    let stream = order_stream(systems, orders);
    let engine_db = dir.join(format!("orders-engine-{batch}.db"));
    let (engine, places) = engine_orders(&settings(&engine_db, |_| {}), systems, &stream, batch);

    let mut galaxy = orders_galaxy(systems);
    let mut floor = Floor::create(&dir.join(format!("orders-floor-{batch}.db")), &galaxy);
    galaxy.take_changes();
    let started = Instant::now();
    for chunk in stream.chunks(batch as usize) {
        for &(tick, index, kind) in chunk {
            let (x, y) = places[index];
            let _ = galaxy.build(tick, x, y, kind);
        }
        let changed = galaxy.take_changes();
        let rows: Vec<(usize, &System)> = changed
            .iter()
            .map(|(index, _)| (index as usize, galaxy.system(index).expect("exists")))
            .collect();
        floor.save_full(&rows);
    }
    let floor = per_sec(orders, started.elapsed());
    (engine, floor)
}

/// An app on the store `settings` names holding galaxy `name` of `batch` systems, saved,
/// every system with a build in flight, so that every row (system, five structures, event)
/// exists and a save with every row changed rewrites them all.
fn save_app(settings: &Settings, name: &str, batch: u64) -> AppState {
    let app = AppState::open(settings).expect("opens");
    app.create_galaxy(name, config(batch, 1_000_000), Some(batch), 0)
        .expect("created");
    for (x, y) in coords(&app, name) {
        app.build(name, 1, x, y, StructureKind::Hatchery)
            .expect("affordable");
    }
    app.save_all().expect("saved");
    app
}

/// The order stream of sections 2 and 10: (tick, system index, structure), reproducible.
fn order_stream(systems: u64, orders: u64) -> Vec<(u64, usize, StructureKind)> {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    (0..orders)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (
                10 + i / 20,
                (rng % systems) as usize,
                KINDS[(rng >> 32) as usize % 5],
            )
        })
        .collect()
}

const ORDERS_GALAXY: &str = "orders";
const ORDERS_SEED: u64 = 7;

/// The galaxy the order stream plays on, as the engine creates it (same config and seed).
fn orders_galaxy(systems: u64) -> Galaxy {
    Galaxy::create(ORDERS_GALAXY, config(systems, 300), ORDERS_SEED, 0).expect("created")
}

/// The engine's side of sections 2 and 10: orders/s placing `stream` and saving after
/// every `batch` orders, on the store `settings` names; and the systems' coordinates.
fn engine_orders(
    settings: &Settings,
    systems: u64,
    stream: &[(u64, usize, StructureKind)],
    batch: u64,
) -> (f64, Vec<(u64, u64)>) {
    let app = AppState::open(settings).expect("opens");
    orders_in(&app, systems, stream, batch, || {})
}

/// Creates the orders galaxy of `systems` systems in `app`, runs `before` (not timed),
/// then places `stream` saving after every `batch` orders: orders/s, and the systems'
/// coordinates.
fn orders_in(
    app: &AppState,
    systems: u64,
    stream: &[(u64, usize, StructureKind)],
    batch: u64,
    before: impl FnOnce(),
) -> (f64, Vec<(u64, u64)>) {
    let name = ORDERS_GALAXY;
    app.create_galaxy(name, config(systems, 300), Some(ORDERS_SEED), 0)
        .expect("created");
    let places = coords(app, name);
    before();
    let started = Instant::now();
    for chunk in stream.chunks(batch as usize) {
        for &(tick, index, kind) in chunk {
            let (x, y) = places[index];
            // Refusals (a build already in flight) are part of a realistic mix.
            let _ = app.build(name, tick, x, y, kind);
        }
        app.save_all().expect("saved");
    }
    (per_sec(stream.len() as u64, started.elapsed()), places)
}

// ---------------------------------------------------------------------------------------
// 3. The game path.

/// Orders/s (`reads` false) or reads/s on two threads, each on its own galaxy, counted
/// over `window` after `warm_up`, with the threads already running.
fn game_path(app: &AppState, reads: bool, warm_up: Duration, window: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = ["g0", "g1"]
        .into_iter()
        .map(|name| {
            let (app, stop, done) = (app.clone(), stop.clone(), done.clone());
            let places = coords(&app, name);
            std::thread::spawn(move || {
                let mut next = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let (x, y) = places[next % places.len()];
                        if reads {
                            app.system_details(name, 10, x, y).expect("read");
                        } else {
                            app.build(name, 10, x, y, StructureKind::Colony)
                                .expect("order");
                        }
                        next += 1;
                    }
                    done.fetch_add(64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    rate_in_window(&done, &stop, threads, warm_up, window)
}

/// `done`'s increase per second over `window`, counted after `warm_up` with `threads`
/// already running; then `stop` ends them.
fn rate_in_window(
    done: &AtomicU64,
    stop: &AtomicBool,
    threads: Vec<JoinHandle<()>>,
    warm_up: Duration,
    window: Duration,
) -> f64 {
    std::thread::sleep(warm_up);
    let (before, started) = (done.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(window);
    let (after, elapsed) = (done.load(Ordering::Relaxed), started.elapsed());
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("joins");
    }
    per_sec(after - before, elapsed)
}

/// Saves what `app` has pending (nothing without persistence), so that no save of one
/// measurement's orders runs during the next measurement.
fn settle(app: &AppState) {
    if let Some(writer) = app.writer() {
        writer.flush(None).expect("saved");
    }
}

/// Nanoseconds per order on one thread, one galaxy.
fn order_cost_ns(app: &AppState, orders: u64) -> f64 {
    let places = coords(app, "g0");
    let started = Instant::now();
    for i in 0..orders {
        let (x, y) = places[i as usize % places.len()];
        app.build("g0", 10, x, y, StructureKind::Colony)
            .expect("order");
    }
    started.elapsed().as_nanos() as f64 / orders as f64
}

fn game_app(path: &Path, enabled: bool, systems: u64) -> AppState {
    let app = AppState::open(&settings(path, |s| {
        s.enabled = enabled;
        s.coalescing_delay = Duration::from_millis(1000);
        s.auto_save_interval = Duration::from_secs(30);
    }))
    .expect("opens");
    for name in ["g0", "g1"] {
        // Builds complete at once, so every order succeeds.
        app.create_galaxy(name, config(systems, 0), Some(3), 0)
            .expect("created");
    }
    app
}

/// Order latencies on `play` over `duration`.
fn latencies(app: &AppState, duration: Duration) -> Vec<Duration> {
    let until = Instant::now() + duration;
    latencies_while(app, || Instant::now() < until)
}

/// Order latencies on `play`, sorted, for as long as `going` says.
fn latencies_while(app: &AppState, mut going: impl FnMut() -> bool) -> Vec<Duration> {
    let places = coords(app, "play");
    let mut samples = Vec::new();
    let mut i = 0;
    while going() {
        let (x, y) = places[i % places.len()];
        let started = Instant::now();
        app.build("play", 10, x, y, StructureKind::Colony)
            .expect("order");
        samples.push(started.elapsed());
        i += 1;
    }
    samples.sort();
    samples
}

struct LatencyResult {
    idle_p50: Duration,
    idle_p99: Duration,
    saving_p50: Duration,
    saving_p99: Duration,
    save_duration: Duration,
    lock_hold_large: Duration,
    lock_hold_small_in_large: Duration,
    lock_hold_small_alone: Duration,
}

fn latency_during_save(dir: &Path, large: u64) -> LatencyResult {
    let app = AppState::open(&settings(&dir.join("latency.db"), |_| {})).expect("opens");
    app.create_galaxy("big", config(large, 0), Some(1), 0)
        .expect("created");
    app.create_galaxy("play", config(1000, 0), Some(2), 0)
        .expect("created");
    app.create_galaxy("small", config(1000, 0), Some(3), 0)
        .expect("created");
    let idle = latencies(&app, Duration::from_millis(500));

    app.rewrite_galaxy("big").expect("marked");
    let saver = {
        let app = app.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            app.save_all().expect("saved");
            started.elapsed()
        })
    };
    // Sample only while the save runs.
    let saving = latencies_while(&app, || !saver.is_finished());
    let save_duration = saver.join().expect("joins");
    let lock_hold_large = Duration::from_micros(app.metrics().last_lock_hold_micros);

    // The same 1000 dirty systems, in a galaxy of `large` systems and in one of 1000.
    let hold_for = |name: &str, count: usize| {
        for (x, y) in coords(&app, name).into_iter().take(count) {
            app.build(name, 10, x, y, StructureKind::Colony)
                .expect("order");
        }
        app.save_all().expect("saved");
        Duration::from_micros(app.metrics().last_lock_hold_micros)
    };
    let lock_hold_small_in_large = hold_for("big", 1000);
    let lock_hold_small_alone = hold_for("small", 1000);
    LatencyResult {
        idle_p50: percentile(&idle, 0.5),
        idle_p99: percentile(&idle, 0.99),
        saving_p50: percentile(&saving, 0.5),
        saving_p99: percentile(&saving, 0.99),
        save_duration,
        lock_hold_large,
        lock_hold_small_in_large,
        lock_hold_small_alone,
    }
}

// ---------------------------------------------------------------------------------------
// 4. Load, and database bytes per system.

fn load(dir: &Path, systems: u64) -> (Duration, Duration, f64) {
    let path = dir.join("load.db");
    {
        let app = AppState::open(&settings(&path, |_| {})).expect("opens");
        app.create_galaxy("load", config(systems, 100), Some(1), 0)
            .expect("created");
        // Half the systems with a build in flight, as in a game under way.
        for (i, (x, y)) in coords(&app, "load").into_iter().enumerate() {
            if i % 2 == 0 {
                app.build("load", 1, x, y, StructureKind::Hatchery)
                    .expect("order");
            }
        }
        assert!(app.shutdown().all_saved());
    }
    let bytes = std::fs::metadata(&path).expect("exists").len() as f64 / systems as f64;
    let reader = SqliteReader::open(&path).expect("reader");
    let mut engine = Vec::new();
    let mut floor = Vec::new();
    let conn = Connection::open(&path).expect("opens");
    for _ in 0..3 {
        let started = Instant::now();
        let galaxy = reader.load_galaxy("load").expect("loads").expect("stored");
        engine.push(started.elapsed());
        assert_eq!(galaxy.systems().len() as u64, systems);
        let started = Instant::now();
        let loaded = floor_load(&conn);
        floor.push(started.elapsed());
        assert_eq!(loaded.len() as u64, systems);
    }
    engine.sort();
    floor.sort();
    (engine[1], floor[1], bytes)
}

/// Plain table scans without joins, grouped in Rust.
fn floor_load(conn: &Connection) -> Vec<System> {
    let mut systems = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    let mut stmt = conn
        .prepare("SELECT id, x, y, metal, crew, water, current_tick FROM systems")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let id: i64 = row.get(0).expect("id");
        index_of.insert(id, systems.len());
        systems.push(System {
            x: row.get(1).expect("x"),
            y: row.get(2).expect("y"),
            resources: galactic_war::model::Resources {
                metal: row.get::<_, i64>(3).expect("metal") as u64,
                crew: row.get::<_, i64>(4).expect("crew") as u64,
                water: row.get::<_, i64>(5).expect("water") as u64,
            },
            tick: row.get::<_, i64>(6).expect("tick") as u64,
            levels: [0; 5],
            build: None,
        });
    }
    let mut stmt = conn
        .prepare("SELECT system_id, structure_type, level FROM structures")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let index = index_of[&row.get::<_, i64>(0).expect("id")];
        let kind: StructureKind = row
            .get::<_, String>(1)
            .expect("type")
            .parse()
            .expect("kind");
        systems[index].levels[kind.index()] = row.get(2).expect("level");
    }
    let mut stmt = conn
        .prepare("SELECT system_id, completion_tick, structure_type FROM events")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let index = index_of[&row.get::<_, i64>(0).expect("id")];
        systems[index].build = Some(galactic_war::model::Build {
            completion_tick: row.get::<_, i64>(1).expect("tick") as u64,
            structure: row
                .get::<_, String>(2)
                .expect("type")
                .parse()
                .expect("kind"),
        });
    }
    systems.sort_by_key(System::coords);
    systems
}

// ---------------------------------------------------------------------------------------
// 5. Memory.

fn resident_bytes() -> u64 {
    resident_bytes_of("self")
}

/// VmRSS of process `pid` (a number, or `self`), in bytes.
fn resident_bytes_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident bytes per system of a galaxy of `systems`, measured in a fresh process (this
/// one has allocated and freed plenty by now, which would hide the growth), with
/// persistence on (as the daemon runs) or off (the galaxy alone).
fn memory_per_system(dir: &Path, systems: u64, persistence: bool) -> f64 {
    let mut args = vec!["--memory".to_owned(), systems.to_string()];
    if persistence {
        args.push(dir.join("memory.db").display().to_string());
    }
    let output = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .output()
        .expect("runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a number")
}

/// The child side of [`memory_per_system`]: creates the galaxy, saved to `database` if
/// given, and prints bytes/system.
fn measure_memory(systems: u64, database: Option<&str>) {
    let before = resident_bytes();
    let app = match database {
        Some(path) => AppState::open(&settings(Path::new(path), |_| {})).expect("opens"),
        None => AppState::without_engine(galactic_war::app::PersistenceState::Disabled, None),
    };
    app.create_galaxy("memory", config(systems, 100), Some(1), 0)
        .expect("created");
    let after = resident_bytes();
    assert_eq!(
        app.galaxy_copy("memory").expect("exists").systems().len() as u64,
        systems
    );
    println!("{}", (after.saturating_sub(before)) as f64 / systems as f64);
}

// ---------------------------------------------------------------------------------------
// 7. Start-up to READY on a large database.

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
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_galactic-war"))
        .current_dir(dir)
        .env_clear()
        .env("DATABASE_URL", format!("sqlite:{}", path.display()))
        .env("GWAR_LISTEN", "127.0.0.1:0")
        .env("GWAR_ADMIN_LISTEN", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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

// ---------------------------------------------------------------------------------------
// 6. HTTP over loopback.

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
fn http_load(
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
fn read_reply(reader: &mut impl BufRead) -> u16 {
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
struct Served {
    daemon: Child,
    addr: SocketAddr,
    /// The admin listener, for `/metrics`.
    admin: SocketAddr,
    get: Arc<Vec<String>>,
    post: Arc<Vec<String>>,
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
fn serve(dir: &Path, label: &str, enabled: bool, env: &[(&str, &str)]) -> Served {
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_galactic-war"))
        .current_dir(dir)
        // Only what is set here: nothing from the caller's environment tunes the servers.
        .env_clear()
        .env("DATABASE_URL", format!("sqlite:http-{label}.db"))
        .env("GWAR_PERSISTENCE_ENABLED", enabled.to_string())
        .env("GWAR_LISTEN", "127.0.0.1:0")
        .env("GWAR_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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
fn exchange(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
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

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The median of `samples[i] / reference[i]`: ratios of measurements taken within one
/// round, seconds apart, so that the machine's slower and faster spells cancel out.
fn paired_ratio(samples: &[f64], reference: &[f64]) -> f64 {
    median(samples.iter().zip(reference).map(|(a, b)| a / b).collect())
}

/// Per route (`[GET, POST]`): the median req/s of each server, and the medians of the
/// ratios on/off and control/off taken within each round.
struct HttpResult {
    on: [f64; 2],
    off: [f64; 2],
    /// A second server with persistence off. Its ratio to `off` is what the measurement
    /// reads for two identical servers, i.e. its resolution.
    control: [f64; 2],
    on_ratio: [f64; 2],
    control_ratio: [f64; 2],
}

/// GET and POST req/s with persistence on, off, and off again (the control): `rounds`
/// rounds, each measuring every server on both routes, the servers taking turns at going
/// first; ratios paired within rounds.
///
/// The clients saturate the server (16 connections, as many as it has workers): with only
/// a few synchronous clients on two cores, throughput is set by scheduling luck (two
/// identical servers measured 0.6-1.6x each other sample by sample, 0.73-1.08x in
/// medians), which hides a 5% difference; saturated, it is set by the CPU each request
/// costs, which is what persistence could add to.
fn http(dir: &Path, duration: Duration, rounds: usize) -> HttpResult {
    let servers = [
        serve(dir, "on", true, &[]),
        serve(dir, "off", false, &[]),
        serve(dir, "control", false, &[]),
    ];
    let mut samples: [[Vec<f64>; 2]; 3] = Default::default();
    for round in 0..rounds {
        for (route, method, status) in [(0, "GET", 200), (1, "POST", 201)] {
            for turn in 0..servers.len() {
                let side = (round + turn) % servers.len();
                let served = &servers[side];
                let paths = if route == 0 {
                    &served.get
                } else {
                    &served.post
                };
                samples[side][route].push(http_load(
                    served.addr,
                    HTTP_CLIENTS,
                    HTTP_CLIENTS,
                    duration,
                    method,
                    paths.clone(),
                    status,
                ));
            }
        }
    }
    drop(servers);
    let ratios =
        |side: usize, route: usize| paired_ratio(&samples[side][route], &samples[1][route]);
    HttpResult {
        on_ratio: [ratios(0, 0), ratios(0, 1)],
        control_ratio: [ratios(2, 0), ratios(2, 1)],
        on: samples[0].clone().map(median),
        off: samples[1].clone().map(median),
        control: samples[2].clone().map(median),
    }
}

/// Keep-alive client connections of the HTTP measurement.
const HTTP_CLIENTS: usize = 16;

// ---------------------------------------------------------------------------------------
// 7. Orders on one galaxy while a large galaxy is created.

/// The coalescing delay of section 8: the contract's default.
const BESIDE_DELAY: Duration = Duration::from_millis(1000);

/// Threads ordering on `play` in section 8.
const BESIDE_THREADS: usize = 2;

/// A cheap galaxy: one structure per system, so its creation is mostly system rows.
fn cheap_config(systems: u64) -> GalaxyConfig {
    let side = (systems as f64).sqrt().ceil() as u64 * 2;
    let text = format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.structures.colony]\nstarting_level = 1\n"
    );
    GalaxyConfig::from_toml(&text).expect("valid").0
}

/// Orders on `play` that are on disk, plus a constant: each order on a system completes
/// the system's previous build (its colony's level goes up by one) and leaves one pending
/// build (one event row), so levels plus events grow by exactly one per saved order.
fn orders_on_disk(conn: &Connection) -> u64 {
    conn.query_row(
        "SELECT (SELECT COALESCE(SUM(st.level), 0) FROM systems s
                 JOIN structures st ON st.system_id = s.id AND st.structure_type = 'colony'
                 WHERE s.galaxy_name = 'play')
              + (SELECT COUNT(*) FROM systems s JOIN events e ON e.system_id = s.id
                 WHERE s.galaxy_name = 'play')",
        [],
        |row| row.get(0),
    )
    .expect("counted")
}

/// One measurement of section 8.
struct Beside {
    p99: Duration,
    /// Orders on disk per second, between two commits of `play`'s batches.
    persisted: f64,
    /// Orders placed per second over the same time.
    placed: f64,
    /// The oldest unsaved change's age, at its highest, sampled every 50 ms.
    max_unsaved: Duration,
    /// How long each creation took, and whether it ended after the measurement (the
    /// last one does, and ran partly without orders beside it).
    creations: Vec<(Duration, bool)>,
}

/// Orders from `threads` threads on a 10 000-system galaxy `play` for about `window`,
/// in a fresh app (persistence on, the default coalescing delay, its own database file),
/// beside creations of galaxies of `create` cheap systems, one after the other on another
/// thread, if asked.
///
/// Persisted orders/s are read from the database, not from the writer's metrics: at the
/// first commit of `play`'s batches seen after a second of warm-up, and at the first seen
/// once `window` has passed (or, if none comes, two coalescing delays later, so that a
/// writer stuck behind the creation reads as the orders it did not save). A commit is
/// seen as the oldest unsaved change getting younger, in the samples taken every 50 ms.
fn orders_beside(
    dir: &Path,
    label: &str,
    threads: usize,
    rate: u64,
    create: Option<u64>,
    window: Duration,
) -> Beside {
    let path = dir.join(format!("beside-{label}.db"));
    let app = AppState::open(&settings(&path, |s| {
        s.coalescing_delay = BESIDE_DELAY;
        s.auto_save_interval = Duration::from_secs(30);
    }))
    .expect("opens");
    // Builds complete at once, so every order succeeds.
    app.create_galaxy("play", config(10_000, 0), Some(2), 0)
        .expect("created");
    let reader = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opens");
    reader
        .busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // Creations back to back until the measurement ends, so that one runs throughout it.
    let creator = create.map(|systems| {
        let (app, stop) = (app.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                app.create_galaxy(
                    &format!("huge-{}", took.len()),
                    cheap_config(systems),
                    Some(4),
                    0,
                )
                .expect("created");
                took.push((started.elapsed(), stop.load(Ordering::Relaxed)));
            }
            took
        })
    });
    // Each thread keeps to its share of `rate`, in bursts of a millisecond or so, and
    // counts the orders it placed.
    let per_order = Duration::from_secs_f64(threads as f64 / rate as f64);
    let placed: Vec<Arc<AtomicU64>> = (0..threads).map(|_| Arc::default()).collect();
    let orderers: Vec<_> = placed
        .iter()
        .map(|placed| {
            let (app, stop, placed) = (app.clone(), stop.clone(), placed.clone());
            std::thread::spawn(move || {
                let (begun, mut count) = (Instant::now(), 0u32);
                latencies_while(&app, || {
                    let due = begun + per_order * count;
                    let now = Instant::now();
                    if due > now + Duration::from_millis(1) {
                        std::thread::sleep(due - now);
                    }
                    count += 1;
                    placed.store(u64::from(count), Ordering::Relaxed);
                    !stop.load(Ordering::Relaxed)
                })
            })
        })
        .collect();
    let placed_now = || {
        placed
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
    };

    let opens = started + Duration::from_secs(1);
    let mut max_unsaved = 0;
    let mut previous: Option<u64> = None;
    let mut first: Option<(Instant, u64, u64)> = None;
    let (first, last) = loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let age = app.metrics().oldest_unsaved_ms;
        let committed = match (previous, age) {
            (Some(before), Some(after)) => after < before,
            (Some(_), None) => true,
            (None, _) => false,
        };
        previous = age;
        max_unsaved = max_unsaved.max(age.unwrap_or(0));
        match first {
            None if now >= opens && (committed || now >= opens + 2 * BESIDE_DELAY) => {
                first = Some((now, orders_on_disk(&reader), placed_now()));
            }
            Some(opened)
                if now >= opened.0 + window
                    && (committed || now >= opened.0 + window + 2 * BESIDE_DELAY) =>
            {
                break (opened, (now, orders_on_disk(&reader), placed_now()));
            }
            _ => {}
        }
    };
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Duration> = orderers
        .into_iter()
        .flat_map(|t| t.join().expect("joins"))
        .collect();
    samples.sort();
    let creations = creator.map_or_else(Vec::new, |c| c.join().expect("joins"));
    drop(reader);
    assert!(app.shutdown().all_saved());
    drop(app);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Beside {
        p99: percentile(&samples, 0.99),
        persisted: per_sec(last.1 - first.1, last.0 - first.0),
        placed: per_sec(last.2 - first.2, last.0 - first.0),
        max_unsaved: Duration::from_millis(max_unsaved),
        creations,
    }
}

/// Orders/s offered by section 8's steady stream, over both threads.
const BESIDE_RATE: u64 = 100_000;

/// Section 8 at one order rate: `rounds` rounds, each measuring without a creation and
/// beside creations, taking turns at going first; ratios paired within rounds. Prints the
/// rows, returns the JSON.
fn beside_rows(
    dir: &Path,
    row: &impl Fn(&str, String, String, Option<f64>, &str),
    huge: u64,
    rounds: usize,
    window: Duration,
    rate: u64,
    what: &str,
) -> Value {
    let mut control: Vec<Beside> = Vec::new();
    let mut during: Vec<Beside> = Vec::new();
    for round in 0..rounds {
        for turn in 0..2 {
            let label = format!("{rate}-{round}-{turn}");
            if (round + turn) % 2 == 0 {
                control.push(orders_beside(
                    dir,
                    &label,
                    BESIDE_THREADS,
                    rate,
                    None,
                    window,
                ));
            } else {
                let creating = Some(huge);
                during.push(orders_beside(
                    dir,
                    &label,
                    BESIDE_THREADS,
                    rate,
                    creating,
                    window,
                ));
            }
        }
    }
    let of = |side: &[Beside], f: fn(&Beside) -> f64| side.iter().map(f).collect::<Vec<_>>();
    let p99 = |b: &Beside| b.p99.as_secs_f64();
    let persisted = |b: &Beside| b.persisted;
    let placed = |b: &Beside| b.placed;
    let p99_ratio = paired_ratio(&of(&control, p99), &of(&during, p99));
    let persisted_ratio = paired_ratio(&of(&during, persisted), &of(&control, persisted));
    let placed_ratio = paired_ratio(&of(&during, placed), &of(&control, placed));
    let highest = |side: &[Beside]| side.iter().map(|b| b.max_unsaved).max().unwrap_or_default();
    // The creations that ended within a measurement ran beside orders throughout; the
    // last of each measurement only partly, so it counts only if it is the only one.
    let creations: Vec<(Duration, bool)> =
        during.iter().flat_map(|b| b.creations.clone()).collect();
    let beside_orders: Vec<f64> = creations
        .iter()
        .filter(|(_, after)| !after)
        .map(|(took, _)| took.as_secs_f64())
        .collect();
    let took = Duration::from_secs_f64(median(if beside_orders.is_empty() {
        creations
            .iter()
            .map(|(took, _)| took.as_secs_f64())
            .collect()
    } else {
        beside_orders
    }));
    let beside = format!("{huge}-system creations vs none, {what}");
    let seconds = |samples: Vec<f64>| Duration::from_secs_f64(median(samples));
    row(
        &format!("8. order p99, {beside}"),
        format!("{:?}", seconds(of(&during, p99))),
        format!("{:?}", seconds(of(&control, p99))),
        Some(p99_ratio),
        "≥ 0.8 (p99 without / with)",
    );
    row(
        &format!("8. orders persisted/s, {beside}"),
        format!("{:.0}", median(of(&during, persisted))),
        format!("{:.0}", median(of(&control, persisted))),
        Some(persisted_ratio),
        "≥ 0.8",
    );
    row(
        &format!("8. orders placed/s, {beside}"),
        format!("{:.0}", median(of(&during, placed))),
        format!("{:.0}", median(of(&control, placed))),
        Some(placed_ratio),
        "",
    );
    let limit = 2 * BESIDE_DELAY;
    row(
        &format!("8. oldest unsaved age at most, {beside}"),
        format!("{:?}", highest(&during)),
        format!("{:?}", highest(&control)),
        Some(highest(&during).as_secs_f64() / limit.as_secs_f64()),
        &format!("≤ {limit:?} (ratio: with / that)"),
    );
    row(
        &format!(
            "8. creating {huge} systems beside {what} ({} created in all)",
            creations.len()
        ),
        format!("{took:?}"),
        String::new(),
        None,
        &format!("{:.0} systems/s", per_sec(huge, took)),
    );
    let nanos = |b: &Beside| b.p99.as_nanos() as u64;
    let unsaved = |b: &Beside| b.max_unsaved.as_millis() as u64;
    json!({"rate": if rate == u64::MAX { Value::Null } else { json!(rate) },
           "systems": huge, "rounds": rounds, "threads": BESIDE_THREADS,
           "window_ms": window.as_millis() as u64,
           "p99_ns": during.iter().map(nanos).collect::<Vec<_>>(),
           "control_p99_ns": control.iter().map(nanos).collect::<Vec<_>>(),
           "persisted": of(&during, persisted), "control_persisted": of(&control, persisted),
           "placed": of(&during, placed), "control_placed": of(&control, placed),
           "max_unsaved_ms": during.iter().map(unsaved).collect::<Vec<_>>(),
           "control_max_unsaved_ms": control.iter().map(unsaved).collect::<Vec<_>>(),
           "p99_ratio": p99_ratio, "persisted_ratio": persisted_ratio, "placed_ratio": placed_ratio,
           "creation_ms": creations.iter().map(|(t, _)| t.as_millis() as u64).collect::<Vec<_>>(),
           "systems_per_s": per_sec(huge, took)})
}

// ---------------------------------------------------------------------------------------
// 9. The HTTP edge: many keep-alive clients, thousands of idle connections, and nginx.

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

// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// 10. PostgreSQL: the same engine on a server database, against floors of raw `postgres`.

/// The project's PostgreSQL migrations, which the floors run as the engine does.
const PG_MIGRATIONS: [&str; 2] = [
    include_str!("../../sql/postgres/0001_initial.sql"),
    include_str!("../../sql/postgres/0002_galaxy_jobs.sql"),
];

/// Structure rows as the engine writes them: an update by the unique key and an insert of
/// the rows it found no row for, in one statement (`src/persistence/store/postgres/write.rs`
/// says why). [`PgFloor::plain_structures`] measures what that costs beside a plain update.
const PG_UPSERT_STRUCTURES: &str = "WITH u AS (
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])
             AS u(system_id, structure_type, level)
     ), updated AS (
         UPDATE structures s SET level = u.level, updated_at = now() FROM u
         WHERE s.system_id = u.system_id AND s.structure_type = u.structure_type
         RETURNING s.system_id, s.structure_type
     )
     INSERT INTO structures (system_id, structure_type, level, updated_at)
     SELECT u.system_id, u.structure_type, u.level, now() FROM u
     WHERE NOT EXISTS (SELECT 1 FROM updated d
         WHERE d.system_id = u.system_id AND d.structure_type = u.structure_type)";

/// The tables every batch updates, whose `fillfactor` the migration sets to 90.
const PG_UPDATED_TABLES: [&str; 3] = ["galaxies", "systems", "structures"];

fn pg_settings(url: &str) -> Settings {
    Settings {
        database: DatabaseUrl::Postgres(url.to_owned()),
        ..settings(Path::new("unused"), |_| {})
    }
}

/// The floor on PostgreSQL: the engine's schema, and set-based statements written here by
/// hand after the store's (arrays expanded by `unnest`, one statement per table, one
/// transaction per batch, prepared once, row ids cached), with no engine. Structure rows
/// by the engine's own statement; event rows by a plain update, or a delete and an insert.
struct PgFloor {
    client: postgres::Client,
    galaxy: String,
    ids: Vec<i64>,
    /// The stored event of each system, by the system's index.
    events: Vec<Option<i64>>,
    statements: PgStatements,
    /// Structure rows are written by [`PG_UPSERT_STRUCTURES`] (else by a plain update).
    upsert: bool,
}

struct PgStatements {
    tick: postgres::Statement,
    systems: postgres::Statement,
    structures: postgres::Statement,
    events_in_place: postgres::Statement,
    delete_events: postgres::Statement,
    insert_events: postgres::Statement,
}

/// Arrays of structure rows: system id, type, level.
type StructureArrays = (Vec<i64>, Vec<&'static str>, Vec<i64>);

fn structure_arrays(rows: &[(i64, &System)]) -> StructureArrays {
    let mut arrays: StructureArrays = Default::default();
    for &(id, system) in rows {
        for kind in KINDS {
            arrays.0.push(id);
            arrays.1.push(kind.as_str());
            arrays.2.push(i64::from(system.levels[kind.index()]));
        }
    }
    arrays
}

impl PgFloor {
    /// Database `url` (empty) given the engine's schema, the updated tables' fillfactor
    /// set to `fillfactor`, and `galaxy` stored as the engine stores it.
    fn create(url: &str, galaxy: &Galaxy, fillfactor: u32) -> PgFloor {
        let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connects");
        for migration in PG_MIGRATIONS {
            client.batch_execute(migration).expect("migration");
        }
        for table in PG_UPDATED_TABLES {
            client
                .batch_execute(&format!(
                    "ALTER TABLE {table} SET (fillfactor = {fillfactor})"
                ))
                .expect("fillfactor");
        }
        // As the engine's writer commits (and the bench's server's default).
        client
            .batch_execute("SET synchronous_commit = on")
            .expect("synchronous commit");
        let systems = galaxy.systems();
        let mut tx = client.transaction().expect("tx");
        tx.execute(
            "INSERT INTO galaxies (name, config_file, tick) VALUES ($1, $2, $3)",
            &[
                &galaxy.name(),
                &galaxy.config().to_toml(),
                &(galaxy.tick() as i64),
            ],
        )
        .expect("galaxy");
        let column = |f: &dyn Fn(&System) -> u64| -> Vec<i64> {
            systems.iter().map(|s| f(s) as i64).collect()
        };
        let rows = tx
            .query(
                "INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick)
                 SELECT $1, u.x, u.y, u.metal, u.crew, u.water, u.tick FROM unnest(
                     $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::bigint[]) AS u(x, y, metal, crew, water, tick)
                 RETURNING id, x, y",
                &[
                    &galaxy.name(),
                    &column(&|s| u64::from(s.x)),
                    &column(&|s| u64::from(s.y)),
                    &column(&|s| s.resources.metal),
                    &column(&|s| s.resources.crew),
                    &column(&|s| s.resources.water),
                    &column(&|s| s.tick),
                ],
            )
            .expect("systems");
        let by_coords: std::collections::HashMap<(i64, i64), i64> = rows
            .iter()
            .map(|row| ((row.get(1), row.get(2)), row.get(0)))
            .collect();
        let ids: Vec<i64> = systems
            .iter()
            .map(|s| by_coords[&(i64::from(s.x), i64::from(s.y))])
            .collect();
        let pairs: Vec<(i64, &System)> = ids.iter().copied().zip(systems).collect();
        let (structure_ids, types, levels) = structure_arrays(&pairs);
        tx.execute(
            "INSERT INTO structures (system_id, structure_type, level)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])",
            &[&structure_ids, &types, &levels],
        )
        .expect("structures");
        let statements = PgStatements::prepare(&mut tx);
        let mut floor_events = vec![None; systems.len()];
        let built: Vec<(i64, &System)> = pairs
            .iter()
            .copied()
            .filter(|(_, s)| s.build.is_some())
            .collect();
        for (id, system_id) in insert_events(&mut tx, &statements, &built) {
            let index = ids.iter().position(|&i| i == system_id);
            floor_events[index.expect("a system")] = Some(id);
        }
        tx.commit().expect("commit");
        PgFloor {
            client,
            galaxy: galaxy.name().to_owned(),
            ids,
            events: floor_events,
            statements,
            upsert: true,
        }
    }

    /// From now on, structure rows written by a plain update, which cannot write a row
    /// missing from the database (none is missing here).
    fn plain_structures(&mut self) {
        self.statements.structures = self
            .client
            .prepare(
                "UPDATE structures s SET level = u.level, updated_at = now()
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[])
                     AS u(system_id, structure_type, level)
                 WHERE s.system_id = u.system_id AND s.structure_type = u.structure_type",
            )
            .expect("prepares");
        self.upsert = false;
    }

    /// Every row of `systems` written in place (the tick, the system, its five structures,
    /// its event, by cached ids): what a save with every row changed needs, when every
    /// system has a build in flight and so an event row.
    fn save_in_place(&mut self, tick: u64, systems: &[(usize, &System)]) {
        let rows: Vec<(i64, &System)> = systems.iter().map(|&(i, s)| (self.ids[i], s)).collect();
        let mut tx = self.client.transaction().expect("tx");
        let st = &self.statements;
        update_tick(&mut tx, st, &self.galaxy, tick);
        update_systems(&mut tx, st, &rows);
        update_structures(&mut tx, st, &rows, self.upsert);
        let (mut ids, mut ticks, mut types) = (Vec::new(), Vec::new(), Vec::new());
        for &(index, system) in systems {
            let build = system.build.expect("a build in flight");
            ids.push(self.events[index].expect("a stored event"));
            ticks.push(build.completion_tick as i64);
            types.push(build.structure.as_str());
        }
        let updated = tx
            .execute(&st.events_in_place, &[&ids, &ticks, &types])
            .expect("events");
        assert_eq!(updated, ids.len() as u64);
        tx.commit().expect("commit");
    }

    /// Whole systems written (the tick, the system, its five structures; its event
    /// deleted and inserted again if it has one), with no knowledge of what changed: the
    /// save-everything design, as section 2's SQLite floor.
    fn save_full(&mut self, tick: u64, systems: &[(usize, &System)]) {
        let rows: Vec<(i64, &System)> = systems.iter().map(|&(i, s)| (self.ids[i], s)).collect();
        let mut tx = self.client.transaction().expect("tx");
        let st = &self.statements;
        update_tick(&mut tx, st, &self.galaxy, tick);
        update_systems(&mut tx, st, &rows);
        update_structures(&mut tx, st, &rows, self.upsert);
        let ids: Vec<i64> = rows.iter().map(|&(id, _)| id).collect();
        tx.execute(&st.delete_events, &[&ids])
            .expect("delete events");
        let built: Vec<(i64, &System)> = rows
            .iter()
            .copied()
            .filter(|(_, s)| s.build.is_some())
            .collect();
        insert_events(&mut tx, st, &built);
        tx.commit().expect("commit");
    }
}

impl PgStatements {
    fn prepare(tx: &mut postgres::Transaction<'_>) -> PgStatements {
        let mut prepare = |sql: &str| tx.prepare(sql).expect("prepares");
        PgStatements {
            tick: prepare("UPDATE galaxies SET tick = $2, updated_at = now() WHERE name = $1"),
            systems: prepare(
                "UPDATE systems s SET metal = u.metal, crew = u.crew, water = u.water,
                     current_tick = u.current_tick, updated_at = now()
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],
                     $5::bigint[]) AS u(id, metal, crew, water, current_tick)
                 WHERE s.id = u.id",
            ),
            structures: prepare(PG_UPSERT_STRUCTURES),
            events_in_place: prepare(
                "UPDATE events e SET completion_tick = u.completion_tick,
                     structure_type = u.structure_type
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[])
                     AS u(id, completion_tick, structure_type)
                 WHERE e.id = u.id",
            ),
            delete_events: prepare("DELETE FROM events WHERE system_id = ANY($1::bigint[])"),
            insert_events: prepare(
                "INSERT INTO events (system_id, completion_tick, action_type, structure_type)
                 SELECT u.system_id, u.completion_tick, 'build', u.structure_type
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[])
                     AS u(system_id, completion_tick, structure_type)
                 RETURNING id, system_id",
            ),
        }
    }
}

fn update_tick(tx: &mut postgres::Transaction<'_>, st: &PgStatements, galaxy: &str, tick: u64) {
    tx.execute(&st.tick, &[&galaxy, &(tick as i64)])
        .expect("tick");
}

fn update_systems(tx: &mut postgres::Transaction<'_>, st: &PgStatements, rows: &[(i64, &System)]) {
    let column = |f: &dyn Fn(&System) -> u64| -> Vec<i64> {
        rows.iter().map(|&(_, s)| f(s) as i64).collect()
    };
    let ids: Vec<i64> = rows.iter().map(|&(id, _)| id).collect();
    let updated = tx
        .execute(
            &st.systems,
            &[
                &ids,
                &column(&|s| s.resources.metal),
                &column(&|s| s.resources.crew),
                &column(&|s| s.resources.water),
                &column(&|s| s.tick),
            ],
        )
        .expect("systems");
    assert_eq!(updated, ids.len() as u64);
}

fn update_structures(
    tx: &mut postgres::Transaction<'_>,
    st: &PgStatements,
    rows: &[(i64, &System)],
    upsert: bool,
) {
    let (ids, types, levels) = structure_arrays(rows);
    let written = tx
        .execute(&st.structures, &[&ids, &types, &levels])
        .expect("structures");
    // An upsert counts the rows it inserted: none, every row being stored.
    assert_eq!(written, if upsert { 0 } else { ids.len() as u64 });
}

/// Inserts the events of `built` (systems with a build in flight); their `(id, system id)`.
fn insert_events(
    tx: &mut postgres::Transaction<'_>,
    st: &PgStatements,
    built: &[(i64, &System)],
) -> Vec<(i64, i64)> {
    let (mut ids, mut ticks, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for &(id, system) in built {
        let build = system.build.expect("a build");
        ids.push(id);
        ticks.push(build.completion_tick as i64);
        types.push(build.structure.as_str());
    }
    tx.query(&st.insert_events, &[&ids, &ticks, &types])
        .expect("events")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// A checkpoint, so that each side's clock starts on a clean one: a checkpoint falling
/// inside one side's run (every 1 GB of WAL, PostgreSQL's default `max_wal_size`) and not
/// the other's would decide the ratio; after one, each page's first change writes the
/// whole page to the WAL, which both sides then pay alike.
fn pg_checkpoint(cluster: &pg_cluster::Cluster) {
    cluster
        .client("postgres")
        .batch_execute("CHECKPOINT")
        .expect("checkpoint");
}

/// Section 1 on PostgreSQL: systems/s saving every row of a `batch`-system galaxy, `rounds`
/// times, by the engine; by the floor (structure rows by the engine's statement, events
/// updated in place) at the migration's fillfactor (90); by that floor writing structure
/// rows by a plain update; and, if `fillfactor_too`, by the floor at fillfactor 100. The
/// sides take turns
/// round by round, each after a checkpoint, so a busy spell of the shared machine falls
/// on all of them.
fn pg_save(cluster: &pg_cluster::Cluster, batch: u64, rounds: u64, fillfactor_too: bool) -> PgSave {
    let name = "save";
    let app = save_app(&pg_settings(&cluster.database().url()), name, batch);
    let galaxy = app.galaxy_copy(name).expect("exists");
    // (fillfactor, structures by upsert): the floor, its plain-update twin, fillfactor 100.
    let variants = [(90, true), (90, false), (100, true)];
    let mut floors: Vec<PgFloor> = variants[..2 + usize::from(fillfactor_too)]
        .iter()
        .map(|&(fillfactor, upsert)| {
            let mut floor = PgFloor::create(&cluster.database().url(), &galaxy, fillfactor);
            if !upsert {
                floor.plain_structures();
            }
            // The engine's tables saw one update of every system (the builds' save)
            // before its first round: the floor's see one of every row.
            let rows: Vec<(usize, &System)> = galaxy.systems().iter().enumerate().collect();
            floor.save_in_place(galaxy.tick(), &rows);
            floor
        })
        .collect();
    let mut systems: Vec<System> = galaxy.systems().to_vec();
    let mut spent = vec![Duration::ZERO; 1 + floors.len()];
    for round in 0..rounds {
        pg_checkpoint(cluster);
        let started = Instant::now();
        app.rewrite_galaxy(name).expect("marked");
        app.save_all().expect("saved");
        spent[0] += started.elapsed();
        for system in &mut systems {
            system.resources.metal = round;
        }
        let rows: Vec<(usize, &System)> = systems.iter().enumerate().collect();
        for (floor, spent) in floors.iter_mut().zip(&mut spent[1..]) {
            pg_checkpoint(cluster);
            let started = Instant::now();
            floor.save_in_place(galaxy.tick() + round, &rows);
            *spent += started.elapsed();
        }
    }
    let rate = |spent: Duration| per_sec(batch * rounds, spent);
    PgSave {
        engine: rate(spent[0]),
        floor: rate(spent[1]),
        floor_plain: rate(spent[2]),
        floor_fillfactor_100: spent.get(3).copied().map(rate),
    }
}

/// Systems/s saving every row ([`pg_save`]).
struct PgSave {
    engine: f64,
    floor: f64,
    /// The floor with structure rows written by a plain update, which cannot write a row
    /// missing from the database.
    floor_plain: f64,
    /// The floor on tables at fillfactor 100, when measured.
    floor_fillfactor_100: Option<f64>,
}

/// Section 2 on PostgreSQL: orders/s of the engine and of the full-system floor, the same
/// stream placed on both, taking turns batch by batch (after one checkpoint).
fn pg_orders(cluster: &pg_cluster::Cluster, systems: u64, orders: u64, batch: u64) -> (f64, f64) {
    let stream = order_stream(systems, orders);
    let name = ORDERS_GALAXY;
    let app = AppState::open(&pg_settings(&cluster.database().url())).expect("opens");
    app.create_galaxy(name, config(systems, 300), Some(ORDERS_SEED), 0)
        .expect("created");
    let places = coords(&app, name);
    let mut galaxy = orders_galaxy(systems);
    let mut floor = PgFloor::create(&cluster.database().url(), &galaxy, 90);
    galaxy.take_changes();
    pg_checkpoint(cluster);
    let (mut engine, mut floor_spent) = (Duration::ZERO, Duration::ZERO);
    for chunk in stream.chunks(batch as usize) {
        let started = Instant::now();
        for &(tick, index, kind) in chunk {
            let (x, y) = places[index];
            let _ = app.build(name, tick, x, y, kind);
        }
        app.save_all().expect("saved");
        engine += started.elapsed();
        let started = Instant::now();
        for &(tick, index, kind) in chunk {
            let (x, y) = places[index];
            let _ = galaxy.build(tick, x, y, kind);
        }
        let changed = galaxy.take_changes();
        let rows: Vec<(usize, &System)> = changed
            .iter()
            .map(|(index, _)| (index as usize, galaxy.system(index).expect("exists")))
            .collect();
        floor.save_full(galaxy.tick(), &rows);
        floor_spent += started.elapsed();
    }
    (per_sec(orders, engine), per_sec(orders, floor_spent))
}

/// Section 4 on PostgreSQL: the median of five loads of a `systems`-system galaxy (half
/// the systems with a build in flight) by the engine's reader and by the floor's plain
/// queries, and the database's bytes per system (`pg_database_size`).
fn pg_load(cluster: &pg_cluster::Cluster, systems: u64) -> (Duration, Duration, f64) {
    let database = cluster.database();
    let url = database.url();
    {
        let app = AppState::open(&pg_settings(&url)).expect("opens");
        app.create_galaxy("load", config(systems, 100), Some(1), 0)
            .expect("created");
        for (i, (x, y)) in coords(&app, "load").into_iter().enumerate() {
            if i % 2 == 0 {
                app.build("load", 1, x, y, StructureKind::Hatchery)
                    .expect("order");
            }
        }
        assert!(app.shutdown().all_saved());
    }
    let mut client = database.client();
    client.batch_execute("VACUUM ANALYZE").expect("vacuum");
    let bytes = database.query_i64s("SELECT pg_database_size(current_database())")[0] as f64
        / systems as f64;
    let reader = galactic_war::testing::PostgresReader::open(&url).expect("reader");
    let (mut engine, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        let galaxy = reader.load_galaxy("load").expect("loads").expect("stored");
        engine.push(started.elapsed());
        assert_eq!(galaxy.systems().len() as u64, systems);
        let started = Instant::now();
        let loaded = pg_floor_load(&mut client);
        floor.push(started.elapsed());
        assert_eq!(loaded.len() as u64, systems);
    }
    engine.sort();
    floor.sort();
    (engine[2], floor[2], bytes)
}

/// Plain whole-table queries without joins (the database holds one galaxy), streamed,
/// grouped in Rust: section 4's floor on PostgreSQL.
fn pg_floor_load(client: &mut postgres::Client) -> Vec<System> {
    use postgres::fallible_iterator::FallibleIterator;
    let none: [&str; 0] = [];
    let mut systems = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    {
        let mut rows = client
            .query_raw(
                "SELECT id, x, y, metal, crew, water, current_tick FROM systems",
                none,
            )
            .expect("query");
        while let Some(row) = rows.next().expect("row") {
            index_of.insert(row.get::<_, i64>(0), systems.len());
            systems.push(System {
                x: row.get::<_, i64>(1) as u32,
                y: row.get::<_, i64>(2) as u32,
                resources: galactic_war::model::Resources {
                    metal: row.get::<_, i64>(3) as u64,
                    crew: row.get::<_, i64>(4) as u64,
                    water: row.get::<_, i64>(5) as u64,
                },
                tick: row.get::<_, i64>(6) as u64,
                levels: [0; 5],
                build: None,
            });
        }
    }
    {
        let mut rows = client
            .query_raw(
                "SELECT system_id, structure_type, level FROM structures",
                none,
            )
            .expect("query");
        while let Some(row) = rows.next().expect("row") {
            let index = index_of[&row.get::<_, i64>(0)];
            let kind: StructureKind = row.get::<_, &str>(1).parse().expect("kind");
            systems[index].levels[kind.index()] = row.get::<_, i64>(2) as u32;
        }
    }
    {
        let mut rows = client
            .query_raw(
                "SELECT system_id, completion_tick, structure_type FROM events",
                none,
            )
            .expect("query");
        while let Some(row) = rows.next().expect("row") {
            let index = index_of[&row.get::<_, i64>(0)];
            systems[index].build = Some(galactic_war::model::Build {
                completion_tick: row.get::<_, i64>(1) as u64,
                structure: row.get::<_, &str>(2).parse().expect("kind"),
            });
        }
    }
    systems.sort_by_key(System::coords);
    systems
}

/// Section 10: sections 1, 2 and 4 on PostgreSQL against its floors, then the engine on
/// PostgreSQL beside the engine on SQLite (in `dir`), measured in this run. Its JSON.
fn postgres_section(
    cluster: &pg_cluster::Cluster,
    dir: &Path,
    quick: bool,
    large: u64,
    row: &impl Fn(&str, String, String, Option<f64>, &str),
) -> Value {
    std::fs::create_dir_all(dir).expect("a directory");
    let saves: Vec<(u64, u64)> = if quick {
        vec![(10_000, 3), (large, 2)]
    } else {
        vec![(10_000, 10), (large, 4)]
    };
    let mut json_saves = Vec::new();
    let mut side_by_side = Vec::new();
    for &(batch, rounds) in &saves {
        let PgSave {
            engine,
            floor,
            floor_plain,
            floor_fillfactor_100: full_pages,
        } = pg_save(cluster, batch, rounds, batch == large);
        row(
            &format!("10. PostgreSQL save, every row changed, batch {batch}"),
            format!("{engine:.0} systems/s"),
            format!("{floor:.0} systems/s"),
            Some(engine / floor),
            "≥ 0.9",
        );
        row(
            &format!(
                "10. PostgreSQL save, batch {batch}, vs a floor writing structures by a plain UPDATE"
            ),
            format!("{engine:.0} systems/s"),
            format!("{floor_plain:.0} systems/s"),
            Some(engine / floor_plain),
            "",
        );
        if let Some(full_pages) = full_pages {
            row(
                &format!("10. PostgreSQL floor's save, batch {batch}, fillfactor 90 vs 100"),
                format!("{floor:.0} systems/s"),
                format!("{full_pages:.0} systems/s"),
                Some(floor / full_pages),
                "",
            );
        }
        let sqlite = save_throughput(dir, batch, rounds);
        side_by_side.push((
            format!("save, every row changed, batch {batch}"),
            format!("{engine:.0} systems/s"),
            format!("{:.0} systems/s", sqlite.engine),
            engine / sqlite.engine,
        ));
        json_saves.push(json!({"batch": batch, "rounds": rounds, "engine": engine,
            "floor": floor, "ratio": engine / floor, "floor_fillfactor_100": full_pages,
            "floor_plain_update": floor_plain,
            "sqlite_engine": sqlite.engine, "sqlite_floor": sqlite.floor}));
    }

    let orders = if quick { 50_000 } else { 200_000 };
    let mut json_orders = Vec::new();
    for batch in [100, 1000, 10_000] {
        let orders = if batch == 100 { orders / 4 } else { orders };
        let (engine, floor) = pg_orders(cluster, 10_000, orders, batch);
        row(
            &format!("10. PostgreSQL orders persisted, batches of {batch} orders"),
            format!("{engine:.0} orders/s"),
            format!("{floor:.0} orders/s"),
            Some(engine / floor),
            if batch == 1000 { "≥ 1.5" } else { "" },
        );
        let mut entry =
            json!({"batch": batch, "engine": engine, "floor": floor, "ratio": engine / floor});
        if batch == 1000 {
            let (sqlite, sqlite_floor) = order_throughput(dir, 10_000, orders, batch);
            side_by_side.push((
                format!("orders persisted, batches of {batch} orders"),
                format!("{engine:.0} orders/s"),
                format!("{sqlite:.0} orders/s"),
                engine / sqlite,
            ));
            entry["sqlite_engine"] = json!(sqlite);
            entry["sqlite_floor"] = json!(sqlite_floor);
        }
        json_orders.push(entry);
    }

    let (engine_load, floor_load, bytes) = pg_load(cluster, large);
    row(
        &format!("10. PostgreSQL load {large} systems"),
        format!("{engine_load:?}"),
        format!("{floor_load:?}"),
        Some(floor_load.as_secs_f64() / engine_load.as_secs_f64()),
        "≥ 0.8 (floor time / engine time), engine < 1 s",
    );
    row(
        "10. PostgreSQL database bytes per system (of that galaxy)",
        format!("{bytes:.0} B"),
        String::new(),
        None,
        "",
    );
    let (sqlite_load, sqlite_floor_load, _) = load(dir, large);
    side_by_side.push((
        format!("load {large} systems (ratio: SQLite's time / PostgreSQL's)"),
        format!("{engine_load:?}"),
        format!("{sqlite_load:?}"),
        sqlite_load.as_secs_f64() / engine_load.as_secs_f64(),
    ));
    for (what, pg, sqlite, ratio) in side_by_side {
        row(
            &format!("10. engine on PostgreSQL vs on SQLite: {what}"),
            pg,
            sqlite,
            Some(ratio),
            "",
        );
    }
    json!({"save": json_saves, "orders": json_orders,
           "load": {"systems": large, "engine_us": engine_load.as_micros() as u64,
                    "floor_us": floor_load.as_micros() as u64,
                    "sqlite_engine_us": sqlite_load.as_micros() as u64,
                    "sqlite_floor_us": sqlite_floor_load.as_micros() as u64,
                    "db_bytes_per_system": bytes}})
}

// ---------------------------------------------------------------------------------------
// 11. Several daemons on one PostgreSQL database: failover after `kill -9` of an owner.

/// A daemon of section 11 on the PostgreSQL database `url`, with the lease `lease_secs`:
/// the process (killed on drop), its game address, and its log lines as they come.
struct PgDaemon {
    child: Child,
    addr: SocketAddr,
    log: crossbeam_channel::Receiver<String>,
}

impl Drop for PgDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `host`, the daemon runs in a UTS namespace of its own with that host name
/// (`unshare --uts`, root only), so the others cannot tell when it has exited, as for a
/// daemon on another machine.
fn pg_daemon(dir: &Path, url: &str, lease_secs: u64, host: Option<&str>) -> PgDaemon {
    let binary = env!("CARGO_BIN_EXE_galactic-war");
    let mut command = match host {
        None => Command::new(binary),
        Some(host) => {
            let mut command = Command::new("unshare");
            command.args([
                "--uts",
                "sh",
                "-c",
                "hostname \"$0\" && exec \"$1\"",
                host,
                binary,
            ]);
            command
        }
    };
    let mut child = command
        .current_dir(dir)
        .env_clear()
        .env("DATABASE_URL", url)
        .env("GWAR_OWNERSHIP_LEASE_SECS", lease_secs.to_string())
        .env("GWAR_LISTEN", "127.0.0.1:0")
        .env("GWAR_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts");
    let (lines, log) = crossbeam_channel::unbounded();
    let stderr = child.stderr.take().expect("piped");
    // Reads the log to its end, so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let started = Instant::now();
    let addr = loop {
        let line = log
            .recv_timeout(Duration::from_secs(60).saturating_sub(started.elapsed()))
            .expect("the daemon listens within a minute");
        if let Some(addr) = line.split("listening on http://").nth(1) {
            break addr.trim().parse().expect("an address");
        }
    };
    PgDaemon { child, addr, log }
}

/// Orders/s persisted in batches of `batch` orders, the same stream on a new database
/// each time, with the fence ending every batch or (`fencing` false) without it.
fn fenced_orders(
    cluster: &pg_cluster::Cluster,
    systems: u64,
    stream: &[(u64, usize, StructureKind)],
    batch: u64,
    fencing: bool,
) -> f64 {
    let database = cluster.database();
    let app = AppState::open(&pg_settings(&database.url())).expect("opens");
    app.writer()
        .expect("persistence")
        .with_postgres(move |writer| writer.set_fencing(fencing))
        .expect("the writer answers")
        .expect("a PostgreSQL store");
    orders_in(&app, systems, stream, batch, || pg_checkpoint(cluster)).0
}

/// What the fence costs: persisted orders/s with it and without it, `rounds` pairs taking
/// turns at going first; the medians of each side and of the pairs' ratios.
fn pg_fence_overhead(
    cluster: &pg_cluster::Cluster,
    systems: u64,
    orders: u64,
    batch: u64,
    rounds: usize,
) -> (f64, f64, f64) {
    let stream = order_stream(systems, orders);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let sides = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for fencing in sides {
            let rate = fenced_orders(cluster, systems, &stream, batch, fencing);
            if fencing {
                with.push(rate);
            } else {
                without.push(rate);
            }
        }
    }
    let ratio = paired_ratio(&with, &without);
    (median(with), median(without), ratio)
}

/// Whether this process may make namespaces (`unshare --uts`: root).
fn may_unshare() -> bool {
    Command::new("unshare")
        .args(["--uts", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The failover of a `systems`-system galaxy: daemon A creates (so owns) it, daemon B
/// beside it is redirected to A; A is killed with SIGKILL, and B is asked for one system
/// of the galaxy every 10 ms until it serves it. With `other_host`, A runs as on another
/// machine (B must wait for A's lease); without, B sees that A has exited. Returns the
/// time from the kill to B's first 200, and B's load of the galaxy as its log reports it.
fn pg_failover(
    cluster: &pg_cluster::Cluster,
    dir: &Path,
    systems: u64,
    lease_secs: u64,
    other_host: bool,
) -> (Duration, String) {
    let database = cluster.database();
    let url = database.url();
    let owner = pg_daemon(dir, &url, lease_secs, other_host.then_some("gwar-bench-a"));
    let created = exchange(
        owner.addr,
        "POST",
        "/galaxies/failover?seed=1",
        &config(systems, 100).to_toml(),
    );
    assert_eq!(created.0, 201, "{}", created.1);
    let taker = pg_daemon(dir, &url, lease_secs, None);
    let (status, page) = exchange(owner.addr, "GET", "/galaxies/failover?limit=1", "");
    assert_eq!(status, 200, "{page}");
    let page: Value = serde_json::from_str(&page).expect("JSON");
    let first = &page["systems"][0];
    let path = format!("/galaxies/failover/systems/{}/{}", first["x"], first["y"]);
    let system = |addr| exchange(addr, "GET", &path, "").0;
    let served = |status: u16| status == 200;
    assert!(served(system(owner.addr)));
    assert_eq!(system(taker.addr), 307, "the owner's galaxy is redirected");
    let mut owner = owner;
    owner.child.kill().expect("SIGKILL");
    let killed = Instant::now();
    let _ = owner.child.wait();
    loop {
        assert!(
            killed.elapsed() < Duration::from_secs(lease_secs + 300),
            "no failover"
        );
        if served(system(taker.addr)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let failover = killed.elapsed();
    let load = taker
        .log
        .try_iter()
        .find_map(|line| {
            line.split("galaxy 'failover' loaded (")
                .nth(1)
                .map(|rest| rest.trim_end_matches(')').to_owned())
        })
        .unwrap_or_else(|| "not in the log".to_owned());
    (failover, load)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--memory") {
        measure_memory(
            args[at + 1].parse().expect("a count"),
            args.get(at + 2).map(String::as_str),
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only N` runs section N alone (for profiling one of them).
    let only: Option<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|at| args.get(at + 1))
        .and_then(|n| n.parse().ok());
    let wanted = |section: u32| only.is_none_or(|n| n == section);
    let dir = tempfile::tempdir().expect("temp dir");
    let dir: PathBuf = dir.path().to_path_buf();
    let large: u64 = if quick { 20_000 } else { 100_000 };
    let mut out = serde_json::Map::new();
    let row = |what: &str, ours: String, floor: String, ratio: Option<f64>, target: &str| {
        let ratio = ratio.map_or(String::new(), |r| format!("{r:.2}"));
        println!("| {what} | {ours} | {floor} | {ratio} | {target} |");
    };
    println!("| measurement | engine | floor / reference | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");

    // 1
    if wanted(1) {
        let batches: Vec<(u64, u64)> = if quick {
            vec![(1, 200), (100, 20), (10_000, 2), (large, 1)]
        } else {
            vec![(1, 1000), (100, 100), (10_000, 5), (large, 2)]
        };
        let mut saves = Vec::new();
        for (batch, rounds) in batches {
            let r = save_throughput(&dir, batch, rounds);
            row(
                &format!("1. save, every row changed, batch {}", r.batch),
                format!("{:.0} systems/s", r.engine),
                format!("{:.0} systems/s", r.floor),
                Some(r.engine / r.floor),
                if r.batch >= 1000 { "≥ 0.9" } else { "" },
            );
            saves.push(json!({"batch": r.batch, "engine": r.engine, "floor": r.floor, "ratio": r.engine / r.floor}));
        }
        out.insert("save".into(), Value::Array(saves));
    }

    // 2
    if wanted(2) {
        // The target is for batches of 1000 orders (a second of a busy galaxy at the
        // default coalescing); the other sizes show what the ratio depends on: how many
        // pages each commit rewrites per order, which both sides pay alike.
        let orders = if quick { 50_000 } else { 200_000 };
        let mut by_batch = Vec::new();
        for batch in [100, 1000, 10_000] {
            let orders = if batch == 100 { orders / 4 } else { orders };
            let (engine, floor) = order_throughput(&dir, 10_000, orders, batch);
            row(
                &format!("2. orders persisted, batches of {batch} orders"),
                format!("{engine:.0} orders/s"),
                format!("{floor:.0} orders/s"),
                Some(engine / floor),
                if batch == 1000 { "≥ 2" } else { "" },
            );
            by_batch.push(
                json!({"batch": batch, "engine": engine, "floor": floor, "ratio": engine / floor}),
            );
        }
        out.insert("orders".into(), Value::Array(by_batch));
    }

    // 3
    if wanted(3) {
        // On, off, and off again (the control, as in section 6), taking turns at going
        // first; ratios paired within rounds. A multiple of three rounds.
        let apps = ["on", "off", "control"]
            .map(|side| game_app(&dir.join(format!("game-{side}.db")), side == "on", 10_000));
        // Orders are counted over whole coalescing delays (1 s): the writer's saves of
        // those orders (one per delay) run inside the window, competing with the game
        // threads as in a running game; what is left unsaved at the end is saved outside
        // any window.
        let ms = Duration::from_millis;
        let (rounds, orders_warm_up, orders_window, reads_window) = if quick {
            (3, ms(200), ms(1000), ms(300))
        } else {
            (6, ms(200), ms(2000), ms(500))
        };
        // Per app: orders/s, reads/s, ns per order.
        let mut samples: [[Vec<f64>; 3]; 3] = Default::default();
        for round in 0..rounds {
            for turn in 0..apps.len() {
                let side = (round + turn) % apps.len();
                let app = &apps[side];
                samples[side][0].push(game_path(app, false, orders_warm_up, orders_window));
                settle(app);
                samples[side][1].push(game_path(app, true, Duration::ZERO, reads_window));
                samples[side][2].push(order_cost_ns(app, 200_000));
                settle(app);
            }
        }
        drop(apps);
        let [on, off, _] = samples.clone().map(|metrics| metrics.map(median));
        let ratio =
            |side: usize, metric: usize| paired_ratio(&samples[side][metric], &samples[1][metric]);
        let (orders_ratio, reads_ratio, control_ratio) = (ratio(0, 0), ratio(0, 1), ratio(2, 0));
        row(
            "3. orders/s, 2 threads, persistence on vs off",
            format!("{:.0}", on[0]),
            format!("{:.0}", off[0]),
            Some(orders_ratio),
            "≥ 0.95",
        );
        row(
            "3. orders/s, control: two apps with persistence off",
            String::new(),
            String::new(),
            Some(control_ratio),
            "1 ± resolution",
        );
        row(
            "3. reads/s, 2 threads, persistence on vs off",
            format!("{:.0}", on[1]),
            format!("{:.0}", off[1]),
            Some(reads_ratio),
            "",
        );
        row(
            "3. ns per order, on vs off (difference: cost of marking dirty)",
            format!("{:.0} ns", on[2]),
            format!("{:.0} ns", off[2]),
            None,
            &format!("{:.0} ns ≤ 100", on[2] - off[2]),
        );
        let l = latency_during_save(&dir, large);
        row(
            &format!("3. order p50 during a {large}-system save vs idle"),
            format!("{:?}", l.saving_p50),
            format!("{:?}", l.idle_p50),
            Some(l.saving_p50.as_secs_f64() / l.idle_p50.as_secs_f64()),
            "",
        );
        row(
            &format!("3. order p99 during a {large}-system save vs idle"),
            format!("{:?}", l.saving_p99),
            format!("{:?}", l.idle_p99),
            Some(l.saving_p99.as_secs_f64() / l.idle_p99.as_secs_f64()),
            "≤ 2",
        );
        row(
            &format!(
                "3. writer lock hold, {large} dirty systems (save took {:?})",
                l.save_duration
            ),
            format!("{:?}", l.lock_hold_large),
            String::new(),
            None,
            "≤ 10 ms",
        );
        row(
            &format!("3. lock hold, 1000 dirty in {large} vs 1000 dirty in 1000"),
            format!("{:?}", l.lock_hold_small_in_large),
            format!("{:?}", l.lock_hold_small_alone),
            None,
            "about equal",
        );
        out.insert("game".into(), json!({
        "orders_on": on[0], "orders_off": off[0], "reads_on": on[1], "reads_off": off[1],
        "orders_ratio": orders_ratio, "reads_ratio": reads_ratio, "orders_control_ratio": control_ratio,
        "order_ns_on": on[2], "order_ns_off": off[2],
        "idle_p50_ns": l.idle_p50.as_nanos() as u64, "idle_p99_ns": l.idle_p99.as_nanos() as u64,
        "saving_p50_ns": l.saving_p50.as_nanos() as u64, "saving_p99_ns": l.saving_p99.as_nanos() as u64,
        "save_large_us": l.save_duration.as_micros() as u64,
        "lock_hold_large_us": l.lock_hold_large.as_micros() as u64,
        "lock_hold_1000_in_large_us": l.lock_hold_small_in_large.as_micros() as u64,
        "lock_hold_1000_alone_us": l.lock_hold_small_alone.as_micros() as u64,
    }));
    }

    // 4
    if wanted(4) {
        let (engine_load, floor_load, db_bytes) = load(&dir, large);
        row(
            &format!("4. load {large} systems"),
            format!("{engine_load:?}"),
            format!("{floor_load:?}"),
            Some(floor_load.as_secs_f64() / engine_load.as_secs_f64()),
            "≥ 0.8 (floor time / engine time)",
        );
        row(
            "4. database bytes per system (of that galaxy)",
            format!("{db_bytes:.0} B"),
            String::new(),
            None,
            "",
        );
        out.insert("load".into(), json!({"systems": large, "engine_us": engine_load.as_micros() as u64, "floor_us": floor_load.as_micros() as u64, "db_bytes_per_system": db_bytes}));
    }

    // 5
    if wanted(5) {
        let memory_systems = if quick { 200_000 } else { 1_000_000 };
        let per_system = memory_per_system(&dir, memory_systems, true);
        let galaxy_alone = memory_per_system(&dir, memory_systems, false);
        row(
            &format!("5. resident bytes per system ({memory_systems} created and saved)"),
            format!("{per_system:.0} B"),
            String::new(),
            None,
            "≤ 160 B at 1000000",
        );
        row(
            "5. of which the galaxy itself (persistence off)",
            format!("{galaxy_alone:.0} B"),
            String::new(),
            None,
            "",
        );
        out.insert(
            "memory".into(),
            json!({"systems": memory_systems, "rss_bytes_per_system": per_system, "galaxy_bytes_per_system": galaxy_alone}),
        );
    }

    // 6
    if wanted(6) {
        // A multiple of three, so that each server goes first equally often.
        let (rounds, duration) = if quick {
            (6, Duration::from_millis(120))
        } else {
            // Many short rounds: the median of 36 paired ratios. Two identical servers
            // read 0.96-1.07 x each other this way, 0.88-1.19 x with 12 rounds of 400 ms.
            (36, Duration::from_millis(120))
        };
        let h = http(&dir, duration, rounds);
        for (route, what) in [(0, "GET system"), (1, "POST build")] {
            row(
                &format!("6. HTTP {what}, req/s, persistence on vs off"),
                format!("{:.0}", h.on[route]),
                format!("{:.0}", h.off[route]),
                Some(h.on_ratio[route]),
                "≥ 0.95",
            );
            row(
                &format!("6. HTTP {what}, req/s, control: two servers with persistence off"),
                format!("{:.0}", h.control[route]),
                format!("{:.0}", h.off[route]),
                Some(h.control_ratio[route]),
                "1 ± resolution",
            );
        }
        out.insert(
            "http".into(),
            json!({"clients": HTTP_CLIENTS, "get_on": h.on[0], "get_off": h.off[0], "get_control": h.control[0],
                   "post_on": h.on[1], "post_off": h.off[1], "post_control": h.control[1],
                   "get_ratio": h.on_ratio[0], "post_ratio": h.on_ratio[1],
                   "get_control_ratio": h.control_ratio[0], "post_control_ratio": h.control_ratio[1]}),
        );
    }

    // 7
    if wanted(7) {
        let (systems, rounds) = if quick { (200_000, 1) } else { (1_000_000, 3) };
        let (clean, unclean, bytes) = startup(&dir, systems, rounds);
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

    // 8
    if wanted(8) {
        let (huge, rounds, window) = if quick {
            (200_000, 1, Duration::from_secs(3))
        } else {
            (1_000_000, 3, Duration::from_secs(8))
        };
        let mut modes = Vec::new();
        // A steady stream, as clients send it (the issue's two HTTP clients placed about
        // 40 000 orders/s), and as many as two threads can place.
        for (rate, what) in [(BESIDE_RATE, "100000 orders/s"), (u64::MAX, "saturating")] {
            modes.push(beside_rows(&dir, &row, huge, rounds, window, rate, what));
        }
        out.insert("creation".into(), Value::Array(modes));
    }

    // 9
    if wanted(9) {
        let limit = raise_own_open_files();
        // The idle connections, the daemon's connections to them, a few spare.
        let idle = EDGE_IDLE.min(limit.saturating_sub(200) as usize);
        if idle < EDGE_IDLE {
            println!("9. the open-files limit is {limit}: holding {idle} idle connections, not {EDGE_IDLE}");
        }
        let (rounds, duration, idle_rounds, probes) = if quick {
            (3, Duration::from_millis(200), 1, 1000)
        } else {
            (18, Duration::from_millis(300), 3, 2000)
        };
        let e = edge_throughput(&dir, duration, rounds);
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
        let l = edge_idle(&dir, idle, idle_rounds, probes);
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

    // 10
    if wanted(10) {
        match pg_cluster::Cluster::private_durable() {
            None => println!("| 10. PostgreSQL: skipped, not installed |  |  |  |  |"),
            Some(cluster) => {
                let pg =
                    postgres_section(&cluster, &dir.join("beside-postgres"), quick, large, &row);
                out.insert("postgres".into(), pg);
            }
        }
    }

    // 11
    if wanted(11) {
        match pg_cluster::Cluster::private_durable() {
            None => {
                println!("| 11. Several daemons: skipped, PostgreSQL not installed |  |  |  |  |")
            }
            Some(cluster) => {
                let (orders, rounds) = if quick { (50_000, 2) } else { (200_000, 4) };
                let (with, without, ratio) =
                    pg_fence_overhead(&cluster, 10_000, orders, 1000, rounds);
                row(
                    "11. PostgreSQL orders persisted (batches of 1000), fence on vs off",
                    format!("{with:.0} orders/s"),
                    format!("{without:.0} orders/s"),
                    Some(ratio),
                    "≥ 0.95",
                );
                out.insert(
                    "fence".into(),
                    json!({"orders": orders, "batch": 1000, "rounds": rounds,
                           "with": with, "without": without, "ratio": ratio}),
                );
                let lease = 15;
                let failover_dir = dir.join("failover");
                std::fs::create_dir_all(&failover_dir).expect("a directory");
                let mut json_failover = Vec::new();
                for other_host in [true, false] {
                    if other_host && !may_unshare() {
                        println!("| 11. failover, owner on another host: skipped, unshare --uts needs root |  |  |  |  |");
                        continue;
                    }
                    let (failover, load) =
                        pg_failover(&cluster, &failover_dir, large, lease, other_host);
                    let (whose, target) = if other_host {
                        ("on another host", "≤ lease + load")
                    } else {
                        ("on this host (a restart)", "≈ load")
                    };
                    row(
                        &format!("11. failover after kill -9 of the owner {whose} of a {large}-system galaxy, lease {lease} s"),
                        format!("{failover:?}"),
                        format!("new owner's load: {load}"),
                        None,
                        target,
                    );
                    json_failover.push(json!({"other_host": other_host, "systems": large,
                        "lease_s": lease, "failover_ms": failover.as_millis() as u64, "load": load}));
                }
                out.insert("failover".into(), Value::Array(json_failover));
            }
        }
    }

    out.insert("quick".into(), Value::Bool(quick));
    println!("{}", Value::Object(out));
}
