//! The SQLite store's unit tests: migrations, creation, batches, deletion, jobs, loads
//! and the failures a write meets, on an in-memory or a temporary database.

use rusqlite::Connection;

use super::super::history::samples::{first_history, second_history, ticks_and_x};
use super::super::{
    ArchiveRow, CreationProgress, FailureKind, GalaxyJob, GalaxyRows, NewGalaxy, ReadStore,
    StoreError, SystemRow, WriteStats, WriteStore,
};
use super::write;
use super::{SqliteReader, SqliteWriter, SCHEMA_VERSION};
use crate::model::{Galaxy, GalaxyConfig, HistoryEntry, RowMask, StructureKind};
use crate::settings::{DatabaseUrl, Synchronous};

fn memory() -> SqliteWriter {
    SqliteWriter::open(&DatabaseUrl::Memory, Synchronous::Normal).unwrap()
}

/// An in-memory store holding the blitz galaxy "g", and that galaxy with nothing unsaved.
fn stored_galaxy() -> (SqliteWriter, Galaxy) {
    let mut store = memory();
    let galaxy = new_galaxy("g");
    insert(&mut store, &galaxy).unwrap();
    (store, galaxy)
}

fn new_galaxy(name: &str) -> Galaxy {
    let (config, _) = GalaxyConfig::preset("blitz").unwrap();
    let mut galaxy = Galaxy::create(name, config, 9, 100).unwrap();
    galaxy.take_changes();
    galaxy
}

/// Runs `write` on `galaxy` as creation writes it.
fn as_new<T>(galaxy: &Galaxy, write: impl FnOnce(&NewGalaxy) -> T) -> T {
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

/// Writes the first `systems` of a creation of `galaxy` and stops there, as a
/// creation that failed or was interrupted does.
fn begin_creation(store: &mut SqliteWriter, galaxy: &Galaxy, systems: usize) {
    as_new(galaxy, |new| {
        store.create_chunk(new, &mut CreationProgress::default(), systems)
    })
    .unwrap();
}

/// Creates `galaxy` in chunks of 64 systems, as the writer's jobs do, checking that it
/// stays invisible until the last chunk.
fn insert(store: &mut SqliteWriter, galaxy: &Galaxy) -> Result<WriteStats, StoreError> {
    as_new(galaxy, |new| insert_new(store, galaxy, new))
}

fn insert_new(
    store: &mut SqliteWriter,
    galaxy: &Galaxy,
    new: &NewGalaxy,
) -> Result<WriteStats, StoreError> {
    let mut progress = CreationProgress::default();
    let mut total = WriteStats::default();
    loop {
        let stats = store.create_chunk(new, &mut progress, 64)?;
        total.systems += stats.systems;
        total.rows += stats.rows;
        let visible = store.galaxy_exists(galaxy.name())?;
        if progress.written == galaxy.systems().len() {
            assert!(visible, "a created galaxy is visible");
            return Ok(total);
        }
        assert!(!visible, "a galaxy being created is invisible");
        assert_eq!(store.load_galaxy(galaxy.name())?, None);
        assert!(!store.galaxy_names()?.iter().any(|n| n == galaxy.name()));
    }
}

/// Deletes galaxy `name` as the writer does: a batch marks it, chunks remove its rows.
fn delete(store: &mut SqliteWriter, name: &str) {
    store.write_batch(&[name.to_owned()], &[]).unwrap();
    assert!(!store.galaxy_exists(name).unwrap(), "hidden once marked");
    while !store.purge_chunk(name, 64).unwrap().1 {}
}

/// Takes the galaxy's changes as one batch, as the writer's cut does.
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
        history: Vec::new(),
    }
}

fn count(store: &SqliteWriter, table: &str) -> i64 {
    store
        .connection()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn migrations_create_the_schema_and_the_events_index() {
    let store = memory();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let index: String = store
        .connection()
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'events_system_completion'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        index.contains("events(system_id, completion_tick)"),
        "{index}"
    );
    let fk: i64 = store
        .connection()
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
}

