//! Archives on PostgreSQL (table `galaxy_archives`, `sql/postgres/0005_galaxy_archives.sql`):
//! archiving a galaxy (its archive row and the mark that removes its live rows, in one
//! transaction fenced by the galaxy's epoch), a restore's hold on its archive (see
//! [`restore_archive`]), and the reads of archives, idle galaxies and what the database
//! holds (deleting an archive is `history.rs`'s: its galaxy's history goes with it). The same rules as SQLite's (`../sqlite/archive.rs`).
//!
//! An archive's commit whose answer was lost (the connection broke during the `COMMIT`)
//! may or may not be in the database. The call fails (kind `Unavailable`), and the next
//! [`PostgresWriter::write_archive`] of the same archive settles it: if that archive is
//! stored and the galaxy's live rows are marked (or gone), the first commit is taken as
//! made and the call answers as it would have, having written nothing; if not, it is
//! written. Meanwhile the galaxy must be treated as archived, never as live: its rows
//! may be marked for removal already.

use std::time::Duration;

use ::postgres::{Client, GenericClient, Transaction};

use super::super::{
    stored_int, ArchiveInfo, ArchiveRow, FailureKind, NewGalaxy, Storage, StoreError, WriteStats,
};
use super::error::{retry_serialization, Context, LOG};
use super::identity::Identity;
use super::owners::{self, Fence};
use super::session::Session;
use super::writer::PostgresWriter;

/// Inserts an archive; a name stored already inserts nothing (the caller says so).
pub(super) const INSERT_ARCHIVE: &str = "INSERT INTO galaxy_archives (name, format, systems, body)
     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING";

/// Marks a live galaxy `deleting`, as a deletion's batch does (`write.rs`, `MARK_DELETING`),
/// but only a live one: a galaxy not stored, or with a creation or deletion unfinished, has
/// no whole rows for an archive to replace.
pub(super) const MARK_LIVE_DELETING: &str = "INSERT INTO galaxy_jobs (name, job)
     SELECT name, 'deleting' FROM galaxies g WHERE name = $1
         AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     ON CONFLICT (name) DO NOTHING";

/// After an archive's commit whose answer was lost: whether this archive (`$2`, its body)
/// is the one stored and the galaxy's live rows are marked for removal or gone already,
/// which is what that commit leaves.
pub(super) const ARCHIVED_ALREADY: &str =
    "SELECT a.body = $2 AND NOT EXISTS (SELECT 1 FROM galaxies g
         WHERE g.name = a.name AND NOT EXISTS
             (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name AND j.job = 'deleting'))
     FROM galaxy_archives a WHERE a.name = $1";

