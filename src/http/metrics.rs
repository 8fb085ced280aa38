//! `GET /metrics`: the engine's and the HTTP layer's counters in Prometheus text format.
//!
//! HTTP counters are atomics updated by the worker threads after each response and by the
//! poller as connections open, close, are refused or time out; rendering
//! reads them and the engine's snapshot without taking any galaxy lock for long (the
//! dirty-systems gauge locks each galaxy once, briefly).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::app::AppState;
use crate::persistence::metrics::PersistenceState;

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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// The whole exposition.
pub fn render(app: &AppState, http: &HttpMetrics) -> String {
    let m = app.metrics();
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "gwar_persistence_state",
        "gauge",
        "1 for the persistence engine's current state.",
    );
    for state in [
        PersistenceState::Healthy,
        PersistenceState::Retrying,
        PersistenceState::Lagging,
        PersistenceState::MemoryOnly,
        PersistenceState::Disabled,
    ] {
        let _ = writeln!(
            out,
            "gwar_persistence_state{{state=\"{}\"}} {}",
            state.as_str(),
            u8::from(m.state == state)
        );
    }
    sample(
        &mut out,
        "gwar_persistence_batches_total",
        "counter",
        "Transactions committed: batches, and chunks of galaxy creations and deletions.",
        m.batches_committed,
    );
    sample(
        &mut out,
        "gwar_persistence_errors_total",
        "counter",
        "Batches and creations that failed to commit.",
        m.batch_errors,
    );
    sample(
        &mut out,
        "gwar_persistence_retries_total",
        "counter",
        "Attempts that retried a failed batch or chunk, whether they failed again or committed.",
        m.retries,
    );
    sample(
        &mut out,
        "gwar_persistence_systems_written_total",
        "counter",
        "Systems written by committed batches.",
        m.systems_written,
    );
    sample(
        &mut out,
        "gwar_persistence_rows_written_total",
        "counter",
        "Rows written by committed batches.",
        m.rows_written,
    );
    sample(
        &mut out,
        "gwar_persistence_dirty_systems",
        "gauge",
        "Systems with changes not yet committed.",
        app.dirty_systems(),
    );
    sample(
        &mut out,
        "gwar_persistence_oldest_unsaved_seconds",
        "gauge",
        "Age of the oldest change not yet committed (0 when none).",
        m.oldest_unsaved_ms.map_or(0.0, |ms| ms as f64 / 1e3),
    );
    family(
        &mut out,
        "gwar_persistence_batch_duration_seconds",
        "summary",
        "Time to write and commit a batch.",
    );
    let _ = writeln!(
        out,
        "gwar_persistence_batch_duration_seconds_sum {}",
        seconds(m.total_batch_micros)
    );
    let _ = writeln!(
        out,
        "gwar_persistence_batch_duration_seconds_count {}",
        m.batches_committed
    );
    sample(
        &mut out,
        "gwar_persistence_last_batch_seconds",
        "gauge",
        "Duration of the last committed batch.",
        seconds(m.last_batch_micros),
    );
    sample(
        &mut out,
        "gwar_persistence_max_batch_seconds",
        "gauge",
        "Longest committed batch.",
        seconds(m.max_batch_micros),
    );
    sample(
        &mut out,
        "gwar_persistence_max_lock_hold_seconds",
        "gauge",
        "Longest time the writer held a galaxy lock to copy its changes.",
        seconds(m.max_lock_hold_micros),
    );
    sample(
        &mut out,
        "gwar_galaxies_loaded",
        "gauge",
        "Galaxies in memory.",
        app.galaxies_loaded(),
    );
    sample(
        &mut out,
        "gwar_systems_loaded",
        "gauge",
        "Systems of the galaxies in memory.",
        app.systems_loaded(),
    );
    sample(
        &mut out,
        "gwar_galaxy_evictions_total",
        "counter",
        "Clean, idle galaxies evicted from memory.",
        m.galaxies_evicted_total,
    );
    sample(
        &mut out,
        "gwar_galaxies_lost_total",
        "counter",
        "Galaxies another daemon took from this one; their unsaved changes were dropped.",
        m.galaxies_lost_total,
    );
    sample(
        &mut out,
        "gwar_galaxy_loads_total",
        "counter",
        "Galaxies loaded from the database on a cache miss.",
        m.galaxies_loaded_total,
    );
    sample(
        &mut out,
        "gwar_galaxy_loads_in_progress",
        "gauge",
        "Galaxies being read from the database now (one per galaxy, however many requests wait).",
        m.loads_in_progress,
    );

    family(
        &mut out,
        "gwar_http_requests_total",
        "counter",
        "HTTP requests answered, by status class.",
    );
    for class in 1..=5 {
        let _ = writeln!(
            out,
            "gwar_http_requests_total{{class=\"{class}xx\"}} {}",
            http.count_of_class(class)
        );
    }
    family(
        &mut out,
        "gwar_http_request_duration_seconds",
        "histogram",
        "Time from a request's first byte to its response.",
    );
    let mut cumulative = 0;
    for (bound, bucket) in BUCKETS.iter().zip(&http.buckets) {
        cumulative += bucket.load(Relaxed);
        let _ = writeln!(
            out,
            "gwar_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = http.count.load(Relaxed);
    let _ = writeln!(
        out,
        "gwar_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "gwar_http_request_duration_seconds_sum {}",
        seconds(http.sum_micros.load(Relaxed))
    );
    let _ = writeln!(out, "gwar_http_request_duration_seconds_count {count}");
    sample(
        &mut out,
        "gwar_http_connections_open",
        "gauge",
        "HTTP connections open, idle ones included.",
        http.connections_open.load(Relaxed),
    );
    sample(
        &mut out,
        "gwar_http_connections_refused_total",
        "counter",
        "Connections answered 503 and closed because GWAR_MAX_CONNECTIONS were open.",
        http.connections_refused.load(Relaxed),
    );
    sample(
        &mut out,
        "gwar_http_requests_timed_out_total",
        "counter",
        "Requests not received whole within the request timeout (answered 408).",
        http.timed_out.load(Relaxed),
    );
    out
}
