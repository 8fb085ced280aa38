//! The engine's side of archives in the database: looking them up through the pool of
//! read-only connections, and restoring one through the writer (README, *Archives and
//! moving a deployment*). Archiving itself is the writer's (`writer/archiving.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::loads::Purpose;
use super::slow::{listed, SlowKind};
use super::writer::{ArchiveRefused, ArchivedGalaxy, PersistError};
use super::Engine;
use crate::archive;
use crate::galaxies::{Galaxies, LifeError};
use crate::model::{Galaxy, HistoryEntry};
use crate::store::{ArchiveInfo, FailureKind, Storage, StoreError};

/// The pause between attempts to settle an archive whose commit's answer was lost.
const SETTLE_PAUSE: Duration = Duration::from_millis(200);

impl Engine {
    /// Whether a request for an archived galaxy restores it (`GWAR_ARCHIVE_RESTORE`).
    pub(crate) fn restores_on_demand(&self) -> bool {
        self.restore_on_demand
    }

    /// True when archives can be kept and restored: a database file or server (an
    /// in-memory database has no reader to restore from).
    pub(crate) fn keeps_archives(&self) -> bool {
        self.readers.is_some()
    }

    /// True when an archive of galaxy `name` is stored.
    pub(crate) fn is_archived(&self, name: &str) -> Result<bool, StoreError> {
        match &self.readers {
            Some(readers) => readers.with(Purpose::Lookup, |store| store.archive_exists(name)),
            None => Ok(false),
        }
    }

    /// Every stored archive, without bodies, sorted by name.
    pub(crate) fn archives(&self) -> Result<Vec<ArchiveInfo>, StoreError> {
        match &self.readers {
            Some(readers) => self.metrics.slow.time(
                SlowKind::Lookup,
                || readers.with(Purpose::Lookup, |store| store.archives()),
                listed,
            ),
            None => Ok(Vec::new()),
        }
    }

    /// What the database holds, live and archived.
    pub(crate) fn storage(&self) -> Result<Option<Storage>, StoreError> {
        match &self.readers {
            Some(readers) => self.metrics.slow.time(
                SlowKind::Lookup,
                || readers.with(Purpose::Lookup, |store| store.storage().map(Some)),
                |_| 1,
            ),
            None => Ok(None),
        }
    }

    /// Up to `limit` stored galaxies with no change saved for `idle`, oldest first.
    pub(crate) fn idle_galaxies(
        &self,
        idle: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        match &self.readers {
            Some(readers) => self.metrics.slow.time(
                SlowKind::Lookup,
                || readers.with(Purpose::Lookup, |store| store.idle_galaxies(idle, limit)),
                listed,
            ),
            None => Ok(Vec::new()),
        }
    }

    /// The daemon is stopping: no archive is begun from now on, and creations stop.
    pub(crate) fn stop_bulk(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.writer.stop_creating();
    }

