//! The hosts of a `DATABASE_URL` that names several (a primary and its standbys): opening a
//! client on whichever is the read-write server, trying first the host that last was, and
//! last a host that last hung; and the survey start-up makes when none is.
//!
//! The `postgres` crate tries a URL's hosts in order, and bounds only the TCP connect of
//! each (`connect_timeout`), not the start-up exchange: a host that accepts the connection
//! and never answers (a frozen server or proxy) holds every attempt until the call
//! timeout's watch cuts it, and only then is the next host tried. Left first in the URL
//! after a failover, such a host would cost every new session one call timeout. So with
//! several hosts each is tried on its own, in the order of what this process last saw of
//! them. One host: the crate's own connect, unchanged.
//!
//! The memory is process-wide (a URL's hosts are the same servers for every session) and
//! only orders attempts: every host is still tried, so a wrong memory costs time, never a
//! session.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ::postgres::config::{Host, TargetSessionAttrs};
use ::postgres::{Client, Config, NoTls};
use parking_lot::Mutex;

use super::stall::{claiming, last_hung, Call};

/// A failed attempt that took longer than this hung (no answer), rather than being
/// refused: it is tried last next time.
const HUNG_AFTER: Duration = Duration::from_secs(1);

/// What this process last saw of a host.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A session opened on it (as the read-write server), at that moment.
    ReadWrite(Instant),
    /// Refused, read-only, or failed quickly.
    Refused,
    /// No answer until the attempt was abandoned.
    Hung,
}

fn memory() -> &'static Mutex<HashMap<String, Seen>> {
    static MEMORY: OnceLock<Mutex<HashMap<String, Seen>>> = OnceLock::new();
    MEMORY.get_or_init(Mutex::default)
}

/// Opens a client on the read-write server among `config`'s hosts (see the module doc).
pub(super) fn open_client(config: &Config) -> Result<Client, ::postgres::Error> {
    let mut hosts = each_host(config);
    if hosts.len() < 2 {
        let _call = Call::start();
        return claiming(|| config.connect(NoTls));
    }
    {
        let seen = memory().lock();
        // Stable: hosts seen alike keep the URL's order.
        // A host whose session the call timeout's watch abandoned since it last opened
        // one (the server froze under an open session) hung too.
        hosts.sort_by_key(|(name, _)| match seen.get(name) {
            Some(Seen::ReadWrite(at)) if last_hung(name).is_none_or(|hung| hung < *at) => {
                (0, Some(std::cmp::Reverse(*at)))
            }
            Some(Seen::Hung | Seen::ReadWrite(_)) => (2, None),
            None | Some(Seen::Refused) => (1, None),
        });
    }
    let mut last_error = None;
    for (name, one) in hosts {
        let started = Instant::now();
        let attempt = {
            let _call = Call::start();
            claiming(|| one.connect(NoTls))
        };
        let seen = match &attempt {
            Ok(_) => Seen::ReadWrite(Instant::now()),
            Err(_) if started.elapsed() >= HUNG_AFTER => Seen::Hung,
            Err(_) => Seen::Refused,
        };
        memory().lock().insert(name, seen);
        match attempt {
            Ok(client) => return Ok(client),
            Err(error) => last_error = Some(error),
        }
    }
    // `hosts` had at least two entries, so an error was kept.
    Err(last_error.expect("an attempt was made"))
}

/// Each host of `config` as a config of its own (`host:port` and the settings of the
/// whole), in the URL's order.
fn each_host(config: &Config) -> Vec<(String, Config)> {
    let ports = config.get_ports();
    let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let addresses = config.get_hostaddrs();
    let mut hosts: Vec<(String, Config)> = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let mut one = single_host(config, port_of(i));
        let name = match host {
            Host::Tcp(name) => {
                one.host(name);
                name.clone()
            }
            Host::Unix(path) => {
                one.host_path(path);
                path.display().to_string()
            }
        };
        if let Some(address) = addresses.get(i) {
            one.hostaddr(*address);
        }
        hosts.push((format!("{name}:{}", port_of(i)), one));
    }
    if hosts.is_empty() {
        for (i, address) in addresses.iter().enumerate() {
            let mut one = single_host(config, port_of(i));
            one.hostaddr(*address);
            hosts.push((format!("{address}:{}", port_of(i)), one));
        }
    }
    hosts
}

/// `config`'s settings for one host on `port`: who connects, to what, and its bounds.
fn single_host(config: &Config, port: u16) -> Config {
    let mut one = Config::new();
    one.port(port)
        .dbname(config.get_dbname().unwrap_or_default())
        .target_session_attrs(TargetSessionAttrs::ReadWrite)
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle());
    if let Some(interval) = config.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    if let Some(name) = config.get_application_name() {
        one.application_name(name);
    }
    if let Some(user) = config.get_user() {
        one.user(user);
    }
    if let Some(password) = config.get_password() {
        one.password(password);
    }
    if let Some(options) = config.get_options() {
        one.options(options);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    one
}

/// What the hosts of a URL are now, as start-up reads them when no session could open.
pub(super) struct Survey {
    /// Hosts that answered and take writes (one may have become the primary meanwhile).
    pub(super) writable: usize,
    /// Hosts that answered read-only: standbys, or primaries demoted.
    pub(super) read_only: usize,
    /// Each host and what it is, for the log: `h1:5432 unusable (…); h2:5433 read-only`.
    pub(super) text: String,
}

/// Tries each host of `config` on its own (a connect reports only the last host's error),
/// each bounded as any session is.
pub(super) fn survey(config: &Config) -> Survey {
    let mut survey = Survey {
        writable: 0,
        read_only: 0,
        text: String::new(),
    };
    for (host, one) in each_host(config) {
        let attempt = {
            let _call = Call::start();
            claiming(|| one.connect(NoTls))
        };
        let what = match attempt {
            Ok(_) => {
                survey.writable += 1;
                "read-write".to_owned()
            }
            Err(error) if refused_as_read_only(&error) => {
                survey.read_only += 1;
                "read-only (a standby?)".to_owned()
            }
            Err(error) => format!("unusable ({})", super::error::describe(&error)),
        };
        if !survey.text.is_empty() {
            survey.text.push_str("; ");
        }
        survey.text.push_str(&format!("{host} {what}"));
    }
    survey
}

/// Whether a failed connect reached a server that refused to be a primary
/// (`target_session_attrs=read-write` on a read-only server).
fn refused_as_read_only(error: &::postgres::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
}
