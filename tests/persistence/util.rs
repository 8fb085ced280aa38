//! Shared harness: settings for a temp database, test galaxies, polling helpers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::{Galaxy, GalaxyConfig};
use galactic_war::settings::{AdminListen, DatabaseUrl, PersistenceSettings, Settings};
use galactic_war::testing::{ReadStore, SqliteReader};

pub struct TestDb {
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub fn new() -> TestDb {
        TestDb {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("galactic_war.db")
    }

    /// Settings with a short coalescing delay and a long auto-save interval, adjusted by
    /// `tweak`.
    pub fn settings(&self, tweak: impl FnOnce(&mut PersistenceSettings)) -> Settings {
        let mut persistence = PersistenceSettings {
            coalescing_delay: Duration::from_millis(5),
            auto_save_interval: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            ..PersistenceSettings::default()
        };
        tweak(&mut persistence);
        Settings {
            database: DatabaseUrl::File(self.path()),
            persistence,
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: AdminListen::Tcp("127.0.0.1:0".parse().unwrap()),
            ..Settings::default()
        }
    }

    pub fn open(&self, tweak: impl FnOnce(&mut PersistenceSettings)) -> AppState {
        AppState::open(&self.settings(tweak)).expect("the engine opens")
    }

    /// The galaxy as stored, read through a fresh read-only connection.
    pub fn stored(&self, name: &str) -> Option<Galaxy> {
        SqliteReader::open(&self.path())
            .expect("a reader opens")
            .load_galaxy(name)
            .expect("the galaxy loads")
    }

    pub fn connection(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path()).expect("a connection opens")
    }

    /// Rows of galaxy `name` still in the database: its galaxy row and its systems.
    pub fn rows_of(&self, name: &str) -> i64 {
        self.connection()
            .query_row(
                "SELECT (SELECT count(*) FROM systems WHERE galaxy_name = ?1)
                      + (SELECT count(*) FROM galaxies WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )
            .expect("counts")
    }
}

/// A galaxy where every order succeeds: plenty of resources, and a colony whose every level
/// costs 1 of each and completes at once, so orders can repeat at the same tick.
pub fn endless_config(systems: u64) -> GalaxyConfig {
    let side = (systems as f64).sqrt().ceil() as u64 * 2;
    let text = format!(
        "system_count = {systems}\n[size]\nx = {side}\ny = {side}\n\
         [systems.resources]\nmetal = 1000000000\ncrew = 1000000000\nwater = 1000000000\n\
         [systems.structures.colony]\nstarting_level = 1\n\
         [systems.structures.colony.cost]\nmetal = 1\ncrew = 1\nwater = 1\ntime = 0\n\
         [systems.structures.colony.storage]\nmetal = 1\n"
    );
    GalaxyConfig::from_toml(&text).expect("a valid config").0
}

pub fn blitz() -> GalaxyConfig {
    GalaxyConfig::preset("blitz").unwrap().0
}

/// Coordinates of every system of a galaxy, in order.
pub fn coords(galaxy: &Galaxy) -> Vec<(u64, u64)> {
    galaxy
        .systems()
        .iter()
        .map(|s| (u64::from(s.x), u64::from(s.y)))
        .collect()
}

/// Polls `condition` until it holds or `timeout` passes; true when it held.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes of a file, to prove it was left untouched.
pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("the file reads")
}
