//! `galactic-war export`: stored galaxies to archive files, `DIR/NAME.gwar`, one per
//! galaxy, read beside a running daemon without stopping it.
//!
//! The database is only read: an SQLite file through
//! [`crate::persistence::reading::open_to_read`] (as `check` and `backup` read it: nothing
//! left beside it, the file never written), PostgreSQL through a read-only session. Each
//! galaxy is read by the store's own load ([`ReadStore::load_galaxy_with_ids`]), in one read
//! transaction, so a file holds one consistent state of its galaxy: what the daemon had
//! saved when it was read (changes still in a running daemon's memory are not in it).
//!
//! A file is never written over: every target is looked at before anything is written,
//! and each file is written to a temporary name in `DIR`, synced, and then linked to its
//! name (a link fails when the name exists, where a rename would replace it), so a file
//! named `NAME.gwar` is always whole.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{PortError, EXTENSION};
use crate::galaxies::valid_galaxy_name;
use crate::persistence::reading::open_to_read;
use crate::settings::DatabaseUrl;
use crate::store::postgres::PostgresReader;
use crate::store::sqlite::{SqliteReader, SCHEMA_VERSION};
use crate::store::{ReadStore, StoreError};

/// Writes the galaxies `names` (every stored galaxy when `None`) of the database `url` to
/// `DIR/NAME.gwar`, printing each file written. Refuses, writing nothing, when a galaxy
/// named is not stored or a file exists already.
pub(super) fn export(
    url: &DatabaseUrl,
    names: Option<Vec<String>>,
    out: &Path,
) -> Result<(), Vec<PortError>> {
    let reader = open_reader(url).map_err(|error| vec![error])?;
    let names = match names {
        Some(names) => names,
        None => all_names(reader.as_ref()).map_err(|error| vec![PortError::from(error)])?,
    };
    let mut refused = Vec::new();
    let mut targets = Vec::with_capacity(names.len());
    for name in names {
        let target = out.join(format!("{name}.{EXTENSION}"));
        if !valid_galaxy_name(&name) {
            refused.push(PortError::Refused(format!(
                "{name:?} is not a galaxy name (1 to 64 characters of A-Z a-z 0-9 _ -)"
            )));
        } else if targets.iter().any(|(known, _)| *known == name) {
            continue;
        } else if target.exists() {
            refused.push(PortError::Refused(format!(
                "{} exists already; nothing was written (move it away, or export to another directory)",
                target.display()
            )));
        } else {
            let stored = reader.galaxy_exists(&name);
            match stored.and_then(|live| Ok(live || reader.archive_exists(&name)?)) {
                Ok(true) => targets.push((name, target)),
                Ok(false) => refused.push(PortError::Refused(format!(
                    "no galaxy '{name}' in {}; nothing was written",
                    url.label()
                ))),
                Err(error) => refused.push(error.into()),
            }
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    std::fs::create_dir_all(out).map_err(|e| vec![PortError::io(out)(e)])?;
    let mut failed = Vec::new();
    for (name, target) in &targets {
        match export_one(reader.as_ref(), name, target) {
            Ok(line) => println!("{line}"),
            Err(error) => failed.push(error),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

/// Every stored galaxy, live or archived, sorted.
fn all_names(reader: &dyn ReadStore) -> Result<Vec<String>, StoreError> {
    let mut names = reader.galaxy_names()?;
    names.extend(reader.archives()?.into_iter().map(|archive| archive.name));
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// Reads galaxy `name` (live, or from its archive, which is checked on the way) and
/// writes its file at `target`; the line to print.
fn export_one(reader: &dyn ReadStore, name: &str, target: &Path) -> Result<String, PortError> {
    let galaxy = match reader.load_galaxy_with_ids(name)? {
        Some((galaxy, _)) => galaxy,
        None => match reader.read_archive(name)? {
            Some(body) => crate::archive::decode(&body).map_err(|error| {
                PortError::Refused(format!(
                    "the archive of galaxy '{name}' is damaged ({error}); {} not written",
                    target.display()
                ))
            })?,
            None => {
                return Err(PortError::Refused(format!(
                    "galaxy '{name}' was deleted while the export ran; {} not written",
                    target.display()
                )))
            }
        },
    };
    let bytes = crate::archive::to_file(&galaxy);
    write_new(target, &bytes)?;
    Ok(format!(
        "{}: galaxy '{name}', {} systems, tick {}, {} bytes",
        target.display(),
        galaxy.systems().len(),
        galaxy.tick(),
        bytes.len()
    ))
}

/// Writes `bytes` to a new file at `target`: a temporary file beside it, synced, linked
/// to `target` (which fails if `target` exists: it is never replaced), the directory
/// synced. The temporary file is removed whatever happens.
fn write_new(target: &Path, bytes: &[u8]) -> Result<(), PortError> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temporary = target.as_os_str().to_owned();
    temporary.push(format!(".partial-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(PortError::io(&temporary))
        .and_then(|()| match std::fs::hard_link(&temporary, target) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(PortError::Refused(format!(
                    "{} appeared while the export ran; it was not written over",
                    target.display()
                )))
            }
            linked => linked.map_err(PortError::io(target)),
        });
    let _ = std::fs::remove_file(&temporary);
    written?;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(PortError::io(dir))
}

/// A reader of the database `url` that writes nothing: SQLite through `open_to_read`, its
/// schema this binary's; PostgreSQL through a read-only session.
fn open_reader(url: &DatabaseUrl) -> Result<Box<dyn ReadStore>, PortError> {
    match url {
        DatabaseUrl::Postgres(url) => Ok(Box::new(PostgresReader::open(url)?)),
        DatabaseUrl::Memory => Err(PortError::Refused(
            "an in-memory database holds no galaxies to export".to_owned(),
        )),
        DatabaseUrl::File(path) => {
            if !path.exists() {
                return Err(PortError::Refused(format!(
                    "no database at {}",
                    path.display()
                )));
            }
            let label = path.display().to_string();
            let opened = |source| StoreError::Open {
                path: label.clone(),
                source,
            };
            let conn = open_to_read(path).map_err(opened)?;
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(opened)?;
            if version != SCHEMA_VERSION {
                return Err(PortError::Refused(format!(
                    "{label} has schema version {version} and this binary reads {SCHEMA_VERSION}: \
                     export it with the galactic-war that serves it{}",
                    if version < SCHEMA_VERSION {
                        " (or start this version's daemon on it once, which migrates it)"
                    } else {
                        ""
                    }
                )));
            }
            Ok(Box::new(SqliteReader::on_connection(conn, label)))
        }
    }
}
