//! The shared harness: what several sections use. The run's parameters, the galaxies'
//! configuration, apps on SQLite or PostgreSQL, the shared workloads (the order stream,
//! every row saved, the galaxy to load), timing, medians and paired ratios, and the table's
//! rows. Measures nothing by itself; every number printed is a section's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::{Galaxy, GalaxyConfig, StructureKind, System};
use galactic_war::settings::{AdminListen, DatabaseUrl, PersistenceSettings, Settings};
use galactic_war::testing::{Changes, GalaxyInternals};

use crate::pg_cluster;

/// What every section is handed: the sizes to use and where to put its files.
pub struct Run {
    /// `--quick`: smaller sizes, a short run.
    pub quick: bool,
    /// The run's temporary directory, removed at its end.
    pub dir: PathBuf,
    /// The large galaxy of sections 3, 4, 10 and 11.
    pub large: u64,
}

/// Every structure kind, in the model's order.
pub const KINDS: [StructureKind; 5] = StructureKind::ALL;

/// Every structure configured; builds complete after `build_time` ticks.
pub fn config(systems: u64, build_time: u64) -> GalaxyConfig {
    let side = ((systems as f64).sqrt().ceil() as u64) * 2;
    let mut text = format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.resources]\nmetal = 1000000000\ncrew = 1000000000\nwater = 1000000000\n"
    );
    for kind in KINDS {
        text += &format!(
            "[systems.structures.{kind}]\nstarting_level = 1\nmultiplier = 1.0\n\
             [systems.structures.{kind}.production]\nmetal = 10\n\
             [systems.structures.{kind}.storage]\nmetal = 1000000000000\n\
             [systems.structures.{kind}.cost]\nmetal = 1\ncrew = 1\nwater = 1\ntime = {build_time}\n"
        );
    }
    GalaxyConfig::from_toml(&text).expect("valid").0
}

/// Settings for an app on the SQLite file `path`: saves only when asked (an hour's
/// coalescing and auto-save), both listeners on free loopback ports, then `tweak`.
pub fn settings(path: &Path, tweak: impl FnOnce(&mut PersistenceSettings)) -> Settings {
    let mut persistence = PersistenceSettings {
        coalescing_delay: Duration::from_secs(3600),
        auto_save_interval: Duration::from_secs(3600),
        ..PersistenceSettings::default()
    };
    tweak(&mut persistence);
    Settings {
        database: DatabaseUrl::File(path.to_path_buf()),
        persistence,
        listen: "127.0.0.1:0".parse().expect("valid"),
        admin_listen: AdminListen::Tcp("127.0.0.1:0".parse().expect("valid")),
        ..Settings::default()
    }
}

/// The coordinates of galaxy `name`'s systems, in the galaxy's order.
pub fn coords(app: &AppState, name: &str) -> Vec<(u64, u64)> {
    app.galaxy_copy(name)
        .expect("exists")
        .systems()
        .iter()
        .map(|s| (u64::from(s.x), u64::from(s.y)))
        .collect()
}

/// [`settings`] on the PostgreSQL database `url` instead of a file.
pub fn pg_settings(url: &str) -> Settings {
    Settings {
        database: DatabaseUrl::Postgres(url.to_owned()),
        ..settings(Path::new("unused"), |_| {})
    }
}

/// One row of the table: the measurement, the engine's number, the floor's or reference's,
/// their ratio and the target.
pub fn row(what: &str, ours: String, floor: String, ratio: Option<f64>, target: &str) {
    let ratio = ratio.map_or(String::new(), |r| format!("{r:.2}"));
    println!("| {what} | {ours} | {floor} | {ratio} | {target} |");
}

/// An app on the store `settings` names holding galaxy `name` of `batch` systems, saved,
/// every system with a build in flight, so that every row (system, five structures, event)
/// exists and a save with every row changed rewrites them all.
pub fn save_app(settings: &Settings, name: &str, batch: u64) -> AppState {
    let app = AppState::open(settings).expect("opens");
    app.create_galaxy(name, config(batch, 1_000_000), Some(batch), 0)
        .expect("created");
    for (x, y) in coords(&app, name) {
        app.build(name, 1, x, y, StructureKind::Hatchery)
            .expect("affordable");
    }
    app.save_all().expect("saved");
    app
}

/// The order stream of sections 2 and 10: (tick, system index, structure), reproducible.
pub fn order_stream(systems: u64, orders: u64) -> Vec<(u64, usize, StructureKind)> {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    (0..orders)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (
                10 + i / 20,
                (rng % systems) as usize,
                KINDS[(rng >> 32) as usize % 5],
            )
        })
        .collect()
}

/// The name and seed of the galaxy the order stream plays on.
pub const ORDERS_GALAXY: &str = "orders";
pub const ORDERS_SEED: u64 = 7;

/// The galaxy the order stream plays on, as the engine creates it (same config and seed).
pub fn orders_galaxy(systems: u64) -> Galaxy {
    Galaxy::create(ORDERS_GALAXY, config(systems, 300), ORDERS_SEED, 0).expect("created")
}

