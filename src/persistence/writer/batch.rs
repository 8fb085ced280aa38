//! One batch, in three phases a test can call one by one:
//!
//! 1. [`Writer::collect`]: the consistent cut of every pending galaxy (each taken in one
//!    hold of its lock, by [`GalaxyCell::cut`]), and, when the interval's periodic work or
//!    a flush (not a durable order's) is due, the ticks of clean galaxies that advanced.
//!    Takes the flushes that ride on this batch.
//! 2. [`Writer::commit`]: one transaction with the rows, the ticks and the deletions; no
//!    galaxy is locked. Nothing to write opens no transaction — except the final batch of
//!    a shutdown when galaxies are held under a lease, which releases them all.
//! 3. [`Writer::settle`]: ok — the cuts are saved (and the leases of those the fence
//!    covered renewed), the deletions are settled, the ticks are remembered, the flushes
//!    answered; failed —
//!    every cut's changes go back to its galaxy (nothing is dropped), the lane backs off,
//!    and flushes with a deadline wait for a later batch while those without one get the
//!    error; some galaxies lost to another daemon — the cuts go back, the lost galaxies
//!    are dropped (see `ownership`), and [`Writer::batch`] tries again at once without
//!    them, the flushes riding on the retry (no backoff, no failure in health), which
//!    answers them [`PersistError::Lost`] if a lost galaxy's changes were dropped.
//!
//! Either way the pending set is rebuilt the same way: a galaxy changed after its cut sent
//! a fresh marker, still queued; a galaxy found changed while the ticks were read (a
//! "stray") is made pending here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lanes::Lane;
use super::report::{PersistError, LOG};
use super::state::{synced_if, Pending, Ticket, TicketReply, Writer};
use crate::galaxies::{Cut, GalaxyCell, Settled};
use crate::model::{Changes, HistoryEntry};
use crate::persistence::slow::{written, SlowKind};
use crate::store::{GalaxyRows, LostGalaxy, StoreError, WriteStats};

/// What a batch took from memory: phase 1's result, which phases 2 and 3 work on.
pub(super) struct Collected {
    /// Rows and ticks to write, one entry per galaxy.
    pub(super) galaxies: Vec<GalaxyRows>,
    /// The change sets the cuts took, to give back if the commit fails.
    taken: Vec<(Arc<GalaxyCell>, Changes)>,
    /// Galaxies found changed while the ticks were read, and when.
    strays: Vec<Arc<GalaxyCell>>,
    strays_since: Instant,
    /// The flushes this batch answers.
    riding: Vec<Ticket>,
    /// Whether the held galaxies were tried (see `quarantine`).
    with_held: bool,
    /// When collecting ended, before the commit was sent (the writer's clock): a
    /// committed batch renewed its galaxies' leases from a moment later than this.
    sent: Instant,
    /// When collecting began (real time: for the batch's duration).
    started: Instant,
}

impl Collected {
    /// True when this batch answers a shutdown: it is the last, and releases the galaxies.
    fn is_final(&self) -> bool {
        self.riding
            .iter()
            .any(|ticket| matches!(ticket.reply, TicketReply::Shutdown(_)))
    }

    /// How many durable requests ride this batch: if any, it commits synced.
    fn durable_requests(&self) -> usize {
        let durable = self.riding.iter().filter(|ticket| ticket.durable.is_some());
        durable.count()
    }
}

impl Writer {
    /// The whole batch: collect → commit → settle; again at once without the galaxies
    /// another daemon took, if that is why it failed.
    pub(super) fn batch(&mut self) {
        loop {
            let collected = self.collect();
            let result = self.commit(&collected);
            let retry = matches!(&result, Err(StoreError::Lost(lost)) if self.lost_in_batch(&collected, lost));
            self.settle(collected, result);
            if !retry {
                return;
            }
        }
    }

