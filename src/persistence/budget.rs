//! The creation budgets (README, *Configuration*): `GWAR_MAX_TOTAL_SYSTEMS`, the systems
//! all galaxies may hold, and `GWAR_MIN_FREE_DISK`, the space the database's filesystem
//! keeps free. A creation without the admin token that would pass either is refused; one
//! with it is not bound but still counts.
//!
//! Invariants: the count a creation is judged on is taken under the catalog lock with the
//! creations in progress in it (`crate::galaxies`), so concurrent creations cannot pass
//! the budget together; the disk is looked at only for a SQLite file (PostgreSQL reports
//! its own ENOSPC, as a failed commit); nothing here blocks but one `statvfs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use super::Engine;
use crate::galaxies::{Galaxies, Usage};
use crate::machine::{free_disk_bytes, memory_total_bytes};
use crate::settings::{DatabaseUrl, Settings};
use crate::store::StoreError;

/// Resident bytes a system takes, with room to spare: measured 123 B (2 000 000 systems of
/// the blitz preset created and saved) and 135 B (`cargo bench -- --only 5`); the bench's
/// bound is 160 B.
pub const MEMORY_BYTES_PER_SYSTEM: u64 = 160;

/// Database bytes a system takes on SQLite: measured 585 B (`cargo bench -- --only 4`) and
/// 546 B plus the WAL (2 000 000 systems of the blitz preset), rounded up.
pub const DISK_BYTES_PER_SYSTEM: u64 = 600;

/// The share of the machine's memory the default budget gives the galaxies: one half (the
/// rest for the page cache the database reads through, the HTTP edge and the system).
const MEMORY_SHARE_DIVISOR: u64 = 2;

/// The budget when the machine's memory cannot be read: 10 000 000 systems (1.6 GB).
const FALLBACK_TOTAL_SYSTEMS: u64 = 10_000_000;

/// The default of `GWAR_MAX_TOTAL_SYSTEMS`: half the machine's memory
/// (`MemTotal` of `/proc/meminfo`) at [`MEMORY_BYTES_PER_SYSTEM`] each, at least one
/// system.
pub fn default_max_total_systems() -> u64 {
    memory_total_bytes().map_or(FALLBACK_TOTAL_SYSTEMS, |bytes| {
        (bytes / MEMORY_SHARE_DIVISOR / MEMORY_BYTES_PER_SYSTEM).max(1)
    })
}

/// Why a creation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    #[error("the galaxies hold {total} systems; {new} more would pass the limit of {budget} systems for creations without the admin token (GWAR_MAX_TOTAL_SYSTEMS)")]
    Systems { total: u64, new: u64, budget: u64 },
    #[error("the disk is short of space: {free} bytes free where the database lives, and a galaxy of {new} systems (about {needed} bytes, with the creations in progress) would leave less than the {min} bytes kept free for saving (GWAR_MIN_FREE_DISK)")]
    Disk {
        free: u64,
        new: u64,
        needed: u64,
        min: u64,
    },
}

/// The budgets and the last count of their use.
#[derive(Debug)]
pub struct CreationBudget {
    max_total_systems: u64,
    min_free_disk: u64,
    /// The directory holding the database file (SQLite); `None` for PostgreSQL, an
    /// in-memory database, or persistence off: no disk is watched.
    disk: Option<PathBuf>,
    /// The systems counted at the last creation or scrape.
    last_total: AtomicU64,
    /// True while a count for `/metrics` runs on its own thread: one at a time.
    counting: AtomicBool,
}

/// The budgets as `/metrics` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetSnapshot {
    pub systems_total: u64,
    pub systems_budget: u64,
    /// Free bytes and the minimum kept free, where a disk is watched and readable.
    pub disk: Option<(u64, u64)>,
}

