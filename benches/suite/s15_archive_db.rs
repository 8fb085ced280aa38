//! Section 15: archives in the database. A played galaxy (section 14's: the classic
//! preset's economy, a day of random orders) restored from its archive against a load of
//! the same galaxy from its live rows, each as the first request after a restart waits
//! for it, on SQLite and (when installed) PostgreSQL, with where the restore's time goes;
//! the space its live rows leave reusable in the SQLite file once archived; and orders on
//! another galaxy while a large galaxy is archived beside them (section 8's measurement,
//! an archive instead of creations).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::archive;
use galactic_war::model::Galaxy;
use galactic_war::settings::Settings;
use galactic_war::testing::{PostgresReader, ReadStore, RowMask, SqliteReader, WRITER_PRAGMAS};
use rusqlite::{params, Connection, OpenFlags};
use serde_json::{json, Map, Value};

use crate::harness::{
    coords, median, paired_ratio, per_sec, percentile, pg_settings, row, settings, Run,
};
use crate::pg_cluster;
use crate::s08_creation::{
    beside_app, cheap_config, order_rows, orders_on_disk, spawn_orders, watch_commits, OrderWindow,
    BESIDE_RATE, BESIDE_THREADS,
};
use crate::s14_archive::{day_of_orders, played_config};

/// The played galaxy's name and seed.
const NAME: &str = "played";
const SEED: u64 = 15;

/// The project's SQLite migrations a galaxy's live rows need, for the floor.
const SCHEMA: [&str; 3] = [
    include_str!("../../sql/sqlite/0001_initial.sql"),
    include_str!("../../sql/sqlite/0002_galaxy_jobs.sql"),
    include_str!("../../sql/sqlite/0003_galaxy_sizes.sql"),
];

/// The large galaxy archived beside orders.
const HUGE: &str = "huge";

/// A read-only connection to the SQLite file `path`, beside the app's own.
fn peek(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("opens");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// Bytes of the file's pages in use, and of its free pages (reusable without growing it).
fn pages(conn: &Connection) -> (u64, u64) {
    let one = |pragma: &str| -> u64 {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
            .expect("pragma") as u64
    };
    let (count, free, size) = (one("page_count"), one("freelist_count"), one("page_size"));
    ((count - free) * size, free * size)
}

/// True when no galaxy's removal is left unfinished (an archived galaxy's rows purged).
fn purged(conn: &Connection) -> bool {
    conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM galaxy_jobs WHERE job = 'deleting')",
        [],
        |r| r.get(0),
    )
    .expect("looked up")
}

/// Waits, polling every 20 ms, until `done` (at most a minute).
fn wait_until(mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "purge stuck");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the played galaxy is stored.
enum Store<'c> {
    Sqlite(PathBuf),
    Postgres(pg_cluster::Database<'c>),
}

impl Store<'_> {
    fn label(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "SQLite",
            Store::Postgres(_) => "PostgreSQL",
        }
    }

    /// Settings as every section's (saves only when asked).
    fn settings(&self) -> Settings {
        match self {
            Store::Sqlite(path) => settings(path, |_| {}),
            Store::Postgres(database) => pg_settings(&database.url()),
        }
    }

    fn open(&self) -> AppState {
        AppState::open(&self.settings()).expect("opens")
    }

    /// A reader of the store's own, as the engine's pool holds.
    fn reader(&self) -> Box<dyn ReadStore> {
        match self {
            Store::Sqlite(path) => Box::new(SqliteReader::open(path).expect("reader")),
            Store::Postgres(database) => {
                Box::new(PostgresReader::open(&database.url()).expect("reader"))
            }
        }
    }

    /// True once no removal is left unfinished, asked on a connection of its own.
    fn purged(&self) -> Box<dyn FnMut() -> bool> {
        const NONE_LEFT: &str =
            "SELECT NOT EXISTS (SELECT 1 FROM galaxy_jobs WHERE job = 'deleting')";
        match self {
            Store::Sqlite(path) => {
                let conn = peek(path);
                Box::new(move || purged(&conn))
            }
            Store::Postgres(database) => {
                let mut client = database.client();
                Box::new(move || client.query_one(NONE_LEFT, &[]).expect("looked up").get(0))
            }
        }
    }

    /// PostgreSQL: `VACUUM ANALYZE`, as autovacuum does in time: a galaxy is archived for
    /// being idle and restored later, when the dead rows its purge left are long gone
    /// (left in place, the unique indexes' checks of the restore's inserts visit them).
    /// Section 10 does the same before its loads.
    fn settle(&self) {
        if let Store::Postgres(database) = self {
            database
                .client()
                .batch_execute("VACUUM ANALYZE")
                .expect("vacuum");
        }
    }

    /// [`pages`] of a SQLite file.
    fn pages(&self) -> Option<(u64, u64)> {
        match self {
            Store::Sqlite(path) => Some(pages(&peek(path))),
            Store::Postgres(_) => None,
        }
    }
}

