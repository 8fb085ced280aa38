//! History over the real daemon (README, *History*): the route pages back what was
//! ordered, and a `kill -9` keeps history and state in step — for every system, the orders
//! its stored history records are exactly the orders its stored state reflects (each batch
//! saves both or neither).

use std::time::Duration;

use galactic_war::testing::{ReadStore, SqliteReader};

use crate::util::{client, first_system, sqlite, stored_metal, systems, Daemon, COUNTING_CONFIG};

/// Metal every system of [`COUNTING_CONFIG`] starts with; each order costs one.
const START_METAL: i64 = 1_000_000_000;

/// Orders recorded in the stored history, per system in `(x, y)` order.
fn ordered_per_system(path: &std::path::Path, galaxy: &str, coords: &[(u64, u64)]) -> Vec<i64> {
    let reader = SqliteReader::open(path).unwrap();
    let history = reader.history(galaxy, 0, usize::MAX).unwrap();
    let mut counts = vec![0i64; coords.len()];
    for entry in history.iter().filter(|e| e.kind.name() == "build") {
        let at = coords
            .iter()
            .position(|&(x, y)| (x, y) == (u64::from(entry.x), u64::from(entry.y)))
            .expect("an entry of one of the galaxy's systems");
        counts[at] += 1;
    }
    counts
}

#[test]
fn the_route_pages_back_what_was_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "0")]);
    assert_eq!(
        daemon
            .request("POST", "/galaxies/h", COUNTING_CONFIG)
            .status,
        201
    );
    let at = first_system(&daemon, "h");
    for _ in 0..3 {
        assert_eq!(daemon.order("h", at, "colony").status, 201);
    }
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    let page = daemon.admin_request("GET", "/admin/galaxies/h/history", "");
    assert_eq!(page.status, 200, "{}", page.body);
    let entries = page.json()["entries"].as_array().unwrap().clone();
    assert_eq!(
        entries.len(),
        6,
        "an order and its completion, three times: {entries:?}"
    );
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "build").count(), 3);
    for entry in &entries {
        assert_eq!(
            (entry["x"].as_u64(), entry["y"].as_u64()),
            (Some(at.0), Some(at.1))
        );
        assert_eq!(entry["structure"], "colony");
    }
    let levels: Vec<u64> = entries
        .iter()
        .map(|e| e["level"].as_u64().unwrap())
        .collect();
    assert_eq!(
        levels.iter().max(),
        Some(&4),
        "levels 2, 3 and 4: {levels:?}"
    );
    let one = daemon.admin_request("GET", "/admin/galaxies/h/history?limit=1", "");
    assert_eq!(one.json()["entries"].as_array().unwrap().len(), 1);
    for bad in ["?limit=0", "?limit=10001", "?since_tick=-1", "?page=2"] {
        let refused = daemon.admin_request("GET", &format!("/admin/galaxies/h/history{bad}"), "");
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    assert_eq!(
        daemon
            .admin_request("GET", "/admin/galaxies/none/history", "")
            .status,
        404
    );
    assert_eq!(
        daemon.get("/admin/galaxies/h/history").status,
        404,
        "admin only"
    );
}

#[test]
fn a_kill_keeps_history_and_state_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
        ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
    ];
    let mut daemon = Daemon::start(dir.path(), &env);
    assert_eq!(
        daemon
            .request("POST", "/galaxies/h", COUNTING_CONFIG)
            .status,
        201
    );
    let coords = systems(&daemon, "h");
    let path = daemon.database();
    let cycles: u64 = std::env::var("GWAR_HISTORY_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    for cycle in 0..cycles {
        let addr = daemon.addr;
        let ordering = {
            let coords = coords.clone();
            std::thread::spawn(move || client(addr, "h", coords, cycle + 7))
        };
        // A kill at a different moment each cycle, in the middle of the orders.
        std::thread::sleep(Duration::from_millis(150 + 97 * cycle));
        daemon.kill9();
        let sent = ordering.join().unwrap();
        assert!(sent.len() > 1, "orders were placed before the kill");
        let metal = stored_metal(&path, "h").expect("stored");
        let from_state: Vec<i64> = metal.iter().map(|m| START_METAL - m).collect();
        assert_eq!(
            ordered_per_system(&path, "h", &coords),
            from_state,
            "cycle {cycle}: the history's orders are the state's, system by system"
        );
        drop(sqlite(&path));
        daemon = Daemon::start(dir.path(), &env);
    }
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
