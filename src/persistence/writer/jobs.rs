//! The writer's queue of bulk jobs: galaxies being created or having their rows removed.
//!
//! A bulk job advances one chunk (one transaction) per turn of the writer's loop, between
//! ordinary batches, so no galaxy's batch waits behind another galaxy's creation or
//! deletion for more than one chunk (README, *Operations*). Chunks are sized by time: each one
//! aims at [`CHUNK_TARGET`] of writer time, adapting to the disk and the machine. Jobs
//! run one chunk at a time, oldest first, with two twists: a creation runs to its end
//! once begun (so a galaxy's systems get one range of row ids, which loads rely on, see
//! `store/load.rs`), and a removal that no later job shares a name with goes to the back
//! after each chunk (so minutes of removing a huge galaxy hold up no creation). A job
//! never overtakes an earlier one of the same name: a creation never overlaps the removal
//! of an older galaxy of its name. Only the writer thread owns this queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::report::{PersistError, LOG};
use crate::model::{Galaxy, RowMask};
use crate::store::{
    CreationProgress, GalaxyJob, NewGalaxy, StoreError, StoreFailure, WriteStats, WriteStore,
};

/// The writer time one chunk aims at. Well under the loss window's "one commit" of slack
/// and under the watchdog's ping period, yet large enough that a chunk's fixed costs
/// (a commit, statement set-up) stay small.
pub(crate) const CHUNK_TARGET: Duration = Duration::from_millis(25);

/// A created galaxy handed back to its creator, saved.
#[derive(Debug)]
pub(crate) struct Created {
    pub galaxy: Box<Galaxy>,
    /// Until when the creator may serve it without a renewal of this daemon's lease
    /// (see `store::lease_deadline`); `None` when no other daemon shares the database.
    pub lease_until: Option<Instant>,
}

/// The answer a creation waits for: the galaxy back, saved, or why not.
pub(crate) type CreationReply = Sender<Result<Created, PersistError>>;

/// A galaxy being written, and the caller waiting for it.
pub(crate) struct Creation {
    galaxy: Box<Galaxy>,
    config_toml: String,
    progress: CreationProgress,
    reply: CreationReply,
    started: Instant,
    /// Its last chunk commits synced to stable storage (`?durable=1`).
    durable: bool,
    /// A restore: the chunk that makes it exist deletes its archive.
    restoring: bool,
}

enum Job {
    Create(Creation),
    /// Removes the rows of a galaxy whose deletion is committed, or whose creation
    /// failed.
    Purge {
        name: String,
        removed: u64,
    },
}

impl Job {
    fn name(&self) -> &str {
        match self {
            Job::Create(creation) => creation.name(),
            Job::Purge { name, .. } => name,
        }
    }
}

/// What one chunk finished, if anything.
pub(crate) enum Finished {
    /// The last chunk of a creation committed: the galaxy exists on disk.
    Created(Creation),
    /// A galaxy's last rows are gone.
    Purged,
}

/// A number of systems per chunk that follows how long chunks take.
struct ChunkSize(usize);

impl ChunkSize {
    const MIN: usize = 16;
    /// About 100 ms of writing at the fastest rate measured here (200 000 systems/s), so
    /// that no rate estimate, however stale, makes a chunk long.
    const MAX: usize = 20_000;

    /// Scales the size towards [`CHUNK_TARGET`] after a chunk of `systems` took `took`:
    /// down at once when the chunk was too long (the machine got busy: the next chunk
    /// must not be long too), up at most twice over, so one quick chunk does not swing it.
    fn adapt(&mut self, systems: usize, took: Duration) {
        if systems < self.0 {
            return; // a short last chunk says nothing about the rate
        }
        let micros = took.as_micros().max(1) as f64;
        let ideal = systems as f64 * CHUNK_TARGET.as_micros() as f64 / micros;
        let next = ideal.min(self.0 as f64 * 2.0);
        self.0 = (next as usize).clamp(Self::MIN, Self::MAX);
    }
}

pub(crate) struct Jobs {
    queue: VecDeque<Job>,
    create_size: ChunkSize,
    purge_size: ChunkSize,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            queue: VecDeque::new(),
            create_size: ChunkSize(1_000),
            purge_size: ChunkSize(1_000),
        }
    }
}

impl Creation {
    pub(crate) fn new(galaxy: Box<Galaxy>, durable: bool, reply: CreationReply) -> Creation {
        Creation {
            config_toml: galaxy.config().to_toml(),
            galaxy,
            progress: CreationProgress::default(),
            reply,
            started: Instant::now(),
            durable,
            restoring: false,
        }
    }

