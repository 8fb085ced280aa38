//! The writer's side of the store: creating a galaxy, writing a batch in one transaction,
//! and the cache of row ids that lets a save update rows by primary key.

use std::collections::HashMap;
use std::time::SystemTime;

use rusqlite::{params, CachedStatement, Connection, Transaction};

use super::super::StoreError;
use super::super::{stored_int, stored_row};
use super::super::{GalaxyRows, StoredSystem, SystemIds, WriteStats};
use super::db::Context;
use super::history::insert_history;
use super::writer::SqliteWriter;
use crate::model::{RowMask, System};
use crate::time::UtcTime;

// A batch's statements, named so that the plan test (`plans.rs`) explains these very
// texts.

/// A galaxy's tick, when it advanced.
pub(super) const UPDATE_TICK: &str =
    "UPDATE galaxies SET tick = ?1, updated_at = ?3 WHERE name = ?2";

/// Marks a galaxy deleted (see `jobs.rs`); a galaxy not stored is skipped.
pub(super) const MARK_DELETING: &str =
    "INSERT INTO galaxy_jobs (name, job) SELECT name, 'deleting' FROM galaxies
     WHERE name = ?1 ON CONFLICT (name) DO UPDATE SET job = 'deleting'";

/// A galaxy's stored systems in `(x, y)` order, with their events' ids.
pub(super) const FETCH_IDS: &str =
    "SELECT s.id, s.x, s.y, e.id FROM systems s LEFT JOIN events e ON e.system_id = s.id
     WHERE s.galaxy_name = ?1 ORDER BY s.x, s.y";

pub(super) const UPDATE_SYSTEM: &str =
    "UPDATE systems SET metal = ?1, crew = ?2, water = ?3, current_tick = ?4,
     updated_at = ?6 WHERE id = ?5";

pub(super) const UPDATE_STRUCTURE: &str = "UPDATE structures SET level = ?3, updated_at = ?4
     WHERE system_id = ?1 AND structure_type = ?2";

pub(super) const INSERT_STRUCTURE: &str =
    "INSERT INTO structures (system_id, structure_type, level, updated_at)
     VALUES (?1, ?2, ?3, ?4)";

pub(super) const UPDATE_EVENT: &str =
    "UPDATE events SET completion_tick = ?1, structure_type = ?2 WHERE id = ?3";

pub(super) const DELETE_EVENT: &str = "DELETE FROM events WHERE id = ?1";

pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (system_id, completion_tick, action_type, structure_type)
     VALUES (?1, ?2, 'build', ?3)";

impl SqliteWriter {
    /// [`crate::store::WriteStore::write_batch`]: deletions first (their rows
    /// are removed later, in chunks: see `jobs.rs`), then every galaxy's tick and changed
    /// rows, then their history's segments (`history.rs`). On error nothing is written (the transaction rolls back on drop) and the
    /// batch's galaxies are dropped from the id cache, which may have run ahead of what was
    /// rolled back; they are read again on their next save.
    pub(super) fn write_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        self.db.check_file()?;
        for galaxy in galaxies {
            if !self.ids.contains_key(&galaxy.name) && !galaxy.systems.is_empty() {
                let ids = fetch_ids(&self.db.conn, &galaxy.name)?;
                self.ids.insert(galaxy.name.clone(), ids);
            }
        }
        let result = write_rows(&mut self.db.conn, &mut self.ids, deletions, galaxies);
        match result {
            Ok(_) => {
                for name in deletions {
                    self.ids.remove(name);
                }
            }
            Err(_) => {
                for galaxy in galaxies {
                    self.ids.remove(&galaxy.name);
                }
            }
        }
        result
    }
}

fn write_rows(
    conn: &mut Connection,
    cache: &mut HashMap<String, SystemIds>,
    deletions: &[String],
    galaxies: &[GalaxyRows],
) -> Result<WriteStats, StoreError> {
    let tx = conn.transaction().context("starting a batch")?;
    let now = UtcTime::at(SystemTime::now()).sql();
    let mut stats = WriteStats::default();
    for name in deletions {
        stats.rows += mark_deleting(&tx, name)?;
    }
    for galaxy in galaxies {
        if let Some(tick) = galaxy.tick {
            tx.prepare_cached(UPDATE_TICK)
                .and_then(|mut stmt| stmt.execute(params![stored_int(tick), galaxy.name, now]))
                .context("saving a galaxy tick")?;
            stats.rows += 1;
        }
        if galaxy.systems.is_empty() {
            continue;
        }
        let mut empty = Vec::new();
        let stored_systems = cache.get_mut(&galaxy.name).unwrap_or(&mut empty);
        let mut rows = RowWriter::prepare(&tx, &now)?;
        for row in &galaxy.systems {
            let system = &row.system;
            let stored = stored_row(stored_systems, &galaxy.name, row)?;
            if row.rows.contains(RowMask::SYSTEM) {
                stats.rows += rows.system(stored.id, system)?;
            }
            stats.rows += rows.structures(stored.id, system, row.rows, false)?;
            if row.rows.contains(RowMask::EVENTS) {
                stats.rows += rows.events(stored, system)?;
            }
            stats.systems += 1;
        }
    }
    stats.rows += insert_history(&tx, &now, galaxies)?;
    tx.commit().context("committing a batch")?;
    Ok(stats)
}

