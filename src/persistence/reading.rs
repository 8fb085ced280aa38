//! Opening a database file that this process only reads (`galactic-war check`, the source
//! of a backup) without leaving anything beside it.
//!
//! SQLite reads a WAL-mode database through two files beside it, `PATH-wal` and
//! `PATH-shm`, and creates them when they are missing. Only the last connection to close
//! removes them, and only a connection that can write: its close takes an exclusive lock on
//! the database and checkpoints first, so it never removes files that another process (a
//! daemon, another check, a `sqlite3` shell) still uses. A read-only connection cannot, so
//! it left both behind beside a database nobody else had open: a stopped daemon's file, a
//! backup.
//!
//! The rule, then. When none of `-wal`, `-shm` and a rollback `-journal` exists, nobody has
//! the database open in WAL mode and there is nothing to recover: the file is opened
//! read-write with `PRAGMA query_only`, so no statement can change it, and SQLite's own close
//! removes what this connection created (the checkpoint at that close has nothing to copy:
//! the WAL it created holds no frames, unless a daemon started meanwhile and wrote some, and
//! then copying them is what that daemon's own close would do). Otherwise the files are
//! someone's, a running daemon's or a crashed one's with frames to recover: the database is
//! opened read-only, they are left as found, and the database file is never written. (A
//! database file this user may not write is opened read-only by SQLite whatever we ask, and
//! then what it creates stays: the one case left.)
//!
//! Why not delete our leftovers ourselves after closing, when the daemon's `PATH.lock`
//! ([`super::lock`]) can be taken? That lock keeps daemons out, not readers: a second
//! `check` may have the `-shm` mapped, and deleting it under that reader splits it from
//! whoever opens the database next. And holding the lock, even for a moment, would make a
//! daemon starting at that moment refuse to start. SQLite's close already gets this right.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::store::sqlite::BUSY_TIMEOUT;

/// `PATH` with `suffix` appended to its name (`-wal`, `-shm`, `-journal`).
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens the existing database at `path` for reading only (see the module doc for how),
/// and reads its schema once, so that a database SQLite cannot read fails here, with the
/// reason explained when it is the directory's.
pub fn open_to_read(path: &Path) -> rusqlite::Result<Connection> {
    let untouched = ["-wal", "-shm", "-journal"]
        .iter()
        .all(|suffix| !beside(path, suffix).exists());
    let conn = if untouched {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        conn.pragma_update(None, "query_only", true)?;
        conn
    } else {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|error| explain(path, error))?;
    Ok(conn)
}

/// SQLite says "unable to open database file" or "attempt to write a readonly database"
/// when it cannot create the `-shm` of a WAL-mode database: name that cause.
fn explain(path: &Path, error: rusqlite::Error) -> rusqlite::Error {
    let rusqlite::Error::SqliteFailure(code, message) = &error else {
        return error;
    };
    let shm = beside(path, "-shm");
    if !matches!(
        code.code,
        ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied
    ) || shm.exists()
        || !in_wal_mode(path)
    {
        return error;
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let said = message.clone().unwrap_or_else(|| code.to_string());
    rusqlite::Error::SqliteFailure(
        *code,
        Some(format!(
            "{said}: SQLite reads a database in WAL mode through {} beside it, which does \
             not exist and could not be created: is {} writable by this user? (run as the \
             database's owner, or copy the file somewhere writable)",
            shm.display(),
            dir.display()
        )),
    )
}

/// Whether the file's header says WAL mode (bytes 18 and 19 are 2).
fn in_wal_mode(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .is_ok_and(|()| header[18] == 2 && header[19] == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn wal_database(dir: &Path) -> PathBuf {
        let path = dir.join("g.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        drop(conn);
        assert_eq!(names(dir), ["g.db"], "SQLite's last close removes both");
        path
    }

    #[test]
    fn reading_a_database_nobody_has_open_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = wal_database(dir.path());
        let before = std::fs::read(&path).unwrap();
        let conn = open_to_read(&path).unwrap();
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 1);
        assert!(
            conn.execute("INSERT INTO t VALUES (2)", []).is_err(),
            "query_only"
        );
        drop(conn);
        assert_eq!(names(dir.path()), ["g.db"]);
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn files_in_use_by_another_connection_are_left_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = wal_database(dir.path());
        let owner = Connection::open(&path).unwrap();
        owner.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let reader = open_to_read(&path).unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2, "the frames in the owner's WAL are read");
        drop(reader);
        assert_eq!(names(dir.path()), ["g.db", "g.db-shm", "g.db-wal"]);
        owner.execute("INSERT INTO t VALUES (3)", []).unwrap();
    }
}
