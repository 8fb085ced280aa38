//! Listing the galaxies (`GET /galaxies`): stored, archived and in memory, by name, with
//! where each is served. Takes the catalog lock only to leave out creations not yet
//! reported and deletions not yet committed.

use std::collections::BTreeMap;

use super::{Backing, Galaxies, LifeError, Listed};

impl Galaxies {
    /// Stored and in-memory galaxies by name, with whether each is in memory and which
    /// daemon owns it (where daemons share the database).
    pub(crate) fn listing(
        &self,
        backing: &impl Backing,
    ) -> Result<BTreeMap<String, Listed>, LifeError> {
        let mut listing = BTreeMap::new();
        if backing.persists() {
            let stored = backing.stored_owners()?;
            // A creation's last chunk committed but not yet reported is not there yet.
            let creating = self.catalog.lock();
            let deleting = self.deleting.lock();
            for (name, owner) in stored {
                if !deleting.contains(&name) && !creating.contains_key(&name) {
                    let (loaded, archived) = (false, false);
                    let listed = Listed {
                        loaded,
                        archived,
                        owner,
                    };
                    listing.insert(name, listed);
                }
            }
            drop((creating, deleting));
            for name in backing.archived_names()? {
                let (loaded, archived, owner) = (false, true, None);
                let listed = Listed {
                    loaded,
                    archived,
                    owner,
                };
                listing.entry(name).or_insert(listed);
            }
        }
        let ours = backing.own_url().map(str::to_owned);
        for cell in self.registry.all() {
            let (loaded, archived, owner) = (true, false, ours.clone());
            let listed = Listed {
                loaded,
                archived,
                owner,
            };
            listing.insert(cell.name().to_owned(), listed);
        }
        Ok(listing)
    }
}
