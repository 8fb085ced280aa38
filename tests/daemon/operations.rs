//! Operator commands beside a running daemon: `check` and `backup`, and `/admin/backup`.

use std::process::Command;

use crate::util::{first_system, sqlite, stored_events, Daemon, BIN};

fn run(args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn check_passes_on_a_sound_database_and_names_an_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let (x, y) = first_system(&daemon, "g");
    assert_eq!(daemon.order("g", (x, y), "hatchery").status, 201);
    assert_eq!(daemon.post("/admin/save").status, 200);
    let url = format!("sqlite:{}", daemon.database().display());

    // Beside the running daemon.
    let (status, text) = run(&["check", "--database", &url]);
    assert_eq!(status, 0, "{text}");
    for line in [
        "integrity_check: ok",
        "schema version: 2",
        "systems: 200 rows",
        "events: 1 rows",
        "all checks passed",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    // An orphaned structure row, inserted by hand behind the foreign keys' back.
    sqlite(&daemon.database())
        .execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO structures (system_id, structure_type, level) VALUES (999999, 'colony', 1);",
        )
        .unwrap();
    let (status, text) = run(&["check", "--database", &url]);
    assert_eq!(status, 1, "{text}");
    assert!(
        text.contains("PROBLEM: 1 structures of no system"),
        "{text}"
    );

    let (status, text) = run(&["check", "--database", "sqlite:/nonexistent/x.db"]);
    assert_ne!(status, 0, "{text}");
    let (status, _) = run(&["check", "--bogus"]);
    assert_eq!(status, 64);
}

#[test]
fn backups_while_serving_are_complete_and_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "10")],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let systems = crate::util::systems(&daemon, "g");
    for &(x, y) in &systems[..50] {
        assert_eq!(daemon.order("g", (x, y), "hatchery").status, 201);
    }
    assert_eq!(daemon.post("/admin/save").status, 200);

    // Orders keep coming while the backups are taken.
    let addr = daemon.addr;
    let later: Vec<(u64, u64)> = systems[50..].to_vec();
    let orders = std::thread::spawn(move || {
        for (x, y) in later {
            let raw = format!(
                "POST /galaxies/g/systems/{x}/{y}/build/hatchery HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
            crate::util::raw_exchange(addr, raw.as_bytes());
        }
    });
    let reply = daemon.post("/admin/backup");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let api_backup = std::path::PathBuf::from(reply.json()["path"].as_str().unwrap());
    let cli_backup = dir.path().join("by-hand.db");
    let url = format!("sqlite:{}", daemon.database().display());
    let (status, text) = run(&[
        "backup",
        "--to",
        cli_backup.to_str().unwrap(),
        "--database",
        &url,
    ]);
    assert_eq!(status, 0, "{text}");
    orders.join().unwrap();

    for backup in [&api_backup, &cli_backup] {
        let integrity: String = sqlite(backup)
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        // Everything committed before the backup began is in it.
        assert!(stored_events(backup, "g") >= 50, "{}", backup.display());
        let (status, text) = run(&[
            "check",
            "--database",
            &format!("sqlite:{}", backup.display()),
        ]);
        assert_eq!(status, 0, "{text}");
    }
    // Never overwritten.
    let before = std::fs::read(&cli_backup).unwrap();
    let (status, text) = run(&[
        "backup",
        "--to",
        cli_backup.to_str().unwrap(),
        "--database",
        &url,
    ]);
    assert_ne!(status, 0, "{text}");
    assert!(text.contains("already exists"), "{text}");
    assert_eq!(std::fs::read(&cli_backup).unwrap(), before);

    // A restored backup serves its galaxies.
    let mut daemon = daemon;
    assert!(daemon.terminate().success());
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&api_backup, restored.path().join("galactic_war.db")).unwrap();
    let daemon = Daemon::start(restored.path(), &[]);
    let (x, y) = systems[0];
    let system = daemon.get(&format!("/galaxies/g/systems/{x}/{y}")).json();
    assert_eq!(system["events"][0]["structure"], "hatchery");
}

#[test]
fn periodic_backups_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("kept");
    let backups_env = backups.to_str().unwrap().to_owned();
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            ("GWAR_BACKUP_INTERVAL", "1"),
            ("GWAR_BACKUP_KEEP", "2"),
            ("GWAR_BACKUP_DIR", &backups_env),
        ],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    // Something that is not a backup of ours is never pruned.
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::write(backups.join("notes.txt"), b"mine").unwrap();
    let count = || {
        std::fs::read_dir(&backups)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("galactic_war-"))
                    .count()
            })
            .unwrap_or(0)
    };
    std::thread::sleep(std::time::Duration::from_millis(4500));
    assert_eq!(count(), 2, "the newest two are kept");
    assert!(backups.join("notes.txt").exists());
    for entry in std::fs::read_dir(&backups).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "db") {
            assert_eq!(stored_events(&path, "g"), 0);
            let (status, text) =
                run(&["check", "--database", &format!("sqlite:{}", path.display())]);
            assert_eq!(status, 0, "{text}");
        }
    }
    assert!(daemon.terminate().success());
}
