//! Section 13: PostgreSQL streaming replication (issue 25), on the tests' primary +
//! standby pairs (`tests/common/replica.rs`, `fsync` and `synchronous_commit` on),
//! through the library (`AppState` on a pair's two-host URL, `target_session_attrs=
//! read-write`):
//! - failover, the daemon's share: orders flowing on a few galaxies (the default
//!   persistence settings: a batch a second), `kill -9` of the primary just after a batch
//!   committed (the worst moment: the next batch is due a whole coalescing delay later),
//!   promotion of the standby (`pg_ctl promote -w`, timed), and the time from the kill
//!   until the writer's first batch commits on the promoted server (its
//!   `batches_committed` moving, polled every 5 ms; an order placed after the kill is
//!   then checked to be stored there), less the promotion's own time. Two kinds of cycle
//!   take turns: the standby promoted at once, and promoted only [`LATE_PROMOTION`] (plus
//!   a share of the probe's 500 ms, a different one each cycle) after the engine reported
//!   `retrying` (as when an HA manager takes its time: the writer's retries are 1.6 s
//!   apart by then, and its probe, every 500 ms, brings the next one forward), that wait
//!   subtracted too. The standby is rebuilt between cycles (not
//!   timed). Also the detection: from the kill to the engine's state reading `retrying`
//!   (what `/healthz` reports as `degraded`).
//! - the price of synchronous replication: section 10's persisted orders (its stream on
//!   10 000 systems, batches of 1000 orders, each batch one commit) on the pair above
//!   (its standby synchronous), on a second pair whose standby is asynchronous, and on a
//!   lone server (no standby), all on this machine with the same settings; then the
//!   latency of one client's durable orders (`?durable=1`) on each. Each round starts
//!   with a checkpoint on every primary, then the sides take turns batch by batch (and
//!   the durable client turn by turn), so that a busy spell of the shared machine falls
//!   on all of them; ratios are paired within rounds.
//!
//! Why in-process rather than the daemon binary: the writer, its retries and its health
//! are the same code either way, and in-process its counters can be read every 5 ms
//! without an HTTP round trip sharing the two cores with what is measured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use galactic_war::app::{AppState, Durability, PersistenceState};
use galactic_war::model::StructureKind;
use galactic_war::settings::{DatabaseUrl, PersistenceSettings, Settings};
use galactic_war::testing::{PostgresReader, ReadStore};
use serde_json::{json, Map, Value};

use crate::harness::{
    config, coords, median, order_stream, paired_ratio, per_sec, percentile, pg_settings, row,
    settings, Run, ORDERS_SEED,
};
use crate::pg_cluster;
use crate::pg_pair::{Pair, Replication};

/// Systems of the orders' galaxies and orders per batch: section 10's load shape.
const SYSTEMS: u64 = 10_000;
const BATCH: u64 = 1000;

/// Where the price's orders run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    /// A pair whose standby is synchronous.
    Sync,
    /// A pair whose standby is asynchronous.
    Async,
    /// A lone server: no standby at all.
    Lone,
}

/// The orders' galaxy of every side (each side has a database of its own).
const ORDERS: &str = "orders";
/// The durable client's one-system galaxy.
const SOLO: &str = "solo";

/// One side of the price's measurement: its app (on its own primary), the port of that
/// primary (for checkpoints), and the orders' galaxy's systems.
struct Store {
    side: Side,
    app: AppState,
    port: u16,
    places: Vec<(u64, u64)>,
}

impl Store {
    /// An app saving only when asked (as section 10's) on `url` (whose primary listens on
    /// `port`), holding the orders' galaxy and the durable client's.
    fn open(side: Side, url: &str, port: u16) -> Store {
        let app = AppState::open(&pg_settings(url)).expect("opens");
        app.create_galaxy(ORDERS, config(SYSTEMS, 300), Some(ORDERS_SEED), 0)
            .expect("created");
        app.create_galaxy(SOLO, config(1, 0), Some(1), 0)
            .expect("created");
        let places = coords(&app, ORDERS);
        Store {
            side,
            app,
            port,
            places,
        }
    }

    /// A checkpoint on the side's primary, so that each round starts on a clean one (see
    /// [`crate::harness::pg_checkpoint`]).
    fn checkpoint(&self) {
        crate::pg_pair::client_at(self.port, "postgres")
            .batch_execute("CHECKPOINT")
            .expect("checkpoint");
    }

