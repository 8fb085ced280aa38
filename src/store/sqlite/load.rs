//! Loading one galaxy back into memory (on a cache miss, through a read-only connection).

use rusqlite::types::{Type, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::super::decode::Decoder;
use super::super::{RowIds, StoreError};
use super::db::{Context, Db};
use crate::model::{Galaxy, GalaxyConfig, System};

// A load's statements, named so that the plan test (`plans.rs`) explains these very texts.

pub(super) const GALAXY: &str = "SELECT config_file, tick FROM galaxies WHERE name = ?1
     AND name NOT IN (SELECT name FROM galaxy_jobs)";
/// The galaxy's range of system row ids, read from the `(galaxy_name, x, y)` index only.
pub(super) const SYSTEM_RANGE: &str = "SELECT min(id), max(id) FROM systems WHERE galaxy_name = ?1";
pub(super) const SYSTEMS: &str = "SELECT id, x, y, metal, crew, water, current_tick FROM systems
     WHERE id BETWEEN ?1 AND ?2 AND galaxy_name = ?3";
/// The range of their structures' row ids, from the `(system_id, structure_type)` index.
pub(super) const STRUCTURE_RANGE: &str =
    "SELECT min(id), max(id) FROM structures WHERE system_id BETWEEN ?1 AND ?2";
pub(super) const STRUCTURES: &str = "SELECT system_id, structure_type, level FROM structures
     WHERE id BETWEEN ?1 AND ?2";
pub(super) const EVENTS: &str = "SELECT system_id, completion_tick, action_type, structure_type, id
     FROM events WHERE system_id BETWEEN ?1 AND ?2";

impl Db {
    /// Loads one galaxy, or `None` when it is not stored (or its creation or deletion is
    /// unfinished), in one read transaction.
    ///
    /// A galaxy's systems are created by one creation job, and the writer runs one job at
    /// a time and inserts systems nowhere else, so their row ids form one range; so do
    /// their structure rows, but for the rare one a save re-inserts (saves update them in
    /// place, keeping their ids). The load therefore finds each range through an index (reading the index only) and then
    /// scans the tables by row id, which is sequential, instead of one index probe per
    /// row; rows of other galaxies that fall inside a range are skipped. Events are few
    /// (at most one per system) and are read through their index.
    ///
    /// The row ids of the galaxy's systems and events come with it, for the writer's cache
    /// ([`crate::store::WriteStore::adopt_ids`]): its first save after the
    /// load then needs no look-up, which for millions of systems would take seconds of the
    /// writer's time (and every other galaxy's loss window with it).
    pub(super) fn load_galaxy_with_ids(
        &self,
        name: &str,
    ) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .context("starting a load")?;
        let decode = Decoder::new(name);
        let Some((config, tick)) = galaxy_row(&tx, name, decode)? else {
            return Ok(None);
        };
        let (first, last): (Option<i64>, Option<i64>) = tx
            .query_row(SYSTEM_RANGE, [name], |row| Ok((row.get(0)?, row.get(1)?)))
            .context("finding systems")?;
        let (Some(first), Some(last)) = (first, last) else {
            return decode
                .assemble(config, tick, Vec::new(), &[], &[])
                .map(Some);
        };
        let range = (first, last);
        let (ids, mut systems) = systems(&tx, name, range, decode)?;
        structures(&tx, range, &ids, &mut systems, decode)?;
        let event_ids = events(&tx, range, &ids, &mut systems, decode)?;
        decode
            .assemble(config, tick, systems, &ids, &event_ids)
            .map(Some)
    }
}

