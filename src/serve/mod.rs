//! Serving the game, from bound listeners to a shutdown report: [`serve`].
//!
//! The process edge (`crate::cli`, the way mini-redis's `bin/server.rs` calls its
//! `server::run`) reads the settings, starts logging, binds the listeners, raises the
//! open-files limit and installs the signal handlers; then it hands everything to
//! [`serve`] with a [`Shutdown`] token and turns what comes back into an exit status.
//! [`serve`] owns no process-wide state: it reads no environment variable, installs no
//! signal handler, never exits the process, and leaves nothing behind when it returns, so
//! a test (or a program linking the library) can run it in-process, even twice in a row
//! on the same database.
//!
//! What it does: open the database (or run from memory, degraded, when it cannot be used;
//! a database another daemon holds, or a newer one, stops start-up instead), remove what
//! backups killed mid-copy left in the backup directory, serve both listeners, tell systemd
//! (through the [`Notifier`] it is given: readiness, then a status line and the watchdog's
//! pings from a supervisor thread while the writer answers), run the periodic backups;
//! and once the token
//! fires, stop taking requests, let in-flight ones finish, flush within the shutdown
//! timeout and report what was not saved.
//!
//! Exit statuses (sysexits.h) are decided here, by the types: [`StartError::exit_code`]
//! and [`ShutdownReport::exit_code`].

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::app::{self, AppError, AppState, PersistenceState, StoreFailure};
use crate::http::message::{Endpoint, EndpointAddr, Limits};
use crate::http::metrics::HttpMetrics;
use crate::http::origin::AdminOrigin;
use crate::http::routes::{Api, Role};
use crate::http::server::HttpServer;
use crate::persistence::backup::{default_dir, prune, remove_unfinished};
use crate::settings::{DatabaseUrl, Settings, SettingsError};
use crate::store::StoreError;

// What a caller of `serve` hands it or gets back from it.
pub use crate::http::listen::UnixBindError;
pub use crate::http::message::Listener;
pub use crate::systemd::Notifier;
use archiver::ArchiveSchedule;
use primary::open_waiting_for_primary;

mod archiver;
mod primary;

/// Exit statuses (sysexits.h).
pub const EX_OK: i32 = 0;
pub const EX_FAILURE: i32 = 1;
pub const EX_USAGE: i32 = 64;
pub const EX_CONFIG: i32 = 78;

/// Connections the admin listener may hold open, beside `GWAR_MAX_CONNECTIONS`.
pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Why the daemon did not start; each kind has its exit status. Nothing a player could
/// see was started when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A variable of the environment does not parse (README, *Configuration*: exit 78).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// An address is taken or not ours to bind; before the database is opened, so a
    /// taken port stops start-up having created nothing.
    #[error("cannot listen on {addr} for {what} ({variable}): {source}; nothing was started")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        variable: &'static str,
        source: std::io::Error,
    },
    #[error("cannot listen for admin calls (GWAR_ADMIN_LISTEN): {0}; nothing was started")]
    ListenUnix(#[from] UnixBindError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[from] ctrlc::Error),
    /// The database cannot be served by this daemon and must not be run around (another
    /// daemon holds it, or a newer binary wrote it). Any other database error leaves the
    /// daemon running from memory, degraded.
    #[error(transparent)]
    Database(StoreFailure),
    #[error("cannot start the HTTP server: {0}")]
    Http(std::io::Error),
}

impl StartError {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Settings(_) => EX_CONFIG,
            StartError::Listen { .. }
            | StartError::ListenUnix(_)
            | StartError::Signals(_)
            | StartError::Database(_)
            | StartError::Http(_) => EX_FAILURE,
        }
    }

    /// Whether the database's error at start-up stops the daemon (`Err`), or leaves it
    /// running from memory (`Ok`, with the error to report). The seed's rule: never
    /// delete or overwrite what we cannot read, keep serving; but a database another
    /// daemon serves, or one from a newer binary, is not ours to run beside.
    fn from_open(error: StoreError) -> Result<StoreError, StartError> {
        match error {
            // PostgreSQL: a server that cannot be reached (yet) is no damaged file to
            // keep serving beside; exiting lets the supervisor start again later.
            StoreError::InUse { .. }
            | StoreError::OlderDaemon { .. }
            | StoreError::NewerSchema { .. }
            | StoreError::PostgresConnect { .. } => Err(StartError::Database(error.failure())),
            other => Ok(other),
        }
    }
}

/// Fires a [`Shutdown`]; cloned freely (a signal handler holds one).
#[derive(Clone, Debug)]
pub struct ShutdownTrigger(Sender<()>);

