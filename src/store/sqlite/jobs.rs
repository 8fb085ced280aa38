//! Creating and deleting whole galaxies in bounded chunks, each its own transaction.
//!
//! A huge galaxy written or removed in one transaction would hold the writer for minutes,
//! and every other galaxy's batch would wait behind it. So a job advances by a chunk the
//! caller sizes, and the table `galaxy_jobs` (migration 0002) keeps the galaxy invisible
//! until the job is done:
//! - creation: the first chunk inserts the galaxy row marked `creating` and the first
//!   systems; the last chunk deletes the mark in the same transaction, so the galaxy
//!   exists from that commit on, whole;
//! - deletion: a batch marks the galaxy `deleting` (that commit is the deletion); chunks
//!   then delete its systems, whose structures and events go by cascade, then its history
//!   (unless the galaxy is archived: see `history.rs`), and the last one deletes the
//!   galaxy row, which takes the mark with it.
//!
//! A creation interrupted by a crash or a shutdown is turned into a deletion at the next
//! start ([`SqliteWriter::unfinished_jobs`]), so nothing half-made is ever seen or kept.

use std::time::SystemTime;

use rusqlite::params;

use super::super::stored_int;
use super::super::StoreError;
use super::super::{CreationProgress, GalaxyJob, NewGalaxy, StoredSystem, WriteStats};
use super::archive::restore_archive;
use super::db::Context;
use super::history::purge_history;
use super::write::RowWriter;
use super::writer::SqliteWriter;
use crate::time::UtcTime;

// A job's statements, named so that the plan test (`plans.rs`) explains these very texts.

pub(super) const INSERT_GALAXY: &str =
    "INSERT INTO galaxies (name, config_file, tick) VALUES (?1, ?2, ?3)";
pub(super) const MARK_CREATING: &str =
    "INSERT INTO galaxy_jobs (name, job) VALUES (?1, 'creating')";
pub(super) const INSERT_SIZE: &str = "INSERT INTO galaxy_sizes (name, systems) VALUES (?1, ?2)";
pub(super) const INSERT_SYSTEM: &str =
    "INSERT INTO systems (galaxy_name, x, y, metal, crew, water, current_tick)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// The last chunk of a creation: the galaxy exists from its commit on.
pub(super) const FINISH_CREATION: &str = "DELETE FROM galaxy_jobs WHERE name = ?1";
pub(super) const IS_MARKED: &str = "SELECT 1 FROM galaxy_jobs WHERE name = ?1";
/// A purge chunk: up to `?2` of the galaxy's systems, found through the unique
/// `(galaxy_name, x, y)` index; their structures and events go by cascade.
pub(super) const PURGE_SYSTEMS: &str = "DELETE FROM systems WHERE id IN
     (SELECT id FROM systems WHERE galaxy_name = ?1 LIMIT ?2)";
pub(super) const DELETE_GALAXY: &str = "DELETE FROM galaxies WHERE name = ?1";
pub(super) const UNFINISHED_JOBS: &str =
    "SELECT name, job FROM galaxy_jobs ORDER BY started_at, name";
pub(super) const ABANDON_CREATIONS: &str =
    "UPDATE galaxy_jobs SET job = 'deleting' WHERE job = 'creating'";

