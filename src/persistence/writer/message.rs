//! What game threads send the writer thread ([`Message`]), and what the writer takes over
//! from the engine that opened the database ([`WriterDatabase`]). Plain data: the handle
//! builds these, the loop consumes them; neither side is named here.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::jobs::CreationReply;
use super::report::{ArchiveRefused, FlushReport, PersistError};
use crate::galaxies::GalaxyCell;
use crate::model::Galaxy;
use crate::store::{BusyDeadline, Epoch, GalaxyJob, RowIds, StoreWork, WriteStore};

pub(crate) enum Message {
    /// A galaxy went from clean to dirty at `since`.
    Dirty {
        cell: Arc<GalaxyCell>,
        since: Instant,
    },
    Create {
        galaxy: Box<Galaxy>,
        /// Its last chunk's commit is synced before the answer (`?durable=1`).
        durable: bool,
        /// A restore of its archive, which the commit that makes it exist deletes.
        restoring: bool,
        reply: CreationReply,
    },
    /// Store this archive of a galaxy taken out of memory (see `archiving.rs`).
    Archive {
        name: String,
        systems: u64,
        body: Arc<[u8]>,
        reply: Sender<Result<(), ArchiveRefused>>,
    },
    /// Delete the archive of this galaxy; the answer says whether there was one.
    DeleteArchive {
        name: String,
        reply: Sender<Result<bool, crate::store::StoreFailure>>,
    },
    /// Refuse creations from now on, and the ones in progress (the daemon is stopping).
    StopCreating,
    /// The row ids a load read, for the cache (sent before the galaxy is in memory), and
    /// the epoch its take got, when the database is shared with other daemons.
    AdoptIds {
        name: String,
        ids: RowIds,
        epoch: Option<Epoch>,
    },
    /// A galaxy deleted; `epoch` when it was taken for the deletion (it was not in memory).
    Delete { name: String, epoch: Option<Epoch> },
    /// A galaxy a load took under `epoch` that never reached memory (its read found
    /// nothing or failed, a deletion overtook it): not renewed, but released by a clean
    /// stop like the galaxies that left memory.
    TakenUnused { name: String, epoch: Epoch },
    /// Answer once every change made before it is committed; `durable`: and synced to
    /// stable storage, for a durable order on that galaxy (`?durable=1`), which it makes
    /// pending whether or not its dirty marker has arrived yet.
    Flush {
        deadline: Option<Instant>,
        durable: Option<Arc<GalaxyCell>>,
        reply: Sender<Result<u64, PersistError>>,
    },
    Shutdown {
        deadline: Instant,
        reply: Sender<FlushReport>,
    },
    /// Work on the writer's store itself, between batches (maintenance, fault injection).
    Exec(StoreWork),
}

/// What the writer takes over from the engine that opened the database.
pub(crate) struct WriterDatabase {
    /// The store the writer thread owns.
    pub store: Box<dyn WriteStore>,
    /// Set at shutdown; the store's waits end there.
    pub busy_deadline: Arc<BusyDeadline>,
    /// Creations and deletions a previous run left unfinished.
    pub unfinished: Vec<GalaxyJob>,
}
