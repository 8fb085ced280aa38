//! The writer thread's loop: waiting for work, reading messages, and deciding by the
//! [`Clock`](crate::clock::Clock) when a batch, a chunk of bulk work, the periodic work or
//! a flush's deadline is due; and the end of the thread, with its report. A batch itself
//! is `batch.rs`'s, the aftermath of a transaction `lanes.rs`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use super::jobs::{Creation, Finished};
use super::lanes::Lane;
use super::message::Message;
use super::report::{FlushReport, PersistError, LOG};
use super::state::{synced_if, Pending, Ticket, TicketReply, Writer};
use crate::galaxies::GalaxyCell;
use crate::persistence::slow::{written, SlowKind};
use crate::store::{ArchiveRow, FailureKind, StoreError};

/// History segments deleted per interval at most: a segment is one galaxy's entries of one
/// batch, so this keeps up with a thousand galaxies saved every interval.
const PRUNE_SEGMENTS: usize = 10_000;

impl Writer {
    pub(super) fn run(mut self) {
        log::debug!(target: LOG, "writer started (batch delay {:?})", self.settings.batch_delay());
        self.store.on_writer_thread();
        loop {
            let wake = self.next_wake();
            match self.rx.recv_timeout(self.clock.until(wake)) {
                Ok(message) => {
                    self.handle(message);
                    // Whatever queued meanwhile joins this batch.
                    self.drain();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if !self.has_work() && self.tickets.is_empty() {
                        break;
                    }
                    // recv no longer waits once disconnected: wait here until work is due.
                    std::thread::sleep(self.clock.until(wake));
                    // Every handle is gone: save what is left, as at shutdown.
                    if !self
                        .tickets
                        .iter()
                        .any(|t| matches!(t.reply, TicketReply::Shutdown(_)))
                    {
                        let (reply, _ignored) = bounded(1);
                        let deadline = self.clock.now() + self.settings.shutdown_timeout;
                        self.tickets
                            .push(Ticket::new(Some(deadline), TicketReply::Shutdown(reply)));
                    }
                }
            }
            self.work(self.clock.now());
            if let Some(reply) = self.exit.take() {
                self.finish(reply);
                break;
            }
        }
        log::debug!(target: LOG, "writer stopped");
    }

    /// Handles every message already queued.
    pub(super) fn drain(&mut self) {
        while let Ok(message) = self.rx.try_recv() {
            self.handle(message);
        }
    }

    /// One turn of the loop without its wait: the queued messages, then whatever work the
    /// clock says is due. True once the writer has answered a shutdown (its thread would
    /// end here).
    #[cfg(test)]
    pub(super) fn turn(&mut self) -> bool {
        self.drain();
        self.work(self.clock.now());
        match self.exit.take() {
            Some(reply) => {
                self.finish(reply);
                true
            }
            None => false,
        }
    }

    /// The end of the thread: creations stop, the report goes out.
    pub(super) fn finish(&mut self, reply: Sender<FlushReport>) {
        self.jobs.cancel_creations();
        for name in self.jobs.purges() {
            log::info!(target: LOG, "galaxy '{name}' is deleted; its remaining rows are removed at the next start");
        }
        let report = self.report();
        self.store.finish(report.all_saved());
        let _ = reply.send(report);
    }

    pub(super) fn handle(&mut self, message: Message) {
        match message {
            Message::Dirty { cell, since } => self.make_pending(cell, since),
            Message::Create {
                galaxy,
                durable,
                restoring,
                reply,
            } => {
                if self.creating {
                    let creation = Creation::new(galaxy, durable, reply);
                    self.jobs.create(creation.restoring(restoring));
                } else {
                    let _ = reply.send(Err(PersistError::Stopped));
                }
            }
            Message::AdoptIds { name, ids, epoch } => {
                if let Some(epoch) = epoch {
                    self.store.own(&name, epoch);
                }
                self.store.adopt_ids(&name, ids);
            }
            // Owned already: in memory after all (another load, a creation), under the
            // epoch the store has.
            Message::TakenUnused { name, epoch } if !self.store.owns(&name) => {
                self.store.own(&name, epoch);
                self.store.disown(&[name]);
            }
            Message::TakenUnused { .. } => {}
            Message::StopCreating => {
                self.creating = false;
                self.jobs.cancel_creations();
            }
            Message::Delete { name, epoch } => {
                // Fenced like any write: the batch that marks it deleted checks the epoch.
                if let Some(epoch) = epoch {
                    self.store.own(&name, epoch);
                }
                self.pending.remove(&name);
                self.saved_ticks.remove(&name);
                self.store.forget_ids(&name);
                if !self.deletions.contains(&name) {
                    self.deletions.push(name.clone());
                }
                let now = self.clock.now();
                self.deleted_since.get_or_insert(now);
                self.publish_oldest();
                // Its rows go once the batch that marks it deleted has committed.
                self.jobs.purge(name);
            }
            Message::Flush {
                deadline,
                durable: None,
                reply,
            } => self
                .tickets
                .push(Ticket::new(deadline, TicketReply::Flush(reply))),
            Message::Flush {
                durable: Some(cell),
                reply,
                ..
            } => {
                self.metrics.durable.requested();
                // Its order's own marker may still be on its way (another thread made the
                // galaxy dirty and has not sent it yet): the galaxy is pending from now.
                self.make_pending(cell.clone(), self.clock.now());
                self.tickets.push(Ticket::durable(cell, reply));
            }
            Message::Shutdown { deadline, reply } => self
                .tickets
                .push(Ticket::new(Some(deadline), TicketReply::Shutdown(reply))),
            Message::Archive {
                name,
                systems,
                body,
                reply,
            } => {
                let archive = ArchiveRow {
                    name: &name,
                    format: crate::archive::FORMAT_VERSION,
                    systems,
                    body: &body,
                };
                let _ = reply.send(self.write_archive(&archive));
            }
            Message::DeleteArchive { name, reply } => {
                let _ = reply.send(self.delete_archive(&name));
            }
            Message::Exec(job) => job(self.store.as_mut()),
        }
    }

