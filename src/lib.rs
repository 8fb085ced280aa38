//! Galactic War: a real-time strategy game whose state lives in memory and reaches SQLite
//! in the background, so players never wait on the disk.
//!
//! # Layout
//! - [`model`]: the game itself (galaxies, systems, structures, the level formula, accrual,
//!   builds, galaxy configs and presets) and the change tracking every operation feeds.
//!   Pure: no I/O, no locks, time passed in as ticks.
//! - [`galaxies`]: **where a galaxy's life is decided** (creating, loading, live,
//!   deleting, evicted, gone), the per-galaxy cells and the consistent cut the writer
//!   takes of one, and **the lock order** of every lock in the program.
//! - [`persistence`]: the write-behind engine: **the store interface**
//!   ([`persistence::store`]: `WriteStore`, `ReadStore`) and the SQLite store behind it
//!   with its migrations (`sql/`), the writer thread that alone writes, metrics and
//!   health, the one-daemon-per-database lock, and online backups.
//! - [`app`]: the application state: create, orders, details, delete, flush, shutdown and
//!   backup, on top of the model, the galaxies and the engine.
//! - [`settings`]: the environment (CONTRACT §4) parsed once into validated settings.
//! - [`http`]: a bounded blocking HTTP/1.1 server, the API routes, and `/metrics`.
//! - [`systemd`]: readiness, status, watchdog and stopping notices.
//! - [`clock`]: the time the writer's policies read: the system's, or a manual one in tests.
//! - [`check`]: `galactic-war check`, the read-only consistency check of a database.
//! - [`serve`]: serving the game from bound listeners until a shutdown token fires, then
//!   the final flush: [`serve::serve`], owning no process-wide state; typed start-up
//!   errors and the exit statuses they earn.
//! - [`daemon`]: the `galactic-war` command, the process edge: settings, logging,
//!   listeners, signals and exit status around [`serve::serve`]; the subcommands.
//!   `src/main.rs` only hands it the arguments.

#![forbid(unsafe_code)]

pub mod app;
pub mod check;
pub mod clock;
pub mod daemon;
pub mod galaxies;
pub mod http;
pub mod model;
pub mod persistence;
pub mod serve;
pub mod settings;
pub mod systemd;