/// The first request for `galaxy` in a fresh app on `store` (a system's details): how
/// long it waited, which is the load from live rows or the restore from the archive,
/// whichever the database holds; and the app.
fn first_request(store: &Store<'_>, galaxy: &Galaxy) -> (Duration, AppState) {
    let app = store.open();
    let first = &galaxy.systems()[0];
    let started = Instant::now();
    app.system_details(NAME, galaxy.tick(), first.x.into(), first.y.into())
        .expect("answered");
    let took = started.elapsed();
    (took, app)
}

/// The floor of a restore's writing: the galaxy's rows inserted by plain rusqlite into a
/// fresh file with the project's schema and the writer's pragmas, in one transaction with
/// prepared statements (the engine commits chunks of about 25 ms so that orders pass);
/// how long the transaction took.
fn floor_insert(path: &Path, galaxy: &Galaxy) -> Duration {
    let mut conn = Connection::open(path).expect("opens");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
    .expect("pragmas");
    conn.execute_batch(WRITER_PRAGMAS).expect("writer pragmas");
    for migration in SCHEMA {
        conn.execute_batch(migration).expect("schema");
    }
    let started = Instant::now();
    let tx = conn.transaction().expect("tx");
    tx.execute(
        "INSERT INTO galaxies (name, config_file, tick) VALUES (?1, ?2, ?3)",
        params![
            galaxy.name(),
            galaxy.config().to_toml(),
            galaxy.tick() as i64
        ],
    )
    .expect("galaxy");
    {
        let mut system = tx
            .prepare("INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .expect("prepare");
        let mut structure = tx
            .prepare(
                "INSERT INTO structures (system_id, structure_type, level) VALUES (?1, ?2, ?3)",
            )
            .expect("prepare");
        let mut event = tx
            .prepare("INSERT INTO events (system_id, completion_tick, action_type, structure_type) VALUES (?1, ?2, 'build', ?3)")
            .expect("prepare");
        for s in galaxy.systems() {
            let r = s.resources;
            system
                .execute(params![
                    galaxy.name(),
                    s.x,
                    s.y,
                    r.metal as i64,
                    r.crew as i64,
                    r.water as i64,
                    s.tick as i64
                ])
                .expect("system");
            let id = tx.last_insert_rowid();
            for kind in RowMask::new_system(galaxy.rules()).structures() {
                structure
                    .execute(params![id, kind.as_str(), s.levels[kind.index()]])
                    .expect("structure");
            }
            if let Some(build) = s.build {
                event
                    .execute(params![
                        id,
                        build.completion_tick as i64,
                        build.structure.as_str()
                    ])
                    .expect("event");
            }
        }
    }
    tx.execute(
        "INSERT INTO galaxy_sizes (name, systems) VALUES (?1, ?2)",
        params![galaxy.name(), galaxy.systems().len() as i64],
    )
    .expect("size");
    tx.commit().expect("commit");
    started.elapsed()
}

/// What the restore-vs-load part measured.
struct RestoreVsLoad {
    loads: Vec<Duration>,
    restores: Vec<Duration>,
    /// Reading the archive's body (a reader of its own) and decoding it, within a restore.
    read_decode: Vec<Duration>,
    /// The archive call (encode, the archive row and the mark, committed).
    archive_calls: Vec<Duration>,
    /// From the archive call to its galaxy's rows purged, on an idle writer.
    purges: Vec<Duration>,
    archive_bytes: u64,
    /// SQLite: bytes of pages the galaxy's live rows took (pages in use after its creation
    /// and orders, less before), and free pages' bytes gained by the first archive (after
    /// its purge, less before it).
    space: Option<(u64, u64)>,
    /// Creating the galaxy fresh (`create_galaxy`, the path a restore takes).
    created: Duration,
    /// SQLite: [`floor_insert`] of the same galaxy, once.
    floor: Option<Duration>,
}

/// The played galaxy of `systems` systems stored in `store` through an app (the same
/// orders section 14 plays), saved; the galaxy as it is then, how long its creation took,
/// and on SQLite the bytes of pages its rows take.
fn store_played(store: &Store<'_>, systems: u64) -> (Galaxy, Duration, Option<u64>) {
    let app = store.open();
    let empty = store.pages();
    let started = Instant::now();
    app.create_galaxy(NAME, played_config(systems), Some(SEED), 0)
        .expect("created");
    let created = started.elapsed();
    let places = coords(&app, NAME);
    for (tick, index, kind) in day_of_orders(systems) {
        let (x, y) = places[index];
        let _ = app.build(NAME, tick, x, y, kind);
    }
    app.save_all().expect("saved");
    let galaxy = app.galaxy_copy(NAME).expect("live");
    assert!(app.shutdown().all_saved());
    let live = store.pages().zip(empty).map(|((used, _), (e, _))| used - e);
    (galaxy, created, live)
}

/// Archives `galaxy` in `app` and waits for its rows to be purged: the archive's bytes;
/// the call's time and the purge's end from the call go into `m`.
fn archive_and_purge(store: &Store<'_>, app: &AppState, m: &mut RestoreVsLoad) {
    let mut purged = store.purged();
    let started = Instant::now();
    let archived = app.archive(NAME).expect("archived");
    m.archive_calls.push(started.elapsed());
    wait_until(&mut purged);
    m.purges.push(started.elapsed());
    m.archive_bytes = archived.bytes;
}

/// `rounds` rounds, each: restart, the first request loads the galaxy from its live rows;
/// archive it and let its rows go; restart, the first request restores it.
fn restore_vs_load(store: &Store<'_>, dir: &Path, systems: u64, rounds: usize) -> RestoreVsLoad {
    let (galaxy, created, live) = store_played(store, systems);
    store.settle();
    let mut m = RestoreVsLoad {
        loads: Vec::new(),
        restores: Vec::new(),
        read_decode: Vec::new(),
        archive_calls: Vec::new(),
        purges: Vec::new(),
        archive_bytes: 0,
        space: None,
        created,
        floor: None,
    };
    for round in 0..rounds {
        let (took, app) = first_request(store, &galaxy);
        let loaded = app.metrics();
        let counts = (loaded.galaxies_loaded_total, loaded.galaxies_restored_total);
        assert_eq!(counts, (1, 0), "a load");
        m.loads.push(took);
        let before = store.pages();
        archive_and_purge(store, &app, &mut m);
        assert!(app.shutdown().all_saved());
        drop(app);
        store.settle();
        if round == 0 {
            let gained = |(_, after): (u64, u64), (_, before): (u64, u64)| after - before;
            m.space = live.zip(store.pages().zip(before).map(|(a, b)| gained(a, b)));
        }
        // Where a restore's time goes: reading and decoding, the rest is writing rows.
        let reader = store.reader();
        let started = Instant::now();
        let body = reader.read_archive(NAME).expect("reads").expect("archived");
        let decoded = archive::decode(&body).expect("decodes");
        m.read_decode.push(started.elapsed());
        assert_eq!(decoded, galaxy, "the archive holds the galaxy");
        drop(reader);
        if round == 0 && matches!(store, Store::Sqlite(_)) {
            let floor_path = dir.join("archive-floor.db");
            m.floor = Some(floor_insert(&floor_path, &decoded));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", floor_path.display()));
            }
        }
        let (took, app) = first_request(store, &galaxy);
        let restored = app.metrics();
        let counts = (
            restored.galaxies_loaded_total,
            restored.galaxies_restored_total,
        );
        assert_eq!(counts, (0, 1), "a restore");
        m.restores.push(took);
        let back = app.galaxy_copy(NAME).expect("live");
        assert_eq!(back, galaxy, "restored whole");
        assert!(app.shutdown().all_saved());
        store.settle();
    }
    m
}

