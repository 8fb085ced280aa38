//! Archives in the SQLite database (table `galaxy_archives`, migration 0004): archiving a
//! galaxy (its archive row and the mark that removes its live rows, in one transaction),
//! a restore's hold on its archive (see [`restore_archive`]), and the reads of archives,
//! idle galaxies and what the database holds (deleting an archive is `history.rs`'s: its
//! galaxy's history goes with it).
//!
//! A galaxy is live or archived, never both and never neither: the archive row and the
//! `deleting` mark commit together, and a restore's last chunk deletes the archive row in
//! the transaction that removes its `creating` mark.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::super::WriteStats;
use super::super::{stored_int, ArchiveInfo, ArchiveRow, NewGalaxy, Storage, StoreError};
use super::db::{Context, Db};
use super::writer::SqliteWriter;

/// Inserts an archive; a name stored already inserts nothing (the caller says so).
pub(super) const INSERT_ARCHIVE: &str = "INSERT INTO galaxy_archives (name, format, systems, body)
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING";

/// Marks a live galaxy `deleting`, as a deletion's batch does (`write.rs`), but only a live
/// one: a galaxy not stored, or with a creation or deletion unfinished, has no whole rows
/// for an archive to replace, and is left alone.
pub(super) const MARK_LIVE_DELETING: &str = "INSERT INTO galaxy_jobs (name, job)
     SELECT name, 'deleting' FROM galaxies g WHERE name = ?1
         AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     ON CONFLICT (name) DO NOTHING";

pub(super) const DELETE_ARCHIVE: &str = "DELETE FROM galaxy_archives WHERE name = ?1";
pub(super) const ARCHIVE_EXISTS: &str = "SELECT 1 FROM galaxy_archives WHERE name = ?1";
pub(super) const READ_ARCHIVE: &str = "SELECT body FROM galaxy_archives WHERE name = ?1";
pub(super) const ARCHIVES: &str =
    "SELECT name, format, systems, length(body), archived_at FROM galaxy_archives
     ORDER BY name";
pub(super) const IDLE_GALAXIES: &str =
    "SELECT name FROM galaxies g WHERE updated_at < datetime('now', ?1)
         AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     ORDER BY updated_at, name LIMIT ?2";
/// See [`measure`].
pub(super) const MEASURE: &str = "SELECT (SELECT coalesce(sum(systems), 0) FROM galaxy_sizes),
        (SELECT page_count FROM pragma_page_count())
            - (SELECT freelist_count FROM pragma_freelist_count()),
        (SELECT page_size FROM pragma_page_size()),
        count(*), coalesce(sum(systems), 0), coalesce(sum(length(body)), 0),
        (SELECT count(*) FROM galaxy_history),
        (SELECT coalesce(sum(length(body)), 0) FROM galaxy_history)
     FROM galaxy_archives";

impl SqliteWriter {
    /// [`crate::store::WriteStore::write_archive`]: the archive row and the `deleting`
    /// mark in one transaction. [`StoreError::Exists`] when an archive of that name is
    /// stored already; [`StoreError::Inconsistent`] when the galaxy is not live; nothing
    /// written on any error (the transaction rolls back on drop).
    pub(super) fn write_archive(
        &mut self,
        archive: &ArchiveRow<'_>,
    ) -> Result<WriteStats, StoreError> {
        // The galaxy has left memory, whatever follows: its next load reads its ids again.
        self.ids.remove(archive.name);
        self.db.check_file()?;
        let tx = self.db.conn.transaction().context("starting an archive")?;
        let inserted = tx
            .prepare_cached(INSERT_ARCHIVE)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    archive.name,
                    archive.format,
                    stored_int(archive.systems),
                    archive.body
                ])
            })
            .context("storing an archive")?;
        if inserted == 0 {
            return Err(StoreError::Exists(archive.name.to_owned()));
        }
        let marked = tx
            .prepare_cached(MARK_LIVE_DELETING)
            .and_then(|mut stmt| stmt.execute([archive.name]))
            .context("marking an archived galaxy's rows deleted")?;
        if marked == 0 {
            return Err(StoreError::not_live(archive.name));
        }
        tx.commit().context("committing an archive")?;
        Ok(WriteStats {
            systems: 0,
            rows: 2,
        })
    }
}

