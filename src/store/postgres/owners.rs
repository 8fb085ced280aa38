//! Which daemon owns each galaxy, when several share one database (table
//! `galaxy_owners`, `sql/postgres/0003_ownership.sql`).
//!
//! A galaxy is taken with one statement (`epoch + 1`, this daemon as owner, a lease on the
//! database's clock) when it is free, its owner's lease has run out, or it is ours
//! already; every transaction that writes it ends with the fence, which matches
//! `(galaxy, epoch, owner)` and renews the lease, so a daemon whose epoch is stale writes
//! nothing and learns that it lost the galaxy. Invariants:
//! - Nothing is written for a galaxy under an epoch older than the table's: the fence is
//!   the last statement of the transaction, and the row lock it takes is held until the
//!   commit, so a take either sees the renewed lease (and fails) or bumps the epoch before
//!   the fence runs (and the fence fails).
//! - No session holds anything between transactions: ownership is rows and leases, never
//!   a session-level lock, so a lost connection costs nothing but a reconnect, and a dead
//!   daemon's galaxies are free once its leases run out.
//! - Only SQL a PostgreSQL-compatible distributed database runs (no advisory locks in
//!   the fence: the one the writer's session holds shared only keeps older daemons out); a
//!   serialization failure (40001, which PostgreSQL's read committed never raises for
//!   these statements) is retried a few times at once.
//!
//! Here: the fence and the release (the statements every writing transaction ends with),
//! the writer's renewals, and what it does with a galaxy found lost. The
//! [`super::PostgresClaimer`] takes galaxies for game threads on its own session
//! (`claimer.rs`); the writer fences, renews, releases and takes unfinished jobs on its
//! session (`write.rs`, `jobs.rs` and the methods below); who a daemon is, `identity.rs`.

use std::collections::{HashMap, HashSet};

use ::postgres::{Client, GenericClient, Transaction};

use super::super::{Epoch, LostGalaxy, Owner, StoreError};
use super::error::{serialization_failure, Context, ATTEMPTS};
use super::identity::Identity;
use super::session::Prepared;
use super::writer::PostgresWriter;

/// Galaxies and the epochs this daemon holds them under, as the fence's arrays.
#[derive(Default)]
pub(super) struct Fence {
    pub(super) names: Vec<String>,
    pub(super) epochs: Vec<i64>,
}

impl Fence {
    /// Adds a galaxy; each at most once (the caller's to see to).
    pub(super) fn push(&mut self, name: &str, epoch: Epoch) {
        self.names.push(name.to_owned());
        self.epochs.push(epoch);
    }
}

/// The fence (and the renewal): renews the lease of the galaxies listed, each only if
/// this daemon holds it under the epoch listed; returns those it renewed.
pub(super) const FENCE: &str = "UPDATE galaxy_owners
     SET expires_at = now() + $4::bigint * interval '1 millisecond'
     WHERE owner = $3 AND (galaxy_name, epoch) IN
         (SELECT * FROM unnest($1::text[], $2::bigint[]))
     RETURNING galaxy_name";

/// The fence of a stop's final batch, which releases every galaxy in the same commit: as
/// [`FENCE`], and a galaxy this daemon released under the epoch listed counts as held.
/// That is the state a final batch whose commit's answer was lost leaves, and the batch
/// sent again must write, not be told its galaxies were lost. Safe: a row without an
/// owner keeps its epoch only until the next take (which raises it), and epochs granted
/// start at 1, so `(no owner, an epoch this daemon holds)` is this daemon's release, with
/// no other owner since; nothing is renewed for it.
pub(super) const FENCE_RELEASED: &str = "UPDATE galaxy_owners
     SET expires_at = CASE WHEN owner IS NULL THEN expires_at
         ELSE now() + $4::bigint * interval '1 millisecond' END
     WHERE (owner = $3 OR owner IS NULL) AND (galaxy_name, epoch) IN
         (SELECT * FROM unnest($1::text[], $2::bigint[]))
     RETURNING galaxy_name";

/// Gives up the galaxies listed, each only if held under the epoch listed.
pub(super) const RELEASE: &str = "UPDATE galaxy_owners
     SET owner = NULL, owner_url = NULL, expires_at = now()
     WHERE owner = $3 AND (galaxy_name, epoch) IN
         (SELECT * FROM unnest($1::text[], $2::bigint[]))";

/// The epochs in the table now, for a report of galaxies lost.
pub(super) const CURRENT_EPOCHS: &str =
    "SELECT galaxy_name, epoch FROM galaxy_owners WHERE galaxy_name = ANY($1::text[])";

/// Every visible galaxy and its owner, when that owner's lease still runs.
pub(super) const GALAXY_OWNERS: &str = "SELECT g.name, o.owner, o.owner_url FROM galaxies g
     LEFT JOIN galaxy_owners o ON o.galaxy_name = g.name
         AND o.owner IS NOT NULL AND o.expires_at > now()
     WHERE NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     ORDER BY g.name COLLATE \"C\"";

/// Runs the fence in `tx` over `fence`; returns the galaxies it did not match (taken by
/// another daemon, or never this daemon's), whose transaction must not commit.
pub(super) fn fence(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    me: &Identity,
    fence: &Fence,
) -> Result<Vec<String>, StoreError> {
    fence_with(tx, prepared, me, fence, FENCE)
}