/// Marks `name` as being deleted, inside a batch's transaction; rows written (0 when the
/// galaxy is not stored, which is not an error: there is nothing to delete).
fn mark_deleting(tx: &Transaction<'_>, name: &str) -> Result<u64, StoreError> {
    let marked = tx
        .prepare_cached(MARK_DELETING)
        .and_then(|mut stmt| stmt.execute([name]))
        .context("marking a galaxy deleted")?;
    Ok(marked as u64)
}

pub(super) fn fetch_ids(conn: &Connection, galaxy: &str) -> Result<SystemIds, StoreError> {
    let mut stmt = conn
        .prepare_cached(FETCH_IDS)
        .context("reading system ids")?;
    let ids: SystemIds = stmt
        .query_map([galaxy], |row| {
            Ok(StoredSystem {
                id: row.get(0)?,
                x: row.get(1)?,
                y: row.get(2)?,
                event: row.get(3)?,
            })
        })
        .and_then(|rows| rows.collect())
        .context("reading system ids")?;
    if ids.windows(2).any(|pair| pair[0].id == pair[1].id) {
        return Err(StoreError::Inconsistent {
            galaxy: galaxy.to_owned(),
            reason: "a system has more than one event".into(),
        });
    }
    Ok(ids)
}

/// The hot statements of a batch, prepared once per transaction: a save runs them per
/// system without looking them up again.
pub(super) struct RowWriter<'c> {
    /// `updated_at` for every row of the batch, formatted once per transaction: binding it
    /// costs less than evaluating CURRENT_TIMESTAMP per row, and the batch's rows share one
    /// instant.
    now: &'c str,
    update_system: CachedStatement<'c>,
    update_structure: CachedStatement<'c>,
    insert_structure: CachedStatement<'c>,
    update_event: CachedStatement<'c>,
    delete_event: CachedStatement<'c>,
    insert_event: CachedStatement<'c>,
}

impl<'c> RowWriter<'c> {
    /// The statements on `conn`, binding `now` (formatted by [`UtcTime::sql`]) as every
    /// row's `updated_at`.
    pub(super) fn prepare(conn: &'c Connection, now: &'c str) -> Result<RowWriter<'c>, StoreError> {
        Ok(RowWriter {
            now,
            update_system: conn
                .prepare_cached(UPDATE_SYSTEM)
                .context("preparing the system update")?,
            // An update by the unique key, and an insert only when it found no row. An
            // `INSERT .. ON CONFLICT DO UPDATE` makes an insert attempt first, which
            // conflicts on nearly every save, and measured markedly slower (README,
            // *Benchmarks*).
            update_structure: conn
                .prepare_cached(UPDATE_STRUCTURE)
                .context("preparing the structure update")?,
            insert_structure: conn
                .prepare_cached(INSERT_STRUCTURE)
                .context("preparing the structure insert")?,
            update_event: conn
                .prepare_cached(UPDATE_EVENT)
                .context("preparing the event update")?,
            delete_event: conn
                .prepare_cached(DELETE_EVENT)
                .context("preparing the event delete")?,
            insert_event: conn
                .prepare_cached(INSERT_EVENT)
                .context("preparing the event insert")?,
        })
    }

    /// Updates the system row; returns rows written.
    fn system(&mut self, id: i64, system: &System) -> Result<u64, StoreError> {
        let r = system.resources;
        self.update_system
            .execute(params![
                stored_int(r.metal),
                stored_int(r.crew),
                stored_int(r.water),
                stored_int(system.tick),
                id,
                self.now
            ])
            .context("saving a system")?;
        Ok(1)
    }

    /// Writes the structure rows `rows` names, inserting those not stored yet (all of them
    /// for a system just inserted); returns rows written.
    pub(super) fn structures(
        &mut self,
        id: i64,
        system: &System,
        rows: RowMask,
        new_system: bool,
    ) -> Result<u64, StoreError> {
        let mut written = 0;
        for kind in rows.structures() {
            let row = params![id, kind.as_str(), system.levels[kind.index()], self.now];
            let updated = if new_system {
                0
            } else {
                self.update_structure
                    .execute(row)
                    .context("saving a structure")?
            };
            if updated == 0 {
                self.insert_structure
                    .execute(row)
                    .context("saving a structure")?;
            }
            written += 1;
        }
        Ok(written)
    }

    /// Makes the system's event row match its build in flight, by the event's row id;
    /// returns rows written. `stored.event` follows what was written.
    pub(super) fn events(
        &mut self,
        stored: &mut StoredSystem,
        system: &System,
    ) -> Result<u64, StoreError> {
        match (stored.event, system.build) {
            (Some(event), Some(build)) => {
                self.update_event
                    .execute(params![
                        stored_int(build.completion_tick),
                        build.structure.as_str(),
                        event
                    ])
                    .context("saving an event")?;
            }
            (Some(event), None) => {
                self.delete_event
                    .execute([event])
                    .context("deleting an event")?;
                stored.event = None;
            }
            (None, Some(build)) => {
                let event = self
                    .insert_event
                    .insert(params![
                        stored.id,
                        stored_int(build.completion_tick),
                        build.structure.as_str()
                    ])
                    .context("saving an event")?;
                stored.event = Some(event);
            }
            (None, None) => return Ok(0),
        }
        Ok(1)
    }
}
