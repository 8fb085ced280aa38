//! A partition (issue 23): daemon A cut off from PostgreSQL while its players still
//! reach it, daemon B beside it. A's database traffic goes through a stalling proxy,
//! frozen mid-play: every socket stays open and nothing is forwarded, as a network that
//! acknowledges and never answers. A must stop acknowledging orders within its stall
//! limit (`GWAR_PERSISTENCE_MAX_STALL_MS`, default a fifth of the lease), B takes the
//! galaxy once A's lease has run out, and the orders A acknowledged but B never saw are
//! only those of the loss window before the freeze and of the stall limit after it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ownership::Node;
use crate::postgres_cluster as pg;
use crate::proxy::Proxy;
use crate::util::{
    check_survivors_of, request_at, stored_metal_pg, wait_for, Order, COUNTING_CONFIG,
};

/// The ownership tests' lease (3 s): the default stall limit is then 1 s.
const STALL_LIMIT: Duration = Duration::from_secs(1);
/// `GWAR_PERSISTENCE_COALESCING_DELAY_MS` of the ownership tests' daemons.
const COALESCING: Duration = Duration::from_millis(50);
/// Coalescing delay plus one commit, with room for a busy machine.
const LOSS_WINDOW: Duration = Duration::from_millis(50 + 1000);
/// Scheduling slack on a busy 2-core machine: the order in flight when the limit passes,
/// the writer's turn, the reply's way back.
const SLACK: Duration = Duration::from_millis(1000);
const PATIENCE: Duration = Duration::from_secs(60);

/// Orders on `coords` of `galaxy` in turn, one at a time, until `stop`: every answer
/// recorded, a refusal (503) as an order that was not acknowledged (and changed nothing).
pub(crate) fn ordering(
    addr: std::net::SocketAddr,
    galaxy: &str,
    coords: Vec<(u64, u64)>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<Order>, usize)> {
    let galaxy = galaxy.to_owned();
    std::thread::spawn(move || {
        let (mut acknowledged, mut refused) = (Vec::new(), 0);
        let mut i = 0usize;
        while !stop.load(Relaxed) {
            let system = i % coords.len();
            let (x, y) = coords[system];
            let path = format!("/galaxies/{galaxy}/systems/{x}/{y}/build/colony");
            let reply = request_at(addr, "POST", &path, &[], b"");
            match reply.status {
                201 => acknowledged.push(Order {
                    system,
                    acknowledged: Some(Instant::now()),
                }),
                503 => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => panic!("{galaxy}: an order got {other}: {}", reply.body),
            }
            i += 1;
        }
        (acknowledged, refused)
    })
}

#[test]
fn a_daemon_cut_off_from_its_database_stops_acknowledging_within_its_stall_limit() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let proxy = Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], cluster.port())));
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port(), db.name);
    // A's sessions all go through the proxy; a short call deadline, as the stall tests'.
    let a = Node::start(&via_proxy, &[("GWAR_DB_CALL_TIMEOUT_SECS", "2")]);
    let b = Node::start(&db.url(), &[]);
    a.create("cut", COUNTING_CONFIG);
    let coords = crate::util::systems(&a, "cut");
    let baseline = stored_metal_pg(&db, "cut");

    let stop = Arc::new(AtomicBool::new(false));
    let orders = ordering(a.addr, "cut", coords.clone(), stop.clone());
    // Play for a while with the database reachable, then cut A off.
    assert!(wait_for(PATIENCE, || a
        .metric("gwar_persistence_batches_total")
        >= 5.0));
    let frozen_at = Instant::now();
    proxy.freeze();
    // B takes the galaxy once A's lease has run out; A refuses meanwhile.
    assert!(
        wait_for(PATIENCE, || b.get("/galaxies/cut").status == 200),
        "b never took the galaxy: {:?}",
        b.get("/galaxies/cut")
    );
    stop.store(true, Relaxed);
    let (acknowledged, refused) = orders.join().unwrap();
    let stored = stored_metal_pg(&db, "cut");
    proxy.thaw();

    let survivors = check_survivors_of(
        stored,
        "cut",
        &baseline,
        &acknowledged,
        frozen_at,
        LOSS_WINDOW,
    );
    let after_freeze: Vec<Duration> = acknowledged
        .iter()
        .filter_map(|o| o.acknowledged?.checked_duration_since(frozen_at))
        .collect();
    let last = after_freeze.iter().max().copied().unwrap_or_default();
    let lost = acknowledged.len() - survivors.survived;
    println!(
        "partition: {} acknowledged ({} after the freeze, the last {last:?} after it), {refused} refused, {lost} lost",
        acknowledged.len(),
        after_freeze.len(),
    );
    assert!(refused > 0, "a refused orders once cut off");
    assert!(
        last <= COALESCING + STALL_LIMIT + SLACK,
        "a acknowledged orders {last:?} after the freeze; the bound is the coalescing delay \
         {COALESCING:?} + the stall limit {STALL_LIMIT:?} (+ {SLACK:?} slack)"
    );
}