#[test]
fn a_created_galaxy_loads_back_identical() {
    let mut store = memory();
    let galaxy = new_galaxy("g");
    let stats = insert(&mut store, &galaxy).unwrap();
    assert_eq!(stats.systems, 200);
    assert_eq!(count(&store, "systems"), 200);
    assert_eq!(count(&store, "structures"), 200 * 5);
    assert_eq!(count(&store, "events"), 0);
    assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy.clone()));
    assert_eq!(store.load_galaxy("nope").unwrap(), None);
    assert!(store.galaxy_exists("g").unwrap());
    assert_eq!(store.galaxy_names().unwrap(), ["g"]);
    assert!(insert(&mut store, &galaxy).is_err(), "names are unique");
}

#[test]
fn a_batch_writes_only_changed_rows_and_loads_back() {
    let (mut store, mut galaxy) = stored_galaxy();
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
    assert_eq!(count(&store, "events"), 1);
    assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy.clone()));
    // Writing the same rows again replaces, never duplicates.
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(count(&store, "events"), 1);
    assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
}

#[test]
fn a_completed_build_is_saved_with_the_next_order() {
    let (mut store, mut galaxy) = stored_galaxy();
    let (x, y) = galaxy.systems()[0].coords();
    let (x, y) = (u64::from(x), u64::from(y));
    galaxy
        .build(100, x, y, StructureKind::AsteroidMine)
        .unwrap();
    galaxy
        .build(300, x, y, StructureKind::WaterHarvester)
        .unwrap();
    let batch = take_batch(&mut galaxy, 300);
    assert!(batch.systems[0]
        .rows
        .contains(RowMask::structure(StructureKind::AsteroidMine)));
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
}

