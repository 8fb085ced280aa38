//! The archive's unit tests: round trips of created and played galaxies, and damaged,
//! truncated, crafted and newer archives refused without a panic.

use super::*;
use crate::model::{Build, StructureKind, MAX_QUANTITY, MAX_TICK};

/// A galaxy config of `systems` systems on an `x` × `y` map with every structure, cheap
/// builds of `build_time` ticks.
fn every_structure(systems: u64, x: u64, y: u64, build_time: u64) -> GalaxyConfig {
    let mut text = format!(
        "system_count = {systems}\n[size]\nx = {x}\ny = {y}\n\
         [systems.resources]\nmetal = 5000\ncrew = 5000\nwater = 5000\n"
    );
    for kind in StructureKind::ALL {
        text += &format!(
            "[systems.structures.{kind}]\nstarting_level = 1\nmultiplier = 1.5\n\
             [systems.structures.{kind}.production]\nmetal = 3600\ncrew = 1800\nwater = 900\n\
             [systems.structures.{kind}.storage]\nmetal = 100000\ncrew = 100000\nwater = 100000\n\
             [systems.structures.{kind}.cost]\nmetal = 100\ncrew = 50\nwater = 20\ntime = {build_time}\n"
        );
    }
    GalaxyConfig::from_toml(&text).unwrap().0
}

fn preset(name: &str) -> GalaxyConfig {
    GalaxyConfig::preset(name).unwrap().0
}

