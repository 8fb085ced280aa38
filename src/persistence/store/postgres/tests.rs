//! The PostgreSQL store against a real server: the one `GWAR_TEST_POSTGRES_URL` names
//! (any database on it; each test creates and drops its own), else a throwaway cluster
//! started by the integration suites' harness, shared by these tests.

use ::postgres::{Client, NoTls};

/// The integration tests' harness, one file for both.
#[path = "../../../../tests/common/postgres.rs"]
mod cluster;

use super::super::{CreationProgress, GalaxyRows, NewGalaxy, SystemRow, WriteStats};
use super::*;
use crate::model::{GalaxyConfig, RowMask, StructureKind};

/// A database of its own for one test, dropped at the end.
struct TestDb {
    base: String,
    name: String,
    url: String,
}

impl TestDb {
    /// `None` (after a notice) when no server is configured.
    fn new(tag: &str) -> Option<TestDb> {
        let base = match std::env::var("GWAR_TEST_POSTGRES_URL") {
            Ok(base) => base,
            // The integration suites' throwaway cluster (which fails under CI when
            // PostgreSQL is missing, and skips with a notice elsewhere).
            Err(_) => cluster::shared()?.url("postgres"),
        };
        let name = format!("gwar_unit_{tag}_{}", std::process::id());
        let mut admin = Client::connect(&base, NoTls).expect("GWAR_TEST_POSTGRES_URL connects");
        // Two calls: one message of several statements is one transaction, which
        // neither statement may run in.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let url = with_dbname(&base, &name);
        Some(TestDb { base, name, url })
    }

    fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).unwrap()
    }

    fn count(&self, table: &str) -> i64 {
        self.client()
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.base, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `url` with its database replaced by `name` (its query string kept).
fn with_dbname(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = rest.split('/').next().unwrap();
    format!("{scheme}://{authority}/{name}{query}")
}

fn new_galaxy(name: &str) -> Galaxy {
    let (config, _) = GalaxyConfig::preset("blitz").unwrap();
    let mut galaxy = Galaxy::create(name, config, 9, 100).unwrap();
    galaxy.take_changes();
    galaxy
}

fn as_new<T>(galaxy: &Galaxy, write: impl FnOnce(&NewGalaxy) -> T) -> T {
    let config_toml = galaxy.config().to_toml();
    write(&NewGalaxy {
        name: galaxy.name(),
        config_toml: &config_toml,
        tick: galaxy.tick(),
        systems: galaxy.systems(),
        rows: RowMask::new_system(galaxy.rules()),
    })
}

/// Creates `galaxy` in chunks of 64 systems, checking that it stays invisible until the
/// last chunk.
fn insert(store: &mut PostgresWriter, reader: &PostgresReader, galaxy: &Galaxy) -> WriteStats {
    as_new(galaxy, |new| {
        let mut progress = CreationProgress::default();
        let mut total = WriteStats::default();
        loop {
            let stats = store.create_chunk(new, &mut progress, 64).unwrap();
            total.systems += stats.systems;
            total.rows += stats.rows;
            let visible = reader.galaxy_exists(galaxy.name()).unwrap();
            if progress.written == galaxy.systems().len() {
                assert!(visible, "a created galaxy is visible");
                return total;
            }
            assert!(!visible, "a galaxy being created is invisible");
            assert_eq!(reader.load_galaxy(galaxy.name()).unwrap(), None);
        }
    })
}

fn take_batch(galaxy: &mut Galaxy, tick: u64) -> GalaxyRows {
    let changes = galaxy.take_changes();
    let mut systems: Vec<SystemRow> = changes
        .iter()
        .map(|(index, rows)| SystemRow {
            index,
            rows,
            system: *galaxy.system(index).unwrap(),
        })
        .collect();
    systems.sort_unstable_by_key(|row| row.index);
    GalaxyRows {
        name: galaxy.name().to_owned(),
        tick: Some(tick),
        systems,
    }
}

/// A database holding the blitz galaxy "g", its writer and a reader.
fn stored_galaxy(tag: &str) -> Option<(TestDb, PostgresWriter, PostgresReader, Galaxy)> {
    let db = TestDb::new(tag)?;
    let mut store = PostgresWriter::open(&db.url).unwrap();
    let reader = PostgresReader::open(&db.url).unwrap();
    let galaxy = new_galaxy("g");
    insert(&mut store, &reader, &galaxy);
    Some((db, store, reader, galaxy))
}

/// Ends the writer's session from another one, as an operator's `pg_terminate_backend`.
fn terminate_writer(db: &TestDb, store: &mut PostgresWriter) {
    let pid = store.backend_pid().unwrap();
    let row = db
        .client()
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert!(row.get::<_, bool>(0));
    // The server ends the backend asynchronously; its lock goes with it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db
        .client()
        .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .unwrap()
        .is_some()
    {
        assert!(std::time::Instant::now() < deadline, "the backend ended");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn error_kinds_follow_the_sqlstate() {
    let kind = |code: &str| state_kind(&SqlState::from_code(code));
    assert_eq!(kind("53100"), FailureKind::Full);
    assert_eq!(kind("57014"), FailureKind::Busy);
    assert_eq!(kind("40001"), FailureKind::Busy);
    assert_eq!(kind("55P03"), FailureKind::Busy);
    assert_eq!(kind("57P01"), FailureKind::Unavailable);
    assert_eq!(kind("25006"), FailureKind::Unavailable, "a demoted primary");
    assert_eq!(kind("08006"), FailureKind::Unavailable);
    assert_eq!(kind("XX001"), FailureKind::Corrupt);
    assert_eq!(kind("23505"), FailureKind::Other);
    assert_eq!(LOCK_KEY, (1_735_876_978_i64 << 32) | 762_277_477);
}

#[test]
fn a_server_that_is_not_there_is_unavailable() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = PostgresWriter::open("postgres://nobody@127.0.0.1:1/none")
        .err()
        .unwrap();
    assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
    assert!(
        err.to_string()
            .contains("postgres://nobody@127.0.0.1:1/none"),
        "{err}"
    );
}

#[test]
fn migrations_create_the_schema_and_a_newer_one_is_refused_untouched() {
    let Some(db) = TestDb::new("migrations") else {
        return;
    };
    let mut store = PostgresWriter::open(&db.url).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(
        SCHEMA_VERSION,
        crate::persistence::store::SCHEMA_VERSION,
        "both stores at one version"
    );
    let mut client = db.client();
    let index: String = client
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'events_system_completion'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(index.contains("(system_id, completion_tick)"), "{index}");
    let options: Option<Vec<String>> = client
        .query_one(
            "SELECT reloptions FROM pg_class WHERE relname = 'systems'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(options.unwrap(), ["fillfactor=90"]);
    store.finish(true);
    // Opening again applies nothing; a newer schema is refused before anything writes.
    drop(PostgresWriter::open(&db.url).unwrap());
    client
        .execute(
            "INSERT INTO galactic_war_schema (version, name) VALUES (99, 'future')",
            &[],
        )
        .unwrap();
    let err = PostgresWriter::open(&db.url).err().unwrap();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    let err = PostgresReader::open(&db.url).err().unwrap();
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    assert_eq!(db.count("galactic_war_schema"), 3, "left untouched");
}

#[test]
fn a_created_galaxy_loads_back_identical() {
    let Some((db, mut store, reader, galaxy)) = stored_galaxy("create") else {
        return;
    };
    assert_eq!(db.count("systems"), 200);
    assert_eq!(db.count("structures"), 200 * 5);
    assert_eq!(db.count("events"), 0);
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy.clone()));
    assert_eq!(reader.load_galaxy("nope").unwrap(), None);
    assert_eq!(reader.galaxy_names().unwrap(), ["g"]);
    let again = as_new(&galaxy, |new| {
        store.create_chunk(new, &mut CreationProgress::default(), 1000)
    });
    assert!(again.is_err(), "names are unique");
}

#[test]
fn a_batch_writes_only_changed_rows_and_loads_back() {
    let Some((db, mut store, reader, mut galaxy)) = stored_galaxy("batch") else {
        return;
    };
    let (x, y) = galaxy.systems()[7].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    let tick = galaxy.tick();
    let batch = take_batch(&mut galaxy, tick);
    let stats = store
        .write_batch(&[], std::slice::from_ref(&batch))
        .unwrap();
    // galaxy tick + system row + the new event
    assert_eq!(
        stats,
        WriteStats {
            systems: 1,
            rows: 3
        }
    );
    assert_eq!(db.count("events"), 1);
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy.clone()));
    // Writing the same rows again replaces, never duplicates.
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(db.count("events"), 1);
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy.clone()));
    // A completed build is saved with the next order, its event row gone or replaced.
    let (x, y) = galaxy.systems()[0].coords();
    let (x, y) = (u64::from(x), u64::from(y));
    galaxy
        .build(300, x, y, StructureKind::AsteroidMine)
        .unwrap();
    galaxy
        .build(500, x, y, StructureKind::WaterHarvester)
        .unwrap();
    store
        .write_batch(&[], &[take_batch(&mut galaxy, 500)])
        .unwrap();
    let (loaded, ids) = reader.load_galaxy_with_ids("g").unwrap().unwrap();
    assert_eq!(loaded, galaxy);
    // The ids a load reads are those the writer would look up.
    let session = store.session.as_mut().unwrap();
    let looked_up = write::fetch_ids(&mut session.client, &mut session.prepared, "g").unwrap();
    assert_eq!(ids.0, looked_up);
}

