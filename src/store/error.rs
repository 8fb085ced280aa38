//! How a store operation fails: the kind the engine acts on ([`FailureKind`]), the error
//! with its message for an operator ([`StoreError`]), and its copy that crosses threads
//! ([`StoreFailure`]). Each backend classifies its own driver's errors ([`DriverError`]).

use std::path::PathBuf;

use super::LostGalaxy;

/// What kind of failure a store operation met, for callers that act on it (health, the
/// HTTP status, a retry policy) rather than print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// Another connection or process holds a lock the operation waited for in vain.
    Busy,
    /// The database (or its disk) has no room for the rows.
    Full,
    /// The database file was removed or replaced after it was opened.
    FileGone,
    /// The database cannot be reached (a server down, a connection lost).
    Unavailable,
    /// The stored rows break the model's rules, or the writer's cache of row ids
    /// disagrees with them.
    Inconsistent,
    /// The database is damaged.
    Corrupt,
    /// The database's schema is newer than this binary's.
    NewerSchema,
    /// Another daemon took galaxies this one owned (PostgreSQL, several daemons): not a
    /// failure of the database; the writer drops them and saves the rest.
    Lost,
    /// A galaxy of that name exists already (PostgreSQL: another daemon created it at
    /// the same time), or an archive of that name is stored: a creation answers as for
    /// any name taken.
    Exists,
    /// Another galactic-war process holds the database (found at start-up).
    InUse,
    /// Anything else (opening, locking, a thread, an unexpected database error).
    Other,
}

/// A store failure as it crosses a thread boundary: its kind, and the message to show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// A database driver's error, classified by the backend that knows its driver: the store's
/// interface names no backend.
pub(crate) trait DriverError {
    /// What kind of failure this error is.
    fn failure_kind(&self) -> FailureKind;
    /// The same, when it came from opening a connection.
    fn connect_failure_kind(&self) -> FailureKind {
        self.failure_kind()
    }
    /// The message to show.
    fn describe(&self) -> String;
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the database {path} has schema version {found}, newer than this binary's {supported}; it was left untouched")]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("the database {path} is corrupt (it was left untouched): {details}")]
    Corrupt { path: String, details: String },
    #[error("the database {database} is in use by another galactic-war process (it holds {lock})")]
    InUse { database: PathBuf, lock: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error("{context}: {source}")]
    Sqlite {
        context: &'static str,
        source: rusqlite::Error,
    },
    #[error("the database file {path} {problem} after it was opened; nothing is written until it is back (restart the daemon to use a new file)")]
    FileGone {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("the database's filesystem ({path}) has {} free, under the {} {}", mib(*.available), mib(*.needed), .what)]
    LowSpace {
        path: PathBuf,
        available: u64,
        needed: u64,
        /// What the shortage means, after "under the N MiB".
        what: &'static str,
    },
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
    /// A stored segment of a galaxy's history that does not decode, or does not match
    /// its row (`galactic-war check` lists them all).
    #[error(
        "the history of galaxy '{galaxy}' is damaged (segment {segment}, left as it is): {details}"
    )]
    HistoryDamaged {
        galaxy: String,
        segment: i64,
        details: String,
    },
    #[error("galaxy '{galaxy}' in the database is inconsistent: {reason}")]
    Inconsistent { galaxy: String, reason: String },
    #[error("cannot connect to the database {database}: {}", DriverError::describe(.source))]
    PostgresConnect {
        database: String,
        source: ::postgres::Error,
    },
    /// Start-up found servers, all read-only (standbys): waiting for a primary may help.
    #[error("no read-write server for the database {database} yet: {hosts}")]
    NoPrimary {
        database: String,
        hosts: String,
        /// How long one more try may take, at most.
        round_within: std::time::Duration,
    },
    #[error("{context}: {}", DriverError::describe(.source))]
    Postgres {
        context: &'static str,
        source: ::postgres::Error,
    },
    #[error("migration {name} failed: {}", DriverError::describe(.source))]
    PostgresMigration {
        name: &'static str,
        source: ::postgres::Error,
    },
    #[error("galaxy '{0}' exists already (created by another daemon, or archived)")]
    Exists(String),
    /// A restore's archive was deleted while the galaxy was being restored: the restore
    /// is abandoned (its rows are removed as a failed creation's are).
    #[error("the archive of galaxy '{0}' is gone (deleted during its restore); the restore is abandoned")]
    ArchiveGone(String),
    #[error("the database {database} is served by an older galactic-war daemon (one that holds the advisory lock of one daemon per database, and writes without the ownership fence); stop it before starting this one")]
    OlderDaemon { database: String },
    #[error("{}", lost_message(.0))]
    Lost(Vec<LostGalaxy>),
    #[error("galaxy '{0}' is being handed over between daemons (its ownership row is locked); try again in a second")]
    OwnershipLocked(String),
    #[error("the database {0} could not be reached a moment ago; try again in a second")]
    Unreachable(String),
    /// A commit whose wait for the synchronous standby was cancelled (the shutdown's
    /// deadline): PostgreSQL then answers success, with a warning.
    #[error("{0}: the commit is on the primary, but its wait for the synchronous standby was cancelled: not counted as saved")]
    Unreplicated(String),
    #[error("no read connection to the database came free within {0:?} (it is slow to answer); try again in a moment")]
    ReadersBusy(std::time::Duration),
    #[error("galaxy '{galaxy}' is held by another live daemon ({owner}) that advertises this daemon's own address, {url}: give each daemon its own GWAR_ADVERTISE_URL; it can be taken here once that lease runs out")]
    SameAddress {
        galaxy: String,
        owner: String,
        url: String,
    },
}

