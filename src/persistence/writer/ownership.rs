//! The writer's side of galaxy ownership (PostgreSQL, several daemons sharing one
//! database): keeping this daemon's leases, and letting go of galaxies another daemon took.
//!
//! Nothing here runs when the store has no lease ([`WriteStore::lease`](crate::store::WriteStore::lease) is `None`, as on
//! SQLite), except [`Writer::lose`], which only a store with a lease ever asks for.
//!
//! - **Leases.** Every committed batch renews the leases of its galaxies (its fence), but a
//!   galaxy nobody plays has no batch, so every third of the lease the writer renews them
//!   all ([`WriteStore::renew_leases`](crate::store::WriteStore::renew_leases)). A galaxy is served only until its local deadline,
//!   [`lease_deadline`] of the moment *before* the renewal (or the take, or the batch) was
//!   sent: the database's expiry runs from later than that, so the daemon always stops
//!   serving before the database lets another daemon take the galaxy. A failed renewal is
//!   retried after at most a second, and does not hold up batches: when the database is
//!   down both fail anyway, and when it is up the next renewal succeeds.
//! - **Losses.** A galaxy another daemon took (its lease ran out: this daemon was paused,
//!   cut off, or its renewals failed) is dropped from memory with its unsaved changes —
//!   the one case where acknowledged changes are dropped (the new owner's state wins) —
//!   logged with both epochs and counted. Its deletion, if one was waiting, is dropped too:
//!   the galaxy is the other daemon's now. A loss that dropped changes is also
//!   recorded: every flush waiting at that moment (those riding the batch that found it
//!   included) answers [`PersistError::Lost`](super::report::PersistError::Lost) instead of `Ok`,
//!   and the shutdown report lists it, so a daemon that lost acknowledged changes never
//!   reports everything saved.
//! - **Leases only on what the store owns.** A cell's local deadline moves on only after
//!   the database renewed that galaxy's lease: after a batch, for the galaxies its fence
//!   covered (a tick or rows: an empty cut is not fenced); after a renewal, for those the
//!   store still owns ([`WriteStore::owns`](crate::store::WriteStore::owns)).
//! - **Orphaned jobs.** A daemon killed in the middle of a creation or a removal, and never
//!   restarted, would leave the galaxy's job (and its name) stuck for ever: every auto-save
//!   interval the writer takes over such jobs
//!   ([`WriteStore::orphaned_jobs`](crate::store::WriteStore::orphaned_jobs))
//!   and removes their rows, as a daemon does at start-up; and at once when a creation
//!   meets a name such a job holds (`jobs.rs`: the job's removal goes first, then the
//!   creation), so that a name a `GET` does not find, a `POST` creates.

use std::time::{Duration, Instant};

use super::report::LOG;
use super::state::Writer;
use crate::persistence::slow::{listed, SlowKind};
use crate::store::{lease_deadline, GalaxyJob, LostGalaxy};

/// A failed renewal is retried after a third of the lease, or this, if sooner.
const RENEWAL_RETRY: Duration = Duration::from_secs(1);

impl Writer {
    /// Until when a galaxy whose lease was renewed (or taken) by a statement sent at
    /// `sent` may be served; `None` without a lease.
    pub(super) fn lease_until(&self, sent: Instant) -> Option<Instant> {
        self.renewal
            .as_ref()
            .map(|renewal| lease_deadline(sent, renewal.lease))
    }

    /// Renews the lease of every galaxy this daemon owns, and moves on the deadline of
    /// every galaxy in memory the store owns (so renewed); drops the galaxies found taken
    /// by another daemon.
    pub(super) fn renew(&mut self) {
        let Some(lease) = self.renewal.as_ref().map(|r| r.lease) else {
            return;
        };
        // The cells first, then the messages: a galaxy goes into memory only after its
        // load's `AdoptIds` was sent, so every cell listed here is owned by the store by
        // the time the renewal is sent. Only those the store still owns once it answers
        // were renewed: none gets a deadline its lease does not cover.
        let cells = self.galaxies.all();
        self.drain();
        let sent = self.clock.now();
        self.metrics.note_call_started();
        let store = &mut self.store;
        let result = self
            .metrics
            .slow
            .time(SlowKind::Renew, || store.renew_leases(), listed);
        let next_at = match result {
            Ok(lost) => {
                self.answered_outside_batches();
                self.lose(lost);
                let until = lease_deadline(sent, lease);
                let renewed = cells
                    .iter()
                    .filter(|cell| !cell.is_gone() && self.store.owns(cell.name()));
                for cell in renewed {
                    cell.renew_lease(until);
                }
                sent + lease / 3
            }
            Err(error) => {
                let retry = (lease / 3).min(RENEWAL_RETRY);
                log::warn!(target: LOG, "renewing the leases on this daemon's galaxies failed (retried in {retry:?}; each galaxy is served until its lease's deadline): {error}");
                self.clock.now() + retry
            }
        };
        if let Some(renewal) = &mut self.renewal {
            renewal.next_at = next_at;
        }
    }

