//! The life module's tests, on a fake backing: loads, deletions, reservations,
//! eviction, and the ownership outcomes (owned elsewhere, leases).

use std::collections::HashMap;

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::*;
use crate::model::GalaxyConfig;

/// Stored galaxies in a map; a read may be held at a gate to interleave a deletion.
/// With `takes` set, the galaxies are shared with other daemons, as on PostgreSQL.
#[derive(Default)]
struct Stored {
    galaxies: Mutex<HashMap<String, Galaxy>>,
    /// When set, a read says it started and waits for the go.
    gate: Mutex<Option<(Sender<()>, Receiver<()>)>>,
    /// Each galaxy published, and the epoch it was published with, in order.
    published: Mutex<Vec<String>>,
    epochs: Mutex<Vec<Option<Epoch>>>,
    /// `Some`: what a take of each galaxy finds (a stored galaxy not listed is ours,
    /// under the next epoch, with this lease deadline); every take is recorded.
    takes: Mutex<Option<(HashMap<String, Taken>, Instant)>>,
    taken: Mutex<Vec<String>>,
    reads: Mutex<usize>,
    /// Takes whose galaxy did not go into memory.
    unused: Mutex<Vec<(String, Epoch)>>,
    /// Archived galaxies, restored on request unless `explicit`.
    archives: Mutex<HashMap<String, Galaxy>>,
    explicit: bool,
    restores: Mutex<usize>,
}

impl Stored {
    fn with(names: &[&str]) -> Stored {
        let stored = Stored::default();
        for name in names {
            stored
                .galaxies
                .lock()
                .insert(name.to_string(), galaxy(name));
        }
        stored
    }
}

impl Backing for Stored {
    type Ids = ();
    fn persists(&self) -> bool {
        true
    }
    fn take(&self, name: &str) -> Result<Taken, StoreError> {
        let takes = self.takes.lock();
        let Some((found, lease_until)) = takes.as_ref() else {
            return Ok(Taken::Unfenced);
        };
        self.taken.lock().push(name.to_owned());
        let gate = self.gate.lock().clone();
        if let Some((started, go)) = gate {
            started.send(()).unwrap();
            go.recv().unwrap();
        }
        Ok(match found.get(name) {
            Some(taken) => taken.clone(),
            // Every take of a stored galaxy gets epoch 3 here.
            None if self.galaxies.lock().contains_key(name) => Taken::Ours {
                epoch: 3,
                lease_until: *lease_until,
            },
            None => Taken::Missing,
        })
    }
    fn read(&self, name: &str) -> Result<Option<(Galaxy, ())>, StoreError> {
        *self.reads.lock() += 1;
        let gate = self.gate.lock().clone();
        if let Some((started, go)) = gate {
            started.send(()).unwrap();
            go.recv().unwrap();
        }
        Ok(self.galaxies.lock().get(name).cloned().map(|g| (g, ())))
    }
    fn published(&self, name: &str, _: (), epoch: Option<Epoch>) {
        self.published.lock().push(name.to_owned());
        self.epochs.lock().push(epoch);
    }
    fn taken_unused(&self, name: &str, epoch: Epoch) {
        self.unused.lock().push((name.to_owned(), epoch));
    }
    fn is_stored(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.galaxies.lock().contains_key(name))
    }
    fn stored_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.galaxies.lock().keys().cloned().collect())
    }
    fn is_archived(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.archives.lock().contains_key(name))
    }
    fn archived_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.archives.lock().keys().cloned().collect())
    }
    fn restores_on_demand(&self) -> bool {
        !self.explicit
    }
    fn restore(&self, name: &str) -> Result<Option<(Galaxy, Option<Instant>)>, LifeError> {
        *self.restores.lock() += 1;
        let restored = self.archives.lock().remove(name);
        if let Some(galaxy) = &restored {
            self.galaxies.lock().insert(name.to_owned(), galaxy.clone());
        }
        Ok(restored.map(|galaxy| (galaxy, None)))
    }
}

fn galaxy(name: &str) -> Galaxy {
    let (config, _) = GalaxyConfig::preset("blitz").unwrap();
    let mut galaxy = Galaxy::create(name, config, 1, 0).unwrap();
    galaxy.take_changes();
    galaxy
}

