//! Archiving and restoring galaxies (README, *Archives and moving a deployment*): the
//! admin's operations, automatic archiving of idle galaxies, and the storage figures.
//!
//! Only the writer thread archives, and only a galaxy in memory: an archive is first
//! loaded, then handed to the writer, which takes it out of memory between batches (a
//! galaxy evicted or still loading in between is tried again, a few times). A restore is
//! a load that finds an archive (see `crate::galaxies`): one per name at a time, the
//! first request waiting for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{AppError, AppState};
use crate::galaxies::{valid_galaxy_name, LifeError, Restore};
use crate::persistence::writer::{ArchiveRefused, ArchivedGalaxy, PersistError};
use crate::persistence::Engine;
use crate::store::Storage;

/// Attempts to catch a galaxy in memory for the writer to archive: one evicted or being
/// loaded at that instant is tried again.
const ARCHIVE_ATTEMPTS: u32 = 5;

/// A galaxy restored from its archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredGalaxy {
    pub name: String,
    pub systems: usize,
    pub tick: u64,
}

impl AppState {
    /// The engine, if it keeps archives (a database file or server: an in-memory
    /// database has no reader to restore from).
    fn archiving_engine(&self) -> Result<&Engine, AppError> {
        self.refuse_if_memory_only()?;
        match &self.shared.engine {
            Some(engine) if engine.keeps_archives() => Ok(engine),
            _ => Err(AppError::NoArchives),
        }
    }

    /// Archives galaxy `name`: its whole state goes into one compressed archive in the
    /// database, in the transaction that removes its live rows, and it leaves memory.
    pub fn archive(&self, name: &str) -> Result<ArchivedGalaxy, AppError> {
        let engine = self.archiving_engine()?;
        if !valid_galaxy_name(name) {
            return Err(AppError::BadName(name.to_owned()));
        }
        if engine.is_archived(name)? {
            return Err(AppError::AlreadyArchived(name.to_owned()));
        }
        let shared = &self.shared;
        for attempt in 1..=ARCHIVE_ATTEMPTS {
            // Only a galaxy in memory is archived: loaded first (an archive found meanwhile,
            // another admin's, is not restored to be archived again).
            let loaded =
                shared
                    .galaxies
                    .with_live_restoring(&shared.engine, name, Restore::Never, |_| {
                        Ok::<(), LifeError>(())
                    });
            match loaded {
                Err(LifeError::Archived(_)) => {
                    return Err(AppError::AlreadyArchived(name.to_owned()))
                }
                loaded => loaded?,
            }
            match engine.archive(&shared.galaxies, name) {
                Ok(archived) => return Ok(archived),
                // Evicted, or loading, in the instant between: again.
                Err(ArchiveRefused::Life(LifeError::Unknown(_) | LifeError::Busy(_)))
                    if attempt < ARCHIVE_ATTEMPTS =>
                {
                    std::thread::sleep(Duration::from_millis(5 * u64::from(attempt)));
                }
                Err(ArchiveRefused::Life(LifeError::Unknown(_))) => {
                    return Err(AppError::Busy(name.to_owned()))
                }
                Err(ArchiveRefused::Life(error)) => return Err(error.into()),
                Err(ArchiveRefused::Failed { failure, .. }) => {
                    return Err(AppError::ArchiveUnavailable {
                        name: name.to_owned(),
                        reason: format!("not archived, and still live: {failure}"),
                    })
                }
                Err(ArchiveRefused::Stopped) => {
                    return Err(AppError::Persistence(PersistError::Stopped))
                }
            }
        }
        Err(AppError::Busy(name.to_owned()))
    }

