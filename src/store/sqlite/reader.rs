//! The read side: [`SqliteReader`], a read-only connection for loads on a cache miss, and
//! the look-ups of stored names every connection answers (a galaxy's load itself is
//! `load.rs`).
//!
//! Never writes: a reader has no write method, and its connection is opened read-only.
//! A galaxy with an unfinished creation or deletion is invisible to every query here.

use std::path::Path;

use super::super::{ArchiveInfo, ReadStore, RowIds, Storage, StoreError};
use super::db::{Context, Db};
use crate::model::{Galaxy, HistoryEntry};

/// A read-only connection, for loads on a cache miss and look-ups of stored names. It has
/// no write method, and SQLite refuses writes on it besides (the doctest builds with the
/// `testing` feature, as every test of the crate does):
///
/// ```compile_fail
/// use galactic_war::testing::{SqliteReader, WriteStore};
/// fn write(reader: &mut SqliteReader) {
///     let _ = reader.write_batch(&["g".to_owned()], &[]); // SqliteReader is no WriteStore
/// }
/// ```
pub struct SqliteReader {
    pub(super) db: Db,
}

impl SqliteReader {
    /// Opens a read-only connection to an existing database, refusing a newer schema.
    pub fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        Ok(SqliteReader {
            db: Db::open_reader(path)?,
        })
    }

    /// A reader on a connection the caller opened (`galactic-war export`, through
    /// `open_to_read`, which leaves nothing beside the file), named `label` in errors. The
    /// caller has checked its schema version.
    pub fn on_connection(conn: rusqlite::Connection, label: String) -> SqliteReader {
        SqliteReader {
            db: Db {
                conn,
                label,
                file: None,
            },
        }
    }
}

impl ReadStore for SqliteReader {
    fn load_galaxy_with_ids(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        self.db.load_galaxy_with_ids(name)
    }

    fn galaxy_names(&self) -> Result<Vec<String>, StoreError> {
        self.db.galaxy_names()
    }

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.db.galaxy_exists(name)
    }

    fn galaxy_sizes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.db.galaxy_sizes()
    }

    fn history(
        &self,
        name: &str,
        since_tick: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.db.history(name, since_tick, limit)
    }

    fn read_archive(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.read_archive(name)
    }

    fn archives(&self) -> Result<Vec<ArchiveInfo>, StoreError> {
        self.db.archives()
    }

    fn idle_galaxies(
        &self,
        idle: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.db.idle_galaxies(idle, limit)
    }

    fn storage(&self) -> Result<Storage, StoreError> {
        self.db.storage()
    }
}

/// The writer's connection reads too (its tests), through the same queries.
#[cfg(test)]
impl ReadStore for super::writer::SqliteWriter {
    fn load_galaxy_with_ids(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        self.db.load_galaxy_with_ids(name)
    }

    fn galaxy_names(&self) -> Result<Vec<String>, StoreError> {
        self.db.galaxy_names()
    }

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.db.galaxy_exists(name)
    }

    fn galaxy_sizes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.db.galaxy_sizes()
    }

    fn history(
        &self,
        name: &str,
        since_tick: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.db.history(name, since_tick, limit)
    }

    fn read_archive(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.read_archive(name)
    }

    fn archives(&self) -> Result<Vec<ArchiveInfo>, StoreError> {
        self.db.archives()
    }

    fn idle_galaxies(
        &self,
        idle: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.db.idle_galaxies(idle, limit)
    }

    fn storage(&self) -> Result<Storage, StoreError> {
        self.db.storage()
    }
}

// The look-ups' statements, named so that the plan test (`plans.rs`) explains them.

pub(super) const GALAXY_NAMES: &str =
    "SELECT name FROM galaxies WHERE name NOT IN (SELECT name FROM galaxy_jobs)
     ORDER BY name";
pub(super) const GALAXY_SIZES: &str = "SELECT name, systems FROM galaxy_sizes";
pub(super) const GALAXY_EXISTS: &str = "SELECT 1 FROM galaxies WHERE name = ?1
     AND name NOT IN (SELECT name FROM galaxy_jobs)";

impl Db {
    /// Names of every stored galaxy, sorted.
    fn galaxy_names(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(GALAXY_NAMES)
            .context("listing galaxies")?;
        let names = stmt
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .context("listing galaxies")?;
        Ok(names)
    }

    fn galaxy_sizes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(GALAXY_SIZES)
            .context("counting the galaxies' systems")?;
        let sizes = stmt
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
            .and_then(|rows| rows.collect())
            .context("counting the galaxies' systems")?;
        Ok(sizes)
    }

    fn galaxy_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(GALAXY_EXISTS)
            .and_then(|mut stmt| stmt.exists([name]))
            .context("looking up a galaxy")
    }
}