    /// Makes this creation a restore of the galaxy's archive, or not.
    pub(crate) fn restoring(mut self, restoring: bool) -> Creation {
        self.restoring = restoring;
        self
    }

    pub(crate) fn name(&self) -> &str {
        self.galaxy.name()
    }

    pub(crate) fn tick(&self) -> u64 {
        self.galaxy.tick()
    }

    /// Hands the saved galaxy to its caller, to be served until `lease_until` (if the
    /// store holds galaxies under a lease); false when the caller is gone.
    pub(crate) fn answer(self, lease_until: Option<Instant>) -> bool {
        let (name, systems, took) = (
            self.galaxy.name().to_owned(),
            self.galaxy.systems().len(),
            self.started.elapsed(),
        );
        if self.restoring {
            // The engine logs the whole restore, its read and decoding included.
            log::debug!(target: LOG, "galaxy '{name}' written back from its archive ({systems} systems, {took:?})");
        } else {
            log::info!(target: LOG, "galaxy '{name}' created and saved ({systems} systems, {took:?})");
        }
        let created = Created {
            galaxy: self.galaxy,
            lease_until,
        };
        self.reply.send(Ok(created)).is_ok()
    }

    /// Tells the caller the creation failed; what it wrote is removed by a purge.
    fn refuse(self, error: PersistError) -> String {
        let _ = self.reply.send(Err(error));
        self.galaxy.name().to_owned()
    }
}

impl Jobs {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn create(&mut self, creation: Creation) {
        self.queue.push_back(Job::Create(creation));
    }

