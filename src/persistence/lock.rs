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

    /// Takes the lock, or fails at once with [`StoreError::InUse`] when another process
    /// holds it.
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
        match file.try_lock() {
            Ok(()) => Ok(DatabaseLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(StoreError::InUse {
                database: database.to_path_buf(),
                lock: path,
            }),
            Err(TryLockError::Error(source)) => Err(StoreError::Lock { path, source }),
        }
    }
}

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
