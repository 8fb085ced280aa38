//! Section 10: PostgreSQL. Sections 1, 2 and 4 by the same engine on a server database,
//! against floors of raw `postgres` ([`crate::pg_floor`]), on a throwaway cluster of the
//! bench's own with `fsync` and `synchronous_commit` on (the tests' harness,
//! `tests/common/postgres.rs`); then the engine on PostgreSQL beside the engine on SQLite,
//! measured in this run. Without PostgreSQL the section is skipped.

use std::path::Path;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::{StructureKind, System};
use galactic_war::testing::{AppInternals, GalaxyInternals, ReadStore};
use serde_json::{json, Map, Value};

use crate::harness::{
    changed_rows, config, coords, order_stream, orders_galaxy, per_sec, pg_checkpoint, pg_settings,
    place_by_hand, row, save_app, store_load_galaxy, time_loads, Run, ORDERS_GALAXY, ORDERS_SEED,
};
use crate::pg_cluster;
use crate::pg_floor::PgFloor;
use crate::s01_save::save_throughput;
use crate::s02_orders::order_throughput;
use crate::s04_load::load;

/// Section 1 on PostgreSQL: systems/s saving every row of a `batch`-system galaxy, `rounds`
/// times, by the engine; by the floor (structure rows by the engine's statement, events
/// updated in place) at the migration's fillfactor (90); by that floor writing structure
/// rows by a plain update; and, if `fillfactor_too`, by the floor at fillfactor 100. The
/// sides take turns
/// round by round, each after a checkpoint, so a busy spell of the shared machine falls
/// on all of them.
fn pg_save(cluster: &pg_cluster::Cluster, batch: u64, rounds: u64, fillfactor_too: bool) -> PgSave {
    let name = "save";
    let app = save_app(&pg_settings(&cluster.database().url()), name, batch);
    let galaxy = app.galaxy_copy(name).expect("exists");
    // (fillfactor, structures by upsert): the floor, its plain-update twin, fillfactor 100.
    let variants = [(90, true), (90, false), (100, true)];
    let mut floors: Vec<PgFloor> = variants[..2 + usize::from(fillfactor_too)]
        .iter()
        .map(|&(fillfactor, upsert)| {
            let mut floor = PgFloor::create(&cluster.database().url(), &galaxy, fillfactor);
            if !upsert {
                floor.plain_structures();
            }
            // The engine's tables saw one update of every system (the builds' save)
            // before its first round: the floor's see one of every row.
            let rows: Vec<(usize, &System)> = galaxy.systems().iter().enumerate().collect();
            floor.save_in_place(galaxy.tick(), &rows);
            floor
        })
        .collect();
    let mut systems: Vec<System> = galaxy.systems().to_vec();
    let mut spent = vec![Duration::ZERO; 1 + floors.len()];
    for round in 0..rounds {
        pg_checkpoint(cluster);
        let started = Instant::now();
        app.rewrite_galaxy(name).expect("marked");
        app.save_all().expect("saved");
        spent[0] += started.elapsed();
        for system in &mut systems {
            system.resources.metal = round;
        }
        let rows: Vec<(usize, &System)> = systems.iter().enumerate().collect();
        for (floor, spent) in floors.iter_mut().zip(&mut spent[1..]) {
            pg_checkpoint(cluster);
            let started = Instant::now();
            floor.save_in_place(galaxy.tick() + round, &rows);
            *spent += started.elapsed();
        }
    }
    let rate = |spent: Duration| per_sec(batch * rounds, spent);
    PgSave {
        engine: rate(spent[0]),
        floor: rate(spent[1]),
        floor_plain: rate(spent[2]),
        floor_fillfactor_100: spent.get(3).copied().map(rate),
    }
}

