//! Online backups through SQLite's backup API.
//!
//! A backup reads the database through its own read-only connection, copying every page
//! in one step: one read transaction, so the copy is the database as of one commit (in WAL
//! mode the writer keeps committing meanwhile, unblocked). The copy is written beside its
//! target under a temporary name, `TARGET.partial-PID`, and then hard-linked into place,
//! which fails rather than replace a file that exists: a backup never overwrites anything.
//!
//! Invariants: a temporary file belongs to exactly one backup — it is created with
//! `O_EXCL` before SQLite opens it, so two backups can never write (or delete) the same
//! one; and a target name is taken only by the atomic link, so two backups in the same
//! second get two names (`…Z.db`, `…Z-1.db`), never one (two backups sharing one temporary
//! file would delete it under each other). A temporary file outlives its
//! backup only when the process dies mid-copy; [`remove_unfinished`] clears those.
//!
//! [`backup_to`] is the command line's entry: a directory (one that exists, or a path
//! ending in `/`) gets a timestamped file inside, as the daemon's backups do, so that
//! `--to /srv/backups` from cron keeps every copy; any other path is the file to write.
//! The source is opened by [`super::reading::open_to_read`], which leaves no `-wal`/`-shm`
//! beside a database nobody else has open. A failure names its cause: a directory that
//! cannot be made or written (a path through a file, no permission, a read-only file
//! system) is reported as that, with the directory's name, not as SQLite's "unable to open
//! database file" on a temporary file.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;

use super::reading::{beside, open_to_read};
use crate::store::sqlite::BUSY_TIMEOUT;
use crate::time::UtcTime;

/// Why a backup failed. A failed backup leaves no file at its target.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup target {0} already exists; backups never overwrite")]
    Exists(PathBuf),
    #[error("cannot write a backup into {dir}: {source}")]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("a backup to {target} is already in progress in this process ({partial} exists)")]
    InProgress { target: PathBuf, partial: PathBuf },
    #[error("backup: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database refused the copy; its message (the driver's error stays inside).
    #[error("backup of {path}: {message}")]
    Database { path: PathBuf, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `backups/` beside the database: where backups go without `GWAR_BACKUP_DIR`.
pub fn default_dir(database: &Path) -> PathBuf {
    database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .join("backups")
}

/// Copies the database at `source` to `to`: into a timestamped file inside it when `to`
/// is a directory or ends in `/` (see [`backup_into`]), else to the file `to` (see
/// [`backup_database`]); the path written.
pub fn backup_to(source: &Path, to: &Path, at: SystemTime) -> Result<PathBuf, BackupError> {
    let names_a_directory = to
        .as_os_str()
        .as_encoded_bytes()
        .last()
        .is_some_and(|&b| std::path::is_separator(char::from(b)));
    if names_a_directory || to.is_dir() {
        backup_into(source, to, at)
    } else {
        backup_database(source, to).map(|()| to.to_path_buf())
    }
}

/// Copies the database at `source` to `target`, which must not exist.
pub fn backup_database(source: &Path, target: &Path) -> Result<(), BackupError> {
    if target.exists() {
        return Err(BackupError::Exists(target.to_path_buf()));
    }
    let dir = parent_of(target);
    make_dir(dir)?;
    let partial = partial_path(target);
    if !reserve(&partial)? {
        return Err(BackupError::InProgress {
            target: target.to_path_buf(),
            partial,
        });
    }
    let result = copy_pages(source, &partial).and_then(|()| {
        std::fs::hard_link(&partial, target).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(target.to_path_buf()),
            _ => BackupError::Io {
                path: target.to_path_buf(),
                source,
            },
        })
    });
    discard(&partial);
    result
}

