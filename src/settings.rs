//! Configuration from the environment (README, *Configuration*), parsed once into validated settings.
//!
//! Raw strings are read through a lookup function (the process environment in the daemon,
//! a map in tests) and turned into typed values here; only [`Settings`] travels further. A
//! value that does not parse is an error naming the variable and the value: nothing is
//! silently replaced by a default.
//!
//! Length: every variable the daemon reads is parsed and checked here, in one place, so
//! that the README's table, `--help` and the checks can be read side by side.

use crate::model::MAX_SYSTEMS;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the database lives (`DATABASE_URL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite:PATH`: a file, created (with its parent directories) if missing.
    File(PathBuf),
    /// `sqlite::memory:`: a private in-memory database, gone with the process.
    Memory,
    /// `postgres://…` or `postgresql://…`: a PostgreSQL database, the URL as given (it
    /// may hold a password: show it through [`DatabaseUrl::label`], never as it is).
    Postgres(String),
}

impl DatabaseUrl {
    /// The database file, for `sqlite:PATH`.
    pub fn file(&self) -> Option<&Path> {
        match self {
            DatabaseUrl::File(path) => Some(path),
            DatabaseUrl::Memory | DatabaseUrl::Postgres(_) => None,
        }
    }

    /// Parses `sqlite:PATH` (also `sqlite://PATH`), `sqlite::memory:`, or a PostgreSQL
    /// URL (`postgres://USER@HOST:PORT/DB`, also `postgresql://`), which must name a host.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let config = url.parse::<postgres::Config>().map_err(|e| {
                match std::error::Error::source(&e) {
                    Some(cause) => format!("not a valid PostgreSQL URL: {e}: {cause}"),
                    None => format!("not a valid PostgreSQL URL: {e}"),
                }
            })?;
            if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
                return Err("the PostgreSQL URL names no host".into());
            }
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or("expected sqlite:PATH, sqlite::memory: or postgres://USER@HOST:PORT/DB")?;
        if rest == ":memory:" {
            return Ok(DatabaseUrl::Memory);
        }
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err("the path after sqlite: is empty".into());
        }
        Ok(DatabaseUrl::File(PathBuf::from(path)))
    }

    /// The database as logs and errors show it: a file's path, `:memory:`, or a
    /// PostgreSQL URL without its password (`postgres://USER@HOST:PORT/DB`).
    pub fn label(&self) -> String {
        match self {
            DatabaseUrl::File(path) => path.display().to_string(),
            DatabaseUrl::Memory => ":memory:".to_owned(),
            DatabaseUrl::Postgres(url) => postgres_label(url),
        }
    }
}

