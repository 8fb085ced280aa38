//! Automatic archiving (`GWAR_ARCHIVE_AFTER_SECS`): a thread of its own that, every so
//! often, archives a few galaxies idle for that long (README, *Archives and moving a
//! deployment*). A few per round, so that a deployment with thousands of finished
//! galaxies archives them over minutes rather than in one burst beside the players; each
//! one is taken out of memory by the writer between batches, like any archive.

use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::app::AppState;

/// Galaxies archived per round at most; a full round is followed by the next after
/// [`MIN_PERIOD`], so a backlog goes a few a second, beside the players.
const PER_ROUND: usize = 4;

/// The longest pause between rounds, and the shortest.
const MAX_PERIOD: Duration = Duration::from_secs(60);
const MIN_PERIOD: Duration = Duration::from_secs(1);

pub(super) struct ArchiveSchedule {
    stop: Sender<()>,
    /// Disconnected when the thread ends.
    finished: Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

/// How long a stop waits for an archive in progress.
const STOP_WAIT: Duration = Duration::from_secs(1);

impl ArchiveSchedule {
    /// Archives galaxies idle for `idle`, a round every tenth of it (between a second and
    /// a minute), one galaxy at a time so that a stop is seen between any two.
    pub(super) fn start(app: AppState, idle: Duration) -> std::io::Result<ArchiveSchedule> {
        let every = (idle / 10).clamp(MIN_PERIOD, MAX_PERIOD);
        let (stop, stopped) = bounded::<()>(1);
        let (done, finished) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("gwar-archiver".into())
            .spawn(move || {
                let _done = done;
                let mut pause = every;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(pause) {
                    let mut archived = 0;
                    while archived < PER_ROUND && app.archive_idle(idle, 1) == 1 {
                        archived += 1;
                        if stopped.try_recv().is_ok() {
                            return;
                        }
                    }
                    // A full round: more are waiting, and the next comes soon.
                    pause = if archived == PER_ROUND {
                        MIN_PERIOD
                    } else {
                        every
                    };
                }
            })?;
        log::info!("galaxies idle for {idle:?} are archived automatically");
        Ok(ArchiveSchedule {
            stop,
            finished,
            thread,
        })
    }

    /// Stops the schedule; waits for the archive in progress at most [`STOP_WAIT`] (the
    /// daemon refuses new archives once stopping, and the one in hand ends within the
    /// database's timeouts: a stop does not wait that long).
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        match self.finished.recv_timeout(STOP_WAIT) {
            Err(RecvTimeoutError::Timeout) => {
                log::warn!("automatic archiving: an archive still in progress is left behind")
            }
            _ => {
                let _ = self.thread.join();
            }
        }
    }
}
