//! Persistence engine timings on this machine: batch saves of 200 and 100 000 dirty
//! systems, the longest time the writer held a galaxy lock, and loading a 100 000-system
//! galaxy. `cargo bench --bench engine` (add `-- --quick` for a smaller, faster run).
//! Prints a table and one JSON object.

use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::{GalaxyConfig, StructureKind};
use galactic_war::persistence::store::Store;
use galactic_war::settings::{DatabaseUrl, PersistenceSettings, Settings};

fn config(systems: u64) -> GalaxyConfig {
    let side = ((systems as f64).sqrt().ceil() as u64) * 2;
    let text = format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.resources]\nmetal = 1000000000\ncrew = 1000000000\nwater = 1000000000\n\
         [systems.structures.colony]\nstarting_level = 1\n\
         [systems.structures.colony.cost]\nmetal = 1\ncrew = 1\nwater = 1\ntime = 0\n\
         [systems.structures.hatchery]\n[systems.structures.asteroidmine]\n\
         [systems.structures.waterharvester]\n[systems.structures.storagedepot]\n"
    );
    GalaxyConfig::from_toml(&text).expect("valid").0
}

fn settings(path: &std::path::Path) -> Settings {
    Settings {
        database: DatabaseUrl::File(path.to_path_buf()),
        persistence: PersistenceSettings {
            // Only the explicit flush saves, so one batch holds every change.
            coalescing_delay: Duration::from_secs(3600),
            auto_save_interval: Duration::from_secs(3600),
            ..PersistenceSettings::default()
        },
        listen: "127.0.0.1:0".parse().expect("valid"),
        admin_token: None,
        backup_dir: None,
    }
}

/// Orders once in every system, then flushes them in one batch: its duration as the
/// writer measured it, and the longest galaxy-lock hold so far.
fn save_all_dirty(app: &AppState, name: &str) -> (Duration, Duration) {
    let systems: Vec<(u64, u64)> = app
        .galaxy_copy(name)
        .expect("exists")
        .systems()
        .iter()
        .map(|s| (u64::from(s.x), u64::from(s.y)))
        .collect();
    for (x, y) in &systems {
        app.build(name, 1, *x, *y, StructureKind::Colony)
            .expect("affordable");
    }
    let saved = app.save_all().expect("saved");
    assert_eq!(saved, systems.len() as u64);
    let metrics = app.metrics();
    (
        Duration::from_micros(metrics.last_batch_micros),
        Duration::from_micros(metrics.max_lock_hold_micros),
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let large: u64 = if quick { 20_000 } else { 100_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let app = AppState::open(&settings(&path)).expect("opens");

    let small: Vec<Duration> = (0..7)
        .map(|i| {
            let name = format!("small{i}");
            app.create_galaxy(&name, config(200), Some(i), 0)
                .expect("created");
            save_all_dirty(&app, &name).0
        })
        .collect();
    let save_200 = median(small);

    let started = Instant::now();
    app.create_galaxy("large", config(large), Some(1), 0)
        .expect("created");
    let create_large = started.elapsed();
    let (save_large, max_lock_hold) = save_all_dirty(&app, "large");
    assert!(app.shutdown().all_saved());
    drop(app);

    let reader = Store::open_reader(&path).expect("reader");
    let loads: Vec<Duration> = (0..3)
        .map(|_| {
            let started = Instant::now();
            let galaxy = reader.load_galaxy("large").expect("loads").expect("stored");
            assert_eq!(galaxy.systems().len() as u64, large);
            started.elapsed()
        })
        .collect();
    let load_large = median(loads);

    let per_sec = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!("| measurement | time | systems/s |");
    println!("| --- | --- | --- |");
    println!(
        "| save 200 dirty systems, one batch (median of 7) | {save_200:?} | {:.0} |",
        per_sec(200, save_200)
    );
    println!(
        "| create {large} systems (one transaction) | {create_large:?} | {:.0} |",
        per_sec(large, create_large)
    );
    println!(
        "| save {large} dirty systems, one batch | {save_large:?} | {:.0} |",
        per_sec(large, save_large)
    );
    println!("| longest writer hold of a galaxy lock (during that save) | {max_lock_hold:?} | |");
    println!(
        "| load {large} systems (median of 3) | {load_large:?} | {:.0} |",
        per_sec(large, load_large)
    );
    let json = serde_json::json!({
        "systems_large": large,
        "save_200_us": save_200.as_micros() as u64,
        "create_large_us": create_large.as_micros() as u64,
        "save_large_us": save_large.as_micros() as u64,
        "max_lock_hold_us": max_lock_hold.as_micros() as u64,
        "load_large_us": load_large.as_micros() as u64,
    });
    println!("{json}");
}
