//! Structure kinds, resource amounts and the level formula.
//!
//! Every quantity the game stores (resources, capacities, costs, ticks) is at most
//! [`MAX_QUANTITY`] (`i64::MAX`), so it always fits an SQLite INTEGER. Arithmetic saturates
//! at that bound instead of wrapping or panicking: a huge multiplier yields a huge but finite
//! number, never an error mid-game.

use std::fmt;
use std::str::FromStr;

/// The largest amount, capacity, cost or tick the game represents (`i64::MAX`).
pub const MAX_QUANTITY: u64 = i64::MAX as u64;

/// The largest tick an operation may carry (`u64::MAX / 2`, which is `i64::MAX`).
pub const MAX_TICK: u64 = MAX_QUANTITY;

/// Ticks in one hour: production is configured per hour.
pub const TICKS_PER_HOUR: u64 = 3600;

/// The five structure types, in the order used for per-structure arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StructureKind {
    Colony,
    AsteroidMine,
    WaterHarvester,
    Hatchery,
    StorageDepot,
}

impl StructureKind {
    pub const ALL: [StructureKind; 5] = [
        StructureKind::Colony,
        StructureKind::AsteroidMine,
        StructureKind::WaterHarvester,
        StructureKind::Hatchery,
        StructureKind::StorageDepot,
    ];

    /// The lower-case name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            StructureKind::Colony => "colony",
            StructureKind::AsteroidMine => "asteroidmine",
            StructureKind::WaterHarvester => "waterharvester",
            StructureKind::Hatchery => "hatchery",
            StructureKind::StorageDepot => "storagedepot",
        }
    }

    /// Position in [`StructureKind::ALL`], for per-structure arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for StructureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the five structure types.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown structure '{0}' (expected one of colony, asteroidmine, waterharvester, hatchery, storagedepot)")]
pub struct UnknownStructureName(pub String);

impl FromStr for StructureKind {
    type Err = UnknownStructureName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        StructureKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownStructureName(name.to_owned()))
    }
}

/// Amounts of the three resources. Every field is at most [`MAX_QUANTITY`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub metal: u64,
    pub crew: u64,
    pub water: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        metal: 0,
        crew: 0,
        water: 0,
    };

    /// True when every component is at least the cost's (component-wise affordability).
    pub fn covers(&self, cost: &Resources) -> bool {
        self.metal >= cost.metal && self.crew >= cost.crew && self.water >= cost.water
    }

    /// Component-wise difference; callers check [`Resources::covers`] first.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            metal: self.metal.saturating_sub(other.metal),
            crew: self.crew.saturating_sub(other.crew),
            water: self.water.saturating_sub(other.water),
        }
    }

    /// Component-wise sum, saturating at [`MAX_QUANTITY`].
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        let add = |a: u64, b: u64| a.saturating_add(b).min(MAX_QUANTITY);
        Resources {
            metal: add(self.metal, other.metal),
            crew: add(self.crew, other.crew),
            water: add(self.water, other.water),
        }
    }
}

/// `base × multiplier^(level−1)` rounded to the nearest integer; zero at level 0.
///
/// Saturates at [`MAX_QUANTITY`] when the exact value is larger (huge multipliers or levels),
/// so it never panics and never wraps. `multiplier` must be finite and > 0 (the config
/// validator guarantees it); a multiplier of exactly 1.0 and level 1 are computed exactly in
/// integers, so bases above 2^53 are not rounded through `f64`.
pub fn level_value(base: u64, multiplier: f64, level: u32) -> u64 {
    if level == 0 || base == 0 {
        return 0;
    }
    let base = base.min(MAX_QUANTITY);
    if level == 1 || multiplier == 1.0 {
        return base;
    }
    let value = (base as f64 * multiplier.powf(f64::from(level - 1))).round();
    // `MAX_QUANTITY as f64` rounds up to 2^63, so `>=` also catches values that would not fit.
    if !value.is_finite() || value >= MAX_QUANTITY as f64 {
        MAX_QUANTITY
    } else {
        value as u64
    }
}

