//! A model of galaxy ownership (issue 17), explored over random interleavings: nothing
//! written under epoch `e` commits after epoch `e + 1` was granted, and the committed
//! history of a galaxy is a sequence of non-decreasing epochs.
//!
//! The model is the design's SQL, executed by a toy server with PostgreSQL's READ
//! COMMITTED behaviour where it matters:
//! - `galaxy_owners` rows (`epoch`, `owner`, `expires_at`) and one data row per galaxy
//!   (standing for its `systems` rows), each with a row lock held until the holding
//!   transaction ends;
//! - an UPDATE that needs a locked row waits, and once the lock is free evaluates its WHERE
//!   on the newest committed version (the re-evaluation READ COMMITTED does after a wait);
//! - `now()` is the transaction's start: for an autocommit statement the moment it was
//!   sent, however long it then waited; for the fence, the batch's `BEGIN`;
//! - optionally `idle_in_transaction_session_timeout`: a transaction whose client sent
//!   nothing for that long is rolled back and its locks released.
//!
//! Daemons have a claims session (the take) and a writer session (batches: `BEGIN`, one
//! write per galaxy of the cut, the fence as the last statement, `COMMIT`; renewals and
//! releases between batches), and local lease deadlines (`sent + lease - margin`). A
//! paused daemon (SIGSTOP) takes no step, while the server goes on executing what it was
//! sent and the clock advances. Takes are issued far more freely than the real daemon
//! does (any galaxy the daemon does not believe it holds, at any moment), which only makes
//! the model more adversarial.
//!
//! The same explorer runs deliberately broken fences, which must be caught: the check made
//! first without a lock ([`Fence::CheckFirst`]), and the client's own deadline trusted at
//! commit time ([`Fence::LocalDeadline`], the timing-only approach). Without the idle
//! timeout (a second line of defence, which the fence must not rely on) the explorer finds
//! a stale commit in both.
//!
//! Schedules come from a seeded xorshift generator, so a failure names the seed and prints
//! the trace of the schedule that broke the property; `GWAR_FENCE_SCHEDULES` sets how many
//! schedules each variant runs.

use std::fmt::Write as _;

/// How a batch makes sure its galaxies are still its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fence {
    /// The design: `UPDATE galaxy_owners SET expires_at = now() + lease WHERE owner = $me
    /// AND (galaxy, epoch) IN (…) RETURNING galaxy` as the last statement before COMMIT.
    Last,
    /// Broken: the same condition read (no lock) right after BEGIN; no fence at the end.
    CheckFirst,
    /// Broken: no check in the database; the writer commits while its local deadlines
    /// have not passed.
    LocalDeadline,
}

#[derive(Clone, Copy, Debug)]
struct Params {
    fence: Fence,
    /// `idle_in_transaction_session_timeout`, in ticks.
    idle_timeout: Option<u64>,
    daemons: usize,
    galaxies: usize,
    lease: u64,
    /// The local deadline is `sent + lease - margin`.
    margin: u64,
    steps: usize,
}

/// A committed version of a `galaxy_owners` row.
#[derive(Clone, Debug)]
struct Row {
    epoch: u64,
    owner: Option<usize>,
    expires_at: u64,
}

/// A statement sent to the server and not executed yet.
#[derive(Clone, Debug)]
enum Stmt {
    /// Autocommit take of galaxy `g`, sent at `t0` (its `now()`).
    Take {
        g: usize,
        t0: u64,
    },
    /// Autocommit renewal of every galaxy the writer holds, as `(galaxy, epoch)`.
    Renew {
        held: Vec<(usize, u64)>,
        t0: u64,
    },
    /// Autocommit release (`owner = NULL, expires_at = now()`), fenced by the epoch.
    Release {
        g: usize,
        epoch: u64,
        t0: u64,
    },
    /// `UPDATE systems …` of galaxy `g` inside the batch.
    Write {
        g: usize,
    },
    /// The fence on the batch's cut.
    Fence {
        cut: Vec<(usize, u64)>,
    },
    Commit,
}

/// The server's answer, waiting for the client to read it.
#[derive(Clone, Debug)]
enum Answer {
    Taken(Option<u64>),
    /// The galaxies of the statement that matched (renew, fence).
    Matched(Vec<usize>),
    Done,
    /// The session was terminated (idle in transaction): the client reconnects.
    Failed,
}

