//! The store: the seam between the engine and a database.
//!
//! What the writer thread needs from a database is one trait, [`WriteStore`]; what a load
//! on a cache miss needs is another, [`ReadStore`]. The writer, the cut, flush, retries,
//! shutdown and the app name only these traits and the plain row types below, so each
//! database plugs in beside the others without touching them ([`sqlite`], the embedded
//! default, and [`postgres`]); [`open`] chooses the implementation from the database URL,
//! once, at start-up. A reader is its own type, with
//! no write method: a read-only connection cannot be asked to write.
//!
//! Dispatch is per call, never per row: a batch, a chunk of a bulk job and a whole load are
//! each one call, and their loops over rows run inside the implementation.
//!
//! Errors keep their kind across the writer's thread boundary: [`StoreError::failure`]
//! gives a [`StoreFailure`] (a [`FailureKind`] and the message), which is `Clone` and goes
//! into every answer a flush, a creation or a shutdown gets.
//!
//! Invariants every implementation keeps: a galaxy with an unfinished creation or
//! deletion is invisible to every read; a batch commits whole or not at all; the writer's
//! cache of row ids never runs ahead of what is committed (it is dropped for the galaxies of
//! a failed batch).

mod decode;
mod error;
pub(crate) mod history;
pub(crate) mod open;
pub mod postgres;
mod replication;
pub mod sqlite;

pub(crate) use error::DriverError;
pub use error::{FailureKind, StoreError, StoreFailure};
pub use replication::{Replication, ReplicationMode};

use std::any::Any;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::model::{Galaxy, GalaxyConfig, HistoryEntry, RowMask, System};

/// A count, tick or limit as both stores take it: the model keeps them at most
/// `i64::MAX`; saturate rather than wrap if that ever broke.
pub(crate) fn stored_int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Creates the directories a database file at `path` needs.
pub(crate) fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
            path: parent.to_path_buf(),
            source,
        }),
        None => Ok(()),
    }
}

/// A galaxy's fencing token in the ownership table (PostgreSQL): raised by one at every
/// change of owner, so a daemon's writes under an older epoch can be refused.
pub type Epoch = i64;

/// The daemon that owns a galaxy, as other daemons see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Unique per process (host, process id, start time, a random part).
    pub id: String,
    /// Where it serves players (`GWAR_ADVERTISE_URL`).
    pub url: String,
}

/// What trying to take a galaxy for this daemon found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours from now on, under this epoch (a new one: also when it was ours already).
    Owned { epoch: Epoch },
    /// Another daemon holds an unexpired lease on it.
    Elsewhere(Owner),
    /// Not stored, or its creation or deletion is unfinished.
    Missing,
}

/// A galaxy another daemon took from this one: what this daemon held and what the
/// table holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostGalaxy {
    pub name: String,
    /// The epoch this daemon wrote under.
    pub epoch: Epoch,
    /// The epoch in the table now (`None`: its row is gone).
    pub current: Option<Epoch>,
}

impl std::fmt::Display for LostGalaxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.current {
            Some(current) => write!(f, "'{}' (epoch {}, now {current})", self.name, self.epoch),
            None => write!(f, "'{}' (epoch {}, its row is gone)", self.name, self.epoch),
        }
    }
}

/// The local deadline of a lease whose renewal (or take) was sent at `sent`: the daemon
/// stops serving a galaxy from then on until a renewal succeeds. A fifth of the lease
/// short of the database's expiry, which runs from the transaction's start (after
/// `sent`) on the database's clock: room for the two clocks to disagree in rate.
pub fn lease_deadline(sent: Instant, lease: std::time::Duration) -> Instant {
    sent + lease - lease / 5
}

/// One changed system as the writer copied it under the galaxy's lock.
#[derive(Clone, Debug)]
pub struct SystemRow {
    pub index: u32,
    pub rows: RowMask,
    pub system: System,
}

