//! The SQLite store: the schema, its migrations, and every SQL statement the engine runs
//! on SQLite.
//!
//! The writer thread owns the only connection that writes rows, a [`SqliteWriter`], and
//! with it the cache of system row ids, so a hot save updates rows by primary key without a
//! look-up. The checkpoint thread (`checkpoint.rs`) has a second read-write connection that
//! only checkpoints; the writer's store owns that thread and asks it for checkpoints after
//! its commits. Loads on a cache miss use read-only connections, each a [`SqliteReader`],
//! which has no write method. Nothing here locks a galaxy: callers hand in plain copies
//! of rows.
//!
//! This file opens, configures and migrates; `load.rs` reads a galaxy back; `write.rs`
//! holds the writer's statements and its cache of row ids; `jobs.rs` creates and deletes
//! whole galaxies in bounded chunks; `busy.rs` ends lock waits at the shutdown deadline.
//! A galaxy with an unfinished job (table `galaxy_jobs`) is invisible to every read here.

mod busy;
mod checkpoint;
mod jobs;
mod load;
mod write;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::hooks::Wal;
use rusqlite::{Connection, OpenFlags};

use super::{
    create_parent_dir, BusyDeadline, DriverError, FailureKind, GalaxyJob, Opened, ReadStore,
    RowIds, StoreError, SystemIds, WriteStore,
};
use crate::model::Galaxy;
use crate::settings::{DatabaseUrl, PersistenceSettings, Synchronous};
use crate::systemd::Notifier;
use checkpoint::{CheckpointMode, Checkpointer};

const LOG: &str = "galactic_war::persistence";

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

thread_local! {
    /// Pages in the WAL after the last commit made on this thread. Set by
    /// [`note_wal_pages`], SQLite's WAL hook, which cannot carry per-connection data
    /// through rusqlite; a thread-local is exact because only the writer thread commits
    /// on the writer's connection, and it reads this right after its own commit.
    static WAL_PAGES: Cell<u32> = const { Cell::new(0) };
}

/// SQLite calls this after every commit on the writer's connection. Registering it also
/// turns off SQLite's automatic checkpoint on that connection, which is the same hook.
fn note_wal_pages(_: &Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(u32::try_from(pages).unwrap_or(0));
    Ok(())
}

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

/// SQLite waits this long for a lock held by another connection before failing with
/// SQLITE_BUSY (CONTRACT §3: at most 5 s, so a locked database shows within seconds).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { context, source })
    }
}

/// One SQLite connection: the writer's, a reader's or the checkpointer's.
struct Db {
    conn: Connection,
    label: String,
    /// The database file as opened (writer only): a save first checks that the path
    /// still names it, so a removed or replaced file is reported instead of written to
    /// through a stale descriptor (or a fresh file silently taking its place).
    file: Option<FileIdentity>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FileIdentity {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(FileIdentity {
            path: path.to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }
}

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
                            ", {:.0} MB read of the file's {:.0} MB",
                            now.saturating_sub(before) as f64 / 1e6,
                            size as f64 / 1e6
                        ),
                        _ => String::new(),
                    };
                    let status = format!(
                        "checking the database: {:.0?} so far{progress}",
                        started.elapsed()
                    );
                    log::info!(target: "galactic_war::persistence", "{label}: {status}");
                    notifier.extend_timeout(CHECK_TIMEOUT_EXTENSION, &status);
                }
            });
        if let Err(error) = &reporter {
            log::warn!(target: "galactic_war::persistence", "no progress reports for the check: {error}");
        }
        let result = check();
        drop(stop);
        result
    })
}

