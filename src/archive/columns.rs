//! The archive's uncompressed body, format version 1: a galaxy as columns of varints.
//!
//! Layout (every integer an unsigned LEB128 varint unless said otherwise; `n` systems in
//! `(x, y)` order):
//! - the name and the config's TOML text, each as a length and UTF-8 bytes; the galaxy's tick;
//! - `n` x steps (`x[i] − x[i−1]`, the first from 0), then `n` y values (`y[i] − y[i−1] − 1`
//!   where the x step is 0, else `y[i]`);
//! - `n` metal, `n` crew, `n` water (resources as of each system's tick);
//! - `n` system ticks, each as the zigzag of `galaxy tick − system tick`;
//! - five columns of `n` structure levels, in [`StructureKind::ALL`] order;
//! - the builds in flight, sparse: their count `b`, then `b` index gaps (the system's index
//!   minus the previous build's index minus one, the first from −1), `b` structure indexes,
//!   `b` zigzags of `completion tick − system tick`.
//!
//! One column at a time puts like next to like, so zstd finds the runs: the equal ticks of
//! systems no order touched, the starting levels, the small coordinate steps.
//!
//! Reading never trusts a length: each is checked against the bytes left (and a count of
//! systems against the fewest bytes that many systems take) before anything is allocated.

use crate::model::{Build, Resources, StructureKind, System, MAX_QUANTITY};

/// The longest galaxy name an archive holds (bytes).
pub(super) const MAX_NAME_BYTES: usize = 64 * 1024;
/// The longest config text an archive holds (bytes).
pub(super) const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;
/// The most bytes one system takes in the body: two coordinates (5 each), three
/// resources and a tick (10 each), five levels (5 each), a build (5 + 10 + 10).
pub(super) const MAX_SYSTEM_BYTES: usize = 5 + 5 + 4 * 10 + 5 * 5 + 25;
/// The fewest: one byte for each of the eleven columns every system has.
const MIN_SYSTEM_BYTES: usize = 11;

/// A galaxy's parts, as the body stores them.
#[derive(Debug)]
pub(super) struct Parts<'a> {
    pub(super) name: &'a str,
    /// The config's TOML text, as the stores keep it.
    pub(super) config: &'a str,
    pub(super) tick: u64,
    pub(super) systems: Vec<System>,
}

/// Appends the body of a galaxy's parts to `out`.
pub(super) fn write(
    out: &mut Vec<u8>,
    name: &str,
    config_text: &str,
    tick: u64,
    systems: &[System],
) {
    put_bytes(out, name.as_bytes());
    put_bytes(out, config_text.as_bytes());
    put(out, tick);
    let mut previous = (0u32, 0u32);
    for s in systems {
        put(out, u64::from(s.x.wrapping_sub(previous.0)));
        previous.0 = s.x;
    }
    previous = (0, 0);
    for (i, s) in systems.iter().enumerate() {
        let y = if i > 0 && s.x == previous.0 {
            s.y.wrapping_sub(previous.1).wrapping_sub(1)
        } else {
            s.y
        };
        put(out, u64::from(y));
        previous = (s.x, s.y);
    }
    for column in [
        |s: &System| s.resources.metal,
        |s: &System| s.resources.crew,
        |s: &System| s.resources.water,
    ] {
        for s in systems {
            put(out, column(s));
        }
    }
    for s in systems {
        put(out, zigzag(i128::from(tick) - i128::from(s.tick)));
    }
    for kind in StructureKind::ALL {
        for s in systems {
            put(out, u64::from(s.levels[kind.index()]));
        }
    }
    write_builds(out, systems);
}

fn write_builds(out: &mut Vec<u8>, systems: &[System]) {
    let builds: Vec<(usize, &System, Build)> = systems
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.build.map(|b| (i, s, b)))
        .collect();
    put(out, builds.len() as u64);
    let mut next = 0usize;
    for &(i, _, _) in &builds {
        put(out, (i - next) as u64);
        next = i + 1;
    }
    for &(_, _, build) in &builds {
        put(out, build.structure.index() as u64);
    }
    for &(_, s, build) in &builds {
        put(
            out,
            zigzag(i128::from(build.completion_tick) - i128::from(s.tick)),
        );
    }
}