    /// True when a job (a creation or a removal) of galaxy `name` is queued.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.queue.iter().any(|job| job.name() == name)
    }

    /// Queues the removal of a galaxy's rows, once.
    pub(crate) fn purge(&mut self, name: String) {
        let queued = self
            .queue
            .iter()
            .any(|job| matches!(job, Job::Purge { name: n, .. } if *n == name));
        if !queued {
            self.queue.push_back(Job::Purge { name, removed: 0 });
        }
    }

    /// Drops the removal of `name`'s rows (another daemon took the galaxy: its rows are
    /// that daemon's now); true when one was queued.
    pub(crate) fn cancel_purge(&mut self, name: &str) -> bool {
        let before = self.queue.len();
        self.queue
            .retain(|job| !matches!(job, Job::Purge { name: n, .. } if n == name));
        self.queue.len() != before
    }

    /// The name the next chunk works on.
    pub(crate) fn next_name(&self) -> Option<&str> {
        self.queue.front().map(Job::name)
    }

    /// True when the next chunk is a durable creation's last: it commits synced (the
    /// WAL is written in order, so that sync covers the chunks before it).
    /// Whether the next chunk is a creation's (else a purge's, or none).
    pub(crate) fn next_is_creation(&self) -> bool {
        matches!(self.queue.front(), Some(Job::Create(_)))
    }

    pub(crate) fn next_is_durable(&self) -> bool {
        let Some(Job::Create(creation)) = self.queue.front() else {
            return false;
        };
        let left = (creation.galaxy.systems().len()).saturating_sub(creation.progress.written);
        creation.durable && left <= self.create_size.0
    }

    /// Runs one chunk of the oldest job in one transaction, if the store can spare the
    /// room (see `held_back`). On error the chunk left nothing behind: a purge is retried
    /// later; a creation is refused to its caller and replaced by the purge of whatever it
    /// had committed — unless the chunk's commit was sent and its answer lost (the store
    /// cannot say whether it left something behind): then the creation stays first and
    /// is retried with the lane, its next chunk settling the lost one.
    pub(crate) fn step(
        &mut self,
        store: &mut dyn WriteStore,
    ) -> Result<(WriteStats, Option<Finished>), StoreError> {
        if self.queue.is_empty() {
            return Ok((WriteStats::default(), None));
        }
        let started = Instant::now();
        // Orders first: bulk work runs only while the store can spare the room.
        if let Err(error) = store.room_for_bulk() {
            return self.held_back(error);
        }
        let Some(job) = self.queue.front_mut() else {
            return Ok((WriteStats::default(), None));
        };
        match job {
            Job::Create(creation) => {
                let galaxy = &creation.galaxy;
                let new = NewGalaxy {
                    name: galaxy.name(),
                    config_toml: &creation.config_toml,
                    tick: galaxy.tick(),
                    systems: galaxy.systems(),
                    rows: RowMask::new_system(galaxy.rules()),
                    restoring: creation.restoring,
                };
                let size = self.create_size.0;
                match store.create_chunk(&new, &mut creation.progress, size) {
                    Ok(stats) => {
                        self.create_size
                            .adapt(stats.systems as usize, started.elapsed());
                        if creation.progress.written < galaxy.systems().len() {
                            return Ok((stats, None));
                        }
                        // The front job, just borrowed: this creation.
                        let finished = match self.queue.pop_front() {
                            Some(Job::Create(creation)) => Some(Finished::Created(creation)),
                            _ => None,
                        };
                        Ok((stats, finished))
                    }
                    // The name is taken in the database (PostgreSQL): by a job another
                    // daemon abandoned, which is taken over now and removed before this
                    // creation starts; else by another daemon's galaxy, creation or
                    // removal, and this creation wrote nothing and is answered at once.
                    Err(error @ StoreError::Exists(_)) => {
                        let name = galaxy.name().to_owned();
                        if self.take_over_abandoned(store, &name) {
                            return Ok((WriteStats::default(), None));
                        }
                        if let Some(Job::Create(creation)) = self.queue.pop_front() {
                            creation.refuse(PersistError::Failed(error.failure()));
                        }
                        Ok((WriteStats::default(), None))
                    }
                    // The commit was sent and its answer lost: the chunk may be in the
                    // database, and if it was the last, the galaxy exists. Never refused
                    // for that: the creation stays first and its next chunk, once the
                    // store answers, settles it (taken as written, or written again).
                    Err(error) if creation.progress.is_unsettled() => {
                        log::warn!(target: LOG, "creation of galaxy '{}': the answer to a \
                            chunk's commit was lost ({error}); it is settled at the next \
                            attempt", galaxy.name());
                        Err(error)
                    }
                    Err(error) => {
                        // A restore whose archive a deletion removed meanwhile: refused as
                        // any, but the store is sound (no lane failure).
                        let gone = matches!(error, StoreError::ArchiveGone(_));
                        if let Some(Job::Create(creation)) = self.queue.pop_front() {
                            let name = creation.refuse(PersistError::Failed(error.failure()));
                            if gone {
                                log::info!(target: LOG, "restore of galaxy '{name}' abandoned: {error}");
                            }
                            self.queue.push_front(Job::Purge { name, removed: 0 });
                        }
                        if gone {
                            return Ok((WriteStats::default(), None));
                        }
                        Err(error)
                    }
                }
            }
            Job::Purge { .. } => self.purge_step(store, started),
        }
    }

    /// One chunk of the removal at the front of the queue (see [`Jobs::step`]).
    fn purge_step(
        &mut self,
        store: &mut dyn WriteStore,
        started: Instant,
    ) -> Result<(WriteStats, Option<Finished>), StoreError> {
        let Some(Job::Purge { name, removed }) = self.queue.front_mut() else {
            return Ok((WriteStats::default(), None));
        };
        let (stats, done) = store.purge_chunk(name, self.purge_size.0)?;
        self.purge_size
            .adapt(stats.systems as usize, started.elapsed());
        *removed += stats.systems;
        if !done {
            let name = name.clone();
            self.let_others_pass(&name);
            return Ok((stats, None));
        }
        log::debug!(target: LOG,
            "galaxy '{name}': its {removed} systems are removed from the database");
        // The front job, just borrowed: this purge.
        let finished = match self.queue.pop_front() {
            Some(Job::Purge { .. }) => Some(Finished::Purged),
            _ => None,
        };
        Ok((stats, finished))
    }

    /// Takes over the jobs other daemons abandoned (their leases ran out, or they exited)
    /// and queues the removal of their rows; when `name`'s is among them, its removal goes
    /// first, ahead of the creation of `name` at the front, which then waits for it. So a
    /// name whose dead creation is still in the database is answered as free: the name a
    /// `GET` does not find, a `POST` creates, at once rather than at the next periodic
    /// take-over. True when `name` was taken over.
    fn take_over_abandoned(&mut self, store: &mut dyn WriteStore, name: &str) -> bool {
        let jobs = match store.orphaned_jobs() {
            Ok(jobs) => jobs,
            Err(error) => {
                log::warn!(target: LOG, "galaxy '{name}': its name is taken in the database, and looking for a job abandoned under it failed: {error}");
                return false;
            }
        };
        let mut taken = false;
        for job in jobs {
            let (GalaxyJob::Creating(other) | GalaxyJob::Deleting(other)) = job;
            if other == name {
                log::warn!(target: LOG, "galaxy '{name}': asked for while its rows belong to a job another daemon abandoned (its lease ran out); taking it over and removing them before creating it anew");
                self.queue.push_front(Job::Purge {
                    name: other,
                    removed: 0,
                });
                taken = true;
            } else {
                log::warn!(target: LOG, "galaxy '{other}': taking over a job another daemon abandoned (its lease ran out); removing what was written");
                if !self.has(&other) {
                    self.purge(other);
                }
            }
        }
        taken
    }

    /// The front job may not run a chunk now, for `error` (the store cannot spare the
    /// room): a creation not begun is refused at once and leaves nothing to retry; one
    /// begun is refused and its removal queued; a removal waits. `Err` when a job waits,
    /// so its lane backs off.
    fn held_back(
        &mut self,
        error: StoreError,
    ) -> Result<(WriteStats, Option<Finished>), StoreError> {
        let begun = match self.queue.front() {
            // One whose last commit was not answered waits to be settled: refused, it
            // might exist all the same.
            Some(Job::Create(creation)) if creation.progress.is_unsettled() => return Err(error),
            Some(Job::Create(creation)) => creation.progress.written > 0,
            Some(Job::Purge { .. }) | None => return Err(error),
        };
        if let Some(Job::Create(creation)) = self.queue.pop_front() {
            let name = creation.refuse(PersistError::Failed(error.failure()));
            log::warn!(target: LOG, "creation of galaxy '{name}' refused: {error}");
            if begun {
                self.queue.push_front(Job::Purge { name, removed: 0 });
                return Err(error);
            }
        }
        Ok((WriteStats::default(), None))
    }

    /// Refuses, with `failure`, every creation queued that has not begun (bulk work is
    /// held back for lack of room: their callers get an answer now rather than after the
    /// shortage). The number refused.
    pub(crate) fn refuse_waiting_creations(&mut self, failure: &StoreFailure) -> usize {
        let mut refused = 0;
        for job in std::mem::take(&mut self.queue) {
            match job {
                Job::Create(creation)
                    if creation.progress.written == 0 && !creation.progress.is_unsettled() =>
                {
                    let name = creation.refuse(PersistError::Failed(failure.clone()));
                    log::warn!(target: LOG, "creation of galaxy '{name}' refused: {failure}");
                    refused += 1;
                }
                job => self.queue.push_back(job),
            }
        }
        refused
    }

    /// Moves the removal of `name` at the front to the back, unless a later job has the
    /// same name (it must not overtake the removal).
    fn let_others_pass(&mut self, name: &str) {
        let shared = self.queue.iter().skip(1).any(|job| job.name() == name);
        if !shared {
            self.queue.rotate_left(1);
        }
    }

    /// Refuses every creation still queued (the writer is stopping); what they wrote is
    /// removed at the next start.
    pub(crate) fn cancel_creations(&mut self) {
        for job in std::mem::take(&mut self.queue) {
            match job {
                Job::Create(creation) => {
                    let (written, total) =
                        (creation.progress.written, creation.galaxy.systems().len());
                    let unsettled = creation.progress.is_unsettled();
                    let name = creation.refuse(PersistError::Stopped);
                    if unsettled {
                        // Its last commit may have made the galaxy exist: the next start
                        // keeps it whole if it did, and removes what was written if not.
                        log::warn!(target: LOG,
                            "creation of galaxy '{name}' stopped by shutdown after {written} of {total} systems, \
                             the answer to its last chunk's commit lost: if that chunk was its last and reached \
                             the database, the galaxy exists; else what was written is removed at the next start");
                    } else {
                        log::warn!(target: LOG,
                            "creation of galaxy '{name}' stopped by shutdown after {written} of {total} systems; \
                             it was not created, and what was written is removed at the next start");
                    }
                }
                purge => self.queue.push_back(purge),
            }
        }
    }

    /// Names whose rows are still to be removed (finished at the next start if need be).
    pub(crate) fn purges(&self) -> impl Iterator<Item = &str> {
        self.queue.iter().filter_map(|job| match job {
            Job::Purge { name, .. } => Some(name.as_str()),
            Job::Create(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_follows_the_target_within_bounds() {
        let mut size = ChunkSize(1_000);
        size.adapt(1_000, CHUNK_TARGET * 4);
        assert_eq!(size.0, 250, "down at once");
        size.adapt(250, CHUNK_TARGET / 100);
        assert_eq!(size.0, 500, "up at most twice over");
        size.adapt(500, CHUNK_TARGET / 2);
        assert_eq!(size.0, 1_000);
        size.adapt(1_000, CHUNK_TARGET);
        assert_eq!(size.0, 1_000);
        size.adapt(10, Duration::from_secs(10));
        assert_eq!(size.0, 1_000, "a short last chunk is ignored");
        size.adapt(1_000, Duration::from_secs(5));
        assert_eq!(size.0, ChunkSize::MIN);
        for _ in 0..40 {
            let n = size.0;
            size.adapt(n, Duration::from_micros(1));
        }
        assert_eq!(size.0, ChunkSize::MAX);
    }
}
