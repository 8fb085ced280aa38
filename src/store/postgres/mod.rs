//! The PostgreSQL store: the schema, its migrations, and every SQL statement the engine
//! runs on PostgreSQL (`DATABASE_URL=postgres://…`).
//!
//! The writer thread owns one session, a [`PostgresWriter`], and with it the cache of
//! system row ids, as on SQLite. Several daemons may share one database: each galaxy is
//! owned by at most one of them at a time (table `galaxy_owners`, see `owners.rs`), and
//! every transaction the writer commits for a galaxy is fenced by the epoch under which
//! this daemon took it, so a daemon that lost a galaxy (its lease ran out while it was
//! paused, cut off, or swapping) can never commit to it again. Taking a galaxy is the
//! [`PostgresClaimer`]'s job, on a session of its own. Loads on a cache miss use their own
//! sessions, each a [`PostgresReader`], which has no write method and whose session
//! refuses writes besides (`default_transaction_read_only`).
//!
//! A batch is one transaction of set-based statements: at most one statement per table,
//! its rows passed as arrays and expanded with `unnest`, never a statement per row; the
//! writer's session commits with `synchronous_commit = on`, so a batch the engine counts
//! as saved survives a crash of the server. Creation and purge chunks are set-based
//! likewise, and a load is four queries in one read-only snapshot.
//!
//! Connections break (the server restarts, `pg_terminate_backend`, a network fault): an
//! operation that meets a broken session fails with [`super::FailureKind::Unavailable`]
//! and drops it, and the next call opens a new one, so the writer's retries with backoff
//! are the reconnects and nothing in the writer knows. Nothing is held by a session
//! between transactions (ownership lives in rows, with leases), so a new session
//! carries on where the old one stopped. A session on a server that stopped taking
//! writes (error 25006, a primary demoted by a failover) counts as broken likewise, and
//! the writer and the claimer connect only to a server that takes writes
//! (`target_session_attrs=read-write`).
//!
//! A dead connection is bounded on both sides. The client gives up on a silent server
//! within about 8 s (`TCP_USER_TIMEOUT`, keepalives), well inside the 15 s the
//! systemd watchdog allows the writer to answer (see `CONNECT_TIMEOUT` for the sums).
//! Every session also tells the server to give up on a silent client within about
//! 25 s (`SERVER_SETTINGS`), so the backend of a writer cut off by a partition does not
//! live on for the server's default two hours; and the writer's session is ended by the
//! server when it stays idle inside a transaction for a third of the lease, so a writer
//! paused mid-transaction holds no row lock the galaxy's next owner waits for.
//!
//! This file connects, configures, migrates and maps errors; `write.rs` holds a batch's
//! statements and the id cache's look-up; `jobs.rs` creates and deletes whole galaxies in
//! chunks; `load.rs` reads a galaxy back; `owners.rs` takes, fences, renews and releases
//! galaxies. A galaxy with an unfinished job (table
//! `galaxy_jobs`) is invisible to every read here, as on SQLite.

mod jobs;
mod load;
mod owners;
mod write;

pub use owners::{Identity, PostgresClaimer};

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use ::postgres::config::TargetSessionAttrs;
use ::postgres::error::SqlState;
use ::postgres::{CancelToken, Client, Config, GenericClient, NoTls, Statement};

use super::{
    BusyDeadline, DriverError, Epoch, FailureKind, GalaxyJob, LostGalaxy, Opened, Owner, ReadStore,
    RowIds, StoreError, SystemIds, WriteStore,
};
use crate::model::Galaxy;
use crate::settings::{postgres_label, PersistenceSettings, Synchronous};

const LOG: &str = "galactic_war::persistence";

/// The migrations, in order; the table `galactic_war_schema` holds one row per migration
/// applied. The same tables and columns as SQLite's, in PostgreSQL's types, and from
/// 0003 on the ownership table, which SQLite (one daemon per file) has no use for.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial",
        include_str!("../../../sql/postgres/0001_initial.sql"),
    ),
    (
        "0002_galaxy_jobs",
        include_str!("../../../sql/postgres/0002_galaxy_jobs.sql"),
    ),
    (
        "0003_ownership",
        include_str!("../../../sql/postgres/0003_ownership.sql"),
    ),
];

