//! Creating a galaxy ([`AppState::create_galaxy_with`] and its two short forms): the
//! name reserved and judged by the budgets under the catalog lock, the galaxy made in
//! memory holding no lock, then written by the writer in chunks between other galaxies'
//! batches; invisible until its last chunk commits.

use super::durable::{CreateOptions, Durability};
use super::{valid_galaxy_name, AppError, AppState, CreatedGalaxy, PersistError};
use crate::model::{Galaxy, GalaxyConfig};
use crate::store::FailureKind;

impl AppState {
    /// Creates a galaxy from `config` and returns once it is saved (with persistence on).
    /// `seed` picks the map; without one, a random seed is drawn. The creation budgets do
    /// not bind it (the caller is the operator's program) but it counts in them; see
    /// [`AppState::create_galaxy_within_budget`].
    pub fn create_galaxy(
        &self,
        name: &str,
        config: GalaxyConfig,
        seed: Option<u64>,
        tick: u64,
    ) -> Result<CreatedGalaxy, AppError> {
        self.create_galaxy_with(name, config, seed, tick, CreateOptions::default())
    }

    /// [`AppState::create_galaxy`] for a caller without the admin token: refused
    /// ([`AppError::OverBudget`]) past `GWAR_MAX_TOTAL_SYSTEMS` or `GWAR_MIN_FREE_DISK`.
    pub fn create_galaxy_within_budget(
        &self,
        name: &str,
        config: GalaxyConfig,
        seed: Option<u64>,
        tick: u64,
    ) -> Result<CreatedGalaxy, AppError> {
        let options = CreateOptions {
            within_budget: true,
            ..CreateOptions::default()
        };
        self.create_galaxy_with(name, config, seed, tick, options)
    }

    /// A creation, bound by the budgets or not, durable or not: with
    /// [`Durability::Durable`] the commit that makes the galaxy exist is synced to stable
    /// storage before this returns, and without a database to sync it is refused
    /// ([`AppError::DurabilityUnavailable`]) before anything is reserved.
    ///
    /// The name is reserved first (and judged by the budgets, counted under the catalog
    /// lock with the creations in progress); the galaxy is made in memory without any lock held,
    /// then written by the writer in chunks between other galaxies' batches. Until the
    /// last chunk commits nobody can see it: loads find nothing and a second creation of
    /// the name is refused. Only then does it enter the registry.
    pub fn create_galaxy_with(
        &self,
        name: &str,
        config: GalaxyConfig,
        seed: Option<u64>,
        tick: u64,
        options: CreateOptions,
    ) -> Result<CreatedGalaxy, AppError> {
        self.refuse_if_memory_only()?;
        let durable = options.durability == Durability::Durable;
        if durable {
            self.durable_engine()?;
        }
        let bound = options.within_budget;
        if !valid_galaxy_name(name) {
            return Err(AppError::BadName(name.to_owned()));
        }
        // A database that does not answer the writer would not answer the creation's
        // look-ups either: refused at once rather than held on the database's timeouts.
        self.shared.order_limits.check_stall(&self.shared.metrics)?;
        let shared = &self.shared;
        let systems = config.system_count;
        let admit = |usage| {
            shared
                .budget
                .admit(usage, systems, bound)
                .map_err(AppError::from)
        };
        let reserved = (shared.galaxies).reserve_counted(&shared.engine, name, systems, admit)?;
        let mut galaxy = Galaxy::create(name, config, seed.unwrap_or_else(random_seed), tick)?;
        // Creation writes every row of the new galaxy, so nothing is left to save after it.
        galaxy.take_changes();
        let (galaxy, lease_until) = match &shared.engine {
            Some(engine) => {
                let created =
                    engine
                        .writer()
                        .create(Box::new(galaxy), durable)
                        .map_err(|error| {
                            match &error {
                                // Another daemon created the name first (several daemons).
                                PersistError::Failed(failure)
                                    if failure.kind == FailureKind::Exists =>
                                {
                                    AppError::GalaxyExists(name.to_owned())
                                }
                                _ => AppError::Persistence(error),
                            }
                        })?;
                (*created.galaxy, created.lease_until)
            }
            None => {
                log::info!(
                    "galaxy '{name}' created in memory ({} systems)",
                    galaxy.systems().len()
                );
                (galaxy, None)
            }
        };
        let created = CreatedGalaxy {
            name: name.to_owned(),
            tick: galaxy.tick(),
            systems: galaxy.systems().len(),
        };
        reserved.publish(galaxy, lease_until);
        Ok(created)
    }
}

/// A seed for galaxies created without one: the clock mixed with the process's random
/// hash keys, so two creations in the same nanosecond still differ.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}
