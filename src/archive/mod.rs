//! Galaxy archives: a galaxy's whole state as one compact, checksummed, versioned byte
//! string (README, *Archives and moving a deployment*), for export files and, later, for
//! archives kept in the database.
//!
//! Two wrappings of one body. [`encode`] gives the body: a small header (format version,
//! system count, uncompressed length, CRC-32) and the zstd-compressed columns of
//! `columns.rs`. [`to_file`] puts a magic and the format version in front, so a file is
//! recognised, and a newer one refused, before its body is touched. [`decode`] and
//! [`from_file`] never panic and never allocate beyond what the header's system count
//! (at most [`MAX_SYSTEMS`]) allows, whatever bytes they are given: every damaged archive is
//! an [`ArchiveError`].
//!
//! Pure: no I/O, no clocks. It names only the model.

mod columns;
mod crc;
mod history;

use std::io::Read as _;

use crate::model::{ConfigError, Galaxy, GalaxyConfig, MAX_SYSTEMS};
use crc::Crc32;
pub use history::{decode_history, encode_history, MAX_HISTORY_ENTRIES, SEGMENT_ENTRIES};

/// The format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// The first bytes of an archive file.
pub const MAGIC: &[u8; 8] = b"GWARCHV\0";

/// zstd's level for the body. On the played galaxy of `cargo bench -- --only 14` (100 000
/// systems) level 3 gives 9.2 B per system in 16 ms, level 9 9.0 B in 67 ms, level 19
/// 8.7 B in 750 ms: the columns, not the level, do the work, and archiving stays quick.
const LEVEL: i32 = 3;

/// The largest zstd window a body may ask of the decoder (2^24 bytes): more than any level
/// up to 19 uses, far less than a hostile frame could otherwise claim.
const WINDOW_LOG_MAX: u32 = 24;

/// The body's header: version (2), system count (4), uncompressed length (4), CRC-32 (4).
const HEADER_LEN: usize = 14;

/// Why bytes are not a galaxy's archive. Nothing is decoded from a refused archive.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a galaxy archive: the file does not start with the archive magic")]
    NotAnArchive,
    #[error(
        "the archive is of format version {found}, newer than this build of galactic-war \
         reads (format version {supported}): upgrade galactic-war to read it"
    )]
    NewerVersion { found: u16, supported: u16 },
    #[error("the archive claims format version {0}, which never existed: it is corrupt")]
    UnknownVersion(u16),
    #[error("the archive is truncated: {len} bytes, fewer than its header's {needed}")]
    Truncated { len: usize, needed: usize },
    #[error("the archive is corrupt: it declares {0} systems, above the limit of {MAX_SYSTEMS}")]
    TooManySystems(u64),
    #[error("the archive is corrupt: its compressed body does not decompress ({0})")]
    Decompress(String),
    #[error("the archive is corrupt: its body is {found} bytes, its header says {declared}")]
    Length { found: u64, declared: u64 },
    #[error("the archive is corrupt: checksum {found:08x}, its header says {declared:08x}")]
    Checksum { found: u32, declared: u32 },
    #[error("the archive is corrupt: {0}")]
    Malformed(String),
    #[error("the archived galaxy's config is refused: {0}")]
    Config(ConfigError),
    #[error("the archived galaxy is inconsistent: {0}")]
    Inconsistent(String),
}

/// The archive body of `galaxy`: its name, config, tick and every system's stored state
/// (not its unsaved-changes record, which a decoded galaxy starts without).
pub fn encode(galaxy: &Galaxy) -> Vec<u8> {
    let systems = galaxy.systems();
    let mut payload = Vec::with_capacity(64 + systems.len() * 24);
    columns::write(
        &mut payload,
        galaxy.name(),
        &galaxy.config().to_toml(),
        galaxy.tick(),
        systems,
    );
    // A galaxy holds at most MAX_SYSTEMS systems (creation and every load refuse more), so
    // the count fits in a u32.
    seal(u32::try_from(systems.len()).unwrap_or(u32::MAX), &payload)
}

/// The body of `count` systems whose uncompressed columns are `payload`: the header, then
/// the columns compressed.
fn seal(count: u32, payload: &[u8]) -> Vec<u8> {
    // At most MAX_SYSTEM_BYTES per system plus the texts: under 4 GiB.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; HEADER_LEN];
    header[0..2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[2..6].copy_from_slice(&count.to_le_bytes());
    header[6..10].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&header[..10], payload);
    header[10..14].copy_from_slice(&crc.to_le_bytes());
    let mut out = header.to_vec();
    // Compressing a slice into a vector has no I/O to fail; if the library ever refused,
    // the empty body would fail to decode (a length mismatch) rather than pass as valid.
    let compressed = zstd::bulk::compress(payload, LEVEL).unwrap_or_default();
    out.extend_from_slice(&compressed);
    out
}

