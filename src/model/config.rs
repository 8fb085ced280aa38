//! Galaxy configurations: the TOML shape of the README's *The game model in brief*, its presets, and validation.
//!
//! Parsing happens in two stages: [`GalaxyConfig`] is the raw TOML document (kept so it can
//! be stored and serialised back), [`Rules`] is the validated form the game runs on, with
//! every structure resolved to its kind and every multiplier checked. Only a config that
//! validates ever produces a galaxy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::structure::{level_value, Resources, StructureKind, MAX_QUANTITY};

/// The preset used when a galaxy is created without a config.
pub const DEFAULT_PRESET: &str = "blitz";

const BLITZ: &str = include_str!("presets/blitz.toml");
const CLASSIC: &str = include_str!("presets/classic.toml");

/// More systems than this in one galaxy is refused: each costs memory (~100 bytes) and a
/// creation this large would take minutes and gigabytes.
pub const MAX_SYSTEMS: u64 = 10_000_000;

/// Why a configuration was refused. Nothing is created from a refused config.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid galaxy config: {0}")]
    Parse(String),
    #[error("unknown preset '{0}' (expected blitz or classic)")]
    UnknownPreset(String),
    #[error("invalid galaxy config: {0}")]
    UnknownStructure(#[from] super::structure::UnknownStructureName),
    #[error(
        "invalid galaxy config: multiplier {path} = {value} must be finite and greater than 0"
    )]
    BadMultiplier { path: String, value: f64 },
    #[error("invalid galaxy config: {system_count} systems do not fit on a map of {cells} cells")]
    TooManySystems { system_count: u64, cells: u128 },
    #[error("invalid galaxy config: system_count {0} is above the limit of {MAX_SYSTEMS}")]
    AboveSystemLimit(u64),
    #[error("invalid galaxy config: size.{axis} = {value} is above the limit of {limit}")]
    MapTooLarge { axis: char, value: u64, limit: u32 },
}

/// A galaxy configuration exactly as written in TOML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GalaxyConfig {
    pub system_count: u64,
    pub size: MapSize,
    pub systems: SystemsConfig,
}

/// The map's extent: coordinates run over `0..=x` × `0..=y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSize {
    pub x: u64,
    pub y: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemsConfig {
    #[serde(default)]
    pub resources: Amounts,
    #[serde(default)]
    pub structures: BTreeMap<String, StructureConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructureConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub starting_level: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<Amounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Amounts>,
}

/// Starting resources, or a production or storage section (with its own optional multiplier).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    #[serde(default)]
    pub crew: u64,
    #[serde(default)]
    pub metal: u64,
    #[serde(default)]
    pub water: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    #[serde(default)]
    pub crew: u64,
    #[serde(default)]
    pub metal: u64,
    #[serde(default)]
    pub water: u64,
    #[serde(default)]
    pub time: u64,
}

impl GalaxyConfig {
    /// Parses and validates a TOML config; the config and its rules, or why not.
    pub fn from_toml(text: &str) -> Result<(GalaxyConfig, Rules), ConfigError> {
        let config: GalaxyConfig = toml::from_str(text).map_err(|e| {
            // Name the line: serde's message alone does not say which value it means.
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| before.matches('\n').count() + 1);
            ConfigError::Parse(match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_owned(),
            })
        })?;
        let rules = config.validate()?;
        Ok((config, rules))
    }

    /// One of the named presets (`blitz`, `classic`).
    pub fn preset(name: &str) -> Result<(GalaxyConfig, Rules), ConfigError> {
        match name {
            "blitz" => GalaxyConfig::from_toml(BLITZ),
            "classic" => GalaxyConfig::from_toml(CLASSIC),
            other => Err(ConfigError::UnknownPreset(other.to_owned())),
        }
    }

    /// The config as TOML text; parsing it back gives an equal config.
    pub fn to_toml(&self) -> String {
        // Serialising plain structs, maps, integers and finite floats cannot fail; the
        // fallback keeps this total anyway (an empty text fails validation if ever stored).
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks everything the game relies on and resolves the structures into [`Rules`].
    pub fn validate(&self) -> Result<Rules, ConfigError> {
        for (axis, value) in [('x', self.size.x), ('y', self.size.y)] {
            if value >= u64::from(u32::MAX) {
                return Err(ConfigError::MapTooLarge {
                    axis,
                    value,
                    limit: u32::MAX - 1,
                });
            }
        }
        if self.system_count > MAX_SYSTEMS {
            return Err(ConfigError::AboveSystemLimit(self.system_count));
        }
        let cells = u128::from(self.size.x + 1) * u128::from(self.size.y + 1);
        if u128::from(self.system_count) > cells {
            return Err(ConfigError::TooManySystems {
                system_count: self.system_count,
                cells,
            });
        }
        if let Some(value) = self.systems.resources.multiplier {
            return Err(ConfigError::Parse(format!(
                "systems.resources takes no multiplier (found {value})"
            )));
        }

        let mut structures: [Option<StructureRules>; 5] = Default::default();
        for (name, section) in &self.systems.structures {
            let kind: StructureKind = name.parse()?;
            structures[kind.index()] = Some(StructureRules::new(name, section)?);
        }
        Ok(Rules {
            starting_resources: amounts(&self.systems.resources),
            structures,
        })
    }
}

