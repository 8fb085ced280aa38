//! Section 12: durable orders (`?durable=1`, issue 24) through the library
//! (`AppState::build_with(…, Durability::Durable)`), on SQLite (a file of the run's, the
//! default settings) and on PostgreSQL (the bench's own cluster, as section 10's; skipped
//! without PostgreSQL) side by side in one run:
//! - group commit: durable orders/s of 256 client threads, on one galaxy and on 256
//!   galaxies (one each), against one client's;
//! - latency: the p50 and p99 of a durable order at 256 clients against the floor, the
//!   median latency of one bare synced commit of one row (plain rusqlite, WAL,
//!   `synchronous = FULL`; plain `postgres`, `synchronous_commit = on`);
//! - write-behind orders (two threads on a galaxy of their own) while 256 durable clients
//!   run beside them, against the same load alone;
//! - where the time goes: requests per synced commit, commits/s, the writer's mean wait
//!   per request (its own metrics), and the CPU the process and its writer used.
//!
//! The engine's fixed cost per commit (the point 3) is section 1's batch-1 row.
//!
//! Every window lasts as long as every other (the floor's too), after a warm-up that is
//! not counted. Three rounds take turns through every window and the floor; the rows
//! give the medians of the rounds, and each ratio is the median of the ratios within a
//! round, so that a busy spell of the shared machine falls on both sides of it.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use galactic_war::app::{AppState, Durability};
use galactic_war::model::StructureKind;
use galactic_war::settings::{DatabaseUrl, PersistenceSettings, Settings};
use serde_json::{json, Map, Value};

use crate::harness::{
    config, coords, median, paired_ratio, per_sec, percentile, row, settings, Run,
};
use crate::pg_cluster;

/// Durable clients in the many-clients measurements (threads: they mostly wait).
const CLIENTS: usize = 256;
/// Threads placing write-behind orders, and the systems of their galaxy.
const WRITE_BEHIND_THREADS: u64 = 2;
const WRITE_BEHIND_SYSTEMS: u64 = 100;

/// A window's phases, as its threads read them.
const WARM_UP: u8 = 0;
const COUNTING: u8 = 1;
const STOP: u8 = 2;

/// How long each measurement warms up (not counted) and then counts.
#[derive(Clone, Copy)]
struct Timing {
    warm_up: Duration,
    window: Duration,
}

/// The store measured: a SQLite file in a directory, or a PostgreSQL cluster.
enum Store<'a> {
    Sqlite(&'a Path),
    Postgres(&'a pg_cluster::Cluster),
}

impl Store<'_> {
    fn label(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "SQLite",
            Store::Postgres(_) => "PostgreSQL",
        }
    }

    /// Settings for an app on a fresh database (`name`: its file on SQLite), with the
    /// persistence settings' defaults (a coalescing delay of one second).
    fn fresh(&self, name: &str) -> Settings {
        let defaults = |p: &mut PersistenceSettings| *p = PersistenceSettings::default();
        match self {
            Store::Sqlite(dir) => settings(&dir.join(format!("durable-{name}.db")), defaults),
            Store::Postgres(cluster) => Settings {
                database: DatabaseUrl::Postgres(cluster.database().url()),
                ..settings(Path::new("unused"), defaults)
            },
        }
    }

    /// The floor's connection, on a database of its own.
    fn floor(&self) -> Floor {
        match self {
            Store::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.join("durable-floor.db")).expect("opens");
                conn.execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                     CREATE TABLE one (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
                     INSERT INTO one VALUES (1, 0);",
                )
                .expect("set up");
                Floor::Sqlite(conn)
            }
            Store::Postgres(cluster) => {
                let mut client = cluster.database().client();
                client
                    .batch_execute(
                        "SET synchronous_commit = on;
                         CREATE TABLE one (id bigint PRIMARY KEY, v bigint NOT NULL);
                         INSERT INTO one VALUES (1, 0);",
                    )
                    .expect("set up");
                let update = client.prepare(UPDATE_ONE).expect("prepares");
                Floor::Postgres(client, update)
            }
        }
    }
}

