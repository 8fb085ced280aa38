//! Creating and deleting whole galaxies in bounded chunks, each its own transaction, with
//! the same `galaxy_jobs` marks and rules as SQLite's (see `../sqlite/jobs.rs` for why).
//!
//! A creation chunk is three set-based inserts: the systems (`INSERT … SELECT FROM
//! unnest(…) RETURNING id, x, y`, which hands back the row ids the cache needs), their
//! structures and their events. Not `COPY`: it returns no ids, so a second query would
//! have to read them back, and a chunk is sized to a few tens of milliseconds of writer
//! time anyway, where the statement's cost is the rows, not the protocol. A purge chunk
//! is one `DELETE` of up to a chunk of systems; structures and events go by cascade.

use std::collections::HashMap;

use super::super::{CreationProgress, GalaxyJob, NewGalaxy, StoredSystem, WriteStats};
use super::write::{EventRows, StructureRows};
use super::{int, Context, PostgresWriter, Session, StoreError};

const INSERT_SYSTEMS: &str = "INSERT INTO systems
         (galaxy_name, x, y, metal, crew, water, current_tick)
     SELECT $1, u.* FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
         $6::bigint[], $7::bigint[]) AS u
     RETURNING id, x, y";

const INSERT_STRUCTURES: &str = "INSERT INTO structures (system_id, structure_type, level)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])";

impl PostgresWriter {
    /// [`crate::persistence::store::WriteStore::create_chunk`].
    pub(super) fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError> {
        let from = progress.written;
        let to = galaxy
            .systems
            .len()
            .min(from.saturating_add(max_systems.max(1)));
        let finished = to == galaxy.systems.len();
        let chunk = &galaxy.systems[from..to];
        let (stats, mut ids) = self.with_session(|session, _| {
            let Session { client, prepared } = session;
            let mut tx = client.transaction().context("starting a creation")?;
            let mut stats = WriteStats::default();
            if from == 0 {
                tx.execute(
                    "INSERT INTO galaxies (name, config_file, tick) VALUES ($1, $2, $3)",
                    &[&galaxy.name, &galaxy.config_toml, &int(galaxy.tick)],
                )
                .context("inserting a galaxy")?;
                tx.execute(
                    "INSERT INTO galaxy_jobs (name, job) VALUES ($1, 'creating')",
                    &[&galaxy.name],
                )
                .context("marking a galaxy as being created")?;
                stats.rows += 2;
            }
            let column = |value: fn(&crate::model::System) -> u64| -> Vec<i64> {
                chunk.iter().map(|system| int(value(system))).collect()
            };
            let statement = prepared.get(&mut tx, INSERT_SYSTEMS)?;
            let inserted = tx
                .query(
                    &statement,
                    &[
                        &galaxy.name,
                        &column(|s| u64::from(s.x)),
                        &column(|s| u64::from(s.y)),
                        &column(|s| s.resources.metal),
                        &column(|s| s.resources.crew),
                        &column(|s| s.resources.water),
                        &column(|s| s.tick),
                    ],
                )
                .context("inserting systems")?;
            // Matched to the chunk by coordinates (unique in a galaxy): the order of
            // RETURNING is not promised.
            let mut returned: Vec<(i64, i64, i64)> = inserted
                .iter()
                .map(|row| Ok((row.try_get(1)?, row.try_get(2)?, row.try_get(0)?)))
                .collect::<Result<_, ::postgres::Error>>()
                .context("reading system ids")?;
            returned.sort_unstable();
            let mut ids = Vec::with_capacity(chunk.len());
            let mut structures = StructureRows::default();
            let mut events = EventRows::default();
            let mut by_id: HashMap<i64, usize> = HashMap::new();
            for (system, &(x, y, id)) in chunk.iter().zip(&returned) {
                if (i64::from(system.x), i64::from(system.y)) != (x, y) {
                    return Err(StoreError::Inconsistent {
                        galaxy: galaxy.name.to_owned(),
                        reason: format!(
                            "inserted system ({x}, {y}) where ({}, {}) was expected",
                            system.x, system.y
                        ),
                    });
                }
                let mut stored = StoredSystem {
                    id,
                    x: system.x,
                    y: system.y,
                    event: None,
                };
                structures.push(id, system, galaxy.rows);
                if events.push(&mut stored, system) > 0 {
                    by_id.insert(id, ids.len());
                }
                ids.push(stored);
            }
            if ids.len() != chunk.len() {
                return Err(StoreError::Inconsistent {
                    galaxy: galaxy.name.to_owned(),
                    reason: format!("{} systems inserted of {}", ids.len(), chunk.len()),
                });
            }
            stats.systems += ids.len() as u64;
            stats.rows += ids.len() as u64;
            if structures.len() > 0 {
                let statement = prepared.get(&mut tx, INSERT_STRUCTURES)?;
                tx.execute(
                    &statement,
                    &[
                        &structures.system_ids,
                        &structures.types,
                        &structures.levels,
                    ],
                )
                .context("inserting structures")?;
                stats.rows += structures.len() as u64;
            }
            for (event, system_id) in events.write(&mut tx, prepared, galaxy.name)? {
                if let Some(&at) = by_id.get(&system_id) {
                    ids[at].event = Some(event);
                    stats.rows += 1;
                }
            }
            if finished {
                tx.execute("DELETE FROM galaxy_jobs WHERE name = $1", &[&galaxy.name])
                    .context("finishing a creation")?;
                stats.rows += 1;
            }
            tx.commit().context("committing a creation")?;
            Ok((stats, ids))
        })?;
        progress.written = to;
        progress.ids.append(&mut ids);
        if finished {
            self.ids
                .insert(galaxy.name.to_owned(), std::mem::take(&mut progress.ids));
        }
        Ok(stats)
    }

