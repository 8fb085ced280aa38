//! `galactic-war check`: what an operator runs to know whether a database is sound.
//!
//! On PostgreSQL ([`check_postgres`]) the same rules run through a read-only session; the
//! rest of this comment is about SQLite files.
//!
//! Read-only, through its own connection, so it also works beside a running daemon:
//! SQLite's integrity check, the schema version, row counts, and our own consistency rules
//! (no orphaned rows, values within the bounds the game can hold, configs that parse,
//! at most one build in flight per system, archives and history segments that decode, no
//! galaxy both live and archived, no history of a galaxy neither live nor archived), and
//! what the database holds, live, archived and history. Each failed rule is reported with
//! a count and an example (a damaged archive by its galaxy's name, damaged history by its
//! galaxy's, and neither deleted: their bytes are all there is); the exit status is 0 only
//! when every rule holds. A backup's temporary file (`….partial-PID`, see
//! [`crate::persistence::backup`]) is named as what it is, an unfinished backup, without
//! being opened.
//!
//! "Read-only" includes the directory: the database is opened by
//! [`crate::persistence::reading::open_to_read`], so a check of a file nobody else has open
//! (a stopped daemon's database, a backup) leaves no `-wal`/`-shm` beside it, and files a
//! running or crashed daemon left there are left as found; the database file itself is
//! never written.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::model::GalaxyConfig;
use crate::persistence::backup::unfinished_backup_pid;
use crate::persistence::reading::open_to_read;
use crate::store::history::{decode_segment, SegmentInfo};
use crate::store::sqlite::SCHEMA_VERSION;
use crate::store::{Storage, StoreError};

/// The outcome of a check: what was found, and what is wrong.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub lines: Vec<String>,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Rules as SQL: each query counts the rows breaking the rule and shows one of them.
const RULES: &[(&str, &str)] = &[
    (
        "systems of no galaxy",
        "SELECT count(*), min(id) FROM systems WHERE galaxy_name NOT IN (SELECT name FROM galaxies)",
    ),
    (
        "structures of no system",
        "SELECT count(*), min(id) FROM structures WHERE system_id NOT IN (SELECT id FROM systems)",
    ),
    (
        "events of no system",
        "SELECT count(*), min(id) FROM events WHERE system_id NOT IN (SELECT id FROM systems)",
    ),
    (
        "systems with negative or non-integer resources or tick",
        "SELECT count(*), min(id) FROM systems WHERE typeof(metal) != 'integer' OR metal < 0
         OR typeof(crew) != 'integer' OR crew < 0 OR typeof(water) != 'integer' OR water < 0
         OR typeof(current_tick) != 'integer' OR current_tick < 0
         OR x < 0 OR x >= 4294967295 OR y < 0 OR y >= 4294967295",
    ),
    (
        "structures with an unknown type or a level out of range",
        "SELECT count(*), min(id) FROM structures WHERE structure_type NOT IN
         ('colony', 'asteroidmine', 'waterharvester', 'hatchery', 'storagedepot')
         OR typeof(level) != 'integer' OR level < 0 OR level > 4294967295",
    ),
    (
        "events that are not builds of a known structure",
        "SELECT count(*), min(id) FROM events WHERE action_type != 'build' OR structure_type NOT IN
         ('colony', 'asteroidmine', 'waterharvester', 'hatchery', 'storagedepot')
         OR typeof(completion_tick) != 'integer' OR completion_tick < 0",
    ),
    (
        "systems with more than one build in flight",
        "SELECT count(*), min(system_id) FROM (SELECT system_id FROM events GROUP BY system_id HAVING count(*) > 1)",
    ),
    (
        "galaxies with a negative tick",
        "SELECT count(*), min(rowid) FROM galaxies WHERE typeof(tick) != 'integer' OR tick < 0",
    ),
    HISTORY_OF_NOTHING,
];

