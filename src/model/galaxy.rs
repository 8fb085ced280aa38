//! A galaxy: its rules, its tick, its systems, and the record of what changed.
//!
//! Systems are kept sorted by `(x, y)`, so a lookup is a binary search and a system's index
//! is stable for the galaxy's lifetime (the change set and the store's row-id cache key on
//! it). Every operation checks the tick first: one older than the galaxy's is refused.
//! Reads bump the galaxy tick but never touch a system; orders replace one system's state
//! and record the rows they changed in the galaxy's [`Changes`].

use std::collections::{BTreeMap, HashSet};

use super::changes::{Changes, RowMask};
use super::config::{ConfigError, Cost, GalaxyConfig, Rules};
use super::history::OrderRecord;
use super::rng::SplitMix64;
use super::structure::{Resources, StructureKind, MAX_QUANTITY, MAX_TICK};
use super::system::{Build, System};

/// Why a game operation was refused. A refused operation changes no system.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GameError {
    #[error("tick out of order: tick {tick} is older than the galaxy's tick {galaxy_tick}")]
    TickOutOfOrder { tick: u64, galaxy_tick: u64 },
    #[error("tick {0} is beyond the largest supported tick {MAX_TICK}")]
    TickOutOfRange(u64),
    #[error("no system at ({x}, {y})")]
    UnknownSystem { x: u64, y: u64 },
    #[error("structure '{0}' is not part of this galaxy")]
    UnknownStructure(StructureKind),
    #[error("a build is already in progress (completes at tick {completion_tick})")]
    AlreadyBuilding { completion_tick: u64 },
    #[error("not enough resources: the build costs {cost:?}, the system has {available:?}")]
    NotEnoughResources {
        cost: Resources,
        available: Resources,
    },
    #[error("{0} is already at the highest level")]
    MaxLevel(StructureKind),
}

/// Why stored parts do not form a galaxy (see [`Galaxy::from_parts`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PartsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("system ({x}, {y}) is listed twice or out of (x, y) order")]
    Unordered { x: u32, y: u32 },
    #[error("system ({x}, {y}) is outside the map")]
    OffMap { x: u32, y: u32 },
    #[error("system ({x}, {y}) has a value beyond the supported range")]
    OutOfRange { x: u32, y: u32 },
    #[error("system ({x}, {y}) has a level for a structure the config does not have")]
    UnconfiguredStructure { x: u32, y: u32 },
}

/// A galaxy in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Galaxy {
    name: String,
    config: GalaxyConfig,
    rules: Rules,
    tick: u64,
    systems: Vec<System>,
    changes: Changes,
    /// Orders record their history entries (`GWAR_HISTORY`).
    history: bool,
}

/// What `GET /galaxies/{name}/systems/{x}/{y}` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemDetails {
    pub x: u32,
    pub y: u32,
    pub score: u64,
    pub resources: Resources,
    pub production: Resources,
    pub structures: BTreeMap<&'static str, u32>,
    pub events: Vec<EventDetails>,
}

/// A build in flight as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventDetails {
    pub completion_tick: u64,
    pub action: &'static str,
    pub structure: StructureKind,
}

impl From<Build> for EventDetails {
    fn from(build: Build) -> Self {
        EventDetails {
            completion_tick: build.completion_tick,
            action: "build",
            structure: build.structure,
        }
    }
}

/// What `GET /galaxies/{name}/systems/{x}/{y}/{structure}` shows; `builds` is the colony's
/// build menu: the cost of the next level of every structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructureDetails {
    pub structure: StructureKind,
    pub level: u32,
    pub production: Resources,
    pub builds: Option<BTreeMap<&'static str, Cost>>,
}

/// One system in a galaxy listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemSummary {
    pub x: u32,
    pub y: u32,
    pub score: u64,
}