/// A creation chunk's dealings with `galaxy.name`'s archive, inside its transaction:
/// the `first` chunk of a creation refuses a name with an archive
/// ([`StoreError::Exists`]), and of a restore, one whose archive is gone; the `last`
/// chunk of a restore deletes the archive, so the galaxy is live from the commit that
/// stops it being archived, and fails with [`StoreError::ArchiveGone`] when there was none
/// to delete (deleted meanwhile: the chunk must not commit). Returns the rows written.
pub(super) fn restore_archive(
    tx: &Transaction<'_>,
    galaxy: &NewGalaxy<'_>,
    first: bool,
    last: bool,
) -> Result<u64, StoreError> {
    let name = galaxy.name;
    if first {
        let archived = tx
            .prepare_cached(ARCHIVE_EXISTS)
            .and_then(|mut stmt| stmt.exists([name]))
            .context("looking up an archive")?;
        match (galaxy.restoring, archived) {
            (false, true) => return Err(StoreError::Exists(name.to_owned())),
            (true, false) => return Err(StoreError::ArchiveGone(name.to_owned())),
            _ => {}
        }
    }
    if !(last && galaxy.restoring) {
        return Ok(0);
    }
    let deleted = tx
        .prepare_cached(DELETE_ARCHIVE)
        .and_then(|mut stmt| stmt.execute([name]))
        .context("deleting a restored archive")?;
    if deleted == 0 {
        return Err(StoreError::ArchiveGone(name.to_owned()));
    }
    Ok(1)
}

/// An `INTEGER` column as the unsigned count it holds; a negative one (never written)
/// reads as 0.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Db {
    pub(super) fn read_archive(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .prepare_cached(READ_ARCHIVE)
            .and_then(|mut stmt| stmt.query_row([name], |row| row.get(0)).optional())
            .context("reading an archive")
    }

    /// Every archive without its body: `length(body)` reads a blob's size from its
    /// record, never its overflow pages.
    pub(super) fn archives(&self) -> Result<Vec<ArchiveInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(ARCHIVES)
            .context("listing archives")?;
        let archives = stmt
            .query_map([], |row| {
                Ok(ArchiveInfo {
                    name: row.get(0)?,
                    // Out of range (never written) reads as a format no build knows.
                    format: u16::try_from(row.get::<_, i64>(1)?).unwrap_or(u16::MAX),
                    systems: count(row.get(2)?),
                    bytes: count(row.get(3)?),
                    archived_at: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
                })
            })
            .and_then(|rows| rows.collect())
            .context("listing archives")?;
        Ok(archives)
    }

    /// `updated_at` is text, `YYYY-MM-DD HH:MM:SS` in UTC (`CURRENT_TIMESTAMP`, and
    /// `UtcTime::sql` in a batch), so it compares as text with `datetime`'s answer in the
    /// same form. An `idle` beyond year 9999 makes `datetime` answer NULL: nothing.
    pub(super) fn idle_galaxies(
        &self,
        idle: Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(IDLE_GALAXIES)
            .context("listing idle galaxies")?;
        let before = format!("-{} seconds", idle.as_secs());
        let names = stmt
            .query_map(params![before, stored_int(limit)], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .context("listing idle galaxies")?;
        Ok(names)
    }

    pub(super) fn storage(&self) -> Result<Storage, StoreError> {
        measure(&self.conn).context("measuring the database")
    }
}

/// What the database on `conn` holds, live, archived and history
/// ([`crate::store::ReadStore::storage`], and `galactic-war check`), in one statement, so
/// one snapshot. `live_bytes` is the file's pages in use less the archives' and history's
/// bodies: approximate (those tables' own overhead and the schema count as live), and
/// cheap, where `dbstat` would read every page of the file.
pub fn measure(conn: &Connection) -> rusqlite::Result<Storage> {
    conn.prepare_cached(MEASURE)?.query_row([], |row| {
        let used_pages = count(row.get(1)?);
        let archived_bytes = count(row.get(5)?);
        let history_bytes = count(row.get(7)?);
        Ok(Storage {
            live_systems: count(row.get(0)?),
            live_bytes: used_pages
                .saturating_mul(count(row.get(2)?))
                .saturating_sub(archived_bytes)
                .saturating_sub(history_bytes),
            archived_galaxies: count(row.get(3)?),
            archived_systems: count(row.get(4)?),
            archived_bytes,
            history_segments: count(row.get(6)?),
            history_bytes,
        })
    })
}