/// The floor's statement: one row updated.
const UPDATE_ONE: &str = "UPDATE one SET v = v + 1 WHERE id = 1";

/// The floor: a plain connection committing one `UPDATE` of one row per transaction,
/// synced (SQLite: WAL, `synchronous = FULL`; PostgreSQL: `synchronous_commit = on`).
enum Floor {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client, postgres::Statement),
}

impl Floor {
    fn commit(&mut self) {
        match self {
            Floor::Sqlite(conn) => {
                let tx = conn.transaction().expect("begin");
                let mut update = tx.prepare_cached(UPDATE_ONE).expect("prepares");
                assert_eq!(update.execute([]).expect("update"), 1);
                drop(update);
                tx.commit().expect("commit");
            }
            Floor::Postgres(client, update) => {
                let mut tx = client.transaction().expect("begin");
                assert_eq!(tx.execute(&*update, &[]).expect("update"), 1);
                tx.commit().expect("commit");
            }
        }
    }
}

/// The latencies of `commit` over `timing`'s window, after its warm-up; sorted.
fn commits(timing: Timing, mut commit: impl FnMut()) -> Vec<Duration> {
    let warm = Instant::now();
    while warm.elapsed() < timing.warm_up {
        commit();
    }
    let mut took = Vec::new();
    let started = Instant::now();
    while started.elapsed() < timing.window {
        let at = Instant::now();
        commit();
        took.push(at.elapsed());
    }
    took.sort();
    took
}

/// What one window measured.
#[derive(Default)]
struct Window {
    /// Durable orders/s (counted by the time an order was sent).
    durable: f64,
    /// Their latencies, sorted.
    latencies: Vec<Duration>,
    /// Durable orders answered with an error (none expected).
    failed: u64,
    /// Write-behind orders/s.
    write_behind: f64,
    /// Synced commits that answered durable requests in the window, and the requests
    /// they answered.
    commits: u64,
    answered: u64,
    /// The writer's mean time from reading a durable request to answering it.
    writer_wait: Duration,
    /// CPU time over the window, in cores: the whole process, and the writer threads.
    cpu_process: f64,
    cpu_writer: f64,
    /// How long it counted.
    elapsed: Duration,
}

impl Window {
    fn per_commit(&self) -> f64 {
        self.answered as f64 / self.commits.max(1) as f64
    }
}