fn tick_of(galaxies: &Galaxies, stored: &Stored, name: &str) -> Result<u64, LifeError> {
    galaxies.with_live(stored, name, |live| Ok(live.tick()))
}

#[test]
fn a_miss_loads_once_and_publishes_the_ids() {
    let (galaxies, stored) = (Galaxies::new(10, Clock::system()), Stored::with(&["a"]));
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
    assert_eq!(*stored.published.lock(), ["a"], "read and published once");
    assert!(matches!(
        tick_of(&galaxies, &stored, "b"),
        Err(LifeError::Unknown(_))
    ));
    assert_eq!(galaxies.len(), 1);
}

#[test]
fn a_deletion_during_a_load_keeps_the_read_copy_out_of_memory() {
    let (galaxies, stored) = (
        Arc::new(Galaxies::new(10, Clock::system())),
        Stored::with(&["a"]),
    );
    let (started_tx, started) = bounded(1);
    let (go, go_rx) = bounded(1);
    *stored.gate.lock() = Some((started_tx, go_rx));
    std::thread::scope(|scope| {
        let loading = scope.spawn(|| tick_of(&galaxies, &stored, "a"));
        started.recv().unwrap();
        let mut told_writer = false;
        galaxies
            .delete(&stored, "a", |_| told_writer = true)
            .unwrap();
        assert!(told_writer);
        *stored.gate.lock() = None;
        go.send(()).unwrap();
        // The superseded load looks again and finds the name deleting.
        assert!(matches!(
            loading.join().unwrap(),
            Err(LifeError::Unknown(_))
        ));
    });
    assert!(galaxies.len() == 0 && stored.published.lock().is_empty());
    assert!(!galaxies.listing(&stored).unwrap().contains_key("a"));
    // Until the writer commits the deletion, the stale stored copy stays hidden.
    assert!(matches!(
        tick_of(&galaxies, &stored, "a"),
        Err(LifeError::Unknown(_))
    ));
    stored.galaxies.lock().remove("a");
    galaxies
        .writer_side()
        .deletions_committed(&["a".to_owned()]);
    assert!(galaxies.deleting.lock().is_empty());
}

/// Where daemons share the database, a load took the galaxy before a deletion overtook
/// it: the take is handed back, so a clean stop releases it.
#[test]
fn a_take_whose_load_was_overtaken_is_handed_back() {
    let (galaxies, stored) = (Galaxies::new(10, Clock::system()), Stored::with(&["a"]));
    shared(&stored, &[], Instant::now() + Duration::from_secs(60));
    let (started_tx, started) = bounded(1);
    let (go, go_rx) = bounded(1);
    *stored.gate.lock() = Some((started_tx, go_rx));
    std::thread::scope(|scope| {
        let loading = scope.spawn(|| tick_of(&galaxies, &stored, "a"));
        started.recv().unwrap(); // the take
        go.send(()).unwrap();
        started.recv().unwrap(); // the read
        *stored.gate.lock() = None;
        galaxies.delete(&stored, "a", |_| {}).unwrap();
        go.send(()).unwrap();
        assert!(matches!(
            loading.join().unwrap(),
            Err(LifeError::Unknown(_))
        ));
    });
    assert_eq!(*stored.unused.lock(), [("a".to_owned(), 3)]);
    assert!(stored.published.lock().is_empty());
    // A load that puts its galaxy in memory hands nothing back.
    let other = Stored::with(&["b"]);
    shared(&other, &[], Instant::now() + Duration::from_secs(60));
    tick_of(&galaxies, &other, "b").unwrap();
    assert!(other.unused.lock().is_empty());
}

#[test]
fn a_reserved_name_is_invisible_until_published_and_free_again_if_dropped() {
    let (galaxies, stored) = (Galaxies::new(2, Clock::system()), Stored::default());
    let reserved = galaxies.reserve(&stored, "a").unwrap();
    assert!(matches!(
        galaxies.reserve(&stored, "a"),
        Err(LifeError::Exists(_))
    ));
    // Saved by its last chunk, but not yet reported: nobody else sees it.
    stored.galaxies.lock().insert("a".into(), galaxy("a"));
    assert!(matches!(
        tick_of(&galaxies, &stored, "a"),
        Err(LifeError::Unknown(_))
    ));
    assert!(galaxies.listing(&stored).unwrap().is_empty());
    assert!(matches!(
        galaxies.delete(&stored, "a", |_| {}),
        Err(LifeError::Unknown(_))
    ));
    let other = galaxies.reserve(&stored, "b").unwrap();
    assert!(matches!(
        galaxies.reserve(&stored, "c"),
        Err(LifeError::TooMany { limit: 2 })
    ));
    drop(other);
    reserved.publish(galaxy("a"), None);
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
    assert!(galaxies.catalog.lock().is_empty());
}

