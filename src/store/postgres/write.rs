//! A batch on PostgreSQL: one transaction, one statement per table for every
//! [`STATEMENT_ROWS`] rows, every row passed in arrays and expanded by `unnest` on the
//! server, so a batch of 100 000 systems costs a few dozen round trips, not 100 000.
//!
//! Why the cap: each statement must be answered within the call timeout
//! (`GWAR_DB_CALL_TIMEOUT_SECS`, 5 s by default; see `stall.rs`), or its connection is
//! abandoned and the batch retried — and a batch that can never be answered in time
//! would be retried for ever. One statement of a 100 000-system batch's 500 000
//! structure rows took longer than that on a busy machine (`cargo bench -- --only 10`).

use std::collections::HashMap;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{GenericClient, Transaction};

use super::super::{
    stored_int, stored_row, GalaxyRows, StoreError, StoredSystem, SystemIds, WriteStats,
};
use super::error::{serialization_failure, unreplicated_commits, Context};
use super::history::HistoryRows;
use super::identity::Identity;
use super::owners::{self, Fence};
use super::session::{Prepared, Session};
use super::writer::PostgresWriter;
use crate::model::RowMask;

/// The most rows one statement of a batch writes: a few tenths of a second at the rates
/// measured here (section 10), far inside any call timeout of a second or more. The unit
/// tests use a handful, so that their small batches cross statement boundaries.
const STATEMENT_ROWS: usize = if cfg!(test) { 7 } else { 20_000 };

/// Marks galaxies deleted (see `jobs.rs`); a galaxy not stored is skipped.
pub(super) const MARK_DELETING: &str = "INSERT INTO galaxy_jobs (name, job)
     SELECT name, 'deleting' FROM galaxies WHERE name = ANY($1::text[])
     ON CONFLICT (name) DO UPDATE SET job = 'deleting'";

pub(super) const UPDATE_TICKS: &str = "UPDATE galaxies g SET tick = u.tick, updated_at = now()
     FROM unnest($1::text[], $2::bigint[]) AS u(name, tick) WHERE g.name = u.name";

/// `updated_at = now()`: the transaction's start, one instant for the batch's rows.
pub(super) const UPDATE_SYSTEMS: &str = "UPDATE systems s SET metal = u.metal, crew = u.crew,
     water = u.water, current_tick = u.current_tick, updated_at = now()
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
         AS u(id, metal, crew, water, current_tick)
     WHERE s.id = u.id";

/// An update by the unique key, and an insert of the rows it found no row for (a row
/// missing from the database is written, not lost). Not `INSERT … ON CONFLICT DO
/// UPDATE`: that attempts the insert first, drawing an id from the sequence for every
/// row of every save, while nearly every save is an update.
pub(super) const UPSERT_STRUCTURES: &str = "WITH u AS (
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])
             AS u(system_id, structure_type, level)
     ), updated AS (
         UPDATE structures s SET level = u.level, updated_at = now() FROM u
         WHERE s.system_id = u.system_id AND s.structure_type = u.structure_type
         RETURNING s.system_id, s.structure_type
     )
     INSERT INTO structures (system_id, structure_type, level, updated_at)
     SELECT u.system_id, u.structure_type, u.level, now() FROM u
     WHERE NOT EXISTS (SELECT 1 FROM updated d
         WHERE d.system_id = u.system_id AND d.structure_type = u.structure_type)";

