//! Section 4: loading a galaxy, by the engine's reader and by plain table scans, and the
//! database's bytes per system.

use std::path::Path;
use std::time::Duration;

use galactic_war::model::{StructureKind, System};
use galactic_war::testing::{ReadStore, SqliteReader};
use rusqlite::Connection;
use serde_json::{json, Map, Value};

use crate::harness::{row, settings, store_load_galaxy, time_loads, Run};

/// The median of three loads of a `systems`-system galaxy (half the systems with a build in
/// flight) by the engine's reader and by the floor's plain table scans, and the database's
/// bytes per system.
pub fn load(dir: &Path, systems: u64) -> (Duration, Duration, f64) {
    let path = dir.join("load.db");
    store_load_galaxy(&settings(&path, |_| {}), systems);
    let bytes = std::fs::metadata(&path).expect("exists").len() as f64 / systems as f64;
    let reader = SqliteReader::open(&path).expect("reader");
    let conn = Connection::open(&path).expect("opens");
    let (engine, floor) = time_loads(
        3,
        systems,
        || reader.load_galaxy("load").expect("loads").expect("stored"),
        || floor_load(&conn),
    );
    (engine, floor, bytes)
}

/// Plain table scans without joins, grouped in Rust.
fn floor_load(conn: &Connection) -> Vec<System> {
    let mut systems = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    let mut stmt = conn
        .prepare("SELECT id, x, y, metal, crew, water, current_tick FROM systems")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let id: i64 = row.get(0).expect("id");
        index_of.insert(id, systems.len());
        systems.push(System {
            x: row.get(1).expect("x"),
            y: row.get(2).expect("y"),
            resources: galactic_war::model::Resources {
                metal: row.get::<_, i64>(3).expect("metal") as u64,
                crew: row.get::<_, i64>(4).expect("crew") as u64,
                water: row.get::<_, i64>(5).expect("water") as u64,
            },
            tick: row.get::<_, i64>(6).expect("tick") as u64,
            levels: [0; 5],
            build: None,
        });
    }
    let mut stmt = conn
        .prepare("SELECT system_id, structure_type, level FROM structures")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let index = index_of[&row.get::<_, i64>(0).expect("id")];
        let kind: StructureKind = row
            .get::<_, String>(1)
            .expect("type")
            .parse()
            .expect("kind");
        systems[index].levels[kind.index()] = row.get(2).expect("level");
    }
    let mut stmt = conn
        .prepare("SELECT system_id, completion_tick, structure_type FROM events")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let index = index_of[&row.get::<_, i64>(0).expect("id")];
        systems[index].build = Some(galactic_war::model::Build {
            completion_tick: row.get::<_, i64>(1).expect("tick") as u64,
            structure: row
                .get::<_, String>(2)
                .expect("type")
                .parse()
                .expect("kind"),
        });
    }
    systems.sort_by_key(System::coords);
    systems
}

/// Section 4: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (dir, large) = (run.dir.as_path(), run.large);
    let (engine_load, floor_load, db_bytes) = load(dir, large);
    row(
        &format!("4. load {large} systems"),
        format!("{engine_load:?}"),
        format!("{floor_load:?}"),
        Some(floor_load.as_secs_f64() / engine_load.as_secs_f64()),
        "≥ 0.8 (floor time / engine time)",
    );
    row(
        "4. database bytes per system (of that galaxy)",
        format!("{db_bytes:.0} B"),
        String::new(),
        None,
        "",
    );
    out.insert("load".into(), json!({"systems": large, "engine_us": engine_load.as_micros() as u64, "floor_us": floor_load.as_micros() as u64, "db_bytes_per_system": db_bytes}));
}
