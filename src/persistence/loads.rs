//! Loads on a cache miss: a small pool of read-only connections, and one flight per galaxy.
//!
//! - [`ReaderPool`] lends read-only connections, opened on demand up to [`READERS`]. Loads
//!   may hold at most `READERS - 1` of them at once, so the quick look-ups (`is_stored`,
//!   `stored_names`, which creation and `GET /galaxies` need) always find one within the
//!   time of another look-up, never behind a load of millions of rows. A connection is
//!   used outside every lock: the pool's mutex guards only the list of idle connections.
//! - [`Flights`] makes loads single-flight: the first thread missing on a galaxy (the
//!   leader) reads it; every other thread missing on the same name waits for the leader's
//!   [`Landed`] instead of reading it again. Loads of different galaxies share nothing but
//!   the pool, so a big load does not hold up a small one.
//! - A deletion that happens while a galaxy is read marks its flight superseded
//!   ([`Flights::supersede`], called from [`super::Engine::tombstone`]); the leader's
//!   publish step checks that under the catalog lock, which the deletion also holds, so a
//!   deleted galaxy is never put back in memory by a load that started before it.
//!
//! Locks here are leaves: the pool's and a flight's mutex are never held while taking
//! another lock or running SQL; the flights map may be taken under the catalog lock (by a
//! deletion) and takes nothing itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::cell::GalaxyCell;
use super::store::{OpenReader, ReadStore, StoreError};

/// Read-only connections for loads and look-ups. Four: loads are bound by decoding rows
/// (CPU), not by the database's locks, so more than the cores a small server has buys
/// nothing, while a single connection let one huge load stall every other load.
pub const READERS: usize = 4;

/// What a connection is borrowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Reading a whole galaxy: may take long; at most `READERS - 1` at once.
    Load,
    /// A query on the `galaxies` table only: quick; may take any connection.
    Lookup,
}

pub(crate) struct ReaderPool {
    open: OpenReader,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Box<dyn ReadStore>>,
    /// Connections in existence: idle or lent.
    opened: usize,
    /// Connections lent for loads.
    loading: usize,
}

impl ReaderPool {
    /// Opens the first connection now, so a database the reader cannot open fails the
    /// engine's start rather than the first load.
    pub(crate) fn open(open: OpenReader) -> Result<ReaderPool, StoreError> {
        let first = open()?;
        Ok(ReaderPool {
            open,
            state: Mutex::new(PoolState {
                idle: vec![first],
                opened: 1,
                loading: 0,
            }),
            returned: Condvar::new(),
        })
    }

    /// Runs `query` on a borrowed connection, first waiting for one to come back when all
    /// that `purpose` may use are lent. After an error the connection is closed rather
    /// than lent again (a new one is opened on demand), so a broken one cannot linger.
    pub(crate) fn with<T>(
        &self,
        purpose: Purpose,
        query: impl FnOnce(&dyn ReadStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (store, mut lent) = self.lend(purpose)?;
        let result = query(store.as_ref());
        if result.is_ok() {
            lent.keep = Some(store);
        }
        result
    }

    fn lend(&self, purpose: Purpose) -> Result<(Box<dyn ReadStore>, Lent<'_>), StoreError> {
        let load = purpose == Purpose::Load;
        let mut state = self.state.lock();
        loop {
            if !load || state.loading < READERS - 1 {
                if let Some(store) = state.idle.pop() {
                    state.loading += usize::from(load);
                    return Ok((store, Lent::new(self, load)));
                }
                if state.opened < READERS {
                    state.opened += 1;
                    state.loading += usize::from(load);
                    drop(state);
                    // From here the counts are the guard's to restore, whatever happens.
                    let lent = Lent::new(self, load);
                    // Opening reads the schema: outside the pool's lock.
                    return Ok(((self.open)()?, lent));
                }
            }
            self.returned.wait(&mut state);
        }
    }
}

/// A lent connection's place in the pool. Dropping it (also by unwinding) returns the
/// connection kept in `keep`, or with `None` gives up its place so another can be opened.
struct Lent<'a> {
    pool: &'a ReaderPool,
    load: bool,
    keep: Option<Box<dyn ReadStore>>,
}