    /// Another daemon took these galaxies: out of memory with their unsaved changes, out
    /// of every queue of the writer's (changes, ticks, held galaxies, row ids, deletions,
    /// removals), logged and counted. Call after giving back any cut of them.
    pub(super) fn lose(&mut self, lost: Vec<LostGalaxy>) {
        let mut was_held = false;
        for galaxy in lost {
            let name = galaxy.name.as_str();
            let dropped = self.galaxies.lose(name);
            self.pending.remove(name);
            self.saved_ticks.remove(name);
            was_held |= self.quarantine.forget(name);
            self.store.forget_ids(name);
            let deletion = match self.deletions.iter().position(|d| d == name) {
                Some(at) => {
                    self.deletions.remove(at);
                    // Its name is no longer hidden: a look-up finds the new owner.
                    self.galaxies.deletions_committed([&galaxy.name]);
                    true
                }
                None => false,
            };
            let removal = self.jobs.cancel_purge(name);
            self.metrics
                .galaxies_lost_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let epochs = match galaxy.current {
                Some(current) => format!("epoch {} here, {current} now", galaxy.epoch),
                None => format!("epoch {} here, its ownership row is gone", galaxy.epoch),
            };
            let dropped_changes = dropped.is_some_and(|unsaved| unsaved > 0) || deletion;
            if dropped_changes {
                self.losses
                    .lock()
                    .push((galaxy.name.clone(), dropped.unwrap_or(0)));
                for ticket in &mut self.tickets {
                    if !ticket.lost.contains(&galaxy.name) {
                        ticket.lost.push(galaxy.name.clone());
                    }
                }
            }
            let what = match (dropped, deletion, removal) {
                (Some(unsaved), _, _) => format!(
                    "dropped from memory with its {unsaved} unsaved system(s); this is the one case where acknowledged changes are dropped"
                ),
                (None, true, _) => {
                    "its deletion here was not saved and is dropped; this is the one case where acknowledged changes are dropped".to_owned()
                }
                (None, false, true) => "the removal of its rows here is dropped".to_owned(),
                (None, false, false) => "nothing unsaved was held here".to_owned(),
            };
            log::error!(target: LOG, "galaxy '{name}' was taken by another daemon ({epochs}): {what}");
        }
        if self.deletions.is_empty() {
            self.deleted_since = None;
        }
        self.publish_oldest();
        if was_held
            && self.quarantine.is_empty()
            && self.failure.is_none()
            && self.job_failure.is_none()
        {
            // The last galaxy that could not be saved is gone: nothing is failing now.
            self.metrics.set_recovered();
        }
    }

    /// Takes over the jobs other daemons left behind (see the module's doc) and queues
    /// the removal of their rows; a name already in this writer's own queue is left to
    /// the job there. A failure is logged: the next interval asks again.
    pub(super) fn adopt_orphaned_jobs(&mut self) {
        let store = &mut self.store;
        let jobs = self
            .metrics
            .slow
            .time(SlowKind::Jobs, || store.orphaned_jobs(), listed);
        let jobs = match jobs {
            Ok(jobs) => jobs,
            Err(error) => {
                log::warn!(target: LOG, "looking for jobs other daemons left unfinished failed (asked again next interval): {error}");
                return;
            }
        };
        for job in jobs {
            let name = match job {
                GalaxyJob::Creating(name) => {
                    log::warn!(target: LOG, "galaxy '{name}': its creation by another daemon was abandoned (that daemon's lease ran out); removing what was written");
                    name
                }
                GalaxyJob::Deleting(name) => {
                    log::info!(target: LOG, "galaxy '{name}': finishing its deletion, abandoned by another daemon");
                    name
                }
            };
            if !self.jobs.has(&name) {
                self.jobs.purge(name);
            }
        }
    }
}
