//! Durable commits on request. The writer's connection runs ordinary batches with the
//! configured `synchronous` (`NORMAL` by default: in WAL mode a commit then survives a
//! crash of the process, not of the machine), and the commits a durable request waits
//! for with `synchronous = FULL`, which syncs the WAL before the commit returns. The WAL
//! is one file written in order, so that sync covers every commit before it as well.
//!
//! A durable request whose change an earlier, ordinary commit already carried has
//! nothing left to write: [`SqliteWriter::sync`] then makes a synced commit of its own
//! (it rewrites `PRAGMA user_version` with the value it has, one page), whose sync of
//! the WAL covers the earlier commits.

use super::super::StoreError;
use super::db::Context;
use super::migrate::SCHEMA_VERSION;
use super::writer::SqliteWriter;
use crate::logging::PERSISTENCE as LOG;
use crate::settings::Synchronous;

impl SqliteWriter {
    /// [`crate::store::WriteStore::set_synced`]: `FULL` while `synced`, the configured
    /// value otherwise. A pragma on the connection, outside any transaction: no I/O.
    pub(super) fn set_synced(&mut self, synced: bool) -> Result<(), StoreError> {
        let full = synced || self.sync.ordinary == Synchronous::Full;
        if full == self.sync.full_now {
            return Ok(());
        }
        let sql = if full {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        };
        self.db
            .conn
            .execute_batch(sql)
            .context("setting synchronous for a durable commit")?;
        self.sync.full_now = full;
        Ok(())
    }

    /// [`crate::store::WriteStore::sync`]: nothing when every commit so far was synced;
    /// otherwise a synced commit of one page (see the module's doc).
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        if !self.sync.unsynced {
            return Ok(());
        }
        self.db.check_file()?;
        self.set_synced(true)?;
        // Migrated at start-up, so the file holds exactly this version.
        let written = self
            .db
            .conn
            .execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .context("syncing earlier commits");
        let written = self.after_write(written);
        // The sync is done either way; a connection left on FULL only costs time.
        if let Err(error) = self.set_synced(false) {
            log::warn!(target: LOG, "back to ordinary commits after a sync: {error}");
        }
        written
    }

    /// The connection's `synchronous` as SQLite reports it (0 off, 1 normal, 2 full).
    #[cfg(test)]
    pub(super) fn synchronous_now(&self) -> i64 {
        self.db
            .conn
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap_or(-1)
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::{DatabaseUrl, Synchronous};
    use crate::store::sqlite::SqliteWriter;
    use crate::store::WriteStore;

    fn wal_len(dir: &tempfile::TempDir, name: &str) -> u64 {
        std::fs::metadata(dir.path().join(format!("{name}-wal"))).map_or(0, |m| m.len())
    }

    #[test]
    fn durable_commits_run_full_and_ordinary_ones_go_back_to_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::File(dir.path().join("sync.db"));
        let mut store = SqliteWriter::open(&url, Synchronous::Normal).unwrap();
        assert_eq!(store.synchronous_now(), 1);
        WriteStore::set_synced(&mut store, true).unwrap();
        assert_eq!(store.synchronous_now(), 2);
        WriteStore::set_synced(&mut store, false).unwrap();
        assert_eq!(store.synchronous_now(), 1);

        let mut full = SqliteWriter::open(
            &DatabaseUrl::File(dir.path().join("full.db")),
            Synchronous::Full,
        )
        .unwrap();
        WriteStore::set_synced(&mut full, false).unwrap();
        assert_eq!(full.synchronous_now(), 2, "full stays full");
    }

    #[test]
    fn a_sync_after_unsynced_commits_makes_one_synced_commit_and_then_none() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::File(dir.path().join("sync.db"));
        let mut store = SqliteWriter::open(&url, Synchronous::Normal).unwrap();
        let version = store.schema_version().unwrap();
        let before = wal_len(&dir, "sync.db");
        WriteStore::sync(&mut store).unwrap();
        let after = wal_len(&dir, "sync.db");
        assert!(after > before, "a commit was written: {before} -> {after}");
        assert_eq!(store.schema_version().unwrap(), version, "unchanged");
        assert_eq!(store.synchronous_now(), 1, "back to normal");
        WriteStore::sync(&mut store).unwrap();
        assert_eq!(wal_len(&dir, "sync.db"), after, "nothing left to sync");
    }
}
