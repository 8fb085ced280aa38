//! The PostgreSQL store against a real server: the one `GWAR_TEST_POSTGRES_URL` names
//! (any database on it; each test creates and drops its own), else a throwaway cluster
//! started by the integration suites' harness, shared by these tests and by the check's
//! (`crate::check`), which store a galaxy here the same way.

use std::time::Duration;

use ::postgres::config::TargetSessionAttrs;
use ::postgres::error::SqlState;
use ::postgres::{Client, NoTls};

/// The integration tests' harness, one file for both.
#[path = "../../../tests/common/postgres.rs"]
mod cluster;

use super::super::history::samples::{first_history, second_history, ticks_and_x};
use super::super::{
    ArchiveRow, BusyDeadline, Claim, ClaimStore, CreationProgress, Epoch, FailureKind, GalaxyJob,
    GalaxyRows, LostGalaxy, NewGalaxy, Owner, ReadStore, SystemRow, WriteStats, WriteStore,
};
use super::cancel::Canceller;
use super::error::state_kind;
use super::session::{
    writer_idle_timeout, APPLICATION_NAME, CONNECT_TIMEOUT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL,
    KEEPALIVE_RETRIES, TCP_USER_TIMEOUT, WRITER_APPLICATION_NAME, WRITER_PID_SQL,
};
use super::*;
use crate::model::{Galaxy, GalaxyConfig, HistoryEntry, RowMask, StructureKind};

/// A database of its own for one test, dropped at the end.
pub(crate) struct TestDb {
    base: String,
    name: String,
    pub(crate) url: String,
}

impl TestDb {
    /// `None` (after a notice) when no server is configured.
    pub(super) fn new(tag: &str) -> Option<TestDb> {
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

    pub(crate) fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).unwrap()
    }

    pub(super) fn count(&self, table: &str) -> i64 {
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

pub(super) fn new_galaxy(name: &str) -> Galaxy {
    let (config, _) = GalaxyConfig::preset("blitz").unwrap();
    let mut galaxy = Galaxy::create(name, config, 9, 100).unwrap();
    galaxy.take_changes();
    galaxy
}

pub(super) fn as_new<T>(galaxy: &Galaxy, write: impl FnOnce(&NewGalaxy) -> T) -> T {
    let config_toml = galaxy.config().to_toml();
    write(&NewGalaxy {
        name: galaxy.name(),
        config_toml: &config_toml,
        tick: galaxy.tick(),
        systems: galaxy.systems(),
        rows: RowMask::new_system(galaxy.rules()),
        restoring: false,
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

pub(super) fn take_batch(galaxy: &mut Galaxy, tick: u64) -> GalaxyRows {
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
        history: Vec::new(),
    }
}

/// A daemon's identity with a lease of `lease` seconds.
pub(super) fn identity(url: &str, lease: u64) -> Identity {
    Identity::new(url, Duration::from_secs(lease))
}

/// A writer with a 15 s lease, as by default.
fn open_writer(url: &str) -> PostgresWriter {
    PostgresWriter::open(url, identity("http://a", 15)).unwrap()
}

/// A database holding the blitz galaxy "g", its writer and a reader.
pub(crate) fn stored_galaxy(tag: &str) -> Option<(TestDb, PostgresWriter, PostgresReader, Galaxy)> {
    let db = TestDb::new(tag)?;
    let mut store = open_writer(&db.url);
    let reader = PostgresReader::open(&db.url).unwrap();
    let galaxy = new_galaxy("g");
    insert(&mut store, &reader, &galaxy);
    Some((db, store, reader, galaxy))
}

/// Ends the writer's session from another one, as an operator's `pg_terminate_backend`.
pub(super) fn terminate_writer(db: &TestDb, store: &mut PostgresWriter) {
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
}

#[test]
fn a_server_that_is_not_there_is_unavailable() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = PostgresWriter::open(
        "postgres://nobody@127.0.0.1:1/none",
        identity("http://a", 15),
    )
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
    let mut store = open_writer(&db.url);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 6, "SQLite's five, and the ownership table");
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
    drop(open_writer(&db.url));
    client
        .execute(
            "INSERT INTO galactic_war_schema (version, name) VALUES (99, 'future')",
            &[],
        )
        .unwrap();
    let err = PostgresWriter::open(&db.url, identity("http://a", 15))
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    let err = PostgresReader::open(&db.url).err().unwrap();
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    assert_eq!(db.count("galactic_war_schema"), 7, "left untouched");
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
    // A clean stop releases every galaxy, the unfinished ones too.
    store.write_final_batch(&[], &[]).unwrap();
    store.finish(true);
    let mut store = open_writer(&db.url);
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
        history: Vec::new(),
    };
    let err = store.write_batch(&[], &[batch]).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Inconsistent, "{err}");
}

/// A stored galaxy whose writer's session the server ended, and a batch of one order
/// made meanwhile.
fn terminated_with_a_batch(
    tag: &str,
) -> Option<(TestDb, PostgresWriter, PostgresReader, Galaxy, GalaxyRows)> {
    let (db, mut store, reader, mut galaxy) = stored_galaxy(tag)?;
    terminate_writer(&db, &mut store);
    let (x, y) = galaxy.systems()[3].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    let batch = take_batch(&mut galaxy, 200);
    Some((db, store, reader, galaxy, batch))
}

