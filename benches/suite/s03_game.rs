//! Section 3: the game path in process. Orders/s and reads/s on two threads with
//! persistence on and off, and a control (a second app with persistence off, whose ratio
//! to the first is what the measurement reads for two identical apps); order latency
//! during a large save; the writer's longest galaxy-lock hold.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::StructureKind;
use galactic_war::settings::PersistenceSettings;
use galactic_war::testing::AppInternals;
use serde_json::{json, Map, Value};

use crate::harness::{
    config, coords, latencies_while, median, paired_ratio, percentile, rate_in_window, row,
    settings, Run,
};

/// Orders/s (`reads` false) or reads/s on two threads, each on its own galaxy, counted
/// over `window` after `warm_up`, with the threads already running.
pub fn game_path(app: &AppState, reads: bool, warm_up: Duration, window: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = ["g0", "g1"]
        .into_iter()
        .map(|name| {
            let (app, stop, done) = (app.clone(), stop.clone(), done.clone());
            let places = coords(&app, name);
            std::thread::spawn(move || {
                let mut next = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let (x, y) = places[next % places.len()];
                        if reads {
                            app.system_details(name, 10, x, y).expect("read");
                        } else {
                            app.build(name, 10, x, y, StructureKind::Colony)
                                .expect("order");
                        }
                        next += 1;
                    }
                    done.fetch_add(64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    rate_in_window(&done, &stop, threads, warm_up, window)
}

/// Saves what `app` has pending (nothing without persistence), so that no save of one
/// measurement's orders runs during the next measurement.
pub fn settle(app: &AppState) {
    if let Some(writer) = app.writer() {
        writer.flush(None).expect("saved");
    }
}

/// Nanoseconds per order on one thread, one galaxy.
fn order_cost_ns(app: &AppState, orders: u64) -> f64 {
    let places = coords(app, "g0");
    let started = Instant::now();
    for i in 0..orders {
        let (x, y) = places[i as usize % places.len()];
        app.build("g0", 10, x, y, StructureKind::Colony)
            .expect("order");
    }
    started.elapsed().as_nanos() as f64 / orders as f64
}

fn game_app(path: &Path, enabled: bool, systems: u64) -> AppState {
    game_app_with(path, systems, |s| s.enabled = enabled)
}

/// Section 3's app, with two galaxies of `systems`, its settings changed by `tweak`.
pub fn game_app_with(
    path: &Path,
    systems: u64,
    tweak: impl FnOnce(&mut PersistenceSettings),
) -> AppState {
    let app = AppState::open(&settings(path, |s| {
        s.coalescing_delay = Duration::from_millis(1000);
        s.auto_save_interval = Duration::from_secs(30);
        tweak(s);
    }))
    .expect("opens");
    for name in ["g0", "g1"] {
        // Builds complete at once, so every order succeeds.
        app.create_galaxy(name, config(systems, 0), Some(3), 0)
            .expect("created");
    }
    app
}

/// Order latencies on `play` over `duration`.
fn latencies(app: &AppState, duration: Duration) -> Vec<Duration> {
    let until = Instant::now() + duration;
    latencies_while(app, || Instant::now() < until)
}

struct LatencyResult {
    idle_p50: Duration,
    idle_p99: Duration,
    saving_p50: Duration,
    saving_p99: Duration,
    save_duration: Duration,
    lock_hold_large: Duration,
    lock_hold_small_in_large: Duration,
    lock_hold_small_alone: Duration,
}

fn latency_during_save(dir: &Path, large: u64) -> LatencyResult {
    let app = AppState::open(&settings(&dir.join("latency.db"), |_| {})).expect("opens");
    app.create_galaxy("big", config(large, 0), Some(1), 0)
        .expect("created");
    app.create_galaxy("play", config(1000, 0), Some(2), 0)
        .expect("created");
    app.create_galaxy("small", config(1000, 0), Some(3), 0)
        .expect("created");
    let idle = latencies(&app, Duration::from_millis(500));

    app.rewrite_galaxy("big").expect("marked");
    let saver = {
        let app = app.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            app.save_all().expect("saved");
            started.elapsed()
        })
    };
    // Sample only while the save runs.
    let saving = latencies_while(&app, || !saver.is_finished());
    let save_duration = saver.join().expect("joins");
    let lock_hold_large = Duration::from_micros(app.metrics().last_lock_hold_micros);

    // The same 1000 dirty systems, in a galaxy of `large` systems and in one of 1000.
    let hold_for = |name: &str, count: usize| {
        for (x, y) in coords(&app, name).into_iter().take(count) {
            app.build(name, 10, x, y, StructureKind::Colony)
                .expect("order");
        }
        app.save_all().expect("saved");
        Duration::from_micros(app.metrics().last_lock_hold_micros)
    };
    let lock_hold_small_in_large = hold_for("big", 1000);
    let lock_hold_small_alone = hold_for("small", 1000);
    LatencyResult {
        idle_p50: percentile(&idle, 0.5),
        idle_p99: percentile(&idle, 0.99),
        saving_p50: percentile(&saving, 0.5),
        saving_p99: percentile(&saving, 0.99),
        save_duration,
        lock_hold_large,
        lock_hold_small_in_large,
        lock_hold_small_alone,
    }
}

/// The game path's medians per app (orders/s, reads/s, ns per order) and its ratios, paired
/// within rounds.
struct GamePath {
    on: [f64; 3],
    off: [f64; 3],
    orders_ratio: f64,
    reads_ratio: f64,
    control_ratio: f64,
}

/// Section 3's game path: three apps taking turns.
fn measure_game_path(dir: &Path, quick: bool) -> GamePath {
    // On, off, and off again (the control, as in section 6), taking turns at going
    // first; ratios paired within rounds. A multiple of three rounds.
    let apps = ["on", "off", "control"]
        .map(|side| game_app(&dir.join(format!("game-{side}.db")), side == "on", 10_000));
    // Orders are counted over whole coalescing delays (1 s): the writer's saves of
    // those orders (one per delay) run inside the window, competing with the game
    // threads as in a running game; what is left unsaved at the end is saved outside
    // any window.
    let ms = Duration::from_millis;
    let (rounds, orders_warm_up, orders_window, reads_window) = if quick {
        (3, ms(200), ms(1000), ms(300))
    } else {
        (6, ms(200), ms(2000), ms(500))
    };
    // Per app: orders/s, reads/s, ns per order.
    let mut samples: [[Vec<f64>; 3]; 3] = Default::default();
    for round in 0..rounds {
        for turn in 0..apps.len() {
            let side = (round + turn) % apps.len();
            let app = &apps[side];
            samples[side][0].push(game_path(app, false, orders_warm_up, orders_window));
            settle(app);
            samples[side][1].push(game_path(app, true, Duration::ZERO, reads_window));
            samples[side][2].push(order_cost_ns(app, 200_000));
            settle(app);
        }
    }
    drop(apps);
    let [on, off, _] = samples.clone().map(|metrics| metrics.map(median));
    let ratio =
        |side: usize, metric: usize| paired_ratio(&samples[side][metric], &samples[1][metric]);
    GamePath {
        on,
        off,
        orders_ratio: ratio(0, 0),
        reads_ratio: ratio(0, 1),
        control_ratio: ratio(2, 0),
    }
}

fn game_path_rows(g: &GamePath) {
    let (on, off) = (g.on, g.off);
    row(
        "3. orders/s, 2 threads, persistence on vs off",
        format!("{:.0}", on[0]),
        format!("{:.0}", off[0]),
        Some(g.orders_ratio),
        "≥ 0.95",
    );
    row(
        "3. orders/s, control: two apps with persistence off",
        String::new(),
        String::new(),
        Some(g.control_ratio),
        "1 ± resolution",
    );
    row(
        "3. reads/s, 2 threads, persistence on vs off",
        format!("{:.0}", on[1]),
        format!("{:.0}", off[1]),
        Some(g.reads_ratio),
        "",
    );
    row(
        "3. ns per order, on vs off (difference: cost of marking dirty)",
        format!("{:.0} ns", on[2]),
        format!("{:.0} ns", off[2]),
        None,
        &format!("{:.0} ns ≤ 100", on[2] - off[2]),
    );
}

fn latency_rows(l: &LatencyResult, large: u64) {
    row(
        &format!("3. order p50 during a {large}-system save vs idle"),
        format!("{:?}", l.saving_p50),
        format!("{:?}", l.idle_p50),
        Some(l.saving_p50.as_secs_f64() / l.idle_p50.as_secs_f64()),
        "",
    );
    row(
        &format!("3. order p99 during a {large}-system save vs idle"),
        format!("{:?}", l.saving_p99),
        format!("{:?}", l.idle_p99),
        Some(l.saving_p99.as_secs_f64() / l.idle_p99.as_secs_f64()),
        "≤ 2",
    );
    row(
        &format!(
            "3. writer lock hold, {large} dirty systems (save took {:?})",
            l.save_duration
        ),
        format!("{:?}", l.lock_hold_large),
        String::new(),
        None,
        "≤ 10 ms",
    );
    row(
        &format!("3. lock hold, 1000 dirty in {large} vs 1000 dirty in 1000"),
        format!("{:?}", l.lock_hold_small_in_large),
        format!("{:?}", l.lock_hold_small_alone),
        None,
        "about equal",
    );
}

/// Section 3: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir, large) = (run.quick, run.dir.as_path(), run.large);
    let g = measure_game_path(dir, quick);
    game_path_rows(&g);
    let (on, off) = (g.on, g.off);
    let (orders_ratio, reads_ratio, control_ratio) =
        (g.orders_ratio, g.reads_ratio, g.control_ratio);
    let l = latency_during_save(dir, large);
    latency_rows(&l, large);
    out.insert("game".into(), json!({
    "orders_on": on[0], "orders_off": off[0], "reads_on": on[1], "reads_off": off[1],
    "orders_ratio": orders_ratio, "reads_ratio": reads_ratio, "orders_control_ratio": control_ratio,
    "order_ns_on": on[2], "order_ns_off": off[2],
    "idle_p50_ns": l.idle_p50.as_nanos() as u64, "idle_p99_ns": l.idle_p99.as_nanos() as u64,
    "saving_p50_ns": l.saving_p50.as_nanos() as u64, "saving_p99_ns": l.saving_p99.as_nanos() as u64,
    "save_large_us": l.save_duration.as_micros() as u64,
    "lock_hold_large_us": l.lock_hold_large.as_micros() as u64,
    "lock_hold_1000_in_large_us": l.lock_hold_small_in_large.as_micros() as u64,
    "lock_hold_1000_alone_us": l.lock_hold_small_alone.as_micros() as u64,
}));
}