impl SqliteWriter {
    /// Writes the next `max_systems` systems of a new galaxy in one transaction (the first
    /// chunk also writes the galaxy row and its `creating` mark). When the chunk reaches
    /// the last system it removes the mark, so the galaxy exists, and caches its system
    /// ids; `progress.written` then equals the galaxy's systems. On error nothing of the
    /// chunk is written and `progress` is unchanged. A restore's last chunk deletes its
    /// archive, and a name with an archive is no creation's (see `archive.rs`).
    pub(super) fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError> {
        self.db.check_file()?;
        let from = progress.written;
        let to = galaxy
            .systems
            .len()
            .min(from.saturating_add(max_systems.max(1)));
        let finished = to == galaxy.systems.len();
        let mut stats = WriteStats::default();
        let mut ids = Vec::with_capacity(to - from);
        let tx = self.db.conn.transaction().context("starting a creation")?;
        stats.rows += restore_archive(&tx, galaxy, from == 0, finished)?;
        if from == 0 {
            tx.prepare_cached(INSERT_GALAXY)
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        galaxy.name,
                        galaxy.config_toml,
                        stored_int(galaxy.tick)
                    ])
                })
                .context("inserting a galaxy")?;
            tx.prepare_cached(MARK_CREATING)
                .and_then(|mut stmt| stmt.execute([galaxy.name]))
                .context("marking a galaxy as being created")?;
            tx.prepare_cached(INSERT_SIZE)
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        galaxy.name,
                        stored_int(galaxy.systems.len() as u64)
                    ])
                })
                .context("recording a new galaxy's size")?;
            stats.rows += 3;
        }
        {
            let mut insert_system = tx
                .prepare_cached(INSERT_SYSTEM)
                .context("inserting systems")?;
            let now = UtcTime::at(SystemTime::now()).sql();
            let mut rows = RowWriter::prepare(&tx, &now)?;
            for system in &galaxy.systems[from..to] {
                let r = system.resources;
                insert_system
                    .execute(params![
                        galaxy.name,
                        system.x,
                        system.y,
                        stored_int(r.metal),
                        stored_int(r.crew),
                        stored_int(r.water),
                        stored_int(system.tick)
                    ])
                    .context("inserting a system")?;
                let mut stored = StoredSystem {
                    id: tx.last_insert_rowid(),
                    x: system.x,
                    y: system.y,
                    event: None,
                };
                stats.systems += 1;
                stats.rows += 1 + rows.structures(stored.id, system, galaxy.rows, true)?;
                stats.rows += rows.events(&mut stored, system)?;
                ids.push(stored);
            }
        }
        if finished {
            tx.prepare_cached(FINISH_CREATION)
                .and_then(|mut stmt| stmt.execute([galaxy.name]))
                .context("finishing a creation")?;
            stats.rows += 1;
        }
        tx.commit().context("committing a creation")?;
        progress.written = to;
        progress.ids.append(&mut ids);
        if finished {
            self.ids
                .insert(galaxy.name.to_owned(), std::mem::take(&mut progress.ids));
        }
        Ok(stats)
    }

    /// Deletes up to `max_systems` systems of a galaxy with a mark (with their structures
    /// and events), in one transaction; when none are left, the galaxy row and its mark
    /// too. Returns the rows deleted and whether the galaxy is gone. `deleting`: its
    /// deletion is committed; `creating`: its creation failed or was abandoned (the
    /// writer queues the purge before any later creation of the name, and runs one
    /// creation at a time, so the mark is never a creation still in progress).
    pub(super) fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError> {
        self.db.check_file()?;
        let limit = stored_int(max_systems.max(1));
        let tx = self.db.conn.transaction().context("starting a deletion")?;
        // Only a galaxy with a mark: a purge must never touch a live galaxy, even one
        // that took the name since.
        let marked = tx
            .prepare_cached(IS_MARKED)
            .and_then(|mut stmt| stmt.exists([name]))
            .context("checking a deletion")?;
        if !marked {
            return Ok((WriteStats::default(), true));
        }
        let systems = tx
            .prepare_cached(PURGE_SYSTEMS)
            .and_then(|mut stmt| stmt.execute(params![name, limit]))
            .context("deleting systems")?;
        // Its systems gone, its history (none of an archived galaxy's), a chunk at a
        // time like them, and the galaxy row last: a galaxy is not gone while history
        // of its name that is not an archive's is left.
        let segments = if (systems as i64) < limit {
            purge_history(&tx, name, limit)?
        } else {
            0
        };
        let done = (systems as i64) < limit && (segments as i64) < limit;
        if done {
            tx.prepare_cached(DELETE_GALAXY)
                .and_then(|mut stmt| stmt.execute([name]))
                .context("deleting a galaxy")?;
        }
        tx.commit().context("committing a deletion")?;
        if done {
            self.ids.remove(name);
        }
        let stats = WriteStats {
            systems: systems as u64,
            rows: systems as u64 + segments + u64::from(done),
        };
        Ok((stats, done))
    }

    /// The jobs a previous run left unfinished, as they were found. Creations among them
    /// are turned into deletions (a half-written galaxy is never kept), so every job
    /// returned is to be finished by [`SqliteWriter::purge_chunk`].
    pub(super) fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        self.db.check_file()?;
        let jobs: Vec<GalaxyJob> = {
            let mut stmt = self
                .db
                .conn
                .prepare(UNFINISHED_JOBS)
                .context("reading unfinished jobs")?;
            let rows = stmt
                .query_map([], |row| Ok((row.get(0)?, row.get::<_, String>(1)?)))
                .and_then(|rows| rows.collect::<Result<Vec<(String, String)>, _>>())
                .context("reading unfinished jobs")?;
            rows.into_iter()
                .map(|(name, job)| match job.as_str() {
                    "creating" => GalaxyJob::Creating(name),
                    _ => GalaxyJob::Deleting(name),
                })
                .collect()
        };
        if jobs.iter().any(|job| matches!(job, GalaxyJob::Creating(_))) {
            self.db
                .conn
                .execute(ABANDON_CREATIONS, [])
                .context("abandoning unfinished creations")?;
        }
        Ok(jobs)
    }
}