#[test]
fn a_structure_row_missing_from_the_database_is_inserted_not_lost() {
    let Some((db, mut store, reader, mut galaxy)) = stored_galaxy("missing") else {
        return;
    };
    let (x, y) = galaxy.systems()[0].coords();
    db.client()
        .execute(
            "DELETE FROM structures WHERE structure_type = 'asteroidmine'
             AND system_id = (SELECT id FROM systems WHERE x = $1 AND y = $2)",
            &[&i64::from(x), &i64::from(y)],
        )
        .unwrap();
    galaxy
        .build(100, x.into(), y.into(), StructureKind::AsteroidMine)
        .unwrap();
    galaxy
        .build(300, x.into(), y.into(), StructureKind::Colony)
        .unwrap();
    store
        .write_batch(&[], &[take_batch(&mut galaxy, 300)])
        .unwrap();
    assert_eq!(db.count("structures"), 200 * 5);
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
}

#[test]
fn deletion_and_interrupted_creations_are_purged() {
    let Some((db, mut store, reader, _)) = stored_galaxy("purge") else {
        return;
    };
    insert(&mut store, &reader, &new_galaxy("h"));
    // A creation stopped after 50 systems, as by a crash.
    let half = new_galaxy("half");
    as_new(&half, |new| {
        store.create_chunk(new, &mut CreationProgress::default(), 50)
    })
    .unwrap();
    store.write_batch(&["g".to_owned()], &[]).unwrap();
    assert_eq!(reader.galaxy_names().unwrap(), ["h"], "hidden once marked");
    store.finish(true);
    let mut store = PostgresWriter::open(&db.url).unwrap();
    assert_eq!(
        store.unfinished_jobs().unwrap(),
        [
            GalaxyJob::Creating("half".into()),
            GalaxyJob::Deleting("g".into())
        ]
    );
    while !store.purge_chunk("half", 16).unwrap().1 {}
    while !store.purge_chunk("g", 64).unwrap().1 {}
    assert_eq!(db.count("galaxies"), 1);
    assert_eq!(db.count("galaxy_jobs"), 0);
    assert_eq!(db.count("systems"), 200);
    assert_eq!(db.count("structures"), 1000);
    // A purge never touches a live galaxy.
    assert!(store.purge_chunk("h", 1000).unwrap().1);
    assert_eq!(db.count("systems"), 200);
    insert(&mut store, &reader, &new_galaxy("g"));
}

#[test]
fn a_stale_id_cache_is_an_error_not_a_wrong_write() {
    let Some((_db, mut store, _reader, galaxy)) = stored_galaxy("stale") else {
        return;
    };
    let mut system = *galaxy.system(0).unwrap();
    system.x += 1;
    let batch = GalaxyRows {
        name: "g".into(),
        tick: None,
        systems: vec![SystemRow {
            index: 0,
            rows: RowMask::SYSTEM,
            system,
        }],
    };
    let err = store.write_batch(&[], &[batch]).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Inconsistent, "{err}");
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_database() {
    let Some(db) = TestDb::new("second") else {
        return;
    };
    let mut first = PostgresWriter::open(&db.url).unwrap();
    let err = PostgresWriter::open(&db.url).err().unwrap();
    assert!(matches!(err, StoreError::PostgresInUse { .. }), "{err}");
    assert!(err.to_string().contains(&db.name), "{err}");
    // Readers and tools still work beside it.
    assert_eq!(
        PostgresReader::open(&db.url)
            .unwrap()
            .galaxy_names()
            .unwrap(),
        Vec::<String>::new()
    );
    let pid = first.backend_pid().unwrap();
    let holder: i32 = db.client().query_one(WRITER_PID_SQL, &[]).unwrap().get(0);
    assert_eq!(holder, pid);
    first.finish(true);
    PostgresWriter::open(&db.url).unwrap();
}

