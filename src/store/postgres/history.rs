//! Galaxies' history on PostgreSQL (table `galaxy_history`,
//! `sql/postgres/0006_galaxy_history.sql`): the same rules as SQLite's
//! (`../sqlite/history.rs`). A batch's segments are one set-based insert inside its
//! fenced transaction, before the fence (`write.rs`), so a batch fenced out or failed
//! writes no history; a purge deletes a galaxy's history inside its fenced chunk.

use std::time::Duration;

use ::postgres::{Client, IsolationLevel, Transaction};

use super::super::history::{read_history, segments, SegmentInfo, SEGMENT_SIZE};
use super::super::{stored_int, GalaxyRows, StoreError};
use super::archive::DELETE_ARCHIVE;
use super::error::{retry_serialization, Context};
use super::session::Prepared;
use super::writer::PostgresWriter;
use crate::model::HistoryEntry;

/// The segments and body bytes one insert carries at most: a batch's history is one
/// statement unless it is large, and a statement is answered well within the call timeout
/// (as `write.rs`'s `STATEMENT_ROWS`, whose cap the unit tests lower likewise, so that
/// their small batches cross statement boundaries).
const STATEMENT_SEGMENTS: usize = if cfg!(test) { 7 } else { 20_000 };
const STATEMENT_BYTES: usize = 8 << 20;

/// A batch's segments, in order; `WITH ORDINALITY … ORDER BY` keeps that order for the
/// ids the identity gives them (id order is save order).
pub(super) const INSERT_HISTORY: &str = "INSERT INTO galaxy_history
         (galaxy_name, first_tick, last_tick, entries, body)
     SELECT name, first_tick, last_tick, entries, body
     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[], $5::bytea[])
         WITH ORDINALITY AS u(name, first_tick, last_tick, entries, body, at)
     ORDER BY at";

/// Up to `$2` segments of galaxy `$1`, unless an archive of that name is stored: an
/// archived galaxy keeps its history while its live rows are purged.
pub(super) const PURGE_HISTORY: &str = "DELETE FROM galaxy_history WHERE id IN
     (SELECT id FROM galaxy_history WHERE galaxy_name = $1
          AND NOT EXISTS (SELECT 1 FROM galaxy_archives WHERE name = $1)
      LIMIT $2)";

pub(super) const DELETE_HISTORY: &str = "DELETE FROM galaxy_history WHERE galaxy_name = $1";
/// Oldest first, by the `saved_at` index.
pub(super) const PRUNE_HISTORY: &str = "DELETE FROM galaxy_history WHERE id IN
     (SELECT id FROM galaxy_history
      WHERE saved_at < now() - $1::bigint * interval '1 millisecond'
      ORDER BY saved_at LIMIT $2)";
pub(super) const LIST_HISTORY: &str = "SELECT id, first_tick, last_tick, entries::bigint
     FROM galaxy_history WHERE galaxy_name = $1 AND last_tick >= $2 ORDER BY id";
pub(super) const READ_SEGMENTS: &str =
    "SELECT id, body FROM galaxy_history WHERE id = ANY($1::bigint[])";

/// The longest age asked of the server: now less a longer interval would leave the range
/// of its timestamps. Nothing was saved that long ago.
const AGE_MAX: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

/// A batch's segments as the arrays the insert takes, built (and compressed) before its
/// transaction begins.
#[derive(Default)]
pub(super) struct HistoryRows {
    names: Vec<String>,
    first_ticks: Vec<i64>,
    last_ticks: Vec<i64>,
    entries: Vec<i32>,
    bodies: Vec<Vec<u8>>,
}

impl HistoryRows {
    /// The segments of `galaxy`'s history, after those pushed before.
    pub(super) fn push(&mut self, galaxy: &GalaxyRows) {
        for segment in segments(&galaxy.history, SEGMENT_SIZE) {
            self.names.push(galaxy.name.clone());
            self.first_ticks.push(stored_int(segment.first_tick));
            self.last_ticks.push(stored_int(segment.last_tick));
            // At most SEGMENT_ENTRIES, far inside an i32.
            self.entries
                .push(i32::try_from(segment.entries).unwrap_or(i32::MAX));
            self.bodies.push(segment.body);
        }
    }