/// A small xorshift: the tests' orders, reproducible.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A galaxy after `orders` random build orders spread over `ticks` ticks, changes taken.
fn played(name: &str, config: GalaxyConfig, seed: u64, orders: u64, ticks: u64) -> Galaxy {
    let mut galaxy = Galaxy::create(name, config, seed, 0).unwrap();
    let mut draws = Draws(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let count = galaxy.systems().len() as u64;
    for i in 0..orders {
        let tick = i * ticks / orders.max(1);
        let system = galaxy.systems()[(draws.next() % count) as usize];
        let kind = StructureKind::ALL[(draws.next() % 5) as usize];
        let _ = galaxy.build(tick, system.x.into(), system.y.into(), kind);
    }
    galaxy.take_changes();
    galaxy
}

fn round_trip(galaxy: &Galaxy) {
    let decoded = decode(&encode(galaxy)).unwrap();
    assert_eq!(&decoded, galaxy);
    let from = from_file(&to_file(galaxy)).unwrap();
    assert_eq!(&from, galaxy);
}

#[test]
fn created_galaxies_round_trip() {
    for (name, config) in [
        ("blitz", preset("blitz")),
        ("classic", preset("classic")),
        ("every", every_structure(500, 40, 40, 60)),
        ("full", every_structure(9, 2, 2, 1)),
        (
            "none",
            GalaxyConfig::from_toml("system_count = 0\n[size]\nx = 3\ny = 3\n[systems]\n")
                .unwrap()
                .0,
        ),
        (
            "bare",
            GalaxyConfig::from_toml("system_count = 5\n[size]\nx = 9\ny = 0\n[systems]\n")
                .unwrap()
                .0,
        ),
    ] {
        let mut galaxy = Galaxy::create(name, config, 11, 1234).unwrap();
        galaxy.take_changes();
        round_trip(&galaxy);
    }
}

#[test]
fn played_galaxies_round_trip() {
    for (config, orders, ticks) in [
        (preset("blitz"), 2_000, 86_400),
        (preset("classic"), 5_000, 86_400),
        (every_structure(2_000, 100, 100, 300), 20_000, 86_400),
        (every_structure(50, 10, 10, 5_000), 1_000, 100),
    ] {
        let galaxy = played("played-1", config, 5, orders, ticks);
        assert!(galaxy.systems().iter().any(|s| s.build.is_some()));
        round_trip(&galaxy);
    }
}

#[test]
fn extreme_values_round_trip() {
    let config = every_structure(4, 3, 0, 1);
    let mut galaxy = Galaxy::create("extremes", config.clone(), 1, 0).unwrap();
    galaxy.take_changes();
    let mut systems = galaxy.systems().to_vec();
    systems[0].resources.metal = MAX_QUANTITY;
    systems[0].tick = MAX_TICK;
    systems[1].levels = [u32::MAX, 0, 7, u32::MAX, 1];
    systems[1].build = Some(Build {
        completion_tick: MAX_TICK,
        structure: StructureKind::StorageDepot,
    });
    systems[2].tick = 0;
    systems[3].build = Some(Build {
        completion_tick: 0,
        structure: StructureKind::Colony,
    });
    systems[3].tick = MAX_TICK;
    let galaxy = Galaxy::from_parts("x", config, 17, systems).unwrap();
    round_trip(&galaxy);
}

/// A small played galaxy's file: the damage tests run over every byte of it.
fn small_file() -> (Galaxy, Vec<u8>) {
    let galaxy = played("tiny", every_structure(6, 4, 4, 30), 3, 40, 600);
    let file = to_file(&galaxy);
    (galaxy, file)
}

#[test]
fn every_single_byte_corruption_is_refused_or_harmless() {
    let (galaxy, file) = small_file();
    let mut decoded_equal = 0;
    for at in 0..file.len() {
        for flip in [0x01u8, 0x02, 0x10, 0x80, 0xFF, 0x5A] {
            let mut damaged = file.clone();
            damaged[at] ^= flip;
            match from_file(&damaged) {
                Ok(decoded) => {
                    assert_eq!(
                        decoded, galaxy,
                        "byte {at} ^ {flip:#x} decoded to another galaxy"
                    );
                    decoded_equal += 1;
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
    // zstd may ignore a few bits (reserved or unused header bits); nearly all are caught.
    assert!(
        decoded_equal < file.len(),
        "{decoded_equal} of {} decoded",
        file.len() * 6
    );
}

#[test]
fn every_value_of_some_bytes_is_refused_or_harmless() {
    let (galaxy, file) = small_file();
    let positions = [
        0,
        7,
        8,
        9,
        10,
        12,
        16,
        20,
        24,
        26,
        30,
        file.len() / 2,
        file.len() - 1,
    ];
    for at in positions {
        for value in 0..=255u8 {
            let mut damaged = file.clone();
            damaged[at] = value;
            if let Ok(decoded) = from_file(&damaged) {
                assert_eq!(
                    decoded, galaxy,
                    "byte {at} = {value} decoded to another galaxy"
                );
            }
        }
    }
}

#[test]
fn truncation_at_every_length_is_refused() {
    let (_, file) = small_file();
    for len in 0..file.len() {
        assert!(from_file(&file[..len]).is_err(), "{len} bytes accepted");
    }
    let body = &file[MAGIC.len() + 2..];
    for len in 0..body.len() {
        assert!(
            decode(&body[..len]).is_err(),
            "{len} bytes of body accepted"
        );
    }
}

#[test]
fn a_newer_version_is_refused_naming_both_versions() {
    let (_, file) = small_file();
    let mut newer = file.clone();
    newer[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&7u16.to_le_bytes());
    let err = from_file(&newer).unwrap_err();
    assert_eq!(
        err,
        ArchiveError::NewerVersion {
            found: 7,
            supported: FORMAT_VERSION
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("version 7") && message.contains("version 1"),
        "{message}"
    );
    // The version check comes before anything else: a newer body need not parse at all.
    let mut only_header = MAGIC.to_vec();
    only_header.extend_from_slice(&2u16.to_le_bytes());
    assert!(matches!(
        from_file(&only_header),
        Err(ArchiveError::NewerVersion { found: 2, .. })
    ));
    assert!(matches!(
        decode(&[9, 0]),
        Err(ArchiveError::Truncated { .. })
    ));
    let mut body = file[MAGIC.len() + 2..].to_vec();
    body[..2].copy_from_slice(&3u16.to_le_bytes());
    assert!(matches!(
        decode(&body),
        Err(ArchiveError::NewerVersion { found: 3, .. })
    ));
    assert_eq!(
        from_file(b"PK\x03\x04 a zip"),
        Err(ArchiveError::NotAnArchive)
    );
}

/// A body of `count` systems around a hand-written payload, sealed with a valid checksum:
/// only the decoder's own checks stand between it and a galaxy.
fn crafted(count: u32, payload: &[u8]) -> Result<Galaxy, ArchiveError> {
    decode(&seal(count, payload))
}

fn varint(out: &mut Vec<u8>, value: u64) {
    columns::put(out, value);
}

/// The start of a payload: name, config text, tick.
fn preamble(config: &str, tick: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, 1);
    out.push(b'g');
    varint(&mut out, config.len() as u64);
    out.extend_from_slice(config.as_bytes());
    varint(&mut out, tick);
    out
}

#[test]
fn crafted_bodies_with_valid_checksums_are_refused() {
    let config = every_structure(2, 3, 3, 10).to_toml();
    let malformed = |count: u32, payload: &[u8]| {
        let err = crafted(count, payload).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Malformed(_) | ArchiveError::Inconsistent(_)
            ),
            "{err:?}"
        );
    };
    // Lengths beyond the bytes left, or absurd.
    malformed(0, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    let mut huge_name = Vec::new();
    varint(&mut huge_name, u64::MAX);
    malformed(0, &huge_name);
    // Many systems claimed by a short payload: refused before allocating them.
    malformed(MAX_SYSTEMS as u32, &preamble(&config, 0));
    // A number of eleven bytes.
    let mut long = preamble(&config, 0);
    long.extend_from_slice(&[0x80; 10]);
    long.push(0);
    malformed(1, &long);
    // A tick beyond the range, a level beyond u32, coordinates beyond u32.
    malformed(0, &preamble(&config, MAX_QUANTITY + 1));
    let two = |columns: &[u64]| {
        let mut out = preamble(&config, 100);
        for &value in columns {
            varint(&mut out, value);
        }
        out
    };
    // x steps, y, metal, crew, water, tick, 5 levels, builds (indexes 0, 2, … 12, 22).
    // Coordinates cannot be out of order: steps are unsigned.
    let fine = [
        0, 1, 0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
    ];
    assert!(crafted(2, &two(&fine)).is_ok());
    let mut x = fine;
    x[1] = u64::from(u32::MAX);
    malformed(2, &two(&x));
    let mut off_map = fine;
    off_map[1] = 4;
    malformed(2, &two(&off_map));
    let mut level = fine;
    level[12] = u64::from(u32::MAX) + 1;
    malformed(2, &two(&level));
    let mut tick = fine;
    tick[10] = zigzag_of(101); // 100 − 101
    malformed(2, &two(&tick));
    // Builds: more than systems, past the last system, of an unknown structure.
    let mut builds = fine.to_vec();
    builds[22] = 3;
    malformed(2, &two(&builds));
    builds[22] = 1;
    builds.extend([2, 0, 10]);
    malformed(2, &two(&builds));
    builds[23] = 1;
    builds[24] = 5;
    malformed(2, &two(&builds));
    builds[24] = 4;
    assert!(crafted(2, &two(&builds)).is_ok());
    // Bytes after the last column.
    builds.push(0);
    malformed(2, &two(&builds));
    // Not UTF-8, and a config that does not parse.
    malformed(0, &[1, 0xFF]);
    let mut bad_config = preamble("system_count = -1", 0);
    bad_config.push(0); // no builds
    let err = crafted(0, &bad_config).unwrap_err();
    assert!(matches!(err, ArchiveError::Config(_)), "{err:?}");
}

fn zigzag_of(value: i128) -> u64 {
    columns::zigzag(value)
}

#[test]
fn crafted_headers_are_refused_before_allocating() {
    let (_, file) = small_file();
    let body = &file[MAGIC.len() + 2..];
    // Too many systems.
    let mut many = body.to_vec();
    many[2..6].copy_from_slice(&(MAX_SYSTEMS as u32 + 1).to_le_bytes());
    assert!(matches!(
        decode(&many),
        Err(ArchiveError::TooManySystems(_))
    ));
    // A body far longer than that many systems can take.
    let mut long = body.to_vec();
    long[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode(&long), Err(ArchiveError::Malformed(_))));
    // A plausible declared length that the frame does not fill.
    let mut short = body.to_vec();
    let declared = u32::from_le_bytes([body[6], body[7], body[8], body[9]]);
    short[6..10].copy_from_slice(&(declared + 1000).to_le_bytes());
    assert!(matches!(decode(&short), Err(ArchiveError::Length { .. })));
    // A zstd bomb: a few bytes that decompress to far more than declared stop one past it.
    let zeros = vec![0u8; 50 << 20];
    let mut bomb = seal(1, &[0; 16]);
    bomb.truncate(HEADER_LEN);
    bomb.extend(zstd::bulk::compress(&zeros, 19).unwrap());
    assert!(matches!(
        decode(&bomb),
        Err(ArchiveError::Length {
            found: 17,
            declared: 16
        })
    ));
}
