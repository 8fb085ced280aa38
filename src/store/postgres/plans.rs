//! The plan test (issue 27, point 4) on PostgreSQL: every statement the engine runs on its
//! hot paths (saves with their fence, loads, jobs, ownership, archives) is explained on a
//! database with realistic row counts (a galaxy of 20 000 systems among 62 of 1 000,
//! five structures per system, an event per tenth, then `ANALYZE`), and no plan may hold
//! a `Seq Scan on` `systems`, `structures` or `events`.
//!
//! Each statement is the store's own constant, prepared (`PREPARE`, as the writer's
//! session prepares it) and explained twice with example parameters: as the generic plan
//! (`plan_cache_mode = force_generic_plan`, what a prepared statement settles on after
//! its first executions, planned for no value in particular) and as the custom plan for
//! those values. The examples are what the engine sends for a typical galaxy (`g3`, 1 000
//! systems): a batch of 100 systems with their 500 structures and 30 event changes,
//! a chunk of 100 systems. A batch or a load of a galaxy that is half the database may
//! rightly be planned as a scan of the table; the test is for the common case, where a
//! galaxy is a small share of the rows, and for the generic plan, which must hold for any.
//!
//! Foreign-key cascades are not in any plan `EXPLAIN` shows, so the test also checks that
//! every foreign key of the three tables leads an index. No statement is exempt.

use ::postgres::Client;

use super::tests::{identity, TestDb};
use super::{archive, claimer, history, jobs, load, owners, write, PostgresWriter};

/// The tables no hot statement may read whole.
const HOT: [&str; 3] = ["systems", "structures", "events"];

/// Example values, as SQL literals, for a statement's parameters.
struct Examples {
    /// 100 of `g3`'s system ids.
    systems: String,
    /// `g3`'s first and last system ids.
    range: [String; 2],
    /// Those ids, each five times (one per structure).
    structure_systems: String,
    /// 10 event ids of `g3`, three times over: deleted, updated, and their systems.
    events: [String; 3],
}

/// `'{a,b,…}'`.
fn array<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    format!("'{{{}}}'", items.join(","))
}

