//! Durable requests (`?durable=1`, README *Durable orders*): an order or a creation
//! acknowledged only once a commit holding it is synced to stable storage.
//!
//! An order is applied like any other (under its galaxy's lock, the writer told after
//! unlocking), then its thread asks the writer for a durable flush
//! ([`WriterHandle::wait_durable`](crate::persistence::writer::WriterHandle::wait_durable))
//! and waits, holding no lock: the writer starts a synced commit at once, and every change
//! and durable request waiting then rides in it (group commit). When no commit can make
//! it durable (persistence off, memory-only) the request is refused before anything
//! changes; when the commit fails or does not come in time, the order stays applied in
//! memory and queued, and the caller is told so ([`AppError::NotDurable`]), so that it
//! does not send again an order that is in flight.

use super::{AppError, AppState, PersistError, PersistenceState};
use crate::model::{Build, StructureKind};
use crate::persistence::Engine;

/// How a request is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once applied in memory; saved in the background within the loss window.
    #[default]
    WriteBehind,
    /// Once a commit holding it is synced to stable storage (`?durable=1`).
    Durable,
}

/// How a creation is admitted and acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Bound by `GWAR_MAX_TOTAL_SYSTEMS` and `GWAR_MIN_FREE_DISK` (a caller without the
    /// admin token); every creation counts in them either way.
    pub within_budget: bool,
    pub durability: Durability,
}

impl AppState {
    /// Orders a build like [`AppState::build`]; with [`Durability::Durable`], returns only
    /// once the order is in a commit synced to stable storage. Refused before anything
    /// changes when no commit could make it durable ([`AppError::DurabilityUnavailable`]);
    /// [`AppError::NotDurable`] when it was applied but is not known to be durable.
    pub fn build_with(
        &self,
        name: &str,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
        durability: Durability,
    ) -> Result<Build, AppError> {
        let engine = match durability {
            Durability::WriteBehind => None,
            Durability::Durable => Some(self.durable_engine()?),
        };
        let build = self.build(name, tick, x, y, structure)?;
        if let Some(engine) = engine {
            engine
                .writer()
                .wait_durable()
                .map_err(|cause| match cause {
                    // Dropped with the galaxy, not queued: nothing of it will be saved here.
                    PersistError::Lost(_) => AppError::Persistence(cause),
                    cause => AppError::NotDurable {
                        galaxy: name.to_owned(),
                        cause,
                    },
                })?;
        }
        Ok(build)
    }

    /// The engine that can make a request durable, or why none can.
    pub(super) fn durable_engine(&self) -> Result<&Engine, AppError> {
        let unavailable = |reason| Err(AppError::DurabilityUnavailable { reason });
        match &self.shared.engine {
            Some(engine) => Ok(engine),
            None if self.shared.metrics.state() == PersistenceState::MemoryOnly => {
                unavailable("the database could not be opened at start-up (memory-only mode)")
            }
            None => unavailable("persistence is off (GWAR_PERSISTENCE_ENABLED=false)"),
        }
    }
}
