//! The live galaxies by name: a map published whole and read without locking (every order
//! and read looks a name up, and a shared lock word bounced between cores cost more than
//! the rest of an order). Changes are rare (a galaxy created, loaded, evicted or deleted)
//! and serialised by the change lock, which is taken last: a cell's lock may be held while
//! the registry changes, never the other way round.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::cell::GalaxyCell;

/// The galaxies in memory, by name: a map published whole, read without locking, and
/// replaced by a changed copy on the rare change (a galaxy created, loaded, evicted or
/// deleted), so a change costs a copy of the map, in proportion to the galaxies in memory.
#[derive(Debug, Default)]
pub(super) struct Registry {
    cells: ArcSwap<HashMap<String, Arc<GalaxyCell>>>,
    /// Serialises changes, so none is lost to another made from the same old map.
    changing: Mutex<()>,
}

impl Registry {
    pub(super) fn get(&self, name: &str) -> Option<Arc<GalaxyCell>> {
        self.cells.load().get(name).cloned()
    }

    /// Applies `edit` to a copy of the map and publishes the copy.
    fn change<T>(&self, edit: impl FnOnce(&mut HashMap<String, Arc<GalaxyCell>>) -> T) -> T {
        let _changing = self.changing.lock();
        let mut cells = HashMap::clone(&self.cells.load());
        let result = edit(&mut cells);
        self.cells.store(Arc::new(cells));
        result
    }

    pub(super) fn insert(&self, cell: Arc<GalaxyCell>) {
        self.change(|cells| cells.insert(cell.name().to_owned(), cell));
    }

    /// Removes `cell` if its name still maps to it (and not to a newer cell).
    pub(super) fn remove_cell(&self, cell: &Arc<GalaxyCell>) {
        self.change(|cells| {
            if cells.get(cell.name()).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                cells.remove(cell.name());
            }
        });
    }

    /// Every cell, copied out of the published map (whose guard is for brief use).
    pub(super) fn all(&self) -> Vec<Arc<GalaxyCell>> {
        self.cells.load().values().cloned().collect()
    }

    pub(super) fn len(&self) -> usize {
        self.cells.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Galaxy, GalaxyConfig};

    fn cell(name: &str) -> Arc<GalaxyCell> {
        let (config, _) = GalaxyConfig::preset("blitz").unwrap();
        GalaxyCell::new(
            Galaxy::create(name, config, 1, 0).unwrap(),
            std::time::Instant::now(),
            None,
        )
    }

    #[test]
    fn remove_cell_leaves_a_newer_cell_of_the_same_name() {
        let registry = Registry::default();
        let old = cell("g");
        registry.insert(old.clone());
        let new = cell("g");
        registry.insert(new.clone());
        registry.remove_cell(&old);
        assert!(Arc::ptr_eq(&registry.get("g").unwrap(), &new));
        registry.remove_cell(&new);
        assert!(registry.get("g").is_none() && registry.len() == 0);
    }

    #[test]
    fn concurrent_changes_are_all_kept() {
        let registry = Registry::default();
        let cells: Vec<_> = (0..400).map(|n| cell(&format!("g{n}"))).collect();
        std::thread::scope(|scope| {
            for chunk in cells.chunks(100) {
                let registry = &registry;
                scope.spawn(move || {
                    for cell in chunk {
                        registry.insert(cell.clone());
                    }
                });
            }
        });
        assert_eq!(registry.len(), 400, "no insert lost to another");
        registry.remove_cell(&registry.get("g3").unwrap());
        assert_eq!(registry.all().len(), 399);
    }
}
