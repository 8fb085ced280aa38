//! Archiving a galaxy on the writer thread, and deleting an archive.
//!
//! The writer takes the galaxy out of memory between batches (no cut of it is in flight
//! then), encodes it whole, unsaved changes included, and stores the archive in one
//! transaction with the mark that removes its live rows ([`WriteStore::write_archive`]);
//! the rows then go chunk by chunk like a deletion's. So a crash leaves the galaxy live
//! (the transaction did not commit: its rows and the loss window's promise stand) or
//! archived, never both or neither. Refused, the galaxy goes back into memory as it was.
//!
//! The encoding runs on the writer thread, holding no lock: about 16 ms per 100 000
//! systems (`cargo bench -- --only 14`), once per galaxy archived.
//!
//! [`WriteStore::write_archive`]: crate::store::WriteStore::write_archive

use super::report::{ArchiveRefused, ArchivedGalaxy, LOG};
use super::state::Writer;
use crate::archive;
use crate::store::{ArchiveRow, StoreFailure};

impl Writer {
    /// Archives live galaxy `name` (see the module comment).
    pub(super) fn archive(&mut self, name: &str) -> Result<ArchivedGalaxy, ArchiveRefused> {
        if !self.creating {
            return Err(ArchiveRefused::Stopped);
        }
        let started = std::time::Instant::now();
        // Its changes' age, kept if it goes back: the loss window runs from their start.
        let since = self.pending.get(name).map(|pending| pending.since);
        let archiving = self.galaxies.take_for_archive(name)?;
        let galaxy = archiving.galaxy();
        let body = archive::encode(galaxy);
        let row = ArchiveRow {
            name,
            format: archive::FORMAT_VERSION,
            systems: galaxy.systems().len() as u64,
            body: &body,
        };
        let archived = ArchivedGalaxy {
            systems: row.systems,
            bytes: body.len() as u64,
        };
        match self.store.write_archive(&row) {
            Ok(_) => {
                self.pending.remove(name);
                self.publish_oldest();
                self.saved_ticks.remove(name);
                self.store.forget_ids(name);
                self.last_commit = Some(self.clock.now());
                self.store.after_commit();
                // Its live rows go chunk by chunk, like a deletion's.
                self.jobs.purge(name.to_owned());
                drop(archiving);
                log::info!(target: LOG, "galaxy '{name}' archived ({} systems in {} bytes, {:?})",
                    archived.systems, archived.bytes, started.elapsed());
                Ok(archived)
            }
            Err(error) => {
                let cell = archiving.put_back();
                if cell.unsaved() > 0 {
                    let since = since.unwrap_or_else(|| self.clock.now());
                    self.make_pending(cell, since);
                }
                log::warn!(target: LOG, "galaxy '{name}' was not archived, and stays live: {error}");
                Err(ArchiveRefused::Failed(error.failure()))
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
