//! The SQLite store: the schema, its migrations, and every SQL statement the engine runs
//! on SQLite.
//!
//! The writer thread owns the only connection that writes rows, a [`SqliteWriter`], and
//! with it the cache of system row ids, so a hot save updates rows by primary key without a
//! look-up. The checkpoint thread (`checkpoint.rs`) has a second read-write connection that
//! only checkpoints; the writer's store owns that thread and asks it for checkpoints after
//! its commits. Loads on a cache miss use read-only connections, each a [`SqliteReader`],
//! which has no write method. Nothing here locks a galaxy: callers hand in plain copies
//! of rows.
//!
//! This file puts the parts together ([`open`]) and names what the rest of the crate
//! uses; the files below it never name it. `db.rs` is one connection and what every
//! connection shares; `migrate.rs` opens, checks and migrates at start-up; `writer.rs` is
//! the writer's store, with its statements in `write.rs` (a batch, and the cache of row
//! ids) and `jobs.rs` (creating and deleting whole galaxies in bounded chunks);
//! `archive.rs` archives a galaxy, restores archives, and reads them; `history.rs` keeps
//! galaxies' history (saved with batches, removed with a galaxy or an archive, pruned);
//! `reader.rs` is the read side and `load.rs` reads a galaxy back; `busy.rs` ends lock
//! waits at the shutdown deadline; `space.rs` shares the filesystem's room between
//! batches of orders and bulk work (orders first). A galaxy with an unfinished job (table `galaxy_jobs`)
//! is invisible to every read here.

mod archive;
mod busy;
mod checkpoint;
mod db;
mod history;
mod jobs;
mod load;
mod migrate;
#[cfg(test)]
mod plans;
mod reader;
mod space;
mod sync;
#[cfg(test)]
mod tests;
mod write;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use super::{BusyDeadline, OpenReader, Opened, ReadStore, StoreError};
use crate::settings::{DatabaseUrl, PersistenceSettings};
use crate::systemd::Notifier;
use checkpoint::Checkpointer;
use db::Db;

pub use archive::measure;
pub use db::BUSY_TIMEOUT;
#[cfg(any(test, feature = "testing"))]
pub use migrate::WRITER_PRAGMAS;
pub use migrate::{StartupCheck, SCHEMA_VERSION};
pub use reader::SqliteReader;
pub use writer::SqliteWriter;

/// Opens an SQLite database for the engine (see [`super::open`]): the writer's connection,
/// its checkpoint thread, and readers on demand (a file only: an in-memory database is
/// seen by the writer's connection alone, and has no WAL to checkpoint).
pub(super) fn open(
    url: &DatabaseUrl,
    settings: &PersistenceSettings,
    check: StartupCheck,
    deadline: Arc<BusyDeadline>,
    notifier: &Notifier,
) -> Result<Opened, StoreError> {
    let db = Db::open_writer(url, settings.synchronous, check, notifier)?;
    let (checkpointer, readers) = match url {
        DatabaseUrl::Memory | DatabaseUrl::Postgres(_) => (None, None),
        DatabaseUrl::File(path) => {
            // Its busy waits end at the deadline too: the writer's final steps wait for
            // the checkpoint in progress, and the shutdown's deadline holds for both.
            let checkpointer = Checkpointer::spawn(
                path,
                settings.synchronous,
                settings.checkpoint_pages,
                deadline.clone(),
            )?;
            let path = path.clone();
            let readers: OpenReader =
                Box::new(move || Ok(Box::new(SqliteReader::open(&path)?) as Box<dyn ReadStore>));
            (Some(checkpointer), Some(readers))
        }
    };
    let writer = SqliteWriter {
        db,
        ids: HashMap::new(),
        checkpointer,
        deadline,
        short_of_room: false,
        bulk_held: false,
        sync: writer::SyncState::new(settings.synchronous),
    };
    Ok(Opened {
        writer: Box::new(writer),
        readers,
        claims: None,
    })
}
