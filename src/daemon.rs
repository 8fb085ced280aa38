//! The `galactic-war` command: the daemon and its maintenance subcommands.
//!
//! Serving: validate the environment (exit 78 naming a bad variable), start logging,
//! bind the game listener and the admin listener (an address in use stops start-up
//! before anything is created), open the database (or run from memory, degraded, when it
//! cannot be used), remove what backups killed mid-copy left in the backup directory,
//! serve, tell systemd, and
//! on SIGTERM/SIGINT stop taking requests, let in-flight ones finish, flush within the
//! shutdown timeout, and exit 0 only if everything was saved. A second signal during
//! shutdown exits at once.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::app::{AppError, AppState};
use crate::check::check_database;
use crate::http::listen::{bind_tcp, bind_unix};
use crate::http::metrics::HttpMetrics;
use crate::http::routes::{Api, Role};
use crate::http::server::{
    raise_open_files_limit, Endpoint, EndpointAddr, HttpServer, Limits, Listener,
};
use crate::persistence::backup::{backup_to, default_dir, prune, remove_unfinished};
use crate::persistence::metrics::PersistenceState;
use crate::persistence::store::StoreError;
use crate::settings::{AdminListen, DatabaseUrl, Settings};
use crate::systemd;

/// Exit statuses (sysexits.h).
pub const EX_OK: i32 = 0;
pub const EX_FAILURE: i32 = 1;
pub const EX_USAGE: i32 = 64;
pub const EX_CONFIG: i32 = 78;

const HELP: &str = "\
galactic-war: a real-time strategy game server whose state lives in memory and reaches
SQLite in the background.

Usage:
  galactic-war                                  serve the game over HTTP
  galactic-war check [--database URL]           integrity and consistency of a database
  galactic-war backup --to PATH [--database URL] online backup of a database file
  galactic-war --help | --version

backup writes PATH, never over an existing file; when PATH is a directory (or ends
in /) it writes galactic_war-YYYYMMDDTHHMMSSZ.db inside, as the daemon's backups do.
It prints the path written. check and backup only read the database, also beside a
running daemon, and leave no -wal/-shm files beside one nobody else has open.

Configuration comes from the environment:
  DATABASE_URL                          sqlite:PATH or sqlite::memory: (sqlite:galactic_war.db)
  GWAR_LISTEN                           HTTP address of the game (127.0.0.1:3050)
  GWAR_ADMIN_LISTEN                     HOST:PORT or unix:PATH of the admin calls, never
                                        exposed (127.0.0.1:3051)
  GWAR_MAX_CONNECTIONS                  game connections open at once; 503 past it (10000)
  GWAR_PERSISTENCE_ENABLED              true/false (true)
  GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL   seconds (30)
  GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT     seconds for the final flush (10)
  GWAR_PERSISTENCE_WRITE_COALESCING     true/false (true)
  GWAR_PERSISTENCE_COALESCING_DELAY_MS  batch window (1000)
  GWAR_PERSISTENCE_SYNCHRONOUS          normal or full (normal)
  GWAR_PERSISTENCE_MAX_UNSAVED_SECS     refuse orders past this unsaved age (unset)
  GWAR_ADMIN_TOKEN                      bearer token for admin calls (unset: none asked)
  GWAR_BACKUP_DIR                       where online backups go (backups/ beside the database)
  GWAR_BACKUP_INTERVAL                  seconds between automatic backups (unset: none)
  GWAR_BACKUP_KEEP                      automatic backups kept, newest first (7)
  GWAR_GALAXY_IDLE_SECS                 evict clean galaxies idle this long (unset: never)
  GWAR_MAX_GALAXY_SYSTEMS               largest galaxy a caller without the admin token
                                        may create (100000)
  GWAR_MAX_GALAXIES                     galaxies that may exist at once (10000)
  RUST_LOG                              log filter (info)
";

/// Connections the admin listener may hold open, beside `GWAR_MAX_CONNECTIONS`.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Runs the command line `args` (without the program name); the exit status.
pub fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        None => serve(),
        Some("--help" | "-h" | "help") => {
            print!("{HELP}");
            EX_OK
        }
        Some("--version" | "-V") => {
            println!("galactic-war {}", env!("CARGO_PKG_VERSION"));
            EX_OK
        }
        Some("backup") => backup_command(&args[1..]),
        Some("check") => check_command(&args[1..]),
        Some(other) => {
            eprintln!("galactic-war: unknown argument {other:?}; see galactic-war --help");
            EX_USAGE
        }
    }
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env).try_init();
}

