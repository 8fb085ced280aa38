//! Opening a session on the server: the engine's session settings (its name, read-only
//! for readers, a primary for writers), the time-outs that bound a dead connection on
//! both sides, and the writer's own session with its prepared statements.
//!
//! A session holds nothing between transactions (ownership lives in rows, with leases),
//! so a broken one is dropped and a new one opened on the next call, by whoever owns it.

use std::collections::HashMap;
use std::time::Duration;

use ::postgres::config::TargetSessionAttrs;
use ::postgres::{Client, Config, GenericClient, Statement};

use super::super::StoreError;
use super::error::{describe, Context, LOG};
use super::migrate::{migrate, refuse_newer, refuse_older_daemon, schema_version};
use crate::settings::postgres_label;

/// The `application_name` of every session of the engine but the writer's, so an
/// operator sees the daemon in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "galactic-war";

/// The writer's session's `application_name`: its backend is the one an operator (or a
/// fault test) looks for to see or end the daemon's writes. It starts with
/// [`APPLICATION_NAME`], so `application_name LIKE 'galactic-war%'` finds every session.
pub const WRITER_APPLICATION_NAME: &str = "galactic-war-writer";

/// The writer sessions' backend process ids on the database queried (one per daemon).
#[cfg(test)]
pub const WRITER_PID_SQL: &str = "SELECT pid FROM pg_stat_activity \
     WHERE application_name = 'galactic-war-writer' AND datname = current_database()";

/// The client's bound on a dead connection. The systemd unit's watchdog (`WatchdogSec=30`)
/// is fed only while the writer thread answers a ping within half that, 15 s; a writer
/// call stuck on a server that vanished without closing the connection (a power loss, a
/// silent partition) would starve it, and systemd would kill the daemon with every unsaved
/// change in memory. So one call on a dead connection must end well inside 15 s, and so
/// must a failed call followed by the next attempt's connect: [`TCP_USER_TIMEOUT`] plus
/// [`CONNECT_TIMEOUT`], 8 s + 5 s. A slow server is no dead one: its kernel acknowledges
/// our data and answers the keepalive probes whatever its backend is doing, so only a
/// lost network or host trips these. (A URL that sets `connect_timeout` or
/// `tcp_user_timeout` itself wins, and then keeping within the watchdog is its business.)
///
/// How long opening a session may take to reach the server.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalives, for a connection waiting on an answer with nothing unacknowledged: the
/// first probe after 4 s of silence, then every 2 s; with [`TCP_USER_TIMEOUT`] set, Linux
/// ends the connection at the first probe 8 s after the last data received (elsewhere,
/// after two unanswered probes: 8 s as well).
pub(super) const KEEPALIVE_IDLE: Duration = Duration::from_secs(4);
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub(super) const KEEPALIVE_RETRIES: u32 = 2;
/// Sent data unacknowledged this long ends the connection (Linux `TCP_USER_TIMEOUT`):
/// keepalives do not probe while a request waits to be acknowledged.
pub(super) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(8);

/// The server's side of a lost connection, set on every session right after connecting.
/// Without them the backend of a session cut off by a partition lives on for the server's
/// default keepalive time, about two hours, holding whatever it had locked. With them
/// the backend notices within 10 s + 3 × 5 s of silence, or 10 s of unacknowledged data;
/// a session left idle inside a transaction (a client stuck between statements) ends
/// after 60 s (the writer's sooner, see [`writer_idle_timeout`]); and a statement running
/// for a client that has gone is ended within 10 s of the connection's closing.
const SERVER_SETTINGS: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5;
     SET tcp_keepalives_count = 3; SET idle_in_transaction_session_timeout = '60s'";
/// Settings a server may lack, each set on its own: `client_connection_check_interval`
/// came with PostgreSQL 14 (and refuses a value on platforms that cannot watch a
/// socket), `tcp_user_timeout` with 12. A session on a server without one works as
/// before, it only notices a lost client later.
const OPTIONAL_SERVER_SETTINGS: &[&str] = &[
    "SET client_connection_check_interval = '10s'",
    "SET tcp_user_timeout = '10s'",
];

/// The writer waits this long for a row or table lock held by another session before its
/// statement fails as busy (and is retried). Below the default call timeout (5 s,
/// `GWAR_DB_CALL_TIMEOUT_SECS`), so that a lock wait ends as busy, from the server, rather
/// than as a connection the stall watch abandons.
const LOCK_TIMEOUT: &str = "3s";

/// The session settings of `url` for the engine: its name (`name`), timeouts and
/// keepalives (each unless the URL sets it), and a read-write server.
pub(super) fn session_config(url: &str, name: &str) -> Result<Config, StoreError> {
    let mut config: Config = url.parse().map_err(|source| StoreError::PostgresConnect {
        database: postgres_label(url),
        source,
    })?;
    config
        .application_name(name)
        .notice_callback(super::error::on_notice);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    // Every session needs the primary, readers too: a standby's data lags (by up to
    // the replication lag when asynchronous), and a galaxy loaded from it and then
    // written back would undo what the primary had. A host that is read-only (a
    // standby, a demoted primary) is refused at connect and the next host of the URL
    // tried. So readers cannot ask for read-only transactions in the start-up packet
    // (the server would then look read-only, and be refused): they set it once
    // connected ([`connect`]).
    config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    Ok(config)
}

