//! Section 16: what history costs (README, *History*): the game path with history on
//! against off (section 3's two threads, persistence on in both), orders persisted with
//! history on against off (section 2's stream, batches of 1000), and the bytes history
//! takes per order once saved.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::harness::{median, order_stream, paired_ratio, row, settings, Run};
use crate::s02_orders::engine_orders;
use crate::s03_game::{game_app_with, game_path, settle};

/// Orders/s on the game path, history on and off, taking turns at going first; the
/// medians and the paired ratio on / off.
fn game_path_cost(dir: &Path, quick: bool) -> (f64, f64, f64) {
    let apps = [true, false].map(|history| {
        let path = dir.join(format!("history-game-{history}.db"));
        game_app_with(&path, 10_000, |s| s.history = history)
    });
    let (rounds, warm_up, window) = match quick {
        true => (4, Duration::from_millis(200), Duration::from_millis(1000)),
        false => (8, Duration::from_millis(200), Duration::from_millis(2000)),
    };
    let mut samples: [Vec<f64>; 2] = Default::default();
    for round in 0..rounds {
        for turn in 0..2 {
            let side = (round + turn) % 2;
            samples[side].push(game_path(&apps[side], false, warm_up, window));
            settle(&apps[side]);
        }
    }
    let ratio = paired_ratio(&samples[0], &samples[1]);
    (
        median(samples[0].clone()),
        median(samples[1].clone()),
        ratio,
    )
}

/// Orders persisted/s of one stream with history on and off (several rounds, paired),
/// and the history's stored bytes per order with it on.
fn persisted_cost(dir: &Path, quick: bool) -> (f64, f64, f64, f64) {
    let (systems, orders, batch) = (10_000, if quick { 50_000 } else { 200_000 }, 1000);
    let stream = order_stream(systems, orders);
    let rounds = if quick { 2 } else { 4 };
    let mut samples: [Vec<f64>; 2] = Default::default();
    let mut bytes_per_order = 0.0;
    for round in 0..rounds {
        for turn in 0..2 {
            let side = (round + turn) % 2;
            let history = side == 0;
            let path = dir.join(format!("history-orders-{round}-{history}.db"));
            let settings = settings(&path, |s| s.history = history);
            let (rate, _) = engine_orders(&settings, systems, &stream, batch);
            samples[side].push(rate);
            if history {
                bytes_per_order = stored_history_bytes(&path) as f64 / orders as f64;
            }
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
    let ratio = paired_ratio(&samples[0], &samples[1]);
    let [on, off] = samples.map(median);
    (on, off, ratio, bytes_per_order)
}

/// The bytes of every history segment's body in the database file at `path`.
fn stored_history_bytes(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("opens");
    conn.query_row(
        "SELECT COALESCE(SUM(length(body)), 0) FROM galaxy_history",
        [],
        |row| row.get(0),
    )
    .expect("counted")
}

/// Section 16: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir) = (run.quick, run.dir.as_path());
    let (game_on, game_off, game_ratio) = game_path_cost(dir, quick);
    row(
        "16. orders/s, 2 threads (section 3), history on vs off",
        format!("{game_on:.0}"),
        format!("{game_off:.0}"),
        Some(game_ratio),
        "≥ 0.95",
    );
    let (on, off, ratio, bytes) = persisted_cost(dir, quick);
    row(
        "16. orders persisted/s, batches of 1000 (section 2), history on vs off",
        format!("{on:.0}"),
        format!("{off:.0}"),
        Some(ratio),
        "≥ 0.9",
    );
    row(
        "16. history stored per order (an order and its completion)",
        format!("{bytes:.2} B"),
        String::new(),
        None,
        "≤ 4 B",
    );
    out.insert(
        "history".into(),
        json!({"game_on": game_on, "game_off": game_off, "game_ratio": game_ratio,
               "persisted_on": on, "persisted_off": off, "persisted_ratio": ratio,
               "bytes_per_order": bytes}),
    );
}