    /// Galaxy `cell` has (or may have) changes since `since`. A late marker of a galaxy
    /// deleted or lost since is dropped; a marker of a newer cell under the same name
    /// (recreated) replaces the stale one, or the new cell's changes would never be cut.
    pub(super) fn make_pending(&mut self, cell: Arc<GalaxyCell>, since: Instant) {
        if cell.is_gone() {
            return;
        }
        match self.pending.get_mut(cell.name()) {
            // Already pending since earlier: nothing changes (and with many durable orders
            // on a busy galaxy, this is most of them).
            Some(pending) if Arc::ptr_eq(&pending.cell, &cell) => return,
            Some(pending) => *pending = Pending { cell, since },
            None => {
                let name = cell.name().to_owned();
                self.pending.insert(name, Pending { cell, since });
            }
        }
        self.publish_oldest();
    }

    pub(super) fn has_work(&self) -> bool {
        !self.pending.is_empty() || !self.deletions.is_empty() || !self.jobs.is_empty()
    }

    /// When the loop must wake up without a message.
    pub(super) fn next_wake(&self) -> Instant {
        let mut wake = self.next_interval;
        if let Some(renewal) = &self.renewal {
            wake = wake.min(renewal.next_at);
        }
        let now = self.clock.now();
        for due in [self.batch_due(now), self.chunk_due(now), self.probe_due()]
            .into_iter()
            .flatten()
        {
            wake = wake.min(due);
        }
        for ticket in &self.tickets {
            if let Some(deadline) = ticket.deadline {
                wake = wake.min(deadline);
            }
        }
        wake
    }

    /// When the next batch should commit, if there is anything to commit; `now` when it
    /// should commit at once.
    pub(super) fn batch_due(&self, now: Instant) -> Option<Instant> {
        let due = if !self.tickets.is_empty() || self.ticks_due {
            Some(now)
        } else {
            // A held galaxy's changes wait for the interval, not for a batch of their own.
            let pending = self.pending.iter();
            let waiting = pending.filter(|(name, _)| !self.quarantine.is_held(name));
            let oldest = waiting
                .map(|(_, p)| p.since)
                .chain(self.deleted_since)
                .min();
            oldest.map(|since| since + self.settings.batch_delay())
        }?;
        Some(match &self.failure {
            Some(failure) => due.max(failure.retry_at),
            None => due,
        })
    }

    /// When the next chunk of a bulk job may run: at once, unless bulk work is backing
    /// off after a failure, or the job is the removal of a galaxy whose deletion is not
    /// committed yet (the next batch commits it).
    pub(super) fn chunk_due(&self, now: Instant) -> Option<Instant> {
        let name = self.jobs.next_name()?;
        if self.deletions.iter().any(|deleted| deleted == name) {
            return None;
        }
        Some(
            self.job_failure
                .as_ref()
                .map_or(now, |f| f.retry_at.max(now)),
        )
    }