/// `postgres://USER@HOST:PORT/DB` of a PostgreSQL URL, without its password.
pub fn postgres_label(url: &str) -> String {
    let Ok(config) = url.parse::<postgres::Config>() else {
        return "postgres://(an invalid URL)".to_owned();
    };
    let ports = config.get_ports();
    // Each host with the port it is tried on (`h1:5432,h2:5433`; one port serves all).
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .chain(config.get_hostaddrs().iter().map(|addr| addr.to_string()))
        .enumerate()
        .map(|(i, host)| match ports.get(i).or(ports.first()) {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// Where the admin API listens (`GWAR_ADMIN_LISTEN`): never the game's address, so that
/// whoever can reach the game port (every player, or a reverse proxy on the same host)
/// cannot reach an admin route. The address is the protection when no admin token is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminListen {
    /// `HOST:PORT`.
    Tcp(SocketAddr),
    /// `unix:PATH`: a Unix socket, protected by its file's permissions.
    Unix(PathBuf),
}

/// A name the admin listener answers to beside its own addresses (`GWAR_ADMIN_HOSTS`), or
/// the authority a request names (its `Host`, its `Origin`'s): `host` or `host:port`, the
/// host a DNS name, an IPv4 address or a bracketed IPv6 address, lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminHost {
    /// As written, brackets included for IPv6 (`[::1]`), lowercased.
    pub host: String,
    /// `None`: no port named (in `GWAR_ADMIN_HOSTS`, any port).
    pub port: Option<u16>,
}

impl AdminHost {
    /// Parses `host` or `host:port`; nothing else (no scheme, path, user or empty port).
    pub fn parse(value: &str) -> Result<AdminHost, String> {
        let (host, port) = match value.rsplit_once(':') {
            // `[::1]` alone: its colons are inside the brackets.
            Some((host, port)) if !port.contains(']') => (host, Some(port)),
            _ => (value, None),
        };
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(format!("{port:?} is not a port (1 to 65535)")),
            },
        };
        let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => {
                !host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        };
        if !valid {
            return Err(format!(
                "{host:?} is not a host name, an IPv4 address or a bracketed IPv6 address"
            ));
        }
        Ok(AdminHost {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `GWAR_ADMIN_HOSTS`: comma-separated [`AdminHost`]s.
    fn parse_list(value: &str) -> Result<Vec<AdminHost>, String> {
        value
            .split(',')
            .map(|entry| match entry.trim() {
                "" => Err("expected host or host:port names, separated by commas".to_owned()),
                entry => AdminHost::parse(entry),
            })
            .collect()
    }
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes on Linux, one
/// of them the terminating NUL).
const MAX_UNIX_PATH: usize = 107;

impl AdminListen {
    /// Parses `HOST:PORT` (an IP address, as `GWAR_LISTEN`) or `unix:PATH`.
    pub fn parse(value: &str) -> Result<AdminListen, String> {
        if let Some(path) = value.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("the path after unix: is empty".into());
            }
            if path.ends_with('/') {
                return Err("expected unix:PATH of a socket file, not a directory".into());
            }
            if path.len() > MAX_UNIX_PATH {
                return Err(format!(
                    "a Unix socket path holds at most {MAX_UNIX_PATH} bytes"
                ));
            }
            return Ok(AdminListen::Unix(PathBuf::from(path)));
        }
        value
            .parse::<SocketAddr>()
            .map(AdminListen::Tcp)
            .map_err(|_| "expected an address such as 127.0.0.1:3051, or unix:PATH".to_owned())
    }
}

impl std::fmt::Display for AdminListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminListen::Tcp(addr) => write!(f, "{addr}"),
            AdminListen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// SQLite's `synchronous` setting (`GWAR_PERSISTENCE_SYNCHRONOUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    /// Durable across a process crash; a power loss may lose the last commits.
    Normal,
    /// Durable across power loss; every commit waits for fsync.
    Full,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// The default WAL size, in pages, at which the writer asks for a checkpoint. Larger than
/// SQLite's default of 1000: the hot pages that every batch rewrites are copied back once
/// per checkpoint, not every few batches (README, Benchmarks).
pub const CHECKPOINT_PAGES: u32 = 10_000;

/// How the persistence engine behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistenceSettings {
    pub enabled: bool,
    /// No change waits longer than this; also the period of tick saves, retries and WAL
    /// checkpoints, and the cap of the retry backoff.
    pub auto_save_interval: Duration,
    pub shutdown_timeout: Duration,
    pub write_coalescing: bool,
    /// A batch commits this long after its first change (coalescing on); capped at
    /// `auto_save_interval`.
    pub coalescing_delay: Duration,
    pub synchronous: Synchronous,
    /// Refuse orders while the oldest unsaved change is older than this.
    pub max_unsaved: Option<Duration>,
    /// `GWAR_PERSISTENCE_MAX_STALL_MS`: refuse orders while the writer's calls have been
    /// failing or hanging this long, so that a daemon cut off from its database stops
    /// acknowledging what it cannot save. [`Settings::from_lookup`] defaults it on
    /// PostgreSQL to [`default_max_stall`] of the lease; `None` (SQLite's default): the
    /// game runs on from memory whatever the disk does.
    pub max_stall: Option<Duration>,
    /// Evict clean galaxies from memory after this long without a read or an order.
    pub galaxy_idle: Option<Duration>,
    /// The WAL size, in pages, at which the writer asks for a checkpoint. Not read from
    /// the environment: a tuning knob for embedders, and small in tests.
    pub checkpoint_pages: u32,
    /// `GWAR_OWNERSHIP_LEASE_SECS` (PostgreSQL): how long a daemon owns a galaxy without
    /// renewing it; another daemon may take it once this has run out.
    pub ownership_lease: Duration,
    /// `GWAR_ADVERTISE_URL` (PostgreSQL): where this daemon serves players, as other
    /// daemons redirect them here (no trailing `/`; default `http://` + `GWAR_LISTEN`).
    pub advertise_url: String,
    /// `GWAR_DB_CALL_TIMEOUT_SECS` (PostgreSQL): a statement that gets no answer within
    /// this is abandoned, its connection shut down and reopened by the next call.
    pub db_call_timeout: Duration,
    /// `GWAR_MIN_FREE_DISK` (SQLite file): bytes the database's filesystem keeps free. A
    /// creation without the admin token that would leave less is refused; 0: no check.
    pub min_free_disk: u64,
    /// `GWAR_ARCHIVE_AFTER_SECS`: archive a galaxy with no change saved and no request for
    /// this long, in the background; `None` (the default): only an admin archives.
    pub archive_after: Option<Duration>,
    /// `GWAR_ARCHIVE_RESTORE`: whether a request for an archived galaxy restores it.
    pub archive_restore: ArchiveRestore,
    /// `GWAR_HISTORY`: every order and completed build is saved in the galaxy's history.
    pub history: bool,
    /// `GWAR_HISTORY_KEEP_SECS`: history segments older than this are deleted; `None`:
    /// kept as long as their galaxy.
    pub history_keep: Option<Duration>,
    /// `GWAR_SLOW_QUERY_MS`: a store call (a batch, a chunk, a load, a take) slower than
    /// this is logged at warn and counted (`gwar_slow_queries_total`); `None` (`off`):
    /// never. Default [`DEFAULT_SLOW_QUERY`].
    pub slow_query: Option<Duration>,
}

/// `GWAR_HISTORY_KEEP_SECS`'s default: 30 days.
pub const DEFAULT_HISTORY_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// The default of `GWAR_SLOW_QUERY_MS`: one second. A batch of orders, a load of a
/// galaxy of 100 000 systems and a creation chunk each take tens to a few hundred
/// milliseconds (README, *Benchmarks*), so a call past a second is out of the ordinary
/// (a database that stalls, a plan gone wrong) and worth a line; and it is a fifth of the
/// PostgreSQL call timeout, so a call is reported well before it is abandoned. Measuring
/// costs two clock reads per call, so it is on by default.
pub const DEFAULT_SLOW_QUERY: Duration = Duration::from_millis(1000);

