//! Room on the database's filesystem, shared between the writer's two lanes: orders first.
//!
//! SQLite writes into the filesystem it lives on, and when that is full every commit
//! fails, a batch of orders (the loss window) as much as a chunk of a creation. So the
//! room is shared by rule:
//! - bulk work (a chunk of a creation or of a removal) runs only while the filesystem
//!   keeps more than [`bulk_reserve`] free: below it the chunk does not run and its job
//!   waits (`room_for_bulk`), and batches of orders have the reserve to themselves;
//! - the WAL is checkpointed before it holds a quarter of the free space (`wal_room`);
//! - a failing lane's probe says "a write could succeed now" only while the file is the
//!   one opened and at least [`PROBE_FLOOR`] is free (`probe`);
//! - a write that fails leaves no transaction open (no lock and no WAL frames held);
//! - when a write first fails for lack of room and at the first commit after it, and
//!   when bulk work is first held back, the checkpoint thread is asked for a truncating
//!   checkpoint, so the WAL gives back to the filesystem what it grew by
//!   (frames of rolled-back transactions, a bulk job's pages once copied into the file).
//!   Only at those edges: a truncating checkpoint holds writers back while it runs.
//!
//! The reserve is this store's constant, not a setting: a share of the filesystem, at
//! most [`MAX_BULK_RESERVE`].

use super::super::StoreError;
use super::checkpoint::CheckpointMode;
use super::db::Space;
use super::writer::SqliteWriter;
use crate::logging::PERSISTENCE as LOG;

/// Free space under which a probe says a write cannot succeed yet: a batch of orders
/// needs a few pages of WAL, and a filesystem this close to full fails it.
pub const PROBE_FLOOR: u64 = 1024 * 1024;

/// The most bulk work leaves free for batches of orders and checkpoints.
pub const MAX_BULK_RESERVE: u64 = 64 * 1024 * 1024;

/// The room one WAL frame takes: SQLite's default page (the engine's databases keep it)
/// and the frame's header.
const WAL_PAGE_BYTES: u64 = 4096 + 24;

/// The WAL is never held under this many pages (256 KiB) for lack of room: below it a
/// checkpoint after every batch would cost more than it gives back.
const MIN_WAL_ROOM: u32 = 64;

/// The free space bulk work leaves for batches of orders on a filesystem of `total`
/// bytes: an eighth of it, between [`PROBE_FLOOR`] and [`MAX_BULK_RESERVE`] (8 MiB on a
/// 64 MiB filesystem; 64 MiB from 512 MiB on). An eighth, because the largest chunk of
/// bulk work (its WAL frames) and a checkpoint copying them must fit beside the orders.
pub fn bulk_reserve(total: u64) -> u64 {
    (total / 8).clamp(PROBE_FLOOR, MAX_BULK_RESERVE)
}

impl SqliteWriter {
    /// The room on the database's filesystem; `None` when it cannot be told (in memory,
    /// or `statvfs` failed: then the write itself decides).
    fn space(&self) -> Option<Space> {
        match self.db.space()? {
            Ok(space) => Some(space),
            Err(error) => {
                log::debug!(target: LOG, "cannot read the free space of the database's filesystem: {error}");
                None
            }
        }
    }

    /// `Err` when `available` is under `needed`.
    fn require(&self, space: Space, needed: u64, what: &'static str) -> Result<(), StoreError> {
        if space.available >= needed {
            return Ok(());
        }
        Err(StoreError::LowSpace {
            path: self.db.label.clone().into(),
            available: space.available,
            needed,
            what,
        })
    }

    /// The most pages the WAL should hold for the room left: a quarter of the free
    /// space, at least [`MIN_WAL_ROOM`] pages; `None` when the room cannot be told.
    ///
    /// A checkpoint copies the WAL's pages into the database file, which grows by those
    /// that are new, so until the WAL restarts its room is needed twice. A WAL kept to a
    /// quarter of what is free never takes the room a checkpoint (and the orders after
    /// it) need, as a large creation's would under the default threshold of 40 MiB on a
    /// small disk.
    pub(super) fn wal_room(&self) -> Option<u32> {
        let space = self.space()?;
        let pages = space.available / 4 / WAL_PAGE_BYTES;
        Some(u32::try_from(pages).unwrap_or(u32::MAX).max(MIN_WAL_ROOM))
    }

    /// [`super::super::WriteStore::probe`]: the file is the one opened, and it has
    /// [`PROBE_FLOOR`] free.
    pub(super) fn probe_room(&mut self) -> Result<(), StoreError> {
        self.db.check_file()?;
        match self.space() {
            Some(space) => self.require(space, PROBE_FLOOR, "a write needs"),
            None => Ok(()),
        }
    }

    /// [`super::super::WriteStore::room_for_bulk`]: more than the reserve is free. The
    /// first refusal of a run truncates the WAL (see the module's doc).
    pub(super) fn bulk_room(&mut self) -> Result<(), StoreError> {
        let Some(space) = self.space() else {
            return Ok(());
        };
        let room = self.require(
            space,
            bulk_reserve(space.total),
            "kept for saving orders: creating and removing galaxies waits until there is room",
        );
        let held = room.is_err();
        if held && !self.bulk_held {
            log::info!(target: LOG, "bulk work waits for room: truncating the WAL");
            self.truncate_wal();
        }
        self.bulk_held = held;
        room
    }

    /// After every write, whether it committed or not: a commit is noted for durable
    /// requests (`sync.rs`), a failure leaves no transaction open, and one for lack of
    /// room asks for the WAL's space back.
    pub(super) fn after_write<T>(
        &mut self,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if result.is_ok() {
            self.sync.committed();
        }
        if let Err(error) = &result {
            self.db.end_open_transaction();
            if error.kind() == crate::store::FailureKind::Full {
                self.running_short();
            }
        }
        result
    }

    /// A write failed for lack of room: the first time, the WAL is truncated to give
    /// back what it holds beyond its last commit.
    fn running_short(&mut self) {
        if !self.short_of_room {
            self.short_of_room = true;
            log::info!(target: LOG, "the database's filesystem is full: truncating the WAL");
            self.truncate_wal();
        }
    }

    /// A commit succeeded: if the room had run short, it is back, and the WAL gives back
    /// what the shortage left in it.
    pub(super) fn room_back(&mut self) {
        if std::mem::take(&mut self.short_of_room) {
            self.truncate_wal();
        }
    }

    fn truncate_wal(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.request(CheckpointMode::Truncate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulk_reserve_is_an_eighth_within_its_bounds() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(bulk_reserve(0), PROBE_FLOOR);
        assert_eq!(bulk_reserve(4 * MIB), PROBE_FLOOR);
        assert_eq!(bulk_reserve(64 * MIB), 8 * MIB);
        assert_eq!(bulk_reserve(512 * MIB), MAX_BULK_RESERVE);
        assert_eq!(bulk_reserve(u64::MAX), MAX_BULK_RESERVE);
    }
}
