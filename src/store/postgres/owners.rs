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
//! The [`PostgresClaimer`] takes galaxies for game threads on its own session; the writer
//! fences, renews, releases and takes unfinished jobs on its session (`write.rs`,
//! `jobs.rs` and the methods below).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::postgres::{Client, Config, GenericClient, Transaction};
use parking_lot::Mutex;

use super::super::{Claim, ClaimStore, Epoch, LostGalaxy, Owner};
use super::write::Fence;
use super::{
    connect, session_config, Context, PostgresWriter, Prepared, StoreError, APPLICATION_NAME, LOG,
};
use crate::settings::postgres_label;

/// Who this daemon is to the others, and the lease it holds its galaxies under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `host:boot:pidns:pid:start-unix-ms:token.n` — the host name, the kernel's boot
    /// id (`-` when it cannot be read), the inode of the PID namespace (`0` likewise),
    /// the process id, when this identity was made, this process's random token and the
    /// identity's number in it: unique per process (and per engine in one process), also
    /// across restarts that reuse a process id, and readable by an operator.
    pub id: String,
    /// Where this daemon serves players (`GWAR_ADVERTISE_URL`).
    pub url: String,
    /// How long a take or a renewal holds a galaxy (`GWAR_OWNERSHIP_LEASE_SECS`).
    pub lease: Duration,
}

/// This process's random token, in every identity it makes: an identity under this
/// process's id without it belonged to an earlier process.
static PROCESS_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Identities this process has made (tests and embedders may run several engines).
static IDENTITIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// This process's token: the process's random hash keys mixed with the clock.
fn process_token() -> &'static str {
    PROCESS_TOKEN.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        hasher.write_u128(now.as_nanos());
        format!("{:016x}", hasher.finish())
    })
}

/// An identity's id, split (see [`Identity::id`]).
#[derive(Debug, PartialEq, Eq)]
struct IdParts<'a> {
    host: &'a str,
    boot: &'a str,
    pidns: &'a str,
    pid: u32,
    /// The process's token (without the identity's number).
    token: &'a str,
}

impl<'a> IdParts<'a> {
    fn parse(id: &'a str) -> Option<IdParts<'a>> {
        let mut parts = id.rsplitn(6, ':');
        let token = parts.next()?.split('.').next()?;
        let _started_ms: u64 = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let pidns = parts.next()?;
        let boot = parts.next()?;
        let host = parts.next()?;
        Some(IdParts {
            host,
            boot,
            pidns,
            pid,
            token,
        })
    }

    /// Same host, same boot of its kernel, same PID namespace — each known: process ids
    /// mean the same to both.
    fn shares_processes_with(&self, other: &IdParts<'_>) -> bool {
        self.boot != "-"
            && self.pidns != "0"
            && (self.host, self.boot, self.pidns) == (other.host, other.boot, other.pidns)
    }
}

impl Identity {
    /// A new identity for this process.
    pub fn new(url: &str, lease: Duration) -> Identity {
        // gethostname(2), not /proc: a unit with `ProcSubset=pid` hides /proc/sys.
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .map(|name| name.trim().replace(':', "_"))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        // Tells two machines (or two boots) apart whatever their host names: random per boot.
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|id| id.trim().replace('-', ""))
            .filter(|id| !id.is_empty() && !id.contains(':'))
            .unwrap_or_else(|| "-".to_owned());
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let started_ms = started.as_millis();
        let number = IDENTITIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Identity {
            id: format!(
                "{host}:{boot}:{}:{}:{started_ms}:{}.{number}",
                pid_namespace(),
                std::process::id(),
                process_token()
            ),
            url: url.to_owned(),
            lease: lease.max(Duration::from_millis(1)),
        }
    }

    /// True when the daemon `owner` (an identity's id) has certainly exited, so its
    /// galaxies may be taken without waiting for its leases (a daemon restarted after a
    /// crash takes back its own galaxies at once): it ran on this host, in this boot of
    /// its kernel, in this PID namespace (all three known), and either its process id is
    /// gone (`kill(pid, 0)` says no such process) or it is this process's and the owner
    /// lacks this process's token. Anything less certain counts as
    /// alive, and the lease decides: another machine, a boot id or namespace that could
    /// not be read (a unit with `ProcSubset=pid`), a process that exists (whoever's:
    /// `EPERM` means alive), an id that does not parse.
    pub(super) fn outlived(&self, owner: &str) -> bool {
        let (Some(mine), Some(theirs)) = (IdParts::parse(&self.id), IdParts::parse(owner)) else {
            return false;
        };
        if owner == self.id || !mine.shares_processes_with(&theirs) {
            return false;
        }
        if theirs.pid == mine.pid {
            // Another engine of this process, or an earlier process under its id.
            return theirs.token != mine.token;
        }
        let Ok(pid) = i32::try_from(theirs.pid) else {
            return false;
        };
        matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
    }

