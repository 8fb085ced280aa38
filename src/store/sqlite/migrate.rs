//! Opening the database at start-up: the writer's connection (created if needed, checked
//! as much as the clean-shutdown marker says, configured, migrated) and the readers'
//! (refusing a newer schema), and the list of migrations.
//!
//! A database written by a newer binary, or found damaged, is refused before anything is
//! written to it: the checks and the schema version are read before the first pragma
//! that writes. Migrations run in order, each in its own transaction with the
//! `PRAGMA user_version` that counts it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::super::{create_parent_dir, StoreError};
use super::db::{note_wal_pages, Context, Db, FileIdentity, BUSY_TIMEOUT};
use crate::settings::{DatabaseUrl, Synchronous};
use crate::systemd::Notifier;

/// The migrations, in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial",
        include_str!("../../../sql/sqlite/0001_initial.sql"),
    ),
    (
        "0002_galaxy_jobs",
        include_str!("../../../sql/sqlite/0002_galaxy_jobs.sql"),
    ),
    (
        "0003_galaxy_sizes",
        include_str!("../../../sql/sqlite/0003_galaxy_sizes.sql"),
    ),
    (
        "0004_galaxy_archives",
        include_str!("../../../sql/sqlite/0004_galaxy_archives.sql"),
    ),
    (
        "0005_galaxy_history",
        include_str!("../../../sql/sqlite/0005_galaxy_history.sql"),
    ),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The writer's tuning, chosen with `cargo bench` (the floors use the same; the figures are
/// in the README, *Benchmarks*):
/// - a 16 MiB page cache (SQLite's default is 2 MiB): a save touches pages all over the
///   tables, and with the small default they were evicted and read back on every batch.
///   A larger cache saved a whole large galaxy only slightly faster, orders not at all,
///   and cost a large share of the memory budget per system;
/// - the WAL file truncated back to 64 MiB after a checkpoint, so it cannot stay large.
///
/// Checkpoints do not run in the writer's commits at all: see `checkpoint.rs`.
pub const WRITER_PRAGMAS: &str =
    "PRAGMA cache_size = -16384; PRAGMA journal_size_limit = 67108864;";

/// How much of the database file start-up checks before anything writes (chosen by
/// [`crate::persistence::clean::take`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupCheck {
    /// `PRAGMA quick_check` over the whole file; `why` says in the log why it is needed.
    Whole { why: String },
    /// The file is exactly as a clean shutdown left it, with this schema version: the
    /// header and the schema only. If they do not hold, the whole file is checked.
    HeaderAndSchema { schema_version: i64 },
}

/// The tables every migrated database has.
const TABLES: [&str; 4] = ["galaxies", "systems", "structures", "events"];

/// While a whole-file check runs: how often it logs its progress and asks systemd for
/// more start-up time, and how much more (longer than the period, so one late tick does
/// not get the daemon killed).
const CHECK_PROGRESS_EVERY: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT_EXTENSION: Duration = Duration::from_secs(30);

/// Runs `check` while a thread logs its progress every [`CHECK_PROGRESS_EVERY`] and asks
/// systemd for more start-up time, so a long check is neither silent nor killed.
fn with_progress<T>(label: &str, size: u64, notifier: &Notifier, check: impl FnOnce() -> T) -> T {
    notifier.extend_timeout(CHECK_TIMEOUT_EXTENSION, "checking the database");
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|scope| {
        let reporter = std::thread::Builder::new()
            .name("gwar-check-progress".into())
            .spawn_scoped(scope, move || {
                let started = std::time::Instant::now();
                let read_before = bytes_read();
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECK_PROGRESS_EVERY)
                {
                    // Nothing else reads files during start-up, so the process's reads are
                    // the check's. Only a hint of progress: the WAL is read too, and the
                    // check's last stretch is work on pages already read.
                    let progress = match (read_before, bytes_read()) {
                        (Some(before), Some(now)) => format!(
                            ", {:.0} MB read of {:.0} MB (file and WAL)",
                            now.saturating_sub(before) as f64 / 1e6,
                            size as f64 / 1e6
                        ),
                        _ => String::new(),
                    };
                    let status = format!(
                        "checking the database: {:.0?} so far{progress}",
                        started.elapsed()
                    );
                    log::info!(target: crate::logging::PERSISTENCE, "{label}: {status}");
                    notifier.extend_timeout(CHECK_TIMEOUT_EXTENSION, &status);
                }
            });
        if let Err(error) = &reporter {
            log::warn!(target: crate::logging::PERSISTENCE, "no progress reports for the check: {error}");
        }
        let result = check();
        drop(stop);
        result
    })
}