/// One window on `app`: a durable client thread per `(galaxy, x, y)` of `durable`, each
/// ordering a colony there again and again, and [`WRITE_BEHIND_THREADS`] threads
/// ordering write-behind on the systems `write_behind` names, if any.
fn window(
    app: &AppState,
    timing: Timing,
    durable: &[(String, u64, u64)],
    write_behind: Option<(&str, &[(u64, u64)])>,
) -> Window {
    let phase = AtomicU8::new(WARM_UP);
    let latencies = Mutex::new((Vec::new(), 0u64));
    let write_behind_done = Mutex::new(0u64);
    let mut result = Window::default();
    std::thread::scope(|scope| {
        for (name, x, y) in durable {
            let (phase, latencies) = (&phase, &latencies);
            scope.spawn(move || {
                let (mut mine, mut failed) = (Vec::new(), 0);
                loop {
                    let counted = match phase.load(Relaxed) {
                        STOP => break,
                        now => now == COUNTING,
                    };
                    let started = Instant::now();
                    let answer =
                        app.build_with(name, 0, *x, *y, StructureKind::Colony, Durability::Durable);
                    match (counted, answer) {
                        (true, Ok(_)) => mine.push(started.elapsed()),
                        (true, Err(_)) => failed += 1,
                        (false, _) => {}
                    }
                }
                let mut all = latencies.lock().expect("no panic while held");
                all.0.extend(mine);
                all.1 += failed;
            });
        }
        if let Some((name, places)) = write_behind {
            for thread in 0..WRITE_BEHIND_THREADS {
                let (phase, done) = (&phase, &write_behind_done);
                scope.spawn(move || {
                    let (mut n, mut counted) = (thread, 0u64);
                    loop {
                        match phase.load(Relaxed) {
                            STOP => break,
                            now => counted += u64::from(now == COUNTING),
                        }
                        let (x, y) = places[(n % places.len() as u64) as usize];
                        app.build(name, 0, x, y, StructureKind::Colony)
                            .expect("every order of this config succeeds");
                        n += WRITE_BEHIND_THREADS;
                    }
                    *done.lock().expect("no panic while held") += counted;
                });
            }
        }
        std::thread::sleep(timing.warm_up);
        let before = app.metrics().durable;
        let cpu_before = cpu_ticks();
        phase.store(COUNTING, Relaxed);
        let started = Instant::now();
        std::thread::sleep(timing.window);
        phase.store(STOP, Relaxed);
        let elapsed = started.elapsed();
        let cpu_after = cpu_ticks();
        let after = app.metrics().durable;
        result.commits = after.commits - before.commits;
        result.answered = after.per_commit_sum - before.per_commit_sum;
        result.writer_wait = Duration::from_micros(
            (after.wait_sum_micros - before.wait_sum_micros)
                / (after.wait_count - before.wait_count).max(1),
        );
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SEC / elapsed.as_secs_f64();
        result.cpu_process = cores(cpu_after.0 - cpu_before.0);
        // A writer thread of an earlier app may have ended meanwhile.
        result.cpu_writer = cores(cpu_after.1.saturating_sub(cpu_before.1));
        result.elapsed = elapsed;
    });
    let elapsed = result.elapsed;
    let (mut latencies, failed) = latencies.into_inner().expect("no panic while held");
    latencies.sort();
    result.durable = per_sec(latencies.len() as u64, elapsed);
    result.latencies = latencies;
    result.failed = failed;
    let done = write_behind_done.into_inner().expect("no panic while held");
    result.write_behind = per_sec(done, elapsed);
    result
}

/// The kernel's clock ticks per second (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time (user and system, in clock ticks) of this process, and of its threads named
/// `gwar-writer` (the engine's writers), from `/proc`.
fn cpu_ticks() -> (u64, u64) {
    // The fields after the command's closing parenthesis; utime and stime are the 12th
    // and 13th of them.
    let ticks = |stat: &str| -> u64 {
        stat.rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().skip(11).take(2))
            .into_iter()
            .flatten()
            .filter_map(|t| t.parse::<u64>().ok())
            .sum()
    };
    let process = ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let mut writer = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "gwar-writer" {
            writer += ticks(&std::fs::read_to_string(task.path().join("stat")).unwrap_or_default());
        }
    }
    (process, writer)
}

/// One round of section 12 on one store: every window, and the floor's commits.
struct Round {
    one_client: Window,
    one_galaxy: Window,
    many_galaxies: Window,
    write_behind_alone: Window,
    write_behind_beside: Window,
    floor: Vec<Duration>,
}

/// Section 12 on `store`: `rounds` rounds, each measuring every window and the floor in
/// turn, so that a busy spell of the shared machine falls on both sides of a ratio.
fn measure(store: &Store, timing: Timing, rounds: usize) -> Vec<Round> {
    // One app with a one-system galaxy for the single client, one of `CLIENTS` systems
    // for the many (a system each), and the write-behind threads' galaxy; another with
    // `CLIENTS` one-system galaxies (one each).
    let app = AppState::open(&store.fresh("one-galaxy")).expect("opens");
    for (name, systems) in [
        ("solo", 1),
        ("shared", CLIENTS as u64),
        ("write-behind", WRITE_BEHIND_SYSTEMS),
    ] {
        app.create_galaxy(name, config(systems, 0), Some(12), 0)
            .expect("created");
    }
    let clients_on = |name: &str| -> Vec<(String, u64, u64)> {
        coords(&app, name)
            .into_iter()
            .map(|(x, y)| (name.to_owned(), x, y))
            .collect()
    };
    let (solo, shared) = (clients_on("solo"), clients_on("shared"));
    let places = coords(&app, "write-behind");
    let write_behind = Some(("write-behind", places.as_slice()));
    let apart = AppState::open(&store.fresh("many-galaxies")).expect("opens");
    let mut many = Vec::new();
    for client in 0..CLIENTS {
        let name = format!("g{client}");
        apart
            .create_galaxy(&name, config(1, 0), Some(12), 0)
            .expect("created");
        let (x, y) = coords(&apart, &name)[0];
        many.push((name, x, y));
    }
    let mut floor = store.floor();
    let measured = (0..rounds)
        .map(|_| Round {
            one_client: window(&app, timing, &solo, None),
            one_galaxy: window(&app, timing, &shared, None),
            many_galaxies: window(&apart, timing, &many, None),
            write_behind_alone: window(&app, timing, &[], write_behind),
            write_behind_beside: window(&app, timing, &shared, write_behind),
            floor: commits(timing, || floor.commit()),
        })
        .collect();
    app.shutdown();
    apart.shutdown();
    measured
}

