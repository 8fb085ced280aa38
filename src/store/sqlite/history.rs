//! Galaxies' history in the SQLite database (table `galaxy_history`, migration 0005): the
//! segments a batch inserts in its own transaction, their removal with a galaxy that is
//! not archived or with an archive, pruning by age, and the read that pages them back
//! (its rule is `../history.rs`'s).

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Transaction};

use super::super::history::{read_history, segments, SegmentInfo, SEGMENT_SIZE};
use super::super::{stored_int, GalaxyRows, StoreError};
use super::archive::DELETE_ARCHIVE;
use super::db::{Context, Db};
use super::writer::SqliteWriter;
use crate::model::HistoryEntry;

/// Deletes up to `$2` segments of galaxy `$1`, unless an archive of that name is stored:
/// an archived galaxy keeps its history while its live rows are purged.
pub(super) const PURGE_HISTORY: &str = "DELETE FROM galaxy_history WHERE id IN
     (SELECT id FROM galaxy_history WHERE galaxy_name = ?1
          AND NOT EXISTS (SELECT 1 FROM galaxy_archives WHERE name = ?1)
      LIMIT ?2)";
pub(super) const INSERT_HISTORY: &str = "INSERT INTO galaxy_history
         (galaxy_name, first_tick, last_tick, entries, body, saved_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
pub(super) const DELETE_HISTORY: &str = "DELETE FROM galaxy_history WHERE galaxy_name = ?1";
/// Oldest first, by the `saved_at` index (whose entries end with the row id).
pub(super) const PRUNE_HISTORY: &str = "DELETE FROM galaxy_history WHERE id IN
     (SELECT id FROM galaxy_history WHERE saved_at < datetime('now', ?1)
      ORDER BY saved_at, id LIMIT ?2)";
pub(super) const LIST_HISTORY: &str = "SELECT id, first_tick, last_tick, entries
     FROM galaxy_history WHERE galaxy_name = ?1 AND last_tick >= ?2 ORDER BY id";
pub(super) const READ_SEGMENT: &str = "SELECT body FROM galaxy_history WHERE id = ?1";

/// Inserts the segments of every galaxy of a batch that has history, inside the batch's
/// transaction `tx`, `now` (as [`crate::time::UtcTime::sql`] formats it) as their
/// `saved_at`; returns the rows written.
pub(super) fn insert_history(
    tx: &Transaction<'_>,
    now: &str,
    galaxies: &[GalaxyRows],
) -> Result<u64, StoreError> {
    let mut written = 0;
    for galaxy in galaxies.iter().filter(|g| !g.history.is_empty()) {
        let mut insert = tx
            .prepare_cached(INSERT_HISTORY)
            .context("preparing the history insert")?;
        for segment in segments(&galaxy.history, SEGMENT_SIZE) {
            insert
                .execute(params![
                    galaxy.name,
                    stored_int(segment.first_tick),
                    stored_int(segment.last_tick),
                    stored_int(segment.entries),
                    segment.body,
                    now
                ])
                .context("saving history")?;
            written += 1;
        }
    }
    Ok(written)
}

/// A purge's step once a galaxy's systems are gone: up to `limit` of its history
/// segments deleted in `tx`, none if it is archived; returns how many.
pub(super) fn purge_history(
    tx: &Transaction<'_>,
    name: &str,
    limit: i64,
) -> Result<u64, StoreError> {
    let deleted = tx
        .prepare_cached(PURGE_HISTORY)
        .and_then(|mut stmt| stmt.execute(params![name, limit]))
        .context("deleting a galaxy's history")?;
    Ok(deleted as u64)
}

impl SqliteWriter {
    /// [`crate::store::WriteStore::delete_archive`]: the archive and, if there was one,
    /// the history of its name, in one transaction.
    pub(super) fn delete_archive(&mut self, name: &str) -> Result<bool, StoreError> {
        self.db.check_file()?;
        let tx = self.db.conn.transaction().context("deleting an archive")?;
        let deleted = tx
            .prepare_cached(DELETE_ARCHIVE)
            .and_then(|mut stmt| stmt.execute([name]))
            .context("deleting an archive")?;
        // No archive: the name may be a live galaxy's, whose history stays.
        if deleted > 0 {
            tx.prepare_cached(DELETE_HISTORY)
                .and_then(|mut stmt| stmt.execute([name]))
                .context("deleting an archived galaxy's history")?;
        }
        tx.commit().context("committing an archive's deletion")?;
        Ok(deleted > 0)
    }

    /// [`crate::store::WriteStore::prune_history`]: `saved_at` is text in UTC, compared
    /// as text with `datetime`'s answer in the same form (an `older_than` beyond year
    /// 9999 makes it NULL: nothing is pruned).
    pub(super) fn prune_history(
        &mut self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.db.check_file()?;
        let before = format!("-{} seconds", older_than.as_secs());
        let tx = self.db.conn.transaction().context("pruning history")?;
        let deleted = tx
            .prepare_cached(PRUNE_HISTORY)
            .and_then(|mut stmt| stmt.execute(params![before, stored_int(limit)]))
            .context("pruning history")?;
        tx.commit().context("committing a prune of history")?;
        Ok(deleted as u64)
    }
}

impl Db {
    /// [`crate::store::ReadStore::history`], in one read transaction (one snapshot for
    /// the listing and the bodies).
    pub(super) fn history(
        &self,
        name: &str,
        since_tick: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .context("reading history")?;
        let listed: Vec<SegmentInfo> = tx
            .prepare_cached(LIST_HISTORY)
            .and_then(|mut stmt| {
                stmt.query_map(params![name, stored_int(since_tick)], |row| {
                    Ok(SegmentInfo {
                        id: row.get(0)?,
                        first_tick: row.get(1)?,
                        last_tick: row.get(2)?,
                        entries: row.get(3)?,
                    })
                })?
                .collect()
            })
            .context("listing history")?;
        let mut body = tx.prepare_cached(READ_SEGMENT).context("reading history")?;
        let entries = read_history(name, since_tick, limit, listed, |ids| {
            let mut bodies = Vec::with_capacity(ids.len());
            for &id in ids {
                // A body that is no blob reads as none, which does not decode: damaged.
                let found: Option<Vec<u8>> = body
                    .query_row([id], |row| {
                        Ok(row
                            .get_ref(0)?
                            .as_blob()
                            .map(<[u8]>::to_vec)
                            .unwrap_or_default())
                    })
                    .optional()
                    .context("reading history")?;
                bodies.extend(found.map(|b| (id, b)));
            }
            Ok(bodies)
        })?;
        drop(body);
        // Read-only: ending it changes nothing.
        tx.rollback().context("reading history")?;
        Ok(entries)
    }
}
