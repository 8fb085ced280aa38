//! Loading one galaxy back into memory (on a cache miss, through a read-only session),
//! and the look-ups of stored names.
//!
//! A load is four set-based queries (the galaxy, its systems, their structures, their
//! events) in one read-only `REPEATABLE READ` transaction, so all four see one snapshot,
//! whatever the writer commits meanwhile. Rows are streamed and decoded as they arrive,
//! never collected first.

use std::collections::HashMap;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::ToSql;
use ::postgres::{Client, IsolationLevel, Row, Transaction};

use super::super::decode::Decoder;
use super::super::RowIds;
use super::super::StoreError;
use super::error::Context;
use crate::model::{Galaxy, System};

pub(super) const GALAXY: &str = "SELECT config_file, tick FROM galaxies g WHERE name = $1
     AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)";

pub(super) const SYSTEMS: &str = "SELECT id, x, y, metal, crew, water, current_tick FROM systems
     WHERE galaxy_name = $1";

/// The structures of the systems whose row ids lie between the galaxy's first and last,
/// through the `(system_id, structure_type)` index; rows of other galaxies' systems inside
/// the range (another daemon's creation ran beside this one's) are skipped by the load.
/// Not a join with `systems` on the name: for a galaxy that is a few percent of the
/// database the planner hashes that join over the whole table (the plan test, `plans.rs`),
/// and a load would then cost what the whole database holds, not what the galaxy does.
pub(super) const STRUCTURES: &str = "SELECT system_id, structure_type, level FROM structures
     WHERE system_id BETWEEN $1 AND $2";

/// As [`STRUCTURES`], through the `events(system_id, completion_tick)` index.
pub(super) const EVENTS: &str =
    "SELECT system_id, completion_tick, action_type, structure_type, id FROM events
     WHERE system_id BETWEEN $1 AND $2";

pub(super) const GALAXY_NAMES: &str = "SELECT name FROM galaxies g
     WHERE NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     ORDER BY name COLLATE \"C\"";
pub(super) const GALAXY_SIZES: &str = "SELECT name, systems FROM galaxy_sizes";
pub(super) const GALAXY_EXISTS: &str = "SELECT 1 FROM galaxies g WHERE name = $1
     AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)";

/// The parameters of a load's first queries: the galaxy's name.
type ByName<'a> = [&'a (dyn ToSql + Sync); 1];

/// The parameters of its last: the first and last row ids of its systems.
type ByRange<'a> = [&'a (dyn ToSql + Sync); 2];

/// Each loaded system's position among them, by its row id.
type Positions = HashMap<i64, usize>;

/// Loads one galaxy with its row ids, or `None` when it is not stored (or its creation or
/// deletion is unfinished), in one read-only snapshot.
pub(super) fn load_galaxy_with_ids(
    client: &mut Client,
    name: &str,
) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .context("starting a load")?;
    let Some(row) = tx.query_opt(GALAXY, &[&name]).context("loading a galaxy")? else {
        return Ok(None);
    };
    let decode = Decoder::new(name);
    let config_text: &str = row.try_get(0).context("reading a galaxy")?;
    let tick: i64 = row.try_get(1).context("reading a galaxy")?;
    let (config, tick) = decode.galaxy(config_text, tick)?;
    let params: ByName = [&name];
    let (ids, mut systems, positions) = systems(&mut tx, params, decode)?;
    let (first, last) = (
        ids.iter().min().copied().unwrap_or(0),
        ids.iter().max().copied().unwrap_or(-1),
    );
    let range: ByRange = [&first, &last];
    structures(&mut tx, range, &positions, &mut systems, decode)?;
    let event_ids = events(&mut tx, range, &positions, &mut systems, decode)?;
    tx.commit().context("ending a load")?;
    decode
        .assemble(config, tick, systems, &ids, &event_ids)
        .map(Some)
}

