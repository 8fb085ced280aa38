//! The `galactic-war` command: the process edge of the daemon, and its maintenance
//! subcommands.
//!
//! Serving ([`main`] without arguments), as mini-redis's `bin/server.rs` draws it: read the
//! settings (exit 78 naming a bad variable), start logging, bind the game listener and the
//! admin listener (an address in use stops start-up before anything is created), raise the
//! open-files limit, install the signal handlers, then hand all of it to
//! [`crate::serve::serve`], which serves until the first SIGTERM/SIGINT and returns what
//! the final flush left unsaved. Everything that belongs to the process rather than to the
//! server lives here and only here: the environment, the logger, the signal handlers, the
//! open-files limit, the admin socket's file, and `process::exit`: a second signal during
//! shutdown exits at once. Exit statuses come from the types ([`StartError::exit_code`],
//! [`crate::serve::ShutdownReport::exit_code`]), never from matching errors here.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::check::{check_database, check_postgres};
use crate::http::listen::{bind_tcp, bind_unix};
use crate::http::message::Listener;
use crate::http::server::raise_open_files_limit;
use crate::persistence::backup::backup_to;
use crate::serve::{
    serve, Listeners, Shutdown, StartError, EX_CONFIG, EX_FAILURE, EX_OK, EX_USAGE,
};
use crate::settings::{postgres_label, AdminListen, DatabaseUrl, Settings};
use crate::systemd::Notifier;

const HELP: &str = "\
galactic-war: a real-time strategy game server whose state lives in memory and reaches
SQLite in the background.

Usage:
  galactic-war                                  serve the game over HTTP
  galactic-war check [--database URL]           integrity and consistency of a database
  galactic-war backup --to PATH [--database URL] online backup of a database file
  galactic-war export NAME... --out DIR [--database URL]
  galactic-war export --all --out DIR [--database URL]
                                                one archive file per galaxy, DIR/NAME.gwar
  galactic-war import FILE... [--replace] [--database URL]
                                                archive files into the database
  galactic-war --help | --version

backup writes PATH, never over an existing file; when PATH is a directory (or ends
in /) it writes galactic_war-YYYYMMDDTHHMMSSZ.db inside, as the daemon's backups do.
It prints the path written. check and backup only read the database, also beside a
running daemon, and leave no -wal/-shm files beside one nobody else has open.

export reads what the database holds (beside a running daemon too: what it has saved),
never writes over an existing file, and writes each file whole. import refuses a galaxy
that exists unless --replace, and then one a running daemon owns (PostgreSQL); into an
SQLite file it runs only while no daemon serves it. export --all, then import with
DATABASE_URL=postgres://..., moves every galaxy from SQLite to PostgreSQL (or back).

Configuration comes from the environment:
  DATABASE_URL                          sqlite:PATH or sqlite::memory: (sqlite:galactic_war.db),
                                        or postgres://USER@HOST:PORT[,HOST2:PORT2]/DB
                                        (several hosts: the read-write one is used)
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
  GWAR_PERSISTENCE_MAX_STALL_MS         refuse orders while writes fail or hang this long,
                                        or off (PostgreSQL: a fifth of the lease; SQLite: off)
  GWAR_DB_CALL_TIMEOUT_SECS             PostgreSQL: abandon a call unanswered this long (5)
  GWAR_ADMIN_TOKEN                      bearer token for admin calls (unset: none asked)
  GWAR_ADMIN_HOSTS                      host or host:port names the admin listener also
                                        answers to, comma-separated (unset: its own only)
  GWAR_BACKUP_DIR                       where online backups go (backups/ beside the database)
  GWAR_BACKUP_INTERVAL                  seconds between automatic backups (unset: none)
  GWAR_BACKUP_KEEP                      automatic backups kept, newest first (7)
  GWAR_GALAXY_IDLE_SECS                 evict clean galaxies idle this long (unset: never)
  GWAR_ARCHIVE_AFTER_SECS               archive galaxies unchanged and unread this long
                                        (unset: only an admin archives)
  GWAR_ARCHIVE_RESTORE                  demand (a request restores an archived galaxy) or
                                        explicit (only POST /admin/galaxies/NAME/restore)
  GWAR_HISTORY                          save every order and completed build (true)
  GWAR_HISTORY_KEEP_SECS                delete history older than this (2592000), or forever
  GWAR_SLOW_QUERY_MS                    log store calls slower than this (1000), or off
  GWAR_MAX_GALAXY_SYSTEMS               largest galaxy a caller without the admin token
                                        may create (100000)
  GWAR_MAX_GALAXIES                     galaxies that may exist at once (10000)
  GWAR_MAX_TOTAL_SYSTEMS                systems of all galaxies past which creation without
                                        the admin token is refused (half the memory, 160 B each)
  GWAR_MIN_FREE_DISK                    bytes (or 512M, 2G) the database's filesystem keeps
                                        free past creations without the admin token (1G)
  RUST_LOG                              log filter (info)
";

