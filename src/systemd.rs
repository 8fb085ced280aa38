//! systemd integration: readiness, status, the watchdog, and stopping notices.
//!
//! Where notices go is read from the environment once, by the process edge
//! ([`Notifier::from_env`]: `NOTIFY_SOCKET`, `WATCHDOG_USEC`), and handed to
//! [`crate::serve::serve`] as a value; a [`Notifier::none`] (tests, a program linking the
//! library) sends nothing. Everything here is a no-op when the daemon does not run under
//! systemd. Failures to notify are logged, never fatal: the game must not stop because the
//! service manager is unreachable.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::app::AppState;

/// Where systemd's notices go, and the watchdog's period if systemd asked for one.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET`: the path of systemd's datagram socket.
    socket: Option<OsString>,
    /// `WATCHDOG_USEC` (for this process, per `WATCHDOG_PID`).
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The service manager this process was started by, if any.
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET"),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// Sends nothing.
    pub fn none() -> Notifier {
        Notifier::default()
    }

    fn notify(&self, states: &[NotifyState]) {
        let Some(socket) = &self.socket else {
            return;
        };
        let mut message = String::new();
        for state in states {
            message.push_str(&state.to_string());
            message.push('\n');
        }
        let sent = UnixDatagram::unbound().and_then(|datagram| {
            datagram.connect(socket)?;
            datagram.send(message.as_bytes())
        });
        match sent {
            Ok(n) if n == message.len() => {}
            Ok(_) => log::warn!("could not notify systemd: incomplete write"),
            Err(error) => log::warn!("could not notify systemd: {error}"),
        }
    }

    /// READY=1, with a first STATUS= line.
    pub fn ready(&self, app: &AppState) {
        self.notify(&[NotifyState::Ready, NotifyState::Status(&status_line(app))]);
    }

    /// STOPPING=1, and more time for the final flush so systemd does not kill a save.
    pub fn stopping(&self, flush_budget: Duration) {
        let usec = u32::try_from(flush_budget.as_micros()).unwrap_or(u32::MAX);
        self.notify(&[
            NotifyState::Stopping,
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status("saving before exit"),
        ]);
    }

    /// EXTEND_TIMEOUT_USEC: `by` more time for what the daemon is doing now (starting,
    /// while it checks a large database), with a STATUS= line saying what that is. To keep
    /// the extension going, send again before `by` runs out.
    pub fn extend_timeout(&self, by: Duration, status: &str) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.notify(&[
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status(status),
        ]);
    }
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
    pub fn start(app: AppState, notifier: Notifier) -> std::io::Result<Supervisor> {
        let watchdog = notifier.watchdog;
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
                        notifier.notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                    } else {
                        if watchdog.is_some() {
                            log::error!("the writer thread did not answer within {period:?}; not pinging the watchdog");
                        }
                        notifier.notify(&[NotifyState::Status(&status)]);
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