/// What a whole-database check reads: the file and its WAL, whose committed pages the
/// check sees as part of the database (after a crash the WAL may hold most of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sizes {
    file: u64,
    wal: u64,
}

impl Sizes {
    fn total(self) -> u64 {
        self.file.saturating_add(self.wal)
    }
}

impl std::fmt::Display for Sizes {
    /// `30.1 MB`, and what of it is in the WAL when there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} MB", self.total() as f64 / 1e6)?;
        if self.wal > 0 {
            write!(f, ", {:.1} MB of it in the WAL", self.wal as f64 / 1e6)?;
        }
        Ok(())
    }
}

/// The size of `path`'s write-ahead log (`PATH-wal`), 0 when there is none.
fn wal_size(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// Bytes this process has read (`rchar` of `/proc/self/io`), where the kernel says.
fn bytes_read() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("rchar:"))
        .and_then(|value| value.trim().parse().ok())
}

impl Db {
    /// Opens (creating if needed) the read-write database: parent directories, WAL mode,
    /// foreign keys, `synchronous`, the busy timeout, and migrations, checking as much of
    /// the file as `check` says first. A database written by a newer binary is refused
    /// before anything is written to it.
    pub(super) fn open_writer(
        url: &DatabaseUrl,
        synchronous: Synchronous,
        check: StartupCheck,
        notifier: &Notifier,
    ) -> Result<Db, StoreError> {
        let (size, wal) = match url {
            DatabaseUrl::File(path) => (
                std::fs::metadata(path).map_or(0, |m| m.len()),
                wal_size(path),
            ),
            DatabaseUrl::Memory => (0, 0),
            // `store::open` sends these to the PostgreSQL store; a tool that hands one
            // to SQLite's gets an error, not a file named after the URL.
            DatabaseUrl::Postgres(_) => {
                return Err(StoreError::Open {
                    path: url.label(),
                    source: rusqlite::Error::InvalidPath(PathBuf::from(url.label())),
                })
            }
        };
        let (conn, label) = match url {
            DatabaseUrl::Memory | DatabaseUrl::Postgres(_) => (
                Connection::open_in_memory().map_err(|source| StoreError::Open {
                    path: ":memory:".into(),
                    source,
                })?,
                ":memory:".to_owned(),
            ),
            DatabaseUrl::File(path) => {
                create_parent_dir(path)?;
                let label = path.display().to_string();
                let conn = Connection::open(path).map_err(|source| StoreError::Open {
                    path: label.clone(),
                    source,
                })?;
                (conn, label)
            }
        };
        let mut db = Db {
            conn,
            label,
            file: None,
        };
        // Read the version before any pragma that writes (journal_mode writes the header).
        let version = db.schema_version()?;
        db.refuse_newer(version)?;
        db.check_at_start_up(check, version, Sizes { file: size, wal }, notifier)?;
        db.configure(synchronous)?;
        db.conn.wal_hook(Some(note_wal_pages));
        db.migrate(version)?;
        if let DatabaseUrl::File(path) = url {
            db.file = Some(FileIdentity::of(path).map_err(|source| StoreError::Lock {
                path: path.clone(),
                source,
            })?);
        }
        Ok(db)
    }

    /// Opens a read-only connection for loads on a cache miss.
    pub(super) fn open_reader(path: &Path) -> Result<Db, StoreError> {
        let db = Db::open_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let version = db.schema_version()?;
        db.refuse_newer(version)?;
        Ok(db)
    }