#[test]
fn only_a_clean_idle_saved_galaxy_is_evicted_and_a_stale_holder_loads_afresh() {
    let (galaxies, stored) = (
        Arc::new(Galaxies::new(10, Clock::system())),
        Stored::with(&["a"]),
    );
    let writer = galaxies.writer_side();
    tick_of(&galaxies, &stored, "a").unwrap();
    let cell = writer.all().pop().unwrap();
    let idle = Duration::from_secs(60);
    let later = || Instant::now() + idle;
    assert!(
        !writer.evict_if_idle(&cell, Instant::now(), idle, Some(0)),
        "not idle"
    );
    assert!(
        !writer.evict_if_idle(&cell, later(), idle, None),
        "tick not saved"
    );
    galaxies
        .with_live(&stored, "a", |mut live| {
            live.mark_all_changed();
            Ok::<_, LifeError>(())
        })
        .unwrap();
    assert!(
        !writer.evict_if_idle(&cell, later(), idle, Some(0)),
        "dirty"
    );
    assert_eq!(cell.settled_tick(), Settled::Dirty);
    let cut = cell.cut().unwrap();
    cell.saved();
    drop(cut);
    assert!(writer.evict_if_idle(&cell, later(), idle, Some(0)));
    assert!(galaxies.len() == 0 && cell.settled_tick() == Settled::Gone);
    // The holder of the evicted cell is sent to load the galaxy again.
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
    assert_eq!(stored.published.lock().len(), 2);
}

#[test]
fn a_failed_cut_goes_back_unless_the_galaxy_was_deleted() {
    let (galaxies, stored) = (
        Galaxies::new(10, Clock::system()),
        Stored::with(&["a", "b"]),
    );
    for name in ["a", "b"] {
        galaxies
            .with_live(&stored, name, |mut live| {
                live.mark_all_changed();
                Ok::<_, LifeError>(())
            })
            .unwrap();
    }
    let cells: HashMap<String, Arc<GalaxyCell>> = galaxies
        .registry
        .all()
        .into_iter()
        .map(|c| (c.name().to_owned(), c))
        .collect();
    let (a, b) = (cells["a"].clone(), cells["b"].clone());
    let (cut_a, cut_b) = (a.cut().unwrap(), b.cut().unwrap());
    assert_eq!(
        galaxies.unsaved_systems(),
        400,
        "in flight counts as unsaved"
    );
    galaxies.delete(&stored, "b", |_| {}).unwrap();
    a.give_back(cut_a.changes);
    b.give_back(cut_b.changes);
    assert_eq!(a.unsaved(), 200);
    assert_eq!((b.unsaved(), b.is_gone()), (0, true));
    assert!(b.cut().is_none());
}

#[test]
fn a_lapsed_lease_is_refused_until_renewed_and_a_lost_galaxy_leaves_memory() {
    let clock = Clock::manual();
    let (galaxies, stored) = (
        Arc::new(Galaxies::new(10, clock.clone())),
        Stored::default(),
    );
    let writer = galaxies.writer_side();
    let second = Duration::from_secs(1);
    let reserved = galaxies.reserve(&stored, "a").unwrap();
    reserved.publish(galaxy("a"), Some(clock.now() + second));
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
    clock.advance(second);
    assert!(matches!(
        tick_of(&galaxies, &stored, "a"),
        Err(LifeError::LeaseLapsed(_))
    ));
    let cell = writer.all().pop().unwrap();
    cell.renew_lease(clock.now() + second);
    cell.renew_lease(clock.now());
    assert_eq!(
        tick_of(&galaxies, &stored, "a").unwrap(),
        0,
        "renewed; an older deadline never moves it back"
    );
    galaxies
        .with_live(&stored, "a", |mut live| {
            live.mark_all_changed();
            Ok::<_, LifeError>(())
        })
        .unwrap();
    let cut = cell.cut().unwrap();
    cell.give_back(cut.changes);
    assert_eq!(writer.lose("a"), Some(200), "its unsaved systems, dropped");
    assert!(cell.is_gone() && cell.unsaved() == 0 && cell.cut().is_none());
    assert_eq!(galaxies.len(), 0);
    assert_eq!(writer.lose("a"), None, "once");
    // A holder of the lost cell looks the name up again (here: stored nowhere).
    assert!(matches!(
        tick_of(&galaxies, &stored, "a"),
        Err(LifeError::Unknown(_))
    ));
}

