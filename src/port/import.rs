//! `galactic-war import`: archive files into the database, each galaxy stored whole
//! (its tick, config, every system's resources, structure levels and build in flight) by
//! the stores' own creation path ([`WriteStore::create_chunk`]), so an imported galaxy is
//! stored exactly as a daemon would store it, in chunks, invisible until its last chunk.
//!
//! The order, so that a refusal writes nothing: every file is read and decoded first (a
//! damaged file, one of a newer format, a bad name or a name given twice stops the
//! import); then the database is opened as the daemon opens it (checked and migrated),
//! jobs a previous run left unfinished are finished as a daemon's start-up would; then
//! every name is looked up (one that exists without `--replace`, or, with it, one a live
//! daemon owns, stops the import); only then is anything written.
//!
//! Beside a daemon. An SQLite file is the daemon's alone: the import takes the daemon's
//! lock on it ([`DatabaseLock`]) and refuses when a daemon holds it; it leaves the
//! clean-shutdown marker a daemon's clean stop leaves, so the next start is quick. On
//! PostgreSQL the import is one more daemon to the others: a new galaxy is owned by it
//! while it is written (other daemons see it only once whole) and released at the end; a
//! replaced galaxy is taken first, as a daemon takes one (refused when a live daemon
//! owns it), marked deleted, removed in chunks and then created again. A crash during a
//! `--replace` leaves the name absent (the next daemon to start removes what was
//! half-written); the import is then run again.

use std::path::{Path, PathBuf};

use super::PortError;
use crate::galaxies::valid_galaxy_name;
use crate::model::{Galaxy, RowMask};
use crate::persistence::clean;
use crate::persistence::lock::DatabaseLock;
use crate::settings::{DatabaseUrl, PersistenceSettings};
use crate::store::sqlite::StartupCheck;
use crate::store::{
    BusyDeadline, Claim, ClaimStore, CreationProgress, GalaxyJob, NewGalaxy, ReadStore, StoreError,
    WriteStore,
};
use crate::systemd::Notifier;

/// Systems per creation or removal chunk: each its own transaction of a few tens of
/// milliseconds, as the daemon sizes them.
const CHUNK_SYSTEMS: usize = 5_000;

/// A chunk whose commit's answer was lost (PostgreSQL) is settled by calling again; this
/// many times at most before the galaxy is given up.
const UNSETTLED_TRIES: u32 = 3;

