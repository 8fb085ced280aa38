//! Creating and deleting whole galaxies in bounded chunks, each its own transaction, with
//! the same `galaxy_jobs` marks and rules as SQLite's (see `../sqlite/jobs.rs` for why).
//!
//! A creation chunk is three set-based inserts: the systems (`INSERT … SELECT FROM
//! unnest(…) RETURNING id, x, y`, which hands back the row ids the cache needs), their
//! structures and their events. Not `COPY`: it returns no ids, so a second query would
//! have to read them back, and a chunk is sized to a few tens of milliseconds of writer
//! time anyway, where the statement's cost is the rows, not the protocol. A purge chunk
//! is one `DELETE` of up to a chunk of systems; structures and events go by cascade.
//!
//! Ownership (see `owners.rs`): a creation's first chunk inserts the galaxy's ownership
//! row (epoch 1, this daemon) beside the galaxy, and every chunk ends with the fence on
//! `(name, 1, this daemon)`, renewing the lease; so two daemons creating one name meet
//! on the galaxies table's primary key (the second is told [`StoreError::Exists`]), and
//! a creation whose owner was taken for dead cannot go on. A purge chunk is fenced by the
//! epoch this daemon owns the galaxy under, and a galaxy this daemon does not own is
//! never purged. At start-up only the jobs whose galaxies are free (or whose owner's
//! lease ran out) are taken and returned: another live daemon's creation or deletion in
//! progress is its own.
//!
//! A chunk whose commit's answer was lost (the connection broke during the `COMMIT`: the
//! server died, or a failover, or the network) may or may not be in the database. The
//! progress is then marked unsettled, and the next call reads the galaxy's rows back under
//! the chunk's fence before it writes anything: the chunk is taken as written (its ids read
//! back) or written again, never twice; and a last chunk that made the galaxy exist ends
//! the creation as created (see `PostgresWriter::settle_chunk`).

use std::collections::HashMap;

use ::postgres::error::SqlState;
use ::postgres::Transaction;

use super::super::stored_int;
use super::super::{
    CreationProgress, FailureKind, GalaxyJob, NewGalaxy, StoreError, StoredSystem, SystemIds,
    WriteStats,
};
use super::archive::restore_archive;
use super::error::{retry_serialization, Context, LOG};
use super::history::PURGE_HISTORY;
use super::identity::Identity;
use super::owners::{self, Fence};
use super::session::{Prepared, Session};
use super::write::{EventRows, StructureRows};
use super::writer::PostgresWriter;
use crate::model::System;

pub(super) const INSERT_SYSTEMS: &str = "INSERT INTO systems
         (galaxy_name, x, y, metal, crew, water, current_tick)
     SELECT $1, u.* FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
         $6::bigint[], $7::bigint[]) AS u
     RETURNING id, x, y";

/// A creation's ownership row: this daemon's from the first chunk, under epoch 1.
pub(super) const INSERT_OWNER: &str = "INSERT INTO galaxy_owners
         (galaxy_name, epoch, owner, owner_url, expires_at)
     VALUES ($1, 1, $2, $3, now() + $4::bigint * interval '1 millisecond')";

/// The daemons holding unfinished jobs under a lease that still runs: those among them
/// known to have exited ([`super::identity::Identity::outlived`]) need not be waited for.
pub(super) const JOB_OWNERS: &str = "SELECT DISTINCT o.owner FROM galaxy_owners o
     JOIN galaxy_jobs j ON j.name = o.galaxy_name
     WHERE o.owner IS NOT NULL AND o.expires_at >= now()";

/// Gives every unfinished job whose galaxy is free, whose owner's lease ran out, or
/// whose owner is one of `$4` (daemons that exited), to this daemon (a new epoch each),
/// oldest first.
pub(super) const TAKE_JOBS: &str = "WITH taken AS (
         UPDATE galaxy_owners o SET epoch = o.epoch + 1, owner = $1, owner_url = $2,
             expires_at = now() + $3::bigint * interval '1 millisecond'
         FROM galaxy_jobs j
         WHERE j.name = o.galaxy_name
             AND (o.owner IS NULL OR o.owner = $1 OR o.expires_at < now()
                 OR o.owner = ANY($4::text[]))
         RETURNING o.galaxy_name, o.epoch, j.job, j.started_at
     )
     SELECT galaxy_name, epoch, job FROM taken
     ORDER BY started_at, galaxy_name COLLATE \"C\"";