    /// One batch: `chunk` placed, then saved (one commit); how long it took.
    fn batch(&self, chunk: &[Order]) -> Duration {
        let started = Instant::now();
        for &(tick, index, kind) in chunk {
            let (x, y) = self.places[index];
            // Refusals (a build already in flight) are part of the realistic mix.
            let _ = self.app.build(ORDERS, tick, x, y, kind);
        }
        self.app.save_all().expect("saved");
        started.elapsed()
    }

    /// Durable orders of one client on [`SOLO`] for `span`, their latencies added to
    /// `into`.
    fn durable(&self, span: Duration, into: &mut Vec<Duration>) {
        let (x, y) = coords(&self.app, SOLO)[0];
        let started = Instant::now();
        while started.elapsed() < span {
            let at = Instant::now();
            self.app
                .build_with(SOLO, 0, x, y, StructureKind::Colony, Durability::Durable)
                .expect("a durable order succeeds");
            into.push(at.elapsed());
        }
    }
}

/// One order of the stream: (tick, system index, structure).
type Order = (u64, usize, StructureKind);

/// What one side measured in one round.
#[derive(Default)]
struct Measured {
    /// Time spent placing and saving the round's orders, and how many.
    spent: Duration,
    orders: u64,
    /// The durable client's latencies, sorted.
    durable: Vec<Duration>,
}

impl Measured {
    fn orders_per_sec(&self) -> f64 {
        per_sec(self.orders, self.spent)
    }
}

/// How the price is measured: rounds, orders a round, and the durable client's turns.
struct PriceTiming {
    rounds: usize,
    per_round: u64,
    /// Each round, this many turns of the durable client on every side, each this long.
    turns: usize,
    turn: Duration,
}

/// `timing.rounds` rounds, each starting with a checkpoint on every primary: the round's
/// segment of the stream placed on every side batch by batch, the sides taking turns
/// (which goes first rotating), so that a busy spell of the shared machine falls on all
/// of them; then the durable client's turns, likewise. By round, in `stores`' order.
fn price_rounds(stores: &[Store], timing: &PriceTiming) -> Vec<Vec<Measured>> {
    let stream = order_stream(SYSTEMS, timing.per_round * timing.rounds as u64);
    for store in stores {
        // Warms the writer's synced path up; not counted.
        store.durable(Duration::from_millis(100), &mut Vec::new());
    }
    let n = stores.len();
    (0..timing.rounds)
        .map(|round| {
            for store in stores {
                store.checkpoint();
            }
            let mut measured: Vec<Measured> = stores.iter().map(|_| Measured::default()).collect();
            let per_round = timing.per_round as usize;
            let segment = &stream[round * per_round..][..per_round];
            for (b, chunk) in segment.chunks(BATCH as usize).enumerate() {
                for i in (0..n).map(|i| (i + b) % n) {
                    measured[i].spent += stores[i].batch(chunk);
                    measured[i].orders += chunk.len() as u64;
                }
            }
            for t in 0..timing.turns {
                for i in (0..n).map(|i| (i + t) % n) {
                    stores[i].durable(timing.turn, &mut measured[i].durable);
                }
            }
            for m in &mut measured {
                m.durable.sort();
            }
            measured
        })
        .collect()
}