/// Imports the archive `files` into the database `url`, printing each galaxy stored.
pub(super) fn import(
    url: &DatabaseUrl,
    settings: &PersistenceSettings,
    files: &[PathBuf],
    replace: bool,
) -> Result<(), Vec<PortError>> {
    let names = read_all(files)?;
    let mut target = Target::open(url, settings).map_err(|error| vec![error])?;
    let checked = target
        .finish_unfinished_jobs()
        .map_err(|error| vec![error])
        .and_then(|()| target.refuse_taken(&names, replace));
    if let Err(refused) = checked {
        let _ = target.close(false);
        return Err(refused);
    }
    let mut failed = Vec::new();
    for (file, name) in files.iter().zip(&names) {
        match target.import_one(file, name, replace) {
            Ok(line) => println!("{line}"),
            Err(error) => failed.push(error),
        }
    }
    if let Err(error) = target.close(failed.is_empty()) {
        failed.push(error);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

/// Reads and decodes one archive file.
fn read_archive(path: &Path) -> Result<Galaxy, PortError> {
    let bytes = std::fs::read(path).map_err(PortError::io(path))?;
    crate::archive::from_file(&bytes).map_err(|source| PortError::Archive {
        path: path.to_path_buf(),
        source,
    })
}

/// Every file read and decoded, and its galaxy's name: all of them, or every reason why
/// not (nothing is written then).
fn read_all(files: &[PathBuf]) -> Result<Vec<String>, Vec<PortError>> {
    let mut names: Vec<String> = Vec::with_capacity(files.len());
    let mut refused = Vec::new();
    for file in files {
        let galaxy = match read_archive(file) {
            Ok(galaxy) => galaxy,
            Err(error) => {
                refused.push(error);
                continue;
            }
        };
        let name = galaxy.name().to_owned();
        if !valid_galaxy_name(&name) {
            refused.push(PortError::Refused(format!(
                "{}: its galaxy is named {name:?}, which is not a galaxy name",
                file.display()
            )));
        } else if let Some(at) = names.iter().position(|known| *known == name) {
            refused.push(PortError::Refused(format!(
                "{} and {} both hold galaxy '{name}'",
                files[at].display(),
                file.display()
            )));
        }
        names.push(name);
    }
    if refused.is_empty() {
        Ok(names)
    } else {
        refused.push(PortError::Refused("nothing was imported".to_owned()));
        Err(refused)
    }
}

/// The database being imported into, opened as a daemon opens it.
struct Target {
    label: String,
    writer: Box<dyn WriteStore>,
    reader: Box<dyn ReadStore>,
    /// PostgreSQL: takes a galaxy before it is replaced, as a daemon takes one.
    claims: Option<Box<dyn ClaimStore>>,
    /// SQLite: the file and its (device, inode) once opened, for the clean-shutdown marker.
    file: Option<(PathBuf, (u64, u64))>,
    /// Last: released once the connections above are closed.
    lock: Option<DatabaseLock>,
}

impl Target {
    /// Locks (SQLite), opens, checks and migrates the database `url`.
    fn open(url: &DatabaseUrl, settings: &PersistenceSettings) -> Result<Target, PortError> {
        let (lock, check) = match url {
            DatabaseUrl::File(path) => {
                crate::store::create_parent_dir(path)?;
                let lock = DatabaseLock::acquire(path).map_err(|error| match error {
                    StoreError::InUse { database, lock } => PortError::Refused(format!(
                        "{} is in use by a running daemon (it holds {}): stop it first, an \
                         import into an SQLite file runs alone; nothing was imported",
                        database.display(),
                        lock.display()
                    )),
                    error => error.into(),
                })?;
                (Some(lock), clean::take(path))
            }
            DatabaseUrl::Memory | DatabaseUrl::Postgres(_) => {
                let why = "an import".to_owned();
                (None, StartupCheck::Whole { why })
            }
        };
        let opened =
            crate::store::open::open(url, settings, check, BusyDeadline::new(), &Notifier::none())?;
        let mut writer = opened.writer;
        writer.on_writer_thread();
        let reader = match &opened.readers {
            Some(open) => open()?,
            None => {
                return Err(PortError::Refused(
                    "an in-memory database cannot be imported into".to_owned(),
                ))
            }
        };
        let file = match url {
            DatabaseUrl::File(path) => {
                use std::os::unix::fs::MetadataExt;
                let meta = std::fs::metadata(path).map_err(PortError::io(path))?;
                Some((path.clone(), (meta.dev(), meta.ino())))
            }
            DatabaseUrl::Memory | DatabaseUrl::Postgres(_) => None,
        };
        Ok(Target {
            label: url.label(),
            writer,
            reader,
            claims: opened.claims,
            file,
            lock,
        })
    }

    /// Finishes the jobs a previous run left unfinished (a creation is removed), as a
    /// daemon's start-up does: a name they hold is free afterwards.
    fn finish_unfinished_jobs(&mut self) -> Result<(), PortError> {
        for job in self.writer.unfinished_jobs()? {
            let (GalaxyJob::Creating(name) | GalaxyJob::Deleting(name)) = job;
            self.purge(&name)?;
        }
        Ok(())
    }

    /// Refuses, before anything is written, a name that exists without `replace`, and
    /// with it a name a live daemon owns.
    fn refuse_taken(&self, names: &[String], replace: bool) -> Result<(), Vec<PortError>> {
        let owners = self
            .reader
            .galaxy_owners()
            .map_err(|error| vec![PortError::from(error)])?;
        let archives = self
            .reader
            .archives()
            .map_err(|error| vec![PortError::from(error)])?;
        let mut refused = Vec::new();
        for name in names {
            let owner = match owners.iter().find(|(stored, _)| stored == name) {
                Some((_, owner)) => owner.clone(),
                None if archives.iter().any(|archive| archive.name == *name) => None,
                None => continue,
            };
            if !replace {
                refused.push(PortError::Refused(format!(
                    "galaxy '{name}' exists in {}: give --replace to replace it",
                    self.label
                )));
            } else if let Some(owner) = owner {
                refused.push(owned_elsewhere(name, &owner));
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            refused.push(PortError::Refused("nothing was imported".to_owned()));
            Err(refused)
        }
    }

    /// Imports one file (whose galaxy is `name`); the line to print.
    fn import_one(&mut self, file: &Path, name: &str, replace: bool) -> Result<String, PortError> {
        let galaxy = read_archive(file)?;
        if galaxy.name() != name {
            return Err(PortError::Refused(format!(
                "{} changed while the import ran",
                file.display()
            )));
        }
        let replaced_live = replace && self.reader.galaxy_exists(name)? && self.remove(name)?;
        // An archive of the name is replaced by the galaxy: the commit that makes it exist
        // deletes the archive, as a restore's does.
        let replaces_archive = replace && self.reader.archive_exists(name)?;
        self.create(&galaxy, replaces_archive)?;
        let replaced = replaced_live || replaces_archive;
        Ok(format!(
            "{}: galaxy '{name}', {} systems, tick {}, {} {}",
            file.display(),
            galaxy.systems().len(),
            galaxy.tick(),
            if replaced {
                "replaced in"
            } else {
                "imported into"
            },
            self.label
        ))
    }

    /// Removes stored galaxy `name` (taking it first where daemons share the database);
    /// false when it was gone already.
    fn remove(&mut self, name: &str) -> Result<bool, PortError> {
        if let Some(claims) = &self.claims {
            match claims.take(name)? {
                Claim::Owned { epoch } => self.writer.own(name, epoch),
                Claim::Elsewhere(owner) => return Err(owned_elsewhere(name, &owner)),
                Claim::Missing => return Ok(false),
            }
        }
        self.writer.write_batch(&[name.to_owned()], &[])?;
        self.purge(name)?;
        Ok(true)
    }

    /// Removes the rows of galaxy `name`, marked deleted or being created, in chunks.
    fn purge(&mut self, name: &str) -> Result<(), PortError> {
        loop {
            self.writer.room_for_bulk()?;
            let (_, done) = self.writer.purge_chunk(name, CHUNK_SYSTEMS)?;
            if done {
                return Ok(());
            }
        }
    }

    /// Stores `galaxy` whole, in chunks (`restoring`: in place of its archive, which the
    /// last chunk deletes); on failure removes what it wrote (if it can: a daemon's
    /// start-up removes it otherwise).
    fn create(&mut self, galaxy: &Galaxy, restoring: bool) -> Result<(), PortError> {
        let config_toml = galaxy.config().to_toml();
        let new = NewGalaxy {
            name: galaxy.name(),
            config_toml: &config_toml,
            tick: galaxy.tick(),
            systems: galaxy.systems(),
            rows: RowMask::new_system(galaxy.rules()),
            restoring,
        };
        let mut progress = CreationProgress::default();
        let mut unsettled = 0;
        loop {
            let written = self
                .writer
                .room_for_bulk()
                .and_then(|()| self.writer.create_chunk(&new, &mut progress, CHUNK_SYSTEMS));
            match written {
                Ok(_) if progress.written == new.systems.len() => return Ok(()),
                Ok(_) => {}
                Err(_) if progress.is_unsettled() && unsettled < UNSETTLED_TRIES => {
                    unsettled += 1;
                }
                Err(StoreError::Exists(name)) => {
                    return Err(PortError::Refused(format!(
                        "galaxy '{name}' was created in {} while the import ran; not replaced",
                        self.label
                    )))
                }
                Err(error) => {
                    if progress.written > 0 {
                        let _ = self.purge(new.name);
                    }
                    return Err(error.into());
                }
            }
        }
    }

    /// Ends the writer as a daemon's clean stop does (PostgreSQL: every galaxy it owns
    /// released; SQLite: the WAL emptied) and closes everything; with `clean`, leaves the
    /// clean-shutdown marker beside an SQLite file.
    fn close(self, clean: bool) -> Result<(), PortError> {
        let Target {
            mut writer,
            reader,
            claims,
            file,
            lock,
            ..
        } = self;
        drop(reader);
        drop(claims);
        let released = writer.write_final_batch(&[], &[]);
        writer.finish(released.is_ok());
        drop(writer);
        released?;
        if let (true, Some((path, opened))) = (clean, file) {
            if let Err(error) = clean::write(&path, opened) {
                log::info!(target: crate::logging::PERSISTENCE,
                    "no clean-shutdown marker ({error}): the next start checks the whole file");
            }
        }
        drop(lock);
        Ok(())
    }
}

fn owned_elsewhere(name: &str, owner: &crate::store::Owner) -> PortError {
    PortError::Refused(format!(
        "galaxy '{name}' is owned by the running daemon {} at {}: it is not replaced under \
         it (delete it there first, or import once that daemon has stopped and its lease \
         has run out)",
        owner.id, owner.url
    ))
}
