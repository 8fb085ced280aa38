//! The engine's side of archives in the database: looking them up through the pool of
//! read-only connections, and restoring one through the writer (README, *Archives and
//! moving a deployment*). Archiving itself is the writer's (`writer/archiving.rs`).

use std::time::Instant;

use super::loads::Purpose;
use super::writer::{ArchiveRefused, ArchivedGalaxy, PersistError};
use super::Engine;
use crate::archive;
use crate::galaxies::LifeError;
use crate::model::Galaxy;
use crate::store::{ArchiveInfo, FailureKind, Storage, StoreError};

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
            Some(readers) => readers.with(Purpose::Lookup, |store| store.archives()),
            None => Ok(Vec::new()),
        }
    }

    /// What the database holds, live and archived.
    pub(crate) fn storage(&self) -> Result<Option<Storage>, StoreError> {
        match &self.readers {
            Some(readers) => readers.with(Purpose::Lookup, |store| store.storage().map(Some)),
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
            Some(readers) => {
                readers.with(Purpose::Lookup, |store| store.idle_galaxies(idle, limit))
            }
            None => Ok(Vec::new()),
        }
    }

    /// Archives live galaxy `name` (the writer takes it out of memory).
    pub(crate) fn archive(&self, name: &str) -> Result<ArchivedGalaxy, ArchiveRefused> {
        let archived = self.writer.archive(name)?;
        self.metrics.archived();
        Ok(archived)
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
        let Some(body) = readers.with(Purpose::Load, |store| store.read_archive(name))? else {
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
        let created = self
            .writer
            .restore(Box::new(galaxy))
            .map_err(|error| match &error {
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