/// Polls `condition` until it holds (a generous deadline: the machine may be busy).
fn wait_for(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "condition never held");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn elsewhere() -> Owner {
    Owner {
        id: "other:1".into(),
        url: "http://10.0.0.5:3050".into(),
    }
}

/// `stored` shares its galaxies with another daemon, which owns `theirs`; takes of
/// the others succeed with a lease until `lease_until`.
fn shared(stored: &Stored, theirs: &[&str], lease_until: Instant) {
    let found = theirs
        .iter()
        .map(|name| (name.to_string(), Taken::Elsewhere(elsewhere())))
        .collect();
    *stored.takes.lock() = Some((found, lease_until));
}

#[test]
fn a_galaxy_owned_elsewhere_is_never_read_and_every_waiter_learns_its_owner() {
    let (galaxies, stored) = (
        Galaxies::new(10, Clock::system()),
        Stored::with(&["theirs", "ours"]),
    );
    let later = Instant::now() + Duration::from_secs(60);
    shared(&stored, &["theirs"], later);
    let elsewhere_err = |result: Result<u64, LifeError>| match result {
        Err(LifeError::Elsewhere { name, owner }) => name == "theirs" && owner == elsewhere(),
        _ => false,
    };
    // The leader's take is held at the gate until a second thread follows its
    // flight: both learn the owner from the one take.
    let (started_tx, started) = bounded(1);
    let (go, go_rx) = bounded(1);
    *stored.gate.lock() = Some((started_tx, go_rx));
    std::thread::scope(|scope| {
        let leader = scope.spawn(|| tick_of(&galaxies, &stored, "theirs"));
        started.recv().unwrap();
        *stored.gate.lock() = None;
        let follower = scope.spawn(|| tick_of(&galaxies, &stored, "theirs"));
        wait_for(|| galaxies.flights.followers("theirs") == Some(1));
        go.send(()).unwrap();
        assert!(elsewhere_err(leader.join().unwrap()));
        assert!(elsewhere_err(follower.join().unwrap()));
    });
    assert_eq!(*stored.taken.lock(), ["theirs"], "one take for both");
    assert_eq!(*stored.reads.lock(), 0, "nothing was read");
    assert!(!galaxies.is_live("theirs"));
    // Asked again, it is taken again: its owner may have let it go meanwhile.
    assert!(elsewhere_err(tick_of(&galaxies, &stored, "theirs")));
    // A galaxy taken is published with its epoch and served under its lease.
    assert_eq!(tick_of(&galaxies, &stored, "ours").unwrap(), 0);
    assert_eq!(*stored.published.lock(), ["ours"]);
    assert_eq!(*stored.epochs.lock(), [Some(3)]);
    let cell = galaxies.registry.all().pop().unwrap();
    assert_eq!(cell.lock().lease_until, Some(later));
    // In memory it is ours: no take of it again.
    assert_eq!(tick_of(&galaxies, &stored, "ours").unwrap(), 0);
    assert_eq!(*stored.taken.lock(), ["theirs", "theirs", "ours"]);
    // A missing galaxy is unknown, whoever might own it.
    assert!(matches!(
        tick_of(&galaxies, &stored, "nowhere"),
        Err(LifeError::Unknown(_))
    ));
}

