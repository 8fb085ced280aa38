//! The checkpointer thread: copies the WAL back into the database file, off the writer's
//! path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so
//! every so often one batch waited for a whole checkpoint, fsyncs included (what that cost
//! and what moving it gained: README, *Benchmarks*). Instead, the writer's connection has
//! no automatic checkpoint; after each commit the writer's store asks this thread for one
//! when the WAL holds `checkpoint_pages` pages or more (setting
//! [`crate::settings::PersistenceSettings`]; [`crate::settings::CHECKPOINT_PAGES`] by
//! default). The thread runs passive checkpoints on its own connection, which never block
//! the writer: it keeps appending to the WAL meanwhile, and restarts the WAL from its
//! beginning at the first batch after a checkpoint has copied everything. Under
//! back-to-back batches the writer copies the last few frames itself (see
//! [`Checkpointer::after_commit`]). Nothing is lost either way: until a checkpoint copies
//! a page, the WAL has it.
//!
//! Requests never block the writer (the channel is unbounded, and the thread takes every
//! queued request at once and runs one checkpoint for them). Dropping the [`Checkpointer`]
//! stops the thread and waits for the checkpoint in progress. Only the SQLite writer's
//! store ([`super::SqliteWriter`]) holds one.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::super::{BusyDeadline, StoreError};
use super::busy;
use super::db::Db;
use crate::settings::Synchronous;

use crate::logging::PERSISTENCE as LOG;

/// What a checkpoint may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckpointMode {
    /// Copy what it can without waiting on readers or the writer.
    Passive,
    /// Copy everything and truncate the WAL file (when the database is idle).
    Truncate,
}

/// The handle the writer holds.
pub struct Checkpointer {
    // `Option` so that `Drop` can disconnect the channel before joining.
    requests: Option<Sender<CheckpointMode>>,
    /// One message per checkpoint the thread finished.
    finished: Receiver<()>,
    /// A background checkpoint was asked for since the WAL last restarted.
    catching_up: bool,
    threshold: u32,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second read-write connection to the database at `path` (already created
    /// and migrated by the writer) and starts the thread.
    /// Its busy waits end at `busy_deadline` too: the writer's final steps wait for the
    /// checkpoint in progress, and the shutdown's deadline holds for both.
    pub(super) fn spawn(
        path: &Path,
        synchronous: Synchronous,
        threshold: u32,
        busy_deadline: Arc<BusyDeadline>,
    ) -> Result<Checkpointer, StoreError> {
        let db = Db::open_checkpointer(path, synchronous)?;
        let (requests, rx) = unbounded();
        let (finish, finished) = unbounded();
        let thread = std::thread::Builder::new()
            .name("gwar-checkpoint".into())
            .spawn(move || {
                if let Err(error) = busy::install(&busy_deadline, &db.conn) {
                    log::warn!(target: LOG, "checkpoints will not end at the shutdown deadline: {error}");
                }
                run(db, rx, finish)
            })
            .map_err(|source| StoreError::Thread {
                name: "checkpoint",
                source,
            })?;
        Ok(Checkpointer {
            requests: Some(requests),
            finished,
            catching_up: false,
            threshold,
            thread: Some(thread),
        })
    }

    /// Called by the writer's store after each commit on `writer` (its connection).
    ///
    /// A background checkpoint copies the WAL as it was when it started, while the writer
    /// goes on appending; SQLite restarts the WAL only when a batch begins with all of it
    /// copied. Under a steady stream of batches the background checkpoint never wins that
    /// race, and the WAL would grow without bound. So once a background checkpoint has
    /// finished and the WAL is still over the threshold, the writer checkpoints the rest
    /// itself: only the frames appended since that checkpoint started.
    ///
    /// `room`: the most pages the WAL should hold for the room left on the filesystem
    /// (see `space.rs`), when less than the threshold: on a filesystem running short the
    /// WAL is checkpointed sooner, so it never holds room that batches of orders need.
    pub(super) fn after_commit(&mut self, writer: &Db, room: Option<u32>) {
        let threshold = room.map_or(self.threshold, |room| self.threshold.min(room));
        if writer.wal_pages() < threshold {
            self.catching_up = false;
            return;
        }
        if !self.catching_up {
            // Count only checkpoints that start from here (not earlier periodic ones).
            self.finished.try_iter().for_each(drop);
            self.request(CheckpointMode::Passive);
            self.catching_up = true;
        } else if self.finished.try_iter().count() > 0 {
            if let Err(error) = writer.checkpoint() {
                log::warn!(target: LOG, "WAL checkpoint failed (retried at the next batch): {error}");
            }
            // Should a reader's snapshot still hold frames back, the WAL does not restart
            // and the next commit starts over.
            self.catching_up = false;
        }
    }

    /// Asks for a checkpoint; returns at once.
    pub(super) fn request(&self, mode: CheckpointMode) {
        if let Some(requests) = &self.requests {
            // Fails only once the thread has ended, which it does only when dropped.
            let _ = requests.send(mode);
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!(target: LOG, "the checkpoint thread panicked");
            }
        }
    }
}

fn run(db: Db, requests: Receiver<CheckpointMode>, finish: Sender<()>) {
    let mut failing = false;
    while let Ok(first) = requests.recv() {
        // Requests that queued during the last checkpoint are served by one more.
        let mode = requests.try_iter().fold(first, Ord::max);
        let result = match mode {
            CheckpointMode::Passive => db.checkpoint(),
            CheckpointMode::Truncate => db.checkpoint_truncate(),
        };
        match result {
            Ok(()) if failing => {
                log::info!(target: LOG, "WAL checkpoints work again");
                failing = false;
            }
            Ok(()) => {}
            // The WAL keeps every page until a checkpoint succeeds: nothing is lost, the
            // WAL only grows. Logged once per run of failures, as requests come per batch.
            Err(error) if !failing => {
                log::warn!(target: LOG, "WAL checkpoint failed (retried at the next batch): {error}");
                failing = true;
            }
            Err(error) => log::debug!(target: LOG, "WAL checkpoint failed again: {error}"),
        }
        // The writer may be gone already (it drops this thread's handle last).
        let _ = finish.send(());
    }
}
