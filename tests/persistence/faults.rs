//! Real faults: a database locked by another connection, a database that is full, and the
//! unsaved-age policy. Orders keep working, health tells the truth, nothing is lost.

use std::time::Duration;

use galactic_war::app::{
    AppError, AppState, FailureKind, PersistError, PersistenceState, StoreFailure,
};
use galactic_war::model::StructureKind;
use galactic_war::testing::AppInternals;

use crate::util::{coords, endless_config, wait_for, TestDb};

const COLONY: StructureKind = StructureKind::Colony;

fn order_everywhere(app: &AppState, galaxy: &str, systems: &[(u64, u64)]) {
    for &(x, y) in systems {
        app.build(galaxy, 10, x, y, COLONY)
            .expect("orders keep working");
    }
}

fn state(app: &AppState) -> PersistenceState {
    app.health().persistence.state
}

/// Lets the writer's database grow no further: saves that need a new page fail with
/// SQLITE_FULL (`max_page_count` is per connection, so it is set on the writer's own).
fn freeze_size(app: &AppState) {
    app.writer()
        .unwrap()
        .with_connection(|conn| {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .unwrap()
        .unwrap();
}

fn thaw_size(app: &AppState) {
    app.writer()
        .unwrap()
        .with_connection(|conn| {
            conn.query_row("PRAGMA max_page_count = 1000000000", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .unwrap()
        .unwrap();
}

fn assert_all_saved(db: &TestDb, app: &AppState, galaxy: &str) {
    assert!(
        wait_for(Duration::from_secs(30), || state(app)
            == PersistenceState::Healthy
            && app.dirty_systems() == 0),
        "the engine recovers: {:?}",
        app.health()
    );
    app.save_all().unwrap();
    let stored = db.stored(galaxy).unwrap();
    assert_eq!(stored.systems(), app.galaxy_copy(galaxy).unwrap().systems());
}

#[test]
fn a_locked_database_is_retried_and_everything_saved_after_release() {
    let db = TestDb::new();
    let app = db.open(|s| s.auto_save_interval = Duration::from_secs(2));
    app.create_galaxy("busy", endless_config(50), Some(1), 0)
        .unwrap();
    let systems = coords(&app.galaxy_copy("busy").unwrap());

    let locker = db.connection();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    order_everywhere(&app, "busy", &systems[..20]);
    assert!(
        wait_for(Duration::from_secs(20), || state(&app)
            == PersistenceState::Retrying),
        "health shows the failure: {:?}",
        app.health()
    );
    let health = app.health();
    assert_eq!(health.status, "degraded");
    let error = health.persistence.last_error.unwrap();
    assert!(
        error.contains("locked") || error.contains("busy"),
        "{error}"
    );
    assert!(health.persistence.dirty_systems >= 20);
    // The game goes on from memory.
    order_everywhere(&app, "busy", &systems);
    app.system_details("busy", 10, systems[0].0, systems[0].1)
        .unwrap();
    // The failure keeps its kind across the writer's thread.
    let failed = app.save_all();
    assert!(
        matches!(
            &failed,
            Err(AppError::Persistence(PersistError::Failed(StoreFailure {
                kind: FailureKind::Busy,
                ..
            })))
        ),
        "{failed:?}"
    );

    locker.execute_batch("COMMIT").unwrap();
    assert_all_saved(&db, &app, "busy");
    assert!(app.metrics().batch_errors >= 1);
}

#[test]
fn a_full_database_is_retried_and_everything_saved_once_there_is_room() {
    let db = TestDb::new();
    let app = db.open(|s| s.auto_save_interval = Duration::from_secs(2));
    app.create_galaxy("full", endless_config(2_000), Some(1), 0)
        .unwrap();
    let systems = coords(&app.galaxy_copy("full").unwrap());
    // No room to grow: every page the database has is all it may have.
    freeze_size(&app);
    // First orders add an event row to every system: the database must grow.
    order_everywhere(&app, "full", &systems);
    assert!(
        wait_for(Duration::from_secs(20), || state(&app)
            == PersistenceState::Retrying),
        "health shows the failure: {:?}",
        app.health()
    );
    let error = app.health().persistence.last_error.unwrap();
    assert!(error.contains("full"), "{error}");
    let failed = app.save_all();
    assert!(
        matches!(
            &failed,
            Err(AppError::Persistence(PersistError::Failed(StoreFailure {
                kind: FailureKind::Full,
                ..
            })))
        ),
        "{failed:?}"
    );
    order_everywhere(&app, "full", &systems[..100]);

    thaw_size(&app);
    assert_all_saved(&db, &app, "full");
}

#[test]
fn orders_pause_past_the_unsaved_age_limit_and_resume_after_recovery() {
    let db = TestDb::new();
    let app = db.open(|s| {
        s.auto_save_interval = Duration::from_secs(1);
        s.max_unsaved = Some(Duration::from_secs(1));
    });
    app.create_galaxy("aged", endless_config(10), Some(1), 0)
        .unwrap();
    let (x, y) = coords(&app.galaxy_copy("aged").unwrap())[0];

    let locker = db.connection();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    app.build("aged", 10, x, y, COLONY).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || matches!(
            app.build("aged", 10, x, y, COLONY),
            Err(AppError::UnsavedTooOld { .. })
        )),
        "orders are refused once the oldest change is too old"
    );
    // Reads keep working.
    app.system_details("aged", 10, x, y).unwrap();
    locker.execute_batch("COMMIT").unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || app
            .build("aged", 10, x, y, COLONY)
            .is_ok()),
        "orders are accepted again once the database caught up"
    );
    assert_all_saved(&db, &app, "aged");
}

#[test]
fn orders_pause_while_the_writer_hangs_past_the_stall_limit_and_resume_after() {
    let db = TestDb::new();
    let app = db.open(|s| {
        s.coalescing_delay = Duration::from_millis(100);
        s.max_stall = Some(Duration::from_secs(1));
    });
    app.create_galaxy("stalled", endless_config(10), Some(1), 0)
        .unwrap();
    let (x, y) = coords(&app.galaxy_copy("stalled").unwrap())[0];

    // The writer's next batch waits on this lock (SQLite's busy timeout, then again).
    let locker = db.connection();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let acknowledged_before = std::time::Instant::now();
    app.build("stalled", 10, x, y, COLONY).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || matches!(
            app.build("stalled", 10, x, y, COLONY),
            Err(AppError::SavingStalled { .. })
        )),
        "orders are refused once the writer's call has hung past the limit"
    );
    println!(
        "orders refused {:?} after the first unsaved one",
        acknowledged_before.elapsed()
    );
    app.system_details("stalled", 10, x, y).unwrap();
    locker.execute_batch("COMMIT").unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || app
            .build("stalled", 10, x, y, COLONY)
            .is_ok()),
        "orders are accepted again once a commit went through"
    );
    assert_all_saved(&db, &app, "stalled");
}