/// History is deleted before its galaxy's row (a purge) or with its archive, so every
/// segment belongs to a galaxy row or an archive.
const HISTORY_OF_NOTHING: (&str, &str) = (
    "history segments of no galaxy or archive",
    "SELECT count(*), min(id) FROM galaxy_history h WHERE NOT EXISTS
     (SELECT 1 FROM galaxies g WHERE g.name = h.galaxy_name) AND NOT EXISTS
     (SELECT 1 FROM galaxy_archives a WHERE a.name = h.galaxy_name)",
);

/// Checks the database file at `path` without changing it.
pub fn check_database(path: &Path) -> Result<CheckReport, rusqlite::Error> {
    let mut report = CheckReport::default();
    if let Some(pid) = unfinished_backup_pid(path) {
        // Opening it would say "attempt to write a readonly database" (SQLite wants to
        // roll its hot journal back), which tells an operator nothing.
        report.problems.push(format!(
            "this is an unfinished backup: the temporary file of a backup by process {pid} \
             that did not finish (killed mid-copy), not a database to use or restore; \
             delete it (the daemon removes these at start-up)"
        ));
        return Ok(report);
    }
    let conn = open_to_read(path)?;

    let mut integrity: Vec<String> = Vec::new();
    {
        let mut stmt = conn.prepare("PRAGMA integrity_check(20)")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            integrity.push(row.get(0)?);
        }
    }
    if integrity == ["ok"] {
        report.lines.push("integrity_check: ok".into());
    } else {
        report
            .problems
            .push(format!("integrity_check: {}", integrity.join("; ")));
        // Our own rules would read damaged pages; stop at SQLite's verdict.
        return Ok(report);
    }

    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version_line = format!("schema version: {version} (this binary writes {SCHEMA_VERSION})");
    if version == SCHEMA_VERSION {
        report.lines.push(version_line);
    } else {
        report.problems.push(version_line);
        return Ok(report);
    }

    for table in ["galaxies", "systems", "structures", "events"] {
        let count: i64 =
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        report.lines.push(format!("{table}: {count} rows"));
    }

    let unfinished: i64 = conn.query_row("SELECT count(*) FROM galaxy_jobs", [], |r| r.get(0))?;
    if unfinished > 0 {
        // Not a problem: a creation or deletion in progress, or one a stopped daemon
        // finishes at its next start. Those galaxies are invisible to the game.
        report.lines.push(format!(
            "galaxy_jobs: {unfinished} galaxies being created or deleted (finished by the daemon)"
        ));
    }

    for (rule, sql) in RULES {
        let (count, example): (i64, Option<i64>) =
            conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if count > 0 {
            report.problems.push(format!(
                "{count} {rule} (for example id {})",
                example.unwrap_or_default()
            ));
        }
    }

    let mut stmt = conn.prepare("SELECT name, config_file FROM galaxies ORDER BY name")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let config: String = row.get(1)?;
        if let Err(error) = GalaxyConfig::from_toml(&config) {
            report.problems.push(format!(
                "galaxy '{name}' has a config that does not validate: {error}"
            ));
        }
    }
    drop(rows);
    drop(stmt);
    check_archives(&conn, &mut report)?;
    Ok(report)
}

/// A galaxy both live and archived: an archive replaces its galaxy's live rows in one
/// transaction, and a restore's last chunk deletes the archive in one (a galaxy being
/// archived or restored has a mark in `galaxy_jobs`).
const LIVE_AND_ARCHIVED: &str = "SELECT a.name FROM galaxy_archives a
     JOIN galaxies g ON g.name = a.name
     WHERE NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = a.name)
     ORDER BY a.name";

