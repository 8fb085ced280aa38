//! Galactic War: a real-time strategy game whose state lives in memory and reaches SQLite
//! in the background, so players never wait on the disk.
//!
//! # Layout
//! - [`model`]: the game itself (galaxies, systems, structures, the level formula, accrual,
//!   builds, galaxy configs and presets) and the change tracking every operation feeds.
//!   Pure: no I/O, no locks, time passed in as ticks.
//! - [`persistence`]: the write-behind engine: the SQLite store and its migrations
//!   (`sql/`), the writer thread that alone writes, the per-galaxy cells it cuts batches
//!   from, metrics and health, the one-daemon-per-database lock, and online backups.
//! - [`app`]: the application state: the galaxy cache, load on miss, create, orders,
//!   details, delete, flush, shutdown and backup, on top of the model and the engine.
//! - [`settings`]: the environment (CONTRACT §4) parsed once into validated settings.
//! - [`http`]: a bounded blocking HTTP/1.1 server, the API routes, and `/metrics`.
//! - [`systemd`]: readiness, status, watchdog and stopping notices.
//! - [`clock`]: the time the writer's policies read: the system's, or a manual one in tests.
//! - [`check`]: `galactic-war check`, the read-only consistency check of a database.
//! - [`daemon`]: the `galactic-war` command: serve, signals, final flush, subcommands.
//!   `src/main.rs` only hands it the arguments.

#![forbid(unsafe_code)]

pub mod app;
pub mod check;
pub mod clock;
pub mod daemon;
pub mod http;
pub mod model;
pub mod persistence;
pub mod settings;
pub mod systemd;
