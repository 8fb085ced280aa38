//! Galaxies the database cannot take, kept from holding up every other galaxy.
//!
//! A batch is one transaction for every galaxy in it, so one galaxy whose stored rows no
//! longer match memory (a row removed or moved by hand, say) would fail every batch, and
//! with it every galaxy's loss window. A galaxy found inconsistent once is a *suspect*:
//! its row ids are read afresh for the retry (a stale cache is the usual cause). Found
//! inconsistent again with fresh ids, it is *held*: left out of batches, its changes kept
//! in memory, named in health, and tried again once per auto-save interval, so a repaired
//! database takes it back. While any galaxy is held, health is not `healthy` and a flush
//! does not answer success.

use std::collections::{BTreeMap, HashSet};

use super::report::LOG;
use crate::store::StoreFailure;

#[derive(Default)]
pub(super) struct Quarantine {
    suspects: HashSet<String>,
    held: BTreeMap<String, StoreFailure>,
    /// An auto-save interval came round: the next batch tries the held galaxies too.
    retry_due: bool,
}

impl Quarantine {
    pub(super) fn is_held(&self, galaxy: &str) -> bool {
        self.held.contains_key(galaxy)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether the batch being collected tries the held galaxies (once per interval).
    pub(super) fn take_retry(&mut self) -> bool {
        std::mem::take(&mut self.retry_due)
    }

    /// An auto-save interval came round.
    pub(super) fn interval(&mut self) {
        self.retry_due = !self.held.is_empty();
    }

    /// `galaxy`, part of the failed batch, was found inconsistent; true when it is held
    /// from now on (or still is), so the others may be retried at once without it.
    pub(super) fn inconsistent(&mut self, galaxy: &str, failure: StoreFailure) -> bool {
        if self.held.contains_key(galaxy) || self.suspects.remove(galaxy) {
            if !self.held.contains_key(galaxy) {
                log::error!(target: LOG, "galaxy '{galaxy}' cannot be saved: {}; its changes stay in memory, other galaxies are saved without it, and it is tried again every auto-save interval", failure.message);
            }
            self.held.insert(galaxy.to_owned(), failure);
            true
        } else {
            self.suspects.insert(galaxy.to_owned());
            false
        }
    }

    /// These galaxies were saved: no longer suspect or held.
    pub(super) fn saved<'a>(&mut self, galaxies: impl IntoIterator<Item = &'a str>) {
        for galaxy in galaxies {
            self.suspects.remove(galaxy);
            if self.held.remove(galaxy).is_some() {
                log::info!(target: LOG, "galaxy '{galaxy}' is saved again");
            }
        }
    }

    /// The galaxy is no longer this daemon's to save (another daemon took it); true when
    /// it was held.
    pub(super) fn forget(&mut self, galaxy: &str) -> bool {
        self.suspects.remove(galaxy);
        self.held.remove(galaxy).is_some()
    }

    /// The failure of one held galaxy, for health and flushes.
    pub(super) fn failure(&self) -> Option<&StoreFailure> {
        self.held.values().next()
    }
}