/// The galaxy in an archive body, after its version, checksum and every value are checked.
pub fn decode(bytes: &[u8]) -> Result<Galaxy, ArchiveError> {
    let header = bytes.get(..HEADER_LEN).ok_or(ArchiveError::Truncated {
        len: bytes.len(),
        needed: HEADER_LEN,
    })?;
    let field = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    check_version(u16::from_le_bytes([header[0], header[1]]))?;
    let count = field(2);
    if u64::from(count) > MAX_SYSTEMS {
        return Err(ArchiveError::TooManySystems(u64::from(count)));
    }
    let declared = field(6);
    let (declared_crc, count) = (field(10), count as usize);
    let cap = count
        .saturating_mul(columns::MAX_SYSTEM_BYTES)
        .saturating_add(columns::MAX_NAME_BYTES + columns::MAX_CONFIG_BYTES + 64);
    if declared as usize > cap {
        return Err(ArchiveError::Malformed(format!(
            "a body of {declared} bytes for {count} systems"
        )));
    }
    let payload = decompress(&bytes[HEADER_LEN..], declared)?;
    let crc = checksum(&header[..10], &payload);
    if crc != declared_crc {
        return Err(ArchiveError::Checksum {
            found: crc,
            declared: declared_crc,
        });
    }
    let parts = columns::read(&payload, count).map_err(ArchiveError::Malformed)?;
    let (config, _) = GalaxyConfig::from_toml(parts.config).map_err(ArchiveError::Config)?;
    Galaxy::from_parts(parts.name, config, parts.tick, parts.systems)
        .map_err(|e| ArchiveError::Inconsistent(e.to_string()))
}

/// An archive file of `galaxy`: [`MAGIC`], the format version (2 bytes, little-endian),
/// then the body [`encode`] gives.
pub fn to_file(galaxy: &Galaxy) -> Vec<u8> {
    let body = encode(galaxy);
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The galaxy in an archive file; a file of a newer format version is refused naming both
/// versions, before its body is read.
pub fn from_file(bytes: &[u8]) -> Result<Galaxy, ArchiveError> {
    let prefix = MAGIC.len() + 2;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(ArchiveError::NotAnArchive);
    }
    let version = bytes
        .get(MAGIC.len()..prefix)
        .ok_or(ArchiveError::Truncated {
            len: bytes.len(),
            needed: prefix,
        })?;
    let version = u16::from_le_bytes([version[0], version[1]]);
    check_version(version)?;
    let body = &bytes[prefix..];
    // The body repeats the version under its checksum; the two must agree.
    if body.len() >= 2 && body[..2] != version.to_le_bytes() {
        return Err(ArchiveError::Malformed(format!(
            "the file says format version {version}, its body {}",
            u16::from_le_bytes([body[0], body[1]])
        )));
    }
    decode(body)
}

fn check_version(version: u16) -> Result<(), ArchiveError> {
    match version {
        0 => Err(ArchiveError::UnknownVersion(0)),
        v if v > FORMAT_VERSION => Err(ArchiveError::NewerVersion {
            found: v,
            supported: FORMAT_VERSION,
        }),
        _ => Ok(()),
    }
}

/// The CRC-32 of the header's first fields and the uncompressed body.
fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(header);
    crc.update(payload);
    crc.finish()
}

/// The body decompressed, exactly `declared` bytes or an error. Reads at most one byte past
/// `declared`, and the buffer grows only as bytes actually come out of the decompressor.
fn decompress(compressed: &[u8], declared: u32) -> Result<Vec<u8>, ArchiveError> {
    let fail = |e: std::io::Error| ArchiveError::Decompress(e.to_string());
    let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(fail)?;
    decoder.window_log_max(WINDOW_LOG_MAX).map_err(fail)?;
    let mut payload =
        Vec::with_capacity((declared as usize).min(compressed.len().saturating_mul(32)));
    decoder
        .take(u64::from(declared) + 1)
        .read_to_end(&mut payload)
        .map_err(fail)?;
    if payload.len() as u64 != u64::from(declared) {
        return Err(ArchiveError::Length {
            found: payload.len() as u64,
            declared: u64::from(declared),
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests;