impl Galaxy {
    /// Creates a galaxy of exactly `config.system_count` systems at distinct coordinates
    /// drawn uniformly from the map (a collision draws again). The same seed gives the same
    /// galaxy. Every system is recorded as changed: a new galaxy is entirely unsaved.
    pub fn create(
        name: &str,
        config: GalaxyConfig,
        seed: u64,
        tick: u64,
    ) -> Result<Galaxy, ConfigError> {
        let rules = config.validate()?;
        let tick = tick.min(MAX_TICK);
        let count = usize::try_from(config.system_count).unwrap_or(usize::MAX);
        let mut rng = SplitMix64::new(seed);
        let mut taken = HashSet::with_capacity(count);
        let mut systems = Vec::with_capacity(count);
        while systems.len() < count {
            // validate() bounds both axes below u32::MAX, so the draws fit in u32.
            let x = rng.inclusive(config.size.x) as u32;
            let y = rng.inclusive(config.size.y) as u32;
            if taken.insert((x, y)) {
                systems.push(System::new(x, y, &rules, tick));
            }
        }
        systems.sort_unstable_by_key(System::coords);
        let mut galaxy = Galaxy {
            name: name.to_owned(),
            config,
            rules,
            tick,
            systems,
            changes: Changes::default(),
            history: true,
        };
        galaxy.mark_all_changed();
        Ok(galaxy)
    }

