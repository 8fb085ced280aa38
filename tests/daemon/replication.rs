//! Failover under play (issue 25): the real daemon on a PostgreSQL primary + streaming
//! standby pair (tests/common/replica.rs), with `DATABASE_URL` naming both servers and
//! `target_session_attrs=read-write`, the primary first. The primary's postmaster is
//! killed with `kill -9` (or cut off behind a frozen proxy), the standby promoted with
//! `pg_ctl promote`, and the daemon must say `degraded` meanwhile, find the promoted
//! server by itself and save there, without a restart.
//!
//! Orders are counted as in the partition test ([`ordering`]): galaxies of
//! [`COUNTING_CONFIG`], where stored metal counts the orders that reached the database.
//! With synchronous replication nothing the daemon saw committed is lost, and since the
//! daemon never dies here, every acknowledged order ends up stored; with asynchronous
//! replication the orders lost are counted and printed, not asserted.
//!
//! Start-up: a URL naming only a standby waits for a primary; an unresolvable host or a
//! refused port ends start-up in bounded time, with a message naming the database.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ownership::{assert_redirect, Node};
use crate::partition::ordering;
use crate::proxy::Proxy;
use crate::replica::{self, Pair, Replication};
use crate::util::{
    check_survivors_of, stored_metal_on, wait_for, Daemon, Order, BIN, COUNTING_CONFIG,
};

/// The database every test here creates on its pair.
const DB: &str = "game";
/// Coalescing delay (the nodes' 50 ms) plus one commit, with room for a busy machine.
const LOSS_WINDOW: Duration = Duration::from_millis(50 + 1000);
/// Anything that should happen "soon" on a busy 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);
/// A lease longer than any failover here takes, for the tests of one daemon (whose
/// galaxies would otherwise change epochs mid-test, which is the two-daemon test's
/// business), and a short call deadline, as the stall tests'.
const ONE_DAEMON: [(&str, &str); 2] = [
    ("GWAR_OWNERSHIP_LEASE_SECS", "20"),
    ("GWAR_DB_CALL_TIMEOUT_SECS", "2"),
];

/// A daemon's `/healthz` status (`ok` or `degraded`), or what went wrong asking.
fn health(node: &Daemon) -> String {
    let reply = node.get("/healthz");
    match serde_json::from_str::<serde_json::Value>(&reply.body) {
        Ok(json) => json["status"].as_str().unwrap_or("?").to_owned(),
        Err(_) => format!("{} {}", reply.status, reply.body),
    }
}

/// Waits until `/healthz` reports the primary's replication as `mode` with `standbys`
/// streaming (the writer reads it every auto-save interval, 1 s here), and checks that
/// `/metrics` says the same.
fn assert_replication(node: &Daemon, mode: &str, standbys: u64) {
    let mut last = String::new();
    let reported = wait_for(PATIENCE, || {
        last = node.get("/healthz").body;
        let json: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        let replication = &json["persistence"]["replication"];
        replication["mode"] == mode && replication["standbys"] == standbys
    });
    assert!(
        reported,
        "replication {mode} with {standbys} standbys: {last}"
    );
    let metrics = node.get("/metrics").body;
    for line in [
        format!("gwar_postgres_replication_mode{{mode=\"{mode}\"}} 1"),
        format!("gwar_postgres_standbys {standbys}"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

/// Orders flowing on some galaxies of one daemon, each from a thread of its own.
struct Play {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(Vec<Order>, usize)>>,
}

impl Play {
    fn start(addr: SocketAddr, galaxies: &[(String, Vec<(u64, u64)>)]) -> Play {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = galaxies
            .iter()
            .map(|(name, coords)| ordering(addr, name, coords.clone(), stop.clone()))
            .collect();
        Play { stop, threads }
    }

    /// Stops ordering; the acknowledged orders per galaxy, and the refusals in all.
    fn stop(self) -> (Vec<Vec<Order>>, usize) {
        self.stop.store(true, Relaxed);
        let mut refused = 0;
        let orders = self
            .threads
            .into_iter()
            .map(|t| {
                let (orders, r) = t.join().expect("an ordering thread");
                refused += r;
                orders
            })
            .collect();
        (orders, refused)
    }
}

/// A galaxy of [`COUNTING_CONFIG`]: its systems, and its metal as stored at creation.
struct Game {
    name: String,
    coords: Vec<(u64, u64)>,
    baseline: Vec<i64>,
}

/// Galaxies `prefix0…` of [`COUNTING_CONFIG`] created on `node`.
fn galaxies(pair: &Pair, node: &Node, prefix: &str, n: usize) -> Vec<Game> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            node.create(&name, COUNTING_CONFIG);
            let coords = crate::util::systems(node, &name);
            let baseline = stored_metal_on(&mut pair.client(DB), &name);
            assert_eq!(baseline.len(), coords.len(), "{name} is stored");
            Game {
                name,
                coords,
                baseline,
            }
        })
        .collect()
}