/// Bytes this process has read (`rchar` of `/proc/self/io`), where the kernel says.
fn bytes_read() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("rchar:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Values the model keeps at most `i64::MAX`; saturate rather than wrap if that ever broke.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Db {
    /// Opens (creating if needed) the read-write database: parent directories, WAL mode,
    /// foreign keys, `synchronous`, the busy timeout, and migrations, checking as much of
    /// the file as `check` says first. A database written by a newer binary is refused
    /// before anything is written to it.
    fn open_writer(
        url: &DatabaseUrl,
        synchronous: Synchronous,
        check: StartupCheck,
        notifier: &Notifier,
    ) -> Result<Db, StoreError> {
        let size = match url {
            DatabaseUrl::File(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
            DatabaseUrl::Memory => 0,
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
        db.check_at_start_up(check, version, size, notifier)?;
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
    fn open_reader(path: &Path) -> Result<Db, StoreError> {
        let db = Db::open_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let version = db.schema_version()?;
        db.refuse_newer(version)?;
        Ok(db)
    }

    /// Opens the checkpoint thread's connection to a database the writer has opened. It
    /// only checkpoints, with the writer's `synchronous` (which decides the fsyncs a
    /// checkpoint makes).
    fn open_checkpointer(path: &Path, synchronous: Synchronous) -> Result<Db, StoreError> {
        let db = Db::open_existing(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        db.conn
            .execute_batch(&format!(
                "PRAGMA synchronous = {};",
                synchronous.pragma_value()
            ))
            .context("setting pragmas")?;
        Ok(db)
    }

    /// Opens a second connection to an existing database file (`access`: read-only or
    /// read-write; never created), with the busy timeout set.
    fn open_existing(path: &Path, access: OpenFlags) -> Result<Db, StoreError> {
        let label = path.display().to_string();
        let conn = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|source| StoreError::Open {
                path: label.clone(),
                source,
            })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .context("setting the busy timeout")?;
        Ok(Db {
            conn,
            label,
            file: None,
        })
    }

    /// Pages in the WAL after the writer's last commit (0 before any, or in memory).
    /// Meaningful only on the writer thread; see [`WAL_PAGES`].
    fn wal_pages(&self) -> u32 {
        WAL_PAGES.get()
    }

    /// `PRAGMA user_version`: the number of migrations applied. Fails on a file that is
    /// not an SQLite database.
    fn schema_version(&self) -> Result<i64, StoreError> {
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
    /// shutdown, the whole file otherwise (see [`crate::persistence::clean`]). `size`: the
    /// file's size in bytes (0 when new or in memory).
    fn check_at_start_up(
        &self,
        check: StartupCheck,
        version: i64,
        size: u64,
        notifier: &Notifier,
    ) -> Result<(), StoreError> {
        let why = match check {
            _ if size == 0 => return self.refuse_corrupt(),
            StartupCheck::HeaderAndSchema { schema_version } => {
                match self.header_and_schema(schema_version, version, size) {
                    Ok(()) => {
                        log::info!(target: "galactic_war::persistence",
                            "{}: clean-shutdown marker matches: header and schema checked, full check skipped",
                            self.label);
                        return Ok(());
                    }
                    Err(problem) => format!("the clean-shutdown marker matches but {problem}"),
                }
            }
            StartupCheck::Whole { why } => why,
        };
        log::info!(target: "galactic_war::persistence",
            "{}: {why}: checking the whole database ({:.1} MB)...", self.label, size as f64 / 1e6);
        let started = std::time::Instant::now();
        let result = with_progress(&self.label, size, notifier, || self.refuse_corrupt());
        if result.is_ok() {
            log::info!(target: "galactic_war::persistence",
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
            log::warn!(target: "galactic_war::persistence", "{}: journal mode is {mode}, not wal", self.label);
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
            log::info!(target: "galactic_war::persistence", "{}: applied migration {name}", self.label);
        }
        Ok(())
    }

    /// Names of every stored galaxy, sorted.
    fn galaxy_names(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name FROM galaxies WHERE name NOT IN (SELECT name FROM galaxy_jobs)
                 ORDER BY name",
            )
            .context("listing galaxies")?;
        let names = stmt
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .context("listing galaxies")?;
        Ok(names)
    }

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT 1 FROM galaxies WHERE name = ?1
                 AND name NOT IN (SELECT name FROM galaxy_jobs)",
            )
            .and_then(|mut stmt| stmt.exists([name]))
            .context("looking up a galaxy")
    }

    /// Fails when the database file was removed or replaced since it was opened.
    fn check_file(&self) -> Result<(), StoreError> {
        let Some(opened) = &self.file else {
            return Ok(());
        };
        let problem = match FileIdentity::of(&opened.path) {
            Ok(now) if now == *opened => return Ok(()),
            Ok(_) => "was replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was removed",
            Err(_) => "cannot be examined",
        };
        Err(StoreError::FileGone {
            path: opened.path.clone(),
            problem,
        })
    }

    /// A passive WAL checkpoint: copies what it can without waiting on readers.
    fn checkpoint(&self) -> Result<(), StoreError> {
        self.check_file()?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .context("checkpointing the WAL")
    }

    /// Copies the whole WAL into the database and truncates it (when idle, at shutdown).
    fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        self.check_file()?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .context("truncating the WAL")
    }
}

impl DriverError for rusqlite::Error {
    fn failure_kind(&self) -> FailureKind {
        failure_kind(self)
    }
    fn describe(&self) -> String {
        self.to_string()
    }
}

/// The kind of an SQLite error, as the engine acts on it.
fn failure_kind(error: &rusqlite::Error) -> FailureKind {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => FailureKind::Busy,
        Some(ErrorCode::DiskFull) => FailureKind::Full,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => FailureKind::Corrupt,
        _ => FailureKind::Other,
    }
}

