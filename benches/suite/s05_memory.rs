//! Section 5: resident memory per system, with persistence on and of the galaxy alone,
//! each measured in a fresh process of this binary (`--memory`).

use std::path::Path;

use galactic_war::app::AppState;
use serde_json::{json, Map, Value};

use crate::harness::{config, resident_bytes_of, row, settings, Run};

fn resident_bytes() -> u64 {
    resident_bytes_of("self")
}

/// Resident bytes per system of a galaxy of `systems`, measured in a fresh process (this
/// one has allocated and freed plenty by now, which would hide the growth), with
/// persistence on (as the daemon runs) or off (the galaxy alone).
fn memory_per_system(dir: &Path, systems: u64, persistence: bool) -> f64 {
    let mut args = vec!["--memory".to_owned(), systems.to_string()];
    if persistence {
        args.push(dir.join("memory.db").display().to_string());
    }
    let output = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .output()
        .expect("runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a number")
}

/// The child side of [`memory_per_system`]: creates the galaxy, saved to `database` if
/// given, and prints bytes/system.
pub fn measure_memory(systems: u64, database: Option<&str>) {
    let before = resident_bytes();
    let app = match database {
        Some(path) => AppState::open(&settings(Path::new(path), |_| {})).expect("opens"),
        None => AppState::without_engine(galactic_war::app::PersistenceState::Disabled, None),
    };
    app.create_galaxy("memory", config(systems, 100), Some(1), 0)
        .expect("created");
    let after = resident_bytes();
    assert_eq!(
        app.galaxy_copy("memory").expect("exists").systems().len() as u64,
        systems
    );
    println!("{}", (after.saturating_sub(before)) as f64 / systems as f64);
}

/// Section 5: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir) = (run.quick, run.dir.as_path());
    let memory_systems = if quick { 200_000 } else { 1_000_000 };
    let per_system = memory_per_system(dir, memory_systems, true);
    let galaxy_alone = memory_per_system(dir, memory_systems, false);
    row(
        &format!("5. resident bytes per system ({memory_systems} created and saved)"),
        format!("{per_system:.0} B"),
        String::new(),
        None,
        "≤ 160 B at 1000000",
    );
    row(
        "5. of which the galaxy itself (persistence off)",
        format!("{galaxy_alone:.0} B"),
        String::new(),
        None,
        "",
    );
    out.insert(
        "memory".into(),
        json!({"systems": memory_systems, "rss_bytes_per_system": per_system, "galaxy_bytes_per_system": galaxy_alone}),
    );
}