/// Jobs whose galaxy has no ownership row (none should: see `owners.rs`) get a free one.
pub(super) const ADD_JOB_OWNERS: &str = "INSERT INTO galaxy_owners
         (galaxy_name, epoch, owner, owner_url, expires_at)
     SELECT name, 0, NULL, NULL, now() FROM galaxy_jobs
     ON CONFLICT (galaxy_name) DO NOTHING";

pub(super) const INSERT_GALAXY: &str =
    "INSERT INTO galaxies (name, config_file, tick) VALUES ($1, $2, $3)";
pub(super) const MARK_CREATING: &str =
    "INSERT INTO galaxy_jobs (name, job) VALUES ($1, 'creating')";
pub(super) const INSERT_SIZE: &str = "INSERT INTO galaxy_sizes (name, systems) VALUES ($1, $2)";
/// The last chunk of a creation: the galaxy exists from its commit on.
pub(super) const FINISH_CREATION: &str = "DELETE FROM galaxy_jobs WHERE name = $1";
pub(super) const IS_MARKED: &str = "SELECT 1 FROM galaxy_jobs WHERE name = $1";
/// A purge chunk: up to `$2` of the galaxy's systems, found through the unique
/// `(galaxy_name, x, y)` index; their structures and events go by cascade. Their ids as
/// an array, deleted by primary key: an `IN (subquery)` is planned as a hash of the chunk
/// probed by a scan of the whole systems table (the plan test, `plans.rs`).
pub(super) const PURGE_SYSTEMS: &str = "DELETE FROM systems WHERE id = ANY(ARRAY(
     SELECT id FROM systems WHERE galaxy_name = $1 LIMIT $2))";
pub(super) const DELETE_GALAXY: &str = "DELETE FROM galaxies WHERE name = $1";
pub(super) const ABANDON_CREATIONS: &str =
    "UPDATE galaxy_jobs SET job = 'deleting' WHERE name = ANY($1::text[])";

/// The context of a creation chunk's commit, by which [`lost_commit`] knows it.
const COMMITTING: &str = "committing a creation";

/// Whether `error` is a creation chunk's commit whose outcome is unknown: the
/// connection broke (or the server went away) after the commit was sent. A server that
/// answered with an error rolled back; one that answered nothing may have committed.
fn lost_commit(error: &StoreError) -> bool {
    matches!(error, StoreError::Postgres { context, .. } if *context == COMMITTING)
        && error.kind() == FailureKind::Unavailable
}

/// A creation whose commit's answer was lost, as stored: a row when the galaxy's row is
/// there, saying whether it is still marked as being created.
pub(super) const SETTLE_CHUNK: &str = "SELECT EXISTS (SELECT 1 FROM galaxy_jobs j
         WHERE j.name = g.name AND j.job = 'creating')
     FROM galaxies g WHERE g.name = $1";

/// What [`PostgresWriter::settle_chunk`] found.
enum Settled {
    /// No galaxy of the name: the first chunk is not in the database.
    Absent,
    /// The name is not held by this daemon under epoch 1.
    NotOurs,
    /// This creation's galaxy: whether it is still marked, and its systems as stored.
    Found { marked: bool, ids: SystemIds },
}

pub(super) const INSERT_STRUCTURES: &str =
    "INSERT INTO structures (system_id, structure_type, level)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])";

impl PostgresWriter {
    /// [`crate::store::WriteStore::create_chunk`]. A chunk whose commit's answer was lost
    /// is settled first ([`PostgresWriter::settle_chunk`]): taken as written if the
    /// database has it, else written again.
    pub(super) fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError> {
        if let Some(to) = progress.unsettled {
            if let Some(stats) = self.settle_chunk(galaxy, progress, to)? {
                return Ok(stats);
            }
        }
        let from = progress.written;
        let to = galaxy
            .systems
            .len()
            .min(from.saturating_add(max_systems.max(1)));
        let (stats, mut ids) = match self.write_chunk(galaxy, from, to) {
            Ok(written) => written,
            Err(error) => {
                // The connection broke during the commit: it may have been applied, its
                // answer lost. The next call finds out. (Broken before the commit, the
                // transaction is rolled back with the session: nothing was written.)
                if lost_commit(&error) {
                    progress.unsettled = Some(to);
                }
                return Err(error);
            }
        };
        progress.written = to;
        progress.ids.append(&mut ids);
        self.chunk_written(galaxy, progress);
        Ok(stats)
    }