fn amounts(section: &Amounts) -> Resources {
    Resources {
        metal: section.metal.min(MAX_QUANTITY),
        crew: section.crew.min(MAX_QUANTITY),
        water: section.water.min(MAX_QUANTITY),
    }
}

fn checked_multiplier(path: String, value: Option<f64>) -> Result<Option<f64>, ConfigError> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => {
            Err(ConfigError::BadMultiplier { path, value: v })
        }
        other => Ok(other),
    }
}

/// The validated rules of one galaxy.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub starting_resources: Resources,
    structures: [Option<StructureRules>; 5],
}

/// What a structure's production, storage and cost are at a level.
#[derive(Clone, Debug, PartialEq)]
pub struct StructureRules {
    pub description: Option<String>,
    pub starting_level: u32,
    production: Scaled,
    storage: Scaled,
    cost: Scaled,
    cost_time: u64,
}

/// Three base amounts and the multiplier that scales them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scaled {
    base: Resources,
    multiplier: f64,
}

impl Scaled {
    fn at(&self, level: u32) -> Resources {
        Resources {
            metal: level_value(self.base.metal, self.multiplier, level),
            crew: level_value(self.base.crew, self.multiplier, level),
            water: level_value(self.base.water, self.multiplier, level),
        }
    }
}

/// What reaching a level costs: resources deducted at order time, and build time in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    pub metal: u64,
    pub crew: u64,
    pub water: u64,
    pub ticks: u64,
}

impl Cost {
    pub fn resources(&self) -> Resources {
        Resources {
            metal: self.metal,
            crew: self.crew,
            water: self.water,
        }
    }
}

impl StructureRules {
    fn new(name: &str, section: &StructureConfig) -> Result<StructureRules, ConfigError> {
        let structure_multiplier =
            checked_multiplier(format!("{name}.multiplier"), section.multiplier)?.unwrap_or(1.0);
        let scaled =
            |part: &str, base: Resources, own: Option<f64>| -> Result<Scaled, ConfigError> {
                let own = checked_multiplier(format!("{name}.{part}.multiplier"), own)?;
                Ok(Scaled {
                    base,
                    multiplier: own.unwrap_or(structure_multiplier),
                })
            };
        let production = section.production.unwrap_or_default();
        let storage = section.storage.unwrap_or_default();
        let cost = section.cost.unwrap_or_default();
        let cost_resources = Resources {
            metal: cost.metal.min(MAX_QUANTITY),
            crew: cost.crew.min(MAX_QUANTITY),
            water: cost.water.min(MAX_QUANTITY),
        };
        Ok(StructureRules {
            description: section.description.clone(),
            starting_level: section.starting_level,
            production: scaled("production", amounts(&production), production.multiplier)?,
            storage: scaled("storage", amounts(&storage), storage.multiplier)?,
            cost: scaled("cost", cost_resources, cost.multiplier)?,
            cost_time: cost.time.min(MAX_QUANTITY),
        })
    }

