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
//! A batch is one transaction of set-based statements: one statement per table for every
//! 20 000 rows (each answered well within the call timeout), its rows passed as arrays
//! and expanded with `unnest`, never a statement per row; the
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
//! A dead connection is bounded on both sides (`session.rs`). The client gives up on a
//! silent server within about 8 s (`TCP_USER_TIMEOUT`, keepalives), well inside the 15 s
//! the systemd watchdog allows the writer to answer (see `CONNECT_TIMEOUT` for the sums).
//! Every session also tells the server to give up on a silent client within about
//! 25 s (`SERVER_SETTINGS`), so the backend of a writer cut off by a partition does not
//! live on for the server's default two hours; and the writer's session is ended by the
//! server when it stays idle inside a transaction for a third of the lease, so a writer
//! paused mid-transaction holds no row lock the galaxy's next owner waits for.
//!
//! How the files fit. This file only opens the store ([`open`]: the writer, the claimer
//! and readers under one identity) and names what the rest of the crate uses; no file
//! below names anything of it, each names the file that holds what it needs:
//! - `error.rs`: what an error means (its kind, its text), the retry of a serialization
//!   failure, the log target. A leaf.
//! - `session.rs`: connecting, the session settings and time-outs, the writer's session
//!   and its prepared statements; it checks and migrates the schema (`migrate.rs`:
//!   the migrations, the version, and keeping older daemons out) on opening the writer's.
//! - `writer.rs`: [`PostgresWriter`], the writer thread's store, with `cancel.rs` (the
//!   shutdown's deadline for its calls); its calls' statements are in `write.rs` (a
//!   batch, and the id cache's look-up), `jobs.rs` (creating and deleting whole
//!   galaxies in chunks), `owners.rs` (the fence, renewals, releases, losses),
//!   `archive.rs` (archiving and restoring, and reading archives) and `history.rs`
//!   (galaxies' history: saved with batches, removed with a galaxy or an archive,
//!   pruned, read back).
//! - `identity.rs`: who this daemon is; `claimer.rs`: [`PostgresClaimer`], which takes
//!   galaxies for game threads on a session of its own.
//! - `reader.rs`: [`PostgresReader`], the read-only sessions; `load.rs` reads a galaxy
//!   back.
//! - `stall.rs`: the call timeout (`GWAR_DB_CALL_TIMEOUT_SECS`), a process-wide watch that
//!   shuts down a connection whose request has waited that long for any answer (a peer
//!   that keeps the connection alive and never answers defeats TCP's own timeouts); it
//!   reads the kernel's per-socket timestamps through `diag.rs`. Every call above runs
//!   inside one of its `Call`s.
//!
//! A galaxy with an unfinished job (table `galaxy_jobs`) is invisible to every read here,
//! as on SQLite.

mod archive;
mod cancel;
mod claimer;
mod diag;
mod error;
mod history;
mod hosts;
mod identity;
mod jobs;
mod load;
mod migrate;
mod owners;
mod reader;
mod session;
mod stall;
mod write;
mod writer;

pub use archive::measure;
pub use claimer::PostgresClaimer;
pub use identity::Identity;
pub use migrate::{stored_schema_version, SCHEMA_VERSION};
pub use reader::PostgresReader;
pub use session::connect_read_only;
pub use writer::PostgresWriter;

use std::sync::Arc;

use super::{BusyDeadline, OpenReader, Opened, ReadStore, StoreError};
use crate::settings::{postgres_label, PersistenceSettings, Synchronous};

/// Opens a PostgreSQL database for the engine (see [`super::open`]): the writer's
/// session, the claimer's, and readers on demand, all under one [`Identity`].
pub(super) fn open(
    url: &str,
    settings: &PersistenceSettings,
    deadline: Arc<BusyDeadline>,
) -> Result<Opened, StoreError> {
    let identity = Identity::new(&settings.advertise_url, settings.ownership_lease);
    // Before any session opens: every call from here on has the call timeout's bound.
    stall::watch(
        &session::session_config(url, session::APPLICATION_NAME)?,
        &postgres_label(url),
        settings.db_call_timeout,
    );
    let mut writer = match PostgresWriter::open(url, identity.clone()) {
        Ok(writer) => writer,
        Err(StoreError::PostgresConnect { database, source }) => {
            // No primary among the hosts. A standby among them may be promoted (a
            // failover under way): start-up waits for that. Anything else (hosts that
            // do not answer, refuse us, or are primaries read-only by default) fails
            // start-up, as with one host.
            let config = session::session_config(url, session::APPLICATION_NAME)?;
            let survey = hosts::survey(&config);
            if survey.standbys > 0 {
                // Each round tries every host twice (the writer, then the survey), and a
                // standby a third time; each try is bounded by the connect and call
                // timeouts.
                let per_try = *config
                    .get_connect_timeout()
                    .unwrap_or(&std::time::Duration::ZERO)
                    + settings.db_call_timeout;
                let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
                return Err(StoreError::NoPrimary {
                    database,
                    hosts: survey.text,
                    round_within: per_try * 3 * u32::try_from(hosts).unwrap_or(u32::MAX),
                });
            }
            log::error!(target: error::LOG, "{database}: {}", survey.text);
            return Err(StoreError::PostgresConnect { database, source });
        }
        Err(error) => return Err(error),
    };
    // Logged once the writer's session is open (start-up may have waited for a primary,
    // trying every second).
    if settings.synchronous != Synchronous::Normal {
        log::info!(target: error::LOG,
            "GWAR_PERSISTENCE_SYNCHRONOUS={} is SQLite's setting and is ignored on PostgreSQL: \
             every batch commits with synchronous_commit = on (or remote_apply)",
            settings.synchronous.pragma_value().to_ascii_lowercase());
    }
    log::info!(target: error::LOG, "{}: this daemon is {} at {} (lease {:?})",
        postgres_label(url), identity.id, identity.url, identity.lease);
    if identity::reachable_only_here(&identity.url) {
        log::warn!(target: error::LOG,
            "GWAR_ADVERTISE_URL is {}, which a daemon on another machine cannot reach: players \
             it redirects here would go nowhere. Set it to this daemon's address as others see it \
             when daemons on several machines share the database", identity.url);
    }
    writer.canceller = Some(cancel::Canceller::spawn(deadline)?);
    let claims = PostgresClaimer::open(url, identity)?;
    let url = url.to_owned();
    let readers: OpenReader =
        Box::new(move || Ok(Box::new(PostgresReader::open(&url)?) as Box<dyn ReadStore>));
    Ok(Opened {
        writer: Box::new(writer),
        readers: Some(readers),
        claims: Some(Box::new(claims)),
    })
}

// The database of a test and a galaxy stored in it, for the check's tests too.
#[cfg(test)]
mod lost_answer_tests;
#[cfg(test)]
mod plans;
#[cfg(test)]
pub(crate) mod tests;
