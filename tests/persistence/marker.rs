//! The clean-shutdown marker (see `src/persistence/clean.rs`): written only by a
//! shutdown that saved everything, taken by the next open, and never trusted for a file
//! changed since.

use std::time::Duration;

use galactic_war::testing::{marker_path, take, StartupCheck, SCHEMA_VERSION};

use crate::util::{endless_config, TestDb};

const COLONY: galactic_war::model::StructureKind = galactic_war::model::StructureKind::Colony;

#[test]
fn a_clean_shutdown_leaves_the_marker_and_the_next_open_takes_it() {
    let db = TestDb::new();
    let app = db.open(|_| {});
    app.create_galaxy("m", endless_config(50), Some(1), 0)
        .unwrap();
    assert!(!marker_path(&db.path()).exists(), "none while running");
    assert!(app.shutdown().all_saved());
    assert!(marker_path(&db.path()).exists());
    // A second shutdown reports nothing new and keeps the marker as it was.
    let before = std::fs::read(marker_path(&db.path())).unwrap();
    assert!(app.shutdown().all_saved());
    assert_eq!(std::fs::read(marker_path(&db.path())).unwrap(), before);
    drop(app);
    assert!(
        marker_path(&db.path()).exists(),
        "dropping after shutdown keeps it"
    );

    let app = db.open(|_| {});
    assert!(!marker_path(&db.path()).exists(), "opening takes it");
    assert_eq!(app.galaxy_copy("m").unwrap().systems().len(), 50);
    drop(app);
    assert!(
        !marker_path(&db.path()).exists(),
        "a drop without shutdown is not a clean stop"
    );
}

#[test]
fn a_shutdown_that_did_not_save_everything_leaves_no_marker() {
    let db = TestDb::new();
    let app = db.open(|s| s.shutdown_timeout = Duration::from_secs(1));
    app.create_galaxy("u", endless_config(10), Some(1), 0)
        .unwrap();
    let locker = db.connection();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let system = app.galaxy_copy("u").unwrap().systems()[0];
    app.build("u", 5, system.x.into(), system.y.into(), COLONY)
        .unwrap();
    assert!(!app.shutdown().all_saved());
    locker.execute_batch("ROLLBACK").unwrap();
    assert!(!marker_path(&db.path()).exists());
}

#[test]
fn a_database_changed_while_stopped_does_not_match_its_marker() {
    let db = TestDb::new();
    let app = db.open(|_| {});
    app.create_galaxy("c", endless_config(10), Some(1), 0)
        .unwrap();
    assert!(app.shutdown().all_saved());
    drop(app);
    // An operator's session while the daemon is stopped; closing it checkpoints the WAL
    // into the file.
    db.connection()
        .execute("UPDATE galaxies SET tick = tick + 1", [])
        .unwrap();
    let StartupCheck::Whole { why } = take(&db.path()) else {
        panic!("a changed file matched its marker");
    };
    assert!(why.contains("does not match"), "{why}");
    assert!(!marker_path(&db.path()).exists());
}

#[test]
fn an_untouched_database_matches_its_marker() {
    let db = TestDb::new();
    let app = db.open(|_| {});
    app.create_galaxy("t", endless_config(10), Some(1), 0)
        .unwrap();
    assert!(app.shutdown().all_saved());
    drop(app);
    // Reading does not change the file.
    assert!(db.stored("t").is_some());
    assert_eq!(
        take(&db.path()),
        StartupCheck::HeaderAndSchema {
            schema_version: SCHEMA_VERSION
        }
    );
}
