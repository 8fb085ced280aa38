//! The writer thread's store, [`PostgresWriter`]: its session, opened again after a break
//! by the next call, and the cache of system row ids; the galaxies it owns and the
//! epochs that fence its writes; and the store interface's writer calls, each handed to
//! the file that holds its statements (`write.rs`, `jobs.rs`, `owners.rs`, `archive.rs`).
//!
//! Only the engine's writer thread holds one. A session found broken is dropped, never
//! reused, so the writer's retries are the reconnects; a call that fails leaves the
//! writer ready for the next one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ::postgres::Config;

use super::super::{
    ArchiveRow, CreationProgress, Epoch, FailureKind, GalaxyJob, GalaxyRows, LostGalaxy, NewGalaxy,
    Replication, RowIds, StoreError, SystemIds, WriteStats, WriteStore,
};
use super::cancel::Canceller;
use super::error::{retry_serialization, Context, LOG};
use super::identity::Identity;
use super::session::{session_config, Session, WRITER_APPLICATION_NAME};
use super::stall::Call;
use crate::settings::postgres_label;

/// The writer thread's store: its session (`None` once broken, until the next call opens
/// another) and the cache of system row ids.
pub struct PostgresWriter {
    pub(super) config: Config,
    label: String,
    pub(super) session: Option<Session>,
    pub(super) ids: HashMap<String, SystemIds>,
    pub(super) identity: Identity,
    /// The galaxies this daemon owns and the epoch of each: every write to one is fenced
    /// by it. Added by [`WriteStore::own`] and a creation's first chunk; removed when a
    /// galaxy is found lost, released, or purged.
    pub(super) owned: HashMap<String, Epoch>,
    /// Galaxies no longer renewed (they left memory) whose leases may still run, and
    /// their epochs: a clean stop releases them with the rest, so no daemon on another
    /// machine waits out their leases. (Taken again here, a galaxy moves back to
    /// `owned`.)
    pub(super) disowned: HashMap<String, Epoch>,
    /// A session was lost: the next one opened says so in the log.
    lost: bool,
    /// Ends a call still running at the shutdown's deadline (the engine's writer only).
    pub(super) canceller: Option<Canceller>,
    /// False only in the benchmark that measures what the fence costs: batches then end
    /// without it (see [`PostgresWriter::set_fencing`]).
    pub(super) fencing: bool,
    /// The primary's replication, as [`WriteStore::maintain`] last read it.
    replication: Option<Replication>,
    /// When the session last answered a call: one idle for [`IDLE_CHECK_AFTER`] is
    /// checked before the next.
    pub(super) session_used: Instant,
    /// The galaxies whose archive's commit was sent and its answer lost: the next archive
    /// of each settles that first (see `archive.rs`).
    pub(super) unsettled_archives: HashSet<String>,
}