/// Systems/s saving every row ([`pg_save`]).
struct PgSave {
    engine: f64,
    floor: f64,
    /// The floor with structure rows written by a plain update, which cannot write a row
    /// missing from the database.
    floor_plain: f64,
    /// The floor on tables at fillfactor 100, when measured.
    floor_fillfactor_100: Option<f64>,
}

/// Section 2 on PostgreSQL: orders/s of the engine and of the full-system floor, the same
/// stream placed on both, taking turns batch by batch (after one checkpoint).
fn pg_orders(cluster: &pg_cluster::Cluster, systems: u64, orders: u64, batch: u64) -> (f64, f64) {
    let stream = order_stream(systems, orders);
    let name = ORDERS_GALAXY;
    let app = AppState::open(&pg_settings(&cluster.database().url())).expect("opens");
    app.create_galaxy(name, config(systems, 300), Some(ORDERS_SEED), 0)
        .expect("created");
    let places = coords(&app, name);
    let mut galaxy = orders_galaxy(systems);
    let mut floor = PgFloor::create(&cluster.database().url(), &galaxy, 90);
    galaxy.take_unsaved_changes();
    pg_checkpoint(cluster);
    let (mut engine, mut floor_spent) = (Duration::ZERO, Duration::ZERO);
    for chunk in stream.chunks(batch as usize) {
        let started = Instant::now();
        for &(tick, index, kind) in chunk {
            let (x, y) = places[index];
            let _ = app.build(name, tick, x, y, kind);
        }
        app.save_all().expect("saved");
        engine += started.elapsed();
        let started = Instant::now();
        let changed = place_by_hand(&mut galaxy, &places, chunk);
        floor.save_full(galaxy.tick(), &changed_rows(&galaxy, &changed));
        floor_spent += started.elapsed();
    }
    (per_sec(orders, engine), per_sec(orders, floor_spent))
}

/// Section 4 on PostgreSQL: the median of five loads of a `systems`-system galaxy (half
/// the systems with a build in flight) by the engine's reader and by the floor's plain
/// queries, and the database's bytes per system (`pg_database_size`).
fn pg_load(cluster: &pg_cluster::Cluster, systems: u64) -> (Duration, Duration, f64) {
    let database = cluster.database();
    let url = database.url();
    store_load_galaxy(&pg_settings(&url), systems);
    let mut client = database.client();
    client.batch_execute("VACUUM ANALYZE").expect("vacuum");
    let bytes = database.query_i64s("SELECT pg_database_size(current_database())")[0] as f64
        / systems as f64;
    let reader = galactic_war::testing::PostgresReader::open(&url).expect("reader");
    let (engine, floor) = time_loads(
        5,
        systems,
        || reader.load_galaxy("load").expect("loads").expect("stored"),
        || pg_floor_load(&mut client),
    );
    (engine, floor, bytes)
}

/// Plain whole-table queries without joins (the database holds one galaxy), streamed,
/// grouped in Rust: section 4's floor on PostgreSQL.
fn pg_floor_load(client: &mut postgres::Client) -> Vec<System> {
    use postgres::fallible_iterator::FallibleIterator;
    let none: [&str; 0] = [];
    let mut systems = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    {
        let mut rows = client
            .query_raw(
                "SELECT id, x, y, metal, crew, water, current_tick FROM systems",
                none,
            )
            .expect("query");
        while let Some(row) = rows.next().expect("row") {
            index_of.insert(row.get::<_, i64>(0), systems.len());
            systems.push(System {
                x: row.get::<_, i64>(1) as u32,
                y: row.get::<_, i64>(2) as u32,
                resources: galactic_war::model::Resources {
                    metal: row.get::<_, i64>(3) as u64,
                    crew: row.get::<_, i64>(4) as u64,
                    water: row.get::<_, i64>(5) as u64,
                },
                tick: row.get::<_, i64>(6) as u64,
                levels: [0; 5],
                build: None,
            });
        }
    }
    {
        let mut rows = client
            .query_raw(
                "SELECT system_id, structure_type, level FROM structures",
                none,
            )
            .expect("query");
        while let Some(row) = rows.next().expect("row") {
            let index = index_of[&row.get::<_, i64>(0)];
            let kind: StructureKind = row.get::<_, &str>(1).parse().expect("kind");
            systems[index].levels[kind.index()] = row.get::<_, i64>(2) as u32;
        }
    }
    {
        let mut rows = client
            .query_raw(
                "SELECT system_id, completion_tick, structure_type FROM events",
                none,
            )
            .expect("query");
        while let Some(row) = rows.next().expect("row") {
            let index = index_of[&row.get::<_, i64>(0)];
            systems[index].build = Some(galactic_war::model::Build {
                completion_tick: row.get::<_, i64>(1) as u64,
                structure: row.get::<_, &str>(2).parse().expect("kind"),
            });
        }
    }
    systems.sort_by_key(System::coords);
    systems
}

