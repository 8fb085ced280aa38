//! The schema on PostgreSQL: its migrations (`sql/postgres/`), the version a database is
//! at, and what the writer's session checks before it writes anything: a newer schema is
//! refused untouched, and so is a database an older daemon serves.
//!
//! Reads the version only, before anything writes, so a database this binary cannot serve
//! is left as found. Daemons starting together migrate side by side without a lock (see
//! [`migrate`]).

use ::postgres::error::SqlState;
use ::postgres::{Client, GenericClient};

use super::super::StoreError;
use super::error::{describe, Context, LOG};

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
    (
        "0004_galaxy_sizes",
        include_str!("../../../sql/postgres/0004_galaxy_sizes.sql"),
    ),
    (
        "0005_galaxy_archives",
        include_str!("../../../sql/postgres/0005_galaxy_archives.sql"),
    ),
    (
        "0006_galaxy_history",
        include_str!("../../../sql/postgres/0006_galaxy_history.sql"),
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

/// The schema version of the database `client` is on: 0 before any migration. Reads
/// only, so a newer database is refused before anything writes to it.
pub(super) fn schema_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
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

pub(super) fn refuse_newer(label: &str, version: i64) -> Result<(), StoreError> {
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: label.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// How many times one migration that met another daemon's migrating (see [`migrate`]) is
/// looked at again, the version unchanged, before the error is returned.
const MIGRATION_ATTEMPTS: u32 = 5;

/// Applies the migrations after `from`, each in its own transaction with its row in the
/// version table. Daemons starting together on one database migrate side by side, with
/// no lock: each migration's transaction inserts its version's row (the primary key), so
/// only one daemon's copy of a migration commits. The others fail on a duplicate
/// (23505, or 42P07 for a table created meanwhile) or, rarely, a deadlock between the
/// two transactions' catalog locks (40P01); they roll back, read the version again, and
/// go on from it.
pub(super) fn migrate(client: &mut Client, label: &str, from: i64) -> Result<(), StoreError> {
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
                log::info!(target: LOG,
                    "{label}: migration {name} met another daemon's ({}); reading the version again",
                    describe(&source));
                let now = schema_version(client)?;
                refuse_newer(label, now)?;
                // The attempts are per migration: a daemon one migration ahead at every
                // step is progress, however many migrations there are (with a count over
                // them all, two daemons racing through six migrations ran out of it).
                conflicts = if now > from { 0 } else { conflicts + 1 };
                from = now;
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
pub(super) fn refuse_older_daemon(client: &mut Client, label: &str) -> Result<(), StoreError> {
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

/// The schema version of the database a tool connected to.
pub fn stored_schema_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    schema_version(client)
}