impl Examples {
    fn read(client: &mut Client) -> Examples {
        let ids: Vec<i64> = client
            .query(
                "SELECT id FROM systems WHERE galaxy_name = 'g3' ORDER BY id LIMIT 100",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let events: Vec<(i64, i64)> = client
            .query(
                "SELECT e.id, e.system_id FROM events e JOIN systems s ON s.id = e.system_id
                 WHERE s.galaxy_name = 'g3' ORDER BY e.id LIMIT 20",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let range: (i64, i64) = client
            .query_one(
                "SELECT min(id), max(id) FROM systems WHERE galaxy_name = 'g3'",
                &[],
            )
            .map(|row| (row.get(0), row.get(1)))
            .unwrap();
        Examples {
            range: [range.0.to_string(), range.1.to_string()],
            systems: array(&ids),
            structure_systems: array(ids.iter().flat_map(|&id| [id; 5])),
            events: [
                array(events[..10].iter().map(|e| e.0)),
                array(events[10..].iter().map(|e| e.0)),
                array(events[..10].iter().map(|e| e.1)),
            ],
        }
    }

    /// Every statement on the hot paths: its kind, its text, its parameters.
    fn statements(&self) -> Vec<Planned> {
        [
            self.saves(),
            ownership(),
            self.loads(),
            self.jobs(),
            archives(),
        ]
        .concat()
    }

    fn saves(&self) -> Vec<Planned> {
        let [deleted, updated, event_systems] = &self.events;
        let (ticks, ten) = (array([200; 10]), |v: &str| array([v; 10]));
        let events = vec![
            deleted.clone(),
            updated.clone(),
            ticks.clone(),
            ten("hatchery"),
            event_systems.clone(),
            ticks,
            ten("colony"),
        ];
        let mut systems = vec![self.systems.clone()];
        systems.extend((1..=4).map(|v| array([v; 100])));
        let structures = vec![self.structure_systems.clone(), types(), array([2; 500])];
        vec![
            ("save: deletion marks", write::MARK_DELETING, p(&["'{g3}'"])),
            (
                "save: galaxy ticks",
                write::UPDATE_TICKS,
                p(&["'{g3,g4}'", "'{5,5}'"]),
            ),
            ("save: systems", write::UPDATE_SYSTEMS, systems),
            ("save: structures", write::UPSERT_STRUCTURES, structures),
            ("save: events", write::WRITE_EVENTS, events),
            ("save: row ids", write::FETCH_IDS, p(&["'g3'"])),
            ("save: unarchive", write::UNARCHIVE, p(&["'{g3}'"])),
        ]
    }

    fn loads(&self) -> Vec<Planned> {
        vec![
            ("load: galaxy", load::GALAXY, p(&["'g3'"])),
            ("load: systems", load::SYSTEMS, p(&["'g3'"])),
            ("load: structures", load::STRUCTURES, self.range.to_vec()),
            ("load: events", load::EVENTS, self.range.to_vec()),
            ("load: names", load::GALAXY_NAMES, p(&[])),
            ("load: sizes", load::GALAXY_SIZES, p(&[])),
            ("load: exists", load::GALAXY_EXISTS, p(&["'g3'"])),
            ("load: owners", owners::GALAXY_OWNERS, p(&[])),
        ]
    }

    fn jobs(&self) -> Vec<Planned> {
        let me = ["'daemon-a'", "'http://a'", "15000"];
        let take = p(&[&me[..], &["'{}'"]].concat());
        let mut systems = vec!["'fresh'".to_owned()];
        systems.extend([1, 2, 10, 10, 10, 1].map(|v| array([v; 100])));
        let structures = vec![self.structure_systems.clone(), types(), array([1; 500])];
        vec![
            (
                "job: insert galaxy",
                jobs::INSERT_GALAXY,
                p(&["'fresh'", "''", "0"]),
            ),
            ("job: creation mark", jobs::MARK_CREATING, p(&["'fresh'"])),
            (
                "job: insert owner",
                jobs::INSERT_OWNER,
                p(&[&["'fresh'"], &me[..]].concat()),
            ),
            (
                "job: insert size",
                jobs::INSERT_SIZE,
                p(&["'fresh'", "1000"]),
            ),
            ("job: insert systems", jobs::INSERT_SYSTEMS, systems),
            (
                "job: insert structures",
                jobs::INSERT_STRUCTURES,
                structures,
            ),
            ("job: finish creation", jobs::FINISH_CREATION, p(&["'new'"])),
            ("job: settle a chunk", jobs::SETTLE_CHUNK, p(&["'new'"])),
            ("job: is marked", jobs::IS_MARKED, p(&["'gone'"])),
            (
                "job: purge systems",
                jobs::PURGE_SYSTEMS,
                p(&["'gone'", "1000"]),
            ),
            ("job: delete galaxy", jobs::DELETE_GALAXY, p(&["'gone'"])),
            (
                "job: abandon creations",
                jobs::ABANDON_CREATIONS,
                p(&["'{new}'"]),
            ),
            ("job: add job owners", jobs::ADD_JOB_OWNERS, p(&[])),
            ("job: job owners", jobs::JOB_OWNERS, p(&[])),
            ("job: unfinished", jobs::TAKE_JOBS, take.clone()),
            ("job: orphaned", jobs::TAKE_ORPHANED_JOBS, take),
        ]
    }
}

/// A statement to explain: its kind, its text, its parameters as SQL literals.
type Planned = (&'static str, &'static str, Vec<String>);

/// Parameters from literals.
fn p(literals: &[&str]) -> Vec<String> {
    literals.iter().map(|&l| l.to_owned()).collect()
}

/// Five structure types per system, for 100 systems.
fn types() -> String {
    let kinds = [
        "colony",
        "asteroidmine",
        "waterharvester",
        "hatchery",
        "storagedepot",
    ];
    array(kinds.repeat(100))
}

fn ownership() -> Vec<Planned> {
    let fence = ["'{g3,g4}'", "'{1,1}'", "'daemon-a'", "15000"];
    let take = ["'g3'", "'daemon-b'", "'http://b'", "15000", "NULL"];
    vec![
        ("ownership: fence, renew", owners::FENCE, p(&fence)),
        ("ownership: final fence", owners::FENCE_RELEASED, p(&fence)),
        ("ownership: release", owners::RELEASE, p(&fence[..3])),
        (
            "ownership: current epochs",
            owners::CURRENT_EPOCHS,
            p(&["'{g3}'"]),
        ),
        ("ownership: take", claimer::TAKE, p(&take)),
        ("ownership: look", claimer::LOOK, p(&["'g3'"])),
        (
            "ownership: add free row",
            claimer::ADD_FREE_ROW,
            p(&["'g3'"]),
        ),
    ]
}

fn archives() -> Vec<Planned> {
    let tables = "'{galaxies,systems,structures,events}'";
    vec![
        (
            "archive: insert",
            archive::INSERT_ARCHIVE,
            p(&["'g3'", "1", "1000", "'\\x00'"]),
        ),
        (
            "archive: mark live deleting",
            archive::MARK_LIVE_DELETING,
            p(&["'g3'"]),
        ),
        (
            "archive: archived already",
            archive::ARCHIVED_ALREADY,
            p(&["'old1'", "'\\x00'"]),
        ),
        ("archive: delete", archive::DELETE_ARCHIVE, p(&["'old1'"])),
        ("archive: exists", archive::ARCHIVE_EXISTS, p(&["'old1'"])),
        ("archive: read", archive::READ_ARCHIVE, p(&["'old1'"])),
        ("archive: listing", archive::ARCHIVES, p(&[])),
        (
            "archive: idle galaxies",
            archive::IDLE_GALAXIES,
            p(&["60000", "10"]),
        ),
        ("archive: storage", archive::MEASURE, p(&[tables])),
        (
            "history: insert",
            history::INSERT_HISTORY,
            p(&["'{g3}'", "'{1}'", "'{2}'", "'{1}'", "'{}'"]),
        ),
        (
            "history: purge",
            history::PURGE_HISTORY,
            p(&["'gone'", "100"]),
        ),
        ("history: delete", history::DELETE_HISTORY, p(&["'old1'"])),
        (
            "history: prune",
            history::PRUNE_HISTORY,
            p(&["60000", "100"]),
        ),
        ("history: list", history::LIST_HISTORY, p(&["'g3'", "0"])),
        ("history: read", history::READ_SEGMENTS, p(&["'{1,2}'"])),
    ]
}

/// The rows: galaxy `big` of 20 000 systems, `g0`..`g59` of 1 000, `gone` of 1 000 marked
/// `deleting`, `new` of 1 000 marked `creating`, each owned by `daemon-a` under epoch 1;
/// five structures per system, an event per tenth system; three archives. Written by SQL,
/// not through the store: the plans depend on the rows and the statistics only.
const ROWS: &str = "
    CREATE TEMP TABLE sizes AS
        SELECT * FROM (VALUES ('big', 20000), ('gone', 1000), ('new', 1000)) v(name, systems)
        UNION ALL SELECT 'g' || i, 1000 FROM generate_series(0, 59) i;
    INSERT INTO galaxies (name, config_file, tick) SELECT name, '', 1 FROM sizes;
    INSERT INTO galaxy_sizes (name, systems) SELECT name, systems FROM sizes;
    INSERT INTO galaxy_owners (galaxy_name, epoch, owner, owner_url, expires_at)
        SELECT name, 1, 'daemon-a', 'http://a', now() + interval '15 seconds' FROM sizes;
    INSERT INTO galaxy_jobs (name, job) VALUES ('gone', 'deleting'), ('new', 'creating');
    INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick)
        SELECT s.name, i % 200, i / 200, 10, 10, 10, 1
        FROM sizes s, generate_series(0, s.systems - 1) i ORDER BY s.name, i;
    INSERT INTO structures (system_id, structure_type, level)
        SELECT s.id, k, 1 FROM systems s,
            unnest(ARRAY['colony', 'asteroidmine', 'waterharvester', 'hatchery',
                'storagedepot']) k
        ORDER BY s.id;
    INSERT INTO events (system_id, completion_tick, action_type, structure_type)
        SELECT id, 100 + id % 50, 'build', 'colony' FROM systems WHERE id % 10 = 0;
    INSERT INTO galaxy_archives (name, format, systems, body)
        VALUES ('old1', 1, 500, '\\x00'), ('old2', 1, 800, '\\x00'), ('old3', 1, 20, '\\x00');
    DROP TABLE sizes;
    ANALYZE;";

/// A database migrated by the store itself, with the rows of [`ROWS`]; `None` without a
/// server (see [`TestDb::new`]).
fn realistic(tag: &str) -> Option<(TestDb, Client)> {
    let db = TestDb::new(tag)?;
    drop(PostgresWriter::open(&db.url, identity("http://a", 15)).unwrap());
    let mut client = db.client();
    client.batch_execute(ROWS).unwrap();
    Some((db, client))
}

/// The plan lines of `sql` with `params`, generic and custom, that scan a hot table whole.
fn scans_of(client: &mut Client, kind: &str, sql: &str, params: &[String]) -> Vec<String> {
    client
        .batch_execute(&format!("PREPARE plan_test AS {sql}"))
        .unwrap_or_else(|e| panic!("{kind}: cannot prepare: {e}\n{sql}"));
    let execute = if params.is_empty() {
        "EXPLAIN EXECUTE plan_test".to_owned()
    } else {
        format!("EXPLAIN EXECUTE plan_test({})", params.join(", "))
    };
    let mut found = Vec::new();
    for mode in ["force_generic_plan", "force_custom_plan"] {
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .unwrap();
        let lines = client
            .simple_query(&execute)
            .unwrap_or_else(|e| panic!("{kind}: cannot explain: {e}\n{execute}"));
        for line in lines {
            let ::postgres::SimpleQueryMessage::Row(row) = line else {
                continue;
            };
            let text = row.get(0).unwrap_or_default();
            for table in HOT {
                let scan = format!("Seq Scan on {table} ");
                if text.contains(&scan) || text.trim_end().ends_with(scan.trim_end()) {
                    let first = sql.lines().next().unwrap_or(sql).trim();
                    found.push(format!(
                        "{kind} ({mode}): full scan of {table} (`{}`) in `{first}`",
                        text.trim()
                    ));
                }
            }
        }
    }
    client
        .batch_execute("DEALLOCATE plan_test; RESET plan_cache_mode")
        .unwrap();
    found
}

/// Foreign keys of the hot tables that lead no index: a cascade through one reads the
/// whole table for every row it deletes.
fn unindexed_foreign_keys(client: &mut Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text
             FROM pg_constraint c
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
             WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY($1)
                 AND NOT EXISTS (SELECT 1 FROM pg_index i
                     WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])",
            &[&HOT.to_vec()],
        )
        .unwrap();
    rows.iter()
        .map(|row| {
            let (table, column, parent): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            format!("cascade from {parent}: full scan of {table} (no index leads {table}.{column})")
        })
        .collect()
}

