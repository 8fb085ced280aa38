//! Section 14: galaxy archives. A played galaxy (the classic preset's economy on a map
//! scaled to the large size, a day of random orders) archived: bytes per system against
//! the floor of its rows dumped as CSV and compressed by plain zstd -3, encode and decode
//! times, and a decode against a load of the same galaxy from live SQLite rows.

use std::path::Path;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::archive;
use galactic_war::model::{Galaxy, GalaxyConfig, StructureKind};
use galactic_war::testing::{GalaxyInternals, ReadStore, SqliteReader};
use serde_json::{json, Map, Value};

use crate::harness::{coords, median, row, settings, Run};

/// The played galaxy's name and seed.
const NAME: &str = "played";
const SEED: u64 = 14;
/// A day of ticks, over which the orders are spread.
const DAY: u64 = 86_400;
/// Orders per system over that day, on average (many are refused: a build in flight, too
/// poor).
const ORDERS_PER_SYSTEM: u64 = 5;

/// The classic preset with `systems` systems, on a map scaled to keep its density.
pub fn played_config(systems: u64) -> GalaxyConfig {
    let (mut config, _) = GalaxyConfig::preset("classic").expect("preset");
    let scale = (systems as f64 / config.system_count as f64).sqrt();
    config.size.x = ((config.size.x + 1) as f64 * scale).ceil() as u64;
    config.size.y = ((config.size.y + 1) as f64 * scale).ceil() as u64;
    config.system_count = systems;
    config
}

/// A day of random orders on a galaxy of `systems` systems: (tick, system index, structure),
/// reproducible. Players are not spread evenly: the system is drawn as `u²` of a uniform
/// `u`, so half the orders land on a quarter of the systems and some systems see none.
pub fn day_of_orders(systems: u64) -> Vec<(u64, usize, StructureKind)> {
    let orders = systems * ORDERS_PER_SYSTEM;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    (0..orders)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let kind = StructureKind::ALL[(rng >> 40) as usize % 5];
            let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
            let index = ((u * u * systems as f64) as u64).min(systems - 1);
            (1 + i * DAY / orders, index as usize, kind)
        })
        .collect()
}

/// The played galaxy in memory, its changes taken.
pub fn played_galaxy(systems: u64) -> Galaxy {
    let mut galaxy = Galaxy::create(NAME, played_config(systems), SEED, 0).expect("created");
    let places: Vec<_> = galaxy.systems().iter().map(|s| (s.x, s.y)).collect();
    for (tick, index, kind) in day_of_orders(systems) {
        let (x, y) = places[index];
        let _ = galaxy.build(tick, x.into(), y.into(), kind);
    }
    galaxy.take_unsaved_changes();
    galaxy
}

/// The floor: the galaxy's rows as CSV (`x,y,metal,crew,water,tick,5 levels,build`, the
/// build as `completion:structure` or empty), compressed by plain zstd at level 3.
fn csv_zstd(galaxy: &Galaxy) -> usize {
    let mut csv = String::with_capacity(galaxy.systems().len() * 64);
    for s in galaxy.systems() {
        let r = s.resources;
        let [a, b, c, d, e] = s.levels;
        let build = s.build.map_or(String::new(), |b| {
            format!("{}:{}", b.completion_tick, b.structure)
        });
        csv += &format!(
            "{},{},{},{},{},{},{a},{b},{c},{d},{e},{build}\n",
            s.x, s.y, r.metal, r.crew, r.water, s.tick
        );
    }
    zstd::bulk::compress(csv.as_bytes(), 3)
        .expect("compresses")
        .len()
}

/// The same galaxy stored in SQLite by the engine (the same orders through an app), and
/// the reader to load it with.
fn stored(dir: &Path, galaxy: &Galaxy) -> SqliteReader {
    let path = dir.join("archive.db");
    let systems = galaxy.systems().len() as u64;
    let app = AppState::open(&settings(&path, |_| {})).expect("opens");
    app.create_galaxy(NAME, played_config(systems), Some(SEED), 0)
        .expect("created");
    let places = coords(&app, NAME);
    for (tick, index, kind) in day_of_orders(systems) {
        let (x, y) = places[index];
        let _ = app.build(NAME, tick, x, y, kind);
    }
    assert!(app.shutdown().all_saved());
    let reader = SqliteReader::open(&path).expect("reader");
    let loaded = reader.load_galaxy(NAME).expect("loads").expect("stored");
    assert_eq!(&loaded, galaxy, "the store holds the same galaxy");
    reader
}

/// The median of `rounds` runs of `f`.
fn timed<T>(rounds: usize, mut f: impl FnMut() -> T) -> Duration {
    let took: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed().as_secs_f64()
        })
        .collect();
    Duration::from_secs_f64(median(took))
}

/// Section 14: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let systems = run.large;
    let rounds = if run.quick { 3 } else { 5 };
    let galaxy = played_galaxy(systems);
    let archived = archive::encode(&galaxy);
    assert_eq!(archive::decode(&archived).expect("decodes"), galaxy);
    let per_system = archived.len() as f64 / systems as f64;
    let floor = csv_zstd(&galaxy) as f64 / systems as f64;
    row(
        &format!("14. archived bytes per system (played, {systems} systems)"),
        format!("{per_system:.1} B"),
        format!("{floor:.1} B (CSV, zstd -3)"),
        Some(floor / per_system),
        "≤ 40 B; ≥ 1.0 (floor bytes / archive bytes)",
    );
    let encode = timed(rounds, || archive::encode(&galaxy));
    let decode = timed(rounds, || archive::decode(&archived).expect("decodes"));
    row(
        "14. archive encode / decode",
        format!("{encode:?} / {decode:?}"),
        String::new(),
        None,
        "",
    );
    let reader = stored(&run.dir, &galaxy);
    let load = timed(rounds, || reader.load_galaxy(NAME).expect("loads"));
    row(
        "14. decode vs load from live SQLite rows",
        format!("{decode:?}"),
        format!("{load:?}"),
        Some(decode.as_secs_f64() / load.as_secs_f64()),
        "≤ 1.5 (decode time / load time)",
    );
    let builds = galaxy
        .systems()
        .iter()
        .filter(|s| s.build.is_some())
        .count();
    let untouched = galaxy.systems().iter().filter(|s| s.tick == 0).count();
    let top_level = galaxy
        .systems()
        .iter()
        .flat_map(|s| s.levels)
        .max()
        .unwrap_or(0);
    row(
        "14. the played galaxy: builds in flight, systems never ordered, highest level",
        format!("{builds}, {untouched}, {top_level}"),
        String::new(),
        None,
        "",
    );
    out.insert(
        "archive".into(),
        json!({
            "systems": systems,
            "builds_in_flight": builds,
            "systems_never_ordered": untouched,
            "archive_bytes": archived.len(),
            "bytes_per_system": per_system,
            "csv_zstd3_bytes_per_system": floor,
            "encode_us": encode.as_micros() as u64,
            "decode_us": decode.as_micros() as u64,
            "sqlite_load_us": load.as_micros() as u64,
        }),
    );
}
