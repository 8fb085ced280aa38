//! The writer thread's store, [`SqliteWriter`]: the only connection that writes rows, the
//! cache of system row ids beside it, and the checkpoint thread it asks for checkpoints;
//! how it plugs into the store's interface ([`WriteStore`]).
//!
//! Its statements live beside it: `write.rs` (a batch), `jobs.rs` (creating and deleting
//! whole galaxies in chunks), `archive.rs` (archives), `history.rs` (galaxies' history). Nothing here locks a galaxy or reads
//! one for the engine.

use std::collections::HashMap;
use std::sync::Arc;

#[cfg(any(test, feature = "testing"))]
use rusqlite::Connection;

use super::super::{
    ArchiveRow, BusyDeadline, CreationProgress, GalaxyJob, GalaxyRows, NewGalaxy, RowIds,
    StoreError, SystemIds, WriteStats, WriteStore,
};
use super::busy;
use super::checkpoint::{CheckpointMode, Checkpointer};
use super::db::Db;
#[cfg(test)]
use super::migrate::StartupCheck;
#[cfg(test)]
use crate::settings::DatabaseUrl;
use crate::settings::Synchronous;
#[cfg(test)]
use crate::systemd::Notifier;

use crate::logging::PERSISTENCE as LOG;

/// The writer thread's store: the read-write connection, the cache of system row ids, and
/// the checkpoint thread it asks for checkpoints (`None` in memory, which has no WAL).
pub struct SqliteWriter {
    pub(super) db: Db,
    pub(super) ids: HashMap<String, SystemIds>,
    pub(super) checkpointer: Option<Checkpointer>,
    /// Set at shutdown: this connection's busy waits end there (see `busy.rs`).
    pub(super) deadline: Arc<BusyDeadline>,
    /// A write failed for lack of room and none has committed since (`space.rs`).
    pub(super) short_of_room: bool,
    /// The last look for room for bulk work found too little (`space.rs`).
    pub(super) bulk_held: bool,
    /// Ordinary commits' `synchronous`, and whether durable ones run now (`sync.rs`).
    pub(super) sync: SyncState,
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
            short_of_room: false,
            bulk_held: false,
            sync: SyncState::new(synchronous),
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
    pub(super) fn schema_version(&self) -> Result<i64, StoreError> {
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
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        let result = SqliteWriter::write_batch(self, deletions, galaxies);
        self.after_write(result)
    }

    fn set_synced(&mut self, synced: bool) -> Result<(), StoreError> {
        SqliteWriter::set_synced(self, synced)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        SqliteWriter::sync(self)
    }

    fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError> {
        let result = SqliteWriter::create_chunk(self, galaxy, progress, max_systems);
        self.after_write(result)
    }

    fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError> {
        let result = SqliteWriter::purge_chunk(self, name, max_systems);
        self.after_write(result)
    }

    fn write_archive(&mut self, archive: &ArchiveRow<'_>) -> Result<WriteStats, StoreError> {
        let result = SqliteWriter::write_archive(self, archive);
        self.after_write(result)
    }

    fn delete_archive(&mut self, name: &str) -> Result<bool, StoreError> {
        let result = SqliteWriter::delete_archive(self, name);
        self.after_write(result)
    }

    fn prune_history(
        &mut self,
        older_than: std::time::Duration,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let result = SqliteWriter::prune_history(self, older_than, limit);
        self.after_write(result)
    }

    fn adopt_ids(&mut self, name: &str, ids: RowIds) {
        self.ids.insert(name.to_owned(), ids.0);
    }

    fn forget_ids(&mut self, name: &str) {
        self.ids.remove(name);
    }

    fn after_commit(&mut self) {
        self.room_back();
        let room = self.wal_room();
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.after_commit(&self.db, room);
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

    fn probe(&mut self) -> Result<(), StoreError> {
        self.probe_room()
    }

    fn room_for_bulk(&mut self) -> Result<(), StoreError> {
        self.bulk_room()
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

/// The writer connection's `synchronous`: what ordinary commits use, whether the
/// connection runs with `FULL` right now, and whether a commit since the last synced one
/// may not have reached stable storage (see `sync.rs`).
#[derive(Debug)]
pub(crate) struct SyncState {
    pub(super) ordinary: Synchronous,
    pub(super) full_now: bool,
    pub(super) unsynced: bool,
}

impl SyncState {
    pub(crate) fn new(ordinary: Synchronous) -> SyncState {
        let full = ordinary == Synchronous::Full;
        SyncState {
            full_now: full,
            // Whatever opened the file (a migration) may not be synced yet.
            unsynced: !full,
            ordinary,
        }
    }

    /// A transaction of the writer's connection committed: if it wrote to the WAL, it was
    /// synced exactly when the connection ran with `FULL`; one that wrote nothing synced
    /// nothing, and changes nothing.
    pub(super) fn committed(&mut self) {
        if super::db::take_wal_commit() {
            self.unsynced = !self.full_now;
        }
    }
}
