//! One daemon per database: an exclusive OS file lock beside the database file.
//!
//! The lock is `flock` on `PATH.lock` (std's `File::try_lock`), held for the life of the
//! [`DatabaseLock`]. The kernel drops it when the process dies, however it dies, so a
//! `kill -9` never leaves a stale lock. It is a separate file rather than the database
//! itself because SQLite's own POSIX locks are per process and are released when *any*
//! descriptor of the database file is closed; a second descriptor on the database would
//! be a trap. The lock file is never deleted: deleting it would let two processes each
//! lock a different inode of the same name.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// Proof that this process is the only one serving a database file.
#[derive(Debug)]
pub struct DatabaseLock {
    // Held only to keep the lock; closing the file releases it.
    _file: File,
}

impl DatabaseLock {
    /// The lock file guarding `database`.
    pub fn path_for(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock, or fails with [`StoreError::InUse`] when another process holds it
    /// for longer than [`LOCK_PATIENCE`].
    pub fn acquire(database: &Path) -> Result<DatabaseLock, StoreError> {
        let path = DatabaseLock::path_for(database);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Lock {
                path: path.clone(),
                source,
            })?;
        let deadline = Instant::now() + LOCK_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DatabaseLock { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(LOCK_POLL);
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::InUse {
                        database: database.to_path_buf(),
                        lock: path,
                    })
                }
                Err(TryLockError::Error(source)) => return Err(StoreError::Lock { path, source }),
            }
        }
    }
}

/// How long a lock held by someone else is waited for before the database counts as in
/// use. A lock is held by an open file description, and a child process this one starts
/// holds a copy of every descriptor from its fork to its `exec` (close-on-exec closes
/// them only then): a lock just released by this process (an engine stopped and opened
/// again) can still be held for that moment, longer on a busy machine. A daemon that
/// really holds the database holds it far longer.
const LOCK_PATIENCE: Duration = Duration::from_secs(1);
const LOCK_POLL: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let first = DatabaseLock::acquire(&db).unwrap();
        assert!(dir.path().join("g.db.lock").exists());
        let err = DatabaseLock::acquire(&db).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        drop(first);
        DatabaseLock::acquire(&db).unwrap();
    }
}
