//! Operator commands beside a running daemon: `check` and `backup`, and `/admin/backup`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    let url = format!("sqlite:{}", daemon.database().display());

    // Beside the running daemon.
    let (status, text) = run(&["check", "--database", &url]);
    assert_eq!(status, 0, "{text}");
    for line in [
        "integrity_check: ok",
        "schema version: 5",
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
    assert_eq!(daemon.admin_post("/admin/save").status, 200);

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
    let reply = daemon.admin_post("/admin/backup");
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
    // Three backups written, and one of them pruned again.
    let written = || daemon.log().matches("backup written to").count();
    assert!(
        crate::util::wait_for(std::time::Duration::from_secs(30), || written() >= 3
            && count() == 2),
        "{} written, {} kept",
        written(),
        count()
    );
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

#[test]
fn concurrent_backups_run_one_at_a_time_and_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            // The schedule joins in; nothing of ours is pruned meanwhile.
            ("GWAR_BACKUP_INTERVAL", "1"),
            ("GWAR_BACKUP_KEEP", "1000"),
        ],
    );
    for galaxy in ["a", "b", "c"] {
        assert_eq!(
            daemon.post(&format!("/galaxies/{galaxy}?seed=1")).status,
            201
        );
    }
    let backup_lines = |log: &str| log.matches("backup written to").count();
    let mut written = Vec::new();
    let mut round = 0;
    // Four rounds and four backups at least (a round may find the schedule's backup
    // running and get four 409s), and on until the schedule has run beside them (a backup
    // written that no request asked for, or one skipped).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while round < 4
        || written.len() < 4
        || !(backup_lines(&daemon.log()) > written.len()
            || daemon.log().contains("periodic backup skipped"))
    {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        round += 1;
        let start = std::sync::Barrier::new(4);
        let replies: Vec<crate::util::Reply> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        daemon.admin_post("/admin/backup")
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for reply in &replies {
            match reply.status {
                200 => {
                    written.push(std::path::PathBuf::from(
                        reply.json()["path"].as_str().unwrap(),
                    ));
                }
                409 => assert!(
                    reply.json()["error"]
                        .as_str()
                        .unwrap()
                        .contains("a backup is already running"),
                    "{}",
                    reply.body
                ),
                other => panic!("round {round}: {other} {}", reply.body),
            }
        }
    }
    let mut unique = written.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), written.len(), "each backup its own file");
    for backup in &written {
        let (status, text) = run(&[
            "check",
            "--database",
            &format!("sqlite:{}", backup.display()),
        ]);
        assert_eq!(status, 0, "{text}");
        assert!(text.contains("systems: 600 rows"), "{text}");
    }
    let log = daemon.log();
    assert!(!log.contains("backup failed"), "{log}");
    assert!(!log.contains("request failed"), "{log}");
    // Nothing half-written is left beside them, and `check` left nothing either.
    let backups = dir.path().join("backups");
    for entry in std::fs::read_dir(&backups).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".db"), "{name}");
    }
}