/// Prints the price's rows from `rounds` (by round, in `stores`' order); its JSON.
fn price_rows(stores: &[Store], rounds: &[Vec<Measured>]) -> Value {
    let at = |side: Side| stores.iter().position(|s| s.side == side);
    let of = |i: usize, f: &dyn Fn(&Measured) -> f64| -> Vec<f64> {
        rounds.iter().map(|round| f(&round[i])).collect()
    };
    let rate = |m: &Measured| m.orders_per_sec();
    let p50 = |m: &Measured| percentile(&m.durable, 0.5).as_secs_f64() * 1e3;
    let p99 = |m: &Measured| percentile(&m.durable, 0.99).as_secs_f64() * 1e3;
    let pairs: [(Side, Side, &str); 3] = [
        (
            Side::Sync,
            Side::Async,
            "synchronous standby vs asynchronous",
        ),
        (
            Side::Sync,
            Side::Lone,
            "synchronous standby vs a lone server",
        ),
        (
            Side::Async,
            Side::Lone,
            "asynchronous standby vs a lone server",
        ),
    ];
    for (a, b, what) in pairs {
        let (Some(a), Some(b)) = (at(a), at(b)) else {
            continue;
        };
        let (ra, rb) = (of(a, &rate), of(b, &rate));
        row(
            &format!("13. PostgreSQL orders persisted (batches of {BATCH}), {what}"),
            format!("{:.0} orders/s", median(ra.clone())),
            format!("{:.0} orders/s", median(rb.clone())),
            Some(paired_ratio(&ra, &rb)),
            "",
        );
    }
    for (a, b, what) in &pairs[..2] {
        let (Some(a), Some(b)) = (at(*a), at(*b)) else {
            continue;
        };
        let (la, lb) = (of(a, &p50), of(b, &p50));
        let (ta, tb) = (median(of(a, &p99)), median(of(b, &p99)));
        row(
            &format!("13. PostgreSQL durable order, 1 client, p50 (p99), {what}"),
            format!("{:.2} ms ({ta:.2} ms)", median(la.clone())),
            format!("{:.2} ms ({tb:.2} ms)", median(lb.clone())),
            Some(paired_ratio(&la, &lb)),
            "",
        );
    }
    let json_rounds: Vec<Value> = rounds
        .iter()
        .map(|round| {
            let sides: Map<String, Value> = stores
                .iter()
                .zip(round)
                .map(|(store, m)| {
                    let key = format!("{:?}", store.side).to_lowercase();
                    let value = json!({"orders_per_sec": m.orders_per_sec(),
                        "durable_p50_ms": p50(m), "durable_p99_ms": p99(m),
                        "durable_orders": m.durable.len()});
                    (key, value)
                })
                .collect();
            Value::Object(sides)
        })
        .collect();
    json!({"systems": SYSTEMS, "batch": BATCH, "rounds": json_rounds})
}

/// The price of synchronous replication: `sync` (a pair the failover's cycles left with
/// a synchronous standby), a new pair with an asynchronous one, and a lone server.
fn price(sync: &Pair, quick: bool) -> Value {
    let timing = if quick {
        PriceTiming {
            rounds: 3,
            per_round: 10_000,
            turns: 3,
            turn: Duration::from_millis(100),
        }
    } else {
        PriceTiming {
            rounds: 5,
            per_round: 30_000,
            turns: 5,
            turn: Duration::from_millis(200),
        }
    };
    let Some(async_pair) = Pair::start_durable(Replication::Async) else {
        return Value::Null;
    };
    let lone = pg_cluster::Cluster::private_durable();
    let on_pair = |side: Side, pair: &Pair| {
        pair.create_database("price");
        Store::open(side, &pair.url("price"), pair.primary_port())
    };
    let mut stores = vec![on_pair(Side::Sync, sync), on_pair(Side::Async, &async_pair)];
    if let Some(cluster) = &lone {
        let database = cluster.database();
        stores.push(Store::open(Side::Lone, &database.url(), cluster.port()));
    }
    let rounds = price_rounds(&stores, &timing);
    for store in &stores {
        store.app.shutdown();
    }
    let mut json = price_rows(&stores, &rounds);
    json["orders_per_round"] = json!(timing.per_round);
    json
}

/// How long the late cycles let the engine fail before the standby is promoted, counted
/// from its first `retrying`: by then its retries are 1.6 s apart. Each late cycle adds
/// its own share of [`PROBE_INTERVAL`]: the writer's probes run on a clock that starts at
/// its first failure, so a fixed wait would always land at one moment of it.
const LATE_PROMOTION: Duration = Duration::from_secs(2);

/// How often a failing writer probes its store (`src/persistence/writer/lanes.rs`).
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Galaxies the orders flow on during the failover, and their systems.
const FLOWING: usize = 4;
const FLOWING_SYSTEMS: u64 = 100;

/// The galaxy of the order placed after each kill, found stored on the promoted server.
const MARKER: &str = "marker";

/// One failover cycle's times, from the kill of the primary.
struct Cycle {
    /// Promoted only once the engine had failed for this long; `None`: at once.
    late: Option<Duration>,
    /// `kill_primary`: the kill, and its port refusing connections.
    kill: Duration,
    /// From the kill to the promotion's start (the late cycles' wait).
    waited: Duration,
    /// `promote`: `pg_ctl promote -w`.
    promotion: Duration,
    /// From the kill to the first batch committed after it.
    committed: Duration,
    /// From the kill to the engine's health reading `retrying`; `None` when the first
    /// batch after the kill already found the promoted server.
    detected: Option<Duration>,
    /// The order placed after the kill was on the promoted server when the commit was seen.
    confirmed: bool,
}

