//! Automatic archiving (`GWAR_ARCHIVE_AFTER_SECS`): a thread of its own that, every so
//! often, archives a few galaxies idle for that long (README, *Archives and moving a
//! deployment*). A few per round, so that a deployment with thousands of finished
//! galaxies archives them over minutes rather than in one burst beside the players; each
//! one is taken out of memory by the writer between batches, like any archive.

use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::app::AppState;

/// Galaxies archived per round at most.
const PER_ROUND: usize = 4;

/// The longest pause between rounds, and the shortest.
const MAX_PERIOD: Duration = Duration::from_secs(60);
const MIN_PERIOD: Duration = Duration::from_secs(1);

pub(super) struct ArchiveSchedule {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ArchiveSchedule {
    /// Archives galaxies idle for `idle`, a round every tenth of it (between a second and
    /// a minute).
    pub(super) fn start(app: AppState, idle: Duration) -> std::io::Result<ArchiveSchedule> {
        let every = (idle / 10).clamp(MIN_PERIOD, MAX_PERIOD);
        let (stop, stopped) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("gwar-archiver".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    // A full round: more are waiting, so the next comes at once.
                    while app.archive_idle(idle, PER_ROUND) == PER_ROUND {
                        if stopped.try_recv().is_ok() {
                            return;
                        }
                    }
                }
            })?;
        log::info!("galaxies idle for {idle:?} are archived automatically");
        Ok(ArchiveSchedule { stop, thread })
    }

    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
