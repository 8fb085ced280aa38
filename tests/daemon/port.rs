//! `galactic-war export` and `import` as an operator runs them: a deployment played on
//! SQLite moved to PostgreSQL and back with `export --all` and `import`, every galaxy
//! compared as the stores load it; export beside a running daemon; and the refusals (a
//! name that exists, a file of a newer format, a running daemon on the file, a galaxy a
//! live daemon owns, a file that exists), each writing nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use galactic_war::model::Galaxy;
use galactic_war::testing::{PostgresReader, ReadStore, SqliteReader};

use crate::postgres_cluster as pg;
use crate::util::{run, systems, text, Daemon};

fn succeeds(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run(args, env);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The stderr of a run that must fail with status 1.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run(args, env);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every galaxy stored, as the store's own load reads it.
fn loaded(reader: &dyn ReadStore) -> BTreeMap<String, Galaxy> {
    reader
        .galaxy_names()
        .unwrap()
        .into_iter()
        .map(|name| {
            let galaxy = reader
                .load_galaxy(&name)
                .unwrap()
                .expect("listed, so stored");
            (name, galaxy)
        })
        .collect()
}

fn loaded_sqlite(path: &Path) -> BTreeMap<String, Galaxy> {
    loaded(&SqliteReader::open(path).unwrap())
}

fn loaded_pg(url: &str) -> BTreeMap<String, Galaxy> {
    loaded(&PostgresReader::open(url).unwrap())
}

/// Both hold the same galaxies, equal in every part (compared one by one, so a failure
/// names the galaxy rather than printing both deployments).
fn assert_same(left: &BTreeMap<String, Galaxy>, right: &BTreeMap<String, Galaxy>) {
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        right.keys().collect::<Vec<_>>()
    );
    for (name, galaxy) in left {
        assert!(
            galaxy == &right[name],
            "galaxy '{name}' differs after the move"
        );
    }
}

/// A config of `systems` systems with every structure, builds that take time.
fn config(systems: u64) -> String {
    let side = ((systems as f64).sqrt() as u64) * 2 + 2;
    let mut text = format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.resources]\nmetal = 100000\ncrew = 50000\nwater = 50000\n"
    );
    for kind in [
        "colony",
        "asteroidmine",
        "waterharvester",
        "hatchery",
        "storagedepot",
    ] {
        text.push_str(&format!(
            "[systems.structures.{kind}]\nstarting_level = 1\n\
             [systems.structures.{kind}.cost]\nmetal = 10\ntime = 100000\n"
        ));
    }
    text
}

/// Galaxies played on `daemon`: one of the presets, one larger than an import's chunk,
/// one small, with orders placed (builds in flight, resources spent).
fn play(daemon: &Daemon) {
    assert_eq!(daemon.post("/galaxies/andromeda?seed=42").status, 201);
    for (name, size) in [("big-one", 12_000), ("tiny_2", 3)] {
        let created = daemon.request("POST", &format!("/galaxies/{name}"), &config(size));
        assert_eq!(created.status, 201, "{}", created.body);
    }
    for name in ["andromeda", "big-one", "tiny_2"] {
        let all = systems(daemon, name);
        for (i, &system) in all.iter().step_by(all.len() / 3 + 1).enumerate() {
            let kind = if name == "andromeda" {
                "hatchery"
            } else {
                ["hatchery", "colony", "asteroidmine"][i % 3]
            };
            let order = daemon.order(name, system, kind);
            assert_eq!(order.status, 201, "{name} {system:?}: {}", order.body);
        }
    }
}

/// The archive files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

fn paths(files: &[PathBuf]) -> Vec<&str> {
    files.iter().map(|f| f.to_str().unwrap()).collect()
}

