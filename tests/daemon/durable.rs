//! Durable orders (`?durable=1`, issue 24) under the real daemon: a durable 201 survives a
//! `kill -9` sent the moment it arrives, with every write-behind order made before it (one
//! consistent cut), over many cycles; the sync behind it is real (`strace` sees the WAL
//! synced before the answer, and no sync for a write-behind order); a full disk or a
//! locked database answers 503 "applied, not durable" and the order is saved once the
//! fault ends; a daemon that lost its galaxy to another (PostgreSQL) never answers 201;
//! and the parameter's edges: bad values, persistence off, durable creations, metrics.
//!
//! Most tests hold write-behind back ([`HELD`]): no batch commits by itself while they
//! run, so whatever is on disk was put there by a durable request's commit.
//!
//! `GWAR_DURABLE_CYCLES` sets the kill loop's cycles (25 by default).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::disk::{fill, Tmpfs};
use crate::ownership::{
    all_systems, assert_redirect, lock_system, minus, orders_on, served_metal, sessions_of,
    wait_until_served, waits_on_a_lock, Node, PATIENCE, UNSAVED,
};
use crate::postgres_cluster as pg;
use crate::util::{
    check_survivors_of, parse_reply, raw_exchange_for, sqlite, stored_events, stored_metal,
    stored_metal_pg, systems, wait_for, Daemon, Order, Reply, COUNTING_CONFIG,
};

/// Write-behind held back: a coalescing delay and an auto-save interval (which bounds the
/// delay and paces checkpoints) far longer than any test, so that only a durable request
/// makes the writer commit.
const HELD: [(&str, &str); 2] = [
    ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "600000"),
    ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "3600"),
];

/// The path of an order of `structure` at `(x, y)`, durable or not.
fn build_path(galaxy: &str, (x, y): (u64, u64), structure: &str, durable: bool) -> String {
    let query = if durable { "?durable=1" } else { "" };
    format!("/galaxies/{galaxy}/systems/{x}/{y}/build/{structure}{query}")
}

/// An order of a colony (one metal in a [`COUNTING_CONFIG`] galaxy), which must be
/// acknowledged; when its 201 arrived.
fn colony(daemon: &Daemon, galaxy: &str, at: (u64, u64), durable: bool) -> Instant {
    let reply = daemon.post(&build_path(galaxy, at, "colony", durable));
    assert_eq!(reply.status, 201, "durable={durable}: {}", reply.body);
    Instant::now()
}