/// What one failover measured.
struct Failover {
    killed_at: Instant,
    /// From the kill to `/healthz` saying `degraded`.
    detected: Duration,
    /// `pg_ctl promote -w`.
    promotion: Duration,
    /// From the promotion's end to the first batch committed after it.
    resumed: Duration,
}

/// Kills (`kill_primary`) or cuts off (`cut`) the primary while `nodes` play, waits until
/// each says `degraded`, promotes the standby, and waits until each commits a batch again
/// and is healthy.
fn fail_over(pair: &mut Pair, nodes: &[&Node], cut: impl FnOnce(&mut Pair)) -> Failover {
    let batches = |node: &Node| node.metric("gwar_persistence_batches_total");
    let logs = || -> String {
        nodes
            .iter()
            .map(|n| n.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let before: Vec<f64> = nodes.iter().map(|n| batches(n)).collect();
    assert!(
        wait_for(PATIENCE, || nodes
            .iter()
            .zip(&before)
            .all(|(n, b)| batches(n) >= b + 3.0)),
        "no batches before the failover; logs:\n{}",
        logs()
    );
    let killed_at = Instant::now();
    cut(pair);
    // While no primary answers, the daemons say so.
    for node in nodes {
        assert!(
            wait_for(PATIENCE, || health(node) == "degraded"),
            "/healthz never said degraded without a primary: {}\nlog:\n{}",
            node.get("/healthz").body,
            node.log()
        );
    }
    let detected = killed_at.elapsed();
    let committed: Vec<f64> = nodes.iter().map(|n| batches(n)).collect();
    let promotion = pair.promote();
    let promoted_at = Instant::now();
    assert!(
        wait_for(PATIENCE, || nodes
            .iter()
            .zip(&committed)
            .all(|(n, c)| batches(n) > *c)),
        "no batch committed on the promoted server; logs:\n{}",
        logs()
    );
    let resumed = promoted_at.elapsed();
    assert!(
        wait_for(PATIENCE, || nodes.iter().all(|n| n.healthy())),
        "not healthy again: {:?}\nlogs:\n{}",
        nodes
            .iter()
            .map(|n| n.get("/healthz").body)
            .collect::<Vec<_>>(),
        logs()
    );
    Failover {
        killed_at,
        detected,
        promotion,
        resumed,
    }
}

/// After play stopped: every change saved (the dirty counts back to 0), then the orders
/// acknowledged per galaxy against what the current primary stores; the orders lost.
fn lost_orders(pair: &Pair, nodes: &[&Node], games: &[Game], orders: &[Vec<Order>]) -> Vec<usize> {
    for node in nodes {
        node.save();
        assert!(
            wait_for(PATIENCE, || node.metric("gwar_persistence_dirty_systems")
                == 0.0),
            "changes left unsaved; log:\n{}",
            node.log()
        );
    }
    let mut client = pair.client(DB);
    games
        .iter()
        .zip(orders)
        .map(|(game, orders)| {
            let stored = stored_metal_on(&mut client, &game.name);
            let survived: i64 = game.baseline.iter().zip(&stored).map(|(b, m)| b - m).sum();
            orders.len().saturating_sub(survived.max(0) as usize)
        })
        .collect()
}

#[test]
fn sync_replication_kill_9_of_the_primary_and_promotion_lose_no_acknowledged_order_over_three_cycles(
) {
    let Some(mut pair) = Pair::start(Replication::Sync) else {
        return;
    };
    pair.create_database(DB);
    let node = Node::start(&pair.url(DB), &ONE_DAEMON);
    let games = galaxies(&pair, &node, "s", 3);
    let plays: Vec<_> = games
        .iter()
        .map(|g| (g.name.clone(), g.coords.clone()))
        .collect();
    let mut all: Vec<Vec<Order>> = vec![Vec::new(); games.len()];
    for cycle in 1..=3 {
        assert_replication(&node, "sync", 1);
        let play = Play::start(node.addr, &plays);
        let failover = fail_over(&mut pair, &[&node], Pair::kill_primary);
        let (orders, refused) = play.stop();
        for (g, orders) in orders.into_iter().enumerate() {
            all[g].extend(orders);
        }
        let lost = lost_orders(&pair, &[&node], &games, &all);
        let mut client = pair.client(DB);
        for (g, game) in games.iter().enumerate() {
            let name = &game.name;
            let stored = stored_metal_on(&mut client, name);
            let survivors = check_survivors_of(
                stored,
                name,
                &game.baseline,
                &all[g],
                failover.killed_at,
                LOSS_WINDOW,
            );
            assert_eq!(
                lost[g], 0,
                "{name}, cycle {cycle}: {} acknowledged orders lost with synchronous \
                 replication ({} survived, {} had to)",
                lost[g], survivors.survived, survivors.must_survive
            );
        }
        eprintln!(
            "sync cycle {cycle}: degraded {:?} after the kill, promotion took {:?}, first batch \
             {:?} after it; {} orders acknowledged so far, {refused} refused this cycle",
            failover.detected,
            failover.promotion,
            failover.resumed,
            all.iter().map(Vec::len).sum::<usize>()
        );
        assert!(
            all.iter().all(|o| !o.is_empty()),
            "orders flowed on every galaxy"
        );
        // The promoted server has no standby yet (the harness leaves
        // synchronous_standby_names to the primary it configured).
        assert_replication(&node, "none", 0);
        if cycle < 3 {
            pair.rebuild_standby();
        }
    }
}

#[test]
fn async_replication_failover_recovers_and_counts_the_orders_lost() {
    let Some(mut pair) = Pair::start(Replication::Async) else {
        return;
    };
    pair.create_database(DB);
    let node = Node::start(&pair.url(DB), &ONE_DAEMON);
    let games = galaxies(&pair, &node, "a", 3);
    assert_replication(&node, "async", 1);
    let plays: Vec<_> = games
        .iter()
        .map(|g| (g.name.clone(), g.coords.clone()))
        .collect();
    let play = Play::start(node.addr, &plays);
    let failover = fail_over(&mut pair, &[&node], Pair::kill_primary);
    let (orders, refused) = play.stop();
    let lost = lost_orders(&pair, &[&node], &games, &orders);
    let acknowledged: usize = orders.iter().map(Vec::len).sum();
    eprintln!(
        "async: degraded {:?} after the kill, promotion took {:?}, first batch {:?} after it; \
         {acknowledged} orders acknowledged, {refused} refused, {} lost ({lost:?} per galaxy)",
        failover.detected,
        failover.promotion,
        failover.resumed,
        lost.iter().sum::<usize>()
    );
    assert!(node.healthy(), "{}", node.get("/healthz").body);
}

#[test]
fn a_primary_that_stops_answering_without_dying_is_left_for_the_promoted_standby() {
    let Some(mut pair) = Pair::start(Replication::Sync) else {
        return;
    };
    pair.create_database(DB);
    let [primary, standby] = pair.ports();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], primary)));
    let url = replica::url_of(&[proxy.port(), standby], DB);
    let node = Node::start(&url, &ONE_DAEMON);
    let games = galaxies(&pair, &node, "f", 2);
    let plays: Vec<_> = games
        .iter()
        .map(|g| (g.name.clone(), g.coords.clone()))
        .collect();
    let play = Play::start(node.addr, &plays);
    let failover = fail_over(&mut pair, &[&node], |_| proxy.freeze());
    let (orders, refused) = play.stop();
    let lost = lost_orders(&pair, &[&node], &games, &orders);
    eprintln!(
        "frozen primary: degraded {:?} after the freeze, promotion took {:?}, first batch {:?} \
         after it; {refused} refused, {lost:?} lost",
        failover.detected, failover.promotion, failover.resumed
    );
    assert_eq!(
        lost.iter().sum::<usize>(),
        0,
        "synchronous: nothing acknowledged is lost"
    );
    proxy.thaw();
}

