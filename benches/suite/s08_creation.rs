//! Section 8: orders on one galaxy while a large galaxy is created beside it: order
//! latency, orders persisted and placed, the oldest unsaved change's age, and the
//! creations' own speed, against the same orders with no creation.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::GalaxyConfig;
use rusqlite::Connection;
use serde_json::{json, Map, Value};

use crate::harness::{
    config, latencies_while, median, paired_ratio, per_sec, percentile, row, settings, Run,
};

/// The coalescing delay of section 8: the contract's default.
const BESIDE_DELAY: Duration = Duration::from_millis(1000);

/// Threads ordering on `play` in section 8.
pub const BESIDE_THREADS: usize = 2;

/// A cheap galaxy: one structure per system, so its creation is mostly system rows.
pub fn cheap_config(systems: u64) -> GalaxyConfig {
    let side = (systems as f64).sqrt().ceil() as u64 * 2;
    let text = format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.structures.colony]\nstarting_level = 1\n"
    );
    GalaxyConfig::from_toml(&text).expect("valid").0
}

/// Orders on `play` that are on disk, plus a constant: each order on a system completes
/// the system's previous build (its colony's level goes up by one) and leaves one pending
/// build (one event row), so levels plus events grow by exactly one per saved order.
pub fn orders_on_disk(conn: &Connection) -> u64 {
    conn.query_row(
        "SELECT (SELECT COALESCE(SUM(st.level), 0) FROM systems s
                 JOIN structures st ON st.system_id = s.id AND st.structure_type = 'colony'
                 WHERE s.galaxy_name = 'play')
              + (SELECT COUNT(*) FROM systems s JOIN events e ON e.system_id = s.id
                 WHERE s.galaxy_name = 'play')",
        [],
        |row| row.get(0),
    )
    .expect("counted")
}

/// One measurement of section 8.
struct Beside {
    p99: Duration,
    /// Orders on disk per second, between two commits of `play`'s batches.
    persisted: f64,
    /// Orders placed per second over the same time.
    placed: f64,
    /// The oldest unsaved change's age, at its highest, sampled every 50 ms.
    max_unsaved: Duration,
    /// How long each creation took, and whether it ended after the measurement (the
    /// last one does, and ran partly without orders beside it).
    creations: Vec<(Duration, bool)>,
}

/// Orders from `threads` threads on a 10 000-system galaxy `play` for about `window`,
/// in a fresh app (persistence on, the default coalescing delay, its own database file),
/// beside creations of galaxies of `create` cheap systems, one after the other on another
/// thread, if asked.
///
/// Persisted orders/s are read from the database, not from the writer's metrics: at the
/// first commit of `play`'s batches seen after a second of warm-up, and at the first seen
/// once `window` has passed (or, if none comes, two coalescing delays later, so that a
/// writer stuck behind the creation reads as the orders it did not save). A commit is
/// seen as the oldest unsaved change getting younger, in the samples taken every 50 ms.
fn orders_beside(
    dir: &Path,
    label: &str,
    threads: usize,
    rate: u64,
    create: Option<u64>,
    window: Duration,
) -> Beside {
    let path = dir.join(format!("beside-{label}.db"));
    let (app, reader) = beside_app(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // Creations back to back until the measurement ends, so that one runs throughout it.
    let creator = create.map(|systems| spawn_creations(&app, &stop, systems));
    let (orderers, placed) = spawn_orders(&app, &stop, threads, rate);
    let placed_now = || {
        placed
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (first, last, max_unsaved) = watch_commits(&app, started, window, || {
        (orders_on_disk(&reader), placed_now())
    });
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Duration> = orderers
        .into_iter()
        .flat_map(|t| t.join().expect("joins"))
        .collect();
    samples.sort();
    let creations = creator.map_or_else(Vec::new, |c| c.join().expect("joins"));
    drop(reader);
    assert!(app.shutdown().all_saved());
    drop(app);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Beside {
        p99: percentile(&samples, 0.99),
        persisted: per_sec(last.1 - first.1, last.0 - first.0),
        placed: per_sec(last.2 - first.2, last.0 - first.0),
        max_unsaved: Duration::from_millis(max_unsaved),
        creations,
    }
}

/// A fresh app on `path` (persistence on, the default coalescing delay) holding `play`,
/// and a read-only connection to its database.
pub fn beside_app(path: &Path) -> (AppState, Connection) {
    let app = AppState::open(&settings(path, |s| {
        s.coalescing_delay = BESIDE_DELAY;
        s.auto_save_interval = Duration::from_secs(30);
    }))
    .expect("opens");
    // Builds complete at once, so every order succeeds.
    app.create_galaxy("play", config(10_000, 0), Some(2), 0)
        .expect("created");
    let reader = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opens");
    reader
        .busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    (app, reader)
}

/// A thread creating galaxies of `systems` cheap systems one after the other until `stop`;
/// how long each took, and whether `stop` was set when it ended.
fn spawn_creations(
    app: &AppState,
    stop: &Arc<AtomicBool>,
    systems: u64,
) -> JoinHandle<Vec<(Duration, bool)>> {
    let (app, stop) = (app.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut took = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            app.create_galaxy(
                &format!("huge-{}", took.len()),
                cheap_config(systems),
                Some(4),
                0,
            )
            .expect("created");
            took.push((started.elapsed(), stop.load(Ordering::Relaxed)));
        }
        took
    })
}