/// `GWAR_ARCHIVE_RESTORE`: who brings an archived galaxy back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveRestore {
    /// `demand`: the first request for it restores it (and waits for that).
    #[default]
    OnDemand,
    /// `explicit`: requests get 404 with `"archived": true` until an admin restores it.
    Explicit,
}

impl Default for PersistenceSettings {
    fn default() -> Self {
        PersistenceSettings {
            enabled: true,
            auto_save_interval: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            write_coalescing: true,
            coalescing_delay: Duration::from_millis(1000),
            synchronous: Synchronous::Normal,
            max_unsaved: None,
            max_stall: None,
            galaxy_idle: None,
            checkpoint_pages: CHECKPOINT_PAGES,
            ownership_lease: Duration::from_secs(15),
            advertise_url: "http://127.0.0.1:3050".to_owned(),
            db_call_timeout: Duration::from_secs(5),
            min_free_disk: DEFAULT_MIN_FREE_DISK,
            archive_after: None,
            archive_restore: ArchiveRestore::OnDemand,
            history: true,
            history_keep: Some(DEFAULT_HISTORY_KEEP),
            slow_query: Some(DEFAULT_SLOW_QUERY),
        }
    }
}

impl PersistenceSettings {
    /// How long a batch waits after its first change before it commits.
    pub fn batch_delay(&self) -> Duration {
        if self.write_coalescing {
            self.coalescing_delay.min(self.auto_save_interval)
        } else {
            Duration::ZERO
        }
    }

    /// Health reads `lagging` once the oldest unsaved change is older than this: five
    /// batch delays (a batch is due after one, and commits within a chunk or two of bulk
    /// work), but at least a second, so that with coalescing off a single slow commit
    /// does not flap the state.
    pub fn lagging_after(&self) -> Duration {
        (self.batch_delay() * 5).max(Duration::from_secs(1))
    }
}

/// The default of [`PersistenceSettings::max_stall`] on PostgreSQL: a fifth of the
/// ownership lease, at least one second. Another daemon takes a galaxy once its lease
/// has run out; a daemon that cannot commit stops acknowledging orders this long after
/// its first unanswered call, well before then, so a partition loses at most the loss
/// window plus this much of acknowledged orders, not a lease's worth (README, *What is
/// guaranteed, in plain words*). At a second, a slow but working commit (a batch of
/// 100 000 systems takes about one) may refuse a few orders; below it, many would.
pub fn default_max_stall(lease: Duration) -> Duration {
    (lease / 5).max(Duration::from_secs(1))
}

/// The default of `GWAR_MIN_FREE_DISK`: 1 GiB. Far more than saving needs between two
/// checkpoints (the WAL is checkpointed at 40 MiB and truncated to 64 MiB) or than the
/// clean-up of the largest public galaxy writes (about 60 MiB of rows, as much again of
/// WAL), so that orders and checkpoints always have room (README, *Configuration*).
pub const DEFAULT_MIN_FREE_DISK: u64 = 1 << 30;

/// How much the game may hold (README, *Configuration*, the limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GalaxyLimits {
    /// `GWAR_MAX_GALAXY_SYSTEMS`: the largest galaxy a caller without the admin token may
    /// create over HTTP (admin callers: up to the model's limit).
    pub max_public_systems: u64,
    /// `GWAR_MAX_GALAXIES`: galaxies that may exist at once.
    pub max_galaxies: usize,
    /// `GWAR_MAX_TOTAL_SYSTEMS`: the systems of all galaxies past which a creation without
    /// the admin token is refused; `None`: derived from the machine's memory when the app
    /// opens (settings read no file).
    pub max_total_systems: Option<u64>,
}

impl Default for GalaxyLimits {
    fn default() -> Self {
        GalaxyLimits {
            max_public_systems: 100_000,
            max_galaxies: 10_000,
            max_total_systems: None,
        }
    }
}

/// Everything the daemon reads from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub database: DatabaseUrl,
    pub persistence: PersistenceSettings,
    pub listen: SocketAddr,
    /// `GWAR_ADMIN_LISTEN`: the admin API's own listener.
    pub admin_listen: AdminListen,
    pub admin_token: Option<String>,
    /// `GWAR_ADMIN_HOSTS`: names the admin listener answers to beside its own addresses.
    pub admin_hosts: Vec<AdminHost>,
    /// `GWAR_BACKUP_DIR`; `None` means `backups/` beside the database.
    pub backup_dir: Option<PathBuf>,
    /// `GWAR_BACKUP_INTERVAL`: take a backup this often (unset: never by itself).
    pub backup_interval: Option<Duration>,
    /// `GWAR_BACKUP_KEEP`: how many periodic backups to keep, newest first.
    pub backup_keep: usize,
    pub galaxy_limits: GalaxyLimits,
    /// `GWAR_MAX_CONNECTIONS`: open HTTP connections, past which new ones get 503.
    pub max_connections: usize,
}

/// The default of [`Settings::max_connections`] (`GWAR_MAX_CONNECTIONS`), and so of the
/// HTTP server's limit.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// A variable whose value does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {variable}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