#[test]
fn a_structure_row_missing_from_the_database_is_inserted_not_lost() {
    let (mut store, mut galaxy) = stored_galaxy();
    let (x, y) = galaxy.systems()[0].coords();
    store
        .connection()
        .execute(
            "DELETE FROM structures WHERE structure_type = 'asteroidmine'
             AND system_id = (SELECT id FROM systems WHERE x = ?1 AND y = ?2)",
            [x, y],
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
    assert_eq!(count(&store, "structures"), 200 * 5);
    assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
}

#[test]
fn deletion_cascades_to_every_row() {
    let mut store = memory();
    insert(&mut store, &new_galaxy("g")).unwrap();
    insert(&mut store, &new_galaxy("h")).unwrap();
    delete(&mut store, "g");
    assert_eq!(store.galaxy_names().unwrap(), ["h"]);
    assert_eq!(count(&store, "galaxies"), 1);
    assert_eq!(count(&store, "galaxy_jobs"), 0);
    assert_eq!(count(&store, "systems"), 200);
    assert_eq!(count(&store, "structures"), 1000);
    // The name can be created again.
    insert(&mut store, &new_galaxy("g")).unwrap();
}

#[test]
fn an_interrupted_creation_is_removed_at_the_next_start() {
    let mut store = memory();
    let galaxy = new_galaxy("g");
    begin_creation(&mut store, &galaxy, 50);
    insert(&mut store, &new_galaxy("h")).unwrap();
    delete_mark_only(&mut store, "h");
    assert_eq!(count(&store, "systems"), 250);
    assert_eq!(
        store.unfinished_jobs().unwrap(),
        [
            GalaxyJob::Creating("g".into()),
            GalaxyJob::Deleting("h".into())
        ]
    );
    assert_eq!(
        store.unfinished_jobs().unwrap(),
        [
            GalaxyJob::Deleting("g".into()),
            GalaxyJob::Deleting("h".into())
        ],
        "the creation became a deletion"
    );
    while !store.purge_chunk("g", 16).unwrap().1 {}
    while !store.purge_chunk("h", 1000).unwrap().1 {}
    assert_eq!(count(&store, "galaxies"), 0);
    assert_eq!(count(&store, "systems"), 0);
    assert_eq!(count(&store, "structures"), 0);
}

#[test]
fn a_purge_never_touches_a_live_galaxy() {
    let (mut store, galaxy) = stored_galaxy();
    assert!(store.purge_chunk("g", 1000).unwrap().1);
    assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
}

#[test]
fn a_failed_creation_is_purged_and_its_name_created_again() {
    let mut store = memory();
    let galaxy = new_galaxy("g");
    begin_creation(&mut store, &galaxy, 50);
    // The writer refuses the creation after a failed chunk and purges what it wrote.
    while !store.purge_chunk("g", 16).unwrap().1 {}
    assert_eq!(count(&store, "galaxies"), 0);
    assert_eq!(count(&store, "systems"), 0);
    assert_eq!(count(&store, "galaxy_jobs"), 0);
    insert(&mut store, &galaxy).unwrap();
}

#[test]
fn a_load_reads_the_same_row_ids_the_writer_would_look_up() {
    let (mut store, mut galaxy) = stored_galaxy();
    // Builds in flight on some systems, so some have an event row.
    for index in [0usize, 3, 150] {
        let (x, y) = galaxy.systems()[index].coords();
        galaxy
            .build(200, x.into(), y.into(), StructureKind::Hatchery)
            .unwrap();
    }
    store
        .write_batch(&[], &[take_batch(&mut galaxy, 200)])
        .unwrap();
    let (loaded, ids) = store.load_galaxy_with_ids("g").unwrap().unwrap();
    assert_eq!(loaded, galaxy);
    let looked_up = write::fetch_ids(store.connection(), "g").unwrap();
    assert_eq!(ids.0, looked_up);
    assert_eq!(ids.0.iter().filter(|s| s.event.is_some()).count(), 3);
}

fn delete_mark_only(store: &mut SqliteWriter, name: &str) {
    store.write_batch(&[name.to_owned()], &[]).unwrap();
}

#[test]
fn a_stale_id_cache_is_an_error_not_a_wrong_write() {
    let mut store = memory();
    let galaxy = new_galaxy("g");
    insert(&mut store, &galaxy).unwrap();
    let mut system = *galaxy.system(0).unwrap();
    system.x += 1; // not the system stored at index 0
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
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    assert_eq!(err.failure().kind, FailureKind::Inconsistent);
}

/// A batch that advances galaxy "g"'s tick and nothing else.
fn tick_batch(tick: u64) -> GalaxyRows {
    GalaxyRows {
        name: "g".into(),
        tick: Some(tick),
        systems: Vec::new(),
        history: Vec::new(),
    }
}

#[test]
fn a_locked_database_fails_as_busy() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::File(dir.path().join("db"));
    let mut store = SqliteWriter::open(&url, Synchronous::Normal).unwrap();
    insert(&mut store, &new_galaxy("g")).unwrap();
    let DatabaseUrl::File(path) = &url else {
        unreachable!()
    };
    let holder = Connection::open(path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // A deadline already passed: the busy wait ends at once, not after BUSY_TIMEOUT.
    store.deadline.set(std::time::Instant::now());
    store.on_writer_thread();
    let err = store.write_batch(&[], &[tick_batch(5)]).unwrap_err();
    assert_eq!(err.failure().kind, FailureKind::Busy, "{err}");
    holder.execute_batch("COMMIT").unwrap();
}

/// Lets the database grow no further: the next page it needs is refused (SQLITE_FULL).
fn leave_no_room(store: &SqliteWriter) {
    let pages: i64 = store
        .connection()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    store
        .connection()
        .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap();
}

#[test]
fn a_database_with_no_room_fails_as_full() {
    let mut store = memory();
    leave_no_room(&store);
    let err = insert(&mut store, &new_galaxy("g")).unwrap_err();
    let failure = err.failure();
    assert_eq!(failure.kind, FailureKind::Full, "{err}");
    assert_eq!(failure.message, err.to_string());
}

#[test]
fn a_removed_database_file_fails_as_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut store =
        SqliteWriter::open(&DatabaseUrl::File(path.clone()), Synchronous::Normal).unwrap();
    insert(&mut store, &new_galaxy("g")).unwrap();
    std::fs::remove_file(&path).unwrap();
    let err = store.write_batch(&[], &[tick_batch(5)]).unwrap_err();
    assert_eq!(err.failure().kind, FailureKind::FileGone, "{err}");
}

#[test]
fn a_writer_is_reached_through_the_seam_and_a_reader_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut writer =
        SqliteWriter::open(&DatabaseUrl::File(path.clone()), Synchronous::Normal).unwrap();
    insert(&mut writer, &new_galaxy("g")).unwrap();
    let store: &mut dyn WriteStore = &mut writer;
    assert!(SqliteWriter::of(store).is_some());
    let reader = SqliteReader::open(&path).unwrap();
    assert_eq!(reader.galaxy_names().unwrap(), ["g"]);
    // SQLite refuses a write on the reader's connection too.
    let err = reader
        .db
        .conn
        .execute("DELETE FROM galaxies", [])
        .unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly));
}