/// Amount produced between ticks `from` and `to` at `per_hour` units per hour:
/// `floor(to·P/3600) − floor(from·P/3600)`, exact in 128-bit integers, saturating at
/// [`MAX_QUANTITY`]. Zero when `to <= from`.
pub fn produced_between(per_hour: u64, from: u64, to: u64) -> u64 {
    if to <= from || per_hour == 0 {
        return 0;
    }
    let rate = u128::from(per_hour);
    let hour = u128::from(TICKS_PER_HOUR);
    let amount = u128::from(to) * rate / hour - u128::from(from) * rate / hour;
    u64::try_from(amount).map_or(MAX_QUANTITY, |a| a.min(MAX_QUANTITY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in StructureKind::ALL {
            assert_eq!(kind.as_str().parse::<StructureKind>(), Ok(kind));
            assert_eq!(StructureKind::ALL[kind.index()], kind);
        }
        assert!("Colony".parse::<StructureKind>().is_err());
        assert!("".parse::<StructureKind>().is_err());
    }

    #[test]
    fn level_formula_follows_the_contract() {
        assert_eq!(level_value(5, 1.25, 0), 0);
        assert_eq!(level_value(5, 1.25, 1), 5);
        // 5 × 1.25 = 6.25 → 6; 5 × 1.5625 = 7.8125 → 8
        assert_eq!(level_value(5, 1.25, 2), 6);
        assert_eq!(level_value(5, 1.25, 3), 8);
        // Rounds half away from zero: 2 × 1.25 = 2.5 → 3.
        assert_eq!(level_value(2, 1.25, 2), 3);
        assert_eq!(level_value(1000, 1.1, 2), 1100);
        assert_eq!(level_value(7, 1.0, 900), 7);
        assert_eq!(level_value(7, 0.5, 3), 2);
    }

    #[test]
    fn level_formula_saturates_instead_of_overflowing() {
        assert_eq!(level_value(5, 1.25, 1000), MAX_QUANTITY);
        assert_eq!(level_value(5, 1.25, u32::MAX), MAX_QUANTITY);
        assert_eq!(level_value(1, f64::MAX, 3), MAX_QUANTITY);
        assert_eq!(level_value(u64::MAX, 1.0, 1), MAX_QUANTITY);
        assert_eq!(level_value(MAX_QUANTITY, 2.0, 2), MAX_QUANTITY);
        assert_eq!(level_value(5, f64::MIN_POSITIVE, u32::MAX), 0);
    }

    #[test]
    fn accrual_is_exact_and_never_panics() {
        // 7 per hour: floor(3600·7/3600) − floor(0) = 7
        assert_eq!(produced_between(7, 0, 3600), 7);
        // 1 per hour over the first 3599 ticks: nothing yet.
        assert_eq!(produced_between(1, 0, 3599), 0);
        assert_eq!(produced_between(1, 3599, 3600), 1);
        assert_eq!(produced_between(5, 100, 100), 0);
        assert_eq!(produced_between(5, 200, 100), 0);
        assert_eq!(produced_between(0, 0, MAX_TICK), 0);
        assert_eq!(produced_between(MAX_QUANTITY, 0, MAX_TICK), MAX_QUANTITY);
        assert_eq!(produced_between(u64::MAX, 0, u64::MAX), MAX_QUANTITY);
    }

    #[test]
    fn affordability_is_component_wise() {
        let have = Resources {
            metal: 10,
            crew: 10,
            water: 10,
        };
        assert!(have.covers(&have));
        assert!(!have.covers(&Resources { metal: 11, ..have }));
        assert!(!have.covers(&Resources { water: 11, ..have }));
        assert_eq!(have.saturating_sub(&have), Resources::ZERO);
        let max = Resources {
            metal: MAX_QUANTITY,
            crew: MAX_QUANTITY,
            water: MAX_QUANTITY,
        };
        assert_eq!(max.saturating_add(&max), max);
    }
}