#[test]
fn a_crashed_backup_is_removed_at_the_next_start_and_check_names_it() {
    // A running galactic-war, whose backup the next daemon must not take away.
    let elsewhere = tempfile::tempdir().unwrap();
    let running = Daemon::start(elsewhere.path(), &[]);

    let dir = tempfile::tempdir().unwrap();
    {
        let mut daemon = Daemon::start(dir.path(), &[]);
        assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
        assert!(daemon.terminate().success());
    }
    // What a SIGKILL mid-copy leaves: a full-size copy and its rollback journal, named
    // after a process that is gone (above Linux's largest PID: never a live process).
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let database = std::fs::read(dir.path().join("galactic_war.db")).unwrap();
    let crashed = backups.join("galactic_war-20250101T000000Z.db.partial-4194305");
    let journal = backups.join("galactic_war-20250101T000000Z.db.partial-4194305-journal");
    std::fs::write(&crashed, &database).unwrap();
    std::fs::write(&journal, &database[..4096]).unwrap();
    let in_progress = backups.join(format!(
        "galactic_war-20250101T000001Z.db.partial-{}",
        running.pid()
    ));
    std::fs::write(&in_progress, &database).unwrap();
    let finished = backups.join("galactic_war-20250101T000000Z.db");
    std::fs::write(&finished, &database).unwrap();
    std::fs::write(backups.join("notes.txt"), b"mine").unwrap();

    let (status, text) = run(&[
        "check",
        "--database",
        &format!("sqlite:{}", crashed.display()),
    ]);
    assert_eq!(status, 1, "{text}");
    assert!(text.contains("unfinished backup"), "{text}");
    assert!(!text.contains("readonly"), "{text}");

    let daemon = Daemon::start(dir.path(), &[]);
    assert!(!crashed.exists() && !journal.exists(), "{}", daemon.log());
    assert!(
        in_progress.exists(),
        "a running galactic-war's copy is kept"
    );
    assert!(finished.exists() && backups.join("notes.txt").exists());
    let log = daemon.log();
    assert!(
        log.contains("removed an unfinished backup left by a crash: ")
            && log.contains("galactic_war-20250101T000000Z.db.partial-4194305-journal"),
        "{log}"
    );
    assert!(log.contains(&format!("process {}", running.pid())), "{log}");
    assert_eq!(daemon.get("/galaxies/g").status, 200);
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `PATH` with `suffix` appended to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

#[test]
fn check_and_backup_leave_no_wal_or_shm_beside_what_they_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let systems = crate::util::systems(&daemon, "g");
    assert_eq!(daemon.order("g", systems[0], "hatchery").status, 201);
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    let database = daemon.database();
    let url = format!("sqlite:{}", database.display());
    let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();

    // Beside the running daemon: its -wal and -shm are its own, and stay so.
    let (wal, shm) = (beside(&database, "-wal"), beside(&database, "-shm"));
    let theirs = (inode(&wal), inode(&shm));
    let copies = dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    let copy = copies.join("copy.db");
    let (status, text) = run(&["check", "--database", &url]);
    assert_eq!(status, 0, "{text}");
    let (status, text) = run(&["backup", "--to", copy.to_str().unwrap(), "--database", &url]);
    assert_eq!(status, 0, "{text}");
    assert_eq!((inode(&wal), inode(&shm)), theirs);
    assert_eq!(daemon.order("g", systems[1], "hatchery").status, 201);
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    assert_eq!(stored_events(&database, "g"), 2, "{}", daemon.log());

    // A backup nobody has open (in WAL mode, like its source): checked and copied, and
    // nothing appears beside it.
    assert_eq!(names(&copies), ["copy.db"]);
    let copy_url = format!("sqlite:{}", copy.display());
    let (status, text) = run(&["check", "--database", &copy_url]);
    assert_eq!(status, 0, "{text}");
    let again = copies.join("again.db");
    let (status, text) = run(&[
        "backup",
        "--to",
        again.to_str().unwrap(),
        "--database",
        &copy_url,
    ]);
    assert_eq!(status, 0, "{text}");
    assert_eq!(names(&copies), ["again.db", "copy.db"]);

    // A stopped daemon's database: what it left is left as found.
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let stopped = names(dir.path());
    let (status, text) = run(&["check", "--database", &url]);
    assert_eq!(status, 0, "{text}");
    assert_eq!(names(dir.path()), stopped);
    // Without them (a clean stop leaves the WAL empty, so they hold nothing), nothing
    // appears, and the database file is not written: the clean-shutdown marker, which
    // holds its size, mtime and ctime, still matches at the next start.
    for path in [&wal, &shm] {
        if path.exists() {
            if path == &wal {
                assert_eq!(std::fs::metadata(path).unwrap().len(), 0);
            }
            std::fs::remove_file(path).unwrap();
        }
    }
    let (status, text) = run(&["check", "--database", &url]);
    assert_eq!(status, 0, "{text}");
    let backup = copies.join("from-stopped.db");
    let (status, text) = run(&[
        "backup",
        "--to",
        backup.to_str().unwrap(),
        "--database",
        &url,
    ]);
    assert_eq!(status, 0, "{text}");
    assert!(!wal.exists() && !shm.exists(), "{:?}", names(dir.path()));
    let daemon = Daemon::start(dir.path(), &[]);
    assert!(
        daemon
            .log()
            .contains("clean-shutdown marker matches: header and schema checked"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.order("g", systems[2], "hatchery").status, 201);
}

#[test]
fn backup_into_a_directory_writes_a_timestamped_file_and_failures_name_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let url = format!("sqlite:{}", daemon.database().display());
    let backup = |to: &Path| run(&["backup", "--to", to.to_str().unwrap(), "--database", &url]);

    // An existing directory, twice in a row (the same second, most likely): two files.
    let into = dir.path().join("into");
    std::fs::create_dir(&into).unwrap();
    let mut written = Vec::new();
    for _ in 0..2 {
        let (status, text) = backup(&into);
        assert_eq!(status, 0, "{text}");
        let path = PathBuf::from(text.trim());
        assert_eq!(path.parent(), Some(into.as_path()), "{text}");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("galactic_war-") && name.ends_with(".db"),
            "{name}"
        );
        written.push(path);
    }
    assert_ne!(written[0], written[1]);
    for path in &written {
        let (status, text) = run(&["check", "--database", &format!("sqlite:{}", path.display())]);
        assert_eq!(status, 0, "{text}");
    }
    assert_eq!(names(&into).len(), 2, "{:?}", names(&into));
    // A path ending in `/` names a directory, created when missing.
    let fresh = dir.path().join("fresh");
    let (status, text) = run(&[
        "backup",
        "--to",
        &format!("{}/", fresh.display()),
        "--database",
        &url,
    ]);
    assert_eq!(status, 0, "{text}");
    assert!(text.trim().starts_with(fresh.to_str().unwrap()), "{text}");
    assert_eq!(names(&fresh).len(), 1);

    // Through a regular file (which stops root too): named as such.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    for to in [file.join("x.db"), file.join("sub").join("x.db")] {
        let (status, text) = backup(&to);
        assert_eq!(status, 1, "{text}");
        assert!(
            text.contains(&format!("{} is not a directory", file.display())),
            "{text}"
        );
        assert!(!text.contains("unable to open"), "{text}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");

    // A directory this user may not write into (root may: then this part proves nothing,
    // and is skipped).
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    if std::fs::write(locked.join("probe"), b"").is_err() {
        let (status, text) = backup(&locked.join("x.db"));
        assert_eq!(status, 1, "{text}");
        assert!(
            text.contains(&format!("cannot write a backup into {}", locked.display()))
                && text.contains("Permission denied"),
            "{text}"
        );
    } else {
        eprintln!("SKIPPED: permissions do not bind this user (root)");
    }
    assert!(
        names(&locked).iter().all(|n| n == "probe"),
        "{:?}",
        names(&locked)
    );
}