/// Opens an SQLite database for the engine (see [`super::open`]): the writer's connection,
/// its checkpoint thread, and readers on demand (a file only: an in-memory database is
/// seen by the writer's connection alone, and has no WAL to checkpoint).
pub(super) fn open(
    url: &DatabaseUrl,
    settings: &PersistenceSettings,
    check: StartupCheck,
    deadline: Arc<BusyDeadline>,
    notifier: &Notifier,
) -> Result<Opened, StoreError> {
    let db = Db::open_writer(url, settings.synchronous, check, notifier)?;
    let (checkpointer, readers) = match url {
        DatabaseUrl::Memory | DatabaseUrl::Postgres(_) => (None, None),
        DatabaseUrl::File(path) => {
            // Its busy waits end at the deadline too: the writer's final steps wait for
            // the checkpoint in progress, and the shutdown's deadline holds for both.
            let checkpointer = Checkpointer::spawn(
                path,
                settings.synchronous,
                settings.checkpoint_pages,
                deadline.clone(),
            )?;
            let path = path.clone();
            let readers: super::OpenReader =
                Box::new(move || Ok(Box::new(SqliteReader::open(&path)?) as Box<dyn ReadStore>));
            (Some(checkpointer), Some(readers))
        }
    };
    let writer = SqliteWriter {
        db,
        ids: HashMap::new(),
        checkpointer,
        deadline,
    };
    Ok(Opened {
        writer: Box::new(writer),
        readers,
        claims: None,
    })
}

/// The writer thread's store: the read-write connection, the cache of system row ids, and
/// the checkpoint thread it asks for checkpoints (`None` in memory, which has no WAL).
pub struct SqliteWriter {
    db: Db,
    ids: HashMap<String, SystemIds>,
    checkpointer: Option<Checkpointer>,
    /// Set at shutdown: this connection's busy waits end there (see `busy.rs`).
    deadline: Arc<BusyDeadline>,
}

impl SqliteWriter {
    /// Opens (creating if needed) the read-write database on its own, without a checkpoint
    /// thread, after checking the whole file: for unit tests.
    #[cfg(test)]
    pub(crate) fn open(
        url: &DatabaseUrl,
        synchronous: Synchronous,
    ) -> Result<SqliteWriter, StoreError> {
        let why = "opening the database".to_owned();
        Ok(SqliteWriter {
            db: Db::open_writer(
                url,
                synchronous,
                StartupCheck::Whole { why },
                &Notifier::none(),
            )?,
            ids: HashMap::new(),
            checkpointer: None,
            deadline: BusyDeadline::new(),
        })
    }

