//! What the writer answers: why a flush, creation or shutdown did not save everything
//! ([`PersistError`]), and what a shutdown left unsaved ([`FlushReport`]); and the log
//! target every file of the writer logs under. A leaf: it names nothing else of the writer,
//! so the handle, the loop and the jobs all share it without a circle.

use crate::store::StoreFailure;

/// The log target of everything the writer (and the engine around it) logs.
pub(crate) use crate::logging::PERSISTENCE as LOG;

/// Why a flush, creation or shutdown did not save everything. A store's failure keeps its
/// kind ([`StoreFailure::kind`]: busy, full, file gone, inconsistent…) across the thread.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    #[error("saving failed: {0}")]
    Failed(StoreFailure),
    #[error("not everything was saved before the deadline (last error: {})", .last_error.as_ref().map_or("none", |e| e.message.as_str()))]
    TimedOut { last_error: Option<StoreFailure> },
    #[error("the persistence writer has stopped")]
    Stopped,
    /// Another daemon took these galaxies (this daemon's lease on them had run out) before
    /// their changes were saved: the changes are dropped, and cannot be saved by a retry.
    #[error("changes to galaxies taken by another daemon were dropped: {}", .0.join(", "))]
    Lost(Vec<String>),
}

/// What the final flush left unsaved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Galaxies with unsaved systems, and how many, sorted by name.
    pub unsaved: Vec<(String, usize)>,
    /// Deletions that never reached the database.
    pub unsaved_deletions: Vec<String>,
    /// Galaxies taken by another daemon since this one started, while they held unsaved
    /// changes here (a deletion counts, with 0 systems), and the unsaved systems dropped
    /// with them, in the order they were lost.
    pub lost: Vec<(String, usize)>,
    pub error: Option<PersistError>,
}

impl FlushReport {
    pub fn all_saved(&self) -> bool {
        self.unsaved.is_empty()
            && self.unsaved_deletions.is_empty()
            && self.lost.is_empty()
            && self.error.is_none()
    }
}

/// A galaxy archived: what its archive holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchivedGalaxy {
    pub systems: u64,
    /// The archive's size.
    pub bytes: u64,
}

/// Why a galaxy was not archived; it is live (or not in memory) as before.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveRefused {
    #[error(transparent)]
    Life(#[from] crate::galaxies::LifeError),
    /// `unsettled`: the commit was sent and its answer lost (PostgreSQL): it may be in
    /// the database, and sending the same archive again settles it.
    #[error("the archive could not be saved: {failure}")]
    Failed {
        failure: StoreFailure,
        unsettled: bool,
    },
    #[error("the persistence writer is stopping")]
    Stopped,
}