/// Copies the database at `source` into `dir` as `galactic_war-YYYYMMDDTHHMMSSZ.db` for
/// the time `at` (with `-N` added when that name is taken, also by a backup finishing
/// meanwhile); the path written. Safe to call from several threads or processes at once.
pub fn backup_into(source: &Path, dir: &Path, at: SystemTime) -> Result<PathBuf, BackupError> {
    make_dir(dir)?;
    let stem = timestamp_stem(at);
    // The first free name whose temporary file we could create is ours to copy into.
    let mut n = 0;
    let partial = loop {
        let target = numbered(dir, &stem, n);
        n += 1;
        if target.exists() {
            continue;
        }
        let partial = partial_path(&target);
        if reserve(&partial)? {
            break partial;
        }
    };
    let result = copy_pages(source, &partial).and_then(|()| {
        // The link takes the name atomically; a name taken meanwhile is skipped.
        let mut n = n - 1;
        loop {
            let target = numbered(dir, &stem, n);
            match std::fs::hard_link(&partial, &target) {
                Ok(()) => return Ok(target),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(error) => return Err(io_error(&target)(error)),
            }
        }
    });
    discard(&partial);
    result
}

/// The directory a file path is in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

/// Creates `dir` and its parents when missing. A path through a file is named as such:
/// `create_dir_all` would say "File exists" about the file, or "Not a directory".
fn make_dir(dir: &Path) -> Result<(), BackupError> {
    let failed = |source| BackupError::Directory {
        dir: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(file) = dir.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir()) {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", file.display()),
        )));
    }
    std::fs::create_dir_all(dir).map_err(failed)
}

/// `TARGET.partial-PID`.
fn partial_path(target: &Path) -> PathBuf {
    let mut partial = target.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    PathBuf::from(partial)
}

/// Creates `partial` empty (an empty file is an empty SQLite database), exclusively: false
/// when it exists, that is, another backup of this process is writing it. This is the
/// first file a backup creates, so a directory it may not write into fails here, by name.
fn reserve(partial: &Path) -> Result<bool, BackupError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial)
    {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(BackupError::Directory {
            dir: parent_of(partial).to_path_buf(),
            source,
        }),
    }
}

/// Removes a temporary file and its rollback journal (present only if the copy failed
/// midway and SQLite could not roll back).
fn discard(partial: &Path) {
    let _ = std::fs::remove_file(journal_of(partial));
    let _ = std::fs::remove_file(partial);
}

fn journal_of(path: &Path) -> PathBuf {
    beside(path, "-journal")
}

fn copy_pages(source: &Path, partial: &Path) -> Result<(), BackupError> {
    let sqlite = |path: &Path| {
        let path = path.to_path_buf();
        move |source: rusqlite::Error| BackupError::Database {
            path,
            message: source.to_string(),
        }
    };
    let from = open_to_read(source).map_err(sqlite(source))?;
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
                return Err(BackupError::Database {
                    path: source.to_path_buf(),
                    message: rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("the database stayed busy".into()),
                    )
                    .to_string(),
                })
            }
        }
    }
}

/// Deletes all but the newest `keep` timestamped backups in `dir` (files named by
/// [`timestamp_stem`]; anything else there is left alone); the paths deleted.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("galactic_war-") && n.ends_with(".db"))
        })
        .collect();
    // The names carry the UTC time and then the number of a same-second backup, so this
    // is age order (plain name order would put `…Z-1.db` before `…Z.db`, and `-10` before
    // `-2`).
    backups.sort_by_cached_key(|path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let stem = name.strip_suffix(".db").unwrap_or(name);
        let (stamp, n) = match stem.rsplit_once('-') {
            Some((stamp, n)) if stamp.len() > "galactic_war".len() => {
                (stamp, n.parse::<u64>().unwrap_or(0))
            }
            _ => (stem, 0),
        };
        (stamp.to_owned(), n, name.to_owned())
    });
    let excess = backups.len().saturating_sub(keep);
    let doomed: Vec<PathBuf> = backups.into_iter().take(excess).collect();
    for path in &doomed {
        std::fs::remove_file(path)?;
    }
    Ok(doomed)
}

