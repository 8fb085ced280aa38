//! Orders racing the writer: no update is lost, every batch is a consistent cut, batches
//! coalesce, and reads write nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use galactic_war::model::StructureKind;

use crate::util::{both_stores, coords, endless_config, wait_for, TestDb};

const COLONY: StructureKind = StructureKind::Colony;

both_stores!(no_update_is_lost_while_the_writer_saves_continuously);
fn no_update_is_lost_while_the_writer_saves_continuously(db: &TestDb) {
    let app = db.open(|s| s.coalescing_delay = Duration::from_millis(1));
    for name in ["a", "b"] {
        app.create_galaxy(name, endless_config(400), Some(11), 100)
            .unwrap();
    }
    let systems = coords(&app.galaxy_copy("a").unwrap());
    let before = app.metrics().batches_committed;
    // Order until thousands of batches have interleaved with the orders (or a time cap:
    // longer on PostgreSQL, whose every commit is a round trip to a server process that
    // shares the machine's two cores with the tests).
    let enough = Arc::new(AtomicBool::new(false));
    let cap = Duration::from_secs(if db.is_postgres() { 150 } else { 60 });
    let deadline = Instant::now() + cap;
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let app = app.clone();
            let systems = systems.clone();
            let enough = enough.clone();
            std::thread::spawn(move || {
                let mut orders = 0u64;
                while !enough.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for _ in 0..20 {
                        let galaxy = if (orders + t).is_multiple_of(2) {
                            "a"
                        } else {
                            "b"
                        };
                        let (x, y) =
                            systems[((orders * 31 + t * 7) % systems.len() as u64) as usize];
                        app.build(galaxy, 100, x, y, COLONY).unwrap();
                        orders += 1;
                    }
                    // Leave the writer room to cut batches in between.
                    std::thread::sleep(Duration::from_micros(200));
                }
                orders
            })
        })
        .collect();
    assert!(wait_for(cap, || app.metrics().batches_committed - before >= 3_000));
    enough.store(true, Ordering::Relaxed);
    let orders: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    app.save_all().unwrap();
    let batches = app.metrics().batches_committed - before;
    eprintln!("{orders} orders, {batches} batches");
    assert!(
        batches >= 1_000,
        "only {batches} batches interleaved with the orders"
    );
    for name in ["a", "b"] {
        let memory = app.galaxy_copy(name).unwrap();
        let stored = db.stored(name).unwrap();
        assert_eq!(stored.systems(), memory.systems(), "galaxy {name}");
        assert_eq!(stored.tick(), memory.tick());
    }
    let levels: u64 = ["a", "b"]
        .iter()
        .flat_map(|name| db.stored(name).unwrap().systems().to_vec())
        .map(|s| u64::from(s.levels[COLONY.index()]) - 1 + u64::from(s.build.is_some()))
        .sum();
    assert_eq!(levels, orders, "every acknowledged order is on disk");
}

both_stores!(a_batch_never_mixes_instants);
fn a_batch_never_mixes_instants(db: &TestDb) {
    // One thread orders in system A then system B, strictly alternating; every order
    // costs one metal. In any consistent cut B has had as many orders as A or one fewer,
    // so A's metal is B's metal or one less. A batch that copied A and B at different
    // instants would show B ahead of A.
    let app = db.open(|s| s.coalescing_delay = Duration::from_millis(1));
    app.create_galaxy("cut", endless_config(2), Some(5), 0)
        .unwrap();
    let systems = coords(&app.galaxy_copy("cut").unwrap());
    let (a, b) = (systems[0], systems[1]);
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let done = done.clone();
        let mut client = db.client();
        let query = format!(
            "SELECT (SELECT metal FROM systems WHERE galaxy_name = 'cut' AND x = {} AND y = {}), \
                    (SELECT metal FROM systems WHERE galaxy_name = 'cut' AND x = {} AND y = {})",
            a.0, a.1, b.0, b.1
        );
        std::thread::spawn(move || {
            let mut checks = 0u64;
            let mut distinct = std::collections::HashSet::new();
            while !done.load(Ordering::Relaxed) {
                // One statement: both rows from the same committed state.
                let (ma, mb) = match client.query_i64s(&query)[..] {
                    [ma, mb] => (ma, mb),
                    ref other => panic!("{other:?}"),
                };
                assert!(
                    ma == mb || ma + 1 == mb,
                    "A has {ma} metal, B {mb}: a mixed cut"
                );
                distinct.insert(ma);
                checks += 1;
            }
            (checks, distinct.len())
        })
    };
    // Order until the checker has had plenty of batches to look at (or a time cap).
    let before = app.metrics().batches_committed;
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.metrics().batches_committed - before < 2_000 && Instant::now() < deadline {
        for _ in 0..10 {
            app.build("cut", 0, a.0, a.1, COLONY).unwrap();
            app.build("cut", 0, b.0, b.1, COLONY).unwrap();
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    app.save_all().unwrap();
    done.store(true, Ordering::Relaxed);
    let (checks, states) = checker.join().unwrap();
    eprintln!("{checks} checks over {states} distinct committed states");
    assert!(
        states > 100,
        "the checker saw too few commits ({states}) to mean anything"
    );
    let stored = db.stored("cut").unwrap();
    assert_eq!(stored.systems(), app.galaxy_copy("cut").unwrap().systems());
}

both_stores!(without_coalescing_a_change_commits_promptly);
fn without_coalescing_a_change_commits_promptly(db: &TestDb) {
    // A long delay that coalescing off must ignore.
    let app = db.open(|s| {
        s.write_coalescing = false;
        s.coalescing_delay = Duration::from_secs(60);
    });
    app.create_galaxy("p", endless_config(10), Some(5), 0)
        .unwrap();
    let (x, y) = coords(&app.galaxy_copy("p").unwrap())[0];
    let before = app.metrics().batches_committed;
    app.build("p", 0, x, y, COLONY).unwrap();
    assert!(wait_for(Duration::from_secs(10), || app
        .metrics()
        .batches_committed
        > before));
    assert_eq!(
        db.stored("p").unwrap().systems(),
        app.galaxy_copy("p").unwrap().systems()
    );
}

both_stores!(reads_write_nothing);
fn reads_write_nothing(db: &TestDb) {
    // A window so long that a change made by a read would still be unsaved below.
    let app = db.open(|s| s.coalescing_delay = Duration::from_secs(3600));
    app.create_galaxy("r", crate::util::blitz(), Some(5), 0)
        .unwrap();
    let systems = coords(&app.galaxy_copy("r").unwrap());
    let (x, y) = systems[0];
    app.build("r", 0, x, y, StructureKind::Hatchery).unwrap();
    app.save_all().unwrap();
    let before = app.metrics();
    for tick in 1..3000u64 {
        let (x, y) = systems[tick as usize % systems.len()];
        app.system_details("r", tick, x, y).unwrap();
        app.structure_details("r", tick, x, y, StructureKind::Colony)
            .unwrap();
        if tick % 100 == 0 {
            app.galaxy_details("r", tick).unwrap();
        }
    }
    let after = app.metrics();
    assert_eq!(after.rows_written, before.rows_written);
    assert_eq!(after.batches_committed, before.batches_committed);
    assert_eq!(app.dirty_systems(), 0, "nothing waits to be saved");
    assert_eq!(after.oldest_unsaved_ms, None, "the writer was never told");
}
