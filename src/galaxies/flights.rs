//! Loads on a cache miss, one flight per galaxy: the first thread missing on a galaxy (the
//! leader) reads it; every other thread missing on the same name waits for the leader's
//! [`Landed`] instead of reading it again. Loads of different galaxies share nothing here.
//!
//! A deletion that happens while a galaxy is read marks its flight superseded
//! ([`Flights::supersede`], called under the catalog lock); the leader's publish step
//! checks that under the same lock, so a deleted galaxy is never put back in memory by a
//! load that started before the deletion. The flights map and a flight's outcome lock are
//! leaves: never held while taking another lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::cell::GalaxyCell;
use crate::store::Owner;

/// How a load ended, as every thread that waited for it sees it.
#[derive(Clone, Debug)]
pub(super) enum Landed {
    /// The galaxy's cell, now in the registry.
    Cell(Arc<GalaxyCell>),
    /// No such galaxy (never stored, or deleted).
    Missing,
    /// Archived, and restored only on an admin's word.
    Archived,
    /// Another live daemon owns it (PostgreSQL, several daemons): every waiter is sent
    /// there, not only the leader.
    Elsewhere(Owner),
    /// Nothing to use: the galaxy was deleted while it was read, or the read failed (the
    /// leader returns the error itself). Look the name up again.
    Again,
}

/// One galaxy being loaded.
pub(super) struct Flight {
    outcome: Mutex<Option<Landed>>,
    landed: Condvar,
    superseded: AtomicBool,
}

impl Flight {
    /// True once a deletion of the galaxy happened after this load began.
    pub(super) fn superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// The outcome, or `None` when it has not landed within `bound`.
    fn wait(&self, bound: std::time::Duration) -> Option<Landed> {
        let deadline = std::time::Instant::now() + bound;
        let mut outcome = self.outcome.lock();
        loop {
            if let Some(landed) = outcome.as_ref() {
                return Some(landed.clone());
            }
            if self.landed.wait_until(&mut outcome, deadline).timed_out() {
                return outcome.clone();
            }
        }
    }
}

/// Galaxies being loaded, by name.
#[derive(Default)]
pub(super) struct Flights {
    flights: Mutex<HashMap<String, Arc<Flight>>>,
}

/// What [`Flights::board`] gives: lead the load, or wait for the leader's.
pub(super) enum Boarding<'a> {
    Lead(Leading<'a>),
    Follow(Arc<Flight>),
}

impl Flights {
    pub(super) fn board<'a>(&'a self, name: &str) -> Boarding<'a> {
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
    pub(super) fn supersede(&self, name: &str) {
        if let Some(flight) = self.flights.lock().get(name) {
            flight.superseded.store(true, Ordering::Release);
        }
    }

    /// What the flight landed, waited for at most `bound` (`None` past it: a large load
    /// or a restore is still running, and the follower is better answered than held).
    pub(super) fn follow(flight: &Flight, bound: std::time::Duration) -> Option<Landed> {
        flight.wait(bound)
    }

    /// Threads following the flight of `name` (`None`: no flight), for tests: besides
    /// them, the map and the leader hold the flight.
    #[cfg(test)]
    pub(super) fn followers(&self, name: &str) -> Option<usize> {
        let flights = self.flights.lock();
        flights
            .get(name)
            .map(|flight| Arc::strong_count(flight) - 2)
    }
}

/// The leader's side of a flight. Dropping it (also by unwinding) lands the flight with
/// the outcome set so far ([`Landed::Again`] unless told otherwise), so followers never
/// wait forever.
pub(super) struct Leading<'a> {
    flights: &'a Flights,
    name: String,
    flight: Arc<Flight>,
    outcome: Landed,
}

impl Leading<'_> {
    pub(super) fn flight(&self) -> &Flight {
        &self.flight
    }

    pub(super) fn land(mut self, outcome: Landed) -> Landed {
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

    const BOUND: std::time::Duration = std::time::Duration::from_secs(60);

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
        let follower = std::thread::spawn(move || Flights::follow(&flight, BOUND));
        leading.land(Landed::Missing);
        assert!(matches!(follower.join().unwrap(), Some(Landed::Missing)));
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
        let short = std::time::Duration::from_millis(1);
        assert!(Flights::follow(&flight, short).is_none(), "not landed yet");
        drop(leading);
        assert!(matches!(
            Flights::follow(&flight, BOUND),
            Some(Landed::Again)
        ));
    }
}