impl CreationBudget {
    /// The budgets of `settings`, the systems one derived from the machine's memory
    /// unless set.
    pub fn new(settings: &Settings) -> CreationBudget {
        let disk = match &settings.database {
            DatabaseUrl::File(path) if settings.persistence.enabled => Some(directory_of(path)),
            _ => None,
        };
        CreationBudget {
            max_total_systems: settings
                .galaxy_limits
                .max_total_systems
                .unwrap_or_else(default_max_total_systems),
            min_free_disk: settings.persistence.min_free_disk,
            disk,
            last_total: AtomicU64::new(0),
            counting: AtomicBool::new(false),
        }
    }

    /// Records `usage` as the latest count.
    pub fn record(&self, usage: Usage) {
        self.last_total.store(usage.systems, Relaxed);
    }

    /// Counts the galaxies' systems afresh (one query of the stored sizes); on failure
    /// the last count stays.
    pub(crate) fn recount(
        &self,
        galaxies: &Galaxies,
        engine: &Option<Engine>,
    ) -> Result<(), StoreError> {
        self.record(galaxies.count_usage(engine)?);
        Ok(())
    }

    /// Starts a count for `/metrics`, unless one is running: true when the caller should
    /// run it (on a thread of its own, so that a scrape never waits on the database) and
    /// then call [`CreationBudget::counted`].
    pub(crate) fn begin_count(&self) -> bool {
        !self.counting.swap(true, Relaxed)
    }

    /// The count [`CreationBudget::begin_count`] allowed has ended.
    pub(crate) fn counted(&self) {
        self.counting.store(false, Relaxed);
    }

    /// Judges a creation of `systems` systems on what the galaxies hold (`usage`, this
    /// creation not in it yet): `bound` false (the admin token, the admin listener)
    /// passes whatever the budgets say. The count is recorded with the new galaxy in it
    /// when admitted.
    pub fn admit(&self, usage: Usage, systems: u64, bound: bool) -> Result<(), OverBudget> {
        self.record(usage);
        if bound {
            let after = usage.systems.saturating_add(systems);
            if after > self.max_total_systems {
                return Err(OverBudget::Systems {
                    total: usage.systems,
                    new: systems,
                    budget: self.max_total_systems,
                });
            }
            self.check_disk(usage.creating.saturating_add(systems), systems)?;
        }
        self.last_total
            .store(usage.systems.saturating_add(systems), Relaxed);
        Ok(())
    }

    /// Refuses when writing `systems` systems would leave less than the minimum free; a
    /// filesystem that cannot be read is let be (logged): the commit reports a full disk.
    fn check_disk(&self, systems: u64, new: u64) -> Result<(), OverBudget> {
        let (Some(dir), min) = (&self.disk, self.min_free_disk) else {
            return Ok(());
        };
        if min == 0 {
            return Ok(());
        }
        let free = match free_disk_bytes(dir) {
            Ok(free) => free,
            Err(error) => {
                log::warn!(target: crate::logging::PERSISTENCE,
                    "cannot read the free space of {}: {error}; creation goes on unchecked", dir.display());
                return Ok(());
            }
        };
        let needed = systems.saturating_mul(DISK_BYTES_PER_SYSTEM);
        if free < min.saturating_add(needed) {
            return Err(OverBudget::Disk {
                free,
                new,
                needed,
                min,
            });
        }
        Ok(())
    }

    /// Free bytes where the database lives and the minimum kept, when a disk is watched
    /// (and its free space readable).
    fn disk_reading(&self) -> Option<(u64, u64)> {
        let dir = self.disk.as_ref()?;
        free_disk_bytes(dir)
            .ok()
            .map(|free| (free, self.min_free_disk))
    }

