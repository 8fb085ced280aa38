//! What a PostgreSQL error means to the engine: its kind (the store interface's
//! [`DriverError`]), its text for an operator, and the `context` every statement's
//! error is wrapped in; the one retry of a serialization failure; and the log target
//! every file of this store writes under.
//!
//! A leaf: it names nothing else of the PostgreSQL store, so every file may use it.

use std::sync::atomic::{AtomicU64, Ordering};

use ::postgres::error::SqlState;

use super::super::{DriverError, FailureKind, StoreError};

pub(super) use crate::logging::PERSISTENCE as LOG;

pub(super) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, ::postgres::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Postgres { context, source })
    }
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
pub(super) fn describe(error: &::postgres::Error) -> String {
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

pub(super) fn state_kind(state: &SqlState) -> FailureKind {
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

/// How many times a take, a renewal or a release that met a serialization failure, or a
/// take that found its row changed between its two statements, runs again at once.
pub(super) const ATTEMPTS: u32 = 3;

/// Whether `error` is a serialization failure (40001): the transaction lost a race with
/// another, and the same one run again may pass.
pub(super) fn serialization_failure(error: &StoreError) -> bool {
    let source = match error {
        StoreError::Postgres { source, .. } => source,
        _ => return false,
    };
    source.code().map(|state| state.code()) == Some("40001")
}

/// Runs `work` (one transaction, nothing of which is kept on error) again at once when it
/// met a serialization failure, up to [`ATTEMPTS`] times in all.
pub(super) fn retry_serialization<T>(
    mut work: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut attempt = 1;
    loop {
        match work() {
            Err(error) if serialization_failure(&error) && attempt < ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

/// The start of PostgreSQL's warning when a commit's wait for a synchronous standby is
/// cancelled (the writer's canceller does it at the shutdown's deadline; an operator's
/// `pg_cancel_backend` too): the commit then answers success, though only the primary has
/// it. (An English server's words: with another `lc_messages` it goes unnoticed, and
/// such a commit counts as saved.)
const UNREPLICATED_NOTICE: &str = "canceling wait for synchronous replication";

/// Such warnings seen by this process, on any session: a batch compares it before and
/// after its commit. Process-wide because a session's notices are handled where its
/// connection runs, not on the caller's thread; another session's warning at the same
/// moment makes the batch count as unsaved and be written again (it is idempotent), which
/// is harmless.
static UNREPLICATED: AtomicU64 = AtomicU64::new(0);

/// How many commits were answered without their synchronous standby's confirmation.
pub(super) fn unreplicated_commits() -> u64 {
    UNREPLICATED.load(Ordering::SeqCst)
}

/// What every session of the engine does with a notice from the server: counts the
/// warning above, and logs each (a warning as one; the client's default logs them all
/// under its own target, at `info`).
pub(super) fn on_notice(notice: ::postgres::error::DbError) {
    if notice.message().starts_with(UNREPLICATED_NOTICE) {
        UNREPLICATED.fetch_add(1, Ordering::SeqCst);
    }
    let level = match notice.severity() {
        "WARNING" => log::Level::Warn,
        _ => log::Level::Info,
    };
    log::log!(target: LOG, level, "the server says: {} {}: {}",
        notice.severity(), notice.code().code(), notice.message());
}