/// `threads` threads ordering on `play` until `stop`, at `rate` orders/s between them; each
/// thread's order latencies, and each one's count of orders placed so far.
pub fn spawn_orders(
    app: &AppState,
    stop: &Arc<AtomicBool>,
    threads: usize,
    rate: u64,
) -> (Vec<JoinHandle<Vec<Duration>>>, Vec<Arc<AtomicU64>>) {
    // Each thread keeps to its share of `rate`, in bursts of a millisecond or so, and
    // counts the orders it placed.
    let per_order = Duration::from_secs_f64(threads as f64 / rate as f64);
    let placed: Vec<Arc<AtomicU64>> = (0..threads).map(|_| Arc::default()).collect();
    let orderers: Vec<_> = placed
        .iter()
        .map(|placed| {
            let (app, stop, placed) = (app.clone(), stop.clone(), placed.clone());
            std::thread::spawn(move || {
                let (begun, mut count) = (Instant::now(), 0u32);
                latencies_while(&app, || {
                    let due = begun + per_order * count;
                    let now = Instant::now();
                    if due > now + Duration::from_millis(1) {
                        std::thread::sleep(due - now);
                    }
                    count += 1;
                    placed.store(u64::from(count), Ordering::Relaxed);
                    !stop.load(Ordering::Relaxed)
                })
            })
        })
        .collect();
    (orderers, placed)
}

/// Samples `app` every 50 ms from `started` on, as [`orders_beside`] says: `counts` (orders
/// on disk, orders placed) with the time, at the first commit after a second of warm-up
/// and at the first once `window` has passed; and the oldest unsaved change's highest age
/// in milliseconds.
pub fn watch_commits(
    app: &AppState,
    started: Instant,
    window: Duration,
    counts: impl Fn() -> (u64, u64),
) -> ((Instant, u64, u64), (Instant, u64, u64), u64) {
    let sample = |now: Instant| {
        let (on_disk, placed) = counts();
        (now, on_disk, placed)
    };
    let opens = started + Duration::from_secs(1);
    let mut max_unsaved = 0;
    let mut previous: Option<u64> = None;
    let mut first: Option<(Instant, u64, u64)> = None;
    let (first, last) = loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let age = app.metrics().oldest_unsaved_ms;
        let committed = match (previous, age) {
            (Some(before), Some(after)) => after < before,
            (Some(_), None) => true,
            (None, _) => false,
        };
        previous = age;
        max_unsaved = max_unsaved.max(age.unwrap_or(0));
        match first {
            None if now >= opens && (committed || now >= opens + 2 * BESIDE_DELAY) => {
                first = Some(sample(now));
            }
            Some(opened)
                if now >= opened.0 + window
                    && (committed || now >= opened.0 + window + 2 * BESIDE_DELAY) =>
            {
                break (opened, sample(now));
            }
            _ => {}
        }
    };
    (first, last, max_unsaved)
}

