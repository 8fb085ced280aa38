//! systemd integration: readiness, status, the watchdog, and stopping notices. It names
//! nothing else of the crate: what it reports is handed in as plain values, and what
//! decides when to report (`crate::serve`'s supervisor) lives with its one user.
//!
//! Where notices go is read from the environment once, by the process edge
//! ([`Notifier::from_env`]: `NOTIFY_SOCKET`, `WATCHDOG_USEC`), and handed to
//! [`crate::serve::serve`] as a value; a [`Notifier::none`] (tests, a program linking the
//! library) sends nothing. Everything here is a no-op when the daemon does not run under
//! systemd. Failures to notify are logged, never fatal: the game must not stop because the
//! service manager is unreachable.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;

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
    pub(crate) fn ready(&self, status: &str) {
        self.notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// The watchdog's period (`WatchdogSec`), if systemd asked for one.
    pub(crate) fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// STATUS=, refreshed.
    pub(crate) fn status(&self, status: &str) {
        self.notify(&[NotifyState::Status(status)]);
    }

    /// WATCHDOG=1 with a refreshed STATUS=: the daemon is alive and its writer answers.
    pub(crate) fn watchdog_alive(&self, status: &str) {
        self.notify(&[NotifyState::Watchdog, NotifyState::Status(status)]);
    }

    /// STOPPING=1, and more time for the final flush so systemd does not kill a save.
    pub(crate) fn stopping(&self, flush_budget: Duration) {
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
    pub(crate) fn extend_timeout(&self, by: Duration, status: &str) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.notify(&[
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status(status),
        ]);
    }
}