/// The PID in the name of a backup's temporary file, `ANYTHING.partial-PID` or its
/// `-journal`; `None` for any other name.
pub fn unfinished_backup_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix("-journal").unwrap_or(name);
    let (_, pid) = name.rsplit_once(".partial-")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// What [`remove_unfinished`] found.
#[derive(Debug, Default)]
pub struct Unfinished {
    /// Removed: their writer is gone.
    pub removed: Vec<PathBuf>,
    /// Left alone, with the PID of the running galactic-war process that may be writing it.
    pub kept: Vec<(PathBuf, u32)>,
}

/// Removes the temporary files of backups that died mid-copy from `dir`: only names of
/// ours (`galactic_war-….db.partial-PID` and their `-journal`), and only when process PID
/// is not a galactic-war that is running — the directory may be shared with a `galactic-war
/// backup` command, or another daemon, copying right now. A PID now used by another
/// program was reused, and a PID equal to ours is a previous life of this process (a
/// container's PID 1, say): both are leftovers. Call it before this process starts a
/// backup into `dir`. A missing `dir` holds nothing.
pub fn remove_unfinished(dir: &Path) -> std::io::Result<Unfinished> {
    let mut found = Unfinished::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(error) => return Err(error),
    };
    for path in entries.filter_map(|entry| entry.ok().map(|e| e.path())) {
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("galactic_war-") && n.contains(".db.partial-"));
        let Some(pid) = unfinished_backup_pid(&path).filter(|_| ours) else {
            continue;
        };
        if galactic_war_running(pid) {
            found.kept.push((path, pid));
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => found.removed.push(path),
            // Its writer finished (and removed it) since we looked.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    found.removed.sort();
    found.kept.sort();
    Ok(found)
}

/// Whether `pid` is a running galactic-war other than this process, as far as `/proc`
/// tells: its command name is ours (or the usual one, for a differently named binary).
/// Without `/proc` nothing can be told, and a file that may be in use is kept.
fn galactic_war_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let comm = |of: &str| std::fs::read_to_string(format!("/proc/{of}/comm"));
    match (comm(&pid.to_string()), comm("self")) {
        (Ok(theirs), Ok(ours)) => {
            let theirs = theirs.trim_end();
            theirs == ours.trim_end() || theirs == "galactic-war"
        }
        // No such process.
        (Err(_), Ok(_)) => false,
        (_, Err(_)) => true,
    }
}