    /// Systems `from..to` of a new galaxy in one transaction, fenced on `(name, 1)`;
    /// their ids.
    fn write_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        from: usize,
        to: usize,
    ) -> Result<(WriteStats, Vec<StoredSystem>), StoreError> {
        let finished = to == galaxy.systems.len();
        let chunk = &galaxy.systems[from..to];
        let mut fence = Fence::default();
        fence.push(galaxy.name, 1);
        let created = self.with_session(|session, _, me| {
            let Session { client, prepared } = session;
            let mut tx = client.transaction().context("starting a creation")?;
            let mut stats = WriteStats::default();
            stats.rows += restore_archive(&mut tx, galaxy, from == 0, finished)?;
            if from == 0 {
                stats.rows += insert_galaxy(&mut tx, galaxy, me)?;
            }
            let returned = insert_systems(&mut tx, prepared, galaxy.name, chunk)?;
            let mut rows = ChunkRows::matched(galaxy, chunk, &returned)?;
            stats.systems += rows.ids.len() as u64;
            stats.rows += rows.ids.len() as u64;
            stats.rows += rows.write(&mut tx, prepared, galaxy.name)?;
            if finished {
                tx.execute(FINISH_CREATION, &[&galaxy.name])
                    .context("finishing a creation")?;
                stats.rows += 1;
            }
            if !owners::fence(&mut tx, prepared, me, &fence)?.is_empty() {
                tx.rollback().context("rolling back a fenced creation")?;
                return Ok(None);
            }
            tx.commit().context(COMMITTING)?;
            Ok(Some((stats, rows.ids)))
        })?;
        match created {
            Some(written) => Ok(written),
            None => Err(self.lose(vec![galaxy.name.to_owned()])),
        }
    }

    /// A chunk is committed and `progress` says so: the galaxy is this daemon's, and once
    /// its last chunk is in, its ids go to the cache.
    fn chunk_written(&mut self, galaxy: &NewGalaxy<'_>, progress: &mut CreationProgress) {
        progress.unsettled = None;
        self.owned.insert(galaxy.name.to_owned(), 1);
        if progress.written == galaxy.systems.len() {
            self.ids
                .insert(galaxy.name.to_owned(), std::mem::take(&mut progress.ids));
        }
    }

    /// The chunk `progress.written..to` was sent and its commit's answer lost: reads back
    /// what the database holds of the galaxy, in a transaction fenced like a chunk's. If
    /// the chunk is there, `progress` takes it (its ids read back) and its stats are
    /// returned; if not, `None`, and the chunk is to be written again. Anything else (a
    /// part of it, rows this creation did not write) is [`StoreError::Inconsistent`]; a
    /// name another daemon holds is [`StoreError::Exists`] before the first chunk and
    /// [`StoreError::Lost`] after, and `progress` is settled all the same (the creation
    /// is to be refused). When the database does not answer, `progress` is unchanged:
    /// still unsettled.
    fn settle_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        to: usize,
    ) -> Result<Option<WriteStats>, StoreError> {
        let from = progress.written;
        let name = galaxy.name;
        let mut fence = Fence::default();
        fence.push(name, 1);
        let found = self.with_session(|session, _, me| {
            let Session { client, prepared } = session;
            let mut tx = client.transaction().context("settling a creation")?;
            let row = tx
                .query_opt(SETTLE_CHUNK, &[&name])
                .context("settling a creation")?;
            let marked = match row {
                None if from == 0 => return Ok(Settled::Absent),
                None => false,
                Some(row) => row.try_get(0).context("settling a creation")?,
            };
            if !owners::fence(&mut tx, prepared, me, &fence)?.is_empty() {
                tx.rollback().context("rolling back a fenced creation")?;
                return Ok(Settled::NotOurs);
            }
            let ids = super::write::fetch_ids(&mut tx, prepared, name)?;
            tx.commit().context("settling a creation")?;
            Ok(Settled::Found { marked, ids })
        })?;
        // Known now, whatever follows: written again, taken as written, or refused (the
        // name another daemon's, or rows this creation did not write).
        progress.unsettled = None;
        let (marked, ids) = match found {
            Settled::Absent => return Ok(None),
            Settled::NotOurs if from == 0 => return Err(StoreError::Exists(name.to_owned())),
            Settled::NotOurs => return Err(self.lose(vec![name.to_owned()])),
            Settled::Found { marked, ids } => (marked, ids),
        };
        let inconsistent = |reason: String| StoreError::Inconsistent {
            galaxy: name.to_owned(),
            reason: format!("settling a creation whose commit was not answered: {reason}"),
        };
        let stored = ids.len();
        let misplaced = (ids.iter().zip(galaxy.systems))
            .position(|(stored, system)| (stored.x, stored.y) != (system.x, system.y));
        if let Some(at) = misplaced.filter(|_| stored <= galaxy.systems.len()) {
            let (x, y) = (ids[at].x, ids[at].y);
            return Err(inconsistent(format!(
                "stored system ({x}, {y}) is not the new galaxy's"
            )));
        }
        // The galaxy's row came with the first chunk: with it, the first chunk is in.
        let committed = stored > from || from == 0;
        let finished = to == galaxy.systems.len();
        if stored != if committed { to } else { from } || marked != (!committed || !finished) {
            return Err(inconsistent(format!(
                "{stored} systems stored (marked as being created: {marked}) where {from} \
                 or {to} were expected"
            )));
        }
        if !committed {
            return Ok(None);
        }
        log::info!(target: LOG, "galaxy '{name}': the commit of systems {from}..{to}, whose \
            answer was lost, is in the database; the creation goes on from there");
        progress.written = to;
        progress.ids = ids;
        self.chunk_written(galaxy, progress);
        let systems = (to - from) as u64;
        Ok(Some(WriteStats {
            systems,
            rows: systems,
        }))
    }

    /// [`crate::store::WriteStore::purge_chunk`]: only a galaxy with a mark
    /// (`deleting`: its deletion is committed; `creating`: its creation failed or was
    /// abandoned), never a live one, even one that took the name since.
    pub(super) fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError> {
        let limit = stored_int(max_systems.max(1));
        let Some(&epoch) = self.owned.get(name) else {
            log::debug!(target: LOG,
                "galaxy '{name}': not purged here, it is not this daemon's (any more)");
            return Ok((WriteStats::default(), true));
        };
        let mut fence = Fence::default();
        fence.push(name, epoch);
        let purged = self.with_session(|session, _, me| {
            let Session { client, prepared } = session;
            let mut tx = client.transaction().context("starting a deletion")?;
            let marked = tx
                .query_opt(IS_MARKED, &[&name])
                .context("checking a deletion")?
                .is_some();
            if !marked {
                return Ok(Some((WriteStats::default(), true)));
            }
            let systems = tx
                .execute(PURGE_SYSTEMS, &[&name, &limit])
                .context("deleting systems")?;
            // Its systems gone, its history (none of an archived galaxy's), a chunk at a
            // time like them, and the galaxy row last (see `history.rs`).
            let segments = if (systems as i64) < limit {
                tx.execute(PURGE_HISTORY, &[&name, &limit])
                    .context("deleting a galaxy's history")?
            } else {
                0
            };
            let done = (systems as i64) < limit && (segments as i64) < limit;
            // The fence before the galaxy's own row goes (its ownership row goes with it).
            if !owners::fence(&mut tx, prepared, me, &fence)?.is_empty() {
                tx.rollback().context("rolling back a fenced deletion")?;
                return Ok(None);
            }
            if done {
                tx.execute(DELETE_GALAXY, &[&name])
                    .context("deleting a galaxy")?;
            }
            tx.commit().context("committing a deletion")?;
            let stats = WriteStats {
                systems,
                rows: systems + segments + u64::from(done),
            };
            Ok(Some((stats, done)))
        })?;
        let Some((stats, done)) = purged else {
            return Err(self.lose(vec![name.to_owned()]));
        };
        if done {
            self.ids.remove(name);
            self.owned.remove(name);
        }
        Ok((stats, done))
    }

    /// [`crate::store::WriteStore::unfinished_jobs`]: the jobs this daemon
    /// could take (their galaxies free, or their owners' leases run out), each taken
    /// under a new epoch; another live daemon's jobs are left to it. Creations among
    /// them are turned into deletions, in the same transaction.
    pub(super) fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        self.take_jobs(TAKE_JOBS, "taking unfinished jobs")
    }

    /// [`crate::store::WriteStore::orphaned_jobs`]: as
    /// [`PostgresWriter::unfinished_jobs`], for a daemon already running, so never a job
    /// whose galaxy this daemon owns: taking it again would raise its epoch and fence this
    /// daemon's own creation or removal in progress.
    pub(super) fn orphaned_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        self.take_jobs(TAKE_ORPHANED_JOBS, "taking orphaned jobs")
    }

    /// Takes the jobs `take` (one of [`TAKE_JOBS`], [`TAKE_ORPHANED_JOBS`]) gives this
    /// daemon, in one transaction that also turns creations among them into deletions
    /// (run again at once after a serialization failure), and owns their galaxies.
    fn take_jobs(
        &mut self,
        take: &'static str,
        context: &'static str,
    ) -> Result<Vec<GalaxyJob>, StoreError> {
        let taken = retry_serialization(|| {
            self.with_session(|session, _, me| {
                let mut tx = session.client.transaction().context(context)?;
                tx.execute(ADD_JOB_OWNERS, &[]).context(context)?;
                let mut exited = Vec::new();
                for row in tx.query(JOB_OWNERS, &[]).context(context)? {
                    let owner: String = row.try_get(0).context(context)?;
                    if me.outlived(&owner) {
                        exited.push(owner);
                    }
                }
                let rows = tx
                    .query(take, &[&me.id, &me.url, &me.lease_ms(), &exited])
                    .context(context)?;
                let mut jobs = Vec::with_capacity(rows.len());
                let mut creations = Vec::new();
                for row in rows {
                    let name: String = row.try_get(0).context(context)?;
                    let epoch: i64 = row.try_get(1).context(context)?;
                    let job: &str = row.try_get(2).context(context)?;
                    if job == "creating" {
                        creations.push(name.clone());
                        jobs.push((GalaxyJob::Creating(name), epoch));
                    } else {
                        jobs.push((GalaxyJob::Deleting(name), epoch));
                    }
                }
                if !creations.is_empty() {
                    tx.execute(ABANDON_CREATIONS, &[&creations])
                        .context("abandoning unfinished creations")?;
                }
                tx.commit().context(context)?;
                Ok(jobs)
            })
        })?;
        Ok(taken
            .into_iter()
            .map(|(job, epoch)| {
                let (GalaxyJob::Creating(name) | GalaxyJob::Deleting(name)) = &job;
                self.disowned.remove(name);
                self.owned.insert(name.clone(), epoch);
                job
            })
            .collect())
    }
}