/// The schema version this binary writes on PostgreSQL: SQLite's tables are its first
/// two, so from 3 on the two numbers differ.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Where the schema version lives: created by the first migration's transaction.
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS galactic_war_schema (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
)";

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
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalives, for a connection waiting on an answer with nothing unacknowledged: the
/// first probe after 4 s of silence, then every 2 s; with [`TCP_USER_TIMEOUT`] set, Linux
/// ends the connection at the first probe 8 s after the last data received (elsewhere,
/// after two unanswered probes: 8 s as well).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(4);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 2;
/// Sent data unacknowledged this long ends the connection (Linux `TCP_USER_TIMEOUT`):
/// keepalives do not probe while a request waits to be acknowledged.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(8);

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
/// statement fails as busy: the same bound as SQLite's busy timeout (CONTRACT §3).
const LOCK_TIMEOUT: &str = "5s";

trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, ::postgres::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Postgres { context, source })
    }
}

/// Values the model keeps at most `i64::MAX`; saturate rather than wrap if that ever broke.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl DriverError for ::postgres::Error {
    fn failure_kind(&self) -> FailureKind {
        failure_kind(self)
    }
    fn connect_failure_kind(&self) -> FailureKind {
        connect_failure_kind(self)
    }
    fn describe(&self) -> String {
        describe(self)
    }
}

/// A PostgreSQL error as an operator needs to read it: the server's code and message
/// (the client's own `Display` says only "db error"), or the client's words and their
/// cause ("error connecting to server: Connection refused").
pub fn describe(error: &::postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(source) = cause {
        text.push_str(&format!(": {source}"));
        cause = source.source();
    }
    text
}

/// The kind of a PostgreSQL error, as the engine acts on it.
fn failure_kind(error: &::postgres::Error) -> FailureKind {
    if let Some(state) = error.code() {
        return state_kind(state);
    }
    let io = std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>());
    if error.is_closed() || io {
        FailureKind::Unavailable
    } else {
        FailureKind::Other
    }
}

/// The kind of a failure to open a session: the server's own answer when it gave one
/// (a wrong password is no outage), else unreachable (refused, timed out, reset).
fn connect_failure_kind(error: &::postgres::Error) -> FailureKind {
    match error.code() {
        Some(state) => state_kind(state),
        None => FailureKind::Unavailable,
    }
}

fn state_kind(state: &SqlState) -> FailureKind {
    let code = state.code();
    match code {
        // disk_full
        "53100" => FailureKind::Full,
        // serialization_failure, deadlock_detected, lock_not_available (lock_timeout),
        // query_canceled (statement_timeout, or a cancel): the statement lost a race
        // or a wait; the same statement later may pass.
        "40001" | "40P01" | "55P03" | "57014" => FailureKind::Busy,
        // admin_shutdown (pg_terminate_backend, a fast stop), crash_shutdown,
        // cannot_connect_now (starting up), too_many_connections, and class 08, the
        // connection exceptions.
        "57P01" | "57P02" | "57P03" | "53300" => FailureKind::Unavailable,
        // read_only_sql_transaction: the session is on a server that no longer takes
        // writes (a primary demoted after a failover). Only a new session, on whichever
        // server is the primary now, can write again; kept, it would fail every batch.
        "25006" => FailureKind::Unavailable,
        _ if code.starts_with("08") => FailureKind::Unavailable,
        // data_corrupted, index_corrupted
        "XX001" | "XX002" => FailureKind::Corrupt,
        _ => FailureKind::Other,
    }
}

/// The session settings of `url` for the engine: its name (`name`), timeouts and
/// keepalives (each unless the URL sets it), and, for readers, read-only transactions
/// from the start of the session.
fn session_config(url: &str, name: &str, read_only: bool) -> Result<Config, StoreError> {
    let mut config: Config = url.parse().map_err(|source| StoreError::PostgresConnect {
        database: postgres_label(url),
        source,
    })?;
    config.application_name(name);
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
    if read_only {
        let options = config.get_options().unwrap_or_default();
        let options = format!("{options} -c default_transaction_read_only=on");
        config.options(options.trim());
    } else {
        // The writer needs a primary: a host that is a standby (after a failover, say)
        // is refused at connect, and the next host of the URL tried, rather than
        // opened for every batch to fail on.
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    }
    Ok(config)
}

