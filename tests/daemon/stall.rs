//! A stalled network between the daemon and PostgreSQL: a proxy that stops forwarding
//! while keeping every socket open (the peer acknowledges and never answers), which TCP's
//! own timeouts never notice. The call timeout (`GWAR_DB_CALL_TIMEOUT_SECS`, 2 s here)
//! must make it read as `retrying`, `/admin/save` must answer 503 by its own bound, every
//! acknowledged order must be saved once the network is back, and SIGTERM must end the
//! process within the shutdown timeout + 3 s whatever the network does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::postgres_cluster::{self as pg, Database};
use crate::proxy::Proxy;
use crate::util::{raw_exchange_for, stored_metal_pg, systems, wait_for, Daemon, COUNTING_CONFIG};

/// `GWAR_DB_CALL_TIMEOUT_SECS` in these tests.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// `GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT` in these tests.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// `POST /admin/save`'s bound: two call timeouts and a second (see `save_timeout`).
const SAVE_BOUND: Duration = Duration::from_secs(5);
/// What a busy two-core machine adds to a bound measured from outside: the watch's poll
/// (250 ms), the coalescing delay (200 ms), and a request's and a log line's way through
/// a loaded scheduler (about a second at worst in these tests' runs with a core busy).
const SLACK: Duration = Duration::from_millis(2_000);

struct Stalled<'c> {
    db: Database<'c>,
    proxy: Proxy,
    daemon: Daemon,
    _dir: tempfile::TempDir,
    coords: Vec<(u64, u64)>,
    baseline: Vec<i64>,
    /// Acknowledged orders per system, in `coords`' order.
    orders: Vec<i64>,
}