#[test]
fn a_terminated_writer_fails_one_batch_then_reconnects() {
    let Some((db, mut store, reader, galaxy, batch)) = terminated_with_a_batch("terminate") else {
        return;
    };
    // A session used a moment ago is not checked first (under load the calls follow
    // each other): the batch meets its end.
    store.session_used = std::time::Instant::now();
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
fn an_idle_session_the_server_ended_is_replaced_before_the_batch() {
    // The server restarted, or an operator ended the session, while the writer was idle.
    let Some((_db, mut store, reader, galaxy, batch)) = terminated_with_a_batch("idle") else {
        return;
    };
    store.session_used -= Duration::from_secs(2);
    // Checked first, found gone, replaced: the batch passes at its first attempt.
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
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
        history: Vec::new(),
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
        history: Vec::new(),
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
    let Some((db, mut store, reader, _galaxy)) = stored_galaxy("settings") else {
        return;
    };
    let claimer = PostgresClaimer::open(&db.url, identity("http://b", 15)).unwrap();
    let mut claims = claimer.client.lock();
    let writer = &mut store.session.as_mut().unwrap().client;
    let reader = &mut *reader.client.borrow_mut();
    // The writer's idle-in-transaction bound: a third of the 15 s lease.
    assert_eq!(show(writer, "idle_in_transaction_session_timeout"), "5s");
    assert_eq!(show(writer, "application_name"), WRITER_APPLICATION_NAME);
    let claims = claims.as_mut().unwrap();
    assert_eq!(show(claims, "lock_timeout"), "200ms");
    assert_eq!(show(claims, "application_name"), APPLICATION_NAME);
    assert_eq!(show(reader, "idle_in_transaction_session_timeout"), "1min");
    for client in [writer, reader, claims] {
        assert_eq!(show(client, "tcp_keepalives_idle"), "10");
        assert_eq!(show(client, "tcp_keepalives_interval"), "5");
        assert_eq!(show(client, "tcp_keepalives_count"), "3");
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
    let err = PostgresWriter::open(&db.url, identity("http://a", 15))
        .err()
        .unwrap();
    assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
    assert!(err.to_string().contains("does not allow writes"), "{err}");
    // So are readers: a standby's data may lag the primary's, and a galaxy loaded from
    // it and written back would undo what the primary had.
    let err = PostgresReader::open(&db.url).err().unwrap();
    assert!(err.to_string().contains("does not allow writes"), "{err}");
}

#[test]
fn a_reader_finds_the_primary_yet_only_reads() {
    let Some((_db, _store, reader, _galaxy)) = stored_galaxy("reader") else {
        return;
    };
    let mut client = reader.client.borrow_mut();
    let err = client
        .batch_execute("UPDATE galaxies SET tick = tick + 1")
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err}");
}

// Ownership: several daemons on one database.

/// The `(epoch, owner)` of galaxy `name`'s ownership row.
fn owner_row(db: &TestDb, name: &str) -> (i64, Option<String>) {
    let row = db
        .client()
        .query_one(
            "SELECT epoch, owner FROM galaxy_owners WHERE galaxy_name = $1",
            &[&name],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn stored_tick(db: &TestDb, name: &str) -> i64 {
    db.client()
        .query_one("SELECT tick FROM galaxies WHERE name = $1", &[&name])
        .unwrap()
        .get(0)
}

/// Takes `name` with `claimer` once its owner's lease has run out (polled: the lease
/// runs on the server's clock).
fn take_when_expired(claimer: &PostgresClaimer, name: &str) -> Epoch {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match claimer.take(name) {
            Ok(Claim::Owned { epoch }) => return epoch,
            Ok(Claim::Elsewhere(_)) | Err(StoreError::OwnershipLocked(_)) => {}
            Ok(Claim::Missing) => panic!("'{name}' is stored"),
            Err(error) => panic!("{error}"),
        }
        assert!(std::time::Instant::now() < deadline, "the lease ran out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tick_only(name: &str, tick: u64) -> GalaxyRows {
    GalaxyRows {
        name: name.to_owned(),
        tick: Some(tick),
        systems: Vec::new(),
        history: Vec::new(),
    }
}

/// Two daemons created at once on a fresh database migrate it once, side by side.
#[test]
fn two_daemons_migrate_one_database_at_once() {
    let Some(db) = TestDb::new("migrate_race") else {
        return;
    };
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        for url in ["http://a", "http://b"] {
            let (barrier, db) = (&barrier, &db);
            scope.spawn(move || {
                barrier.wait();
                let mut store = PostgresWriter::open(&db.url, identity(url, 15)).unwrap();
                assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            });
        }
    });
    assert_eq!(db.count("galactic_war_schema"), SCHEMA_VERSION);
    // Both writers' sessions show as writers.
    let mut a = open_writer(&db.url);
    let mut b = open_writer(&db.url);
    let pids: Vec<i32> = db
        .client()
        .query(WRITER_PID_SQL, &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(pids.contains(&a.backend_pid().unwrap()), "{pids:?}");
    assert!(pids.contains(&b.backend_pid().unwrap()), "{pids:?}");
}

#[test]
fn a_created_galaxy_is_owned_by_its_creator_under_epoch_1() {
    let Some((db, mut store, reader, _galaxy)) = stored_galaxy("created_owner") else {
        return;
    };
    assert_eq!(owner_row(&db, "g"), (1, Some(store.identity.id.clone())));
    assert_eq!(store.owned().get("g"), Some(&1));
    assert_eq!(store.lease(), Some(Duration::from_secs(15)));
    assert_eq!(
        reader.galaxy_owners().unwrap(),
        [(
            "g".to_owned(),
            Some(Owner {
                id: store.identity.id.clone(),
                url: "http://a".into()
            })
        )]
    );
    // Another daemon's take finds it live elsewhere; an unknown name is missing.
    let other = PostgresClaimer::open(&db.url, identity("http://b", 15)).unwrap();
    assert_eq!(
        other.take("g").unwrap(),
        Claim::Elsewhere(Owner {
            id: store.identity.id.clone(),
            url: "http://a".into()
        })
    );
    assert_eq!(other.take("nope").unwrap(), Claim::Missing);
    // Our own claimer takes it again under the same epoch: this process's writer holds
    // it under that one, and a take must never fence it.
    let ours = PostgresClaimer::open(&db.url, store.identity.clone()).unwrap();
    assert_eq!(ours.take("g").unwrap(), Claim::Owned { epoch: 1 });
    store.write_batch(&[], &[tick_only("g", 7)]).unwrap();
}

#[test]
fn two_claimers_race_for_one_galaxy_and_exactly_one_owns_it() {
    let Some((db, mut store, reader, _galaxy)) = stored_galaxy("race") else {
        return;
    };
    // Released (as by a clean stop's final batch).
    store.write_final_batch(&[], &[]).unwrap();
    assert!(store.owned().is_empty());
    assert_eq!(owner_row(&db, "g"), (1, None));
    assert_eq!(reader.galaxy_owners().unwrap(), [("g".to_owned(), None)]);
    for round in 0..5 {
        let claimers: Vec<PostgresClaimer> = ["http://b", "http://c"]
            .iter()
            .map(|url| PostgresClaimer::open(&db.url, identity(url, 15)).unwrap())
            .collect();
        let barrier = std::sync::Barrier::new(2);
        let claims: Vec<Claim> = std::thread::scope(|scope| {
            let handles: Vec<_> = claimers
                .iter()
                .map(|claimer| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        claimer.take("g").unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let owned: Vec<usize> = (0..2)
            .filter(|&i| matches!(claims[i], Claim::Owned { .. }))
            .collect();
        assert_eq!(owned.len(), 1, "round {round}: {claims:?}");
        let (winner, loser) = (owned[0], 1 - owned[0]);
        assert_eq!(claims[winner], Claim::Owned { epoch: 2 + round });
        assert_eq!(
            claims[loser],
            Claim::Elsewhere(Owner {
                id: claimers[winner].identity.id.clone(),
                url: claimers[winner].identity.url.clone(),
            }),
            "round {round}"
        );
        // Free it again for the next round, as the winner's clean stop would.
        db.client()
            .execute("UPDATE galaxy_owners SET owner = NULL", &[])
            .unwrap();
    }
}

#[test]
fn a_take_after_the_lease_ran_out_bumps_the_epoch_and_the_old_owner_loses() {
    let Some(db) = TestDb::new("expired") else {
        return;
    };
    let mut old = PostgresWriter::open(&db.url, identity("http://a", 1)).unwrap();
    let reader = PostgresReader::open(&db.url).unwrap();
    let mut g = new_galaxy("g");
    insert(&mut old, &reader, &g);
    insert(&mut old, &reader, &new_galaxy("h"));
    let new = PostgresClaimer::open(&db.url, identity("http://b", 1)).unwrap();
    assert_eq!(take_when_expired(&new, "h"), 2);
    let created = stored_tick(&db, "g");
    // A batch of both galaxies: refused whole, naming only the lost one.
    let (x, y) = g.systems()[0].coords();
    g.build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    let g_rows = take_batch(&mut g, 200);
    let err = old
        .write_batch(&[], &[g_rows.clone(), tick_only("h", 999)])
        .unwrap_err();
    let StoreError::Lost(lost) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        lost,
        &[LostGalaxy {
            name: "h".into(),
            epoch: 1,
            current: Some(2)
        }]
    );
    assert_eq!(err.kind(), FailureKind::Lost);
    assert_eq!(
        stored_tick(&db, "g"),
        created,
        "nothing of the batch was written"
    );
    assert_eq!(stored_tick(&db, "h"), created);
    assert_eq!(db.count("events"), 0);
    assert!(!old.owned().contains_key("h"));
    // The same batch without it commits (g's lease ran out too, but nobody took it:
    // its epoch is still ours).
    old.write_batch(&[], &[g_rows]).unwrap();
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(g));
    // Written again, h is still refused: it is no longer ours.
    let err = old.write_batch(&[], &[tick_only("h", 5)]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Lost(l) if l[0].epoch == 0),
        "{err}"
    );
    assert_eq!(stored_tick(&db, "h"), created);
    assert_eq!(owner_row(&db, "h"), (2, Some(new.identity.id.clone())));
}

#[test]
fn renewing_reports_a_galaxy_taken_and_keeps_the_others() {
    let Some(db) = TestDb::new("renew") else {
        return;
    };
    let mut old = PostgresWriter::open(&db.url, identity("http://a", 1)).unwrap();
    let reader = PostgresReader::open(&db.url).unwrap();
    insert(&mut old, &reader, &new_galaxy("g"));
    insert(&mut old, &reader, &new_galaxy("h"));
    let new = PostgresClaimer::open(&db.url, identity("http://b", 1)).unwrap();
    assert_eq!(take_when_expired(&new, "h"), 2);
    let lost = old.renew_leases().unwrap();
    assert_eq!(
        lost,
        [LostGalaxy {
            name: "h".into(),
            epoch: 1,
            current: Some(2)
        }]
    );
    assert_eq!(old.owned().keys().collect::<Vec<_>>(), ["g"]);
    let live: bool = db
        .client()
        .query_one(
            "SELECT expires_at > now() FROM galaxy_owners WHERE galaxy_name = 'g'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(live, "g's lease was renewed");
    assert_eq!(old.renew_leases().unwrap(), []);
}

#[test]
fn a_disowned_galaxy_is_not_renewed_and_the_final_batch_releases_everything() {
    let Some((db, mut store, reader, mut galaxy)) = stored_galaxy("release") else {
        return;
    };
    insert(&mut store, &reader, &new_galaxy("h"));
    insert(&mut store, &reader, &new_galaxy("i"));
    let other = PostgresClaimer::open(&db.url, identity("http://b", 15)).unwrap();
    assert!(matches!(other.take("h").unwrap(), Claim::Elsewhere(_)));
    // Disowned (evicted): no longer renewed, and not released: its lease runs out.
    let expiry = |name: &str| -> String {
        db.client()
            .query_one(
                "SELECT expires_at::text FROM galaxy_owners WHERE galaxy_name = $1",
                &[&name],
            )
            .unwrap()
            .get(0)
    };
    let (h_before, g_before) = (expiry("h"), expiry("g"));
    store.disown(&["h".to_owned(), "nope".to_owned()]);
    assert!(!store.owned().contains_key("h"));
    assert_eq!(store.renew_leases().unwrap(), []);
    assert_eq!(expiry("h"), h_before, "not renewed");
    assert_ne!(expiry("g"), g_before, "renewed");
    assert_eq!(owner_row(&db, "h"), (1, Some(store.identity.id.clone())));

    // The final batch: rows and the release of g and i in one transaction.
    let (x, y) = galaxy.systems()[2].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    store
        .write_final_batch(&[], &[take_batch(&mut galaxy, 200)])
        .unwrap();
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
    assert_eq!(owner_row(&db, "g"), (1, None));
    assert_eq!(owner_row(&db, "i"), (1, None));
    assert_eq!(
        owner_row(&db, "h"),
        (1, None),
        "a disowned galaxy is released by a clean stop too"
    );
    assert!(store.owned().is_empty());
    assert_eq!(other.take("g").unwrap(), Claim::Owned { epoch: 2 });
    // Nothing owned and nothing to write: no transaction at all.
    assert_eq!(
        store.write_final_batch(&[], &[]).unwrap(),
        WriteStats::default()
    );
    // Nothing to write but galaxies owned: a transaction with the release alone.
    store.own("i", 1);
    store.write_final_batch(&[], &[]).unwrap();
    assert_eq!(owner_row(&db, "i"), (1, None));
}

#[test]
fn a_final_batch_with_a_lost_galaxy_writes_and_releases_nothing() {
    let Some((db, mut store, _reader, galaxy)) = stored_galaxy("final_lost") else {
        return;
    };
    store.own("h", 7);
    let err = store
        .write_final_batch(&[], &[tick_only("g", 50), tick_only("h", 50)])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Lost(l) if l.len() == 1 && l[0].name == "h"),
        "{err}"
    );
    assert_eq!(stored_tick(&db, "g") as u64, galaxy.tick());
    assert_eq!(owner_row(&db, "g"), (1, Some(store.identity.id.clone())));
    store.write_final_batch(&[], &[tick_only("g", 50)]).unwrap();
    assert_eq!(stored_tick(&db, "g"), 50);
    assert_eq!(owner_row(&db, "g"), (1, None));
}

#[test]
fn a_second_daemon_creating_the_same_name_is_told_it_exists() {
    let Some(db) = TestDb::new("exists") else {
        return;
    };
    let mut a = PostgresWriter::open(&db.url, identity("http://a", 1)).unwrap();
    let mut b = PostgresWriter::open(&db.url, identity("http://b", 1)).unwrap();
    let galaxy = new_galaxy("x");
    let mut progress = CreationProgress::default();
    as_new(&galaxy, |new| a.create_chunk(new, &mut progress, 50)).unwrap();
    assert_eq!(owner_row(&db, "x"), (1, Some(a.identity.id.clone())));
    let err = as_new(&galaxy, |new| {
        b.create_chunk(new, &mut CreationProgress::default(), 50)
    })
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists(name) if name == "x"),
        "{err}"
    );
    assert_eq!(err.kind(), FailureKind::Exists);
    assert!(b.owned().is_empty());
    // A live daemon's creation in progress is not the other's unfinished job.
    assert_eq!(b.unfinished_jobs().unwrap(), []);
    as_new(&galaxy, |new| a.create_chunk(new, &mut progress, 50)).unwrap();
    assert_eq!(db.count("systems"), 100);
    // Once a's lease has run out, b takes the job, and a's next chunk is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let jobs = loop {
        let jobs = b.unfinished_jobs().unwrap();
        if !jobs.is_empty() {
            break jobs;
        }
        assert!(std::time::Instant::now() < deadline, "a's lease ran out");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(jobs, [GalaxyJob::Creating("x".into())]);
    assert_eq!(b.owned().get("x"), Some(&2));
    let err = as_new(&galaxy, |new| a.create_chunk(new, &mut progress, 50)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Lost(l) if l[0] == LostGalaxy { name: "x".into(), epoch: 1, current: Some(2) }),
        "{err}"
    );
    assert_eq!(db.count("systems"), 100, "the refused chunk wrote nothing");
    // a cannot purge it either; b can.
    assert!(a.purge_chunk("x", 1000).unwrap().1);
    assert_eq!(db.count("systems"), 100);
    while !b.purge_chunk("x", 30).unwrap().1 {}
    assert_eq!(db.count("galaxies"), 0);
    assert_eq!(
        db.count("galaxy_owners"),
        0,
        "the ownership row goes with the galaxy"
    );
    assert!(b.owned().is_empty());
}