/// What one batch writes for one galaxy: its tick (when it advanced) and its changed
/// systems, all copied in one hold of the galaxy's lock (the consistent cut).
#[derive(Clone, Debug)]
pub struct GalaxyRows {
    pub name: String,
    pub tick: Option<u64>,
    pub systems: Vec<SystemRow>,
    /// What the changes were (README, *History*), oldest first: saved in the batch's
    /// transaction as segments of at most `crate::archive::SEGMENT_ENTRIES` entries.
    /// Empty with `GWAR_HISTORY=off`.
    pub history: Vec<HistoryEntry>,
}

/// A whole new galaxy, as creation writes it (borrowed from the galaxy in memory).
#[derive(Clone, Copy, Debug)]
pub struct NewGalaxy<'a> {
    pub name: &'a str,
    pub config_toml: &'a str,
    pub tick: u64,
    pub systems: &'a [System],
    /// The rows each system has (see [`RowMask::new_system`]).
    pub rows: RowMask,
    /// A restore of the archive stored under `name`: the chunk that makes the galaxy
    /// exist also deletes that archive, in the same transaction (a crash leaves the galaxy
    /// archived or live, never both or neither). Without it, a name with an archive is
    /// [`StoreError::Exists`].
    pub restoring: bool,
}

/// A galaxy's archive as the writer stores it (`crate::archive::encode`'s body): in one
/// transaction with the mark that removes its live rows ([`WriteStore::write_archive`]).
#[derive(Clone, Copy, Debug)]
pub struct ArchiveRow<'a> {
    pub name: &'a str,
    /// The archive format's version (`crate::archive::FORMAT_VERSION`).
    pub format: u16,
    pub systems: u64,
    pub body: &'a [u8],
}

/// One stored archive, without its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    pub name: String,
    pub format: u16,
    pub systems: u64,
    /// The body's length.
    pub bytes: u64,
    /// When it was archived (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub archived_at: String,
}

/// What the database holds, live, archived and history (for `check` and `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Storage {
    /// Systems in live galaxies (those being created or removed included).
    pub live_systems: u64,
    /// Bytes the live tables take (their rows and indexes).
    pub live_bytes: u64,
    pub archived_galaxies: u64,
    pub archived_systems: u64,
    /// Bytes of archive bodies.
    pub archived_bytes: u64,
    /// Segments of galaxies' history (README, *History*), live and archived galaxies'.
    pub history_segments: u64,
    /// Bytes of their bodies (as stored: compressed).
    pub history_bytes: u64,
}

/// Rows written by one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub systems: u64,
    pub rows: u64,
}

/// An unfinished job found in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GalaxyJob {
    Creating(String),
    Deleting(String),
}

/// What the writer knows of a stored system: its row id, its coordinates (to check the
/// cache against the galaxy), and the row id of its event if it has one, so a save
/// updates or deletes that row by id instead of searching for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StoredSystem {
    id: i64,
    x: u32,
    y: u32,
    event: Option<i64>,
}

/// A galaxy's stored systems, in the galaxy's `(x, y)` order.
type SystemIds = Vec<StoredSystem>;

/// The stored row of a changed system, by its place in the galaxy: a batch writes a
/// system only where the writer's cache of row ids has it at the same coordinates.
fn stored_row<'a>(
    stored: &'a mut SystemIds,
    galaxy: &str,
    row: &SystemRow,
) -> Result<&'a mut StoredSystem, StoreError> {
    match stored.get_mut(row.index as usize) {
        Some(stored) if (stored.x, stored.y) == row.system.coords() => Ok(stored),
        _ => Err(StoreError::Inconsistent {
            galaxy: galaxy.to_owned(),
            reason: format!(
                "no stored row for system ({}, {})",
                row.system.x, row.system.y
            ),
        }),
    }
}

/// A galaxy's row ids as a load read them, for the writer's cache
/// ([`WriteStore::adopt_ids`]). Opaque outside the store.
#[derive(Debug)]
pub struct RowIds(SystemIds);