/// Opens a session and sets the server's side of its timeouts ([`SERVER_SETTINGS`]).
fn connect(config: &Config, label: &str) -> Result<Client, StoreError> {
    let mut client = config
        .connect(NoTls)
        .map_err(|source| StoreError::PostgresConnect {
            database: label.to_owned(),
            source,
        })?;
    client
        .batch_execute(SERVER_SETTINGS)
        .context("setting the session's timeouts")?;
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
    Ok(client)
}

/// The schema version of the database `client` is on: 0 before any migration. Reads
/// only, so a newer database is refused before anything writes to it.
fn schema_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('galactic_war_schema') IS NOT NULL", &[])
        .and_then(|row| row.try_get(0))
        .context("reading the schema version")?;
    if !exists {
        return Ok(0);
    }
    client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM galactic_war_schema",
            &[],
        )
        .and_then(|row| row.try_get(0))
        .context("reading the schema version")
}

fn refuse_newer(label: &str, version: i64) -> Result<(), StoreError> {
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: label.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// How many times a migration that met another daemon's migrating (see [`migrate`]) is
/// looked at again before the error is returned.
const MIGRATION_ATTEMPTS: u32 = 5;

/// Applies the migrations after `from`, each in its own transaction with its row in the
/// version table. Daemons starting together on one database migrate side by side, with
/// no lock: each migration's transaction inserts its version's row (the primary key), so
/// only one daemon's copy of a migration commits. The others fail on a duplicate
/// (23505, or 42P07 for a table created meanwhile) or, rarely, a deadlock between the
/// two transactions' catalog locks (40P01); they roll back, read the version again, and
/// go on from it.
fn migrate(client: &mut Client, label: &str, from: i64) -> Result<(), StoreError> {
    let mut from = from;
    let mut conflicts = 0;
    while let Some((name, sql)) = usize::try_from(from).ok().and_then(|at| MIGRATIONS.get(at)) {
        let version = from + 1;
        let applied = client.transaction().and_then(|mut tx| {
            if version == 1 {
                tx.batch_execute(VERSION_TABLE)?;
            }
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO galactic_war_schema (version, name) VALUES ($1, $2)",
                &[&version, name],
            )?;
            tx.commit()
        });
        match applied {
            Ok(()) => {
                log::info!(target: LOG, "{label}: applied migration {name}");
                from = version;
            }
            Err(source) if migrated_meanwhile(&source) && conflicts < MIGRATION_ATTEMPTS => {
                conflicts += 1;
                log::info!(target: LOG,
                    "{label}: migration {name} met another daemon's ({}); reading the version again",
                    describe(&source));
                from = schema_version(client)?;
                refuse_newer(label, from)?;
            }
            Err(source) => return Err(StoreError::PostgresMigration { name, source }),
        }
    }
    Ok(())
}

/// Whether a migration failed because another session ran the same one at once.
fn migrated_meanwhile(error: &::postgres::Error) -> bool {
    // unique_violation, duplicate_table, duplicate_object (a table's row type),
    // deadlock_detected, lock_not_available (the other daemon's migration held a lock
    // past the session's lock timeout)
    matches!(
        error.code().map(SqlState::code),
        Some("23505" | "42P07" | "42710" | "40P01" | "55P03")
    )
}