impl ShutdownTrigger {
    /// Asks the server to stop; later calls change nothing.
    pub fn trigger(&self) {
        let _ = self.0.try_send(());
    }
}

/// What [`serve`] waits for before it stops: a [`ShutdownTrigger`] firing, or every
/// trigger being dropped (nobody is left who could stop it otherwise).
#[derive(Debug)]
pub struct Shutdown(Receiver<()>);

impl Shutdown {
    /// A token and the trigger that fires it.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (send, receive) = crossbeam_channel::bounded(1);
        (ShutdownTrigger(send), Shutdown(receive))
    }

    fn wait(self) {
        let _ = self.0.recv();
    }

    /// Waits up to `timeout`; true when the token fired (it stays fired).
    fn wait_for(&self, timeout: Duration) -> bool {
        !matches!(
            self.0.recv_timeout(timeout),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        )
    }
}

/// The sockets [`serve`] answers on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// `GWAR_LISTEN`: the players'.
    pub game: TcpListener,
    /// `GWAR_ADMIN_LISTEN`: the operator's (TCP, or a Unix socket the caller removes after
    /// [`serve`] returns: it bound it).
    pub admin: Listener,
}

/// What a stopped server left unsaved.
#[derive(Debug)]
pub struct ShutdownReport {
    /// The final flush's report: galaxies with unsaved systems, unsaved deletions, and
    /// the error that stopped the flush.
    pub flush: app::FlushReport,
    /// Galaxies that lived in memory only (the database could not be used at start-up)
    /// and are lost with the process.
    pub lost: Vec<String>,
}

impl ShutdownReport {
    /// A stop before the database was opened: nothing held, so nothing unsaved.
    fn nothing_held() -> ShutdownReport {
        ShutdownReport {
            flush: app::FlushReport::default(),
            lost: Vec::new(),
        }
    }

    /// Everything the game held reached the database.
    pub fn all_saved(&self) -> bool {
        self.flush.all_saved() && self.lost.is_empty()
    }

    /// The process's exit status: 0 only when everything was saved (README, *What is guaranteed, in plain words*).
    pub fn exit_code(&self) -> i32 {
        if self.all_saved() {
            EX_OK
        } else {
            EX_FAILURE
        }
    }
}

/// `settings`, with the advertised URL on the port the game's listener was given when
/// `GWAR_LISTEN` asked for port 0 and `GWAR_ADVERTISE_URL` was left to its default
/// (`http://` + `GWAR_LISTEN`): other daemons must send players to the real port.
fn advertise_bound_port(settings: &Settings, game: &TcpListener) -> Settings {
    let mut settings = settings.clone();
    let default = format!("http://{}", settings.listen);
    if settings.listen.port() == 0 && settings.persistence.advertise_url == default {
        if let Ok(bound) = game.local_addr() {
            settings.persistence.advertise_url = format!("http://{bound}");
        }
    }
    settings
}