/// A latency as the rows print it.
fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The median over `rounds` of `f`, as a duration.
fn median_of(rounds: &[Round], f: impl Fn(&Round) -> Duration) -> Duration {
    Duration::from_secs_f64(median(rounds.iter().map(|r| f(r).as_secs_f64()).collect()))
}

/// The medians over `rounds` of `f` and `g`, and of their ratio in each round.
fn paired(
    rounds: &[Round],
    f: impl Fn(&Round) -> f64,
    g: impl Fn(&Round) -> f64,
) -> (f64, f64, f64) {
    let (a, b): (Vec<f64>, Vec<f64>) = rounds.iter().map(|r| (f(r), g(r))).unzip();
    (median(a.clone()), median(b.clone()), paired_ratio(&a, &b))
}

/// The floor's side of a latency row.
const BARE: &str = "vs one bare synced commit of one row (p50)";

/// What a "where the time goes" row shows.
const WHERE: &str = concat!(
    "requests per synced commit, commits/s; ",
    "the writer's mean wait per request, CPU cores busy (process, writer)"
);

/// A window of many clients, as [`Round`] holds it.
type Pick = fn(&Round) -> &Window;

/// The median over `rounds` of what `f` gives.
fn median_over(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    median(rounds.iter().map(f).collect())
}

/// The rows of the many clients' window `pick` (on `what`): rate, latencies, and where
/// the time goes.
fn client_rows(label: &str, sqlite: bool, rounds: &[Round], what: &str, pick: Pick) {
    let floor = |r: &Round| percentile(&r.floor, 0.5).as_secs_f64();
    let failed: u64 = rounds.iter().map(|r| pick(r).failed).sum();
    let failed = if failed > 0 {
        format!(" ({failed} failed)")
    } else {
        String::new()
    };
    let (many, one, ratio) = paired(rounds, |r| pick(r).durable, |r| r.one_client.durable);
    row(
        &format!("12. {label} durable orders/s, {CLIENTS} clients on {what} vs 1 client"),
        format!("{many:.0} orders/s{failed}"),
        format!("{one:.0} orders/s"),
        Some(ratio),
        if sqlite { "≥ 50" } else { "" },
    );
    for (p, name, target) in [(0.99, "p99", "≤ 3"), (0.5, "p50", "")] {
        let at = |r: &Round| percentile(&pick(r).latencies, p).as_secs_f64();
        let (ours, bare, ratio) = paired(rounds, at, floor);
        row(
            &format!("12. {label} durable order {name}, {CLIENTS} clients on {what}, {BARE}"),
            ms(Duration::from_secs_f64(ours)),
            ms(Duration::from_secs_f64(bare)),
            Some(ratio),
            target,
        );
    }
    let of = |f: fn(&Window) -> f64| median_over(rounds, |r| f(pick(r)));
    let wait = median_of(rounds, |r| pick(r).writer_wait);
    row(
        &format!("12. {label} where the time goes, {CLIENTS} clients on {what}: {WHERE}"),
        format!(
            "{:.1} per commit, {:.0} commits/s",
            of(Window::per_commit),
            of(|w| per_sec(w.commits, w.elapsed))
        ),
        format!(
            "{}, {:.2} cores (writer {:.2})",
            ms(wait),
            of(|w| w.cpu_process),
            of(|w| w.cpu_writer)
        ),
        None,
        "",
    );
}

