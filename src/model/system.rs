//! One star system: its stored state and the pure functions that project it to a tick.
//!
//! A `System` holds exactly what is persisted (resources as of `tick`, structure levels, the
//! build in flight). Projecting it to a later tick never mutates it: reads are computations,
//! and only an order replaces the stored state.

use super::config::Rules;
use super::structure::{produced_between, Resources, StructureKind};

/// A build in flight: `structure` gains a level at `completion_tick`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Build {
    pub completion_tick: u64,
    pub structure: StructureKind,
}

/// The persisted state of one system (plain data: copying it is a `memcpy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct System {
    pub x: u32,
    pub y: u32,
    /// Resources as of `tick`.
    pub resources: Resources,
    /// The tick the stored resources belong to (`systems.current_tick`).
    pub tick: u64,
    /// Level of each structure, indexed by [`StructureKind::index`]; unconfigured ones are 0.
    pub levels: [u32; 5],
    /// At most one build in flight.
    pub build: Option<Build>,
}

impl System {
    /// A fresh system with the config's starting resources and levels.
    pub(crate) fn new(x: u32, y: u32, rules: &Rules, tick: u64) -> System {
        let mut levels = [0; 5];
        for (kind, structure) in rules.configured() {
            levels[kind.index()] = structure.starting_level;
        }
        System {
            x,
            y,
            resources: rules.starting_resources,
            tick,
            levels,
            build: None,
        }
    }

    pub fn coords(&self) -> (u32, u32) {
        (self.x, self.y)
    }

    /// The state at `tick` (≥ `self.tick`), and the structure a build completed into on the
    /// way, if any. Accrual runs piecewise: up to the build's completion with the old levels,
    /// from there with the new ones.
    pub fn projected(&self, rules: &Rules, tick: u64) -> (System, Option<StructureKind>) {
        let mut next = *self;
        let mut completed = None;
        if let Some(build) = next.build.filter(|b| b.completion_tick <= tick) {
            next.accrue(rules, build.completion_tick);
            let level = &mut next.levels[build.structure.index()];
            *level = level.saturating_add(1);
            next.build = None;
            completed = Some(build.structure);
        }
        next.accrue(rules, tick);
        (next, completed)
    }

    /// Advances resources from `self.tick` to `to` at the current levels. Production never
    /// lifts a resource above capacity and never lowers one already above it.
    fn accrue(&mut self, rules: &Rules, to: u64) {
        let from = self.tick;
        if to <= from {
            return;
        }
        let (production, capacity) = rules.production_and_capacity(&self.levels);
        let grow = |amount: u64, per_hour: u64, cap: u64| {
            if amount >= cap {
                amount
            } else {
                amount
                    .saturating_add(produced_between(per_hour, from, to))
                    .min(cap)
            }
        };
        self.resources = Resources {
            metal: grow(self.resources.metal, production.metal, capacity.metal),
            crew: grow(self.resources.crew, production.crew, capacity.crew),
            water: grow(self.resources.water, production.water, capacity.water),
        };
        self.tick = to;
    }

    /// Sum over structures of `L·(L+1)/2`, saturating.
    pub fn score(&self) -> u64 {
        self.levels.iter().fold(0u64, |sum, &level| {
            let level = u64::from(level);
            sum.saturating_add(level * (level + 1) / 2)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::GalaxyConfig;

    fn rules(extra: &str) -> Rules {
        let text = format!(
            "system_count = 1\n[size]\nx = 0\ny = 0\n[systems.resources]\nmetal = 100\n\
             [systems.structures.asteroidmine]\nstarting_level = 1\nmultiplier = 2.0\n\
             [systems.structures.asteroidmine.production]\nmetal = 3600\n\
             [systems.structures.asteroidmine.storage]\nmetal = 10000\n{extra}"
        );
        GalaxyConfig::from_toml(&text).unwrap().1
    }

    #[test]
    fn production_accrues_per_tick() {
        let rules = rules("");
        let system = System::new(0, 0, &rules, 0);
        let (at_10, completed) = system.projected(&rules, 10);
        assert_eq!(completed, None);
        assert_eq!(at_10.resources.metal, 110);
        assert_eq!(at_10.tick, 10);
        assert_eq!(
            system.resources.metal, 100,
            "projection leaves the system untouched"
        );
    }

    #[test]
    fn production_stops_at_capacity() {
        let rules = rules("");
        let system = System::new(0, 0, &rules, 0);
        assert_eq!(system.projected(&rules, 9_899).0.resources.metal, 9_999);
        assert_eq!(system.projected(&rules, 9_900).0.resources.metal, 10_000);
        assert_eq!(
            system.projected(&rules, 1_000_000).0.resources.metal,
            10_000
        );
    }

    #[test]
    fn production_never_lowers_resources_above_capacity() {
        let rules = rules("");
        let mut system = System::new(0, 0, &rules, 0);
        system.resources.metal = 50_000;
        assert_eq!(
            system.projected(&rules, 1_000_000).0.resources.metal,
            50_000
        );
    }

    #[test]
    fn no_storage_means_no_growth_and_no_loss() {
        let text = "system_count = 1\n[size]\nx = 0\ny = 0\n[systems.resources]\ncrew = 7\n\
                    [systems.structures.hatchery]\nstarting_level = 1\n\
                    [systems.structures.hatchery.production]\ncrew = 3600\n";
        let rules = GalaxyConfig::from_toml(text).unwrap().1;
        let system = System::new(0, 0, &rules, 0);
        assert_eq!(system.projected(&rules, 5000).0.resources.crew, 7);
    }

    #[test]
    fn a_build_completing_mid_interval_changes_production_from_its_tick_only() {
        let rules = rules("");
        let mut system = System::new(0, 0, &rules, 0);
        system.build = Some(Build {
            completion_tick: 10,
            structure: StructureKind::AsteroidMine,
        });
        // Ticks 0..10 at level 1 (1/tick), 10..20 at level 2 (2/tick): 100 + 10 + 20.
        let (at_20, completed) = system.projected(&rules, 20);
        assert_eq!(completed, Some(StructureKind::AsteroidMine));
        assert_eq!(at_20.resources.metal, 130);
        assert_eq!(at_20.levels[StructureKind::AsteroidMine.index()], 2);
        assert_eq!(at_20.build, None);
        // Before completion nothing changes level.
        let (at_9, completed) = system.projected(&rules, 9);
        assert_eq!(completed, None);
        assert_eq!(at_9.resources.metal, 109);
        assert!(at_9.build.is_some());
        // Exactly at completion the level is raised, production so far at the old rate.
        let (at_10, _) = system.projected(&rules, 10);
        assert_eq!(at_10.resources.metal, 110);
        assert_eq!(at_10.levels[StructureKind::AsteroidMine.index()], 2);
    }

    #[test]
    fn score_is_the_triangular_sum_and_saturates() {
        let rules = rules("");
        let mut system = System::new(0, 0, &rules, 0);
        system.levels = [1, 2, 3, 0, 0];
        assert_eq!(system.score(), 1 + 3 + 6);
        system.levels = [u32::MAX; 5];
        assert_eq!(system.score(), u64::MAX);
    }
}
