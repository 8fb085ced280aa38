//! A galaxy reloaded from the database answers every later query exactly as a twin that
//! never left memory.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use galactic_war::app::{AppError, AppState};
use galactic_war::model::{Galaxy, StructureKind};

use crate::util::{blitz, both_stores, coords, wait_for, TestDb};

/// Applies the same order to the app and to the twin; both must answer alike.
fn order(app: &AppState, twin: &mut Galaxy, tick: u64, (x, y): (u64, u64), kind: StructureKind) {
    let ours = app.build("g", tick, x, y, kind).map_err(|e| e.to_string());
    let theirs = twin.build(tick, x, y, kind).map_err(|e| e.to_string());
    assert_eq!(ours, theirs, "order at tick {tick} on ({x}, {y})");
}

/// Everything a player can see of every system at `tick`.
fn observe_app(app: &AppState, systems: &[(u64, u64)], tick: u64) -> Vec<String> {
    let mut seen = vec![format!(
        "{:?}",
        app.galaxy_details("g", tick).map(|d| d.systems)
    )];
    for &(x, y) in systems {
        seen.push(format!(
            "{:?}",
            app.system_details("g", tick, x, y).unwrap()
        ));
        for kind in StructureKind::ALL {
            seen.push(format!(
                "{:?}",
                app.structure_details("g", tick, x, y, kind).unwrap()
            ));
        }
    }
    seen
}

fn observe_twin(twin: &mut Galaxy, systems: &[(u64, u64)], tick: u64) -> Vec<String> {
    let mut seen = vec![format!(
        "{:?}",
        Ok::<_, AppError>(twin.summaries(tick).unwrap())
    )];
    for &(x, y) in systems {
        seen.push(format!("{:?}", twin.system_details(tick, x, y).unwrap()));
        for kind in StructureKind::ALL {
            seen.push(format!(
                "{:?}",
                twin.structure_details(tick, x, y, kind).unwrap()
            ));
        }
    }
    seen
}

both_stores!(restart_is_invisible);
fn restart_is_invisible(db: &TestDb) {
    let mut twin = Galaxy::create("g", blitz(), 77, 1_000).unwrap();
    let systems = coords(&twin);
    let kinds = StructureKind::ALL;
    {
        let app = db.open(|_| {});
        app.create_galaxy("g", blitz(), Some(77), 1_000).unwrap();
        // Orders spread over time: builds complete, resources accrue, some orders fail.
        for step in 0..400u64 {
            let tick = 1_000 + step * 37;
            let system = systems[(step * 7 % systems.len() as u64) as usize];
            order(&app, &mut twin, tick, system, kinds[(step % 5) as usize]);
            if step % 50 == 0 {
                // Reads in between change nothing.
                app.system_details("g", tick, system.0, system.1).unwrap();
            }
        }
        app.save_all().unwrap();
        assert!(app.shutdown().all_saved());
    }
    let app = db.open(|_| {});
    assert_eq!(
        app.galaxies_loaded(),
        0,
        "nothing is loaded before it is asked for"
    );
    for tick in [16_000, 16_001, 20_000, 100_000, 5_000_000] {
        assert_eq!(
            observe_app(&app, &systems, tick),
            observe_twin(&mut twin, &systems, tick)
        );
    }
    // And the game goes on identically after the restart.
    for step in 0..100u64 {
        let tick = 5_000_000 + step * 11;
        let system = systems[(step * 3 % systems.len() as u64) as usize];
        order(&app, &mut twin, tick, system, kinds[(step % 5) as usize]);
    }
    assert_eq!(
        observe_app(&app, &systems, 6_000_000),
        observe_twin(&mut twin, &systems, 6_000_000)
    );
    assert_eq!(app.metrics().galaxies_loaded_total, 1);
}

both_stores!(two_threads_missing_on_the_same_galaxy_load_it_once);
fn two_threads_missing_on_the_same_galaxy_load_it_once(db: &TestDb) {
    {
        let app = db.open(|_| {});
        app.create_galaxy("g", blitz(), Some(1), 0).unwrap();
    }
    let app = db.open(|_| {});
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                app.galaxy_details("g", 10).unwrap().system_count
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 200);
    }
    assert_eq!(app.metrics().galaxies_loaded_total, 1);
    assert_eq!(app.galaxies_loaded(), 1);
}

both_stores!(a_new_galaxy_is_on_disk_before_creation_returns);
fn a_new_galaxy_is_on_disk_before_creation_returns(db: &TestDb) {
    let app = db.open(|s| s.coalescing_delay = std::time::Duration::from_secs(60));
    let created = app.create_galaxy("fresh", blitz(), Some(3), 5).unwrap();
    assert_eq!(created.systems, 200);
    // No flush: creation itself committed.
    let stored = db.stored("fresh").expect("the new galaxy is stored");
    assert_eq!(stored, app.galaxy_copy("fresh").unwrap());
    assert!(matches!(
        app.create_galaxy("fresh", blitz(), None, 5),
        Err(AppError::GalaxyExists(_))
    ));
}

both_stores!(deletion_reaches_the_disk_and_never_resurrects);
fn deletion_reaches_the_disk_and_never_resurrects(db: &TestDb) {
    let app = db.open(|_| {});
    app.create_galaxy("doomed", blitz(), Some(3), 0).unwrap();
    app.create_galaxy("kept", blitz(), Some(4), 0).unwrap();
    app.delete("doomed").unwrap();
    assert!(matches!(
        app.galaxy_details("doomed", 1),
        Err(AppError::UnknownGalaxy(_))
    ));
    let names: Vec<_> = app.list().unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["kept"]);
    app.save_all().unwrap();
    assert!(db.stored("doomed").is_none(), "the deletion is committed");
    // Its rows are removed after, in chunks between batches.
    assert!(
        wait_for(Duration::from_secs(30), || db.rows_of("doomed") == 0),
        "every row of the deleted galaxy is removed"
    );
    // The name is free again.
    app.create_galaxy("doomed", blitz(), Some(5), 0).unwrap();
    assert!(matches!(
        app.delete("never"),
        Err(AppError::UnknownGalaxy(_))
    ));
}

both_stores!(a_stored_galaxy_can_be_deleted_without_loading_it);
fn a_stored_galaxy_can_be_deleted_without_loading_it(db: &TestDb) {
    {
        let app = db.open(|_| {});
        app.create_galaxy("cold", blitz(), Some(3), 0).unwrap();
    }
    let app = db.open(|_| {});
    assert!(!app.list().unwrap()[0].loaded);
    app.delete("cold").unwrap();
    assert!(matches!(
        app.galaxy_details("cold", 1),
        Err(AppError::UnknownGalaxy(_))
    ));
    app.save_all().unwrap();
    assert!(db.stored("cold").is_none());
}
