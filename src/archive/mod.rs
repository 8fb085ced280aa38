//! STAND-IN for helper "format"'s archive API, only so that branch h-port compiles and its
//! tests run before it is merged; removed before `git merge main`. Uncompressed, unchecked.
#![allow(dead_code, clippy::all)]

use crate::model::{Build, Galaxy, GalaxyConfig, Resources, System};

pub const FORMAT_VERSION: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not an archive file")]
    NotAnArchive,
    #[error("archive format version {0}, newer than this binary's {FORMAT_VERSION}")]
    NewerVersion(u16),
    #[error("damaged: {0}")]
    Damaged(String),
}

pub fn encode(galaxy: &Galaxy) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(&format!("{}\n{}\n", galaxy.name(), galaxy.tick()));
    for s in galaxy.systems() {
        let b = s
            .build
            .map(|b| format!("{} {}", b.completion_tick, b.structure.as_str()))
            .unwrap_or("- -".into());
        out.push_str(&format!(
            "{} {} {} {} {} {} {} {} {} {} {} {}\n",
            s.x,
            s.y,
            s.resources.metal,
            s.resources.crew,
            s.resources.water,
            s.tick,
            s.levels[0],
            s.levels[1],
            s.levels[2],
            s.levels[3],
            s.levels[4],
            b
        ));
    }
    out.push_str("===\n");
    out.push_str(&galaxy.config().to_toml());
    out.into_bytes()
}

pub fn decode(bytes: &[u8]) -> Result<Galaxy, ArchiveError> {
    let d = |s: &str| ArchiveError::Damaged(s.to_owned());
    let text = std::str::from_utf8(bytes).map_err(|_| d("utf8"))?;
    let (head, toml) = text.split_once("===\n").ok_or(d("sep"))?;
    let mut lines = head.lines();
    let name = lines.next().ok_or(d("name"))?;
    let tick: u64 = lines
        .next()
        .ok_or(d("tick"))?
        .parse()
        .map_err(|_| d("tick"))?;
    let mut systems = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 13 {
            return Err(d("fields"));
        }
        let n = |i: usize| f[i].parse::<u64>().map_err(|_| d("num"));
        let build = if f[11] == "-" {
            None
        } else {
            Some(Build {
                completion_tick: n(11)?,
                structure: f[12].parse().map_err(|_| d("kind"))?,
            })
        };
        systems.push(System {
            x: n(0)? as u32,
            y: n(1)? as u32,
            resources: Resources {
                metal: n(2)?,
                crew: n(3)?,
                water: n(4)?,
            },
            tick: n(5)?,
            levels: [
                n(6)? as u32,
                n(7)? as u32,
                n(8)? as u32,
                n(9)? as u32,
                n(10)? as u32,
            ],
            build,
        });
    }
    let (config, _) = GalaxyConfig::from_toml(toml).map_err(|e| d(&e.to_string()))?;
    Galaxy::from_parts(name, config, tick, systems).map_err(|e| d(&e.to_string()))
}

pub fn to_file(galaxy: &Galaxy) -> Vec<u8> {
    let mut out = b"GWAR".to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend(encode(galaxy));
    out
}

pub fn from_file(bytes: &[u8]) -> Result<Galaxy, ArchiveError> {
    if bytes.len() < 6 || &bytes[..4] != b"GWAR" {
        return Err(ArchiveError::NotAnArchive);
    }
    let v = u16::from_le_bytes([bytes[4], bytes[5]]);
    if v > FORMAT_VERSION {
        return Err(ArchiveError::NewerVersion(v));
    }
    decode(&bytes[6..])
}