#[test]
fn a_deployment_moves_from_sqlite_to_postgres_and_back_with_every_galaxy_equal() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    play(&daemon);
    let sqlite_url = format!("sqlite:{}", daemon.database().display());

    // Beside the running daemon: it reads what the daemon saved, and stops nothing.
    let live = dir.path().join("live");
    let printed = succeeds(
        &[
            "export",
            "andromeda",
            "--out",
            live.to_str().unwrap(),
            "--database",
            &sqlite_url,
        ],
        &[],
    );
    assert!(printed.contains("andromeda.gwar"), "{printed}");
    assert_eq!(daemon.get("/galaxies/andromeda").status, 200);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let original = loaded_sqlite(&daemon.database());
    assert_eq!(original.len(), 3);

    // Stop, export --all, import into PostgreSQL (DATABASE_URL), as the README says.
    let out = dir.path().join("archives");
    succeeds(
        &["export", "--all", "--out", out.to_str().unwrap()],
        &[("DATABASE_URL", &sqlite_url)],
    );
    let files = files_in(&out);
    assert_eq!(files.len(), 3, "{files:?}");
    let database = cluster.database();
    let pg_url = database.url();
    let mut import = vec!["import"];
    import.extend(paths(&files));
    let printed = succeeds(&import, &[("DATABASE_URL", &pg_url)]);
    assert_eq!(printed.lines().count(), 3, "{printed}");
    assert_same(&original, &loaded_pg(&pg_url));
    let check = succeeds(&["check"], &[("DATABASE_URL", &pg_url)]);
    assert!(check.contains("all checks passed"), "{check}");

    // A daemon on PostgreSQL serves them as the SQLite one did.
    let pg_dir = tempfile::tempdir().unwrap();
    let mut on_pg = Daemon::start(pg_dir.path(), &[("DATABASE_URL", &pg_url)]);
    let (x, y) = systems(&on_pg, "andromeda")[0];
    let system = on_pg.get(&format!("/galaxies/andromeda/systems/{x}/{y}"));
    assert_eq!(system.status, 200, "{}", system.body);
    assert!(on_pg.terminate().success(), "{}", on_pg.log());
    // Its reads moved the galaxy's tick on, saved at its stop: what goes back is this.
    let served = loaded_pg(&pg_url);

    // And back: PostgreSQL to a new SQLite file.
    let back = dir.path().join("back");
    succeeds(
        &[
            "export",
            "--all",
            "--out",
            back.to_str().unwrap(),
            "--database",
            &pg_url,
        ],
        &[],
    );
    let new_file = dir.path().join("moved").join("galactic_war.db");
    let new_url = format!("sqlite:{}", new_file.display());
    let files = files_in(&back);
    let mut import = vec!["import", "--database", &new_url];
    import.extend(paths(&files));
    succeeds(&import, &[]);
    assert_same(&served, &loaded_sqlite(&new_file));
    let check = succeeds(&["check", "--database", &new_url], &[]);
    assert!(check.contains("all checks passed"), "{check}");
}

/// A played SQLite deployment, stopped, and its galaxies exported to `DIR/archives`.
fn stopped_and_exported(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let mut daemon = Daemon::start(dir, &[]);
    assert_eq!(daemon.post("/galaxies/andromeda?seed=42").status, 201);
    assert_eq!(daemon.post("/galaxies/cassiopeia?seed=7").status, 201);
    let (x, y) = systems(&daemon, "andromeda")[0];
    assert_eq!(daemon.order("andromeda", (x, y), "hatchery").status, 201);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let database = daemon.database();
    let out = dir.join("archives");
    let url = format!("sqlite:{}", database.display());
    succeeds(
        &[
            "export",
            "--all",
            "--out",
            out.to_str().unwrap(),
            "--database",
            &url,
        ],
        &[],
    );
    (database, files_in(&out))
}

