//! The daemon on PostgreSQL as an operator runs it: `DATABASE_URL=postgres://…`, the
//! walkthrough across a restart, a second daemon on the same database beside it, backups
//! pointed at PostgreSQL's own tools, and `check` on the server database.

use std::process::Command;

use crate::postgres_cluster as pg;
use crate::util::{first_system, Daemon, BIN};

#[test]
fn the_walkthrough_on_postgres_survives_a_restart_and_a_second_daemon_starts_beside_it() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let database = cluster.database();
    let url = database.url();
    let env = [("DATABASE_URL", url.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &env);
    assert_eq!(daemon.post("/galaxies/andromeda?seed=42").status, 201);
    let (x, y) = first_system(&daemon, "andromeda");
    let build = daemon.order("andromeda", (x, y), "hatchery");
    assert_eq!(build.status, 201, "{}", build.body);

    // A second daemon on the same database starts beside the first (several daemons
    // share a database; which one serves a galaxy is the ownership tests' business).
    let other_dir = tempfile::tempdir().unwrap();
    let mut second = Daemon::start(other_dir.path(), &env);
    for daemon in [&daemon, &second] {
        let health = daemon.get("/healthz");
        assert_eq!(health.status, 200, "{}", health.body);
        assert_eq!(health.json()["status"], "ok", "{}", health.body);
    }
    assert!(second.terminate().success(), "log:\n{}", second.log());

    // Backups are PostgreSQL's own business: a clear refusal, nothing written.
    let backup = daemon.admin_post("/admin/backup");
    assert_eq!(backup.status, 409, "{}", backup.body);
    assert!(backup.body.contains("pg_dump"), "{}", backup.body);

    let mut daemon = daemon;
    assert!(daemon.terminate().success(), "log:\n{}", daemon.log());
    // Right after a clean stop the database is free again.
    let daemon = Daemon::start(dir.path(), &env);
    let system = daemon
        .get(&format!("/galaxies/andromeda/systems/{x}/{y}"))
        .json();
    let events = system["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "the build survived the restart: {system}");
    assert_eq!(
        events[0]["completion_tick"],
        build.json()["completion_tick"]
    );

    // `check` reads the server database beside the running daemon.
    let check = Command::new(BIN)
        .args(["check", "--database", &url])
        .output()
        .expect("check runs");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut daemon = daemon;
    assert!(daemon.terminate().success(), "log:\n{}", daemon.log());
}
