//! Real faults of a PostgreSQL server: the server stopped at once (`pg_ctl stop -m
//! immediate`) while orders go on, then started again; the writer's session terminated by
//! an operator (`pg_terminate_backend`); statements cancelled by a statement timeout. Each
//! ends with every acknowledged order saved and health back to `healthy`.
//!
//! Every order costs its system one colony level (an endless galaxy: each order succeeds
//! and completes at once), so the stored levels count the orders that reached the
//! database, exactly.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use galactic_war::app::AppState;
use galactic_war::app::PersistenceState;
use galactic_war::model::StructureKind;

use crate::postgres_cluster::{Cluster, APPLICATION_NAME};
use crate::util::{coords, endless_config, wait_for, TestDb};

const COLONY: StructureKind = StructureKind::Colony;
const SYSTEMS: u64 = 60;

fn state(app: &AppState) -> PersistenceState {
    app.health().persistence.state
}

/// Orders on one thread, round the galaxy's systems, until told to stop; returns how many
/// were acknowledged (all of them: the game runs from memory whatever the database does).
struct Orders {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Orders {
    fn start(app: &AppState, galaxy: &'static str) -> Orders {
        let systems = coords(&app.galaxy_copy(galaxy).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (app, stop) = (app.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acknowledged = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (x, y) = systems[(acknowledged % systems.len() as u64) as usize];
                    app.build(galaxy, 10, x, y, COLONY)
                        .expect("orders keep working whatever the database does");
                    acknowledged += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                acknowledged
            })
        };
        Orders { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Waits for health `healthy` with nothing dirty, flushes, and checks that the stored
/// galaxy is the one in memory and holds all `acknowledged` orders.
fn assert_all_saved(db: &TestDb, app: &AppState, galaxy: &str, acknowledged: u64) {
    assert!(
        wait_for(Duration::from_secs(60), || state(app)
            == PersistenceState::Healthy
            && app.dirty_systems() == 0),
        "the engine recovers: {:?}",
        app.health()
    );
    app.save_all().unwrap();
    assert_eq!(state(app), PersistenceState::Healthy);
    let stored = db.stored(galaxy).unwrap();
    assert_eq!(stored.systems(), app.galaxy_copy(galaxy).unwrap().systems());
    let levels: u64 = stored
        .systems()
        .iter()
        .map(|s| u64::from(s.levels[COLONY.index()]) - 1 + u64::from(s.build.is_some()))
        .sum();
    assert_eq!(levels, acknowledged, "every acknowledged order is stored");
}

/// The engine's sessions on the database, by process id.
fn engine_pids(db: &TestDb) -> HashSet<i64> {
    db.pg_client()
        .query(
            "SELECT pid::bigint FROM pg_stat_activity WHERE application_name LIKE $1 || '%' AND datname = $2",
            &[&APPLICATION_NAME, &db.name()],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn a_server_stopped_during_orders_and_started_again_loses_nothing() {
    // A cluster of this test's own: stopping the shared one would fail the others.
    let Some(cluster) = Cluster::private() else {
        return;
    };
    let db = TestDb::on(&cluster);
    let app = db.open(|s| s.auto_save_interval = Duration::from_secs(2));
    app.create_galaxy("down", endless_config(SYSTEMS), Some(1), 0)
        .unwrap();
    let orders = Orders::start(&app, "down");
    let committed = app.metrics().batches_committed;
    assert!(wait_for(Duration::from_secs(30), || app
        .metrics()
        .batches_committed
        > committed + 5));

    cluster.stop();
    assert!(
        wait_for(Duration::from_secs(30), || state(&app)
            == PersistenceState::Retrying),
        "health shows the server is gone: {:?}",
        app.health()
    );
    let health = app.health();
    assert_eq!(health.status, "degraded");
    assert!(health.persistence.last_error.is_some(), "{health:?}");
    // The game goes on from memory while the server is down.
    assert!(wait_for(Duration::from_secs(10), || app.dirty_systems() > 0));
    let failed = app.metrics().batch_errors;
    assert!(failed >= 1);

    cluster.restart();
    assert!(
        wait_for(Duration::from_secs(60), || app.metrics().batches_committed
            > committed + 5
            && state(&app) != PersistenceState::Retrying),
        "the writer reconnects once the server is back: {:?}",
        app.health()
    );
    let acknowledged = orders.finish();
    assert_all_saved(&db, &app, "down", acknowledged);
    assert!(app.shutdown().all_saved());
}

#[test]
fn the_writer_terminated_by_an_operator_reconnects_and_loses_nothing() {
    let Some(db) = TestDb::postgres() else {
        return;
    };
    let app = db.open(|s| s.auto_save_interval = Duration::from_secs(2));
    app.create_galaxy("term", endless_config(SYSTEMS), Some(1), 0)
        .unwrap();
    let orders = Orders::start(&app, "term");
    for round in 0..3 {
        let before = engine_pids(&db);
        assert!(!before.is_empty(), "the engine holds a session");
        let terminated = db
            .pg_client()
            .query_one(
                "SELECT count(pg_terminate_backend(pid))::bigint FROM pg_stat_activity \
                 WHERE application_name LIKE $1 || '%' AND datname = $2",
                &[&APPLICATION_NAME, &db.name()],
            )
            .unwrap()
            .get::<_, i64>(0);
        assert!(terminated >= 1, "round {round}");
        // The orders go on; the writer's next batch finds its session gone and opens
        // another.
        let committed = app.metrics().batches_committed;
        assert!(
            wait_for(Duration::from_secs(60), || app.metrics().batches_committed
                > committed + 3),
            "round {round}: batches commit again: {:?}",
            app.health()
        );
        let after = engine_pids(&db);
        assert!(
            !after.is_empty() && after.is_disjoint(&before),
            "round {round}: new sessions {after:?} replace {before:?}"
        );
    }
    let acknowledged = orders.finish();
    assert_all_saved(&db, &app, "term", acknowledged);
}

#[test]
fn statements_cancelled_by_a_timeout_are_retried_and_nothing_is_lost() {
    let Some(db) = TestDb::postgres() else {
        return;
    };
    // Every new session of the database, the engine's included, gets the timeout.
    db.pg_client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET statement_timeout = 300",
            db.name()
        ))
        .unwrap();
    let app = db.open(|s| s.auto_save_interval = Duration::from_secs(1));
    app.create_galaxy("slow", endless_config(SYSTEMS), Some(1), 0)
        .unwrap();
    // A lock the writer's statements wait on until the timeout cancels them.
    let mut locker = db.pg_client();
    locker
        .batch_execute("BEGIN; LOCK TABLE systems IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let orders = Orders::start(&app, "slow");
    assert!(
        wait_for(Duration::from_secs(60), || state(&app)
            == PersistenceState::Retrying),
        "health shows the cancelled batch (does the writer override statement_timeout?): {:?}",
        app.health()
    );
    let error = app.health().persistence.last_error.unwrap();
    // The server's own words, as an operator needs them (not just "db error").
    assert!(
        error.contains("statement timeout"),
        "health's last error names the cause: {error:?}"
    );
    assert!(app.metrics().batch_errors >= 1);

    locker.batch_execute("ROLLBACK").unwrap();
    let acknowledged = orders.finish();
    assert_all_saved(&db, &app, "slow", acknowledged);
}