#[test]
fn a_galaxy_owned_elsewhere_is_not_deleted_and_nothing_changes() {
    let (galaxies, stored) = (
        Galaxies::new(10, Clock::system()),
        Stored::with(&["theirs", "ours", "stored"]),
    );
    shared(
        &stored,
        &["theirs"],
        Instant::now() + Duration::from_secs(60),
    );
    tick_of(&galaxies, &stored, "ours").unwrap();
    let mut told = Vec::new();
    let result = galaxies.delete(&stored, "theirs", |epoch| told.push(epoch));
    assert!(
        matches!(result, Err(LifeError::Elsewhere { .. })),
        "{result:?}"
    );
    assert!(told.is_empty() && !galaxies.is_deleting("theirs"));
    assert!(galaxies.listing(&stored).unwrap().contains_key("theirs"));
    // In memory: ours, deleted without a take (the writer knows its epoch).
    galaxies
        .delete(&stored, "ours", |epoch| told.push(epoch))
        .unwrap();
    assert_eq!(*stored.taken.lock(), ["ours", "theirs"]);
    // Stored, not in memory: taken first, and the epoch goes to the writer.
    galaxies
        .delete(&stored, "stored", |epoch| told.push(epoch))
        .unwrap();
    assert_eq!(*stored.taken.lock(), ["ours", "theirs", "stored"]);
    assert_eq!(told, [None, Some(3)]);
    assert!(galaxies.is_deleting("stored") && galaxies.is_deleting("ours"));
    assert!(matches!(
        galaxies.delete(&stored, "nowhere", |epoch| told.push(epoch)),
        Err(LifeError::Unknown(_))
    ));
    assert_eq!(told.len(), 2);
}

#[test]
fn a_read_long_beside_the_lease_takes_the_galaxy_again_or_reads_it_again() {
    for taken_meanwhile in [false, true] {
        let clock = Clock::manual();
        let (galaxies, stored) = (Galaxies::new(10, clock.clone()), Stored::with(&["big"]));
        shared(&stored, &[], clock.now() + Duration::from_secs(12));
        let (started_tx, started) = bounded(1);
        let (go, go_rx) = bounded(1);
        *stored.gate.lock() = Some((started_tx, go_rx));
        std::thread::scope(|scope| {
            let leader = scope.spawn(|| tick_of(&galaxies, &stored, "big"));
            started.recv().unwrap(); // the take
            go.send(()).unwrap();
            started.recv().unwrap(); // the read, which outlasts half the lease
            clock.advance(Duration::from_secs(7));
            let theirs: &[&str] = if taken_meanwhile { &["big"] } else { &[] };
            shared(&stored, theirs, clock.now() + Duration::from_secs(12));
            *stored.gate.lock() = None;
            go.send(()).unwrap();
            let result = leader.join().unwrap();
            if taken_meanwhile {
                assert!(
                    matches!(result, Err(LifeError::Elsewhere { .. })),
                    "{result:?}"
                );
            } else {
                assert_eq!(result.unwrap(), 0);
            }
        });
        if taken_meanwhile {
            assert!(!galaxies.is_live("big"), "not published: no longer ours");
            assert!(stored.published.lock().is_empty());
        } else {
            assert_eq!(*stored.taken.lock(), ["big", "big"], "taken again");
            let cell = galaxies.registry.all().pop().unwrap();
            assert_eq!(
                cell.lock().lease_until,
                Some(clock.now() + Duration::from_secs(12)),
                "served under the fresh lease"
            );
        }
    }
}

#[test]
fn past_its_lease_a_galaxy_is_refused_until_a_renewal() {
    let clock = Clock::manual();
    let (galaxies, stored) = (Galaxies::new(10, clock.clone()), Stored::with(&["a"]));
    shared(&stored, &[], clock.now() + Duration::from_secs(12));
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
    clock.advance(Duration::from_secs(12));
    assert!(matches!(
        tick_of(&galaxies, &stored, "a"),
        Err(LifeError::LeaseLapsed(name)) if name == "a"
    ));
    assert_eq!(galaxies.len(), 1, "still in memory, only not served");
    assert!(matches!(
        galaxies.delete(&stored, "a", |_| panic!("not deleted")),
        Err(LifeError::LeaseLapsed(_))
    ));
    let cell = galaxies.registry.all().pop().unwrap();
    cell.renew_lease(clock.now() + Duration::from_secs(12));
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
}