impl RowIds {
    /// A loaded galaxy and its row ids, read side by side (`ids[i]` and `event_ids[i]`
    /// belong to `systems[i]`) and sorted by `(x, y)` together, so the ids stay beside
    /// their systems; why the parts are no galaxy, when they are not.
    fn assemble(
        name: &str,
        config: GalaxyConfig,
        tick: u64,
        systems: Vec<System>,
        ids: &[i64],
        event_ids: &[Option<i64>],
    ) -> Result<(Galaxy, RowIds), String> {
        let mut rows: Vec<(System, StoredSystem)> = systems
            .into_iter()
            .zip(ids.iter().zip(event_ids))
            .map(|(system, (&id, &event))| {
                let stored = StoredSystem {
                    id,
                    x: system.x,
                    y: system.y,
                    event,
                };
                (system, stored)
            })
            .collect();
        rows.sort_unstable_by_key(|(system, _)| system.coords());
        let (systems, stored): (Vec<System>, Vec<StoredSystem>) = rows.into_iter().unzip();
        Galaxy::from_parts(name, config, tick, systems)
            .map(|galaxy| (galaxy, RowIds(stored)))
            .map_err(|e| e.to_string())
    }
}

/// How far a creation got: the systems committed so far and their row ids.
#[derive(Debug, Default)]
pub struct CreationProgress {
    /// Systems committed; the next chunk starts at this index.
    pub written: usize,
    ids: SystemIds,
    /// The end (in systems) of a chunk whose commit was sent but never answered (the
    /// connection broke): it may or may not be in the database. The next call finds out
    /// before it writes anything (see [`WriteStore::create_chunk`]).
    unsettled: Option<usize>,
}

impl CreationProgress {
    /// True when the last chunk's outcome is unknown: its commit was sent and the answer
    /// lost. Such a creation must be run again (the next chunk settles it), never
    /// refused: its last chunk may have made the galaxy exist.
    pub fn is_unsettled(&self) -> bool {
        self.unsettled.is_some()
    }

    /// For a test's store standing in for one whose answer was lost: the chunk ending at
    /// `to` may have committed.
    #[cfg(test)]
    pub(crate) fn set_unsettled(&mut self, to: Option<usize>) {
        self.unsettled = to;
    }
}

/// A deadline one thread sets and the store's waits obey (for a lock held by another
/// connection, say): at shutdown the writer thread is inside the store, waiting, when the
/// final flush's deadline is set, and the wait must not outlast it.
#[derive(Debug)]
pub struct BusyDeadline {
    base: Instant,
    /// Milliseconds after `base`, or `u64::MAX` for none.
    at_ms: AtomicU64,
}

impl BusyDeadline {
    pub fn new() -> Arc<BusyDeadline> {
        Arc::new(BusyDeadline {
            base: Instant::now(),
            at_ms: AtomicU64::new(u64::MAX),
        })
    }

    /// From now on, waits end at `at` (or at the store's own timeout, if sooner).
    pub fn set(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.base).as_millis();
        self.at_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX - 1), Ordering::SeqCst);
    }

    fn passed(&self, now: Instant) -> bool {
        match self.at_ms.load(Ordering::SeqCst) {
            u64::MAX => false,
            at => now.saturating_duration_since(self.base).as_millis() >= u128::from(at),
        }
    }
}

/// What the writer thread needs from a database. Only the writer thread calls these, one
/// at a time; each is one transaction at most, and a failed one leaves nothing written.
///
/// `Any` lets maintenance and fault injection reach an implementation's own handle (see
/// `WriterHandle::with_connection` and `SqliteWriter::of`) without the writer knowing which store runs.
pub trait WriteStore: Any + Send {
    /// Called once, on the writer thread, before any other method.
    fn on_writer_thread(&mut self);

    /// The jobs a previous run left unfinished, as they were found. Creations among them
    /// are turned into deletions (a half-written galaxy is never kept), so every job
    /// returned is to be finished by [`WriteStore::purge_chunk`].
    fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError>;