/// Every archive in the SQLite database decodes, and no galaxy is both live and archived;
/// then what the database holds, live and archived. A damaged archive is reported,
/// never deleted: its bytes are all there is of that galaxy.
fn check_archives(conn: &Connection, report: &mut CheckReport) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare("SELECT name, systems, body FROM galaxy_archives ORDER BY name")?;
    let mut rows = stmt.query([])?;
    // One body at a time: the rows are stepped through, never collected.
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let systems: i64 = row.get(1)?;
        let problem = match row.get_ref(2)? {
            ValueRef::Blob(body) => archive_problem(&name, systems, body),
            _ => Some(format!("archived galaxy '{name}': its body is not a blob")),
        };
        report.problems.extend(problem);
    }
    let mut stmt = conn.prepare(LIVE_AND_ARCHIVED)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        report.problems.push(both_problem(&name));
    }
    drop(rows);
    drop(stmt);
    let mut stmt = conn.prepare(HISTORY_SEGMENTS)?;
    let mut rows = stmt.query([])?;
    let mut damage = HistoryDamage::default();
    // One body at a time, as the archives'.
    while let Some(row) = rows.next()? {
        let info = SegmentInfo {
            id: row.get(1)?,
            first_tick: row.get(2)?,
            last_tick: row.get(3)?,
            entries: row.get(4)?,
        };
        let body = row.get_ref(5)?.as_blob().unwrap_or_default();
        damage.check(row.get_ref(0)?.as_str().unwrap_or_default(), &info, body);
    }
    damage.report(report);
    let galaxies: i64 = conn.query_row("SELECT count(*) FROM galaxies", [], |r| r.get(0))?;
    let storage = crate::store::sqlite::measure(conn)?;
    report
        .lines
        .extend(storage_lines(galaxies, &storage, " (approximate)"));
    Ok(())
}

/// What is wrong with the archive of galaxy `name` (its row says `systems` systems), if
/// anything: a body that does not decode, or one that holds another galaxy.
fn archive_problem(name: &str, systems: i64, body: &[u8]) -> Option<String> {
    match crate::archive::decode(body) {
        Err(error) => Some(format!("archived galaxy '{name}': {error}")),
        Ok(galaxy) if galaxy.name() != name => Some(format!(
            "archived galaxy '{name}': its archive holds galaxy '{}'",
            galaxy.name()
        )),
        Ok(galaxy) if i64::try_from(galaxy.systems().len()).ok() != Some(systems) => Some(format!(
            "archived galaxy '{name}': its archive holds {} systems, its row says {systems}",
            galaxy.systems().len()
        )),
        Ok(_) => None,
    }
}

fn both_problem(name: &str) -> String {
    format!("galaxy '{name}' is both live and archived (neither being archived nor restored)")
}

/// Every history segment, a galaxy's together.
const HISTORY_SEGMENTS: &str = "SELECT galaxy_name, id, first_tick, last_tick, entries, body
     FROM galaxy_history ORDER BY galaxy_name, id";

/// Damaged history segments, counted by galaxy as the check reads them (a galaxy's
/// segments one after the other).
#[derive(Default)]
struct HistoryDamage {
    /// The galaxy being read, its damaged segments, and the first one's error.
    current: Option<(String, u64, String)>,
    problems: Vec<String>,
}

impl HistoryDamage {
    fn check(&mut self, galaxy: &str, info: &SegmentInfo, body: &[u8]) {
        if self
            .current
            .as_ref()
            .is_some_and(|(name, ..)| name != galaxy)
        {
            self.close();
        }
        if let Err(error) = decode_segment(galaxy, info, body) {
            match &mut self.current {
                Some((_, count, _)) => *count += 1,
                None => self.current = Some((galaxy.to_owned(), 1, error.to_string())),
            }
        }
    }

    fn close(&mut self) {
        if let Some((galaxy, count, example)) = self.current.take() {
            self.problems.push(format!(
                "history of galaxy '{galaxy}': {count} damaged segments (the first: {example})"
            ));
        }
    }

    fn report(mut self, report: &mut CheckReport) {
        self.close();
        report.problems.append(&mut self.problems);
    }
}

/// The report's lines for what the database holds: `galaxies` rows, and `storage`;
/// `approximate` follows the live bytes.
fn storage_lines(galaxies: i64, storage: &Storage, approximate: &str) -> [String; 3] {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    [
        format!(
            "live: {galaxies} galaxies, {} systems, {:.1} MB{approximate}",
            storage.live_systems,
            mb(storage.live_bytes)
        ),
        format!(
            "archived: {} galaxies, {} systems, {:.1} MB",
            storage.archived_galaxies,
            storage.archived_systems,
            mb(storage.archived_bytes)
        ),
        format!(
            "history: {} segments, {:.1} MB",
            storage.history_segments,
            mb(storage.history_bytes)
        ),
    ]
}