/// Prints `store`'s rows (the medians of its rounds, ratios paired within rounds); its
/// JSON.
fn rows(store: &Store, rounds: &[Round]) -> Value {
    let label = store.label();
    let sqlite = matches!(store, Store::Sqlite(_));
    let floor = |r: &Round| percentile(&r.floor, 0.5).as_secs_f64();
    client_rows(label, sqlite, rounds, "one galaxy", |r| &r.one_galaxy);
    let apart = format!("{CLIENTS} galaxies");
    client_rows(label, sqlite, rounds, &apart, |r| &r.many_galaxies);
    let p50_one = |r: &Round| percentile(&r.one_client.latencies, 0.5).as_secs_f64();
    let (ours, bare, ratio) = paired(rounds, p50_one, floor);
    row(
        &format!("12. {label} durable order p50, 1 client, {BARE}"),
        ms(Duration::from_secs_f64(ours)),
        ms(Duration::from_secs_f64(bare)),
        Some(ratio),
        "",
    );
    let (beside, alone, ratio) = paired(
        rounds,
        |r| r.write_behind_beside.write_behind,
        |r| r.write_behind_alone.write_behind,
    );
    row(
        &format!(
            "12. {label} write-behind orders/s, {WRITE_BEHIND_THREADS} threads, \
             beside {CLIENTS} durable clients vs alone"
        ),
        format!("{beside:.0} orders/s"),
        format!("{alone:.0} orders/s"),
        Some(ratio),
        "≥ 0.9",
    );
    let json_rounds: Vec<Value> = rounds
        .iter()
        .map(|r| {
            json!({
                "one_client": window_json(&r.one_client),
                "one_galaxy": window_json(&r.one_galaxy),
                "many_galaxies": window_json(&r.many_galaxies),
                "write_behind_alone": window_json(&r.write_behind_alone),
                "write_behind_beside": window_json(&r.write_behind_beside),
                "floor_p50_us": percentile(&r.floor, 0.5).as_micros() as u64,
                "floor_p99_us": percentile(&r.floor, 0.99).as_micros() as u64,
                "floor_commits": r.floor.len(),
            })
        })
        .collect();
    json!({"clients": CLIENTS, "rounds": json_rounds})
}

fn window_json(w: &Window) -> Value {
    json!({
        "orders_per_sec": w.durable,
        "p50_us": percentile(&w.latencies, 0.5).as_micros() as u64,
        "p99_us": percentile(&w.latencies, 0.99).as_micros() as u64,
        "failed": w.failed,
        "commits": w.commits,
        "per_commit": w.per_commit(),
        "writer_wait_us": w.writer_wait.as_micros() as u64,
        "cpu_cores": w.cpu_process,
        "cpu_cores_writer": w.cpu_writer,
        "write_behind_per_sec": w.write_behind,
    })
}

/// Section 12: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let timing = if run.quick {
        Timing {
            warm_up: Duration::from_millis(250),
            window: Duration::from_millis(600),
        }
    } else {
        Timing {
            warm_up: Duration::from_millis(500),
            window: Duration::from_secs(2),
        }
    };
    let rounds = 3;
    let dir = run.dir.join("durable");
    std::fs::create_dir_all(&dir).expect("a directory");
    let sqlite = Store::Sqlite(&dir);
    let mut json = Map::new();
    json.insert(
        "sqlite".into(),
        rows(&sqlite, &measure(&sqlite, timing, rounds)),
    );
    match pg_cluster::Cluster::private_durable() {
        None => println!("| 12. PostgreSQL: skipped, not installed |  |  |  |  |"),
        Some(cluster) => {
            let pg = Store::Postgres(&cluster);
            json.insert("postgres".into(), rows(&pg, &measure(&pg, timing, rounds)));
        }
    }
    out.insert("durable".into(), Value::Object(json));
}
