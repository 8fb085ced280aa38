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
use ::postgres::{Client, IsolationLevel, Row};

use super::super::RowIds;
use super::super::StoreError;
use super::error::Context;
use crate::model::{Build, Galaxy, GalaxyConfig, Resources, StructureKind, System};

const GALAXY: &str = "SELECT config_file, tick FROM galaxies g WHERE name = $1
     AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)";

const SYSTEMS: &str = "SELECT id, x, y, metal, crew, water, current_tick FROM systems
     WHERE galaxy_name = $1";

const STRUCTURES: &str = "SELECT st.system_id, st.structure_type, st.level
     FROM structures st JOIN systems s ON s.id = st.system_id WHERE s.galaxy_name = $1";

const EVENTS: &str = "SELECT e.system_id, e.completion_tick, e.action_type, e.structure_type, e.id
     FROM events e JOIN systems s ON s.id = e.system_id WHERE s.galaxy_name = $1";

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
    let bad = |reason: String| StoreError::Inconsistent {
        galaxy: name.to_owned(),
        reason,
    };
    let config_text: &str = row.try_get(0).context("reading a galaxy")?;
    let tick: i64 = row.try_get(1).context("reading a galaxy")?;
    let (config, _) = GalaxyConfig::from_toml(config_text).map_err(|e| bad(e.to_string()))?;
    let tick = u64::try_from(tick).map_err(|_| bad(format!("negative tick {tick}")))?;
    let params: [&(dyn ToSql + Sync); 1] = [&name];

    let mut ids: Vec<i64> = Vec::new();
    let mut systems: Vec<System> = Vec::new();
    let mut positions: HashMap<i64, usize> = HashMap::new();
    {
        let mut rows = tx.query_raw(SYSTEMS, params).context("loading systems")?;
        while let Some(row) = rows.next().context("loading systems")? {
            let values = bigints::<7>(&row).context("reading a system")?;
            let [id, x, y, metal, crew, water, current] = values;
            let coord = |v: i64| {
                u32::try_from(v).map_err(|_| bad(format!("system {id} has coordinate {v}")))
            };
            let amount = |v: i64| {
                u64::try_from(v).map_err(|_| bad(format!("system {id} has negative value {v}")))
            };
            positions.insert(id, ids.len());
            ids.push(id);
            systems.push(System {
                x: coord(x)?,
                y: coord(y)?,
                resources: Resources {
                    metal: amount(metal)?,
                    crew: amount(crew)?,
                    water: amount(water)?,
                },
                tick: amount(current)?,
                levels: [0; 5],
                build: None,
            });
        }
    }
    let kind = |text: &str| {
        text.parse::<StructureKind>()
            .map_err(|e| bad(e.to_string()))
    };
    {
        let mut rows = tx
            .query_raw(STRUCTURES, params)
            .context("loading structures")?;
        while let Some(row) = rows.next().context("loading structures")? {
            let id: i64 = row.try_get(0).context("reading a structure")?;
            let Some(&index) = positions.get(&id) else {
                continue;
            };
            let structure = kind(row.try_get(1).context("reading a structure")?)?;
            let level: i64 = row.try_get(2).context("reading a structure")?;
            let level = u32::try_from(level)
                .map_err(|_| bad(format!("system {id} has structure level {level}")))?;
            systems[index].levels[structure.index()] = level;
        }
    }
    let mut event_ids: Vec<Option<i64>> = vec![None; ids.len()];
    {
        let mut rows = tx.query_raw(EVENTS, params).context("loading events")?;
        while let Some(row) = rows.next().context("loading events")? {
            let id: i64 = row.try_get(0).context("reading an event")?;
            let Some(&index) = positions.get(&id) else {
                continue;
            };
            let completion: i64 = row.try_get(1).context("reading an event")?;
            let action: &str = row.try_get(2).context("reading an event")?;
            if action != "build" {
                return Err(bad(format!(
                    "system {id} has an event of unknown action '{action}'"
                )));
            }
            let structure: Option<&str> = row.try_get(3).context("reading an event")?;
            let structure = kind(structure.unwrap_or_default())?;
            event_ids[index] = Some(row.try_get(4).context("reading an event")?);
            let system = &mut systems[index];
            if system.build.is_some() {
                return Err(bad(format!(
                    "system {id} has more than one build in flight"
                )));
            }
            system.build = Some(Build {
                completion_tick: u64::try_from(completion)
                    .map_err(|_| bad(format!("system {id} has completion tick {completion}")))?,
                structure,
            });
        }
    }
    tx.commit().context("ending a load")?;
    RowIds::assemble(name, config, tick, systems, &ids, &event_ids)
        .map(Some)
        .map_err(bad)
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
        .query(
            "SELECT name FROM galaxies g
             WHERE NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
             ORDER BY name COLLATE \"C\"",
            &[],
        )
        .context("listing galaxies")?;
    rows.iter()
        .map(|row| row.try_get(0).context("listing galaxies"))
        .collect()
}

pub(super) fn galaxy_exists(client: &mut Client, name: &str) -> Result<bool, StoreError> {
    let found = client
        .query_opt(
            "SELECT 1 FROM galaxies g WHERE name = $1
             AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)",
            &[&name],
        )
        .context("looking up a galaxy")?;
    Ok(found.is_some())
}
