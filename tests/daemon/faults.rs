//! Real faults under the real daemon: the database directory removed or replaced, and a
//! full disk (a small tmpfs). Orders keep working, health tells the truth, nothing is
//! lost, and nothing is written where it does not belong.

use std::time::Duration;

use crate::disk::{fill, Tmpfs};
use crate::util::{first_system, stored_events, wait_for, Daemon};

fn health_state(daemon: &Daemon) -> serde_json::Value {
    daemon.get("/healthz").json()
}

/// Waits until health says `degraded`; the persistence error it reports.
fn degraded_within(daemon: &Daemon, timeout: Duration) -> String {
    assert!(
        wait_for(timeout, || health_state(daemon)["status"] == "degraded"),
        "{}",
        health_state(daemon)
    );
    health_state(daemon)["persistence"]["last_error"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_removed_or_replaced_database_directory_is_reported_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = format!("sqlite:{}", data.join("galactic_war.db").display());
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("DATABASE_URL", &url),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
        ],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let (x, y) = first_system(&daemon, "g");

    std::fs::remove_dir_all(&data).unwrap();
    assert_eq!(daemon.order("g", (x, y), "hatchery").status, 201);
    let error = degraded_within(&daemon, Duration::from_secs(20));
    assert!(error.contains("was removed"), "{error}");
    // The game goes on from memory.
    let system = daemon.get(&format!("/galaxies/g/systems/{x}/{y}")).json();
    assert_eq!(system["events"][0]["structure"], "hatchery");
    assert_eq!(health_state(&daemon)["persistence"]["dirty_systems"], 1);

    // Something else now sits where the database was: it is not ours to write.
    std::fs::create_dir_all(&data).unwrap();
    let impostor = data.join("galactic_war.db");
    std::fs::write(&impostor, b"someone else's file").unwrap();
    // The next retry (backoff capped at the 1 s interval) finds it.
    let last_error = || {
        health_state(&daemon)["persistence"]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        wait_for(Duration::from_secs(20), || last_error()
            .contains("was replaced")),
        "{}",
        last_error()
    );
    assert_eq!(std::fs::read(&impostor).unwrap(), b"someone else's file");
    assert!(!data.join("galactic_war.db-wal").exists());
    assert!(daemon.log().contains("saving failed"), "{}", daemon.log());
}

#[test]
fn a_full_disk_is_survived_and_everything_saved_once_there_is_room() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", tmpfs.path.join("galactic_war.db").display());
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("DATABASE_URL", &url),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
            // The whole tmpfs is less than the default space kept free (1 GiB).
            ("GWAR_MIN_FREE_DISK", "0"),
        ],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1&preset=classic").status, 201);
    let systems = crate::util::systems(&daemon, "g");
    let filler = fill(&tmpfs.path, "filler", u64::MAX);

    // Every first order adds an event row: the database must grow, and cannot.
    for &(x, y) in &systems {
        let reply = daemon.order("g", (x, y), "storagedepot");
        assert_eq!(reply.status, 201, "orders keep working: {}", reply.body);
    }
    let error = degraded_within(&daemon, Duration::from_secs(30));
    assert!(error.contains("full"), "{error}");
    assert!(
        daemon.get("/galaxies/g").status == 200,
        "reads keep working"
    );

    std::fs::remove_file(filler).unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            let health = health_state(&daemon);
            health["persistence"]["state"] == "healthy"
                && health["persistence"]["dirty_systems"] == 0
        }),
        "{}",
        health_state(&daemon)
    );
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    let db = tmpfs.path.join("galactic_war.db");
    assert_eq!(
        stored_events(&db, "g"),
        systems.len() as i64,
        "every order was saved"
    );
    drop(daemon);
}
