//! The log targets: the names an operator filters on with `RUST_LOG`, each defined once.
//!
//! Code logs under its module's path by default; the engine and both stores log under one
//! name instead, so `RUST_LOG=galactic_war::persistence=debug` shows everything that
//! concerns saving, whichever module it comes from. A few lines keep the name they had
//! before their code moved, so an operator's filter keeps working. Imports nothing of the
//! crate.

/// The write-behind engine, the stores, and the app's persistence notices.
pub(crate) const PERSISTENCE: &str = "galactic_war::persistence";

/// The process edge's own lines (signals, a start-up that failed): the name they had
/// before the module became `cli`.
pub(crate) const DAEMON: &str = "galactic_war::daemon";

/// The watchdog's lines, logged by `serve`'s supervisor.
pub(crate) const SYSTEMD: &str = "galactic_war::systemd";

/// A request that failed, as the routes report it.
pub(crate) const ROUTES: &str = "galactic_war::http::routes";