/// A running daemon takes over a job whose owner's lease ran out (a daemon killed in the
/// middle of a creation, never restarted), but never its own creation in progress, even
/// once its own lease has run out on the server.
#[test]
fn a_running_writer_takes_over_orphaned_jobs_but_never_its_own() {
    let Some(db) = TestDb::new("orphaned") else {
        return;
    };
    let mut a = PostgresWriter::open(&db.url, identity("http://a", 1)).unwrap();
    let mut b = PostgresWriter::open(&db.url, identity("http://b", 1)).unwrap();
    let galaxy = new_galaxy("x");
    let mut progress = CreationProgress::default();
    as_new(&galaxy, |new| a.create_chunk(new, &mut progress, 50)).unwrap();
    assert_eq!(b.orphaned_jobs().unwrap(), [], "a's lease still runs");
    // Once a's lease has run out on the server, a still does not take its own job.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while db
        .client()
        .query_one(
            "SELECT expires_at >= now() FROM galaxy_owners WHERE galaxy_name = 'x'",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(std::time::Instant::now() < deadline, "a's lease ran out");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(a.orphaned_jobs().unwrap(), []);
    assert_eq!(owner_row(&db, "x"), (1, Some(a.identity.id.clone())));
    as_new(&galaxy, |new| a.create_chunk(new, &mut progress, 50)).unwrap();
    assert_eq!(db.count("systems"), 100, "its creation went on, unfenced");
    // b takes it once the lease has run out again: a creation turned into a deletion.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let jobs = loop {
        let jobs = b.orphaned_jobs().unwrap();
        if !jobs.is_empty() {
            break jobs;
        }
        assert!(std::time::Instant::now() < deadline, "a's lease ran out");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(jobs, [GalaxyJob::Creating("x".into())]);
    assert_eq!(b.owned().get("x"), Some(&2));
    assert_eq!(owner_row(&db, "x"), (2, Some(b.identity.id.clone())));
    let job: String = db
        .client()
        .query_one("SELECT job FROM galaxy_jobs WHERE name = 'x'", &[])
        .unwrap()
        .get(0);
    assert_eq!(job, "deleting");
    assert_eq!(
        b.orphaned_jobs().unwrap(),
        [],
        "b's own now: not taken again"
    );
    assert_eq!(b.owned().get("x"), Some(&2));
    let err = as_new(&galaxy, |new| a.create_chunk(new, &mut progress, 50)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Lost(l) if l[0].name == "x"),
        "{err}"
    );
    while !b.purge_chunk("x", 30).unwrap().1 {}
    assert_eq!(db.count("galaxies"), 0);
    assert_eq!(db.count("galaxy_jobs"), 0);
}

