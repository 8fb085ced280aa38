//! Galactic War: a real-time strategy game whose state lives in memory and reaches SQLite
//! (or PostgreSQL) in the background, so players never wait on the disk.
//!
//! # Linking the library
//! What a program that links the library uses (`examples/embedded.rs` uses nothing else):
//! - [`app`]: [`app::AppState`], the game's state: opened on [`settings`], it creates,
//!   takes orders, answers details and listings, deletes, flushes (`save_all`), shuts
//!   down and backs up; its health and metrics; the errors and answers it returns (a
//!   database's failure as its [`app::FailureKind`] and message).
//! - [`model`]: the game itself (galaxies, systems, structures, the level formula, accrual,
//!   builds, galaxy configs and presets). Pure: no I/O, no locks, time passed in as ticks.
//! - [`archive`]: a galaxy as one compressed, checksummed, versioned byte string (an
//!   export file): [`archive::to_file`] and [`archive::from_file`].
//! - [`settings`]: the environment (README, *Configuration*) parsed once into validated
//!   settings.
//! - [`serve`]: serving the game over HTTP from bound listeners until a shutdown token
//!   fires, then the final flush: [`serve::serve`], owning no process-wide state; typed
//!   start-up errors and the exit statuses they earn.
//! - [`cli`]: the `galactic-war` command line, for a program's `main` ([`cli::main`]).
//!
//! # Inside
//! Private to the crate (`cargo doc --document-private-items` shows them); the layers, the
//! code map and the invariants are in `ARCHITECTURE.md`. Bottom to top (a module names
//! only modules on its own floor or below; `tests/layers.rs` keeps it so):
//! - `model`, `archive` (a galaxy as one compressed, checksummed byte string), `clock`,
//!   `time`, `logging`, `systemd`, `machine`: leaves.
//! - `settings`: the environment, validated.
//! - `store`: the seam to a database (`WriteStore`, `ReadStore`, `ClaimStore`) and the
//!   SQLite and PostgreSQL stores behind it with their migrations (`sql/`).
//! - `galaxies`: **where a galaxy's life is decided** (creating, loading, live,
//!   deleting, evicted, gone), the per-galaxy cells and the consistent cut the writer
//!   takes of one, and **the lock order** of every lock in the program.
//! - `persistence`: the write-behind engine: the writer thread that alone writes, its bulk
//!   jobs, loads on a cache miss, metrics and health, the one-daemon-per-database lock,
//!   online backups.
//! - `app`, then `http` (a bounded blocking HTTP/1.1 server, the API routes, `/metrics`),
//!   then `serve`, then `check` (`galactic-war check`), `port` (`galactic-war export`
//!   and `import`: galaxies to archive files and back) and `cli`.
//! - `testing`, with the `testing` feature only: what the crate's own tests and benches
//!   reach inside; not API.

#![forbid(unsafe_code)]

pub mod app;
pub mod archive;
pub(crate) mod check;
pub mod cli;
pub(crate) mod clock;
pub(crate) mod galaxies;
pub(crate) mod http;
pub(crate) mod logging;
pub(crate) mod machine;
pub mod model;
pub(crate) mod persistence;
pub(crate) mod port;
pub mod serve;
pub mod settings;
pub(crate) mod store;
pub(crate) mod systemd;
#[cfg(feature = "testing")]
pub mod testing;
pub(crate) mod time;
