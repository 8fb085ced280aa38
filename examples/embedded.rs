//! Linking the engine into a game of your own, in one process, without the HTTP daemon.
//!
//! Opens the persistence engine on a SQLite file, creates a galaxy, lets two game threads
//! place orders (neither ever waits on the disk), places one durable order (it returns
//! once a commit holding it is synced to stable storage), flushes, shuts down, and opens
//! the file again to show that every order is there. Run it with `cargo run --example embedded`
//! (add a path to keep the database: `cargo run --example embedded -- game.db`).

use std::path::PathBuf;
use std::time::Duration;

use galactic_war::app::{AppState, Durability};
use galactic_war::model::{GalaxyConfig, StructureKind};
use galactic_war::settings::{DatabaseUrl, Settings};

/// Every order succeeds: plenty of resources, and a colony level that costs 1 metal and
/// completes at once.
const CONFIG: &str = "system_count = 100\n[size]\nx = 20\ny = 20\n\
    [systems.resources]\nmetal = 1000000\ncrew = 0\nwater = 0\n\
    [systems.structures.colony]\nstarting_level = 1\n\
    [systems.structures.colony.cost]\nmetal = 1\ntime = 0\n";

const ORDERS_PER_THREAD: u64 = 5_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kept = std::env::args().nth(1).map(PathBuf::from);
    let temporary = tempfile::tempdir()?;
    let path = kept.unwrap_or_else(|| temporary.path().join("embedded.db"));

    // The environment's settings (README, *Configuration*), pointed at our file with a short batch
    // window; a program may equally build `Settings` itself.
    let mut settings = Settings::from_env()?;
    settings.database = DatabaseUrl::File(path.clone());
    settings.persistence.coalescing_delay = Duration::from_millis(50);

    let app = AppState::open(&settings)?;
    let (config, _) = GalaxyConfig::from_toml(CONFIG)?;
    // Returns once the galaxy is saved.
    let created = app.create_galaxy("embedded", config, Some(7), 0)?;
    let details = app.galaxy_details("embedded", 0)?;
    let coords: Vec<(u64, u64)> = details
        .systems
        .iter()
        .map(|s| (u64::from(s.x), u64::from(s.y)))
        .collect();
    println!(
        "created galaxy '{}' with {} systems",
        created.name, created.systems
    );

    // Two game threads: each order changes memory and marks the system dirty; the
    // writer thread saves in the background.
    std::thread::scope(|scope| {
        for thread in 0..2u64 {
            let (app, coords) = (&app, &coords);
            scope.spawn(move || {
                for n in 0..ORDERS_PER_THREAD {
                    let (x, y) = coords[((n * 2 + thread) % coords.len() as u64) as usize];
                    app.build("embedded", 0, x, y, StructureKind::Colony)
                        .expect("every order of this config succeeds");
                }
            });
        }
    });
    // An order that must not be lost even to a power cut right after this call returns:
    // its commit (shared with every change waiting then) is synced to stable storage.
    let (x, y) = coords[0];
    app.build_with(
        "embedded",
        0,
        x,
        y,
        StructureKind::Colony,
        Durability::Durable,
    )?;
    println!("one durable order: synced to disk before build_with returned");
    let saved = app.save_all()?;
    println!(
        "{} orders placed; the last flush wrote {saved} systems",
        2 * ORDERS_PER_THREAD + 1
    );
    let report = app.shutdown();
    assert!(report.all_saved(), "everything was saved: {report:?}");
    drop(app);

    // A new engine on the same file: the galaxy loads from the database on first access.
    let reopened = AppState::open(&settings)?;
    let spent: u64 = coords
        .iter()
        .map(|&(x, y)| {
            let system = reopened.system_details("embedded", 0, x, y)?;
            Ok(1_000_000 - system.resources.metal)
        })
        .sum::<Result<u64, galactic_war::app::AppError>>()?;
    println!(
        "reopened {}: {spent} metal spent, one per order",
        path.display()
    );
    assert_eq!(
        spent,
        2 * ORDERS_PER_THREAD + 1,
        "every order survived the restart"
    );
    reopened.shutdown();
    Ok(())
}