/// Orders/s offered by section 8's steady stream, over both threads.
pub const BESIDE_RATE: u64 = 100_000;

/// `rounds` rounds of [`orders_beside`] at `rate`, without a creation and beside creations
/// of `huge` systems, taking turns at going first: the measurements without, and with.
fn measure_beside(
    dir: &Path,
    huge: u64,
    rounds: usize,
    window: Duration,
    rate: u64,
) -> (Vec<Beside>, Vec<Beside>) {
    let mut control: Vec<Beside> = Vec::new();
    let mut during: Vec<Beside> = Vec::new();
    for round in 0..rounds {
        for turn in 0..2 {
            let label = format!("{rate}-{round}-{turn}");
            if (round + turn) % 2 == 0 {
                control.push(orders_beside(
                    dir,
                    &label,
                    BESIDE_THREADS,
                    rate,
                    None,
                    window,
                ));
            } else {
                let creating = Some(huge);
                during.push(orders_beside(
                    dir,
                    &label,
                    BESIDE_THREADS,
                    rate,
                    creating,
                    window,
                ));
            }
        }
    }
    (control, during)
}

/// The creations of `during`'s measurements, and the median time one took.
fn creation_time(during: &[Beside]) -> (Vec<(Duration, bool)>, Duration) {
    // The creations that ended within a measurement ran beside orders throughout; the
    // last of each measurement only partly, so it counts only if it is the only one.
    let creations: Vec<(Duration, bool)> =
        during.iter().flat_map(|b| b.creations.clone()).collect();
    let beside_orders: Vec<f64> = creations
        .iter()
        .filter(|(_, after)| !after)
        .map(|(took, _)| took.as_secs_f64())
        .collect();
    let took = Duration::from_secs_f64(median(if beside_orders.is_empty() {
        creations
            .iter()
            .map(|(took, _)| took.as_secs_f64())
            .collect()
    } else {
        beside_orders
    }));
    (creations, took)
}

/// Section 8 at one order rate: `rounds` rounds, each measuring without a creation and
/// beside creations, taking turns at going first; ratios paired within rounds. Prints the
/// rows, returns the JSON.
fn beside_rows(
    dir: &Path,
    huge: u64,
    rounds: usize,
    window: Duration,
    rate: u64,
    what: &str,
) -> Value {
    let (control, during) = measure_beside(dir, huge, rounds, window, rate);
    let of = |side: &[Beside], f: fn(&Beside) -> f64| side.iter().map(f).collect::<Vec<_>>();
    let persisted = |b: &Beside| b.persisted;
    let placed = |b: &Beside| b.placed;
    let (creations, took) = creation_time(&during);
    let beside = format!("{huge}-system creations vs none, {what}");
    let [p99_ratio, persisted_ratio, placed_ratio] =
        order_rows(8, &beside, &control, &during, 2 * BESIDE_DELAY);
    row(
        &format!(
            "8. creating {huge} systems beside {what} ({} created in all)",
            creations.len()
        ),
        format!("{took:?}"),
        String::new(),
        None,
        &format!("{:.0} systems/s", per_sec(huge, took)),
    );
    let nanos = |b: &Beside| b.p99.as_nanos() as u64;
    let unsaved = |b: &Beside| b.max_unsaved.as_millis() as u64;
    json!({"rate": if rate == u64::MAX { Value::Null } else { json!(rate) },
           "systems": huge, "rounds": rounds, "threads": BESIDE_THREADS,
           "window_ms": window.as_millis() as u64,
           "p99_ns": during.iter().map(nanos).collect::<Vec<_>>(),
           "control_p99_ns": control.iter().map(nanos).collect::<Vec<_>>(),
           "persisted": of(&during, persisted), "control_persisted": of(&control, persisted),
           "placed": of(&during, placed), "control_placed": of(&control, placed),
           "max_unsaved_ms": during.iter().map(unsaved).collect::<Vec<_>>(),
           "control_max_unsaved_ms": control.iter().map(unsaved).collect::<Vec<_>>(),
           "p99_ratio": p99_ratio, "persisted_ratio": persisted_ratio, "placed_ratio": placed_ratio,
           "creation_ms": creations.iter().map(|(t, _)| t.as_millis() as u64).collect::<Vec<_>>(),
           "systems_per_s": per_sec(huge, took)})
}