    /// Runs one chunk of the oldest bulk job, in its own transaction.
    pub(super) fn chunk(&mut self) {
        let started = Instant::now();
        // Every chunk renews the lease on its galaxy (several daemons) from its start.
        let sent = self.clock.now();
        let job = self.jobs.next_name().map(str::to_owned);
        // A chunk that hangs holds up the batches behind it: it counts as a stall while
        // it runs. One that fails does not (orders go first: a failing bulk job backs off
        // without holding them up), so any answer ends it.
        self.metrics.note_call_started();
        let durable = self.jobs.next_is_durable();
        let kind = match self.jobs.next_is_creation() {
            true => SlowKind::CreateChunk,
            false => SlowKind::PurgeChunk,
        };
        let (jobs, slow) = (&mut self.jobs, &self.metrics.slow);
        let result = synced_if(self.store.as_mut(), durable, |store| {
            slow.time(
                kind,
                || jobs.step(store),
                |r| written(&r.as_ref().map(|r| r.0)),
            )
        });
        self.answered_outside_batches();
        match result {
            Ok((stats, finished)) => {
                self.saved(Lane::Jobs, started.elapsed(), stats);
                match finished {
                    Some(Finished::Created(creation)) => {
                        let (name, tick) = (creation.name().to_owned(), creation.tick());
                        let lease_until = self.lease_until(sent);
                        if creation.answer(lease_until) {
                            self.saved_ticks.insert(name, tick);
                        } else {
                            // Its caller's thread is gone: the galaxy is stored but no
                            // one holds it; it loads on its next access, here or, once
                            // its lease runs out, on another daemon.
                            self.store.forget_ids(&name);
                            self.store.disown(std::slice::from_ref(&name));
                        }
                    }
                    Some(Finished::Purged) | None => {}
                }
            }
            // Another daemon took the job's galaxy: the job is dropped, not retried.
            Err(StoreError::Lost(lost))
                if job
                    .as_deref()
                    .is_some_and(|job| lost.iter().any(|l| l.name == job)) =>
            {
                self.lose(lost);
            }
            Err(error) => self.failed(Lane::Jobs, &error),
        }
    }

    /// A chunk ended or a renewal succeeded: the store answers, so saving is not
    /// stalled — unless the batches themselves are failing, which only a batch can end.
    pub(super) fn answered_outside_batches(&self) {
        if self.failure.is_none() {
            self.metrics.note_call_answered();
        }
    }

    /// What is due at `now`: the probes of failing lanes, the interval's periodic work, a
    /// batch, one chunk of bulk work, and the flushes whose deadline passed.
    pub(super) fn work(&mut self, now: Instant) {
        // First, so that a lost galaxy is out of memory before a batch is cut.
        if self.renewal.as_ref().is_some_and(|r| r.next_at <= now) {
            self.renew();
        }
        // Before the batch and the chunk: a store seen down that answers again has its
        // lanes retried in this very turn.
        self.probe(self.clock.now());
        // What the store last knew (a lost session forgets it; a new one reads it).
        self.metrics.set_replication(self.store.replication());
        let now = self.clock.now();
        if now >= self.next_interval {
            self.ticks_due = true;
            self.quarantine.interval();
            while self.next_interval <= now {
                self.next_interval += self.settings.auto_save_interval;
            }
        }
        if self.batch_due(now).is_some_and(|due| due <= now) {
            let periodic = self.ticks_due;
            self.batch();
            // Not after the final batch: it released this daemon's galaxies and jobs for
            // others to take at once, and the interval's work would take jobs back.
            if periodic && self.failure.is_none() && self.exit.is_none() {
                self.periodic();
            }
        }
        // One chunk of bulk work per turn, after the batch that was due: under constant
        // orders, batches and chunks alternate, and neither starves the other.
        let now = self.clock.now();
        if self.exit.is_none() && self.chunk_due(now).is_some_and(|due| due <= now) {
            self.chunk();
        }
        // Bulk work held back for lack of room: creations waiting behind it are answered
        // now, not after the shortage (orders first; their callers see a 503).
        if let Some(failure) = self
            .job_failure
            .as_ref()
            .filter(|f| f.error.kind == FailureKind::Full)
        {
            let failure = failure.error.clone();
            self.jobs.refuse_waiting_creations(&failure);
        }
        self.drop_idle_job_failure();
        self.expire_tickets(self.clock.now());
    }

    /// After the interval's batch committed: idle galaxies leave memory, jobs other
    /// daemons left behind are taken over, and the store gets its periodic upkeep
    /// (SQLite: a WAL checkpoint).
    pub(super) fn periodic(&mut self) {
        let now = self.clock.now();
        if let Some(idle) = self.settings.galaxy_idle {
            self.evict_idle(now, idle);
        }
        if self.renewal.is_some() {
            self.adopt_orphaned_jobs();
        }
        // Idle for a whole interval: the store may give space back (SQLite truncates its
        // WAL); busy: only upkeep that never waits on readers.
        let idle = self
            .last_commit
            .is_none_or(|at| now.saturating_duration_since(at) >= self.settings.auto_save_interval);
        self.store.maintain(idle);
        if let Some(keep) = self.settings.history_keep {
            self.prune_history(keep);
        }
    }

