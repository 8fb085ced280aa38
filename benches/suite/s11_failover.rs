//! Section 11: several daemons on one PostgreSQL database. What the ownership fence costs
//! persisted orders, and the failover of a galaxy after `kill -9` of its owner, the owner
//! on this host or (as root, in a UTS namespace of its own) as on another.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::StructureKind;
use galactic_war::testing::AppInternals;
use serde_json::{json, Map, Value};

use crate::daemon::{daemon_command, exchange, DAEMON};
use crate::harness::{
    config, median, order_stream, orders_in, paired_ratio, pg_checkpoint, pg_settings, row, Run,
};
use crate::pg_cluster;

/// A daemon of section 11 on the PostgreSQL database `url`, with the lease `lease_secs`:
/// the process (killed on drop), its game address, and its log lines as they come.
struct PgDaemon {
    child: Child,
    addr: SocketAddr,
    log: crossbeam_channel::Receiver<String>,
}

impl Drop for PgDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `host`, the daemon runs in a UTS namespace of its own with that host name
/// (`unshare --uts`, root only), so the others cannot tell when it has exited, as for a
/// daemon on another machine.
fn pg_daemon(dir: &Path, url: &str, lease_secs: u64, host: Option<&str>) -> PgDaemon {
    let mut command = match host {
        None => Command::new(DAEMON),
        Some(host) => {
            let mut command = Command::new("unshare");
            command.args([
                "--uts",
                "sh",
                "-c",
                "hostname \"$0\" && exec \"$1\"",
                host,
                DAEMON,
            ]);
            command
        }
    };
    let mut child = daemon_command(&mut command, dir)
        .env("DATABASE_URL", url)
        .env("GWAR_OWNERSHIP_LEASE_SECS", lease_secs.to_string())
        .spawn()
        .expect("the daemon starts");
    let (lines, log) = crossbeam_channel::unbounded();
    let stderr = child.stderr.take().expect("piped");
    // Reads the log to its end, so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let started = Instant::now();
    let addr = loop {
        let line = log
            .recv_timeout(Duration::from_secs(60).saturating_sub(started.elapsed()))
            .expect("the daemon listens within a minute");
        if let Some(addr) = line.split("listening on http://").nth(1) {
            break addr.trim().parse().expect("an address");
        }
    };
    PgDaemon { child, addr, log }
}

/// Orders/s persisted in batches of `batch` orders, the same stream on a new database
/// each time, with the fence ending every batch or (`fencing` false) without it.
fn fenced_orders(
    cluster: &pg_cluster::Cluster,
    systems: u64,
    stream: &[(u64, usize, StructureKind)],
    batch: u64,
    fencing: bool,
) -> f64 {
    let database = cluster.database();
    let app = AppState::open(&pg_settings(&database.url())).expect("opens");
    app.writer()
        .expect("persistence")
        .with_postgres(move |writer| writer.set_fencing(fencing))
        .expect("the writer answers")
        .expect("a PostgreSQL store");
    orders_in(&app, systems, stream, batch, || pg_checkpoint(cluster)).0
}

/// What the fence costs: persisted orders/s with it and without it, `rounds` pairs taking
/// turns at going first; the medians of each side and of the pairs' ratios.
fn pg_fence_overhead(
    cluster: &pg_cluster::Cluster,
    systems: u64,
    orders: u64,
    batch: u64,
    rounds: usize,
) -> (f64, f64, f64) {
    let stream = order_stream(systems, orders);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let sides = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for fencing in sides {
            let rate = fenced_orders(cluster, systems, &stream, batch, fencing);
            if fencing {
                with.push(rate);
            } else {
                without.push(rate);
            }
        }
    }
    let ratio = paired_ratio(&with, &without);
    (median(with), median(without), ratio)
}