/// Creates a galaxy of [`COUNTING_CONFIG`]; its systems in (x, y) order.
fn create_counting(daemon: &Daemon, galaxy: &str) -> Vec<(u64, u64)> {
    let created = daemon.request(
        "POST",
        &format!("/galaxies/{galaxy}?seed=7"),
        COUNTING_CONFIG,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    systems(daemon, galaxy)
}

/// Asserts `reply` is the 503 of a durable order applied in memory but not durable.
fn assert_applied_not_durable(reply: &Reply) {
    assert_eq!(reply.status, 503, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["applied"], true, "{body}");
    assert_eq!(body["durable"], false, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

/// Asserts `reply` is a refusal that changed nothing: a JSON error without `applied`.
fn assert_refused(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let body = reply.json();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(body.get("applied").is_none(), "{body}");
}

/// The metal a daemon serves for one system.
fn metal_at(daemon: &Daemon, galaxy: &str, at: (u64, u64)) -> i64 {
    served_metal(daemon, galaxy, &[at])[0]
}

#[test]
fn every_durable_order_survives_a_kill_9_right_after_its_201() {
    const GALAXIES: [&str; 2] = ["one", "two"];
    let cycles: u64 = std::env::var("GWAR_DURABLE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("galactic_war.db");
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut random = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    let mut coords: Vec<Vec<(u64, u64)>> = Vec::new();
    let (mut durable, mut before_cut, mut trailing, mut trailing_saved) = (0, 0, 0, 0);
    // After each kill, the restarted daemon serves what the file holds.
    let mut touched: Vec<(usize, usize)> = Vec::new();
    for cycle in 0..=cycles {
        let mut daemon = Daemon::start(dir.path(), &HELD);
        if coords.is_empty() {
            coords = GALAXIES
                .iter()
                .map(|g| create_counting(&daemon, g))
                .collect();
        }
        let baseline: Vec<Vec<i64>> = GALAXIES
            .iter()
            .map(|g| stored_metal(&db, g).expect("stored"))
            .collect();
        for &(g, s) in &touched {
            let served = metal_at(&daemon, GALAXIES[g], coords[g][s]);
            assert_eq!(
                served, baseline[g][s],
                "cycle {cycle}: served and stored differ"
            );
        }
        if cycle == cycles {
            break;
        }
        touched.clear();

        // A few durable orders, each after a few write-behind ones, on random systems of
        // both galaxies; then, every other cycle, write-behind orders after the last
        // durable one. SIGKILL right after the last 201.
        let mut plan = Vec::new();
        for _ in 0..1 + random(3) {
            plan.extend((0..random(4)).map(|_| false));
            plan.push(true);
        }
        let after = if cycle % 2 == 0 { 0 } else { 1 + random(3) };
        plan.extend((0..after).map(|_| false));
        let mut orders: Vec<Vec<Order>> = vec![Vec::new(); GALAXIES.len()];
        let mut cut = Instant::now();
        for (i, &is_durable) in plan.iter().enumerate() {
            let g = random(GALAXIES.len() as u64) as usize;
            let s = random(coords[g].len() as u64) as usize;
            let acknowledged = colony(&daemon, GALAXIES[g], coords[g][s], is_durable);
            orders[g].push(Order {
                system: s,
                acknowledged: Some(acknowledged),
            });
            touched.push((g, s));
            if is_durable {
                cut = acknowledged;
                durable += 1;
            } else if i + (after as usize) < plan.len() {
                before_cut += 1;
            }
        }
        daemon.kill9();
        trailing += after;

        // No window: every order acknowledged up to the last durable 201 is stored (a
        // prefix of each galaxy's orders); the ones after it may be.
        let cut = cut + Duration::from_nanos(1);
        for (g, galaxy) in GALAXIES.iter().enumerate() {
            let metal = stored_metal(&db, galaxy).expect("stored");
            let survivors =
                check_survivors_of(metal, galaxy, &baseline[g], &orders[g], cut, Duration::ZERO);
            trailing_saved += (survivors.survived - survivors.must_survive) as u64;
        }
    }
    eprintln!(
        "{cycles} kills right after a durable 201: {durable} durable orders and {before_cut} \
         write-behind orders before them all stored; {trailing_saved} of the {trailing} \
         write-behind orders after the last durable one stored (they may be lost)"
    );
}

/// `strace` attached to a running process (every thread, and those it starts), writing its
/// `fsync` and `fdatasync` calls with their file paths and times to a file. Detached on
/// drop.
struct SyncTrace {
    strace: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl SyncTrace {
    /// Attaches to process `pid`; `None` (after saying so) where `strace` is missing,
    /// which under CI is a failure.
    fn attach(pid: u32) -> Option<SyncTrace> {
        if Command::new("strace").arg("-V").output().is_err() {
            assert!(
                !pg::under_ci(),
                "CI must install strace (apt-get install strace)"
            );
            eprintln!("SKIPPED: strace is missing (under CI this fails)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("trace");
        let err = dir.path().join("stderr");
        let strace = Command::new("strace")
            .args(["-f", "-y", "-ttt", "-e", "trace=fsync,fdatasync", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("strace starts");
        let trace = SyncTrace {
            strace,
            out,
            _dir: dir,
        };
        let attached = || std::fs::read_to_string(&err).is_ok_and(|text| text.contains("attached"));
        assert!(
            wait_for(PATIENCE, attached),
            "strace did not attach: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        Some(trace)
    }

    /// The times (seconds since the epoch, at the call) of the syncs of `file` traced so
    /// far.
    fn syncs_of(&self, file: &Path) -> Vec<f64> {
        let fd = format!("<{}>", file.display());
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(&fd) && line.contains("sync("))
            .filter_map(|line| {
                // `PID SECONDS.MICROS fdatasync(7</path>) = 0`
                line.split_whitespace()
                    .find(|token| token.contains('.'))?
                    .parse()
                    .ok()
            })
            .collect()
    }
}

impl Drop for SyncTrace {
    fn drop(&mut self) {
        // SIGINT: strace detaches from the process, which goes on, and exits.
        let _ = Command::new("kill")
            .args(["-INT", &self.strace.id().to_string()])
            .status();
        let _ = self.strace.wait();
    }
}

/// Now, in seconds since the epoch, to the microsecond (strace's precision), rounded down.
fn epoch_now() -> f64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    micros as f64 / 1e6
}

#[test]
fn a_durable_201_comes_after_a_sync_of_the_wal_and_a_write_behind_201_without_one() {
    let dir = tempfile::tempdir().unwrap();
    // The default GWAR_PERSISTENCE_SYNCHRONOUS (normal): ordinary commits do not sync.
    let daemon = Daemon::start(dir.path(), &HELD);
    let coords = create_counting(&daemon, "traced");
    let Some(trace) = SyncTrace::attach(daemon.pid()) else {
        return;
    };
    let db = daemon.database().canonicalize().unwrap();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let baseline = stored_metal(&db, "traced").unwrap();
    let mut expected = baseline.clone();
    for round in 0..3 {
        let (write_behind, durable) = (round * 2, round * 2 + 1);
        let sent = epoch_now();
        colony(&daemon, "traced", coords[write_behind], false);
        let answered = epoch_now();
        expected[write_behind] -= 1;

        let durable_sent = epoch_now();
        let started = Instant::now();
        colony(&daemon, "traced", coords[durable], true);
        let took = started.elapsed();
        let durable_answered = epoch_now();
        expected[durable] -= 1;

        // A traced thread stays stopped at the call while strace records it, so the
        // sync's line is written before the commit can return and the 201 be sent:
        // polled for, as strace writes it out in its own time.
        let synced = |t: &f64| (durable_sent..=durable_answered).contains(t);
        assert!(
            wait_for(PATIENCE, || trace.syncs_of(&wal).iter().any(synced)),
            "round {round}: no sync of {} between the durable order's sending and its 201; \
             syncs traced: {:?}",
            wal.display(),
            trace.syncs_of(&wal)
        );
        // Everything strace recorded before that sync is written out too.
        let syncs = trace.syncs_of(&wal);
        let during_write_behind: Vec<&f64> = syncs
            .iter()
            .filter(|t| (sent..=answered).contains(*t))
            .collect();
        assert!(
            during_write_behind.is_empty(),
            "round {round}: the WAL was synced during a write-behind order: {during_write_behind:?}"
        );
        let first = syncs.iter().copied().find(synced).unwrap();
        eprintln!(
            "round {round}: durable 201 after {took:?}, the WAL synced {:.1} ms after \
             sending; no sync during the write-behind order's {:.1} ms",
            (first - durable_sent) * 1e3,
            (answered - sent) * 1e3
        );
        // The durable commit carried the write-behind order before it.
        assert_eq!(stored_metal(&db, "traced").unwrap(), expected);
    }
    drop(trace);
}

#[test]
fn a_durable_201_makes_the_write_behind_orders_before_it_durable_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("galactic_war.db");
    let mut daemon = Daemon::start(dir.path(), &HELD);
    let one = create_counting(&daemon, "one");
    let two = create_counting(&daemon, "two");
    for round in 0..3 {
        if round > 0 {
            daemon = Daemon::start(dir.path(), &HELD);
        }
        let base_one = stored_metal(&db, "one").unwrap();
        let base_two = stored_metal(&db, "two").unwrap();
        // Write-behind: on the system the durable order goes to, on another system of
        // its galaxy, and on another galaxy.
        colony(&daemon, "one", one[0], false);
        colony(&daemon, "one", one[1], false);
        colony(&daemon, "two", two[0], false);
        assert_eq!(stored_metal(&db, "one").unwrap(), base_one, "held back");
        assert_eq!(stored_metal(&db, "two").unwrap(), base_two, "held back");
        colony(&daemon, "one", one[0], true);
        daemon.kill9();

        let mut expected_one = base_one.clone();
        expected_one[0] -= 2;
        expected_one[1] -= 1;
        let mut expected_two = base_two.clone();
        expected_two[0] -= 1;
        assert_eq!(
            stored_metal(&db, "one").unwrap(),
            expected_one,
            "round {round}"
        );
        assert_eq!(
            stored_metal(&db, "two").unwrap(),
            expected_two,
            "round {round}"
        );
    }
    let daemon = Daemon::start(dir.path(), &HELD);
    let stored = stored_metal(&db, "one").unwrap();
    assert_eq!(served_metal(&daemon, "one", &one), stored);
}

#[test]
fn a_durable_order_on_a_full_disk_is_503_applied_and_saved_once_there_is_room() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = tmpfs.path.join("galactic_war.db");
    let url = format!("sqlite:{}", db.display());
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("DATABASE_URL", &url),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
            // Retries back off up to this: the recovery is seen quickly.
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
            // A save's bound: 2 × 1 s + 1 s.
            ("GWAR_DB_CALL_TIMEOUT_SECS", "1"),
            // The whole tmpfs is less than the default space kept free (1 GiB).
            ("GWAR_MIN_FREE_DISK", "0"),
        ],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1&preset=classic").status, 201);
    let coords = systems(&daemon, "g");
    let filler = fill(&tmpfs.path, "filler", u64::MAX);

    // Every first order on a system adds an event row: the database must grow, and
    // cannot. Durable orders until one is refused; each answered is applied.
    let mut applied = 0;
    let mut refused = None;
    for &at in &coords {
        let started = Instant::now();
        let reply = daemon.post(&build_path("g", at, "storagedepot", true));
        applied += 1;
        if reply.status == 201 {
            assert_eq!(stored_events(&db, "g"), applied, "a durable 201 is stored");
            continue;
        }
        eprintln!(
            "full disk: a durable order answered {} after {:?}: {}",
            reply.status,
            started.elapsed(),
            reply.body
        );
        assert_applied_not_durable(&reply);
        refused = Some(at);
        break;
    }
    let (x, y) = refused.expect("no durable order was refused on the full disk");
    // In memory, and queued.
    let system = daemon.get(&format!("/galaxies/g/systems/{x}/{y}")).json();
    assert_eq!(system["events"][0]["structure"], "storagedepot", "{system}");
    let health = daemon.get("/healthz").json();
    assert!(
        health["persistence"]["dirty_systems"].as_u64() >= Some(1),
        "{health}"
    );
    assert!(stored_events(&db, "g") < applied);

    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    assert!(
        wait_for(PATIENCE, || stored_events(&db, "g") == applied),
        "the refused order was never saved; health {}",
        daemon.get("/healthz").body
    );
    eprintln!(
        "full disk: {applied} durable orders applied, all saved {:?} after space was freed",
        freed.elapsed()
    );
    // And durable orders are answered 201 again.
    let (x, y) = coords[applied as usize];
    let reply = daemon.post(&build_path("g", (x, y), "storagedepot", true));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(stored_events(&db, "g"), applied + 1);
    drop(daemon);
}

#[test]
fn a_durable_order_on_a_locked_database_is_503_applied_and_saved_once_the_lock_goes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("galactic_war.db");
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
            // The durable wait's bound: the save's, 2 × 1 s + 1 s.
            ("GWAR_DB_CALL_TIMEOUT_SECS", "1"),
        ],
    );
    let coords = create_counting(&daemon, "locked");
    let baseline = stored_metal(&db, "locked").unwrap();

    // Another process's write lock on the file, as another program would hold it.
    let locker = sqlite(&db);
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    let reply = daemon.post(&build_path("locked", coords[0], "colony", true));
    eprintln!(
        "locked database: a durable order answered {} after {:?}: {}",
        reply.status,
        started.elapsed(),
        reply.body
    );
    assert_applied_not_durable(&reply);
    assert_eq!(
        metal_at(&daemon, "locked", coords[0]),
        baseline[0] - 1,
        "applied"
    );
    assert_eq!(
        stored_metal(&db, "locked").unwrap(),
        baseline,
        "not written"
    );

    locker.execute_batch("ROLLBACK").unwrap();
    let released = Instant::now();
    let mut expected = baseline.clone();
    expected[0] -= 1;
    assert!(
        wait_for(PATIENCE, || stored_metal(&db, "locked").unwrap()
            == expected),
        "the order was never saved; health {}",
        daemon.get("/healthz").body
    );
    eprintln!(
        "locked database: the order saved {:?} after the lock was released",
        released.elapsed()
    );
    colony(&daemon, "locked", coords[1], true);
    expected[1] -= 1;
    assert_eq!(stored_metal(&db, "locked").unwrap(), expected);
}

/// More durable orders waiting on a locked database than there are HTTP workers (16):
/// they wait off the workers, so a player's read made meanwhile is answered before any of
/// them is (had they held the workers, it would queue behind them until the save's bound).
#[test]
fn durable_orders_waiting_on_a_locked_database_hold_up_no_other_request() {
    const WAITING: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("galactic_war.db");
    // The durable wait's bound: the save's, 2 × 2 s + 1 s.
    let daemon = Daemon::start(dir.path(), &[("GWAR_DB_CALL_TIMEOUT_SECS", "2")]);
    let coords = create_counting(&daemon, "busy");
    let locker = sqlite(&db);
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let open_before = daemon.metric("gwar_http_connections_open");
    std::thread::scope(|scope| {
        let durable: Vec<_> = (0..WAITING)
            .map(|i| {
                let (daemon, at) = (&daemon, coords[i % coords.len()]);
                scope.spawn(move || {
                    let reply = daemon.post(&build_path("busy", at, "colony", true));
                    (reply, Instant::now())
                })
            })
            .collect();
        // Every durable order is in the daemon (its connection open, its answer owed).
        assert!(
            wait_for(PATIENCE, || daemon.metric("gwar_http_connections_open")
                >= open_before + WAITING as f64),
            "the durable orders never all arrived"
        );
        let mut reads_done = Vec::new();
        for at in coords.iter().take(5) {
            let (x, y) = at;
            let read = daemon.get(&format!("/galaxies/busy/systems/{x}/{y}"));
            assert_eq!(read.status, 200, "{}", read.body);
            reads_done.push(Instant::now());
        }
        let answers: Vec<(Reply, Instant)> = durable
            .into_iter()
            .map(|waiting| waiting.join().unwrap())
            .collect();
        let first_answer = answers.iter().map(|(_, at)| *at).min().unwrap();
        let last_read = *reads_done.iter().max().unwrap();
        assert!(
            last_read < first_answer,
            "the reads were answered only after a durable order was ({:?} later)",
            last_read - first_answer
        );
        for (reply, _) in &answers {
            assert_applied_not_durable(reply);
        }
    });
    locker.execute_batch("ROLLBACK").unwrap();
}

/// Sends durable orders to `a` on a galaxy `b` took from it until `a` answers with the
/// owner (307 to `b`, or 409): none may be a 201. The answers, in order.
fn durable_orders_until_owner_known(a: &Node, b: &Node, galaxy: &str, at: (u64, u64)) -> Vec<u16> {
    let path = build_path(galaxy, at, "colony", true);
    let mut answers = Vec::new();
    let known = wait_for(PATIENCE, || {
        let reply = a.post(&path);
        assert_ne!(
            reply.status, 201,
            "a durable 201 from a daemon that lost {galaxy}"
        );
        answers.push(reply.status);
        match reply.status {
            307 => {
                assert_redirect(&reply, b, &path);
                true
            }
            409 => true,
            // Not served while its lease is being renewed: nothing was applied.
            503 => {
                assert_refused(&reply, 503);
                false
            }
            status => panic!("answered {status}: {}", reply.body),
        }
    });
    assert!(known, "{answers:?}; log:\n{}", a.log());
    answers
}

#[test]
fn a_daemon_that_lost_its_galaxy_while_stopped_never_answers_a_durable_order_201() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let a = Node::start(&url, &UNSAVED);
    let b = Node::start(&url, &[]);
    a.create("slept", COUNTING_CONFIG);
    let coords = all_systems(&a, "slept");
    orders_on(&a, "slept", &coords, &[1, 2, 3]);

    a.signal("STOP");
    let pre = stored_metal_pg(&db, "slept");
    wait_until_served(&b, "slept");
    let counts = orders_on(&b, "slept", &coords, &[0, 4]);
    assert!(b.save() > 0);
    let expected = minus(&pre, &counts);
    a.signal("CONT");

    let answers = durable_orders_until_owner_known(&a, &b, "slept", coords[0]);
    eprintln!("durable orders to the daemon that lost the galaxy: {answers:?}");
    b.save();
    assert_eq!(stored_metal_pg(&db, "slept"), expected, "b's state only");
}

#[test]
fn a_durable_commit_fenced_off_by_the_new_owner_never_answers_201() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let a = Node::start(&url, &[]);
    let b = Node::start(&url, &[]);
    a.create("fenced", COUNTING_CONFIG);
    let coords = all_systems(&a, "fenced");

    // The durable order's commit waits on the test's row lock; a is stopped inside it.
    let mut locker = lock_system(&db, "fenced", coords[0]);
    let (addr, path) = (a.addr, build_path("fenced", coords[0], "colony", true));
    let waiting = std::thread::spawn(move || {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        raw_exchange_for(addr, request.as_bytes(), Duration::from_secs(300))
    });
    assert!(
        wait_for(PATIENCE, || waits_on_a_lock(&db, a.pid())),
        "a's durable commit waits on the row: {:?}",
        sessions_of(&db, a.pid())
    );
    a.signal("STOP");
    let pre = stored_metal_pg(&db, "fenced");
    locker.batch_execute("ROLLBACK").unwrap();
    // The server ends the transaction a left open, so that b can write.
    assert!(
        wait_for(PATIENCE, || sessions_of(&db, a.pid())
            .iter()
            .all(|s| !s.in_transaction)),
        "{:?}",
        sessions_of(&db, a.pid())
    );
    wait_until_served(&b, "fenced");
    let counts = orders_on(&b, "fenced", &coords, &[0, 5]);
    assert!(b.save() > 0);
    let expected = minus(&pre, &counts);

    a.signal("CONT");
    let raw = waiting.join().unwrap();
    assert!(!raw.is_empty(), "the durable order got no answer");
    let reply = parse_reply(&raw);
    eprintln!(
        "the durable order whose commit was fenced off: {} {}",
        reply.status, reply.body
    );
    assert_ne!(
        reply.status, 201,
        "a durable 201 on a lost galaxy: {}",
        reply.body
    );
    assert!(
        wait_for(PATIENCE, || a.metric("gwar_galaxies_lost_total") >= 1.0),
        "a drops the galaxy; log:\n{}",
        a.log()
    );
    durable_orders_until_owner_known(&a, &b, "fenced", coords[0]);
    b.save();
    assert_eq!(stored_metal_pg(&db, "fenced"), expected, "b's state only");
}

