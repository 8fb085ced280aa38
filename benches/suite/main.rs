//! The benchmark suite: the engine against floors written here, side by side in one run.
//!
//! `cargo bench` for the full run, `cargo bench -- --quick` for a smaller one that
//! finishes in under two and a half minutes (plus about one for PostgreSQL). Prints a
//! table of ratios (absolute numbers as context) and one JSON object on the last line.
//!
//! Floors are what plain rusqlite does with no engine at all: the same schema (the
//! project's own migration), the same pragmas, prepared statements, cached row ids, one
//! transaction per batch. Section 10's floors on PostgreSQL are the same on the `postgres`
//! crate: the project's PostgreSQL migrations, set-based statements (arrays expanded by
//! `unnest`, one statement per table) prepared once, one transaction per batch, on a
//! throwaway cluster of the bench's own with `fsync` and `synchronous_commit` on (the
//! tests' harness, `tests/common/postgres.rs`); without PostgreSQL the section is skipped.
//! Sections 11 (several daemons) and 12 (durable orders, beside SQLite) start such a
//! cluster too, and skip what needs it the same way; section 13 (replication: failover,
//! the price of a synchronous standby) starts a primary + standby pair
//! (`tests/common/replica.rs`) and a lone cluster beside it.
//!
//! Sections 14 (archives) and 15 (archives in the database) need nothing beyond SQLite.
//!
//! One file per section (`s01_save.rs` … `s16_history.rs`), each with the workloads it
//! measures and the rows it prints; `harness.rs` holds what several sections share,
//! `floor.rs` and `pg_floor.rs` the floors, `daemon.rs` the daemons and their HTTP clients.
//! This file reads the arguments and runs the sections in order.

use std::path::PathBuf;

use serde_json::{Map, Value};

use harness::Run;

mod daemon;
mod floor;
mod harness;
mod pg_floor;
mod s01_save;
mod s02_orders;
mod s03_game;
mod s04_load;
mod s05_memory;
mod s06_http;
mod s07_startup;
mod s08_creation;
mod s09_edge;
mod s10_postgres;
mod s11_failover;
mod s12_durable;
mod s13_replication;
mod s14_archive;
mod s15_archive_db;
mod s16_history;

/// The tests' throwaway PostgreSQL cluster, for sections 10, 11 and 12 (started with `fsync` on).
#[path = "../../tests/common/postgres.rs"]
mod pg_cluster;

/// The tests' primary + streaming standby pair, for section 13 (failover, synchronous
/// replication).
#[path = "../../tests/common/replica.rs"]
mod pg_pair;

/// A section: measures, prints its rows, and adds its keys to the run's JSON object.
type Section = fn(&Run, &mut Map<String, Value>);

/// The sections, in the order they run; section N is the N-th.
const SECTIONS: [Section; 16] = [
    s01_save::run,
    s02_orders::run,
    s03_game::run,
    s04_load::run,
    s05_memory::run,
    s06_http::run,
    s07_startup::run,
    s08_creation::run,
    s09_edge::run,
    s10_postgres::run,
    s11_failover::run,
    s12_durable::run,
    s13_replication::run,
    s14_archive::run,
    s15_archive_db::run,
    s16_history::run,
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--memory") {
        s05_memory::measure_memory(
            args[at + 1].parse().expect("a count"),
            args.get(at + 2).map(String::as_str),
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only N` runs section N alone (for profiling one of them).
    let only: Option<u32> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|at| args.get(at + 1))
        .and_then(|n| n.parse().ok());
    let wanted = |section: u32| only.is_none_or(|n| n == section);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir: PathBuf = temp.path().to_path_buf();
    let large: u64 = if quick { 20_000 } else { 100_000 };
    let run = Run { quick, dir, large };
    let mut out = Map::new();
    println!("| measurement | engine | floor / reference | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    for (section, measure) in (1..).zip(SECTIONS) {
        if wanted(section) {
            measure(&run, &mut out);
        }
    }
    out.insert("quick".into(), Value::Bool(quick));
    println!("{}", Value::Object(out));
}