    /// Inserts them in `tx`, one statement unless they are many or large; returns the
    /// rows written.
    pub(super) fn write(
        &self,
        tx: &mut Transaction<'_>,
        prepared: &mut Prepared,
    ) -> Result<u64, StoreError> {
        if self.names.is_empty() {
            return Ok(0);
        }
        let statement = prepared.get(tx, INSERT_HISTORY)?;
        let mut from = 0;
        while from < self.names.len() {
            let mut to = from;
            let mut bytes = 0;
            while to < self.names.len()
                && to - from < STATEMENT_SEGMENTS
                && (to == from || bytes + self.bodies[to].len() <= STATEMENT_BYTES)
            {
                bytes += self.bodies[to].len();
                to += 1;
            }
            let part = from..to;
            tx.execute(
                &statement,
                &[
                    &&self.names[part.clone()],
                    &&self.first_ticks[part.clone()],
                    &&self.last_ticks[part.clone()],
                    &&self.entries[part.clone()],
                    &&self.bodies[part],
                ],
            )
            .context("saving history")?;
            from = to;
        }
        Ok(self.names.len() as u64)
    }
}

impl PostgresWriter {
    /// [`crate::store::WriteStore::delete_archive`]: the archive and, if there was one,
    /// the history of its name, in one transaction. Not fenced: an archive has no owner
    /// (its galaxy's ownership row went with its rows), and two daemons deleting it, or
    /// one deleting it while another restores it, meet on the row: one of them finds it
    /// gone.
    pub(super) fn delete_archive(&mut self, name: &str) -> Result<bool, StoreError> {
        retry_serialization(|| {
            self.with_session(|session, _, _| {
                let mut tx = session
                    .client
                    .transaction()
                    .context("deleting an archive")?;
                let deleted = tx
                    .execute(DELETE_ARCHIVE, &[&name])
                    .context("deleting an archive")?;
                // No archive: the name may be a live galaxy's, whose history stays.
                if deleted > 0 {
                    tx.execute(DELETE_HISTORY, &[&name])
                        .context("deleting an archived galaxy's history")?;
                }
                tx.commit().context("committing an archive's deletion")?;
                Ok(deleted > 0)
            })
        })
    }

    /// [`crate::store::WriteStore::prune_history`]: one statement, oldest first by the
    /// `saved_at` index. Not fenced: history past its keeping time is nobody's to keep,
    /// and two daemons pruning at once delete each segment once.
    pub(super) fn prune_history(
        &mut self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let age_ms = stored_int(older_than.min(AGE_MAX).as_millis());
        let limit = stored_int(limit);
        retry_serialization(|| {
            self.with_session(|session, _, _| {
                session
                    .client
                    .execute(PRUNE_HISTORY, &[&age_ms, &limit])
                    .context("pruning history")
            })
        })
    }
}

/// [`crate::store::ReadStore::history`] in one read-only snapshot (the listing and the
/// bodies agree), the bodies fetched a group at a time.
pub(super) fn history(
    client: &mut Client,
    name: &str,
    since_tick: u64,
    limit: usize,
) -> Result<Vec<HistoryEntry>, StoreError> {
    const CONTEXT: &str = "reading history";
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .context(CONTEXT)?;
    let listed = tx
        .query(LIST_HISTORY, &[&name, &stored_int(since_tick)])
        .context(CONTEXT)?
        .iter()
        .map(|row| {
            Ok(SegmentInfo {
                id: row.try_get(0)?,
                first_tick: row.try_get(1)?,
                last_tick: row.try_get(2)?,
                entries: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, ::postgres::Error>>()
        .context(CONTEXT)?;
    let entries = read_history(name, since_tick, limit, listed, |ids| {
        tx.query(READ_SEGMENTS, &[&ids])
            .context(CONTEXT)?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<_>, ::postgres::Error>>()
            .context(CONTEXT)
    })?;
    // Read-only: ending it changes nothing.
    tx.rollback().context(CONTEXT)?;
    Ok(entries)
}
