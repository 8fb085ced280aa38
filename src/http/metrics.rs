//! `GET /metrics`: the engine's and the HTTP layer's counters in Prometheus text format.
//!
//! HTTP counters are atomics updated by the worker threads after each response and by the
//! poller as connections open, close, are refused or time out; rendering
//! reads them and the engine's snapshot without taking any galaxy lock for long (the
//! dirty-systems gauge locks each galaxy once, briefly).

use std::fmt::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::app::{AppState, BudgetSnapshot};
use crate::persistence::metrics::{
    MetricsSnapshot, PersistenceState, PER_COMMIT_BUCKETS, WAIT_BUCKETS,
};
use crate::persistence::slow::SlowKind;
use crate::store::{ReplicationMode, Storage};

/// Upper bounds (seconds) of the request-duration histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Request counts by status class and a histogram of request durations.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Index 0 is 1xx … index 4 is 5xx.
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// Set by the poller as connections open and close.
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
    timed_out: AtomicU64,
}

impl HttpMetrics {
    pub fn record(&self, status: u16, duration: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(
            duration.as_micros().min(u128::from(u64::MAX)) as u64,
            Relaxed,
        );
    }

    pub fn set_open_connections(&self, open: usize) {
        self.connections_open.store(open as u64, Relaxed);
    }

    /// A connection answered 503 and closed because `max_connections` were open.
    pub fn record_refused_connection(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// A request that did not arrive whole in time (answered 408).
    pub fn record_timed_out(&self) {
        self.timed_out.fetch_add(1, Relaxed);
    }

    /// Requests answered so far with a status in `class` (1 to 5).
    pub fn count_of_class(&self, class: usize) -> u64 {
        self.by_class[class.clamp(1, 5) - 1].load(Relaxed)
    }
}

/// What the values are read from: the engine's snapshot (taken once per exposition), the
/// application for what the snapshot does not hold, and the HTTP counters.
struct Sources<'a> {
    app: &'a AppState,
    engine: MetricsSnapshot,
    http: &'a HttpMetrics,
    /// The creation budgets, counted once per exposition.
    budget: BudgetSnapshot,
    /// What the database holds, live and archived, read once per exposition (zeros
    /// without a database, or when the read failed).
    storage: Storage,
}

/// A sample's value, written as the exposition always wrote it: integers as integers,
/// seconds as Rust prints an `f64`.
enum Value {
    Count(u64),
    Seconds(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Seconds(s) => write!(f, "{s}"),
        }
    }
}