#[test]
fn durable_takes_only_1_and_a_bad_value_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let coords = create_counting(&daemon, "g");
    let before = metal_at(&daemon, "g", coords[0]);
    let (x, y) = coords[0];
    for value in ["0", "yes", "2", "", "true", "01", "1&durable=yes"] {
        let build = format!("/galaxies/g/systems/{x}/{y}/build/colony?durable={value}");
        assert_refused(&daemon.post(&build), 400);
        let create = format!("/galaxies/h?seed=1&durable={value}");
        assert_refused(&daemon.post(&create), 400);
    }
    let unknown = format!("/galaxies/g/systems/{x}/{y}/build/colony?durabel=1");
    assert_refused(&daemon.post(&unknown), 400);
    assert_eq!(metal_at(&daemon, "g", coords[0]), before, "nothing applied");
    assert_eq!(daemon.get("/galaxies/h").status, 404, "nothing created");
    let system = daemon.get(&format!("/galaxies/g/systems/{x}/{y}")).json();
    assert_eq!(system["events"], serde_json::json!([]), "{system}");
}

#[test]
fn without_persistence_durable_requests_are_503_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("GWAR_PERSISTENCE_ENABLED", "false")]);
    let coords = create_counting(&daemon, "g");
    let before = metal_at(&daemon, "g", coords[0]);
    assert_refused(
        &daemon.post(&build_path("g", coords[0], "colony", true)),
        503,
    );
    assert_eq!(metal_at(&daemon, "g", coords[0]), before, "nothing applied");
    let created = daemon.request("POST", "/galaxies/h?seed=1&durable=1", COUNTING_CONFIG);
    assert_refused(&created, 503);
    assert_eq!(daemon.get("/galaxies/h").status, 404, "nothing created");
    // Without durable=1 both are served, from memory.
    colony(&daemon, "g", coords[0], false);
    assert_eq!(daemon.post("/galaxies/h?seed=1").status, 201);
}