#[test]
fn inconsistent_rows_are_refused_on_load() {
    let mut store = memory();
    insert(&mut store, &new_galaxy("g")).unwrap();
    store
        .connection()
        .execute("UPDATE systems SET metal = -5 WHERE id = 1", [])
        .unwrap();
    let err = store.load_galaxy("g").unwrap_err();
    assert!(err.to_string().contains("negative value -5"), "{err}");
}

#[test]
fn a_write_that_fails_for_room_leaves_no_transaction_open_and_the_probe_sees_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut store =
        SqliteWriter::open(&DatabaseUrl::File(path.clone()), Synchronous::Normal).unwrap();
    WriteStore::probe(&mut store).expect("a file with room answers the probe");
    leave_no_room(&store);
    let galaxy = new_galaxy("g");
    let err = as_new(&galaxy, |new| {
        WriteStore::create_chunk(&mut store, new, &mut CreationProgress::default(), 200)
    })
    .unwrap_err();
    assert_eq!(err.failure().kind, FailureKind::Full, "{err}");
    assert!(store.connection().is_autocommit(), "rolled back");
    assert!(store.short_of_room, "the WAL is to give its room back");
    std::fs::remove_file(&path).unwrap();
    let err = WriteStore::probe(&mut store).unwrap_err();
    assert_eq!(err.failure().kind, FailureKind::FileGone, "{err}");
}

/// Galaxy `galaxy`'s archive as the writer stores it: its body and the row.
fn archive_of(galaxy: &Galaxy) -> Vec<u8> {
    crate::archive::encode(galaxy)
}

fn archive_row<'a>(galaxy: &'a Galaxy, body: &'a [u8]) -> ArchiveRow<'a> {
    ArchiveRow {
        name: galaxy.name(),
        format: crate::archive::FORMAT_VERSION,
        systems: galaxy.systems().len() as u64,
        body,
    }
}

/// Restores `galaxy` (an archive's decoded galaxy) in chunks of 64, as the writer's
/// creation jobs do.
fn restore(store: &mut SqliteWriter, galaxy: &Galaxy) -> Result<WriteStats, StoreError> {
    as_new(galaxy, |new| {
        let new = NewGalaxy {
            restoring: true,
            ..*new
        };
        insert_new(store, galaxy, &new)
    })
}

#[test]
fn an_archive_replaces_the_live_rows_and_a_restore_brings_them_back() {
    let (mut store, mut galaxy) = stored_galaxy();
    let (x, y) = galaxy.systems()[3].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    let tick = galaxy.tick();
    let batch = take_batch(&mut galaxy, tick);
    store.write_batch(&[], &[batch]).unwrap();
    let systems = galaxy.systems().len() as u64;
    let before = store.storage().unwrap();
    assert_eq!(before.live_systems, systems);
    assert_eq!((before.archived_galaxies, before.archived_bytes), (0, 0));
    assert!(before.live_bytes > 0);

    let body = archive_of(&galaxy);
    let stats = store.write_archive(&archive_row(&galaxy, &body)).unwrap();
    assert_eq!(stats.rows, 2);
    // Archived from that commit on: invisible to every read of live galaxies.
    assert!(!store.galaxy_exists("g").unwrap());
    assert_eq!(store.load_galaxy("g").unwrap(), None);
    assert!(store.galaxy_names().unwrap().is_empty());
    assert_eq!(store.read_archive("g").unwrap().as_deref(), Some(&body[..]));
    assert_eq!(crate::archive::decode(&body).unwrap(), galaxy);
    let listed = store.archives().unwrap();
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
    assert_eq!(
        store
            .write_archive(&archive_row(&galaxy, &body))
            .unwrap_err()
            .kind(),
        FailureKind::Exists,
        "archived twice"
    );
    assert_eq!(
        store.unfinished_jobs().unwrap(),
        [GalaxyJob::Deleting("g".into())],
        "its rows are marked as a deletion's are"
    );
    // Counted until purged, like a deletion's rows.
    assert_eq!(store.storage().unwrap().live_systems, systems);
    while !store.purge_chunk("g", 64).unwrap().1 {}
    assert_eq!(count(&store, "systems"), 0);
    assert_eq!(count(&store, "galaxies"), 0);
    let archived = store.storage().unwrap();
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
    let err = insert(&mut store, &fresh).unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists(name) if name == "g"),
        "{err}"
    );
    assert_eq!(count(&store, "galaxies"), 0);
    assert_eq!(count(&store, "galaxy_jobs"), 0);

    let decoded = crate::archive::decode(&store.read_archive("g").unwrap().unwrap()).unwrap();
    restore(&mut store, &decoded).unwrap();
    assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
    assert_eq!(
        store.read_archive("g").unwrap(),
        None,
        "the restore took it"
    );
    assert!(store.archives().unwrap().is_empty());
    assert_eq!(store.storage().unwrap().archived_galaxies, 0);
}