    /// [`crate::persistence::store::WriteStore::purge_chunk`]: only a galaxy with a mark
    /// (`deleting`: its deletion is committed; `creating`: its creation failed or was
    /// abandoned), never a live one, even one that took the name since.
    pub(super) fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError> {
        let limit = i64::try_from(max_systems.max(1)).unwrap_or(i64::MAX);
        let (stats, done) = self.with_session(|session, _| {
            let mut tx = session
                .client
                .transaction()
                .context("starting a deletion")?;
            let marked = tx
                .query_opt("SELECT 1 FROM galaxy_jobs WHERE name = $1", &[&name])
                .context("checking a deletion")?
                .is_some();
            if !marked {
                return Ok((WriteStats::default(), true));
            }
            let systems = tx
                .execute(
                    "DELETE FROM systems WHERE id IN
                     (SELECT id FROM systems WHERE galaxy_name = $1 LIMIT $2)",
                    &[&name, &limit],
                )
                .context("deleting systems")?;
            let done = (systems as i64) < limit;
            if done {
                tx.execute("DELETE FROM galaxies WHERE name = $1", &[&name])
                    .context("deleting a galaxy")?;
            }
            tx.commit().context("committing a deletion")?;
            let stats = WriteStats {
                systems,
                rows: systems + u64::from(done),
            };
            Ok((stats, done))
        })?;
        if done {
            self.ids.remove(name);
        }
        Ok((stats, done))
    }

    /// [`crate::persistence::store::WriteStore::unfinished_jobs`].
    pub(super) fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        self.with_session(|session, _| {
            let rows = session
                .client
                .query(
                    "SELECT name, job FROM galaxy_jobs ORDER BY started_at, name COLLATE \"C\"",
                    &[],
                )
                .context("reading unfinished jobs")?;
            let mut jobs = Vec::with_capacity(rows.len());
            for row in rows {
                let name: String = row.try_get(0).context("reading unfinished jobs")?;
                let job: &str = row.try_get(1).context("reading unfinished jobs")?;
                jobs.push(match job {
                    "creating" => GalaxyJob::Creating(name),
                    _ => GalaxyJob::Deleting(name),
                });
            }
            if jobs.iter().any(|job| matches!(job, GalaxyJob::Creating(_))) {
                session
                    .client
                    .execute(
                        "UPDATE galaxy_jobs SET job = 'deleting' WHERE job = 'creating'",
                        &[],
                    )
                    .context("abandoning unfinished creations")?;
            }
            Ok(jobs)
        })
    }
}
