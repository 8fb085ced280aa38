//! A galaxy's history as the admin reads it (README, *History*): its saved entries from a
//! tick on, oldest first, without the completions still ahead of the game's clock.

use super::{AppError, AppState};
use crate::galaxies::valid_galaxy_name;
use crate::model::HistoryEntry;

/// One page of a galaxy's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    pub name: String,
    pub since_tick: u64,
    pub limit: usize,
    /// Oldest first; an entry's changes were saved before it shows here.
    pub entries: Vec<HistoryEntry>,
}

impl AppState {
    /// Galaxy `name`'s saved history from `since_tick`, at most `limit` entries, up to
    /// tick `now` (a build's completion shows once its tick has come). The next page
    /// starts at the last entry's tick: entries of that tick come again.
    pub fn history(
        &self,
        name: &str,
        since_tick: u64,
        limit: usize,
        now: u64,
    ) -> Result<HistoryPage, AppError> {
        if !valid_galaxy_name(name) {
            return Err(AppError::BadName(name.to_owned()));
        }
        self.refuse_if_memory_only()?;
        let engine = match &self.shared.engine {
            Some(engine) if engine.keeps_archives() => engine,
            _ => return Err(AppError::NoHistory),
        };
        let known = self.shared.galaxies.is_live(name)
            || engine.is_stored(name)?
            || engine.is_archived(name)?;
        if !known {
            return Err(AppError::UnknownGalaxy(name.to_owned()));
        }
        let mut entries = engine.history(name, since_tick, limit)?;
        entries.retain(|entry| entry.tick <= now);
        Ok(HistoryPage {
            name: name.to_owned(),
            since_tick,
            limit,
            entries,
        })
    }
}