    /// True when a galaxy of `collected` (or a deletion) is among `lost`: the batch can be
    /// tried again without it. (Each retry has one galaxy fewer, so retries end.)
    fn lost_in_batch(&self, collected: &Collected, lost: &[LostGalaxy]) -> bool {
        lost.iter().any(|lost| {
            collected.galaxies.iter().any(|g| g.name == lost.name)
                || self.deletions.contains(&lost.name)
        })
    }

    /// Phase 1: cuts every pending galaxy, and reads the ticks of the others when the
    /// periodic work or a flush is due.
    pub(super) fn collect(&mut self) -> Collected {
        let started = Instant::now();
        let riding: Vec<Ticket> = std::mem::take(&mut self.tickets);
        // A save or a shutdown saves every galaxy's tick too; a durable order needs only
        // the changes, and reading every galaxy's tick would cost each of its commits a
        // pass over all galaxies in memory.
        let with_ticks = self.ticks_due || riding.iter().any(|ticket| ticket.durable.is_none());
        let with_held = self.quarantine.take_retry();
        let mut galaxies = Vec::new();
        let mut taken = Vec::new();
        let mut longest_hold = Duration::ZERO;
        for pending in self.pending.values() {
            if !with_held && self.quarantine.is_held(pending.cell.name()) {
                continue;
            }
            let Some(cut) = pending.cell.cut() else {
                continue;
            };
            longest_hold = longest_hold.max(cut.hold);
            let name = pending.cell.name();
            let history = match self.settings.history {
                true => history_of(name, &cut),
                false => Vec::new(),
            };
            galaxies.push(GalaxyRows {
                name: name.to_owned(),
                tick: (self.saved_ticks.get(name) != Some(&cut.tick)).then_some(cut.tick),
                systems: cut.rows,
                history,
            });
            taken.push((pending.cell.clone(), cut.changes));
        }
        if !taken.is_empty() {
            self.metrics.record_lock_hold(longest_hold);
        }
        let mut strays = Vec::new();
        if with_ticks {
            for cell in self.galaxies.all() {
                if self.pending.contains_key(cell.name()) {
                    continue;
                }
                let tick = match cell.settled_tick() {
                    Settled::Gone => continue,
                    Settled::Dirty => {
                        // Changed since the cut began: its marker is on its way, and its
                        // tick belongs with those rows, in the next batch. (Also a safety
                        // net: a galaxy with changes is always made pending.)
                        strays.push(cell);
                        continue;
                    }
                    Settled::Clean(tick) => tick,
                };
                if self.saved_ticks.get(cell.name()) != Some(&tick) {
                    galaxies.push(GalaxyRows {
                        name: cell.name().to_owned(),
                        tick: Some(tick),
                        systems: Vec::new(),
                        history: Vec::new(),
                    });
                }
            }
        }
        let now = self.clock.now();
        Collected {
            galaxies,
            taken,
            strays,
            strays_since: now,
            riding,
            with_held,
            sent: now,
            started,
        }
    }

    /// True when `collected` and the deletions hold nothing to write: periodic work with
    /// nothing to save opens no transaction and counts no batch.
    fn nothing_to_write(&self, collected: &Collected) -> bool {
        collected.galaxies.is_empty() && self.deletions.is_empty()
    }