/// Bytes as an operator reads them in a message.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn lost_message(lost: &[LostGalaxy]) -> String {
    let names: Vec<String> = lost.iter().map(LostGalaxy::to_string).collect();
    format!(
        "taken by another daemon, so not written: {}",
        names.join(", ")
    )
}

impl StoreError {
    pub fn kind(&self) -> FailureKind {
        match self {
            StoreError::Open { source, .. }
            | StoreError::Migration { source, .. }
            | StoreError::Sqlite { source, .. } => source.failure_kind(),
            StoreError::Postgres { source, .. } | StoreError::PostgresMigration { source, .. } => {
                source.failure_kind()
            }
            StoreError::PostgresConnect { source, .. } => source.connect_failure_kind(),
            StoreError::NewerSchema { .. } => FailureKind::NewerSchema,
            StoreError::Corrupt { .. } | StoreError::HistoryDamaged { .. } => FailureKind::Corrupt,
            StoreError::FileGone { .. } => FailureKind::FileGone,
            StoreError::LowSpace { .. } => FailureKind::Full,
            StoreError::Inconsistent { .. } => FailureKind::Inconsistent,
            StoreError::Lost(_) => FailureKind::Lost,
            // Taken here once the other daemon's lease runs out: a wait, like a lock.
            StoreError::SameAddress { .. }
            | StoreError::OwnershipLocked(_)
            | StoreError::ReadersBusy(_) => FailureKind::Busy,
            StoreError::Unreachable(_)
            | StoreError::Unreplicated(_)
            | StoreError::NoPrimary { .. } => FailureKind::Unavailable,
            StoreError::Exists(_) => FailureKind::Exists,
            StoreError::InUse { .. } => FailureKind::InUse,
            StoreError::CreateDir { .. }
            | StoreError::Lock { .. }
            | StoreError::OlderDaemon { .. }
            | StoreError::ArchiveGone(_)
            | StoreError::Thread { .. } => FailureKind::Other,
        }
    }

    /// An archive of galaxy `name` was refused: the galaxy has no live rows for it to
    /// replace.
    pub(crate) fn not_live(name: &str) -> StoreError {
        StoreError::Inconsistent {
            galaxy: name.to_owned(),
            reason: "no live rows to archive (not stored, or its creation or deletion is \
                     unfinished); the archive was not written"
                .into(),
        }
    }

    /// This error as it crosses a thread boundary (its message is its `Display`).
    pub fn failure(&self) -> StoreFailure {
        StoreFailure {
            kind: self.kind(),
            message: self.to_string(),
        }
    }
}
