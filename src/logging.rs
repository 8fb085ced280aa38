//! The log targets: the names an operator filters on with `RUST_LOG`, each defined once.
//!
//! Code logs under its module's path by default; the engine and both stores log under one
//! name instead, so `RUST_LOG=galactic_war::persistence=debug` shows everything that
//! concerns saving, whichever module it comes from. Imports nothing of the crate.

/// The write-behind engine, the stores, and the app's persistence notices.
pub(crate) const PERSISTENCE: &str = "galactic_war::persistence";