#[test]
fn two_daemons_on_a_pair_keep_one_owner_per_galaxy_and_every_order_across_a_failover() {
    let Some(mut pair) = Pair::start(Replication::Sync) else {
        return;
    };
    pair.create_database(DB);
    let url = pair.url(DB);
    // The ownership tests' short lease (3 s): a slow failover may outlast it.
    let call = [("GWAR_DB_CALL_TIMEOUT_SECS", "2")];
    let nodes = [Node::start(&url, &call), Node::start(&url, &call)];
    let mut games = galaxies(&pair, &nodes[0], "o", 2);
    games.extend(galaxies(&pair, &nodes[1], "p", 2));
    let owner_of = |g: usize| g / 2;
    let plays: Vec<Play> = (0..2)
        .map(|n| {
            let mine: Vec<_> = games[n * 2..n * 2 + 2]
                .iter()
                .map(|g| (g.name.clone(), g.coords.clone()))
                .collect();
            Play::start(nodes[n].addr, &mine)
        })
        .collect();
    let failover = fail_over(&mut pair, &[&nodes[0], &nodes[1]], Pair::kill_primary);
    let mut orders = Vec::new();
    let mut refused = 0;
    for play in plays {
        let (o, r) = play.stop();
        orders.extend(o);
        refused += r;
    }
    let lost = lost_orders(&pair, &[&nodes[0], &nodes[1]], &games, &orders);
    let mut client = pair.client(DB);
    for (g, game) in games.iter().enumerate() {
        let stored = stored_metal_on(&mut client, &game.name);
        check_survivors_of(
            stored,
            &game.name,
            &game.baseline,
            &orders[g],
            failover.killed_at,
            LOSS_WINDOW,
        );
        let row = client
            .query_one(
                "SELECT owner_url, expires_at > now() FROM galaxy_owners WHERE galaxy_name = $1",
                &[&game.name],
            )
            .unwrap_or_else(|e| panic!("galaxy_owners row of {}: {e}", game.name));
        let (url, live): (Option<String>, bool) = (row.get(0), row.get(1));
        let owner = &nodes[owner_of(g)];
        assert_eq!(url.as_deref(), Some(owner.url.as_str()), "{}", game.name);
        assert!(live, "{}: the owner's lease is live again", game.name);
        let path = format!("/galaxies/{}", game.name);
        assert_eq!(owner.get(&path).status, 200, "{} serves {path}", owner.url);
        assert_redirect(&nodes[1 - owner_of(g)].get(&path), owner, &path);
    }
    eprintln!(
        "two daemons: degraded {:?} after the kill, promotion took {:?}, both committed {:?} \
         after it; {refused} refused, {lost:?} lost",
        failover.detected, failover.promotion, failover.resumed
    );
    assert_eq!(
        lost.iter().sum::<usize>(),
        0,
        "synchronous: nothing acknowledged is lost"
    );
}