/// [`fence`] for a stop's final batch, which releases the galaxies in the same
/// transaction: see [`FENCE_RELEASED`].
pub(super) fn fence_final(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    me: &Identity,
    fence: &Fence,
) -> Result<Vec<String>, StoreError> {
    fence_with(tx, prepared, me, fence, FENCE_RELEASED)
}

fn fence_with(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    me: &Identity,
    fence: &Fence,
    sql: &'static str,
) -> Result<Vec<String>, StoreError> {
    if fence.names.is_empty() {
        return Ok(Vec::new());
    }
    let statement = prepared.get(tx, sql)?;
    let rows = tx
        .query(
            &statement,
            &[&fence.names, &fence.epochs, &me.id, &me.lease_ms()],
        )
        .context("checking the galaxies' owner")?;
    missing(fence, &rows)
}

/// The galaxies of `fence` that no row of `rows` (one name each) names.
fn missing(fence: &Fence, rows: &[::postgres::Row]) -> Result<Vec<String>, StoreError> {
    let mut found = HashSet::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0).context("checking the galaxies' owner")?;
        found.insert(name);
    }
    Ok(fence
        .names
        .iter()
        .filter(|name| !found.contains(*name))
        .cloned()
        .collect())
}

/// Releases the galaxies of `release` in `tx` (those still held under their epoch).
pub(super) fn release(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    me: &Identity,
    release: &Fence,
) -> Result<u64, StoreError> {
    let statement = prepared.get(client, RELEASE)?;
    client
        .execute(&statement, &[&release.names, &release.epochs, &me.id])
        .context("releasing galaxies")
}

/// The epochs in the table now of the galaxies `names`.
fn current_epochs(
    client: &mut impl GenericClient,
    names: &[String],
) -> Result<HashMap<String, Epoch>, StoreError> {
    let rows = client
        .query(CURRENT_EPOCHS, &[&names])
        .context("reading the galaxies' epochs")?;
    let mut epochs = HashMap::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0).context("reading the galaxies' epochs")?;
        epochs.insert(
            name,
            row.try_get(1).context("reading the galaxies' epochs")?,
        );
    }
    Ok(epochs)
}

/// Every visible galaxy with its live owner (for `GET /galaxies`), in one query.
pub(super) fn galaxy_owners(
    client: &mut Client,
) -> Result<Vec<(String, Option<Owner>)>, StoreError> {
    let rows = client
        .query(GALAXY_OWNERS, &[])
        .context("listing galaxies and their owners")?;
    rows.iter()
        .map(|row| {
            let name: String = row.try_get(0)?;
            let id: Option<String> = row.try_get(1)?;
            let url: Option<String> = row.try_get(2)?;
            Ok((
                name,
                id.map(|id| Owner {
                    id,
                    url: url.unwrap_or_default(),
                }),
            ))
        })
        .collect::<Result<_, ::postgres::Error>>()
        .context("listing galaxies and their owners")
}

impl PostgresWriter {
    /// The galaxies `names` are not this daemon's (any more): reads their epochs now,
    /// forgets them (ownership and cached ids), and says so as [`StoreError::Lost`]. When
    /// the epochs cannot be read, that error is returned and nothing is forgotten: the
    /// next attempt's fence finds them lost again.
    pub(super) fn lose(&mut self, names: Vec<String>) -> StoreError {
        let epochs =
            match self.with_session(|session, _, _| current_epochs(&mut session.client, &names)) {
                Ok(epochs) => epochs,
                Err(error) => return error,
            };
        let lost = names
            .into_iter()
            .map(|name| {
                self.ids.remove(&name);
                LostGalaxy {
                    // 0: never owned here (epochs granted start at 1).
                    epoch: self.owned.remove(&name).unwrap_or(0),
                    current: epochs.get(&name).copied(),
                    name,
                }
            })
            .collect();
        StoreError::Lost(lost)
    }

    /// [`crate::store::WriteStore::renew_leases`]: one statement for every
    /// galaxy owned (the fence's, on its own).
    pub(super) fn renew_leases(&mut self) -> Result<Vec<LostGalaxy>, StoreError> {
        if self.owned.is_empty() {
            return Ok(Vec::new());
        }
        let mut owned = Fence::default();
        for (name, &epoch) in &self.owned {
            owned.push(name, epoch);
        }
        let mut attempt = 1;
        let missing = loop {
            let result = self.with_session(|session, _, me| {
                let statement = session.prepared.get(&mut session.client, FENCE)?;
                let rows = session
                    .client
                    .query(
                        &statement,
                        &[&owned.names, &owned.epochs, &me.id, &me.lease_ms()],
                    )
                    .context("renewing the galaxies' leases")?;
                missing(&owned, &rows)
            });
            match result {
                Err(error) if serialization_failure(&error) && attempt < ATTEMPTS => attempt += 1,
                result => break result?,
            }
        };
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        match self.lose(missing) {
            StoreError::Lost(lost) => Ok(lost),
            error => Err(error),
        }
    }

    /// [`crate::store::WriteStore::disown`].
    pub(super) fn disown(&mut self, names: &[String]) {
        for name in names {
            if let Some(epoch) = self.owned.remove(name) {
                self.disowned.insert(name.clone(), epoch);
            }
        }
    }

    /// The galaxies this daemon owns and their epochs.
    #[cfg(test)]
    pub(super) fn owned(&self) -> &HashMap<String, Epoch> {
        &self.owned
    }
}