/// A batch transaction open on the server.
#[derive(Clone, Debug, Default)]
struct Txn {
    start: u64,
    /// `(galaxy, epoch the data was cut under)`.
    writes: Vec<(usize, u64)>,
    /// Rows the fence updated: `(galaxy, new expires_at)`, locked until the end.
    fenced: Vec<(usize, u64)>,
}

#[derive(Clone, Debug, Default)]
struct Session {
    pending: Option<Stmt>,
    answer: Option<Answer>,
    txn: Option<Txn>,
    /// When the server last finished something for this session (for the idle timeout).
    last_activity: u64,
}

/// What the writer thread is doing.
#[derive(Clone, Debug)]
enum Phase {
    Idle,
    /// A batch on `cut`, begun at `sent`; `next` writes done.
    Batch {
        cut: Vec<(usize, u64)>,
        sent: u64,
        next: usize,
        fenced: bool,
        committing: bool,
    },
    Renewing {
        sent: u64,
        held: Vec<(usize, u64)>,
    },
    Releasing,
}

#[derive(Clone, Debug)]
struct Daemon {
    paused: bool,
    /// Per galaxy: the epoch it believes it holds and its local deadline.
    held: Vec<Option<(u64, u64)>>,
    writer: Session,
    claims: Session,
    phase: Phase,
    /// The galaxy of the take in flight and when it was sent (its `now()`).
    taking: Option<(usize, u64)>,
}

/// Which session of a daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Writer,
    Claims,
}

type SessionId = (usize, Side);

#[derive(Clone, Copy, Debug)]
enum Action {
    Tick,
    Pause(usize),
    Resume(usize),
    Client(usize, Side),
    Server(usize, Side),
    KillIdle(usize),
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    commits: u64,
    /// Takes granted while the previous owner still believed it held the galaxy.
    takes_from_a_believer: u64,
    /// Batches whose fence refused a galaxy (the zombie caught).
    refused: u64,
    killed: u64,
}

struct World {
    p: Params,
    now: u64,
    rows: Vec<Row>,
    own_lock: Vec<Option<SessionId>>,
    data_lock: Vec<Option<SessionId>>,
    /// The highest epoch granted per galaxy.
    granted: Vec<u64>,
    /// Epochs of the committed writes per galaxy, in commit order.
    history: Vec<Vec<u64>>,
    daemons: Vec<Daemon>,
    trace: String,
    violation: Option<String>,
    tally: Tally,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

impl World {
    fn new(p: Params) -> World {
        let daemon = Daemon {
            paused: false,
            held: vec![None; p.galaxies],
            writer: Session::default(),
            claims: Session::default(),
            phase: Phase::Idle,
            taking: None,
        };
        World {
            p,
            now: 0,
            rows: vec![
                Row {
                    epoch: 0,
                    owner: None,
                    expires_at: 0,
                };
                p.galaxies
            ],
            own_lock: vec![None; p.galaxies],
            data_lock: vec![None; p.galaxies],
            granted: vec![0; p.galaxies],
            history: vec![Vec::new(); p.galaxies],
            daemons: vec![daemon; p.daemons],
            trace: String::new(),
            violation: None,
            tally: Tally::default(),
        }
    }

    fn session(&mut self, (d, side): SessionId) -> &mut Session {
        match side {
            Side::Writer => &mut self.daemons[d].writer,
            Side::Claims => &mut self.daemons[d].claims,
        }
    }

    fn log(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.trace, "t={} {}", self.now, line.as_ref());
    }

    /// Every action enabled now.
    fn enabled(&self) -> Vec<Action> {
        let mut actions = vec![Action::Tick, Action::Tick];
        for (d, daemon) in self.daemons.iter().enumerate() {
            if daemon.paused {
                actions.push(Action::Resume(d));
            } else {
                actions.push(Action::Pause(d));
                for side in [Side::Writer, Side::Claims] {
                    if self.client_can_step(d, side) {
                        actions.push(Action::Client(d, side));
                        actions.push(Action::Client(d, side));
                    }
                }
            }
            for side in [Side::Writer, Side::Claims] {
                if self.server_can_execute((d, side)) {
                    actions.push(Action::Server(d, side));
                    actions.push(Action::Server(d, side));
                }
            }
            if self.idle_expired(d) {
                actions.push(Action::KillIdle(d));
            }
        }
        actions
    }