/// Prepared statements by their text: each is parsed once per session, not per batch.
/// Statements outlive transactions (a rollback keeps them), not their session.
#[derive(Default)]
struct Prepared(HashMap<&'static str, Statement>);

impl Prepared {
    fn get(
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
struct Session {
    client: Client,
    prepared: Prepared,
}

/// How long the writer's session may stay idle inside a transaction before the server
/// ends it: a third of the lease, at least a second. The writer never waits between the
/// statements of a transaction (a batch's rows are built before it begins), so only a
/// writer that was paused (SIGSTOP, a frozen VM, swapping) or cut off stays idle there,
/// and its row locks (the ownership rows its fence renewed, the rows it wrote) must be
/// gone well before its lease runs out and another daemon takes its galaxies and writes
/// them. Its commit fails anyway once it wakes: the session is gone.
fn writer_idle_timeout(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_secs(1))
}

impl Session {
    /// Opens the writer's session: refuses a newer schema, migrates, and sets the
    /// commit's durability, the lock wait's bound and the idle-in-transaction bound.
    fn open(config: &Config, label: &str, lease: Duration) -> Result<Session, StoreError> {
        let mut client = connect(config, label)?;
        let version = schema_version(&mut client)?;
        refuse_newer(label, version)?;
        refuse_older_daemon(&mut client, label)?;
        // Our own settings win over the server's, the database's and the role's: a batch
        // counted as saved must be durable, and a lock wait must end.
        client
            .batch_execute(&format!(
                "SET synchronous_commit = on; SET lock_timeout = '{LOCK_TIMEOUT}';
                 SET idle_in_transaction_session_timeout = '{}ms';",
                writer_idle_timeout(lease).as_millis()
            ))
            .context("configuring the writer's session")?;
        migrate(&mut client, label, version)?;
        Ok(Session {
            client,
            prepared: Prepared::default(),
        })
    }
}

/// Opens a PostgreSQL database for the engine (see [`super::open`]): the writer's
/// session, the claimer's, and readers on demand, all under one [`Identity`].
pub(super) fn open(
    url: &str,
    settings: &PersistenceSettings,
    deadline: Arc<BusyDeadline>,
) -> Result<Opened, StoreError> {
    if settings.synchronous != Synchronous::Normal {
        log::info!(target: LOG,
            "GWAR_PERSISTENCE_SYNCHRONOUS={} is SQLite's setting and is ignored on PostgreSQL: \
             every batch commits with synchronous_commit = on",
            settings.synchronous.pragma_value().to_ascii_lowercase());
    }
    let identity = Identity::new(&settings.advertise_url, settings.ownership_lease);
    log::info!(target: LOG, "{}: this daemon is {} at {} (lease {:?})",
        postgres_label(url), identity.id, identity.url, identity.lease);
    if owners::reachable_only_here(&identity.url) {
        log::warn!(target: LOG,
            "GWAR_ADVERTISE_URL is {}, which a daemon on another machine cannot reach: players \
             it redirects here would go nowhere. Set it to this daemon's address as others see it \
             when daemons on several machines share the database", identity.url);
    }
    let mut writer = PostgresWriter::open(url, identity.clone())?;
    writer.canceller = Some(Canceller::spawn(deadline)?);
    let claims = PostgresClaimer::open(url, identity)?;
    let url = url.to_owned();
    let readers: super::OpenReader =
        Box::new(move || Ok(Box::new(PostgresReader::open(&url)?) as Box<dyn ReadStore>));
    Ok(Opened {
        writer: Box::new(writer),
        readers: Some(readers),
        claims: Some(Box::new(claims)),
    })
}

/// The writer thread's store: its session (`None` once broken, until the next call opens
/// another) and the cache of system row ids.
pub struct PostgresWriter {
    config: Config,
    label: String,
    session: Option<Session>,
    ids: HashMap<String, SystemIds>,
    identity: Identity,
    /// The galaxies this daemon owns and the epoch of each: every write to one is fenced
    /// by it. Added by [`WriteStore::own`] and a creation's first chunk; removed when a
    /// galaxy is found lost, released, or purged.
    owned: HashMap<String, Epoch>,
    /// Galaxies no longer renewed (they left memory) whose leases may still run, and
    /// their epochs: a clean stop releases them with the rest, so no daemon on another
    /// machine waits out their leases. (Taken again here, a galaxy moves back to
    /// `owned`.)
    disowned: HashMap<String, Epoch>,
    /// A session was lost: the next one opened says so in the log.
    lost: bool,
    /// Ends a call still running at the shutdown's deadline (the engine's writer only).
    canceller: Option<Canceller>,
    /// False only in the benchmark that measures what the fence costs: batches then end
    /// without it (see [`PostgresWriter::set_fencing`]).
    fencing: bool,
}

/// What the canceller's thread sees of the writer: the session's cancel token, and
/// whether a call is running.
#[derive(Default)]
struct Calls {
    token: Option<CancelToken>,
    running: bool,
    cancelled: bool,
}

/// The shutdown's deadline for the writer's calls. At shutdown the writer thread is
/// inside a call (a statement waiting on a lock, say) when the deadline is set, and the
/// final flush must not outlast it; so this thread watches the deadline and, once it
/// has passed, asks the server to cancel the running statement (which then fails as
/// busy). A server that cannot be reached at all is bounded by the connection's
/// timeouts and keepalives instead.
struct Canceller {
    calls: Arc<Mutex<Calls>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How often the canceller looks at the deadline: a small share of any shutdown timeout.
const CANCEL_POLL: Duration = Duration::from_millis(50);

impl Canceller {
    fn spawn(deadline: Arc<BusyDeadline>) -> Result<Canceller, StoreError> {
        let calls = Arc::new(Mutex::new(Calls::default()));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let watched = calls.clone();
        let thread = std::thread::Builder::new()
            .name("gwar-pg-deadline".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CANCEL_POLL) {
                    if !deadline.passed(Instant::now()) {
                        continue;
                    }
                    let token = {
                        let mut calls = watched.lock();
                        match (calls.running && !calls.cancelled, &calls.token) {
                            (true, Some(token)) => {
                                let token = token.clone();
                                calls.cancelled = true;
                                Some(token)
                            }
                            _ => None,
                        }
                    };
                    if let Some(token) = token {
                        log::warn!(target: LOG, "the shutdown deadline passed: cancelling the writer's statement");
                        if let Err(error) = token.cancel_query(NoTls) {
                            log::debug!(target: LOG, "cancelling the writer's statement: {}", describe(&error));
                        }
                    }
                }
            })
            .map_err(|source| StoreError::Thread {
                name: "PostgreSQL deadline",
                source,
            })?;
        Ok(Canceller {
            calls,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Canceller {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!(target: LOG, "the PostgreSQL deadline thread panicked");
            }
        }
    }
}

impl PostgresWriter {
    /// Opens the writer's session (see [`Session::open`]) for the daemon `identity`;
    /// fails at once when the server cannot be reached or its schema is newer.
    pub fn open(url: &str, identity: Identity) -> Result<PostgresWriter, StoreError> {
        let config = session_config(url, WRITER_APPLICATION_NAME, false)?;
        let label = postgres_label(url);
        let session = Session::open(&config, &label, identity.lease)?;
        Ok(PostgresWriter {
            config,
            label,
            session: Some(session),
            ids: HashMap::new(),
            identity,
            owned: HashMap::new(),
            disowned: HashMap::new(),
            lost: false,
            canceller: None,
            fencing: true,
        })
    }

    /// With `false`, batches leave out the fence (their last statement), for the
    /// benchmark that measures what it costs: the same batches with and without it.
    /// Never in the daemon: a batch without its fence may overwrite another daemon's.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_fencing(&mut self, on: bool) {
        self.fencing = on;
    }

    /// The writer's session's backend process id (opening a session if it has none).
    #[cfg(test)]
    pub fn backend_pid(&mut self) -> Result<i32, StoreError> {
        self.with_session(|session, _, _| {
            session
                .client
                .query_one("SELECT pg_backend_pid()", &[])
                .and_then(|row| row.try_get(0))
                .context("reading the backend pid")
        })
    }

    /// The schema version of the database.
    #[cfg(test)]
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        self.with_session(|session, _, _| schema_version(&mut session.client))
    }

    /// Runs `work` on the session, opening one first when there is none (a reconnect).
    /// A session that `work` found broken is dropped, so the next call opens a new one.
    fn with_session<T>(
        &mut self,
        work: impl FnOnce(
            &mut Session,
            &mut HashMap<String, SystemIds>,
            &Identity,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            log::warn!(target: LOG,
                "{}: the writer's session was closed; opening a new one", self.label);
            self.drop_session();
        }
        let session = match &mut self.session {
            Some(session) => session,
            None => {
                let session = Session::open(&self.config, &self.label, self.identity.lease)?;
                if self.lost {
                    log::info!(target: LOG, "{}: the writer's session is open again", self.label);
                    self.lost = false;
                }
                self.session.insert(session)
            }
        };
        if let Some(canceller) = &self.canceller {
            let mut calls = canceller.calls.lock();
            calls.token = Some(session.client.cancel_token());
            calls.running = true;
            calls.cancelled = false;
        }
        let result = work(session, &mut self.ids, &self.identity);
        if let Some(canceller) = &self.canceller {
            canceller.calls.lock().running = false;
        }
        if let Err(error) = &result {
            let broken = session.client.is_closed() || error.kind() == FailureKind::Unavailable;
            if broken {
                log::warn!(target: LOG,
                    "{}: the writer's session is lost ({error}); a new one is opened at the \
                     next attempt", self.label);
                self.drop_session();
            }
        }
        result
    }

    fn drop_session(&mut self) {
        self.session = None;
        self.lost = true;
    }
}