/// The floors' side of the order stream: places `chunk` on `galaxy` by hand (at the
/// systems' coordinates `places`) and takes what it changed, for the floor to save.
pub fn place_by_hand(
    galaxy: &mut Galaxy,
    places: &[(u64, u64)],
    chunk: &[(u64, usize, StructureKind)],
) -> Changes {
    for &(tick, index, kind) in chunk {
        let (x, y) = places[index];
        let _ = galaxy.build(tick, x, y, kind);
    }
    galaxy.take_unsaved_changes()
}

/// The systems `changed` names, as a floor saves them: (index, system).
pub fn changed_rows<'a>(galaxy: &'a Galaxy, changed: &Changes) -> Vec<(usize, &'a System)> {
    changed
        .iter()
        .map(|(index, _)| (index as usize, galaxy.system(index).expect("exists")))
        .collect()
}

/// Creates the orders galaxy of `systems` systems in `app`, runs `before` (not timed),
/// then places `stream` saving after every `batch` orders: orders/s, and the systems'
/// coordinates.
pub fn orders_in(
    app: &AppState,
    systems: u64,
    stream: &[(u64, usize, StructureKind)],
    batch: u64,
    before: impl FnOnce(),
) -> (f64, Vec<(u64, u64)>) {
    let name = ORDERS_GALAXY;
    app.create_galaxy(name, config(systems, 300), Some(ORDERS_SEED), 0)
        .expect("created");
    let places = coords(app, name);
    before();
    let started = Instant::now();
    for chunk in stream.chunks(batch as usize) {
        for &(tick, index, kind) in chunk {
            let (x, y) = places[index];
            // Refusals (a build already in flight) are part of a realistic mix.
            let _ = app.build(name, tick, x, y, kind);
        }
        app.save_all().expect("saved");
    }
    (per_sec(stream.len() as u64, started.elapsed()), places)
}

/// Stores galaxy `load` of `systems` systems through an app on the store `settings` names,
/// and stops that app cleanly.
pub fn store_load_galaxy(settings: &Settings, systems: u64) {
    let app = AppState::open(settings).expect("opens");
    app.create_galaxy("load", config(systems, 100), Some(1), 0)
        .expect("created");
    // Half the systems with a build in flight, as in a game under way.
    for (i, (x, y)) in coords(&app, "load").into_iter().enumerate() {
        if i % 2 == 0 {
            app.build("load", 1, x, y, StructureKind::Hatchery)
                .expect("order");
        }
    }
    assert!(app.shutdown().all_saved());
}

/// The medians of `rounds` loads of the `systems`-system galaxy by `engine` and by `floor`,
/// taking turns.
pub fn time_loads(
    rounds: usize,
    systems: u64,
    mut engine: impl FnMut() -> Galaxy,
    mut floor: impl FnMut() -> Vec<System>,
) -> (Duration, Duration) {
    let (mut engine_took, mut floor_took) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        let galaxy = engine();
        engine_took.push(started.elapsed());
        assert_eq!(galaxy.systems().len() as u64, systems);
        let started = Instant::now();
        let loaded = floor();
        floor_took.push(started.elapsed());
        assert_eq!(loaded.len() as u64, systems);
    }
    engine_took.sort();
    floor_took.sort();
    (engine_took[rounds / 2], floor_took[rounds / 2])
}

/// `count` per second of `elapsed`.
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The `p` quantile of `sorted` (zero if empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The median of `samples` (the upper one of an even count).
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The median of `samples[i] / reference[i]`: ratios of measurements taken within one
/// round, seconds apart, so that the machine's slower and faster spells cancel out.
pub fn paired_ratio(samples: &[f64], reference: &[f64]) -> f64 {
    median(samples.iter().zip(reference).map(|(a, b)| a / b).collect())
}

/// `done`'s increase per second over `window`, counted after `warm_up` with `threads`
/// already running; then `stop` ends them.
pub fn rate_in_window(
    done: &AtomicU64,
    stop: &AtomicBool,
    threads: Vec<JoinHandle<()>>,
    warm_up: Duration,
    window: Duration,
) -> f64 {
    std::thread::sleep(warm_up);
    let (before, started) = (done.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(window);
    let (after, elapsed) = (done.load(Ordering::Relaxed), started.elapsed());
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("joins");
    }
    per_sec(after - before, elapsed)
}

/// Order latencies on `play`, sorted, for as long as `going` says.
pub fn latencies_while(app: &AppState, mut going: impl FnMut() -> bool) -> Vec<Duration> {
    let places = coords(app, "play");
    let mut samples = Vec::new();
    let mut i = 0;
    while going() {
        let (x, y) = places[i % places.len()];
        let started = Instant::now();
        app.build("play", 10, x, y, StructureKind::Colony)
            .expect("order");
        samples.push(started.elapsed());
        i += 1;
    }
    samples.sort();
    samples
}

/// VmRSS of process `pid` (a number, or `self`), in bytes.
pub fn resident_bytes_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A checkpoint, so that each side's clock starts on a clean one: a checkpoint falling
/// inside one side's run (every 1 GB of WAL, PostgreSQL's default `max_wal_size`) and not
/// the other's would decide the ratio; after one, each page's first change writes the
/// whole page to the WAL, which both sides then pay alike.
pub fn pg_checkpoint(cluster: &pg_cluster::Cluster) {
    cluster
        .client("postgres")
        .batch_execute("CHECKPOINT")
        .expect("checkpoint");
}
