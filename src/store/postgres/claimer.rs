//! Taking a galaxy for this daemon, when several share one database: the
//! [`PostgresClaimer`], on a writable session of its own, and the answers it remembers
//! for a moment.
//!
//! A take is one statement (`epoch + 1`, this daemon as owner, a lease on the database's
//! clock) when the galaxy is free, its owner's lease has run out, or it is ours already;
//! else a plain read says who owns it. A game thread never waits long here: a row
//! locked by its owner's fence is refused after a short lock wait, and an unreachable
//! database fails takes at once for a moment. The fence that makes a take safe is the
//! writer's (`owners.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ::postgres::{Client, Config};
use parking_lot::Mutex;

use super::super::{Claim, ClaimStore, FailureKind, Owner, StoreError};
use super::error::{describe, serialization_failure, Context, ATTEMPTS, LOG};
use super::identity::Identity;
use super::session::{connect, session_config, Access, APPLICATION_NAME};
use super::stall::Call;
use crate::settings::postgres_label;

/// A take, for a galaxy without an unfinished job: free, expired, ours already, or held
/// by `$5`, a daemon known to have exited ([`Identity::outlived`]; `NULL`: none). A new
/// epoch unless it is ours already: this process's writer may hold it under the epoch it
/// has (a creation not yet published, a load whose read failed), and a take must never
/// fence this daemon's own writes; one process has one writer, so nothing else can
/// write under that epoch.
pub(super) const TAKE: &str = "UPDATE galaxy_owners
     SET epoch = CASE WHEN owner = $2 THEN epoch ELSE epoch + 1 END, owner = $2, owner_url = $3,
         expires_at = now() + $4::bigint * interval '1 millisecond'
     WHERE galaxy_name = $1
         AND (owner IS NULL OR owner = $2 OR expires_at < now() OR owner = $5::text)
         AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = $1)
     RETURNING epoch";

/// What a take that took nothing found: the galaxy (none: not stored), its ownership row
/// (`has_row`), its owner and whether that owner's lease still runs, and any unfinished
/// job. A plain read: it never waits on a lock.
pub(super) const LOOK: &str = "SELECT o.galaxy_name IS NOT NULL, o.owner, o.owner_url,
         coalesce(o.expires_at > now(), false),
         EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     FROM galaxies g LEFT JOIN galaxy_owners o ON o.galaxy_name = g.name
     WHERE g.name = $1";

/// A galaxy stored without an ownership row (none should be: the migration fills them
/// in and creation inserts them) gets a free one, at epoch 0.
pub(super) const ADD_FREE_ROW: &str =
    "INSERT INTO galaxy_owners (galaxy_name, epoch, owner, owner_url,
         expires_at)
     SELECT name, 0, NULL, NULL, now() FROM galaxies WHERE name = $1
     ON CONFLICT (galaxy_name) DO NOTHING";

/// The claims session's bound on waiting for an ownership row's lock: the owner's fence
/// holds it only from its fence to its commit, milliseconds; a longer wait means the
/// owner is stuck (paused inside its transaction, until the server ends its session), and
/// a game thread must not wait for that.
const CLAIM_LOCK_TIMEOUT: &str = "200ms";

/// Takes galaxies for this daemon (see [`ClaimStore`]), on a writable session of its
/// own (never the writer's, which is busy with batches, nor a reader, which cannot
/// write), shared by every game thread behind a lock: a take is one or two short
/// statements, and the lock's wait for a row held by another daemon is bounded by
/// [`CLAIM_LOCK_TIMEOUT`].
pub struct PostgresClaimer {
    config: Config,
    label: String,
    pub(super) identity: Identity,
    /// `None` once broken, until the next take opens another.
    pub(super) client: Mutex<Option<Client>>,
    /// Answers remembered for a moment, so that players hammering one galaxy do not
    /// queue every other galaxy's take behind round trips (or a lock wait) each: a
    /// galaxy owned by another live daemon, and one whose ownership row a take found
    /// locked (a daemon stuck between its fence and its commit). A leaf lock.
    recent: Mutex<HashMap<String, (Instant, Recent)>>,
    /// After the session could not be opened (or was lost), until when takes fail at
    /// once rather than each wait on a connection of its own.
    unreachable_until: Mutex<Option<Instant>>,
}

/// A take's answer, remembered.
#[derive(Clone)]
enum Recent {
    Locked,
    Elsewhere(Owner),
}

/// How long a galaxy whose ownership row was found locked is refused at once.
const LOCKED_FOR: Duration = Duration::from_secs(1);
/// How long a galaxy found owned by another live daemon is redirected there without
/// asking again: short beside any lease, so a hand-over is seen at once.
const ELSEWHERE_FOR: Duration = Duration::from_millis(250);
/// How long takes fail at once after the database could not be reached.
const UNREACHABLE_FOR: Duration = Duration::from_secs(1);

impl PostgresClaimer {
    /// Opens the claims session for the daemon `identity`.
    pub fn open(url: &str, identity: Identity) -> Result<PostgresClaimer, StoreError> {
        let config = session_config(url, APPLICATION_NAME)?;
        let label = postgres_label(url);
        let client = Self::connect(&config, &label)?;
        Ok(PostgresClaimer {
            config,
            label,
            identity,
            client: Mutex::new(Some(client)),
            recent: Mutex::new(HashMap::new()),
            unreachable_until: Mutex::new(None),
        })
    }

    fn connect(config: &Config, label: &str) -> Result<Client, StoreError> {
        let mut client = connect(config, label, Access::ReadWrite)?;
        client
            .batch_execute(&format!("SET lock_timeout = '{CLAIM_LOCK_TIMEOUT}'"))
            .context("configuring the claims session")?;
        Ok(client)
    }