/// Lets the writer's database grow by `pages` pages more, then no further.
fn allow_pages(app: &AppState, pages: i64) {
    app.writer()
        .unwrap()
        .with_connection(move |conn| {
            let now: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            conn.query_row(
                &format!("PRAGMA max_page_count = {}", now + pages),
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .unwrap()
        .unwrap();
}

#[test]
fn a_creation_that_fails_midway_is_refused_removed_and_its_name_free() {
    let db = TestDb::new();
    let app = db.open(|_| {});
    // Room for the first chunks of 20 000 systems, not for all of them.
    allow_pages(&app, 400);
    let failed = app.create_galaxy("big", endless_config(20_000), Some(1), 0);
    assert!(
        matches!(failed, Err(AppError::Persistence(_))),
        "refused: {failed:?}"
    );
    assert!(matches!(
        app.galaxy_details("big", 0),
        Err(AppError::UnknownGalaxy(_))
    ));
    thaw_size(&app);
    assert!(
        wait_for(Duration::from_secs(30), || db.rows_of("big") == 0),
        "what the failed creation wrote is removed"
    );
    let created = app
        .create_galaxy("big", endless_config(20_000), Some(2), 0)
        .expect("the name is free again");
    assert_eq!(created.systems, 20_000);
    assert!(
        wait_for(Duration::from_secs(30), || state(&app)
            == PersistenceState::Healthy),
        "healthy again: {:?}",
        app.health()
    );
    assert_eq!(
        db.stored("big").unwrap().systems(),
        app.galaxy_copy("big").unwrap().systems()
    );
}
