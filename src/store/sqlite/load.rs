//! Loading one galaxy back into memory (on a cache miss, through a read-only connection).

use rusqlite::types::{Type, ValueRef};
use rusqlite::{params, OptionalExtension, Row};

use super::super::RowIds;
use super::super::StoreError;
use super::db::{Context, Db};
use crate::model::{Build, Galaxy, GalaxyConfig, Resources, StructureKind, System};

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
        let Some((config_text, tick)) = tx
            .query_row(
                "SELECT config_file, tick FROM galaxies WHERE name = ?1
                 AND name NOT IN (SELECT name FROM galaxy_jobs)",
                [name],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
            )
            .optional()
            .context("loading a galaxy")?
        else {
            return Ok(None);
        };
        let bad = |reason: String| StoreError::Inconsistent {
            galaxy: name.to_owned(),
            reason,
        };
        let (config, _) = GalaxyConfig::from_toml(&config_text).map_err(|e| bad(e.to_string()))?;
        let tick = u64::try_from(tick).map_err(|_| bad(format!("negative tick {tick}")))?;

        let (first, last): (Option<i64>, Option<i64>) = tx
            .query_row(
                "SELECT min(id), max(id) FROM systems WHERE galaxy_name = ?1",
                [name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .context("finding systems")?;
        let (Some(first), Some(last)) = (first, last) else {
            return Galaxy::from_parts(name, config, tick, Vec::new())
                .map(|galaxy| Some((galaxy, RowIds(Vec::new()))))
                .map_err(|e| bad(e.to_string()));
        };

        // Systems in row-id order, beside their ids; sorted by (x, y) at the end.
        let mut ids: Vec<i64> = Vec::new();
        let mut systems: Vec<System> = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT id, x, y, metal, crew, water, current_tick FROM systems
                     WHERE id BETWEEN ?1 AND ?2 AND galaxy_name = ?3",
                )
                .context("loading systems")?;
            let mut rows = stmt
                .query(params![first, last, name])
                .context("loading systems")?;
            while let Some(row) = rows.next().context("loading systems")? {
                let mut values = [0i64; 7];
                for (i, value) in values.iter_mut().enumerate() {
                    *value = row.get(i).context("reading a system")?;
                }
                let [id, x, y, metal, crew, water, current] = values;
                let coord = |v: i64| {
                    u32::try_from(v).map_err(|_| bad(format!("system {id} has coordinate {v}")))
                };
                let amount = |v: i64| {
                    u64::try_from(v).map_err(|_| bad(format!("system {id} has negative value {v}")))
                };
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
        let mut event_ids: Vec<Option<i64>> = vec![None; ids.len()];
        let mut structures = Positions::new(&ids);
        let mut events = Positions::new(&ids);
        let kind = |text: &str| {
            text.parse::<StructureKind>()
                .map_err(|e| bad(e.to_string()))
        };
        {
            let (from, to): (Option<i64>, Option<i64>) = tx
                .query_row(
                    "SELECT min(id), max(id) FROM structures WHERE system_id BETWEEN ?1 AND ?2",
                    [first, last],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .context("finding structures")?;
            let mut stmt = tx
                .prepare(
                    "SELECT system_id, structure_type, level FROM structures
                     WHERE id BETWEEN ?1 AND ?2",
                )
                .context("loading structures")?;
            let mut rows = stmt.query([from, to]).context("loading structures")?;
            while let Some(row) = rows.next().context("loading structures")? {
                let id: i64 = row.get(0).context("reading a structure")?;
                let Some(index) = structures.find(id) else {
                    continue;
                };
                // Borrowed, not copied into a String: half a million rows per 100 000
                // systems.
                let structure = kind(text(row, 1).context("reading a structure")?)?;
                let level: i64 = row.get(2).context("reading a structure")?;
                let level = u32::try_from(level)
                    .map_err(|_| bad(format!("system {id} has structure level {level}")))?;
                systems[index].levels[structure.index()] = level;
            }
        }
        {
            let mut stmt = tx
                .prepare(
                    "SELECT system_id, completion_tick, action_type, structure_type, id
                     FROM events WHERE system_id BETWEEN ?1 AND ?2",
                )
                .context("loading events")?;
            let mut rows = stmt.query([first, last]).context("loading events")?;
            while let Some(row) = rows.next().context("loading events")? {
                let id: i64 = row.get(0).context("reading an event")?;
                let Some(index) = events.find(id) else {
                    continue;
                };
                let completion: i64 = row.get(1).context("reading an event")?;
                let action = text(row, 2).context("reading an event")?;
                if action != "build" {
                    return Err(bad(format!(
                        "system {id} has an event of unknown action '{action}'"
                    )));
                }
                let structure = match row.get_ref(3).context("reading an event")? {
                    ValueRef::Null => "",
                    _ => text(row, 3).context("reading an event")?,
                };
                let structure = kind(structure)?;
                event_ids[index] = Some(row.get(4).context("reading an event")?);
                let system = &mut systems[index];
                if system.build.is_some() {
                    return Err(bad(format!(
                        "system {id} has more than one build in flight"
                    )));
                }
                system.build = Some(Build {
                    completion_tick: u64::try_from(completion).map_err(|_| {
                        bad(format!("system {id} has completion tick {completion}"))
                    })?,
                    structure,
                });
            }
        }
        RowIds::assemble(name, config, tick, systems, &ids, &event_ids)
            .map(Some)
            .map_err(bad)
    }
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
