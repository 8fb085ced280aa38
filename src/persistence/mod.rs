//! The write-behind persistence engine (README, *What is guaranteed, in plain words*).
//!
//! The seam to a database is [`crate::store`], the floor below: what the writer needs
//! ([`WriteStore`](crate::store::WriteStore)) and what a load needs
//! ([`ReadStore`](crate::store::ReadStore)), and the SQLite and PostgreSQL stores that
//! implement both. Here, above it:
//! - [`writer`]: the writer thread, the only writer of the database; its decisions are
//!   timed by a [`crate::clock::Clock`] (the system's here). Its `jobs`: creations and
//!   deletions of whole galaxies, in chunks between batches.
//! - `loads`: the pool of read-only connections that read galaxies on a cache miss.
//! - [`metrics`]: counters and health as atomics.
//! - [`slow`]: store calls slower than `GWAR_SLOW_QUERY_MS`, logged and counted by kind.
//! - [`lock`]: one daemon per database file.
//! - `archives`: looking archives up, and restoring one through the writer.
//! - `backing`: the engine as the galaxies' [`crate::galaxies::Backing`] (or nothing, when
//!   persistence is off).
//! - [`backup`]: online backups through SQLite's backup API.
//! - [`reading`]: opening a database file only to read it (check, backups), leaving no
//!   `-wal`/`-shm` behind.
//! - [`clean`]: the clean-shutdown marker, which spares a start-up after a clean stop
//!   the whole-file check.
//!
//! [`Engine`] ties them together: it holds the database lock, the writer, the pool of
//! read-only connections that read galaxies on a cache miss ([`loads::READERS`] of them,
//! so a big load holds up neither small loads nor anything else), and, where several
//! daemons share the database (PostgreSQL), the claims session that takes a galaxy for
//! this daemon before it is loaded or deleted ([`Engine::take`]). Which galaxies are in
//! memory, and every step of a galaxy's life, is decided in [`crate::galaxies`], which
//! also lists every lock in order; the writer sees galaxies only through that module's
//! narrow handle. Everything here logs under the target `galactic_war::persistence`.

mod archives;
mod backing;
pub mod backup;
pub mod budget;
pub mod clean;
mod loads;
pub mod lock;
pub mod metrics;
pub mod reading;
pub mod slow;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::galaxies::WriterSide;
use crate::model::Galaxy;
use crate::settings::{ArchiveRestore, DatabaseUrl, PersistenceSettings};
use crate::store::sqlite::StartupCheck;
use crate::store::{
    lease_deadline, BusyDeadline, Claim, ClaimStore, Epoch, Owner, RowIds, StoreError,
};
use crate::systemd::Notifier;
use clean::CleanShutdown;
use loads::{Purpose, ReaderPool};
use lock::DatabaseLock;
use metrics::Metrics;
use slow::{listed, SlowKind};
use writer::{FlushReport, WriterDatabase, WriterHandle};

/// A running persistence engine on one database.
pub struct Engine {
    // Field order is drop order: the writer's final flush runs before the lock is released.
    writer: WriterHandle,
    /// Loads on a cache miss; `None` for an in-memory database, which only the writer's
    /// connection can see (and whose galaxies never leave memory anyway).
    readers: Option<ReaderPool>,
    metrics: Arc<Metrics>,
    /// The database file; `None` for an in-memory or a server database.
    path: Option<PathBuf>,
    /// A server database (PostgreSQL), as logs show it; `None` for SQLite.
    server: Option<String>,
    /// Writes the clean-shutdown marker; `None` for an in-memory database.
    clean: Option<CleanShutdown>,
    /// Takes galaxies for this daemon; `None` when no other daemon shares the database.
    claims: Option<Claims>,
    /// `GWAR_ARCHIVE_RESTORE`: a request for an archived galaxy restores it.
    restore_on_demand: bool,
    /// Set once the daemon is stopping: no archive is begun.
    stopping: std::sync::atomic::AtomicBool,
    _lock: Option<DatabaseLock>,
}