/// The same rules on PostgreSQL, whose columns are typed (no `typeof` needed) and whose
/// foreign keys the server enforces (the orphan rules are kept all the same: they cost
/// little and say so if a constraint was ever dropped).
const POSTGRES_RULES: &[(&str, &str)] = &[
    (
        "systems of no galaxy",
        "SELECT count(*), min(id) FROM systems s WHERE NOT EXISTS
         (SELECT 1 FROM galaxies g WHERE g.name = s.galaxy_name)",
    ),
    (
        "structures of no system",
        "SELECT count(*), min(id) FROM structures st WHERE NOT EXISTS
         (SELECT 1 FROM systems s WHERE s.id = st.system_id)",
    ),
    (
        "events of no system",
        "SELECT count(*), min(id) FROM events e WHERE NOT EXISTS
         (SELECT 1 FROM systems s WHERE s.id = e.system_id)",
    ),
    (
        "systems with negative resources or tick, or coordinates out of range",
        "SELECT count(*), min(id) FROM systems WHERE metal < 0 OR crew < 0 OR water < 0
         OR current_tick < 0 OR x < 0 OR x >= 4294967295 OR y < 0 OR y >= 4294967295",
    ),
    (
        "structures with an unknown type or a level out of range",
        "SELECT count(*), min(id) FROM structures WHERE structure_type NOT IN
         ('colony', 'asteroidmine', 'waterharvester', 'hatchery', 'storagedepot')
         OR level < 0 OR level > 4294967295",
    ),
    (
        "events that are not builds of a known structure",
        "SELECT count(*), min(id) FROM events WHERE action_type != 'build'
         OR structure_type IS NULL OR structure_type NOT IN
         ('colony', 'asteroidmine', 'waterharvester', 'hatchery', 'storagedepot')
         OR completion_tick < 0",
    ),
    (
        "systems with more than one build in flight",
        "SELECT count(*), min(system_id) FROM (SELECT system_id FROM events
         GROUP BY system_id HAVING count(*) > 1) AS t",
    ),
    (
        "galaxies with a negative tick",
        "SELECT count(*), NULL::bigint FROM galaxies WHERE tick < 0",
    ),
    HISTORY_OF_NOTHING,
];

