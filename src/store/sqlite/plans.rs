//! The plan test (issue 27, point 4): every statement the engine runs on SQLite's hot paths
//! (saves, loads, jobs, archives) is explained with `EXPLAIN QUERY PLAN` on a database
//! with realistic row counts (a galaxy of 20 000 systems among twelve of 1 000, five
//! structures per system, an event per tenth, then `ANALYZE`), and none may read the
//! whole of `systems`, `structures` or `events`.
//!
//! The statements are the stores' own constants (`write.rs`, `jobs.rs`, `load.rs`,
//! `reader.rs`, `archive.rs`), never copies of their text. Unit tests here, not in
//! `tests/`: those constants are private to the store, and stay so.
//!
//! What counts as a full scan: a `SCAN` of one of the three tables (by its name or an
//! alias the statement gives it), through an index or not: a `SCAN … USING COVERING
//! INDEX` still reads every entry; and a `SEARCH … USING AUTOMATIC … INDEX`, which SQLite
//! builds by reading the whole table first. Only a `SEARCH` through a real index, or by
//! row id, passes. Foreign-key cascades (a purge's `DELETE FROM systems` takes the
//! system's structures and events with it) are not in any plan SQLite shows, so the
//! test also checks that every foreign key of the three tables leads an index.
//!
//! No statement is exempt: a purge's `DELETE … LIMIT` finds its systems through the
//! unique `(galaxy_name, x, y)` index, and a load reads its rows by row-id range.

use rusqlite::Connection;

use super::writer::SqliteWriter;
use super::{archive, history, jobs, load, reader, write};
use crate::settings::{DatabaseUrl, Synchronous};

/// The tables no hot statement may read whole.
const HOT: [&str; 3] = ["systems", "structures", "events"];

/// Every statement on the hot paths, by kind.
const STATEMENTS: &[(&str, &str)] = &[
    ("save: galaxy tick", write::UPDATE_TICK),
    ("save: deletion mark", write::MARK_DELETING),
    ("save: row ids", write::FETCH_IDS),
    ("save: system", write::UPDATE_SYSTEM),
    ("save: structure update", write::UPDATE_STRUCTURE),
    ("save: structure insert", write::INSERT_STRUCTURE),
    ("save: event update", write::UPDATE_EVENT),
    ("save: event delete", write::DELETE_EVENT),
    ("save: event insert", write::INSERT_EVENT),
    ("load: galaxy", load::GALAXY),
    ("load: system range", load::SYSTEM_RANGE),
    ("load: systems", load::SYSTEMS),
    ("load: structure range", load::STRUCTURE_RANGE),
    ("load: structures", load::STRUCTURES),
    ("load: events", load::EVENTS),
    ("load: names", reader::GALAXY_NAMES),
    ("load: sizes", reader::GALAXY_SIZES),
    ("load: exists", reader::GALAXY_EXISTS),
    ("job: insert galaxy", jobs::INSERT_GALAXY),
    ("job: creation mark", jobs::MARK_CREATING),
    ("job: insert size", jobs::INSERT_SIZE),
    ("job: insert system", jobs::INSERT_SYSTEM),
    ("job: finish creation", jobs::FINISH_CREATION),
    ("job: is marked", jobs::IS_MARKED),
    ("job: purge systems", jobs::PURGE_SYSTEMS),
    ("job: delete galaxy", jobs::DELETE_GALAXY),
    ("job: unfinished", jobs::UNFINISHED_JOBS),
    ("job: abandon creations", jobs::ABANDON_CREATIONS),
    ("archive: insert", archive::INSERT_ARCHIVE),
    ("archive: mark live deleting", archive::MARK_LIVE_DELETING),
    ("archive: delete", archive::DELETE_ARCHIVE),
    ("archive: exists", archive::ARCHIVE_EXISTS),
    ("archive: read", archive::READ_ARCHIVE),
    ("archive: listing", archive::ARCHIVES),
    ("archive: idle galaxies", archive::IDLE_GALAXIES),
    ("archive: storage", archive::MEASURE),
    ("history: insert", history::INSERT_HISTORY),
    ("history: purge", history::PURGE_HISTORY),
    ("history: delete", history::DELETE_HISTORY),
    ("history: prune", history::PRUNE_HISTORY),
    ("history: list", history::LIST_HISTORY),
    ("history: read", history::READ_SEGMENT),
];