/// One window of orders on `play` beside an archive, or without one.
struct Window {
    p99: Duration,
    persisted: f64,
    placed: f64,
    max_unsaved: Duration,
}

impl OrderWindow for Window {
    fn p99(&self) -> Duration {
        self.p99
    }
    fn persisted(&self) -> f64 {
        self.persisted
    }
    fn placed(&self) -> f64 {
        self.placed
    }
    fn max_unsaved(&self) -> Duration {
        self.max_unsaved
    }
}

/// The archive beside orders: the call's time, the time from the call to its rows
/// purged, and the share of the measured window it ran in.
#[derive(Clone, Copy)]
struct Archived {
    call: Duration,
    purged: Duration,
    covered: f64,
}

/// A thread that archives [`HUGE`] once told to (when the measurement opens) and waits
/// for its rows to be purged: when the call began, the call's time, and when the purge
/// ended.
fn spawn_archive(
    app: &AppState,
    path: &Path,
    go: Receiver<()>,
) -> JoinHandle<(Instant, Duration, Instant)> {
    let (app, conn) = (app.clone(), peek(path));
    std::thread::spawn(move || {
        go.recv().expect("told to archive");
        let started = Instant::now();
        app.archive(HUGE).expect("archived");
        let call = started.elapsed();
        wait_until(|| purged(&conn));
        (started, call, Instant::now())
    })
}

