//! Section 2: order throughput: the same order stream persisted in batches, at three
//! batch sizes, by the engine and by the raw-rusqlite floor writing whole systems.

use std::path::Path;
use std::time::Instant;

use galactic_war::app::AppState;
use galactic_war::model::StructureKind;
use galactic_war::settings::Settings;
use galactic_war::testing::GalaxyInternals;
use serde_json::{json, Map, Value};

use crate::floor::Floor;
use crate::harness::{
    changed_rows, order_stream, orders_galaxy, orders_in, per_sec, place_by_hand, row, settings,
    Run,
};

/// Section 2 at one batch size: orders/s of the same stream of `orders` on `systems`
/// systems, persisted every `batch` orders, by the engine and by the floor.
pub fn order_throughput(dir: &Path, systems: u64, orders: u64, batch: u64) -> (f64, f64) {
    let stream = order_stream(systems, orders);
    let engine_db = dir.join(format!("orders-engine-{batch}.db"));
    let (engine, places) = engine_orders(&settings(&engine_db, |_| {}), systems, &stream, batch);

    let mut galaxy = orders_galaxy(systems);
    let mut floor = Floor::create(&dir.join(format!("orders-floor-{batch}.db")), &galaxy);
    galaxy.take_unsaved_changes();
    let started = Instant::now();
    for chunk in stream.chunks(batch as usize) {
        let changed = place_by_hand(&mut galaxy, &places, chunk);
        floor.save_full(&changed_rows(&galaxy, &changed));
    }
    let floor = per_sec(orders, started.elapsed());
    (engine, floor)
}

/// The engine's side of sections 2 and 10: orders/s placing `stream` and saving after
/// every `batch` orders, on the store `settings` names; and the systems' coordinates.
pub fn engine_orders(
    settings: &Settings,
    systems: u64,
    stream: &[(u64, usize, StructureKind)],
    batch: u64,
) -> (f64, Vec<(u64, u64)>) {
    let app = AppState::open(settings).expect("opens");
    orders_in(&app, systems, stream, batch, || {})
}

/// Section 2: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir) = (run.quick, run.dir.as_path());
    // The target is for batches of 1000 orders (a second of a busy galaxy at the
    // default coalescing); the other sizes show what the ratio depends on: how many
    // pages each commit rewrites per order, which both sides pay alike.
    let orders = if quick { 50_000 } else { 200_000 };
    let mut by_batch = Vec::new();
    for batch in [100, 1000, 10_000] {
        let orders = if batch == 100 { orders / 4 } else { orders };
        let (engine, floor) = order_throughput(dir, 10_000, orders, batch);
        row(
            &format!("2. orders persisted, batches of {batch} orders"),
            format!("{engine:.0} orders/s"),
            format!("{floor:.0} orders/s"),
            Some(engine / floor),
            if batch == 1000 { "≥ 2" } else { "" },
        );
        by_batch.push(
            json!({"batch": batch, "engine": engine, "floor": floor, "ratio": engine / floor}),
        );
    }
    out.insert("orders".into(), Value::Array(by_batch));
}