/// The rows: galaxy `big` of 20 000 systems, `g0`..`g9` of 1 000, `gone` of 1 000 marked
/// `deleting`, `new` of 1 000 marked `creating`; five structures per system, an event
/// per tenth system; three archives. Written by SQL, not through the store: the plans
/// depend on the rows and the statistics, not on how they came.
const ROWS: &str = "
    CREATE TEMP TABLE sizes (name TEXT, systems INTEGER);
    INSERT INTO sizes VALUES ('big', 20000), ('gone', 1000), ('new', 1000);
    WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9)
    INSERT INTO sizes SELECT 'g' || i, 1000 FROM n;
    INSERT INTO galaxies (name, config_file, tick) SELECT name, '', 1 FROM sizes;
    INSERT INTO galaxy_sizes (name, systems) SELECT name, systems FROM sizes;
    INSERT INTO galaxy_jobs (name, job) VALUES ('gone', 'deleting'), ('new', 'creating');
    WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
    INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick)
        SELECT s.name, n.i % 200, n.i / 200, 10, 10, 10, 1 FROM sizes s JOIN n ON n.i < s.systems
        ORDER BY s.name, n.i;
    INSERT INTO structures (system_id, structure_type, level)
        SELECT s.id, k.kind, 1 FROM systems s, (SELECT 'colony' AS kind UNION ALL
            SELECT 'asteroidmine' UNION ALL SELECT 'waterharvester' UNION ALL
            SELECT 'hatchery' UNION ALL SELECT 'storagedepot') k
        ORDER BY s.id;
    INSERT INTO events (system_id, completion_tick, action_type, structure_type)
        SELECT id, 100 + id % 50, 'build', 'colony' FROM systems WHERE id % 10 = 0;
    INSERT INTO galaxy_archives (name, format, systems, body)
        VALUES ('old1', 1, 500, x'00'), ('old2', 1, 800, x'00'), ('old3', 1, 20, x'00');
    DROP TABLE sizes;
    ANALYZE;";

/// A database with the rows of [`ROWS`], migrated by the store itself.
fn realistic() -> (tempfile::TempDir, SqliteWriter) {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::File(dir.path().join("plans.db"));
    let store = SqliteWriter::open(&url, Synchronous::Normal).unwrap();
    store.connection().execute_batch(ROWS).unwrap();
    (dir, store)
}