#[test]
fn a_terminated_writer_fails_one_batch_then_reconnects() {
    let Some((db, mut store, reader, mut galaxy)) = stored_galaxy("terminate") else {
        return;
    };
    terminate_writer(&db, &mut store);
    let (x, y) = galaxy.systems()[3].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    let batch = take_batch(&mut galaxy, 200);
    let err = store
        .write_batch(&[], std::slice::from_ref(&batch))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
    // The next attempt opens a new session (and takes the lock again).
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
    let holder: i32 = db.client().query_one(WRITER_PID_SQL, &[]).unwrap().get(0);
    assert_eq!(holder, store.backend_pid().unwrap());
}

#[test]
fn a_writer_that_lost_its_lock_to_another_writes_nothing() {
    let Some((db, mut store, _reader, galaxy)) = stored_galaxy("lost") else {
        return;
    };
    terminate_writer(&db, &mut store);
    let mut other = db.client();
    let taken: bool = other
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .unwrap()
        .get(0);
    assert!(taken);
    let batch = GalaxyRows {
        name: "g".into(),
        tick: Some(galaxy.tick() + 50),
        systems: Vec::new(),
    };
    for _ in 0..3 {
        let err = store
            .write_batch(&[], std::slice::from_ref(&batch))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::PostgresInUse { .. })
                || err.kind() == FailureKind::Unavailable,
            "{err}"
        );
    }
    let tick: i64 = db
        .client()
        .query_one("SELECT tick FROM galaxies WHERE name = 'g'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tick as u64, galaxy.tick(), "nothing written");
    drop(other);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store
        .write_batch(&[], std::slice::from_ref(&batch))
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "the lock came back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_statement_timeout_fails_as_busy_and_the_next_batch_passes() {
    let Some((db, mut store, reader, galaxy)) = stored_galaxy("timeout") else {
        return;
    };
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE galaxies IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    store
        .session
        .as_mut()
        .unwrap()
        .client
        .batch_execute("SET statement_timeout = '200ms'")
        .unwrap();
    let batch = GalaxyRows {
        name: "g".into(),
        tick: Some(galaxy.tick() + 5),
        systems: Vec::new(),
    };
    let err = store
        .write_batch(&[], std::slice::from_ref(&batch))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Busy, "{err}");
    tx.rollback().unwrap();
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(
        reader.load_galaxy("g").unwrap().unwrap().tick(),
        galaxy.tick() + 5
    );
}

#[test]
fn a_reader_only_reads_and_survives_a_lost_session() {
    let Some((db, _store, reader, galaxy)) = stored_galaxy("reader") else {
        return;
    };
    let err = reader
        .client
        .borrow_mut()
        .execute("DELETE FROM galaxies", &[])
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
    let pid: i32 = reader
        .client
        .borrow_mut()
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    db.client()
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
}