    /// Units produced per hour at `level`.
    pub fn production(&self, level: u32) -> Resources {
        self.production.at(level)
    }

    /// Storage capacity contributed at `level`.
    pub fn storage(&self, level: u32) -> Resources {
        self.storage.at(level)
    }

    /// The cost of reaching `level` (the formula at that level).
    pub fn cost(&self, level: u32) -> Cost {
        let r = self.cost.at(level);
        Cost {
            metal: r.metal,
            crew: r.crew,
            water: r.water,
            ticks: level_value(self.cost_time, self.cost.multiplier, level),
        }
    }
}

impl Rules {
    /// The rules of a structure, or `None` when the galaxy does not configure it.
    pub fn structure(&self, kind: StructureKind) -> Option<&StructureRules> {
        self.structures[kind.index()].as_ref()
    }

    /// The configured structures with their rules, in [`StructureKind::ALL`] order.
    pub fn configured(&self) -> impl Iterator<Item = (StructureKind, &StructureRules)> {
        StructureKind::ALL
            .into_iter()
            .filter_map(|kind| self.structure(kind).map(|rules| (kind, rules)))
    }

    /// Hourly production and storage capacity of a system with these levels.
    pub fn production_and_capacity(&self, levels: &[u32; 5]) -> (Resources, Resources) {
        let mut production = Resources::ZERO;
        let mut capacity = Resources::ZERO;
        for (kind, rules) in self.configured() {
            let level = levels[kind.index()];
            if level > 0 {
                production = production.saturating_add(&rules.production(level));
                capacity = capacity.saturating_add(&rules.storage(level));
            }
        }
        (production, capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_structures(structures: &str) -> String {
        format!("system_count = 4\n[size]\nx = 3\ny = 3\n{structures}")
    }

    #[test]
    fn presets_validate_and_blitz_matches_the_contract() {
        let (config, rules) = GalaxyConfig::preset("blitz").unwrap();
        assert_eq!(config.system_count, 200);
        assert_eq!(config.size, MapSize { x: 100, y: 100 });
        assert_eq!(
            rules.starting_resources,
            Resources {
                crew: 200,
                metal: 225,
                water: 250
            }
        );
        let colony = rules.structure(StructureKind::Colony).unwrap();
        assert_eq!(colony.starting_level, 1);
        assert_eq!(
            colony.production(1),
            Resources {
                crew: 5,
                metal: 6,
                water: 7
            }
        );
        // Production uses the structure multiplier 1.1: 6 × 1.1 = 6.6 → 7.
        assert_eq!(colony.production(2).metal, 7);
        assert_eq!(
            colony.storage(1),
            Resources {
                crew: 1000,
                metal: 1000,
                water: 1000
            }
        );
        assert_eq!(
            colony.cost(1),
            Cost {
                metal: 5,
                crew: 5,
                water: 5,
                ticks: 1
            }
        );
        // Cost uses its own multiplier 1.25: 5 × 1.25 = 6.25 → 6.
        assert_eq!(
            colony.cost(2),
            Cost {
                metal: 6,
                crew: 6,
                water: 6,
                ticks: 1
            }
        );
        let hatchery = rules.structure(StructureKind::Hatchery).unwrap();
        assert_eq!(hatchery.starting_level, 0);
        assert_eq!(
            hatchery.cost(1),
            Cost {
                metal: 60,
                crew: 50,
                water: 70,
                ticks: 100
            }
        );
        assert_eq!(hatchery.production(1).crew, 50);
        let depot = rules.structure(StructureKind::StorageDepot).unwrap();
        assert_eq!(depot.storage(2).metal, 1250);
        assert_eq!(rules.configured().count(), 5);
        GalaxyConfig::preset("classic").unwrap();
        assert!(matches!(
            GalaxyConfig::preset("nope"),
            Err(ConfigError::UnknownPreset(_))
        ));
    }

    #[test]
    fn unknown_structure_is_refused() {
        let err =
            GalaxyConfig::from_toml(&with_structures("[systems.structures.castle]\n")).unwrap_err();
        assert!(
            err.to_string().contains("unknown structure 'castle'"),
            "{err}"
        );
    }

    #[test]
    fn bad_multipliers_are_refused_with_their_path() {
        for (text, path) in [
            (
                "[systems.structures.colony]\nmultiplier = 0.0\n",
                "colony.multiplier",
            ),
            (
                "[systems.structures.colony]\nmultiplier = -1.5\n",
                "colony.multiplier",
            ),
            (
                "[systems.structures.colony]\nmultiplier = inf\n",
                "colony.multiplier",
            ),
            (
                "[systems.structures.colony]\nmultiplier = nan\n",
                "colony.multiplier",
            ),
            (
                "[systems.structures.colony.cost]\nmultiplier = 0.0\n",
                "colony.cost.multiplier",
            ),
            (
                "[systems.structures.hatchery.production]\nmultiplier = -inf\n",
                "hatchery.production.multiplier",
            ),
        ] {
            match GalaxyConfig::from_toml(&with_structures(text)) {
                Err(ConfigError::BadMultiplier { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{text}: expected a multiplier error, got {other:?}"),
            }
        }
    }

    #[test]
    fn more_systems_than_cells_is_refused() {
        let ok = "system_count = 4\n[size]\nx = 1\ny = 1\n[systems]\n";
        assert!(GalaxyConfig::from_toml(ok).is_ok());
        let full = "system_count = 5\n[size]\nx = 1\ny = 1\n[systems]\n";
        assert!(matches!(
            GalaxyConfig::from_toml(full),
            Err(ConfigError::TooManySystems {
                system_count: 5,
                cells: 4
            })
        ));
        let huge = "system_count = 20000000\n[size]\nx = 100000\ny = 100000\n[systems]\n";
        assert!(matches!(
            GalaxyConfig::from_toml(huge),
            Err(ConfigError::AboveSystemLimit(_))
        ));
        let wide = "system_count = 1\n[size]\nx = 99999999999\ny = 1\n[systems]\n";
        assert!(matches!(
            GalaxyConfig::from_toml(wide),
            Err(ConfigError::MapTooLarge { axis: 'x', .. })
        ));
    }

    #[test]
    fn missing_and_malformed_fields_are_refused() {
        for (text, expected) in [
            ("[size]\nx = 1\ny = 1\n[systems]\n", "system_count"),
            ("system_count = 1\n[systems]\n", "size"),
            ("system_count = 1\n[size]\nx = 1\n[systems]\n", "y"),
            ("system_count = 1\n[size]\nx = 1\ny = 1\n", "systems"),
            (
                "system_count = -1\n[size]\nx = 1\ny = 1\n[systems]\n",
                "line 1",
            ),
            (
                "system_count = 1\n[size]\nx = 1\ny = 1\nz = 2\n[systems]\n",
                "z",
            ),
            ("system_count = \"many\"\n", "string"),
            ("not toml at all", ""),
        ] {
            let err = GalaxyConfig::from_toml(text).unwrap_err();
            assert!(matches!(err, ConfigError::Parse(_)), "{text}: {err:?}");
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
        let negative = with_structures("[systems.structures.colony.cost]\nmetal = -5\n");
        assert!(GalaxyConfig::from_toml(&negative).is_err());
    }

    #[test]
    fn sections_default_sensibly() {
        let (_, rules) =
            GalaxyConfig::from_toml(&with_structures("[systems.structures.hatchery]\n")).unwrap();
        let hatchery = rules.structure(StructureKind::Hatchery).unwrap();
        assert_eq!(hatchery.starting_level, 0);
        assert_eq!(hatchery.production(3), Resources::ZERO);
        assert_eq!(
            hatchery.cost(3),
            Cost {
                metal: 0,
                crew: 0,
                water: 0,
                ticks: 0
            }
        );
        assert!(rules.structure(StructureKind::Colony).is_none());
        assert_eq!(rules.starting_resources, Resources::ZERO);
    }

    #[test]
    fn toml_round_trip_gives_an_equal_config() {
        for preset in ["blitz", "classic"] {
            let (config, rules) = GalaxyConfig::preset(preset).unwrap();
            let (again, again_rules) = GalaxyConfig::from_toml(&config.to_toml()).unwrap();
            assert_eq!(config, again);
            assert_eq!(rules, again_rules);
        }
    }
}