/// Every event change of a batch in one statement, by the events' row ids: deletions,
/// updates, and inserts, whose new ids come back (beside their system's id) for the
/// cache. The last row, id -1, counts the rows deleted and updated, to check the cache.
pub(super) const WRITE_EVENTS: &str = "WITH deleted AS (
         DELETE FROM events WHERE id = ANY($1::bigint[]) RETURNING 1
     ), updated AS (
         UPDATE events e SET completion_tick = u.completion_tick,
             structure_type = u.structure_type
         FROM unnest($2::bigint[], $3::bigint[], $4::text[])
             AS u(id, completion_tick, structure_type)
         WHERE e.id = u.id RETURNING 1
     ), inserted AS (
         INSERT INTO events (system_id, completion_tick, action_type, structure_type)
         SELECT u.system_id, u.completion_tick, 'build', u.structure_type
         FROM unnest($5::bigint[], $6::bigint[], $7::text[])
             AS u(system_id, completion_tick, structure_type)
         RETURNING id, system_id
     )
     SELECT id, system_id FROM inserted
     UNION ALL
     SELECT -1, (SELECT count(*) FROM deleted) + (SELECT count(*) FROM updated)";

/// The events are found by the range of the galaxy's system ids, as a load finds them
/// (`load.rs`, `STRUCTURES`): a plain join on `system_id` is hashed over the whole events
/// table for a galaxy that is a few percent of the database (the plan test, `plans.rs`).
pub(super) const FETCH_IDS: &str = "WITH r AS (
         SELECT min(id) AS first, max(id) AS last FROM systems WHERE galaxy_name = $1
     )
     SELECT s.id, s.x, s.y, e.id FROM systems s
     LEFT JOIN (SELECT e.id, e.system_id FROM events e, r
         WHERE e.system_id BETWEEN r.first AND r.last) e ON e.system_id = s.id
     WHERE s.galaxy_name = $1 ORDER BY s.x, s.y";

/// How many times a batch that met a serialization failure (40001: a distributed
/// database's serializable transactions, never PostgreSQL's read committed ones) is run
/// again from scratch before the failure is returned: nothing of it was committed.
const SERIALIZATION_ATTEMPTS: u32 = 3;

/// What a batch's transaction ended with.
enum Written {
    Committed(WriteStats),
    /// The fence matched none of these galaxies (another daemon took them): rolled back.
    Fenced(Vec<String>),
}