#[test]
fn a_deletion_of_a_galaxy_lost_is_refused_and_a_purge_is_fenced() {
    let Some(db) = TestDb::new("delete_lost") else {
        return;
    };
    let mut a = PostgresWriter::open(&db.url, identity("http://a", 1)).unwrap();
    let reader = PostgresReader::open(&db.url).unwrap();
    insert(&mut a, &reader, &new_galaxy("g"));
    a.write_batch(&["g".to_owned()], &[]).unwrap();
    let mut b = PostgresWriter::open(&db.url, identity("http://b", 1)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while b.unfinished_jobs().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "a's lease ran out");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = a.purge_chunk("g", 10).unwrap_err();
    assert!(
        matches!(&err, StoreError::Lost(l) if l[0].name == "g"),
        "{err}"
    );
    assert_eq!(db.count("systems"), 200, "the fenced chunk was rolled back");
    while !b.purge_chunk("g", 64).unwrap().1 {}
    assert_eq!(db.count("galaxies"), 0);
}

/// A writer paused inside its transaction (SIGSTOP, a frozen VM) while another daemon
/// takes its galaxy and writes: when it wakes, its fence matches nothing, so it cannot
/// commit what it wrote before the pause, and it never blocked the new owner.
#[test]
fn a_stale_owner_paused_inside_its_transaction_cannot_commit() {
    let Some(db) = TestDb::new("zombie") else {
        return;
    };
    let mut old = PostgresWriter::open(&db.url, identity("http://a", 1)).unwrap();
    let reader = PostgresReader::open(&db.url).unwrap();
    insert(&mut old, &reader, &new_galaxy("g"));
    let me = old.identity.clone();
    // The old owner's transaction, by hand: its rows written, its fence not yet run.
    let mut zombie = db.client();
    let mut tx = zombie.transaction().unwrap();
    tx.execute("UPDATE systems SET metal = 1 WHERE galaxy_name = 'g'", &[])
        .unwrap();
    // The new owner takes g (the zombie holds no lock on its ownership row) and writes.
    let new = PostgresClaimer::open(&db.url, identity("http://b", 1)).unwrap();
    let epoch = take_when_expired(&new, "g");
    assert_eq!(epoch, 2);
    // The zombie wakes: its fence (the last statement before its commit) matches nothing.
    let rows = tx
        .query(
            owners::FENCE,
            &[&vec!["g".to_owned()], &vec![1_i64], &me.id, &me.lease_ms()],
        )
        .unwrap();
    assert!(rows.is_empty(), "the stale epoch matches nothing");
    tx.rollback().unwrap();
    let metal: i64 = db
        .client()
        .query_one("SELECT count(*) FROM systems WHERE metal = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(metal, 0);
    // The writer itself, with the same stale epoch, is refused likewise.
    let err = old.write_batch(&[], &[tick_only("g", 9)]).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Lost, "{err}");
}