/// How a family's samples are read.
enum Read {
    /// One unlabelled sample: `NAME VALUE`.
    One(fn(&Sources<'_>) -> Value),
    /// Labelled samples, or a summary's or a histogram's series, written after the
    /// family's `# HELP` and `# TYPE` lines by the function (given the family's name).
    Lines(fn(&Sources<'_>, &str, &mut String)),
}

/// One metric family of the exposition.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    read: Read,
}

/// Every family, in the order of the exposition (`render` writes nothing else).
const FAMILIES: &[Family] = &[
    Family {
        name: "gwar_persistence_state",
        kind: "gauge",
        help: "1 for the persistence engine's current state.",
        read: Read::Lines(persistence_state),
    },
    Family {
        name: "gwar_persistence_batches_total",
        kind: "counter",
        help: "Transactions committed: batches, and chunks of galaxy creations and deletions.",
        read: Read::One(|s| Value::Count(s.engine.batches_committed)),
    },
    Family {
        name: "gwar_persistence_errors_total",
        kind: "counter",
        help: "Batches and creations that failed to commit.",
        read: Read::One(|s| Value::Count(s.engine.batch_errors)),
    },
    Family {
        name: "gwar_persistence_retries_total",
        kind: "counter",
        help: "Attempts that retried a failed batch or chunk, whether they failed again or committed.",
        read: Read::One(|s| Value::Count(s.engine.retries)),
    },
    Family {
        name: "gwar_persistence_systems_written_total",
        kind: "counter",
        help: "Systems written by committed batches.",
        read: Read::One(|s| Value::Count(s.engine.systems_written)),
    },
    Family {
        name: "gwar_persistence_rows_written_total",
        kind: "counter",
        help: "Rows written by committed batches.",
        read: Read::One(|s| Value::Count(s.engine.rows_written)),
    },
    Family {
        name: "gwar_persistence_dirty_systems",
        kind: "gauge",
        help: "Systems with changes not yet committed.",
        read: Read::One(|s| Value::Count(s.app.dirty_systems())),
    },
    Family {
        name: "gwar_persistence_oldest_unsaved_seconds",
        kind: "gauge",
        help: "Age of the oldest change not yet committed (0 when none).",
        read: Read::One(|s| {
            Value::Seconds(s.engine.oldest_unsaved_ms.map_or(0.0, |ms| ms as f64 / 1e3))
        }),
    },
    Family {
        name: "gwar_persistence_stalled_seconds",
        kind: "gauge",
        help: "How long the writer's calls have been failing or hanging (0 when the last one was answered); orders are refused past GWAR_PERSISTENCE_MAX_STALL_MS.",
        read: Read::One(|s| Value::Seconds(s.engine.stalled_ms.map_or(0.0, |ms| ms as f64 / 1e3))),
    },
    Family {
        name: "gwar_persistence_batch_duration_seconds",
        kind: "summary",
        help: "Time to write and commit a batch.",
        read: Read::Lines(batch_duration),
    },
    Family {
        name: "gwar_persistence_last_batch_seconds",
        kind: "gauge",
        help: "Duration of the last committed batch.",
        read: Read::One(|s| Value::Seconds(seconds(s.engine.last_batch_micros))),
    },
    Family {
        name: "gwar_persistence_max_batch_seconds",
        kind: "gauge",
        help: "Longest committed batch.",
        read: Read::One(|s| Value::Seconds(seconds(s.engine.max_batch_micros))),
    },
    Family {
        name: "gwar_persistence_max_lock_hold_seconds",
        kind: "gauge",
        help: "Longest time the writer held a galaxy lock to copy its changes.",
        read: Read::One(|s| Value::Seconds(seconds(s.engine.max_lock_hold_micros))),
    },
    Family {
        name: "gwar_galaxies_loaded",
        kind: "gauge",
        help: "Galaxies in memory.",
        read: Read::One(|s| Value::Count(s.app.galaxies_loaded() as u64)),
    },
    Family {
        name: "gwar_systems_loaded",
        kind: "gauge",
        help: "Systems of the galaxies in memory.",
        read: Read::One(|s| Value::Count(s.app.systems_loaded() as u64)),
    },
    Family {
        name: "gwar_systems_total",
        kind: "gauge",
        help: "Systems of every galaxy, stored or in memory, creations and deletions in progress included (what GWAR_MAX_TOTAL_SYSTEMS bounds).",
        read: Read::One(|s| Value::Count(s.budget.systems_total)),
    },
    Family {
        name: "gwar_systems_budget",
        kind: "gauge",
        help: "GWAR_MAX_TOTAL_SYSTEMS: past it, creations without the admin token are refused.",
        read: Read::One(|s| Value::Count(s.budget.systems_budget)),
    },
    Family {
        name: "gwar_disk_free_bytes",
        kind: "gauge",
        help: "Bytes free on the SQLite database's filesystem (no sample for PostgreSQL).",
        read: Read::Lines(|s, name, out| {
            if let Some((free, _)) = s.budget.disk {
                let _ = writeln!(out, "{name} {free}");
            }
        }),
    },
    Family {
        name: "gwar_disk_free_min_bytes",
        kind: "gauge",
        help: "GWAR_MIN_FREE_DISK: creations without the admin token that would leave less free are refused.",
        read: Read::Lines(|s, name, out| {
            if let Some((_, min)) = s.budget.disk {
                let _ = writeln!(out, "{name} {min}");
            }
        }),
    },
    Family {
        name: "gwar_galaxy_evictions_total",
        kind: "counter",
        help: "Clean, idle galaxies evicted from memory.",
        read: Read::One(|s| Value::Count(s.engine.galaxies_evicted_total)),
    },
    Family {
        name: "gwar_galaxies_lost_total",
        kind: "counter",
        help: "Galaxies another daemon took from this one; their unsaved changes were dropped.",
        read: Read::One(|s| Value::Count(s.engine.galaxies_lost_total)),
    },
    Family {
        name: "gwar_galaxy_loads_total",
        kind: "counter",
        help: "Galaxies loaded from the database on a cache miss.",
        read: Read::One(|s| Value::Count(s.engine.galaxies_loaded_total)),
    },
    Family {
        name: "gwar_galaxies_archived_total",
        kind: "counter",
        help: "Galaxies this daemon archived (by an admin or automatically).",
        read: Read::One(|s| Value::Count(s.engine.galaxies_archived_total)),
    },
    Family {
        name: "gwar_galaxies_restored_total",
        kind: "counter",
        help: "Galaxies this daemon restored from their archives.",
        read: Read::One(|s| Value::Count(s.engine.galaxies_restored_total)),
    },
    Family {
        name: "gwar_storage_live_systems",
        kind: "gauge",
        help: "Systems in the database's live tables (galaxies being created or removed included).",
        read: Read::One(|s| Value::Count(s.storage.live_systems)),
    },
    Family {
        name: "gwar_storage_live_bytes",
        kind: "gauge",
        help: "Bytes the database's live tables take.",
        read: Read::One(|s| Value::Count(s.storage.live_bytes)),
    },
    Family {
        name: "gwar_storage_archived_galaxies",
        kind: "gauge",
        help: "Galaxies stored as archives.",
        read: Read::One(|s| Value::Count(s.storage.archived_galaxies)),
    },
    Family {
        name: "gwar_storage_archived_systems",
        kind: "gauge",
        help: "Systems in the stored archives.",
        read: Read::One(|s| Value::Count(s.storage.archived_systems)),
    },
    Family {
        name: "gwar_storage_archived_bytes",
        kind: "gauge",
        help: "Bytes of the stored archives (compressed).",
        read: Read::One(|s| Value::Count(s.storage.archived_bytes)),
    },
    Family {
        name: "gwar_storage_history_segments",
        kind: "gauge",
        help: "Segments of galaxies' history stored (one per galaxy per batch, at most).",
        read: Read::One(|s| Value::Count(s.storage.history_segments)),
    },
    Family {
        name: "gwar_storage_history_bytes",
        kind: "gauge",
        help: "Bytes of the stored history segments (compressed).",
        read: Read::One(|s| Value::Count(s.storage.history_bytes)),
    },
    Family {
        name: "gwar_galaxy_loads_in_progress",
        kind: "gauge",
        help: "Galaxies being read from the database now (one per galaxy, however many requests wait).",
        read: Read::One(|s| Value::Count(s.engine.loads_in_progress)),
    },
    Family {
        name: "gwar_durable_requests_total",
        kind: "counter",
        help: "Durable orders (build ?durable=1) received by the writer.",
        read: Read::One(|s| Value::Count(s.engine.durable.requests)),
    },
    Family {
        name: "gwar_durable_failures_total",
        kind: "counter",
        help: "Durable orders answered without durability (503: applied in memory, saved later).",
        read: Read::One(|s| Value::Count(s.engine.durable.failed)),
    },
    Family {
        name: "gwar_slow_queries_total",
        kind: "counter",
        help: "Store calls (a batch, a chunk, a load, a take, ...) slower than GWAR_SLOW_QUERY_MS, by kind.",
        read: Read::Lines(slow_queries),
    },
    Family {
        name: "gwar_durable_commits_total",
        kind: "counter",
        help: "Synced commits that answered durable orders.",
        read: Read::One(|s| Value::Count(s.engine.durable.commits)),
    },
    Family {
        name: "gwar_durable_requests_per_commit",
        kind: "histogram",
        help: "Durable orders answered by one synced commit (group commit).",
        read: Read::Lines(durable_per_commit),
    },
    Family {
        name: "gwar_durable_wait_seconds",
        kind: "histogram",
        help: "Time a durable order waited in the writer for its synced commit.",
        read: Read::Lines(durable_waits),
    },
    Family {
        name: "gwar_postgres_replication_mode",
        kind: "gauge",
        help: "The PostgreSQL primary's replication (1 for the mode it is in): none, async (a failover may lose the replication lag) or sync (synchronous_standby_names set).",
        read: Read::Lines(replication_mode),
    },
    Family {
        name: "gwar_postgres_standbys",
        kind: "gauge",
        help: "Standbys streaming from the PostgreSQL primary.",
        read: Read::Lines(|s, name, out| {
            if let Some(replication) = s.engine.replication {
                let _ = writeln!(out, "{name} {}", replication.standbys);
            }
        }),
    },
    Family {
        name: "gwar_postgres_synchronous_standbys",
        kind: "gauge",
        help: "Standbys the PostgreSQL primary waits for at each commit (absent when the role may not see it: grant pg_monitor).",
        read: Read::Lines(|s, name, out| {
            if let Some(count) = s.engine.replication.and_then(|r| r.synchronous_standbys) {
                let _ = writeln!(out, "{name} {count}");
            }
        }),
    },
    Family {
        name: "gwar_http_requests_total",
        kind: "counter",
        help: "HTTP requests answered, by status class.",
        read: Read::Lines(requests_by_class),
    },
    Family {
        name: "gwar_http_request_duration_seconds",
        kind: "histogram",
        help: "Time from a request's first byte to its response.",
        read: Read::Lines(request_durations),
    },
    Family {
        name: "gwar_http_connections_open",
        kind: "gauge",
        help: "HTTP connections open, idle ones included.",
        read: Read::One(|s| Value::Count(s.http.connections_open.load(Relaxed))),
    },
    Family {
        name: "gwar_http_connections_refused_total",
        kind: "counter",
        help: "Connections answered 503 and closed because GWAR_MAX_CONNECTIONS were open.",
        read: Read::One(|s| Value::Count(s.http.connections_refused.load(Relaxed))),
    },
    Family {
        name: "gwar_http_requests_timed_out_total",
        kind: "counter",
        help: "Requests not received whole within the request timeout (answered 408).",
        read: Read::One(|s| Value::Count(s.http.timed_out.load(Relaxed))),
    },
];

fn slow_queries(s: &Sources<'_>, name: &str, out: &mut String) {
    for (kind, count) in SlowKind::ALL.iter().zip(s.engine.slow_calls) {
        let _ = writeln!(out, "{name}{{kind=\"{}\"}} {count}", kind.as_str());
    }
}

fn replication_mode(s: &Sources<'_>, name: &str, out: &mut String) {
    let Some(replication) = s.engine.replication else {
        return;
    };
    for mode in ReplicationMode::ALL {
        let on = u8::from(mode == replication.mode);
        let _ = writeln!(out, "{name}{{mode=\"{}\"}} {on}", mode.as_str());
    }
}

fn persistence_state(s: &Sources<'_>, name: &str, out: &mut String) {
    for state in [
        PersistenceState::Healthy,
        PersistenceState::Retrying,
        PersistenceState::Lagging,
        PersistenceState::MemoryOnly,
        PersistenceState::Disabled,
    ] {
        let _ = writeln!(
            out,
            "{name}{{state=\"{}\"}} {}",
            state.as_str(),
            u8::from(s.engine.state == state)
        );
    }
}

fn batch_duration(s: &Sources<'_>, name: &str, out: &mut String) {
    let _ = writeln!(out, "{name}_sum {}", seconds(s.engine.total_batch_micros));
    let _ = writeln!(out, "{name}_count {}", s.engine.batches_committed);
}

fn requests_by_class(s: &Sources<'_>, name: &str, out: &mut String) {
    for class in 1..=5 {
        let _ = writeln!(
            out,
            "{name}{{class=\"{class}xx\"}} {}",
            s.http.count_of_class(class)
        );
    }
}

fn request_durations(s: &Sources<'_>, name: &str, out: &mut String) {
    let buckets = BUCKETS.iter().map(f64::to_string);
    let counts = s.http.buckets.iter().map(|bucket| bucket.load(Relaxed));
    let count = histogram(out, name, buckets.zip(counts), s.http.count.load(Relaxed));
    let _ = writeln!(
        out,
        "{name}_sum {}",
        seconds(s.http.sum_micros.load(Relaxed))
    );
    let _ = writeln!(out, "{name}_count {count}");
}

fn durable_per_commit(s: &Sources<'_>, name: &str, out: &mut String) {
    let d = &s.engine.durable;
    let bounds = PER_COMMIT_BUCKETS.iter().map(u64::to_string);
    let buckets = bounds.zip(d.per_commit.iter().copied());
    let count = histogram(out, name, buckets, d.commits);
    let _ = writeln!(out, "{name}_sum {}", d.per_commit_sum);
    let _ = writeln!(out, "{name}_count {count}");
}

fn durable_waits(s: &Sources<'_>, name: &str, out: &mut String) {
    let d = &s.engine.durable;
    let bounds = WAIT_BUCKETS.iter().map(f64::to_string);
    let count = histogram(out, name, bounds.zip(d.waits.iter().copied()), d.wait_count);
    let _ = writeln!(out, "{name}_sum {}", seconds(d.wait_sum_micros));
    let _ = writeln!(out, "{name}_count {count}");
}

/// A histogram's cumulative `_bucket` lines, from each bucket's own count; returns its
/// count. The counters are read one by one while they move: the count is at least the
/// buckets' sum, so that the series stays a valid histogram.
fn histogram(
    out: &mut String,
    name: &str,
    buckets: impl Iterator<Item = (String, u64)>,
    count: u64,
) -> u64 {
    let mut cumulative = 0;
    for (bound, in_bucket) in buckets {
        cumulative += in_bucket;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count = count.max(cumulative);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    count
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// The whole exposition: every family of [`FAMILIES`], its `# HELP` and `# TYPE` lines
/// and then its samples.
pub fn render(app: &AppState, http: &HttpMetrics) -> String {
    let sources = Sources {
        app,
        engine: app.metrics(),
        http,
        budget: app.budget(),
        storage: app.storage_gauge(),
    };
    let mut out = String::with_capacity(4096);
    for family in FAMILIES {
        let name = family.name;
        let _ = writeln!(out, "# HELP {name} {}", family.help);
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        match family.read {
            Read::One(read) => {
                let _ = writeln!(out, "{name} {}", read(&sources));
            }
            Read::Lines(write) => write(&sources, name, &mut out),
        }
    }
    out
}
