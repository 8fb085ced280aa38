//! Galactic War: a real-time strategy game whose state lives in memory and reaches SQLite
//! in the background, so players never wait on the disk.
//!
//! # Layout
//! - [`model`]: the game itself (galaxies, systems, structures, the level formula, accrual,
//!   builds, galaxy configs and presets) and the change tracking every operation feeds.
//!   Pure: no I/O, no locks, time passed in as ticks.
//!
//! The persistence engine (store, writer thread, application state) and the daemon (HTTP,
//! signals, systemd) build on this model.

#![forbid(unsafe_code)]

pub mod model;
