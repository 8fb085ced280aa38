//! Why an application operation failed ([`AppError`]), and how the errors of the layers
//! below become one: a store's error as its kind and message, a galaxy's life step as
//! the answer it means (unknown, exists, elsewhere, lapsed).

use std::time::Duration;

use crate::galaxies::LifeError;
use crate::model::{ConfigError, GameError};
use crate::persistence::backup::BackupError;
use crate::persistence::budget::OverBudget;
use crate::persistence::writer::PersistError;
use crate::store::{Owner, StoreError, StoreFailure};

/// Why an application operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid galaxy name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 _ -")]
    BadName(String),
    #[error("galaxy '{0}' not found")]
    UnknownGalaxy(String),
    #[error("galaxy '{0}' already exists")]
    GalaxyExists(String),
    #[error("there are already {limit} galaxies, the most this server holds (GWAR_MAX_GALAXIES)")]
    TooManyGalaxies { limit: usize },
    /// A creation without the admin token past `GWAR_MAX_TOTAL_SYSTEMS` or the free disk.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    #[error(transparent)]
    Game(#[from] GameError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("orders are paused: the oldest unsaved change is {age:?} old, above the limit of {limit:?}; the database is not keeping up")]
    UnsavedTooOld { age: Duration, limit: Duration },
    #[error("orders and creations are paused: the database has not answered a write for {stalled:?}, above the limit of {limit:?} (GWAR_PERSISTENCE_MAX_STALL_MS); nothing could be saved now")]
    SavingStalled { stalled: Duration, limit: Duration },
    #[error(transparent)]
    Persistence(#[from] PersistError),
    /// A durable request refused before it changed anything: no commit can make it durable.
    #[error("durable requests need a database, and {reason}: nothing was changed; send the request without durable=1 to have it applied in memory only")]
    DurabilityUnavailable { reason: &'static str },
    /// A durable order applied in memory whose commit failed or did not come in time.
    #[error("{}", not_durable(.cause))]
    NotDurable { galaxy: String, cause: PersistError },
    #[error("database error: {0}")]
    Store(StoreFailure),
    #[error("there is no database file to back up (persistence is off or in memory)")]
    NoDatabase,
    #[error("the database {0} is PostgreSQL, which is backed up with its own tools: pg_dump for a logical copy, pg_basebackup with WAL archiving for a physical one (README, Operations); this daemon's backups copy SQLite files only")]
    ServerBackup(String),
    #[error("a backup is already running; try again when it has finished")]
    BackupInProgress,
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Another live daemon owns the galaxy (PostgreSQL, several daemons).
    #[error("galaxy '{name}' is served by another daemon, at {}", .owner.url)]
    OwnedElsewhere { name: String, owner: Owner },
    /// This daemon's lease on the galaxy may have run out and is not renewed yet.
    #[error("galaxy '{0}' is not served for a moment: this daemon's lease on it is being renewed; try again shortly")]
    LeaseLapsed(String),
    /// Archived, restored only on an admin's word (`GWAR_ARCHIVE_RESTORE=explicit`).
    #[error(
        "galaxy '{0}' is archived; an admin restores it with POST /admin/galaxies/{0}/restore"
    )]
    Archived(String),
    #[error("archives need a database file or server, and persistence is off or in memory")]
    NoArchives,
    #[error("history is kept in the database, and persistence is off or in memory")]
    NoHistory,
    #[error("galaxy '{0}' is archived already")]
    AlreadyArchived(String),
    #[error("galaxy '{0}' is not archived")]
    NotArchived(String),
    /// Its archive does not decode: refused, and kept as it is.
    #[error("galaxy '{name}' is archived, and its archive is damaged ({reason}); it is kept as it is: see `galactic-war check`")]
    DamagedArchive { name: String, reason: String },
    /// Its restore, or its archiving, could not be saved now; nothing changed.
    #[error("galaxy '{name}': {reason}")]
    ArchiveUnavailable { name: String, reason: String },
    /// Being loaded, archived or restored right now.
    #[error("galaxy '{0}' is being loaded, archived or restored; try again shortly")]
    Busy(String),
    #[error("running from memory only: the database could not be opened at start-up (see /healthz), so nothing can be saved; creating galaxies and saving are refused until the daemon restarts on a sound database")]
    MemoryOnly,
}

impl From<StoreError> for AppError {
    /// A store's error reaches a caller as its kind and message.
    fn from(error: StoreError) -> AppError {
        AppError::Store(error.failure())
    }
}

impl From<LifeError> for AppError {
    fn from(error: LifeError) -> AppError {
        match error {
            LifeError::Unknown(name) => AppError::UnknownGalaxy(name),
            LifeError::Exists(name) => AppError::GalaxyExists(name),
            LifeError::TooMany { limit } => AppError::TooManyGalaxies { limit },
            LifeError::Store(error) => AppError::Store(error.failure()),
            LifeError::Elsewhere { name, owner } => AppError::OwnedElsewhere { name, owner },
            LifeError::LeaseLapsed(name) => AppError::LeaseLapsed(name),
            LifeError::Archived(name) => AppError::Archived(name),
            LifeError::DamagedArchive { name, reason } => AppError::DamagedArchive { name, reason },
            LifeError::RestoreFailed { name, reason } => AppError::ArchiveUnavailable {
                reason: format!("it is archived and could not be restored now: {reason}"),
                name,
            },
            LifeError::Busy(name) => AppError::Busy(name),
        }
    }
}

/// Why a durable order applied in memory is not durable, and what becomes of it.
fn not_durable(cause: &PersistError) -> String {
    match cause {
        PersistError::Stopped => format!(
            "the order was applied in memory but is not durable ({cause}): the daemon is \
             stopping, and it is saved only if the final flush saves it (the stop's log \
             names every galaxy left unsaved)"
        ),
        cause => format!(
            "the order was applied in memory but is not durable yet ({cause}); it stays \
             queued and will be saved like any other change (with several daemons: unless \
             another daemon takes the galaxy first): do not send it again"
        ),
    }
}