#[test]
fn a_url_naming_only_a_standby_waits_for_a_primary_and_saves_once_one_is_promoted() {
    let Some(mut pair) = Pair::start(Replication::Async) else {
        return;
    };
    pair.create_database(DB);
    let standby = pair.standby_port().expect("a standby");
    let label = format!("postgres://postgres@127.0.0.1:{standby}/{DB}");
    let url = replica::url_of(&[standby], DB);
    let dir = tempfile::tempdir().unwrap();
    let game = SocketAddr::from(([127, 0, 0, 1], crate::postgres_cluster::free_port()));
    let listen = game.to_string();
    let mut env = vec![("DATABASE_URL", url.as_str()), ("GWAR_LISTEN", &listen)];
    env.extend_from_slice(&ONE_DAEMON);
    let mut starting = Daemon::spawn(Command::new(BIN), dir.path(), &env);
    // It waits, saying so clearly, rather than exiting or writing to a server that
    // refuses writes; meanwhile /healthz says degraded, and the game waits (503).
    let waiting = |log: &str| {
        log.lines()
            .any(|l| l.contains(&label) && l.contains("read-write") && l.contains("WARN"))
    };
    assert!(
        wait_for(PATIENCE, || waiting(&starting.log()) || !starting.running()),
        "no log line says it waits for a primary:\n{}",
        starting.log()
    );
    assert!(starting.running(), "it exited:\n{}", starting.log());
    let answer = crate::util::request_at(game, "GET", "/healthz", &[], b"");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    assert_eq!(answer["status"], "degraded", "{answer}");
    let reason = answer["persistence"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("a standby"), "{answer}");
    let refused = crate::util::request_at(game, "POST", "/galaxies/early", &[], b"");
    assert_eq!(refused.status, 503, "{}", refused.body);
    pair.kill_primary();
    pair.promote();
    let daemon = starting.listening(PATIENCE);
    assert!(
        wait_for(PATIENCE, || health(&daemon) == "ok"),
        "{}\nlog:\n{}",
        daemon.get("/healthz").body,
        daemon.log()
    );
    let created = daemon.request("POST", "/galaxies/late?seed=7", COUNTING_CONFIG);
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(
        !stored_metal_on(&mut pair.client(DB), "late").is_empty(),
        "the galaxy is stored on the promoted server; log:\n{}",
        daemon.log()
    );
}