impl Cycle {
    /// The daemon's share: from the kill to the commit, less the promotion and the wait.
    fn share(&self) -> Duration {
        self.committed
            .saturating_sub(self.promotion)
            .saturating_sub(self.waited)
    }
}

/// Polls `until` every 5 ms for up to two minutes; whether it held.
fn poll(mut until: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if until() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Whether the marker's stored system on the server at `port` (database `db`) is the one
/// in `app`'s memory.
fn marker_stored(app: &AppState, port: u16, db: &str) -> bool {
    let ours = app.galaxy_copy(MARKER).expect("exists").systems()[0];
    let reader = PostgresReader::open(&Pair::server_url(port, db)).expect("the reader opens");
    let stored = reader.load_galaxy(MARKER).expect("loads").expect("stored");
    stored.systems()[0] == ours
}

/// One cycle: kill, (wait,) promote, the first commit after; then the standby rebuilt.
fn cycle(app: &AppState, pair: &mut Pair, db: &str, late: Option<Duration>) -> Cycle {
    let healthy = |app: &AppState| app.metrics().state == PersistenceState::Healthy;
    // Healthy, and committing on the current primary.
    let before = app.metrics().batches_committed;
    assert!(
        poll(|| healthy(app) && app.metrics().batches_committed > before),
        "the engine commits before the kill"
    );
    let base = AtomicU64::new(u64::MAX);
    let killed = Instant::now();
    let (kill, waited, promotion, (detected, committed)) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let (mut detected, mut committed) = (None, None);
            poll(|| {
                let now = Instant::now();
                let metrics = app.metrics();
                if detected.is_none() && metrics.state == PersistenceState::Retrying {
                    detected = Some(now - killed);
                }
                let base = base.load(Relaxed);
                if base != u64::MAX && metrics.batches_committed > base {
                    committed = Some(now - killed);
                }
                committed.is_some()
            });
            (detected, committed)
        });
        pair.kill_primary();
        let kill = killed.elapsed();
        // No server takes writes now: whatever commits next commits on the promoted one.
        base.store(app.metrics().batches_committed, Relaxed);
        let (x, y) = coords(app, MARKER)[0];
        app.build(MARKER, 0, x, y, StructureKind::Colony)
            .expect("the marker's order");
        if let Some(late) = late {
            let failing = poll(|| app.metrics().state == PersistenceState::Retrying);
            assert!(failing, "the engine reports the dead primary");
            std::thread::sleep(late);
        }
        let waited = killed.elapsed();
        let promotion = pair.promote();
        let seen = poller.join().expect("the poller ends");
        (kill, waited, promotion, seen)
    });
    let committed = committed.expect("a batch commits on the promoted server");
    let confirmed = marker_stored(app, pair.primary_port(), db);
    pair.rebuild_standby();
    Cycle {
        late,
        kill,
        waited: if late.is_some() {
            waited
        } else {
            Duration::ZERO
        },
        promotion,
        committed,
        detected,
        confirmed,
    }
}