/// Reads the body of `count` systems; `Err` names what is wrong with it.
pub(super) fn read(body: &[u8], count: usize) -> Result<Parts<'_>, String> {
    let mut r = Reader::new(body);
    let name = r.text(MAX_NAME_BYTES, "name")?;
    let config = r.text(MAX_CONFIG_BYTES, "config")?;
    let tick = r.quantity("galaxy tick")?;
    if count.saturating_mul(MIN_SYSTEM_BYTES) > r.left() {
        return Err(format!(
            "{count} systems cannot fit in the {} bytes left",
            r.left()
        ));
    }
    let blank = System {
        x: 0,
        y: 0,
        resources: Resources::ZERO,
        tick: 0,
        levels: [0; 5],
        build: None,
    };
    let mut systems = vec![blank; count];
    let mut x = 0u64;
    for s in systems.iter_mut() {
        x = x.saturating_add(r.varint()?);
        s.x = u32::try_from(x).map_err(|_| format!("x coordinate {x} out of range"))?;
    }
    let mut previous: Option<(u32, u32)> = None;
    for s in systems.iter_mut() {
        let value = r.varint()?;
        let y = match previous {
            Some((px, py)) if px == s.x => value
                .checked_add(u64::from(py))
                .and_then(|y| y.checked_add(1)),
            _ => Some(value),
        };
        s.y = y
            .and_then(|y| u32::try_from(y).ok())
            .ok_or_else(|| format!("y coordinate of ({}, …) out of range", s.x))?;
        previous = Some((s.x, s.y));
    }
    for s in systems.iter_mut() {
        s.resources.metal = r.quantity("metal")?;
    }
    for s in systems.iter_mut() {
        s.resources.crew = r.quantity("crew")?;
    }
    for s in systems.iter_mut() {
        s.resources.water = r.quantity("water")?;
    }
    for s in systems.iter_mut() {
        s.tick = shifted(tick, -unzigzag(r.varint()?), "system tick")?;
    }
    for kind in StructureKind::ALL {
        for s in systems.iter_mut() {
            let level = r.varint()?;
            s.levels[kind.index()] =
                u32::try_from(level).map_err(|_| format!("{kind} level {level} out of range"))?;
        }
    }
    read_builds(&mut r, &mut systems)?;
    if r.left() != 0 {
        return Err(format!("{} bytes after the last column", r.left()));
    }
    Ok(Parts {
        name,
        config,
        tick,
        systems,
    })
}

fn read_builds(r: &mut Reader<'_>, systems: &mut [System]) -> Result<(), String> {
    let count = r.varint()?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= systems.len() && c.saturating_mul(3) <= r.left())
        .ok_or_else(|| format!("{count} builds in flight cannot fit"))?;
    let mut indexes = Vec::with_capacity(count);
    let mut next = 0u64;
    for _ in 0..count {
        let index = next.saturating_add(r.varint()?);
        if index >= systems.len() as u64 {
            return Err(format!(
                "a build in flight in system {index} of {}",
                systems.len()
            ));
        }
        indexes.push(index as usize);
        next = index + 1;
    }
    let mut kinds = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = r.varint()?;
        let kind = usize::try_from(kind)
            .ok()
            .and_then(|k| StructureKind::ALL.get(k).copied())
            .ok_or_else(|| format!("a build of unknown structure {kind}"))?;
        kinds.push(kind);
    }
    for (index, structure) in indexes.into_iter().zip(kinds) {
        let system = &mut systems[index];
        let completion_tick = shifted(system.tick, unzigzag(r.varint()?), "completion tick")?;
        system.build = Some(Build {
            completion_tick,
            structure,
        });
    }
    Ok(())
}

/// Appends `value` as an unsigned LEB128 varint.
#[inline]
pub(super) fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A signed difference as an unsigned number, small either side of zero. Differences of
/// two quantities (≤ `i64::MAX`) fit in an `i64`.
pub(super) fn zigzag(value: i128) -> u64 {
    let value = value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    ((value << 1) ^ (value >> 63)) as u64
}

pub(super) fn unzigzag(value: u64) -> i128 {
    i128::from(((value >> 1) as i64) ^ -((value & 1) as i64))
}

/// `base + delta`, refused unless it is a quantity.
pub(super) fn shifted(base: u64, delta: i128, what: &str) -> Result<u64, String> {
    let value = i128::from(base) + delta;
    u64::try_from(value)
        .ok()
        .filter(|&v| v <= MAX_QUANTITY)
        .ok_or_else(|| format!("{what} {value} out of range"))
}

/// A cursor over the body that checks every read against the bytes left.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub(super) fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(super) fn byte(&mut self) -> Result<u8, String> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| "the body ends early".to_owned())?;
        self.at += 1;
        Ok(byte)
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err("the body ends inside a number".to_owned());
            };
            self.at += 1;
            let bits = u64::from(byte & 0x7F);
            if shift == 63 && bits > 1 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number is longer than 64 bits".to_owned())
    }

    fn quantity(&mut self, what: &str) -> Result<u64, String> {
        let value = self.varint()?;
        if value > MAX_QUANTITY {
            return Err(format!("{what} {value} out of range"));
        }
        Ok(value)
    }

    fn text(&mut self, max: usize, what: &str) -> Result<&'a str, String> {
        let len = self.varint()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= max && l <= self.left())
            .ok_or_else(|| format!("{what} of {len} bytes cannot fit"))?;
        let bytes = &self.bytes[self.at..self.at + len];
        self.at += len;
        std::str::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"))
    }
}