/// Section 10: sections 1, 2 and 4 on PostgreSQL against its floors, then the engine on
/// PostgreSQL beside the engine on SQLite (in `dir`), measured in this run. Its JSON.
fn postgres_section(cluster: &pg_cluster::Cluster, dir: &Path, quick: bool, large: u64) -> Value {
    std::fs::create_dir_all(dir).expect("a directory");
    let mut side_by_side = Vec::new();
    let json_saves = save_rows(cluster, dir, quick, large, &mut side_by_side);
    let json_orders = order_rows(cluster, dir, quick, &mut side_by_side);
    let json_load = load_rows(cluster, dir, large, &mut side_by_side);
    for (what, pg, sqlite, ratio) in side_by_side {
        row(
            &format!("10. engine on PostgreSQL vs on SQLite: {what}"),
            pg,
            sqlite,
            Some(ratio),
            "",
        );
    }
    json!({"save": json_saves, "orders": json_orders, "load": json_load})
}

/// The engine on PostgreSQL beside the engine on SQLite, both measured in this run: what is
/// measured, PostgreSQL's number, SQLite's, and their ratio.
type SideBySide = Vec<(String, String, String, f64)>;

/// Section 1 on PostgreSQL, and on SQLite beside it: prints the rows, returns the JSON.
fn save_rows(
    cluster: &pg_cluster::Cluster,
    dir: &Path,
    quick: bool,
    large: u64,
    side_by_side: &mut SideBySide,
) -> Vec<Value> {
    let saves: Vec<(u64, u64)> = if quick {
        vec![(10_000, 3), (large, 2)]
    } else {
        vec![(10_000, 10), (large, 4)]
    };
    let mut json_saves = Vec::new();
    for &(batch, rounds) in &saves {
        let PgSave {
            engine,
            floor,
            floor_plain,
            floor_fillfactor_100: full_pages,
        } = pg_save(cluster, batch, rounds, batch == large);
        row(
            &format!("10. PostgreSQL save, every row changed, batch {batch}"),
            format!("{engine:.0} systems/s"),
            format!("{floor:.0} systems/s"),
            Some(engine / floor),
            "≥ 0.9",
        );
        row(
            &format!(
                "10. PostgreSQL save, batch {batch}, vs a floor writing structures by a plain UPDATE"
            ),
            format!("{engine:.0} systems/s"),
            format!("{floor_plain:.0} systems/s"),
            Some(engine / floor_plain),
            "",
        );
        if let Some(full_pages) = full_pages {
            row(
                &format!("10. PostgreSQL floor's save, batch {batch}, fillfactor 90 vs 100"),
                format!("{floor:.0} systems/s"),
                format!("{full_pages:.0} systems/s"),
                Some(floor / full_pages),
                "",
            );
        }
        let sqlite = save_throughput(dir, batch, rounds);
        side_by_side.push((
            format!("save, every row changed, batch {batch}"),
            format!("{engine:.0} systems/s"),
            format!("{:.0} systems/s", sqlite.engine),
            engine / sqlite.engine,
        ));
        json_saves.push(json!({"batch": batch, "rounds": rounds, "engine": engine,
            "floor": floor, "ratio": engine / floor, "floor_fillfactor_100": full_pages,
            "floor_plain_update": floor_plain,
            "sqlite_engine": sqlite.engine, "sqlite_floor": sqlite.floor}));
    }
    json_saves
}