impl Stalled<'_> {
    /// A daemon on a fresh database reached through a proxy, with galaxy `stall` of
    /// [`COUNTING_CONFIG`] created and saved.
    fn start(cluster: &pg::Cluster) -> Stalled<'_> {
        Stalled::start_with(cluster, CALL_TIMEOUT)
    }

    /// [`Stalled::start`] with `call_timeout` for `GWAR_DB_CALL_TIMEOUT_SECS`.
    fn start_with(cluster: &pg::Cluster, call_timeout: Duration) -> Stalled<'_> {
        let db = cluster.database();
        let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], cluster.port())));
        let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), db.name);
        let call = call_timeout.as_secs().to_string();
        let shutdown = SHUTDOWN_TIMEOUT.as_secs().to_string();
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(
            dir.path(),
            &[
                ("DATABASE_URL", url.as_str()),
                ("GWAR_DB_CALL_TIMEOUT_SECS", call.as_str()),
                ("GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT", shutdown.as_str()),
                ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "200"),
                // Retries back off up to this: the recovery is seen quickly.
                ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
            ],
        );
        let created = daemon.request("POST", "/galaxies/stall?seed=7", COUNTING_CONFIG);
        assert_eq!(created.status, 201, "{}", created.body);
        let coords = systems(&daemon, "stall");
        let baseline = stored_metal_pg(&db, "stall");
        assert_eq!(baseline.len(), coords.len());
        let orders = vec![0; coords.len()];
        Stalled {
            db,
            proxy,
            daemon,
            _dir: dir,
            coords,
            baseline,
            orders,
        }
    }

    /// `n` orders, each acknowledged (201).
    fn play(&mut self, n: usize) {
        for i in 0..n {
            let system = (i * 7 + self.orders.iter().sum::<i64>() as usize) % self.coords.len();
            let (x, y) = self.coords[system];
            let reply = self
                .daemon
                .post(&format!("/galaxies/stall/systems/{x}/{y}/build/colony"));
            assert_eq!(reply.status, 201, "{}", reply.body);
            self.orders[system] += 1;
        }
    }

    /// One order, whatever the answer: its status (an acknowledged one is counted).
    fn try_order(&mut self) -> u16 {
        let system = self.orders.iter().sum::<i64>() as usize % self.coords.len();
        let (x, y) = self.coords[system];
        let reply = self
            .daemon
            .post(&format!("/galaxies/stall/systems/{x}/{y}/build/colony"));
        if reply.status == 201 {
            self.orders[system] += 1;
        }
        reply.status
    }

    fn persistence(&self) -> serde_json::Value {
        self.daemon.get("/healthz").json()["persistence"].clone()
    }

    fn save_status(&self) -> (u16, Duration) {
        let started = Instant::now();
        let reply = self.daemon.admin_post("/admin/save");
        (reply.status, started.elapsed())
    }

    /// Everything acknowledged is stored.
    fn all_stored(&self) -> bool {
        let expected: Vec<i64> = self
            .baseline
            .iter()
            .zip(&self.orders)
            .map(|(b, n)| b - n)
            .collect();
        stored_metal_pg(&self.db, "stall") == expected
    }

    /// [`Stalled::start_with`], orders played and saved, then the network frozen.
    fn frozen_after_saving(cluster: &pg::Cluster, call_timeout: Duration) -> Stalled<'_> {
        let mut t = Stalled::start_with(cluster, call_timeout);
        t.play(10);
        assert_eq!(t.save_status().0, 200);
        assert!(t.all_stored());
        t.proxy.freeze();
        t
    }

    /// Waits until a call of the writer's hangs on the frozen connection (the daemon's
    /// `gwar_persistence_stalled_seconds` above 0).
    fn wait_until_stalled(&self) {
        let stalled = || self.metric("gwar_persistence_stalled_seconds") > 0.0;
        assert!(
            wait_for(Duration::from_secs(30), stalled),
            "no call of the writer's met the frozen connection; log:\n{}",
            self.daemon.log()
        );
    }

    /// An unlabelled sample of `/metrics`, asked on the admin listener (which has
    /// workers of its own: it answers while the game's are all held); 0 when absent.
    fn metric(&self, name: &str) -> f64 {
        let text = self.daemon.admin_request("GET", "/metrics", "").body;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_default()
    }

    /// `n` requests for galaxies not in memory, each asking the (frozen) database who
    /// owns its galaxy, on threads of their own that return what they got; once all are
    /// in (their connections open beside the one asking: each of the test's own requests
    /// closes its connection).
    fn requests_waiting(&self, n: usize) -> Vec<std::thread::JoinHandle<Vec<u8>>> {
        let addr = self.daemon.addr;
        let waiting = (0..n)
            .map(|i| {
                std::thread::spawn(move || {
                    let request = format!(
                        "GET /galaxies/cold{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    );
                    raw_exchange_for(addr, request.as_bytes(), Duration::from_secs(60))
                })
            })
            .collect();
        let all_in = || self.metric("gwar_http_connections_open") >= (n + 1) as f64;
        assert!(
            wait_for(Duration::from_secs(30), all_in),
            "log:\n{}",
            self.daemon.log()
        );
        waiting
    }

    /// SIGTERM, asserting the exit within the shutdown timeout + 3 s; the status and the
    /// log.
    fn terminate_within_bound(&mut self, what: &str) -> (std::process::ExitStatus, String) {
        let (status, took) = self.terminate_timed();
        let bound = SHUTDOWN_TIMEOUT + Duration::from_secs(3);
        println!("{what}: SIGTERM exit {status} after {took:?} (bound {bound:?})");
        let log = self.daemon.log();
        assert!(took <= bound, "exit took {took:?}; log:\n{log}");
        (status, log)
    }

    /// SIGTERM; the exit status and how long the exit took.
    fn terminate_timed(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        self.daemon.signal("TERM");
        let status = self.daemon.wait(Duration::from_secs(60));
        (status, started.elapsed())
    }
}