/// Whether this process may make namespaces (`unshare --uts`: root).
fn may_unshare() -> bool {
    Command::new("unshare")
        .args(["--uts", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The failover of a `systems`-system galaxy: daemon A creates (so owns) it, daemon B
/// beside it is redirected to A; A is killed with SIGKILL, and B is asked for one system
/// of the galaxy every 10 ms until it serves it. With `other_host`, A runs as on another
/// machine (B must wait for A's lease); without, B sees that A has exited. Returns the
/// time from the kill to B's first 200, and B's load of the galaxy as its log reports it.
fn pg_failover(
    cluster: &pg_cluster::Cluster,
    dir: &Path,
    systems: u64,
    lease_secs: u64,
    other_host: bool,
) -> (Duration, String) {
    let database = cluster.database();
    let url = database.url();
    let owner = pg_daemon(dir, &url, lease_secs, other_host.then_some("gwar-bench-a"));
    let created = exchange(
        owner.addr,
        "POST",
        "/galaxies/failover?seed=1",
        &config(systems, 100).to_toml(),
    );
    assert_eq!(created.0, 201, "{}", created.1);
    let taker = pg_daemon(dir, &url, lease_secs, None);
    let (status, page) = exchange(owner.addr, "GET", "/galaxies/failover?limit=1", "");
    assert_eq!(status, 200, "{page}");
    let page: Value = serde_json::from_str(&page).expect("JSON");
    let first = &page["systems"][0];
    let path = format!("/galaxies/failover/systems/{}/{}", first["x"], first["y"]);
    let system = |addr| exchange(addr, "GET", &path, "").0;
    let served = |status: u16| status == 200;
    assert!(served(system(owner.addr)));
    assert_eq!(system(taker.addr), 307, "the owner's galaxy is redirected");
    let mut owner = owner;
    owner.child.kill().expect("SIGKILL");
    let killed = Instant::now();
    let _ = owner.child.wait();
    loop {
        assert!(
            killed.elapsed() < Duration::from_secs(lease_secs + 300),
            "no failover"
        );
        if served(system(taker.addr)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let failover = killed.elapsed();
    let load = taker
        .log
        .try_iter()
        .find_map(|line| {
            line.split("galaxy 'failover' loaded (")
                .nth(1)
                .map(|rest| rest.trim_end_matches(')').to_owned())
        })
        .unwrap_or_else(|| "not in the log".to_owned());
    (failover, load)
}

/// Section 11: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir, large) = (run.quick, run.dir.as_path(), run.large);
    match pg_cluster::Cluster::private_durable() {
        None => {
            println!("| 11. Several daemons: skipped, PostgreSQL not installed |  |  |  |  |")
        }
        Some(cluster) => {
            let (orders, rounds) = if quick { (50_000, 2) } else { (200_000, 4) };
            let (with, without, ratio) = pg_fence_overhead(&cluster, 10_000, orders, 1000, rounds);
            row(
                "11. PostgreSQL orders persisted (batches of 1000), fence on vs off",
                format!("{with:.0} orders/s"),
                format!("{without:.0} orders/s"),
                Some(ratio),
                "≥ 0.95",
            );
            out.insert(
                "fence".into(),
                json!({"orders": orders, "batch": 1000, "rounds": rounds,
                       "with": with, "without": without, "ratio": ratio}),
            );
            let lease = 15;
            let failover_dir = dir.join("failover");
            std::fs::create_dir_all(&failover_dir).expect("a directory");
            let mut json_failover = Vec::new();
            for other_host in [true, false] {
                if other_host && !may_unshare() {
                    println!("| 11. failover, owner on another host: skipped, unshare --uts needs root |  |  |  |  |");
                    continue;
                }
                let (failover, load) =
                    pg_failover(&cluster, &failover_dir, large, lease, other_host);
                let (whose, target) = if other_host {
                    ("on another host", "≤ lease + load")
                } else {
                    ("on this host (a restart)", "≈ load")
                };
                row(
                    &format!("11. failover after kill -9 of the owner {whose} of a {large}-system galaxy, lease {lease} s"),
                    format!("{failover:?}"),
                    format!("new owner's load: {load}"),
                    None,
                    target,
                );
                json_failover.push(json!({"other_host": other_host, "systems": large,
                    "lease_s": lease, "failover_ms": failover.as_millis() as u64, "load": load}));
            }
            out.insert("failover".into(), Value::Array(json_failover));
        }
    }
}
