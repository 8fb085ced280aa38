//! Internals that this crate's own tests and benches reach into, behind the `testing`
//! feature. **Not API**: nothing here is kept stable, and a program linking the library
//! never needs it (`examples/embedded.rs` builds without it).
//!
//! The crate's tests and benches get the feature from a dev-dependency on the crate
//! itself (`Cargo.toml`), so plain `cargo test` and `cargo bench` enable it; a build of the
//! library or the daemon does not. What is here, and why:
//! - [`AppInternals`]: the engine's writer of an [`AppState`](crate::app::AppState), to run SQL on its write
//!   connection between batches ([`WriterHandle::with_connection`]: fault injection such
//!   as a tighter `max_page_count`) or to flush it directly, or with its PostgreSQL store
//!   ([`WriterHandle::with_postgres`]: the benchmark of what the fence costs); and a
//!   rewrite of every row of a galaxy (the benchmarks' "every row changed" workload).
//! - [`SqliteReader`] and [`ReadStore`]: a galaxy as stored, read apart from the engine;
//!   with [`WriteStore`], the proof (a `compile_fail` doctest on `SqliteReader`) that a
//!   read-only connection has no write method.
//! - [`SCHEMA_VERSION`], [`StartupCheck`], [`marker_path`] and [`take`]: the schema version
//!   a database is migrated to, and the clean-shutdown marker's choice of start-up check.
//! - [`WRITER_PRAGMAS`]: the writer's connection tuning, which the benchmarks' floors copy.
//! - [`HttpServer`] and its parts, [`Api`] and [`HttpMetrics`]: the HTTP server and the
//!   routes without the daemon around them (the allocation test wraps the handler; the
//!   benchmarks serve from memory).
//! - [`GalaxyInternals`], [`Changes`] and [`RowMask`]: a galaxy's change tracking, which
//!   the engine consumes (the benchmarks' hand-written floors save what it lists; the
//!   model's properties compare it).
//!
//! Every test hook of the crate is here; what a hook needs of a private field stays beside
//! that field, compiled for tests only (`WriterHandle::exec`, `SqliteWriter::connection`).

use crate::app::{AppError, AppState};
use crate::model::Galaxy;

pub use crate::http::message::{Endpoint, Handler, Limits, Reply, Request, Response};
pub use crate::http::metrics::HttpMetrics;
pub use crate::http::routes::Api;
pub use crate::http::server::HttpServer;
pub use crate::model::changes::{Changes, RowMask};
pub use crate::persistence::clean::{marker_path, take};
pub use crate::persistence::writer::WriterHandle;
pub use crate::store::postgres::{PostgresReader, PostgresWriter};
pub use crate::store::sqlite::{SqliteReader, WRITER_PRAGMAS};
pub use crate::store::sqlite::{StartupCheck, SCHEMA_VERSION};
pub use crate::store::{ReadStore, WriteStore};

/// What tests and benches reach inside an [`AppState`](crate::app::AppState); `use` it to call these as methods.
pub trait AppInternals {
    /// The engine's writer; `None` without persistence.
    fn writer(&self) -> Option<&WriterHandle>;
    /// Schedules every row of a galaxy to be written again by the next batch.
    fn rewrite_galaxy(&self, name: &str) -> Result<(), AppError>;
}

impl AppInternals for AppState {
    fn writer(&self) -> Option<&WriterHandle> {
        AppState::writer(self)
    }

    fn rewrite_galaxy(&self, name: &str) -> Result<(), AppError> {
        self.change(name, 0, |galaxy, _| {
            galaxy.mark_all_changed();
            Ok(())
        })
    }
}

/// Nothing but the crate's tests runs SQL behind the writer's back.
impl WriterHandle {
    /// Runs `work` on the writer thread with the SQLite write connection, between batches,
    /// and returns its result. For fault injection (a tighter `max_page_count`, say); the
    /// connection's transaction state must be left as found. Fails when the engine's store
    /// is not SQLite's.
    pub fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> T + Send + 'static,
    ) -> Result<T, crate::persistence::writer::PersistError> {
        self.exec(move |store| {
            crate::store::sqlite::SqliteWriter::of(store).map(|writer| work(writer.connection()))
        })?
        .ok_or_else(|| {
            crate::persistence::writer::PersistError::Failed(crate::store::StoreFailure {
                kind: crate::store::FailureKind::Other,
                message: "the store is not SQLite's".to_owned(),
            })
        })
    }

    /// Runs `work` on the writer thread with its PostgreSQL store, between batches;
    /// `None` when the engine's store is not PostgreSQL's.
    pub fn with_postgres<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut PostgresWriter) -> T + Send + 'static,
    ) -> Result<Option<T>, crate::persistence::writer::PersistError> {
        self.exec(move |store| {
            (store as &mut dyn std::any::Any)
                .downcast_mut::<PostgresWriter>()
                .map(work)
        })
    }
}

/// The change tracking of a galaxy, which the engine consumes (not the game's API): for
/// the benches' hand-written floors and the model's properties. `use` it to call these.
pub trait GalaxyInternals {
    /// Systems changed since the last take, with the rows of each.
    fn unsaved_changes(&self) -> &Changes;
    /// Takes the unsaved changes, leaving none.
    fn take_unsaved_changes(&mut self) -> Changes;
}

impl GalaxyInternals for Galaxy {
    fn unsaved_changes(&self) -> &Changes {
        self.changes()
    }

    fn take_unsaved_changes(&mut self) -> Changes {
        self.take_changes()
    }
}