/// `--flag VALUE` pairs of a subcommand; `None` (after printing `usage`) on anything else.
fn flags<'a>(
    command: &str,
    usage: &str,
    args: &'a [String],
    known: &[&str],
) -> Option<Vec<(&'a str, &'a str)>> {
    let mut found = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match rest.next() {
            Some(value) if known.contains(&arg.as_str()) => {
                found.push((arg.as_str(), value.as_str()))
            }
            _ => {
                eprintln!("galactic-war {command}: usage: {usage}");
                return None;
            }
        }
    }
    Some(found)
}

/// The database file of `--database URL`, or of `DATABASE_URL`; an exit status on error.
fn database_file(command: &str, flags: &[(&str, &str)]) -> Result<PathBuf, i32> {
    let url = match flags.iter().find(|(flag, _)| *flag == "--database") {
        Some((_, url)) => {
            DatabaseUrl::parse(url).map_err(|reason| format!("--database {url:?}: {reason}"))
        }
        None => Settings::from_env()
            .map(|s| s.database)
            .map_err(|e| e.to_string()),
    };
    match url {
        Ok(DatabaseUrl::File(path)) if path.exists() => Ok(path),
        Ok(DatabaseUrl::File(path)) => {
            eprintln!("galactic-war {command}: no database at {}", path.display());
            Err(EX_FAILURE)
        }
        Ok(DatabaseUrl::Memory) => {
            eprintln!("galactic-war {command}: an in-memory database has no file to work on");
            Err(EX_USAGE)
        }
        Err(message) => {
            eprintln!("galactic-war {command}: {message}");
            Err(EX_CONFIG)
        }
    }
}

/// `check [--database URL]`: prints what it found; 0 only when every check holds.
fn check_command(args: &[String]) -> i32 {
    let Some(flags) = flags("check", "check [--database URL]", args, &["--database"]) else {
        return EX_USAGE;
    };
    let path = match database_file("check", &flags) {
        Ok(path) => path,
        Err(status) => return status,
    };
    println!("database: {}", path.display());
    match check_database(&path) {
        Ok(report) => {
            for line in &report.lines {
                println!("{line}");
            }
            for problem in &report.problems {
                println!("PROBLEM: {problem}");
            }
            if report.passed() {
                println!("all checks passed");
                EX_OK
            } else {
                println!("{} problem(s) found", report.problems.len());
                EX_FAILURE
            }
        }
        Err(error) => {
            println!("PROBLEM: the database cannot be read: {error}");
            EX_FAILURE
        }
    }
}

/// `backup --to PATH [--database URL]`.
fn backup_command(args: &[String]) -> i32 {
    let usage = "backup --to PATH [--database URL]";
    let Some(flags) = flags("backup", usage, args, &["--to", "--database"]) else {
        return EX_USAGE;
    };
    let Some(&(_, to)) = flags.iter().find(|(flag, _)| *flag == "--to") else {
        eprintln!("galactic-war backup: --to PATH is required");
        return EX_USAGE;
    };
    let source = match database_file("backup", &flags) {
        Ok(path) => path,
        Err(status) => return status,
    };
    match backup_to(&source, Path::new(to), SystemTime::now()) {
        Ok(written) => {
            println!("{}", written.display());
            EX_OK
        }
        Err(error) => {
            eprintln!("galactic-war backup: {error}");
            EX_FAILURE
        }
    }
}