#[test]
fn only_a_live_galaxy_is_archived() {
    let (mut store, galaxy) = stored_galaxy();
    let body = archive_of(&galaxy);
    let other = new_galaxy("absent");
    let err = store
        .write_archive(&archive_row(&other, &body))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Inconsistent { galaxy, .. } if galaxy == "absent"),
        "{err}"
    );
    delete_mark_only(&mut store, "g");
    let err = store
        .write_archive(&archive_row(&galaxy, &body))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Inconsistent, "{err}");
    assert!(store.archives().unwrap().is_empty(), "nothing written");
    let half = new_galaxy("half");
    begin_creation(&mut store, &half, 10);
    let err = store.write_archive(&archive_row(&half, &body)).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Inconsistent, "{err}");
    assert!(store.archives().unwrap().is_empty(), "nothing written");
}

#[test]
fn a_restore_whose_archive_is_deleted_meanwhile_is_refused() {
    let (mut store, galaxy) = stored_galaxy();
    let body = archive_of(&galaxy);
    store.write_archive(&archive_row(&galaxy, &body)).unwrap();
    while !store.purge_chunk("g", 64).unwrap().1 {}
    let mut progress = CreationProgress::default();
    as_new(&galaxy, |new| {
        let new = NewGalaxy {
            restoring: true,
            ..*new
        };
        store.create_chunk(&new, &mut progress, 64).unwrap();
        assert!(store.delete_archive("g").unwrap());
        assert!(!store.delete_archive("g").unwrap(), "deleted already");
        let err = loop {
            match store.create_chunk(&new, &mut progress, 64) {
                Ok(_) => assert!(progress.written < galaxy.systems().len()),
                Err(err) => break err,
            }
        };
        assert!(
            matches!(&err, StoreError::ArchiveGone(name) if name == "g"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the archive of galaxy 'g' is gone (deleted during its restore); the restore is \
             abandoned"
        );
        // The last chunk rolled back: the galaxy is still being created, and its rows go
        // as a failed creation's do.
        assert!(!store.galaxy_exists("g").unwrap());
        while !store.purge_chunk("g", 64).unwrap().1 {}
        assert_eq!(count(&store, "systems"), 0);
        // A restore of no archive writes nothing.
        let err = store
            .create_chunk(&new, &mut CreationProgress::default(), 64)
            .unwrap_err();
        assert!(matches!(err, StoreError::ArchiveGone(_)), "{err}");
        assert_eq!(count(&store, "galaxies"), 0);
    });
}

#[test]
fn idle_galaxies_are_those_saved_longest_ago() {
    let mut store = memory();
    for name in ["a", "b", "c", "d"] {
        insert(&mut store, &new_galaxy(name)).unwrap();
    }
    let set = |name: &str, at: &str| {
        store
            .connection()
            .execute(
                "UPDATE galaxies SET updated_at = ?2 WHERE name = ?1",
                [name, at],
            )
            .unwrap();
    };
    set("b", "2000-01-01 00:00:00");
    set("a", "2001-01-01 00:00:00");
    set("d", "1999-01-01 00:00:00");
    let hour = std::time::Duration::from_secs(3600);
    delete_mark_only(&mut store, "d");
    assert_eq!(store.idle_galaxies(hour, 10).unwrap(), ["b", "a"]);
    assert_eq!(store.idle_galaxies(hour, 1).unwrap(), ["b"]);
    // A batch that saves a change makes it recent again.
    store.write_batch(&[], &[tick_batch_of("b", 5)]).unwrap();
    assert_eq!(store.idle_galaxies(hour, 10).unwrap(), ["a"]);
    assert!(store
        .idle_galaxies(std::time::Duration::MAX, 10)
        .unwrap()
        .is_empty());
}

/// A batch that advances galaxy `name`'s tick and nothing else.
fn tick_batch_of(name: &str, tick: u64) -> GalaxyRows {
    GalaxyRows {
        name: name.into(),
        tick: Some(tick),
        systems: Vec::new(),
        history: Vec::new(),
    }
}

// History (table `galaxy_history`): segments of `SEGMENT_SIZE` (3 in unit tests) entries.

/// A batch advancing galaxy `name` to `tick` with `history`.
fn history_batch(name: &str, tick: u64, history: Vec<HistoryEntry>) -> GalaxyRows {
    GalaxyRows {
        history,
        ..tick_batch_of(name, tick)
    }
}

/// `(first_tick, last_tick, entries)` of galaxy `name`'s segments, in id order.
fn segment_rows(store: &SqliteWriter, name: &str) -> Vec<(i64, i64, i64)> {
    let conn = store.connection();
    let mut stmt = conn
        .prepare(
            "SELECT first_tick, last_tick, entries FROM galaxy_history
             WHERE galaxy_name = ?1 ORDER BY id",
        )
        .unwrap();
    let rows = stmt
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

#[test]
fn history_is_saved_in_segments_with_its_batch_and_paged_back_in_tick_order() {
    let (mut store, _) = stored_galaxy();
    store
        .write_batch(&[], &[history_batch("g", 30, first_history())])
        .unwrap();
    assert_eq!(
        segment_rows(&store, "g"),
        [(10, 110, 3), (12, 20, 3), (12, 12, 1)],
        "cut in order, each with its smallest and largest tick"
    );
    store
        .write_batch(&[], &[history_batch("g", 70, second_history())])
        .unwrap();
    let all = store.history("g", 0, 100).unwrap();
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
    // Pages: from a tick, at most `limit`; of one tick, in the order they were saved.
    assert_eq!(
        ticks_and_x(&store.history("g", 12, 3).unwrap()),
        [(12, 3), (12, 4), (15, 2)]
    );
    assert_eq!(
        ticks_and_x(&store.history("g", 21, 100).unwrap()),
        [(50, 5), (60, 5), (110, 1)]
    );
    assert!(store.history("g", 111, 100).unwrap().is_empty());
    assert!(store.history("g", 0, 0).unwrap().is_empty());
    assert!(store.history("nowhere", 0, 10).unwrap().is_empty());
    // A batch without history writes none.
    store.write_batch(&[], &[tick_batch(80)]).unwrap();
    assert_eq!(count(&store, "galaxy_history"), 4);
    let storage = store.storage().unwrap();
    assert_eq!(storage.history_segments, 4);
    let bytes: i64 = store
        .connection()
        .query_row("SELECT sum(length(body)) FROM galaxy_history", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(storage.history_bytes, bytes as u64);
}

#[test]
fn a_failed_batch_saves_no_history() {
    let (mut store, galaxy) = stored_galaxy();
    // The batch fails at its third segment, after its tick and two segments were written.
    store
        .connection()
        .execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON galaxy_history
             WHEN NEW.first_tick = 12 AND NEW.entries = 1
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .unwrap();
    let batch = history_batch("g", 30, first_history());
    store
        .write_batch(&[], std::slice::from_ref(&batch))
        .unwrap_err();
    assert_eq!(
        count(&store, "galaxy_history"),
        0,
        "rolled back with the rest"
    );
    let tick: i64 = store
        .connection()
        .query_row("SELECT tick FROM galaxies WHERE name = 'g'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tick as u64, galaxy.tick());
    store
        .connection()
        .execute_batch("DROP TRIGGER refuse")
        .unwrap();
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(count(&store, "galaxy_history"), 3);
}

#[test]
fn a_purge_removes_history_but_an_archived_galaxys_stays_until_its_archive_is_deleted() {
    let mut store = memory();
    let (g, h) = (new_galaxy("g"), new_galaxy("h"));
    insert(&mut store, &g).unwrap();
    insert(&mut store, &h).unwrap();
    store
        .write_batch(
            &[],
            &[
                history_batch("g", 30, first_history()),
                history_batch("h", 30, first_history()),
            ],
        )
        .unwrap();
    // g deleted: its history goes, a chunk at a time, before the galaxy row.
    store.write_batch(&["g".to_owned()], &[]).unwrap();
    loop {
        let (_, done) = store.purge_chunk("g", 2).unwrap();
        let left = segment_rows(&store, "g").len();
        let row: bool = store
            .connection()
            .query_row("SELECT count(*) FROM galaxies WHERE name = 'g'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(row || left == 0, "no history of a galaxy row gone");
        if done {
            break;
        }
    }
    assert!(segment_rows(&store, "g").is_empty());
    assert_eq!(segment_rows(&store, "h").len(), 3, "another galaxy's stays");
    // h archived: its live rows are purged, its history stays, and reads back.
    let body = archive_of(&h);
    store.write_archive(&archive_row(&h, &body)).unwrap();
    while !store.purge_chunk("h", 64).unwrap().1 {}
    assert_eq!(count(&store, "galaxies"), 0);
    assert_eq!(store.history("h", 0, 100).unwrap().len(), 7);
    // Deleting the archive of another name touches nothing.
    assert!(!store.delete_archive("g").unwrap());
    assert_eq!(count(&store, "galaxy_history"), 3);
    assert!(store.delete_archive("h").unwrap());
    assert_eq!(count(&store, "galaxy_history"), 0);
}

#[test]
fn a_restored_galaxy_keeps_its_history_and_adds_to_it() {
    let (mut store, galaxy) = stored_galaxy();
    store
        .write_batch(&[], &[history_batch("g", 30, first_history())])
        .unwrap();
    let body = archive_of(&galaxy);
    store.write_archive(&archive_row(&galaxy, &body)).unwrap();
    while !store.purge_chunk("g", 64).unwrap().1 {}
    restore(&mut store, &galaxy).unwrap();
    store
        .write_batch(&[], &[history_batch("g", 70, second_history())])
        .unwrap();
    assert_eq!(store.history("g", 0, 100).unwrap().len(), 9);
}

#[test]
fn pruning_deletes_the_oldest_segments_past_their_age_up_to_the_limit() {
    let (mut store, _) = stored_galaxy();
    store
        .write_batch(&[], &[history_batch("g", 30, first_history())])
        .unwrap();
    store
        .write_batch(&[], &[history_batch("g", 70, second_history())])
        .unwrap();
    // The first batch's three segments saved long ago, the oldest first.
    store
        .connection()
        .execute_batch(
            "UPDATE galaxy_history SET saved_at = datetime('now', '-' || (10 - id) || ' days')
             WHERE first_tick < 50",
        )
        .unwrap();
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(store.prune_history(hour, 2).unwrap(), 2);
    assert_eq!(segment_rows(&store, "g"), [(12, 12, 1), (50, 60, 2)]);
    assert_eq!(store.prune_history(hour, 10).unwrap(), 1);
    assert_eq!(
        store.prune_history(hour, 10).unwrap(),
        0,
        "the recent one stays"
    );
    assert_eq!(
        store.prune_history(std::time::Duration::MAX, 10).unwrap(),
        0
    );
    assert_eq!(
        ticks_and_x(&store.history("g", 0, 10).unwrap()),
        [(50, 5), (60, 5)]
    );
    assert_eq!(
        store.prune_history(std::time::Duration::ZERO, 0).unwrap(),
        0
    );
}

#[test]
fn a_damaged_segment_is_an_error_naming_its_galaxy() {
    let (mut store, _) = stored_galaxy();
    store
        .write_batch(&[], &[history_batch("g", 30, first_history())])
        .unwrap();
    store
        .connection()
        .execute_batch("UPDATE galaxy_history SET body = x'00ff' WHERE id = 2")
        .unwrap();
    let err = store.history("g", 0, 100).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Corrupt, "{err}");
    assert!(err.to_string().contains("galaxy 'g'"), "{err}");
    // A row whose ticks lie about its body is damaged too.
    store
        .connection()
        .execute_batch(
            "UPDATE galaxy_history SET body = (SELECT body FROM galaxy_history WHERE id = 3)
             WHERE id = 2",
        )
        .unwrap();
    let err = store.history("g", 0, 100).unwrap_err();
    assert!(
        matches!(err, StoreError::HistoryDamaged { segment: 2, .. }),
        "{err}"
    );
}