/// The contract's defaults (README, *Configuration*): what an empty environment gives. Programs that
/// link the library start from it and set what they need.
impl Default for Settings {
    fn default() -> Self {
        Settings {
            database: DatabaseUrl::File(PathBuf::from("galactic_war.db")),
            persistence: PersistenceSettings::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 3050)),
            admin_listen: AdminListen::Tcp(SocketAddr::from(([127, 0, 0, 1], 3051))),
            admin_token: None,
            admin_hosts: Vec::new(),
            backup_dir: None,
            backup_interval: None,
            backup_keep: 7,
            galaxy_limits: GalaxyLimits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (variable name → value, `None` when unset). The
    /// variables are read in a fixed order, so the first that does not parse is the error.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let env = Env(lookup);
        let d = Settings::default();
        let persistence = env.persistence(d.persistence.clone())?;
        let listen = env.var(
            "GWAR_LISTEN",
            |v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| "expected an address such as 127.0.0.1:3050".to_owned())
            },
            d.listen,
        )?;
        let persistence = PersistenceSettings {
            advertise_url: env.var(
                "GWAR_ADVERTISE_URL",
                parse_advertise_url,
                format!("http://{listen}"),
            )?,
            ..persistence
        };
        let database = env.var("DATABASE_URL", DatabaseUrl::parse, d.database)?;
        let persistence = PersistenceSettings {
            max_stall: env.var(
                "GWAR_PERSISTENCE_MAX_STALL_MS",
                |v| match v.to_ascii_lowercase().as_str() {
                    "off" => Ok(None),
                    _ => parse_positive(v, "milliseconds (or off)")
                        .map(|ms| Some(Duration::from_millis(ms))),
                },
                matches!(database, DatabaseUrl::Postgres(_))
                    .then(|| default_max_stall(persistence.ownership_lease)),
            )?,
            ..persistence
        };
        let admin_listen = env.var("GWAR_ADMIN_LISTEN", AdminListen::parse, d.admin_listen)?;
        let admin_token = env.var(
            "GWAR_ADMIN_TOKEN",
            |v| {
                if v.is_empty() {
                    Err("an empty token would protect nothing; unset it instead".to_owned())
                } else {
                    Ok(Some(v.to_owned()))
                }
            },
            d.admin_token,
        )?;
        let admin_hosts = env.var("GWAR_ADMIN_HOSTS", AdminHost::parse_list, d.admin_hosts)?;
        let (backup_dir, backup_interval, backup_keep) =
            env.backups(d.backup_dir, d.backup_interval, d.backup_keep)?;
        Ok(Settings {
            database,
            persistence,
            listen,
            admin_listen,
            admin_token,
            admin_hosts,
            backup_dir,
            backup_interval,
            backup_keep,
            galaxy_limits: env.galaxy_limits(d.galaxy_limits)?,
            max_connections: env.var(
                "GWAR_MAX_CONNECTIONS",
                |v| parse_count(v, "connections"),
                d.max_connections,
            )?,
        })
    }
}