/// The writer's session ends itself when left idle inside a transaction for a third of
/// the lease, so a paused writer's row locks do not outlive its lease.
#[test]
fn a_writer_idle_inside_a_transaction_loses_its_session() {
    let Some((_db, mut store, _reader, _galaxy)) = stored_galaxy("idle_tx") else {
        return;
    };
    assert_eq!(
        writer_idle_timeout(Duration::from_secs(15)),
        Duration::from_secs(5)
    );
    assert_eq!(
        writer_idle_timeout(Duration::from_secs(1)),
        Duration::from_secs(1)
    );
    let client = &mut store.session.as_mut().unwrap().client;
    client
        .batch_execute("SET idle_in_transaction_session_timeout = '100ms'")
        .unwrap();
    let mut tx = client.transaction().unwrap();
    tx.execute("UPDATE galaxies SET tick = 1", &[]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Polls with a statement that fails once the server has ended the session.
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if tx.batch_execute("SELECT 1").is_err() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the session ended");
    }
}

/// A galaxy whose ownership row is locked (a daemon stuck between its fence and its
/// commit, its lease run out) is refused after one short wait, and then at once for a
/// moment without asking the database: players hammering it do not queue the takes of
/// other galaxies behind a lock wait each.
#[test]
fn a_galaxy_whose_ownership_row_is_locked_is_refused_without_holding_up_others() {
    let Some(db) = TestDb::new("locked") else {
        return;
    };
    let mut old = PostgresWriter::open(&db.url, identity("http://a", 1)).unwrap();
    let reader = PostgresReader::open(&db.url).unwrap();
    insert(&mut old, &reader, &new_galaxy("stuck"));
    insert(&mut old, &reader, &new_galaxy("free"));
    // Both leases (1 s) run out; then `stuck`'s row is locked, as by a fence not
    // followed by its commit.
    let expired = |name: &str| -> bool {
        db.client()
            .query_one(
                "SELECT expires_at < now() FROM galaxy_owners WHERE galaxy_name = $1",
                &[&name],
            )
            .unwrap()
            .get(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(expired("stuck") && expired("free")) {
        assert!(std::time::Instant::now() < deadline, "the leases ran out");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stuck = db.client();
    let mut tx = stuck.transaction().unwrap();
    tx.execute(
        "SELECT 1 FROM galaxy_owners WHERE galaxy_name = 'stuck' FOR UPDATE",
        &[],
    )
    .unwrap();
    let claimer = PostgresClaimer::open(&db.url, identity("http://b", 15)).unwrap();
    let locked = |result: Result<Claim, StoreError>| {
        matches!(&result, Err(StoreError::OwnershipLocked(name)) if name == "stuck")
            && result.unwrap_err().kind() == FailureKind::Busy
    };
    assert!(locked(claimer.take("stuck")), "refused after the lock wait");
    tx.rollback().unwrap();
    // Unlocked now, but refused for a moment without asking: the refusal is remembered.
    assert!(locked(claimer.take("stuck")));
    // Another galaxy is taken meanwhile.
    assert_eq!(take_when_expired(&claimer, "free"), 2);
    // The moment over, it is taken.
    assert_eq!(take_when_expired(&claimer, "stuck"), 2);
}

/// A daemon from before several daemons could share a database writes without the fence:
/// a new one refuses to start beside it, touching nothing (not even a migration).
#[test]
fn a_database_an_older_daemon_serves_is_refused_untouched() {
    let Some(db) = TestDb::new("older") else {
        return;
    };
    let mut older = db.client();
    older
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&i64::from_be_bytes(*b"gwar-one")],
        )
        .unwrap();
    let refused = PostgresWriter::open(&db.url, identity("http://a", 15));
    assert!(
        matches!(&refused, Err(StoreError::OlderDaemon { .. })),
        "{:?}",
        refused.err()
    );
    let tables: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'galactic_war_schema'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing was migrated");
    older
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&i64::from_be_bytes(*b"gwar-one")],
        )
        .unwrap();
    let _new = PostgresWriter::open(&db.url, identity("http://a", 15)).unwrap();
    let _beside = PostgresWriter::open(&db.url, identity("http://b", 15)).unwrap();
    // And an older daemon starting now is refused, as it refuses a second daemon.
    let taken: bool = older
        .query_one(
            "SELECT pg_try_advisory_lock($1)",
            &[&i64::from_be_bytes(*b"gwar-one")],
        )
        .unwrap()
        .get(0);
    assert!(!taken, "an older daemon cannot start beside this version's");
}

/// A daemon never redirects players to itself: a galaxy held by another live daemon that
/// advertises this daemon's own address (a misconfiguration) is busy, not elsewhere.
#[test]
fn a_live_owner_advertising_this_daemons_own_address_is_busy_not_a_redirect() {
    let Some((db, store, _reader, _galaxy)) = stored_galaxy("same_address") else {
        return;
    };
    let twin = PostgresClaimer::open(&db.url, identity("http://a", 15)).unwrap();
    assert_ne!(twin.identity.id, store.identity.id);
    let taken = twin.take("g");
    assert!(
        matches!(&taken, Err(StoreError::SameAddress { galaxy, url, .. }) if galaxy == "g" && url == "http://a"),
        "{taken:?}"
    );
    assert_eq!(taken.unwrap_err().kind(), FailureKind::Busy);
    assert_eq!(owner_row(&db, "g"), (1, Some(store.identity.id.clone())));
}

// Replication and failover (issue 25).

