//! The game model (README, *The game model in brief*): galaxies, systems, structures, resources and their rules.
//!
//! Pure and synchronous: no locks, no I/O, no clocks. Time is the `tick` argument of every
//! operation, so callers (and tests) choose it. Every operation reports what it changed
//! through the galaxy's change set (`changes.rs`), which the persistence engine consumes:
//! that tracking is the engine's, not part of the game's public API.
//!
//! The model knows nothing of JSON: what a read shows ([`SystemDetails`] and the like) is
//! plain data, and `crate::http::json` decides how it goes on the wire. (Galaxy configs
//! keep serde: they are TOML, read from requests and stored in the database.)

pub(crate) mod changes;
mod config;
mod galaxy;
mod history;
pub(crate) mod rng;
mod structure;
mod system;

pub(crate) use changes::{Changes, RowMask};
pub use config::{
    Amounts, ConfigError, Cost, CostConfig, GalaxyConfig, MapSize, Rules, StructureConfig,
    StructureRules, SystemsConfig, DEFAULT_PRESET, MAX_SYSTEMS,
};
pub use galaxy::{EventDetails, Galaxy, GameError, StructureDetails, SystemDetails, SystemSummary};
pub use history::{HistoryEntry, HistoryKind};
pub use structure::{
    level_value, produced_between, Resources, StructureKind, UnknownStructureName, MAX_QUANTITY,
    MAX_TICK, TICKS_PER_HOUR,
};
pub use system::{Build, System};
