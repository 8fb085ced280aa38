//! systemd integration: readiness, status, the watchdog, and stopping notices.
//!
//! Everything here is a no-op when the daemon does not run under systemd
//! (`NOTIFY_SOCKET` unset). Failures to notify are logged, never fatal: the game must
//! not stop because the service manager is unreachable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::app::AppState;

fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        log::warn!("could not notify systemd: {error}");
    }
}

/// READY=1, with a first STATUS= line.
pub fn ready(app: &AppState) {
    notify(&[NotifyState::Ready, NotifyState::Status(&status_line(app))]);
}

/// STOPPING=1, and more time for the final flush so systemd does not kill a save.
pub fn stopping(flush_budget: Duration) {
    let usec = u32::try_from(flush_budget.as_micros()).unwrap_or(u32::MAX);
    notify(&[
        NotifyState::Stopping,
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status("saving before exit"),
    ]);
}

/// EXTEND_TIMEOUT_USEC: `by` more time for what the daemon is doing now (starting, while
/// it checks a large database), with a STATUS= line saying what that is. To keep the
/// extension going, send again before `by` runs out.
pub fn extend_timeout(by: Duration, status: &str) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    notify(&[
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status(status),
    ]);
}

fn status_line(app: &AppState) -> String {
    let health = app.health();
    format!(
        "{} galaxies loaded; persistence {}; {} unsaved systems",
        app.galaxies_loaded(),
        health.persistence.state.as_str(),
        health.persistence.dirty_systems
    )
}

/// A thread that refreshes STATUS= and, when `WatchdogSec` is set, sends WATCHDOG=1 —
/// but only while the writer thread answers a ping, so a stalled writer gets the daemon
/// restarted instead of silently losing saves.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    pub fn start(app: AppState) -> std::io::Result<Supervisor> {
        let watchdog = sd_notify::watchdog_enabled();
        let period = watchdog.map_or(Duration::from_secs(10), |w| {
            (w / 2).max(Duration::from_millis(100))
        });
        if let Some(w) = watchdog {
            log::info!("systemd watchdog enabled ({w:?}); pinging every {period:?}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new().name("gwar-supervisor".into()).spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let writer_alive = app.writer().is_none_or(|w| w.ping(period));
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let status = status_line(&app);
                    if watchdog.is_some() && writer_alive {
                        notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                    } else {
                        if watchdog.is_some() {
                            log::error!("the writer thread did not answer within {period:?}; not pinging the watchdog");
                        }
                        notify(&[NotifyState::Status(&status)]);
                    }
                    // Sleep in small steps so shutdown is not held up.
                    let mut slept = Duration::ZERO;
                    while slept < period && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                        slept += Duration::from_millis(50);
                    }
                }
            })?
        };
        Ok(Supervisor {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