    /// The lease in milliseconds, as the statements take it.
    pub(super) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// True when the advertised URL `url` names a loopback or unspecified address
/// (`127.0.0.1`, `localhost`, `[::1]`, `0.0.0.0`, `[::]`): fine for daemons on one machine,
/// useless to a daemon on another.
pub(super) fn reachable_only_here(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => rest.split(':').next().unwrap_or(rest),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The inode of this process's PID namespace (`/proc/self/ns/pid` reads `pid:[N]`), or
/// `0` where there is none to read: process ids mean the same only inside one.
fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// The fence (and the renewal): renews the lease of the galaxies listed, each only if
/// this daemon holds it under the epoch listed; returns those it renewed.
pub(super) const FENCE: &str = "UPDATE galaxy_owners
     SET expires_at = now() + $4::bigint * interval '1 millisecond'
     WHERE owner = $3 AND (galaxy_name, epoch) IN
         (SELECT * FROM unnest($1::text[], $2::bigint[]))
     RETURNING galaxy_name";

/// Gives up the galaxies listed, each only if held under the epoch listed.
const RELEASE: &str = "UPDATE galaxy_owners
     SET owner = NULL, owner_url = NULL, expires_at = now()
     WHERE owner = $3 AND (galaxy_name, epoch) IN
         (SELECT * FROM unnest($1::text[], $2::bigint[]))";

/// The epochs in the table now, for a report of galaxies lost.
const CURRENT_EPOCHS: &str =
    "SELECT galaxy_name, epoch FROM galaxy_owners WHERE galaxy_name = ANY($1::text[])";

/// A take, for a galaxy without an unfinished job: free, expired, ours already, or held
/// by `$5`, a daemon known to have exited ([`Identity::outlived`]; `NULL`: none). A new
/// epoch unless it is ours already: this process's writer may hold it under the epoch it
/// has (a creation not yet published, a load whose read failed), and a take must never
/// fence this daemon's own writes; one process has one writer, so nothing else can
/// write under that epoch.
const TAKE: &str = "UPDATE galaxy_owners
     SET epoch = CASE WHEN owner = $2 THEN epoch ELSE epoch + 1 END, owner = $2, owner_url = $3,
         expires_at = now() + $4::bigint * interval '1 millisecond'
     WHERE galaxy_name = $1
         AND (owner IS NULL OR owner = $2 OR expires_at < now() OR owner = $5::text)
         AND NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = $1)
     RETURNING epoch";

/// What a take that took nothing found: the galaxy (none: not stored), its ownership row
/// (`has_row`), its owner and whether that owner's lease still runs, and any unfinished
/// job. A plain read: it never waits on a lock.
const LOOK: &str = "SELECT o.galaxy_name IS NOT NULL, o.owner, o.owner_url,
         coalesce(o.expires_at > now(), false),
         EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     FROM galaxies g LEFT JOIN galaxy_owners o ON o.galaxy_name = g.name
     WHERE g.name = $1";

/// A galaxy stored without an ownership row (none should be: the migration fills them
/// in and creation inserts them) gets a free one, at epoch 0.
const ADD_FREE_ROW: &str = "INSERT INTO galaxy_owners (galaxy_name, epoch, owner, owner_url,
         expires_at)
     SELECT name, 0, NULL, NULL, now() FROM galaxies WHERE name = $1
     ON CONFLICT (galaxy_name) DO NOTHING";

/// Every visible galaxy and its owner, when that owner's lease still runs.
const GALAXY_OWNERS: &str = "SELECT g.name, o.owner, o.owner_url FROM galaxies g
     LEFT JOIN galaxy_owners o ON o.galaxy_name = g.name
         AND o.owner IS NOT NULL AND o.expires_at > now()
     WHERE NOT EXISTS (SELECT 1 FROM galaxy_jobs j WHERE j.name = g.name)
     ORDER BY g.name COLLATE \"C\"";