    /// Why a creation without the admin token would be refused whatever its size, if it
    /// would: `closed: disk` (not even one more system fits above the minimum free) or
    /// `closed: systems` (the last count has reached the budget); `open` otherwise.
    pub fn creation(&self) -> &'static str {
        if let Some((free, min)) = self.disk_reading() {
            if min > 0 && free < min.saturating_add(DISK_BYTES_PER_SYSTEM) {
                return "closed: disk";
            }
        }
        if self.last_total.load(Relaxed) >= self.max_total_systems {
            return "closed: systems";
        }
        "open"
    }

    /// The budgets and their use, the systems as last counted.
    pub fn snapshot(&self) -> BudgetSnapshot {
        BudgetSnapshot {
            systems_total: self.last_total.load(Relaxed),
            systems_budget: self.max_total_systems,
            disk: self.disk_reading(),
        }
    }

    /// What start-up logs about the budgets.
    pub fn describe(&self) -> String {
        let disk = match &self.disk {
            Some(dir) if self.min_free_disk > 0 => format!(
                "keeping {} MiB free on the filesystem of {}",
                self.min_free_disk >> 20,
                dir.display()
            ),
            Some(_) => "no free-space check (GWAR_MIN_FREE_DISK=0)".to_owned(),
            None => "no free-space check (not a SQLite file)".to_owned(),
        };
        format!(
            "creations without the admin token: at most {} systems in all, {disk}",
            self.max_total_systems
        )
    }
}

/// The directory of a database file (its filesystem is the one that fills).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: u64, min_free_disk: u64, dir: Option<&Path>) -> CreationBudget {
        CreationBudget {
            max_total_systems: max,
            min_free_disk,
            disk: dir.map(Path::to_path_buf),
            last_total: AtomicU64::new(0),
            counting: AtomicBool::new(false),
        }
    }

    fn usage(systems: u64, creating: u64) -> Usage {
        Usage { systems, creating }
    }

    #[test]
    fn systems_are_refused_past_the_budget_and_admin_passes() {
        let b = budget(1000, 0, None);
        assert_eq!(b.admit(usage(600, 0), 400, true), Ok(()));
        assert_eq!(b.snapshot().systems_total, 1000);
        assert_eq!(b.creation(), "closed: systems");
        let refused = b.admit(usage(600, 200), 401, true).unwrap_err();
        assert!(
            refused.to_string().contains("GWAR_MAX_TOTAL_SYSTEMS"),
            "{refused}"
        );
        assert_eq!(b.admit(usage(600, 0), 5000, false), Ok(()));
        assert_eq!(b.snapshot().systems_total, 5600);
    }

    #[test]
    fn the_disk_is_judged_with_the_creations_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_disk_bytes(dir.path()).unwrap();
        let roomy = budget(u64::MAX, 1, Some(dir.path()));
        assert_eq!(roomy.admit(usage(0, 0), 10, true), Ok(()));
        assert_eq!(roomy.creation(), "open");
        // Free space less what a creation in progress of this size still needs.
        let in_progress = free / DISK_BYTES_PER_SYSTEM;
        let refused = roomy.admit(usage(0, in_progress), 10, true).unwrap_err();
        assert!(refused.to_string().contains("disk"), "{refused}");
        let short = budget(u64::MAX, free.saturating_mul(2), Some(dir.path()));
        assert!(matches!(
            short.admit(usage(0, 0), 1, true),
            Err(OverBudget::Disk { .. })
        ));
        assert_eq!(short.admit(usage(0, 0), 1, false), Ok(()));
        assert_eq!(short.creation(), "closed: disk");
        assert_eq!(short.snapshot().disk.map(|(_, min)| min), Some(free * 2));
        let off = budget(u64::MAX, 0, Some(dir.path()));
        assert_eq!(off.admit(usage(0, in_progress), 10, true), Ok(()));
    }

    #[test]
    fn the_default_is_half_the_memory() {
        let total = memory_total_bytes().unwrap();
        assert_eq!(
            default_max_total_systems(),
            total / 2 / MEMORY_BYTES_PER_SYSTEM
        );
        assert_eq!(directory_of(Path::new("game.db")), PathBuf::from("."));
        assert_eq!(
            directory_of(Path::new("/var/lib/g/game.db")),
            PathBuf::from("/var/lib/g")
        );
    }
}