impl WriteStore for PostgresWriter {
    fn on_writer_thread(&mut self) {}

    fn unfinished_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        PostgresWriter::unfinished_jobs(self)
    }

    fn write_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[super::GalaxyRows],
    ) -> Result<super::WriteStats, StoreError> {
        PostgresWriter::write_fenced(self, deletions, galaxies, false)
    }

    fn create_chunk(
        &mut self,
        galaxy: &super::NewGalaxy<'_>,
        progress: &mut super::CreationProgress,
        max_systems: usize,
    ) -> Result<super::WriteStats, StoreError> {
        // A failed chunk leaves `progress` as it was: it may run again from scratch.
        owners::retry_serialization(|| {
            PostgresWriter::create_chunk(self, galaxy, progress, max_systems)
        })
    }

    fn purge_chunk(
        &mut self,
        name: &str,
        max_systems: usize,
    ) -> Result<(super::WriteStats, bool), StoreError> {
        owners::retry_serialization(|| PostgresWriter::purge_chunk(self, name, max_systems))
    }

    fn adopt_ids(&mut self, name: &str, ids: RowIds) {
        self.ids.insert(name.to_owned(), ids.0);
    }

    fn forget_ids(&mut self, name: &str) {
        self.ids.remove(name);
    }

    /// Nothing to do: the server checkpoints and vacuums on its own.
    fn after_commit(&mut self) {}

    /// Nothing to do: a session holds nothing between transactions, and the next call
    /// opens one if it was lost.
    fn maintain(&mut self, _idle: bool) {}

    /// Closes the session. The galaxies still owned are released by
    /// [`WriteStore::write_final_batch`], not here: a stop that could not save everything
    /// keeps them until their leases run out.
    fn finish(&mut self, _all_saved: bool) {
        drop(self.canceller.take());
        if let Some(session) = self.session.take() {
            if let Err(error) = session.client.close() {
                log::debug!(target: LOG, "{}: closing the writer's session: {error}", self.label);
            }
        }
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.identity.lease)
    }

    fn own(&mut self, name: &str, epoch: Epoch) {
        self.disowned.remove(name);
        self.owned.insert(name.to_owned(), epoch);
    }

    fn owns(&self, name: &str) -> bool {
        self.owned.contains_key(name)
    }

    fn renew_leases(&mut self) -> Result<Vec<LostGalaxy>, StoreError> {
        PostgresWriter::renew_leases(self)
    }

    fn orphaned_jobs(&mut self) -> Result<Vec<GalaxyJob>, StoreError> {
        PostgresWriter::orphaned_jobs(self)
    }

    fn disown(&mut self, names: &[String]) {
        PostgresWriter::disown(self, names)
    }

    fn write_final_batch(
        &mut self,
        deletions: &[String],
        galaxies: &[super::GalaxyRows],
    ) -> Result<super::WriteStats, StoreError> {
        PostgresWriter::write_fenced(self, deletions, galaxies, true)
    }
}

