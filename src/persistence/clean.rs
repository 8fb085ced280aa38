//! The clean-shutdown marker: how a start-up after a clean stop skips the whole-file check.
//!
//! Start-up must find a damaged database before anything writes to it (README, *What is guaranteed, in plain words*: it is
//! left untouched and the daemon runs from memory). `PRAGMA quick_check` finds it, but
//! reads every page: minutes on a database of several GB, longer than systemd lets a
//! service start. So the full check runs only when the file may have been left in a state
//! we did not see it in, and a cheap header and schema check runs always.
//!
//! **The marker.** After a clean shutdown — the final flush saved everything, the writer
//! thread (which owns the only read-write connections: its own and the checkpointer's)
//! has ended, and the WAL is empty or gone — the engine writes `DB.clean` beside the
//! database (to a temporary name, fsynced, renamed, directory fsynced). It holds the
//! file's identity (device, inode, size, mtime and ctime in ns) and the schema version.
//! Read-only connections may still be open then: they open the file `O_RDONLY` and a
//! read-only SQLite connection never checkpoints, so they cannot change what the marker
//! describes.
//!
//! **At start-up**, before anything writes, [`take`] reads the marker and removes it
//! (and fsyncs the directory), so a crash later leaves none behind. If it matched the file
//! exactly and no `-wal` file holds frames, only the header and schema are checked;
//! otherwise (no marker, any difference, an unreadable marker, a marker that cannot be
//! removed) the whole file is checked as before.
//!
//! **Why an unclean stop is the case that needs the full check.** A crash (kill -9, power
//! loss, a disk that failed mid-write) is when a file can be left in a state no running
//! daemon saw: a torn write, a WAL whose frames were never checkpointed, a disk lying
//! about fsync. After a clean stop the last thing that touched the file was our own
//! connection closing, and nothing has changed it since — as far as the marker can tell.
//!
//! **What it does not protect against.** Damage that keeps the file's identity: bits
//! rotting on disk without the file being written (mtime and ctime unchanged), or a file
//! changed while the clock was stepped back to the same instant. Nor damage SQLite did not
//! notice while the previous run wrote it (that run's own start-up check, or a full check
//! after its crash, is what vouched for the file). `galactic-war check` reads every page
//! for an operator who wants certainty. Writes through the file system are seen: any
//! write changes mtime and ctime (ctime cannot be set back by tools that restore mtime),
//! a new copy changes the inode, and a growing or shrinking file changes the size. To
//! make "any later write changes the mtime" hold even with coarse file-system clocks, the
//! marker is only kept once its own mtime is later than the database's (see [`write()`]).
//!
//! In-memory databases have no marker.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::writer::FlushReport;
use crate::store::sqlite::{StartupCheck, SCHEMA_VERSION};

use crate::logging::PERSISTENCE as LOG;

/// The first line of a marker: what it is, and its format's version.
const HEADER: &str = "galactic-war clean shutdown 1";

/// `DB.clean`, beside the database.
pub fn marker_path(database: &Path) -> PathBuf {
    with_suffix(database, ".clean")
}

fn temporary_path(database: &Path) -> PathBuf {
    with_suffix(database, ".clean.tmp")
}

fn wal_path(database: &Path) -> PathBuf {
    with_suffix(database, "-wal")
}

fn with_suffix(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What identifies the database file's content without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    fn of(path: &Path) -> std::io::Result<Identity> {
        let meta = std::fs::metadata(path)?;
        Ok(Identity {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }

    /// The first field that differs from `other`, for the log.
    fn difference(&self, other: &Identity) -> Option<&'static str> {
        if (self.device, self.inode) != (other.device, other.inode) {
            Some("it is another file (device or inode differ)")
        } else if self.size != other.size {
            Some("its size changed")
        } else if self.mtime_ns != other.mtime_ns {
            Some("its modification time changed")
        } else if self.ctime_ns != other.ctime_ns {
            Some("its change time changed")
        } else {
            None
        }
    }
}

/// The marker's content.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Marker {
    identity: Identity,
    schema_version: i64,
}

impl Marker {
    fn to_text(&self) -> String {
        let i = &self.identity;
        format!(
            "{HEADER}\ndevice={}\ninode={}\nsize={}\nmtime_ns={}\nctime_ns={}\nschema_version={}\n",
            i.device, i.inode, i.size, i.mtime_ns, i.ctime_ns, self.schema_version
        )
    }