/// The failover's cycles on `pair`, orders flowing throughout.
fn failover(pair: &mut Pair, cycles: usize) -> Vec<Cycle> {
    let db = "failover";
    pair.create_database(db);
    let mut settings = Settings {
        database: DatabaseUrl::Postgres(pair.url(db)),
        ..settings(std::path::Path::new("unused"), |_| {})
    };
    settings.persistence = PersistenceSettings::default();
    let app = AppState::open(&settings).expect("opens");
    let names: Vec<String> = (0..FLOWING).map(|g| format!("flow{g}")).collect();
    for name in &names {
        app.create_galaxy(name, config(FLOWING_SYSTEMS, 0), Some(1), 0)
            .expect("created");
    }
    app.create_galaxy(MARKER, config(1, 0), Some(1), 0)
        .expect("created");
    let stop = AtomicBool::new(false);
    let measured = std::thread::scope(|scope| {
        for thread in 0..2 {
            let (app, names, stop) = (&app, &names, &stop);
            scope.spawn(move || {
                let places: Vec<Vec<(u64, u64)>> = names.iter().map(|n| coords(app, n)).collect();
                let mut n = thread;
                while !stop.load(Relaxed) {
                    let g = n % FLOWING;
                    let (x, y) = places[g][(n / FLOWING) % places[g].len()];
                    // Never waits on the database: write-behind.
                    let _ = app.build(&names[g], 0, x, y, StructureKind::Colony);
                    n += 2;
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        let measured: Vec<Cycle> = (0..cycles)
            .map(|c| {
                // Odd cycles are late, each at its own moment of the probe's interval.
                let late = (c % 2 == 1).then(|| {
                    let (j, m) = (c / 2, cycles / 2);
                    LATE_PROMOTION + PROBE_INTERVAL.mul_f64((j as f64 + 0.5) / m as f64)
                });
                cycle(&app, pair, db, late)
            })
            .collect();
        stop.store(true, Relaxed);
        measured
    });
    app.shutdown();
    measured
}

/// A duration as the rows print it.
fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The median and the maximum of `f` over `cycles`.
fn median_max(cycles: &[&Cycle], f: impl Fn(&Cycle) -> Duration) -> (Duration, Duration) {
    let mut all: Vec<Duration> = cycles.iter().map(|c| f(c)).collect();
    all.sort();
    (all[all.len() / 2], all[all.len() - 1])
}

/// Prints the failover's rows; its JSON.
fn failover_rows(cycles: &[Cycle]) -> Value {
    for late in [false, true] {
        let these: Vec<&Cycle> = cycles.iter().filter(|c| c.late.is_some() == late).collect();
        if these.is_empty() {
            continue;
        }
        let n = these.len();
        let (share, share_max) = median_max(&these, Cycle::share);
        let (promotion, _) = median_max(&these, |c| c.promotion);
        let (committed, _) = median_max(&these, |c| c.committed);
        let unconfirmed = these.iter().filter(|c| !c.confirmed).count();
        let unconfirmed = if unconfirmed > 0 {
            format!(", {unconfirmed} not confirmed")
        } else {
            String::new()
        };
        let when = if late {
            format!(
                "promoted {:.1}-{:.1} s after the engine reported retrying (less that wait too)",
                LATE_PROMOTION.as_secs_f64(),
                (LATE_PROMOTION + PROBE_INTERVAL).as_secs_f64()
            )
        } else {
            "promoted at once, killed just after a batch (the next due 1 s later)".to_owned()
        };
        row(
            &format!(
                "13. failover, the daemon's share: kill -9 of the primary to the first batch \
                 committed on the promoted server, less the promotion, {when} \
                 (median and max of {n})"
            ),
            format!("{} (max {}){unconfirmed}", ms(share), ms(share_max)),
            format!(
                "kill to commit {}, promotion {}",
                ms(committed),
                ms(promotion)
            ),
            None,
            "≤ 2 s",
        );
    }
    let detected: Vec<&Cycle> = cycles.iter().filter(|c| c.detected.is_some()).collect();
    let unseen = cycles.len() - detected.len();
    let detection = if detected.is_empty() {
        "never (the first batch after each kill went to the promoted server)".to_owned()
    } else {
        let (median, max) = median_max(&detected, |c| c.detected.unwrap_or_default());
        format!("{} (max {})", ms(median), ms(max))
    };
    row(
        &format!(
            "13. failover detection: kill -9 of the primary (just after a batch) to /healthz \
             degraded, retrying (median and max of {}; a batch a second)",
            detected.len()
        ),
        detection,
        format!("{unseen} of {} cycles never retrying", cycles.len()),
        None,
        "",
    );
    let json_cycles: Vec<Value> = cycles
        .iter()
        .map(|c| {
            json!({"late_ms": c.late.map(|l| l.as_millis() as u64), "kill_ms": c.kill.as_millis() as u64,
                "waited_ms": c.waited.as_millis() as u64,
                "promotion_ms": c.promotion.as_millis() as u64,
                "kill_to_commit_ms": c.committed.as_millis() as u64,
                "share_ms": c.share().as_millis() as u64,
                // Negative when the engine committed before `pg_ctl promote -w` returned.
                "after_promotion_ms": c.committed.as_millis() as i64
                    - (c.waited + c.promotion).as_millis() as i64,
                "detected_ms": c.detected.map(|d| d.as_millis() as u64),
                "confirmed": c.confirmed})
        })
        .collect();
    Value::Array(json_cycles)
}

/// Section 13: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let Some(mut pair) = Pair::start_durable(Replication::Sync) else {
        println!("| 13. Replication: skipped, PostgreSQL not installed |  |  |  |  |");
        return;
    };
    let mut json = Map::new();
    // The failover first, while the databases are small: a rebuilt standby copies them.
    let cycles = if run.quick { 2 } else { 6 };
    json.insert(
        "failover".into(),
        failover_rows(&failover(&mut pair, cycles)),
    );
    json.insert("price".into(), price(&pair, run.quick));
    out.insert("replication".into(), Value::Object(json));
}