/// A read-only session, for loads on a cache miss and look-ups of stored names. It has
/// no write method, and the server refuses writes on it besides (its transactions are
/// read-only by default):
///
/// ```compile_fail
/// use galactic_war::testing::{PostgresReader, WriteStore};
/// fn write(reader: &mut PostgresReader) {
///     let _ = reader.write_batch(&["g".to_owned()], &[]); // PostgresReader is no WriteStore
/// }
/// ```
pub struct PostgresReader {
    config: Config,
    label: String,
    /// `RefCell`: the client needs `&mut` to query, and a reader is lent to one thread at
    /// a time (`ReadStore` is `Send`, not `Sync`).
    client: RefCell<Client>,
}

impl PostgresReader {
    /// Opens a read-only session, refusing a newer schema.
    pub fn open(url: &str) -> Result<PostgresReader, StoreError> {
        let config = session_config(url, APPLICATION_NAME, true)?;
        let label = postgres_label(url);
        let mut client = connect(&config, &label)?;
        refuse_newer(&label, schema_version(&mut client)?)?;
        Ok(PostgresReader {
            config,
            label,
            client: RefCell::new(client),
        })
    }

    /// Runs `read` on the session. A session found broken (the server restarted since
    /// this reader last ran) is replaced once and `read` runs again: it only reads.
    fn with_client<T>(
        &self,
        read: impl Fn(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client.borrow_mut();
        match read(&mut client) {
            Err(error) if client.is_closed() || error.kind() == FailureKind::Unavailable => {
                log::debug!(target: LOG, "{}: a reader's session was lost ({error}); reconnecting", self.label);
                *client = connect(&self.config, &self.label)?;
                read(&mut client)
            }
            result => result,
        }
    }
}

impl ReadStore for PostgresReader {
    fn load_galaxy_with_ids(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        self.with_client(|client| load::load_galaxy_with_ids(client, name))
    }

