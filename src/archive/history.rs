//! A run of history entries as bytes and back (one saved segment of a galaxy's history,
//! README, *History*): columns of LEB128 varints — ticks and coordinates as zigzag
//! differences from the entry before, one byte of kind and structure, the level — then
//! zstd when that is smaller. The first byte says which (0: plain, 1: zstd).
//!
//! [`decode_history`] never panics and never allocates beyond what the input's checked
//! count allows, whatever bytes it is given.

use super::columns::{put, shifted, unzigzag, zigzag, Reader};
use super::{ArchiveError, WINDOW_LOG_MAX};
use crate::model::{HistoryEntry, HistoryKind, StructureKind};

/// The most entries one segment may hold; writers cut a galaxy's entries into segments of
/// far fewer ([`SEGMENT_ENTRIES`]), so this only bounds what a damaged one costs to read.
pub const MAX_HISTORY_ENTRIES: u64 = 1_000_000;

/// The entries a writer puts in one segment at most.
pub const SEGMENT_ENTRIES: usize = 100_000;

/// The most bytes one entry takes uncompressed: a kind byte, a tick's, coordinates' and a
/// level's varints.
const MAX_ENTRY_BYTES: usize = 1 + 10 * 3 + 5;

/// zstd's level for segments: the fastest. A segment is written by the writer beside every
/// batch, on the machine the game runs on; level 3 saves about a tenth of the bytes for
/// about twice the time.
const LEVEL: i32 = 1;

const PLAIN: u8 = 0;
const ZSTD: u8 = 1;

/// The kind byte's bits: a completion, and one that follows the entry before it (its
/// order: same system, structure and level), whose columns it then leaves out.
const COMPLETED: u8 = 0x80;
const FOLLOWS: u8 = 0x40;

/// `entries` (in the order they happened) as one segment's bytes. An order is followed by
/// its own completion (same system, structure and level, ahead of it in time), so such a
/// completion is written as its kind byte and its tick alone. Ticks are differences from
/// the last order's tick (a completion's tick lies ahead, and would make the next
/// difference large), coordinates from the last entry written in full.
pub fn encode_history(entries: &[HistoryEntry]) -> Vec<u8> {
    let mut columns = Vec::with_capacity(8 + entries.len() * 5);
    put(&mut columns, entries.len() as u64);
    let follows = |at: usize| {
        let entry = &entries[at];
        at > 0 && entry.kind == HistoryKind::Completed && {
            let before = &entries[at - 1];
            (before.x, before.y, before.structure, before.level)
                == (entry.x, entry.y, entry.structure, entry.level)
        }
    };
    for (at, entry) in entries.iter().enumerate() {
        let mut kind = entry.structure.index() as u8;
        if entry.kind == HistoryKind::Completed {
            kind |= COMPLETED;
        }
        if follows(at) {
            kind |= FOLLOWS;
        }
        columns.push(kind);
    }
    let mut order_tick = 0u64;
    for entry in entries {
        let delta = i128::from(entry.tick) - i128::from(order_tick);
        put(&mut columns, zigzag(delta));
        if entry.kind == HistoryKind::Ordered {
            order_tick = entry.tick;
        }
    }
    let (mut x, mut y) = (0u32, 0u32);
    for (at, entry) in entries.iter().enumerate() {
        if !follows(at) {
            put(&mut columns, zigzag(i128::from(entry.x) - i128::from(x)));
            put(&mut columns, zigzag(i128::from(entry.y) - i128::from(y)));
            put(&mut columns, u64::from(entry.level));
            (x, y) = (entry.x, entry.y);
        }
    }
    // Compressing a slice into a vector has no I/O to fail; a refusal keeps it plain.
    let compressed = zstd::bulk::compress(&columns, LEVEL).unwrap_or_default();
    let mut out = Vec::with_capacity(1 + columns.len().min(compressed.len()));
    if !compressed.is_empty() && compressed.len() < columns.len() {
        out.push(ZSTD);
        out.extend_from_slice(&compressed);
    } else {
        out.push(PLAIN);
        out.extend_from_slice(&columns);
    }
    out
}