    /// `PRAGMA user_version`: the number of migrations applied. Fails on a file that is
    /// not an SQLite database.
    pub(super) fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|source| self.open_error(source))
    }

    /// An error met while opening: `Corrupt` when SQLite found damage, else `Open`.
    fn open_error(&self, source: rusqlite::Error) -> StoreError {
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path: self.label.clone(),
                details: source.to_string(),
            },
            _ => StoreError::Open {
                path: self.label.clone(),
                source,
            },
        }
    }

    fn refuse_newer(&self, version: i64) -> Result<(), StoreError> {
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.label.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// The start-up check, before anything writes: the header and schema after a clean
    /// shutdown, the whole file otherwise (see [`crate::persistence::clean`]). `sizes`: the
    /// file's and its WAL's sizes in bytes (0 when new or in memory).
    fn check_at_start_up(
        &self,
        check: StartupCheck,
        version: i64,
        sizes: Sizes,
        notifier: &Notifier,
    ) -> Result<(), StoreError> {
        let size = sizes.file;
        let why = match check {
            _ if size == 0 => return self.refuse_corrupt(),
            StartupCheck::HeaderAndSchema { schema_version } => {
                match self.header_and_schema(schema_version, version, size) {
                    Ok(()) => {
                        log::info!(target: crate::logging::PERSISTENCE,
                            "{}: clean-shutdown marker matches: header and schema checked, full check skipped",
                            self.label);
                        return Ok(());
                    }
                    Err(problem) => format!("the clean-shutdown marker matches but {problem}"),
                }
            }
            StartupCheck::Whole { why } => why,
        };
        log::info!(target: crate::logging::PERSISTENCE,
            "{}: {why}: checking the whole database ({})...", self.label, sizes);
        let started = std::time::Instant::now();
        let result = with_progress(&self.label, sizes.total(), notifier, || {
            self.refuse_corrupt()
        });
        if result.is_ok() {
            log::info!(target: crate::logging::PERSISTENCE,
                "{}: whole-database check passed in {:.1?}", self.label, started.elapsed());
        }
        result
    }

    /// The cheap checks: the schema version the marker recorded, the tables, a readable
    /// schema cookie, and a page count that fills the file (the header's own size field
    /// is trusted only when it does). Reads page 1 and the schema, nothing else.
    fn header_and_schema(&self, expected: i64, version: i64, size: u64) -> Result<(), String> {
        if version != expected {
            return Err(format!(
                "the schema version is {version}, not the marker's {expected}"
            ));
        }
        let read = |sql: &str| -> Result<i64, String> {
            self.conn
                .query_row(sql, [], |row| row.get(0))
                .map_err(|e| format!("{sql} failed: {e}"))
        };
        read("PRAGMA schema_version")?;
        let (pages, page_size) = (read("PRAGMA page_count")?, read("PRAGMA page_size")?);
        if u64::try_from(pages.saturating_mul(page_size)).ok() != Some(size) {
            return Err(format!(
                "the header says {pages} pages of {page_size} bytes, the file has {size} bytes"
            ));
        }
        for table in TABLES {
            let found = self
                .conn
                .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
                .and_then(|mut stmt| stmt.exists([table]))
                .map_err(|e| format!("the schema cannot be read: {e}"))?;
            if !found {
                return Err(format!("the table {table} is missing"));
            }
        }
        Ok(())
    }

    /// `PRAGMA quick_check` before anything writes: a database with a damaged page is
    /// refused untouched rather than served until a load or save trips over the damage.
    /// It reads the whole file once (its time: README, *Benchmarks*, section 7).
    fn refuse_corrupt(&self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA quick_check(20)")
            .map_err(|source| self.open_error(source))?;
        let problems: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|source| self.open_error(source))?;
        if problems == ["ok"] {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            path: self.label.clone(),
            details: problems.join("; "),
        })
    }

    fn configure(&self, synchronous: Synchronous) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .context("setting the busy timeout")?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .context("switching to WAL mode")?;
        if mode != "wal" && mode != "memory" {
            log::warn!(target: crate::logging::PERSISTENCE, "{}: journal mode is {mode}, not wal", self.label);
        }
        self.conn
            .execute_batch(&format!(
                "PRAGMA foreign_keys = ON; PRAGMA synchronous = {}; {WRITER_PRAGMAS}",
                synchronous.pragma_value()
            ))
            .context("setting pragmas")
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        for (number, (name, sql)) in MIGRATIONS.iter().enumerate() {
            let version = number as i64 + 1;
            if version <= from {
                continue;
            }
            let tx = self.conn.transaction().context("starting a migration")?;
            tx.execute_batch(sql)
                .and_then(|()| tx.pragma_update(None, "user_version", version))
                .and_then(|()| tx.commit())
                .map_err(|source| StoreError::Migration { name, source })?;
            log::info!(target: crate::logging::PERSISTENCE, "{}: applied migration {name}", self.label);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_size_counts_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        assert_eq!(wal_size(&path), 0, "no WAL");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        std::fs::write(dir.path().join("g.db-wal"), vec![0u8; 28_000_000]).unwrap();
        assert_eq!(wal_size(&path), 28_000_000);
        let sizes = Sizes {
            file: 4096,
            wal: 28_000_000,
        };
        assert_eq!(sizes.total(), 28_004_096);
        assert_eq!(sizes.to_string(), "28.0 MB, 28.0 MB of it in the WAL");
        let no_wal = Sizes {
            file: 1_500_000,
            wal: 0,
        };
        assert_eq!(no_wal.to_string(), "1.5 MB");
    }
}