/// Runs the daemon on `url` until it exits (at most `within`): its exit status, how long
/// it ran, and its log.
fn failed_start(url: &str, within: Duration) -> (std::process::ExitStatus, Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env("DATABASE_URL", url)
        .env("GWAR_LISTEN", "127.0.0.1:0")
        .env("GWAR_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the daemon starts");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "start-up on {url} still running after {within:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        started.elapsed(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn an_unresolvable_host_or_a_refused_port_fails_start_up_in_bounded_time() {
    let refused = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    };
    let (one, two) = (refused(), refused());
    let cases = [
        (
            "postgres://postgres@no-such-host.invalid:5432/db".to_owned(),
            "postgres://postgres@no-such-host.invalid:5432/db".to_owned(),
        ),
        (
            format!("postgres://postgres@127.0.0.1:{one}/db"),
            format!("postgres://postgres@127.0.0.1:{one}/db"),
        ),
        (
            replica::url_of(&[one, two], "db"),
            format!("postgres://postgres@127.0.0.1:{one},127.0.0.1:{two}/db"),
        ),
    ];
    for (url, label) in cases {
        let (status, took, log) = failed_start(&url, Duration::from_secs(30));
        eprintln!("{url}: exit {status} after {took:?}");
        assert!(!status.success(), "{url}: exit {status}; log:\n{log}");
        assert_eq!(status.code(), Some(1), "{url}: log:\n{log}");
        assert!(
            log.contains(&label),
            "{url}: the message names {label}; log:\n{log}"
        );
    }
}