#[test]
fn start_up_finds_the_primary_among_hosts_and_fails_without_one() {
    let Some(db) = TestDb::new("primary") else {
        return;
    };
    let settings = crate::settings::PersistenceSettings::default();
    let url = &db.url;
    // Several hosts, the first refusing connections: the server behind the second is
    // found and opened.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let both = url.replacen("@", &format!("@127.0.0.1:{refused},"), 1);
    assert!(both.contains(','), "{both}");
    assert!(open(&both, &settings, BusyDeadline::new()).is_ok());
    // Only a refused port: start-up fails, as it did with one host.
    let only_refused = with_port(url, refused);
    match open(&only_refused, &settings, BusyDeadline::new()) {
        Err(StoreError::PostgresConnect { .. }) => {}
        other => panic!("{:?}", other.err()),
    }
    // A primary whose sessions are read-only by default refuses to be the primary as a
    // standby does, but waiting would not change it: start-up fails, naming the setting.
    // (A real standby, for which start-up waits, is the daemon tests' business:
    // tests/daemon/replication.rs.)
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name
        ))
        .unwrap();
    match open(&both, &settings, BusyDeadline::new()) {
        Err(StoreError::PostgresConnect { .. }) => {}
        other => panic!("{:?}", other.err()),
    }
    let config = session::session_config(&both, "t").unwrap();
    let survey = hosts::survey(&config);
    assert_eq!(
        (survey.writable, survey.standbys),
        (0, 0),
        "{}",
        survey.text
    );
    assert!(
        survey
            .text
            .contains(&format!("127.0.0.1:{refused} unusable")),
        "{}",
        survey.text
    );
    assert!(
        survey
            .text
            .contains("not a standby (is default_transaction_read_only"),
        "{}",
        survey.text
    );
}

/// `url` with the port of its (one) host replaced.
fn with_port(url: &str, port: u16) -> String {
    let (head, rest) = url.split_once('@').unwrap();
    let (_, path) = rest.split_once('/').unwrap();
    format!("{head}@127.0.0.1:{port}/{path}")
}

#[test]
fn the_writer_commits_at_least_synchronously_and_reads_the_replication() {
    let Some(db) = TestDb::new("commitlevel") else {
        return;
    };
    let level = |store: &mut PostgresWriter| -> String {
        let session = store.session.as_mut().unwrap();
        let row = session
            .client
            .query_one("SHOW synchronous_commit", &[])
            .unwrap();
        row.get(0)
    };
    for (server, writer) in [
        ("off", "on"),
        ("local", "on"),
        ("remote_apply", "remote_apply"),
    ] {
        db.client()
            .batch_execute(&format!(
                "ALTER DATABASE {} SET synchronous_commit = {server}",
                db.name
            ))
            .unwrap();
        let mut store = open_writer(&db.url);
        assert_eq!(level(&mut store), writer, "the server says {server}");
        store.finish(true);
    }
    // A lone server: no standby, none required.
    let mut store = open_writer(&db.url);
    let lone = |store: &PostgresWriter| {
        let replication = store.replication().expect("read with the session");
        assert_eq!(replication.mode, crate::store::ReplicationMode::None);
        assert_eq!(replication.standbys, 0);
    };
    lone(&store);
    store.maintain(false);
    lone(&store);
    // A lost session forgets it (the next may be on another server), a new one reads it.
    terminate_writer(&db, &mut store);
    assert!(store.probe().is_err());
    assert_eq!(store.replication(), None);
    store.probe().unwrap();
    lone(&store);
}

#[test]
fn a_reader_follows_the_primary_when_another_session_found_it_elsewhere() {
    let Some(db) = TestDb::new("follow") else {
        return;
    };
    open_writer(&db.url).finish(true);
    // Two names of one server: two hosts, as far as the URL says.
    let port = db
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap();
    let url = db.url.replacen(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{port},localhost:{port}"),
        1,
    );
    let reader = PostgresReader::open(&url).unwrap();
    let pid = |reader: &PostgresReader| -> i32 {
        reader
            .client
            .borrow_mut()
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0)
    };
    let before = pid(&reader);
    reader.galaxy_names().unwrap();
    assert_eq!(
        pid(&reader),
        before,
        "the primary has not moved: the same session"
    );
    // Another session of the process found the primary on the other host.
    hosts::note_read_write(&format!("localhost:{port}"));
    reader.galaxy_names().unwrap();
    assert_ne!(pid(&reader), before, "the reader opened a session there");
    let after = pid(&reader);
    reader.galaxy_names().unwrap();
    assert_eq!(pid(&reader), after, "and stays");
}

/// Galaxy `galaxy`'s archive row as the writer stores it, with `body`.
pub(super) fn archive_row<'a>(galaxy: &'a Galaxy, body: &'a [u8]) -> ArchiveRow<'a> {
    ArchiveRow {
        name: galaxy.name(),
        format: crate::archive::FORMAT_VERSION,
        systems: galaxy.systems().len() as u64,
        body,
    }
}

/// Runs `write` on `galaxy` as a restore of its archive writes it.
pub(super) fn as_restore<T>(galaxy: &Galaxy, write: impl FnOnce(&NewGalaxy) -> T) -> T {
    as_new(galaxy, |new| {
        write(&NewGalaxy {
            restoring: true,
            ..*new
        })
    })
}

#[test]
fn an_archive_replaces_the_live_rows_and_a_restore_brings_them_back() {
    let Some((db, mut store, reader, mut galaxy)) = stored_galaxy("archive") else {
        return;
    };
    let (x, y) = galaxy.systems()[3].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    store
        .write_batch(&[], &[take_batch(&mut galaxy, 200)])
        .unwrap();
    let systems = galaxy.systems().len() as u64;
    let before = reader.storage().unwrap();
    assert_eq!(before.live_systems, systems);
    assert_eq!((before.archived_galaxies, before.archived_bytes), (0, 0));
    assert!(before.live_bytes > 0, "{before:?}");

    let body = crate::archive::encode(&galaxy);
    assert_eq!(
        store
            .write_archive(&archive_row(&galaxy, &body))
            .unwrap()
            .rows,
        2
    );
    assert!(!store.ids.contains_key("g"), "its cached ids are forgotten");
    assert!(!reader.galaxy_exists("g").unwrap());
    assert_eq!(reader.load_galaxy("g").unwrap(), None);
    assert!(reader.galaxy_names().unwrap().is_empty());
    assert_eq!(
        reader.read_archive("g").unwrap().as_deref(),
        Some(&body[..])
    );
    assert_eq!(crate::archive::decode(&body).unwrap(), galaxy);
    let listed = reader.archives().unwrap();
    assert_eq!(listed.len(), 1);
    let info = &listed[0];
    assert_eq!(
        (info.name.as_str(), info.format, info.systems, info.bytes),
        (
            "g",
            crate::archive::FORMAT_VERSION,
            systems,
            body.len() as u64
        )
    );
    assert_eq!(
        info.archived_at.len(),
        "2026-01-01 00:00:00".len(),
        "{info:?}"
    );
    let err = store
        .write_archive(&archive_row(&galaxy, &body))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists(name) if name == "g"),
        "{err}"
    );
    assert_eq!(db.count("galaxy_archives"), 1);
    let job: String = db
        .client()
        .query_one("SELECT job FROM galaxy_jobs WHERE name = 'g'", &[])
        .unwrap()
        .get(0);
    assert_eq!(job, "deleting", "its rows are marked as a deletion's are");
    while !store.purge_chunk("g", 64).unwrap().1 {}
    assert_eq!(db.count("systems"), 0);
    assert_eq!(db.count("galaxies"), 0);
    let archived = reader.storage().unwrap();
    assert_eq!(archived.live_systems, 0);
    assert_eq!(
        (
            archived.archived_galaxies,
            archived.archived_systems,
            archived.archived_bytes
        ),
        (1, systems, body.len() as u64)
    );

    // A creation under the archived name is refused, and writes nothing.
    let fresh = new_galaxy("g");
    let err = as_new(&fresh, |new| {
        store.create_chunk(new, &mut CreationProgress::default(), 64)
    })
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists(name) if name == "g"),
        "{err}"
    );
    assert_eq!(db.count("galaxies"), 0);

    let decoded = crate::archive::decode(&reader.read_archive("g").unwrap().unwrap()).unwrap();
    as_restore(&decoded, |new| {
        let mut progress = CreationProgress::default();
        while progress.written < decoded.systems().len() {
            assert_eq!(
                reader.archives().unwrap().len(),
                1,
                "archived until the last chunk"
            );
            store.create_chunk(new, &mut progress, 64).unwrap();
        }
    });
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
    assert_eq!(
        reader.read_archive("g").unwrap(),
        None,
        "the restore took it"
    );
    assert!(reader.archives().unwrap().is_empty());
    assert_eq!(
        store.owned().get("g"),
        Some(&1),
        "the restorer's, as a creator's"
    );
    assert!(!store.delete_archive("g").unwrap());
}

