//! `galactic-war export` and `galactic-war import`: galaxies to archive files and back,
//! the way to move a deployment from SQLite to PostgreSQL (or back) without SQL.
//!
//! This file is the commands' edge: their arguments, the database they name (`--database
//! URL`, else `DATABASE_URL`, as `check` and `backup`), what they print and their exit
//! statuses (0: all done; 1: something refused or failed, each said on stderr; 64: bad
//! arguments; 78: a bad database URL or setting). `export.rs` reads galaxies through the
//! stores' own load code and writes one file per galaxy ([`crate::archive::to_file`]);
//! `import.rs` writes archived galaxies through the stores' own creation path.
//!
//! Neither needs the daemon stopped to read; only an import into an SQLite file does
//! (it takes the daemon's lock on the file), and an import into PostgreSQL never writes
//! a galaxy a live daemon owns.

mod export;
mod import;

use std::path::PathBuf;

use crate::serve::{EX_CONFIG, EX_FAILURE, EX_OK, EX_USAGE};
use crate::settings::{DatabaseUrl, PersistenceSettings, Settings};
use crate::store::StoreError;

/// The extension of an archive file.
pub const EXTENSION: &str = "gwar";

const EXPORT_USAGE: &str =
    "export NAME... --out DIR [--database URL] | export --all --out DIR [--database URL]";
const IMPORT_USAGE: &str = "import FILE... [--replace] [--database URL]";

/// Why an export or an import stopped, or refused one galaxy.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Archive {
        path: PathBuf,
        source: crate::archive::ArchiveError,
    },
    #[error("{0}")]
    Refused(String),
}

impl PortError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PortError {
        let path = path.into();
        move |source| PortError::Io { path, source }
    }
}

/// Parsed arguments: the words that are not flags, the boolean flags seen, and the value
/// of each `--flag VALUE`.
struct Args<'a> {
    words: Vec<&'a str>,
    switches: Vec<&'a str>,
    values: Vec<(&'a str, &'a str)>,
}

impl<'a> Args<'a> {
    /// `None` (after printing `usage`) on an unknown flag or one without its value.
    fn parse(
        command: &str,
        usage: &str,
        args: &'a [String],
        switches: &[&str],
        valued: &[&str],
    ) -> Option<Args<'a>> {
        let mut parsed = Args {
            words: Vec::new(),
            switches: Vec::new(),
            values: Vec::new(),
        };
        let mut rest = args.iter().map(String::as_str);
        while let Some(arg) = rest.next() {
            if switches.contains(&arg) {
                parsed.switches.push(arg);
            } else if valued.contains(&arg) {
                let Some(value) = rest.next() else {
                    eprintln!("galactic-war {command}: {arg} needs a value; usage: {usage}");
                    return None;
                };
                parsed.values.push((arg, value));
            } else if arg.starts_with('-') && arg != "-" {
                eprintln!("galactic-war {command}: unknown option {arg:?}; usage: {usage}");
                return None;
            } else {
                parsed.words.push(arg);
            }
        }
        Some(parsed)
    }

    fn value(&self, flag: &str) -> Option<&'a str> {
        self.values
            .iter()
            .find(|(f, _)| *f == flag)
            .map(|(_, v)| *v)
    }

    fn switch(&self, flag: &str) -> bool {
        self.switches.contains(&flag)
    }
}

/// The database of `--database URL`, or of `DATABASE_URL`, with the persistence settings
/// of the environment (only `import` needs them: it writes as the daemon would); the
/// exit status on error.
fn database(
    command: &str,
    flag: Option<&str>,
    with_settings: bool,
) -> Result<(DatabaseUrl, PersistenceSettings), i32> {
    let failed = |message: String| {
        eprintln!("galactic-war {command}: {message}");
        EX_CONFIG
    };
    let settings = match (flag, with_settings) {
        (Some(_), false) => Settings::default(),
        _ => Settings::from_env().map_err(|e| failed(e.to_string()))?,
    };
    let url = match flag {
        Some(url) => DatabaseUrl::parse(url)
            .map_err(|reason| failed(format!("--database {url:?}: {reason}")))?,
        None => settings.database,
    };
    if matches!(url, DatabaseUrl::Memory) {
        eprintln!("galactic-war {command}: an in-memory database holds no galaxies to {command}");
        return Err(EX_USAGE);
    }
    Ok((url, settings.persistence))
}

/// `export NAME... --out DIR` or `export --all --out DIR`, with `[--database URL]`.
pub fn export_command(args: &[String]) -> i32 {
    let Some(args) = Args::parse(
        "export",
        EXPORT_USAGE,
        args,
        &["--all"],
        &["--out", "--database"],
    ) else {
        return EX_USAGE;
    };
    let Some(out) = args.value("--out") else {
        eprintln!("galactic-war export: --out DIR is required; usage: {EXPORT_USAGE}");
        return EX_USAGE;
    };
    let names = match (args.switch("--all"), args.words.is_empty()) {
        (true, true) => None,
        (false, false) => Some(args.words.iter().map(|w| (*w).to_owned()).collect()),
        _ => {
            eprintln!("galactic-war export: name galaxies or give --all (not both); usage: {EXPORT_USAGE}");
            return EX_USAGE;
        }
    };
    let (url, _) = match database("export", args.value("--database"), false) {
        Ok(found) => found,
        Err(status) => return status,
    };
    report("export", export::export(&url, names, &PathBuf::from(out)))
}

/// `import FILE... [--replace] [--database URL]`.
pub fn import_command(args: &[String]) -> i32 {
    let Some(args) = Args::parse(
        "import",
        IMPORT_USAGE,
        args,
        &["--replace"],
        &["--database"],
    ) else {
        return EX_USAGE;
    };
    if args.words.is_empty() {
        eprintln!("galactic-war import: no file named; usage: {IMPORT_USAGE}");
        return EX_USAGE;
    }
    let (url, settings) = match database("import", args.value("--database"), true) {
        Ok(found) => found,
        Err(status) => return status,
    };
    let files: Vec<PathBuf> = args.words.iter().map(PathBuf::from).collect();
    report(
        "import",
        import::import(&url, &settings, &files, args.switch("--replace")),
    )
}

/// The exit status of a command that printed what it did as it went (stdout): the
/// errors it met, on stderr.
fn report(command: &str, outcome: Result<(), Vec<PortError>>) -> i32 {
    match outcome {
        Ok(()) => EX_OK,
        Err(errors) => {
            for error in &errors {
                eprintln!("galactic-war {command}: {error}");
            }
            EX_FAILURE
        }
    }
}
