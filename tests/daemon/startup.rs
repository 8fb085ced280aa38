//! Start-up: bad environment values, a database in use, a corrupt database (memory-only
//! mode, which refuses what it cannot save), help.

use std::process::Command;

use crate::util::{Daemon, BIN};

#[test]
fn a_bad_environment_value_exits_78_naming_the_variable() {
    for (variable, value) in [
        ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "soon"),
        ("GWAR_PERSISTENCE_ENABLED", "perhaps"),
        ("GWAR_LISTEN", "not-an-address"),
        ("DATABASE_URL", "postgres://x"),
        ("GWAR_PERSISTENCE_SYNCHRONOUS", "extra"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(BIN)
            .current_dir(dir.path())
            .env(variable, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(variable) && stderr.contains(value),
            "{stderr}"
        );
        assert!(
            !dir.path().join("galactic_war.db").exists(),
            "nothing was created"
        );
    }
}

#[test]
fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start(dir.path(), &[]);
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .env("GWAR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another galactic-war process"),
        "{stderr}"
    );
    assert_eq!(
        first.get("/healthz").status,
        200,
        "the first one is unharmed"
    );
}

/// Memory-only mode answers what it can and refuses what would be acknowledged and lost.
fn assert_refuses_what_it_cannot_save(daemon: &Daemon) {
    let created = daemon.post("/galaxies/temp?seed=1");
    assert_eq!(created.status, 503, "{}", created.body);
    assert!(
        created.json()["error"]
            .as_str()
            .unwrap()
            .contains("memory only"),
        "{}",
        created.body
    );
    let saved = daemon.post("/admin/save");
    assert_eq!(saved.status, 503, "{}", saved.body);
    assert!(saved.json()["error"]
        .as_str()
        .unwrap()
        .contains("memory only"));
    assert_eq!(daemon.get("/galaxies/temp").status, 404);
    assert_eq!(daemon.get("/galaxies/temp/systems/0/0").status, 404);
    let listing = daemon.get("/galaxies");
    assert_eq!(listing.status, 200);
    assert_eq!(listing.json()["galaxies"], serde_json::json!([]));
}

#[test]
fn a_corrupt_database_is_left_intact_and_the_daemon_serves_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("galactic_war.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    let health = daemon.get("/healthz").json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["persistence"]["state"], "memory-only");
    assert!(health["persistence"]["last_error"]
        .as_str()
        .unwrap()
        .contains("not a database"));
    assert_refuses_what_it_cannot_save(&daemon);
    assert_eq!(
        daemon.get("/healthz").json(),
        health,
        "refusals change nothing"
    );
    daemon.terminate();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file is untouched"
    );
}

#[test]
fn with_persistence_disabled_creation_and_save_go_on_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("GWAR_PERSISTENCE_ENABLED", "false")]);
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let saved = daemon.post("/admin/save");
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.json(), serde_json::json!({ "saved_systems": 0 }));
}

#[test]
fn help_and_version_work() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("DATABASE_URL") && text.contains("GWAR_LISTEN"),
        "{text}"
    );
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let unknown = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(unknown.status.code(), Some(64));
}

#[test]
fn a_damaged_page_is_found_at_start_up_and_the_file_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("galactic_war.db");
    {
        let mut daemon = Daemon::start(dir.path(), &[]);
        assert_eq!(daemon.post("/galaxies/g?seed=1&preset=classic").status, 201);
        assert!(daemon.terminate().success());
    }
    // Garbage over a page in the middle of the file; the header stays valid.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    let middle = bytes.len() / page / 2 * page;
    for (i, byte) in bytes[middle..middle + page].iter_mut().enumerate() {
        *byte = (i * 37 % 251) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let health = daemon.get("/healthz").json();
    assert_eq!(health["persistence"]["state"], "memory-only", "{health}");
    assert!(
        health["persistence"]["last_error"]
            .as_str()
            .unwrap()
            .contains("corrupt"),
        "{health}"
    );
    assert_refuses_what_it_cannot_save(&daemon);
    drop(daemon);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file is untouched"
    );
}