/// The galaxy's systems beside their row ids, in the order they arrive, and each row id's
/// position among them.
fn systems(
    tx: &mut Transaction<'_>,
    params: ByName<'_>,
    decode: Decoder<'_>,
) -> Result<(Vec<i64>, Vec<System>, Positions), StoreError> {
    let mut ids: Vec<i64> = Vec::new();
    let mut systems: Vec<System> = Vec::new();
    let mut positions = Positions::new();
    let mut rows = tx.query_raw(SYSTEMS, params).context("loading systems")?;
    while let Some(row) = rows.next().context("loading systems")? {
        let values = bigints::<7>(&row).context("reading a system")?;
        let id = values[0];
        positions.insert(id, ids.len());
        ids.push(id);
        systems.push(decode.system(values)?);
    }
    Ok((ids, systems, positions))
}

/// Sets the levels of `systems` from their structure rows.
fn structures(
    tx: &mut Transaction<'_>,
    params: ByRange<'_>,
    positions: &Positions,
    systems: &mut [System],
    decode: Decoder<'_>,
) -> Result<(), StoreError> {
    let mut rows = tx
        .query_raw(STRUCTURES, params)
        .context("loading structures")?;
    while let Some(row) = rows.next().context("loading structures")? {
        let id: i64 = row.try_get(0).context("reading a structure")?;
        let Some(&index) = positions.get(&id) else {
            continue;
        };
        let structure = decode.structure_kind(row.try_get(1).context("reading a structure")?)?;
        let level: i64 = row.try_get(2).context("reading a structure")?;
        let level = decode.level(id, level)?;
        systems[index].levels[structure.index()] = level;
    }
    Ok(())
}

/// Sets the builds of `systems` from their event rows; the event row ids, beside the
/// systems.
fn events(
    tx: &mut Transaction<'_>,
    params: ByRange<'_>,
    positions: &Positions,
    systems: &mut [System],
    decode: Decoder<'_>,
) -> Result<Vec<Option<i64>>, StoreError> {
    let mut event_ids: Vec<Option<i64>> = vec![None; systems.len()];
    let mut rows = tx.query_raw(EVENTS, params).context("loading events")?;
    while let Some(row) = rows.next().context("loading events")? {
        let id: i64 = row.try_get(0).context("reading an event")?;
        let Some(&index) = positions.get(&id) else {
            continue;
        };
        let completion: i64 = row.try_get(1).context("reading an event")?;
        decode.event_action(id, row.try_get(2).context("reading an event")?)?;
        let structure = decode.event_structure(row.try_get(3).context("reading an event")?)?;
        event_ids[index] = Some(row.try_get(4).context("reading an event")?);
        decode.set_build(&mut systems[index], id, completion, structure)?;
    }
    Ok(event_ids)
}

/// The first `N` columns of `row`, all `BIGINT`.
fn bigints<const N: usize>(row: &Row) -> Result<[i64; N], ::postgres::Error> {
    let mut values = [0i64; N];
    for (i, value) in values.iter_mut().enumerate() {
        *value = row.try_get(i)?;
    }
    Ok(values)
}

/// Names of every stored galaxy, sorted.
pub(super) fn galaxy_names(client: &mut Client) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(GALAXY_NAMES, &[])
        .context("listing galaxies")?;
    rows.iter()
        .map(|row| row.try_get(0).context("listing galaxies"))
        .collect()
}

/// Every galaxy row with its number of systems (`galaxy_sizes`), unfinished ones included.
pub(super) fn galaxy_sizes(client: &mut Client) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = client
        .query(GALAXY_SIZES, &[])
        .context("counting the galaxies' systems")?;
    rows.iter()
        .map(|row| {
            let name: String = row.try_get(0).context("counting the galaxies' systems")?;
            let systems: i64 = row.try_get(1).context("counting the galaxies' systems")?;
            Ok((name, u64::try_from(systems).unwrap_or(0)))
        })
        .collect()
}

pub(super) fn galaxy_exists(client: &mut Client, name: &str) -> Result<bool, StoreError> {
    let found = client
        .query_opt(GALAXY_EXISTS, &[&name])
        .context("looking up a galaxy")?;
    Ok(found.is_some())
}