/// Section 2 on PostgreSQL, and on SQLite beside it at batches of 1000: prints the rows,
/// returns the JSON.
fn order_rows(
    cluster: &pg_cluster::Cluster,
    dir: &Path,
    quick: bool,
    side_by_side: &mut SideBySide,
) -> Vec<Value> {
    let orders = if quick { 50_000 } else { 200_000 };
    let mut json_orders = Vec::new();
    for batch in [100, 1000, 10_000] {
        let orders = if batch == 100 { orders / 4 } else { orders };
        let (engine, floor) = pg_orders(cluster, 10_000, orders, batch);
        row(
            &format!("10. PostgreSQL orders persisted, batches of {batch} orders"),
            format!("{engine:.0} orders/s"),
            format!("{floor:.0} orders/s"),
            Some(engine / floor),
            if batch == 1000 { "≥ 1.5" } else { "" },
        );
        let mut entry =
            json!({"batch": batch, "engine": engine, "floor": floor, "ratio": engine / floor});
        if batch == 1000 {
            let (sqlite, sqlite_floor) = order_throughput(dir, 10_000, orders, batch);
            side_by_side.push((
                format!("orders persisted, batches of {batch} orders"),
                format!("{engine:.0} orders/s"),
                format!("{sqlite:.0} orders/s"),
                engine / sqlite,
            ));
            entry["sqlite_engine"] = json!(sqlite);
            entry["sqlite_floor"] = json!(sqlite_floor);
        }
        json_orders.push(entry);
    }
    json_orders
}

/// Section 4 on PostgreSQL, and on SQLite beside it: prints the rows, returns the JSON.
fn load_rows(
    cluster: &pg_cluster::Cluster,
    dir: &Path,
    large: u64,
    side_by_side: &mut SideBySide,
) -> Value {
    let (engine_load, floor_load, bytes) = pg_load(cluster, large);
    row(
        &format!("10. PostgreSQL load {large} systems"),
        format!("{engine_load:?}"),
        format!("{floor_load:?}"),
        Some(floor_load.as_secs_f64() / engine_load.as_secs_f64()),
        "≥ 0.8 (floor time / engine time), engine < 1 s",
    );
    row(
        "10. PostgreSQL database bytes per system (of that galaxy)",
        format!("{bytes:.0} B"),
        String::new(),
        None,
        "",
    );
    let (sqlite_load, sqlite_floor_load, _) = load(dir, large);
    side_by_side.push((
        format!("load {large} systems (ratio: SQLite's time / PostgreSQL's)"),
        format!("{engine_load:?}"),
        format!("{sqlite_load:?}"),
        sqlite_load.as_secs_f64() / engine_load.as_secs_f64(),
    ));
    json!({"systems": large, "engine_us": engine_load.as_micros() as u64,
           "floor_us": floor_load.as_micros() as u64,
           "sqlite_engine_us": sqlite_load.as_micros() as u64,
           "sqlite_floor_us": sqlite_floor_load.as_micros() as u64,
           "db_bytes_per_system": bytes})
}

/// Section 10: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir, large) = (run.quick, run.dir.as_path(), run.large);
    match pg_cluster::Cluster::private_durable() {
        None => println!("| 10. PostgreSQL: skipped, not installed |  |  |  |  |"),
        Some(cluster) => {
            let pg = postgres_section(&cluster, &dir.join("beside-postgres"), quick, large);
            out.insert("postgres".into(), pg);
        }
    }
}