/// Runs the `galactic-war` command line `args` (without the program name) and returns the
/// process's exit status: with no arguments the daemon, configured from the environment,
/// serving until SIGTERM or SIGINT; `check`, `backup`, `export`, `import`, `--help` and
/// `--version` otherwise.
/// It installs signal handlers and a logger, so it is for a program's `main` only: a
/// program that embeds the game opens an [`crate::app::AppState`] or calls
/// [`crate::serve::serve`] instead.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        None => daemon(),
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
        Some("export") => crate::port::export_command(&args[1..]),
        Some("import") => crate::port::import_command(&args[1..]),
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

/// The database of `--database URL`, or of `DATABASE_URL`; an exit status on error.
fn database_url(command: &str, flags: &[(&str, &str)]) -> Result<DatabaseUrl, i32> {
    let url = match flags.iter().find(|(flag, _)| *flag == "--database") {
        Some((_, url)) => {
            DatabaseUrl::parse(url).map_err(|reason| format!("--database {url:?}: {reason}"))
        }
        None => Settings::from_env()
            .map(|s| s.database)
            .map_err(|e| e.to_string()),
    };
    url.map_err(|message| {
        eprintln!("galactic-war {command}: {message}");
        EX_CONFIG
    })
}

/// The database file of `--database URL`, or of `DATABASE_URL`; an exit status on error.
fn database_file(command: &str, url: DatabaseUrl) -> Result<PathBuf, i32> {
    match url {
        DatabaseUrl::File(path) if path.exists() => Ok(path),
        DatabaseUrl::File(path) => {
            eprintln!("galactic-war {command}: no database at {}", path.display());
            Err(EX_FAILURE)
        }
        DatabaseUrl::Memory => {
            eprintln!("galactic-war {command}: an in-memory database has no file to work on");
            Err(EX_USAGE)
        }
        DatabaseUrl::Postgres(_) => {
            eprintln!(
                "galactic-war {command}: {} is a PostgreSQL database, which has no file to \
                 work on; back it up with PostgreSQL's own tools (pg_dump, pg_basebackup)",
                url.label()
            );
            Err(EX_USAGE)
        }
    }
}

/// `check [--database URL]`: prints what it found; 0 only when every check holds.
fn check_command(args: &[String]) -> i32 {
    let Some(flags) = flags("check", "check [--database URL]", args, &["--database"]) else {
        return EX_USAGE;
    };
    let url = match database_url("check", &flags) {
        Ok(url) => url,
        Err(status) => return status,
    };
    let checked = match url {
        DatabaseUrl::Postgres(url) => {
            println!("database: {}", postgres_label(&url));
            check_postgres(&url).map_err(|error| error.to_string())
        }
        url => {
            let path = match database_file("check", url) {
                Ok(path) => path,
                Err(status) => return status,
            };
            println!("database: {}", path.display());
            check_database(&path).map_err(|error| error.to_string())
        }
    };
    match checked {
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
    let source = match database_url("backup", &flags).and_then(|url| database_file("backup", url)) {
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

/// Serves until a signal, then flushes; the exit status.
fn daemon() -> i32 {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            // Before logging starts, which a bad value must not be able to stop either.
            let error = StartError::from(error);
            eprintln!("galactic-war: {error}");
            return error.exit_code();
        }
    };
    init_logging();
    let failed = |error: StartError| {
        log::error!(target: crate::logging::DAEMON, "{error}");
        error.exit_code()
    };
    let listeners = match bind(&settings) {
        Ok(listeners) => listeners,
        Err(error) => return failed(error),
    };
    raise_open_files_limit(settings.max_connections);
    let outcome = on_signals()
        .and_then(|shutdown| serve(&settings, listeners, shutdown, &Notifier::from_env()));
    if let AdminListen::Unix(path) = &settings.admin_listen {
        // Ours (bound above), and no one listens on it any more.
        let _ = std::fs::remove_file(path);
    }
    match outcome {
        Ok(report) => report.exit_code(),
        Err(error) => failed(error),
    }
}

/// Binds the game listener and then the admin listener; nothing else is created before
/// both are ours.
fn bind(settings: &Settings) -> Result<Listeners, StartError> {
    let tcp = |addr, what, variable| {
        bind_tcp(addr).map_err(|source| StartError::Listen {
            addr,
            what,
            variable,
            source,
        })
    };
    let game = tcp(settings.listen, "the game", "GWAR_LISTEN")?;
    let admin = match &settings.admin_listen {
        AdminListen::Tcp(addr) => Listener::Tcp(tcp(*addr, "admin calls", "GWAR_ADMIN_LISTEN")?),
        AdminListen::Unix(path) => Listener::Unix(bind_unix(path).map_err(StartError::ListenUnix)?),
    };
    Ok(Listeners { game, admin })
}

/// SIGTERM and SIGINT: the first fires the returned shutdown token; a second, while the
/// daemon is still saving, exits at once.
fn on_signals() -> Result<Shutdown, StartError> {
    let (trigger, shutdown) = Shutdown::new();
    let count = AtomicUsize::new(0);
    let handler = move || {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            log::info!(target: crate::logging::DAEMON, "signal received: shutting down (send another to exit at once)");
            trigger.trigger();
        } else {
            log::warn!(target: crate::logging::DAEMON, "second signal: exiting at once; unsaved changes are lost");
            std::process::exit(EX_FAILURE);
        }
    };
    ctrlc::set_handler(handler)?;
    Ok(shutdown)
}