#[test]
fn on_an_in_memory_database_durable_requests_are_503_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("DATABASE_URL", "sqlite::memory:")]);
    let coords = create_counting(&daemon, "g");
    let before = metal_at(&daemon, "g", coords[0]);
    let refused = daemon.post(&build_path("g", coords[0], "colony", true));
    assert_refused(&refused, 503);
    assert!(refused.body.contains("in memory"), "{}", refused.body);
    assert_eq!(metal_at(&daemon, "g", coords[0]), before, "nothing applied");
}

#[test]
fn a_durable_creation_is_in_the_file_when_answered_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("galactic_war.db");
    let mut daemon = Daemon::start(dir.path(), &HELD);
    let created = daemon.request("POST", "/galaxies/c?seed=3&durable=1", COUNTING_CONFIG);
    assert_eq!(created.status, 201, "{}", created.body);
    let systems = created.json()["systems"].as_u64().unwrap();
    let stored = || stored_metal(&db, "c").map_or(0, |metal| metal.len() as u64);
    assert_eq!(stored(), systems, "in the file when answered");
    daemon.kill9();
    assert_eq!(stored(), systems, "after kill -9");
    let daemon = Daemon::start(dir.path(), &HELD);
    let galaxy = daemon.get("/galaxies/c");
    assert_eq!(galaxy.status, 200, "{}", galaxy.body);
}