fn serve() -> i32 {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("galactic-war: {error}");
            return EX_CONFIG;
        }
    };
    init_logging();
    // Before the database: a taken port must stop start-up having created nothing.
    let Some(game_listener) = bind(settings.listen, "the game", "GWAR_LISTEN") else {
        return EX_FAILURE;
    };
    let admin_listener = match &settings.admin_listen {
        AdminListen::Tcp(addr) => match bind(*addr, "admin calls", "GWAR_ADMIN_LISTEN") {
            Some(listener) => Listener::Tcp(listener),
            None => return EX_FAILURE,
        },
        AdminListen::Unix(path) => match bind_unix(path) {
            Ok(listener) => Listener::Unix(listener),
            Err(error) => {
                log::error!("cannot listen for admin calls (GWAR_ADMIN_LISTEN): {error}; nothing was started");
                return EX_FAILURE;
            }
        },
    };
    let app = match AppState::open(&settings) {
        Ok(app) => app,
        Err(error @ (StoreError::InUse { .. } | StoreError::NewerSchema { .. })) => {
            log::error!("{error}");
            return EX_FAILURE;
        }
        Err(error) => {
            // The seed's rule: never delete or overwrite what we cannot read; keep serving.
            log::error!("cannot use the database, running from memory only (nothing will be saved): {error}");
            AppState::without_engine(PersistenceState::MemoryOnly, Some(error.to_string()))
        }
    };
    remove_unfinished_backups(&settings);
    let http_metrics = Arc::new(HttpMetrics::default());
    let api = Api::new(
        app.clone(),
        http_metrics.clone(),
        settings.admin_token.clone(),
        settings.backup_dir.clone(),
    )
    .with_max_public_systems(settings.galaxy_limits.max_public_systems);
    raise_open_files_limit(settings.max_connections);
    let limits = Limits {
        max_connections: settings.max_connections,
        ..Limits::default()
    };
    // One poller and one pool of workers for both listeners: admin calls are rare.
    let endpoints = vec![
        Endpoint {
            listener: Listener::Tcp(game_listener),
            handler: Arc::new(api.clone()),
            own_max_connections: None,
        },
        // A cap of its own: players filling GWAR_MAX_CONNECTIONS never lock the operator out.
        Endpoint {
            listener: admin_listener,
            handler: Arc::new(api.with_role(Role::Admin)),
            own_max_connections: Some(ADMIN_MAX_CONNECTIONS),
        },
    ];
    let server = match HttpServer::start(endpoints, limits, http_metrics) {
        Ok(server) => server,
        Err(error) => {
            log::error!("cannot start the HTTP server: {error}");
            app.shutdown();
            return EX_FAILURE;
        }
    };
    match server.addresses().get(1) {
        Some(EndpointAddr::Tcp(addr)) => log::info!("admin on http://{addr}"),
        Some(EndpointAddr::Unix(path)) => log::info!("admin on unix:{}", path.display()),
        None => {}
    }
    log::info!("listening on http://{}", server.local_addr());

    let (signals, signalled) = crossbeam_channel::bounded::<()>(1);
    let count = AtomicUsize::new(0);
    let handler = move || {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            log::info!("signal received: shutting down (send another to exit at once)");
            let _ = signals.try_send(());
        } else {
            log::warn!("second signal: exiting at once; unsaved changes are lost");
            std::process::exit(EX_FAILURE);
        }
    };
    if let Err(error) = ctrlc::set_handler(handler) {
        log::error!("cannot install signal handlers: {error}");
    }
    systemd::ready(&app);
    let supervisor = systemd::Supervisor::start(app.clone()).ok();
    let backups = settings.backup_interval.map(|every| {
        BackupSchedule::start(
            app.clone(),
            settings.backup_dir.clone(),
            every,
            settings.backup_keep,
        )
    });

    let _ = signalled.recv();
    let flush_budget = settings.persistence.shutdown_timeout + Duration::from_secs(15);
    systemd::stopping(flush_budget);
    // A creation in progress would hold its request, and so the server's shutdown, for
    // as long as it takes to write (minutes at 10 M systems): stop it first.
    app.stop_creating();
    server.shutdown();
    if let AdminListen::Unix(path) = &settings.admin_listen {
        // Ours, and no one listens on it any more.
        let _ = std::fs::remove_file(path);
    }
    if let Some(supervisor) = supervisor {
        supervisor.stop();
    }
    if let Some(backups) = backups {
        backups.stop();
    }
    finish(&app)
}

/// Binds the listener of `what`, configured by `variable`; `None` after logging why not.
fn bind(addr: SocketAddr, what: &str, variable: &str) -> Option<TcpListener> {
    match bind_tcp(addr) {
        Ok(listener) => Some(listener),
        Err(error) => {
            log::error!(
                "cannot listen on {addr} for {what} ({variable}): {error}; nothing was started"
            );
            None
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
        (None, DatabaseUrl::Memory) => return,
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
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl BackupSchedule {
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

/// The final flush and the exit status it earns.
fn finish(app: &AppState) -> i32 {
    let report = app.shutdown();
    for (galaxy, systems) in &report.unsaved {
        log::error!("galaxy '{galaxy}': {systems} systems were not saved");
    }
    for galaxy in &report.unsaved_deletions {
        log::error!("galaxy '{galaxy}': its deletion was not saved");
    }
    if app.health().persistence.state == PersistenceState::MemoryOnly {
        let galaxies: Vec<String> = app
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.name)
            .collect();
        if !galaxies.is_empty() {
            log::error!(
                "running from memory only: galaxies lost at exit: {}",
                galaxies.join(", ")
            );
            return EX_FAILURE;
        }
    }
    if report.all_saved() {
        log::info!("shutdown complete: everything saved");
        EX_OK
    } else {
        log::error!(
            "shutdown incomplete: {} galaxies with unsaved systems ({})",
            report.unsaved.len(),
            report.error.map_or_else(String::new, |e| e.to_string())
        );
        EX_FAILURE
    }
}