/// Section 8's measurement of orders on `play` for `window`, in `app` on `path`; beside
/// the archiving of [`HUGE`] if `archiving`, begun when the measurement opens (its first
/// sample, at the first commit after a second of warm-up).
fn orders_window(
    app: &AppState,
    path: &Path,
    window: Duration,
    archiving: bool,
) -> (Window, Option<Archived>) {
    let reader = peek(path);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (go, told) = mpsc::channel();
    let archiver = archiving.then(|| spawn_archive(app, path, told));
    let (orderers, placed) = spawn_orders(app, &stop, BESIDE_THREADS, BESIDE_RATE);
    let placed_now = || {
        placed
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (first, last, max_unsaved) = watch_commits(app, started, window, || {
        // The first sample opens the measurement: the archive starts then (the second,
        // at its end, finds the archiver gone or busy; either way it is ignored).
        let _ = go.send(());
        (orders_on_disk(&reader), placed_now())
    });
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Duration> = orderers
        .into_iter()
        .flat_map(|t| t.join().expect("joins"))
        .collect();
    samples.sort();
    let measured = (last.0 - first.0).as_secs_f64();
    let archived = archiver.map(|a| {
        let (began, call, purged) = a.join().expect("joins");
        let ran = purged
            .min(last.0)
            .saturating_duration_since(began.max(first.0));
        Archived {
            call,
            purged: purged - began,
            covered: ran.as_secs_f64() / measured,
        }
    });
    (
        Window {
            p99: percentile(&samples, 0.99),
            persisted: per_sec(last.1 - first.1, last.0 - first.0),
            placed: per_sec(last.2 - first.2, last.0 - first.0),
            max_unsaved: Duration::from_millis(max_unsaved),
        },
        archived,
    )
}

/// One round: a fresh app holding `play` and a galaxy of `huge` cheap systems; a window
/// of orders without an archive and one beside the archive of the large galaxy, in the
/// order `round`'s parity says. (without, with, archive call, purge).
fn archive_round(
    dir: &Path,
    huge: u64,
    window: Duration,
    round: usize,
) -> (Window, Window, Archived) {
    let path = dir.join(format!("archive-beside-{round}.db"));
    let (app, reader) = beside_app(&path);
    drop(reader);
    app.create_galaxy(HUGE, cheap_config(huge), Some(4), 0)
        .expect("created");
    let (control, during, archived) = if round.is_multiple_of(2) {
        let (control, _) = orders_window(&app, &path, window, false);
        let (during, archived) = orders_window(&app, &path, window, true);
        (control, during, archived)
    } else {
        let (during, archived) = orders_window(&app, &path, window, true);
        let (control, _) = orders_window(&app, &path, window, false);
        (control, during, archived)
    };
    assert!(app.shutdown().all_saved());
    drop(app);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    (control, during, archived.expect("archived"))
}

/// Prints the rows of the archive beside orders and returns its JSON.
fn beside_rows(dir: &Path, huge: u64, rounds: usize, window: Duration) -> Value {
    let (mut control, mut during, mut archived) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (c, d, a) = archive_round(dir, huge, window, round);
        control.push(c);
        during.push(d);
        archived.push(a);
    }
    let of = |side: &[Window], f: fn(&Window) -> f64| side.iter().map(f).collect::<Vec<_>>();
    let persisted = |w: &Window| w.persisted;
    let placed = |w: &Window| w.placed;
    let seconds = |samples: Vec<f64>| Duration::from_secs_f64(median(samples));
    let beside = format!("archiving {huge} systems vs none, 100000 orders/s");
    let [p99_ratio, persisted_ratio, placed_ratio] =
        order_rows(15, &beside, &control, &during, Duration::from_secs(2));
    let calls = seconds(archived.iter().map(|a| a.call.as_secs_f64()).collect());
    let purges = seconds(archived.iter().map(|a| a.purged.as_secs_f64()).collect());
    let covered = median(archived.iter().map(|a| a.covered).collect());
    row(
        &format!("15. archiving {huge} systems beside 100000 orders/s: the call / its rows purged (share of the window it ran in)"),
        format!("{calls:?} / {purges:?} ({:.0} %)", covered * 100.0),
        String::new(),
        None,
        &format!("{:.0} systems/s purged", per_sec(huge, purges)),
    );
    let nanos = |w: &Window| w.p99.as_nanos() as u64;
    let unsaved = |w: &Window| w.max_unsaved.as_millis() as u64;
    json!({"systems": huge, "rounds": rounds, "threads": BESIDE_THREADS, "rate": BESIDE_RATE,
           "window_ms": window.as_millis() as u64,
           "p99_ns": during.iter().map(nanos).collect::<Vec<_>>(),
           "control_p99_ns": control.iter().map(nanos).collect::<Vec<_>>(),
           "persisted": of(&during, persisted), "control_persisted": of(&control, persisted),
           "placed": of(&during, placed), "control_placed": of(&control, placed),
           "max_unsaved_ms": during.iter().map(unsaved).collect::<Vec<_>>(),
           "control_max_unsaved_ms": control.iter().map(unsaved).collect::<Vec<_>>(),
           "p99_ratio": p99_ratio, "persisted_ratio": persisted_ratio,
           "placed_ratio": placed_ratio,
           "archive_call_ms": archived.iter().map(|a| a.call.as_millis() as u64).collect::<Vec<_>>(),
           "purged_ms": archived.iter().map(|a| a.purged.as_millis() as u64).collect::<Vec<_>>(),
           "window_share_archiving": archived.iter().map(|a| a.covered).collect::<Vec<_>>()})
}