/// The environment as [`Settings::from_lookup`] reads it: one variable at a time, parsed,
/// or its default when unset.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Parses variable `name` (trimmed) with `parse`, or gives `default` when it is unset.
    fn var<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        default: T,
    ) -> Result<T, SettingsError> {
        match (self.0)(name) {
            None => Ok(default),
            Some(value) => parse(value.trim()).map_err(|reason| SettingsError {
                variable: name,
                value,
                reason,
            }),
        }
    }

    /// `GWAR_PERSISTENCE_*`, `GWAR_GALAXY_IDLE_SECS`, `GWAR_OWNERSHIP_LEASE_SECS` and
    /// `GWAR_ARCHIVE_*`; the
    /// advertised URL is left as in `defaults` (its default depends on `GWAR_LISTEN`).
    fn persistence(
        &self,
        defaults: PersistenceSettings,
    ) -> Result<PersistenceSettings, SettingsError> {
        let seconds = |v: &str| parse_positive(v, "seconds").map(|s| Some(Duration::from_secs(s)));
        Ok(PersistenceSettings {
            enabled: self.var("GWAR_PERSISTENCE_ENABLED", parse_bool, defaults.enabled)?,
            auto_save_interval: self.var(
                "GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL",
                |v| parse_positive(v, "seconds").map(Duration::from_secs),
                defaults.auto_save_interval,
            )?,
            shutdown_timeout: self.var(
                "GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT",
                |v| parse_number(v, "seconds").map(Duration::from_secs),
                defaults.shutdown_timeout,
            )?,
            write_coalescing: self.var(
                "GWAR_PERSISTENCE_WRITE_COALESCING",
                parse_bool,
                defaults.write_coalescing,
            )?,
            coalescing_delay: self.var(
                "GWAR_PERSISTENCE_COALESCING_DELAY_MS",
                |v| parse_number(v, "milliseconds").map(Duration::from_millis),
                defaults.coalescing_delay,
            )?,
            synchronous: self.var(
                "GWAR_PERSISTENCE_SYNCHRONOUS",
                |v| match v.to_ascii_lowercase().as_str() {
                    "normal" => Ok(Synchronous::Normal),
                    "full" => Ok(Synchronous::Full),
                    _ => Err("expected normal or full".to_owned()),
                },
                defaults.synchronous,
            )?,
            max_unsaved: self.var("GWAR_PERSISTENCE_MAX_UNSAVED_SECS", seconds, None)?,
            max_stall: defaults.max_stall,
            galaxy_idle: self.var("GWAR_GALAXY_IDLE_SECS", seconds, None)?,
            checkpoint_pages: defaults.checkpoint_pages,
            ownership_lease: self.var(
                "GWAR_OWNERSHIP_LEASE_SECS",
                |v| match parse_positive(v, "seconds")? {
                    n if n > MAX_LEASE_SECS => Err(format!(
                        "expected at most {MAX_LEASE_SECS} seconds (a galaxy whose daemon \
                         died waits this long for another)"
                    )),
                    n => Ok(Duration::from_secs(n)),
                },
                defaults.ownership_lease,
            )?,
            advertise_url: defaults.advertise_url,
            db_call_timeout: self.var(
                "GWAR_DB_CALL_TIMEOUT_SECS",
                |v| match parse_positive(v, "seconds")? {
                    n if n > MAX_DB_CALL_TIMEOUT_SECS => Err(format!(
                        "expected at most {MAX_DB_CALL_TIMEOUT_SECS} seconds"
                    )),
                    n => Ok(Duration::from_secs(n)),
                },
                defaults.db_call_timeout,
            )?,
            min_free_disk: self.var("GWAR_MIN_FREE_DISK", parse_bytes, defaults.min_free_disk)?,
            archive_after: self.var("GWAR_ARCHIVE_AFTER_SECS", seconds, defaults.archive_after)?,
            archive_restore: self.var(
                "GWAR_ARCHIVE_RESTORE",
                |v| match v.to_ascii_lowercase().as_str() {
                    "demand" => Ok(ArchiveRestore::OnDemand),
                    "explicit" => Ok(ArchiveRestore::Explicit),
                    _ => Err("expected demand or explicit".to_owned()),
                },
                defaults.archive_restore,
            )?,
            history: self.var("GWAR_HISTORY", parse_bool, defaults.history)?,
            history_keep: self.var(
                "GWAR_HISTORY_KEEP_SECS",
                |v| match v {
                    "forever" => Ok(None),
                    v => parse_positive(v, "seconds").map(|s| Some(Duration::from_secs(s))),
                },
                defaults.history_keep,
            )?,
            slow_query: self.var(
                "GWAR_SLOW_QUERY_MS",
                |v| match v.to_ascii_lowercase().as_str() {
                    "off" => Ok(None),
                    _ => parse_number(v, "milliseconds (or off)")
                        .map(|ms| Some(Duration::from_millis(ms))),
                },
                defaults.slow_query,
            )?,
        })
    }

    /// `GWAR_BACKUP_DIR`, `GWAR_BACKUP_INTERVAL` and `GWAR_BACKUP_KEEP`, in that order.
    fn backups(
        &self,
        dir: Option<PathBuf>,
        interval: Option<Duration>,
        keep: usize,
    ) -> Result<(Option<PathBuf>, Option<Duration>, usize), SettingsError> {
        let dir = self.var(
            "GWAR_BACKUP_DIR",
            |v| {
                if v.is_empty() {
                    Err("expected a directory path".to_owned())
                } else {
                    Ok(Some(PathBuf::from(v)))
                }
            },
            dir,
        )?;
        let interval = self.var(
            "GWAR_BACKUP_INTERVAL",
            |v| parse_positive(v, "seconds").map(|s| Some(Duration::from_secs(s))),
            interval,
        )?;
        let keep = self.var("GWAR_BACKUP_KEEP", |v| parse_count(v, "backups"), keep)?;
        Ok((dir, interval, keep))
    }

    /// `GWAR_MAX_GALAXY_SYSTEMS` and `GWAR_MAX_GALAXIES`.
    fn galaxy_limits(&self, limits: GalaxyLimits) -> Result<GalaxyLimits, SettingsError> {
        Ok(GalaxyLimits {
            max_public_systems: self.var(
                "GWAR_MAX_GALAXY_SYSTEMS",
                |v| match parse_positive(v, "systems")? {
                    n if n > MAX_SYSTEMS => Err(format!(
                        "expected at most {MAX_SYSTEMS} systems (the model's limit)"
                    )),
                    n => Ok(n),
                },
                limits.max_public_systems,
            )?,
            max_galaxies: self.var(
                "GWAR_MAX_GALAXIES",
                |v| parse_count(v, "galaxies"),
                limits.max_galaxies,
            )?,
            max_total_systems: self.var(
                "GWAR_MAX_TOTAL_SYSTEMS",
                |v| parse_positive(v, "systems").map(Some),
                limits.max_total_systems,
            )?,
        })
    }
}

/// The longest ownership lease: an hour. A galaxy whose daemon died cannot be served by
/// another until its lease has run out.
const MAX_LEASE_SECS: u64 = 3600;
/// The longest `GWAR_DB_CALL_TIMEOUT_SECS`: an hour, as for the lease.
const MAX_DB_CALL_TIMEOUT_SECS: u64 = 3600;