/// A session idle this long is checked with an empty query before a call. The client
/// learns that the server ended the session (a restart, a failover, an operator's
/// `pg_terminate_backend`) only when it next uses it: unchecked, that next call is a
/// batch that fails (an error in the log, `retrying` in health) although a new session
/// would have saved it. Under load calls follow each other closer than this, and cost
/// nothing more.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);
/// How long the check waits: a server that does not answer it is checked by the batch.
const IDLE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl PostgresWriter {
    /// Opens the writer's session (see [`Session::open`]) for the daemon `identity`;
    /// fails at once when the server cannot be reached or its schema is newer.
    pub fn open(url: &str, identity: Identity) -> Result<PostgresWriter, StoreError> {
        let config = session_config(url, WRITER_APPLICATION_NAME)?;
        let label = postgres_label(url);
        let mut session = Session::open(&config, &label, identity.lease)?;
        let replication = read_replication(&mut session.client).ok();
        Ok(PostgresWriter {
            config,
            label,
            session: Some(session),
            ids: HashMap::new(),
            identity,
            owned: HashMap::new(),
            disowned: HashMap::new(),
            lost: false,
            canceller: None,
            fencing: true,
            replication,
            session_used: Instant::now(),
            unsettled_archives: HashSet::new(),
        })
    }

    /// With `false`, batches leave out the fence (their last statement), for the
    /// benchmark that measures what it costs: the same batches with and without it.
    /// Never in the daemon: a batch without its fence may overwrite another daemon's.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_fencing(&mut self, on: bool) {
        self.fencing = on;
    }

    /// The writer's session's backend process id (opening a session if it has none).
    #[cfg(test)]
    pub fn backend_pid(&mut self) -> Result<i32, StoreError> {
        self.with_session(|session, _, _| {
            session
                .client
                .query_one("SELECT pg_backend_pid()", &[])
                .and_then(|row| row.try_get(0))
                .context("reading the backend pid")
        })
    }

    /// The schema version of the database.
    #[cfg(test)]
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        self.with_session(|session, _, _| super::migrate::schema_version(&mut session.client))
    }

    /// Runs `work` on the session, opening one first when there is none (a reconnect).
    /// A session that `work` found broken is dropped, so the next call opens a new one.
    pub(super) fn with_session<T>(
        &mut self,
        work: impl FnOnce(
            &mut Session,
            &mut HashMap<String, SystemIds>,
            &Identity,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _call = Call::start();
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            log::warn!(target: LOG,
                "{}: the writer's session was closed; opening a new one", self.label);
            self.drop_session();
        }
        if self.session_used.elapsed() >= IDLE_CHECK_AFTER {
            let checked = self
                .session
                .as_mut()
                .map(|s| s.client.is_valid(IDLE_CHECK_TIMEOUT));
            if let Some(Err(error)) = checked {
                log::info!(target: LOG,
                    "{}: the writer's idle session is gone ({}); opening a new one",
                    self.label, super::error::describe(&error));
                self.drop_session();
            }
        }
        let session = match &mut self.session {
            Some(session) => session,
            None => {
                let mut session = Session::open(&self.config, &self.label, self.identity.lease)?;
                // A new session may be on another server (a failover): its replication
                // is read now, not an auto-save interval later.
                self.replication = read_replication(&mut session.client)
                    .inspect_err(|error| {
                        log::debug!(target: LOG, "{}: reading the replication: {error}", self.label)
                    })
                    .ok();
                if self.lost {
                    let replication = self.replication.map_or("unknown", |r| r.mode.as_str());
                    log::info!(target: LOG,
                        "{}: the writer's session is open again (replication: {replication})",
                        self.label);
                    self.lost = false;
                }
                self.session.insert(session)
            }
        };
        if let Some(canceller) = &self.canceller {
            canceller.call_starts(session.client.cancel_token());
        }
        let result = work(session, &mut self.ids, &self.identity);
        self.session_used = Instant::now();
        if let Some(canceller) = &self.canceller {
            canceller.call_ends();
        }
        if let Err(error) = &result {
            let broken = session.client.is_closed() || error.kind() == FailureKind::Unavailable;
            if broken {
                log::warn!(target: LOG,
                    "{}: the writer's session is lost ({error}); a new one is opened at the \
                     next attempt", self.label);
                self.drop_session();
            }
        }
        result
    }

    /// The database, as the log names it.
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    fn drop_session(&mut self) {
        self.session = None;
        self.lost = true;
        // Unknown until a session is open again, perhaps on another server.
        self.replication = None;
    }
}

impl WriteStore for PostgresWriter {
    fn on_writer_thread(&mut self) {}

    fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        PostgresWriter::unfinished_jobs(self)
    }

    fn write_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        PostgresWriter::write_fenced(self, deletions, galaxies, false)
    }

    fn create_chunk(
        &mut self,
        galaxy: &NewGalaxy<'_>,
        progress: &mut CreationProgress,
        max_systems: usize,
    ) -> Result<WriteStats, StoreError> {
        // A failed chunk leaves `progress` as it was: it may run again from scratch.
        retry_serialization(|| PostgresWriter::create_chunk(self, galaxy, progress, max_systems))
    }

    fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(WriteStats, bool), StoreError> {
        retry_serialization(|| PostgresWriter::purge_chunk(self, name, max_systems))
    }

    fn write_archive(&mut self, archive: &ArchiveRow<'_>) -> Result<WriteStats, StoreError> {
        PostgresWriter::write_archive(self, archive)
    }

    fn archive_unsettled(&self, name: &str) -> bool {
        self.unsettled_archives.contains(name)
    }

    fn delete_archive(&mut self, name: &str) -> Result<bool, StoreError> {
        PostgresWriter::delete_archive(self, name)
    }

    fn prune_history(&mut self, older_than: Duration, limit: usize) -> Result<u64, StoreError> {
        PostgresWriter::prune_history(self, older_than, limit)
    }

    fn adopt_ids(&mut self, name: &str, ids: RowIds) {
        self.ids.insert(name.to_owned(), ids.0);
    }

    fn forget_ids(&mut self, name: &str) {
        self.ids.remove(name);
    }

    /// Nothing to do: the server checkpoints and vacuums on its own.
    fn after_commit(&mut self) {}

    /// A look at the primary's replication (the server vacuums and checkpoints on its own;
    /// a session holds nothing between transactions, and the next call opens one if it
    /// was lost). A failed look keeps the last one: it is only reported.
    fn maintain(&mut self, _idle: bool) {
        match self.with_session(|session, _, _| read_replication(&mut session.client)) {
            Ok(replication) => {
                if self.replication.is_some_and(|r| r.mode != replication.mode) {
                    log::warn!(target: LOG, "{}: the primary's replication is now {} ({} standbys)",
                        self.label, replication.mode.as_str(), replication.standbys);
                }
                self.replication = Some(replication);
            }
            Err(error) => {
                log::debug!(target: LOG, "{}: reading the replication: {error}", self.label)
            }
        }
    }

    fn replication(&self) -> Option<Replication> {
        self.replication
    }

    /// Closes the session. The galaxies still owned are released by
    /// [`WriteStore::write_final_batch`], not here: a stop that could not save everything
    /// keeps them until their leases run out.
    fn finish(&mut self, _all_saved: bool) {
        drop(self.canceller.take());
        if let Some(session) = self.session.take() {
            let _call = Call::start();
            if let Err(error) = session.client.close() {
                log::debug!(target: LOG, "{}: closing the writer's session: {error}", self.label);
            }
        }
    }

    /// `SELECT 1` on the writer's session, opening one first when it was lost: what a
    /// batch needs before its first statement, for a round trip.
    fn probe(&mut self) -> Result<(), StoreError> {
        self.with_session(|session, _, _| {
            session
                .client
                .simple_query("SELECT 1")
                .map(drop)
                .map_err(|source| StoreError::Postgres {
                    context: "probing the server",
                    source,
                })
        })
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.identity.lease)
    }

    fn own(&mut self, name: &str, epoch: Epoch) {
        self.disowned.remove(name);
        self.owned.insert(name.to_owned(), epoch);
    }

    fn owns(&self, name: &str) -> bool {
        self.owned.contains_key(name)
    }

    fn renew_leases(&mut self) -> Result<Vec<LostGalaxy>, StoreError> {
        PostgresWriter::renew_leases(self)
    }

    fn orphaned_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        PostgresWriter::orphaned_jobs(self)
    }

    fn disown(&mut self, names: &[String]) {
        PostgresWriter::disown(self, names)
    }

    fn write_final_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[GalaxyRows],
    ) -> Result<WriteStats, StoreError> {
        PostgresWriter::write_fenced(self, deletions, galaxies, true)
    }
}

/// The primary's replication: its `synchronous_standby_names`, and the `sync_state` of
/// each standby streaming from it (a base backup's sender is none; the state is `NULL`
/// for a role without `pg_read_all_stats`).
fn read_replication(client: &mut ::postgres::Client) -> Result<Replication, StoreError> {
    const CONTEXT: &str = "reading the replication";
    let row = client
        .query_one(
            "SELECT current_setting('synchronous_standby_names'),
                    ARRAY(SELECT sync_state::text FROM pg_stat_replication
                          WHERE state IS DISTINCT FROM 'backup')",
            &[],
        )
        .context(CONTEXT)?;
    let names: String = row.try_get(0).context(CONTEXT)?;
    let states: Vec<Option<String>> = row.try_get(1).context(CONTEXT)?;
    Ok(Replication::from_primary(&names, &states))
}