    /// Writes one batch in one transaction: deletions first (each marks its galaxy
    /// `deleting`, which hides it and makes the deletion durable; its rows are removed
    /// later by [`WriteStore::purge_chunk`]), then every galaxy's tick and changed rows.
    /// On error nothing is written and the batch's galaxies are dropped from the id cache.
    fn write_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError>;

    /// Whether the transactions that follow must reach stable storage before their commit
    /// returns, whatever the store's setting for ordinary ones: `true` before a commit
    /// that a durable request waits for (`?durable=1`), `false` after it. SQLite runs
    /// them with `synchronous = FULL` (in WAL mode: the WAL is synced at the commit); a
    /// store whose every commit is synced already (PostgreSQL, `synchronous_commit = on`;
    /// SQLite set to `full`) does nothing. On error the setting is as it was.
    fn set_synced(&mut self, _synced: bool) -> Result<(), StoreError> {
        Ok(())
    }

    /// Returns once every commit this store made so far is on stable storage: at once
    /// when each was synced (PostgreSQL; SQLite set to `full`, or nothing committed
    /// since the last synced commit), else with a synced commit of its own (SQLite:
    /// the WAL is one file written in order, so one sync covers every commit before it).
    /// For a durable request whose change an earlier ordinary commit carried.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Writes the next `max_systems` systems of a new galaxy in one transaction (the first
    /// chunk also writes the galaxy and its `creating` mark). The chunk that reaches the
    /// last system removes the mark, so the galaxy exists from that commit on, and caches
    /// its row ids; `progress.written` then equals the galaxy's systems. On error nothing
    /// of the chunk is written and `progress.written` is unchanged — except when the
    /// commit was sent and its answer lost (a server store's connection broke): then
    /// [`CreationProgress::is_unsettled`], the chunk may be in the database, and the next
    /// call reads back what the database holds before anything else. If the chunk is
    /// there it is taken as written (and the call returns, having written nothing more),
    /// else it is written again: a call after a lost answer never writes a chunk twice.
    fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError>;

    /// Deletes up to `max_systems` systems of a galaxy with a `deleting` or `creating`
    /// mark, in one transaction; when none are left, the galaxy and its mark too. Returns
    /// the rows deleted and whether the galaxy is gone. Never touches a galaxy without a
    /// mark.
    fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError>;