/// Serves the game on `listeners` until `shutdown` fires, then stops and flushes; see the
/// module doc. `systemd` is told of readiness, status, the watchdog and stopping
/// ([`Notifier::none`] when nobody listens).
pub fn serve(
    settings: &Settings,
    listeners: Listeners,
    shutdown: Shutdown,
    systemd: &Notifier,
) -> Result<ShutdownReport, StartError> {
    let settings = &advertise_bound_port(settings, &listeners.game);
    let app = match open_waiting_for_primary(settings, &listeners, &shutdown, systemd) {
        Some(Ok(app)) => app,
        Some(Err(error)) => {
            let error = StartError::from_open(error)?;
            log::error!("cannot use the database, running from memory only (nothing will be saved): {error}");
            AppState::without_engine(PersistenceState::MemoryOnly, Some(error.to_string()))
        }
        // Stopped before anything was opened: nothing was held, nothing is lost.
        None => return Ok(ShutdownReport::nothing_held()),
    };
    remove_unfinished_backups(settings);
    let http_metrics = Arc::new(HttpMetrics::default());
    let api = Api::new(
        app.clone(),
        http_metrics.clone(),
        settings.admin_token.clone(),
        settings.backup_dir.clone(),
    )
    .with_max_public_systems(settings.galaxy_limits.max_public_systems);
    let limits = Limits {
        max_connections: settings.max_connections,
        ..Limits::default()
    };
    let admin_origin =
        match AdminOrigin::for_listener(&listeners.admin, settings.admin_hosts.clone()) {
            Ok(origin) => origin,
            Err(error) => {
                app.shutdown();
                return Err(StartError::Http(error));
            }
        };
    // One poller for both listeners; the admin listener has workers of its own beside
    // the game's pool, as it has its own connection cap.
    let endpoints = vec![
        Endpoint {
            listener: Listener::Tcp(listeners.game),
            handler: Arc::new(api.clone()),
            own_max_connections: None,
        },
        // A cap and workers of its own: players filling GWAR_MAX_CONNECTIONS, or holding
        // every worker of the game's pool, never lock the operator out.
        Endpoint {
            listener: listeners.admin,
            handler: Arc::new(api.with_role(Role::Admin).with_admin_origin(admin_origin)),
            own_max_connections: Some(ADMIN_MAX_CONNECTIONS),
        },
    ];
    let server = match HttpServer::start(endpoints, limits, http_metrics) {
        Ok(server) => server,
        Err(error) => {
            app.shutdown();
            return Err(StartError::Http(error));
        }
    };
    match server.addresses().get(1) {
        Some(EndpointAddr::Tcp(addr)) => log::info!("admin on http://{addr}"),
        Some(EndpointAddr::Unix(path)) => log::info!("admin on unix:{}", path.display()),
        None => {}
    }
    log::info!("listening on http://{}", server.local_addr());

    systemd.ready(&status_line(&app));
    let supervisor = Supervisor::start(app.clone(), systemd.clone()).ok();
    let backups = BackupSchedule::from_settings(settings, &app);
    let archiver = settings.persistence.archive_after.and_then(|idle| {
        ArchiveSchedule::start(app.clone(), idle)
            .map_err(|error| log::error!("cannot start automatic archiving: {error}"))
            .ok()
    });

    shutdown.wait();
    let timeout = settings.persistence.shutdown_timeout;
    let stop_began = Instant::now();
    systemd.stopping(timeout + Duration::from_secs(15));
    // A creation in progress would hold its request, and so the server's shutdown, for
    // as long as it takes to write (minutes at 10 M systems): stop it first.
    app.stop_creating();
    // After it: no archive is begun from now on, so the one in hand is the last.
    if let Some(archiver) = archiver {
        archiver.stop();
    }
    // Requests in flight get at most half the timeout (one waiting on a database that
    // does not answer is left behind), the final flush the rest: the stop as a whole
    // keeps to the timeout whatever the network does.
    server.shutdown_within(Some(timeout / 2));
    if let Some(supervisor) = supervisor {
        supervisor.stop();
    }
    if let Some(backups) = backups {
        backups.stop();
    }
    Ok(finish(&app, timeout.saturating_sub(stop_began.elapsed())))
}

/// systemd's STATUS= line: what is loaded, and how persistence is doing.
fn status_line(app: &AppState) -> String {
    let health = app.health();
    format!(
        "{} galaxies loaded; persistence {}; {} unsaved systems",
        app.galaxies_loaded(),
        health.persistence.state.as_str(),
        health.persistence.dirty_systems
    )
}

/// A thread that refreshes systemd's STATUS= and, when `WatchdogSec` is set, sends
/// WATCHDOG=1 — but only while the writer thread answers a ping, so a stalled writer gets
/// the daemon restarted instead of silently losing saves.
/// How long a stop waits for the supervisor's thread: it looks at its flag every 50 ms
/// unless a ping is stuck on the writer.
const SUPERVISOR_STOP: Duration = Duration::from_secs(1);

struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread ends (it holds the sender).
    ended: crossbeam_channel::Receiver<()>,
}