    /// Restores archived galaxy `name` (whatever `GWAR_ARCHIVE_RESTORE` says).
    pub fn restore(&self, name: &str) -> Result<RestoredGalaxy, AppError> {
        let engine = self.archiving_engine()?;
        if !valid_galaxy_name(name) {
            return Err(AppError::BadName(name.to_owned()));
        }
        if !engine.is_archived(name)? {
            let live = self.shared.galaxies.is_live(name) || engine.is_stored(name)?;
            return Err(match live {
                true => AppError::NotArchived(name.to_owned()),
                false => AppError::UnknownGalaxy(name.to_owned()),
            });
        }
        let shared = &self.shared;
        shared
            .galaxies
            .with_live_restoring(&shared.engine, name, Restore::Now, |live| {
                Ok(RestoredGalaxy {
                    name: name.to_owned(),
                    systems: live.systems().len(),
                    tick: live.tick(),
                })
            })
    }

    /// Deletes the archive of galaxy `name`; false when it has none.
    pub(super) fn delete_archive(&self, name: &str) -> Result<bool, AppError> {
        let Some(engine) = &self.shared.engine else {
            return Ok(false);
        };
        if !engine.keeps_archives() || !engine.is_archived(name)? {
            return Ok(false);
        }
        Ok(engine.delete_archive(name)?)
    }

    /// One round of automatic archiving (`GWAR_ARCHIVE_AFTER_SECS`): archives up to
    /// `at_most` galaxies with no change saved and no request for `idle`, oldest first;
    /// returns how many. Galaxies another daemon owns are left to it. The round ends at
    /// the first archive the database refuses (it would refuse the next ones too).
    pub fn archive_idle(&self, idle: Duration, at_most: usize) -> usize {
        let Ok(engine) = self.archiving_engine() else {
            return 0;
        };
        let names = match engine.idle_galaxies(idle, at_most.saturating_mul(4)) {
            Ok(names) => names,
            Err(error) => {
                log::warn!("automatic archiving: cannot list idle galaxies: {error}");
                return 0;
            }
        };
        let mut archived = 0;
        for name in names {
            if archived == at_most {
                break;
            }
            // Read but not changed lately: still played on.
            if self.shared.galaxies.accessed_within(&name, idle) {
                continue;
            }
            match self.archive(&name) {
                Ok(done) => {
                    archived += 1;
                    log::info!("galaxy '{name}' archived automatically after {idle:?} idle ({} systems, {} bytes)", done.systems, done.bytes);
                }
                Err(
                    AppError::OwnedElsewhere { .. }
                    | AppError::AlreadyArchived(_)
                    | AppError::UnknownGalaxy(_)
                    | AppError::Busy(_)
                    | AppError::LeaseLapsed(_),
                ) => {}
                Err(error) => {
                    log::warn!("automatic archiving of galaxy '{name}': {error}; the next round tries again");
                    break;
                }
            }
        }
        archived
    }

    /// What the database holds, live and archived (`None` without a database).
    pub fn storage(&self) -> Result<Option<Storage>, AppError> {
        match &self.shared.engine {
            Some(engine) => Ok(engine.storage()?),
            None => Ok(None),
        }
    }

    /// The storage figures as last counted (zeros before the first count, or without a
    /// database), and a new count started on a thread of its own unless one is running:
    /// `/metrics` answers at once even while the database does not.
    pub fn storage_gauge(&self) -> Storage {
        let gauge = &self.shared.storage;
        if self.shared.engine.is_some() && !gauge.counting.swap(true, Ordering::AcqRel) {
            self.count_aside(
                "gwar-storage-count",
                |app| match app.storage() {
                    Ok(storage) => *app.shared.storage.last.lock() = storage,
                    Err(error) => log::debug!(target: crate::logging::PERSISTENCE,
                        "counting the database's storage: {error}"),
                },
                |app| app.shared.storage.counting.store(false, Ordering::Release),
            );
        }
        gauge.last.lock().unwrap_or_default()
    }
}

/// See [`AppState::storage_gauge`].
#[derive(Debug, Default)]
pub(super) struct StorageGauge {
    last: Mutex<Option<Storage>>,
    counting: AtomicBool,
}