/// Checks the PostgreSQL database at `url` without changing it: through a read-only
/// session, in one read-only snapshot. The server has no file check like SQLite's
/// `integrity_check`; its own checksums and crash recovery stand for it, and the report
/// says so.
pub fn check_postgres(url: &str) -> Result<CheckReport, StoreError> {
    use crate::store::postgres::{self, SCHEMA_VERSION as PG_SCHEMA_VERSION};
    let context = |context| move |source| StoreError::Postgres { context, source };
    let mut report = CheckReport::default();
    let mut client = postgres::connect_read_only(url)?;
    let mut tx = client
        .build_transaction()
        .isolation_level(::postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(context("starting the check"))?;
    report
        .lines
        .push("integrity: kept by the server (no file to check)".into());
    let version = postgres::stored_schema_version(&mut tx)?;
    let version_line =
        format!("schema version: {version} (this binary writes {PG_SCHEMA_VERSION})");
    if version == PG_SCHEMA_VERSION {
        report.lines.push(version_line);
    } else {
        report.problems.push(version_line);
        return Ok(report);
    }
    for table in ["galaxies", "systems", "structures", "events"] {
        let count: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .and_then(|row| row.try_get(0))
            .map_err(context("counting rows"))?;
        report.lines.push(format!("{table}: {count} rows"));
    }
    let unfinished: i64 = tx
        .query_one("SELECT count(*) FROM galaxy_jobs", &[])
        .and_then(|row| row.try_get(0))
        .map_err(context("counting unfinished jobs"))?;
    if unfinished > 0 {
        report.lines.push(format!(
            "galaxy_jobs: {unfinished} galaxies being created or deleted (finished by the daemon)"
        ));
    }
    for (rule, sql) in POSTGRES_RULES {
        let row = tx
            .query_one(*sql, &[])
            .map_err(context("checking a rule"))?;
        let count: i64 = row.try_get(0).map_err(context("checking a rule"))?;
        let example: Option<i64> = row.try_get(1).map_err(context("checking a rule"))?;
        if count > 0 {
            report.problems.push(match example {
                Some(id) => format!("{count} {rule} (for example id {id})"),
                None => format!("{count} {rule}"),
            });
        }
    }
    let rows = tx
        .query(
            "SELECT name, config_file FROM galaxies ORDER BY name COLLATE \"C\"",
            &[],
        )
        .map_err(context("reading configs"))?;
    for row in rows {
        let name: &str = row.try_get(0).map_err(context("reading configs"))?;
        let config: &str = row.try_get(1).map_err(context("reading configs"))?;
        if let Err(error) = GalaxyConfig::from_toml(config) {
            report.problems.push(format!(
                "galaxy '{name}' has a config that does not validate: {error}"
            ));
        }
    }
    check_postgres_archives(&mut tx, &mut report)?;
    Ok(report)
}

/// [`check_archives`] on PostgreSQL, in the check's snapshot: the names first, then each
/// body on its own, so one body at a time is in memory.
fn check_postgres_archives(
    tx: &mut ::postgres::Transaction<'_>,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let context = |context| move |source| StoreError::Postgres { context, source };
    let archives = tx
        .query(
            "SELECT name, systems FROM galaxy_archives ORDER BY name COLLATE \"C\"",
            &[],
        )
        .map_err(context("listing archives"))?;
    for row in archives {
        let name: &str = row.try_get(0).map_err(context("listing archives"))?;
        let systems: i64 = row.try_get(1).map_err(context("listing archives"))?;
        let body: Option<Vec<u8>> = tx
            .query_opt("SELECT body FROM galaxy_archives WHERE name = $1", &[&name])
            .and_then(|row| row.map(|row| row.try_get(0)).transpose())
            .map_err(context("reading an archive"))?;
        // Listed in this snapshot, so there.
        let body = body.unwrap_or_default();
        report
            .problems
            .extend(archive_problem(name, systems, &body));
    }
    let both = tx
        .query(
            "SELECT a.name FROM galaxy_archives a JOIN galaxies g ON g.name = a.name
             WHERE NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = a.name)
             ORDER BY a.name COLLATE \"C\"",
            &[],
        )
        .map_err(context("checking archives"))?;
    for row in both {
        let name: &str = row.try_get(0).map_err(context("checking archives"))?;
        report.problems.push(both_problem(name));
    }
    check_postgres_history(tx, report)?;
    let galaxies: i64 = tx
        .query_one("SELECT count(*) FROM galaxies", &[])
        .and_then(|row| row.try_get(0))
        .map_err(context("counting galaxies"))?;
    let storage = crate::store::postgres::measure(tx)?;
    report.lines.extend(storage_lines(galaxies, &storage, ""));
    Ok(())
}

/// Every history segment decodes, on PostgreSQL: read through a portal, a few rows at a
/// time, so a few bodies at a time are in memory.
fn check_postgres_history(
    tx: &mut ::postgres::Transaction<'_>,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let context = |context| move |source| StoreError::Postgres { context, source };
    let portal = tx
        .bind(HISTORY_SEGMENTS_POSTGRES, &[])
        .map_err(context("reading history"))?;
    let mut damage = HistoryDamage::default();
    loop {
        let rows = tx
            .query_portal(&portal, 64)
            .map_err(context("reading history"))?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let (galaxy, info, body) = segment_row(&row).map_err(context("reading history"))?;
            damage.check(galaxy, &info, body);
        }
    }
    damage.report(report);
    Ok(())
}

/// A row of [`HISTORY_SEGMENTS_POSTGRES`]: the galaxy, the segment, its body.
fn segment_row(row: &::postgres::Row) -> Result<(&str, SegmentInfo, &[u8]), ::postgres::Error> {
    let info = SegmentInfo {
        id: row.try_get(1)?,
        first_tick: row.try_get(2)?,
        last_tick: row.try_get(3)?,
        entries: row.try_get(4)?,
    };
    Ok((row.try_get(0)?, info, row.try_get(5)?))
}

