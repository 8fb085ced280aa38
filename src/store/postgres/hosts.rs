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

use super::stall::{claiming, last_hung, rewatch, Call};

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

/// Opens a client on the read-write server among `config`'s hosts (see the module doc),
/// and names the host it is on when the URL names several.
pub(super) fn open_client(config: &Config) -> Result<(Client, Option<String>), ::postgres::Error> {
    rewatch(config);
    let mut hosts = each_host(config);
    if hosts.len() < 2 {
        let _call = Call::start();
        return claiming(|| config.connect(NoTls)).map(|client| (client, None));
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
        memory().lock().insert(name.clone(), seen);
        match attempt {
            Ok(client) => return Ok((client, Some(name))),
            Err(error) => last_error = Some(error),
        }
    }
    // `hosts` had at least two entries, so an error was kept.
    Err(last_error.expect("an attempt was made"))
}

/// Whether a session of this process has since opened on another host than `host` as the
/// read-write server: `host` was the primary, and may be no longer (a failover, a
/// demotion). A session that only reads never learns it from its own statements, which a
/// read-only server still answers, with what may be old data.
pub(super) fn primary_moved_from(host: &str) -> bool {
    let seen = memory().lock();
    let latest = seen
        .iter()
        .filter_map(|(name, seen)| match seen {
            Seen::ReadWrite(at) => Some((*at, name)),
            _ => None,
        })
        .max();
    latest.is_some_and(|(_, name)| name != host)
}

/// Records that a session opened on `host` as the read-write server now (tests: as if
/// the writer had moved there).
#[cfg(test)]
pub(super) fn note_read_write(host: &str) {
    memory()
        .lock()
        .insert(host.to_owned(), Seen::ReadWrite(Instant::now()));
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

/// `config`'s settings for one host on `port`: who connects, to what, how securely, and
/// its bounds. (`tests.rs` checks that every setting the URL can carry is kept.)
fn single_host(config: &Config, port: u16) -> Config {
    let mut one = Config::new();
    one.port(port)
        .dbname(config.get_dbname().unwrap_or_default())
        .target_session_attrs(TargetSessionAttrs::ReadWrite)
        // The engine's handling of the server's notices (a config cannot say its own).
        .notice_callback(super::error::on_notice)
        // What protects the connection: a host of several must not get less of it.
        .ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .channel_binding(config.get_channel_binding())
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
    /// Hosts that are standbys (in recovery): one may be promoted.
    pub(super) standbys: usize,
    /// Each host and what it is, for the log: `h1:5432 unusable (…); h2:5433 a standby`.
    pub(super) text: String,
}

/// Tries each host of `config` on its own (a connect reports only the last host's error),
/// each bounded as any session is; a host that refuses to be a primary is asked whether
/// it is a standby (`pg_is_in_recovery()`), since a primary whose sessions are read-only
/// by default (`default_transaction_read_only`) refuses the same way and will not change
/// by waiting.
pub(super) fn survey(config: &Config) -> Survey {
    let mut survey = Survey {
        writable: 0,
        standbys: 0,
        text: String::new(),
    };
    for (host, mut one) in each_host(config) {
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
                one.target_session_attrs(TargetSessionAttrs::Any);
                match in_recovery(&one) {
                    Ok(true) => {
                        survey.standbys += 1;
                        "a standby".to_owned()
                    }
                    Ok(false) => "read-only, not a standby (is default_transaction_read_only \
                        on for the database or the role?)"
                        .to_owned(),
                    Err(error) => format!("unusable ({})", super::error::describe(&error)),
                }
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

/// Whether the server of `config` (one host, any session) is in recovery: a standby.
fn in_recovery(config: &Config) -> Result<bool, ::postgres::Error> {
    let _call = Call::start();
    let mut client = claiming(|| config.connect(NoTls))?;
    client
        .query_one("SELECT pg_is_in_recovery()", &[])?
        .try_get(0)
}

/// Whether a failed connect reached a server that refused to be a primary
/// (`target_session_attrs=read-write` on a server whose transactions are read-only): the
/// `postgres` crate's own refusal, an I/O error of kind `PermissionDenied` with its words
/// (the kind alone is also what a socket the daemon may not open gives).
fn refused_as_read_only(error: &::postgres::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            io.kind() == std::io::ErrorKind::PermissionDenied
                && io.to_string().contains("does not allow writes")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a URL can say of the connection but its hosts reaches each host's own
    /// config: a host of several gets the same security, identity and bounds as one alone.
    #[test]
    fn each_host_keeps_every_setting_of_the_url() {
        let url = "postgres://gwar:pw@db1:5432,db2:5433/game?sslmode=require\
            &channel_binding=require&sslnegotiation=direct&connect_timeout=3\
            &application_name=app&options=-c%20search_path%3Dgw&keepalives_idle=7\
            &tcp_user_timeout=9000&target_session_attrs=read-write";
        let config: Config = url.parse().unwrap();
        let hosts = each_host(&config);
        let names: Vec<&str> = hosts.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["db1:5432", "db2:5433"]);
        // The crate's Debug shows every field: with the host and port lines left out, a
        // host's config must read as the URL's (a field added to the crate one day and
        // not copied here fails this test).
        let without_hosts = |config: &Config| {
            let mut kept = Vec::new();
            let mut skipping = false;
            for line in format!("{config:#?}").lines() {
                let field = line.trim_start();
                if ["host: [", "hostaddr: [", "port: ["].contains(&field) {
                    skipping = true;
                } else if skipping && field == "]," {
                    skipping = false;
                } else if !skipping {
                    kept.push(line.to_owned());
                }
            }
            kept.join("\n")
        };
        for (name, one) in &hosts {
            assert_eq!(without_hosts(one), without_hosts(&config), "{name}");
            // Not in the crate's Debug.
            assert_eq!(one.get_ssl_negotiation(), config.get_ssl_negotiation());
        }
    }
}