    fn client_can_step(&self, d: usize, side: Side) -> bool {
        let daemon = &self.daemons[d];
        let session = match side {
            Side::Writer => &daemon.writer,
            Side::Claims => &daemon.claims,
        };
        if session.pending.is_some() {
            return false;
        }
        if session.answer.is_some() {
            return true;
        }
        match side {
            Side::Writer => matches!(daemon.phase, Phase::Idle) || self.batch_can_go_on(d),
            Side::Claims => daemon.taking.is_none() && daemon.held.iter().any(Option::is_none),
        }
    }

    /// A batch whose next statement needs no answer first (after BEGIN).
    fn batch_can_go_on(&self, d: usize) -> bool {
        matches!(
            &self.daemons[d].phase,
            Phase::Batch {
                next: 0,
                fenced: false,
                committing: false,
                ..
            }
        ) && self.daemons[d].writer.txn.is_some()
    }

    fn idle_expired(&self, d: usize) -> bool {
        let Some(timeout) = self.p.idle_timeout else {
            return false;
        };
        let w = &self.daemons[d].writer;
        w.txn.is_some() && w.pending.is_none() && self.now > w.last_activity + timeout
    }

    /// Whether the session's pending statement can run: its row locks are free or its own.
    fn server_can_execute(&self, id: SessionId) -> bool {
        let (d, side) = id;
        let session = match side {
            Side::Writer => &self.daemons[d].writer,
            Side::Claims => &self.daemons[d].claims,
        };
        let free = |lock: &Option<SessionId>| lock.is_none() || *lock == Some(id);
        match &session.pending {
            None => false,
            Some(Stmt::Take { g, .. }) | Some(Stmt::Release { g, .. }) => free(&self.own_lock[*g]),
            Some(Stmt::Renew { held, .. }) => held.iter().all(|(g, _)| free(&self.own_lock[*g])),
            Some(Stmt::Write { g }) => free(&self.data_lock[*g]),
            Some(Stmt::Fence { cut }) => cut.iter().all(|(g, _)| free(&self.own_lock[*g])),
            Some(Stmt::Commit) => true,
        }
    }

    fn step(&mut self, action: Action, rng: &mut Rng) {
        match action {
            Action::Tick => self.now += 1,
            Action::Pause(d) => {
                self.daemons[d].paused = true;
                self.log(format!("d{d} paused"));
            }
            Action::Resume(d) => {
                self.daemons[d].paused = false;
                self.log(format!("d{d} resumed"));
            }
            Action::Client(d, side) => self.client_step(d, side, rng),
            Action::Server(d, side) => self.execute((d, side)),
            Action::KillIdle(d) => {
                self.tally.killed += 1;
                self.end_txn((d, Side::Writer));
                self.daemons[d].writer.answer = Some(Answer::Failed);
                self.log(format!(
                    "server: d{d}'s writer session killed (idle in transaction)"
                ));
            }
        }
        self.check_beliefs();
    }

    /// Releases the transaction's locks and forgets it (rollback or after commit).
    fn end_txn(&mut self, id: SessionId) {
        self.session(id).txn = None;
        for lock in self.own_lock.iter_mut().chain(self.data_lock.iter_mut()) {
            if *lock == Some(id) {
                *lock = None;
            }
        }
    }

    fn send(&mut self, id: SessionId, stmt: Stmt) {
        self.log(format!("d{} {:?} sends {stmt:?}", id.0, id.1));
        self.session(id).pending = Some(stmt);
    }

    fn lease_deadline(&self, sent: u64) -> u64 {
        sent + self.p.lease - self.p.margin
    }