/// The galaxy row's config and tick, or `None` when it is not stored or has an unfinished
/// job.
fn galaxy_row(
    conn: &Connection,
    name: &str,
    decode: Decoder<'_>,
) -> Result<Option<(GalaxyConfig, u64)>, StoreError> {
    let Some((config_text, tick)) = conn
        .query_row(GALAXY, [name], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()
        .context("loading a galaxy")?
    else {
        return Ok(None);
    };
    decode.galaxy(&config_text, tick).map(Some)
}

/// The galaxy's systems with row ids in `first..=last` (scanned by row id, skipping other
/// galaxies' rows), in row-id order beside their ids; sorted by (x, y) at the end.
fn systems(
    conn: &Connection,
    name: &str,
    (first, last): (i64, i64),
    decode: Decoder<'_>,
) -> Result<(Vec<i64>, Vec<System>), StoreError> {
    let mut ids: Vec<i64> = Vec::new();
    let mut systems: Vec<System> = Vec::new();
    let mut stmt = conn.prepare(SYSTEMS).context("loading systems")?;
    let mut rows = stmt
        .query(params![first, last, name])
        .context("loading systems")?;
    while let Some(row) = rows.next().context("loading systems")? {
        let mut values = [0i64; 7];
        for (i, value) in values.iter_mut().enumerate() {
            *value = row.get(i).context("reading a system")?;
        }
        ids.push(values[0]);
        systems.push(decode.system(values)?);
    }
    Ok((ids, systems))
}

/// Sets the levels of `systems` (row ids `ids`, in `first..=last`) from their structure
/// rows, found as one range of row ids.
fn structures(
    conn: &Connection,
    (first, last): (i64, i64),
    ids: &[i64],
    systems: &mut [System],
    decode: Decoder<'_>,
) -> Result<(), StoreError> {
    let mut structures = Positions::new(ids);
    let (from, to): (Option<i64>, Option<i64>) = conn
        .query_row(STRUCTURE_RANGE, [first, last], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .context("finding structures")?;
    let mut stmt = conn.prepare(STRUCTURES).context("loading structures")?;
    let mut rows = stmt.query([from, to]).context("loading structures")?;
    while let Some(row) = rows.next().context("loading structures")? {
        let id: i64 = row.get(0).context("reading a structure")?;
        let Some(index) = structures.find(id) else {
            continue;
        };
        // Borrowed, not copied into a String: half a million rows per 100 000
        // systems.
        let structure = decode.structure_kind(text(row, 1).context("reading a structure")?)?;
        let level: i64 = row.get(2).context("reading a structure")?;
        let level = decode.level(id, level)?;
        systems[index].levels[structure.index()] = level;
    }
    Ok(())
}

/// Sets the builds of `systems` (row ids `ids`, in `first..=last`) from their event rows,
/// read through their index; the event row ids, beside the systems.
fn events(
    conn: &Connection,
    (first, last): (i64, i64),
    ids: &[i64],
    systems: &mut [System],
    decode: Decoder<'_>,
) -> Result<Vec<Option<i64>>, StoreError> {
    let mut event_ids: Vec<Option<i64>> = vec![None; ids.len()];
    let mut events = Positions::new(ids);
    let mut stmt = conn.prepare(EVENTS).context("loading events")?;
    let mut rows = stmt.query([first, last]).context("loading events")?;
    while let Some(row) = rows.next().context("loading events")? {
        let id: i64 = row.get(0).context("reading an event")?;
        let Some(index) = events.find(id) else {
            continue;
        };
        let completion: i64 = row.get(1).context("reading an event")?;
        decode.event_action(id, text(row, 2).context("reading an event")?)?;
        let structure = match row.get_ref(3).context("reading an event")? {
            ValueRef::Null => None,
            _ => Some(text(row, 3).context("reading an event")?),
        };
        let structure = decode.event_structure(structure)?;
        event_ids[index] = Some(row.get(4).context("reading an event")?);
        decode.set_build(&mut systems[index], id, completion, structure)?;
    }
    Ok(event_ids)
}

/// Finds rows' systems by system row id in `ids` (ascending). Rows mostly arrive in
/// system order, so the last position found, or the next, is tried before a binary
/// search: half a million structure rows per 100 000 systems.
struct Positions<'a> {
    ids: &'a [i64],
    last: usize,
}

impl<'a> Positions<'a> {
    fn new(ids: &'a [i64]) -> Positions<'a> {
        Positions { ids, last: 0 }
    }

    fn find(&mut self, id: i64) -> Option<usize> {
        let near = [self.last, self.last + 1];
        let found = near
            .into_iter()
            .find(|&at| self.ids.get(at) == Some(&id))
            .or_else(|| self.ids.binary_search(&id).ok())?;
        self.last = found;
        Some(found)
    }
}

/// A text column, borrowed from the row.
fn text<'r>(row: &'r Row<'_>, column: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(column)?
        .as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}
