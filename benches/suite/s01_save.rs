//! Section 1: save throughput with every row changed, at four batch sizes: the engine
//! against the raw-rusqlite floor ([`crate::floor`]).

use std::path::Path;
use std::time::Instant;

use galactic_war::model::{Galaxy, System};
use galactic_war::settings::Settings;
use galactic_war::testing::AppInternals;
use serde_json::{json, Map, Value};

use crate::floor::Floor;
use crate::harness::{per_sec, row, save_app, settings, Run};

/// Systems/s saving every row of a `batch`-system galaxy, by the engine and by the floor.
pub struct SaveResult {
    pub batch: u64,
    pub engine: f64,
    pub floor: f64,
}

/// Section 1 at one batch size: systems/s saving every row of a `batch`-system galaxy
/// `rounds` times, by the engine and by the floor, each on a database of its own in `dir`.
pub fn save_throughput(dir: &Path, batch: u64, rounds: u64) -> SaveResult {
    let engine_db = dir.join(format!("save-engine-{batch}.db"));
    let (engine, galaxy) = engine_save(&settings(&engine_db, |_| {}), batch, rounds);

    let mut floor = Floor::create(&dir.join(format!("save-floor-{batch}.db")), &galaxy);
    let mut systems: Vec<System> = galaxy.systems().to_vec();
    let started = Instant::now();
    for round in 0..rounds {
        for system in &mut systems {
            system.resources.metal = round;
        }
        let rows: Vec<(usize, &System)> = systems.iter().enumerate().collect();
        floor.save_full(&rows);
    }
    let floor = per_sec(batch * rounds, started.elapsed());
    SaveResult {
        batch,
        engine,
        floor,
    }
}

/// The engine's side of section 1 (and 10), on the store `settings` names: systems/s
/// saving every row of a `batch`-system galaxy `rounds` times, and the galaxy as saved.
fn engine_save(settings: &Settings, batch: u64, rounds: u64) -> (f64, Galaxy) {
    let name = "save";
    let app = save_app(settings, name, batch);
    let started = Instant::now();
    for _ in 0..rounds {
        app.rewrite_galaxy(name).expect("marked");
        app.save_all().expect("saved");
    }
    let engine = per_sec(batch * rounds, started.elapsed());
    (engine, app.galaxy_copy(name).expect("exists"))
}

/// Section 1: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir, large) = (run.quick, run.dir.as_path(), run.large);
    let batches: Vec<(u64, u64)> = if quick {
        vec![(1, 200), (100, 20), (10_000, 2), (large, 1)]
    } else {
        vec![(1, 1000), (100, 100), (10_000, 5), (large, 2)]
    };
    let mut saves = Vec::new();
    for (batch, rounds) in batches {
        let r = save_throughput(dir, batch, rounds);
        row(
            &format!("1. save, every row changed, batch {}", r.batch),
            format!("{:.0} systems/s", r.engine),
            format!("{:.0} systems/s", r.floor),
            Some(r.engine / r.floor),
            // Batch 1: the engine's fixed cost per commit (issue 24, point 3).
            if r.batch >= 1000 || r.batch == 1 {
                "≥ 0.9"
            } else {
                ""
            },
        );
        saves.push(json!({"batch": r.batch, "engine": r.engine, "floor": r.floor, "ratio": r.engine / r.floor}));
    }
    out.insert("save".into(), Value::Array(saves));
}