    /// Galaxy `name`'s saved history from `since_tick`, at most `limit` entries (see
    /// `ReadStore::history`).
    pub(crate) fn history(
        &self,
        name: &str,
        since_tick: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        match &self.readers {
            Some(readers) => readers.with(Purpose::Load, |store| {
                store.history(name, since_tick, limit)
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Archives live galaxy `name`: takes it out of memory (requests for it wait),
    /// encodes it here, off the writer thread and holding no lock, and has the writer
    /// store the archive in the transaction that marks its rows deleted. Refused, the
    /// galaxy goes back into memory, live, and nothing is lost.
    pub(crate) fn archive(
        &self,
        galaxies: &Galaxies,
        name: &str,
    ) -> Result<ArchivedGalaxy, ArchiveRefused> {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err(ArchiveRefused::Stopped);
        }
        let started = Instant::now();
        let archiving = galaxies.take_for_archive(name)?;
        let galaxy = archiving.galaxy();
        let body: Arc<[u8]> = archive::encode(galaxy).into();
        let archived = ArchivedGalaxy {
            systems: galaxy.systems().len() as u64,
            bytes: body.len() as u64,
        };
        // A commit whose answer was lost is settled by sending the same archive again
        // (PostgreSQL), for as long as a save would wait; the galaxy stays out of memory
        // meanwhile, since it may be archived already.
        let settle_by = started + self.writer.save_bound();
        let refused = loop {
            match self
                .writer
                .write_archive(name, archived.systems, body.clone())
            {
                Ok(()) => {
                    self.metrics.archived();
                    log::info!(target: crate::logging::PERSISTENCE,
                        "galaxy '{name}' archived ({} systems in {} bytes, {:?})",
                        archived.systems, archived.bytes, started.elapsed());
                    return Ok(archived);
                }
                Err(ArchiveRefused::Failed {
                    unsettled: true, ..
                }) if Instant::now() < settle_by => std::thread::sleep(SETTLE_PAUSE),
                Err(refused) => break refused,
            }
        };
        if let ArchiveRefused::Failed {
            unsettled: true, ..
        } = &refused
        {
            log::error!(target: crate::logging::PERSISTENCE,
                "galaxy '{name}': whether its archive was stored is unknown (the database's answer \
                 was lost and it has not answered since); it stays live, and its next save, in \
                 full, undoes the archive if it was stored");
        }
        if let ArchiveRefused::Failed { failure, .. } = &refused {
            if failure.kind == FailureKind::Lost {
                // Another daemon took it (its lease here had run out): it is that
                // daemon's now, and the writer dropped and reported its changes here, as
                // for any galaxy lost.
                return Err(refused);
            }
        }
        let cell = archiving.put_back();
        self.writer.mark_dirty(cell, Instant::now());
        Err(refused)
    }

    /// Deletes the archive of galaxy `name`; false when there was none.
    pub(crate) fn delete_archive(&self, name: &str) -> Result<bool, PersistError> {
        self.writer.delete_archive(name)
    }

    /// Reads, checks and restores the archive of galaxy `name` through the writer's
    /// creation path; the galaxy back, saved, with its lease's deadline. `None`: no
    /// archive (any more). A damaged archive is refused and left as it is.
    pub(crate) fn restore(
        &self,
        name: &str,
    ) -> Result<Option<(Galaxy, Option<Instant>)>, LifeError> {
        let Some(readers) = &self.readers else {
            return Ok(None);
        };
        let started = Instant::now();
        let read = || readers.with(Purpose::Load, |store| store.read_archive(name));
        let found =
            |body: &Result<Option<Vec<u8>>, StoreError>| u64::from(matches!(body, Ok(Some(_))));
        let Some(body) = self.metrics.slow.time(SlowKind::ArchiveRead, read, found)? else {
            return Ok(None);
        };
        let damaged = |reason: String| LifeError::DamagedArchive {
            name: name.to_owned(),
            reason,
        };
        let galaxy = archive::decode(&body).map_err(|error| damaged(error.to_string()))?;
        if galaxy.name() != name {
            return Err(damaged(format!("it holds galaxy '{}'", galaxy.name())));
        }
        let restored = self.writer.restore(Box::new(galaxy));
        // Its archive went while it was restored: a deletion won the race (not there any
        // more), or another daemon restored it (there, and that daemon's: look again).
        if restored.is_err() && !self.is_archived(name).unwrap_or(true) {
            return match self.is_stored(name) {
                Ok(false) => Ok(None),
                _ => Err(LifeError::Busy(name.to_owned())),
            };
        }
        let created = restored.map_err(|error| match &error {
            // Restored (or created) by another daemon meanwhile: look again.
            PersistError::Failed(failure) if failure.kind == FailureKind::Exists => {
                LifeError::Busy(name.to_owned())
            }
            _ => LifeError::RestoreFailed {
                name: name.to_owned(),
                reason: error.to_string(),
            },
        })?;
        self.metrics.restored();
        log::info!(target: crate::logging::PERSISTENCE,
            "galaxy '{name}' restored from its archive ({} systems, {:?})",
            created.galaxy.systems().len(), started.elapsed());
        Ok(Some((*created.galaxy, created.lease_until)))
    }
}
