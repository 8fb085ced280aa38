//! The write-behind persistence engine (CONTRACT §2–§3).
//!
//! - [`store`]: the schema, migrations and SQL; one connection per [`store::Store`].
//! - [`writer`]: the writer thread, the only writer of the database.
//! - [`checkpoint`]: the thread that copies the WAL back into the database file.
//! - [`cell`]: galaxies in memory, one lock each, shared by game threads and the writer.
//! - `cut`: the consistent cut the writer takes of a galaxy, in one hold of its lock.
//! - [`metrics`]: counters and health as atomics.
//! - [`lock`]: one daemon per database file.
//! - [`backup`]: online backups through SQLite's backup API.
//! - [`clean`]: the clean-shutdown marker, which spares a start-up after a clean stop
//!   the whole-file check.
//!
//! [`Engine`] ties them together: it holds the database lock, the writer, and the
//! read-only connection that loads galaxies on a cache miss. Everything here logs under
//! the target `galactic_war::persistence`.

pub mod backup;
pub mod cell;
pub mod checkpoint;
pub mod clean;
mod cut;
pub mod lock;
pub mod metrics;
pub mod store;
mod time;
pub mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::model::Galaxy;
use crate::settings::{DatabaseUrl, PersistenceSettings};
use cell::Registry;
use checkpoint::Checkpointer;
use clean::CleanShutdown;
use lock::DatabaseLock;
use metrics::Metrics;
use store::{StartupCheck, Store, StoreError};
use writer::{ShutdownReport, WriterHandle};

/// A running persistence engine on one database.
pub struct Engine {
    // Field order is drop order: the writer's final flush runs before the lock is released.
    writer: WriterHandle,
    /// Loads on a cache miss; `None` for an in-memory database, which only the writer's
    /// connection can see (and whose galaxies never leave memory anyway).
    reader: Option<Mutex<Store>>,
    tombstones: Arc<Mutex<HashSet<String>>>,
    /// The database file; `None` for an in-memory database.
    path: Option<PathBuf>,
    /// Writes the clean-shutdown marker; `None` for an in-memory database.
    clean: Option<CleanShutdown>,
    _lock: Option<DatabaseLock>,
}

impl Engine {
    /// Locks the database against other daemons, opens and migrates it, and starts the
    /// writer thread. Fails without starting anything when any step fails.
    pub fn open(
        url: &DatabaseUrl,
        settings: &PersistenceSettings,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, StoreError> {
        let lock = match url {
            DatabaseUrl::Memory => None,
            DatabaseUrl::File(path) => {
                store::create_parent_dir(path)?;
                Some(DatabaseLock::acquire(path)?)
            }
        };
        // Under the lock and before anything writes: the marker is read and removed here.
        let check = match url {
            DatabaseUrl::File(path) => clean::take(path),
            DatabaseUrl::Memory => StartupCheck::Whole {
                why: "in memory".to_owned(),
            },
        };
        let store = Store::open_writer_checked(url, settings.synchronous, check)?;
        let clean = match url {
            DatabaseUrl::File(path) => {
                Some(
                    CleanShutdown::opened(path).map_err(|source| StoreError::Lock {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            DatabaseUrl::Memory => None,
        };
        let reader = match url {
            DatabaseUrl::Memory => None,
            DatabaseUrl::File(path) => Some(Mutex::new(Store::open_reader(path)?)),
        };
        let checkpointer = match url {
            DatabaseUrl::Memory => None,
            DatabaseUrl::File(path) => Some(Checkpointer::spawn(
                path,
                settings.synchronous,
                settings.checkpoint_pages,
            )?),
        };
        let tombstones = Arc::new(Mutex::new(HashSet::new()));
        let writer = WriterHandle::spawn(
            store,
            checkpointer,
            settings.clone(),
            registry,
            metrics,
            tombstones.clone(),
        )
        .map_err(|source| StoreError::Thread {
            name: "writer",
            source,
        })?;
        log::info!(target: "galactic_war::persistence",
            "persistence on {} (coalescing {}, auto-save every {:?}, synchronous {})",
            match url {
                DatabaseUrl::File(path) => path.display().to_string(),
                DatabaseUrl::Memory => ":memory:".to_owned(),
            },
            if settings.write_coalescing { format!("{:?}", settings.coalescing_delay) } else { "off".to_owned() },
            settings.auto_save_interval,
            settings.synchronous.pragma_value().to_ascii_lowercase());
        Ok(Engine {
            writer,
            reader,
            tombstones,
            path: match url {
                DatabaseUrl::File(path) => Some(path.clone()),
                DatabaseUrl::Memory => None,
            },
            clean,
            _lock: lock,
        })
    }

    /// The database file, if the database is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    /// The final flush, bounded by the shutdown timeout; once the writer thread has ended
    /// with everything saved, the clean-shutdown marker (see [`clean`]). Safe to call more
    /// than once; later calls report nothing new and write nothing.
    pub fn shutdown(&self) -> ShutdownReport {
        let report = self.writer.shutdown();
        if let Some(clean) = &self.clean {
            clean.after_shutdown(&report);
        }
        report
    }

    /// True while a deletion of `name` is not yet committed: the stored copy is stale.
    pub(crate) fn is_deleted(&self, name: &str) -> bool {
        self.tombstones.lock().contains(name)
    }

    pub(crate) fn tombstone(&self, name: &str) {
        self.tombstones.lock().insert(name.to_owned());
    }

    /// Loads a stored galaxy through the read-only connection (`None`: not stored).
    pub(crate) fn load(&self, name: &str) -> Result<Option<Galaxy>, StoreError> {
        match &self.reader {
            Some(reader) if !self.is_deleted(name) => reader.lock().load_galaxy(name),
            _ => Ok(None),
        }
    }

    pub(crate) fn stored_names(&self) -> Result<Vec<String>, StoreError> {
        match &self.reader {
            Some(reader) => reader.lock().galaxy_names(),
            None => Ok(Vec::new()),
        }
    }

    pub(crate) fn is_stored(&self, name: &str) -> Result<bool, StoreError> {
        match &self.reader {
            Some(reader) if !self.is_deleted(name) => reader.lock().galaxy_exists(name),
            _ => Ok(false),
        }
    }
}