/// Prints the rows of the restore against the load on `store`, and on SQLite of the
/// space freed; returns their JSON.
fn restore_rows(store: &Store<'_>, dir: &Path, systems: u64, rounds: usize) -> Value {
    let m = restore_vs_load(store, dir, systems, rounds);
    let on = store.label();
    let secs = |d: &[Duration]| d.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let med = |d: &[Duration]| Duration::from_secs_f64(median(secs(d)));
    let ratio = paired_ratio(&secs(&m.restores), &secs(&m.loads));
    row(
        &format!("15. restore from the archive vs load from live rows, {on} ({systems} systems, played; the first request after a restart)"),
        format!("{:?}", med(&m.restores)),
        format!("{:?}", med(&m.loads)),
        Some(ratio),
        "≤ 1.5 (restore time / load time)",
    );
    row(
        &format!(
            "15. within a restore, {on}: reading + decoding the archive (the rest writes the rows)"
        ),
        format!("{:?}", med(&m.read_decode)),
        String::new(),
        None,
        "",
    );
    row(
        &format!("15. restore vs creating the same galaxy fresh, {on} (the path a restore takes)"),
        format!("{:?}", med(&m.restores)),
        format!("{:?}", m.created),
        Some(med(&m.restores).as_secs_f64() / m.created.as_secs_f64()),
        "(restore / creation)",
    );
    if let Some(floor) = m.floor {
        row(
            "15. restore vs plain rusqlite inserting the same rows (one transaction, prepared statements)",
            format!("{:?}", med(&m.restores)),
            format!("{floor:?}"),
            Some(med(&m.restores).as_secs_f64() / floor.as_secs_f64()),
            "(restore / inserts)",
        );
    }
    row(
        &format!("15. archiving it, {on} (idle writer): the call / its rows purged"),
        format!("{:?} / {:?}", med(&m.archive_calls), med(&m.purges)),
        String::new(),
        None,
        "",
    );
    let mut space = json!(null);
    if let Some((live, freed)) = m.space {
        let share = freed as f64 / live as f64;
        row(
            "15. SQLite free pages gained by archiving vs the live rows' pages",
            format!("{:.1} MB", freed as f64 / 1e6),
            format!("{:.1} MB", live as f64 / 1e6),
            Some(share),
            "≥ 0.9 (freed / live)",
        );
        row(
            "15. archive bytes per system in the database (vs live rows' pages per system)",
            format!("{:.1} B", m.archive_bytes as f64 / systems as f64),
            format!("{:.0} B", live as f64 / systems as f64),
            Some(live as f64 / m.archive_bytes as f64),
            "(live / archive)",
        );
        space = json!({"live_bytes": live, "freed_bytes": freed, "freed_ratio": share});
    }
    let micros = |d: &[Duration]| d.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>();
    json!({"store": on, "systems": systems, "rounds": rounds,
           "load_us": micros(&m.loads), "restore_us": micros(&m.restores),
           "read_decode_us": micros(&m.read_decode),
           "floor_insert_us": m.floor.map(|f| f.as_micros() as u64),
           "created_us": m.created.as_micros() as u64,
           "archive_call_us": micros(&m.archive_calls), "purged_us": micros(&m.purges),
           "restore_ratio": ratio, "archive_bytes": m.archive_bytes, "space": space})
}

/// Section 15: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let dir = run.dir.as_path();
    let (rounds, pg_rounds, huge, beside_rounds, window) = if run.quick {
        (2, 1, 200_000, 1, Duration::from_secs(4))
    } else {
        (3, 1, 1_000_000, 2, Duration::from_secs(6))
    };
    let sqlite = Store::Sqlite(dir.join("archive-db.db"));
    let mut restore = vec![restore_rows(&sqlite, dir, run.large, rounds)];
    match pg_cluster::Cluster::private_durable() {
        None => println!("| 15. PostgreSQL: skipped, not installed |  |  |  |  |"),
        Some(cluster) => {
            let postgres = Store::Postgres(cluster.database());
            restore.push(restore_rows(&postgres, dir, run.large, pg_rounds));
        }
    }
    let beside = beside_rows(dir, huge, beside_rounds, window);
    out.insert(
        "archive_db".into(),
        json!({"restore": restore, "beside": beside}),
    );
}
