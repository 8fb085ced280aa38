//! The writer thread: the only code that writes to the database. `handle` owns what game
//! threads hold ([`WriterHandle`]), `message` what they send, and `run` the writer's
//! loop: waiting for work, reading messages, and deciding by the [`Clock`] when a batch,
//! a chunk of bulk work, the periodic work or a flush's deadline is due.
//!
//! One dedicated OS thread owns the [`WriteStore`]. Game threads never wait on it:
//! they record changes in their galaxy (under the galaxy's lock) and, when a galaxy goes
//! from clean to dirty, send a marker through a crossbeam channel. The writer batches:
//! with coalescing on, a batch commits `coalescing_delay` after its first change; with it
//! off, as soon as the writer reaches the change (whatever queued meanwhile rides along).
//!
//! - `batch`: one batch in three phases, collect (the consistent cuts) → commit (one
//!   transaction, no galaxy locked) → settle (ok: mark saved, answer flushes; failed: give
//!   the changes back, keep the flushes that may wait).
//! - `lanes`: what follows any commit or failure: health, metrics, and the retry backoff
//!   (exponential, capped at the auto-save interval), one per lane (batches, bulk jobs),
//!   with a cheap probe of the store every 500 ms that retries at once a lane whose
//!   database was down and answers again.
//! - `ownership` (PostgreSQL, several daemons): the lease on this daemon's galaxies,
//!   renewed every third of it, and galaxies lost to another daemon, dropped from memory.
//!
//! Creating and deleting whole galaxies are bulk jobs (`jobs`): a deletion is
//! committed by the next batch like any change (it marks the galaxy `deleting`), and the
//! rows of deletions and creations are written or removed one bounded chunk per turn of
//! the loop, after the batch that is due, so no galaxy's loss window waits behind another
//! galaxy's bulk work for more than a chunk. Messages (pings included) are read between
//! chunks, and shutdown stops a creation at a chunk boundary.
//!
//! The writer knows its database only through [`WriteStore`]: after each commit it gives
//! the store a turn for upkeep ([`WriteStore::after_commit`]; SQLite's asks its checkpoint
//! thread for a WAL checkpoint when due). Periodic work (every auto-save interval) saves
//! galaxy ticks that advanced, gives the store its periodic upkeep
//! ([`WriteStore::maintain`]), and evicts clean idle galaxies: only the writer can know
//! that a galaxy has no batch in flight.
//!
//! The writer knows galaxies only through the narrow handle of [`crate::galaxies`]: a dirty
//! galaxy's [`GalaxyCell`] (take a cut, give it back, mark it saved) and the
//! [`WriterSide`] (list, evict, settle deletions). Each call takes and releases the
//! galaxy's lock inside, so none is ever held during SQL.
//!
//! Time: every decision reads the writer's [`Clock`] (the system's in the daemon, a manual
//! one in the unit tests of `tests.rs`, which drive the phases and the loop's turns without
//! a thread and without sleeping). How long a batch or a chunk took is measured on the
//! real clock.
//!
//! The files point one way: `report` (the answers and errors), `jobs` and `message` (what
//! is sent) at the bottom; `state` (the [`Writer`](state::Writer) and its bookkeeping)
//! above them, with `quarantine` (galaxies the database refuses) beneath it; `run`,
//! `batch`, `lanes` and `ownership` (what the thread does) above that;
//! `handle` (what game threads hold) on top. This file only declares them and says what
//! the rest of the crate sees.
//!
//! [`Clock`]: crate::clock::Clock
//! [`WriteStore`]: crate::store::WriteStore
//! [`WriteStore::after_commit`]: crate::store::WriteStore::after_commit
//! [`WriteStore::maintain`]: crate::store::WriteStore::maintain
//! [`GalaxyCell`]: crate::galaxies::GalaxyCell
//! [`WriterSide`]: crate::galaxies::WriterSide

mod archiving;
mod batch;
mod handle;
mod jobs;
mod lanes;
mod message;
mod ownership;
mod quarantine;
mod report;
mod run;
mod spin;
mod state;
#[cfg(test)]
mod tests;

pub use handle::{FlushWait, WriterHandle};
pub(crate) use message::WriterDatabase;
pub use report::{ArchiveRefused, ArchivedGalaxy, FlushReport, PersistError};