pub(super) const DELETE_ARCHIVE: &str = "DELETE FROM galaxy_archives WHERE name = $1";
pub(super) const ARCHIVE_EXISTS: &str = "SELECT 1 FROM galaxy_archives WHERE name = $1";
pub(super) const READ_ARCHIVE: &str = "SELECT body FROM galaxy_archives WHERE name = $1";
pub(super) const ARCHIVES: &str = "SELECT name, format, systems, octet_length(body)::bigint,
         coalesce(to_char(archived_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '')
     FROM galaxy_archives ORDER BY name COLLATE \"C\"";
pub(super) const IDLE_GALAXIES: &str = "SELECT name FROM galaxies g
     WHERE updated_at < now() - $1::bigint * interval '1 millisecond'
         AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     ORDER BY updated_at, name COLLATE \"C\" LIMIT $2";
/// See [`measure`]: `$1` the live tables.
pub(super) const MEASURE: &str =
    "SELECT (SELECT coalesce(sum(systems), 0)::bigint FROM galaxy_sizes),
         (SELECT coalesce(sum(pg_total_relation_size(t::regclass)), 0)::bigint
             FROM unnest($1::text[]) AS t),
         count(*), coalesce(sum(systems), 0)::bigint,
         coalesce(sum(octet_length(body)), 0)::bigint,
         (SELECT count(*) FROM galaxy_history),
         (SELECT coalesce(sum(octet_length(body)), 0)::bigint FROM galaxy_history)
     FROM galaxy_archives";

/// The context of an archive's commit, by which [`lost_commit`] knows it.
const COMMITTING: &str = "committing an archive";

/// Whether `error` is an archive's commit whose outcome is unknown: see `jobs.rs`.
fn lost_commit(error: &StoreError) -> bool {
    matches!(error, StoreError::Postgres { context, .. } if *context == COMMITTING)
        && error.kind() == FailureKind::Unavailable
}

/// The rows an archive writes: its own and the galaxy's mark.
const ARCHIVE_STATS: WriteStats = WriteStats {
    systems: 0,
    rows: 2,
};

/// What an archive's transaction ended with.
enum Archived {
    Committed,
    /// Settling a lost answer: the first commit is in the database. Nothing written.
    Already,
    /// An archive of that name is stored. Rolled back.
    Exists,
    /// The galaxy has no live rows. Rolled back.
    NotLive,
    /// The fence did not match: another daemon took the galaxy. Rolled back.
    Fenced,
}

impl PostgresWriter {
    /// [`crate::store::WriteStore::write_archive`]: the archive row, the `deleting` mark
    /// and the fence on the epoch this daemon owns the galaxy under, in one transaction
    /// (run again at once after a serialization failure). A galaxy this daemon does not
    /// own is [`StoreError::Lost`], and nothing is sent; a lost answer is settled by the
    /// next call (see the top of this file).
    pub(super) fn write_archive(
        &mut self,
        archive: &ArchiveRow<'_>,
    ) -> Result<WriteStats, StoreError> {
        let name = archive.name;
        // The galaxy has left memory, whatever follows: its next load reads its ids again.
        self.ids.remove(name);
        let Some(&epoch) = self.owned.get(name) else {
            return Err(self.lose(vec![name.to_owned()]));
        };
        let mut fence = Fence::default();
        fence.push(name, epoch);
        let settling = self.unsettled_archives.contains(name);
        let result = retry_serialization(|| {
            self.with_session(|session, _, me| {
                archive_in_tx(session, me, archive, &fence, settling)
            })
        });
        match &result {
            Err(error) if lost_commit(error) => {
                self.unsettled_archives.insert(name.to_owned());
            }
            // Still unknown, if it was: nothing was decided.
            Err(_) => {}
            Ok(_) => {
                self.unsettled_archives.remove(name);
            }
        }
        match result {
            Ok(Archived::Committed) => Ok(ARCHIVE_STATS),
            Ok(Archived::Already) => {
                log::info!(target: LOG, "galaxy '{name}': the archive whose commit's answer \
                    was lost is in the database");
                Ok(ARCHIVE_STATS)
            }
            Ok(Archived::Exists) => Err(StoreError::Exists(name.to_owned())),
            Ok(Archived::NotLive) => Err(StoreError::not_live(name)),
            Ok(Archived::Fenced) => Err(self.lose(vec![name.to_owned()])),
            Err(error) => Err(error),
        }
    }
}

/// An archive's transaction: every statement runs, then the verdict, in this order: a
/// lost answer settled, the fence, the name taken, the galaxy not live. Only a transaction
/// with none of these commits.
fn archive_in_tx(
    session: &mut Session,
    me: &Identity,
    archive: &ArchiveRow<'_>,
    fence: &Fence,
    settling: bool,
) -> Result<Archived, StoreError> {
    let Session { client, prepared } = session;
    let name = archive.name;
    let mut tx = client.transaction().context("starting an archive")?;
    let inserted = tx
        .execute(
            INSERT_ARCHIVE,
            &[
                &name,
                &i32::from(archive.format),
                &stored_int(archive.systems),
                &archive.body,
            ],
        )
        .context("storing an archive")?
        > 0;
    if !inserted && settling {
        let already: Option<bool> = tx
            .query_opt(ARCHIVED_ALREADY, &[&name, &archive.body])
            .context("settling an archive")?
            .map(|row| row.try_get(0))
            .transpose()
            .context("settling an archive")?;
        if already == Some(true) {
            tx.rollback().context("settling an archive")?;
            return Ok(Archived::Already);
        }
    }
    let marked = tx
        .execute(MARK_LIVE_DELETING, &[&name])
        .context("marking an archived galaxy's rows deleted")?
        > 0;
    let verdict = if !owners::fence(&mut tx, prepared, me, fence)?.is_empty() {
        Archived::Fenced
    } else if !inserted {
        Archived::Exists
    } else if !marked {
        Archived::NotLive
    } else {
        tx.commit().context(COMMITTING)?;
        return Ok(Archived::Committed);
    };
    tx.rollback().context("rolling back an archive")?;
    Ok(verdict)
}

/// A creation chunk's dealings with `galaxy.name`'s archive, inside its transaction: as
/// SQLite's (`../sqlite/archive.rs`, `restore_archive`). The first chunk refuses a name
/// with an archive, or a restore whose archive is gone; a restore's last chunk deletes
/// its archive, failing with [`StoreError::ArchiveGone`] when another session deleted it
/// first (the row's lock orders the two deletes: the second finds nothing). Returns the
/// rows written.
pub(super) fn restore_archive(
    tx: &mut Transaction<'_>,
    galaxy: &NewGalaxy<'_>,
    first: bool,
    last: bool,
) -> Result<u64, StoreError> {
    let name = galaxy.name;
    if first {
        let archived = tx
            .query_opt(ARCHIVE_EXISTS, &[&name])
            .context("looking up an archive")?
            .is_some();
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
        .execute(DELETE_ARCHIVE, &[&name])
        .context("deleting a restored archive")?;
    if deleted == 0 {
        return Err(StoreError::ArchiveGone(name.to_owned()));
    }
    Ok(1)
}

/// A `BIGINT` count as unsigned; a negative one (never written) reads as 0.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(super) fn read_archive(client: &mut Client, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    client
        .query_opt(READ_ARCHIVE, &[&name])
        .context("reading an archive")?
        .map(|row| row.try_get(0))
        .transpose()
        .context("reading an archive")
}

/// Every archive without its body: `octet_length` reads a stored value's size from its
/// TOAST pointer, never the value.
pub(super) fn archives(client: &mut Client) -> Result<Vec<ArchiveInfo>, StoreError> {
    const CONTEXT: &str = "listing archives";
    let rows = client.query(ARCHIVES, &[]).context(CONTEXT)?;
    rows.iter()
        .map(|row| {
            let format: i32 = row.try_get(1).context(CONTEXT)?;
            Ok(ArchiveInfo {
                name: row.try_get(0).context(CONTEXT)?,
                // Out of range (never written) reads as a format no build knows.
                format: u16::try_from(format).unwrap_or(u16::MAX),
                systems: count(row.try_get(2).context(CONTEXT)?),
                bytes: count(row.try_get(3).context(CONTEXT)?),
                archived_at: row.try_get(4).context(CONTEXT)?,
            })
        })
        .collect()
}

/// The longest `idle` asked of the server: now less a longer interval would leave the
/// range of its timestamps. Nothing was saved that long ago.
const IDLE_MAX: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

pub(super) fn idle_galaxies(
    client: &mut Client,
    idle: Duration,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let idle_ms = stored_int(idle.min(IDLE_MAX).as_millis());
    let rows = client
        .query(IDLE_GALAXIES, &[&idle_ms, &stored_int(limit)])
        .context("listing idle galaxies")?;
    rows.iter()
        .map(|row| row.try_get(0).context("listing idle galaxies"))
        .collect()
}

/// The tables of live galaxies, whose sizes (rows, indexes, TOAST) are `live_bytes`.
const LIVE_TABLES: &[&str] = &[
    "galaxies",
    "systems",
    "structures",
    "events",
    "galaxy_jobs",
    "galaxy_sizes",
    "galaxy_owners",
];

/// What the database holds, live, archived and history
/// ([`crate::store::ReadStore::storage`], and `galactic-war check`): one statement, so one snapshot of the counts (the relations'
/// sizes are their files' as they are).
pub fn measure(client: &mut impl GenericClient) -> Result<Storage, StoreError> {
    const CONTEXT: &str = "measuring the database";
    let tables: Vec<&str> = LIVE_TABLES.to_vec();
    let row = client.query_one(MEASURE, &[&tables]).context(CONTEXT)?;
    let value = |column: usize| -> Result<u64, StoreError> {
        Ok(count(row.try_get(column).context(CONTEXT)?))
    };
    Ok(Storage {
        live_systems: value(0)?,
        live_bytes: value(1)?,
        archived_galaxies: value(2)?,
        archived_systems: value(3)?,
        archived_bytes: value(4)?,
        history_segments: value(5)?,
        history_bytes: value(6)?,
    })
}
