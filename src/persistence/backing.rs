//! What the galaxies read and take through ([`Backing`]): the engine, or nothing when
//! persistence is off. Lives beside [`Engine`] so that `crate::galaxies` knows only its own
//! trait and the engine's answers are translated here, never in the app above. It decides
//! nothing about a galaxy's life (that is `crate::galaxies`'s): it forwards.

use super::Engine;
use std::time::Instant;

use crate::galaxies::{Backing, LifeError, Taken};
use crate::model::Galaxy;
use crate::store::{Claim, Epoch, RowIds, StoreError};

/// The galaxies' backing store: the engine, or nothing when persistence is off.
impl Backing for Option<Engine> {
    type Ids = RowIds;

    fn persists(&self) -> bool {
        self.is_some()
    }

    fn take(&self, name: &str) -> Result<Taken, StoreError> {
        let Some(engine) = self else {
            return Ok(Taken::Unfenced);
        };
        Ok(match engine.take(name)? {
            None => Taken::Unfenced,
            Some((Claim::Owned { epoch }, lease_until)) => Taken::Ours { epoch, lease_until },
            Some((Claim::Elsewhere(owner), _)) => Taken::Elsewhere(owner),
            Some((Claim::Missing, _)) => Taken::Missing,
        })
    }

    fn read(&self, name: &str) -> Result<Option<(Galaxy, RowIds)>, StoreError> {
        match self {
            Some(engine) => engine.read(name),
            None => Ok(None),
        }
    }

    fn published(&self, name: &str, ids: RowIds, epoch: Option<Epoch>) {
        if let Some(engine) = self {
            engine.adopt_ids(name, ids, epoch);
        }
    }

    fn taken_unused(&self, name: &str, epoch: Epoch) {
        if let Some(engine) = self {
            engine.writer().taken_unused(name.to_owned(), epoch);
        }
    }

    fn is_stored(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Some(engine) => engine.is_stored(name),
            None => Ok(false),
        }
    }

    fn stored_names(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Some(engine) => engine.stored_names(),
            None => Ok(Vec::new()),
        }
    }

    fn stored_sizes(&self) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            Some(engine) => engine.stored_sizes(),
            None => Ok(Vec::new()),
        }
    }

    fn stored_owners(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let Some(engine) = self else {
            return Ok(Vec::new());
        };
        Ok(engine
            .stored_owners()?
            .into_iter()
            .map(|(name, owner)| (name, owner.map(|owner| owner.url)))
            .collect())
    }

    fn own_url(&self) -> Option<&str> {
        self.as_ref().and_then(Engine::own_url)
    }

    fn is_archived(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Some(engine) => engine.is_archived(name),
            None => Ok(false),
        }
    }

    fn archived_names(&self) -> Result<Vec<String>, StoreError> {
        let Some(engine) = self else {
            return Ok(Vec::new());
        };
        Ok(engine.archives()?.into_iter().map(|a| a.name).collect())
    }

    fn restores_on_demand(&self) -> bool {
        self.as_ref().is_some_and(Engine::restores_on_demand)
    }

    fn restore(&self, name: &str) -> Result<Option<(Galaxy, Option<Instant>)>, LifeError> {
        match self {
            Some(engine) => engine.restore(name),
            None => Ok(None),
        }
    }
}
