//! Durable requests (`?durable=1`, README *Durable orders, precisely*): an order or a
//! creation acknowledged only once a commit holding it is synced to stable storage.
//!
//! An order is applied like any other (under its galaxy's lock, the writer told after
//! unlocking), then its thread asks the writer for a durable flush naming the galaxy
//! (`WriterHandle::request_durable`) and waits, holding no lock, on a [`DurableTicket`]:
//! the writer starts a synced commit at once, and every change and durable request
//! waiting then rides in it (group commit). When no commit can make
//! it durable (persistence off, memory-only) the request is refused before anything
//! changes; when the commit fails or does not come in time, the order stays applied in
//! memory and queued, and the caller is told so ([`AppError::NotDurable`]), so that it
//! does not send again an order that is in flight.

use super::{AppError, AppState, PersistError, PersistenceState};
use crate::model::{Build, StructureKind};
use crate::persistence::writer::FlushWait;
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

/// A durable order applied in memory, its synced commit still to come (see
/// [`AppState::build_durably`]).
pub struct DurableTicket {
    galaxy: String,
    flush: Result<FlushWait, PersistError>,
}

impl DurableTicket {
    /// Returns once the order is in a commit synced to stable storage, or why it is not
    /// known to be ([`AppError::NotDurable`]: applied, queued, saved later; or the galaxy
    /// was lost to another daemon with the order, [`PersistError::Lost`]). Waits at most
    /// the save's bound (twice `GWAR_DB_CALL_TIMEOUT_SECS` and a second).
    pub fn wait(self) -> Result<(), AppError> {
        match self.flush.and_then(FlushWait::wait) {
            Ok(_) => Ok(()),
            // Dropped with the galaxy, not queued: nothing of it will be saved here.
            Err(cause @ PersistError::Lost(_)) => Err(AppError::Persistence(cause)),
            Err(cause) => Err(AppError::NotDurable {
                galaxy: self.galaxy,
                cause,
            }),
        }
    }
}

impl AppState {
    /// Orders a build like [`AppState::build`]; with [`Durability::Durable`], returns only
    /// once the order is in a commit synced to stable storage (see
    /// [`AppState::build_durably`] for the errors).
    pub fn build_with(
        &self,
        name: &str,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
        durability: Durability,
    ) -> Result<Build, AppError> {
        match durability {
            Durability::WriteBehind => self.build(name, tick, x, y, structure),
            Durability::Durable => {
                let (build, ticket) = self.build_durably(name, tick, x, y, structure)?;
                ticket.wait()?;
                Ok(build)
            }
        }
    }

    /// Orders a build and asks at once for a synced commit holding it; the returned ticket
    /// waits for that commit, so that a caller with many orders in flight (the HTTP edge)
    /// need not hold a thread per order until then. Refused before anything changes when no
    /// commit could make it durable ([`AppError::DurabilityUnavailable`]).
    pub fn build_durably(
        &self,
        name: &str,
        tick: u64,
        x: u64,
        y: u64,
        structure: StructureKind,
    ) -> Result<(Build, DurableTicket), AppError> {
        let engine = self.durable_engine()?;
        let (build, cell) = self.build_in(name, tick, x, y, structure, true)?;
        // The writer makes the galaxy pending on reading the request, so the commit that
        // answers holds the order even if its dirty marker (sent by whichever order made
        // the galaxy dirty, maybe on another thread) has not arrived yet.
        let flush = match cell {
            Some(cell) => engine.writer().request_durable(cell),
            None => Err(PersistError::Stopped),
        };
        let ticket = DurableTicket {
            galaxy: name.to_owned(),
            flush,
        };
        Ok((build, ticket))
    }

    /// The engine that can make a request durable, or why none can.
    pub(super) fn durable_engine(&self) -> Result<&Engine, AppError> {
        let unavailable = |reason| Err(AppError::DurabilityUnavailable { reason });
        match &self.shared.engine {
            Some(engine) if engine.path().is_none() && engine.server().is_none() => {
                unavailable("the database is in memory (sqlite::memory:)")
            }
            Some(engine) => Ok(engine),
            None if self.shared.metrics.state() == PersistenceState::MemoryOnly => {
                unavailable("the database could not be opened at start-up (memory-only mode)")
            }
            None => unavailable("persistence is off (GWAR_PERSISTENCE_ENABLED=false)"),
        }
    }
}