    fn galaxy_names(&self) -> Result<Vec<String>, StoreError> {
        self.with_client(load::galaxy_names)
    }

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.with_client(|client| load::galaxy_exists(client, name))
    }

    fn galaxy_owners(&self) -> Result<Vec<(String, Option<Owner>)>, StoreError> {
        self.with_client(owners::galaxy_owners)
    }
}

/// The advisory lock a daemon from before several daemons could share a database holds,
/// exclusively, on its writer's session (the bytes of `gwar-one`).
const OLDER_DAEMON_KEY: i64 = i64::from_be_bytes(*b"gwar-one");

/// Refuses a database an older daemon serves: it writes without the ownership fence, so
/// a daemon beside it could not keep it from overwriting the galaxies this one owns. The
/// writer's session holds that lock *shared* for as long as it lives, which every daemon
/// of this version may do at once, while an older daemon (which takes it exclusively) is
/// refused beside any of them, whichever starts first. No race: the lock decides, not a
/// look at `pg_locks`. A database without advisory locks (a PostgreSQL-compatible one)
/// has no older daemon on it; the fence itself never uses them.
fn refuse_older_daemon(client: &mut Client, label: &str) -> Result<(), StoreError> {
    match client
        .query_one(
            "SELECT pg_try_advisory_lock_shared($1)",
            &[&OLDER_DAEMON_KEY],
        )
        .and_then(|row| row.try_get::<_, bool>(0))
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(StoreError::OlderDaemon {
            database: label.to_owned(),
        }),
        Err(error) if error.as_db_error().is_some() => {
            log::debug!(target: LOG, "{label}: no advisory locks to keep an older daemon out: {}", describe(&error));
            Ok(())
        }
        Err(source) => Err(StoreError::Postgres {
            context: "keeping older daemons out",
            source,
        }),
    }
}

/// Only for the crate's tests and benches (the `testing` feature).
#[cfg(any(test, feature = "testing"))]
impl crate::persistence::writer::WriterHandle {
    /// Runs `work` on the writer thread with its PostgreSQL store, between batches;
    /// `None` when the engine's store is not PostgreSQL's.
    pub fn with_postgres<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut PostgresWriter) -> T + Send + 'static,
    ) -> Result<Option<T>, crate::persistence::writer::PersistError> {
        self.exec(move |store| {
            (store as &mut dyn std::any::Any)
                .downcast_mut::<PostgresWriter>()
                .map(work)
        })
    }
}

/// Opens a read-only session for tools (`galactic-war check`): the engine's settings,
/// no lock, nothing written.
pub fn connect_read_only(url: &str) -> Result<Client, StoreError> {
    connect(
        &session_config(url, APPLICATION_NAME, true)?,
        &postgres_label(url),
    )
}

/// The schema version of the database a tool connected to.
pub fn stored_schema_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    schema_version(client)
}

#[cfg(test)]
mod tests;
