//! Online backups through SQLite's backup API.
//!
//! A backup reads the database through its own read-only connection, copying every page
//! in one step: one read transaction, so the copy is the database as of one commit (in WAL
//! mode the writer keeps committing meanwhile, unblocked). The copy is written beside its
//! target under a temporary name and then hard-linked into place, which fails rather than
//! replace a file that exists: a backup never overwrites anything.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::store::BUSY_TIMEOUT;
use super::time::UtcTime;

/// Why a backup failed. A failed backup leaves no file at its target.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup target {0} already exists; backups never overwrite")]
    Exists(PathBuf),
    #[error("backup: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backup of {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// Copies the database at `source` to `target`, which must not exist.
pub fn backup_database(source: &Path, target: &Path) -> Result<(), BackupError> {
    if target.exists() {
        return Err(BackupError::Exists(target.to_path_buf()));
    }
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| BackupError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut partial = target.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let result = copy_pages(source, &partial).and_then(|()| {
        std::fs::hard_link(&partial, target).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(target.to_path_buf()),
            _ => BackupError::Io {
                path: target.to_path_buf(),
                source,
            },
        })
    });
    let _ = std::fs::remove_file(&partial);
    result
}

fn copy_pages(source: &Path, partial: &Path) -> Result<(), BackupError> {
    let sqlite = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Sqlite { path, source }
    };
    let from = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite(source))?;
    from.busy_timeout(BUSY_TIMEOUT).map_err(sqlite(source))?;
    let mut to = Connection::open(partial).map_err(sqlite(partial))?;
    let backup = Backup::new(&from, &mut to).map_err(sqlite(partial))?;
    // -1: every page in one step, so the copy is one consistent read transaction. A busy
    // source (a checkpoint in progress, say) is retried for up to the busy timeout.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match backup.step(-1).map_err(sqlite(source))? {
            StepResult::Done => return Ok(()),
            StepResult::More | StepResult::Busy | StepResult::Locked
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                return Err(BackupError::Sqlite {
                    path: source.to_path_buf(),
                    source: rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("the database stayed busy".into()),
                    ),
                })
            }
        }
    }
}

/// Deletes all but the newest `keep` timestamped backups in `dir` (files named by
/// [`timestamped_path`]; anything else there is left alone); the paths deleted.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("galactic_war-") && n.ends_with(".db"))
        })
        .collect();
    // The names carry the UTC time, so name order is age order.
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    let doomed: Vec<PathBuf> = backups.into_iter().take(excess).collect();
    for path in &doomed {
        std::fs::remove_file(path)?;
    }
    Ok(doomed)
}

/// `DIR/galactic_war-YYYYMMDDTHHMMSSZ.db`, with `-N` added when that name is taken.
pub fn timestamped_path(dir: &Path, at: SystemTime) -> PathBuf {
    let t = UtcTime::at(at);
    let stem = format!(
        "galactic_war-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    let mut path = dir.join(format!("{stem}.db"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{stem}-{n}.db"));
        n += 1;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_copies_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src.db");
        let conn = Connection::open(&source).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (42);",
        )
        .unwrap();
        let target = timestamped_path(&dir.path().join("backups"), SystemTime::now());
        backup_database(&source, &target).unwrap();
        let copy = Connection::open(&target).unwrap();
        let x: i64 = copy.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 42);
        let before = std::fs::read(&target).unwrap();
        assert!(matches!(
            backup_database(&source, &target),
            Err(BackupError::Exists(_))
        ));
        assert_eq!(std::fs::read(&target).unwrap(), before);
        let next = timestamped_path(target.parent().unwrap(), SystemTime::now());
        assert_ne!(next, target);
    }
}