    /// The SQLite writer behind a store, when that store is SQLite's.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn of(store: &mut dyn WriteStore) -> Option<&mut SqliteWriter> {
        (store as &mut dyn std::any::Any).downcast_mut()
    }

    /// The underlying connection, for fault injection and tests; its transaction state
    /// must be left as found.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn connection(&self) -> &Connection {
        &self.db.conn
    }

    /// `PRAGMA user_version`: the number of migrations applied.
    #[cfg(test)]
    fn schema_version(&self) -> Result<i64, StoreError> {
        self.db.schema_version()
    }
}

impl WriteStore for SqliteWriter {
    fn on_writer_thread(&mut self) {
        if let Err(error) = busy::install(&self.deadline, &self.db.conn) {
            log::warn!(target: LOG, "busy waits will not end at the shutdown deadline: {error}");
        }
    }

    fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        SqliteWriter::unfinished_jobs(self)
    }

    fn write_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[super::GalaxyRows],
    ) -> Result<super::WriteStats, StoreError> {
        SqliteWriter::write_batch(self, deletions, galaxies)
    }

    fn create_chunk(
        &mut self,
        galaxy: &super::NewGalaxy<'_>,
        progress: &mut super::CreationProgress,
        max_systems: usize,
    ) -> Result<super::WriteStats, StoreError> {
        SqliteWriter::create_chunk(self, galaxy, progress, max_systems)
    }

    fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(super::WriteStats, bool), StoreError> {
        SqliteWriter::purge_chunk(self, name, max_systems)
    }

    fn adopt_ids(&mut self, name: &str, ids: RowIds) {
        self.ids.insert(name.to_owned(), ids.0);
    }

    fn forget_ids(&mut self, name: &str) {
        self.ids.remove(name);
    }

    fn after_commit(&mut self) {
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.after_commit(&self.db);
        }
    }

    fn maintain(&mut self, idle: bool) {
        // Idle for a whole interval: give the WAL file back to the filesystem. Busy: a
        // passive checkpoint, which never waits on readers.
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.request(if idle {
                CheckpointMode::Truncate
            } else {
                CheckpointMode::Passive
            });
        }
    }

    fn finish(&mut self, all_saved: bool) {
        // Its checkpoint in progress ends first: a truncating checkpoint waits for no
        // other.
        drop(self.checkpointer.take());
        if all_saved {
            // Leave a compact database behind; a failure here loses nothing.
            if let Err(error) = self.db.checkpoint_truncate() {
                log::warn!(target: LOG, "final WAL checkpoint failed: {error}");
            }
        }
    }
}

/// A read-only connection, for loads on a cache miss and look-ups of stored names. It has
/// no write method, and SQLite refuses writes on it besides (the doctest builds with the
/// `testing` feature, as every test of the crate does):
///
/// ```compile_fail
/// use galactic_war::testing::{SqliteReader, WriteStore};
/// fn write(reader: &mut SqliteReader) {
///     let _ = reader.write_batch(&["g".to_owned()], &[]); // SqliteReader is no WriteStore
/// }
/// ```
pub struct SqliteReader {
    db: Db,
}

impl SqliteReader {
    /// Opens a read-only connection to an existing database, refusing a newer schema.
    pub fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        Ok(SqliteReader {
            db: Db::open_reader(path)?,
        })
    }
}

impl ReadStore for SqliteReader {
    fn load_galaxy_with_ids(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        self.db.load_galaxy_with_ids(name)
    }

    fn galaxy_names(&self) -> Result<Vec<String>, StoreError> {
        self.db.galaxy_names()
    }

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.db.galaxy_exists(name)
    }
}

/// The writer's connection reads too (its tests), through the same queries.
#[cfg(test)]
impl ReadStore for SqliteWriter {
    fn load_galaxy_with_ids(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        self.db.load_galaxy_with_ids(name)
    }