#[test]
fn check_passes_on_a_sound_database_and_names_a_broken_rule() {
    let Some((db, _store, _reader, _galaxy)) = stored_galaxy("check") else {
        return;
    };
    let report = crate::check::check_postgres(&db.url).unwrap();
    assert!(report.passed(), "{:?}", report.problems);
    assert!(
        report.lines.iter().any(|l| l == "systems: 200 rows"),
        "{:?}",
        report.lines
    );
    db.client()
        .execute(
            "UPDATE systems SET metal = -5 WHERE id = (SELECT min(id) FROM systems)",
            &[],
        )
        .unwrap();
    let report = crate::check::check_postgres(&db.url).unwrap();
    assert!(!report.passed());
    assert!(
        report.problems[0].contains("negative resources"),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_statement_running_at_the_shutdown_deadline_is_cancelled() {
    let Some((db, mut store, _reader, galaxy)) = stored_galaxy("deadline") else {
        return;
    };
    let deadline = BusyDeadline::new();
    store.canceller = Some(Canceller::spawn(deadline.clone()).unwrap());
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE galaxies IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    deadline.set(std::time::Instant::now());
    let batch = GalaxyRows {
        name: "g".into(),
        tick: Some(galaxy.tick() + 5),
        systems: Vec::new(),
    };
    let err = store.write_batch(&[], &[batch]).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Busy, "{err}");
    // Cancelled (57014), not ended by the lock timeout (55P03).
    assert!(err.to_string().contains("57014"), "{err}");
    tx.rollback().unwrap();
    store.finish(false);
}

/// The setting `name` as the session `client` sees it.
fn show(client: &mut Client, name: &str) -> String {
    client
        .query_one(&format!("SHOW {name}"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn every_session_bounds_a_lost_connection_on_the_server_side_too() {
    let Some((_db, mut store, reader, _galaxy)) = stored_galaxy("settings") else {
        return;
    };
    let writer = &mut store.session.as_mut().unwrap().client;
    let reader = &mut *reader.client.borrow_mut();
    for client in [writer, reader] {
        assert_eq!(show(client, "tcp_keepalives_idle"), "10");
        assert_eq!(show(client, "tcp_keepalives_interval"), "5");
        assert_eq!(show(client, "tcp_keepalives_count"), "3");
        assert_eq!(show(client, "idle_in_transaction_session_timeout"), "1min");
        assert_eq!(show(client, "tcp_user_timeout"), "10000");
        // PostgreSQL 14 and later (the throwaway cluster is 15); older servers lack it.
        if show(client, "server_version_num").parse::<u32>().unwrap() >= 140_000 {
            assert_eq!(show(client, "client_connection_check_interval"), "10s");
        }
    }
    // The client's own bound stays inside the systemd watchdog's 15 s: a dead call plus
    // the next attempt's connect.
    assert!(TCP_USER_TIMEOUT + CONNECT_TIMEOUT < Duration::from_secs(15));
    assert!(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_RETRIES <= TCP_USER_TIMEOUT);
    assert_eq!(
        store.config.get_target_session_attrs(),
        TargetSessionAttrs::ReadWrite
    );
}

#[test]
fn a_writer_on_a_server_that_stopped_taking_writes_reconnects() {
    let Some((db, mut store, reader, mut galaxy)) = stored_galaxy("readonly") else {
        return;
    };
    // The writer's session now refuses writes, as on a primary demoted under it.
    store
        .session
        .as_mut()
        .unwrap()
        .client
        .batch_execute("SET default_transaction_read_only = on")
        .unwrap();
    let (x, y) = galaxy.systems()[5].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    let batch = take_batch(&mut galaxy, 200);
    let err = store
        .write_batch(&[], std::slice::from_ref(&batch))
        .unwrap_err();
    assert!(err.to_string().contains("25006"), "{err}");
    assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
    assert!(store.session.is_none(), "the session was dropped");
    // A new session (a server that takes writes) saves the same batch.
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
    store.finish(true);
    // A database that takes no writes at all is refused at connect, as a standby is.
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name
        ))
        .unwrap();
    let err = PostgresWriter::open(&db.url).err().unwrap();
    assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
    assert!(err.to_string().contains("does not allow writes"), "{err}");
}

#[test]
fn an_idle_writer_whose_session_died_holds_the_database_again_at_maintain() {
    let Some((db, mut store, _reader, _galaxy)) = stored_galaxy("hold") else {
        return;
    };
    let holder = |db: &TestDb| -> Option<i32> {
        db.client()
            .query_opt(WRITER_PID_SQL, &[])
            .unwrap()
            .map(|row| row.get(0))
    };
    // A live session is only checked, not replaced.
    let pid = store.backend_pid().unwrap();
    store.maintain(true);
    assert_eq!(holder(&db), Some(pid));
    // Terminated while idle: nothing holds the database until maintain takes it again.
    terminate_writer(&db, &mut store);
    assert_eq!(holder(&db), None);
    store.maintain(false);
    let again = holder(&db).expect("the writer holds the database again");
    assert_ne!(again, pid, "a new session");
    let err = PostgresWriter::open(&db.url).err().unwrap();
    assert!(matches!(err, StoreError::PostgresInUse { .. }), "{err}");
    assert_eq!(store.backend_pid().unwrap(), again);
    // Taken by another meanwhile: maintain says so and writes nothing; once the other
    // lets go, the next maintain holds the database again.
    terminate_writer(&db, &mut store);
    let mut other = db.client();
    assert!(other
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .unwrap()
        .get::<_, bool>(0));
    store.maintain(false);
    assert!(store.session.is_none());
    drop(other);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.session.is_none() {
        assert!(std::time::Instant::now() < deadline, "the lock came back");
        std::thread::sleep(Duration::from_millis(20));
        store.maintain(false);
    }
    assert_eq!(holder(&db), Some(store.backend_pid().unwrap()));
}