impl PostgresWriter {
    /// [`crate::store::WriteStore::write_batch`], and with `release_all`
    /// [`crate::store::WriteStore::write_final_batch`]: deletions first
    /// (their rows are removed later, in chunks: see `jobs.rs`), then every galaxy's tick
    /// and changed rows and its history's segments (`history.rs`), then the fence over every galaxy written or deleted (and with
    /// `release_all`, the release of every galaxy owned), then the commit.
    ///
    /// A galaxy this daemon does not own (any more) is never written: the batch fails
    /// with [`StoreError::Lost`] naming only those galaxies, and nothing is written.
    /// On any error the batch's galaxies are dropped from the id cache, which may have
    /// run ahead of what was rolled back, or behind a commit whose answer the connection
    /// lost.
    pub(super) fn write_fenced(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
        release_all: bool,
    ) -> Result<WriteStats, StoreError> {
        let fence = self.batch_fence(deletions, galaxies)?;
        let nothing_to_write = fence.names.is_empty() && galaxies.is_empty();
        let mut release = Fence::default();
        if release_all {
            // The galaxies disowned too: released only if still held under their epoch
            // (nothing loads them again during a stop, and one another daemon took since
            // is left alone by the release's own check).
            for (name, &epoch) in self.owned.iter().chain(&self.disowned) {
                release.push(name, epoch);
            }
            if nothing_to_write && release.names.is_empty() {
                return Ok(WriteStats::default());
            }
        }
        let (fencing, unfenced) = (self.fencing, Fence::default());
        // Galaxies put back in memory after their archive's commit answer was lost: this
        // batch makes them live in the database, whatever that commit did.
        let unarchive: Vec<String> = galaxies
            .iter()
            .map(|galaxy| galaxy.name.clone())
            .filter(|name| self.unsettled_archives.contains(name))
            .collect();
        let mut attempt = 1;
        loop {
            let unreplicated = unreplicated_commits();
            let result = self.with_session(|session, cache, me| {
                for galaxy in galaxies {
                    if !cache.contains_key(&galaxy.name) && !galaxy.systems.is_empty() {
                        let ids =
                            fetch_ids(&mut session.client, &mut session.prepared, &galaxy.name)?;
                        cache.insert(galaxy.name.clone(), ids);
                    }
                }
                // Everything the transaction sends is ready before it begins: a
                // transaction never waits on this side between its statements.
                let built = build_rows(cache, galaxies)?;
                let Session { client, prepared } = session;
                let tx = client.transaction().context("starting a batch")?;
                let fence = if fencing { &fence } else { &unfenced };
                let batch = Batch {
                    deletions,
                    unarchive: &unarchive,
                    galaxies,
                };
                write_rows(tx, prepared, cache, batch, built, fence, &release, me)
            });
            if !matches!(result, Ok(Written::Committed(_))) {
                for galaxy in galaxies {
                    self.ids.remove(&galaxy.name);
                }
            }
            // Committed on the primary only: written again (idempotent) if the writer
            // goes on, reported unsaved if it is stopping.
            if matches!(result, Ok(Written::Committed(_))) && unreplicated_commits() != unreplicated
            {
                return Err(StoreError::Unreplicated(self.label().to_owned()));
            }
            match result {
                Ok(Written::Committed(stats)) => {
                    for name in deletions {
                        self.ids.remove(name);
                    }
                    for name in &unarchive {
                        self.unsettled_archives.remove(name);
                    }
                    if release_all {
                        self.owned.clear();
                        self.disowned.clear();
                    }
                    return Ok(stats);
                }
                Ok(Written::Fenced(missing)) => return Err(self.lose(missing)),
                Err(error) if serialization_failure(&error) && attempt < SERIALIZATION_ATTEMPTS => {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The fence over every galaxy the batch deletes or writes, each once; fails with
    /// [`StoreError::Lost`] naming those this daemon does not own (any more).
    fn batch_fence(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<Fence, StoreError> {
        let mut fence = Fence::default();
        let mut unowned = Vec::new();
        let written = galaxies
            .iter()
            .filter(|galaxy| galaxy.tick.is_some() || !galaxy.systems.is_empty())
            .map(|galaxy| &galaxy.name);
        // A name both deleted and written (or listed twice) is fenced once.
        let mut seen = std::collections::HashSet::new();
        for name in deletions.iter().chain(written) {
            if !seen.insert(name) {
                continue;
            }
            match self.owned.get(name) {
                Some(&epoch) => fence.push(name, epoch),
                None => unowned.push(name.clone()),
            }
        }
        if !unowned.is_empty() {
            unowned.sort_unstable();
            unowned.dedup();
            return Err(self.lose(unowned));
        }
        Ok(fence)
    }
}

/// A batch's rows, table by table, as the arrays its statements take.
#[derive(Default)]
struct Rows {
    tick_names: Vec<String>,
    ticks: Vec<i64>,
    system_ids: Vec<i64>,
    metal: Vec<i64>,
    crew: Vec<i64>,
    water: Vec<i64>,
    current_tick: Vec<i64>,
    structures: StructureRows,
    events: EventRows,
    history: HistoryRows,
}

/// Structure rows to write: system id, type, level.
#[derive(Default)]
pub(super) struct StructureRows {
    pub(super) system_ids: Vec<i64>,
    pub(super) types: Vec<&'static str>,
    pub(super) levels: Vec<i64>,
}

impl StructureRows {
    pub(super) fn push(&mut self, id: i64, system: &crate::model::System, rows: RowMask) {
        for kind in rows.structures() {
            self.system_ids.push(id);
            self.types.push(kind.as_str());
            self.levels.push(i64::from(system.levels[kind.index()]));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.system_ids.len()
    }
}

/// Event changes to write, by the cached event ids.
#[derive(Default)]
pub(super) struct EventRows {
    delete: Vec<i64>,
    update_ids: Vec<i64>,
    update_ticks: Vec<i64>,
    update_types: Vec<&'static str>,
    pub(super) insert_systems: Vec<i64>,
    pub(super) insert_ticks: Vec<i64>,
    pub(super) insert_types: Vec<&'static str>,
}

impl EventRows {
    /// Queues what makes the system's event row match its build in flight; returns the
    /// rows it will write. `stored.event` is updated for a deletion; an insert's id is
    /// known only after [`EventRows::write`].
    pub(super) fn push(&mut self, stored: &mut StoredSystem, system: &crate::model::System) -> u64 {
        match (stored.event, system.build) {
            (Some(event), Some(build)) => {
                self.update_ids.push(event);
                self.update_ticks.push(stored_int(build.completion_tick));
                self.update_types.push(build.structure.as_str());
            }
            (Some(event), None) => {
                self.delete.push(event);
                stored.event = None;
            }
            (None, Some(build)) => {
                self.insert_systems.push(stored.id);
                self.insert_ticks.push(stored_int(build.completion_tick));
                self.insert_types.push(build.structure.as_str());
            }
            (None, None) => return 0,
        }
        1
    }

    fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.update_ids.is_empty() && self.insert_systems.is_empty()
    }

    /// Runs the events statement (once per [`STATEMENT_ROWS`] of each kind of change);
    /// returns the new events' `(id, system id)`, and fails when a cached event id named
    /// no row.
    pub(super) fn write(
        &self,
        tx: &mut Transaction<'_>,
        prepared: &mut Prepared,
        galaxy: &str,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let statement = prepared.get(tx, WRITE_EVENTS)?;
        let longest = (self.delete.len())
            .max(self.update_ids.len())
            .max(self.insert_systems.len());
        let part = |at: usize, len: usize| at.min(len)..(at + STATEMENT_ROWS).min(len);
        let mut inserted = Vec::with_capacity(self.insert_systems.len());
        for at in (0..longest).step_by(STATEMENT_ROWS) {
            let (delete, update, insert) = (
                part(at, self.delete.len()),
                part(at, self.update_ids.len()),
                part(at, self.insert_systems.len()),
            );
            let rows = tx
                .query(
                    &statement,
                    &[
                        &&self.delete[delete.clone()],
                        &&self.update_ids[update.clone()],
                        &&self.update_ticks[update.clone()],
                        &&self.update_types[update.clone()],
                        &&self.insert_systems[insert.clone()],
                        &&self.insert_ticks[insert.clone()],
                        &&self.insert_types[insert],
                    ],
                )
                .context("saving events")?;
            let expected = (delete.len() + update.len()) as i64;
            check_events(rows, expected, galaxy, &mut inserted)?;
        }
        Ok(inserted)
    }
}

/// Reads one events statement's answer into `inserted`: the new events' `(id, system
/// id)`, and a row `(-1, n)` saying how many of the `expected` stored events it changed.
fn check_events(
    rows: Vec<::postgres::Row>,
    expected: i64,
    galaxy: &str,
    inserted: &mut Vec<(i64, i64)>,
) -> Result<(), StoreError> {
    for row in rows {
        let id: i64 = row.try_get(0).context("reading an event id")?;
        let second: i64 = row.try_get(1).context("reading an event id")?;
        if id != -1 {
            inserted.push((id, second));
        } else if second != expected {
            return Err(StoreError::Inconsistent {
                galaxy: galaxy.to_owned(),
                reason: format!(
                    "{} of the {expected} stored events to change are missing",
                    expected - second
                ),
            });
        }
    }
    Ok(())
}

/// A batch's rows as arrays, its count of rows and systems, and which galaxy each new
/// event belongs to, by system id (its id goes into that galaxy's cache once the insert
/// returns it).
struct Built {
    rows: Rows,
    stats: WriteStats,
    new_events: HashMap<i64, (usize, usize)>,
}

fn build_rows(
    cache: &mut HashMap<String, SystemIds>,
    galaxies: &[GalaxyRows],
) -> Result<Built, StoreError> {
    let mut stats = WriteStats::default();
    let mut rows = Rows::default();
    let mut new_events: HashMap<i64, (usize, usize)> = HashMap::new();
    let mut empty = Vec::new();
    for (at, galaxy) in galaxies.iter().enumerate() {
        if let Some(tick) = galaxy.tick {
            rows.tick_names.push(galaxy.name.clone());
            rows.ticks.push(stored_int(tick));
        }
        rows.history.push(galaxy);
        if galaxy.systems.is_empty() {
            continue;
        }
        let stored_systems = cache.get_mut(&galaxy.name).unwrap_or(&mut empty);
        for row in &galaxy.systems {
            let system = &row.system;
            let stored = stored_row(stored_systems, &galaxy.name, row)?;
            if row.rows.contains(RowMask::SYSTEM) {
                let r = system.resources;
                rows.system_ids.push(stored.id);
                rows.metal.push(stored_int(r.metal));
                rows.crew.push(stored_int(r.crew));
                rows.water.push(stored_int(r.water));
                rows.current_tick.push(stored_int(system.tick));
            }
            rows.structures.push(stored.id, system, row.rows);
            if row.rows.contains(RowMask::EVENTS) {
                let before = rows.events.insert_systems.len();
                stats.rows += rows.events.push(stored, system);
                if rows.events.insert_systems.len() > before {
                    new_events.insert(stored.id, (at, row.index as usize));
                }
            }
            stats.systems += 1;
        }
    }
    Ok(Built {
        rows,
        stats,
        new_events,
    })
}

/// What one batch changes: the galaxies it deletes, those it makes live again (see
/// `unarchive` in [`PostgresWriter::write_fenced`]), and the rows it writes.
struct Batch<'a> {
    deletions: &'a [String],
    unarchive: &'a [String],
    galaxies: &'a [GalaxyRows],
}

/// A lost archive commit undone, if it happened: its archive and its `deleting` mark.
pub(super) const UNARCHIVE: &str =
    "WITH gone AS (DELETE FROM galaxy_archives WHERE name = ANY($1::text[]))
     DELETE FROM galaxy_jobs WHERE name = ANY($1::text[]) AND job = 'deleting'";

/// The batch's statements in `tx`, the fence last before the release and the commit.
#[allow(clippy::too_many_arguments)]
fn write_rows(
    mut tx: Transaction<'_>,
    prepared: &mut Prepared,
    cache: &mut HashMap<String, SystemIds>,
    batch: Batch<'_>,
    built: Built,
    fence: &Fence,
    release: &Fence,
    me: &Identity,
) -> Result<Written, StoreError> {
    let Built {
        rows,
        mut stats,
        new_events,
    } = built;
    let Batch {
        deletions,
        unarchive,
        galaxies,
    } = batch;
    // Before the deletions: a galaxy put back and deleted since is marked again below.
    if !unarchive.is_empty() {
        let statement = prepared.get(&mut tx, UNARCHIVE)?;
        tx.execute(&statement, &[&unarchive])
            .context("making galaxies live again after a lost archive commit")?;
    }
    if !deletions.is_empty() {
        let statement = prepared.get(&mut tx, MARK_DELETING)?;
        stats.rows += tx
            .execute(&statement, &[&deletions])
            .context("marking galaxies deleted")?;
    }
    let batch_name = || match galaxies {
        [one] => one.name.clone(),
        _ => "(one of the batch's)".to_owned(),
    };
    if !rows.ticks.is_empty() {
        let statement = prepared.get(&mut tx, UPDATE_TICKS)?;
        stats.rows += tx
            .execute(&statement, &[&rows.tick_names, &rows.ticks])
            .context("saving galaxy ticks")?;
    }
    if !rows.system_ids.is_empty() {
        stats.rows += update_systems(&mut tx, prepared, &rows, batch_name)?;
    }
    if rows.structures.len() > 0 {
        let statement = prepared.get(&mut tx, UPSERT_STRUCTURES)?;
        let s = &rows.structures;
        for at in (0..s.len()).step_by(STATEMENT_ROWS) {
            let part = at..(at + STATEMENT_ROWS).min(s.len());
            let (ids, types, levels) = (
                &s.system_ids[part.clone()],
                &s.types[part.clone()],
                &s.levels[part],
            );
            tx.execute(&statement, &[&ids, &types, &levels])
                .context("saving structures")?;
        }
        stats.rows += s.len() as u64;
    }
    for (event, system_id) in rows.events.write(&mut tx, prepared, &batch_name())? {
        let stored = new_events
            .get(&system_id)
            .and_then(|&(at, index)| cache.get_mut(&galaxies[at].name)?.get_mut(index));
        if let Some(stored) = stored {
            stored.event = Some(event);
        }
    }
    // Inside the fenced transaction: a batch fenced out writes no history either.
    stats.rows += rows.history.write(&mut tx, prepared)?;
    // A final batch sent again after its answer was lost finds its galaxies released by
    // the first attempt: still this daemon's to write (see `owners::fence_final`).
    let missing = if release.names.is_empty() {
        owners::fence(&mut tx, prepared, me, fence)?
    } else {
        owners::fence_final(&mut tx, prepared, me, fence)?
    };
    if !missing.is_empty() {
        tx.rollback().context("rolling back a fenced batch")?;
        return Ok(Written::Fenced(missing));
    }
    if !release.names.is_empty() {
        owners::release(&mut tx, prepared, me, release)?;
    }
    tx.commit().context("committing a batch")?;
    Ok(Written::Committed(stats))
}

/// The batch's system rows, in one statement; fails when one of them is missing
/// (`batch_name` names the galaxy for the error).
fn update_systems(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    rows: &Rows,
    batch_name: impl Fn() -> String,
) -> Result<u64, StoreError> {
    let statement = prepared.get(tx, UPDATE_SYSTEMS)?;
    let mut updated = 0;
    for at in (0..rows.system_ids.len()).step_by(STATEMENT_ROWS) {
        let part = at..(at + STATEMENT_ROWS).min(rows.system_ids.len());
        updated += tx
            .execute(
                &statement,
                &[
                    &&rows.system_ids[part.clone()],
                    &&rows.metal[part.clone()],
                    &&rows.crew[part.clone()],
                    &&rows.water[part.clone()],
                    &&rows.current_tick[part],
                ],
            )
            .context("saving systems")?;
    }
    if updated != rows.system_ids.len() as u64 {
        return Err(StoreError::Inconsistent {
            galaxy: batch_name(),
            reason: format!(
                "{} of {} system rows to update are missing",
                rows.system_ids.len() as u64 - updated,
                rows.system_ids.len()
            ),
        });
    }
    Ok(updated)
}

/// The stored systems of galaxy `name`, in `(x, y)` order, with their events' ids.
pub(super) fn fetch_ids(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    galaxy: &str,
) -> Result<SystemIds, StoreError> {
    let statement = prepared.get(client, FETCH_IDS)?;
    let mut ids = SystemIds::new();
    let mut rows = client
        .query_raw(&statement, [galaxy])
        .context("reading system ids")?;
    while let Some(row) = rows.next().context("reading system ids")? {
        let coord = |column: usize| -> Result<u32, StoreError> {
            let value: i64 = row.try_get(column).context("reading system ids")?;
            u32::try_from(value).map_err(|_| StoreError::Inconsistent {
                galaxy: galaxy.to_owned(),
                reason: format!("a system has coordinate {value}"),
            })
        };
        ids.push(StoredSystem {
            id: row.try_get(0).context("reading system ids")?,
            x: coord(1)?,
            y: coord(2)?,
            event: row.try_get(3).context("reading system ids")?,
        });
    }
    if ids.windows(2).any(|pair| pair[0].id == pair[1].id) {
        return Err(StoreError::Inconsistent {
            galaxy: galaxy.to_owned(),
            reason: "a system has more than one event".into(),
        });
    }
    Ok(ids)
}