impl<'a> Lent<'a> {
    fn new(pool: &'a ReaderPool, load: bool) -> Lent<'a> {
        Lent {
            pool,
            load,
            keep: None,
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock();
        state.loading -= usize::from(self.load);
        match self.keep.take() {
            Some(store) => state.idle.push(store),
            None => state.opened -= 1,
        }
        drop(state);
        // All: a waiting look-up may proceed where a waiting load may not.
        self.pool.returned.notify_all();
    }
}

/// How a load ended, as every thread that waited for it sees it.
#[derive(Clone, Debug)]
pub(crate) enum Landed {
    /// The galaxy's cell, now in the registry.
    Cell(Arc<GalaxyCell>),
    /// No such galaxy (never stored, or deleted).
    Missing,
    /// Nothing to use: the galaxy was deleted while it was read, or the read failed (the
    /// leader returns the error itself). Look the name up again.
    Again,
}

/// One galaxy being loaded.
pub(crate) struct Flight {
    outcome: Mutex<Option<Landed>>,
    landed: Condvar,
    superseded: AtomicBool,
}

impl Flight {
    /// True once a deletion of the galaxy happened after this load began.
    pub(crate) fn superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    fn wait(&self) -> Landed {
        let mut outcome = self.outcome.lock();
        loop {
            if let Some(landed) = outcome.as_ref() {
                return landed.clone();
            }
            self.landed.wait(&mut outcome);
        }
    }
}

/// Galaxies being loaded, by name.
#[derive(Default)]
pub(crate) struct Flights {
    flights: Mutex<HashMap<String, Arc<Flight>>>,
}

/// What [`Flights::board`] gives: lead the load, or wait for the leader's.
pub(crate) enum Boarding<'a> {
    Lead(Leading<'a>),
    Follow(Arc<Flight>),
}

impl Flights {
    pub(crate) fn board<'a>(&'a self, name: &str) -> Boarding<'a> {
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.get(name) {
            return Boarding::Follow(flight.clone());
        }
        let flight = Arc::new(Flight {
            outcome: Mutex::new(None),
            landed: Condvar::new(),
            superseded: AtomicBool::new(false),
        });
        flights.insert(name.to_owned(), flight.clone());
        Boarding::Lead(Leading {
            flights: self,
            name: name.to_owned(),
            flight,
            outcome: Landed::Again,
        })
    }

    /// A deletion of `name`: a load of it in progress must not publish what it read.
    pub(crate) fn supersede(&self, name: &str) {
        if let Some(flight) = self.flights.lock().get(name) {
            flight.superseded.store(true, Ordering::Release);
        }
    }

    pub(crate) fn follow(flight: &Flight) -> Landed {
        flight.wait()
    }
}

/// The leader's side of a flight. Dropping it (also by unwinding) lands the flight with
/// the outcome set so far ([`Landed::Again`] unless told otherwise), so followers never
/// wait forever.
pub(crate) struct Leading<'a> {
    flights: &'a Flights,
    name: String,
    flight: Arc<Flight>,
    outcome: Landed,
}

impl Leading<'_> {
    pub(crate) fn flight(&self) -> &Flight {
        &self.flight
    }

    pub(crate) fn land(mut self, outcome: Landed) -> Landed {
        self.outcome = outcome.clone();
        outcome
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        {
            let mut flights = self.flights.flights.lock();
            if flights
                .get(&self.name)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.name);
            }
        }
        *self.flight.outcome.lock() = Some(self.outcome.clone());
        self.flight.landed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_boarder_follows_and_sees_the_leaders_outcome() {
        let flights = Flights::default();
        let Boarding::Lead(leading) = flights.board("g") else {
            panic!("the first boarder leads");
        };
        let Boarding::Follow(flight) = flights.board("g") else {
            panic!("the second follows");
        };
        assert!(matches!(flights.board("h"), Boarding::Lead(_)));
        let follower = std::thread::spawn(move || Flights::follow(&flight));
        leading.land(Landed::Missing);
        assert!(matches!(follower.join().unwrap(), Landed::Missing));
        assert!(
            matches!(flights.board("g"), Boarding::Lead(_)),
            "a landed flight is gone"
        );
    }

    #[test]
    fn a_dropped_leader_lands_again_and_supersede_marks_only_its_name() {
        let flights = Flights::default();
        let Boarding::Lead(leading) = flights.board("g") else {
            panic!("the first boarder leads");
        };
        let Boarding::Follow(flight) = flights.board("g") else {
            panic!("the second follows");
        };
        flights.supersede("other");
        assert!(!leading.flight().superseded());
        flights.supersede("g");
        assert!(leading.flight().superseded());
        drop(leading);
        assert!(matches!(Flights::follow(&flight), Landed::Again));
    }
}