    fn galaxy_names(&self) -> Result<Vec<String>, StoreError> {
        self.db.galaxy_names()
    }

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.db.galaxy_exists(name)
    }
}

/// Only for the crate's tests (the `testing` feature): nothing else runs SQL behind the
/// writer's back.
#[cfg(any(test, feature = "testing"))]
impl crate::persistence::writer::WriterHandle {
    /// Runs `work` on the writer thread with the SQLite write connection, between batches,
    /// and returns its result. For fault injection (a tighter `max_page_count`, say); the
    /// connection's transaction state must be left as found. Fails when the engine's store
    /// is not SQLite's.
    pub fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Result<T, crate::persistence::writer::PersistError> {
        self.exec(move |store| SqliteWriter::of(store).map(|writer| work(writer.connection())))?
            .ok_or_else(|| {
                crate::persistence::writer::PersistError::Failed(super::StoreFailure {
                    kind: FailureKind::Other,
                    message: "the store is not SQLite's".to_owned(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CreationProgress, GalaxyRows, NewGalaxy, SystemRow, WriteStats};
    use super::*;
    use crate::model::{GalaxyConfig, RowMask, StructureKind};

    fn memory() -> SqliteWriter {
        SqliteWriter::open(&DatabaseUrl::Memory, Synchronous::Normal).unwrap()
    }

    /// An in-memory store holding the blitz galaxy "g", and that galaxy with nothing unsaved.
    fn stored_galaxy() -> (SqliteWriter, Galaxy) {
        let mut store = memory();
        let galaxy = new_galaxy("g");
        insert(&mut store, &galaxy).unwrap();
        (store, galaxy)
    }

    fn new_galaxy(name: &str) -> Galaxy {
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        let mut galaxy = Galaxy::create(name, config, 9, 100).unwrap();
        galaxy.take_changes();
        galaxy
    }

    /// Runs `write` on `galaxy` as creation writes it.
    fn as_new<T>(galaxy: &Galaxy, write: impl FnOnce(&NewGalaxy) -> T) -> T {
        let config_toml = galaxy.config().to_toml();
        write(&NewGalaxy {
            name: galaxy.name(),
            config_toml: &config_toml,
            tick: galaxy.tick(),
            systems: galaxy.systems(),
            rows: RowMask::new_system(galaxy.rules()),
        })
    }

    /// Writes the first `systems` of a creation of `galaxy` and stops there, as a
    /// creation that failed or was interrupted does.
    fn begin_creation(store: &mut SqliteWriter, galaxy: &Galaxy, systems: usize) {
        as_new(galaxy, |new| {
            store.create_chunk(new, &mut CreationProgress::default(), systems)
        })
        .unwrap();
    }

    /// Creates `galaxy` in chunks of 64 systems, as the writer's jobs do, checking that it
    /// stays invisible until the last chunk.
    fn insert(store: &mut SqliteWriter, galaxy: &Galaxy) -> Result<WriteStats, StoreError> {
        as_new(galaxy, |new| insert_new(store, galaxy, new))
    }

    fn insert_new(
        store: &mut SqliteWriter,
        galaxy: &Galaxy,
        new: &NewGalaxy,
    ) -> Result<WriteStats, StoreError> {
        let mut progress = CreationProgress::default();
        let mut total = WriteStats::default();
        loop {
            let stats = store.create_chunk(new, &mut progress, 64)?;
            total.systems += stats.systems;
            total.rows += stats.rows;
            let visible = store.galaxy_exists(galaxy.name())?;
            if progress.written == galaxy.systems().len() {
                assert!(visible, "a created galaxy is visible");
                return Ok(total);
            }
            assert!(!visible, "a galaxy being created is invisible");
            assert_eq!(store.load_galaxy(galaxy.name())?, None);
            assert!(!store.galaxy_names()?.iter().any(|n| n == galaxy.name()));
        }
    }

    /// Deletes galaxy `name` as the writer does: a batch marks it, chunks remove its rows.
    fn delete(store: &mut SqliteWriter, name: &str) {
        store.write_batch(&[name.to_owned()], &[]).unwrap();
        assert!(!store.galaxy_exists(name).unwrap(), "hidden once marked");
        while !store.purge_chunk(name, 64).unwrap().1 {}
    }

    /// Takes the galaxy's changes as one batch, as the writer's cut does.
    fn take_batch(galaxy: &mut Galaxy, tick: u64) -> GalaxyRows {
        let changes = galaxy.take_changes();
        let mut systems: Vec<SystemRow> = changes
            .iter()
            .map(|(index, rows)| SystemRow {
                index,
                rows,
                system: *galaxy.system(index).unwrap(),
            })
            .collect();
        systems.sort_unstable_by_key(|row| row.index);
        GalaxyRows {
            name: galaxy.name().to_owned(),
            tick: Some(tick),
            systems,
        }
    }

    fn count(store: &SqliteWriter, table: &str) -> i64 {
        store
            .connection()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn migrations_create_the_schema_and_the_events_index() {
        let store = memory();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let index: String = store
            .connection()
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'events_system_completion'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            index.contains("events(system_id, completion_tick)"),
            "{index}"
        );
        let fk: i64 = store
            .connection()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn a_created_galaxy_loads_back_identical() {
        let mut store = memory();
        let galaxy = new_galaxy("g");
        let stats = insert(&mut store, &galaxy).unwrap();
        assert_eq!(stats.systems, 200);
        assert_eq!(count(&store, "systems"), 200);
        assert_eq!(count(&store, "structures"), 200 * 5);
        assert_eq!(count(&store, "events"), 0);
        assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy.clone()));
        assert_eq!(store.load_galaxy("nope").unwrap(), None);
        assert!(store.galaxy_exists("g").unwrap());
        assert_eq!(store.galaxy_names().unwrap(), ["g"]);
        assert!(insert(&mut store, &galaxy).is_err(), "names are unique");
    }

    #[test]
    fn a_batch_writes_only_changed_rows_and_loads_back() {
        let (mut store, mut galaxy) = stored_galaxy();
        let (x, y) = galaxy.systems()[7].coords();
        galaxy
            .build(200, x.into(), y.into(), StructureKind::Hatchery)
            .unwrap();
        let tick = galaxy.tick();
        let batch = take_batch(&mut galaxy, tick);
        let stats = store
            .write_batch(&[], std::slice::from_ref(&batch))
            .unwrap();
        // galaxy tick + system row + the new event
        assert_eq!(
            stats,
            WriteStats {
                systems: 1,
                rows: 3
            }
        );
        assert_eq!(count(&store, "events"), 1);
        assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy.clone()));
        // Writing the same rows again replaces, never duplicates.
        store.write_batch(&[], &[batch]).unwrap();
        assert_eq!(count(&store, "events"), 1);
        assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
    }

    #[test]
    fn a_completed_build_is_saved_with_the_next_order() {
        let (mut store, mut galaxy) = stored_galaxy();
        let (x, y) = galaxy.systems()[0].coords();
        let (x, y) = (u64::from(x), u64::from(y));
        galaxy
            .build(100, x, y, StructureKind::AsteroidMine)
            .unwrap();
        galaxy
            .build(300, x, y, StructureKind::WaterHarvester)
            .unwrap();
        let batch = take_batch(&mut galaxy, 300);
        assert!(batch.systems[0]
            .rows
            .contains(RowMask::structure(StructureKind::AsteroidMine)));
        store.write_batch(&[], &[batch]).unwrap();
        assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
    }

    #[test]
    fn a_structure_row_missing_from_the_database_is_inserted_not_lost() {
        let (mut store, mut galaxy) = stored_galaxy();
        let (x, y) = galaxy.systems()[0].coords();
        store
            .connection()
            .execute(
                "DELETE FROM structures WHERE structure_type = 'asteroidmine'
                 AND system_id = (SELECT id FROM systems WHERE x = ?1 AND y = ?2)",
                [x, y],
            )
            .unwrap();
        galaxy
            .build(100, x.into(), y.into(), StructureKind::AsteroidMine)
            .unwrap();
        galaxy
            .build(300, x.into(), y.into(), StructureKind::Colony)
            .unwrap();
        store
            .write_batch(&[], &[take_batch(&mut galaxy, 300)])
            .unwrap();
        assert_eq!(count(&store, "structures"), 200 * 5);
        assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
    }

    #[test]
    fn deletion_cascades_to_every_row() {
        let mut store = memory();
        insert(&mut store, &new_galaxy("g")).unwrap();
        insert(&mut store, &new_galaxy("h")).unwrap();
        delete(&mut store, "g");
        assert_eq!(store.galaxy_names().unwrap(), ["h"]);
        assert_eq!(count(&store, "galaxies"), 1);
        assert_eq!(count(&store, "galaxy_jobs"), 0);
        assert_eq!(count(&store, "systems"), 200);
        assert_eq!(count(&store, "structures"), 1000);
        // The name can be created again.
        insert(&mut store, &new_galaxy("g")).unwrap();
    }

    #[test]
    fn an_interrupted_creation_is_removed_at_the_next_start() {
        let mut store = memory();
        let galaxy = new_galaxy("g");
        begin_creation(&mut store, &galaxy, 50);
        insert(&mut store, &new_galaxy("h")).unwrap();
        delete_mark_only(&mut store, "h");
        assert_eq!(count(&store, "systems"), 250);
        assert_eq!(
            store.unfinished_jobs().unwrap(),
            [
                GalaxyJob::Creating("g".into()),
                GalaxyJob::Deleting("h".into())
            ]
        );
        assert_eq!(
            store.unfinished_jobs().unwrap(),
            [
                GalaxyJob::Deleting("g".into()),
                GalaxyJob::Deleting("h".into())
            ],
            "the creation became a deletion"
        );
        while !store.purge_chunk("g", 16).unwrap().1 {}
        while !store.purge_chunk("h", 1000).unwrap().1 {}
        assert_eq!(count(&store, "galaxies"), 0);
        assert_eq!(count(&store, "systems"), 0);
        assert_eq!(count(&store, "structures"), 0);
    }

    #[test]
    fn a_purge_never_touches_a_live_galaxy() {
        let (mut store, galaxy) = stored_galaxy();
        assert!(store.purge_chunk("g", 1000).unwrap().1);
        assert_eq!(store.load_galaxy("g").unwrap(), Some(galaxy));
    }

    #[test]
    fn a_failed_creation_is_purged_and_its_name_created_again() {
        let mut store = memory();
        let galaxy = new_galaxy("g");
        begin_creation(&mut store, &galaxy, 50);
        // The writer refuses the creation after a failed chunk and purges what it wrote.
        while !store.purge_chunk("g", 16).unwrap().1 {}
        assert_eq!(count(&store, "galaxies"), 0);
        assert_eq!(count(&store, "systems"), 0);
        assert_eq!(count(&store, "galaxy_jobs"), 0);
        insert(&mut store, &galaxy).unwrap();
    }

    #[test]
    fn a_load_reads_the_same_row_ids_the_writer_would_look_up() {
        let (mut store, mut galaxy) = stored_galaxy();
        // Builds in flight on some systems, so some have an event row.
        for index in [0usize, 3, 150] {
            let (x, y) = galaxy.systems()[index].coords();
            galaxy
                .build(200, x.into(), y.into(), StructureKind::Hatchery)
                .unwrap();
        }
        store
            .write_batch(&[], &[take_batch(&mut galaxy, 200)])
            .unwrap();
        let (loaded, ids) = store.load_galaxy_with_ids("g").unwrap().unwrap();
        assert_eq!(loaded, galaxy);
        let looked_up = write::fetch_ids(store.connection(), "g").unwrap();
        assert_eq!(ids.0, looked_up);
        assert_eq!(ids.0.iter().filter(|s| s.event.is_some()).count(), 3);
    }

    fn delete_mark_only(store: &mut SqliteWriter, name: &str) {
        store.write_batch(&[name.to_owned()], &[]).unwrap();
    }

    #[test]
    fn a_stale_id_cache_is_an_error_not_a_wrong_write() {
        let mut store = memory();
        let galaxy = new_galaxy("g");
        insert(&mut store, &galaxy).unwrap();
        let mut system = *galaxy.system(0).unwrap();
        system.x += 1; // not the system stored at index 0
        let batch = GalaxyRows {
            name: "g".into(),
            tick: None,
            systems: vec![SystemRow {
                index: 0,
                rows: RowMask::SYSTEM,
                system,
            }],
        };
        let err = store.write_batch(&[], &[batch]).unwrap_err();
        assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
        assert_eq!(err.failure().kind, FailureKind::Inconsistent);
    }

    /// A batch that advances galaxy "g"'s tick and nothing else.
    fn tick_batch(tick: u64) -> GalaxyRows {
        GalaxyRows {
            name: "g".into(),
            tick: Some(tick),
            systems: Vec::new(),
        }
    }

    #[test]
    fn a_locked_database_fails_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::File(dir.path().join("db"));
        let mut store = SqliteWriter::open(&url, Synchronous::Normal).unwrap();
        insert(&mut store, &new_galaxy("g")).unwrap();
        let DatabaseUrl::File(path) = &url else {
            unreachable!()
        };
        let holder = Connection::open(path).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        // A deadline already passed: the busy wait ends at once, not after BUSY_TIMEOUT.
        store.deadline.set(std::time::Instant::now());
        store.on_writer_thread();
        let err = store.write_batch(&[], &[tick_batch(5)]).unwrap_err();
        assert_eq!(err.failure().kind, FailureKind::Busy, "{err}");
        holder.execute_batch("COMMIT").unwrap();
    }

    #[test]
    fn a_database_with_no_room_fails_as_full() {
        let mut store = memory();
        let pages: i64 = store
            .connection()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        store
            .connection()
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        let err = insert(&mut store, &new_galaxy("g")).unwrap_err();
        let failure = err.failure();
        assert_eq!(failure.kind, FailureKind::Full, "{err}");
        assert_eq!(failure.message, err.to_string());
    }

    #[test]
    fn a_removed_database_file_fails_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut store =
            SqliteWriter::open(&DatabaseUrl::File(path.clone()), Synchronous::Normal).unwrap();
        insert(&mut store, &new_galaxy("g")).unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = store.write_batch(&[], &[tick_batch(5)]).unwrap_err();
        assert_eq!(err.failure().kind, FailureKind::FileGone, "{err}");
    }

    #[test]
    fn a_writer_is_reached_through_the_seam_and_a_reader_only_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut writer =
            SqliteWriter::open(&DatabaseUrl::File(path.clone()), Synchronous::Normal).unwrap();
        insert(&mut writer, &new_galaxy("g")).unwrap();
        let store: &mut dyn WriteStore = &mut writer;
        assert!(SqliteWriter::of(store).is_some());
        let reader = SqliteReader::open(&path).unwrap();
        assert_eq!(reader.galaxy_names().unwrap(), ["g"]);
        // SQLite refuses a write on the reader's connection too.
        let err = reader
            .db
            .conn
            .execute("DELETE FROM galaxies", [])
            .unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly));
    }

    #[test]
    fn inconsistent_rows_are_refused_on_load() {
        let mut store = memory();
        insert(&mut store, &new_galaxy("g")).unwrap();
        store
            .connection()
            .execute("UPDATE systems SET metal = -5 WHERE id = 1", [])
            .unwrap();
        let err = store.load_galaxy("g").unwrap_err();
        assert!(err.to_string().contains("negative value -5"), "{err}");
    }
}
