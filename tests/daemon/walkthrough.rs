//! The README's walkthrough: create, look, build, restart, see the build still there.

use crate::util::{first_system, Daemon};

#[test]
fn the_readme_walkthrough_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let created = daemon.post("/galaxies/andromeda?seed=42");
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["systems"], 200);
    assert_eq!(created.json()["name"], "andromeda");

    let listing = daemon.get("/galaxies/andromeda");
    assert_eq!(listing.status, 200);
    assert_eq!(listing.json()["system_count"], 200);
    let (x, y) = first_system(&daemon, "andromeda");

    let system = daemon.get(&format!("/galaxies/andromeda/systems/{x}/{y}"));
    assert_eq!(system.status, 200);
    let system = system.json();
    assert_eq!(system["structures"]["colony"], 1);
    assert_eq!(system["events"].as_array().unwrap().len(), 0);

    let menu = daemon
        .get(&format!("/galaxies/andromeda/systems/{x}/{y}/colony"))
        .json();
    assert_eq!(menu["builds"]["hatchery"]["ticks"], 100);

    let build = daemon.post(&format!(
        "/galaxies/andromeda/systems/{x}/{y}/build/hatchery"
    ));
    assert_eq!(build.status, 201, "{}", build.body);
    let build = build.json();
    assert_eq!(build["action"], "build");
    assert_eq!(build["structure"], "hatchery");
    let again = daemon.order("andromeda", (x, y), "colony");
    assert_eq!(again.status, 409, "one build at a time");

    let mut daemon = daemon;
    assert!(daemon.terminate().success(), "log:\n{}", daemon.log());

    let daemon = Daemon::start(dir.path(), &[]);
    let galaxies = daemon.get("/galaxies").json();
    assert_eq!(galaxies["galaxies"][0]["name"], "andromeda");
    assert_eq!(galaxies["galaxies"][0]["loaded"], false);
    let system = daemon
        .get(&format!("/galaxies/andromeda/systems/{x}/{y}"))
        .json();
    let events = system["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "the build survived the restart: {system}");
    assert_eq!(events[0]["structure"], "hatchery");
    assert_eq!(events[0]["completion_tick"], build["completion_tick"]);
    assert!(system["resources"]["metal"].as_u64().unwrap() < 225);
}

#[test]
fn admin_delete_removes_a_galaxy() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/gone").status, 201);
    let deleted = daemon.admin_request("DELETE", "/galaxies/gone", "");
    assert_eq!(deleted.status, 204);
    assert_eq!(daemon.get("/galaxies/gone").status, 404);
    assert_eq!(
        daemon.admin_request("DELETE", "/galaxies/gone", "").status,
        404
    );
    let saved = daemon.admin_post("/admin/save");
    assert_eq!(saved.status, 200);
    assert_eq!(crate::util::stored_events(&daemon.database(), "gone"), 0);
}

#[test]
fn a_toml_config_creates_its_galaxy() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let config = "system_count = 3\n[size]\nx = 1\ny = 1\n[systems.resources]\nmetal = 5\n\
                  [systems.structures.colony]\nstarting_level = 2\n";
    let created = daemon.request("POST", "/galaxies/tiny?seed=1", config);
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["systems"], 3);
    let (x, y) = first_system(&daemon, "tiny");
    let system = daemon
        .get(&format!("/galaxies/tiny/systems/{x}/{y}"))
        .json();
    assert_eq!(system["structures"], serde_json::json!({ "colony": 2 }));
    assert_eq!(system["resources"]["metal"], 5);
    let classic = daemon.post("/galaxies/slow?preset=classic");
    assert_eq!(classic.status, 201);
    assert_eq!(classic.json()["systems"], 1000);
}