/// `GWAR_ADVERTISE_URL`: an `http://` or `https://` URL with a host and nothing after it
/// but an optional port (a request's path is appended to it); a trailing `/` is dropped.
fn parse_advertise_url(value: &str) -> Result<String, String> {
    let expected = "expected a URL such as http://10.0.0.5:3050 (scheme, host, optional port)";
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| expected.to_owned())?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._:[]".contains(c);
    if host.is_empty() || host.starts_with(':') || !host.chars().all(allowed) {
        return Err(expected.to_owned());
    }
    Ok(value.strip_suffix('/').unwrap_or(value).to_owned())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// The largest number a setting takes: centuries in seconds, so that adding any setting
/// to a clock reading can never overflow.
const MAX_SETTING: u64 = 10_000_000_000;

fn parse_number(value: &str, unit: &str) -> Result<u64, String> {
    let n = value
        .parse::<u64>()
        .map_err(|_| format!("expected a whole number of {unit}"))?;
    if n > MAX_SETTING {
        return Err(format!("expected at most {MAX_SETTING} {unit}"));
    }
    Ok(n)
}

fn parse_positive(value: &str, unit: &str) -> Result<u64, String> {
    match parse_number(value, unit)? {
        0 => Err(format!("expected at least 1 {unit}")),
        n => Ok(n),
    }
}

/// `GWAR_MIN_FREE_DISK`: a whole number of bytes, or of KiB, MiB, GiB or TiB with the
/// suffix `K`, `M`, `G` or `T` (either case): `512M`, `2G`.
fn parse_bytes(value: &str) -> Result<u64, String> {
    let expected = || "expected bytes, or a number with K, M, G or T (such as 512M or 2G)";
    let (digits, shift) = match value.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(expected().to_owned()),
            };
            (&value[..at], shift)
        }
        _ => (value, 0),
    };
    let n: u64 = digits.parse().map_err(|_| expected().to_owned())?;
    n.checked_mul(1 << shift)
        .filter(|bytes| *bytes <= 1 << 60)
        .ok_or_else(|| "expected at most 1024P bytes".to_owned())
}