#[test]
fn a_stalled_network_reads_as_retrying_save_answers_503_and_all_is_saved_after_it() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let mut t = Stalled::start(cluster);
    t.play(20);
    assert_eq!(t.save_status().0, 200);

    t.proxy.freeze();
    let frozen = Instant::now();
    t.play(20);
    let retrying = wait_for(Duration::from_secs(30), || {
        t.persistence()["state"] == "retrying"
    });
    let took = frozen.elapsed();
    println!("frozen: health read `retrying` after {took:?} (call timeout {CALL_TIMEOUT:?})");
    assert!(retrying, "never `retrying`; log:\n{}", t.daemon.log());
    assert!(took <= CALL_TIMEOUT + SLACK, "`retrying` after {took:?}");
    assert!(
        t.daemon.log().contains("abandoning the connection"),
        "log:\n{}",
        t.daemon.log()
    );

    let (status, took) = t.save_status();
    println!("frozen: POST /admin/save answered {status} after {took:?} (bound {SAVE_BOUND:?})");
    assert_eq!(status, 503);
    assert!(took <= SAVE_BOUND + SLACK, "/admin/save took {took:?}");

    // Past the stall limit (by default a fifth of the 15 s lease: 3 s since the first
    // unanswered call) orders are refused rather than acknowledged unsaved.
    assert!(
        wait_for(Duration::from_secs(30), || t.try_order() == 503),
        "orders were never refused during the stall; log:\n{}",
        t.daemon.log()
    );

    t.proxy.thaw();
    let thawed = Instant::now();
    let saved = |t: &Stalled| {
        let p = t.persistence();
        p["state"] == "healthy" && p["dirty_systems"] == 0
    };
    let healthy = wait_for(Duration::from_secs(30), || saved(&t));
    println!("thawed: healthy and saved after {:?}", thawed.elapsed());
    assert!(
        healthy,
        "not healthy after the thaw; log:\n{}",
        t.daemon.log()
    );
    // Orders are taken again once a commit went through (until then they were refused:
    // the writer's calls had been hanging past GWAR_PERSISTENCE_MAX_STALL_MS).
    t.play(10);
    assert!(
        wait_for(Duration::from_secs(30), || saved(&t)),
        "log:\n{}",
        t.daemon.log()
    );
    assert!(t.all_stored(), "an acknowledged order was not stored");
    let (status, took) = t.terminate_timed();
    println!("thawed: SIGTERM exit {status} after {took:?}");
    assert!(status.success(), "log:\n{}", t.daemon.log());
}

#[test]
fn sigterm_during_a_stall_exits_within_the_bound_naming_what_was_not_saved() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let mut t = Stalled::start(cluster);
    t.play(10);
    t.proxy.freeze();
    t.play(10);
    // The unsaved orders' batch is on the frozen connection.
    t.wait_until_stalled();
    let (status, log) = t.terminate_within_bound("frozen, unsaved orders");
    assert_eq!(status.code(), Some(1), "log:\n{log}");
    assert!(
        log.contains("galaxy 'stall'") && log.contains("were not saved"),
        "log:\n{log}"
    );
}

#[test]
fn sigterm_during_a_stall_with_everything_saved_exits_0_within_the_bound() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let mut t = Stalled::frozen_after_saving(cluster, CALL_TIMEOUT);
    // A lease renewal meets the frozen connection.
    t.wait_until_stalled();
    let (status, log) = t.terminate_within_bound("frozen, all saved");
    assert!(status.success(), "log:\n{log}");
    t.proxy.thaw();
}

#[test]
fn sigterm_with_a_request_waiting_on_the_stalled_database_exits_within_the_bound() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    // A call timeout far past the shutdown's: only the stop's own bounds can end it.
    let mut t = Stalled::frozen_after_saving(cluster, Duration::from_secs(120));
    let waiting = t.requests_waiting(1);
    let (_, log) = t.terminate_within_bound("frozen, a request waiting");
    assert!(
        log.contains("left behind unanswered"),
        "the waiting request held the stop; log:\n{log}"
    );
    for request in waiting {
        assert!(
            request.join().unwrap().is_empty(),
            "the request left behind got no answer"
        );
    }
    t.proxy.thaw();
}

#[test]
fn requests_waiting_on_the_stalled_database_never_hold_up_the_admin_listener() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    // A call timeout far past the test: the requests below wait as long as it runs.
    let mut t = Stalled::frozen_after_saving(cluster, Duration::from_secs(120));
    // More than the game has workers (16): all held, the rest queued behind them.
    let waiting = t.requests_waiting(24);
    let asked = Instant::now();
    let health = t.daemon.admin_request("GET", "/healthz", "");
    let took = asked.elapsed();
    println!(
        "every game worker held by the stall: admin /healthz answered {} in {took:?}",
        health.status
    );
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(
        took <= SLACK,
        "the admin listener waited {took:?} behind the game's requests"
    );
    t.terminate_within_bound("the game's workers held");
    for request in waiting {
        let _ = request.join();
    }
    t.proxy.thaw();
}
