//! Flush, shutdown, migrations, and the modes without a database file.

use std::time::{Duration, Instant};

use galactic_war::app::{AppState, FailureKind, PersistenceState};
use galactic_war::model::StructureKind;
use galactic_war::settings::DatabaseUrl;
use galactic_war::testing::{AppInternals, SCHEMA_VERSION};

use crate::util::{blitz, both_stores, coords, endless_config, file_bytes, TestDb};

const COLONY: StructureKind = StructureKind::Colony;
const NEVER: Duration = Duration::from_secs(3600);

both_stores!(flush_returns_once_every_earlier_change_is_committed);
fn flush_returns_once_every_earlier_change_is_committed(db: &TestDb) {
    // A window so long that only the flush can be what saved the changes.
    let app = db.open(|s| s.coalescing_delay = NEVER);
    app.create_galaxy("f", endless_config(30), Some(1), 0)
        .unwrap();
    let systems = coords(&app.galaxy_copy("f").unwrap());
    for &(x, y) in &systems {
        app.build("f", 5, x, y, COLONY).unwrap();
    }
    assert_ne!(
        db.stored("f").unwrap().systems(),
        app.galaxy_copy("f").unwrap().systems()
    );
    assert_eq!(app.save_all().unwrap(), 30);
    let stored = db.stored("f").unwrap();
    assert_eq!(stored.systems(), app.galaxy_copy("f").unwrap().systems());
    assert_eq!(stored.tick(), 5);
    // Nothing left: the next flush writes no system.
    assert_eq!(app.save_all().unwrap(), 0);
}

both_stores!(shutdown_flushes_everything_and_stops_the_writer);
fn shutdown_flushes_everything_and_stops_the_writer(db: &TestDb) {
    let app = db.open(|s| s.coalescing_delay = NEVER);
    app.create_galaxy("s", endless_config(30), Some(1), 0)
        .unwrap();
    let systems = coords(&app.galaxy_copy("s").unwrap());
    for &(x, y) in &systems {
        app.build("s", 5, x, y, COLONY).unwrap();
    }
    let memory = app.galaxy_copy("s").unwrap();
    let report = app.shutdown();
    assert!(report.all_saved(), "{report:?}");
    assert!(app.shutdown().all_saved(), "a second shutdown is harmless");
    assert!(app.save_all().is_err(), "the writer is gone after shutdown");
    drop(app);
    assert_eq!(db.stored("s").unwrap().systems(), memory.systems());
}

both_stores!(dropping_the_state_still_flushes);
fn dropping_the_state_still_flushes(db: &TestDb) {
    let app = db.open(|s| s.coalescing_delay = NEVER);
    app.create_galaxy("d", endless_config(5), Some(1), 0)
        .unwrap();
    let (x, y) = coords(&app.galaxy_copy("d").unwrap())[0];
    app.build("d", 5, x, y, COLONY).unwrap();
    let memory = app.galaxy_copy("d").unwrap();
    drop(app);
    assert_eq!(db.stored("d").unwrap().systems(), memory.systems());
}

