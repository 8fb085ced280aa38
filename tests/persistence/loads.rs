//! Loads on a cache miss run side by side: a large load holds up neither a small load nor
//! creations and deletions; threads missing on one galaxy load it once; a galaxy deleted
//! while it is read stays deleted. "While" is proved by the loads-in-progress gauge, not
//! by timing.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use galactic_war::app::{AppError, AppState};

use crate::util::{blitz, both_stores, endless_config, wait_for, TestDb};

/// Systems of the large galaxy: the dev profile loads it in over a second, some forty
/// times what a 200-system load, a creation and a deletion take together (and creates it
/// in about 6 s); `GWAR_TEST_LARGE_SYSTEMS` makes it larger.
fn large_size() -> u64 {
    std::env::var("GWAR_TEST_LARGE_SYSTEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600_000)
}

/// A database holding a galaxy `large` of `size` systems and the blitz galaxies `small`,
/// and the state opened on it with a cold cache.
fn cold(db: &TestDb, size: u64, small: &[&str]) -> AppState {
    {
        let app = db.open(|_| {});
        app.create_galaxy("large", endless_config(size), Some(1), 0)
            .unwrap();
        for (seed, name) in small.iter().enumerate() {
            app.create_galaxy(name, blitz(), Some(seed as u64), 0)
                .unwrap();
        }
        assert!(app.shutdown().all_saved());
    }
    reopen(db)
}

fn reopen(db: &TestDb) -> AppState {
    let app = db.open(|_| {});
    assert_eq!(app.galaxies_loaded(), 0);
    app
}

fn loads_in_progress(app: &AppState) -> u64 {
    app.metrics().loads_in_progress
}

/// Starts loading `name` on a thread and returns once the read has begun.
fn start_load(
    app: &AppState,
    name: &'static str,
) -> std::thread::JoinHandle<Result<usize, String>> {
    let loader = {
        let app = app.clone();
        std::thread::spawn(move || {
            app.galaxy_page(name, 1, 0, 1)
                .map(|page| page.system_count)
                .map_err(|e| e.to_string())
        })
    };
    assert!(
        wait_for(Duration::from_secs(30), || loads_in_progress(app) >= 1),
        "the large load began"
    );
    loader
}

#[test]
fn a_large_load_holds_up_nothing_else_and_a_deletion_during_it_wins() {
    let db = TestDb::new();
    let size = large_size();
    let app = cold(&db, size, &["small", "doomed"]);
    let loader = start_load(&app, "large");

    let small = app.galaxy_page("small", 1, 0, 1000).unwrap();
    assert_eq!(small.system_count, 200);
    assert_eq!(small.systems.len(), 200);
    app.create_galaxy("fresh", blitz(), Some(9), 1).unwrap();
    app.delete("doomed").unwrap();
    let names: Vec<_> = app.list().unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["fresh", "large", "small"]);
    // All of the above finished while the large galaxy was still being read.
    assert_eq!(
        loads_in_progress(&app),
        1,
        "the large load is still in progress (make GWAR_TEST_LARGE_SYSTEMS larger if not)"
    );
    assert!(!loader.is_finished());
    assert_eq!(loader.join().unwrap(), Ok(size as usize));
    assert_eq!(loads_in_progress(&app), 0);
    assert_eq!(app.metrics().galaxies_loaded_total, 2, "large and small");
    drop(app);

    // Cold again: the large galaxy deleted while it is read stays deleted, for the
    // leader of the load and for a thread that waited for it.
    let app = reopen(&db);
    let loader = start_load(&app, "large");
    let follower = {
        let app = app.clone();
        std::thread::spawn(move || app.galaxy_page("large", 1, 0, 1).map(|p| p.system_count))
    };
    app.delete("large").unwrap();
    assert_eq!(
        loads_in_progress(&app),
        1,
        "deleted while the read was in progress (make GWAR_TEST_LARGE_SYSTEMS larger if not)"
    );
    let unknown = AppError::UnknownGalaxy("large".into()).to_string();
    assert_eq!(loader.join().unwrap(), Err(unknown));
    assert!(matches!(
        follower.join().unwrap(),
        Err(AppError::UnknownGalaxy(_))
    ));
    assert_eq!(app.galaxies_loaded(), 0, "not put back in memory");
    let names: Vec<_> = app.list().unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["fresh", "small"]);
    app.save_all().unwrap();
    assert!(db.stored("large").is_none());
    drop(app);
    assert!(matches!(
        reopen(&db).galaxy_page("large", 1, 0, 1),
        Err(AppError::UnknownGalaxy(_))
    ));
}

both_stores!(threads_missing_on_one_galaxy_load_it_once);
fn threads_missing_on_one_galaxy_load_it_once(db: &TestDb) {
    let app = cold(db, 100_000, &[]);
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let loaders: Vec<_> = (0..threads)
        .map(|_| {
            let app = app.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                app.galaxy_page("large", 1, 0, 10).unwrap().systems.len()
            })
        })
        .collect();
    // The gauge counts reads, not waiters: never more than the one.
    let mut most = 0;
    while loaders.iter().any(|l| !l.is_finished()) {
        most = most.max(loads_in_progress(&app));
        std::thread::sleep(Duration::from_millis(1));
    }
    for loader in loaders {
        assert_eq!(loader.join().unwrap(), 10);
    }
    assert!(most <= 1, "one read at a time, saw {most}");
    assert_eq!(app.metrics().galaxies_loaded_total, 1);
    assert_eq!(app.galaxies_loaded(), 1);
}