#[test]
fn an_import_refuses_a_name_that_exists_a_newer_format_and_a_running_daemon_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (database, files) = stopped_and_exported(dir.path());
    let url = format!("sqlite:{}", database.display());
    let before = loaded_sqlite(&database);
    let mut import = vec!["import", "--database", url.as_str()];
    import.extend(paths(&files));

    // Names that exist: refused without --replace, nothing written.
    let said = refused(&import, &[]);
    assert!(
        said.contains("exists") && said.contains("--replace"),
        "{said}"
    );
    assert_same(&before, &loaded_sqlite(&database));

    // A file of a newer format: refused clearly, before any database is even opened.
    let newer = dir.path().join("newer.gwar");
    std::fs::write(&newer, newer_version(&std::fs::read(&files[0]).unwrap())).unwrap();
    let fresh = dir.path().join("fresh.db");
    let fresh_url = format!("sqlite:{}", fresh.display());
    let said = refused(
        &[
            "import",
            "--database",
            &fresh_url,
            newer.to_str().unwrap(),
            files[1].to_str().unwrap(),
        ],
        &[],
    );
    assert!(said.contains("version"), "{said}");
    assert!(said.contains("nothing was imported"), "{said}");
    assert!(!fresh.exists(), "no database was created");

    // Beside a daemon serving the file: refused (its lock), nothing written.
    let mut daemon = Daemon::start(dir.path(), &[]);
    import.push("--replace");
    let said = refused(&import, &[]);
    assert!(
        said.contains("running daemon") && said.contains("stop it first"),
        "{said}"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_same(&before, &loaded_sqlite(&database));

    // With --replace and no daemon: replaced, equal to what was exported.
    let printed = succeeds(&import, &[]);
    assert!(printed.contains("replaced"), "{printed}");
    assert_same(&before, &loaded_sqlite(&database));
    let check = succeeds(&["check", "--database", &url], &[]);
    assert!(check.contains("all checks passed"), "{check}");

    // An export never writes over a file: refused, the file as it was.
    let out = dir.path().join("archives");
    let kept = std::fs::read(&files[0]).unwrap();
    let said = refused(
        &[
            "export",
            "--all",
            "--out",
            out.to_str().unwrap(),
            "--database",
            &url,
        ],
        &[],
    );
    assert!(said.contains("exists already"), "{said}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), kept);
}

#[test]
fn on_postgres_an_import_replaces_no_galaxy_a_live_daemon_owns_and_adds_new_ones_beside_it() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = stopped_and_exported(dir.path());
    let database = cluster.database();
    let url = database.url();
    let env = [("DATABASE_URL", url.as_str())];
    let andromeda = files[0].to_str().unwrap();
    let cassiopeia = files[1].to_str().unwrap();
    assert!(andromeda.ends_with("andromeda.gwar") && cassiopeia.ends_with("cassiopeia.gwar"));
    succeeds(&["import", andromeda], &env);

    let pg_dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(pg_dir.path(), &env);
    // Loaded, so owned by the daemon.
    assert_eq!(daemon.get("/galaxies/andromeda").status, 200);
    let before = loaded_pg(&url);
    let said = refused(&["import", "--replace", andromeda], &env);
    assert!(said.contains("owned by the running daemon"), "{said}");
    assert_same(&before, &loaded_pg(&url));

    // A new name is fine beside it, and the daemon serves it.
    succeeds(&["import", cassiopeia], &env);
    let served = daemon.get("/galaxies/cassiopeia");
    assert_eq!(served.status, 200, "{}", served.body);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_eq!(loaded_pg(&url).len(), 2);

    // Released at the daemon's stop: now --replace replaces it, as it was archived.
    let printed = succeeds(&["import", "--replace", andromeda], &env);
    assert!(printed.contains("replaced"), "{printed}");
    let archived = loaded_sqlite(&dir.path().join("galactic_war.db"));
    assert!(loaded_pg(&url)["andromeda"] == archived["andromeda"]);
}

/// An archive file as a newer galactic-war would write it: the header's format version
/// raised by one.
fn newer_version(file: &[u8]) -> Vec<u8> {
    let mut newer = file.to_vec();
    // The file's header: the magic `GWARCHV\0` (8 bytes), then the version (u16, LE).
    assert_eq!(&newer[..8], b"GWARCHV\0", "an archive file");
    let at = 8;
    let version = u16::from_le_bytes([newer[at], newer[at + 1]]) + 1;
    newer[at..at + 2].copy_from_slice(&version.to_le_bytes());
    newer
}