#[test]
fn the_listing_names_each_owner() {
    struct Owners(Stored);
    impl Backing for Owners {
        type Ids = ();
        fn persists(&self) -> bool {
            true
        }
        fn read(&self, name: &str) -> Result<Option<(Galaxy, ())>, StoreError> {
            self.0.read(name)
        }
        fn published(&self, _: &str, _: (), _: Option<Epoch>) {}
        fn is_stored(&self, name: &str) -> Result<bool, StoreError> {
            self.0.is_stored(name)
        }
        fn stored_names(&self) -> Result<Vec<String>, StoreError> {
            self.0.stored_names()
        }
        fn stored_owners(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
            Ok(vec![
                ("free".into(), None),
                ("mine".into(), Some("http://me:1".into())),
                ("theirs".into(), Some("http://them:2".into())),
            ])
        }
        fn own_url(&self) -> Option<&str> {
            Some("http://me:1")
        }
    }
    let galaxies = Galaxies::new(10, Clock::system());
    let owners = Owners(Stored::with(&["free", "mine", "theirs"]));
    galaxies
        .with_live(&owners, "mine", |_| Ok::<_, LifeError>(()))
        .unwrap();
    let listing = galaxies.listing(&owners).unwrap();
    let listed = |loaded, owner: Option<&str>| Listed {
        loaded,
        archived: false,
        owner: owner.map(str::to_owned),
    };
    assert_eq!(listing["free"], listed(false, None));
    assert_eq!(listing["mine"], listed(true, Some("http://me:1")));
    assert_eq!(listing["theirs"], listed(false, Some("http://them:2")));
    // Without other daemons, nobody owns anything.
    let alone = Stored::with(&["free"]);
    assert_eq!(
        galaxies.listing(&alone).unwrap()["free"],
        listed(false, None)
    );
}

/// Archives `name` as the writer does: taken out of memory, then stored as an archive
/// (its live copy gone) before the flight lands.
fn archive(galaxies: &Arc<Galaxies>, stored: &Stored, name: &str) -> Galaxy {
    let archiving = galaxies.take_for_archive(name).unwrap();
    let galaxy = archiving.galaxy().clone();
    stored.galaxies.lock().remove(name);
    stored
        .archives
        .lock()
        .insert(name.to_owned(), galaxy.clone());
    drop(archiving);
    galaxy
}

fn order(galaxies: &Galaxies, stored: &Stored, name: &str, tick: u64) -> Result<(), LifeError> {
    galaxies.with_live(stored, name, |mut live| {
        let (x, y) = live.systems()[0].coords();
        live.build(
            tick,
            x.into(),
            y.into(),
            crate::model::StructureKind::Hatchery,
        )
        .map(|_| ())
        .map_err(|e| LifeError::Unknown(e.to_string()))
    })
}

#[test]
fn an_archived_galaxy_leaves_memory_whole_and_a_request_restores_it_once() {
    let (galaxies, stored) = (
        Arc::new(Galaxies::new(10, Clock::system())),
        Stored::with(&["a"]),
    );
    order(&galaxies, &stored, "a", 5).unwrap();
    let archived = archive(&galaxies, &stored, "a");
    assert!(!galaxies.is_live("a"));
    assert_eq!(
        archived.changes().len(),
        1,
        "its unsaved order left with it"
    );
    assert_eq!(archived.tick(), 5);
    let listing = galaxies.listing(&stored).unwrap();
    assert!(listing["a"].archived && !listing["a"].loaded);
    // Two requests at once: one restore.
    std::thread::scope(|scope| {
        let one = scope.spawn(|| tick_of(&galaxies, &stored, "a"));
        let two = scope.spawn(|| tick_of(&galaxies, &stored, "a"));
        assert_eq!(one.join().unwrap().unwrap(), 5);
        assert_eq!(two.join().unwrap().unwrap(), 5);
    });
    assert_eq!(*stored.restores.lock(), 1);
    assert!(galaxies.is_live("a"));
}

#[test]
fn a_request_during_archiving_waits_and_finds_the_galaxy_restored() {
    let (galaxies, stored) = (
        Arc::new(Galaxies::new(10, Clock::system())),
        Stored::with(&["a"]),
    );
    tick_of(&galaxies, &stored, "a").unwrap();
    let archiving = galaxies.take_for_archive("a").unwrap();
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| order(&galaxies, &stored, "a", 7));
        // The order waits on the archive's flight (nothing else can end it).
        while galaxies.flights.followers("a") != Some(1) {
            std::thread::yield_now();
        }
        let galaxy = archiving.galaxy().clone();
        stored.galaxies.lock().remove("a");
        stored.archives.lock().insert("a".to_owned(), galaxy);
        drop(archiving);
        waiting.join().unwrap().unwrap();
    });
    assert_eq!(
        *stored.restores.lock(),
        1,
        "served after, on the restored galaxy"
    );
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 7);
}