/// The names a statement gives the hot tables (`systems s` makes `s` one of them), with
/// the tables' own. A word after a table's name that is no alias (`SET`, a column's next
/// name in a list) only adds a name no plan shows.
fn hot_names(sql: &str) -> Vec<(String, &'static str)> {
    const NOT_ALIASES: [&str; 16] = [
        "SET",
        "WHERE",
        "ON",
        "LEFT",
        "JOIN",
        "ORDER",
        "GROUP",
        "LIMIT",
        "VALUES",
        "SELECT",
        "USING",
        "INNER",
        "UNION",
        "AND",
        "FROM",
        "RETURNING",
    ];
    let words: Vec<&str> = sql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut names: Vec<(String, &'static str)> =
        HOT.iter().map(|&table| (table.to_owned(), table)).collect();
    for (at, word) in words.iter().enumerate() {
        let Some(&table) = HOT.iter().find(|&&table| table == *word) else {
            continue;
        };
        let mut next = words.get(at + 1).copied();
        if next.is_some_and(|w| w.eq_ignore_ascii_case("AS")) {
            next = words.get(at + 2).copied();
        }
        if let Some(alias) = next.filter(|w| {
            w.starts_with(|c: char| c.is_ascii_alphabetic())
                && !NOT_ALIASES.iter().any(|k| k.eq_ignore_ascii_case(w))
        }) {
            names.push((alias.to_owned(), table));
        }
    }
    names
}

/// Whether one line of a plan reads a whole hot table; the table if so.
fn full_scan(detail: &str, names: &[(String, &'static str)]) -> Option<&'static str> {
    let mut words = detail.split_whitespace();
    let verb = words.next()?;
    let target = words.next()?;
    let table = names.iter().find(|(name, _)| name == target)?.1;
    let scans = verb == "SCAN" || (verb == "SEARCH" && detail.contains("AUTOMATIC"));
    scans.then_some(table)
}

/// The full scans of hot tables in `sql`'s plan on `conn`, one line each.
fn scans_of(conn: &Connection, kind: &str, sql: &str) -> Vec<String> {
    let names = hot_names(sql);
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("{kind}: cannot explain: {e}\n{sql}"));
    // Unbound parameters are NULL: a plan does not depend on them (no STAT4 here).
    let mut rows = stmt.raw_query();
    let mut found = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        let detail: String = row.get(3).unwrap();
        if let Some(table) = full_scan(&detail, &names) {
            let first = sql.lines().next().unwrap_or(sql).trim();
            found.push(format!(
                "{kind}: full scan of {table} (`{detail}`) in `{first}`"
            ));
        }
    }
    found
}

/// Foreign keys of the hot tables that lead no index: a cascade through one reads the
/// whole table for every row it deletes.
fn unindexed_foreign_keys(conn: &Connection) -> Vec<String> {
    let mut found = Vec::new();
    for table in HOT {
        let mut keys = conn
            .prepare("SELECT \"table\", \"from\" FROM pragma_foreign_key_list(?1)")
            .unwrap();
        let keys: Vec<(String, String)> = keys
            .query_map([table], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .unwrap();
        for (parent, column) in keys {
            let led: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM pragma_index_list(?1) l,
                         pragma_index_info(l.name) i WHERE i.seqno = 0 AND i.name = ?2)",
                    [table, column.as_str()],
                    |row| row.get(0),
                )
                .unwrap();
            if !led {
                found.push(format!(
                    "cascade from {parent}: full scan of {table} (no index leads {table}.{column})"
                ));
            }
        }
    }
    found
}

/// Every full scan of a hot table on `conn`: the statements' plans, then the cascades.
fn plan_report(conn: &Connection) -> Vec<String> {
    let mut report: Vec<String> = STATEMENTS
        .iter()
        .flat_map(|&(kind, sql)| scans_of(conn, kind, sql))
        .collect();
    report.extend(unindexed_foreign_keys(conn));
    report
}

#[test]
fn no_hot_statement_reads_a_whole_table() {
    let (_dir, store) = realistic();
    let report = plan_report(store.connection());
    assert!(report.is_empty(), "full scans:\n{}", report.join("\n"));
}

/// The test is shown to fail: without the index on `events(system_id, …)`, a load's
/// events, a save's look-up of row ids and a purge's cascade read every event.
#[test]
fn the_plan_test_fails_without_the_events_index() {
    let (_dir, store) = realistic();
    let conn = store.connection();
    conn.execute_batch("DROP INDEX events_system_completion; ANALYZE;")
        .unwrap();
    let report = plan_report(conn);
    println!("{}", report.join("\n"));
    assert!(
        report
            .iter()
            .any(|line| line.starts_with("load: events: full scan of events")),
        "{report:?}"
    );
    assert!(
        report
            .iter()
            .any(|line| line.contains("full scan of events (no index leads")),
        "{report:?}"
    );
}

#[test]
fn aliases_and_scans_are_read_from_plans() {
    let names = hot_names("SELECT s.id FROM systems s LEFT JOIN events AS e ON e.system_id");
    assert!(names.contains(&("s".to_owned(), "systems")));
    assert!(names.contains(&("e".to_owned(), "events")));
    assert_eq!(full_scan("SCAN s", &names), Some("systems"));
    assert_eq!(
        full_scan("SCAN events USING COVERING INDEX x", &names),
        Some("events")
    );
    assert_eq!(
        full_scan(
            "SEARCH e USING AUTOMATIC COVERING INDEX (system_id=?)",
            &names
        ),
        Some("events")
    );
    assert_eq!(
        full_scan(
            "SEARCH s USING INDEX sqlite_autoindex_systems_1 (galaxy_name=?)",
            &names
        ),
        None
    );
    assert_eq!(full_scan("SCAN galaxies", &names), None);
}