impl Supervisor {
    fn start(app: AppState, notifier: Notifier) -> std::io::Result<Supervisor> {
        let watchdog = notifier.watchdog();
        let period = watchdog.map_or(Duration::from_secs(10), |w| {
            (w / 2).max(Duration::from_millis(100))
        });
        if let Some(w) = watchdog {
            log::info!(target: crate::logging::SYSTEMD, "systemd watchdog enabled ({w:?}); pinging every {period:?}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (alive, ended) = crossbeam_channel::bounded::<()>(0);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new().name("gwar-supervisor".into()).spawn(move || {
                let _alive = alive;
                while !stop.load(Ordering::SeqCst) {
                    let writer_alive = app.writer().is_none_or(|w| w.ping(period));
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let status = status_line(&app);
                    if watchdog.is_some() && writer_alive {
                        notifier.watchdog_alive(&status);
                    } else {
                        if watchdog.is_some() {
                            log::error!(target: crate::logging::SYSTEMD, "the writer thread did not answer within {period:?}; not pinging the watchdog");
                        }
                        notifier.status(&status);
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
            ended,
        })
    }

    /// Stops the pings, waiting for the thread at most [`SUPERVISOR_STOP`]: it may be
    /// inside a ping that waits on a writer stuck in a database call (for as long as its
    /// period, 10 s without a watchdog), which must not hold up the stop; then it is left
    /// behind, sends nothing after the flag is set, and ends at its next look at it.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
            self.ended.recv_timeout(SUPERVISOR_STOP)
        {
            let _ = thread.join();
        }
    }
}

/// Removes what backups killed mid-copy left in the backup directory (see
/// [`remove_unfinished`] for what counts as ours and what is spared), before any backup
/// of this process can start. Logged either way; a failure here stops nothing.
fn remove_unfinished_backups(settings: &Settings) {
    let dir = match (&settings.backup_dir, &settings.database) {
        (Some(dir), _) => dir.clone(),
        (None, DatabaseUrl::File(database)) => default_dir(database),
        (None, DatabaseUrl::Memory | DatabaseUrl::Postgres(_)) => return,
    };
    match remove_unfinished(&dir) {
        Ok(found) => {
            for path in &found.removed {
                log::info!(
                    "removed an unfinished backup left by a crash: {}",
                    path.display()
                );
            }
            for (path, pid) in &found.kept {
                log::info!(
                    "left {} alone: process {pid}, a running galactic-war, may be writing it",
                    path.display()
                );
            }
        }
        Err(error) => log::warn!(
            "could not look for unfinished backups in {}: {error}",
            dir.display()
        ),
    }
}

/// Periodic backups (`GWAR_BACKUP_INTERVAL`), keeping the newest `GWAR_BACKUP_KEEP`, on a
/// thread of their own: a backup reads through its own connection and never holds up the
/// writer or a player.
struct BackupSchedule {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl BackupSchedule {
    /// The schedule `GWAR_BACKUP_INTERVAL` asks for, if any (never on PostgreSQL).
    fn from_settings(settings: &Settings, app: &AppState) -> Option<BackupSchedule> {
        let every = match (&settings.database, settings.backup_interval) {
            (DatabaseUrl::Postgres(_), Some(_)) => {
                log::warn!(
                    "GWAR_BACKUP_INTERVAL is ignored: PostgreSQL is backed up with its own \
                     tools (pg_dump, pg_basebackup), not by this daemon"
                );
                None
            }
            (_, interval) => interval,
        }?;
        Some(BackupSchedule::start(
            app.clone(),
            settings.backup_dir.clone(),
            every,
            settings.backup_keep,
        ))
    }

    fn start(app: AppState, dir: Option<PathBuf>, every: Duration, keep: usize) -> BackupSchedule {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(every)
            {
                match app.backup(dir.as_deref()) {
                    Ok(path) => {
                        let pruned = path.parent().map(|dir| prune(dir, keep));
                        if let Some(Err(error)) = pruned {
                            log::warn!("could not prune old backups: {error}");
                        }
                    }
                    // The backup running (one asked for over HTTP) is as fresh as ours
                    // would be; the next turn prunes.
                    Err(AppError::BackupInProgress) => {
                        log::info!("periodic backup skipped: another backup is running")
                    }
                    Err(error) => log::error!("periodic backup failed: {error}"),
                }
            }
        });
        BackupSchedule { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The final flush, logged: every galaxy left unsaved by name.
fn finish(app: &AppState, budget: Duration) -> ShutdownReport {
    let flush = app.shutdown_within(Some(budget));
    for (galaxy, systems) in &flush.unsaved {
        log::error!("galaxy '{galaxy}': {systems} systems were not saved");
    }
    for galaxy in &flush.unsaved_deletions {
        log::error!("galaxy '{galaxy}': its deletion was not saved");
    }
    for (galaxy, systems) in &flush.lost {
        match systems {
            0 => log::error!("galaxy '{galaxy}': taken by another daemon; its unsaved deletion here was dropped"),
            _ => log::error!("galaxy '{galaxy}': taken by another daemon; its {systems} unsaved systems here were dropped"),
        }
    }
    let mut lost = Vec::new();
    if app.health().persistence.state == PersistenceState::MemoryOnly {
        lost = app
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.name)
            .collect();
        if !lost.is_empty() {
            log::error!(
                "running from memory only: galaxies lost at exit: {}",
                lost.join(", ")
            );
        }
    }
    if flush.all_saved() && lost.is_empty() {
        log::info!("shutdown complete: everything saved");
    } else if !flush.all_saved() {
        log::error!(
            "shutdown incomplete: {} galaxies with unsaved systems, {} lost to another daemon with unsaved changes ({})",
            flush.unsaved.len(),
            flush.lost.len(),
            flush
                .error
                .as_ref()
                .map_or_else(String::new, |e| e.to_string())
        );
    }
    ShutdownReport { flush, lost }
}