#[test]
fn an_archive_of_a_galaxy_not_owned_is_lost_and_writes_nothing() {
    let Some((db, mut store, _reader, galaxy)) = stored_galaxy("archive_fence") else {
        return;
    };
    let body = crate::archive::encode(&galaxy);
    // Another daemon took it (as a take after the lease ran out leaves the row).
    db.client()
        .execute(
            "UPDATE galaxy_owners SET epoch = 2, owner = 'b', owner_url = 'http://b'
             WHERE galaxy_name = 'g'",
            &[],
        )
        .unwrap();
    let err = store
        .write_archive(&archive_row(&galaxy, &body))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Lost(lost) if lost[0].name == "g" && lost[0].current == Some(2)),
        "{err}"
    );
    assert_eq!(db.count("galaxy_archives"), 0, "rolled back");
    assert_eq!(db.count("galaxy_jobs"), 0, "rolled back");
    assert!(!store.owns("g"));
    // No longer owned here: refused before anything is sent.
    let err = store
        .write_archive(&archive_row(&galaxy, &body))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Lost, "{err}");
    // A galaxy with no live rows (never stored) is no archive's either.
    let mut other = PostgresWriter::open(&db.url, identity("http://c", 15)).unwrap();
    other.own("absent", 1);
    let absent = new_galaxy("absent");
    let err = other
        .write_archive(&archive_row(&absent, &body))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Lost, "no ownership row: {err}");
    assert_eq!(db.count("galaxy_archives"), 0);
}

#[test]
fn a_restore_whose_archive_is_deleted_meanwhile_is_refused() {
    let Some((db, mut store, reader, galaxy)) = stored_galaxy("archive_gone") else {
        return;
    };
    let body = crate::archive::encode(&galaxy);
    store.write_archive(&archive_row(&galaxy, &body)).unwrap();
    while !store.purge_chunk("g", 1000).unwrap().1 {}
    as_restore(&galaxy, |new| {
        let mut progress = CreationProgress::default();
        store.create_chunk(new, &mut progress, 150).unwrap();
        // Another daemon deletes the archive, on its own session.
        let mut other = PostgresWriter::open(&db.url, identity("http://b", 15)).unwrap();
        assert!(other.delete_archive("g").unwrap());
        let err = store.create_chunk(new, &mut progress, 150).unwrap_err();
        assert!(
            matches!(&err, StoreError::ArchiveGone(name) if name == "g"),
            "{err}"
        );
        assert_eq!(progress.written, 150, "the last chunk rolled back");
        assert!(!reader.galaxy_exists("g").unwrap());
        while !store.purge_chunk("g", 1000).unwrap().1 {}
        assert_eq!(db.count("galaxies"), 0);
        // A restore of no archive writes nothing.
        let err = store
            .create_chunk(new, &mut CreationProgress::default(), 1000)
            .unwrap_err();
        assert!(matches!(err, StoreError::ArchiveGone(_)), "{err}");
        assert_eq!(db.count("galaxies"), 0);
    });
}

#[test]
fn idle_galaxies_are_those_saved_longest_ago() {
    let Some(db) = TestDb::new("idle") else {
        return;
    };
    let mut store = open_writer(&db.url);
    let reader = PostgresReader::open(&db.url).unwrap();
    for name in ["a", "b", "c", "d"] {
        insert(&mut store, &reader, &new_galaxy(name));
    }
    let mut client = db.client();
    for (name, days) in [("b", 3), ("a", 2), ("d", 4)] {
        client
            .execute(
                "UPDATE galaxies SET updated_at = now() - $2::bigint * interval '1 day'
                 WHERE name = $1",
                &[&name, &(days as i64)],
            )
            .unwrap();
    }
    store.write_batch(&["d".to_owned()], &[]).unwrap();
    let hour = Duration::from_secs(3600);
    assert_eq!(reader.idle_galaxies(hour, 10).unwrap(), ["b", "a"]);
    assert_eq!(reader.idle_galaxies(hour, 1).unwrap(), ["b"]);
    store.write_batch(&[], &[tick_only("b", 5)]).unwrap();
    assert_eq!(reader.idle_galaxies(hour, 10).unwrap(), ["a"]);
    assert!(reader.idle_galaxies(Duration::MAX, 10).unwrap().is_empty());
}

// History (table `galaxy_history`): segments of `SEGMENT_SIZE` (3 in unit tests) entries.

/// A batch advancing galaxy `name` to `tick` with `history`.
fn history_batch(name: &str, tick: u64, history: Vec<HistoryEntry>) -> GalaxyRows {
    GalaxyRows {
        history,
        ..tick_only(name, tick)
    }
}