/// Where daemons share the database: how this one takes galaxies, and how it shows.
struct Claims {
    store: Box<dyn ClaimStore>,
    /// `GWAR_OWNERSHIP_LEASE_SECS`.
    lease: Duration,
    /// `GWAR_ADVERTISE_URL`: where other daemons send this one's players.
    url: String,
}

impl Engine {
    /// Locks the database against other daemons, opens and migrates it, and starts the
    /// writer thread. Fails without starting anything when any step fails.
    pub(crate) fn open(
        url: &DatabaseUrl,
        settings: &PersistenceSettings,
        galaxies: WriterSide,
        metrics: Arc<Metrics>,
        notifier: &Notifier,
    ) -> Result<Engine, StoreError> {
        // PostgreSQL: several daemons may share the database, each galaxy owned by one
        // (see `store::postgres`), and the server recovers from crashes on its own, so
        // there is no lock file, no clean-shutdown marker and no start-up check of a file.
        let lock = match url {
            DatabaseUrl::Memory | DatabaseUrl::Postgres(_) => None,
            DatabaseUrl::File(path) => {
                crate::store::create_parent_dir(path)?;
                Some(DatabaseLock::acquire(path)?)
            }
        };
        // Under the lock and before anything writes: the marker is read and removed here.
        let check = match url {
            DatabaseUrl::File(path) => clean::take(path),
            DatabaseUrl::Memory => StartupCheck::Whole {
                why: "in memory".to_owned(),
            },
            DatabaseUrl::Postgres(_) => StartupCheck::Whole {
                why: "a server database".to_owned(),
            },
        };
        // Set at shutdown: the store's waits (SQLite: its busy waits) end there.
        let busy_deadline = BusyDeadline::new();
        let opened =
            crate::store::open::open(url, settings, check, busy_deadline.clone(), notifier)?;
        let claims = opened.claims.map(|store| Claims {
            store,
            lease: settings.ownership_lease,
            url: settings.advertise_url.clone(),
        });
        let mut store = opened.writer;
        metrics.slow.set_threshold(settings.slow_query);
        let unfinished = (metrics.slow).time(SlowKind::Jobs, || store.unfinished_jobs(), listed)?;
        let clean = match url {
            DatabaseUrl::File(path) => {
                Some(
                    CleanShutdown::opened(path).map_err(|source| StoreError::Lock {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            DatabaseUrl::Memory | DatabaseUrl::Postgres(_) => None,
        };
        // On a server, waiting for a reader is bounded by a call and its reconnect.
        let reader_wait =
            matches!(url, DatabaseUrl::Postgres(_)).then(|| settings.db_call_timeout * 2);
        let readers = opened
            .readers
            .map(|open| ReaderPool::open(open, reader_wait))
            .transpose()?;
        metrics.set_lagging_after(settings.lagging_after());
        let database = WriterDatabase {
            store,
            busy_deadline,
            unfinished,
        };
        let writer = WriterHandle::spawn(
            database,
            settings.clone(),
            galaxies,
            metrics.clone(),
            Clock::system(),
        )
        .map_err(|source| StoreError::Thread {
            name: "writer",
            source,
        })?;
        log::info!(target: crate::logging::PERSISTENCE,
        "persistence on {} (coalescing {}, auto-save every {:?}, {})",
        url.label(),
        if settings.write_coalescing { format!("{:?}", settings.coalescing_delay) } else { "off".to_owned() },
        settings.auto_save_interval,
        match url {
            DatabaseUrl::Postgres(_) => "synchronous_commit on".to_owned(),
            _ => format!("synchronous {}", settings.synchronous.pragma_value().to_ascii_lowercase()),
        });
        Ok(Engine {
            writer,
            readers,
            metrics,
            path: url.file().map(Path::to_path_buf),
            server: match url {
                DatabaseUrl::Postgres(_) => Some(url.label()),
                DatabaseUrl::File(_) | DatabaseUrl::Memory => None,
            },
            clean,
            claims,
            restore_on_demand: settings.archive_restore == ArchiveRestore::OnDemand,
            stopping: std::sync::atomic::AtomicBool::new(false),
            _lock: lock,
        })
    }

    /// The database file, if the database is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The server database (PostgreSQL, without its password), if the database is one.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    /// The final flush, bounded by the shutdown timeout (or `budget`, when the caller
    /// spent some of it already); once the writer thread has ended
    /// with everything saved, the clean-shutdown marker (see [`clean`]). Safe to call more
    /// than once; later calls report nothing new and write nothing.
    pub fn shutdown(&self, budget: Option<Duration>) -> FlushReport {
        let report = match budget {
            Some(budget) => self.writer.shutdown_within(budget),
            None => self.writer.shutdown(),
        };
        if let Some(clean) = &self.clean {
            if self.writer.left_behind() {
                log::warn!(target: crate::logging::PERSISTENCE, "the writer was left behind in a database call: no clean-shutdown marker; the next start checks the whole database");
            } else {
                clean.after_shutdown(&report);
            }
        }
        report
    }

    /// Takes stored galaxy `name` for this daemon (see [`ClaimStore::take`]), with the
    /// local deadline of the lease it got: the monotonic clock read before the take was
    /// sent, plus the lease less its margin ([`lease_deadline`]). `None` when no other
    /// daemon shares the database: every stored galaxy is this daemon's.
    pub(crate) fn take(&self, name: &str) -> Result<Option<(Claim, Instant)>, StoreError> {
        let Some(claims) = &self.claims else {
            return Ok(None);
        };
        let sent = Instant::now();
        let claim = self.metrics.slow.time(
            SlowKind::Take,
            || claims.store.take(name),
            |claim| u64::from(matches!(claim, Ok(Claim::Owned { .. }))),
        )?;
        match &claim {
            Claim::Owned { epoch } => log::debug!(target: crate::logging::PERSISTENCE,
                "galaxy '{name}' taken (epoch {epoch})"),
            Claim::Elsewhere(owner) => log::debug!(target: crate::logging::PERSISTENCE,
                "galaxy '{name}' is owned by {} at {}", owner.id, owner.url),
            Claim::Missing => {}
        }
        Ok(Some((claim, lease_deadline(sent, claims.lease))))
    }

    /// This daemon's advertised URL, where daemons share the database.
    pub(crate) fn own_url(&self) -> Option<&str> {
        self.claims.as_ref().map(|claims| claims.url.as_str())
    }

    /// Reads a stored galaxy and its row ids through a pooled read-only connection,
    /// holding no lock; `None` when it is not stored (or there is no database file).
    /// Where daemons share the database, [`Engine::take`] it first.
    pub(crate) fn read(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        let Some(readers) = &self.readers else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let read = {
            let _in_progress = InProgress::start(&self.metrics);
            let load = || readers.with(Purpose::Load, |store| store.load_galaxy_with_ids(name));
            let systems = |read: &Result<Option<(Galaxy, RowIds)>, StoreError>| match read {
                Ok(Some((galaxy, _))) => galaxy.systems().len() as u64,
                _ => 0,
            };
            self.metrics.slow.time(SlowKind::Load, load, systems)?
        };
        if let Some((galaxy, _)) = &read {
            log::info!(target: crate::logging::PERSISTENCE,
                "galaxy '{name}' loaded ({} systems, {:?})", galaxy.systems().len(), started.elapsed());
            self.metrics
                .galaxies_loaded_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(read)
    }

    /// Hands the writer the row ids read with a galaxy now going into memory, so that its
    /// first save needs no look-up, and the epoch it was taken under (which fences its
    /// saves): before the galaxy can change, and never for a galaxy deleted since it was
    /// read (`crate::galaxies` publishes under its catalog lock).
    pub(crate) fn adopt_ids(&self, name: &str, ids: RowIds, epoch: Option<Epoch>) {
        self.writer.adopt_ids(name.to_owned(), ids, epoch);
    }

    pub(crate) fn stored_names(&self) -> Result<Vec<String>, StoreError> {
        match &self.readers {
            Some(readers) => readers.with(Purpose::Lookup, |store| store.galaxy_names()),
            None => Ok(Vec::new()),
        }
    }

    /// Every galaxy row and archive with its number of systems (`GWAR_MAX_TOTAL_SYSTEMS`
    /// counts them; an archive at its size, since any request may bring it back).
    pub(crate) fn stored_sizes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        match &self.readers {
            Some(readers) => readers.with(Purpose::Lookup, |store| {
                let mut sizes = store.galaxy_sizes()?;
                let archived = store.archives()?.into_iter();
                sizes.extend(archived.map(|archive| (archive.name, archive.systems)));
                Ok(sizes)
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Every stored galaxy with the daemon whose lease on it has not run out, if any.
    pub(crate) fn stored_owners(&self) -> Result<Vec<(String, Option<Owner>)>, StoreError> {
        match &self.readers {
            Some(readers) => readers.with(Purpose::Lookup, |store| store.galaxy_owners()),
            None => Ok(Vec::new()),
        }
    }

    pub(crate) fn is_stored(&self, name: &str) -> Result<bool, StoreError> {
        match &self.readers {
            Some(readers) => readers.with(Purpose::Lookup, |store| store.galaxy_exists(name)),
            None => Ok(false),
        }
    }
}

/// How long dropping a PostgreSQL engine waits for its sessions' goodbyes: a healthy
/// server answers in milliseconds; a stalled network is not waited for longer.
const CLOSE_WAIT: Duration = Duration::from_millis(200);

impl Drop for Engine {
    /// PostgreSQL: the readers' and the claims sessions are closed on a thread of their
    /// own, left behind. A client's drop says goodbye over its socket and waits for the
    /// connection to end, which on a stalled network (a peer that acknowledges and never
    /// answers) would hold the exiting thread for as long as the stall, past any bound of
    /// the shutdown. The store's stall watch ends such a socket within the call timeout,
    /// and the process may exit before that: nothing is lost either way (a session holds
    /// nothing between transactions; the server rolls back whatever it had open). SQLite's
    /// connections close here, as ever: they touch no network, and their last close
    /// tidies the journal files. The closing is waited for a moment ([`CLOSE_WAIT`]), so
    /// that on a sound network the sessions say goodbye before the process exits.
    fn drop(&mut self) {
        if self.server.is_none() {
            return;
        }
        let parcel = Arc::new(parking_lot::Mutex::new(Some((
            self.readers.take(),
            self.claims.take(),
        ))));
        let closing = parcel.clone();
        let (closed, done) = crossbeam_channel::bounded::<()>(0);
        let spawned = std::thread::Builder::new()
            .name("gwar-pg-close".into())
            .spawn(move || {
                let _closed = closed;
                drop(closing.lock().take());
            });
        match spawned {
            Ok(_) => {
                let _ = done.recv_timeout(CLOSE_WAIT);
            }
            Err(error) => {
                log::warn!(target: crate::logging::PERSISTENCE,
                    "cannot start a thread to close the database sessions ({error}); leaving them open");
                std::mem::forget(parcel.lock().take());
            }
        }
    }
}

/// The loads-in-progress gauge, raised for as long as this lives (also on unwinding).
struct InProgress<'a>(&'a Metrics);

impl<'a> InProgress<'a> {
    fn start(metrics: &'a Metrics) -> InProgress<'a> {
        metrics
            .loads_in_progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InProgress(metrics)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0
            .loads_in_progress
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