    /// Archives a galaxy in one transaction: stores `archive` and marks the galaxy's live
    /// rows `deleting` (as a deletion does; they are removed by [`WriteStore::purge_chunk`]),
    /// fenced like any write where daemons share the database. From that commit on the
    /// galaxy is archived and invisible to loads. [`StoreError::Exists`] when an archive
    /// of that name is stored already; nothing is written on any error. The galaxy's
    /// cached row ids are forgotten.
    fn write_archive(&mut self, archive: &ArchiveRow<'_>) -> Result<WriteStats, StoreError>;

    /// True when the last [`WriteStore::write_archive`] of `name` failed after its commit
    /// was sent (the answer lost, PostgreSQL): the archive may be stored. The same archive
    /// sent again settles it (stored once, or found stored).
    fn archive_unsettled(&self, _name: &str) -> bool {
        false
    }

    /// Deletes the archive stored under `name` in one transaction, and the galaxy's
    /// history with it (the galaxy is gone for good); false when there was none.
    fn delete_archive(&mut self, name: &str) -> Result<bool, StoreError>;

    /// Deletes up to `limit` history segments saved longer than `older_than` ago
    /// (`GWAR_HISTORY_KEEP_SECS`), oldest first, in one transaction; returns how many.
    fn prune_history(
        &mut self,
        older_than: std::time::Duration,
        limit: usize,
    ) -> Result<u64, StoreError>;

    /// Takes the row ids a load read for galaxy `name` into the cache, replacing any
    /// there: they are what the database holds, since nothing writes a galaxy's rows while
    /// it is not in memory.
    fn adopt_ids(&mut self, name: &str, ids: RowIds);

    /// Forgets the cached ids of a galaxy (deleted, evicted, or found inconsistent).
    fn forget_ids(&mut self, name: &str);

    /// After every commit that wrote something: the store's own upkeep (SQLite: asks for
    /// a WAL checkpoint when due). Never blocks for long.
    fn after_commit(&mut self);

    /// Every auto-save interval, after its batch; `idle` when nothing was written for a
    /// whole interval (SQLite: a checkpoint that truncates the WAL; PostgreSQL: a look at
    /// the primary's replication).
    fn maintain(&mut self, idle: bool);

    /// The primary's replication as last read by [`WriteStore::maintain`]; `None` for a
    /// store without replication (SQLite) or before the first look.
    fn replication(&self) -> Option<Replication> {
        None
    }

    /// The writer is stopping: end the store's helpers and, when `all_saved`, leave the
    /// database compact. A failure here loses nothing; it is logged.
    fn finish(&mut self, all_saved: bool);

    /// A cheap look, while a lane is failing, at whether a write could succeed now
    /// (PostgreSQL: the session opened again if it was lost, and `SELECT 1`; SQLite: the
    /// file is still the one opened and its filesystem has a little room). Called about
    /// every half second while failing, so it must not cost what a batch costs; it may be wrong
    /// (a batch can still fail), never harmful: it writes nothing.
    fn probe(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Before each chunk of bulk work (creating or removing a whole galaxy): whether the
    /// store can spare the room, keeping what batches of orders need (SQLite: free space
    /// on the database's filesystem above a reserve). An error (kind
    /// [`FailureKind::Full`]) means the chunk does not run and the job waits; batches go on.
    fn room_for_bulk(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    // Ownership (PostgreSQL, several daemons). A store that has the database to itself
    // (SQLite) keeps the defaults: no lease, nothing to renew or release.

    /// The lease this store holds its galaxies under; `None` when it shares the database
    /// with no other daemon (then the methods below do nothing).
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// From now on this store owns galaxy `name` under `epoch` (a load or a deletion
    /// took it, see [`ClaimStore::take`]): its writes are fenced by that epoch.
    fn own(&mut self, _name: &str, _epoch: Epoch) {}

    /// True while this store owns galaxy `name`: its lease was taken or renewed, and not
    /// found lost or released since. Only such a galaxy's local deadline may move on.
    fn owns(&self, _name: &str) -> bool {
        false
    }

    /// Renews the lease of every galaxy this store owns, in one statement; returns those
    /// found taken by another daemon, which it no longer owns.
    fn renew_leases(&mut self) -> Result<Vec<LostGalaxy>, StoreError> {
        Ok(Vec::new())
    }

    /// Stops renewing these galaxies (they left memory): another daemon may take them
    /// once their leases run out. Not released at once on purpose: a load of the name
    /// on this daemon may be taking it again right now, under the same epoch (a take of
    /// a galaxy a daemon owns keeps its epoch), and a release would free it under that
    /// load. (The final batch of a clean stop releases everything: nothing loads then.)
    fn disown(&mut self, _names: &[String]) {}

    /// Unfinished jobs other daemons left behind (their owners' leases ran out, or they
    /// released them), taken for this store as [`WriteStore::unfinished_jobs`] takes them
    /// at start-up (creations turned into deletions), but never a job this store holds
    /// itself: taking its own again would fence its own creation in progress. Asked every
    /// auto-save interval, so a name is never stuck behind a daemon that did not restart.
    fn orphaned_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        Ok(Vec::new())
    }

    /// The final batch of a clean stop: [`WriteStore::write_batch`], and in the same
    /// transaction every galaxy this store owns is released. Opens no transaction when
    /// there is nothing to write or release.
    fn write_final_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        self.write_batch(deletions, galaxies)
    }
}

/// Taking galaxies for this daemon (PostgreSQL, several daemons): on a cache miss, and
/// before deleting a galaxy not in memory. Called on game threads, so it never waits long
/// for a lock another daemon holds: a take that would is answered as `Elsewhere`-or-busy
/// by the implementation, never after the other daemon's transaction. `Sync`: one value
/// serves every thread (its sessions behind its own lock).
pub trait ClaimStore: Send + Sync {
    /// Takes galaxy `name` when it has no owner or its owner's lease has run out (a new
    /// epoch), or it is ours already (the same epoch, which this daemon's writer may be
    /// fencing with). A galaxy with an unfinished creation or deletion is `Missing`.
    fn take(&self, name: &str) -> Result<Claim, StoreError>;
}

/// Work the writer thread runs on its store between batches (maintenance, fault injection).
pub(crate) type StoreWork = Box<dyn FnOnce(&mut dyn WriteStore) + Send>;

/// What a load on a cache miss, and a look-up of stored names, need from a database.
/// Lent to one thread at a time.
pub trait ReadStore: Send {
    /// Loads one galaxy with its row ids, or `None` when it is not stored (or its
    /// creation or deletion is unfinished), in one read transaction.
    fn load_galaxy_with_ids(
        &self,
        name: &str,
    ) -> Result<Option<(crate::model::Galaxy, RowIds)>, StoreError>;

