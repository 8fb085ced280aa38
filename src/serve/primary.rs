//! Start-up while a PostgreSQL `DATABASE_URL`'s servers answer only as standbys (a
//! failover under way): trying again every second, and meanwhile answering on the
//! listeners with [`Starting`] (`/healthz` degraded, everything else 503), telling the
//! log and systemd why. Every wait here ends at the shutdown token or the next try.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Listeners, Shutdown, ADMIN_MAX_CONNECTIONS};
use crate::app::AppState;
use crate::http::message::{Endpoint, Handler, Limits, Listener};
use crate::http::server::HttpServer;
use crate::http::starting::Starting;
use crate::settings::Settings;
use crate::store::StoreError;
use crate::systemd::Notifier;

/// Opens the application's state; while the PostgreSQL servers of `DATABASE_URL` answer
/// but none as a primary (a failover under way), tries again every [`PRIMARY_RETRY`],
/// saying so in the log, to systemd and on `listeners` (`/healthz` degraded, everything
/// else 503: the daemon has nothing to serve before it can read the database), until
/// one is or `shutdown` fires (`None`).
pub(super) fn open_waiting_for_primary(
    settings: &Settings,
    listeners: &Listeners,
    shutdown: &Shutdown,
    systemd: &Notifier,
) -> Option<Result<AppState, StoreError>> {
    let started = Instant::now();
    let mut logged: Option<Instant> = None;
    let mut interim: Option<(HttpServer, Arc<Starting>)> = None;
    let outcome = loop {
        let (error, round_within) = match AppState::open_notifying(settings, systemd) {
            Err(error @ StoreError::NoPrimary { round_within, .. }) => (error, round_within),
            result => break Some(result),
        };
        let status = format!("waiting for a read-write PostgreSQL server: {error}");
        if logged.is_none_or(|at| at.elapsed() >= PRIMARY_LOG_EVERY) {
            log::warn!("{status}; trying again every {PRIMARY_RETRY:?} (answering 503 meanwhile)");
            logged = Some(Instant::now());
        }
        match &interim {
            Some((_, starting)) => starting.set_reason(status.clone()),
            None => interim = serve_while_starting(settings, listeners, &status),
        }
        // Past systemd's start timeout as long as we wait: the next try's bound and then
        // some (a frozen host costs a call timeout per connect).
        systemd.extend_timeout(PRIMARY_RETRY + round_within + PRIMARY_RETRY * 10, &status);
        if shutdown.wait_for(PRIMARY_RETRY) {
            log::info!(
                "stopped while waiting for a read-write PostgreSQL server; nothing was held"
            );
            break None;
        }
    };
    if let Some((server, _)) = interim {
        // Its answers are immediate: a second is plenty.
        server.shutdown_within(Some(Duration::from_secs(1)));
    }
    if logged.is_some() && outcome.as_ref().is_some_and(Result::is_ok) {
        log::info!(
            "a read-write PostgreSQL server answered after {:?}",
            started.elapsed()
        );
    }
    outcome
}

/// Serves [`Starting`]'s answers on copies of `listeners` (the same sockets) while start-up
/// waits; `None`, logged, when it cannot (start-up then waits without answering).
fn serve_while_starting(
    settings: &Settings,
    listeners: &Listeners,
    reason: &str,
) -> Option<(HttpServer, Arc<Starting>)> {
    let starting = Arc::new(Starting::new(reason.to_owned()));
    let handler: Arc<dyn Handler> = starting.clone();
    let endpoints = || -> std::io::Result<Vec<Endpoint>> {
        let admin = match &listeners.admin {
            Listener::Tcp(listener) => Listener::Tcp(listener.try_clone()?),
            Listener::Unix(listener) => Listener::Unix(listener.try_clone()?),
        };
        Ok(vec![
            Endpoint {
                listener: Listener::Tcp(listeners.game.try_clone()?),
                handler: handler.clone(),
                own_max_connections: None,
            },
            Endpoint {
                listener: admin,
                handler: handler.clone(),
                own_max_connections: Some(ADMIN_MAX_CONNECTIONS),
            },
        ])
    };
    let limits = Limits {
        max_connections: settings.max_connections,
        ..Limits::default()
    };
    let started =
        endpoints().and_then(|endpoints| HttpServer::start(endpoints, limits, Arc::default()));
    match started {
        Ok(server) => Some((server, starting)),
        Err(error) => {
            log::error!("cannot answer requests while start-up waits: {error}");
            None
        }
    }
}

/// How often start-up tries again while no server of the URL is a primary.
const PRIMARY_RETRY: Duration = Duration::from_secs(1);
/// How often, meanwhile, the log says so again.
const PRIMARY_LOG_EVERY: Duration = Duration::from_secs(30);