    fn client_step(&mut self, d: usize, side: Side, rng: &mut Rng) {
        let now = self.now;
        let id = (d, side);
        let answer = self.session(id).answer.take();
        if side == Side::Claims {
            match answer {
                Some(Answer::Taken(epoch)) => {
                    let (g, t0) = self.daemons[d].taking.take().expect("a take was in flight");
                    if let Some(epoch) = epoch {
                        self.daemons[d].held[g] = Some((epoch, self.lease_deadline(t0)));
                        self.log(format!("d{d} holds g{g} at epoch {epoch}"));
                    }
                }
                Some(_) => self.daemons[d].taking = None,
                None => {
                    let free: Vec<usize> = (0..self.p.galaxies)
                        .filter(|&g| self.daemons[d].held[g].is_none())
                        .collect();
                    let g = free[rng.below(free.len())];
                    self.daemons[d].taking = Some((g, now));
                    self.send(id, Stmt::Take { g, t0: now });
                }
            }
            return;
        }
        let phase = std::mem::replace(&mut self.daemons[d].phase, Phase::Idle);
        match (phase, answer) {
            (_, Some(Answer::Failed)) => {
                self.log(format!("d{d} writer reconnects"));
            }
            (Phase::Idle, None) => self.writer_idle(d, rng),
            (Phase::Renewing { sent, held }, Some(Answer::Matched(matched))) => {
                for (g, epoch) in held {
                    // Released meanwhile, or taken again at another epoch: not this answer's.
                    if self.daemons[d].held[g].is_none_or(|(now_held, _)| now_held != epoch) {
                        continue;
                    }
                    if matched.contains(&g) {
                        self.daemons[d].held[g] = Some((epoch, self.lease_deadline(sent)));
                    } else {
                        self.lose(d, g);
                    }
                }
            }
            (Phase::Releasing, Some(_)) => {}
            (
                Phase::Batch {
                    cut,
                    sent,
                    next,
                    fenced,
                    committing,
                },
                answer,
            ) => self.batch_step(d, cut, sent, next, fenced, committing, answer),
            (phase, answer) => unreachable!("writer of d{d} in {phase:?} got {answer:?}"),
        }
    }

    fn lose(&mut self, d: usize, g: usize) {
        self.daemons[d].held[g] = None;
        self.log(format!("d{d} lost g{g}"));
    }