/// Whether a session only reads: its transactions are read-only from its start.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    ReadWrite,
    ReadOnly,
}

/// Opens a session on the read-write server, sets the server's side of its timeouts
/// ([`SERVER_SETTINGS`]) and, for `Access::ReadOnly`, read-only transactions.
pub(super) fn connect(config: &Config, label: &str, access: Access) -> Result<Client, StoreError> {
    connect_on(config, label, access).map(|(client, _)| client)
}

/// [`connect`], naming the host the session is on when the URL names several.
pub(super) fn connect_on(
    config: &Config,
    label: &str,
    access: Access,
) -> Result<(Client, Option<String>), StoreError> {
    let (mut client, host) =
        super::hosts::open_client(config).map_err(|source| StoreError::PostgresConnect {
            database: label.to_owned(),
            source,
        })?;
    client
        .batch_execute(SERVER_SETTINGS)
        .context("setting the session's timeouts")?;
    if access == Access::ReadOnly {
        client
            .batch_execute("SET default_transaction_read_only = on")
            .context("making the session read-only")?;
    }
    for setting in OPTIONAL_SERVER_SETTINGS {
        match client.batch_execute(setting) {
            Ok(()) => {}
            // The server's refusal, outside any transaction: the session is unharmed.
            Err(error) if error.as_db_error().is_some() => {
                log::debug!(target: LOG, "{label}: {setting}: {}", describe(&error));
            }
            Err(source) => {
                return Err(StoreError::Postgres {
                    context: "setting the session's timeouts",
                    source,
                })
            }
        }
    }
    Ok((client, host))
}

/// Prepared statements by their text: each is parsed once per session, not per batch.
/// Statements outlive transactions (a rollback keeps them), not their session.
#[derive(Default)]
pub(super) struct Prepared(HashMap<&'static str, Statement>);

impl Prepared {
    pub(super) fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &'static str,
    ) -> Result<Statement, StoreError> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).context("preparing a statement")?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// The writer's session: the client and its statements.
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) prepared: Prepared,
}

/// How long the writer's session may stay idle inside a transaction before the server
/// ends it: a third of the lease, at least a second. The writer never waits between the
/// statements of a transaction (a batch's rows are built before it begins), so only a
/// writer that was paused (SIGSTOP, a frozen VM, swapping) or cut off stays idle there,
/// and its row locks (the ownership rows its fence renewed, the rows it wrote) must be
/// gone well before its lease runs out and another daemon takes its galaxies and writes
/// them. Its commit fails anyway once it wakes: the session is gone.
pub(super) fn writer_idle_timeout(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_secs(1))
}

impl Session {
    /// Opens the writer's session: refuses a newer schema, migrates, and sets the
    /// commit's durability, the lock wait's bound and the idle-in-transaction bound.
    pub(super) fn open(
        config: &Config,
        label: &str,
        lease: Duration,
    ) -> Result<Session, StoreError> {
        let mut client = connect(config, label, Access::ReadWrite)?;
        let version = schema_version(&mut client)?;
        refuse_newer(label, version)?;
        refuse_older_daemon(&mut client, label)?;
        // Our own settings win over the server's, the database's and the role's: a batch
        // counted as saved must be durable, and a lock wait must end.
        let commit = writer_commit_level(&mut client)?;
        client
            .batch_execute(&format!(
                "SET synchronous_commit = {commit}; SET lock_timeout = '{LOCK_TIMEOUT}';
                 SET idle_in_transaction_session_timeout = '{}ms';",
                writer_idle_timeout(lease).as_millis()
            ))
            .context("configuring the writer's session")?;
        let migrating = super::stall::Migrating::start();
        migrate(&mut client, label, version)?;
        drop(migrating);
        Ok(Session {
            client,
            prepared: Prepared::default(),
        })
    }
}

/// The writer's `synchronous_commit`: at least `on`, so that a commit is flushed on the
/// primary and, with a synchronous standby configured (`synchronous_standby_names`), on
/// that standby too before it counts as saved; `remote_apply` when the server asks for
/// it (the standby has also applied it), never the weaker `remote_write`, `local` or
/// `off` a server, database or role may have set.
fn writer_commit_level(client: &mut Client) -> Result<&'static str, StoreError> {
    let row = client
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .context("reading synchronous_commit")?;
    let level: String = row.try_get(0).context("reading synchronous_commit")?;
    Ok(if level == "remote_apply" {
        "remote_apply"
    } else {
        "on"
    })
}

/// Opens a read-only session for tools (`galactic-war check`): the engine's settings,
/// no lock, nothing written.
pub fn connect_read_only(url: &str) -> Result<Client, StoreError> {
    connect(
        &session_config(url, APPLICATION_NAME)?,
        &postgres_label(url),
        Access::ReadOnly,
    )
}
