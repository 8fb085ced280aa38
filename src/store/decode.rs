//! What a stored galaxy's rows must satisfy to become a galaxy in memory: the rules every
//! store's load applies, written once, with the reasons a load refuses a galaxy (as
//! [`StoreError::Inconsistent`]).
//!
//! Reads no database and knows no driver: a load fetches the columns (its driver's errors
//! are its own) and hands them here as plain values, in the order it reads them, so a row
//! with several faults is refused for the same one whichever store holds it. A row that
//! breaks a rule refuses the whole galaxy; nothing is clamped or skipped.

use super::{RowIds, StoreError};
use crate::model::{Build, Galaxy, GalaxyConfig, Resources, StructureKind, System};

/// Decodes the rows of one stored galaxy; every refusal names it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Decoder<'a> {
    galaxy: &'a str,
}

impl<'a> Decoder<'a> {
    pub(super) fn new(galaxy: &'a str) -> Decoder<'a> {
        Decoder { galaxy }
    }

    /// The galaxy is inconsistent, for `reason`.
    fn bad(&self, reason: String) -> StoreError {
        StoreError::Inconsistent {
            galaxy: self.galaxy.to_owned(),
            reason,
        }
    }

    /// The galaxy row: its config file and its tick.
    pub(super) fn galaxy(
        &self,
        config: &str,
        tick: i64,
    ) -> Result<(GalaxyConfig, u64), StoreError> {
        let (config, _) = GalaxyConfig::from_toml(config).map_err(|e| self.bad(e.to_string()))?;
        let tick = u64::try_from(tick).map_err(|_| self.bad(format!("negative tick {tick}")))?;
        Ok((config, tick))
    }

    /// A system row, from its columns `id, x, y, metal, crew, water, current_tick`: the
    /// system without its structures' levels and its build, which are rows of their own.
    #[inline]
    pub(super) fn system(&self, columns: [i64; 7]) -> Result<System, StoreError> {
        let [id, x, y, metal, crew, water, current] = columns;
        let coord = |v: i64| {
            u32::try_from(v).map_err(|_| self.bad(format!("system {id} has coordinate {v}")))
        };
        let amount = |v: i64| {
            u64::try_from(v).map_err(|_| self.bad(format!("system {id} has negative value {v}")))
        };
        Ok(System {
            x: coord(x)?,
            y: coord(y)?,
            resources: Resources {
                metal: amount(metal)?,
                crew: amount(crew)?,
                water: amount(water)?,
            },
            tick: amount(current)?,
            levels: [0; 5],
            build: None,
        })
    }

    /// A structure's type, as a structure row or an event row names it.
    #[inline]
    pub(super) fn structure_kind(&self, text: &str) -> Result<StructureKind, StoreError> {
        text.parse::<StructureKind>()
            .map_err(|e| self.bad(e.to_string()))
    }

    /// A structure row's level, of the system with row id `system`.
    #[inline]
    pub(super) fn level(&self, system: i64, level: i64) -> Result<u32, StoreError> {
        u32::try_from(level)
            .map_err(|_| self.bad(format!("system {system} has structure level {level}")))
    }

    /// An event row's action, of the system with row id `system`: a build is the only one.
    pub(super) fn event_action(&self, system: i64, action: &str) -> Result<(), StoreError> {
        if action != "build" {
            return Err(self.bad(format!(
                "system {system} has an event of unknown action '{action}'"
            )));
        }
        Ok(())
    }

    /// The structure an event row builds (`None`: the column is NULL, which names no
    /// structure).
    pub(super) fn event_structure(
        &self,
        structure: Option<&str>,
    ) -> Result<StructureKind, StoreError> {
        self.structure_kind(structure.unwrap_or_default())
    }

    /// Puts an event row's build, completing at `completion`, into its system (row id
    /// `id`): a system has at most one build in flight.
    pub(super) fn set_build(
        &self,
        system: &mut System,
        id: i64,
        completion: i64,
        structure: StructureKind,
    ) -> Result<(), StoreError> {
        if system.build.is_some() {
            return Err(self.bad(format!("system {id} has more than one build in flight")));
        }
        system.build = Some(Build {
            completion_tick: u64::try_from(completion)
                .map_err(|_| self.bad(format!("system {id} has completion tick {completion}")))?,
            structure,
        });
        Ok(())
    }

    /// The galaxy from its decoded rows and their row ids (`ids[i]` and `event_ids[i]`
    /// belong to `systems[i]`), when together they make one (see [`RowIds::assemble`]).
    pub(super) fn assemble(
        &self,
        config: GalaxyConfig,
        tick: u64,
        systems: Vec<System>,
        ids: &[i64],
        event_ids: &[Option<i64>],
    ) -> Result<(Galaxy, RowIds), StoreError> {
        RowIds::assemble(self.galaxy, config, tick, systems, ids, event_ids)
            .map_err(|reason| self.bad(reason))
    }
}