    /// One take: `Some` when settled, `None` when the row changed between the take and
    /// the look (run it again). `exited`: a daemon whose galaxies may be taken at once.
    fn try_take(
        &self,
        client: &mut Client,
        name: &str,
        exited: Option<&str>,
    ) -> Result<Option<Claim>, StoreError> {
        let me = &self.identity;
        let taken = client.query_opt(TAKE, &[&name, &me.id, &me.url, &me.lease_ms(), &exited]);
        let waited_in_vain = match taken {
            Ok(Some(row)) => {
                let epoch = row.try_get(0).context("taking a galaxy")?;
                return Ok(Some(Claim::Owned { epoch }));
            }
            Ok(None) => None,
            // lock_not_available: the owner holds the row (its fence, until its commit).
            Err(source) if source.code().map(|s| s.code()) == Some("55P03") => Some(source),
            Err(source) => {
                return Err(StoreError::Postgres {
                    context: "taking a galaxy",
                    source,
                })
            }
        };
        let Some(row) = client
            .query_opt(LOOK, &[&name])
            .context("looking up a galaxy's owner")?
        else {
            return Ok(Some(Claim::Missing));
        };
        let read = |row: &::postgres::Row| -> Result<_, ::postgres::Error> {
            Ok((
                row.try_get::<_, bool>(0)?,
                row.try_get::<_, Option<String>>(1)?,
                row.try_get::<_, Option<String>>(2)?,
                row.try_get::<_, bool>(3)?,
                row.try_get::<_, bool>(4)?,
            ))
        };
        let (has_row, owner, url, live, job) = read(&row).context("looking up a galaxy's owner")?;
        if job {
            return Ok(Some(Claim::Missing));
        }
        if let (Some(id), true) = (owner, live) {
            if id != me.id {
                if exited.is_none() && me.outlived(&id) {
                    log::info!(target: LOG, "galaxy '{name}' is held by {id}, a daemon on this host that has exited: taking it without waiting for its lease");
                    return self.try_take(client, name, Some(&id));
                }
                let url = url.unwrap_or_default();
                if url == me.url {
                    return Err(StoreError::SameAddress {
                        galaxy: name.to_owned(),
                        owner: id,
                        url,
                    });
                }
                return Ok(Some(Claim::Elsewhere(Owner { id, url })));
            }
        }
        if let Some(source) = waited_in_vain {
            // Held by a session whose owner's lease ran out (or by our own writer): no
            // answer yet, and a game thread does not wait for one.
            log::debug!(target: LOG, "galaxy '{name}': its ownership row is locked ({}); takes of it are refused for {LOCKED_FOR:?}", describe(&source));
            self.remember(name, Recent::Locked, LOCKED_FOR);
            return Err(StoreError::OwnershipLocked(name.to_owned()));
        }
        if !has_row {
            client
                .execute(ADD_FREE_ROW, &[&name])
                .context("adding a galaxy's ownership row")?;
        }
        Ok(None)
    }
}

impl PostgresClaimer {
    fn remember(&self, name: &str, answer: Recent, lasting: Duration) {
        let until = Instant::now() + lasting;
        self.recent.lock().insert(name.to_owned(), (until, answer));
    }

    /// The answer remembered for `name`, if it is still fresh (and forgets stale ones).
    fn remembered(&self, name: &str) -> Option<Result<Claim, StoreError>> {
        let mut recent = self.recent.lock();
        let now = Instant::now();
        recent.retain(|_, (until, _)| *until > now);
        Some(match recent.get(name)?.1.clone() {
            Recent::Locked => Err(StoreError::OwnershipLocked(name.to_owned())),
            Recent::Elsewhere(owner) => Ok(Claim::Elsewhere(owner)),
        })
    }
}

impl ClaimStore for PostgresClaimer {
    fn take(&self, name: &str) -> Result<Claim, StoreError> {
        if let Some(answer) = self.remembered(name) {
            return answer;
        }
        if self
            .unreachable_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
        {
            return Err(StoreError::Unreachable(self.label.clone()));
        }
        let taken = self.take_now(name);
        match &taken {
            Ok(Claim::Elsewhere(owner)) => {
                self.remember(name, Recent::Elsewhere(owner.clone()), ELSEWHERE_FOR)
            }
            Err(error) if error.kind() == FailureKind::Unavailable => {
                *self.unreachable_until.lock() = Some(Instant::now() + UNREACHABLE_FOR);
            }
            _ => {}
        }
        taken
    }
}

impl PostgresClaimer {
    /// A take, on the claims session (opened again when it was lost).
    fn take_now(&self, name: &str) -> Result<Claim, StoreError> {
        let _call = Call::start();
        let mut session = self.client.lock();
        let mut attempt = 1;
        loop {
            let client = match &mut *session {
                Some(client) if !client.is_closed() => client,
                _ => session.insert(Self::connect(&self.config, &self.label)?),
            };
            let result = self.try_take(client, name, None);
            let again = attempt < ATTEMPTS;
            attempt += 1;
            match result {
                Ok(Some(claim)) => return Ok(claim),
                Ok(None) if again => {}
                Ok(None) => {
                    return Err(StoreError::Inconsistent {
                        galaxy: name.to_owned(),
                        reason: "its ownership row changed at every attempt to take it".into(),
                    })
                }
                Err(error) if client.is_closed() || error.kind() == FailureKind::Unavailable => {
                    log::debug!(target: LOG, "{}: the claims session was lost ({error}); reconnecting", self.label);
                    *session = None;
                    if !again {
                        return Err(error);
                    }
                }
                Err(error) if serialization_failure(&error) && again => {}
                Err(error) => return Err(error),
            }
        }
    }
}