/// The entries of one segment, every value checked.
pub fn decode_history(bytes: &[u8]) -> Result<Vec<HistoryEntry>, ArchiveError> {
    let malformed = ArchiveError::Malformed;
    let (&form, rest) = bytes
        .split_first()
        .ok_or(ArchiveError::Truncated { len: 0, needed: 1 })?;
    let columns = match form {
        PLAIN => rest.to_vec(),
        ZSTD => decompress(rest)?,
        other => return Err(malformed(format!("a history segment of form {other}"))),
    };
    let mut r = Reader::new(&columns);
    let count = r.varint().map_err(malformed)?;
    // Each entry takes at least 2 bytes: a count beyond them is a lie, refused before
    // anything is allocated for it.
    if count > MAX_HISTORY_ENTRIES || count as usize > r.left() / 2 {
        return Err(malformed(format!(
            "{count} history entries in {} bytes",
            r.left()
        )));
    }
    let count = count as usize;
    let mut entries = Vec::with_capacity(count);
    // Whether each entry follows the one before it (its columns left out).
    let mut following = Vec::with_capacity(count);
    for at in 0..count {
        let kind = r.byte().map_err(malformed)?;
        let structure = StructureKind::ALL
            .get(usize::from(kind & 0x3F))
            .copied()
            .ok_or_else(|| malformed(format!("structure {} unknown", kind & 0x3F)))?;
        let completed = kind & COMPLETED != 0;
        let follows = kind & FOLLOWS != 0;
        if follows && (at == 0 || !completed) {
            return Err(malformed(
                "a following entry that follows nothing".to_owned(),
            ));
        }
        following.push(follows);
        entries.push(HistoryEntry {
            tick: 0,
            x: 0,
            y: 0,
            kind: match completed {
                true => HistoryKind::Completed,
                false => HistoryKind::Ordered,
            },
            structure,
            level: 0,
        });
    }
    let mut order_tick = 0u64;
    for entry in &mut entries {
        let delta = unzigzag(r.varint().map_err(malformed)?);
        entry.tick = shifted(order_tick, delta, "a tick").map_err(malformed)?;
        if entry.kind == HistoryKind::Ordered {
            order_tick = entry.tick;
        }
    }
    let (mut x, mut y) = (0u64, 0u64);
    let coordinate = |base: u64, delta: i128| {
        shifted(base, delta, "a coordinate")
            .and_then(|v| u32::try_from(v).map_err(|_| format!("a coordinate {v} out of range")))
    };
    for at in 0..count {
        if following[at] {
            // Its order's system, structure and level.
            let before = entries[at - 1];
            if before.structure != entries[at].structure {
                return Err(malformed("a completion unlike its order".to_owned()));
            }
            let entry = &mut entries[at];
            (entry.x, entry.y, entry.level) = (before.x, before.y, before.level);
            continue;
        }
        let nx = coordinate(x, unzigzag(r.varint().map_err(malformed)?)).map_err(malformed)?;
        let ny = coordinate(y, unzigzag(r.varint().map_err(malformed)?)).map_err(malformed)?;
        let level = r.varint().map_err(malformed)?;
        let level = u32::try_from(level).map_err(|_| malformed(format!("level {level}")))?;
        (x, y) = (u64::from(nx), u64::from(ny));
        let entry = &mut entries[at];
        (entry.x, entry.y, entry.level) = (nx, ny, level);
    }
    if r.left() != 0 {
        return Err(malformed(format!("{} bytes after the history", r.left())));
    }
    Ok(entries)
}

/// A zstd segment decompressed, within what its largest count could need.
fn decompress(compressed: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    use std::io::Read as _;
    let fail = |e: std::io::Error| ArchiveError::Decompress(e.to_string());
    let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(fail)?;
    decoder.window_log_max(WINDOW_LOG_MAX).map_err(fail)?;
    let cap = MAX_HISTORY_ENTRIES as usize * MAX_ENTRY_BYTES + 16;
    let mut columns = Vec::with_capacity(compressed.len().saturating_mul(8).min(cap));
    decoder
        .take(cap as u64)
        .read_to_end(&mut columns)
        .map_err(fail)?;
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::SplitMix64;

    fn random_entries(seed: u64, n: usize) -> Vec<HistoryEntry> {
        let mut rng = SplitMix64::new(seed);
        let mut tick = rng.inclusive(1 << 40);
        (0..n)
            .map(|_| {
                tick += rng.inclusive(3);
                let ordered = rng.inclusive(1) == 0;
                HistoryEntry {
                    tick: if ordered {
                        tick
                    } else {
                        tick + rng.inclusive(5_000)
                    },
                    x: rng.inclusive(u64::from(u32::MAX)) as u32,
                    y: rng.inclusive(100) as u32,
                    kind: if ordered {
                        HistoryKind::Ordered
                    } else {
                        HistoryKind::Completed
                    },
                    structure: StructureKind::ALL[rng.inclusive(4) as usize],
                    level: rng.inclusive(40) as u32,
                }
            })
            .collect()
    }

    #[test]
    fn segments_round_trip_plain_and_compressed() {
        for (seed, n) in [(1, 0), (2, 1), (3, 7), (4, 5_000)] {
            let entries = random_entries(seed, n);
            let bytes = encode_history(&entries);
            assert_eq!(decode_history(&bytes).unwrap(), entries, "{n} entries");
        }
        let many = random_entries(5, 5_000);
        assert_eq!(encode_history(&many)[0], ZSTD, "a long run is compressed");
        assert_eq!(encode_history(&many[..1])[0], PLAIN, "one entry is not");
    }

    /// Orders at random spots of a 100 × 100 map, each with its completion: the bytes a
    /// segment takes per order, by batch size (printed; `cargo test -- --nocapture`).
    #[test]
    fn orders_and_their_completions_pack_tightly() {
        let mut rng = SplitMix64::new(3);
        for orders in [1usize, 10, 100, 1000, 10_000] {
            let (mut tick, mut entries) = (1_700_000_000u64, Vec::new());
            for _ in 0..orders {
                tick += rng.inclusive(2);
                let (x, y) = (rng.inclusive(100) as u32, rng.inclusive(100) as u32);
                let structure = StructureKind::ALL[rng.inclusive(4) as usize];
                let level = 1 + rng.inclusive(10) as u32;
                for (kind, at) in [
                    (HistoryKind::Ordered, tick),
                    (HistoryKind::Completed, tick + 100),
                ] {
                    entries.push(HistoryEntry {
                        tick: at,
                        x,
                        y,
                        kind,
                        structure,
                        level,
                    });
                }
            }
            let bytes = encode_history(&entries);
            assert_eq!(decode_history(&bytes).unwrap(), entries);
            println!(
                "{orders} orders: {:.2} B per order",
                bytes.len() as f64 / orders as f64
            );
        }
    }

    #[test]
    fn damaged_segments_are_refused_never_a_panic() {
        let bytes = encode_history(&random_entries(6, 300));
        for len in 0..bytes.len() {
            let _ = decode_history(&bytes[..len]);
        }
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                let _ = decode_history(&damaged);
            }
        }
        // A count far beyond the bytes is refused before anything is allocated for it.
        let mut lie = vec![PLAIN];
        put(&mut lie, MAX_HISTORY_ENTRIES);
        assert!(decode_history(&lie).is_err());
    }
}