/// A positive count of `unit`, as a `usize` (saturating: no machine holds more).
fn parse_count(value: &str, unit: &str) -> Result<usize, String> {
    parse_positive(value, unit).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.database, DatabaseUrl::File("galactic_war.db".into()));
        assert_eq!(s.persistence, PersistenceSettings::default());
        assert_eq!(s.persistence.auto_save_interval, Duration::from_secs(30));
        assert_eq!(s.listen.to_string(), "127.0.0.1:3050");
        assert_eq!(s.admin_token, None);
        assert_eq!(s.admin_listen.to_string(), "127.0.0.1:3051");
        assert_eq!(s.persistence.batch_delay(), Duration::from_secs(1));
        assert_eq!(s.persistence.lagging_after(), Duration::from_secs(5));
        assert_eq!(s.galaxy_limits.max_public_systems, 100_000);
        assert_eq!(s.galaxy_limits.max_galaxies, 10_000);
        assert_eq!(s.max_connections, 10_000);
        assert_eq!(s.galaxy_limits.max_total_systems, None);
        assert_eq!(s.persistence.min_free_disk, 1 << 30);
    }

    #[test]
    fn creation_budgets_parse() {
        let s = settings(&[
            ("GWAR_MAX_TOTAL_SYSTEMS", "5000"),
            ("GWAR_MIN_FREE_DISK", "512M"),
        ])
        .unwrap();
        assert_eq!(s.galaxy_limits.max_total_systems, Some(5000));
        assert_eq!(s.persistence.min_free_disk, 512 << 20);
        for (value, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("2g", 2 << 30),
            ("1T", 1 << 40),
            ("3k", 3072),
        ] {
            let s = settings(&[("GWAR_MIN_FREE_DISK", value)]).unwrap();
            assert_eq!(s.persistence.min_free_disk, bytes, "{value}");
        }
    }

    #[test]
    fn values_parse() {
        let s = settings(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("GWAR_PERSISTENCE_ENABLED", "false"),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "5"),
            ("GWAR_PERSISTENCE_WRITE_COALESCING", "off"),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "0"),
            ("GWAR_PERSISTENCE_SYNCHRONOUS", "FULL"),
            ("GWAR_PERSISTENCE_MAX_UNSAVED_SECS", "60"),
            ("GWAR_LISTEN", "[::1]:8080"),
            ("GWAR_ADMIN_TOKEN", "s3cret"),
            ("GWAR_ADMIN_LISTEN", "[::1]:9000"),
        ])
        .unwrap();
        assert_eq!(
            s.admin_listen,
            AdminListen::Tcp("[::1]:9000".parse().unwrap())
        );
        assert_eq!(s.database, DatabaseUrl::Memory);
        assert!(!s.persistence.enabled);
        assert!(!s.persistence.write_coalescing);
        assert_eq!(s.persistence.batch_delay(), Duration::ZERO);
        assert_eq!(s.persistence.synchronous, Synchronous::Full);
        assert_eq!(s.persistence.max_unsaved, Some(Duration::from_secs(60)));
        assert_eq!(s.persistence.max_stall, None, "SQLite runs on from memory");
        assert_eq!(s.admin_token.as_deref(), Some("s3cret"));
        let pg = |extra: &[(&str, &str)]| {
            let mut vars = vec![
                ("DATABASE_URL", "postgres://gwar@db.example/galactic_war"),
                ("GWAR_OWNERSHIP_LEASE_SECS", "20"),
            ];
            vars.extend_from_slice(extra);
            settings(&vars).unwrap().persistence.max_stall
        };
        assert_eq!(
            pg(&[]),
            Some(Duration::from_secs(4)),
            "a fifth of the lease"
        );
        assert_eq!(pg(&[("GWAR_PERSISTENCE_MAX_STALL_MS", "OFF")]), None);
        assert_eq!(
            pg(&[("GWAR_PERSISTENCE_MAX_STALL_MS", "750")]),
            Some(Duration::from_millis(750))
        );
        assert_eq!(
            default_max_stall(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        let hosts = settings(&[(
            "GWAR_ADMIN_HOSTS",
            "Admin.Internal, gw-1.example:8443,[::1]:3051,10.0.0.5",
        )])
        .unwrap()
        .admin_hosts;
        let written: Vec<(&str, Option<u16>)> =
            hosts.iter().map(|h| (h.host.as_str(), h.port)).collect();
        assert_eq!(
            written,
            [
                ("admin.internal", None),
                ("gw-1.example", Some(8443)),
                ("[::1]", Some(3051)),
                ("10.0.0.5", None)
            ]
        );
        let unix = settings(&[("GWAR_ADMIN_LISTEN", "unix:/run/galactic-war/admin.sock")]).unwrap();
        assert_eq!(
            unix.admin_listen,
            AdminListen::Unix("/run/galactic-war/admin.sock".into())
        );
        assert_eq!(
            unix.admin_listen.to_string(),
            "unix:/run/galactic-war/admin.sock"
        );
        let s = settings(&[("DATABASE_URL", "sqlite://data/x.db?mode=rwc")]).unwrap();
        assert_eq!(s.database, DatabaseUrl::File("data/x.db".into()));
        for url in [
            "postgres://gwar@db.example:5433/game",
            "postgresql://gwar:secret@127.0.0.1/game?connect_timeout=3",
        ] {
            let s = settings(&[("DATABASE_URL", url)]).unwrap();
            assert_eq!(s.database, DatabaseUrl::Postgres(url.to_owned()));
        }
        let secret = DatabaseUrl::parse("postgresql://gwar:secret@127.0.0.1:5432/game").unwrap();
        assert_eq!(secret.label(), "postgres://gwar@127.0.0.1:5432/game");
        // Several hosts (failover): each with the port it is tried on (5432 where the URL
        // gives none), no password.
        for (url, label) in [
            (
                "postgres://gwar:pw@db1:5432,db2:5433/game?target_session_attrs=read-write",
                "postgres://gwar@db1:5432,db2:5433/game",
            ),
            (
                "postgres://gwar:pw@db1,db2:6000/game",
                "postgres://gwar@db1:5432,db2:6000/game",
            ),
            (
                "postgres://gwar@db1,db2/game",
                "postgres://gwar@db1:5432,db2:5432/game",
            ),
        ] {
            let parsed = DatabaseUrl::parse(url).unwrap();
            assert_eq!(parsed, DatabaseUrl::Postgres(url.to_owned()));
            assert_eq!(parsed.label(), label);
        }
    }

    #[test]
    fn ownership_settings_default_to_the_listen_address_and_parse() {
        let s = settings(&[("GWAR_LISTEN", "10.0.0.5:8080")]).unwrap();
        assert_eq!(s.persistence.advertise_url, "http://10.0.0.5:8080");
        assert_eq!(s.persistence.ownership_lease, Duration::from_secs(15));
        let s = settings(&[
            ("GWAR_ADVERTISE_URL", "https://game-3.example:443/"),
            ("GWAR_OWNERSHIP_LEASE_SECS", "4"),
        ])
        .unwrap();
        assert_eq!(s.persistence.advertise_url, "https://game-3.example:443");
        assert_eq!(s.persistence.ownership_lease, Duration::from_secs(4));
        assert_eq!(s.persistence.db_call_timeout, Duration::from_secs(5));
        let s = settings(&[("GWAR_DB_CALL_TIMEOUT_SECS", "2")]).unwrap();
        assert_eq!(s.persistence.db_call_timeout, Duration::from_secs(2));
        assert_eq!(s.persistence.archive_after, None);
        assert_eq!(s.persistence.archive_restore, ArchiveRestore::OnDemand);
        let s = settings(&[
            ("GWAR_ARCHIVE_AFTER_SECS", "86400"),
            ("GWAR_ARCHIVE_RESTORE", "Explicit"),
        ])
        .unwrap();
        assert_eq!(
            s.persistence.archive_after,
            Some(Duration::from_secs(86400))
        );
        assert_eq!(s.persistence.archive_restore, ArchiveRestore::Explicit);
        let v6 = settings(&[("GWAR_ADVERTISE_URL", "http://[fd00::5]:3050")]).unwrap();
        assert_eq!(v6.persistence.advertise_url, "http://[fd00::5]:3050");
    }

    #[test]
    fn the_slow_query_threshold_defaults_to_a_second_and_takes_zero_and_off() {
        let slow = |vars: &[(&str, &str)]| settings(vars).unwrap().persistence.slow_query;
        assert_eq!(slow(&[]), Some(DEFAULT_SLOW_QUERY));
        assert_eq!(DEFAULT_SLOW_QUERY, Duration::from_secs(1));
        assert_eq!(
            slow(&[("GWAR_SLOW_QUERY_MS", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            slow(&[("GWAR_SLOW_QUERY_MS", "0")]),
            Some(Duration::ZERO),
            "0 logs every call"
        );
        assert_eq!(slow(&[("GWAR_SLOW_QUERY_MS", "Off")]), None);
        let error = settings(&[("GWAR_SLOW_QUERY_MS", "1s")]).unwrap_err();
        assert_eq!(error.variable, "GWAR_SLOW_QUERY_MS");
        assert!(error.to_string().contains("GWAR_SLOW_QUERY_MS"), "{error}");
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        for (variable, value) in [
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_URL", "postgres://"),
            ("DATABASE_URL", "postgres://h/db?sslmode=sometimes"),
            ("DATABASE_URL", "sqlite:"),
            ("GWAR_PERSISTENCE_ENABLED", "maybe"),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "0"),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "-3"),
            ("GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT", "ten"),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "1.5"),
            ("GWAR_PERSISTENCE_SYNCHRONOUS", "off"),
            ("GWAR_PERSISTENCE_MAX_UNSAVED_SECS", ""),
            ("GWAR_PERSISTENCE_MAX_STALL_MS", "0"),
            ("GWAR_PERSISTENCE_MAX_STALL_MS", "never"),
            ("GWAR_SLOW_QUERY_MS", "-1"),
            ("GWAR_SLOW_QUERY_MS", "1.5"),
            ("GWAR_SLOW_QUERY_MS", "never"),
            ("GWAR_SLOW_QUERY_MS", ""),
            ("GWAR_SLOW_QUERY_MS", "99999999999"),
            ("GWAR_GALAXY_IDLE_SECS", "0"),
            ("GWAR_ARCHIVE_AFTER_SECS", "0"),
            ("GWAR_ARCHIVE_AFTER_SECS", "a week"),
            ("GWAR_ARCHIVE_RESTORE", "lazy"),
            ("GWAR_ARCHIVE_RESTORE", ""),
            ("GWAR_BACKUP_INTERVAL", "hourly"),
            ("GWAR_BACKUP_KEEP", "0"),
            ("GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT", "9999999999999999999"),
            ("GWAR_LISTEN", "localhost"),
            ("GWAR_ADMIN_TOKEN", ""),
            ("GWAR_ADMIN_LISTEN", "localhost:3051"),
            ("GWAR_ADMIN_LISTEN", "3051"),
            ("GWAR_ADMIN_LISTEN", ""),
            ("GWAR_ADMIN_LISTEN", "unix:"),
            ("GWAR_ADMIN_LISTEN", "unix:/run/galactic-war/"),
            ("GWAR_ADMIN_LISTEN", "unix:/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock"),
            ("GWAR_ADMIN_HOSTS", ""),
            ("GWAR_ADMIN_HOSTS", "a,,b"),
            ("GWAR_ADMIN_HOSTS", "http://admin.internal"),
            ("GWAR_ADMIN_HOSTS", "admin.internal:0"),
            ("GWAR_ADMIN_HOSTS", "admin.internal:"),
            ("GWAR_ADMIN_HOSTS", "admin.internal/x"),
            ("GWAR_ADMIN_HOSTS", "[::1"),
            ("GWAR_ADMIN_HOSTS", "user@admin.internal"),
            ("GWAR_MAX_GALAXY_SYSTEMS", "0"),
            ("GWAR_MAX_GALAXY_SYSTEMS", "10000001"),
            ("GWAR_MAX_GALAXIES", "many"),
            ("GWAR_MAX_TOTAL_SYSTEMS", "0"),
            ("GWAR_MAX_TOTAL_SYSTEMS", "plenty"),
            ("GWAR_MIN_FREE_DISK", "lots"),
            ("GWAR_MIN_FREE_DISK", "1.5G"),
            ("GWAR_MIN_FREE_DISK", "2GB"),
            ("GWAR_MIN_FREE_DISK", "-1"),
            ("GWAR_MIN_FREE_DISK", "G"),
            ("GWAR_MIN_FREE_DISK", "99999999999T"),
            ("GWAR_MAX_CONNECTIONS", "0"),
            ("GWAR_MAX_CONNECTIONS", "lots"),
            ("GWAR_OWNERSHIP_LEASE_SECS", "0"),
            ("GWAR_OWNERSHIP_LEASE_SECS", "3601"),
            ("GWAR_DB_CALL_TIMEOUT_SECS", "0"),
            ("GWAR_DB_CALL_TIMEOUT_SECS", "3601"),
            ("GWAR_DB_CALL_TIMEOUT_SECS", "2.5"),
            ("GWAR_ADVERTISE_URL", "10.0.0.5:3050"),
            ("GWAR_ADVERTISE_URL", "http://"),
            ("GWAR_ADVERTISE_URL", "http://host/path"),
            ("GWAR_ADVERTISE_URL", "http://host:1?x=1"),
            ("GWAR_ADVERTISE_URL", "ftp://host"),
        ] {
            let err = settings(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable);
            assert_eq!(err.value, value);
            let text = err.to_string();
            assert!(
                text.contains(variable) && text.contains(&format!("{value:?}")),
                "{text}"
            );
        }
    }
}