/// Section 8: measures, prints its rows and puts its JSON in `out`.
/// One window of orders as sections 8 and 15 report it: with bulk work beside it, or
/// without (the control).
pub trait OrderWindow {
    fn p99(&self) -> Duration;
    /// Orders on disk per second.
    fn persisted(&self) -> f64;
    /// Orders placed per second.
    fn placed(&self) -> f64;
    /// The oldest unsaved change's age, at its highest.
    fn max_unsaved(&self) -> Duration;
}

impl OrderWindow for Beside {
    fn p99(&self) -> Duration {
        self.p99
    }
    fn persisted(&self) -> f64 {
        self.persisted
    }
    fn placed(&self) -> f64 {
        self.placed
    }
    fn max_unsaved(&self) -> Duration {
        self.max_unsaved
    }
}

/// Prints section `section`'s rows of orders `during` bulk work against `control`, paired
/// within rounds (`beside` says what ran beside), the oldest unsaved age against
/// `limit`; returns the ratios of p99, persisted and placed orders.
pub fn order_rows<W: OrderWindow>(
    section: u32,
    beside: &str,
    control: &[W],
    during: &[W],
    limit: Duration,
) -> [f64; 3] {
    let of = |side: &[W], f: fn(&W) -> f64| side.iter().map(f).collect::<Vec<_>>();
    let p99 = |w: &W| w.p99().as_secs_f64();
    let seconds = |samples: Vec<f64>| Duration::from_secs_f64(median(samples));
    let ratios = [
        paired_ratio(&of(control, p99), &of(during, p99)),
        paired_ratio(&of(during, W::persisted), &of(control, W::persisted)),
        paired_ratio(&of(during, W::placed), &of(control, W::placed)),
    ];
    row(
        &format!("{section}. order p99, {beside}"),
        format!("{:?}", seconds(of(during, p99))),
        format!("{:?}", seconds(of(control, p99))),
        Some(ratios[0]),
        "≥ 0.8 (p99 without / with)",
    );
    row(
        &format!("{section}. orders persisted/s, {beside}"),
        format!("{:.0}", median(of(during, W::persisted))),
        format!("{:.0}", median(of(control, W::persisted))),
        Some(ratios[1]),
        "≥ 0.8",
    );
    row(
        &format!("{section}. orders placed/s, {beside}"),
        format!("{:.0}", median(of(during, W::placed))),
        format!("{:.0}", median(of(control, W::placed))),
        Some(ratios[2]),
        "",
    );
    let highest = |side: &[W]| side.iter().map(W::max_unsaved).max().unwrap_or_default();
    row(
        &format!("{section}. oldest unsaved age at most, {beside}"),
        format!("{:?}", highest(during)),
        format!("{:?}", highest(control)),
        Some(highest(during).as_secs_f64() / limit.as_secs_f64()),
        &format!("≤ {limit:?} (ratio: with / that)"),
    );
    ratios
}

pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir) = (run.quick, run.dir.as_path());
    let (huge, rounds, window) = if quick {
        (200_000, 1, Duration::from_secs(3))
    } else {
        (1_000_000, 3, Duration::from_secs(8))
    };
    let mut modes = Vec::new();
    // A steady stream, as clients send it (the two HTTP clients placed about
    // 40 000 orders/s), and as many as two threads can place.
    for (rate, what) in [(BESIDE_RATE, "100000 orders/s"), (u64::MAX, "saturating")] {
        modes.push(beside_rows(dir, huge, rounds, window, rate, what));
    }
    out.insert("creation".into(), Value::Array(modes));
}