/// `(first_tick, last_tick, entries)` of galaxy `name`'s segments, in id order.
fn segment_rows(db: &TestDb, name: &str) -> Vec<(i64, i64, i32)> {
    db.client()
        .query(
            "SELECT first_tick, last_tick, entries FROM galaxy_history
             WHERE galaxy_name = $1 ORDER BY id",
            &[&name],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

#[test]
fn history_is_saved_with_its_batch_and_paged_back_in_tick_order() {
    let Some((db, mut store, reader, _)) = stored_galaxy("history") else {
        return;
    };
    store
        .write_batch(&[], &[history_batch("g", 30, first_history())])
        .unwrap();
    assert_eq!(
        segment_rows(&db, "g"),
        [(10, 110, 3), (12, 20, 3), (12, 12, 1)],
        "cut in order, ids in that order, each with its smallest and largest tick"
    );
    store
        .write_batch(&[], &[history_batch("g", 70, second_history())])
        .unwrap();
    let all = reader.history("g", 0, 100).unwrap();
    assert_eq!(
        ticks_and_x(&all),
        [
            (10, 1),
            (10, 2),
            (12, 3),
            (12, 4),
            (15, 2),
            (20, 3),
            (50, 5),
            (60, 5),
            (110, 1)
        ]
    );
    assert_eq!(all[0], first_history()[0], "entries come back whole");
    assert_eq!(
        ticks_and_x(&reader.history("g", 12, 3).unwrap()),
        [(12, 3), (12, 4), (15, 2)]
    );
    assert_eq!(
        ticks_and_x(&reader.history("g", 21, 100).unwrap()),
        [(50, 5), (60, 5), (110, 1)]
    );
    assert!(reader.history("g", 111, 100).unwrap().is_empty());
    assert!(reader.history("g", 0, 0).unwrap().is_empty());
    assert!(reader.history("nowhere", 0, 10).unwrap().is_empty());
    // More segments than one statement takes (7 rows in unit tests): in order still,
    // ids included (entries 20 and 21 share a tick, across the two statements).
    let many: Vec<HistoryEntry> = (0..30)
        .map(|i| HistoryEntry {
            tick: 200 + i / 2,
            x: i as u32,
            ..first_history()[0]
        })
        .collect();
    store
        .write_batch(&[], &[history_batch("g", 300, many.clone())])
        .unwrap();
    assert_eq!(segment_rows(&db, "g").len(), 4 + 10);
    assert_eq!(reader.history("g", 200, 100).unwrap(), many);
    let storage = reader.storage().unwrap();
    assert_eq!(storage.history_segments, 14);
    let bytes: i64 = db
        .client()
        .query_one(
            "SELECT sum(octet_length(body))::bigint FROM galaxy_history",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(storage.history_bytes, bytes as u64);
}

#[test]
fn a_fenced_batch_saves_no_history() {
    let Some((db, mut store, reader, _)) = stored_galaxy("history_fenced") else {
        return;
    };
    // Another daemon took g: the batch's history was sent before the fence, and is
    // rolled back with the rest.
    let bump = |by: i64| {
        db.client()
            .execute(
                "UPDATE galaxy_owners SET epoch = epoch + $1 WHERE galaxy_name = 'g'",
                &[&by],
            )
            .unwrap()
    };
    bump(1);
    let batch = history_batch("g", 30, first_history());
    let err = store
        .write_batch(&[], std::slice::from_ref(&batch))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Lost, "{err}");
    assert_eq!(db.count("galaxy_history"), 0);
    assert!(reader.history("g", 0, 10).unwrap().is_empty());
    bump(-1);
    store.own("g", 1);
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(db.count("galaxy_history"), 3);
}

#[test]
fn a_purge_removes_history_but_an_archived_galaxys_stays_until_its_archive_is_deleted() {
    let Some(db) = TestDb::new("history_purge") else {
        return;
    };
    let mut store = open_writer(&db.url);
    let reader = PostgresReader::open(&db.url).unwrap();
    let h = new_galaxy("h");
    insert(&mut store, &reader, &new_galaxy("g"));
    insert(&mut store, &reader, &h);
    store
        .write_batch(
            &[],
            &[
                history_batch("g", 30, first_history()),
                history_batch("h", 30, first_history()),
            ],
        )
        .unwrap();
    store.write_batch(&["g".to_owned()], &[]).unwrap();
    loop {
        let (_, done) = store.purge_chunk("g", 2).unwrap();
        let row = db
            .client()
            .query_opt("SELECT 1 FROM galaxies WHERE name = 'g'", &[])
            .unwrap()
            .is_some();
        assert!(
            row || segment_rows(&db, "g").is_empty(),
            "no history of a galaxy row gone"
        );
        if done {
            break;
        }
    }
    assert!(segment_rows(&db, "g").is_empty());
    assert_eq!(segment_rows(&db, "h").len(), 3, "another galaxy's stays");
    let body = crate::archive::encode(&h);
    store.write_archive(&archive_row(&h, &body)).unwrap();
    while !store.purge_chunk("h", 64).unwrap().1 {}
    assert_eq!(db.count("galaxies"), 0);
    assert_eq!(reader.history("h", 0, 100).unwrap().len(), 7);
    assert!(!store.delete_archive("g").unwrap());
    assert_eq!(db.count("galaxy_history"), 3);
    assert!(store.delete_archive("h").unwrap());
    assert_eq!(db.count("galaxy_history"), 0);
}

#[test]
fn pruning_deletes_the_oldest_segments_past_their_age_up_to_the_limit() {
    let Some((db, mut store, reader, _)) = stored_galaxy("history_prune") else {
        return;
    };
    store
        .write_batch(&[], &[history_batch("g", 30, first_history())])
        .unwrap();
    store
        .write_batch(&[], &[history_batch("g", 70, second_history())])
        .unwrap();
    db.client()
        .execute(
            "UPDATE galaxy_history SET saved_at = now() - (10 - id) * interval '1 day'
             WHERE first_tick < 50",
            &[],
        )
        .unwrap();
    let hour = Duration::from_secs(3600);
    assert_eq!(store.prune_history(hour, 2).unwrap(), 2);
    assert_eq!(segment_rows(&db, "g"), [(12, 12, 1), (50, 60, 2)]);
    assert_eq!(store.prune_history(hour, 10).unwrap(), 1);
    assert_eq!(
        store.prune_history(hour, 10).unwrap(),
        0,
        "the recent one stays"
    );
    assert_eq!(store.prune_history(Duration::MAX, 10).unwrap(), 0);
    assert_eq!(
        ticks_and_x(&reader.history("g", 0, 10).unwrap()),
        [(50, 5), (60, 5)]
    );
}

#[test]
fn a_damaged_segment_is_an_error_naming_its_galaxy() {
    let Some((db, mut store, reader, _)) = stored_galaxy("history_damaged") else {
        return;
    };
    store
        .write_batch(&[], &[history_batch("g", 30, first_history())])
        .unwrap();
    db.client()
        .execute(
            "UPDATE galaxy_history SET body = '\\x00ff'::bytea WHERE id = 2",
            &[],
        )
        .unwrap();
    let err = reader.history("g", 0, 100).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Corrupt, "{err}");
    assert!(
        matches!(&err, StoreError::HistoryDamaged { galaxy, segment: 2, .. } if galaxy == "g"),
        "{err}"
    );
}