    /// A writer between batches: a batch on some of what it holds, a renewal, or a release.
    fn writer_idle(&mut self, d: usize, rng: &mut Rng) {
        let now = self.now;
        let id = (d, Side::Writer);
        let held: Vec<(usize, u64)> = (0..self.p.galaxies)
            .filter_map(|g| self.daemons[d].held[g].map(|(e, _)| (g, e)))
            .collect();
        if held.is_empty() {
            return;
        }
        match rng.below(6) {
            0 | 1 => {
                self.daemons[d].phase = Phase::Renewing {
                    sent: now,
                    held: held.clone(),
                };
                self.send(id, Stmt::Renew { held, t0: now });
            }
            2 => {
                // A clean hand-over: the galaxy leaves memory first, then the row is freed.
                let (g, epoch) = held[rng.below(held.len())];
                self.daemons[d].held[g] = None;
                self.daemons[d].phase = Phase::Releasing;
                self.send(id, Stmt::Release { g, epoch, t0: now });
            }
            _ => {
                let cut: Vec<(usize, u64)> =
                    held.iter().copied().filter(|_| rng.below(3) != 0).collect();
                let cut = if cut.is_empty() {
                    held[..1].to_vec()
                } else {
                    cut
                };
                self.log(format!("d{d} BEGIN batch on {cut:?}"));
                self.daemons[d].writer.txn = Some(Txn {
                    start: now,
                    ..Txn::default()
                });
                self.daemons[d].writer.last_activity = now;
                if self.p.fence == Fence::CheckFirst {
                    // Read without a lock, right away; the answer comes with BEGIN.
                    let stale: Vec<usize> = cut
                        .iter()
                        .filter(|(g, e)| {
                            let row = &self.rows[*g];
                            row.owner != Some(d) || row.epoch != *e
                        })
                        .map(|(g, _)| *g)
                        .collect();
                    if !stale.is_empty() {
                        self.end_txn(id);
                        for g in stale {
                            self.lose(d, g);
                        }
                        return;
                    }
                }
                self.daemons[d].phase = Phase::Batch {
                    cut,
                    sent: now,
                    next: 0,
                    fenced: false,
                    committing: false,
                };
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_step(
        &mut self,
        d: usize,
        cut: Vec<(usize, u64)>,
        sent: u64,
        next: usize,
        fenced: bool,
        committing: bool,
        answer: Option<Answer>,
    ) {
        let id = (d, Side::Writer);
        if committing {
            self.log(format!("d{d} committed {cut:?}"));
            if self.p.fence == Fence::Last {
                for &(g, epoch) in &cut {
                    if self.daemons[d].held[g].is_some_and(|(held, _)| held == epoch) {
                        self.daemons[d].held[g] = Some((epoch, self.lease_deadline(sent)));
                    }
                }
            }
            return;
        }
        if fenced {
            let Some(Answer::Matched(matched)) = answer else {
                unreachable!("a fence answers with its rows")
            };
            if matched.len() == cut.len() {
                self.commit(d, cut, sent);
            } else {
                self.tally.refused += 1;
                self.log(format!("d{d} ROLLBACK: the fence matched only {matched:?}"));
                self.end_txn(id);
                for &(g, _) in &cut {
                    if !matched.contains(&g) {
                        self.lose(d, g);
                    }
                }
            }
            return;
        }
        // The writes, then the fence (or the broken variants' commit).
        if next < cut.len() {
            let g = cut[next].0;
            self.daemons[d].phase = Phase::Batch {
                cut,
                sent,
                next: next + 1,
                fenced: false,
                committing: false,
            };
            self.send(id, Stmt::Write { g });
            return;
        }
        match self.p.fence {
            Fence::Last => {
                self.daemons[d].phase = Phase::Batch {
                    cut: cut.clone(),
                    sent,
                    next,
                    fenced: true,
                    committing: false,
                };
                self.send(id, Stmt::Fence { cut });
            }
            Fence::CheckFirst => self.commit(d, cut, sent),
            Fence::LocalDeadline => {
                let now = self.now;
                let lapsed = cut.iter().any(|&(g, e)| {
                    self.daemons[d].held[g].is_none_or(|(held, until)| held != e || until <= now)
                });
                if lapsed {
                    self.log(format!("d{d} ROLLBACK: a local deadline passed"));
                    self.end_txn(id);
                } else {
                    self.commit(d, cut, sent);
                }
            }
        }
    }

    fn commit(&mut self, d: usize, cut: Vec<(usize, u64)>, sent: u64) {
        self.daemons[d].phase = Phase::Batch {
            cut,
            sent,
            next: 0,
            fenced: true,
            committing: true,
        };
        self.send((d, Side::Writer), Stmt::Commit);
    }

    /// The server runs a session's pending statement (its locks are free or its own).
    fn execute(&mut self, id: SessionId) {
        let (d, _) = id;
        let now = self.now;
        let stmt = self
            .session(id)
            .pending
            .take()
            .expect("a pending statement");
        let answer = match stmt {
            Stmt::Take { g, t0 } => {
                let row = &self.rows[g];
                if row.owner.is_none() || row.owner == Some(d) || row.expires_at < t0 {
                    let believers = (0..self.p.daemons)
                        .filter(|&o| o != d && self.daemons[o].held[g].is_some())
                        .count();
                    self.tally.takes_from_a_believer += (believers > 0) as u64;
                    let epoch = row.epoch + 1;
                    self.rows[g] = Row {
                        epoch,
                        owner: Some(d),
                        expires_at: t0 + self.p.lease,
                    };
                    self.granted[g] = epoch;
                    self.log(format!("server: epoch {epoch} of g{g} granted to d{d}"));
                    Answer::Taken(Some(epoch))
                } else {
                    Answer::Taken(None)
                }
            }
            Stmt::Renew { held, t0 } => {
                let matched: Vec<usize> = held
                    .iter()
                    .filter(|&&(g, e)| self.rows[g].owner == Some(d) && self.rows[g].epoch == e)
                    .map(|&(g, _)| g)
                    .collect();
                for &g in &matched {
                    self.rows[g].expires_at = t0 + self.p.lease;
                }
                Answer::Matched(matched)
            }
            Stmt::Release { g, epoch, t0 } => {
                if self.rows[g].owner == Some(d) && self.rows[g].epoch == epoch {
                    self.rows[g].owner = None;
                    self.rows[g].expires_at = t0;
                }
                Answer::Done
            }
            Stmt::Write { g } => {
                self.data_lock[g] = Some(id);
                let epoch = match &self.daemons[d].phase {
                    Phase::Batch { cut, .. } => cut.iter().find(|(c, _)| *c == g).unwrap().1,
                    phase => unreachable!("a write outside a batch: {phase:?}"),
                };
                let txn = self.session(id).txn.as_mut().expect("inside a batch");
                txn.writes.push((g, epoch));
                Answer::Done
            }
            Stmt::Fence { cut } => {
                let start = self.session(id).txn.as_ref().expect("inside a batch").start;
                let mut matched = Vec::new();
                for &(g, e) in &cut {
                    let row = &self.rows[g];
                    if row.owner == Some(d) && row.epoch == e {
                        self.own_lock[g] = Some(id);
                        matched.push(g);
                        let expires = start + self.p.lease;
                        self.session(id)
                            .txn
                            .as_mut()
                            .unwrap()
                            .fenced
                            .push((g, expires));
                    }
                }
                Answer::Matched(matched)
            }
            Stmt::Commit => {
                let txn = self.session(id).txn.clone().expect("inside a batch");
                for &(g, e) in &txn.writes {
                    if self.granted[g] > e && self.violation.is_none() {
                        self.violation = Some(format!(
                            "d{d} committed a write of g{g} under epoch {e} after epoch {} \
                             was granted",
                            self.granted[g]
                        ));
                    }
                    if self.history[g].last().is_some_and(|&last| last > e)
                        && self.violation.is_none()
                    {
                        self.violation = Some(format!(
                            "g{g}'s committed epochs go down: {:?} then {e}",
                            self.history[g]
                        ));
                    }
                    self.history[g].push(e);
                }
                for &(g, expires) in &txn.fenced {
                    self.rows[g].expires_at = expires;
                }
                self.tally.commits += 1;
                self.end_txn(id);
                Answer::Done
            }
        };
        let session = self.session(id);
        session.answer = Some(answer);
        session.last_activity = now;
    }

    /// A daemon that would accept orders for a galaxy (its local deadline not passed) is
    /// the galaxy's owner in the database: nobody was granted a later epoch.
    fn check_beliefs(&mut self) {
        if self.p.fence != Fence::Last || self.violation.is_some() {
            return;
        }
        for d in 0..self.p.daemons {
            for g in 0..self.p.galaxies {
                if let Some((epoch, until)) = self.daemons[d].held[g] {
                    if until > self.now && self.granted[g] != epoch {
                        self.violation = Some(format!(
                            "d{d} would take orders for g{g} at epoch {epoch} until t={until}, \
                             but epoch {} was granted",
                            self.granted[g]
                        ));
                    }
                }
            }
        }
    }
}

/// Runs `schedules` random schedules; the first violation with its seed and trace.
fn explore(p: Params, schedules: u64) -> (Tally, Option<String>) {
    let mut total = Tally::default();
    for seed in 1..=schedules {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut world = World::new(p);
        for _ in 0..p.steps {
            let actions = world.enabled();
            let action = actions[rng.below(actions.len())];
            world.step(action, &mut rng);
            if let Some(violation) = world.violation.take() {
                return (
                    total,
                    Some(format!(
                        "{p:?}, schedule {seed}: {violation}\ntrace:\n{}",
                        world.trace
                    )),
                );
            }
        }
        total.commits += world.tally.commits;
        total.takes_from_a_believer += world.tally.takes_from_a_believer;
        total.refused += world.tally.refused;
        total.killed += world.tally.killed;
    }
    (total, None)
}

fn schedules() -> u64 {
    std::env::var("GWAR_FENCE_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn params(fence: Fence, idle_timeout: Option<u64>) -> Params {
    Params {
        fence,
        idle_timeout,
        daemons: 3,
        galaxies: 2,
        lease: 6,
        margin: 1,
        steps: 250,
    }
}

#[test]
fn nothing_from_an_epoch_commits_after_the_next_was_granted() {
    for idle_timeout in [None, Some(2)] {
        let p = params(Fence::Last, idle_timeout);
        let (tally, violation) = explore(p, schedules());
        if let Some(violation) = violation {
            panic!("{violation}");
        }
        eprintln!("{p:?}: {tally:?}");
        // The schedules did reach the interesting places.
        assert!(tally.commits > 1000, "{tally:?}");
        assert!(tally.takes_from_a_believer > 100, "{tally:?}");
        assert!(
            tally.refused > 50,
            "zombies were caught by the fence: {tally:?}"
        );
        if idle_timeout.is_some() {
            assert!(tally.killed > 0, "{tally:?}");
        }
    }
}

#[test]
fn a_fence_checked_first_without_a_lock_is_caught() {
    let (_, violation) = explore(params(Fence::CheckFirst, None), schedules());
    let violation = violation.expect("the explorer finds the stale commit");
    assert!(violation.contains("after epoch"), "{violation}");
}

#[test]
fn a_writer_trusting_its_own_deadline_is_caught() {
    let (_, violation) = explore(params(Fence::LocalDeadline, None), schedules());
    let violation = violation.expect("the explorer finds the stale commit");
    assert!(violation.contains("after epoch"), "{violation}");
}