#[test]
fn a_refused_archive_puts_the_galaxy_back_with_its_changes() {
    let (galaxies, stored) = (
        Arc::new(Galaxies::new(10, Clock::system())),
        Stored::with(&["a"]),
    );
    order(&galaxies, &stored, "a", 3).unwrap();
    let old = galaxies.registry.get("a").unwrap();
    // A batch holds its cut when the galaxy is taken (and will fail).
    let in_flight = old.cut().expect("a cut");
    let archiving = galaxies.take_for_archive("a").unwrap();
    assert!(
        old.is_gone() && old.cut().is_none(),
        "the old cell is never saved"
    );
    old.give_back(in_flight.changes);
    assert!(
        matches!(galaxies.take_for_archive("a"), Err(LifeError::Busy(_))),
        "one archive at a time"
    );
    let cell = archiving.put_back();
    assert_eq!(
        cell.unsaved(),
        200,
        "changed in full: a failed batch's cut is not lost"
    );
    assert!(galaxies.is_live("a"));
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 3);
    assert_eq!(
        *stored.reads.lock(),
        1,
        "never read again from the stale rows"
    );
}

#[test]
fn in_explicit_mode_a_request_is_told_archived_until_an_admin_restores() {
    let (galaxies, mut stored) = (
        Arc::new(Galaxies::new(10, Clock::system())),
        Stored::with(&["a"]),
    );
    stored.explicit = true;
    tick_of(&galaxies, &stored, "a").unwrap();
    archive(&galaxies, &stored, "a");
    assert!(matches!(
        tick_of(&galaxies, &stored, "a"),
        Err(LifeError::Archived(_))
    ));
    assert!(matches!(
        galaxies.reserve(&stored, "a"),
        Err(LifeError::Exists(_))
    ));
    let tick = galaxies.with_live_restoring(&stored, "a", Restore::Now, |live| {
        Ok::<_, LifeError>(live.tick())
    });
    assert_eq!(tick.unwrap(), 0);
    assert_eq!(tick_of(&galaxies, &stored, "a").unwrap(), 0);
}

#[test]
fn a_deletion_waits_out_an_archive_in_hand_and_a_stop_counts_its_changes() {
    let (galaxies, stored) = (
        Arc::new(Galaxies::new(10, Clock::system())),
        Stored::with(&["a"]),
    );
    order(&galaxies, &stored, "a", 4).unwrap();
    let archiving = galaxies.take_for_archive("a").unwrap();
    assert!(matches!(
        galaxies.delete(&stored, "a", |_| panic!("not deleted")),
        Err(LifeError::Busy(_))
    ));
    assert_eq!(
        galaxies.writer_side().unsaved(),
        [("a".to_owned(), 1)],
        "out of memory, not yet archived: unsaved"
    );
    let cell = archiving.put_back();
    assert_eq!(
        cell.unsaved(),
        1,
        "no cut was in flight: its own changes only"
    );
    assert_eq!(galaxies.writer_side().unsaved(), [("a".to_owned(), 1)]);
    let mut told = false;
    galaxies.delete(&stored, "a", |_| told = true).unwrap();
    assert!(told, "deleted once the archive is refused");
}

#[test]
fn restores_on_request_are_capped_and_an_archiver_never_restores() {
    let (galaxies, stored) = (
        Arc::new(Galaxies::new(10, Clock::system())),
        Stored::with(&["a"]),
    );
    tick_of(&galaxies, &stored, "a").unwrap();
    archive(&galaxies, &stored, "a");
    let never =
        galaxies.with_live_restoring(&stored, "a", Restore::Never, |_| Ok::<(), LifeError>(()));
    assert!(matches!(never, Err(LifeError::Archived(_))));
    galaxies
        .restores_on_request
        .store(archiving::MAX_RESTORES_ON_REQUEST, Ordering::SeqCst);
    assert!(matches!(
        tick_of(&galaxies, &stored, "a"),
        Err(LifeError::Busy(_))
    ));
    assert_eq!(*stored.restores.lock(), 0);
    // An admin's restore is not capped.
    let now = galaxies.with_live_restoring(&stored, "a", Restore::Now, |_| Ok::<(), LifeError>(()));
    assert!(now.is_ok());
    galaxies.restores_on_request.store(0, Ordering::SeqCst);
}