    /// The marker in `text`, or `None` if it is anything but exactly what
    /// [`Marker::to_text`] writes.
    fn parse(text: &str) -> Option<Marker> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut field = |name: &str| -> Option<&str> {
            let (key, value) = lines.next()?.split_once('=')?;
            (key == name).then_some(value)
        };
        let marker = Marker {
            identity: Identity {
                device: field("device")?.parse().ok()?,
                inode: field("inode")?.parse().ok()?,
                size: field("size")?.parse().ok()?,
                mtime_ns: field("mtime_ns")?.parse().ok()?,
                ctime_ns: field("ctime_ns")?.parse().ok()?,
            },
            schema_version: field("schema_version")?.parse().ok()?,
        };
        lines.next().is_none().then_some(marker)
    }
}

/// Reads the marker beside `database`, removes it, and says how much start-up must check.
/// Called before anything opens the database for writing; the marker is gone (and its
/// removal durable) before it returns, whatever it found.
pub fn take(database: &Path) -> StartupCheck {
    let marker_file = marker_path(database);
    let found = match std::fs::read_to_string(&marker_file) {
        Ok(text) => Some(Marker::parse(&text).ok_or("the clean-shutdown marker is unreadable")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(Err("the clean-shutdown marker cannot be read")),
    };
    // A marker from a shutdown interrupted before its rename: never trusted, ours by name.
    let _ = std::fs::remove_file(temporary_path(database));
    let Some(found) = found else {
        return whole(
            "no clean-shutdown marker (the last stop was not clean, or this is a new database)",
        );
    };
    if let Err(error) = remove_durably(&marker_file) {
        log::warn!(target: LOG, "cannot remove {}: {error}", marker_file.display());
        return whole("the clean-shutdown marker cannot be removed");
    }
    let marker = match found {
        Ok(marker) => marker,
        Err(why) => return whole(why),
    };
    let now = match Identity::of(database) {
        Ok(now) => now,
        Err(_) => {
            return whole("a clean-shutdown marker, but the database file cannot be examined")
        }
    };
    if let Some(difference) = marker.identity.difference(&now) {
        return StartupCheck::Whole {
            why: format!("the clean-shutdown marker does not match the database ({difference})"),
        };
    }
    match std::fs::metadata(wal_path(database)) {
        Ok(wal) if wal.len() > 0 => {
            return StartupCheck::Whole {
                why: format!(
                    "the clean-shutdown marker matches, but the WAL holds {} bytes",
                    wal.len()
                ),
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return whole("the WAL file cannot be examined"),
    }
    StartupCheck::HeaderAndSchema {
        schema_version: marker.schema_version,
    }
}

fn whole(why: &str) -> StartupCheck {
    StartupCheck::Whole {
        why: why.to_owned(),
    }
}

fn remove_durably(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(parent)?.sync_all()
}

/// Why no marker was written.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("the WAL still holds {0} bytes (its final checkpoint did not complete)")]
    WalNotEmpty(u64),
    #[error("the database file was replaced or removed while the daemon ran")]
    Replaced,
    #[error("the file system clock did not move past the database's last change")]
    ClockStill,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Writes the marker for `database` as it is now, once the writer has ended cleanly.
/// `opened` is the (device, inode) the writer opened: a file put in its place while the
/// daemon ran is not vouched for.
pub fn write(database: &Path, opened: (u64, u64)) -> Result<(), MarkerError> {
    match std::fs::metadata(wal_path(database)) {
        Ok(wal) if wal.len() > 0 => return Err(MarkerError::WalNotEmpty(wal.len())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let identity = Identity::of(database)?;
    if (identity.device, identity.inode) != opened {
        return Err(MarkerError::Replaced);
    }
    let marker = Marker {
        identity,
        schema_version: SCHEMA_VERSION,
    };
    let temporary = temporary_path(database);
    // File-system clocks are coarse (a tick of a few ms on many kernels): a change right
    // after the database's last write could carry the same mtime and pass for no change.
    // The marker is kept only once its own mtime is later, so every write after it shows.
    for _ in 0..200 {
        let mut file = File::create(&temporary)?;
        file.write_all(marker.to_text().as_bytes())?;
        file.sync_all()?;
        let written = Identity::of(&temporary)?;
        if written.mtime_ns > marker.identity.mtime_ns {
            std::fs::rename(&temporary, marker_path(database))?;
            sync_parent(database)?;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = std::fs::remove_file(&temporary);
    Err(MarkerError::ClockStill)
}

/// The engine's part in a clean shutdown: what the writer opened, and whether the marker
/// was already considered (a second shutdown call reports nothing new and must not write
/// a marker for the first one's outcome).
#[derive(Debug)]
pub(crate) struct CleanShutdown {
    database: PathBuf,
    opened: (u64, u64),
    done: AtomicBool,
}

impl CleanShutdown {
    /// Notes the identity of `database`, just opened by the writer.
    pub(crate) fn opened(database: &Path) -> std::io::Result<CleanShutdown> {
        let identity = Identity::of(database)?;
        Ok(CleanShutdown {
            database: database.to_path_buf(),
            opened: (identity.device, identity.inode),
            done: AtomicBool::new(false),
        })
    }

    /// After the writer thread has ended with `report`: the marker, if everything was saved.
    pub(crate) fn after_shutdown(&self, report: &FlushReport) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        if !report.all_saved() {
            log::warn!(target: LOG, "not everything was saved: no clean-shutdown marker; the next start checks the whole database");
            return;
        }
        match write(&self.database, self.opened) {
            Ok(()) => log::info!(target: LOG,
                "clean shutdown: marker {} written; the next start skips the whole-file check",
                marker_path(&self.database).display()),
            Err(error) => log::warn!(target: LOG,
                "no clean-shutdown marker ({error}); the next start checks the whole database"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> PathBuf {
        let path = dir.join("g.db");
        std::fs::write(&path, b"not really a database, but a file with an identity").unwrap();
        path
    }

    fn opened(path: &Path) -> (u64, u64) {
        let identity = Identity::of(path).unwrap();
        (identity.device, identity.inode)
    }

    #[test]
    fn a_marker_round_trips_and_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        write(&path, opened(&path)).unwrap();
        let text = std::fs::read_to_string(marker_path(&path)).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        assert_eq!(
            take(&path),
            StartupCheck::HeaderAndSchema {
                schema_version: SCHEMA_VERSION
            }
        );
        assert!(!marker_path(&path).exists(), "taking removes it");
        assert!(matches!(take(&path), StartupCheck::Whole { .. }));
    }

    #[test]
    fn any_change_to_the_file_means_a_whole_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        // Same size, new content.
        write(&path, opened(&path)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let StartupCheck::Whole { why } = take(&path) else {
            panic!("a changed file passed")
        };
        assert!(why.contains("modification time"), "{why}");
        // A WAL with frames.
        write(&path, opened(&path)).unwrap();
        std::fs::write(wal_path(&path), b"frames").unwrap();
        let StartupCheck::Whole { why } = take(&path) else {
            panic!("a WAL with frames passed")
        };
        assert!(why.contains("WAL holds 6 bytes"), "{why}");
        // An empty WAL is what a truncating checkpoint leaves.
        std::fs::write(wal_path(&path), b"").unwrap();
        write(&path, opened(&path)).unwrap();
        assert!(matches!(take(&path), StartupCheck::HeaderAndSchema { .. }));
    }

    #[test]
    fn an_unreadable_or_misplaced_marker_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path());
        std::fs::write(
            marker_path(&path),
            "galactic-war clean shutdown 1\ndevice=x\n",
        )
        .unwrap();
        let StartupCheck::Whole { why } = take(&path) else {
            panic!("garbage passed")
        };
        assert!(why.contains("unreadable"), "{why}");
        assert!(!marker_path(&path).exists());
        // A file put in place of the one the writer opened (both exist at once, so their
        // inodes differ).
        let before = opened(&path);
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"x").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(matches!(write(&path, before), Err(MarkerError::Replaced)));
        assert!(!marker_path(&path).exists());
    }

    #[test]
    fn marker_text_must_be_exact() {
        let marker = Marker {
            identity: Identity {
                device: 1,
                inode: 2,
                size: 3,
                mtime_ns: 4,
                ctime_ns: -5,
            },
            schema_version: 1,
        };
        let text = marker.to_text();
        assert_eq!(Marker::parse(&text), Some(marker));
        assert_eq!(Marker::parse(&format!("{text}extra=1\n")), None);
        assert_eq!(Marker::parse(&text.replace("inode", "inodes")), None);
    }
}