/// `galactic_war-YYYYMMDDTHHMMSSZ`.
fn timestamp_stem(at: SystemTime) -> String {
    let t = UtcTime::at(at);
    format!(
        "galactic_war-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// `DIR/STEM.db`, or `DIR/STEM-N.db` for `n` > 0.
fn numbered(dir: &Path, stem: &str, n: u32) -> PathBuf {
    match n {
        0 => dir.join(format!("{stem}.db")),
        n => dir.join(format!("{stem}-{n}.db")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_db(dir: &Path) -> PathBuf {
        let source = dir.join("src.db");
        let conn = Connection::open(&source).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (42);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
             INSERT INTO t SELECT randomblob(50) FROM c;",
        )
        .unwrap();
        source
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_backup_copies_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_db(dir.path());
        let target = backup_into(&source, &dir.path().join("backups"), SystemTime::now()).unwrap();
        let copy = Connection::open(&target).unwrap();
        let x: i64 = copy
            .query_row("SELECT x FROM t WHERE rowid = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(x, 42);
        let before = std::fs::read(&target).unwrap();
        assert!(matches!(
            backup_database(&source, &target),
            Err(BackupError::Exists(_))
        ));
        assert_eq!(std::fs::read(&target).unwrap(), before);
    }

    #[test]
    fn backups_in_the_same_second_from_many_threads_all_succeed_under_their_own_names() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_db(dir.path());
        let backups = dir.path().join("backups");
        let at = SystemTime::now();
        let mut written = Vec::new();
        for _round in 0..4 {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (source, backups) = (source.clone(), backups.clone());
                    std::thread::spawn(move || backup_into(&source, &backups, at))
                })
                .collect();
            for thread in threads {
                written.push(thread.join().unwrap().unwrap());
            }
        }
        let mut unique = written.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 16, "{written:?}");
        for path in &written {
            let rows: i64 = Connection::open(path)
                .unwrap()
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, 20001, "{}", path.display());
        }
        assert!(
            names(&backups).iter().all(|n| n.ends_with(".db")),
            "no temporary file is left: {:?}",
            names(&backups)
        );
    }

    #[test]
    fn a_temporary_file_in_use_is_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_db(dir.path());
        let target = dir.path().join("copy.db");
        std::fs::write(partial_path(&target), b"another backup's").unwrap();
        assert!(matches!(
            backup_database(&source, &target),
            Err(BackupError::InProgress { .. })
        ));
        assert_eq!(
            std::fs::read(partial_path(&target)).unwrap(),
            b"another backup's"
        );
        assert!(!target.exists());
    }

    #[test]
    fn pruning_keeps_the_newest_counting_same_second_numbers() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "galactic_war-20250101T000000Z.db",
            "galactic_war-20250101T000001Z.db",
            "galactic_war-20250101T000001Z-1.db",
            "galactic_war-20250101T000001Z-2.db",
            "galactic_war-20250101T000001Z-10.db",
            "galactic_war-20250101T000001Z.db.partial-12",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        prune(dir.path(), 2).unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "galactic_war-20250101T000001Z-10.db",
                "galactic_war-20250101T000001Z-2.db",
                "galactic_war-20250101T000001Z.db.partial-12",
                "notes.txt",
            ]
        );
    }

    #[test]
    fn temporary_file_names_carry_their_writer() {
        let pid = |name: &str| unfinished_backup_pid(Path::new(name));
        assert_eq!(pid("galactic_war-20250101T000000Z.db.partial-77"), Some(77));
        assert_eq!(pid("/b/galactic_war-x.db.partial-77-journal"), Some(77));
        assert_eq!(pid("by-hand.db.partial-5"), Some(5));
        assert_eq!(pid("galactic_war-x.db"), None);
        assert_eq!(pid("galactic_war-x.db.partial-"), None);
        assert_eq!(pid("galactic_war-x.db.partial-7x"), None);
        assert_eq!(pid("galactic_war-x.db.partial-99999999999"), None);
    }

    #[test]
    fn leftovers_of_processes_gone_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        // Above Linux's largest possible PID (2^22): never a running process.
        let gone = 4_194_305;
        let ours = std::process::id();
        // A running process that is not a galactic-war: a PID reused since the crash.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let doomed = [
            format!("galactic_war-20250101T000000Z.db.partial-{gone}"),
            format!("galactic_war-20250101T000000Z.db.partial-{gone}-journal"),
            format!("galactic_war-20250101T000001Z-1.db.partial-{ours}"),
            format!("galactic_war-20250101T000002Z.db.partial-{}", other.id()),
        ];
        let spared = [
            "galactic_war-20250101T000000Z.db".to_owned(),
            format!("by-hand.db.partial-{gone}"),
            "galactic_war-x.db.partial-abc".to_owned(),
            "notes.txt".to_owned(),
        ];
        for name in doomed.iter().chain(&spared) {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let found = remove_unfinished(dir.path()).unwrap();
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(found.removed.len(), doomed.len(), "{found:?}");
        assert!(found.kept.is_empty(), "{found:?}");
        let mut spared = spared.to_vec();
        spared.sort();
        assert_eq!(names(dir.path()), spared);
        let missing = remove_unfinished(&dir.path().join("none")).unwrap();
        assert!(missing.removed.is_empty() && missing.kept.is_empty());
    }
}