    /// Deletes history older than `keep` (`GWAR_HISTORY_KEEP_SECS`), a bounded number of
    /// segments per interval, so that pruning a backlog never holds up a batch for long.
    fn prune_history(&mut self, keep: Duration) {
        match self.store.prune_history(keep, PRUNE_SEGMENTS) {
            Ok(0) => {}
            Ok(pruned) => {
                log::debug!(target: LOG, "{pruned} history segments older than {keep:?} deleted")
            }
            Err(error) => {
                log::warn!(target: LOG, "deleting old history failed (tried again next interval): {error}")
            }
        }
    }

    pub(super) fn answer(&mut self, ticket: Ticket, result: Result<u64, PersistError>) {
        let result = match (&ticket.durable, result) {
            // A durable order is answered for its own galaxy: saved, unless the galaxy was
            // lost with unsaved changes (the order among them), whatever other galaxies did.
            (Some(cell), Ok(_)) if cell.lost_unsaved() => {
                Err(PersistError::Lost(vec![cell.name().to_owned()]))
            }
            (Some(_), result) => result,
            // Saved, but not everything it covered: some was dropped with a lost galaxy.
            (None, Ok(_)) if !ticket.lost.is_empty() => Err(PersistError::Lost(ticket.lost)),
            (None, result) => result,
        };
        if ticket.durable.is_some() {
            self.metrics
                .durable
                .answered(ticket.arrived.elapsed(), result.is_ok());
        }
        match ticket.reply {
            TicketReply::Flush(reply) => {
                let _ = reply.send(result);
            }
            TicketReply::Shutdown(reply) => {
                if let Err(error) = result {
                    log::warn!(target: LOG, "final flush incomplete: {error}");
                }
                self.exit = Some(reply);
            }
        }
    }

    pub(super) fn expire_tickets(&mut self, now: Instant) {
        let (expired, waiting): (Vec<Ticket>, Vec<Ticket>) = std::mem::take(&mut self.tickets)
            .into_iter()
            .partition(|t| t.deadline.is_some_and(|d| d <= now));
        self.tickets = waiting;
        for ticket in expired {
            let last_error = self.failure.as_ref().map(|f| f.error.clone());
            self.answer(ticket, Err(PersistError::TimedOut { last_error }));
        }
    }

    /// Drops clean galaxies nobody touched for `idle` from memory; they load again on their
    /// next access. Only the writer can do this safely: it alone knows that a galaxy has no
    /// batch in flight (none is, between batches) and that its tick is saved. With several
    /// daemons, they are no longer renewed (see
    /// [`WriteStore::disown`](crate::store::WriteStore::disown)).
    pub(super) fn evict_idle(&mut self, now: Instant, idle: Duration) {
        let mut evicted = Vec::new();
        for cell in self.galaxies.all() {
            let name = cell.name();
            if self.pending.contains_key(name) {
                continue;
            }
            let saved_tick = self.saved_ticks.get(name).copied();
            if !self.galaxies.evict_if_idle(&cell, now, idle, saved_tick) {
                continue;
            }
            self.store.forget_ids(name);
            self.saved_ticks.remove(name);
            self.metrics
                .galaxies_evicted_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::debug!(target: LOG, "galaxy '{name}' evicted after {idle:?} idle");
            evicted.push(name.to_owned());
        }
        if !evicted.is_empty() {
            self.store.disown(&evicted);
        }
    }

    /// When the oldest change (or deletion) not yet committed was made.
    pub(super) fn oldest_unsaved(&self) -> Option<Instant> {
        let changes = self.pending.values().map(|p| p.since);
        changes.chain(self.deleted_since).min()
    }

    /// The oldest change this writer has not committed, for the unsaved-age policy.
    pub(super) fn publish_oldest(&self) {
        self.metrics.set_oldest_unsaved(self.oldest_unsaved());
    }

    /// What is still unsaved (every galaxy whose change set is not empty), and what was
    /// dropped with galaxies another daemon took.
    pub(super) fn report(&self) -> FlushReport {
        let unsaved = self.galaxies.unsaved();
        let lost = self.losses.lock().clone();
        let error = if !unsaved.is_empty() || !self.deletions.is_empty() {
            Some(PersistError::TimedOut {
                last_error: self.failure.as_ref().map(|f| f.error.clone()),
            })
        } else if !lost.is_empty() {
            Some(PersistError::Lost(
                lost.iter().map(|(name, _)| name.clone()).collect(),
            ))
        } else {
            None
        };
        FlushReport {
            unsaved,
            unsaved_deletions: self.deletions.clone(),
            lost,
            error,
        }
    }
}