/// How many times a take, a renewal or a release that met a serialization failure, or a
/// take that found its row changed between its two statements, runs again at once.
const ATTEMPTS: u32 = 3;

/// The claims session's bound on waiting for an ownership row's lock: the owner's fence
/// holds it only from its fence to its commit, milliseconds; a longer wait means the
/// owner is stuck (paused inside its transaction, until the server ends its session), and
/// a game thread must not wait for that.
const CLAIM_LOCK_TIMEOUT: &str = "200ms";

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

/// Runs the fence in `tx` over `fence`; returns the galaxies it did not match (taken by
/// another daemon, or never this daemon's), whose transaction must not commit.
pub(super) fn fence(
    tx: &mut Transaction<'_>,
    prepared: &mut Prepared,
    me: &Identity,
    fence: &Fence,
) -> Result<Vec<String>, StoreError> {
    if fence.names.is_empty() {
        return Ok(Vec::new());
    }
    let statement = prepared.get(tx, FENCE)?;
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
        let config = session_config(url, APPLICATION_NAME, false)?;
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
        let mut client = connect(config, label)?;
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
            log::debug!(target: LOG, "galaxy '{name}': its ownership row is locked ({}); takes of it are refused for {LOCKED_FOR:?}", super::describe(&source));
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
            Err(error) if error.kind() == super::FailureKind::Unavailable => {
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
                Err(error)
                    if client.is_closed() || error.kind() == super::FailureKind::Unavailable =>
                {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_loopback_or_unspecified_address_reaches_only_this_machine() {
        for url in [
            "http://127.0.0.1:3050",
            "http://localhost:1",
            "https://[::1]:3050",
            "http://0.0.0.0:3050",
            "http://[::]",
        ] {
            assert!(reachable_only_here(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:3050",
            "https://game.example",
            "http://[fd00::5]:1",
        ] {
            assert!(!reachable_only_here(url), "{url}");
        }
    }

    #[test]
    fn only_a_daemon_of_this_host_boot_and_namespace_whose_process_is_gone_has_exited() {
        let me = Identity::new("http://127.0.0.1:1", Duration::from_secs(15));
        let parts: Vec<String> = me.id.split(':').map(str::to_owned).collect();
        assert_eq!(parts.len(), 6, "{}", me.id);
        let with = |at: usize, value: &str| {
            let mut other = parts.clone();
            other[at] = value.to_owned();
            other.join(":")
        };
        // A process id no process has (above Linux's largest, 2^22).
        let gone = with(3, "4999999");
        assert!(me.outlived(&gone), "its process is gone");
        assert!(
            me.outlived(&with(5, "0123456789abcdef.0")),
            "an earlier process under this process's id"
        );
        let another_engine_here = Identity::new("http://127.0.0.1:2", Duration::from_secs(15));
        assert!(
            !me.outlived(&another_engine_here.id),
            "another engine of this process"
        );
        // Any live process under that id counts as the daemon, whatever it runs now.
        let mut other_program = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(!me.outlived(&with(3, &other_program.id().to_string())));
        other_program.kill().unwrap();
        other_program.wait().unwrap();
        // Anything it cannot be sure of is alive.
        assert!(!me.outlived(&me.id), "itself");
        assert!(!me.outlived(&with(0, "another-host")), "another host");
        assert!(
            !me.outlived(&with(1, "0123abcd")),
            "another boot or machine"
        );
        assert!(!me.outlived(&with(2, "12345")), "another PID namespace");
        assert!(!me.outlived("garbage"));
        assert!(!me.outlived(&with(3, "x")), "no process id");
        // Where the boot id or the namespace could not be read, never.
        let unknown = |at: usize, value: &str| {
            let mut id = parts.clone();
            id[at] = value.to_owned();
            let me = Identity {
                id: id.join(":"),
                ..me.clone()
            };
            id[3] = "4999999".to_owned();
            me.outlived(&id.join(":"))
        };
        assert!(!unknown(1, "-"), "no boot id");
        assert!(!unknown(2, "0"), "no PID namespace");
        assert!(unknown(4, "1"), "(the same with both known: gone)");
        assert_eq!(
            IdParts::parse(&another_engine_here.id).unwrap().token,
            process_token()
        );
    }
}