/// A creation's first chunk: the galaxy's row, its `creating` mark and its ownership row
/// (epoch 1, this daemon) and its size; returns the rows written.
fn insert_galaxy(
    tx: &mut Transaction<'_>,
    galaxy: &NewGalaxy<'_>,
    me: &Identity,
) -> Result<u64, StoreError> {
    let inserted = tx.execute(
        INSERT_GALAXY,
        &[&galaxy.name, &galaxy.config_toml, &stored_int(galaxy.tick)],
    );
    match inserted {
        Ok(_) => {}
        // Another daemon created the name meanwhile (or holds it being
        // deleted): this creation is refused as for any name taken.
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            return Err(StoreError::Exists(galaxy.name.to_owned()))
        }
        Err(source) => {
            return Err(StoreError::Postgres {
                context: "inserting a galaxy",
                source,
            })
        }
    }
    tx.execute(MARK_CREATING, &[&galaxy.name])
        .context("marking a galaxy as being created")?;
    tx.execute(
        INSERT_OWNER,
        &[&galaxy.name, &me.id, &me.url, &me.lease_ms()],
    )
    .context("taking a new galaxy")?;
    tx.execute(
        INSERT_SIZE,
        &[&galaxy.name, &stored_int(galaxy.systems.len() as u64)],
    )
    .context("recording a new galaxy's size")?;
    Ok(4)
}