#[test]
fn a_durable_order_is_answered_only_once_the_synchronous_standby_has_it() {
    let Some(mut pair) = Pair::start(Replication::Sync) else {
        return;
    };
    pair.create_database(DB);
    let node = Node::start(&pair.url(DB), &ONE_DAEMON);
    let game = galaxies(&pair, &node, "d", 1).remove(0);
    let (x, y) = game.coords[0];
    let mut sorted = game.coords.clone();
    sorted.sort();
    let index = sorted.iter().position(|&c| c == (x, y)).unwrap();
    let primary = pair.primary_port();
    let stored = || stored_metal_on(&mut replica::client_at(primary, DB), &game.name)[index];
    let durable = || {
        node.request(
            "POST",
            &format!(
                "/galaxies/{}/systems/{x}/{y}/build/colony?durable=1",
                game.name
            ),
            "",
        )
    };
    let first = durable();
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(
        stored(),
        game.baseline[index] - 1,
        "committed before the 201"
    );

    // Without the standby the primary holds every commit: no 201, ever.
    pair.stop_standby();
    let waiting = durable();
    assert_eq!(waiting.status, 503, "{}", waiting.body);
    let body = waiting.json();
    assert_eq!(body["applied"], true, "{body}");
    assert_eq!(body["durable"], false, "{body}");
    assert_eq!(health(&node), "degraded");

    // The standby back: the order, applied and kept, is saved; durable orders pass again.
    pair.start_standby();
    assert!(
        wait_for(PATIENCE, || node.healthy()
            && stored() == game.baseline[index] - 2),
        "saved once the standby is back: {} stored; {}",
        stored(),
        node.get("/healthz").body
    );
    let again = durable();
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(stored(), game.baseline[index] - 3);
}

#[test]
fn sigterm_while_start_up_waits_for_a_primary_exits_0_at_once() {
    let Some(pair) = Pair::start(Replication::Async) else {
        return;
    };
    pair.create_database(DB);
    let url = replica::url_of(&[pair.standby_port().expect("a standby")], DB);
    let dir = tempfile::tempdir().unwrap();
    let mut starting = Daemon::spawn(Command::new(BIN), dir.path(), &[("DATABASE_URL", &url)]);
    assert!(
        wait_for(PATIENCE, || starting
            .log()
            .contains("waiting for a read-write PostgreSQL server")),
        "{}",
        starting.log()
    );
    // Nothing was held: a clean exit, within the retry's second and a connect.
    let status = starting.terminate_within(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        starting.log()
    );
    assert!(
        starting.log().contains("stopped while waiting"),
        "{}",
        starting.log()
    );
}

#[test]
fn a_primary_whose_sessions_are_read_only_fails_start_up_naming_the_setting() {
    let Some(cluster) = crate::postgres_cluster::shared() else {
        return;
    };
    let db = cluster.database();
    db.execute(&format!(
        "ALTER DATABASE {} SET default_transaction_read_only = on",
        db.name
    ));
    let (status, took, log) = failed_start(&db.url(), PATIENCE);
    assert_eq!(status.code(), Some(1), "after {took:?}; log:\n{log}");
    assert!(log.contains("default_transaction_read_only"), "{log}");
}

#[test]
fn a_stop_whose_commits_the_synchronous_standby_never_confirmed_does_not_say_everything_saved() {
    let Some(mut pair) = Pair::start(Replication::Sync) else {
        return;
    };
    pair.create_database(DB);
    // A call timeout longer than the stop's: the shutdown's deadline, not the call
    // timeout's watch, ends the commits' wait for the standby (PostgreSQL then answers
    // the commit with success and a warning).
    let mut node = Node::start(
        &pair.url(DB),
        &[
            ("GWAR_OWNERSHIP_LEASE_SECS", "20"),
            ("GWAR_DB_CALL_TIMEOUT_SECS", "30"),
            ("GWAR_PERSISTENCE_MAX_STALL_MS", "off"),
            ("GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT", "2"),
        ],
    );
    let game = galaxies(&pair, &node, "f", 1).remove(0);
    pair.stop_standby();
    let order = node.order(&game.name, game.coords[0], "colony");
    assert_eq!(order.status, 201, "{}", order.body);
    let status = node.terminate();
    let log = node.log();
    assert_ne!(status.code(), Some(0), "log:\n{log}");
    assert!(!log.contains("everything saved"), "{log}");
    assert!(log.contains("not counted as saved"), "{log}");
}