/// [`HISTORY_SEGMENTS`] in PostgreSQL's types and byte order of names.
const HISTORY_SEGMENTS_POSTGRES: &str = "SELECT galaxy_name, id, first_tick, last_tick,
     entries::bigint, body FROM galaxy_history ORDER BY galaxy_name COLLATE \"C\", id";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Galaxy, RowMask};
    use crate::settings::{DatabaseUrl, Synchronous};
    use crate::store::history::samples::first_history;
    use crate::store::sqlite::SqliteWriter;
    use crate::store::{ArchiveRow, CreationProgress, NewGalaxy, WriteStore};
    // A galaxy stored on the PostgreSQL store's throwaway cluster, as its own tests do.
    use crate::store::postgres::tests::stored_galaxy;

    /// Archives `galaxy` (stored, live) through `store`, as the writer does.
    fn archive(store: &mut dyn WriteStore, galaxy: &Galaxy) {
        let body = crate::archive::encode(galaxy);
        store
            .write_archive(&ArchiveRow {
                name: galaxy.name(),
                format: crate::archive::FORMAT_VERSION,
                systems: galaxy.systems().len() as u64,
                body: &body,
            })
            .unwrap();
    }

    /// `body` with one byte in its middle changed, as a bit flipped on disk leaves it.
    fn damaged(mut body: Vec<u8>) -> Vec<u8> {
        let middle = body.len() / 2;
        body[middle] ^= 0x55;
        body
    }

    fn assert_line(report: &CheckReport, start: &str) {
        assert!(has_line(report, start), "{:?}", report.lines);
    }

    fn has_line(report: &CheckReport, line: &str) -> bool {
        report.lines.iter().any(|l| l.starts_with(line))
    }

    #[test]
    fn a_damaged_archive_is_reported_by_name_and_kept_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let url = DatabaseUrl::File(path.clone());
        let mut store = SqliteWriter::open(&url, Synchronous::Normal).unwrap();
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        for name in ["g", "h"] {
            let galaxy = Galaxy::create(name, config.clone(), 9, 100).unwrap();
            let config_toml = galaxy.config().to_toml();
            let new = NewGalaxy {
                name,
                config_toml: &config_toml,
                tick: galaxy.tick(),
                systems: galaxy.systems(),
                rows: RowMask::new_system(galaxy.rules()),
                restoring: false,
            };
            store
                .create_chunk(&new, &mut CreationProgress::default(), 1000)
                .unwrap();
            if name == "g" {
                archive(&mut store, &galaxy);
            }
        }
        let report = check_database(&path).unwrap();
        assert!(report.passed(), "{:?}", report.problems);
        assert_line(&report, "live: 2 galaxies, 400 systems, ");
        assert_line(&report, "archived: 1 galaxies, 200 systems, ");

        let conn = store.connection();
        let body: Vec<u8> = conn
            .query_row(
                "SELECT body FROM galaxy_archives WHERE name = 'g'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        conn.execute(
            "UPDATE galaxy_archives SET body = ?1 WHERE name = 'g'",
            [damaged(body)],
        )
        .unwrap();
        // And an archive beside a live galaxy, which no archive or restore leaves.
        conn.execute(
            "INSERT INTO galaxy_archives (name, format, systems, body)
             SELECT 'h', format, systems, body FROM galaxy_archives WHERE name = 'g'",
            [],
        )
        .unwrap();
        drop(store);
        let report = check_database(&path).unwrap();
        assert!(!report.passed());
        assert!(
            report.problems[0].starts_with("archived galaxy 'g': the archive is corrupt"),
            "{:?}",
            report.problems
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with("galaxy 'h' is both live and archived")),
            "{:?}",
            report.problems
        );
        let conn = Connection::open(&path).unwrap();
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM galaxy_archives", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2, "reported, never deleted");
    }

    #[test]
    fn a_damaged_archive_is_reported_by_name_on_postgres() {
        let Some((db, mut store, _reader, galaxy)) = stored_galaxy("check_archive") else {
            return;
        };
        archive(&mut store, &galaxy);
        let report = check_postgres(&db.url).unwrap();
        assert!(report.passed(), "{:?}", report.problems);
        assert_line(&report, "live: 1 galaxies, 200 systems, ");
        assert_line(&report, "archived: 1 galaxies, 200 systems, ");
        let mut client = db.client();
        let body: Vec<u8> = client
            .query_one("SELECT body FROM galaxy_archives WHERE name = 'g'", &[])
            .unwrap()
            .get(0);
        client
            .execute(
                "UPDATE galaxy_archives SET body = $1 WHERE name = 'g'",
                &[&damaged(body)],
            )
            .unwrap();
        let report = check_postgres(&db.url).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].starts_with("archived galaxy 'g': the archive is corrupt"),
            "{:?}",
            report.problems
        );
    }

    /// A batch saving `first_history` for galaxy "g" (stored, live).
    fn save_history(store: &mut dyn WriteStore) {
        let batch = crate::store::GalaxyRows {
            name: "g".into(),
            tick: Some(30),
            systems: Vec::new(),
            history: first_history(),
        };
        store.write_batch(&[], &[batch]).unwrap();
    }

    #[test]
    fn damaged_history_is_reported_by_galaxy_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let url = DatabaseUrl::File(path.clone());
        let mut store = SqliteWriter::open(&url, Synchronous::Normal).unwrap();
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        let galaxy = Galaxy::create("g", config, 9, 100).unwrap();
        let config_toml = galaxy.config().to_toml();
        let new = NewGalaxy {
            name: "g",
            config_toml: &config_toml,
            tick: galaxy.tick(),
            systems: galaxy.systems(),
            rows: RowMask::new_system(galaxy.rules()),
            restoring: false,
        };
        store
            .create_chunk(&new, &mut CreationProgress::default(), 1000)
            .unwrap();
        save_history(&mut store);
        let report = check_database(&path).unwrap();
        assert!(report.passed(), "{:?}", report.problems);
        assert_line(&report, "history: 3 segments, ");
        let conn = store.connection();
        conn.execute_batch("UPDATE galaxy_history SET body = x'00ff' WHERE id > 1")
            .unwrap();
        conn.execute_batch(
            "INSERT INTO galaxy_history (galaxy_name, first_tick, last_tick, entries, body)
             SELECT 'gone', first_tick, last_tick, entries, body FROM galaxy_history
             WHERE id = 1",
        )
        .unwrap();
        let report = check_database(&path).unwrap();
        let problems = report.problems.join("\n");
        assert!(
            problems.contains("history of galaxy 'g': 2 damaged segments"),
            "{problems}"
        );
        assert!(
            problems.contains("1 history segments of no galaxy or archive"),
            "{problems}"
        );
    }

    #[test]
    fn damaged_history_is_reported_by_galaxy_on_postgres() {
        let Some((db, mut store, _reader, _galaxy)) = stored_galaxy("check_history") else {
            return;
        };
        save_history(&mut store);
        let report = check_postgres(&db.url).unwrap();
        assert!(report.passed(), "{:?}", report.problems);
        assert_line(&report, "history: 3 segments, ");
        db.client()
            .execute(
                "UPDATE galaxy_history SET body = '\\x00ff'::bytea WHERE id = 2",
                &[],
            )
            .unwrap();
        let report = check_postgres(&db.url).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].starts_with("history of galaxy 'g': 1 damaged segments"),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn check_passes_on_a_sound_database_and_names_a_broken_rule() {
        let Some((db, _store, _reader, _galaxy)) = stored_galaxy("check") else {
            return;
        };
        let report = check_postgres(&db.url).unwrap();
        assert!(report.passed(), "{:?}", report.problems);
        assert!(
            report.lines.iter().any(|l| l == "systems: 200 rows"),
            "{:?}",
            report.lines
        );
        db.client()
            .execute(
                "UPDATE systems SET metal = -5 WHERE id = (SELECT min(id) FROM systems)",
                &[],
            )
            .unwrap();
        let report = check_postgres(&db.url).unwrap();
        assert!(!report.passed());
        assert!(
            report.problems[0].contains("negative resources"),
            "{:?}",
            report.problems
        );
    }
}