    /// Phase 2: one transaction, with no galaxy locked. The final batch of a shutdown
    /// also releases every galaxy held under a lease, in the same transaction, so another
    /// daemon can take them at once; it runs with nothing to write, too, for the release.
    ///
    /// With a durable request riding, the transaction commits synced to stable storage,
    /// and the store then syncs whatever earlier commit is not (a request's change that
    /// the batch before carried, unsynced; with nothing to write, only that): see
    /// [`WriteStore::sync`].
    ///
    /// [`WriteStore::sync`]: crate::store::WriteStore::sync
    pub(super) fn commit(&mut self, collected: &Collected) -> Result<WriteStats, StoreError> {
        let last = collected.is_final();
        let durable = collected.durable_requests() > 0;
        let nothing = self.nothing_to_write(collected) && !(last && self.renewal.is_some());
        if nothing && !durable {
            return Ok(WriteStats::default());
        }
        self.metrics.note_call_started();
        let (deletions, galaxies) = (&self.deletions, &collected.galaxies);
        let slow = &self.metrics.slow;
        synced_if(self.store.as_mut(), durable, |store| {
            let stats = if nothing {
                WriteStats::default()
            } else if last {
                slow.time(
                    SlowKind::Batch,
                    || store.write_final_batch(deletions, galaxies),
                    written,
                )?
            } else {
                slow.time(
                    SlowKind::Batch,
                    || store.write_batch(deletions, galaxies),
                    written,
                )?
            };
            // Nothing for the store to do if that commit was synced; a commit that wrote
            // nothing (only empty cuts) synced nothing, so earlier commits are synced here.
            if durable {
                store.sync()?;
            }
            Ok(stats)
        })
    }

    /// Phase 3: what the commit's outcome means for memory, health and waiting flushes.
    pub(super) fn settle(&mut self, collected: Collected, result: Result<WriteStats, StoreError>) {
        match result {
            Ok(stats) => self.settle_ok(collected, stats),
            Err(StoreError::Lost(lost)) if self.lost_in_batch(&collected, &lost) => {
                self.settle_lost(collected, lost)
            }
            Err(error) => self.settle_failed(collected, error),
        }
    }

    /// Makes the strays pending, as if their markers had arrived now.
    fn keep_strays(&mut self, strays: Vec<Arc<GalaxyCell>>, since: Instant) {
        for cell in strays {
            let name = cell.name().to_owned();
            self.pending.entry(name).or_insert(Pending { cell, since });
        }
    }

    fn settle_ok(&mut self, collected: Collected, stats: WriteStats) {
        let last = collected.is_final();
        let durable = collected.durable_requests();
        if durable > 0 {
            self.metrics.durable.committed(durable);
        }
        let Collected {
            galaxies,
            taken,
            strays,
            strays_since,
            riding,
            sent,
            started,
            ..
        } = collected;
        let duration = started.elapsed();
        let wrote = !(galaxies.is_empty() && self.deletions.is_empty());
        let was_held = !self.quarantine.is_empty();
        self.quarantine
            .saved(galaxies.iter().map(|g| g.name.as_str()));
        self.saved(Lane::Batches, duration, stats);
        // Only a batch that reached the store ends a stall: one with nothing to write made
        // no call, and says nothing of a call that hangs or fails (a lease's renewal).
        if wrote || durable > 0 || (last && self.renewal.is_some()) {
            self.metrics.note_call_answered();
        }
        if was_held && self.quarantine.is_empty() && self.job_failure.is_none() {
            // The last held galaxy is saved again (no lane failing, or it just recovered).
            self.metrics.set_recovered();
        }
        if wrote {
            log::debug!(target: LOG, "batch committed: {} systems, {} rows, {} galaxies, {} deletions in {duration:?}",
                stats.systems, stats.rows, galaxies.len(), self.deletions.len());
        }
        self.galaxies.deletions_committed(&self.deletions);
        self.deletions.clear();
        self.deleted_since = None;
        for galaxy in &galaxies {
            if let Some(tick) = galaxy.tick {
                self.saved_ticks.insert(galaxy.name.clone(), tick);
            }
        }
        // The batch's fence renewed the leases of the galaxies it covered: those with a
        // tick or rows, not an empty cut's (and not the final batch's, which released them).
        let lease_until = self.lease_until(sent).filter(|_| !last);
        let fenced: HashSet<&str> = match lease_until {
            Some(_) => galaxies
                .iter()
                .filter(|g| g.tick.is_some() || !g.systems.is_empty())
                .map(|g| g.name.as_str())
                .collect(),
            None => HashSet::new(),
        };
        for (cell, _) in &taken {
            cell.saved();
            if let Some(until) = lease_until.filter(|_| fenced.contains(cell.name())) {
                cell.renew_lease(until);
            }
        }
        // Changes made after the cut sent a fresh marker, still queued behind us; a held
        // galaxy's were not taken, and stay pending.
        let quarantine = &self.quarantine;
        self.pending.retain(|name, _| quarantine.is_held(name));
        self.keep_strays(strays, strays_since);
        self.ticks_due = false;
        self.publish_oldest();
        // Not everything is saved while a galaxy is held: flushes are told so, and durable
        // orders on a held galaxy (those on others are saved).
        let held = self.quarantine.failure().cloned();
        if let Some(failure) = &held {
            self.metrics.set_failed(failure.message.clone());
        }
        for ticket in riding {
            let held = held.as_ref().filter(|_| match &ticket.durable {
                Some(cell) => self.quarantine.is_held(cell.name()),
                None => true,
            });
            let outcome = match held {
                Some(failure) => Err(PersistError::Failed(failure.clone())),
                None => Ok(stats.systems),
            };
            self.answer(ticket, outcome);
        }
    }

