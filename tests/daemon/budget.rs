//! The creation budgets (README, *Configuration*, `GWAR_MAX_TOTAL_SYSTEMS` and
//! `GWAR_MIN_FREE_DISK`): a flood of anonymous creations is refused (422) before the
//! galaxies' systems pass the budget, while orders on another galaxy keep their loss
//! window; a disk short of the minimum closes anonymous creation; admin creations pass
//! both and still count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{
    check_survivors, client, parse_reply, raw_exchange_for, request_at, sqlite, stored_metal,
    systems, Daemon, Reply, COUNTING_CONFIG,
};

const TOKEN: &str = "budget-token";
const COALESCING_MS: u64 = 200;
/// Coalescing delay plus one commit, with room for a slow disk on a shared machine (as in
/// `isolation.rs`).
const LOSS_WINDOW: Duration = Duration::from_millis(COALESCING_MS + 1000);
/// The flood's galaxies, and the budget: room for the played galaxy and 39 of them.
const FLOOD_SYSTEMS: u64 = 10_000;
const BUDGET: u64 = 400_000;
const FLOODERS: usize = 4;
/// How long the flood goes on (refused once the budget is spent): well past the loss
/// window, so that orders acknowledged during it must survive the kill at its end.
const FLOOD_FOR: Duration = Duration::from_secs(4);

/// A galaxy of `systems` systems with one structure each.
fn config(systems: u64) -> String {
    let side = (systems as f64).sqrt().ceil() as u64 * 2;
    format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.structures.colony]\nstarting_level = 1\n"
    )
}

/// Sample `name` of the admin listener's `/metrics`, if written.
fn metric(daemon: &Daemon, name: &str) -> Option<u64> {
    let reply = daemon.admin_request("GET", "/metrics", "");
    assert_eq!(reply.status, 200);
    reply.body.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.parse().expect("an integer sample"))
    })
}

fn creation_health(daemon: &Daemon) -> String {
    daemon.get("/healthz").json()["creation"]
        .as_str()
        .expect("health says whether creation is open")
        .to_owned()
}

fn create_anonymously(addr: std::net::SocketAddr, name: &str, systems: u64) -> Reply {
    let body = config(systems);
    let request = format!(
        "POST /galaxies/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = raw_exchange_for(addr, request.as_bytes(), Duration::from_secs(120));
    if raw.is_empty() {
        // Closed without an answer: status 0, for the caller to report with the log.
        return Reply {
            status: 0,
            headers: Vec::new(),
            body: String::new(),
        };
    }
    parse_reply(&raw)
}

fn create_with_token(daemon: &Daemon, name: &str, systems: u64) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    daemon.request_with(
        "POST",
        &format!("/galaxies/{name}"),
        &[("Authorization", &auth)],
        config(systems).as_bytes(),
    )
}

/// A request to the admin listener, with the token.
fn as_operator(daemon: &Daemon, method: &str, path: &str, body: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    daemon.admin_request_with(method, path, &[("Authorization", &auth)], body.as_bytes())
}

