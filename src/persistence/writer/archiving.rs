//! Storing a galaxy's archive on the writer thread, and deleting an archive.
//!
//! The galaxy was taken out of memory and encoded by the caller (see
//! `persistence/archives.rs`), holding no lock and off this thread; here the archive is
//! stored in one transaction with the mark that removes the galaxy's live rows
//! ([`WriteStore::write_archive`]), and the rows then go chunk by chunk like a deletion's.
//! So a crash leaves the galaxy live (the transaction did not commit: its rows and the
//! loss window's promise stand) or archived, never both or neither. The writer spends on
//! an archive only its insert.
//!
//! [`WriteStore::write_archive`]: crate::store::WriteStore::write_archive

use super::report::{ArchiveRefused, LOG};
use super::state::Writer;
use crate::persistence::slow::{written, SlowKind};
use crate::store::{ArchiveRow, StoreError, StoreFailure};

impl Writer {
    /// Stores `archive`, whose galaxy has left memory. Refused, the caller puts the
    /// galaxy back (unless the store cannot tell whether the archive committed: then it
    /// sends the same archive again, which settles it).
    pub(super) fn write_archive(&mut self, archive: &ArchiveRow<'_>) -> Result<(), ArchiveRefused> {
        if !self.creating {
            return Err(ArchiveRefused::Stopped);
        }
        let name = archive.name;
        let store = &mut self.store;
        let stored = (self.metrics.slow).time(
            SlowKind::ArchiveWrite,
            || store.write_archive(archive),
            written,
        );
        match stored {
            Ok(_) => {
                // Its changes are in the archive: nothing of it is left to save.
                self.pending.remove(name);
                self.publish_oldest();
                self.saved_ticks.remove(name);
                self.store.forget_ids(name);
                self.last_commit = Some(self.clock.now());
                self.store.after_commit();
                // Its live rows go chunk by chunk, like a deletion's.
                self.jobs.purge(name.to_owned());
                Ok(())
            }
            Err(error) => {
                let unsettled = self.store.archive_unsettled(name);
                let failure = error.failure();
                match error {
                    // Taken by another daemon: lost like any galaxy, its changes counted.
                    StoreError::Lost(lost) => self.lose(lost),
                    error => log::warn!(target: LOG,
                        "galaxy '{name}': its archive was not stored: {error}"),
                }
                Err(ArchiveRefused::Failed { failure, unsettled })
            }
        }
    }

    /// Deletes the archive of galaxy `name`; false when there was none.
    pub(super) fn delete_archive(&mut self, name: &str) -> Result<bool, StoreFailure> {
        let deleted = self
            .store
            .delete_archive(name)
            .map_err(|error| error.failure())?;
        if deleted {
            log::info!(target: LOG, "the archive of galaxy '{name}' is deleted");
        }
        Ok(deleted)
    }
}