    /// Rebuilds a galaxy from stored parts, checking everything the game relies on. The
    /// result has no unsaved changes.
    pub(crate) fn from_parts(
        name: &str,
        config: GalaxyConfig,
        tick: u64,
        systems: Vec<System>,
    ) -> Result<Galaxy, PartsError> {
        let rules = config.validate()?;
        for (i, system) in systems.iter().enumerate() {
            let (x, y) = system.coords();
            if i > 0 && systems[i - 1].coords() >= system.coords() {
                return Err(PartsError::Unordered { x, y });
            }
            if u64::from(x) > config.size.x || u64::from(y) > config.size.y {
                return Err(PartsError::OffMap { x, y });
            }
            let r = system.resources;
            let build_tick = system.build.map_or(0, |b| b.completion_tick);
            if r.metal
                .max(r.crew)
                .max(r.water)
                .max(system.tick)
                .max(build_tick)
                > MAX_QUANTITY
            {
                return Err(PartsError::OutOfRange { x, y });
            }
            let unconfigured = StructureKind::ALL.into_iter().any(|kind| {
                rules.structure(kind).is_none()
                    && (system.levels[kind.index()] != 0
                        || system.build.is_some_and(|b| b.structure == kind))
            });
            if unconfigured {
                return Err(PartsError::UnconfiguredStructure { x, y });
            }
        }
        Ok(Galaxy {
            name: name.to_owned(),
            config,
            rules,
            tick: tick.min(MAX_TICK),
            systems,
            changes: Changes::default(),
            history: true,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &GalaxyConfig {
        &self.config
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The latest tick any operation carried.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// The stored state of every system, sorted by `(x, y)`.
    pub fn systems(&self) -> &[System] {
        &self.systems
    }

    /// The state of the system at `index` (its place in [`Galaxy::systems`]).
    pub fn system(&self, index: u32) -> Option<&System> {
        self.systems.get(index as usize)
    }

    /// Systems changed since the last [`Galaxy::take_changes`].
    pub(crate) fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Takes the unsaved changes, leaving none: the caller now owns saving them.
    pub(crate) fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Records every row of every system as changed, so the next save rewrites the galaxy
    /// in full (after its stored rows were restored or repaired by hand, say).
    pub(crate) fn mark_all_changed(&mut self) {
        let every_row = RowMask::new_system(&self.rules);
        for index in 0..self.systems.len() {
            self.changes.mark(index as u32, every_row);
        }
    }

    /// Drops the unsaved changes (nothing will save them), keeping the set's memory for
    /// the next ones: with persistence off this runs after every order.
    pub(crate) fn forget_changes(&mut self) {
        self.changes.clear();
    }

    /// Moves the galaxy out, its systems and unsaved changes with it, leaving an empty
    /// galaxy of the same name, config and tick behind (a galaxy leaving memory to be
    /// archived: its cell keeps a shell nobody plays on).
    pub(crate) fn take_all(&mut self) -> Galaxy {
        Galaxy {
            name: self.name.clone(),
            config: self.config.clone(),
            rules: self.rules.clone(),
            tick: self.tick,
            systems: std::mem::take(&mut self.systems),
            changes: std::mem::take(&mut self.changes),
            history: self.history,
        }
    }

    /// Whether orders record their history entries from now on (`GWAR_HISTORY`).
    pub(crate) fn keep_history(&mut self, on: bool) {
        self.history = on;
    }

    /// Gives back changes whose save failed, so they are saved later.
    pub(crate) fn restore_changes(&mut self, changes: Changes) {
        self.changes.merge(changes);
    }

    /// Refuses a tick older than the galaxy's (or beyond [`MAX_TICK`]) and otherwise
    /// advances the galaxy's tick to it.
    fn observe(&mut self, tick: u64) -> Result<(), GameError> {
        if tick > MAX_TICK {
            return Err(GameError::TickOutOfRange(tick));
        }
        if tick < self.tick {
            return Err(GameError::TickOutOfOrder {
                tick,
                galaxy_tick: self.tick,
            });
        }
        self.tick = tick;
        Ok(())
    }

    fn index_of(&self, x: u64, y: u64) -> Result<usize, GameError> {
        let unknown = GameError::UnknownSystem { x, y };
        let coords = (u32::try_from(x), u32::try_from(y));
        let (Ok(x), Ok(y)) = coords else {
            return Err(unknown);
        };
        self.systems
            .binary_search_by_key(&(x, y), System::coords)
            .map_err(|_| unknown)
    }

    /// The system at `(x, y)` as it is at `tick`, without changing it.
    fn projected(&mut self, tick: u64, x: u64, y: u64) -> Result<System, GameError> {
        self.observe(tick)?;
        let index = self.index_of(x, y)?;
        Ok(self.systems[index].projected(&self.rules, tick).0)
    }

    /// Orders a build of `structure` in the system at `(x, y)`: needs no build in flight and
    /// resources covering `cost(level + 1)` component-wise; deducts the cost now; the level
    /// rises at `tick + cost.ticks` (saturating at [`MAX_TICK`]).
    pub fn build(
        &mut self,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
    ) -> Result<Build, GameError> {
        self.observe(tick)?;
        let index = self.index_of(x, y)?;
        let rules = self
            .rules
            .structure(structure)
            .ok_or(GameError::UnknownStructure(structure))?;
        let (mut next, completed) = self.systems[index].projected(&self.rules, tick);
        if let Some(build) = next.build {
            return Err(GameError::AlreadyBuilding {
                completion_tick: build.completion_tick,
            });
        }
        let target = next.levels[structure.index()]
            .checked_add(1)
            .ok_or(GameError::MaxLevel(structure))?;
        let cost = rules.cost(target);
        if !next.resources.covers(&cost.resources()) {
            return Err(GameError::NotEnoughResources {
                cost: cost.resources(),
                available: next.resources,
            });
        }
        next.resources = next.resources.saturating_sub(&cost.resources());
        let build = Build {
            completion_tick: tick.saturating_add(cost.ticks).min(MAX_TICK),
            structure,
        };
        next.build = Some(build);
        self.systems[index] = next;

        let mut rows = RowMask::SYSTEM | RowMask::EVENTS;
        if let Some(kind) = completed {
            rows |= RowMask::structure(kind);
        }
        self.changes.mark(index as u32, rows);
        if !self.history {
            return Ok(build);
        }
        self.changes.record(OrderRecord {
            tick,
            completion: build.completion_tick,
            index: index as u32,
            level: target,
            structure,
        });
        Ok(build)
    }

    /// The details of the system at `(x, y)` at `tick`.
    pub fn system_details(
        &mut self,
        tick: u64,
        x: u64,
        y: u64,
    ) -> Result<SystemDetails, GameError> {
        let system = self.projected(tick, x, y)?;
        let (production, _) = self.rules.production_and_capacity(&system.levels);
        // Inserted one by one: collecting an iterator of unknown length into a map goes
        // through a growing vector, and every request answered pays for its reallocation.
        let mut structures = BTreeMap::new();
        for (kind, _) in self.rules.configured() {
            structures.insert(kind.as_str(), system.levels[kind.index()]);
        }
        Ok(SystemDetails {
            x: system.x,
            y: system.y,
            score: system.score(),
            resources: system.resources,
            production,
            structures,
            events: system.build.map(EventDetails::from).into_iter().collect(),
        })
    }

    /// The details of one structure at `tick`; for the colony, with its build menu.
    pub fn structure_details(
        &mut self,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
    ) -> Result<StructureDetails, GameError> {
        let system = self.projected(tick, x, y)?;
        let rules = self
            .rules
            .structure(structure)
            .ok_or(GameError::UnknownStructure(structure))?;
        let level = system.levels[structure.index()];
        let builds = (structure == StructureKind::Colony).then(|| {
            self.rules
                .configured()
                .map(|(kind, rules)| {
                    let next = system.levels[kind.index()].saturating_add(1);
                    (kind.as_str(), rules.cost(next))
                })
                .collect()
        });
        Ok(StructureDetails {
            structure,
            level,
            production: rules.production(level),
            builds,
        })
    }

    /// Every system's coordinates and score at `tick`, sorted by `(x, y)`.
    pub fn summaries(&mut self, tick: u64) -> Result<Vec<SystemSummary>, GameError> {
        self.summaries_in(tick, 0, usize::MAX)
    }

    /// The summaries of at most `limit` systems from the `offset`-th in `(x, y)` order
    /// (none past the end), at `tick`: work in proportion to the page, not the galaxy.
    pub fn summaries_in(
        &mut self,
        tick: u64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<SystemSummary>, GameError> {
        self.observe(tick)?;
        let start = offset.min(self.systems.len());
        let end = start.saturating_add(limit).min(self.systems.len());
        Ok(self.systems[start..end]
            .iter()
            .map(|system| {
                let score = match system.build {
                    Some(build) if build.completion_tick <= tick => {
                        system.projected(&self.rules, tick).0.score()
                    }
                    _ => system.score(),
                };
                SystemSummary {
                    x: system.x,
                    y: system.y,
                    score,
                }
            })
            .collect())
    }

    /// The sum of all systems' scores at `tick`.
    pub fn score(&mut self, tick: u64) -> Result<u64, GameError> {
        Ok(self
            .summaries(tick)?
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.score)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-system galaxy with a colony (level 1, production 3600 metal/h = 1 per tick,
    /// storage 10 000) and a hatchery (level 0) whose first level costs 100/50/20, 10 ticks.
    fn small() -> Galaxy {
        let text = "system_count = 1\n[size]\nx = 0\ny = 0\n\
                    [systems.resources]\nmetal = 100\ncrew = 50\nwater = 20\n\
                    [systems.structures.colony]\nstarting_level = 1\n\
                    [systems.structures.colony.production]\nmetal = 3600\n\
                    [systems.structures.colony.storage]\nmetal = 10000\ncrew = 10000\nwater = 10000\n\
                    [systems.structures.hatchery]\nmultiplier = 2.0\n\
                    [systems.structures.hatchery.cost]\nmetal = 100\ncrew = 50\nwater = 20\ntime = 10\n";
        let (config, _) = GalaxyConfig::from_toml(text).unwrap();
        let mut galaxy = Galaxy::create("small", config, 1, 0).unwrap();
        galaxy.take_changes();
        galaxy
    }

    #[test]
    fn creation_makes_exactly_system_count_distinct_systems_deterministically() {
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        let a = Galaxy::create("a", config.clone(), 42, 0).unwrap();
        let b = Galaxy::create("a", config.clone(), 42, 0).unwrap();
        let c = Galaxy::create("a", config, 43, 0).unwrap();
        assert_eq!(a.systems().len(), 200);
        assert_eq!(a, b, "same seed, same galaxy");
        assert_ne!(a.systems(), c.systems(), "another seed, another galaxy");
        let distinct: HashSet<_> = a.systems().iter().map(System::coords).collect();
        assert_eq!(distinct.len(), 200);
        assert!(a.systems().iter().all(|s| s.x <= 100 && s.y <= 100));
        assert_eq!(a.changes().len(), 200, "a new galaxy is entirely unsaved");
        let first = &a.systems()[0];
        assert_eq!(
            first.resources,
            Resources {
                crew: 200,
                metal: 225,
                water: 250
            }
        );
        assert_eq!(first.levels[StructureKind::Colony.index()], 1);
        assert_eq!(first.levels[StructureKind::Hatchery.index()], 0);
    }

    #[test]
    fn creation_fills_a_map_exactly() {
        let text = "system_count = 9\n[size]\nx = 2\ny = 2\n[systems]\n";
        let (config, _) = GalaxyConfig::from_toml(text).unwrap();
        let galaxy = Galaxy::create("full", config, 5, 0).unwrap();
        let coords: Vec<_> = galaxy.systems().iter().map(System::coords).collect();
        let all: Vec<_> = (0..3).flat_map(|x| (0..3).map(move |y| (x, y))).collect();
        assert_eq!(coords, all);
    }

    #[test]
    fn a_cost_exactly_equal_to_the_resources_is_affordable() {
        let mut galaxy = small();
        let build = galaxy.build(0, 0, 0, StructureKind::Hatchery).unwrap();
        assert_eq!(build.completion_tick, 10);
        let system = &galaxy.systems()[0];
        assert_eq!(system.resources, Resources::ZERO);
        assert_eq!(system.build, Some(build));
        assert_eq!(
            galaxy.changes().get(0),
            Some(RowMask::SYSTEM | RowMask::EVENTS)
        );
    }

    #[test]
    fn a_cost_greater_in_one_resource_is_refused_and_changes_nothing() {
        let mut galaxy = small();
        galaxy.systems[0].resources.crew = 49; // the hatchery needs 50
        let before = galaxy.clone();
        let err = galaxy.build(0, 0, 0, StructureKind::Hatchery).unwrap_err();
        assert!(matches!(err, GameError::NotEnoughResources { .. }), "{err}");
        assert_eq!(galaxy, before);
        assert!(galaxy.changes().is_empty());
    }

    #[test]
    fn one_build_in_flight_per_system() {
        let mut galaxy = small();
        galaxy.systems[0].resources = Resources {
            metal: 1000,
            crew: 1000,
            water: 1000,
        };
        galaxy.build(0, 0, 0, StructureKind::Hatchery).unwrap();
        let before = galaxy.clone();
        assert_eq!(
            galaxy.build(5, 0, 0, StructureKind::Colony),
            Err(GameError::AlreadyBuilding {
                completion_tick: 10
            })
        );
        assert_eq!(galaxy.systems(), before.systems());
        // Once it completed, the next level costs the formula at level 2: 200/100/40.
        let next = galaxy.build(10, 0, 0, StructureKind::Hatchery).unwrap();
        assert_eq!(next.completion_tick, 10 + 20);
        let system = &galaxy.systems()[0];
        assert_eq!(system.levels[StructureKind::Hatchery.index()], 1);
        // 1000 − 100 + 10 ticks of metal − 200 = 710
        assert_eq!(system.resources.metal, 710);
        assert_eq!(system.resources.crew, 1000 - 50 - 100);
        let rows = galaxy.changes().get(0).unwrap();
        assert!(rows.contains(RowMask::structure(StructureKind::Hatchery)));
    }

    #[test]
    fn unknown_system_and_structure_are_errors() {
        let mut galaxy = small();
        assert_eq!(
            galaxy.build(0, 1, 0, StructureKind::Colony),
            Err(GameError::UnknownSystem { x: 1, y: 0 })
        );
        assert_eq!(
            galaxy.system_details(0, u64::MAX, 0).unwrap_err(),
            GameError::UnknownSystem { x: u64::MAX, y: 0 }
        );
        assert_eq!(
            galaxy.build(0, 0, 0, StructureKind::StorageDepot),
            Err(GameError::UnknownStructure(StructureKind::StorageDepot))
        );
        assert!(galaxy.changes().is_empty());
    }

    #[test]
    fn ticks_out_of_order_are_refused_not_applied() {
        let mut galaxy = small();
        galaxy.system_details(100, 0, 0).unwrap();
        assert_eq!(galaxy.tick(), 100);
        let before = galaxy.clone();
        assert_eq!(
            galaxy.build(99, 0, 0, StructureKind::Hatchery),
            Err(GameError::TickOutOfOrder {
                tick: 99,
                galaxy_tick: 100
            })
        );
        assert!(galaxy.summaries(50).is_err());
        assert_eq!(galaxy, before);
        assert_eq!(
            galaxy.system_details(MAX_TICK + 1, 0, 0),
            Err(GameError::TickOutOfRange(MAX_TICK + 1))
        );
        galaxy.system_details(MAX_TICK, 0, 0).unwrap();
    }

    #[test]
    fn reads_change_nothing_that_must_be_saved() {
        let mut galaxy = small();
        galaxy.build(0, 0, 0, StructureKind::Hatchery).unwrap();
        galaxy.take_changes();
        let systems = galaxy.systems().to_vec();
        for tick in [0, 5, 10, 11, 5000] {
            galaxy.system_details(tick, 0, 0).unwrap();
            galaxy
                .structure_details(tick, 0, 0, StructureKind::Colony)
                .unwrap();
            galaxy.summaries(tick).unwrap();
        }
        assert_eq!(galaxy.systems(), systems);
        assert!(galaxy.changes().is_empty());
    }

    #[test]
    fn a_page_of_summaries_is_the_same_slice_of_all_of_them() {
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        let mut galaxy = Galaxy::create("g", config, 3, 0).unwrap();
        let all = galaxy.summaries(10).unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(galaxy.summaries_in(10, 0, 1000).unwrap(), all);
        assert_eq!(galaxy.summaries_in(10, 17, 5).unwrap(), all[17..22]);
        assert_eq!(galaxy.summaries_in(10, 195, 50).unwrap(), all[195..]);
        assert!(galaxy.summaries_in(10, 200, 5).unwrap().is_empty());
        assert!(galaxy
            .summaries_in(10, usize::MAX, usize::MAX)
            .unwrap()
            .is_empty());
        assert!(
            galaxy.summaries_in(9, 0, 1).is_err(),
            "ticks still only go forward"
        );
    }

    #[test]
    fn details_show_the_projected_state() {
        let mut galaxy = small();
        galaxy.build(0, 0, 0, StructureKind::Hatchery).unwrap();
        let during = galaxy.system_details(5, 0, 0).unwrap();
        assert_eq!(during.resources.metal, 5);
        assert_eq!(during.structures["hatchery"], 0);
        assert_eq!(during.events.len(), 1);
        assert_eq!(during.score, 1);
        let after = galaxy.system_details(12, 0, 0).unwrap();
        assert_eq!(after.structures["hatchery"], 1);
        assert!(after.events.is_empty());
        assert_eq!(after.score, 2);
        assert_eq!(after.production.metal, 3600);
        assert_eq!(galaxy.summaries(12).unwrap()[0].score, 2);
        assert_eq!(galaxy.score(12).unwrap(), 2);

        let colony = galaxy
            .structure_details(12, 0, 0, StructureKind::Colony)
            .unwrap();
        assert_eq!(colony.level, 1);
        let menu = colony.builds.unwrap();
        assert_eq!(menu.len(), 2);
        // Hatchery is at level 1 now, so its menu entry is the cost of level 2.
        assert_eq!(
            menu["hatchery"],
            Cost {
                metal: 200,
                crew: 100,
                water: 40,
                ticks: 20
            }
        );
        let hatchery = galaxy
            .structure_details(12, 0, 0, StructureKind::Hatchery)
            .unwrap();
        assert!(hatchery.builds.is_none());
    }

    #[test]
    fn huge_values_saturate_without_panicking() {
        let text = "system_count = 1\n[size]\nx = 0\ny = 0\n\
                    [systems.resources]\nmetal = 9223372036854775807\n\
                    crew = 9223372036854775807\nwater = 9223372036854775807\n\
                    [systems.structures.colony]\nstarting_level = 4294967294\nmultiplier = 1e300\n\
                    [systems.structures.colony.production]\nmetal = 9223372036854775807\n\
                    [systems.structures.colony.storage]\nmetal = 9223372036854775807\n\
                    [systems.structures.colony.cost]\ntime = 9223372036854775807\n";
        let (config, _) = GalaxyConfig::from_toml(text).unwrap();
        let mut galaxy = Galaxy::create("huge", config, 0, MAX_TICK - 1).unwrap();
        let build = galaxy
            .build(MAX_TICK - 1, 0, 0, StructureKind::Colony)
            .unwrap();
        assert_eq!(build.completion_tick, MAX_TICK);
        let details = galaxy.system_details(MAX_TICK, 0, 0).unwrap();
        assert_eq!(details.structures["colony"], u32::MAX);
        assert_eq!(details.production.metal, MAX_QUANTITY);
        assert_eq!(
            galaxy.build(MAX_TICK, 0, 0, StructureKind::Colony),
            Err(GameError::MaxLevel(StructureKind::Colony))
        );
    }

    #[test]
    fn from_parts_checks_what_it_is_given() {
        let galaxy = small();
        let rebuilt = Galaxy::from_parts(
            "small",
            galaxy.config().clone(),
            galaxy.tick(),
            galaxy.systems().to_vec(),
        )
        .unwrap();
        assert_eq!(rebuilt, galaxy);

        let mut twice = galaxy.systems().to_vec();
        twice.push(twice[0]);
        assert!(matches!(
            Galaxy::from_parts("s", galaxy.config().clone(), 0, twice),
            Err(PartsError::Unordered { .. })
        ));
        let mut off = galaxy.systems().to_vec();
        off[0].x = 5;
        assert!(matches!(
            Galaxy::from_parts("s", galaxy.config().clone(), 0, off),
            Err(PartsError::OffMap { .. })
        ));
        let mut depot = galaxy.systems().to_vec();
        depot[0].levels[StructureKind::StorageDepot.index()] = 1;
        assert!(matches!(
            Galaxy::from_parts("s", galaxy.config().clone(), 0, depot),
            Err(PartsError::UnconfiguredStructure { .. })
        ));
    }
}