/// Systems stored in all, and as `galaxy_sizes` counts them.
fn stored_systems(path: &std::path::Path) -> (u64, u64) {
    let conn = sqlite(path);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM systems", [], |r| r.get(0))
        .unwrap();
    let sizes: i64 = conn
        .query_row(
            "SELECT coalesce(sum(systems), 0) FROM galaxy_sizes",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (rows as u64, sizes as u64)
}

/// Anonymous clients create galaxies, new names each time, for [`FLOOD_FOR`] (and at
/// least until one is refused); every reply, in order, per client.
fn flood(addr: std::net::SocketAddr) -> Vec<std::thread::JoinHandle<Vec<Reply>>> {
    let started = Instant::now();
    (0..FLOODERS)
        .map(|client| {
            std::thread::spawn(move || {
                let mut replies: Vec<Reply> = Vec::new();
                while started.elapsed() < FLOOD_FOR || replies.iter().all(|r| r.status == 201) {
                    let name = format!("flood{client}x{}", replies.len());
                    replies.push(create_anonymously(addr, &name, FLOOD_SYSTEMS));
                }
                replies
            })
        })
        .collect()
}

#[test]
fn a_flood_of_anonymous_creations_stops_at_the_budget_and_orders_keep_their_loss_window() {
    let dir = tempfile::tempdir().unwrap();
    let budget = BUDGET.to_string();
    let coalescing = COALESCING_MS.to_string();
    let env = [
        ("GWAR_MAX_TOTAL_SYSTEMS", budget.as_str()),
        ("GWAR_MIN_FREE_DISK", "0"),
        ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", coalescing.as_str()),
        ("GWAR_ADMIN_TOKEN", TOKEN),
    ];
    let mut daemon = Daemon::start(dir.path(), &env);
    let path = daemon.database();
    assert_eq!(metric(&daemon, "gwar_systems_budget"), Some(BUDGET));
    assert_eq!(metric(&daemon, "gwar_disk_free_min_bytes"), Some(0));
    let played = daemon.request("POST", "/galaxies/play?seed=3", COUNTING_CONFIG);
    assert_eq!(played.status, 201, "{}", played.body);
    let play_systems = played.json()["systems"].as_u64().unwrap();
    let baseline = stored_metal(&path, "play").expect("created");
    let orders = {
        let (addr, coords) = (daemon.addr, systems(&daemon, "play"));
        std::thread::spawn(move || client(addr, "play", coords, 11))
    };

    // The flood, watched from the admin listener: the count never passes the budget.
    let started = Instant::now();
    let floods = flood(daemon.addr);
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (admin, done, seen) = (daemon.admin_addr, done.clone(), seen.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let reply = request_at(admin, "GET", "/metrics", &[], b"");
                let total = reply.body.lines().find_map(|l| {
                    l.strip_prefix("gwar_systems_total ")
                        .map(|v| v.parse::<u64>().unwrap())
                });
                seen.lock()
                    .unwrap()
                    .push(total.expect("gwar_systems_total"));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let replies: Vec<Vec<Reply>> = floods.into_iter().map(|f| f.join().unwrap()).collect();
    let flood_took = started.elapsed();
    // Killed as soon as the flood is over (the watcher stopped first, so that it does
    // not ask a dead daemon): what the orders placed during it kept.
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let killed_at = Instant::now();
    daemon.kill9();
    let orders = orders.join().unwrap();

    let all: Vec<&Reply> = replies.iter().flatten().collect();
    let created = all.iter().filter(|r| r.status == 201).count();
    let refused = all.len() - created;
    let fits = ((BUDGET - play_systems) / FLOOD_SYSTEMS) as usize;
    assert_eq!(created, fits, "as many as fit were created, no more");
    for reply in all.iter().filter(|r| r.status != 201) {
        assert_eq!(reply.status, 422, "{}; log:\n{}", reply.body, daemon.log());
        assert!(
            reply.body.contains("GWAR_MAX_TOTAL_SYSTEMS"),
            "{}",
            reply.body
        );
    }
    let expected = play_systems + fits as u64 * FLOOD_SYSTEMS;
    let seen = seen.lock().unwrap().clone();
    let highest = seen.iter().copied().max().unwrap_or(0);
    assert!(highest <= BUDGET, "/metrics counted {highest} systems");
    assert_eq!(stored_systems(&path), (expected, expected));
    let survivors = check_survivors(&path, "play", &baseline, &orders, killed_at, LOSS_WINDOW);
    println!(
        "flood: {created} galaxies of {FLOOD_SYSTEMS} created and {refused} refused in \
         {flood_took:?}; {} metric readings, highest {highest}; orders: {} sent, {} \
         survived, {} had to",
        seen.len(),
        orders.len(),
        survivors.survived,
        survivors.must_survive
    );
    assert!(
        survivors.must_survive > 0,
        "orders were placed during the flood"
    );

    // Started again: the budget is counted from the database.
    let daemon = Daemon::start(dir.path(), &env);
    assert_eq!(metric(&daemon, "gwar_systems_total"), Some(expected));
    assert_eq!(creation_health(&daemon), "open");
    let rest = BUDGET - expected;
    assert_eq!(
        create_anonymously(daemon.addr, "last", rest + 1).status,
        422
    );
    assert_eq!(create_anonymously(daemon.addr, "last", rest).status, 201);
    assert_eq!(creation_health(&daemon), "closed: systems");
    let one = create_anonymously(daemon.addr, "one", 1);
    assert_eq!(one.status, 422, "{}", one.body);
    // The admin token and the admin listener pass, and count.
    let admin = create_with_token(&daemon, "admin1", 5000);
    assert_eq!(admin.status, 201, "{}", admin.body);
    let listener = as_operator(&daemon, "POST", "/galaxies/admin2", &config(3000));
    assert_eq!(listener.status, 201, "{}", listener.body);
    assert_eq!(metric(&daemon, "gwar_systems_total"), Some(BUDGET + 8000));
    // A deletion frees its systems once its rows are gone.
    assert_eq!(
        as_operator(&daemon, "DELETE", "/galaxies/admin1", "").status,
        204
    );
    assert_eq!(
        as_operator(&daemon, "DELETE", "/galaxies/admin2", "").status,
        204
    );
    assert_eq!(
        as_operator(&daemon, "DELETE", "/galaxies/last", "").status,
        204
    );
    assert!(
        crate::util::wait_for(Duration::from_secs(60), || {
            metric(&daemon, "gwar_systems_total") == Some(expected)
        }),
        "the deleted galaxies' systems were not given back"
    );
    assert_eq!(create_anonymously(daemon.addr, "again", rest).status, 201);
}

#[test]
fn a_disk_short_of_the_minimum_closes_anonymous_creation() {
    let dir = tempfile::tempdir().unwrap();
    // More than any filesystem has free: 1 EiB less a little.
    let env = [
        ("GWAR_MIN_FREE_DISK", "1000000T"),
        ("GWAR_ADMIN_TOKEN", TOKEN),
    ];
    let daemon = Daemon::start(dir.path(), &env);
    assert_eq!(creation_health(&daemon), "closed: disk");
    let free = metric(&daemon, "gwar_disk_free_bytes").expect("a SQLite file's disk is watched");
    assert!(free > 0);
    assert_eq!(
        metric(&daemon, "gwar_disk_free_min_bytes"),
        Some(1_000_000u64 << 40)
    );
    let refused = create_anonymously(daemon.addr, "small", 10);
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body.contains("disk") && refused.body.contains("GWAR_MIN_FREE_DISK"),
        "{}",
        refused.body
    );
    let admin = create_with_token(&daemon, "small", 10);
    assert_eq!(admin.status, 201, "{}", admin.body);
    let listener = as_operator(&daemon, "POST", "/galaxies/other", &config(10));
    assert_eq!(listener.status, 201, "{}", listener.body);
    assert_eq!(metric(&daemon, "gwar_systems_total"), Some(20));
    // The health answer keeps its other fields.
    let health = daemon.get("/healthz").json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["persistence"]["state"], "healthy", "{health}");
}

#[test]
fn daemons_sharing_a_postgres_database_share_the_budget() {
    let Some(cluster) = crate::postgres_cluster::shared() else {
        return;
    };
    let database = cluster.database();
    let url = database.url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("GWAR_MAX_TOTAL_SYSTEMS", "1000"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start(dir_a.path(), &env);
    let b = Daemon::start(dir_b.path(), &env);
    assert_eq!(create_anonymously(a.addr, "first", 600).status, 201);
    // B counts what the database knows: A's galaxy leaves room for 400 only.
    let refused = create_anonymously(b.addr, "second", 401);
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(create_anonymously(b.addr, "second", 400).status, 201);
    assert_eq!(creation_health(&b), "closed: systems");
    assert_eq!(create_anonymously(a.addr, "third", 1).status, 422);
    for daemon in [&a, &b] {
        assert_eq!(metric(daemon, "gwar_systems_total"), Some(1000));
        assert_eq!(
            metric(daemon, "gwar_disk_free_bytes"),
            None,
            "no disk watched"
        );
    }
}