    fn settle_failed(&mut self, collected: Collected, error: StoreError) {
        let Collected {
            galaxies,
            taken,
            strays,
            strays_since,
            riding,
            ..
        } = collected;
        self.keep_strays(strays, strays_since);
        for (cell, changes) in taken {
            cell.give_back(changes);
        }
        self.failed(Lane::Batches, &error);
        let failure = error.failure();
        if let StoreError::Inconsistent { galaxy, .. } = &error {
            self.store.forget_ids(galaxy);
            let in_batch = galaxies.iter().any(|g| &g.name == galaxy);
            if in_batch && self.quarantine.inconsistent(galaxy, failure.clone()) {
                // The others need not wait for a backoff that is about this one galaxy.
                if let Some(retry) = &mut self.failure {
                    retry.retry_at = self.clock.now();
                }
            }
        }
        for ticket in riding {
            if ticket.deadline.is_some() {
                self.tickets.push(ticket);
            } else {
                self.answer(ticket, Err(PersistError::Failed(failure.clone())));
            }
        }
        if let StoreError::Lost(lost) = error {
            // None of them was in the batch (a store's slip): dropped all the same.
            self.lose(lost);
        }
    }

    /// Galaxies of the batch were taken by another daemon, so nothing was written: every
    /// cut goes back (the lost galaxies' too, so their loss counts them), the flushes wait
    /// for the retry, which [`Writer::batch`] makes at once, and the lost galaxies are
    /// dropped (after the flushes are back in line: those that lost changes are told so
    /// when answered). Not a failure of the database: health and backoff are left alone.
    fn settle_lost(&mut self, collected: Collected, lost: Vec<LostGalaxy>) {
        let Collected {
            taken,
            strays,
            strays_since,
            mut riding,
            with_held,
            ..
        } = collected;
        self.keep_strays(strays, strays_since);
        for (cell, changes) in taken {
            cell.give_back(changes);
        }
        if with_held {
            // The retry tries the held galaxies too, as this batch did.
            self.quarantine.interval();
        }
        riding.append(&mut self.tickets);
        self.tickets = riding;
        self.lose(lost);
    }
}

/// The history entries of a cut's orders, oldest first. Each order's system is among the
/// cut's rows (an order marks its system), where its coordinates are read.
fn history_of(name: &str, cut: &Cut) -> Vec<HistoryEntry> {
    let orders = cut.changes.history().len();
    let mut entries = Vec::with_capacity(2 * orders);
    for order in cut.changes.history().iter() {
        let at = cut.rows.binary_search_by_key(&order.index, |row| row.index);
        match at {
            Ok(at) => entries.extend(order.entries(cut.rows[at].system.coords())),
            Err(_) => log::error!(target: LOG,
                "galaxy '{name}': an order of system {} is not among the rows saved with it; its history entry is left out", order.index),
        }
    }
    entries
}