/// Inserts the chunk's systems; returns their `(x, y, id)`, sorted.
fn insert_systems(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    name: &str,
    chunk: &[System],
) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    let column = |value: fn(&System) -> u64| -> Vec<i64> {
        chunk
            .iter()
            .map(|system| stored_int(value(system)))
            .collect()
    };
    let statement = prepared.get(tx, INSERT_SYSTEMS)?;
    let inserted = tx
        .query(
            &statement,
            &[
                &name,
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
    Ok(returned)
}

/// A chunk's systems as stored (their new ids, for the cache), and the structure and
/// event rows to insert for them.
struct ChunkRows {
    ids: Vec<StoredSystem>,
    structures: StructureRows,
    events: EventRows,
    /// Where in `ids` the system of each id with an event to insert is.
    by_id: HashMap<i64, usize>,
}

impl ChunkRows {
    /// Matches the ids `returned` (sorted `(x, y, id)`) to `chunk`, which is in the same
    /// order; fails when a system is missing or out of place.
    fn matched(
        galaxy: &NewGalaxy<'_>,
        chunk: &[System],
        returned: &[(i64, i64, i64)],
    ) -> Result<ChunkRows, StoreError> {
        let mut rows = ChunkRows {
            ids: Vec::with_capacity(chunk.len()),
            structures: StructureRows::default(),
            events: EventRows::default(),
            by_id: HashMap::new(),
        };
        for (system, &(x, y, id)) in chunk.iter().zip(returned) {
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
            rows.structures.push(id, system, galaxy.rows);
            if rows.events.push(&mut stored, system) > 0 {
                rows.by_id.insert(id, rows.ids.len());
            }
            rows.ids.push(stored);
        }
        if rows.ids.len() != chunk.len() {
            return Err(StoreError::Inconsistent {
                galaxy: galaxy.name.to_owned(),
                reason: format!("{} systems inserted of {}", rows.ids.len(), chunk.len()),
            });
        }
        Ok(rows)
    }

    /// Inserts the structures and the events, noting each new event's id on its system;
    /// returns the rows written.
    fn write(
        &mut self,
        tx: &mut Transaction<'_>,
        prepared: &mut Prepared,
        galaxy: &str,
    ) -> Result<u64, StoreError> {
        let mut rows = 0;
        let structures = &self.structures;
        if structures.len() > 0 {
            let statement = prepared.get(tx, INSERT_STRUCTURES)?;
            tx.execute(
                &statement,
                &[
                    &structures.system_ids,
                    &structures.types,
                    &structures.levels,
                ],
            )
            .context("inserting structures")?;
            rows += structures.len() as u64;
        }
        for (event, system_id) in self.events.write(tx, prepared, galaxy)? {
            if let Some(&at) = self.by_id.get(&system_id) {
                self.ids[at].event = Some(event);
                rows += 1;
            }
        }
        Ok(rows)
    }
}

/// [`TAKE_JOBS`] for a running daemon: never a job whose galaxy this daemon (`$1`) owns,
/// whatever its lease says (this daemon's own lease may have run out on the server while
/// it was busy; its next fence finds out, and only another daemon may take it from it).
pub(super) const TAKE_ORPHANED_JOBS: &str = "WITH taken AS (
         UPDATE galaxy_owners o SET epoch = o.epoch + 1, owner = $1, owner_url = $2,
             expires_at = now() + $3::bigint * interval '1 millisecond'
         FROM galaxy_jobs j
         WHERE j.name = o.galaxy_name
             AND o.owner IS DISTINCT FROM $1
             AND (o.owner IS NULL OR o.expires_at < now() OR o.owner = ANY($4::text[]))
         RETURNING o.galaxy_name, o.epoch, j.job, j.started_at
     )
     SELECT galaxy_name, epoch, job FROM taken
     ORDER BY started_at, galaxy_name COLLATE \"C\"";