/// Every full scan of a hot table: the statements' plans, then the cascades.
fn plan_report(client: &mut Client) -> Vec<String> {
    let examples = Examples::read(client);
    let mut report: Vec<String> = examples
        .statements()
        .iter()
        .flat_map(|(kind, sql, params)| scans_of(client, kind, sql, params))
        .collect();
    report.extend(unindexed_foreign_keys(client));
    report
}

#[test]
fn no_hot_statement_reads_a_whole_table() {
    let Some((_db, mut client)) = realistic("plans") else {
        return;
    };
    let report = plan_report(&mut client);
    assert!(report.is_empty(), "full scans:\n{}", report.join("\n"));
}

/// The test is shown to fail: without the index on `events(system_id, …)`, a load's
/// events and a purge's cascade read every event.
#[test]
fn the_plan_test_fails_without_the_events_index() {
    let Some((_db, mut client)) = realistic("plans_dropped") else {
        return;
    };
    client
        .batch_execute("DROP INDEX events_system_completion; ANALYZE events")
        .unwrap();
    let report = plan_report(&mut client);
    println!("{}", report.join("\n"));
    assert!(
        report
            .iter()
            .any(|line| line.starts_with("load: events (force_generic_plan): full scan of events")),
        "{report:?}"
    );
    assert!(
        report
            .iter()
            .any(|line| line.contains("full scan of events (no index leads")),
        "{report:?}"
    );
}
