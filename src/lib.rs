//! Galactic War: a real-time strategy game whose state lives in memory and reaches SQLite
//! (or PostgreSQL) in the background, so players never wait on the disk.
//!
//! # Linking the library
//! What a program that links the library uses (`examples/embedded.rs` uses nothing else):
//! - [`app`]: [`app::AppState`], the game's state: opened on [`settings`], it creates,
//!   takes orders, answers details and listings, deletes, flushes (`save_all`), shuts
//!   down and backs up; its health and metrics; the errors and answers it returns,
//!   the engine's among them.
//! - [`model`]: the game itself (galaxies, systems, structures, the level formula, accrual,
//!   builds, galaxy configs and presets) and the change tracking every operation feeds.
//!   Pure: no I/O, no locks, time passed in as ticks.
//! - [`settings`]: the environment (CONTRACT §4) parsed once into validated settings.
//! - [`serve`]: serving the game over HTTP from bound listeners until a shutdown token
//!   fires, then the final flush: [`serve::serve`], owning no process-wide state; typed
//!   start-up errors and the exit statuses they earn.
//! - [`clock`]: the time the writer's policies read: the system's, or a manual one in tests.
//!
//! # Inside
//! Private to the crate (`cargo doc --document-private-items` shows them):
//! - `galaxies`: **where a galaxy's life is decided** (creating, loading, live,
//!   deleting, evicted, gone), the per-galaxy cells and the consistent cut the writer
//!   takes of one, and **the lock order** of every lock in the program.
//! - `persistence`: the write-behind engine: **the store interface**
//!   (`store`: `WriteStore`, `ReadStore`) and the SQLite and PostgreSQL
//!   stores behind it with their migrations (`sql/`), the writer thread that alone writes, metrics and
//!   health, the one-daemon-per-database lock, and online backups.
//! - `http`: a bounded blocking HTTP/1.1 server, the API routes, and `/metrics`.
//! - `systemd`: readiness, status, watchdog and stopping notices.
//! - `check`: `galactic-war check`, the read-only consistency check of a database.
//! - `daemon`: the `galactic-war` command, the process edge: settings, logging,
//!   listeners, signals and exit status around [`serve::serve`]; the subcommands.
//!   `src/main.rs` only hands it the arguments (public for that alone, and hidden here).
//! - `testing`, with the `testing` feature only: what the crate's own tests and benches
//!   reach inside; not API.

#![forbid(unsafe_code)]

pub mod app;
pub(crate) mod check;
// The `galactic-war` command: public for `src/main.rs` alone, not API.
#[doc(hidden)]
pub mod cli;
pub mod clock;
pub(crate) mod galaxies;
pub(crate) mod http;
pub mod model;
pub(crate) mod persistence;
pub mod serve;
pub mod settings;
pub(crate) mod store;
pub(crate) mod systemd;
#[cfg(feature = "testing")]
pub mod testing;
pub(crate) mod time;
