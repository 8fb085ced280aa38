//! What happened to a galaxy, one entry per event (README, *History*): every order applied
//! and every build completed, with its tick, system, structure and the level it brings.
//!
//! A build's completion is certain from the moment it is ordered (nothing cancels one), so
//! both entries are recorded by the order itself: the completion carries its completion
//! tick, and a reader asking for the history up to a tick leaves out those still ahead.
//! Entries ride the galaxy's change set (`changes.rs`), so they are saved in the same
//! transaction as the state they produced, given back with it when a save fails, and
//! dropped with it where nothing is saved.

use super::structure::StructureKind;

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HistoryKind {
    /// A build was ordered (its resources paid).
    Ordered,
    /// A build completed: the structure reached `level`.
    Completed,
}

impl HistoryKind {
    pub fn name(self) -> &'static str {
        match self {
            HistoryKind::Ordered => "build",
            HistoryKind::Completed => "completed",
        }
    }
}

/// One event of a galaxy's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HistoryEntry {
    pub tick: u64,
    pub x: u32,
    pub y: u32,
    pub kind: HistoryKind,
    pub structure: StructureKind,
    /// The level the build brings the structure to.
    pub level: u32,
}