#[test]
fn durable_requests_and_their_commits_are_counted_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &HELD);
    let coords = create_counting(&daemon, "g");
    let requests = daemon.metric("gwar_durable_requests_total");
    let commits = daemon.metric("gwar_durable_commits_total");
    for &at in &coords[..3] {
        colony(&daemon, "g", at, true);
    }
    assert!(daemon.metric("gwar_durable_requests_total") >= requests + 3.0);
    assert!(daemon.metric("gwar_durable_commits_total") >= commits + 1.0);
    assert_eq!(daemon.metric("gwar_durable_failures_total"), 0.0);
    let text = daemon.get("/metrics").body;
    for histogram in [
        "gwar_durable_requests_per_commit",
        "gwar_durable_wait_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram}:\n{text}"
        );
        assert!(
            text.contains(&format!("{histogram}_bucket{{le=\"+Inf\"}}")),
            "{histogram}:\n{text}"
        );
        assert!(text.contains(&format!("{histogram}_sum ")), "{histogram}");
    }
    assert!(daemon.metric("gwar_durable_requests_per_commit_count") >= 1.0);
    assert!(daemon.metric("gwar_durable_requests_per_commit_sum") >= 3.0);
    assert!(daemon.metric("gwar_durable_wait_seconds_count") >= 3.0);
}
