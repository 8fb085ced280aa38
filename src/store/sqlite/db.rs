//! One SQLite connection, [`Db`], and what every connection shares: the busy timeout, the
//! file it was opened on, the WAL's page count after the writer's commits, checkpoints, and
//! how SQLite's errors become the store's.
//!
//! Opens only connections to a database that exists already; creating, checking and
//! migrating one is `migrate.rs`. Runs no statement on game rows.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::hooks::Wal;
use rusqlite::{Connection, OpenFlags};

use super::super::{DriverError, FailureKind, StoreError};
use crate::settings::Synchronous;

/// SQLite waits this long for a lock held by another connection before failing with
/// SQLITE_BUSY (README, *What is guaranteed, in plain words*: at most 5 s, so a locked database shows within seconds).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { context, source })
    }
}

thread_local! {
    /// Pages in the WAL after the last commit made on this thread. Set by
    /// [`note_wal_pages`], SQLite's WAL hook, which cannot carry per-connection data
    /// through rusqlite; a thread-local is exact because only the writer thread commits
    /// on the writer's connection, and it reads this right after its own commit.
    static WAL_PAGES: Cell<u32> = const { Cell::new(0) };
    /// A commit made on this thread wrote to the WAL since [`take_wal_commit`] last
    /// looked: SQLite calls the hook only for a commit that appended frames (an empty
    /// transaction writes, and syncs, nothing).
    static WAL_COMMITTED: Cell<bool> = const { Cell::new(false) };
}

/// SQLite calls this after every commit on the writer's connection that wrote to the WAL.
/// Registering it also turns off SQLite's automatic checkpoint on that connection, which
/// is the same hook.
pub(super) fn note_wal_pages(_: &Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(u32::try_from(pages).unwrap_or(0));
    WAL_COMMITTED.set(true);
    Ok(())
}

/// Whether a commit of this thread wrote to the WAL since the last call (see
/// [`WAL_COMMITTED`]); the writer asks after each of its commits.
pub(super) fn take_wal_commit() -> bool {
    WAL_COMMITTED.replace(false)
}

/// One SQLite connection: the writer's, a reader's or the checkpointer's.
pub(super) struct Db {
    pub(super) conn: Connection,
    pub(super) label: String,
    /// The database file as opened (writer only): a save first checks that the path
    /// still names it, so a removed or replaced file is reported instead of written to
    /// through a stale descriptor (or a fresh file silently taking its place).
    pub(super) file: Option<FileIdentity>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileIdentity {
    path: PathBuf,
    device: u64,
    inode: u64,
}

/// The room on a filesystem, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Space {
    /// What an unprivileged writer may still use (`f_bavail`).
    pub(super) available: u64,
    /// The filesystem's size.
    pub(super) total: u64,
}

impl FileIdentity {
    /// The room on the filesystem holding the file (`statvfs`: a system call, no I/O).
    // The counts are `u64` on 64-bit Linux, narrower on some other targets.
    #[allow(clippy::useless_conversion)]
    pub(super) fn space(&self) -> std::io::Result<Space> {
        let stats = nix::sys::statvfs::statvfs(&self.path).map_err(std::io::Error::from)?;
        let unit = u64::from(stats.fragment_size());
        Ok(Space {
            available: u64::from(stats.blocks_available()).saturating_mul(unit),
            total: u64::from(stats.blocks()).saturating_mul(unit),
        })
    }

    pub(super) fn of(path: &Path) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(FileIdentity {
            path: path.to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }
}

impl Db {
    /// Opens the checkpoint thread's connection to a database the writer has opened. It
    /// only checkpoints, with the writer's `synchronous` (which decides the fsyncs a
    /// checkpoint makes).
    pub(super) fn open_checkpointer(
        path: &Path,
        synchronous: Synchronous,
    ) -> Result<Db, StoreError> {
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
    pub(super) fn open_existing(path: &Path, access: OpenFlags) -> Result<Db, StoreError> {
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
    pub(super) fn wal_pages(&self) -> u32 {
        WAL_PAGES.get()
    }

    /// Fails when the database file was removed or replaced since it was opened.
    pub(super) fn check_file(&self) -> Result<(), StoreError> {
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

    /// The room on the database's filesystem; `None` without a file (in memory, or a
    /// connection other than the writer's).
    pub(super) fn space(&self) -> Option<std::io::Result<Space>> {
        self.file.as_ref().map(FileIdentity::space)
    }

    /// Ends a transaction a failed statement left open, so that it holds no lock and no
    /// WAL frames (SQLite rolls back some failures by itself, a full disk among them, but
    /// not every one; a `Transaction` dropped on an error path rolls back too: this is
    /// the net under both).
    pub(super) fn end_open_transaction(&self) {
        if !self.conn.is_autocommit() {
            if let Err(error) = self.conn.execute_batch("ROLLBACK") {
                log::warn!(target: crate::logging::PERSISTENCE, "rolling back a failed transaction: {error}");
            }
        }
    }

    /// A passive WAL checkpoint: copies what it can without waiting on readers.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        self.check_file()?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .context("checkpointing the WAL")
    }

    /// Copies the whole WAL into the database and truncates it (when idle, at shutdown).
    pub(super) fn checkpoint_truncate(&self) -> Result<(), StoreError> {
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