    /// [`ReadStore::load_galaxy_with_ids`] without the ids: for tests.
    #[cfg(any(test, feature = "testing"))]
    fn load_galaxy(&self, name: &str) -> Result<Option<crate::model::Galaxy>, StoreError> {
        Ok(self.load_galaxy_with_ids(name)?.map(|(galaxy, _)| galaxy))
    }

    /// Names of every stored galaxy, sorted.
    fn galaxy_names(&self) -> Result<Vec<String>, StoreError>;

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError>;

    /// Every galaxy row with its number of systems, those with an unfinished creation or
    /// deletion included (they hold their rows): what `GWAR_MAX_TOTAL_SYSTEMS` counts.
    fn galaxy_sizes(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Galaxy `name`'s history (live or archived): its saved entries with a tick at or
    /// after `since_tick`, ordered by tick (entries of one tick in the order they were
    /// made), at most `limit`.
    ///
    /// Damaged history is [`StoreError::HistoryDamaged`] (kind
    /// [`FailureKind::Corrupt`]), naming the galaxy and the segment.
    fn history(
        &self,
        name: &str,
        since_tick: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    /// The body of the archive stored under `name`, if any.
    fn read_archive(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// True when an archive is stored under `name`.
    fn archive_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.read_archive(name)?.is_some())
    }

    /// Every stored archive, without bodies, sorted by name.
    fn archives(&self) -> Result<Vec<ArchiveInfo>, StoreError>;

    /// Up to `limit` stored galaxies (no creation or deletion unfinished) whose last saved
    /// change (`galaxies.updated_at`) is older than `idle`, oldest first.
    fn idle_galaxies(
        &self,
        idle: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// What the database holds, live and archived.
    fn storage(&self) -> Result<Storage, StoreError>;

    /// Every stored galaxy (as [`ReadStore::galaxy_names`]) with the daemon whose lease on
    /// it has not run out, if any. Without ownership (SQLite): nobody's.
    fn galaxy_owners(&self) -> Result<Vec<(String, Option<Owner>)>, StoreError> {
        Ok(self
            .galaxy_names()?
            .into_iter()
            .map(|name| (name, None))
            .collect())
    }
}

/// Opens another reader on the database the writer opened (loads open them on demand).
pub(crate) type OpenReader = Box<dyn Fn() -> Result<Box<dyn ReadStore>, StoreError> + Send + Sync>;

/// A database opened for the engine: the writer's store, and how to open readers (`None`
/// when only the writer's connection can see the database, as in memory).
pub(crate) struct Opened {
    pub writer: Box<dyn WriteStore>,
    pub readers: Option<OpenReader>,
    /// Takes galaxies for this daemon; `None` when no other daemon shares the database.
    pub claims: Option<Box<dyn ClaimStore>>,
}