#[test]
fn shutdown_with_a_locked_database_names_every_unsaved_galaxy() {
    let db = TestDb::new();
    let app = db.open(|s| s.shutdown_timeout = Duration::from_secs(1));
    app.create_galaxy("one", endless_config(10), Some(1), 0)
        .unwrap();
    app.create_galaxy("two", endless_config(10), Some(2), 0)
        .unwrap();
    app.create_galaxy("clean", endless_config(10), Some(3), 0)
        .unwrap();
    let locker = db.connection();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for (name, count) in [("one", 3), ("two", 5)] {
        let systems = coords(&app.galaxy_copy(name).unwrap());
        for &(x, y) in &systems[..count] {
            app.build(name, 5, x, y, COLONY).unwrap();
        }
    }
    let started = Instant::now();
    let report = app.shutdown();
    assert!(!report.all_saved());
    assert_eq!(
        report.unsaved,
        [("one".to_owned(), 3), ("two".to_owned(), 5)]
    );
    // The timeout plus at most one busy wait of SQLite's.
    assert!(started.elapsed() < Duration::from_secs(30));
    locker.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_writer_stuck_in_the_database_does_not_hold_shutdown_past_its_deadline() {
    let db = TestDb::new();
    let app = db.open(|s| {
        s.coalescing_delay = NEVER;
        s.shutdown_timeout = Duration::from_secs(1);
    });
    app.create_galaxy("held", endless_config(10), Some(1), 0)
        .unwrap();
    // A database call that never returns by itself (as on a stalled server): the writer
    // thread waits on `release` inside its store.
    let (release, held) = crossbeam_channel::bounded::<()>(0);
    let (entered, inside) = crossbeam_channel::bounded::<()>(1);
    let stuck = app.clone();
    std::thread::spawn(move || {
        stuck.writer().unwrap().with_connection(move |_| {
            entered.send(()).unwrap();
            let _ = held.recv();
        })
    });
    inside.recv().unwrap();
    let (x, y) = coords(&app.galaxy_copy("held").unwrap())[0];
    app.build("held", 5, x, y, COLONY).unwrap();
    let (reported, report) = crossbeam_channel::bounded(1);
    let stopping = app.clone();
    std::thread::spawn(move || reported.send(stopping.shutdown()).unwrap());
    // Bounded by the timeout and a short grace: well within a minute on any machine.
    let report = report
        .recv_timeout(Duration::from_secs(60))
        .expect("shutdown returned while the writer was stuck");
    assert_eq!(report.unsaved, [("held".to_owned(), 1)]);
    assert!(report.error.is_some());
    drop(release);
}

#[test]
fn migrations_run_once_and_reopening_is_a_no_op() {
    let db = TestDb::new();
    {
        let app = db.open(|_| {});
        app.create_galaxy("m", blitz(), Some(1), 0).unwrap();
    }
    let version = |db: &TestDb| -> i64 {
        db.connection()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&db), SCHEMA_VERSION);
    let before = db.stored("m").unwrap();
    {
        let _again = db.open(|_| {});
    }
    assert_eq!(version(&db), SCHEMA_VERSION);
    assert_eq!(db.stored("m").unwrap(), before);
    let mode: String = db
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_database_from_a_newer_version_is_refused_and_left_untouched() {
    let db = TestDb::new();
    {
        let conn = db.connection();
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = file_bytes(&db.path());
    let err = AppState::open(&db.settings(|_| {})).err().expect("refused");
    assert!(
        err.kind == FailureKind::NewerSchema && err.message.contains("schema version 99"),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(file_bytes(&db.path()), before);
    assert!(!db.dir().join("galactic_war.db-wal").exists());
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let db = TestDb::new();
    std::fs::write(
        db.path(),
        b"this is not an SQLite database, just some text.......",
    )
    .unwrap();
    let before = file_bytes(&db.path());
    let err = AppState::open(&db.settings(|_| {})).err().expect("refused");
    assert!(err.to_string().contains("not a database"), "{err}");
    assert_eq!(file_bytes(&db.path()), before);
}

#[test]
fn parent_directories_are_created() {
    let db = TestDb::new();
    let mut settings = db.settings(|_| {});
    let nested = db.dir().join("a/b/c/game.db");
    settings.database = DatabaseUrl::File(nested.clone());
    let app = AppState::open(&settings).unwrap();
    app.create_galaxy("n", blitz(), Some(1), 0).unwrap();
    assert!(nested.exists());
}

#[test]
fn disabled_persistence_keeps_the_same_api_in_memory() {
    let db = TestDb::new();
    let app = db.open(|s| s.enabled = false);
    assert_eq!(app.health().persistence.state, PersistenceState::Disabled);
    assert_eq!(app.health().status, "ok");
    app.create_galaxy("mem", endless_config(5), Some(1), 0)
        .unwrap();
    let (x, y) = coords(&app.galaxy_copy("mem").unwrap())[0];
    app.build("mem", 1, x, y, COLONY).unwrap();
    assert_eq!(
        app.dirty_systems(),
        0,
        "nothing accumulates that nobody will save"
    );
    assert_eq!(app.save_all().unwrap(), 0);
    assert_eq!(app.list().unwrap().len(), 1);
    assert!(!db.path().exists(), "no database file is created");
}

#[test]
fn an_in_memory_database_works_like_a_file() {
    let db = TestDb::new();
    let mut settings = db.settings(|_| {});
    settings.database = DatabaseUrl::Memory;
    let app = AppState::open(&settings).unwrap();
    app.create_galaxy("mem", endless_config(5), Some(1), 0)
        .unwrap();
    let (x, y) = coords(&app.galaxy_copy("mem").unwrap())[0];
    app.build("mem", 1, x, y, COLONY).unwrap();
    assert_eq!(app.save_all().unwrap(), 1);
    assert_eq!(app.health().persistence.state, PersistenceState::Healthy);
    assert!(app.shutdown().all_saved());
}

both_stores!(galaxy_ticks_advanced_by_reads_are_saved_without_their_systems);
fn galaxy_ticks_advanced_by_reads_are_saved_without_their_systems(db: &TestDb) {
    // When the periodic work saves them, and that it writes nothing when no tick moved:
    // the writer's unit tests, on a manual clock.
    let app = db.open(|s| s.coalescing_delay = NEVER);
    app.create_galaxy("t", blitz(), Some(1), 0).unwrap();
    let before = app.metrics();
    app.galaxy_details("t", 12_345).unwrap();
    assert_eq!(app.dirty_systems(), 0, "a read changes no system");
    assert_eq!(app.save_all().unwrap(), 0);
    assert_eq!(
        db.stored("t").unwrap().tick(),
        12_345,
        "the tick reached the disk"
    );
    let after = app.metrics();
    assert_eq!(
        after.systems_written, before.systems_written,
        "no system was written"
    );
    assert_eq!(
        after.rows_written,
        before.rows_written + 1,
        "only the galaxy row"
    );
}

#[test]
fn with_the_wall_clock_an_older_tick_means_now() {
    use galactic_war::app::AppError;
    use galactic_war::model::GameError;
    let db = TestDb::new();
    let app = db.open(|_| {});
    app.create_galaxy("w", endless_config(5), Some(1), 0)
        .unwrap();
    let (x, y) = coords(&app.galaxy_copy("w").unwrap())[0];
    app.system_details("w", 100, x, y).unwrap();
    assert!(matches!(
        app.build("w", 50, x, y, COLONY),
        Err(AppError::Game(GameError::TickOutOfOrder {
            tick: 50,
            galaxy_tick: 100
        }))
    ));
    // Two requests that read the clock in one order and took the lock in the other.
    app.use_wall_clock();
    let build = app.build("w", 50, x, y, COLONY).unwrap();
    assert_eq!(
        build.completion_tick, 100,
        "the order happened at the galaxy's tick"
    );
    assert_eq!(app.galaxy_copy("w").unwrap().tick(), 100);
}

#[test]
fn the_wal_is_truncated_when_the_database_goes_idle() {
    let db = TestDb::new();
    // A short interval, polled: the truncation comes at the first one the database idles.
    let app = db.open(|s| s.auto_save_interval = Duration::from_millis(200));
    app.create_galaxy("w", endless_config(500), Some(1), 0)
        .unwrap();
    let wal = db.dir().join("galactic_war.db-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let systems = coords(&app.galaxy_copy("w").unwrap());
    for round in 0..20u64 {
        for &(x, y) in &systems {
            app.build("w", round, x, y, COLONY).unwrap();
        }
        app.save_all().unwrap();
        // Within journal_size_limit plus one checkpoint's worth of frames.
        assert!(
            wal_size() <= 64 * 1024 * 1024 + 40 * 1024 * 1024,
            "{}",
            wal_size()
        );
    }
    assert!(wal_size() > 0, "the saves went through the WAL");
    assert!(
        crate::util::wait_for(Duration::from_secs(10), || wal_size() == 0),
        "an idle database's WAL is truncated (still {} bytes)",
        wal_size()
    );
}

#[test]
fn back_to_back_saves_keep_the_wal_near_its_checkpoint_size() {
    // Checkpoints run beside the writer, which keeps appending to the WAL; SQLite reuses
    // the file from its start only when a batch begins with all of it copied back. Saves
    // with no pause between them must still get there, or the WAL grows without bound.
    const PAGES: u32 = 64;
    const FRAME: u64 = 4096 + 24;
    let db = TestDb::new();
    let app = db.open(|s| s.checkpoint_pages = PAGES);
    app.create_galaxy("w", endless_config(500), Some(1), 0)
        .unwrap();
    let wal = db.dir().join("galactic_war.db-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let systems = coords(&app.galaxy_copy("w").unwrap());
    let mut largest = 0;
    for round in 0..300u64 {
        for &(x, y) in systems.iter().skip(round as usize % 10 * 50).take(50) {
            app.build("w", round, x, y, COLONY).unwrap();
        }
        app.save_all().unwrap();
        largest = largest.max(wal_size());
    }
    // Never reusing the file, 300 saves write over 2000 frames here; reusing it, about
    // 100. The bound (1024) leaves room for a slow disk's fsyncs, or a checkpoint thread
    // starved of a core on a busy machine, to delay a few restarts (8 × failed once there).
    assert!(
        largest <= 16 * u64::from(PAGES) * FRAME,
        "largest WAL: {} frames",
        largest / FRAME
    );
    let memory = app.galaxy_copy("w").unwrap();
    drop(app);
    assert_eq!(db.stored("w").unwrap().systems(), memory.systems());
}

both_stores!(an_idle_galaxy_leaves_memory_and_comes_back_identical);
fn an_idle_galaxy_leaves_memory_and_comes_back_identical(db: &TestDb) {
    // Short timers, polled: when exactly a galaxy leaves memory (and that a dirty one
    // never does) is the writer's unit tests' to prove, on a manual clock; this proves
    // that what comes back is the same galaxy.
    let app = db.open(|s| {
        s.auto_save_interval = Duration::from_millis(100);
        s.galaxy_idle = Some(Duration::from_millis(100));
    });
    app.create_galaxy("idle", endless_config(50), Some(1), 0)
        .unwrap();
    let systems = coords(&app.galaxy_copy("idle").unwrap());
    for &(x, y) in &systems[..10] {
        app.build("idle", 7, x, y, COLONY).unwrap();
    }
    let before = app.galaxy_copy("idle").unwrap();
    assert!(
        crate::util::wait_for(Duration::from_secs(15), || app.galaxies_loaded() == 0),
        "evicted once idle and saved"
    );
    assert_eq!(app.metrics().galaxies_evicted_total, 1);
    assert_eq!(app.systems_loaded(), 0);
    let loads = app.metrics().galaxies_loaded_total;
    let after = app.galaxy_copy("idle").unwrap();
    assert_eq!(after.systems(), before.systems());
    assert_eq!(after.tick(), before.tick());
    assert_eq!(
        app.metrics().galaxies_loaded_total,
        loads + 1,
        "loaded again on access"
    );
    // And it plays on.
    app.build("idle", 8, systems[0].0, systems[0].1, COLONY)
        .unwrap();
}
