//! Shared harness: settings for a temp database on either store, test galaxies, polling
//! helpers.
//!
//! A [`TestDb`] is a SQLite file in a temporary directory or a fresh database on the test
//! binary's PostgreSQL cluster (tests/common/postgres.rs). [`both_stores!`] runs one test
//! body on each: `NAME::sqlite` and `NAME::postgres`. What a test asks of the database
//! (the galaxy as stored, row counts, integer queries) answers alike on both; what only a
//! file has (its path, a rusqlite connection) panics on PostgreSQL.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use galactic_war::app::AppState;
use galactic_war::model::{Galaxy, GalaxyConfig};
use galactic_war::settings::{AdminListen, DatabaseUrl, PersistenceSettings, Settings};
use galactic_war::testing::{PostgresReader, ReadStore, SqliteReader};

use crate::postgres_cluster::{self as pg, Cluster};

/// One test body, two stores: after `fn NAME(db: &TestDb) { … }`, `both_stores!(NAME)`
/// makes the tests `NAME::sqlite` and `NAME::postgres` (a module and a function may share
/// a name). The PostgreSQL one returns early, with a notice, when this build or this
/// machine has no PostgreSQL; under `CI` a missing server fails it instead.
macro_rules! both_stores {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&$crate::util::TestDb::new());
            }

            #[test]
            fn postgres() {
                if let Some(db) = $crate::util::TestDb::postgres() {
                    super::$name(&db);
                }
            }
        }
    };
}
pub(crate) use both_stores;

/// `DATABASE_URL=postgres://…` as the engine's settings hold it: parsed by the same
/// parser the daemon uses for its environment.
pub fn postgres_url(url: &str) -> DatabaseUrl {
    DatabaseUrl::parse(url)
        .unwrap_or_else(|e| panic!("this build does not take DATABASE_URL={url}: {e}"))
}

/// A read-only view of a PostgreSQL database through the engine's own load path.
pub fn postgres_reader(url: &DatabaseUrl) -> Box<dyn ReadStore> {
    match url {
        DatabaseUrl::Postgres(url) => Box::new(PostgresReader::open(url).expect("a reader opens")),
        other => unreachable!("not a PostgreSQL database: {other:?}"),
    }
}

/// Where a test's database lives.
enum Store {
    Sqlite(tempfile::TempDir),
    /// A database of the test's own on a cluster, by name and URL.
    Postgres {
        name: String,
        url: String,
    },
}

pub struct TestDb {
    store: Store,
}

impl TestDb {
    /// A SQLite file in a new temporary directory.
    pub fn new() -> TestDb {
        TestDb {
            store: Store::Sqlite(tempfile::tempdir().expect("a temporary directory")),
        }
    }

    /// A fresh database on this binary's shared PostgreSQL cluster; `None` (with a
    /// notice) when the engine or the machine has no PostgreSQL and this is not CI.
    pub fn postgres() -> Option<TestDb> {
        pg::shared().map(TestDb::on)
    }

    /// A fresh database on `cluster` (a private one, for tests that stop the server).
    pub fn on(cluster: &Cluster) -> TestDb {
        let db = cluster.database();
        TestDb {
            store: Store::Postgres {
                url: db.url(),
                name: db.name,
            },
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.store, Store::Postgres { .. })
    }

    /// The temporary directory of a SQLite database.
    pub fn dir(&self) -> &Path {
        match &self.store {
            Store::Sqlite(dir) => dir.path(),
            Store::Postgres { .. } => panic!("a PostgreSQL database has no directory"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir().join("galactic_war.db")
    }

    /// The PostgreSQL database's name.
    pub fn name(&self) -> &str {
        match &self.store {
            Store::Postgres { name, .. } => name,
            Store::Sqlite(_) => panic!("a SQLite database is a file, not a named database"),
        }
    }

    pub fn url(&self) -> DatabaseUrl {
        match &self.store {
            Store::Sqlite(_) => DatabaseUrl::File(self.path()),
            Store::Postgres { url, .. } => postgres_url(url),
        }
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
            database: self.url(),
            persistence,
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: AdminListen::Tcp("127.0.0.1:0".parse().unwrap()),
            ..Settings::default()
        }
    }

    pub fn open(&self, tweak: impl FnOnce(&mut PersistenceSettings)) -> AppState {
        AppState::open(&self.settings(tweak)).expect("the engine opens")
    }

    /// The galaxy as stored, read through a fresh reader of the store's own.
    pub fn stored(&self, name: &str) -> Option<Galaxy> {
        let reader: Box<dyn ReadStore> = match &self.store {
            Store::Sqlite(_) => Box::new(SqliteReader::open(&self.path()).expect("a reader opens")),
            Store::Postgres { .. } => postgres_reader(&self.url()),
        };
        reader.load_galaxy(name).expect("the galaxy loads")
    }

    /// A rusqlite connection to a SQLite database (SQLite-only tests).
    pub fn connection(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path()).expect("a connection opens")
    }

    /// A connection of the test's own, to either store, for [`SqlClient::query_i64s`].
    pub fn client(&self) -> SqlClient {
        match &self.store {
            Store::Sqlite(_) => SqlClient::Sqlite(self.connection()),
            Store::Postgres { url, .. } => SqlClient::Postgres(
                postgres::Config::from_str(url)
                    .expect("a PostgreSQL URL")
                    .application_name("gwar-tests")
                    .connect(postgres::NoTls)
                    .expect("a connection opens"),
            ),
        }
    }

    /// A superuser connection to a PostgreSQL database (PostgreSQL-only tests).
    pub fn pg_client(&self) -> postgres::Client {
        match self.client() {
            SqlClient::Postgres(client) => client,
            SqlClient::Sqlite(_) => panic!("a SQLite database has no PostgreSQL client"),
        }
    }

    /// The first row of `sql`, whose columns are all integers (SQL both stores read alike).
    pub fn query_i64s(&self, sql: &str) -> Vec<i64> {
        self.client().query_i64s(sql)
    }

    /// Rows of galaxy `name` still in the database: its galaxy row and its systems.
    pub fn rows_of(&self, name: &str) -> i64 {
        self.query_i64s(&format!(
            "SELECT (SELECT count(*) FROM systems WHERE galaxy_name = '{name}')
                  + (SELECT count(*) FROM galaxies WHERE name = '{name}')"
        ))[0]
    }
}

/// A test's own connection to either store.
pub enum SqlClient {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl SqlClient {
    /// The first row of `sql`, whose columns are all integers; one statement, so one
    /// committed state on either store.
    pub fn query_i64s(&mut self, sql: &str) -> Vec<i64> {
        match self {
            SqlClient::Sqlite(conn) => conn
                .query_row(sql, [], |row| {
                    (0..row.as_ref().column_count())
                        .map(|i| row.get::<_, i64>(i))
                        .collect()
                })
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            SqlClient::Postgres(client) => {
                let row = client
                    .query_one(sql, &[])
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                (0..row.len()).map(|i| row.get::<_, i64>(i)).collect()
            }
        }
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
